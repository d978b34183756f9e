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

    let mut second = None;
    for _ in 0..20 {
        let opts = ManagerOpts {
            port: Some(port),
            ..Default::default()
        };
        if let Ok(m) = Manager::try_start_with(&key, opts) {
            second = Some(m);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = second.expect("manager restarts on the same port");
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
    use argon::protocol::{Message, Outcome};
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
            let mut est = handshake::accept(s, &hs).await.expect("handshake");
            let mut denied = false;
            while let Some(Ok(msg)) = est.reader.next().await {
                let Message::Submit(sub) = msg else { continue };
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
                        Message::Reply {
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
