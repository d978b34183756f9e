//! End-to-end: eval scripts that nest data without bound (maps or arrays
//! 100,000 levels deep, curried function pointers, closures capturing
//! closures) fail alone with an error naming the limit they hit. The worker
//! keeps its id (it did not die and register again), and the task held in
//! its other slot meanwhile completes.

#![cfg(feature = "eval")]

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Manager, ManagerOpts, Proc, TempDir, Worker};

/// A worker with two slots that allows eval and has a `hold` task, which
/// finishes once something is written to the FIFO at `fifo`.
fn start(dir: &TempDir, fifo: &Path, eval_toml: &str) -> (Manager, Worker) {
    let key = dir.keygen("key");
    let manager = Manager::start_with(&key, ManagerOpts::default());
    let toml = format!(
        "[tasks.hold]\n\
         command = [\"/bin/sh\", \"-c\", \"read line < \\\"$0\\\"; echo '\\\"released\\\"'\", {:?}]\n\
         [eval]\n{eval_toml}",
        fifo.display().to_string()
    );
    let cfg = dir.write("worker.toml", &toml);
    let worker = Worker::start_with(
        &manager.addr,
        &key,
        2,
        &[
            OsStr::new("--config"),
            cfg.as_os_str(),
            OsStr::new("--allow-eval"),
        ],
    );
    manager.wait_for_workers(1);
    (manager, worker)
}

fn make_fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Lets the `hold` task finish. Fails at once, instead of blocking, if no
/// `hold` command has the FIFO open (its worker died with it).
fn release(fifo: &Path) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .expect("the held task still waits on its FIFO");
    f.write_all(b"go\n").unwrap();
}

/// Runs each `(script, needle)` in the worker's free slot while `hold` runs
/// in the other: each fails with `needle` in its error, the worker keeps
/// its id and process, and `hold` completes afterwards.
fn refused_alone(eval_toml: &str, cases: &[(&str, &str)]) {
    let dir = TempDir::new();
    let fifo = dir.join("hold.fifo");
    make_fifo(&fifo);
    let (mut manager, mut worker) = start(&dir, &fifo, eval_toml);
    let id = manager.status().worker_list[0].id;

    let hold: Proc = manager.submit(["hold", "null"]).spawn();
    manager.wait_status("the held task running", |s| s.in_flight == 1);

    for (script, needle) in cases {
        let started = Instant::now();
        // Issue 22: with attempts, one script used to take down worker
        // after worker. A script's failure is not a lost worker.
        let out = manager
            .client_cmd("eval", ["--attempts", "3", script])
            .limit(Duration::from_secs(60))
            .run();
        eprintln!("{script}: refused in {:?}", started.elapsed());
        assert_eq!(out.code, Some(1), "{script}: {out}");
        assert!(out.stderr.contains(needle), "{script}: {out}");
        assert!(worker.proc.is_running(), "{script}: the worker died");
        let st = manager.status();
        assert_eq!(st.workers, 1, "{script}: {st:?}");
        assert_eq!(
            st.worker_list[0].id, id,
            "{script}: the worker registered again"
        );
        assert_eq!(st.in_flight, 1, "{script}: the held task is gone: {st:?}");
    }

    release(&fifo);
    let out = hold.finish(Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.trim(), "\"released\"", "{out}");
    assert_eq!(manager.status().worker_list[0].id, id);
    manager.assert_healthy();
}

/// With the default limits (and time enough to reach the nesting), every
/// script that nests without bound is stopped by `eval.max_data_depth`.
#[test]
fn deep_data_fails_the_script_not_the_worker() {
    let depth = "max_data_depth";
    refused_alone(
        // Time for each script to nest far deeper than a stack holds.
        "max_time = \"30s\"\n",
        &[
            ("let x = []; for i in 0..100000 { x = [x]; } 0", depth),
            ("let x = []; for i in 0..100000 { x = [x]; } x", depth),
            ("let x = #{}; for i in 0..100000 { x = #{a: x}; } 0", depth),
            ("let x = #{}; for i in 0..100000 { x = #{a: x}; } x", depth),
            // Issue 22, E3.
            ("let x = 1; for i in 0..6000 { x = #{a: x}; } 0", depth),
            ("let x = []; for i in 0..100000 { x = [take(x)]; } 0", depth),
            (
                "fn g() { 0 } let f = Fn(\"g\"); \
                 for i in 0..1000000 { f = curry(Fn(\"g\"), take(f)); } 0",
                depth,
            ),
            (
                "let f = || 0; for i in 0..1000000 { let g = f; f = || g; } 0",
                depth,
            ),
        ],
    );
}

/// With the depth limit out of the way, the same kind of script overflows
/// the runner's stack: that ends the runner, not the worker.
#[test]
fn a_stack_overflow_fails_the_script_not_the_worker() {
    let stack = "eval.max_stack_bytes";
    refused_alone(
        "max_time = \"30s\"\nmax_data_depth = 1000000\nmax_stack_bytes = 262144\n",
        &[
            ("let x = []; for i in 0..100000 { x = [x]; } 0", stack),
            (
                "let f = || 0; for i in 0..1000000 { let g = f; f = || g; } 0",
                stack,
            ),
        ],
    );
}
