//! End to end with the real binary: `argon submit --retries` against
//! command tasks that fail, then `argon failed` (text and `--json`) lists
//! the ones that used up their retries. The manager's backoff is shortened
//! in its config file so the retries come within milliseconds.

mod common;

use std::ffi::OsStr;
use std::time::Duration;

use common::{Manager, ManagerOpts, TempDir, Worker};

/// A manager with a 20 ms retry base and a worker with two command tasks:
/// `flaky` fails until its third run (counted in a file in `dir`), and
/// `broken` always fails.
fn setup(dir: &TempDir) -> (Manager, Worker) {
    let key = dir.keygen("key");
    let manager_toml = dir.write(
        "manager.toml",
        "[manager]\nretry_base = \"20ms\"\nretry_max = \"100ms\"\n",
    );
    let manager = Manager::start_with(
        &key,
        ManagerOpts {
            config: Some(manager_toml),
            ..ManagerOpts::default()
        },
    );
    let counter = dir.join("runs");
    let flaky = format!(
        "n=$(cat {c:?} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c:?}; \
         if [ $n -lt 3 ]; then echo \"not yet: run $n\" >&2; exit 1; fi; echo $n",
        c = counter.display().to_string()
    );
    let worker_toml = dir.write(
        "worker.toml",
        &format!(
            "[tasks.flaky]\ncommand = [\"/bin/sh\", \"-c\", {flaky:?}]\n\
             [tasks.broken]\ncommand = [\"/bin/sh\", \"-c\", \"echo 'disk on fire' >&2; exit 3\"]\n"
        ),
    );
    let worker = Worker::start_with(
        &manager.addr,
        &key,
        2,
        &[OsStr::new("--config"), worker_toml.as_os_str()],
    );
    manager.wait_for_workers(1);
    (manager, worker)
}

#[test]
fn submit_retries_reruns_failed_tasks_and_failed_lists_the_dead_ones() {
    let dir = TempDir::new();
    let (mut manager, _worker) = setup(&dir);
    let limit = Duration::from_secs(20);

    let out = manager
        .submit(["--retries", "3", "flaky"])
        .limit(limit)
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.trim(), "3", "succeeded on its third run: {out}");

    let out = manager.client_cmd("failed", [] as [&str; 0]).run();
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out}");
    assert!(out.stderr.contains("no failed tasks"), "{out}");
    let out = manager.client_cmd("failed", ["--json"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let empty: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(
        empty["total"], 0,
        "a task that succeeded is not dead: {out}"
    );

    let out = manager
        .submit(["--retries", "2", "broken", r#"{"n": 1}"#])
        .limit(limit)
        .run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("disk on fire"), "{out}");
    let out = manager.submit(["broken", "2"]).run();
    assert_eq!(out.code, Some(1), "without --retries: {out}");

    let out = manager.client_cmd("failed", ["--json"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let list: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["truncated"], false);
    let dead = &list["tasks"][0];
    assert_eq!(dead["task"], "broken");
    assert_eq!(dead["retries"], 2);
    assert_eq!(dead["args"], serde_json::json!({"n": 1}));
    assert!(
        dead["error"].as_str().unwrap().contains("disk on fire"),
        "{dead}"
    );
    assert!(dead["task_id"].as_u64().is_some() && dead["failed_at_ms"].as_u64() > Some(0));

    let out = manager.client_cmd("failed", [] as [&str; 0]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line per dead task: {out}");
    assert!(
        lines[0].contains("broken") && lines[0].contains("retries 2"),
        "{out}"
    );
    assert!(lines[0].contains("disk on fire"), "{out}");

    // Past the manager's cap is bad usage, refused before anything is sent.
    let out = manager.submit(["--retries", "11", "broken"]).run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("0..=10"), "{out}");
    manager.assert_healthy();
}

#[test]
fn failed_exits_69_when_the_manager_is_unreachable() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let out = common::argon(["failed", "--mgr", "127.0.0.1:1", "--key"])
        .arg(&key)
        .run();
    assert_eq!(out.code, Some(69), "{out}");
}
