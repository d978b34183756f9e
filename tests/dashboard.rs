//! The dashboard in a real browser: the `argon` binary runs a manager with
//! `--http 127.0.0.1:0` and a worker, headless Chromium loads `/`, and the
//! page must show the live numbers (workers, capacity, a busy slot, a
//! completed count that rises as `argon submit` runs tasks), list a failure
//! whose error text is markup as plain text, list a task waiting for a retry
//! the same way, and ask for the token behind one, keep it for the tab and
//! send it. The console's actions run from the page: a running task
//! cancelled, a dead task queued again, a worker drained, each checked with
//! the CLI; with a wrong token, or on a manager without one, the page shows
//! the 403. The layout leaves no blank column at 1400 and 1024 px wide,
//! the charts draw from the first answer, and tasks that aging moved to a
//! level are drawn apart from those sent there.
//! (Workers only register task names of letters,
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
    // A retry waits 30 to 60 s: long enough for the page to show it. The
    // limit on echo is far above what the test sends: it only shows.
    let manager_toml = dir.write(
        "manager.toml",
        "[manager]\nretry_base = \"60s\"\n[limits.echo]\nrate = \"1000/s\"\nmax_running = 3\n",
    );
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

    let row = b
        .eval(
            "Array.from(document.querySelectorAll('#limit-rows tr')[0].children)\
             .map(td => td.textContent)",
        )
        .expect("a limit row");
    assert_eq!(row, json!(["echo", "0 / 3", "–", "1000/s", "0"]), "{row}");

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
    assert_eq!(row[2], json!(EVIL_NAME), "{row}");
    assert!(
        row[4].as_str().is_some_and(|e| e.contains(EVIL_ERROR)),
        "{row}"
    );
    assert!(row[3].as_str().is_some_and(|w| w.starts_with('#')), "{row}");
    assert!(
        row[1].as_str().is_some_and(|id| id.parse::<u64>().is_ok()),
        "the failure's task id: {row}"
    );
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

    // Reloaded, the page draws the charts from its first answer.
    b.navigate(&format!("http://{http}/"))
        .expect("the page loads again");
    b.wait_for(
        "the charts on the first answer",
        &format!(
            "{} === 'live' && document.querySelectorAll('#chart-completed polyline').length === 1",
            text_of("state")
        ),
        "document.getElementById('chart-completed').outerHTML",
        PAGE,
    );

    // This manager has no token: an action is refused, and the page says so.
    b.eval("document.querySelector('#worker-rows button[data-action=drain]').click()")
        .expect("a Drain button");
    b.wait_for(
        "the 403 of an action without a token",
        &format!(
            "{}.startsWith('403: actions need the HTTP token')",
            text_of("action-result")
        ),
        &text_of("action-result"),
        PAGE,
    );
    assert_eq!(mgr.status().capacity, 3, "the worker was drained");

    // Tasks that aging moved to high are drawn apart from those sent high:
    // the page's answers are rewritten to hold two, both aged.
    b.eval(
        "(() => { const real = window.fetch; window.fetch = async (url, opts) => {
            const r = await real(url, opts);
            if (!String(url).includes('api/overview') || !r.ok) return r;
            const o = await r.json();
            o.queue.high = 2; o.queue.promoted_high = 2;
            return new Response(JSON.stringify(o), { status: 200 });
        }; return true; })()",
    )
    .expect("a rewriting fetch");
    b.wait_for(
        "two aged tasks at high, none drawn as sent high",
        &format!(
            "{} === '2 (2 aged)' && document.getElementById('bar-high').style.width === '0%' \
             && document.getElementById('bar-high-aged').style.width !== '0%'",
            text_of("queue-high")
        ),
        "document.getElementById('queue-high').parentElement.outerHTML",
        PAGE,
    );
    mgr.assert_healthy();
}

/// JavaScript: the sections of each grid row of `main` that do not reach
/// both edges of its content box, as JSON (`[]` when there are none), and
/// how many rows hold two sections side by side.
const LAYOUT: &str = "(() => {
    const main = document.querySelector('main');
    const cs = getComputedStyle(main);
    const box = main.getBoundingClientRect();
    const left = box.left + parseFloat(cs.paddingLeft), right = box.right - parseFloat(cs.paddingRight);
    const rows = new Map();
    for (const s of main.children) {
        if (s.hidden) continue;
        const r = s.getBoundingClientRect();
        const k = Math.round(r.top);
        const e = rows.get(k) || { l: Infinity, r: -Infinity, n: 0 };
        e.l = Math.min(e.l, r.left); e.r = Math.max(e.r, r.right); e.n += 1;
        rows.set(k, e);
    }
    const all = [...rows.values()];
    const gaps = all.filter(e => Math.abs(e.l - left) > 1 || Math.abs(e.r - right) > 1);
    return JSON.stringify({ gaps, pairs: all.filter(e => e.n === 2).length,
        overflow: document.documentElement.scrollWidth > window.innerWidth });
})()";

/// Sets the page's viewport to `width` px and checks [`LAYOUT`].
fn check_layout(b: &mut Browser, width: u32) {
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    )
    .expect("a viewport");
    b.wait_for(
        &format!("no blank column at {width} px"),
        &format!(
            "(() => {{ const l = JSON.parse({LAYOUT}); return l.gaps.length === 0 && \
             l.pairs >= 2 && !l.overflow; }})()"
        ),
        LAYOUT,
        PAGE,
    );
}

/// A worker config with `flaky`, a command task that fails until the file
/// `mended` exists.
fn flaky_config(dir: &TempDir, mended: &Path) -> std::path::PathBuf {
    let script = format!(
        "test -e {:?} && echo 1 || {{ echo not yet >&2; exit 3; }}",
        mended.display().to_string()
    );
    dir.write(
        "worker.toml",
        &format!("[tasks.flaky]\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n"),
    )
}

#[test]
fn the_console_cancels_retries_and_drains_with_the_token() {
    let dir = TempDir::new();
    let Some(mut b) = browser_or_skip(&dir.join("profile")) else {
        return;
    };
    let key = dir.keygen("key");
    let token = dir.write("token", "console-token\n");
    let manager_toml = dir.write("manager.toml", "[manager]\nretry_base = \"50ms\"\n");
    let (mut mgr, http) = Manager::start_with_http(
        &key,
        "127.0.0.1:0",
        &[
            OsStr::new("--http-token-file"),
            token.as_os_str(),
            OsStr::new("--config"),
            manager_toml.as_os_str(),
        ],
    );
    let mended = dir.join("mended");
    let config = flaky_config(&dir, &mended);
    let _worker = Worker::start_with(
        &mgr.addr,
        &key,
        2,
        &[OsStr::new("--config"), config.as_os_str()],
    );
    mgr.wait_for_workers(1);

    b.navigate(&format!("http://{http}/"))
        .expect("the page loads");
    b.wait_for(
        "the page to ask for the token",
        &format!(
            "{}.startsWith('401') && !document.getElementById('token-box').hidden",
            text_of("state")
        ),
        TILES,
        PAGE,
    );
    b.eval(
        "document.getElementById('token-input').value = 'console-token'; \
         document.getElementById('token-form').requestSubmit(); true",
    )
    .expect("the token entered");
    b.wait_for(
        "the page with the token",
        &format!(
            "{} === 'live' && {} === '2' && document.getElementById('token-box').hidden",
            text_of("state"),
            text_of("capacity")
        ),
        TILES,
        PAGE,
    );

    // Cancel a running task from the running list.
    // Task ids take up to 62 bits: the page must not round them.
    let out = mgr.submit(["--detach", "sleep", "60000"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let running: u64 = out.stdout.trim().parse().expect("a task id");
    let button = format!("#running-rows button[data-action=cancel][data-id='{running}']");
    b.wait_for(
        "the running task with its Cancel button",
        &format!("document.querySelector(\"{button}\") !== null"),
        "document.getElementById('running-rows').textContent",
        PAGE,
    );
    let row = b
        .eval("Array.from(document.querySelectorAll('#running-rows tr')[0].children).map(td => td.textContent)")
        .expect("a running row");
    assert_eq!(
        (&row[0], &row[1]),
        (&json!(running.to_string()), &json!("sleep")),
        "{row}"
    );
    assert!(row[2].as_str().is_some_and(|w| w.starts_with('#')), "{row}");
    b.eval(&format!("document.querySelector(\"{button}\").click()"))
        .expect("a click");
    b.wait_for(
        "the cancel said done",
        &format!(
            "{} === 'task {running} cancelled'",
            text_of("action-result")
        ),
        &text_of("action-result"),
        PAGE,
    );
    let out = mgr
        .client_cmd("result", ["--wait", &running.to_string()])
        .run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("cancelled"), "{out}");

    // Queue a dead task again from the dead list.
    let out = mgr.submit(["--retries", "1", "flaky"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    let out = mgr.client_cmd("failed", ["--json"]).run();
    let list: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let dead = list["tasks"][0]["task_id"].as_u64().expect("a dead task");
    let button = format!("#dead-rows button[data-action=retry][data-id='{dead}']");
    b.wait_for(
        "the dead task with its Retry button",
        &format!("document.querySelector(\"{button}\") !== null"),
        "document.getElementById('dead-rows').textContent",
        PAGE,
    );
    std::fs::write(&mended, "").expect("mend the task");
    b.eval(&format!("document.querySelector(\"{button}\").click()"))
        .expect("a click");
    let prefix = format!("dead task {dead} queued again as task ");
    b.wait_for(
        "the retry said done",
        &format!("{}.startsWith('{prefix}')", text_of("action-result")),
        &text_of("action-result"),
        PAGE,
    );
    let said = b.eval(&text_of("action-result")).expect("the result");
    let new: u64 = said
        .as_str()
        .and_then(|t| t.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the new id in {said}"));
    let out = mgr.client_cmd("result", ["--wait", &new.to_string()]).run();
    assert_eq!(out.code, Some(0), "the retried task ran again: {out}");
    let out = mgr.client_cmd("failed", ["--json"]).run();
    let list: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(list["total"], 0, "{list}");

    check_layout(&mut b, 1400);
    check_layout(&mut b, 1024);

    // A wrong token: the action is refused and the page says why.
    b.eval("sessionStorage.setItem('argon-http-token', 'wrong-token'); true")
        .expect("a wrong token");
    b.eval(
        "document.getElementById('cancel-id').value = '12345'; \
         document.getElementById('cancel-form').requestSubmit(); true",
    )
    .expect("a cancel by id");
    b.wait_for(
        "the 403 of a wrong token",
        &format!(
            "{}.startsWith('403: actions need the HTTP token: the bearer token is missing or wrong')",
            text_of("action-result")
        ),
        &text_of("action-result"),
        PAGE,
    );
    b.wait_for(
        "the page to ask for the token again",
        "!document.getElementById('token-box').hidden",
        TILES,
        PAGE,
    );
    b.eval("sessionStorage.setItem('argon-http-token', 'console-token'); true")
        .expect("the token again");

    // Drain the worker.
    b.wait_for(
        "the worker's Drain button",
        &format!(
            "{} === 'live' && document.querySelector('#worker-rows button[data-action=drain]') !== null",
            text_of("state")
        ),
        TILES,
        PAGE,
    );
    b.eval("document.querySelector('#worker-rows button[data-action=drain]').click()")
        .expect("a click");
    b.wait_for(
        "the worker draining",
        &format!(
            "{} === '0' && document.querySelectorAll('#worker-rows .tag').length === 1 \
             && {}.endsWith(': draining')",
            text_of("capacity"),
            text_of("action-result")
        ),
        TILES,
        PAGE,
    );
    let status = mgr.status();
    assert_eq!(
        (status.workers, status.capacity),
        (1, 0),
        "drained, not gone"
    );
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
    b.navigate(&url).expect("the page loads without the token");
    b.wait_for(
        "the page to ask for the token",
        &format!(
            "{}.startsWith('401') && !document.getElementById('token-box').hidden",
            text_of("state")
        ),
        TILES,
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
            // Dead after one retry: the dead list shows it.
            _ => &["--retry", "--retries", "1", "sleep", "[-1]"],
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
