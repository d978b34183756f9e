//! The dashboard in a real browser: the `argon` binary runs a manager with
//! `--http 127.0.0.1:0` and a worker, headless Chromium loads `/`, and the
//! page must show the live numbers (workers, capacity, a busy slot, a
//! completed count that rises as `argon submit` runs tasks), list a failure
//! whose error text is markup as plain text, list a task waiting for a retry
//! the same way, and load behind a token when the bearer header is sent. (Workers only register task names of letters,
//! digits and `_-.:`, so the error text, a command's stderr, is the peer
//! text that can hold markup; names go through the same code in the page.)
//!
//! Without a browser (none on `PATH`, or it does not start) the tests print
//! `SKIPPED: reason` on stderr and pass, or fail when
//! `ARGON_REQUIRE_BROWSER=1` (set by `.ci/run`, which installs Debian's
//! `chromium`). `ARGON_BROWSER=PATH` picks the browser.
//!
//! `cargo test --test dashboard -- --ignored` runs one more: it puts the
//! cluster under load and saves the page as docs/dashboard.png.

#![cfg(all(feature = "http", feature = "bench"))]

mod browser;
mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use browser::Browser;
use common::{Manager, TempDir, Worker, COMMAND};
use serde_json::json;

/// Set to `1` (as `.ci/run` does) to make a missing browser fail the tests
/// instead of skipping them.
const REQUIRE: &str = "ARGON_REQUIRE_BROWSER";

/// Longest wait for the page to show what the manager knows. The page
/// polls once a second.
const PAGE: Duration = Duration::from_secs(15);

/// A command task whose error text is markup: the page must show it as
/// text, so no element with its id may appear.
const EVIL_NAME: &str = "evil:task";
const EVIL_ERROR: &str = "<img src=x id=evil-error><b>bold</b>";

/// A headless browser with its profile in `profile`, or `None` after a loud
/// `SKIPPED:` line when there is none (a failure with [`REQUIRE`] `=1`).
fn browser_or_skip(profile: &Path) -> Option<Browser> {
    let why = match browser::find() {
        None => "no chromium on PATH (nor ARGON_BROWSER)".to_string(),
        Some(exe) => match Browser::launch(&exe, profile, 1280, 900) {
            Ok(b) => return Some(b),
            Err(e) => format!("{} does not start: {e}", exe.display()),
        },
    };
    if std::env::var_os(REQUIRE).is_some_and(|v| v == "1") {
        panic!(
            "{why}, and {REQUIRE}=1 requires the dashboard's browser test to run \
             (apt-get install chromium)"
        );
    }
    // Straight to stderr, past the harness's capture, so it shows.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: the dashboard's browser test did not run: {why} \
         (apt-get install chromium, or set {REQUIRE}=1 to make this a failure) ***\n"
    );
    None
}

/// A worker config whose one command task fails with markup on stderr.
fn evil_config(dir: &TempDir) -> std::path::PathBuf {
    dir.write(
        "worker.toml",
        &format!(
            "[tasks.\"{EVIL_NAME}\"]\ncommand = [\"sh\", \"-c\", \"echo '{EVIL_ERROR}' >&2; exit 3\"]\n"
        ),
    )
}

/// JavaScript: the text of the element with id `id`.
fn text_of(id: &str) -> String {
    format!("document.getElementById('{id}').textContent")
}

/// JavaScript: the texts of the dashboard's tiles, for failure messages.
const TILES: &str = "JSON.stringify(['state', 'workers', 'capacity', 'busy', 'completed', \
                     'failed', 'denied'].map(id => [id, document.getElementById(id).textContent]))";

#[test]
fn dashboard_shows_live_numbers() {
    let dir = TempDir::new();
    let Some(mut b) = browser_or_skip(&dir.join("profile")) else {
        return;
    };
    let key = dir.keygen("key");
    // A retry waits 30 to 60 s: long enough for the page to show it.
    let manager_toml = dir.write("manager.toml", "[manager]\nretry_base = \"60s\"\n");
    let (mut mgr, http) = Manager::start_with_http(
        &key,
        "127.0.0.1:0",
        &[OsStr::new("--config"), manager_toml.as_os_str()],
    );
    let config = evil_config(&dir);
    let _worker = Worker::start_with(
        &mgr.addr,
        &key,
        3,
        &[OsStr::new("--config"), config.as_os_str()],
    );
    mgr.wait_for_workers(1);

    b.navigate(&format!("http://{http}/"))
        .expect("the page loads");
    b.wait_for(
        "the page to show one idle worker of 3 slots",
        &format!(
            "{} === 'live' && {} === '1' && {} === '3' && {} === '0' && {} === '0' \
             && document.querySelectorAll('#worker-rows .slot').length === 3 \
             && document.querySelectorAll('#worker-rows .slot.busy').length === 0",
            text_of("state"),
            text_of("workers"),
            text_of("capacity"),
            text_of("busy"),
            text_of("completed"),
        ),
        TILES,
        PAGE,
    );

    let long = mgr.submit(["sleep", "1500"]).spawn();
    b.wait_for(
        "one busy slot",
        &format!(
            "{} === '1' && document.querySelectorAll('#worker-rows .slot.busy').length === 1",
            text_of("busy")
        ),
        TILES,
        PAGE,
    );
    for i in 0..4 {
        let out = mgr.submit(["echo", &i.to_string()]).run();
        assert_eq!(out.code, Some(0), "{out}");
    }
    let out = mgr.submit([EVIL_NAME]).run();
    assert_eq!(out.code, Some(1), "{out}");
    let out = long.finish(COMMAND);
    assert_eq!(out.code, Some(0), "{out}");

    b.wait_for(
        "the completed count to rise to 5, with 1 failed",
        &format!(
            "{} === '5' && {} === '1' && {} === '0'",
            text_of("completed"),
            text_of("failed"),
            text_of("busy")
        ),
        TILES,
        PAGE,
    );
    let row = b
        .eval(
            "Array.from(document.querySelectorAll('#failure-rows tr')[0].children)\
             .map(td => td.textContent)",
        )
        .expect("a failure row");
    assert_eq!(row[1], json!(EVIL_NAME), "{row}");
    assert!(
        row[3].as_str().is_some_and(|e| e.contains(EVIL_ERROR)),
        "{row}"
    );
    assert!(row[2].as_str().is_some_and(|w| w.starts_with('#')), "{row}");
    let injected = b
        .eval(
            "[document.getElementById('evil-error'), document.querySelector('#failure-rows img'), \
             document.querySelector('#failure-rows b')].filter(e => e !== null).length",
        )
        .expect("a count");
    assert_eq!(injected, json!(0), "peer text became markup");

    b.wait_for(
        "the run times of the 6 runs",
        "document.getElementById('lat-run_time').children[5].textContent === '6'",
        "document.getElementById('lat-run_time').textContent",
        PAGE,
    );
    b.wait_for(
        "a completed-per-second chart",
        "document.querySelectorAll('#chart-completed polyline').length === 1",
        "document.getElementById('chart-completed').outerHTML",
        PAGE,
    );

    let waiting = mgr.submit(["--retries", "2", EVIL_NAME]).spawn();
    b.wait_for(
        "one task waiting for a retry",
        &format!(
            "{} === '1' && document.querySelectorAll('#retrying-rows tr td.num').length === 2",
            text_of("retrying")
        ),
        "document.getElementById('retrying-rows').textContent",
        PAGE,
    );
    let row = b
        .eval(
            "Array.from(document.querySelectorAll('#retrying-rows tr')[0].children)\
             .map(td => td.textContent)",
        )
        .expect("a retry row");
    assert_eq!(
        (&row[1], &row[2]),
        (&json!(EVIL_NAME), &json!("1 of 2")),
        "{row}"
    );
    assert!(
        row[4].as_str().is_some_and(|e| e.contains(EVIL_ERROR)),
        "{row}"
    );
    let injected = b
        .eval("document.querySelectorAll('#retrying-rows img, #retrying-rows b').length")
        .expect("a count");
    assert_eq!(injected, json!(0), "peer text became markup");
    drop(waiting);
    mgr.assert_healthy();
}

#[test]
fn a_guarded_dashboard_loads_with_the_bearer_header() {
    let dir = TempDir::new();
    let Some(mut b) = browser_or_skip(&dir.join("profile")) else {
        return;
    };
    let key = dir.keygen("key");
    let token = dir.write("token", "dash-token\n");
    let (mut mgr, http) = Manager::start_with_http(
        &key,
        "127.0.0.1:0",
        &[OsStr::new("--http-token-file"), token.as_os_str()],
    );
    let _worker = Worker::start(&mgr.addr, &key, 2);
    mgr.wait_for_workers(1);

    let url = format!("http://{http}/");
    b.navigate(&url).expect("the 401 page loads");
    b.wait_for(
        "the 401 answer",
        "document.body !== null && document.body.textContent.includes('bearer token is required')",
        "document.documentElement.outerHTML",
        PAGE,
    );
    b.set_headers(json!({"Authorization": "Bearer dash-token"}))
        .expect("extra headers");
    b.navigate(&url).expect("the page loads");
    b.wait_for(
        "the page to show the worker",
        &format!(
            "{} === 'live' && {} === '1' && {} === '2'",
            text_of("state"),
            text_of("workers"),
            text_of("capacity")
        ),
        TILES,
        PAGE,
    );
    mgr.assert_healthy();
}

/// Without a browser the tests say SKIPPED loudly and pass, unless
/// `ARGON_REQUIRE_BROWSER=1`, where they fail saying why. Runs this very
/// test binary with an empty PATH, once each way.
#[test]
fn missing_browser_is_a_loud_skip_or_a_required_failure() {
    let empty = TempDir::new();
    let me = std::env::current_exe().expect("the test binary's path");
    let run = |require: Option<&str>| {
        let mut cmd = Command::new(&me);
        cmd.args(["--exact", "dashboard_shows_live_numbers"])
            .env("PATH", empty.path())
            .env_remove("ARGON_BROWSER")
            .env_remove(REQUIRE)
            .stdin(Stdio::null());
        if let Some(v) = require {
            cmd.env(REQUIRE, v);
        }
        let out = common::Proc::spawn(cmd).finish(Duration::from_secs(60));
        (out.code, format!("{}{}", out.stdout, out.stderr))
    };

    let (code, text) = run(None);
    assert_eq!(code, Some(0), "a skip still passes:\n{text}");
    assert!(
        text.contains("SKIPPED: the dashboard's browser test did not run: no chromium on PATH"),
        "no SKIPPED line:\n{text}"
    );

    let (code, text) = run(Some("1"));
    assert_ne!(
        code,
        Some(0),
        "{REQUIRE}=1 must fail without a browser:\n{text}"
    );
    assert!(
        text.contains("ARGON_REQUIRE_BROWSER=1 requires the dashboard's browser test"),
        "no reason given:\n{text}"
    );
}

/// Puts a cluster under load (a bench run that overfills it, plus a few
/// failing tasks) and saves the page as docs/dashboard.png. Run it by hand
/// after changing the page: `cargo test --test dashboard -- --ignored`.
#[test]
#[ignore = "writes docs/dashboard.png; run by hand"]
fn screenshot_under_load() {
    let dir = TempDir::new();
    let Some(mut b) = browser_or_skip(&dir.join("profile")) else {
        panic!("a screenshot needs a browser");
    };
    let key = dir.keygen("key");
    let (mgr, http) = Manager::start_with_http(
        &key,
        "127.0.0.1:0",
        &[OsStr::new("--queue-factor"), OsStr::new("2")],
    );
    let config = evil_config(&dir);
    let _workers = [
        Worker::start(&mgr.addr, &key, 4),
        Worker::start(&mgr.addr, &key, 6),
        Worker::start_with(
            &mgr.addr,
            &key,
            12,
            &[OsStr::new("--config"), config.as_os_str()],
        ),
    ];
    mgr.wait_for_workers(3);
    b.navigate(&format!("http://{http}/"))
        .expect("the page loads");
    b.wait_for(
        "the page",
        &format!("{} === '3'", text_of("workers")),
        TILES,
        PAGE,
    );

    let bench = mgr
        .client_cmd(
            "bench",
            [
                "--task",
                "sleep",
                "--args",
                "[40]",
                "--tasks",
                "40000",
                "--concurrency",
                "120",
                "--clients",
                "4",
            ],
        )
        .limit(Duration::from_secs(120))
        .spawn();
    // A failing task every 2.5 s while the charts fill (retried while the
    // queue is full): a timeout, a bad argument, once the command whose
    // error is markup.
    let start = Instant::now();
    for i in 0.. {
        if start.elapsed() > Duration::from_secs(40) {
            break;
        }
        let args: &[&str] = match i % 3 {
            0 => &["--retry", "--timeout", "50ms", "sleep", "400"],
            1 => &["--retry", "sleep", "\"soon\""],
            _ if i == 2 => &["--retry", EVIL_NAME],
            _ => &["--retry", "sleep", "[-1]"],
        };
        let _ = mgr.submit(args).run();
        std::thread::sleep(Duration::from_millis(2500));
    }
    // One task waiting for a retry when the picture is taken.
    let _waiting = mgr
        .submit(["--retry", "--retries", "3", "sleep", "[-1]"])
        .spawn();
    b.wait_for(
        "a task waiting for a retry",
        &format!("{} === '1'", text_of("retrying")),
        "document.getElementById('retrying-rows').textContent",
        PAGE,
    );
    let png = b.screenshot(1280).expect("a screenshot");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    std::fs::write(&path, &png).expect("write docs/dashboard.png");
    eprintln!("wrote {} ({} bytes)", path.display(), png.len());
    drop(bench);
}
