//! Connection limits of the real manager: what a peer without the key can
//! make it hold, and what a client sees when the manager is full.
//!
//! Each test starts its own `argon manager` (port 0 on 127.0.0.1) and reads
//! its memory from `/proc/PID/status`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon::client::{Client, ClientConfig, ClientError};
use argon::protocol::{HandshakeSettings, MasterKey};
use common::{Manager, ManagerOpts, TempDir, STARTUP};

/// The refusal a full manager sends in place of its hello (PROTOCOL.md §3.5).
const REFUSED_CONNECTIONS: [u8; 10] = [0, 0, 0, 6, b'A', b'R', b'G', b'N', 0, 1];
/// The same for handshake slots all taken by recent handshakes.
const REFUSED_HANDSHAKES: [u8; 10] = [0, 0, 0, 6, b'A', b'R', b'G', b'N', 0, 2];

/// A hello frame as the wire wants it: length 37, `ARGN`, version 1, a nonce.
fn hello() -> Vec<u8> {
    let mut h = vec![0, 0, 0, 37];
    h.extend_from_slice(b"ARGN");
    h.push(1);
    h.extend_from_slice(&[7; 32]);
    h
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_nodelay(true).expect("nodelay");
    s
}

/// The first `n` bytes the manager sends on `s`, waiting at most [`STARTUP`].
fn first_bytes(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    s.set_read_timeout(Some(STARTUP)).expect("read timeout");
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("reading the manager's first {n} bytes: {e}"));
    got
}

/// Waits until the manager closes `s` (at most `limit`); returns how long it took.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        let left = limit.saturating_sub(t0.elapsed());
        assert!(
            !left.is_zero(),
            "the manager kept the connection open past {limit:?}"
        );
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return t0.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return t0.elapsed()
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the manager kept the connection open past {limit:?}")
            }
            Err(e) => panic!("unexpected read error {e}"),
        }
    }
}

/// Whether the manager still holds `s` open (nothing to read for 50 ms).
fn still_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    matches!(s.read(&mut [0u8; 64]), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

fn client_config(m: &Manager) -> ClientConfig {
    let key = MasterKey::load(&m.key).expect("key loads");
    ClientConfig::new(m.addr.clone(), HandshakeSettings::new(key))
}

/// Connects a client, retrying while the manager is still at its limit
/// (it may not yet have noticed a connection that just closed).
async fn connect_when_room(m: &Manager) -> Client {
    let deadline = tokio::time::Instant::now() + STARTUP;
    loop {
        match Client::connect(client_config(m)).await {
            Ok(c) => return c,
            Err(ClientError::AtLimit { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!(
                "client cannot connect: {e}\n--- manager stderr\n{}",
                m.proc.stderr()
            ),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn config_file(dir: &TempDir, text: &str) -> std::path::PathBuf {
    dir.write("manager.toml", text)
}

fn start(key: &Path, opts: ManagerOpts) -> Manager {
    Manager::start_with(key, opts)
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{text}"))
}

/// 40 connections without the key each announce and send a 16 MiB auth
/// frame. The manager must not buffer them: its peak resident memory stays
/// under 64 MiB, and it serves a real client afterwards.
#[test]
fn oversized_pre_auth_frames_leave_the_manager_small() {
    const CONNECTIONS: usize = 40;
    const FRAME: usize = 16 * 1024 * 1024;
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let mut m = Manager::start(&key);
    let _worker = m.add_worker(1, 1);

    let mut frame = hello();
    frame.extend_from_slice(&(FRAME as u32).to_be_bytes());
    frame.resize(frame.len() + FRAME, 0x5a);
    let frame = Arc::new(frame);
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let addr = m.addr.clone();
            let frame = frame.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).expect("connect");
                s.set_write_timeout(Some(Duration::from_secs(20)))
                    .expect("write timeout");
                s.set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("read timeout");
                // The manager may close before all of it is written.
                let _ = s.write_all(&frame);
                // Hold the connection until the manager lets go of it.
                let mut sink = [0u8; 256];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            })
        })
        .collect();
    for t in senders {
        t.join().expect("sender thread");
    }

    let pid = m.proc.pid();
    let (rss, peak) = (proc_kib(pid, "VmRSS"), proc_kib(pid, "VmHWM"));
    assert!(
        peak < 64 * 1024,
        "manager peak RSS {peak} KiB (now {rss} KiB) after {CONNECTIONS} oversized auth frames"
    );
    let out = m.submit(["echo", r#""still serving""#]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "\"still serving\"\n", "{out}");
    m.assert_healthy();
}

/// Past `max_connections` (8: one worker and seven clients), a new client
/// is told at once that the manager is at its connection limit, and
/// `argon ping` exits 76 saying so, while the clients it holds keep working.
/// When one leaves, its place is free again.
#[test]
fn past_max_connections_a_new_client_is_refused_clearly() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let mut m = start(
        &key,
        ManagerOpts {
            max_connections: Some(8),
            ..Default::default()
        },
    );
    let _worker = m.add_worker(2, 1);
    let rt = runtime();
    let mut clients = rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..7 {
            clients.push(connect_when_room(&m).await);
        }
        clients
    });

    // Full. Without a refusal the client would connect, or time out after
    // its 1 s bound with "connect timed out".
    let mut config = client_config(&m);
    config.connect_timeout = Duration::from_secs(1);
    config.handshake.timeout = Duration::from_secs(1);
    let refused = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), Client::connect(config)).await
    });
    match refused {
        Ok(Err(e @ ClientError::AtLimit { .. })) => {
            assert_eq!(e.exit_code(), 76);
            assert!(
                e.to_string()
                    .contains("at its connection limit (too many connections)"),
                "{e}"
            );
        }
        Ok(Err(e)) => panic!("expected the connection limit, got: {e}"),
        Ok(Ok(_)) => panic!("a ninth connection was accepted past max_connections 8"),
        Err(_) => panic!("no answer within 10 s"),
    }
    let mut raw = connect(&m.addr);
    assert_eq!(first_bytes(&mut raw, 10), REFUSED_CONNECTIONS);
    closed_within(&mut raw, STARTUP);

    let out = m.client_cmd("ping", [] as [&str; 0]).run();
    assert_eq!(out.code, Some(76), "{out}");
    assert!(out.stderr.contains("is at its connection limit"), "{out}");

    rt.block_on(async {
        for (i, c) in clients.iter().enumerate() {
            let v = tokio::time::timeout(STARTUP, c.queue("echo", (i as u64).into()))
                .await
                .expect("echo answered in time");
            assert_eq!(v.expect("echo"), argon::Value::from(i as u64));
        }
    });

    clients.pop();
    rt.block_on(async {
        let c = connect_when_room(&m).await;
        c.ping().await.expect("ping from the new client");
    });
    m.assert_healthy();
    let err = m.proc.stderr();
    assert!(
        err.contains("refusing connections: too many connections (limit 8)"),
        "refusals should be logged:\n{err}"
    );
}

/// Without `--max-connections`, the limit is the descriptor limit minus a
/// reserve: under `ulimit -n 128`, the 65th connection is refused.
#[test]
fn default_max_connections_follows_the_descriptor_limit() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = config_file(&dir, "[security]\nhandshake_timeout = \"60s\"\n");
    let m = start(
        &key,
        ManagerOpts {
            descriptor_limit: Some(128),
            config: Some(config),
            ..Default::default()
        },
    );
    assert!(
        m.proc
            .wait_stderr("accepting up to 64 connections", STARTUP),
        "{}",
        m.proc.stderr()
    );
    let mut held: Vec<TcpStream> = (0..64).map(|_| connect(&m.addr)).collect();
    for s in &mut held {
        assert_eq!(
            &first_bytes(s, 41)[..8],
            &[0, 0, 0, 37, b'A', b'R', b'G', b'N']
        );
    }
    let mut refused = connect(&m.addr);
    assert_eq!(first_bytes(&mut refused, 10), REFUSED_CONNECTIONS);
    drop(held);
    ping_once_room(&m);
}

/// Pings the manager until it answers, while it is still at its connection
/// limit (it may not yet have noticed connections that just closed), within
/// [`STARTUP`].
fn ping_once_room(m: &Manager) {
    let deadline = Instant::now() + STARTUP;
    loop {
        let out = m.client_cmd("ping", [] as [&str; 0]).run();
        if out.code == Some(0) {
            return;
        }
        assert!(
            out.code == Some(76) && Instant::now() < deadline,
            "ping after the held connections closed: {out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Past `max_handshakes`, a new connection is refused while the oldest
/// handshake in progress is younger than 250 ms, and evicts it once it is
/// older; past half of them (the new one counted) new handshakes get 1 s
/// instead of the configured 60 s.
#[test]
fn handshakes_past_their_cap_evict_the_oldest_and_are_rushed_under_pressure() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = config_file(
        &dir,
        "[security]\nhandshake_timeout = \"60s\"\n\
         [manager]\nmax_handshakes = 4\nmax_handshakes_per_address = 4\n",
    );
    let mut m = start(
        &key,
        ManagerOpts {
            config: Some(config),
            ..Default::default()
        },
    );
    // a and b take half the slots, c and d the rest (under pressure).
    let t0 = Instant::now();
    let mut conns: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        let mut s = connect(&m.addr);
        assert_eq!(
            &first_bytes(&mut s, 41)[..8],
            &[0, 0, 0, 37, b'A', b'R', b'G', b'N'],
            "a hello while there are slots"
        );
        conns.push(s);
    }
    // e comes while a is too recent to be taken for stalled: refused (if
    // this machine took longer than that to get here, e evicts a at once).
    let mut e = connect(&m.addr);
    let first = first_bytes(&mut e, 10);
    if first == REFUSED_HANDSHAKES {
        assert!(t0.elapsed() < Duration::from_secs(2));
        closed_within(&mut e, STARTUP);
        // Once a is old enough, a new connection pushes it out.
        let deadline = Instant::now() + STARTUP;
        e = loop {
            let mut s = connect(&m.addr);
            if first_bytes(&mut s, 10) != REFUSED_HANDSHAKES {
                break s;
            }
            assert!(Instant::now() < deadline, "never admitted");
            std::thread::sleep(Duration::from_millis(20));
        };
    }
    closed_within(&mut conns[0], STARTUP);
    assert!(still_open(&mut conns[1]), "only the oldest goes");
    conns.push(e);

    // c, d and the newest go after about a second; well before 60 s.
    let generous = Duration::from_secs(20);
    for s in &mut conns[2..] {
        closed_within(s, generous);
    }
    assert!(still_open(&mut conns[1]));

    let out = m.client_cmd("ping", [] as [&str; 0]).run();
    assert_eq!(out.code, Some(0), "{out}");
    m.assert_healthy();
    let err = m.proc.stderr();
    assert!(
        err.contains("closing the oldest handshake to admit a new connection; 1 evicted so far"),
        "the eviction should be logged:\n{err}"
    );
}

/// A flood of connections from one address that send a hello and stall,
/// kept at 2,000 open (each one the manager closes is opened again), does
/// not lock out clients or workers from the same address: 80 `argon
/// submit`s all succeed, and a worker started during the flood registers.
#[test]
fn stalled_handshakes_do_not_lock_out_clients_or_workers() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let sys = common::System::start(1, 4, ManagerOpts::default());
    let addr = sys.manager.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, opened, addr) = (stop.clone(), opened.clone(), addr.clone());
        std::thread::spawn(move || {
            let stalled = |addr: &str| {
                let mut s = TcpStream::connect(addr).ok()?;
                s.write_all(&hello()).ok()?;
                s.set_nonblocking(true).ok()?;
                Some(s)
            };
            let mut held: Vec<Option<TcpStream>> = (0..2000).map(|_| None).collect();
            while !stop.load(Ordering::Relaxed) {
                for slot in held.iter_mut() {
                    let closed = match slot {
                        None => true,
                        Some(s) => match s.read(&mut [0u8; 64]) {
                            Ok(0) => true,
                            Ok(_) => false,
                            Err(e) => e.kind() != ErrorKind::WouldBlock,
                        },
                    };
                    if closed {
                        *slot = stalled(&addr);
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Wait until the flood has filled the handshake slots and turned over.
    let t0 = Instant::now();
    while opened.load(Ordering::Relaxed) < 4000 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the flood did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut slowest = Duration::ZERO;
    for i in 0..80 {
        let t = Instant::now();
        let out = sys
            .manager
            .submit(["echo", &format!("[{i}]")])
            .limit(Duration::from_secs(30))
            .run();
        slowest = slowest.max(t.elapsed());
        assert_eq!(out.code, Some(0), "submit {i} during the flood: {out}");
        assert_eq!(out.stdout.trim(), format!("[{i}]"));
    }
    let t = Instant::now();
    let _late = common::Worker::start(&addr, &sys.manager.key, 2);
    sys.manager.wait_for_workers(2);
    let registered = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    eprintln!(
        "during the flood ({} connections opened): slowest submit {slowest:?}, \
         a new worker registered in {registered:?}",
        opened.load(Ordering::Relaxed)
    );
    assert!(sys
        .manager
        .proc
        .stderr()
        .contains("closing the oldest handshake"));
}

/// Out of descriptors (`ulimit -n 64`, `--max-connections` far above it),
/// accept fails; the manager backs off and logs it about once a second
/// with a count, not ten times a second, and serves again once
/// descriptors are free.
#[test]
fn out_of_descriptors_the_accept_loop_backs_off_and_logs_rarely() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = config_file(&dir, "[security]\nhandshake_timeout = \"60s\"\n");
    let mut m = start(
        &key,
        ManagerOpts {
            descriptor_limit: Some(64),
            max_connections: Some(1000),
            config: Some(config),
            ..Default::default()
        },
    );
    assert!(
        m.proc.wait_stderr("expect failed accepts", STARTUP),
        "{}",
        m.proc.stderr()
    );
    let held: Vec<TcpStream> = (0..100).map(|_| connect(&m.addr)).collect();
    assert!(
        m.proc.wait_stderr("accept failed", STARTUP),
        "{}",
        m.proc.stderr()
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let lines = m
        .proc
        .stderr()
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    let most = t0.elapsed().as_secs() as usize + 2;
    assert!(
        lines <= most,
        "{lines} accept failures logged in {:?}:\n{}",
        t0.elapsed(),
        m.proc.stderr()
    );
    assert!(m.proc.stderr().contains("more in the last"));
    drop(held);
    ping_once_room(&m);
    m.assert_healthy();
}
