//! A client waiting on an attached task across a manager crash: a manager
//! with a task store tells a client that asks (`want_id`) its task's id at
//! acceptance, and a client that lost its manager waits on that id again
//! once a manager is back on the same port and store, so the caller gets
//! the task's one outcome (library and CLI, against the real binary after
//! `kill -9`). Without a store nothing is told and the call fails as
//! before.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use argon::actors::manager::RedbStore;
use argon::actors::{Manager as ManagerActor, ManagerSettings, WorkerSettings};
use argon::admission::ConnectionLimits;
use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::messages::GetStatus;
use argon::protocol::handshake::{self, HandshakeSettings};
use argon::protocol::{
    FrameReader, FromClient, MasterKey, Outcome, Role, Submit, ToClient, Value, Writing,
};
use argon::runtime::{start_manager_for, start_worker, ManagerHandle};
use argon::TaskRegistry;
use common::{Manager, ManagerOpts, Proc, TempDir, Worker};
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
            due_ms: None,
            delay_ms: None,
            unique_key: None,
            unique_for_ms: None,
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

fn config(dir: &TempDir) -> PathBuf {
    dir.write(
        "manager.toml",
        "[manager]\npersist = \"store\"\nrecovery_grace = \"1s\"\n",
    )
}

fn start(key: &Path, config: Option<&Path>, port: Option<u16>) -> Manager {
    let opts = ManagerOpts {
        config: config.map(Path::to_path_buf),
        port,
        ..Default::default()
    };
    Manager::try_start_with(key, opts).unwrap_or_else(|e| panic!("{e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn client_config(mgr: &Manager) -> ClientConfig {
    let key = MasterKey::load(&mgr.key).expect("key loads");
    let mut config = ClientConfig::new(mgr.addr.clone(), HandshakeSettings::new(key));
    config.retry = true;
    config.reattach_for = Duration::from_secs(60);
    config
}

fn sleep_x(ms: u64) -> Value {
    Value::Array(vec![Value::from(ms), Value::from("x")])
}

/// Kills the manager once its one task has been running for a moment, and
/// keeps it down for `down` (the run ends meanwhile when `down` is longer,
/// and the worker keeps its outcome); then starts another on the same port
/// and store.
fn crash_and_restart(mgr: Manager, cfg: &Path, down: Duration) -> Manager {
    let mut mgr = mgr;
    mgr.wait_status("the task to run", |s| s.in_flight == 1);
    let port = mgr.port();
    mgr.proc.kill();
    std::thread::sleep(down);
    start(&mgr.key.clone(), Some(cfg), Some(port))
}

/// The library: an attached `sleep` in flight, the manager killed (the run
/// ends while it is down) and restarted on the same port and store; the
/// call returns the task's value. (Whether the task ran once or twice is
/// the manager's business: see `the_cli_task_runs_once_across_a_crash`.)
#[test]
fn the_library_gets_its_task_value_across_a_kill_9_and_restart() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = config(&dir);
    let mgr = start(&key, Some(&cfg), None);
    let _worker = Worker::start(&mgr.addr, &key, 1);
    mgr.wait_for_workers(1);
    let rt = runtime();
    let client = rt
        .block_on(Client::connect(client_config(&mgr)))
        .expect("client connects");
    let mut submitted = rt
        .block_on(client.submit("sleep", sleep_x(1500), &QueueOptions::default()))
        .expect("submitted");
    let deadline = Instant::now() + WAIT;
    while submitted.task_id().is_none() {
        assert!(Instant::now() < deadline, "the manager never told the id");
        std::thread::sleep(Duration::from_millis(10));
    }
    let result = rt.spawn(submitted.result());
    let mgr = crash_and_restart(mgr, &cfg, Duration::from_millis(2500));
    let value = rt
        .block_on(async { within("the task's value", result).await })
        .expect("call task");
    assert_eq!(
        value.unwrap_or_else(|e| panic!("{e}\n--- manager\n{}", mgr.proc.stderr())),
        sleep_x(1500)
    );
}

/// Without a store the manager tells no id: the call fails at once with
/// the connection lost, as before, rather than waiting for a manager that
/// would not know the task.
#[test]
fn without_a_store_the_call_fails_with_the_connection_lost() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let mut mgr = start(&key, None, None);
    let _worker = Worker::start(&mgr.addr, &key, 1);
    mgr.wait_for_workers(1);
    let rt = runtime();
    let client = rt
        .block_on(Client::connect(client_config(&mgr)))
        .expect("client connects");
    let call = {
        let c = client.clone();
        rt.spawn(async move { c.queue("sleep", sleep_x(5000)).await })
    };
    mgr.wait_status("the task to run", |s| s.in_flight == 1);
    mgr.proc.kill();
    let started = Instant::now();
    let result = rt
        .block_on(async { within("the call to fail", call).await })
        .expect("call task");
    assert!(
        matches!(result, Err(ClientError::Disconnected(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "at once");
}

/// `argon submit` of `sleep`, with logs of its client library on stderr
/// (the line saying its task's id came).
fn cli_submit(mgr: &Manager, args: &[&str]) -> Proc {
    mgr.submit(args)
        .env("RUST_LOG", "argon::client=debug")
        .limit(Duration::from_secs(60))
        .spawn()
}

/// Waits until the CLI's task was told its id.
fn wait_told(cli: &Proc, mgr: &Manager) {
    assert!(
        cli.wait_stderr("accepted as task", WAIT),
        "the CLI was not told its task's id\n--- cli\n{}\n--- manager\n{}",
        cli.stderr(),
        mgr.proc.stderr()
    );
}

/// The CLI: `argon submit --retry sleep '[3000, "x"]'` across a `kill -9`
/// of a manager with a store (down until the run ended) and a restart on
/// the same port and store exits 0 printing the task's result.
#[test]
fn the_cli_submit_with_retry_survives_a_kill_9_and_restart() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = config(&dir);
    let mgr = start(&key, Some(&cfg), None);
    let _worker = Worker::start(&mgr.addr, &key, 1);
    mgr.wait_for_workers(1);
    let cli = cli_submit(&mgr, &["--retry", "sleep", r#"[3000, "x"]"#]);
    wait_told(&cli, &mgr);
    let mgr = crash_and_restart(mgr, &cfg, Duration::from_millis(3500));
    let out = cli.finish(Duration::from_secs(60));
    assert_eq!(
        out.code,
        Some(0),
        "{out}\n--- manager\n{}",
        mgr.proc.stderr()
    );
    assert_eq!(out.stdout.trim(), r#"[3000,"x"]"#, "{out}");
}

/// The same with a task that counts its runs: it ran once, its outcome
/// handed over by the worker after the restart and recorded as its task's
/// (docs/PROTOCOL.md §7.4).
#[test]
fn the_cli_task_runs_once_across_a_crash() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = config(&dir);
    let runs = dir.join("runs");
    let worker_cfg = dir.write(
        "worker.toml",
        &format!(
            "[tasks.mark]\ncommand = [\"sh\", \"-c\", \"echo run >> {}; sleep 2; cat\"]\n",
            runs.display()
        ),
    );
    let mgr = start(&key, Some(&cfg), None);
    let _worker = Worker::start_with(
        &mgr.addr,
        &key,
        1,
        &["--config".as_ref(), worker_cfg.as_os_str()],
    );
    mgr.wait_for_workers(1);
    let cli = cli_submit(&mgr, &["--retry", "mark", r#"[3000, "x"]"#]);
    wait_told(&cli, &mgr);
    let mgr = crash_and_restart(mgr, &cfg, Duration::from_millis(3000));
    let out = cli.finish(Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.trim(), r#"[3000,"x"]"#, "{out}");
    let ran = std::fs::read_to_string(&runs).expect("runs file");
    assert_eq!(
        ran.lines().count(),
        1,
        "the task ran once\n--- manager\n{}",
        mgr.proc.stderr()
    );
}
