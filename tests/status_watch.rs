//! End-to-end tests of `argon status --watch` with stdout not a terminal:
//! snapshots come one after another, each ended by a blank line and with
//! none inside, with no terminal escapes; a later one shows work done after the first; SIGINT
//! ends it with exit 0. Bad `--interval` values are usage errors.

mod common;

use std::time::{Duration, Instant};

use common::{argon, Manager, Proc, TempDir, COMMAND};

/// The next snapshot: the lines up to the blank line that ends it.
fn next_snapshot(proc: &Proc, deadline: Instant) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match proc.next_line(left) {
            Some(l) if l.is_empty() => return lines,
            Some(l) => lines.push(l),
            None => panic!(
                "no complete snapshot in time; got {lines:?}\n--- stdout\n{}--- stderr\n{}",
                proc.stdout(),
                proc.stderr()
            ),
        }
    }
}

#[test]
fn watch_prints_snapshots_until_sigint() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let mgr = Manager::start(&key);
    let _worker = mgr.add_worker(2, 1);

    let mut watch = mgr
        .client_cmd("status", ["--watch", "--interval", "100ms"])
        .spawn();
    let deadline = Instant::now() + COMMAND;
    let first = next_snapshot(&watch, deadline);
    assert!(
        first[0].starts_with("workers 1  capacity 2  in flight 0"),
        "{first:?}"
    );
    assert_eq!(first[1], "completed 0  failed 0  denied 0", "{first:?}");
    // The worker table follows without the blank line `status` puts before it.
    assert_eq!(first.len(), 4, "{first:?}");
    assert!(
        first[2].trim_start().starts_with("id  address"),
        "{first:?}"
    );

    let out = mgr.submit(["echo", "1"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    // Snapshots already on their way may predate the submit: read on until
    // one counts it.
    let mut seen = 1;
    loop {
        let snap = next_snapshot(&watch, deadline);
        seen += 1;
        if snap[1] == "completed 1  failed 0  denied 0" {
            break;
        }
        assert_eq!(snap[1], "completed 0  failed 0  denied 0", "{snap:?}");
    }
    assert!(seen >= 2);
    assert!(
        !watch.stdout().contains('\x1b'),
        "terminal escapes in a pipe:\n{}",
        watch.stdout()
    );

    watch.signal(libc::SIGINT);
    let status = watch.wait_within(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "--watch did not exit 0 on SIGINT\n--- stderr\n{}",
        watch.stderr()
    );
}

#[test]
fn watch_json_is_one_object_per_snapshot() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let mgr = Manager::start(&key);
    let _worker = mgr.add_worker(1, 1);
    let mut watch = mgr
        .client_cmd("status", ["--watch", "--json", "--interval", "100ms"])
        .spawn();
    let deadline = Instant::now() + COMMAND;
    for _ in 0..2 {
        let snap = next_snapshot(&watch, deadline);
        assert_eq!(snap.len(), 1, "{snap:?}");
        let v: serde_json::Value = serde_json::from_str(&snap[0]).expect("a JSON object");
        assert_eq!(v["workers"], 1, "{v}");
    }
    watch.signal(libc::SIGTERM);
    let status = watch.wait_within(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

#[test]
fn bad_intervals_are_usage_errors() {
    for args in [
        &["status", "--interval", "1s"][..],
        &["status", "--watch", "--interval", "10ms"],
        &["status", "--watch", "--interval", "soon"],
    ] {
        let out = argon(args).limit(Duration::from_secs(10)).run();
        assert_eq!(out.code, Some(2), "{out}");
    }
}
