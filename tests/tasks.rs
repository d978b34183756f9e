//! End-to-end tests of the task kinds with the real binary: command tasks
//! declared in a worker's TOML (one written in Python), eval scripts under
//! their limits, and per-task timeouts. Each error path a user can hit is
//! checked for its exit code and message, and the worker keeps serving.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Manager, ManagerOpts, TempDir, Worker};

/// A manager plus one worker started with `extra` flags, registered.
struct Setup {
    #[cfg_attr(not(feature = "eval"), allow(dead_code))]
    dir: TempDir,
    manager: Manager,
    worker: Worker,
}

fn setup(worker_toml: Option<&str>, allow_eval: bool) -> Setup {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let manager = Manager::start_with(&key, ManagerOpts::default());
    let mut extra: Vec<&OsStr> = Vec::new();
    let cfg;
    if let Some(text) = worker_toml {
        cfg = dir.write("worker.toml", text);
        extra.push(OsStr::new("--config"));
        extra.push(cfg.as_os_str());
    }
    if allow_eval {
        extra.push(OsStr::new("--allow-eval"));
    }
    let worker = Worker::start_with(&manager.addr, &key, 2, &extra);
    manager.wait_for_workers(1);
    Setup {
        dir,
        manager,
        worker,
    }
}

impl Setup {
    fn assert_still_serving(&mut self) {
        let out = self.manager.submit(["echo", "\"still here\""]).run();
        assert_eq!(out.code, Some(0), "{out}");
        assert!(self.worker.proc.is_running(), "worker died");
    }
}

fn proc_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie still has an entry; that is what must not be left.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('X')),
    }
}

fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if proc_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    proc_gone(pid)
}

fn read_pid(path: &Path, limit: Duration) -> u32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A Python command task gets its arguments as JSON on stdin, its name and
/// id in the environment, and its JSON stdout becomes the result; status
/// lists it.
#[test]
fn python_command_task_round_trip() {
    let dir = TempDir::new();
    let script = dir.write(
        "sum.py",
        "import json, os, sys\n\
         args = json.load(sys.stdin)\n\
         print(json.dumps({'sum': sum(args), 'name': os.environ['ARGON_TASK_NAME'],\n\
                           'has_id': os.environ['ARGON_TASK_ID'].isdigit()}))\n",
    );
    let toml = format!(
        "[tasks.py_sum]\ncommand = [\"python3\", {:?}]\ntimeout = \"10s\"\n",
        script.display().to_string()
    );
    let mut s = setup(Some(&toml), false);
    let out = s.manager.submit(["py_sum", "[1, 2, 39]"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.stdout.trim(),
        r#"{"has_id":true,"name":"py_sum","sum":42}"#,
        "{out}"
    );
    let st = s.manager.status();
    let w = &st.worker_list[0];
    assert!(w.tasks.contains(&"py_sum".to_string()), "{w:?}");
    assert!(!w.eval);
    s.assert_still_serving();
    drop(dir);
}

/// A failing command's exit status and stderr tail reach the client; output
/// that is not JSON is an error; an undeclared name or a path is not a task.
#[test]
fn command_task_failures_are_reported() {
    let toml = "[tasks.fails]\n\
                command = [\"/bin/sh\", \"-c\", \"echo 'disk on fire' >&2; exit 4\"]\n\
                [tasks.chatty]\n\
                command = [\"/bin/sh\", \"-c\", \"echo not json\"]\n";
    let mut s = setup(Some(toml), false);
    let out = s.manager.submit(["fails"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("exited with status 4"), "{out}");
    assert!(out.stderr.contains("disk on fire"), "{out}");

    let out = s.manager.submit(["chatty"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("did not print a JSON result"), "{out}");

    for name in ["ls", "/bin/sh", "../fails"] {
        let out = s.manager.submit([name]).run();
        assert_eq!(out.code, Some(1), "{out}");
        assert!(
            out.stderr
                .contains(&format!("no worker provides task {name}")),
            "{out}"
        );
    }
    s.assert_still_serving();
}

/// On timeout the command's whole process group is killed and reaped: the
/// command and the child it left in the background are both gone, no
/// zombie remains, and the slot serves the next task.
#[test]
fn command_task_timeout_kills_the_group_and_leaves_no_zombies() {
    let dir = TempDir::new();
    let pids = dir.join("pids");
    std::fs::create_dir(&pids).unwrap();
    let script = format!(
        "sleep 60 & echo $! > {p}/child; echo $$ > {p}/main; sleep 60",
        p = pids.display()
    );
    let toml =
        format!("[tasks.hang]\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\ntimeout = \"400ms\"\n");
    let mut s = setup(Some(&toml), false);
    let started = Instant::now();
    let out = s.manager.submit(["hang"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("timed out after 400ms"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let main = read_pid(&pids.join("main"), Duration::from_secs(2));
    let child = read_pid(&pids.join("child"), Duration::from_secs(2));
    assert!(
        wait_gone(main, Duration::from_secs(3)),
        "command {main} left behind"
    );
    assert!(
        wait_gone(child, Duration::from_secs(3)),
        "its child {child} left behind"
    );
    s.assert_still_serving();
    drop(dir);
}

/// A client's `--timeout` stops a native task on the worker and the slot
/// lives on.
#[test]
fn client_timeout_stops_a_long_task() {
    let mut s = setup(None, false);
    let started = Instant::now();
    let out = s
        .manager
        .submit(["--timeout", "200ms", "sleep", "5000"])
        .run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("timed out"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    s.assert_still_serving();
}

/// Eval runs on a worker that allows it: the script sees `args`, its last
/// value comes back as JSON; endless loops, memory hogs, file access and
/// syntax errors are refused with clear errors and the worker keeps serving.
#[test]
#[cfg(feature = "eval")]
fn eval_runs_scripts_within_limits() {
    let toml = "[eval]\nmax_time = \"1s\"\n";
    let mut s = setup(Some(toml), true);
    assert!(s.manager.status().worker_list[0].eval);

    let out = s
        .manager
        .client_cmd(
            "eval",
            ["#{ total: args[0] + args[1], n: args.len() }", "[2, 3]"],
        )
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.trim(), r#"{"n":2,"total":5}"#, "{out}");

    let script = s.dir.write("double.rhai", "let x = args * 2;\nx");
    let out = s
        .manager
        .client_cmd("eval", [format!("@{}", script.display()), "21".into()])
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.trim(), "42", "{out}");

    let cases = [
        ("loop {}", "script stopped"),
        (
            r#"let s = "abcdefgh"; loop { s += s; }"#,
            "exceeds its limit",
        ),
        (r#"open("/etc/passwd")"#, "Function not found"),
        (r#"import "fs" as fs; 1"#, "reserved keyword"),
        ("fn f(n) { f(n + 1) } f(0)", "nested deeper"),
        ("let = 1;", "line 1"),
    ];
    for (script, needle) in cases {
        let started = Instant::now();
        let out = s.manager.client_cmd("eval", [script]).run();
        assert_eq!(out.code, Some(1), "{script}: {out}");
        assert!(out.stderr.contains(needle), "{script}: {out}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{script} took too long"
        );
        s.assert_still_serving();
    }
}

/// Without `--allow-eval` no worker takes scripts, and the client is told
/// so at once: an error, not a deny and not a hang.
#[test]
fn eval_without_an_allowing_worker_is_a_clear_error() {
    let mut s = setup(None, false);
    let out = s.manager.client_cmd("eval", ["1 + 1"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("no worker allows eval"), "{out}");
    assert!(!s.manager.status().worker_list[0].eval);
    s.assert_still_serving();
}

/// A worker config with a misspelled key in a task table is refused at
/// start with the key and the file named.
#[test]
fn bad_task_table_is_refused_at_start() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = dir.write(
        "worker.toml",
        "[tasks.x]\ncommand = [\"/bin/true\"]\nshell = true\n",
    );
    let out = common::argon(["worker", "--mgr", "127.0.0.1:1", "--key"])
        .arg(&key)
        .arg("--config")
        .arg(&cfg)
        .run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("shell"), "{out}");
    assert!(out.stderr.contains("worker.toml"), "{out}");
}

/// Whether process `pid` has died: no entry, or a zombie. A zombie counts
/// here because its parent, the killed worker, cannot reap it any more; it
/// waits for init (or the nearest subreaper), which may not reap.
fn proc_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|r| matches!(r.trim_start().chars().next(), Some('Z' | 'X'))),
    }
}

/// A command task's process dies with its worker: SIGKILL the worker while
/// the command runs, and the kernel kills the command too (Linux,
/// PR_SET_PDEATHSIG), though the worker had no chance to clean up.
#[cfg(target_os = "linux")]
#[test]
fn command_task_dies_when_its_worker_is_killed() {
    let dir = TempDir::new();
    let pid_file = dir.join("pid");
    // The shell writes its own pid and becomes `sleep` with the same pid,
    // so the process in the file is the worker's direct child.
    let script = format!(
        "echo $$ > '{p}.tmp'; mv '{p}.tmp' '{p}'; exec sleep 1000",
        p = pid_file.display()
    );
    let toml = format!("[tasks.hold]\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n");
    let mut s = setup(Some(&toml), false);
    let _client = s.manager.submit(["hold"]).spawn();
    let pid = read_pid(&pid_file, Duration::from_secs(10));
    assert!(!proc_dead(pid), "command {pid} is not running");

    s.worker.proc.signal(libc::SIGKILL);
    assert!(
        s.worker.proc.wait_within(Duration::from_secs(5)).is_some(),
        "worker survived SIGKILL"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proc_dead(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !proc_dead(pid) {
        // Leave nothing behind, then fail.
        // SAFETY: plain syscall; the pid was alive a moment ago.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
        panic!("command {pid} outlived its killed worker");
    }
    drop(dir);
}
