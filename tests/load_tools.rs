//! End-to-end tests of the load-test helpers of the real binary:
//! `argon worker --instances N`, `argon bench --idle-clients N --hold DUR`
//! and `argon bench --detach`.

#![cfg(feature = "bench")]

mod common;

use std::time::Duration;

use common::{Manager, Output, TempDir, COMMAND};

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

/// `bench --detach --json` on one worker of 2 slots (queue bound 6, so most
/// of the 20 unacknowledged submissions are denied and retried).
fn bench_detach(manager: &Manager, tasks: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let out = manager
        .client_cmd(
            "bench",
            [
                "--detach",
                "--tasks",
                tasks,
                "--concurrency",
                "20",
                "--clients",
                "2",
                "--json",
            ],
        )
        .args(extra)
        .run();
    let report = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{out}"));
    (out, report)
}

#[test]
fn bench_detach_counts_accepts_then_reads_every_result() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let manager = Manager::start(&key);
    let _worker = manager.add_worker(2, 1);
    let (out, r) = bench_detach(&manager, "150", &["--payload", "16"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(r["mode"], "detach", "{r}");
    assert_eq!(r["accepted"], 150, "{r}");
    assert_eq!(r["completed"], 150, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(
        (r["concurrency"].as_u64(), r["clients"].as_u64()),
        (Some(20), Some(2)),
        "{r}"
    );
    assert_eq!(r["payload"], 16, "{r}");
    assert!(r["denied"].is_u64(), "{r}");
    let num = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("no number {k}: {r}"))
    };
    assert!(
        num("accept_s") > 0.0 && num("accept_s") <= num("elapsed_s"),
        "{r}"
    );
    assert_eq!(num("throughput"), num("accept_rate"), "{r}");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.max(1.0);
    assert!(close(num("accept_rate"), 150.0 / num("accept_s")), "{r}");
    assert!(close(num("complete_rate"), 150.0 / num("elapsed_s")), "{r}");
    assert!(
        num("accept_p50_us") <= num("accept_p99_us")
            && num("accept_p99_us") <= num("accept_max_us"),
        "{r}"
    );
}

#[test]
fn bench_detach_counts_failed_tasks_and_exits_1() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let manager = Manager::start(&key);
    let _worker = manager.add_worker(2, 1);
    // `sleep` fails on a string argument: every task is accepted, none completes.
    let (out, r) = bench_detach(&manager, "12", &["--task", "sleep", "--args", "\"soon\""]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(r["accepted"], 12, "{r}");
    assert_eq!(r["completed"], 0, "{r}");
    assert_eq!(r["failed"], 12, "{r}");
    assert!(
        out.stderr.contains("12 of 12 detached task(s) failed"),
        "{out}"
    );
}
