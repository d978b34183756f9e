//! Heartbeats: a peer that stays connected but silent (a host that vanished
//! without closing its sockets) is taken for gone after three intervals, on
//! the manager's side and on the client's, while quiet but healthy
//! connections live on.

mod common;

use std::time::{Duration, Instant};

use argon::protocol::handshake::{self, HandshakeSettings};
use argon::protocol::{FromWorker, Register, Role, ToWorker};
use argon::{Client, ClientConfig, ClientError, MasterKey};
use bytes::BytesMut;
use common::{Manager, ManagerOpts, TempDir, Worker};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Encoder;

const BEAT: Duration = Duration::from_millis(150);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn settings(key: &std::path::Path) -> HandshakeSettings {
    let mut hs = HandshakeSettings::new(MasterKey::load(key).expect("key"));
    hs.heartbeat = BEAT;
    hs
}

fn manager_with_fast_heartbeat(dir: &TempDir) -> Manager {
    let key = dir.keygen("key");
    let cfg = dir.write(
        "manager.toml",
        &format!(
            "[security]\nheartbeat_interval = \"{}ms\"\n",
            BEAT.as_millis()
        ),
    );
    Manager::start_with(
        &key,
        ManagerOpts {
            config: Some(cfg),
            ..Default::default()
        },
    )
}

/// A worker that registers and then falls silent is dropped by the manager
/// after three heartbeat intervals: capacity shrinks without a TCP close.
#[test]
fn silent_worker_is_dropped_by_the_manager() {
    let dir = TempDir::new();
    let m = manager_with_fast_heartbeat(&dir);
    let rt = runtime();
    let _held = rt.block_on(async {
        let stream = TcpStream::connect(&m.addr).await.expect("connect");
        let est = handshake::initiate(stream, Role::Worker, &settings(&m.key))
            .await
            .expect("handshake");
        let (mut reader, mut rest) = est.reader::<ToWorker>();
        let mut buf = BytesMut::new();
        rest.writer
            .encode(
                FromWorker::Register(Register {
                    capacity: 2,
                    tasks: vec!["echo".into()],
                    eval: false,
                    running: vec![],
                    max_frame: 0,
                    finished: Vec::new(),
                    finished_dropped: 0,
                }),
                &mut buf,
            )
            .expect("encode");
        rest.write.write_all(&buf).await.expect("send register");
        match reader.next().await {
            Some(Ok(ToWorker::Registered { .. })) => {}
            other => panic!("expected registered, got {other:?}"),
        }
        // Keep both halves open, read nothing, write nothing.
        (reader, rest.write)
    });
    m.wait_for_workers(1);
    let gone_at = Instant::now();
    let st = m.wait_status("the silent worker to be dropped", |s| s.workers == 0);
    assert_eq!(st.capacity, 0);
    assert!(
        gone_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        gone_at.elapsed()
    );
    assert!(
        m.proc.wait_stderr("silent", Duration::from_secs(5)),
        "{}",
        m.proc.stderr()
    );
}

/// A real worker and an idle client on quiet connections are kept alive by
/// heartbeats well past three intervals.
#[test]
fn quiet_healthy_connections_live_on() {
    let dir = TempDir::new();
    let m = manager_with_fast_heartbeat(&dir);
    let wcfg = dir.write(
        "worker.toml",
        &format!(
            "[security]\nheartbeat_interval = \"{}ms\"\n",
            BEAT.as_millis()
        ),
    );
    let _w = Worker::start_with(
        &m.addr,
        &m.key,
        1,
        &[std::ffi::OsStr::new("--config"), wcfg.as_os_str()],
    );
    m.wait_for_workers(1);
    let rt = runtime();
    rt.block_on(async {
        let client = Client::connect(ClientConfig::new(m.addr.clone(), settings(&m.key)))
            .await
            .expect("connect");
        tokio::time::sleep(BEAT * 8).await;
        client.ping().await.expect("idle client still connected");
        let v = client
            .queue("echo", argon::Value::from("alive"))
            .await
            .expect("worker still registered");
        assert_eq!(v, argon::Value::from("alive"));
    });
    let st = m.status();
    assert_eq!(st.workers, 1, "{st:?}");
    assert!(!m.proc.stderr().contains("silent"), "{}", m.proc.stderr());
}

/// A client whose manager accepts it and then falls silent fails its pending
/// call with `Disconnected` after three intervals instead of waiting forever.
#[test]
fn client_gives_up_on_a_silent_manager() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hs = settings(&key);
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let est = handshake::accept(s, &hs).await.expect("handshake");
            // Hold the connection open and say nothing.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(est);
        });
        let client = Client::connect(ClientConfig::new(addr.to_string(), settings(&key)))
            .await
            .expect("connect");
        let started = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(5), client.ping())
            .await
            .expect("the ping resolves within the bound");
        match got {
            Err(ClientError::Disconnected(why)) => assert!(why.contains("silent"), "{why}"),
            other => panic!("expected Disconnected, got {other:?}"),
        }
        assert!(started.elapsed() >= BEAT * 2, "{:?}", started.elapsed());
        server.abort();
    });
}
