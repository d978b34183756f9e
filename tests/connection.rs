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
        Some(Ok(ToWorker::Error { message })) => {
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
