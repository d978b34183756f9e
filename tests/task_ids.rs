//! Tasks by id end to end, with the real binary: `argon submit --detach`
//! prints an id and exits while the task runs on; `argon result` reads it
//! from another process, `argon cancel` stops it; unknown and malformed ids
//! get clear errors and their exit codes.

mod common;

use common::{Manager, TempDir};

/// Ten minutes: far longer than any bound in these tests.
const FOREVER_MS: &str = "600000";

/// Submits `sleep MS` detached; returns the id it printed.
fn detach_sleep(m: &Manager, ms: &str) -> u64 {
    let out = m.submit(["--detach", "sleep", ms]).run();
    assert_eq!(out.code, Some(0), "{out}");
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a task id: {out}"))
}

#[test]
fn a_detached_task_runs_on_and_its_result_is_read_from_another_process() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = Manager::start(&key);
    let _w = m.add_worker(1, 1);
    let id = detach_sleep(&m, "1500");

    let early = m.client_cmd("result", [id.to_string()]).run();
    assert_eq!(early.code, Some(75), "{early}");
    assert!(early.stderr.contains("not finished yet"), "{early}");

    let out = m
        .client_cmd("result", ["--wait".to_string(), id.to_string()])
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.trim(), "1500");

    let again = m.client_cmd("result", [id.to_string()]).run();
    assert_eq!(again.code, Some(0), "kept for later reads: {again}");
    assert_eq!(again.stdout.trim(), "1500");
}

#[test]
fn cancel_by_id_stops_a_running_task_and_its_result_says_so() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = Manager::start(&key);
    let _w = m.add_worker(1, 1);
    let id = detach_sleep(&m, FOREVER_MS);
    m.wait_status("the sleep to run", |s| s.in_flight == 1);

    let waited = m
        .client_cmd("result", ["--wait", "--timeout", "200ms", &id.to_string()])
        .run();
    assert_eq!(waited.code, Some(75), "{waited}");

    let out = m.client_cmd("cancel", [id.to_string()]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.trim(), format!("cancelled task {id}"));
    m.wait_status("the slot to be free", |s| {
        s.in_flight == 0 && s.worker_list.iter().all(|w| w.in_flight == 0)
    });

    let result = m.client_cmd("result", [id.to_string()]).run();
    assert_eq!(result.code, Some(1), "{result}");
    assert!(
        result.stderr.contains("cancelled by the client"),
        "{result}"
    );

    let again = m.client_cmd("cancel", [id.to_string()]).run();
    assert_eq!(again.code, Some(0), "{again}");
    assert!(again.stdout.contains("already finished"), "{again}");
}

#[test]
fn unknown_and_malformed_ids_are_errors() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = Manager::start(&key);
    let _w = m.add_worker(1, 1);

    for cmd in ["result", "cancel"] {
        let out = m.client_cmd(cmd, ["12345"]).run();
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr.contains("unknown task id 12345"), "{out}");

        let out = m.client_cmd(cmd, ["not-an-id"]).run();
        assert_eq!(out.code, Some(2), "{out}");
        assert!(out.stderr.contains("whole number"), "{out}");
    }
}

#[test]
fn a_denied_detached_submit_exits_75_and_prints_no_id() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = Manager::start(&key);
    let out = m.submit(["--detach", "echo", "1"]).run();
    assert_eq!(out.code, Some(75), "no worker: no capacity: {out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains("no capacity"), "{out}");
}
