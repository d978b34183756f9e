//! End to end with the real binary: `argon submit --retries` against
//! command tasks that fail, then `argon failed` (text and `--json`) lists
//! the ones that used up their retries, keeps them across a restart with
//! `--persist`, and queues them again or purges them. The manager's backoff
//! is shortened in its config file so the retries come within milliseconds.

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

/// With `--persist` the dead list survives a `kill -9` and restart;
/// `failed --retry ID` queues a dead task again under a new id whose result
/// `result --wait` reads, `--retry-all --task` does the rest, and `--purge`
/// empties the list.
#[test]
fn the_dead_list_survives_a_restart_and_its_tasks_run_again() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let manager_toml = dir.write(
        "manager.toml",
        &format!(
            "[manager]\nretry_base = \"20ms\"\nretry_max = \"100ms\"\npersist = {:?}\n",
            dir.join("store").display().to_string()
        ),
    );
    let opts = || ManagerOpts {
        config: Some(manager_toml.clone()),
        ..ManagerOpts::default()
    };
    let mut manager = Manager::start_with(&key, opts());
    let fix = dir.join("fixed");
    let mended = format!(
        "if [ -f {f:?} ]; then cat; else echo 'disk on fire' >&2; exit 3; fi",
        f = fix.display().to_string()
    );
    let worker_toml = dir.write(
        "worker.toml",
        &format!(
            "[tasks.mended]\ncommand = [\"/bin/sh\", \"-c\", {mended:?}]\n\
             [tasks.broken]\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n"
        ),
    );
    let _worker = Worker::start_with(
        &manager.addr,
        &key,
        2,
        &[OsStr::new("--config"), worker_toml.as_os_str()],
    );
    manager.wait_for_workers(1);
    for n in [1, 2] {
        let out = manager
            .submit(["--retries", "1", "mended", &n.to_string()])
            .run();
        assert_eq!(out.code, Some(1), "{out}");
    }
    let dead_ids = |m: &Manager| -> Vec<u64> {
        let out = m.client_cmd("failed", ["--json"]).run();
        assert_eq!(out.code, Some(0), "{out}");
        let list: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
        let mut ids: Vec<u64> = list["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| t["task_id"].as_u64().expect("id"))
            .collect();
        ids.sort();
        ids
    };
    let before = dead_ids(&manager);
    assert_eq!(before.len(), 2, "{before:?}");

    let port = manager.port();
    manager.proc.kill();
    let manager = Manager::restart_with(&key, port, opts);
    manager.wait_for_workers(1);
    assert_eq!(dead_ids(&manager), before, "the list after the restart");

    let out = manager.client_cmd("failed", ["--retry", "999999999"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("not in the dead list"), "{out}");

    std::fs::write(&fix, "").expect("mend the task");
    let out = manager
        .client_cmd("failed", ["--retry", &before[0].to_string()])
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    let new: u64 = out
        .stdout
        .trim()
        .strip_prefix(&format!("task {} queued again as task ", before[0]))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the new id: {out}"));
    assert!(!before.contains(&new));
    let out = manager
        .client_cmd("result", ["--wait", &new.to_string()])
        .run();
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "1"), "{out}");
    assert_eq!(dead_ids(&manager), [before[1]]);

    let out = manager
        .client_cmd("failed", ["--retry-all", "--task", "other", "--json"])
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        dead_ids(&manager),
        [before[1]],
        "another name's entries stay"
    );
    let out = manager
        .client_cmd("failed", ["--retry-all", "--task", "mended"])
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout
            .contains(&format!("task {} queued again", before[1])),
        "{out}"
    );
    assert!(dead_ids(&manager).is_empty());

    let out = manager.submit(["--retries", "1", "broken"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(dead_ids(&manager).len(), 1);
    let out = manager.client_cmd("failed", ["--purge"]).run();
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), "purged 1 failed task(s)"),
        "{out}"
    );
    assert!(dead_ids(&manager).is_empty());
}
