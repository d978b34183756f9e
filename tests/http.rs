//! End-to-end tests of the manager's HTTP side (`argon manager --http`):
//! `/metrics` counts what clients did, unknown task names make no series,
//! `/readyz` follows the workers, `argon status`, `/metrics` and the
//! dashboard's `/api/overview` give the same counts, the page goes out with
//! a strict Content-Security-Policy, a token guards all but `/healthz` and
//! the page itself, and the actions (cancel, retry a dead task, drain a
//! worker) are refused without a configured token, without the right
//! bearer, without the action header or from another origin, and do what
//! they say otherwise. (tests/dashboard.rs loads the page in a browser.)

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

/// One `POST` with no body and the extra `headers`: the status code and
/// the JSON body.
fn post(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let (code, body) = request(addr, "POST", path, headers);
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("POST {path}: {code}, not JSON ({e}): {body:?}"));
    (code, json)
}

/// One request over HTTP/1.1 with the extra `headers`: the status code and
/// the body.
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP side");
    s.set_read_timeout(Some(COMMAND)).unwrap();
    s.set_write_timeout(Some(COMMAND)).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: 0\r\n{extra}\r\n"
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
    (code, body.to_string())
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
    // The page holds no data: it asks for the token itself.
    assert_eq!(get(&http, "/", None).0, 200);
    for path in ["/metrics", "/readyz", "/api/overview"] {
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

#[test]
fn actions_are_refused_without_a_configured_token() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let (mut mgr, http) = Manager::start_with_http(&key, "127.0.0.1:0", &[]);
    let _worker = Worker::start(&mgr.addr, &key, 1);
    mgr.wait_for_workers(1);
    let origin = format!("http://{http}");
    let headers = [
        ("X-Argon-Action", "1"),
        ("Origin", origin.as_str()),
        ("Authorization", "Bearer anything"),
    ];
    for path in [
        "/api/tasks/1/cancel",
        "/api/dead/1/retry",
        "/api/workers/1/drain",
    ] {
        let (code, body) = post(&http, path, &headers);
        assert_eq!(code, 403, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("--http-token-file")),
            "{path}: {body}"
        );
    }
    let status = mgr.status();
    assert_eq!(status.capacity, 1, "the worker was not drained");
    mgr.assert_healthy();
}

#[test]
fn actions_need_the_token_and_the_pages_origin_and_then_act() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let token_file = dir.write("token", "act-token\n");
    let manager_toml = dir.write("manager.toml", "[manager]\nretry_base = \"50ms\"\n");
    let (mut mgr, http) = Manager::start_with_http(
        &key,
        "127.0.0.1:0",
        &[
            OsStr::new("--http-token-file"),
            token_file.as_os_str(),
            OsStr::new("--config"),
            manager_toml.as_os_str(),
        ],
    );
    let mended = dir.join("mended");
    let worker_toml = dir.write(
        "worker.toml",
        &format!(
            "[tasks.flaky]\ncommand = [\"/bin/sh\", \"-c\", {:?}]\n",
            format!(
                "test -e {:?} && echo 1 || {{ echo not yet >&2; exit 3; }}",
                mended.display().to_string()
            )
        ),
    );
    let _worker = Worker::start_with(
        &mgr.addr,
        &key,
        2,
        &[OsStr::new("--config"), worker_toml.as_os_str()],
    );
    mgr.wait_for_workers(1);

    let out = mgr.submit(["--detach", "sleep", "60000"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let running: u64 = out.stdout.trim().parse().expect("a task id");
    mgr.wait_status("the sleep running", |s| s.in_flight == 1);

    let origin = format!("http://{http}");
    let bearer = "Bearer act-token";
    let good = [
        ("Authorization", bearer),
        ("X-Argon-Action", "1"),
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let cancel = format!("/api/tasks/{running}/cancel");
    let without = |name: &str| -> Vec<(&str, &str)> {
        good.iter().copied().filter(|(k, _)| *k != name).collect()
    };
    let replaced = |name: &'static str, value: &'static str| -> Vec<(&'static str, &str)> {
        good.iter()
            .map(|&(k, v)| if k == name { (name, value) } else { (k, v) })
            .collect()
    };
    let refusals: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no bearer", without("Authorization")),
        (
            "a wrong bearer",
            replaced("Authorization", "Bearer act-tokeX"),
        ),
        ("no action header", without("X-Argon-Action")),
        (
            "a foreign Origin",
            replaced("Origin", "http://evil.example"),
        ),
        ("a null Origin", replaced("Origin", "null")),
        (
            "a cross-site fetch",
            replaced("Sec-Fetch-Site", "cross-site"),
        ),
    ];
    for (what, headers) in &refusals {
        for path in [cancel.as_str(), "/api/dead/1/retry", "/api/workers/1/drain"] {
            let (code, body) = post(&http, path, headers);
            assert_eq!(code, 403, "{what}, {path}: {body}");
            assert!(body["error"].is_string(), "{what}: {body}");
        }
    }
    let (code, _) = request(&http, "GET", &cancel, &good);
    assert!(code == 404 || code == 405, "a GET acted: {code}");
    assert_eq!(
        mgr.status().in_flight,
        1,
        "a refused action changed something"
    );

    // Without an Origin (curl sends none) the bearer and the header suffice.
    let (code, body) = post(&http, &cancel, &without("Origin"));
    assert_eq!(
        (code, &body["result"]),
        (200, &serde_json::json!("cancelled")),
        "{body}"
    );
    assert_eq!(body["task_id"], running.to_string());
    let out = mgr
        .client_cmd("result", ["--wait", &running.to_string()])
        .run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("cancelled"), "{out}");
    let (code, body) = post(&http, &cancel, &good);
    assert_eq!(code, 409, "a finished task: {body}");
    assert_eq!(post(&http, "/api/tasks/987654321/cancel", &good).0, 404);
    let (code, body) = post(&http, "/api/tasks/nine/cancel", &good);
    assert_eq!(code, 400, "{body}");

    let out = mgr.submit(["--retries", "1", "flaky"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    let out = mgr.client_cmd("failed", ["--json"]).run();
    let list: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let dead = list["tasks"][0]["task_id"].as_u64().expect("a dead task");
    std::fs::write(&mended, "").expect("mend the task");
    let (code, body) = post(&http, &format!("/api/dead/{dead}/retry"), &good);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["task_id"], dead.to_string());
    let new: u64 = body["new_task_id"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("the new id");
    assert_ne!(new, dead);
    let out = mgr.client_cmd("result", ["--wait", &new.to_string()]).run();
    assert_eq!(out.code, Some(0), "the retried task ran again: {out}");
    let (code, body) = post(&http, &format!("/api/dead/{dead}/retry"), &good);
    assert_eq!(code, 404, "it left the dead list: {body}");

    let (_, overview) = get(&http, "/api/overview", Some("act-token"));
    let o: serde_json::Value = serde_json::from_str(&overview).expect("JSON");
    assert!(
        o["failures"]
            .as_array()
            .expect("failures")
            .iter()
            .any(|f| f["task_id"].as_str() == Some(running.to_string().as_str())),
        "the cancelled task's id in the failures: {o}"
    );
    let worker = o["worker_list"][0]["id"].as_u64().expect("a worker id");
    let drain = format!("/api/workers/{worker}/drain");
    let (code, body) = post(&http, &drain, &good);
    assert_eq!(
        (code, &body["result"]),
        (200, &serde_json::json!("draining")),
        "{body}"
    );
    let status = mgr.status();
    assert_eq!(
        (status.workers, status.capacity),
        (1, 0),
        "drained, not gone"
    );
    let (code, body) = post(&http, &drain, &good);
    assert_eq!(body["result"], "already draining", "{code}: {body}");
    assert_eq!(post(&http, "/api/workers/4242/drain", &good).0, 404);
    mgr.assert_healthy();
}
