//! The client library against the real manager binary: what pending calls
//! see when the connection drops, reconnecting for later calls, and a
//! request too large for a frame failing alone.

mod common;

use std::time::Duration;

use argon::protocol::HandshakeSettings;
use argon::{Client, ClientConfig, ClientError, MasterKey, Value};
use common::{Manager, ManagerOpts, TempDir};

/// A runtime whose spawned tasks run while the test thread waits elsewhere.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn config(m: &Manager, max_frame: usize) -> ClientConfig {
    let mut hs = HandshakeSettings::new(MasterKey::load(&m.key).expect("key"));
    hs.max_frame = max_frame;
    ClientConfig::new(m.addr.clone(), hs)
}

const LIMIT: Duration = Duration::from_secs(10);

/// A pending call fails with `Disconnected` when the manager dies, and the
/// same client reconnects for the next call once a manager is back.
#[test]
fn pending_calls_fail_on_disconnect_and_later_calls_reconnect() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let mut first = Manager::start(&key);
    let port = first.port();
    let _worker = first.add_worker(1, 1);
    let rt = runtime();
    let client = rt
        .block_on(Client::connect(config(&first, 1 << 20)))
        .expect("connect");

    let pending = {
        let c = client.clone();
        rt.spawn(async move { c.queue("sleep", Value::from(5_000)).await })
    };
    first.wait_status("the sleep in flight", |s| s.in_flight == 1);
    first.proc.kill();
    let got = rt
        .block_on(async { tokio::time::timeout(LIMIT, pending).await })
        .expect("pending call resolves promptly")
        .expect("task joins");
    assert!(
        matches!(got, Err(ClientError::Disconnected(_))),
        "expected Disconnected, got {got:?}"
    );

    let second = Manager::restart_on(&key, port);
    let _worker2 = second.add_worker(1, 1);
    let again = rt
        .block_on(async {
            tokio::time::timeout(LIMIT, client.queue("echo", Value::from("back"))).await
        })
        .expect("bounded");
    assert_eq!(
        again.expect("reconnected call succeeds"),
        Value::from("back")
    );
}

/// A request larger than the client's frame limit fails with `TooLarge` and
/// exit code 2, while another call on the same connection completes.
#[test]
fn oversized_request_fails_alone() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = Manager::start(&key);
    let _worker = m.add_worker(2, 1);
    let rt = runtime();
    let client = rt
        .block_on(Client::connect(config(&m, 4096)))
        .expect("connect");
    let (slow, big) = rt.block_on(async {
        let slow = client.queue("sleep", Value::from(200));
        let big = client.queue("echo", Value::Binary(vec![7; 8000]));
        tokio::time::timeout(LIMIT, async { tokio::join!(slow, big) })
            .await
            .expect("bounded")
    });
    match big {
        Err(e @ ClientError::TooLarge(_)) => assert_eq!(e.exit_code(), 2),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(slow.expect("the other call completes"), Value::from(200));
    let small = rt
        .block_on(client.queue("echo", Value::Binary(vec![1; 100])))
        .expect("the connection still works");
    assert_eq!(small, Value::Binary(vec![1; 100]));
}

/// Values off the wire that are far too large do not crash anyone: a task
/// with a timeout of u64::MAX milliseconds runs normally on the real worker.
#[test]
fn absurd_timeout_is_harmless() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = Manager::start(&key);
    let mut w = m.add_worker(1, 1);
    let rt = runtime();
    let client = rt
        .block_on(Client::connect(config(&m, 1 << 20)))
        .expect("connect");
    let opts = argon::QueueOptions {
        timeout: Some(Duration::from_millis(u64::MAX)),
        ..Default::default()
    };
    let got = rt
        .block_on(async {
            tokio::time::timeout(LIMIT, client.queue_with("echo", Value::from(7), &opts)).await
        })
        .expect("bounded");
    assert_eq!(got.expect("runs"), Value::from(7));
    assert!(w.proc.is_running(), "worker died: {}", w.proc.stderr());
    assert!(!w.proc.stderr().contains("panic"), "{}", w.proc.stderr());
}

/// A manager's `retry_after` of u64::MAX ms is capped by the client's own
/// maximum backoff: the retry comes soon and succeeds.
#[test]
fn absurd_retry_after_is_capped_by_the_client() {
    use argon::protocol::handshake;
    use argon::protocol::{FromClient, Outcome, ToClient};
    use bytes::BytesMut;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;

    let dir = TempDir::new();
    let key = dir.keygen("key");
    let rt = runtime();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hs = HandshakeSettings::new(MasterKey::load(&key).expect("key"));
        let fake = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let est = handshake::accept(s, &hs).await.expect("handshake");
            let (mut reader, mut est) = est.reader::<FromClient>();
            let mut denied = false;
            while let Some(Ok(msg)) = reader.next().await {
                let FromClient::Submit(sub) = msg else {
                    continue;
                };
                let outcome = if denied {
                    Outcome::Done { value: sub.args }
                } else {
                    denied = true;
                    Outcome::Denied {
                        reason: "queue full".into(),
                        retry_after_ms: u64::MAX,
                    }
                };
                let mut buf = BytesMut::new();
                est.writer
                    .encode(
                        ToClient::Reply {
                            id: sub.id,
                            outcome,
                        },
                        &mut buf,
                    )
                    .expect("encode");
                est.write.write_all(&buf).await.expect("write");
            }
        });
        let mut cfg = ClientConfig::new(
            addr.to_string(),
            HandshakeSettings::new(MasterKey::load(&key).expect("key")),
        );
        cfg.retry = true;
        cfg.max_backoff = Duration::from_millis(50);
        let client = Client::connect(cfg).await.expect("connect");
        let got = tokio::time::timeout(LIMIT, client.queue("echo", Value::from("x")))
            .await
            .expect("the retry comes within the bound");
        assert_eq!(got.expect("second try succeeds"), Value::from("x"));
        fake.abort();
    });
}

/// Sends `messages` (whole client messages, as values) one by one over a
/// connection of our own, and returns the outcome of each reply.
async fn raw_submits(m: &Manager, messages: Vec<Value>) -> Vec<argon::protocol::Outcome> {
    use argon::protocol::{handshake, Role, ToClient};
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    let hs = HandshakeSettings::new(MasterKey::load(&m.key).expect("key"));
    let stream = tokio::net::TcpStream::connect(&m.addr)
        .await
        .expect("connect");
    let est = handshake::initiate(stream, Role::Client, &hs)
        .await
        .expect("handshake");
    let (mut reader, mut rest) = est.reader::<ToClient>();
    let mut out = Vec::new();
    for msg in messages {
        let mut buf = bytes::BytesMut::new();
        rest.writer.write(&msg, &mut buf).expect("encode");
        rest.write.write_all(&buf).await.expect("send");
        loop {
            match tokio::time::timeout(LIMIT, reader.next())
                .await
                .expect("bounded")
            {
                Some(Ok(ToClient::Reply { outcome, .. })) => {
                    out.push(outcome);
                    break;
                }
                Some(Ok(ToClient::Heartbeat {})) => continue,
                Some(other) => panic!("expected a reply, got {:?}", other.map(|m| m.reply_id())),
                None => panic!("the manager closed the connection"),
            }
        }
    }
    out
}

/// `{"submit": {"id": 1, "task": "echo", "args": ARGS}}`: the smallest
/// submit, leaving out every field that has a default.
fn minimal_submit(args: Value) -> Value {
    let fields = vec![
        (Value::from("id"), Value::from(1)),
        (Value::from("task"), Value::from("echo")),
        (Value::from("args"), args),
    ];
    Value::Map(vec![(Value::from("submit"), Value::Map(fields))])
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(Value::from(1), |inner, _| Value::Array(vec![inner]))
}

/// What the manager forwards is checked against the envelope it travels in:
/// a submit that fits its own frame but whose `assign` would not, and
/// arguments nested deeper than allowed, each fail alone with a clear error;
/// the worker stays registered and the next task runs.
#[test]
fn tasks_that_would_break_a_workers_frame_fail_alone() {
    use argon::protocol::codec::{encoded_len, max_plaintext};
    use argon::protocol::{Outcome, MAX_VALUE_DEPTH};

    // A 1 MiB frame limit keeps this quick in a debug build.
    const FRAME: usize = 1 << 20;
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = dir.write(
        "manager.toml",
        &format!("[security]\nmax_frame_bytes = {FRAME}\n"),
    );
    let m = Manager::start_with(
        &key,
        ManagerOpts {
            config: Some(cfg),
            ..Default::default()
        },
    );
    let _worker = m.add_worker(2, 1);
    let rt = runtime();

    // The largest minimal submit: exactly one frame. Its `assign` carries a
    // run id and a slot on top, so it would not fit.
    let probe = 100_000;
    let overhead = encoded_len(&minimal_submit(Value::Binary(vec![0; probe]))) - probe;
    let big = minimal_submit(Value::Binary(vec![7; max_plaintext(FRAME) - overhead]));
    assert_eq!(encoded_len(&big), max_plaintext(FRAME));
    let answers = rt.block_on(raw_submits(
        &m,
        vec![
            big,
            minimal_submit(nested(MAX_VALUE_DEPTH + 1)),
            minimal_submit(nested(MAX_VALUE_DEPTH)),
        ],
    ));
    match &answers[0] {
        Outcome::Failed { error } => assert!(error.contains("would not fit in a frame"), "{error}"),
        _ => panic!("the oversized task was not failed"),
    }
    match &answers[1] {
        Outcome::Failed { error } => assert!(error.contains("nested deeper"), "{error}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        answers[2],
        Outcome::Done {
            value: nested(MAX_VALUE_DEPTH)
        },
        "the deepest value allowed goes through"
    );

    // The library refuses too deep arguments before sending them.
    let client = rt
        .block_on(Client::connect(config(&m, FRAME)))
        .expect("connect");
    match rt.block_on(client.queue("echo", nested(MAX_VALUE_DEPTH + 1))) {
        Err(e @ ClientError::TooLarge(_)) => assert!(e.to_string().contains("nested deeper")),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let st = m.status();
    assert_eq!((st.workers, st.capacity), (1, 2), "{st:?}");
    let small = rt
        .block_on(client.queue("echo", Value::from("still fine")))
        .expect("the next task runs");
    assert_eq!(small, Value::from("still fine"));
}

/// A detached task's id outlives the client that submitted it: a second
/// client (a new connection) waits on it and gets its result, and another
/// one's `cancel_task` stops a running task by id.
#[test]
fn a_new_client_waits_on_and_cancels_tasks_by_id() {
    use argon::client::{CancelState, QueueOptions};
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = Manager::start(&key);
    let _worker = m.add_worker(1, 1);
    let rt = runtime();
    let opts = QueueOptions::default();
    let (short, long) = rt.block_on(async {
        let first = Client::connect(config(&m, 1 << 20)).await.expect("connect");
        let short = first
            .submit_detached("sleep", Value::from(300), &opts)
            .await
            .expect("accepted");
        let long = first
            .submit_detached("sleep", Value::from(600_000), &opts)
            .await
            .expect("accepted");
        (short, long)
    });
    assert_ne!(short, long);

    let second = rt
        .block_on(Client::connect(config(&m, 1 << 20)))
        .expect("connect");
    let got = rt
        .block_on(async { tokio::time::timeout(LIMIT, second.result(short, true)).await })
        .expect("the wait ends within the bound");
    assert_eq!(got.expect("done"), Value::from(300));

    m.wait_status("the long sleep to run", |s| s.in_flight == 1);
    let cancel = rt.block_on(second.cancel_task(long)).expect("answered");
    assert_eq!(cancel, CancelState::Cancelled);
    match rt.block_on(second.result(long, false)) {
        Err(ClientError::Failed(e)) => assert_eq!(e, "cancelled by the client"),
        other => panic!("expected the cancel, got {other:?}"),
    }
    match rt.block_on(second.result(long ^ (1 << 62), false)) {
        Err(ClientError::UnknownTask(id)) => assert_eq!(id, long ^ (1 << 62)),
        other => panic!("expected an unknown id, got {other:?}"),
    }
}
