//! Actor-level tests of the worker side: a `WorkerSlot` is the record of its
//! own capacity (busy, it refuses by the mailbox reply), it can be cancelled,
//! and it survives a task that panics or times out; a `WorkerPool` registers
//! with what its slots say, against a scripted manager speaking the wire
//! protocol.

mod support;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use argon::actors::worker::KeepBounds;
use argon::actors::{ManagerSettings, WorkerPool, WorkerSettings, WorkerSlot};
use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::messages::*;
use argon::protocol::handshake::{self, HandshakeSettings};
use argon::protocol::{
    Assign, FinishedRun, FrameReader, FrameWriter, FromWorker, MasterKey, Outcome, Register,
    RunningRun, ToWorker,
};
use argon::runtime::{start_manager, start_worker, ManagerHandle};
use argon::{TaskError, TaskRegistry, Value};
use futures_util::StreamExt;
use support::{within, Stub};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio_util::codec::FramedRead;

fn handshake() -> HandshakeSettings {
    HandshakeSettings::new(MasterKey::from_material(
        b"worker pool test key, long enough to pass the length check",
    ))
}

fn worker_settings(mgr: String, capacity: usize, backoff: Duration) -> WorkerSettings {
    WorkerSettings {
        mgr,
        capacity,
        allow_eval: false,
        handshake: handshake(),
        backoff_base: backoff,
        backoff_max: backoff,
        keep: argon::actors::worker::KeepBounds::default(),
    }
}

async fn pool_state(pool: &Addr<WorkerPool>) -> PoolState {
    within("a pool state", pool.send(GetPoolState))
        .await
        .expect("pool alive")
}

/// Polls the pool (bounded) until `ready` holds for its state.
async fn wait_for_pool(
    pool: &Addr<WorkerPool>,
    what: &str,
    ready: impl Fn(&PoolState) -> bool,
) -> PoolState {
    within(what, async {
        loop {
            let st = pool.send(GetPoolState).await.expect("pool alive");
            if ready(&st) {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

fn sleep_run(run: RunId, millis: u64) -> ExecuteTask {
    ExecuteTask {
        run,
        name: "sleep".into(),
        args: Value::from(millis),
        timeout: None,
    }
}

async fn exec(slot: &Addr<WorkerSlot>, task: ExecuteTask) -> Result<(), SlotBusy> {
    within("ExecuteTask to be answered", slot.send(task))
        .await
        .expect("slot alive")
}

/// Fails the test unless `slot` is busy with `run`: it says so, and refuses
/// another run by the mailbox reply.
async fn assert_busy_with(slot: &Addr<WorkerSlot>, run: RunId) {
    let state = within("GetSlotState", slot.send(GetSlotState))
        .await
        .expect("slot alive");
    assert_eq!(state, Some(run), "the slot says which run it holds");
    assert_eq!(
        exec(slot, sleep_run(run + 100, 1)).await,
        Err(SlotBusy::Running(run))
    );
}

/// Fails the test unless `done` reports run `run` failed as cancelled.
fn assert_cancelled(done: &SlotFinished, run: RunId) {
    assert_eq!(done.run, run);
    match &done.outcome {
        TaskOutcome::Failed(e) => assert!(e.contains("cancelled"), "{e:?}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Slot 3 with the built-in tasks and a stub as its reporter.
async fn attached_slot() -> (Addr<WorkerSlot>, Stub<SlotFinished>) {
    attached_slot_with(TaskRegistry::with_builtins()).await
}

/// Slot 3 running tasks from `registry`, with a stub as its reporter.
async fn attached_slot_with(registry: TaskRegistry) -> (Addr<WorkerSlot>, Stub<SlotFinished>) {
    let slot = WorkerSlot::new(3, Arc::new(registry)).start();
    let reports = Stub::<SlotFinished>::start();
    let busy = within(
        "AttachSlot",
        slot.send(AttachSlot {
            reporter: reports.recipient(),
            keeper: Stub::<SlotFinished>::start().recipient(),
        }),
    )
    .await
    .expect("slot alive");
    assert_eq!(busy, None, "a new slot is idle");
    (slot, reports)
}

/// A reporter that is gone at once, as a connection to a manager that
/// went away is.
struct Gone;

impl Actor for Gone {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<SlotFinished> for Gone {
    type Result = ();

    fn handle(&mut self, msg: SlotFinished, _: &mut Self::Context) {
        panic!("a stopped reporter got {msg:?}");
    }
}

/// A run that ends after its reporter (the connection) is gone is reported
/// to the keeper (the pool), not lost.
#[actix::test]
async fn a_run_that_ends_after_its_connection_is_gone_goes_to_the_keeper() {
    let slot = WorkerSlot::new(0, Arc::new(TaskRegistry::with_builtins())).start();
    let gone = Gone.start();
    let mut kept = Stub::<SlotFinished>::start();
    within(
        "AttachSlot",
        slot.send(AttachSlot {
            reporter: gone.clone().recipient(),
            keeper: kept.recipient(),
        }),
    )
    .await
    .expect("slot alive");
    within("the reporter to stop", async {
        while gone.connected() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(exec(&slot, sleep_run(5, 1)).await, Ok(()));
    let done = kept.next().await;
    assert_eq!(
        (done.run, done.outcome),
        (5, TaskOutcome::Done(Value::from(1)))
    );
}

/// The slot's own state decides: busy, it refuses by the mailbox reply and
/// names the run it holds; it reports each run finished to its reporter and
/// is free again after; draining, it refuses new work.
#[actix::test]
async fn a_busy_slot_refuses_by_mailbox_reply_and_is_free_once_its_run_ends() {
    let (slot, mut reports) = attached_slot().await;
    assert_eq!(exec(&slot, sleep_run(1, 30)).await, Ok(()));
    assert_busy_with(&slot, 1).await;

    let done = reports.next().await;
    assert_eq!((done.slot, done.run), (3, 1));
    assert_eq!(done.outcome, TaskOutcome::Done(Value::from(30)));
    assert_eq!(exec(&slot, sleep_run(3, 1)).await, Ok(()));
    assert_eq!(reports.next().await.run, 3);

    within("DrainSlot", slot.send(DrainSlot)).await.unwrap();
    assert_eq!(exec(&slot, sleep_run(4, 1)).await, Err(SlotBusy::Draining));
}

/// A cancel stops a run that would otherwise hold the slot for ever; the
/// slot reports it (as failed) and takes the next run. A cancel naming
/// another run is ignored.
#[actix::test]
async fn a_cancelled_run_frees_its_slot() {
    let (slot, mut reports) = attached_slot().await;
    assert_eq!(exec(&slot, sleep_run(1, u64::MAX)).await, Ok(()));
    slot.do_send(CancelRun(99));
    slot.do_send(CancelRun(1));
    assert_cancelled(&reports.next().await, 1);
    assert_eq!(exec(&slot, sleep_run(2, 1)).await, Ok(()));
    assert_eq!(
        reports.next().await.outcome,
        TaskOutcome::Done(Value::from(1))
    );
}

/// The manager's side of one worker connection, scripted by a test.
struct FakeManager {
    reader: FramedRead<OwnedReadHalf, FrameReader<FromWorker>>,
    write: OwnedWriteHalf,
    writer: FrameWriter,
}

impl FakeManager {
    async fn accept(listener: &TcpListener) -> FakeManager {
        let (stream, _) = within("the worker to connect", listener.accept())
            .await
            .expect("accept");
        let est = within("the handshake", handshake::accept(stream, &handshake()))
            .await
            .expect("handshake");
        let (reader, rest) = est.reader::<FromWorker>();
        FakeManager {
            reader,
            write: rest.write,
            writer: rest.writer,
        }
    }

    async fn send(&mut self, msg: ToWorker) {
        let mut buf = bytes::BytesMut::new();
        self.writer.write(&msg, &mut buf).expect("encode");
        self.write.write_all(&buf).await.expect("send");
    }

    async fn recv(&mut self) -> Option<FromWorker> {
        loop {
            match within("a message from the worker", self.reader.next()).await {
                Some(Ok(FromWorker::Heartbeat {})) => continue,
                Some(Ok(m)) => return Some(m),
                Some(Err(e)) => panic!("bad frame from the worker: {e}"),
                None => return None,
            }
        }
    }

    async fn register(&mut self, worker_id: u64) -> Register {
        self.register_with(worker_id, 0).await
    }

    /// Takes the worker's `register` and answers `registered`, announcing
    /// `max_frame` as the manager's frame limit.
    async fn register_with(&mut self, worker_id: u64, max_frame: u64) -> Register {
        let Some(FromWorker::Register(r)) = self.recv().await else {
            panic!("expected register");
        };
        self.send(ToWorker::Registered {
            worker_id,
            max_frame,
        })
        .await;
        r
    }
}

fn assign(run_id: u64, slot: u32, task: &str, args: Value) -> ToWorker {
    ToWorker::Assign(Assign {
        run_id,
        slot,
        task: task.into(),
        args,
        timeout_ms: None,
    })
}

fn done(run_id: u64, value: Value) -> FinishedRun {
    FinishedRun {
        run_id,
        outcome: Outcome::Done { value },
    }
}

/// The worker's next message, which must be `finished` for `run_id`.
async fn finished(m: &mut FakeManager, run_id: u64) -> Outcome {
    match m.recv().await {
        Some(FromWorker::Finished { run_id: r, outcome }) if r == run_id => outcome,
        other => panic!("expected run {run_id} finished, got {other:?}"),
    }
}

fn long_sleep(run_id: u64, slot: u32) -> ToWorker {
    ToWorker::Assign(Assign {
        run_id,
        slot,
        task: "sleep".into(),
        args: Value::from(600_000),
        timeout_ms: None,
    })
}

/// A worker registers with what its slots say: after a reconnect, the slot
/// still running a run is announced busy with it, not free. An assign to that
/// busy slot is a protocol violation that closes the connection; a cancel of
/// the run frees the slot and its `finished` follows.
#[actix::test]
async fn a_worker_registers_the_runs_its_slots_still_hold() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let pool = start_worker(
        worker_settings(addr, 2, Duration::from_millis(20)),
        TaskRegistry::with_builtins(),
    );

    let mut m = FakeManager::accept(&listener).await;
    let reg = m.register(1).await;
    assert_eq!((reg.capacity, reg.running.len()), (2, 0), "{reg:?}");
    m.send(long_sleep(7, 1)).await;
    wait_for_pool(&pool, "slot 1 to be busy", |s| s.idle == 1).await;
    drop(m);

    let mut m = FakeManager::accept(&listener).await;
    let reg = m.register(2).await;
    assert_eq!(reg.running, vec![RunningRun { run_id: 7, slot: 1 }]);
    m.send(long_sleep(8, 1)).await;
    match m.recv().await {
        Some(FromWorker::Error { message }) => {
            assert!(message.contains("running run 7"), "{message:?}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(
        m.recv().await.is_none(),
        "the worker closes after the error"
    );

    let mut m = FakeManager::accept(&listener).await;
    let reg = m.register(3).await;
    assert_eq!(reg.running, vec![RunningRun { run_id: 7, slot: 1 }]);
    m.send(ToWorker::Cancel { run_id: 7, slot: 1 }).await;
    match m.recv().await {
        Some(FromWorker::Finished {
            run_id: 7,
            outcome: Outcome::Failed { error },
        }) => assert!(error.contains("cancelled"), "{error:?}"),
        other => panic!("expected run 7 finished, got {other:?}"),
    }
    wait_for_pool(&pool, "both slots idle", |s| s.idle == 2).await;
}

/// A run that ends while the worker has no manager is not lost: its outcome
/// is handed over in the next `register` (its slot free, not in
/// `running`), once, beside a run still going; nothing of it follows the
/// registration.
#[actix::test]
async fn a_run_that_ends_while_the_manager_is_away_is_handed_over_in_the_next_register() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let pool = start_worker(
        worker_settings(addr, 2, Duration::from_millis(20)),
        TaskRegistry::with_builtins(),
    );
    let mut m = FakeManager::accept(&listener).await;
    let reg = m.register(1).await;
    assert_eq!((reg.finished.len(), reg.finished_dropped), (0, 0));
    m.send(assign(7, 0, "sleep", Value::from(200))).await;
    m.send(long_sleep(8, 1)).await;
    wait_for_pool(&pool, "both slots busy", |s| s.idle == 0).await;
    drop(m);
    wait_for_pool(&pool, "run 7 to end while away", |s| s.idle == 1).await;

    let mut m = FakeManager::accept(&listener).await;
    let reg = m.register(2).await;
    assert_eq!(reg.finished, vec![done(7, Value::from(200))]);
    assert_eq!(reg.finished_dropped, 0);
    assert_eq!(reg.running, vec![RunningRun { run_id: 8, slot: 1 }]);
    m.send(ToWorker::Cancel { run_id: 8, slot: 1 }).await;
    match finished(&mut m, 8).await {
        Outcome::Failed { error } => assert!(error.contains("cancelled"), "{error:?}"),
        other => panic!("expected run 8 cancelled, got {other:?}"),
    }
    drop(m);

    let mut m = FakeManager::accept(&listener).await;
    let reg = m.register(3).await;
    assert_eq!(
        (reg.finished.len(), reg.running.len(), reg.finished_dropped),
        (0, 0, 0),
        "handed over once: {reg:?}"
    );
}

/// Past `kept_outcomes_max` the oldest outcomes go: the `register` hands
/// over the newest and counts the rest in `finished_dropped`, once.
#[actix::test]
async fn past_the_bound_the_oldest_kept_outcomes_go_and_are_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut settings = worker_settings(addr, 4, Duration::from_millis(20));
    settings.keep = KeepBounds {
        max: 2,
        max_bytes: 1 << 20,
    };
    let pool = start_worker(settings, TaskRegistry::with_builtins());
    let mut m = FakeManager::accept(&listener).await;
    m.register(1).await;
    for (run, ms) in [(11, 100), (12, 200), (13, 300), (14, 400)] {
        m.send(assign(run, (run - 11) as u32, "sleep", Value::from(ms)))
            .await;
    }
    wait_for_pool(&pool, "all slots busy", |s| s.idle == 0).await;
    drop(m);
    wait_for_pool(&pool, "all runs to end while away", |s| s.idle == 4).await;

    let mut m = FakeManager::accept(&listener).await;
    let reg = m.register(2).await;
    assert_eq!(
        reg.finished,
        vec![done(13, Value::from(300)), done(14, Value::from(400))]
    );
    assert_eq!(reg.finished_dropped, 2);
    drop(m);

    let mut m = FakeManager::accept(&listener).await;
    let reg = m.register(3).await;
    assert_eq!(
        (reg.finished.len(), reg.finished_dropped),
        (0, 0),
        "{reg:?}"
    );
}

/// Ends the worker's current connection while it registers: takes its
/// `register` and closes, with a refusal for now or without a word.
async fn close_while_registering(listener: &TcpListener, refuse: bool) -> Register {
    let mut m = FakeManager::accept(listener).await;
    let Some(FromWorker::Register(r)) = m.recv().await else {
        panic!("expected register");
    };
    if refuse {
        m.send(ToWorker::Error {
            message: "registration refused: run 1 is already known to this manager".into(),
            permanent: false,
        })
        .await;
    }
    r
}

/// Kept outcomes that do not fit the `register` frame (the smaller of the
/// worker's limit and the one its manager announced) follow as `finished`
/// once `registered` arrives. Outcomes not yet handed over when a
/// connection ends while registering are kept for the next one; one that
/// ends without a word (its `register` may have been too large for the
/// manager) makes the next `register` carry none: all follow `registered`.
#[actix::test]
async fn kept_outcomes_past_the_register_frame_follow_registered() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let pool = start_worker(
        worker_settings(addr, 3, Duration::from_millis(20)),
        TaskRegistry::with_builtins(),
    );
    // `sleep` answers with its arguments: ~1.5 kB each, so that two fit a
    // `register` of 4 KiB and three do not.
    let big = |run: u64| {
        Value::Array(vec![
            Value::from(100),
            Value::from("x".repeat(1500)),
            run.into(),
        ])
    };
    let ids = |reg: &Register| -> Vec<u64> { reg.finished.iter().map(|f| f.run_id).collect() };
    let run_while_away = |m: FakeManager, runs: [u64; 3]| {
        let pool = pool.clone();
        async move {
            let mut m = m;
            for (slot, run) in runs.into_iter().enumerate() {
                m.send(assign(run, slot as u32, "sleep", big(run))).await;
            }
            wait_for_pool(&pool, "all slots busy", |s| s.idle == 0).await;
            drop(m);
            wait_for_pool(&pool, "the runs to end while away", |s| s.idle == 3).await;
        }
    };

    let mut m = FakeManager::accept(&listener).await;
    m.register_with(1, 4096).await;
    run_while_away(m, [31, 32, 33]).await;
    let reg = close_while_registering(&listener, true).await;
    assert_eq!(ids(&reg), vec![31, 32], "the oldest that fit");
    let reg = close_while_registering(&listener, false).await;
    assert_eq!(ids(&reg), vec![31, 32], "all kept after a refusal");
    let mut m = FakeManager::accept(&listener).await;
    let reg = m.register_with(2, 4096).await;
    assert_eq!(ids(&reg), Vec::<u64>::new(), "none after a silent close");
    for run in [31, 32, 33] {
        assert_eq!(
            finished(&mut m, run).await,
            Outcome::Done { value: big(run) }
        );
    }

    run_while_away(m, [41, 42, 43]).await;
    let mut m = FakeManager::accept(&listener).await;
    let reg = m.register_with(3, 4096).await;
    assert_eq!(ids(&reg), vec![41, 42]);
    assert_eq!(reg.finished[1], done(42, big(42)));
    assert_eq!(finished(&mut m, 43).await, Outcome::Done { value: big(43) });
}

/// Accepts the worker's connection and refuses its registration.
async fn refuse(listener: &TcpListener, why: &str, permanent: bool) {
    let mut m = FakeManager::accept(listener).await;
    let Some(FromWorker::Register(_)) = m.recv().await else {
        panic!("expected register");
    };
    m.send(ToWorker::Error {
        message: format!("registration refused: {why}"),
        permanent,
    })
    .await;
}

/// A registration refused for now is tried again on the backoff; one
/// refused for good (`permanent`) is not: the pool gives up and says why.
#[actix::test]
async fn a_registration_refused_for_good_is_not_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let pool = start_worker(
        worker_settings(addr.clone(), 1, Duration::from_millis(20)),
        TaskRegistry::with_builtins(),
    );
    let gave_up = pool.send(WaitGaveUp);

    refuse(&listener, "run 7 is already known to this manager", false).await;
    refuse(&listener, "capacity must be at most 65536\n\x1b[2J", true).await;
    assert_eq!(
        within("the pool to give up", gave_up)
            .await
            .expect("pool alive"),
        GaveUp::Refused {
            mgr: addr,
            why: "capacity must be at most 65536\\n\\u{1b}[2J".into(),
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.accept())
            .await
            .is_err(),
        "the worker connected again"
    );
}

async fn panics(_: Value) -> Result<Value, TaskError> {
    panic!("kaboom")
}

/// A manager and one single-slot worker whose registry adds `panics`.
async fn single_slot_cluster() -> (ManagerHandle, Addr<WorkerPool>, Client) {
    let mgr = start_manager("127.0.0.1:0", ManagerSettings::default(), handshake())
        .await
        .expect("manager starts");
    let mut registry = TaskRegistry::with_builtins();
    registry.register_fn("panics", panics);
    let pool = start_worker(
        worker_settings(mgr.addr.to_string(), 1, Duration::from_millis(50)),
        registry,
    );
    wait_for_pool(&pool, "the worker to register", |s| s.worker_id.is_some()).await;
    let status = within("a status report", mgr.manager.send(GetStatus))
        .await
        .expect("manager alive");
    assert_eq!((status.workers, status.capacity), (1, 1));
    let client = within(
        "the client to connect",
        Client::connect(ClientConfig::new(mgr.addr.to_string(), handshake())),
    )
    .await
    .expect("client connects");
    (mgr, pool, client)
}

async fn echo(client: &Client, text: &str) -> Value {
    within("an echo", client.queue("echo", Value::from(text)))
        .await
        .unwrap_or_else(|e| panic!("echo {text:?} failed: {e}"))
}

/// A task that panics yields an error naming the panic, and the same single
/// slot runs the next task. (The panic message on stderr is expected.)
#[actix::test]
async fn panicking_task_is_an_error_and_the_slot_lives_on() {
    let (mgr, pool, client) = single_slot_cluster().await;
    let worker_id = pool_state(&pool).await.worker_id;

    match within("the panicking task", client.queue("panics", Value::Nil)).await {
        Err(ClientError::Failed(e)) => {
            assert!(e.contains("panicked"), "{e:?}");
            assert!(e.contains("kaboom"), "{e:?}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        echo(&client, "after the panic").await,
        Value::from("after the panic")
    );
    assert_eq!(echo(&client, "and again").await, Value::from("and again"));

    let st = pool_state(&pool).await;
    assert_eq!((st.capacity, st.idle, st.worker_id), (1, 1, worker_id));
    let status = within("a status report", mgr.manager.send(GetStatus))
        .await
        .expect("manager alive");
    assert_eq!((status.workers, status.completed + status.failed), (1, 3));
}

/// A task that outlives its timeout yields a "timed out" error, and the same
/// single slot runs the next task.
#[actix::test]
async fn timed_out_task_is_an_error_and_the_slot_lives_on() {
    let (mgr, pool, client) = single_slot_cluster().await;
    let worker_id = pool_state(&pool).await.worker_id;

    let opts = QueueOptions {
        timeout: Some(Duration::from_millis(100)),
        ..QueueOptions::default()
    };
    match within(
        "the task to time out",
        client.queue_with("sleep", Value::from(3_000), &opts),
    )
    .await
    {
        Err(ClientError::Failed(e)) => assert!(e.contains("timed out"), "{e:?}"),
        other => panic!("expected a time-out failure, got {other:?}"),
    }
    assert_eq!(
        echo(&client, "after the timeout").await,
        Value::from("after the timeout")
    );

    let st = pool_state(&pool).await;
    assert_eq!((st.capacity, st.idle, st.worker_id), (1, 1, worker_id));
    let status = within("a status report", mgr.manager.send(GetStatus))
        .await
        .expect("manager alive");
    assert_eq!(
        (
            status.workers,
            status.completed + status.failed,
            status.in_flight
        ),
        (1, 2, 0)
    );
}

/// A blocking task that ignores its cancel.
#[derive(serde::Deserialize)]
struct Stubborn(u64);

impl argon::task::Task for Stubborn {
    type Output = u64;
    fn run(self) -> Result<u64, TaskError> {
        std::thread::sleep(Duration::from_millis(self.0));
        Ok(self.0)
    }
}

/// A blocking native task cannot be stopped: after a cancel its slot stays
/// busy (it refuses new work and says which run it holds) until the thread
/// returns; only then is the run reported, as cancelled.
#[actix::test]
async fn a_cancelled_blocking_task_holds_its_slot_until_it_returns() {
    let mut registry = TaskRegistry::with_builtins();
    registry.register::<Stubborn>("stubborn");
    let (slot, mut reports) = attached_slot_with(registry).await;
    let run = ExecuteTask {
        run: 1,
        name: "stubborn".into(),
        args: Value::from(1_500),
        timeout: None,
    };
    assert_eq!(exec(&slot, run).await, Ok(()));
    slot.do_send(CancelRun(1));
    assert_busy_with(&slot, 1).await;
    reports
        .assert_none("a report before the thread returned")
        .await;

    assert_cancelled(&reports.next().await, 1);
    assert_eq!(exec(&slot, sleep_run(3, 1)).await, Ok(()));
}

/// An assign that reaches a draining worker (it crossed the worker's
/// `drain` on the wire) is answered `denied`: not run, so the manager can
/// give it to another worker instead of failing it.
#[actix::test]
async fn a_draining_worker_answers_an_assign_with_denied() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let pool = start_worker(
        worker_settings(addr, 2, Duration::from_millis(20)),
        TaskRegistry::with_builtins(),
    );
    let mut m = FakeManager::accept(&listener).await;
    m.register(1).await;
    m.send(long_sleep(7, 0)).await;
    wait_for_pool(&pool, "slot 0 to be busy", |s| s.idle == 1).await;
    let drained = pool.send(Drain {
        deadline: Duration::from_secs(60),
    });
    assert!(matches!(m.recv().await, Some(FromWorker::Drain {})));
    m.send(long_sleep(8, 1)).await;
    match m.recv().await {
        Some(FromWorker::Finished {
            run_id: 8,
            outcome: Outcome::Denied { reason, .. },
        }) => assert!(reason.contains("shutting down"), "{reason:?}"),
        other => panic!("expected run 8 denied, got {other:?}"),
    }
    m.send(ToWorker::Cancel { run_id: 7, slot: 0 }).await;
    within("the drain to end", drained)
        .await
        .expect("pool alive");
}
