//! End-to-end tests of what peers can do to the logs of the real binary:
//! text with newlines stays inside its line and is cut to a bounded length,
//! a flood of wrong-key connections costs one line, and a worker whose
//! manager is away logs tries 1, 2, 4, 8, ... only, and one line for the
//! outcomes it drops past its bound.

mod common;

use argon::protocol::handshake::{self, HandshakeSettings};
use argon::protocol::{FromClient, FromWorker, MasterKey, Register, Role, Submit, Value};
use bytes::BytesMut;
use common::{Manager, TempDir, STARTUP};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn one_entry(name: &str, fields: Vec<(&str, Value)>) -> Value {
    let fields = fields
        .into_iter()
        .map(|(k, v)| (Value::from(k), v))
        .collect();
    Value::Map(vec![(Value::from(name), Value::Map(fields))])
}

/// Connects with the key and sends `auth` as the first sealed frame, as a
/// peer written against docs/PROTOCOL.md could. Returns the stream, for
/// waiting until the manager closes it.
async fn raw_auth(addr: &str, key: &MasterKey, auth: &Value) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mine = [7u8; 32];
    let mut hello = vec![0, 0, 0, 37];
    hello.extend_from_slice(b"ARGN\x01");
    hello.extend_from_slice(&mine);
    s.write_all(&hello).await.expect("hello");
    let mut theirs = [0u8; 41];
    s.read_exact(&mut theirs)
        .await
        .expect("the manager's hello");
    let nonce: [u8; 32] = theirs[9..].try_into().expect("32 bytes");
    let (i2r, _) = key.session_keys(&mine, &nonce);
    let mut w = argon::protocol::FrameWriter::new(&i2r, argon::protocol::DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::new();
    w.write(auth, &mut buf).expect("encode");
    s.write_all(&buf).await.expect("auth");
    s
}

/// Reads until the peer closes (bounded).
async fn until_closed(s: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let closed = tokio::time::timeout(STARTUP, async {
        while !matches!(s.read(&mut sink).await, Ok(0) | Err(_)) {}
    });
    closed.await.expect("the manager closes the connection");
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// Peer text with newlines (a task name, a role, a message name, a worker's
/// error and task names) never starts a line of the manager's log, and a
/// long one is cut.
#[test]
fn peer_text_with_newlines_stays_on_its_line() {
    let dir = TempDir::new();
    let key_path = dir.keygen("key");
    let m = Manager::start(&key_path);
    let key = MasterKey::load(&key_path).expect("key");
    let hs = HandshakeSettings::new(MasterKey::load(&key_path).expect("key"));

    // A client submits a task no worker provides, named with a newline.
    let _worker = m.add_worker(1, 1);
    let out = m.submit(["evil\nINJECTED-task", "1"]).run();
    assert_eq!(out.code, Some(1), "{out}");

    let rt = runtime();
    rt.block_on(async {
        // A peer with the key claims a role with a newline in its auth.
        let auth = one_entry(
            "auth",
            vec![
                ("version", Value::from(1)),
                ("role", Value::from("evil\nINJECTED-role")),
            ],
        );
        let mut s = raw_auth(&m.addr, &key, &auth).await;
        until_closed(&mut s).await;

        // A client sends a message whose name has a newline.
        let stream = TcpStream::connect(&m.addr).await.expect("connect");
        let est = handshake::initiate(stream, Role::Client, &hs)
            .await
            .expect("handshake");
        let (mut reader, mut rest) = est.reader::<argon::protocol::ToClient>();
        let mut buf = BytesMut::new();
        let submit = FromClient::Submit(Submit {
            id: 1,
            task: "evil\nINJECTED-submit".into(),
            args: Value::Nil,
            priority: Default::default(),
            timeout_ms: None,
            attempts: 0,
            retries: None,
            detach: false,
            want_id: false,
            due_ms: None,
            delay_ms: None,
            unique_key: None,
            unique_for_ms: None,
        });
        rest.writer.write(&submit, &mut buf).expect("encode");
        let bad = one_entry("evil\nINJECTED-name", vec![]);
        rest.writer.write(&bad, &mut buf).expect("encode");
        rest.write.write_all(&buf).await.expect("send");
        let drained = tokio::time::timeout(STARTUP, async {
            while let Some(Ok(_)) = reader.next().await {}
        });
        drained.await.expect("the manager closes the connection");

        // A worker registers task names with newlines and reports a long
        // error full of them.
        let stream = TcpStream::connect(&m.addr).await.expect("connect");
        let est = handshake::initiate(stream, Role::Worker, &hs)
            .await
            .expect("handshake");
        let (_reader, mut rest) = est.reader::<argon::protocol::ToWorker>();
        let mut buf = BytesMut::new();
        let register = FromWorker::Register(Register {
            capacity: 1,
            tasks: vec!["evil\nINJECTED-register".into()],
            eval: false,
            running: vec![],
            max_frame: 0,
            finished: Vec::new(),
            finished_dropped: 0,
        });
        rest.writer.write(&register, &mut buf).expect("encode");
        let error = FromWorker::Error {
            message: "oops\nINJECTED-error\r\n".repeat(5000),
        };
        rest.writer.write(&error, &mut buf).expect("encode");
        rest.write.write_all(&buf).await.expect("send");
        assert!(
            m.proc.wait_stderr("reports:", STARTUP),
            "the worker's error is logged:\n{}",
            m.proc.stderr()
        );
    });

    for marker in ["handshake failed", "evil\\nINJECTED-name", "reports:"] {
        assert!(
            m.proc.wait_stderr(marker, STARTUP),
            "{marker:?} is logged:\n{}",
            m.proc.stderr()
        );
    }
    let log = m.proc.stderr();
    for line in log.lines() {
        assert!(
            line.starts_with('['),
            "a line that is not a log record: {line:?}\n--- stderr\n{log}"
        );
        assert!(!line.starts_with("INJECTED"), "{line:?}");
    }
    let reports = lines_with(&log, "reports:");
    assert_eq!(reports.len(), 1, "{log}");
    assert!(
        reports[0].len() < 600,
        "a 100 kB error is cut: {} bytes",
        reports[0].len()
    );
    assert!(reports[0].contains("oops\\nINJECTED-error\\r\\n"), "{log}");
    assert!(reports[0].contains("bytes cut]"), "{log}");
}

/// 50 connections with the wrong key within the window cost one line.
#[test]
fn a_flood_of_wrong_keys_is_one_line() {
    let dir = TempDir::new();
    let key_path = dir.keygen("key");
    let m = Manager::start(&key_path);
    let other = HandshakeSettings::new(MasterKey::from_material(b"not the cluster's key at all"));
    let rt = runtime();
    rt.block_on(async {
        for _ in 0..50 {
            let stream = TcpStream::connect(&m.addr).await.expect("connect");
            let refused = handshake::initiate(stream, Role::Client, &other).await;
            assert!(refused.is_err(), "the wrong key is refused");
        }
    });
    assert!(
        m.proc.wait_stderr("handshake failed", STARTUP),
        "the first is logged:\n{}",
        m.proc.stderr()
    );
    let log = m.proc.stderr();
    let lines = lines_with(&log, "handshake failed");
    assert!(lines.len() <= 2, "{} lines:\n{log}", lines.len());
    assert!(lines[0].contains("authentication failed"), "{log}");
}

/// While the manager is away, a worker logs its tries 1, 2, 4, 8, ...
#[test]
fn an_unreachable_manager_is_logged_at_doubling_tries() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let mut w = common::Worker::start(&dead, &key, 1);
    assert!(
        w.proc.wait_stderr("(try 4)", STARTUP),
        "{}",
        w.proc.stderr()
    );
    w.proc.kill();
    let log = w.proc.stderr();
    let tries: Vec<u32> = lines_with(&log, "cannot reach manager")
        .iter()
        .map(|l| {
            let (_, rest) = l.split_once("(try ").expect("names its try");
            rest.split(')').next().unwrap().parse().expect("a number")
        })
        .collect();
    assert_eq!(&tries[..3], [1, 2, 4], "{log}");
    assert!(tries.iter().all(|t| t.is_power_of_two()), "{log}");
}

/// The manager's end of one worker connection, for the test below.
struct FakeManager {
    reader: tokio_util::codec::FramedRead<
        tokio::net::tcp::OwnedReadHalf,
        argon::protocol::FrameReader<FromWorker>,
    >,
    rest: argon::protocol::Writing,
}

impl FakeManager {
    async fn accept(listener: &tokio::net::TcpListener, hs: &HandshakeSettings) -> FakeManager {
        let (stream, _) = tokio::time::timeout(STARTUP, listener.accept())
            .await
            .expect("the worker connects")
            .expect("accept");
        let est = handshake::accept(stream, hs).await.expect("handshake");
        let (reader, rest) = est.reader::<FromWorker>();
        FakeManager { reader, rest }
    }

    async fn send(&mut self, msg: argon::protocol::ToWorker) {
        let mut buf = BytesMut::new();
        self.rest.writer.write(&msg, &mut buf).expect("encode");
        self.rest.write.write_all(&buf).await.expect("send");
    }

    /// Takes the `register` and answers `registered`.
    async fn register(&mut self) -> Register {
        loop {
            let next = tokio::time::timeout(STARTUP, self.reader.next()).await;
            match next.expect("a message from the worker") {
                Some(Ok(FromWorker::Heartbeat {})) => continue,
                Some(Ok(FromWorker::Register(r))) => {
                    self.send(argon::protocol::ToWorker::Registered {
                        worker_id: 1,
                        max_frame: 0,
                    })
                    .await;
                    return r;
                }
                other => panic!("expected register, got {other:?}"),
            }
        }
    }
}

/// A worker (`worker.kept_outcomes_max = 1` in its config file) whose
/// manager went away while three runs went on: past the bound the oldest
/// outcomes go, with one warning that counts them (not one per outcome),
/// and the next `register` hands over the newest and says how many went.
#[test]
fn a_worker_past_its_bound_of_kept_outcomes_warns_once_with_the_count() {
    let dir = TempDir::new();
    let key_path = dir.keygen("key");
    let cfg = dir.write("worker.toml", "[worker]\nkept_outcomes_max = 1\n");
    let hs = HandshakeSettings::new(MasterKey::load(&key_path).expect("key"));
    let rt = runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut w =
        common::Worker::start_with(&addr, &key_path, 3, &["--config".as_ref(), cfg.as_os_str()]);
    rt.block_on(async {
        let mut m = FakeManager::accept(&listener, &hs).await;
        m.register().await;
        for (slot, ms) in [(0u32, 100u64), (1, 200), (2, 300)] {
            m.send(argon::protocol::ToWorker::Assign(argon::protocol::Assign {
                run_id: 7 + u64::from(slot),
                slot,
                task: "sleep".into(),
                args: Value::from(ms),
                timeout_ms: None,
            }))
            .await;
        }
        // Lets the assigns reach the slots, then goes away.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    });
    assert!(
        w.proc.wait_stderr("dropped the 1 oldest", STARTUP),
        "{}",
        w.proc.stderr()
    );
    std::thread::sleep(std::time::Duration::from_millis(400));
    let reg = rt.block_on(async {
        let mut m = FakeManager::accept(&listener, &hs).await;
        m.register().await
    });
    let handed: Vec<u64> = reg.finished.iter().map(|f| f.run_id).collect();
    assert_eq!((handed, reg.finished_dropped), (vec![9], 2), "{reg:?}");
    w.proc.kill();
    let log = w.proc.stderr();
    let warned = lines_with(&log, "over their bound");
    assert_eq!(warned.len(), 1, "one line for two drops:\n{log}");
    assert!(
        warned[0].contains("(1 outcomes, 67108864 bytes)") && warned[0].contains("1 since"),
        "{log}"
    );
    assert_eq!(lines_with(&log, "its outcome is kept").len(), 1, "{log}");
}
