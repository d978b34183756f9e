//! Actor-level tests of the worker side: the `WorkerPool` refuses work by
//! mailbox reply when no slot is idle or it is draining, and a slot survives
//! a task that panics or times out.

mod support;

use std::time::Duration;

use actix::prelude::*;
use argon::actors::{ManagerSettings, WorkerPool, WorkerSettings};
use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::messages::{Drain, GetPoolState, GetStatus, PoolBusy, PoolState, RunTask, TaskId};
use argon::protocol::handshake::HandshakeSettings;
use argon::protocol::MasterKey;
use argon::runtime::{start_manager, start_worker, ManagerHandle};
use argon::{TaskError, TaskRegistry, Value};
use support::within;

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
    }
}

/// An address on which nothing listens.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr.to_string()
}

fn sleep_task(task: TaskId, millis: u64) -> RunTask {
    RunTask {
        task,
        name: "sleep".into(),
        args: Value::from(millis),
        timeout: None,
    }
}

async fn run(pool: &Addr<WorkerPool>, task: RunTask) -> Result<(), PoolBusy> {
    within("RunTask to be answered", pool.send(task))
        .await
        .expect("pool alive")
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

/// Two slots take two tasks; the third is refused NoIdleSlot by the mailbox
/// reply; a finished slot takes work again; a draining pool refuses Draining.
#[actix::test]
async fn pool_refuses_by_mailbox_reply_when_full_or_draining() {
    let settings = worker_settings(dead_address(), 2, Duration::from_secs(600));
    let pool = start_worker(settings, TaskRegistry::with_builtins());

    assert_eq!(run(&pool, sleep_task(1, 200)).await, Ok(()));
    assert_eq!(run(&pool, sleep_task(2, 1_500)).await, Ok(()));
    assert_eq!(
        run(&pool, sleep_task(3, 1)).await,
        Err(PoolBusy::NoIdleSlot)
    );
    assert_eq!(
        pool_state(&pool).await,
        PoolState {
            capacity: 2,
            idle: 0,
            worker_id: None
        }
    );

    let st = wait_for_pool(&pool, "a slot to finish", |s| s.idle > 0).await;
    assert_eq!(st.idle, 1, "only the 200 ms task can have finished");
    assert_eq!(run(&pool, sleep_task(4, 100)).await, Ok(()));
    assert_eq!(
        run(&pool, sleep_task(5, 1)).await,
        Err(PoolBusy::NoIdleSlot)
    );

    // Drain is queued before the next RunTask, so the pool is draining by then.
    let drained = pool.send(Drain {
        deadline: Duration::from_secs(5),
    });
    assert_eq!(run(&pool, sleep_task(6, 1)).await, Err(PoolBusy::Draining));
    within("the pool to drain", drained)
        .await
        .expect("pool alive");
    assert_eq!(pool_state(&pool).await.idle, 2);
    assert_eq!(run(&pool, sleep_task(7, 1)).await, Err(PoolBusy::Draining));
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
    assert_eq!((status.workers, status.completed), (1, 3));
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
        (status.workers, status.completed, status.in_flight),
        (1, 2, 0)
    );
}
