//! Limits per task name end to end with the real binary: `[limits.NAME]`
//! in the manager's config file is checked at start, a submit over the
//! rate exits 75 saying `rate limited` while other names pass, and
//! `argon status --json` shows where each limited name stands.

mod common;

use common::{argon, Manager, ManagerOpts, TempDir, Worker};

#[test]
fn a_name_over_its_rate_is_denied_and_others_pass() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = dir.write(
        "manager.toml",
        "[limits.sleep]\nrate = \"1/min\"\nmax_running = 1\n",
    );
    let m = Manager::start_with(
        &key,
        ManagerOpts {
            config: Some(config),
            ..ManagerOpts::default()
        },
    );
    let _worker = Worker::start(&m.addr, &key, 2);
    m.wait_for_workers(1);

    let out = m.submit(["sleep", "1"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let out = m.submit(["sleep", "1"]).run();
    assert_eq!(out.code, Some(75), "{out}");
    assert!(out.stderr.contains("rate limited"), "{out}");
    for i in 0..3 {
        let out = m.submit(["echo", &i.to_string()]).run();
        assert_eq!(out.code, Some(0), "another name is not held: {out}");
    }
    let out = m.client_cmd("status", ["--json"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let s: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let l = &s["limits"][0];
    assert_eq!(
        (
            &l["task"],
            &l["rate"],
            &l["rate_limited"],
            &l["max_running"]
        ),
        (
            &serde_json::json!("sleep"),
            &serde_json::json!("1/min"),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{s}"
    );
    let out = m.client_cmd("status", [] as [&str; 0]).run();
    assert!(
        out.stdout
            .contains("limit sleep: running 0/1, rate 1/min, 1 denied"),
        "{out}"
    );
}

#[test]
fn a_bad_limit_stops_the_start_with_one_line_naming_it() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = dir.write("manager.toml", "[limits.report]\nrate = \"fast\"\n");
    let out = argon(["manager", "--port", "0", "--key"])
        .arg(&key)
        .arg("--config")
        .arg(&config)
        .run();
    assert_eq!(out.code, Some(2), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains("limits.report: rate \"fast\""), "{out}");
}
