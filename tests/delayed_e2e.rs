//! End-to-end tests of delayed tasks with the real binary: `argon submit
//! --in` / `--at` runs a task after its delay and not before (detached and
//! attached), bad due times get a one-line error, and with `--persist` a
//! scheduled task survives `kill -9`: one that came due during the outage
//! runs at once after the restart, one due later stays scheduled.
//!
//! The persist test waits for wall-clock time to pass during the outage
//! (that is the point of it); nothing else sleeps.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{Manager, ManagerOpts, System, TempDir, Worker, COMMAND};

/// The id printed by `argon submit --detach`.
fn id_of(out: &common::Output) -> u64 {
    assert_eq!(out.code, Some(0), "{out}");
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("an id: {out}"))
}

#[test]
fn a_delayed_task_runs_after_its_delay_and_not_before() {
    let sys = System::start(1, 2, ManagerOpts::default());
    let mgr = &sys.manager;

    let submitted = Instant::now();
    let out = mgr
        .submit(["--detach", "--in", "2s", "echo", "\"later\""])
        .run();
    let id = id_of(&out);
    let status = mgr.status();
    assert_eq!((status.scheduled, status.queued), (1, 0), "{status:?}");
    let early = mgr.client_cmd("result", [id.to_string()]).run();
    if submitted.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            early.code,
            Some(75),
            "not finished before its time: {early}"
        );
        assert!(early.stderr.contains("is scheduled"), "{early}");
    }
    let json = mgr.client_cmd("status", ["--json"]).run();
    assert!(json.stdout.contains("\"scheduled\":"), "{json}");

    let done = mgr
        .client_cmd("result", [id.to_string().as_str(), "--wait"])
        .run();
    assert_eq!(done.code, Some(0), "{done}");
    assert_eq!(done.stdout.trim(), "\"later\"");
    assert!(
        submitted.elapsed() >= Duration::from_secs(2),
        "ran after {:?}, before its delay of 2s",
        submitted.elapsed()
    );
    assert_eq!(mgr.status().scheduled, 0);

    // Attached: the client waits for it.
    let started = Instant::now();
    let out = mgr.submit(["--in", "1s", "echo", "5"]).run();
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "5"), "{out}");
    assert!(started.elapsed() >= Duration::from_secs(1), "{out}");

    // A time past runs now.
    let out = mgr
        .submit(["--at", "2020-01-01T00:00:00Z", "echo", "\"now\""])
        .run();
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "\"now\""), "{out}");
}

#[test]
fn bad_due_times_get_a_clear_error_and_schedule_nothing() {
    let sys = System::start(1, 1, ManagerOpts::default());
    let mgr = &sys.manager;
    let far = mgr
        .submit(["--detach", "--in", "400days", "echo", "1"])
        .run();
    assert_ne!(far.code, Some(0), "{far}");
    assert!(
        far.stderr.contains("at most 365 days"),
        "one clear line: {far}"
    );
    let bad = mgr.submit(["--at", "tomorrow", "echo", "1"]).run();
    assert_eq!(bad.code, Some(2), "{bad}");
    assert!(bad.stderr.contains("2026-12-24T18:00:00Z"), "{bad}");
    let both = mgr
        .submit(["--in", "1s", "--at", "2030-01-01T00:00:00Z", "echo", "1"])
        .run();
    assert_eq!(both.code, Some(2), "{both}");
    assert_eq!(mgr.status().scheduled, 0);
}

#[test]
fn a_scheduled_task_survives_kill_9_and_one_due_during_the_outage_runs_at_once() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = dir.write(
        "manager.toml",
        "[manager]\npersist = \"store\"\nrecovery_grace = \"1s\"\n",
    );
    let opts = |port| ManagerOpts {
        config: Some(cfg.clone()),
        port,
        ..Default::default()
    };
    let mut mgr = Manager::start_with(&key, opts(None));
    let port = mgr.port();
    let _worker = Worker::start(&mgr.addr, &key, 2);
    mgr.wait_for_workers(1);

    let due = SystemTime::now() + Duration::from_secs(3);
    let at = humantime::format_rfc3339_millis(due).to_string();
    let soon = id_of(
        &mgr.submit(["--detach", "--at", at.as_str(), "echo", "\"soon\""])
            .run(),
    );
    let later = id_of(
        &mgr.submit(["--detach", "--in", "1h", "echo", "\"later\""])
            .run(),
    );
    assert_eq!(mgr.status().scheduled, 2);
    mgr.proc.kill();

    // The outage lasts past the first one's due time.
    if let Ok(left) = due.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_millis(200));
    }
    let mgr = Manager::start_with(&key, opts(Some(port)));
    let status = mgr.status();
    assert_eq!(
        status.scheduled,
        1,
        "the one due in an hour waits again: {status:?}\n{}",
        mgr.proc.stderr()
    );
    assert!(
        mgr.proc
            .stderr()
            .contains("recovered 1 queued task(s), 1 scheduled for later"),
        "the one due during the outage is queued at once: {}",
        mgr.proc.stderr()
    );
    let done = mgr
        .client_cmd("result", [soon.to_string().as_str(), "--wait"])
        .limit(COMMAND)
        .run();
    assert_eq!(
        (done.code, done.stdout.trim()),
        (Some(0), "\"soon\""),
        "{done}\n{}",
        mgr.proc.stderr()
    );
    let waiting = mgr.client_cmd("result", [later.to_string()]).run();
    assert_eq!(waiting.code, Some(75), "{waiting}");
    assert!(waiting.stderr.contains("is scheduled"), "{waiting}");
    let cancel = mgr.client_cmd("cancel", [later.to_string()]).run();
    assert_eq!(cancel.code, Some(0), "{cancel}");
    assert_eq!(mgr.status().scheduled, 0);
}
