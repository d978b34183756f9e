//! Results are held to the same nesting bound as arguments (PROTOCOL.md
//! §5): a worker's `finished` whose value is nested deeper than 120 levels
//! reaches its client, attached or detached, as a failure that says so,
//! never as the value; one too deep to decode at all closes the worker's
//! connection, and its task is answered as for any lost worker.
//!
//! A worker written against the protocol is played by the test, on a
//! manager started in the test's own actix system.

mod support;

use std::time::Duration;

use argon::actors::ManagerSettings;
use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::protocol::handshake::{self, HandshakeSettings};
use argon::protocol::{
    FrameReader, FromWorker, MasterKey, Outcome, Register, Role, ToWorker, Value, Writing,
    MAX_VALUE_DEPTH,
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
        b"result depth test key, long enough to pass the length check",
    ));
    hs.heartbeat = Duration::from_secs(60);
    hs
}

/// `levels` arrays around a string.
fn nested(levels: usize) -> Value {
    (0..levels).fold(Value::from("core"), |v, _| Value::Array(vec![v]))
}

/// A worker of one slot providing `deep`, played by the test.
struct RawWorker {
    reader: FramedRead<OwnedReadHalf, FrameReader<ToWorker>>,
    rest: Writing,
}

impl RawWorker {
    async fn register(m: &ManagerHandle) -> RawWorker {
        let stream = TcpStream::connect(m.addr).await.expect("connect");
        let est = within(
            "the handshake",
            handshake::initiate(stream, Role::Worker, &handshake()),
        )
        .await
        .expect("handshake");
        let (reader, rest) = est.reader::<ToWorker>();
        let mut w = RawWorker { reader, rest };
        w.send(&FromWorker::Register(Register {
            capacity: 1,
            tasks: vec!["deep".into()],
            eval: false,
            running: vec![],
            max_frame: 0,
            finished: Vec::new(),
            finished_dropped: 0,
        }))
        .await;
        match w.recv().await {
            Some(ToWorker::Registered { .. }) => w,
            other => panic!("expected registered, got {other:?}"),
        }
    }

    async fn send(&mut self, msg: &FromWorker) {
        let mut buf = bytes::BytesMut::new();
        self.rest.writer.write(msg, &mut buf).expect("encode");
        self.rest.write.write_all(&buf).await.expect("send");
    }

    async fn recv(&mut self) -> Option<ToWorker> {
        loop {
            match within("a frame from the manager", self.reader.next()).await {
                Some(Ok(ToWorker::Heartbeat {})) => continue,
                Some(Ok(m)) => return Some(m),
                Some(Err(e)) => panic!("bad frame from the manager: {e}"),
                None => return None,
            }
        }
    }

    /// Takes the next assign and answers it with `value`.
    async fn answer(&mut self, value: Value) {
        let run_id = match self.recv().await {
            Some(ToWorker::Assign(a)) => a.run_id,
            other => panic!("expected an assign, got {other:?}"),
        };
        self.send(&FromWorker::Finished {
            run_id,
            outcome: Outcome::Done { value },
        })
        .await;
    }
}

async fn cluster() -> (ManagerHandle, RawWorker, Client) {
    let m = start_manager("127.0.0.1:0", ManagerSettings::default(), handshake())
        .await
        .expect("manager starts");
    let w = RawWorker::register(&m).await;
    let c = Client::connect(ClientConfig::new(m.addr.to_string(), handshake()))
        .await
        .expect("client connects");
    (m, w, c)
}

fn too_deep() -> String {
    format!("result nested deeper than {MAX_VALUE_DEPTH} levels")
}

/// 120 levels pass; 121 and 124 (the most a `finished` that decodes holds)
/// reach the client as the failure, attached and detached alike.
#[actix::test]
async fn a_result_deeper_than_values_may_be_is_answered_as_a_failure() {
    let (_m, mut w, c) = cluster().await;
    for levels in [MAX_VALUE_DEPTH, MAX_VALUE_DEPTH + 1, 124] {
        let (got, _) = tokio::join!(c.queue("deep", Value::Nil), w.answer(nested(levels)));
        let id = c
            .submit_detached("deep", Value::Nil, &QueueOptions::default())
            .await
            .expect("accepted");
        w.answer(nested(levels)).await;
        let kept = c.result(id, true).await;
        if levels <= MAX_VALUE_DEPTH {
            assert_eq!(got.expect("attached"), nested(levels));
            assert_eq!(kept.expect("detached"), nested(levels));
            continue;
        }
        for got in [got, kept] {
            match got {
                Err(ClientError::Failed(e)) => assert_eq!(e, too_deep(), "{levels} levels"),
                other => panic!("{levels} levels: expected the failure, got {other:?}"),
            }
        }
    }
}

/// A `finished` nested past the message limit does not decode: the worker
/// is told so and closed, and its task is answered as for a lost worker.
#[actix::test]
async fn a_finished_past_the_message_limit_closes_the_worker() {
    let (_m, mut w, c) = cluster().await;
    let (got, _) = tokio::join!(c.queue("deep", Value::Nil), async {
        w.answer(nested(125)).await;
        match w.recv().await {
            Some(ToWorker::Error { message, .. }) => assert_eq!(
                message, "undecodable message: nested deeper than 128 levels",
                "{message:?}"
            ),
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(w.recv().await.is_none(), "the connection closes");
    });
    match got {
        Err(ClientError::Failed(e)) => assert!(e.contains("worker lost"), "{e}"),
        other => panic!("expected worker lost, got {other:?}"),
    }
}
