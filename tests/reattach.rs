//! A client waiting on an attached task across a manager crash: a manager
//! with a task store tells a client that asks (`want_id`) its task's id at
//! acceptance; without a store, or unasked, nothing is told.

use std::path::Path;
use std::time::Duration;

use argon::actors::manager::RedbStore;
use argon::actors::{Manager as ManagerActor, ManagerSettings, WorkerSettings};
use argon::admission::ConnectionLimits;
use argon::messages::GetStatus;
use argon::protocol::handshake::{self, HandshakeSettings};
use argon::protocol::{
    FrameReader, FromClient, MasterKey, Outcome, Role, Submit, ToClient, Value, Writing,
};
use argon::runtime::{start_manager_for, start_worker, ManagerHandle};
use argon::TaskRegistry;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

const WAIT: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn handshake() -> HandshakeSettings {
    HandshakeSettings::new(MasterKey::from_material(
        b"reattach test key, long enough to pass the length check",
    ))
}

/// A client speaking the wire protocol by hand.
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

    async fn send(&mut self, msg: &FromClient) {
        let mut buf = bytes::BytesMut::new();
        self.rest.writer.write(msg, &mut buf).expect("encode");
        self.rest.write.write_all(&buf).await.expect("send");
    }

    async fn recv(&mut self) -> ToClient {
        loop {
            match within("a frame from the manager", self.reader.next()).await {
                Some(Ok(ToClient::Heartbeat {})) => continue,
                Some(Ok(m)) => return m,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Submits an attached `echo` under request id `id`, asking for its
    /// task's id or not, and returns what the manager sent for it: its
    /// `accepted`'s task id, if any, and its `reply`'s outcome. A `ping`
    /// after the reply makes sure nothing else for it is on its way.
    async fn echo(&mut self, id: u64, want_id: bool) -> (Option<u64>, Outcome) {
        self.send(&FromClient::Submit(Submit {
            id,
            task: "echo".into(),
            args: Value::from(id),
            priority: Default::default(),
            timeout_ms: None,
            attempts: 0,
            retries: None,
            detach: false,
            want_id,
        }))
        .await;
        let (mut task, mut outcome) = (None, None);
        let ping = id + 1000;
        let mut pinged = false;
        loop {
            match self.recv().await {
                ToClient::Accepted { id: i, task_id } if i == id => {
                    assert_eq!(task.replace(task_id), None, "one accepted");
                }
                ToClient::Reply { id: i, outcome: o } if i == id => {
                    assert_eq!(outcome.replace(o), None, "one reply");
                    self.send(&FromClient::Ping { id: ping }).await;
                    pinged = true;
                }
                ToClient::Pong { id: p } if pinged && p == ping => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        (task, outcome.expect("a reply"))
    }
}

/// A manager (over a task store in `store`, if given) and one worker, in
/// this actix system; returns once the worker is registered.
async fn cluster(store: Option<&Path>) -> ManagerHandle {
    let settings = ManagerSettings::default();
    let manager = match store {
        Some(dir) => ManagerActor::with_store(settings, RedbStore::open(dir).expect("store opens")),
        None => ManagerActor::new(settings),
    };
    let m = start_manager_for(
        "127.0.0.1:0",
        manager,
        handshake(),
        ConnectionLimits::default(),
    )
    .await
    .expect("manager starts");
    start_worker(
        WorkerSettings {
            mgr: m.addr.to_string(),
            capacity: 1,
            allow_eval: false,
            handshake: handshake(),
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(20),
            keep: Default::default(),
        },
        TaskRegistry::with_builtins(),
    );
    within("the worker to register", async {
        while m.manager.send(GetStatus).await.expect("manager").workers == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    m
}

/// An attached submit is told its task's id (`accepted`, then its `reply`
/// as usual) only when it asks and the manager has a task store; otherwise
/// it gets its `reply` alone, as before.
#[actix::test]
async fn an_attached_submit_is_told_its_id_only_when_it_asks_a_manager_with_a_store() {
    let done = |n: u64| Outcome::Done {
        value: Value::from(n),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let durable = cluster(Some(dir.path())).await;
    let mut c = RawClient::connect(&durable).await;
    let (told, outcome) = c.echo(1, true).await;
    assert!(told.is_some(), "a durable manager tells the id");
    assert_eq!(outcome, done(1));
    assert_eq!(c.echo(2, false).await, (None, done(2)), "not asked");
    let (again, _) = c.echo(3, true).await;
    assert!(again > told, "ids count up: {told:?} then {again:?}");

    let volatile = cluster(None).await;
    let mut c = RawClient::connect(&volatile).await;
    assert_eq!(c.echo(1, true).await, (None, done(1)), "no store");
}
