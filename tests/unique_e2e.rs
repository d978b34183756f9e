//! End-to-end tests of unique tasks with the real binary: ten `argon
//! submit --unique-key` while the first runs print one id and run once;
//! with `--persist` a key survives `kill -9`.

mod common;

use common::{Manager, ManagerOpts, System, TempDir, Worker};

fn id_of(out: &common::Output) -> u64 {
    assert_eq!(out.code, Some(0), "{out}");
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("an id: {out}"))
}

#[test]
fn ten_submits_with_one_key_while_the_first_runs_print_one_id_and_run_once() {
    let sys = System::start(1, 4, ManagerOpts::default());
    let mgr = &sys.manager;
    let submit = || {
        id_of(
            &mgr.submit(["--detach", "--unique-key", "report-42", "sleep", "3000"])
                .run(),
        )
    };
    let first = submit();
    mgr.wait_status("the first to run", |s| s.in_flight == 1);
    let ids: Vec<u64> = (0..9).map(|_| submit()).collect();
    assert!(ids.iter().all(|&id| id == first), "{first} then {ids:?}");
    let done = mgr
        .client_cmd("result", [first.to_string().as_str(), "--wait"])
        .run();
    assert_eq!((done.code, done.stdout.trim()), (Some(0), "3000"), "{done}");
    let status = mgr.status();
    assert_eq!(
        (status.completed, status.in_flight, status.queued),
        (1, 0, 0),
        "one run: {status:?}"
    );

    // With a window after it finished: a detached holder's result is
    // read again without a run; an attached holder's went to its client.
    let kept = ["--unique-key", "k", "--unique-for", "10m"];
    let id = id_of(
        &mgr.submit(["--detach"].iter().chain(&kept).chain(&["echo", "1"]))
            .run(),
    );
    let done = mgr
        .client_cmd("result", [id.to_string().as_str(), "--wait"])
        .run();
    assert_eq!(done.stdout.trim(), "1", "{done}");
    let out = mgr.submit(kept.iter().chain(&["echo", "2"])).run();
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "1"), "{out}");
    let attached = ["--unique-key", "a", "--unique-for", "10m"];
    let out = mgr.submit(attached.iter().chain(&["echo", "3"])).run();
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "3"), "{out}");
    let out = mgr.submit(attached.iter().chain(&["echo", "4"])).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("its outcome went to its own client"),
        "{out}"
    );
    assert_eq!(mgr.status().completed, 3, "no run for the duplicates");

    let bad = mgr.submit(["--unique-for", "10m", "echo", "1"]).run();
    assert_eq!(bad.code, Some(2), "--unique-for needs --unique-key: {bad}");
}

#[test]
fn a_unique_key_survives_kill_9_with_persist() {
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
    let _worker = Worker::start(&mgr.addr, &key, 1);
    mgr.wait_for_workers(1);
    let args = ["--detach", "--unique-key", "once", "sleep", "60000"];
    let id = id_of(&mgr.submit(args).run());
    mgr.wait_status("it runs", |s| s.in_flight == 1);
    mgr.proc.kill();

    let mgr = Manager::start_with(&key, opts(Some(port)));
    mgr.wait_for_workers(1);
    let again = id_of(&mgr.submit(args).run());
    assert_eq!(again, id, "the key held across the restart");
    let cancel = mgr.client_cmd("cancel", [id.to_string()]).run();
    assert_eq!(cancel.code, Some(0), "{cancel}");
    let fresh = id_of(&mgr.submit(args).run());
    assert_ne!(fresh, id, "a cancelled task frees its key");
}
