//! End to end: `argon bench --sweep` against a real manager and worker on
//! 127.0.0.1, a tiny sweep (2 slots, tasks of 20-40 ms, 1 s steps). Checks
//! that the JSON has every step with numbers that agree with each other and
//! with the cluster, and that the SVG is a well-formed document. Nothing
//! here asserts how fast anything is.

#![cfg(feature = "bench")]

mod common;

use std::time::Duration;

use common::{ManagerOpts, System};
use serde_json::Value;

const LOADS: [f64; 4] = [0.5, 1.0, 2.0, 5.0];

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v:#}"))
}

/// Checks that every tag of `text` is closed in order; returns the name of
/// the outermost element.
fn check_well_formed(text: &str) -> String {
    let mut open: Vec<String> = Vec::new();
    let mut root = None;
    let mut rest = text;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").expect("comment closed");
            rest = &after[end + 3..];
            continue;
        }
        let end = rest.find('>').expect("tag closed with >");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = open
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(top, name.trim(), "</{name}> closes <{top}>");
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        assert!(!name.is_empty(), "empty tag <{tag}>");
        if open.is_empty() {
            assert!(root.is_none(), "a second root element <{name}>");
            root = Some(name.clone());
        }
        if !tag.ends_with('/') {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "unclosed elements {open:?}");
    root.expect("a root element")
}

#[test]
fn a_tiny_sweep_reports_every_step_consistently_and_draws_svg() {
    let sys = System::start(
        1,
        2,
        ManagerOpts {
            queue_factor: Some(2),
            ..Default::default()
        },
    );
    let m = &sys.manager;
    let json_path = sys.dir.join("sweep.json");
    let svg_path = sys.dir.join("sweep.svg");
    let loads = LOADS.map(|l| l.to_string()).join(",");
    let out = m
        .client_cmd("bench", ["--sweep", "--loads", &loads])
        .args([
            "--task-ms",
            "20-40",
            "--step-secs",
            "1",
            "--warmup-secs",
            "0.3",
        ])
        .arg("--out")
        .arg(&json_path)
        .arg("--svg")
        .arg(&svg_path)
        .limit(Duration::from_secs(90))
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    // The table: a header of two lines, then one line per step.
    assert_eq!(out.stdout.lines().count(), 2 + LOADS.len(), "{out}");

    let text = std::fs::read_to_string(&json_path).expect("the JSON file");
    let r: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(r["capacity"], 2, "{r:#}");
    assert_eq!(r["queue_limit"], 4, "{r:#}");
    assert_eq!(r["task"], "sleep");
    let capacity = num(&r, "capacity");
    let places = capacity + num(&r, "queue_limit");
    let ceiling = num(&r, "capacity_tasks_per_s");
    assert!((ceiling - 2.0 / 0.030).abs() < 0.01, "{r:#}");
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), LOADS.len(), "{r:#}");

    for (s, load) in steps.iter().zip(LOADS) {
        let clients = num(s, "clients");
        assert_eq!(num(s, "load"), load, "{s:#}");
        assert_eq!(clients, (load * capacity).round(), "{s:#}");
        assert_eq!(num(s, "probes"), (clients / 8.0).floor(), "{s:#}");
        for key in ["failed", "errors", "unfinished"] {
            assert_eq!(num(s, key), 0.0, "{key} in {s:#}");
        }
        // Throughput: work was done, and never more than the slots allow
        // (with room for tasks straddling the window's edges).
        assert!(num(s, "completed") > 0.0, "{s:#}");
        for key in ["accepted_per_s", "completed_per_s"] {
            let v = num(s, key);
            assert!(
                v <= ceiling * 1.5,
                "{key} {v} above capacity {ceiling}: {s:#}"
            );
        }
        // Latency: every task sleeps at least 20 ms; percentiles in order;
        // from the first try is never shorter than from acceptance.
        let (a50, a99) = (num(s, "accept_p50_ms"), num(s, "accept_p99_ms"));
        let (f50, f99) = (num(s, "first_p50_ms"), num(s, "first_p99_ms"));
        assert!(a50 >= 20.0, "{s:#}");
        assert!(a50 <= a99 && f50 <= f99, "{s:#}");
        assert!(f50 >= a50 && f99 >= a99, "{s:#}");
        let rate = num(s, "deny_rate");
        assert!((0.0..=1.0).contains(&rate), "{s:#}");
        if clients <= places {
            // Every client's task fits in a slot or the queue: no deny.
            assert_eq!(rate, 0.0, "deny at load {load}: {s:#}");
            assert!(s["retry_after_needed"].is_null(), "{s:#}");
            assert!(s["retry_after_taken"].is_null(), "{s:#}");
        } else {
            // More clients than places: someone is always turned away.
            assert!(rate > 0.0, "no deny at load {load}: {s:#}");
            assert!(num(s, "denials_per_denied_task") >= 1.0, "{s:#}");
        }
        for fit in ["retry_after_needed", "retry_after_taken"] {
            let f = &s[fit];
            if f.is_null() {
                continue;
            }
            assert!(num(f, "samples") >= 1.0, "{fit}: {s:#}");
            let (p10, p50, p90) = (
                num(f, "ratio_p10"),
                num(f, "ratio_p50"),
                num(f, "ratio_p90"),
            );
            assert!(0.0 < p10 && p10 <= p50 && p50 <= p90, "{fit}: {s:#}");
            assert!(num(f, "predicted_p50_ms") >= 10.0, "{fit}: {s:#}");
        }
        assert!(num(s, "queued_max") <= num(&r, "queue_limit"), "{s:#}");
    }

    let svg = std::fs::read_to_string(&svg_path).expect("the SVG file");
    assert_eq!(check_well_formed(&svg), "svg");
    for panel in [
        "Accepted tasks per second",
        "Latency",
        "denied",
        "retry_after",
    ] {
        assert!(svg.contains(panel), "no {panel:?} panel");
    }
}

#[test]
fn the_svg_check_catches_broken_documents() {
    assert_eq!(
        check_well_formed("<svg a=\"1\"><g><line/></g></svg>"),
        "svg"
    );
    for bad in [
        "<svg><g></svg>",
        "<svg></g>",
        "<svg></svg><svg></svg>",
        "<svg>",
    ] {
        let caught = std::panic::catch_unwind(|| check_well_formed(bad)).is_err();
        assert!(caught, "{bad:?} passed");
    }
}
