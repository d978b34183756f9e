//! Actor-level tests of the codec actor, `Connection`, in its client role on
//! a manager started in the test's own actix system: what a client may not
//! send is answered with the protocol's `error` and the connection closes;
//! anything undecodable likewise; heartbeats are accepted and never
//! answered; one client's bad frame harms no other client; and frames that
//! arrive with the one that closed a connection are not acted on.

mod support;

use std::time::Duration;

use argon::actors::ManagerSettings;
use argon::protocol::handshake::{self, HandshakeSettings};
use argon::protocol::{
    FrameReader, FromClient, FromWorker, MasterKey, Role, ToClient, ToWorker, Value, WireError,
    Writing,
};
use argon::runtime::{start_manager, ManagerHandle};
use futures_util::StreamExt;
use support::within;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

fn handshake() -> HandshakeSettings {
    let mut hs = HandshakeSettings::new(MasterKey::from_material(
        b"connection test key, long enough to pass the length check",
    ));
    hs.heartbeat = Duration::from_secs(60);
    hs
}

struct RawClient {
    reader: FramedRead<OwnedReadHalf, FrameReader<ToClient>>,
    rest: Writing,
}

impl RawClient {
    async fn connect(m: &ManagerHandle) -> RawClient {
        let stream = TcpStream::connect(m.addr).await.expect("connect");
        let est = within(
            "the handshake",
            handshake::initiate(stream, Role::Client, &handshake()),
        )
        .await
        .expect("handshake");
        let (reader, rest) = est.reader::<ToClient>();
        RawClient { reader, rest }
    }

    /// Sends any serializable message, as a client could.
    async fn send(&mut self, msg: &impl serde::Serialize) {
        let mut buf = bytes::BytesMut::new();
        self.rest.writer.write(msg, &mut buf).expect("encode");
        self.rest.write.write_all(&buf).await.expect("send");
    }

    async fn recv(&mut self) -> Option<ToClient> {
        match within("a frame from the manager", self.reader.next()).await {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) => panic!("bad frame from the manager: {e}"),
            None => None,
        }
    }

    /// The `error` the manager sends, then the close that follows it.
    async fn expect_error_and_close(&mut self) -> String {
        let message = match self.recv().await {
            Some(ToClient::Error { message }) => message,
            other => panic!("expected an error, got {other:?}"),
        };
        assert!(self.recv().await.is_none(), "the connection closes");
        message
    }
}

impl RawClient {
    /// Connects to the cluster's manager with the cluster's own key.
    #[cfg(feature = "http")]
    async fn to_cluster(c: &argon::runtime::Cluster) -> RawClient {
        let stream = TcpStream::connect(c.manager.addr).await.expect("connect");
        let est = within(
            "the handshake",
            handshake::initiate(stream, Role::Client, &c.handshake),
        )
        .await
        .expect("handshake");
        let (reader, rest) = est.reader::<ToClient>();
        RawClient { reader, rest }
    }
}

/// The manager's `argon_result_waits` gauge.
#[cfg(feature = "http")]
async fn result_waits(m: &ManagerHandle) -> u64 {
    let snapshot = within(
        "metrics",
        m.manager.send(argon::actors::manager::metrics::GetMetrics),
    )
    .await
    .expect("metrics");
    snapshot
        .text
        .lines()
        .find_map(|l| l.strip_prefix("argon_result_waits "))
        .and_then(|v| v.trim().parse().ok())
        .expect("argon_result_waits in the metrics")
}

async fn manager() -> ManagerHandle {
    start_manager("127.0.0.1:0", ManagerSettings::default(), handshake())
        .await
        .expect("manager starts")
}

fn one_entry(name: &str, fields: Vec<(&str, Value)>) -> Value {
    let fields = fields
        .into_iter()
        .map(|(k, v)| (Value::from(k), v))
        .collect();
    Value::Map(vec![(Value::from(name), Value::Map(fields))])
}

#[actix::test]
async fn a_message_of_another_role_is_answered_with_an_error_and_closed() {
    let m = manager().await;
    let mut bystander = RawClient::connect(&m).await;
    let mut c = RawClient::connect(&m).await;
    c.send(&one_entry("drain", vec![])).await;
    assert_eq!(
        c.expect_error_and_close().await,
        "a client may not send drain"
    );

    let mut c = RawClient::connect(&m).await;
    c.send(&one_entry("assign", vec![("run_id", Value::from(1))]))
        .await;
    assert_eq!(
        c.expect_error_and_close().await,
        "a client may not send assign"
    );

    // The other client was not touched.
    bystander.send(&FromClient::Ping { id: 9 }).await;
    assert_eq!(bystander.recv().await, Some(ToClient::Pong { id: 9 }));
}

#[actix::test]
async fn an_undecodable_message_is_answered_with_an_error_and_closed() {
    let m = manager().await;
    for bad in [
        Value::from("not a map"),
        one_entry("submit", vec![("id", Value::from("seven"))]),
        one_entry("no_such_message", vec![]),
    ] {
        let mut c = RawClient::connect(&m).await;
        c.send(&bad).await;
        let message = c.expect_error_and_close().await;
        assert!(message.starts_with("undecodable message"), "{message:?}");
    }
}

#[actix::test]
async fn heartbeats_are_taken_and_never_answered() {
    let m = manager().await;
    let mut c = RawClient::connect(&m).await;
    for _ in 0..3 {
        c.send(&FromClient::Heartbeat {}).await;
    }
    c.send(&FromClient::Ping { id: 1 }).await;
    assert_eq!(
        c.recv().await,
        Some(ToClient::Pong { id: 1 }),
        "the first answer is the pong: heartbeats get none"
    );
}

#[actix::test]
async fn frames_read_with_the_one_that_closed_the_connection_are_dropped() {
    let m = manager().await;
    let stream = TcpStream::connect(m.addr).await.expect("connect");
    let est = within(
        "the handshake",
        handshake::initiate(stream, Role::Worker, &handshake()),
    )
    .await
    .expect("handshake");
    let (mut reader, mut rest) = est.reader::<ToWorker>();
    let mut buf = bytes::BytesMut::new();
    for _ in 0..3 {
        rest.writer
            .write(&FromWorker::Drain {}, &mut buf)
            .expect("encode");
    }
    rest.write.write_all(&buf).await.expect("send");
    match within("the manager's error", reader.next()).await {
        Some(Ok(ToWorker::Error { message, .. })) => {
            assert_eq!(message, "unexpected drain before registering")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let after = within("the close", reader.next()).await;
    assert!(
        matches!(after, None | Some(Err(WireError::Io(_)))),
        "one error, then the close: got {after:?}"
    );
}

/// A cluster of one 1-slot worker whose heartbeat is `heartbeat`, and a
/// raw client on it that submitted a detached `sleep` of ten minutes and
/// then `MAX_OPEN_REQUESTS + 8` waits for its result and a ping (id 7), all in
/// one write; returns once the manager holds the bound of waits, that is
/// once the connection stopped reading. Also the task's id.
#[cfg(feature = "http")]
async fn paused_client(heartbeat: Duration) -> (argon::runtime::Cluster, RawClient, u64) {
    use argon::protocol::MAX_OPEN_REQUESTS;
    let mut hs = handshake();
    hs.heartbeat = heartbeat;
    let opts = argon::runtime::ClusterOptions {
        handshake: Some(("unused".into(), hs)),
        ..Default::default()
    };
    let cluster = argon::runtime::Cluster::start_with(1, 1, 0, ManagerSettings::default(), opts)
        .await
        .expect("cluster starts");
    let mut c = RawClient::to_cluster(&cluster).await;
    c.send(&FromClient::Submit(argon::protocol::Submit {
        id: 1,
        task: "sleep".into(),
        args: Value::from(600_000),
        priority: Default::default(),
        timeout_ms: None,
        attempts: 0,
        retries: None,
        detach: true,
        want_id: false,
        due_ms: None,
        delay_ms: None,
        unique_key: None,
        unique_for_ms: None,
    }))
    .await;
    let task_id = match c.recv().await {
        Some(ToClient::Accepted { task_id, .. }) => task_id,
        other => panic!("expected the task accepted, got {other:?}"),
    };
    let mut frames = bytes::BytesMut::new();
    for id in 0..MAX_OPEN_REQUESTS as u64 + 8 {
        let ask = FromClient::ResultRequest {
            id: 100 + id,
            task_id,
            wait: true,
        };
        c.rest.writer.write(&ask, &mut frames).expect("encode");
    }
    c.rest
        .writer
        .write(&FromClient::Ping { id: 7 }, &mut frames)
        .expect("encode");
    c.rest.write.write_all(&frames).await.expect("send");
    within("the manager holding the bound of waits", async {
        while result_waits(&cluster.manager).await < MAX_OPEN_REQUESTS as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        result_waits(&cluster.manager).await,
        MAX_OPEN_REQUESTS as u64
    );
    (cluster, c, task_id)
}

/// Ends the task by id from another connection, then reads every answer
/// the paused client is owed: a result per wait, and the pong. Returns how
/// many results came before the pong.
#[cfg(feature = "http")]
async fn release(cluster: &argon::runtime::Cluster, c: &mut RawClient, task_id: u64) -> u64 {
    use argon::protocol::MAX_OPEN_REQUESTS;
    let mut other = RawClient::to_cluster(cluster).await;
    other.send(&FromClient::CancelTask { id: 2, task_id }).await;
    assert!(matches!(
        other.recv().await,
        Some(ToClient::CancelResult { .. })
    ));
    let mut results = 0;
    let mut pong_after = None;
    while results < MAX_OPEN_REQUESTS as u64 + 8 || pong_after.is_none() {
        match c.recv().await {
            Some(ToClient::Result { task_id: t, .. }) if t == task_id => results += 1,
            Some(ToClient::Pong { id: 7 }) => pong_after = Some(results),
            Some(ToClient::Heartbeat {}) => {}
            other => panic!("unexpected frame {other:?} after {results} results"),
        }
    }
    assert_eq!(result_waits(&cluster.manager).await, 0);
    pong_after.expect("the pong came")
}

/// One connection holds at most `MAX_OPEN_REQUESTS` requests waiting for the
/// manager's answer; past that it reads nothing more from its peer until
/// answers come back. Here a client asks to wait for a long task's result
/// more times than that, then pings: the manager holds exactly the bound of
/// waits, the ping is not read meanwhile (its pong comes after an answer
/// freed a place, not before), and once the task ends every request is
/// answered and nothing is lost.
#[cfg(feature = "http")]
#[actix::test]
async fn a_connection_stops_reading_while_its_open_requests_are_at_the_bound() {
    let (cluster, mut c, task_id) = paused_client(Duration::from_secs(60)).await;
    let pong_after = release(&cluster, &mut c, task_id).await;
    assert!(
        pong_after >= 1,
        "the ping was read while the bound of requests was open: its pong came after \
         {pong_after} results"
    );
}

/// While a connection does not read (its requests at the bound), its
/// peer's heartbeats wait unread in the socket: they still count. A client
/// that goes on sending them keeps its connection for many silence limits
/// (100 ms heartbeats: 300 ms), and gets every answer once the task ends.
#[cfg(feature = "http")]
#[actix::test]
async fn a_paused_connection_lives_while_its_peer_writes() {
    let beat = Duration::from_millis(100);
    let (cluster, mut c, task_id) = paused_client(beat).await;
    for _ in 0..15 {
        c.send(&FromClient::Heartbeat {}).await;
        tokio::time::sleep(beat).await;
    }
    let pong_after = release(&cluster, &mut c, task_id).await;
    assert!(pong_after >= 1, "pong after {pong_after} results");
}

/// A paused connection whose peer sends nothing at all, not even
/// heartbeats, is closed as silent after the silence limit, as it would be
/// while read.
#[cfg(feature = "http")]
#[actix::test]
async fn a_paused_connection_whose_peer_is_silent_is_closed() {
    let (_cluster, mut c, _) = paused_client(Duration::from_millis(100)).await;
    loop {
        match c.recv().await {
            None => break,
            Some(ToClient::Heartbeat {}) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The client library keeps at most `MAX_OPEN_WAITS` result waits open on
/// its connection and holds the rest until one is answered, so the manager
/// never stops reading a stock client: with 600 waits on one connection, a
/// ping still gets its pong at once, and every wait is answered once the
/// task ends.
#[cfg(feature = "http")]
#[actix::test]
async fn the_client_library_holds_back_waits_past_its_share() {
    use argon::client::MAX_OPEN_WAITS;
    use argon::{Client, ClientConfig, ClientError, QueueOptions};
    let cluster = argon::runtime::Cluster::start(1, 1, 0, ManagerSettings::default())
        .await
        .expect("cluster starts");
    let config = ClientConfig::new(cluster.manager.addr.to_string(), cluster.handshake.clone());
    let client = Client::connect(config).await.expect("connect");
    let task_id = client
        .submit_detached("sleep", Value::from(600_000), &QueueOptions::default())
        .await
        .expect("accepted");
    let waits: Vec<_> = (0..600)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.result(task_id, true).await })
        })
        .collect();
    within("the manager holding the client's share of waits", async {
        while result_waits(&cluster.manager).await < MAX_OPEN_WAITS as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    within("a pong while 600 waits are open", client.ping())
        .await
        .expect("pong");
    assert_eq!(result_waits(&cluster.manager).await, MAX_OPEN_WAITS as u64);

    assert_eq!(
        within("the cancel", client.cancel_task(task_id))
            .await
            .expect("cancel"),
        argon::client::CancelState::Cancelled
    );
    for w in waits {
        let got = within("a wait's answer", w).await.expect("joins");
        assert!(
            matches!(&got, Err(ClientError::Failed(e)) if e.contains("cancel")),
            "{got:?}"
        );
    }
    assert_eq!(result_waits(&cluster.manager).await, 0);
}
