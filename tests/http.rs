//! End-to-end tests of the manager's HTTP side (`argon manager --http`):
//! `/metrics` counts what clients did, unknown task names make no series,
//! `/readyz` follows the workers, `argon status`, `/metrics` and the
//! dashboard's `/api/overview` give the same counts, the page goes out with
//! a strict Content-Security-Policy, and a token guards all but `/healthz`.
//! (tests/dashboard.rs loads the page in a browser.)

#![cfg(feature = "http")]

mod common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Manager, TempDir, Worker, COMMAND, STARTUP};

/// One `GET` over HTTP/1.1: the status code and the body.
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let (code, _, body) = fetch(addr, path, token);
    (code, body)
}

/// One `GET` over HTTP/1.1: the status code, the head and the body.
fn fetch(addr: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP side");
    s.set_read_timeout(Some(COMMAND)).unwrap();
    s.set_write_timeout(Some(COMMAND)).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (code, head.to_string(), body.to_string())
}

/// The samples of a text exposition: `name{labels}` to value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value.parse().expect("a numeric value");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "series {series} appears twice"
        );
    }
    samples
}

fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {samples:?}"))
}

#[test]
fn metrics_count_what_clients_did() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    // A queue of 0: a task that finds the one slot busy is denied.
    let (mut mgr, http) = Manager::start_with_http(
        &key,
        "127.0.0.1:0",
        &[OsStr::new("--queue-factor"), OsStr::new("0")],
    );

    assert_eq!(get(&http, "/healthz", None).0, 200);
    let (code, body) = get(&http, "/readyz", None);
    assert_eq!(code, 503, "not ready without a worker: {body}");
    assert!(body.contains("no worker"), "{body}");

    let _worker = Worker::start(&mgr.addr, &key, 1);
    mgr.wait_for_workers(1);
    assert_eq!(get(&http, "/readyz", None).0, 200);

    let out = mgr.submit(["echo", r#"{"a": 1}"#]).run();
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = mgr.submit(["sleep", r#""not a number""#]).run();
    assert_eq!(out.code, Some(1), "{out:?}");
    let out = mgr.submit(["no-such-task-xyz", "1"]).run();
    assert_eq!(out.code, Some(1), "{out:?}");

    let long = mgr.submit(["sleep", "2000"]).spawn();
    mgr.wait_status("the sleep running", |s| s.in_flight == 1);
    let out = mgr.submit(["echo", "2"]).run();
    assert_eq!(out.code, Some(75), "denied while the slot is busy: {out:?}");
    let out = long.finish(COMMAND);
    assert_eq!(out.code, Some(0), "{out:?}");

    let (code, text) = get(&http, "/metrics", None);
    assert_eq!(code, 200, "{text}");
    let m = parse_metrics(&text);
    assert_eq!(sample(&m, "argon_tasks_submitted_total"), 5.0);
    assert_eq!(sample(&m, "argon_tasks_accepted_total"), 3.0);
    assert_eq!(
        sample(&m, r#"argon_tasks_denied_total{reason="invalid"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"argon_tasks_denied_total{reason="queue_full"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"argon_tasks_denied_total{reason="no_capacity"}"#),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            r#"argon_tasks_completed_total{task="echo",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"argon_tasks_completed_total{task="sleep",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"argon_tasks_completed_total{task="sleep",outcome="failed"}"#
        ),
        1.0
    );
    assert!(
        !text.contains("no-such-task-xyz"),
        "an unknown task name made a series:\n{text}"
    );
    assert_eq!(sample(&m, "argon_task_run_seconds_count"), 3.0);
    assert_eq!(sample(&m, "argon_task_queue_wait_seconds_count"), 3.0);
    assert_eq!(sample(&m, r#"argon_queue_depth{priority="normal"}"#), 0.0);
    assert_eq!(sample(&m, "argon_queue_limit"), 0.0);
    assert_eq!(sample(&m, "argon_capacity_slots"), 1.0);
    assert_eq!(sample(&m, "argon_slots_busy"), 0.0);
    assert_eq!(sample(&m, "argon_workers"), 1.0);
    assert!(sample(&m, "argon_clients") >= 0.0);
    assert!(sample(&m, "argon_predicted_wait_seconds") > 0.0);
    let failed = mgr.client_cmd("failed", ["--json"]).run();
    let dead: serde_json::Value = serde_json::from_str(&failed.stdout).expect("failed --json");
    assert_eq!(
        sample(&m, "argon_dead_tasks"),
        dead["total"].as_f64().expect("total"),
        "{failed:?}"
    );
    let build = format!(
        r#"argon_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&m, &build), 1.0, "{text}");
    assert!(sample(&m, "process_resident_memory_bytes") > 1_000_000.0);
    assert!(sample(&m, "process_cpu_seconds_total") > 0.0);
    let (open, max) = (
        sample(&m, "process_open_fds"),
        sample(&m, "process_max_fds"),
    );
    assert!(open >= 3.0 && open < max, "{open} of {max}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = sample(&m, "process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );
    assert!(
        !text.contains(r#""a""#) && !text.contains("not a number"),
        "task arguments or results leaked:\n{text}"
    );
    mgr.assert_healthy();
}

#[test]
fn a_token_guards_all_but_healthz() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let token_file = dir.write("token", "s3cret-token\n");
    let (mut mgr, http) = Manager::start_with_http(
        &key,
        "127.0.0.1:0",
        &[OsStr::new("--http-token-file"), token_file.as_os_str()],
    );

    assert_eq!(get(&http, "/healthz", None).0, 200);
    for path in ["/metrics", "/readyz", "/", "/api/overview"] {
        assert_eq!(get(&http, path, None).0, 401, "{path}");
        assert_eq!(
            get(&http, &format!("{path}?token=s3cret-token"), None).0,
            401
        );
    }
    assert_eq!(get(&http, "/metrics", Some("s3cret-tokeX")).0, 401);
    assert_eq!(get(&http, "/metrics", Some("s3cret-token-longer")).0, 401);
    let (code, text) = get(&http, "/metrics", Some("s3cret-token"));
    assert_eq!(code, 200);
    assert!(text.contains("argon_tasks_submitted_total 0"), "{text}");
    assert_eq!(get(&http, "/readyz", Some("s3cret-token")).0, 503);
    assert_eq!(get(&http, "/", Some("s3cret-token")).0, 200);
    let (code, body) = get(&http, "/api/overview", Some("s3cret-token"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(get(&http, "/api/overview", Some("wrong")).0, 401);
    mgr.assert_healthy();
}

#[test]
fn an_empty_token_file_is_bad_usage() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let token_file = dir.write("token", " \n");
    let out = common::argon(["manager", "--port", "0", "--http", "127.0.0.1:0", "--key"])
        .arg(&key)
        .arg("--http-token-file")
        .arg(&token_file)
        .limit(Duration::from_secs(10))
        .run();
    assert_eq!(out.code, Some(2), "{out:?}");
}

/// A taken HTTP port or a malformed `--http` is one line and an exit code
/// before the manager says it listens: 71 for a port the system refuses, 2
/// for an address that is not `HOST:PORT`.
#[test]
fn an_http_address_that_cannot_be_used_stops_the_start() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().unwrap().to_string();
    for (http, code, says) in [
        (busy.as_str(), 71, "cannot serve HTTP on"),
        ("9100", 2, "--http takes HOST:PORT"),
    ] {
        let out = common::argon(["manager", "--port", "0", "--http", http, "--key"])
            .arg(&key)
            .limit(Duration::from_secs(10))
            .run();
        assert_eq!(out.code, Some(code), "{out:?}");
        assert_eq!(out.stdout, "", "no startup line: {out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {out:?}");
        assert!(lines[0].contains(says), "{out:?}");
        assert!(!out.stderr.contains("panic"), "{out:?}");
    }
}

#[test]
fn beyond_loopback_without_a_token_warns() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let (mgr, _) = Manager::start_with_http(&key, "0.0.0.0:0", &[]);
    assert!(
        mgr.proc
            .wait_stderr("beyond loopback, without a token", STARTUP),
        "no warning:\n{}",
        mgr.proc.stderr()
    );
    let token_file = dir.write("token", "t\n");
    let (guarded, _) = Manager::start_with_http(
        &key,
        "0.0.0.0:0",
        &[OsStr::new("--http-token-file"), token_file.as_os_str()],
    );
    let (plain, _) = Manager::start_with_http(&key, "127.0.0.1:0", &[]);
    // The warning comes before the http line, so it would be there by now.
    for m in [&guarded, &plain] {
        assert!(
            !m.proc.stderr().contains("beyond loopback"),
            "{}",
            m.proc.stderr()
        );
    }
}

/// The sum of every series of `family` whose labels contain `filter`.
fn sum(samples: &HashMap<String, f64>, family: &str, filter: impl Fn(&str) -> bool) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{family}{{")) && filter(k))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn status_metrics_and_overview_agree() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let (mut mgr, http) = Manager::start_with_http(
        &key,
        "127.0.0.1:0",
        &[OsStr::new("--queue-factor"), OsStr::new("0")],
    );
    let _worker = Worker::start(&mgr.addr, &key, 1);
    mgr.wait_for_workers(1);

    for (args, code) in [
        (&["echo", r#"{"secret-arg": 1}"#][..], 0),
        (&["echo", "2"], 0),
        (&["sleep", r#""not a number""#], 1),
        (&["no-such-task-xyz", "1"], 1),
    ] {
        let out = mgr.submit(args).run();
        assert_eq!(out.code, Some(code), "{out}");
    }
    let long = mgr.submit(["sleep", "2000"]).spawn();
    mgr.wait_status("the sleep running", |s| s.in_flight == 1);
    let out = mgr.submit(["echo", "3"]).run();
    assert_eq!(out.code, Some(75), "denied while the slot is busy: {out}");
    let out = mgr.submit(["--timeout", "50ms", "sleep", "[5000]"]).run();
    assert_eq!(out.code, Some(75), "{out}");
    let out = long.finish(COMMAND);
    assert_eq!(out.code, Some(0), "{out}");
    mgr.wait_status("the slot free", |s| s.in_flight == 0);

    let out = mgr.client_cmd("status", ["--json"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let status: serde_json::Value = serde_json::from_str(&out.stdout).expect("status JSON");
    let (code, text) = get(&http, "/metrics", None);
    assert_eq!(code, 200);
    let m = parse_metrics(&text);
    let (code, body) = get(&http, "/api/overview", None);
    assert_eq!(code, 200, "{body}");
    let o: serde_json::Value = serde_json::from_str(&body).expect("overview JSON");
    let n = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));

    let ok = sum(&m, "argon_tasks_completed_total", |k| {
        k.contains(r#"outcome="ok""#)
    });
    let failed = sum(&m, "argon_tasks_completed_total", |k| {
        k.contains(r#"outcome="failed""#)
    });
    let denied = sum(&m, "argon_tasks_denied_total", |k| {
        !k.contains(r#"reason="invalid""#)
    });
    let invalid = sample(&m, r#"argon_tasks_denied_total{reason="invalid"}"#);
    assert_eq!((ok, failed, denied, invalid), (3.0, 1.0, 2.0, 1.0));
    assert_eq!(n(&status["completed"]), ok);
    assert_eq!(n(&status["failed"]), failed);
    assert_eq!(n(&status["denied"]), denied);
    let c = &o["counts"];
    assert_eq!(n(&c["completed"]), ok);
    assert_eq!(n(&c["failed"]), failed);
    assert_eq!(n(&c["denied"]), denied);
    assert_eq!(n(&c["invalid"]), invalid);
    assert_eq!(
        n(&c["submitted"]),
        sample(&m, "argon_tasks_submitted_total")
    );
    assert_eq!(n(&c["accepted"]), sample(&m, "argon_tasks_accepted_total"));
    assert_eq!(n(&o["workers"]), n(&status["workers"]));
    assert_eq!(n(&o["capacity"]), sample(&m, "argon_capacity_slots"));
    assert_eq!(n(&o["queue"]["limit"]), sample(&m, "argon_queue_limit"));
    assert_eq!(n(&o["busy"]), 0.0);
    assert_eq!(n(&o["retrying"]), n(&status["retrying"]));
    assert_eq!(n(&o["awaiting_provider"]), n(&status["awaiting_provider"]));
    assert_eq!(o["retrying_list"].as_array().map(Vec::len), Some(0), "{o}");

    let workers = o["worker_list"].as_array().expect("a worker list");
    assert_eq!(workers.len(), 1, "{o}");
    assert_eq!(
        (n(&workers[0]["capacity"]), n(&workers[0]["busy"])),
        (1.0, 0.0)
    );
    let lat = &o["latency"];
    assert_eq!(n(&lat["run_time"]["samples"]), 4.0, "{lat}");
    assert_eq!(n(&lat["queue_wait"]["samples"]), 4.0, "{lat}");
    let p50 = n(&lat["run_time"]["p50_ms"]);
    let max = n(&lat["run_time"]["max_ms"]);
    assert!(p50 <= max && max >= 1000.0, "{lat}");
    let failures = o["failures"].as_array().expect("a failure list");
    assert_eq!(failures.len(), 1, "{o}");
    assert_eq!(failures[0]["task"], "sleep");
    assert!(
        failures[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("milliseconds")),
        "{o}"
    );
    assert_eq!(n(&failures[0]["worker"]), n(&workers[0]["id"]));
    for leak in ["secret-arg", "not a number"] {
        assert!(!body.contains(leak), "arguments leaked: {body}");
    }
    mgr.assert_healthy();
}

#[test]
fn the_dashboard_page_is_self_contained() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let (mut mgr, http) = Manager::start_with_http(&key, "127.0.0.1:0", &[]);
    let (code, head, page) = fetch(&http, "/", None);
    assert_eq!(code, 200, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'sha256-"),
        "{head}"
    );
    assert!(head.contains("referrer-policy: no-referrer"), "{head}");
    assert!(page.contains("api/overview"), "the page does not poll");
    for external in ["http://", "https://", "//cdn", "src=\"", "innerHTML"] {
        assert!(
            !page
                .replace("http://www.w3.org/2000/svg", "")
                .contains(external),
            "the page loads or parses something it should not: {external}"
        );
    }
    mgr.assert_healthy();
}
