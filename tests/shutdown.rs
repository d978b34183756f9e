//! End-to-end tests of a manager stopped with SIGTERM: running tasks finish
//! (or are cancelled at the drain deadline), queued ones and new submits are
//! answered with "manager shutting down", every reply reaches its client
//! before the manager exits, and a second signal stops it at once. The
//! embedded `argon cluster` stops the same way.

mod common;

use std::time::Duration;

use common::{argon, parse_listening, Manager, ManagerOpts, System, STARTUP};

/// Bound on a process's exit once it has what it needs to exit.
const EXIT: Duration = Duration::from_secs(15);

/// The manager's line at the start of a drain.
const DRAIN_STARTED: &str = "shutting down: new tasks are denied";

fn drain_timeout(d: &'static str) -> ManagerOpts {
    ManagerOpts {
        drain_timeout: Some(d),
        ..ManagerOpts::default()
    }
}

/// (a) A running task completes with its result, a queued one is answered
/// "task not started" at once, and the manager exits 0 after.
#[test]
fn sigterm_lets_the_running_task_finish_and_answers_the_queued_one() {
    let mut sys = System::start(1, 1, ManagerOpts::default());
    // Long enough that it still runs when the signal arrives on a busy machine.
    let running = sys.manager.submit(["sleep", "2000"]).spawn();
    sys.manager
        .wait_status("the first task to run", |s| s.in_flight == 1);
    let queued = sys.manager.submit(["sleep", "2000"]).spawn();
    sys.manager
        .wait_status("the second task to wait", |s| s.queued == 1);

    sys.manager.proc.signal(libc::SIGTERM);
    let out = queued.finish(EXIT);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains("manager shutting down: task not started"),
        "{out}"
    );
    let out = running.finish(EXIT);
    assert_eq!(out.code, Some(0), "the running task completes: {out}");
    assert_eq!(out.stdout, "2000\n", "{out}");

    let m = &mut sys.manager.proc;
    let status = m.wait_within(EXIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "manager exit {status:?}\n--- stderr\n{}",
        m.stderr()
    );
    let err = m.stderr();
    assert!(
        err.contains(&format!(
            "{DRAIN_STARTED}; 1 running task(s) may finish within 30s, \
             1 queued task(s) answered as not started"
        )),
        "{err}"
    );
    assert!(
        err.contains("1 running task(s) answered, 0 cancelled at the deadline"),
        "{err}"
    );
}

/// (b) Past `--drain-timeout` a running task is answered with a clear
/// error and cancelled on its worker, which stays up: registering with the
/// next manager on the same port, it brings no run along.
#[test]
fn past_the_drain_timeout_the_running_task_is_cancelled_on_its_worker() {
    let mut sys = System::start(1, 1, drain_timeout("200ms"));
    let client = sys.manager.submit(["sleep", "60000"]).spawn();
    sys.manager
        .wait_status("the task to run", |s| s.in_flight == 1);

    sys.manager.proc.signal(libc::SIGTERM);
    let out = client.finish(EXIT);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains("manager shutting down: task cancelled at the drain deadline (200ms)"),
        "{out}"
    );
    let m = &mut sys.manager.proc;
    let status = m.wait_within(EXIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "manager exit {status:?}\n--- stderr\n{}",
        m.stderr()
    );
    let err = m.stderr();
    assert!(
        err.contains("1 running task(s) answered, 1 cancelled at the deadline;"),
        "the worker reports the run stopped before the manager exits:\n{err}"
    );

    let worker = &mut sys.workers[0].proc;
    assert!(worker.is_running(), "worker died:\n{}", worker.stderr());
    let port = sys.manager.port();
    let next = Manager::restart_on(&sys.manager.key, port);
    next.wait_for_workers(1);
    assert!(
        next.proc
            .wait_stderr("busy with earlier runs", Duration::from_secs(5)),
        "{}",
        next.proc.stderr()
    );
    assert!(
        next.proc
            .stderr()
            .contains("1 slot(s), 0 busy with earlier runs"),
        "the slot was freed by the cancel:\n{}",
        next.proc.stderr()
    );
}

/// (c) A second SIGTERM during a drain stops the manager at once.
#[test]
fn a_second_sigterm_stops_at_once() {
    let mut sys = System::start(1, 1, drain_timeout("10m"));
    let client = sys.manager.submit(["sleep", "60000"]).spawn();
    sys.manager
        .wait_status("the task to run", |s| s.in_flight == 1);

    sys.manager.proc.signal(libc::SIGTERM);
    assert!(
        sys.manager.proc.wait_stderr(DRAIN_STARTED, STARTUP),
        "{}",
        sys.manager.proc.stderr()
    );
    sys.manager.proc.signal(libc::SIGTERM);
    let m = &mut sys.manager.proc;
    let status = m.wait_within(EXIT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "manager should stop at once, well before its 10 min drain\n--- stderr\n{}",
        m.stderr()
    );
    assert!(m.stderr().contains("stopped at once by a second signal"));
    let out = client.finish(EXIT);
    assert_eq!(out.code, Some(69), "connection lost: {out}");
}

/// (d) During a drain a new submit, on a new connection, is denied
/// "manager shutting down"; status still answers.
#[test]
fn a_submit_during_the_drain_is_denied() {
    let mut sys = System::start(1, 1, drain_timeout("10m"));
    let _client = sys.manager.submit(["sleep", "60000"]).spawn();
    sys.manager
        .wait_status("the task to run", |s| s.in_flight == 1);

    sys.manager.proc.signal(libc::SIGTERM);
    assert!(
        sys.manager.proc.wait_stderr(DRAIN_STARTED, STARTUP),
        "{}",
        sys.manager.proc.stderr()
    );
    let out = sys.manager.submit(["echo", "[1]"]).run();
    assert_eq!(out.code, Some(75), "{out}");
    assert!(
        out.stderr.contains("denied: manager shutting down"),
        "{out}"
    );
    let s = sys.manager.status();
    assert_eq!((s.in_flight, s.denied), (1, 1), "{s:?}");
    sys.manager.assert_healthy();
}

/// `argon cluster` drains its manager the same way: a running task
/// completes, and the cluster exits 0.
#[test]
fn cluster_lets_a_running_task_finish_on_sigterm() {
    let proc = argon(["cluster", "--workers", "1", "--capacity", "1"]).spawn();
    let line = proc.next_line(STARTUP);
    let addr = line
        .as_deref()
        .and_then(parse_listening)
        .unwrap_or_else(|| panic!("startup line {line:?}\n{}", proc.stderr()));
    let line = proc.next_line(STARTUP);
    let key = line
        .as_deref()
        .and_then(|l| l.strip_prefix("key file: "))
        .unwrap_or_else(|| panic!("key file line {line:?}\n{}", proc.stderr()))
        .into();
    let mut cluster = Manager { proc, addr, key };
    let running = cluster.submit(["sleep", "2000"]).spawn();
    cluster.wait_status("the task to run", |s| s.in_flight == 1);

    cluster.proc.signal(libc::SIGTERM);
    let out = running.finish(EXIT);
    assert_eq!(out.code, Some(0), "the running task completes: {out}");
    assert_eq!(out.stdout, "2000\n", "{out}");
    let status = cluster.proc.wait_within(EXIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "cluster exit {status:?}\n--- stderr\n{}",
        cluster.proc.stderr()
    );
}
