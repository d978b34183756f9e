//! End-to-end tests of the CLI's edges, on the real binary: `bench` fails
//! when tasks fail, `ping -c`, the bounds of `--timeout` and `--attempts`,
//! the warning for a key file open to others, `keygen`'s exit codes, and
//! arguments read from `--args-file` (a file or stdin).

mod common;

use std::path::Path;

use common::{argon, ManagerOpts, System, TempDir};

fn parse_json(what: &str, text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {text}"))
}

/// A bench where every task fails still prints its report (here JSON) but
/// exits 1 and says how many failed.
#[test]
#[cfg(feature = "bench")]
fn bench_with_failed_tasks_exits_1() {
    let sys = System::start(1, 2, ManagerOpts::default());
    let out = sys
        .manager
        .client_cmd(
            "bench",
            [
                "--task",
                "no_such_task",
                "--tasks",
                "6",
                "--concurrency",
                "2",
                "--clients",
                "1",
                "--json",
            ],
        )
        .run();
    assert_eq!(out.code, Some(1), "{out}");
    let report = parse_json("the bench report", &out.stdout);
    assert_eq!(report["failed"], 6, "{out}");
    assert_eq!(report["tasks"], 0, "{out}");
    assert!(out.stderr.contains("argon: 6 of 6 task(s) failed"), "{out}");

    let out = sys
        .manager
        .client_cmd(
            "bench",
            ["--tasks", "4", "--concurrency", "1", "--clients", "1"],
        )
        .run();
    assert_eq!(out.code, Some(0), "all echo tasks succeed: {out}");
}

/// `ping -c 0` is bad usage; `ping -c 3` prints three pongs and a summary;
/// a single ping needs none.
#[test]
fn ping_count_is_at_least_1_and_ends_with_a_summary() {
    let sys = System::start(0, 1, ManagerOpts::default());
    let m = &sys.manager;
    let out = m.client_cmd("ping", ["-c", "0"]).run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("--count"), "{out}");
    assert_eq!(out.stdout, "", "no ping was sent: {out}");

    let out = m.client_cmd("ping", ["-c", "3"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for l in &lines[..3] {
        assert!(l.starts_with(&format!("pong from {} in ", m.addr)), "{out}");
    }
    let summary = lines[3];
    let prefix = format!("3 pong(s) from {}: round trip min ", m.addr);
    let rest = summary
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{out}"));
    let ms: Vec<f64> = rest
        .split(", ")
        .map(|part| {
            part.trim_start_matches("median ")
                .trim_start_matches("max ")
                .trim_end_matches(" ms")
                .parse()
                .unwrap_or_else(|e| panic!("{part:?} in {summary:?}: {e}"))
        })
        .collect();
    assert_eq!(ms.len(), 3, "{summary}");
    assert!(
        ms[0] <= ms[1] && ms[1] <= ms[2],
        "min <= median <= max: {summary}"
    );

    let out = m.client_cmd("ping", ["-c", "1"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
}

/// `--timeout 0s` (or under a millisecond) and `--attempts 0` are bad usage
/// for `submit` and `eval`, with a message that says what is allowed.
#[test]
fn zero_timeout_and_zero_attempts_are_bad_usage() {
    let sys = System::start(1, 1, ManagerOpts::default());
    let m = &sys.manager;
    for cmd in ["submit", "eval"] {
        let first = if cmd == "submit" { "echo" } else { "1" };
        for (flag, value, says) in [
            ("--timeout", "0s", "at least 1ms"),
            ("--timeout", "500us", "at least 1ms"),
            ("--attempts", "0", "at least 1 attempt"),
        ] {
            let out = m.client_cmd(cmd, [flag, value, first, "1"]).run();
            assert_eq!(out.code, Some(2), "{out}");
            assert!(out.stderr.contains(says), "{out}");
            assert_eq!(out.stdout, "", "{out}");
        }
    }
    let out = m
        .submit(["--timeout", "5s", "--attempts", "1", "echo", "1"])
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.trim(), "1", "{out}");
}

/// A key file its group or others may read draws one warning naming the
/// file and `chmod 600`; a 0600 one draws none.
#[test]
fn key_file_open_to_others_warns_once() {
    use std::os::unix::fs::PermissionsExt;
    let sys = System::start(1, 1, ManagerOpts::default());
    let m = &sys.manager;
    let open = sys.dir.join("open-key");
    std::fs::copy(&m.key, &open).expect("copy the key");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let out = argon(["submit", "--mgr", &m.addr, "--key"])
        .arg(&open)
        .args(["echo", "1"])
        .run();
    assert_eq!(out.code, Some(0), "it still works: {out}");
    let warning = format!(
        "key file {} is open to other users (mode 644)",
        open.display()
    );
    assert_eq!(out.stderr.matches(&warning).count(), 1, "{out}");
    assert!(
        out.stderr
            .contains(&format!("chmod 600 {}", open.display())),
        "{out}"
    );

    let out = m.submit(["echo", "1"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!out.stderr.contains("open to other users"), "{out}");
}

/// `keygen` onto an existing file or into a missing folder is bad input:
/// exit 2, as the README's table says.
#[test]
fn keygen_refusals_exit_2() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let out = argon(["keygen".as_ref(), key.as_os_str()]).run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("already exists"), "{out}");

    let missing = dir.join("no-such-folder").join("key");
    let out = argon(["keygen".as_ref(), missing.as_os_str()]).run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("cannot create"), "{out}");
    assert!(!missing.exists());

    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    assert!(
        readme.contains("| 2 | bad usage or bad input") && readme.contains("`keygen`"),
        "the README's exit-code table covers keygen"
    );
}

/// Arguments too long for a command line (over 200 KiB) go through
/// `--args-file FILE` and `--args-file -` (stdin); giving both that and
/// ARGS_JSON is bad usage, and so is a file that is not there.
#[test]
fn arguments_come_from_a_file_or_stdin() {
    let sys = System::start(1, 1, ManagerOpts::default());
    let m = &sys.manager;
    let big = serde_json::json!({ "text": "x".repeat(210 * 1024), "n": [1, 2, 3] });
    let text = big.to_string();
    assert!(text.len() > 200 * 1024);
    let file = sys.dir.write("args.json", &text);

    let out = m.submit(["echo", "--args-file"]).arg(&file).run();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(parse_json("the result", &out.stdout), big);

    let out = m
        .submit(["echo", "--args-file", "-"])
        .stdin(text.clone())
        .run();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(parse_json("the result", &out.stdout), big);

    let out = m
        .client_cmd("eval", ["--args-file", "-", "args.text.len()"])
        .stdin(text)
        .run();
    assert_eq!(
        out.code,
        Some(1),
        "no worker allows eval, but the args were read: {out}"
    );
    assert!(out.stderr.contains("allow"), "{out}");

    let out = m.submit(["echo", "1", "--args-file"]).arg(&file).run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("cannot be used with"), "{out}");

    let out = m
        .submit(["echo", "--args-file"])
        .arg(sys.dir.join("missing.json"))
        .run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("cannot read"), "{out}");

    let out = m.submit(["echo", "--args-file", "-"]).stdin("{oops").run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr.contains("--args-file is not valid JSON"),
        "{out}"
    );
}
