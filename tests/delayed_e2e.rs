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
    assert_eq!(far.code, Some(1), "{far}");
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

/// Microseconds since the Unix epoch, now.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Resident memory of process `pid` in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The measurement of docs/PERFORMANCE.md ("Delayed tasks"), not a test of
/// speed (it asserts only that every task ran once and its result came
/// back): a release manager, one worker of 10,000 slots in this process
/// whose task `stamp` returns the wall-clock time its run started, 10,000
/// detached tasks scheduled for the same whole second; prints due → run
/// start percentiles, then the manager's resident memory per scheduled task
/// (100,000 tasks without arguments, due in an hour). Run with
/// `cargo test --release --test delayed_e2e -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_ten_thousand_tasks_due_in_the_same_second() {
    use argon::actors::WorkerSettings;
    use argon::client::{Client, ClientConfig, QueueOptions, RunAt};
    use argon::protocol::{HandshakeSettings, MasterKey, Value};
    use argon::task::TaskRegistry;
    use futures_util::future::join_all;

    const TASKS: usize = 10_000;
    const IDLE: usize = 100_000;
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let mgr = Manager::start(&key);
    let hs = || HandshakeSettings::new(MasterKey::load(&key).expect("key"));
    let (addr, worker_hs) = (mgr.addr.clone(), hs());
    std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let mut registry = TaskRegistry::new();
            registry.register_fn("stamp", |_| async { Ok(Value::from(now_us())) });
            let _pool = argon::runtime::start_worker(
                WorkerSettings {
                    mgr: addr,
                    capacity: TASKS,
                    allow_eval: false,
                    handshake: worker_hs,
                    backoff_base: Duration::from_millis(50),
                    backoff_max: Duration::from_millis(50),
                    keep: Default::default(),
                },
                registry,
            );
            std::future::pending::<()>().await
        })
    });
    mgr.wait_for_workers(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt
        .block_on(Client::connect(ClientConfig::new(mgr.addr.clone(), hs())))
        .expect("client connects");
    let submit_all = |n: usize, run_at: RunAt, task: &'static str| {
        let opts = QueueOptions {
            run_at: Some(run_at),
            ..Default::default()
        };
        let mut ids = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let sent = chunk
                .iter()
                .map(|_| client.submit_detached(task, Value::Nil, &opts));
            for r in rt.block_on(join_all(sent)) {
                ids.push(r.expect("accepted"));
            }
        }
        ids
    };

    // A whole second, far enough ahead for every submit to be in.
    let due_ms = (now_us() / 1_000_000 + 4) * 1000;
    let due = std::time::UNIX_EPOCH + Duration::from_millis(due_ms);
    let ids = submit_all(TASKS, RunAt::At(due), "stamp");
    let ahead = due.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(!ahead.is_zero(), "all submitted before the due time");
    assert_eq!(mgr.status().scheduled, TASKS as u64);
    std::thread::sleep(ahead + Duration::from_secs(1));
    let results = rt.block_on(join_all(ids.iter().map(|&id| client.result(id, true))));
    let mut late_ms: Vec<f64> = results
        .into_iter()
        .map(|r| {
            let start_us = r.expect("a result").as_u64().expect("a stamp");
            (start_us as f64 - due_ms as f64 * 1000.0) / 1000.0
        })
        .collect();
    late_ms.sort_by(f64::total_cmp);
    let at = |q: f64| late_ms[((late_ms.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{TASKS} tasks due at the same second, due -> run start on the worker (ms): \
         min {:.1} p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
        late_ms[0],
        at(0.5),
        at(0.9),
        at(0.99),
        late_ms[late_ms.len() - 1]
    );
    assert!(late_ms[0] >= 0.0, "no run started before its due time");

    let before = rss_kib(mgr.proc.pid());
    let idle = submit_all(IDLE, RunAt::In(Duration::from_secs(3600)), "stamp");
    assert_eq!(idle.len(), IDLE);
    assert_eq!(mgr.status().scheduled, IDLE as u64);
    let after = rss_kib(mgr.proc.pid());
    println!(
        "manager resident memory: {before} KiB before, {after} KiB with {IDLE} scheduled tasks \
         without arguments: {:.0} bytes per scheduled task",
        (after.saturating_sub(before) * 1024) as f64 / IDLE as f64
    );
}
