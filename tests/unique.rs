//! Actor-level tests of unique tasks: submits with the key of a task that
//! is scheduled, queued or running get its id (and one run); after it is
//! answered the key holds for its `unique_for`, then a new task is made;
//! an attached duplicate gets the holder's outcome; the keys are bounded.

mod support;

use std::time::Duration;

use actix::prelude::*;
use argon::actors::manager::unique::UNIQUE_FULL;
use argon::actors::{Manager, ManagerSettings};
use argon::messages::*;
use argon::protocol::Value;
use support::manager::{
    assign_runs, register_stub, report_run, send_submit, settled_status, Link, Session,
};
use support::within;

fn manager(unique_max: usize) -> Addr<Manager> {
    tokio::time::pause();
    Manager::new(ManagerSettings {
        unique_max,
        ..ManagerSettings::default()
    })
    .start()
}

async fn register(mgr: &Addr<Manager>, capacity: u32) -> (WorkerId, Link) {
    register_stub(mgr, "stub", capacity, &["t"]).await
}

/// Submits task "t" as request `request_id` with unique key `key`, held
/// `keep_ms` after the task is answered.
async fn submit(
    mgr: &Addr<Manager>,
    to: &Session,
    request_id: u64,
    detach: bool,
    key: &str,
    keep_ms: u64,
) -> Result<TaskId, Rejection> {
    send_submit(
        mgr,
        SubmitTask {
            session: 1,
            request_id,
            spec: TaskSpec::new("t", Value::from(request_id)),
            reply_to: to.recipient(),
            detach,
            opts: SubmitOptions {
                unique: Some((key.into(), Duration::from_millis(keep_ms))),
                ..Default::default()
            },
        },
    )
    .await
}

async fn status(mgr: &Addr<Manager>) -> argon::protocol::ClusterStatus {
    settled_status(mgr).await
}

async fn assigned(mgr: &Addr<Manager>, link: &mut Link) -> Vec<RunId> {
    settled_status(mgr).await;
    assign_runs(link.drain().await)
}

async fn finish(mgr: &Addr<Manager>, worker: WorkerId, run: RunId, value: i64) {
    report_run(mgr, worker, run, TaskOutcome::Done(Value::from(value))).await;
}

/// Ten submits with one key while the first runs: one id, one run; then,
/// within its `unique_for`, still that id without a run; after it, a new
/// task.
#[actix::test]
async fn ten_submits_with_one_key_while_the_first_runs_get_one_id_and_one_run() {
    let mgr = manager(100);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 4).await;
    let mut ids = Vec::new();
    for r in 1..=10 {
        ids.push(submit(&mgr, &s, r, true, "nightly", 60_000).await.unwrap());
    }
    assert!(ids.iter().all(|&id| id == ids[0]), "one id: {ids:?}");
    let runs = assigned(&mgr, &mut link).await;
    assert_eq!(runs, vec![ids[0]], "one run");
    let other = submit(&mgr, &s, 11, true, "other", 0).await.unwrap();
    assert_ne!(other, ids[0], "another key is another task");
    assert_eq!(assigned(&mgr, &mut link).await, vec![other]);

    finish(&mgr, w, ids[0], 7).await;
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(
        submit(&mgr, &s, 12, true, "nightly", 60_000).await,
        Ok(ids[0]),
        "finished within its unique_for"
    );
    assert!(assigned(&mgr, &mut link).await.is_empty());
    tokio::time::advance(Duration::from_secs(2)).await;
    let next = submit(&mgr, &s, 13, true, "nightly", 60_000).await.unwrap();
    assert_ne!(next, ids[0], "past its unique_for: a new task");
    assert_eq!(assigned(&mgr, &mut link).await, vec![next]);

    // Without unique_for the key goes with the answer.
    finish(&mgr, w, other, 1).await;
    status(&mgr).await;
    let again = submit(&mgr, &s, 14, true, "other", 0).await.unwrap();
    assert_ne!(again, other);
}

/// An attached duplicate waits for the holder and gets its outcome as its
/// own reply; after the holder finished (within its window) it gets the
/// holder's kept outcome at once.
#[actix::test]
async fn an_attached_duplicate_gets_the_holders_outcome() {
    let mgr = manager(100);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, 1).await;
    let id = submit(&mgr, &s, 1, true, "k", 60_000).await.unwrap();
    assert_eq!(submit(&mgr, &s, 2, false, "k", 60_000).await, Ok(id));
    assert_eq!(assigned(&mgr, &mut link).await, vec![id]);
    finish(&mgr, w, id, 42).await;
    let reply = within("the duplicate's reply", s.next()).await;
    assert_eq!(
        (reply.request_id, reply.outcome),
        (2, TaskOutcome::Done(Value::from(42)))
    );
    assert_eq!(submit(&mgr, &s, 3, false, "k", 60_000).await, Ok(id));
    let reply = within("the late duplicate's reply", s.next()).await;
    assert_eq!(
        (reply.request_id, reply.outcome),
        (3, TaskOutcome::Done(Value::from(42)))
    );
    assert!(assigned(&mgr, &mut link).await.is_empty(), "no second run");
}

/// A cancelled holder frees its key (it is answered, with no window); the
/// keys are bounded: past `unique_max` a new key is denied, a held one
/// still answered.
#[actix::test]
async fn keys_are_bounded_and_a_cancelled_task_frees_its_key() {
    let mgr = manager(2);
    let s = Session::start();
    register(&mgr, 1).await;
    let a = submit(&mgr, &s, 1, true, "a", 0).await.unwrap();
    let b = submit(&mgr, &s, 2, true, "b", 0).await.unwrap();
    match submit(&mgr, &s, 3, true, "c", 0).await {
        Err(Rejection::Denied { reason, .. }) => assert_eq!(reason, UNIQUE_FULL),
        other => panic!("past unique_max: {other:?}"),
    }
    assert_eq!(submit(&mgr, &s, 4, true, "b", 0).await, Ok(b));
    assert_eq!(
        within("cancel", mgr.send(CancelById { task: b }))
            .await
            .unwrap(),
        CancelResult::Cancelled
    );
    let c = submit(&mgr, &s, 5, true, "c", 0).await.unwrap();
    assert!(c != a && c != b);
}
