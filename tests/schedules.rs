//! Periodic tasks end to end with the real binary: `[[schedule]]` entries
//! in the manager's config file are checked at start (one line naming the
//! entry), `argon schedules` lists them, and with `--persist` a due time
//! that passed while the manager was down (`kill -9`) runs once at the
//! restart.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{argon, Manager, ManagerOpts, TempDir, Worker};
use serde_json::Value as Json;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `argon schedules --json`'s first entry.
fn first_schedule(m: &Manager) -> Json {
    let out = m.client_cmd("schedules", ["--json"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let all: Json = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(all["total"], 1, "{all}");
    all["schedules"][0].clone()
}

/// Polls the first entry until `cond` holds, for at most `limit`.
fn wait_schedule(m: &Manager, what: &str, limit: Duration, cond: impl Fn(&Json) -> bool) -> Json {
    let start = Instant::now();
    loop {
        let s = first_schedule(m);
        if cond(&s) {
            return s;
        }
        assert!(start.elapsed() < limit, "{what}: still {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bad_entry_stops_the_start_with_one_line_naming_it() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    for (entry, says) in [
        ("task = \"echo\"\n", "give every"),
        ("task = \"echo\"\ncron = \"0 25 * * *\"\n", "Hours"),
        (
            "task = \"echo\"\nevery = \"5s\"\ncatch_up = \"all\"\n",
            "catch_up",
        ),
    ] {
        let config = dir.write(
            "manager.toml",
            &format!("[[schedule]]\nname = \"bad\"\n{entry}"),
        );
        let out = argon(["manager", "--port", "0", "--key"])
            .arg(&key)
            .arg("--config")
            .arg(&config)
            .run();
        assert_eq!(out.code, Some(2), "{out}");
        assert_eq!(out.stdout, "", "{out}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert!(lines[0].contains("schedule 1 (\"bad\")"), "{out}");
        assert!(lines[0].contains(says), "{out}");
    }
}

#[test]
fn a_due_time_missed_while_the_manager_was_down_runs_once_at_the_restart() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = dir.write(
        "manager.toml",
        &format!(
            "[manager]\npersist = {:?}\n\n[[schedule]]\nname = \"tick\"\ntask = \"sleep\"\n\
             args = 10\nevery = \"3s\"\n",
            dir.join("store").display().to_string()
        ),
    );
    let opts = || ManagerOpts {
        config: Some(config.clone()),
        ..ManagerOpts::default()
    };
    let mut m = Manager::start_with(&key, opts());
    let _worker = Worker::start(&m.addr, &key, 1);
    m.wait_for_workers(1);
    let s = first_schedule(&m);
    assert_eq!(
        (s["name"].as_str(), s["task"].as_str()),
        (Some("tick"), Some("sleep"))
    );
    assert_eq!(s["cadence"], "every 3s", "{s}");
    let s = wait_schedule(&m, "the first run", Duration::from_secs(10), |s| {
        s["started"] == 1
    });
    let first = s["last_task_id"].as_u64().expect("a task id");
    let out = m.client_cmd("result", ["--wait", &first.to_string()]).run();
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "10"), "{out}");
    let last_ms = s["last_ms"].as_u64().expect("last_ms");

    let port = m.port();
    m.proc.kill();
    // The next due time (last + 3 s) passes while the manager is down.
    let due = last_ms + 3_000;
    while now_ms() < due + 300 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let restarted_at = now_ms();
    let m = Manager::restart_with(&key, port, opts);
    m.wait_for_workers(1);
    // Without the catch-up it would run 3 s after the restart.
    let s = wait_schedule(&m, "the catch-up run", Duration::from_millis(2_500), |s| {
        s["started"] == 1
    });
    assert!(s["last_ms"].as_u64() >= Some(restarted_at), "{s}");
    let second = s["last_task_id"].as_u64().expect("a task id");
    assert!(
        second > first,
        "ids are never reused: {first} then {second}"
    );
    let out = m.client_cmd("schedules", [] as [&str; 0]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout
            .starts_with("tick  task sleep  every 3s  overlap skip  next "),
        "{out}"
    );
    assert!(out.stdout.contains(&format!("(task {second})")), "{out}");
}
