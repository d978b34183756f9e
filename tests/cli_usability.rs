//! The CLI's rough edges of issue 11 item 4, each as a user meets it with the
//! real `argon` binary: `submit --retry` gives up after `--retry-for`, a bare
//! word as arguments gets a quoting hint, `cluster` honours its config file,
//! relative paths in a config file are taken from its folder, TOML errors
//! keep their caret diagram, missing command programs are warned about, and
//! a second signal stops a draining worker.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{argon, parse_listening, Manager, Proc, TempDir, Worker, STARTUP};

/// `host:port` where nothing listens: a port the OS just handed out and took back.
fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("local addr");
    drop(l);
    addr.to_string()
}

/// A started `argon cluster`: its process, manager address and key file,
/// from its first two stdout lines.
fn start_cluster(run: common::Run) -> (Proc, String, PathBuf) {
    let proc = run.spawn();
    let first = proc.next_line(STARTUP);
    let Some(addr) = first.as_deref().and_then(parse_listening) else {
        panic!(
            "cluster did not announce itself: {first:?}\n--- stderr\n{}",
            proc.stderr()
        );
    };
    let second = proc.next_line(STARTUP).unwrap_or_default();
    let key = second
        .strip_prefix("key file: ")
        .unwrap_or_else(|| panic!("no key file line: {second:?}"));
    (proc, addr, PathBuf::from(key))
}

fn client(cmd: &str, addr: &str, key: &Path) -> common::Run {
    argon([cmd, "--mgr", addr, "--key"]).arg(key)
}

/// Against a manager with no worker, `--retry --retry-for 1s` gives up with
/// the deny's exit code (75), saying so; at `-v` each wait is logged.
#[test]
fn retry_gives_up_on_denies_after_retry_for() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = Manager::start(&key);
    let out = m
        .submit(["-v", "--retry", "--retry-for", "1s", "echo", "1"])
        .limit(Duration::from_secs(30))
        .run();
    assert_eq!(out.code, Some(75), "{out}");
    assert!(
        out.stderr.contains("gave up after retrying for 1s"),
        "{out}"
    );
    assert!(
        out.stderr.contains("denied: ") && out.stderr.contains("retry 1 in "),
        "each wait is logged at -v: {out}"
    );
}

/// With nothing listening, `--retry` keeps trying to connect until
/// `--retry-for` passes, then exits 69 (unreachable).
#[test]
fn retry_gives_up_on_an_unreachable_manager_after_retry_for() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let out = client("submit", &dead_addr(), &key)
        .args(["--retry", "--retry-for", "1s", "echo", "1"])
        .limit(Duration::from_secs(30))
        .run();
    assert_eq!(out.code, Some(69), "{out}");
    assert!(
        out.stderr.contains("gave up after retrying for 1s")
            && out.stderr.contains("cannot reach manager"),
        "{out}"
    );
}

/// `submit echo hello` says how to pass a string.
#[test]
fn bare_word_arguments_get_a_quoting_hint() {
    let out = argon(["submit", "echo", "hello"]).run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr
            .contains(r#"(to pass a string, quote it: '"hello"')"#),
        "{out}"
    );
}

/// `cluster --config` runs the config's command tasks, allows eval when
/// the config says so, and uses its key file instead of a fresh one.
#[test]
#[cfg(feature = "eval")]
fn cluster_honours_the_config_file() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = dir.write(
        "cluster.toml",
        &format!(
            "[security]\nkey_file = {:?}\n[worker]\nallow_eval = true\n\
             [tasks.cat]\ncommand = [\"cat\"]\n",
            key.display().to_string()
        ),
    );
    let (_proc, addr, shown) = start_cluster(
        argon(["cluster", "--workers", "1", "--capacity", "1", "--config"]).arg(&config),
    );
    assert_eq!(shown, key);
    let out = client("submit", &addr, &key).args(["cat", "[1,2]"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "[1,2]\n", "{out}");
    let out = client("eval", &addr, &key).arg("1 + 1").run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "2\n", "{out}");
}

/// `cluster --allow-eval` runs eval scripts.
#[test]
#[cfg(feature = "eval")]
fn cluster_allow_eval_flag() {
    let (_proc, addr, key) = start_cluster(argon([
        "cluster",
        "--workers",
        "1",
        "--capacity",
        "1",
        "--allow-eval",
    ]));
    let out = client("eval", &addr, &key).arg("40 + 2").run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "42\n", "{out}");
}

/// A config file given as a relative path from another folder: its relative
/// `key_file`, task program (`./pwd.sh`) and `cwd` are taken from its own
/// folder.
#[test]
fn relative_paths_in_a_config_file_are_from_its_folder() {
    let dir = TempDir::new();
    let conf = dir.join("conf");
    std::fs::create_dir(&conf).unwrap();
    let key = dir.keygen("conf/key");
    let script = dir.write("conf/pwd.sh", "#!/bin/sh\nprintf '\"%s\"' \"$(pwd -P)\"\n");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir.write(
        "conf/c.toml",
        "[security]\nkey_file = \"key\"\n[tasks.where]\ncommand = [\"./pwd.sh\"]\ncwd = \".\"\n",
    );
    let (proc, addr, shown) = start_cluster(
        argon([
            "cluster",
            "--workers",
            "1",
            "--capacity",
            "1",
            "--config",
            "conf/c.toml",
        ])
        .current_dir(dir.path()),
    );
    assert_eq!(
        std::fs::canonicalize(&shown).ok(),
        std::fs::canonicalize(&key).ok(),
        "{}",
        proc.stderr()
    );
    let out = client("submit", &addr, &key).arg("where").run();
    assert_eq!(
        out.code,
        Some(0),
        "{out}\n--- cluster stderr\n{}",
        proc.stderr()
    );
    let real = std::fs::canonicalize(&conf).unwrap();
    assert_eq!(
        out.stdout,
        format!("{:?}\n", real.display().to_string()),
        "{out}"
    );
}

/// A TOML error keeps toml's own lines, the caret diagram on a line of its
/// own, after the file's name.
#[test]
fn toml_errors_keep_the_caret_diagram() {
    let dir = TempDir::new();
    let bad = dir.write("bad.toml", "[manager]\nport = \"x\"\n");
    let out = argon(["status", "--config"]).arg(&bad).run();
    assert_eq!(out.code, Some(2), "{out}");
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(first.contains("bad.toml"), "{out}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.trim_start().starts_with('|') && l.contains('^')),
        "no caret line of its own: {out}"
    );
}

/// A worker whose command task has a missing program or `cwd` still starts,
/// and says so once per task.
#[test]
fn worker_warns_about_missing_programs_and_folders() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = dir.write(
        "w.toml",
        "[tasks.ghost]\ncommand = [\"/nonexistent/argon-prog\"]\n\
         [tasks.lost]\ncommand = [\"cat\"]\ncwd = \"/nonexistent-argon-dir\"\n\
         [tasks.fine]\ncommand = [\"cat\"]\n",
    );
    let m = Manager::start(&key);
    let w = Worker::start_with(&m.addr, &key, 1, &["--config".as_ref(), config.as_os_str()]);
    m.wait_for_workers(1);
    assert!(
        w.proc.wait_stderr(
            "command task ghost: program /nonexistent/argon-prog not found",
            STARTUP
        ),
        "{}",
        w.proc.stderr()
    );
    assert!(
        w.proc.wait_stderr(
            "command task lost: cwd /nonexistent-argon-dir is not a folder",
            STARTUP
        ),
        "{}",
        w.proc.stderr()
    );
    assert!(
        !w.proc.stderr().contains("task fine"),
        "{}",
        w.proc.stderr()
    );
}

/// SIGTERM drains a worker running a long task; a second SIGTERM stops it
/// at once with 128 + 15.
#[test]
fn second_signal_stops_a_draining_worker() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = dir.write(
        "w.toml",
        "[worker]\ndrain_timeout = \"5m\"\n[tasks.nap]\ncommand = [\"sleep\", \"60000\"]\n",
    );
    let m = Manager::start(&key);
    let mut w = Worker::start_with(&m.addr, &key, 1, &["--config".as_ref(), config.as_os_str()]);
    m.wait_for_workers(1);
    let _task = m.submit(["nap"]).spawn();
    m.wait_status("the task running", |s| s.in_flight == 1);
    w.proc.signal(libc::SIGTERM);
    assert!(
        w.proc.wait_stderr("draining", STARTUP),
        "{}",
        w.proc.stderr()
    );
    w.proc.signal(libc::SIGTERM);
    let status = w.proc.wait_within(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(143),
        "{}",
        w.proc.stderr()
    );
    assert!(
        w.proc.stderr().contains("second signal"),
        "{}",
        w.proc.stderr()
    );
}
