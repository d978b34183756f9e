//! `argon map`: JSON Lines in, one result per line out, in order, with
//! bounded memory. Runs the real binary on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::{ManagerOpts, System};

/// Resident set of a process in KiB, from /proc (None once it has exited).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// 100,000 lines through `argon map echo`: 100,000 results in input order,
/// the manager's queue never past its bound, and the map's memory flat (the
/// second half of the run holds no more than the first plus a little).
#[test]
fn a_hundred_thousand_lines_come_back_in_order_with_flat_memory() {
    const LINES: usize = 100_000;
    let sys = System::start(2, 4, ManagerOpts::default());
    let m = &sys.manager;
    let input = sys.dir.join("in.jsonl");
    let output = sys.dir.join("out.jsonl");
    let text: String = (0..LINES).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(&input, text).expect("write input");

    let mut map = m
        .client_cmd("map", ["echo"])
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .spawn();
    let pid = map.pid();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut samples = Vec::new();
    let mut worst_queue = (0, 0);
    while map.is_running() {
        assert!(
            Instant::now() < deadline,
            "map did not finish within its bound"
        );
        if let Some(kib) = rss_kib(pid) {
            samples.push(kib);
        }
        let s = m.status();
        if s.queued > worst_queue.0 {
            worst_queue = (s.queued, s.queue_limit);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = map.finish(Duration::from_secs(5));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        worst_queue.0 <= worst_queue.1,
        "queue past its bound: {worst_queue:?}"
    );

    let got = std::fs::read_to_string(&output).expect("read output");
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), LINES);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("{{\"n\":{i}}}"), "line {}", i + 1);
    }

    assert!(samples.len() >= 4, "too few memory samples: {samples:?}");
    let half = samples.len() / 2;
    let first = samples[..half].iter().max().copied().unwrap_or(0);
    let second = samples[half..].iter().max().copied().unwrap_or(0);
    assert!(
        second <= first + 8 * 1024,
        "map's RSS grew from {first} KiB to {second} KiB over the run"
    );
}

/// Each failure is written as `{"error": ...}` on its own line, in order;
/// the exit is 1 when any task failed. `--unordered` names the line.
#[test]
fn failures_stay_on_their_lines_and_fail_the_run() {
    let sys = System::start(1, 2, ManagerOpts::default());
    let m = &sys.manager;
    let input = sys.dir.write("in.jsonl", "[1]\nnot json\n\"two\"\n");

    let out = m
        .client_cmd("map", ["echo"])
        .arg("--input")
        .arg(&input)
        .run();
    assert_eq!(out.code, Some(1), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "[1]");
    assert!(
        lines[1].starts_with("{\"error\":\"not valid JSON"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "\"two\"");
    assert!(out.stderr.contains("1 of 3 task(s) failed"), "{out}");

    let out = m
        .client_cmd("map", ["nosuchtask", "--unordered"])
        .arg("--input")
        .arg(&input)
        .run();
    assert_eq!(out.code, Some(1), "{out}");
    let mut lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    lines.sort_by_key(|v| v["line"].as_u64());
    assert_eq!(lines.len(), 3, "{out}");
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["line"].as_u64(), Some(i as u64 + 1), "{v}");
        assert!(v["error"].is_string(), "{v}");
    }
}

/// A blank line is no task: ordered output keeps an empty line in its
/// place, `--unordered` skips it, and neither counts it as a failure.
#[test]
fn blank_lines_are_no_tasks() {
    let sys = System::start(1, 2, ManagerOpts::default());
    let m = &sys.manager;
    let input = sys.dir.write("in.jsonl", "[1]\n\n  \n\"two\"\n");

    let out = m
        .client_cmd("map", ["echo"])
        .arg("--input")
        .arg(&input)
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "[1]\n\n\n\"two\"\n", "{out}");

    let out = m
        .client_cmd("map", ["echo", "--unordered"])
        .arg("--input")
        .arg(&input)
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [r#"{"line":1,"result":[1]}"#, r#"{"line":4,"result":"two"}"#],
        "{out}"
    );
}
