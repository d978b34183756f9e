//! End-to-end tests of the load-test helpers of the real binary:
//! `argon worker --instances N` and `argon bench --idle-clients N --hold DUR`.

mod common;

use std::time::Duration;

use common::{Manager, TempDir, COMMAND};

#[test]
fn worker_instances_register_separately_and_leave_on_sigterm() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let manager = Manager::start(&key);
    let mut worker = common::argon(["worker", "--mgr", &manager.addr, "--key"])
        .arg(&key)
        .args(["--capacity", "2", "--instances", "5"])
        .spawn();
    let s = manager.wait_for_workers(5);
    assert_eq!(s.capacity, 10);
    let ids: std::collections::BTreeSet<_> = s.worker_list.iter().map(|w| w.id).collect();
    assert_eq!(ids.len(), 5, "each instance is its own worker: {s:#?}");

    let out = manager
        .client_cmd("bench", ["--tasks", "200", "--concurrency", "20", "--json"])
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(report["tasks"], 200, "{out}");

    worker.signal(libc::SIGTERM);
    let status = worker.wait_within(COMMAND);
    assert!(
        status.is_some_and(|s| s.success()),
        "worker did not drain and exit 0: {status:?}\n{}",
        worker.stderr()
    );
    manager.wait_for_workers(0);
}

#[test]
fn idle_clients_are_held_then_released() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let manager = Manager::start(&key);
    let mut idle = manager
        .client_cmd("bench", ["--idle-clients", "40", "--hold", "30s"])
        .spawn();
    let line = idle.next_line(COMMAND).unwrap_or_default();
    assert!(
        line.starts_with("argon bench: 40 idle connections open"),
        "unexpected first line {line:?}\n{}",
        idle.stderr()
    );
    // The hold ends early on SIGTERM, and the manager keeps serving.
    idle.signal(libc::SIGTERM);
    let status = idle.wait_within(COMMAND);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let out = manager
        .client_cmd("bench", ["--idle-clients", "3", "--hold", "50ms"])
        .limit(Duration::from_secs(10))
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
}
