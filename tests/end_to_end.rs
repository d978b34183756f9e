//! End-to-end tests: the real `argon` binary, as a user runs it.
//!
//! Each test starts its own manager (port 0 on 127.0.0.1) and workers, and
//! asserts what a user sees: exit codes, stdout, stderr. Readiness is the
//! manager's startup line and its status report, never a bare sleep.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{argon, parse_listening, Manager, ManagerOpts, System, TempDir, STARTUP};
use serde_json::{json, Value as Json};

fn parse_json(what: &str, text: &str) -> Json {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {text:?}"))
}

/// `host:port` where nothing listens: a port the OS just handed out and took back.
fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("local addr");
    drop(l);
    addr.to_string()
}

/// 1. `submit echo` prints its JSON argument back; `submit sleep 20` prints 20.
#[test]
fn echo_and_sleep_round_trip() {
    let sys = System::start(1, 2, ManagerOpts::default());
    let m = &sys.manager;

    let out = m.submit(["echo", r#"{"a":[1,2,"x"]}"#]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "{\"a\":[1,2,\"x\"]}\n", "{out}");
    assert_eq!(
        out.stderr, "",
        "a successful submit is silent on stderr: {out}"
    );

    let out = m.submit(["sleep", "20"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "20\n", "{out}");

    // No ARGS_JSON means null.
    let out = m.submit(["echo"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "null\n", "{out}");
}

/// 2. A full system denies at once (exit 75); with --retry the task waits its
///    turn and completes.
#[test]
fn full_system_denies_then_retry_succeeds() {
    let sys = System::start(
        1,
        1,
        ManagerOpts {
            queue_factor: Some(1),
            ..Default::default()
        },
    );
    let m = &sys.manager;
    let s = m.status();
    assert_eq!((s.capacity, s.queue_limit), (1, 1), "{s:?}");

    let running = m.submit(["sleep", "1500"]).spawn();
    m.wait_status("the long sleep to run", |s| s.in_flight == 1);
    let queued = m.submit(["sleep", "[100]"]).spawn();
    m.wait_status("a second sleep to queue", |s| s.queued == 1);

    let out = m.submit(["echo", r#""third""#]).run();
    assert_eq!(out.code, Some(75), "a full system must deny: {out}");
    assert!(out.stderr.contains("denied"), "{out}");
    assert!(out.stderr.contains("queue full"), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert!(
        out.waited < Duration::from_millis(1200),
        "the deny must come at once, not after the running task: {out}"
    );
    // The deny changed nothing: the same task still runs, the other still waits.
    let s = m.status();
    assert_eq!((s.in_flight, s.queued), (1, 1), "{s:?}");
    assert!(s.denied >= 1, "{s:?}");

    let out = m.submit(["--retry", "echo", r#""third""#]).run();
    assert_eq!(
        out.code,
        Some(0),
        "--retry must get through eventually: {out}"
    );
    assert_eq!(out.stdout, "\"third\"\n", "{out}");
    assert_eq!(out.stderr, "", "retries are quiet: {out}");
    let after = m.status();
    assert!(
        after.denied > s.denied,
        "the retrying submit was denied at least once before getting in: {after:?}"
    );

    let out = running.finish(Duration::from_secs(5));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "1500\n"),
        "{out}"
    );
    let out = queued.finish(Duration::from_secs(5));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "[100]\n"),
        "{out}"
    );
}

/// 3. A worker killed mid-task: the waiting client fails at once with
///    "worker lost", and the manager's capacity shrinks to nothing.
#[test]
fn worker_killed_mid_task_fails_the_task() {
    let mut sys = System::start(1, 1, ManagerOpts::default());
    let waiting = sys.manager.submit(["sleep", "30000"]).spawn();
    sys.manager
        .wait_status("the sleep to run", |s| s.in_flight == 1);

    sys.workers[0].proc.kill();
    let out = waiting.finish(Duration::from_secs(5));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("worker lost"), "{out}");
    assert_eq!(out.stdout, "", "{out}");

    let s = sys.manager.wait_for_workers(0);
    assert_eq!((s.capacity, s.in_flight, s.queue_limit), (0, 0, 0), "{s:?}");
    let out = sys.manager.submit(["echo", "1"]).run();
    assert_eq!(out.code, Some(75), "{out}");
    assert!(out.stderr.contains("no capacity"), "{out}");
    sys.manager.assert_healthy();
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Deterministic junk (xorshift), so a failure can be replayed.
fn junk(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// A hello frame as the wire wants it: length 37, `ARGN`, version 1, a nonce.
fn hello() -> Vec<u8> {
    let mut h = vec![0, 0, 0, 37];
    h.extend_from_slice(b"ARGN");
    h.push(1);
    h.extend_from_slice(&junk(32, 7));
    h
}

/// Reads (and discards) until the peer closes; returns what it sent and when
/// it closed, measured from `since`. Fails the test if it stays open past `limit`.
fn closed_within(
    name: &str,
    s: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> (Vec<u8>, Duration) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(since.elapsed());
        assert!(
            !left.is_zero(),
            "{name}: the manager kept the connection open past {limit:?}"
        );
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return (got, since.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return (got, since.elapsed())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{name}: the manager kept the connection open past {limit:?}")
            }
            Err(e) => panic!("{name}: unexpected read error {e}"),
        }
    }
}

/// 4. Garbage, an absurd length prefix, a stalled handshake and a silent
///    socket are all dropped; meanwhile the manager keeps serving and never
///    panics.
#[test]
fn hostile_connections_leave_the_manager_serving() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = dir.write(
        "manager.toml",
        "[security]\nhandshake_timeout = \"300ms\"\n",
    );
    let mut m = Manager::start_with(
        &key,
        ManagerOpts {
            config: Some(config),
            ..Default::default()
        },
    );
    let _worker = m.add_worker(2, 1);
    let t0 = Instant::now();

    // (a) random bytes. The manager may close before all of it is written.
    let mut garbage = connect(&m.addr);
    let _ = garbage.write_all(&junk(4096, 0x9e37_79b9_7f4a_7c15));
    // (b) a length prefix of 4 GiB, then a few bytes.
    let mut huge = connect(&m.addr);
    let _ = huge.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    // (b') a valid hello, then a 4 GiB sealed frame announced.
    let mut huge_sealed = connect(&m.addr);
    let mut bytes = hello();
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 9, 9, 9]);
    let _ = huge_sealed.write_all(&bytes);
    // (c) a valid hello, then nothing: the handshake never finishes.
    let mut stalled = connect(&m.addr);
    stalled.write_all(&hello()).expect("write hello");
    // (d) nothing at all.
    let mut silent = connect(&m.addr);
    // More silent ones, held open while a real client works.
    let idle: Vec<TcpStream> = (0..20).map(|_| connect(&m.addr)).collect();

    let out = m.submit(["echo", r#""still serving""#]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "\"still serving\"\n", "{out}");
    assert!(out.waited < Duration::from_secs(5), "{out}");

    let limit = Duration::from_secs(5);
    closed_within("garbage", &mut garbage, t0, limit);
    closed_within("huge length prefix", &mut huge, t0, limit);
    closed_within("huge sealed frame", &mut huge_sealed, t0, limit);
    let (sent, after) = closed_within("stalled handshake", &mut stalled, t0, limit);
    assert!(
        after >= Duration::from_millis(250),
        "dropped before the timeout: {after:?}"
    );
    assert_eq!(
        sent.get(..8),
        Some(&[0, 0, 0, 37, b'A', b'R', b'G', b'N'][..]),
        "the manager's hello"
    );
    let (sent, after) = closed_within("silent socket", &mut silent, t0, limit);
    assert!(
        after >= Duration::from_millis(250),
        "dropped before the timeout: {after:?}"
    );
    assert_eq!(sent.len(), 4 + 37, "only the manager's hello: {sent:?}");
    for (i, mut s) in idle.into_iter().enumerate() {
        closed_within(&format!("idle socket {i}"), &mut s, t0, limit);
    }

    // Still serving, still alive, no panic; the timeouts were logged.
    let out = m.submit(["echo", "[1]"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(m.status().workers, 1);
    m.assert_healthy();
    assert!(
        m.proc
            .wait_stderr("handshake timed out", Duration::from_secs(2)),
        "stalled handshakes should be logged:\n{}",
        m.proc.stderr()
    );
}

/// 5. 100 clients at once each get exactly their own result.
#[test]
fn hundred_concurrent_clients_each_get_their_own_result() {
    let sys = System::start(2, 4, ManagerOpts::default());
    let m = &sys.manager;
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let input = format!("[{i},\"tag-{i}\"]");
            let p = m.submit(["--retry", "echo", &input]).spawn();
            (input, p)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (input, p) in clients {
        let out = p.finish(deadline.saturating_duration_since(Instant::now()));
        assert_eq!(out.code, Some(0), "{out}");
        assert_eq!(out.stdout, format!("{input}\n"), "{out}");
    }
    // Every accepted task was answered once; nothing is left over.
    let s = m.wait_status("an idle manager", |s| s.in_flight == 0 && s.queued == 0);
    assert_eq!(s.completed, 100, "{s:?}");
}

/// 6. A wrong key is refused with exit 77, worker included; the right one keeps working.
#[test]
fn wrong_key_is_refused_and_manager_keeps_serving() {
    let mut sys = System::start(1, 1, ManagerOpts::default());
    let other = sys.dir.keygen("other-key");
    let addr = sys.manager.addr.clone();

    let out = argon(["submit", "--mgr", &addr, "--key"])
        .arg(&other)
        .args(["echo", "1"])
        .run();
    assert_eq!(out.code, Some(77), "{out}");
    assert!(out.stderr.contains("authentication failed"), "{out}");
    assert_eq!(out.stdout, "", "{out}");

    // A worker with the wrong key does not join either: it says so once
    // and exits with the same code.
    let intruder = common::Worker::start(&addr, &other, 4);
    let out = intruder.proc.finish(STARTUP);
    assert_eq!(out.code, Some(77), "{out}");
    assert_eq!(
        out.stderr.lines().collect::<Vec<_>>(),
        [format!(
            "argon: authentication failed: the manager at {addr} does not use this key"
        )],
        "one clear line: {out}"
    );
    let s = sys.manager.status();
    assert_eq!((s.workers, s.capacity), (1, 1), "{s:?}");

    let out = sys.manager.submit(["echo", "2"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "2\n", "{out}");
    sys.manager.assert_healthy();
}

/// 6b. A worker the manager refuses for good (here: a frame limit below the
///     manager's) stops with exit 78 and one line saying why, instead of
///     retrying forever; the manager keeps serving.
#[test]
fn worker_refused_for_good_exits_78() {
    let mut sys = System::start(1, 1, ManagerOpts::default());
    let addr = sys.manager.addr.clone();
    let small = sys
        .dir
        .write("small.toml", "[security]\nmax_frame_bytes = 1024\n");
    let refused = common::Worker::start_with(
        &addr,
        &sys.manager.key,
        2,
        &["--config".as_ref(), small.as_os_str()],
    );
    let out = refused.proc.finish(STARTUP);
    assert_eq!(out.code, Some(78), "{out}");
    assert_eq!(
        out.stderr.lines().last().unwrap_or_default(),
        format!(
            "argon: the manager at {addr} refused this worker: the worker accepts frames \
             up to 1024 bytes, less than the manager's 16777216: give both the same \
             security.max_frame_bytes"
        ),
        "{out}"
    );
    assert_eq!(
        out.stderr.matches("1024 bytes").count(),
        1,
        "said once: {out}"
    );
    let s = sys.manager.status();
    assert_eq!((s.workers, s.capacity), (1, 1), "{s:?}");
    sys.manager.assert_healthy();
}

/// 7. Nothing listening: exit 69, saying so.
#[test]
fn unreachable_manager_exits_69() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let addr = dead_addr();
    for cmd in [&["submit", "echo", "1"][..], &["status"], &["ping"]] {
        let out = argon(&cmd[..1])
            .args(["--mgr", &addr, "--key"])
            .arg(&key)
            .args(&cmd[1..])
            .run();
        assert_eq!(out.code, Some(69), "{out}");
        assert!(out.stderr.contains("cannot reach manager"), "{out}");
        assert!(out.stderr.contains(&addr), "names the address: {out}");
    }
}

/// A short key file works but draws a warning that points to `argon keygen`;
/// a manager that cannot bind its port says so and exits 1.
#[test]
fn short_key_warns_and_busy_port_fails() {
    let dir = TempDir::new();
    let short = dir.write("short-key", "hunter2\n");
    let out = argon(["submit", "--mgr", &dead_addr(), "--key"])
        .arg(&short)
        .args(["echo", "1"])
        .run();
    assert_eq!(out.code, Some(69), "{out}");
    assert!(out.stderr.contains("argon keygen"), "{out}");

    let key = dir.keygen("key");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port().to_string();
    let out = argon(["manager", "--host", "127.0.0.1", "--port", &port, "--key"])
        .arg(&key)
        .run();
    assert_eq!(out.code, Some(71), "{out}");
    assert!(out.stderr.contains("cannot listen on"), "{out}");
    assert_eq!(out.stdout, "", "no startup line without a listener: {out}");
}

/// A task that may be started twice survives the loss of its worker: it
/// runs again on another one and the client only sees the result.
#[test]
fn task_with_attempts_survives_a_lost_worker() {
    let mut sys = System::start(1, 1, ManagerOpts::default());
    let waiting = sys
        .manager
        .submit(["--attempts", "2", "sleep", "300"])
        .spawn();
    sys.manager
        .wait_status("the sleep to run", |s| s.in_flight == 1);
    let _second = sys.manager.add_worker(1, 2);

    sys.workers[0].proc.kill();
    let out = waiting.finish(Duration::from_secs(5));
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "300\n", "{out}");
    assert_eq!(out.stderr, "", "{out}");
    let s = sys.manager.wait_for_workers(1);
    assert_eq!(s.capacity, 1, "{s:?}");
}

/// A client that goes away takes its queued task with it, freeing room.
#[test]
fn lost_client_frees_its_queue_room() {
    let sys = System::start(
        1,
        1,
        ManagerOpts {
            queue_factor: Some(1),
            ..Default::default()
        },
    );
    let m = &sys.manager;
    let running = m.submit(["sleep", "1000"]).spawn();
    m.wait_status("the sleep to run", |s| s.in_flight == 1);
    let mut doomed = m.submit(["echo", r#""never""#]).spawn();
    m.wait_status("a queued task", |s| s.queued == 1);

    doomed.kill();
    m.wait_status("the dead client's task to leave the queue", |s| {
        s.queued == 0
    });
    let next = m.submit(["echo", r#""room""#]).spawn();
    let s = m.wait_status("the next task to be queued", |s| s.queued == 1);
    assert_eq!(s.in_flight, 1, "{s:?}");

    let out = next.finish(Duration::from_secs(5));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "\"room\"\n"),
        "{out}"
    );
    let out = running.finish(Duration::from_secs(5));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "1000\n"),
        "{out}"
    );
    let s = m.wait_status("an idle manager", |s| s.in_flight == 0);
    assert_eq!(s.completed, 2, "the dropped task is never answered: {s:?}");
}

/// A worker whose manager dies reconnects to the new one on the same port.
#[test]
fn worker_reconnects_after_manager_restart() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let first = Manager::start(&key);
    let port = first.port();
    let mut worker = common::Worker::start(&first.addr, &key, 2);
    first.wait_for_workers(1);
    drop(first); // SIGKILL

    let second = Manager::restart_on(&key, port);
    second.wait_for_workers(1);
    let out = second.submit(["echo", "[\"again\"]"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "[\"again\"]\n", "{out}");
    assert!(worker.proc.is_running());
    assert!(
        worker.proc.stderr().contains("lost the manager")
            || worker.proc.stderr().contains("closed the connection"),
        "{}",
        worker.proc.stderr()
    );
}

/// 8. Bad input is exit 2 with a clear line; an unknown task is exit 1.
#[test]
fn bad_input_is_reported_clearly() {
    let sys = System::start(1, 1, ManagerOpts::default());
    let m = &sys.manager;

    let out = m.submit(["echo", "{not json"]).run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("ARGS_JSON is not valid JSON"), "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out}");

    let cfg = sys
        .dir
        .write("client.toml", "[client]\nretry = true\nretri = false\n");
    let out = m
        .submit(["echo", "1"])
        .args(["--config".as_ref(), cfg.as_os_str()])
        .run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("retri"), "names the key: {out}");
    assert!(
        out.stderr.contains(&*cfg.to_string_lossy()),
        "names the file: {out}"
    );

    let missing = sys.dir.join("no-such-key");
    let out = argon(["submit", "--mgr", &m.addr, "--key"])
        .arg(&missing)
        .args(["echo", "1"])
        .run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr.contains(&*missing.to_string_lossy()),
        "names the path: {out}"
    );

    let out = m.submit(["nosuchtask", "1"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("no worker provides task nosuchtask"),
        "{out}"
    );

    let out = m.submit(["--priority", "urgent", "echo", "1"]).run();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("urgent"), "{out}");

    let out = m.submit(["sleep", r#""soon""#]).run();
    assert_eq!(out.code, Some(1), "a task's own error is exit 1: {out}");
    assert!(out.stderr.contains("milliseconds"), "{out}");
}

fn status_json(m: &Manager) -> Json {
    let out = m.client_cmd("status", ["--json"]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.lines().count(), 1, "one JSON object: {out}");
    parse_json("status --json", &out.stdout)
}

fn assert_workers_shape(s: &Json) {
    let list = s["worker_list"]
        .as_array()
        .expect("worker_list is an array");
    assert_eq!(list.len(), 2, "{s}");
    assert_ne!(list[0]["id"], list[1]["id"], "distinct ids: {s}");
    for w in list {
        assert!(w["id"].is_u64(), "{w}");
        let addr: SocketAddr = w["address"]
            .as_str()
            .expect("address")
            .parse()
            .expect("address is host:port");
        assert!(addr.ip().is_loopback(), "{w}");
        assert_eq!(w["capacity"], 3, "{w}");
        assert!(w["in_flight"].is_u64(), "{w}");
        assert!(w["avg_ms"].is_number(), "{w}");
        assert_eq!(w["tasks"], json!(["echo", "sleep"]), "{w}");
        assert_eq!(w["eval"], false, "{w}");
    }
}

/// 9. `status --json` has the SPEC's fields with the right values.
#[test]
fn status_json_reports_the_cluster() {
    let sys = System::start(
        2,
        3,
        ManagerOpts {
            queue_factor: Some(2),
            ..Default::default()
        },
    );
    let m = &sys.manager;

    let s = status_json(m);
    assert_eq!(s["workers"], 2, "{s}");
    assert_eq!(s["capacity"], 6, "{s}");
    assert_eq!(s["in_flight"], 0, "{s}");
    assert_eq!(s["queued"], 0, "{s}");
    assert_eq!(s["queue_limit"], 12, "{s}");
    assert_eq!(
        s["queued_by_priority"],
        json!({"high": 0, "normal": 0, "low": 0}),
        "{s}"
    );
    assert!(s["avg_task_ms"].is_number(), "{s}");
    assert_workers_shape(&s);

    // Fill every slot, then queue one high, one normal and two low.
    let running: Vec<_> = (0..6)
        .map(|_| m.submit(["sleep", "1500"]).spawn())
        .collect();
    m.wait_status("six sleeps running", |s| s.in_flight == 6);
    let queued: Vec<_> = [("high", 1), ("normal", 2), ("low", 3), ("low", 4)]
        .into_iter()
        .map(|(p, i)| m.submit(["--priority", p, "echo", &i.to_string()]).spawn())
        .collect();
    m.wait_status("four queued", |s| s.queued == 4);

    let s = status_json(m);
    assert_eq!(s["in_flight"], 6, "{s}");
    assert_eq!(s["queued"], 4, "{s}");
    assert_eq!(
        s["queued_by_priority"],
        json!({"high": 1, "normal": 1, "low": 2}),
        "{s}"
    );
    assert_workers_shape(&s);
    for w in s["worker_list"].as_array().unwrap() {
        assert_eq!(w["in_flight"], 3, "{w}");
    }

    for (i, p) in queued.into_iter().enumerate() {
        let out = p.finish(Duration::from_secs(10));
        assert_eq!(out.code, Some(0), "{out}");
        assert_eq!(out.stdout, format!("{}\n", i + 1), "{out}");
    }
    for p in running {
        let out = p.finish(Duration::from_secs(5));
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "1500\n"),
            "{out}"
        );
    }

    // Once idle, the averages reflect the work done (1.5 s sleeps and echoes).
    m.wait_status("an idle manager", |s| s.in_flight == 0 && s.queued == 0);
    let s = status_json(m);
    assert_eq!(s["in_flight"], 0, "{s}");
    assert_eq!(s["queued"], 0, "{s}");
    let avg = s["avg_task_ms"].as_f64().unwrap();
    assert!(avg > 0.0 && avg < 1600.0, "{s}");
    for w in s["worker_list"].as_array().unwrap() {
        let avg = w["avg_ms"].as_f64().unwrap();
        assert!(avg > 0.0 && avg < 1600.0, "{w}");
    }

    // The table for people says the same.
    let out = m.client_cmd("status", Vec::<&str>::new()).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("workers 2  capacity 6"), "{out}");
}

/// 10. SIGTERM on a busy worker: it stops taking work, finishes its task
///     (the client gets the result) and exits 0 by itself.
#[test]
fn worker_drains_on_sigterm() {
    let mut sys = System::start(1, 1, ManagerOpts::default());
    let waiting = sys.manager.submit(["sleep", "800"]).spawn();
    sys.manager
        .wait_status("the sleep to run", |s| s.in_flight == 1);

    sys.workers[0].proc.signal(libc::SIGTERM);
    let s = sys.manager.wait_status("the worker to drain", |s| {
        s.worker_list.first().is_some_and(|w| w.draining)
    });
    assert_eq!(s.capacity, 0, "a draining worker takes no new work: {s:?}");

    let out = waiting.finish(Duration::from_secs(5));
    assert_eq!(out.code, Some(0), "the task in flight must finish: {out}");
    assert_eq!(out.stdout, "800\n", "{out}");

    let worker = &mut sys.workers[0].proc;
    let status = worker.wait_within(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "worker should exit 0 by itself after draining, got {status:?}\n--- stderr\n{}",
        worker.stderr()
    );
    sys.manager.wait_for_workers(0);
    sys.manager.assert_healthy();
}

/// 11. `argon cluster` announces its address and key file; both work.
#[test]
fn cluster_command_serves_submits() {
    let mut cluster = argon(["cluster", "--workers", "2", "--capacity", "2"]).spawn();
    let line = cluster.next_line(STARTUP);
    let addr = line
        .as_deref()
        .and_then(parse_listening)
        .unwrap_or_else(|| panic!("startup line {line:?}\n{}", cluster.stderr()));
    let line = cluster.next_line(STARTUP);
    let key = line
        .as_deref()
        .and_then(|l| l.strip_prefix("key file: "))
        .unwrap_or_else(|| panic!("key file line {line:?}\n{}", cluster.stderr()))
        .to_string();
    assert!(std::path::Path::new(&key).is_file(), "{key}");
    {
        use std::os::unix::fs::PermissionsExt;
        let folder = std::path::Path::new(&key).parent().expect("key folder");
        let mode = std::fs::metadata(folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the key's folder is private: mode {mode:o}");
    }

    let out = argon(["submit", "--mgr", &addr, "--key", &key, "echo", r#"["hi"]"#]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "[\"hi\"]\n", "{out}");
    let out = argon(["status", "--json", "--mgr", &addr, "--key", &key]).run();
    assert_eq!(out.code, Some(0), "{out}");
    let s = parse_json("status --json", &out.stdout);
    assert_eq!(
        (&s["workers"], &s["capacity"]),
        (&json!(2), &json!(4)),
        "{s}"
    );

    // Stopped with SIGTERM it exits 0 and takes its generated key with it.
    cluster.signal(libc::SIGTERM);
    let status = cluster.wait_within(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "cluster exit {status:?}\n{}",
        cluster.stderr()
    );
    assert!(!std::path::Path::new(&key).exists(), "{key} left behind");
}

/// 12. `argon keygen` writes a 0600 key and never overwrites one.
#[test]
fn keygen_is_private_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let path = dir.join("key");
    let out = argon(["keygen".as_ref(), path.as_os_str()]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains(&*path.to_string_lossy()), "{out}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let first = std::fs::read(&path).unwrap();
    assert_eq!(
        first.trim_ascii().len(),
        44,
        "32 bytes as base64: {first:?}"
    );

    let out = argon(["keygen".as_ref(), path.as_os_str()]).run();
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("already exists"), "{out}");
    assert_eq!(std::fs::read(&path).unwrap(), first, "the key was changed");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Two keys are never the same.
    let other = dir.keygen("other");
    assert_ne!(std::fs::read(other).unwrap(), first);
}

/// 13. `argon demo` completes every task and fails none.
#[test]
#[cfg(feature = "bench")]
fn demo_completes_every_task() {
    let out = argon(["demo", "--tasks", "600"])
        .limit(Duration::from_secs(60))
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    let completed = out
        .stdout
        .lines()
        .find(|l| l.starts_with("completed"))
        .unwrap_or_else(|| panic!("no summary line: {out}"));
    assert!(completed.contains("600 of 600 tasks"), "{out}");
    assert!(out.stdout.lines().any(|l| l == "failed     0"), "{out}");
}

/// 14. `ARGON_KEY` and `ARGON_MGR` stand in for --key and --mgr; flags win.
#[test]
fn environment_replaces_key_and_mgr_flags() {
    let sys = System::start(1, 1, ManagerOpts::default());
    let m = &sys.manager;

    let out = argon(["submit", "echo", r#""from env""#])
        .env("ARGON_KEY", &m.key)
        .env("ARGON_MGR", &m.addr)
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "\"from env\"\n", "{out}");

    // The environment is really used: pointing it elsewhere fails ...
    let dead = dead_addr();
    let out = argon(["submit", "echo", "1"])
        .env("ARGON_KEY", &m.key)
        .env("ARGON_MGR", &dead)
        .run();
    assert_eq!(out.code, Some(69), "{out}");
    // ... unless a flag overrides it.
    let out = argon(["submit", "--mgr", &m.addr, "echo", "2"])
        .env("ARGON_KEY", &m.key)
        .env("ARGON_MGR", &dead)
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "2\n", "{out}");
}

/// A client command whose stdout reader went away (`argon status | head -1`)
/// exits cleanly instead of panicking on the broken pipe.
#[test]
fn closed_stdout_is_not_a_panic() {
    let sys = System::start(1, 1, ManagerOpts::default());
    let m = &sys.manager;
    for args in [vec!["status"], vec!["submit", "echo", "[1,2,3]"]] {
        let mut cmd = std::process::Command::new(common::bin());
        cmd.arg(args[0])
            .args(["--mgr", &m.addr, "--key"])
            .arg(&m.key)
            .args(&args[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn argon");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

/// A manager address that is not HOST:PORT is bad usage (exit 2) for
/// clients and workers alike, not an unreachable manager (69).
#[test]
fn malformed_manager_address_is_bad_usage() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    for (cmd, extra) in [
        ("submit", vec!["echo"]),
        ("ping", vec![]),
        ("worker", vec![]),
    ] {
        for mgr in ["nonsense", "host:", ":8000", "host:99999"] {
            let out = argon([cmd, "--mgr", mgr, "--key"])
                .arg(&key)
                .args(&extra)
                .run();
            assert_eq!(out.code, Some(2), "{cmd} --mgr {mgr}: {out}");
            assert!(out.stderr.contains("invalid manager address"), "{out}");
        }
    }
}

/// Under systemd (`Type=notify`) the manager says `READY=1` once it
/// listens, and `STOPPING=1` when a signal starts its drain.
#[test]
fn the_manager_tells_systemd_when_it_listens_and_when_it_stops() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(STARTUP))
        .expect("read timeout");
    let mut mgr = argon(["manager", "--host", "127.0.0.1", "--port", "0", "--key"])
        .arg(&key)
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn();
    let mut buf = [0u8; 256];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the startup bound");
    assert_eq!(&buf[..n], b"READY=1\n");
    let line = mgr.next_line(STARTUP).expect("startup line");
    let addr = parse_listening(&line).expect("listening line");
    connect(&addr);

    mgr.signal(libc::SIGTERM);
    let n = socket.recv(&mut buf).expect("a notification when it stops");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert!(mgr.wait_within(STARTUP).is_some_and(|s| s.success()));
}
