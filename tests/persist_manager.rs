//! Actor-level tests of durable mode: a `Manager` over a task store
//! (`Manager::with_store`) recovers what an earlier manager over the same
//! store left: queued tasks by priority and order, running runs attached when
//! their worker claims them, unclaimed ones requeued or failed after the
//! recovery grace; retries used survive, so a recovered task gets only those
//! left; a corrupt store is an error; a store that falls behind denies
//! submits.
//!
//! The clock runs for real here: the store's writer thread commits to disk.
//! Each life of a manager runs in its own actix system on its own thread;
//! when that system ends, its manager is dropped without answering anything,
//! as in a crash, and the store is let go.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use actix::prelude::*;
use argon::actors::manager::journal::STORE_BUSY;
use argon::actors::manager::{RedbStore, StoreError};
use argon::actors::{Manager, ManagerSettings};
use argon::messages::*;
use argon::protocol::{DeadList, Priority, Value};
use support::{within, Stub, WAIT};

type Session = Stub<TaskReply>;
type Link = Stub<WorkerOrder>;

const SESSION: SessionId = 7;

fn settings(grace: Duration) -> ManagerSettings {
    ManagerSettings {
        queue_factor: 10,
        // No promotion by aging: the clock runs for real here.
        aging_factor: 1e9,
        recovery_grace: grace,
        ..ManagerSettings::default()
    }
}

/// Runs `f` in a new actix system on a new thread, and ends the system.
fn life<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    std::thread::spawn(move || actix::System::new().block_on(f()))
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

async fn manager_over(dir: &Path, grace: Duration) -> Addr<Manager> {
    Manager::with_store(settings(grace), open_blocking(dir)).start()
}

async fn register(
    mgr: &Addr<Manager>,
    capacity: u32,
    running: Vec<(RunId, SlotIndex)>,
) -> (WorkerId, Link) {
    let link = Link::start();
    let id = within(
        "registration",
        mgr.send(RegisterWorker {
            address: "stub".into(),
            capacity,
            tasks: vec!["t".into()],
            eval: false,
            running,
            link: link.recipient(),
            load: None,
            finished: vec![],
            finished_dropped: 0,
        }),
    )
    .await
    .expect("manager alive")
    .expect("worker accepted");
    (id, link)
}

fn spec(arg: i64, priority: Priority, attempts: u32) -> TaskSpec {
    TaskSpec {
        priority,
        attempts,
        ..TaskSpec::new("t", Value::from(arg))
    }
}

async fn submit(mgr: &Addr<Manager>, to: &Session, request_id: u64, spec: TaskSpec) -> TaskId {
    let accepted = within(
        "a submit to be answered",
        mgr.send(SubmitTask {
            session: SESSION,
            request_id,
            spec,
            reply_to: to.recipient(),
            detach: true,
            opts: Default::default(),
        }),
    )
    .await
    .expect("manager alive")
    .expect("accepted");
    assert!(accepted.durable, "a manager with a store says so");
    accepted.task
}

/// The next assign `link` gets: (run, slot, argument).
async fn next_assign(link: &mut Link) -> (RunId, SlotIndex, Value) {
    loop {
        if let WorkerOrder::Assign {
            run, slot, args, ..
        } = link.next().await
        {
            return (run, slot, args);
        }
    }
}

async fn finish(mgr: &Addr<Manager>, worker: WorkerId, run: RunId, value: Value) {
    within(
        "RunFinished to be handled",
        mgr.send(RunFinished {
            worker,
            run,
            outcome: TaskOutcome::Done(value),
        }),
    )
    .await
    .expect("manager alive");
}

async fn result(mgr: &Addr<Manager>, task: TaskId, wait: bool) -> TaskState {
    within(
        "a result",
        mgr.send(GetResult {
            task,
            wait,
            session: 99,
        }),
    )
    .await
    .expect("manager alive")
}

/// A first manager: one worker slot runs task `a`; `queued` wait behind it
/// with their priorities. Returns their ids (a first). The last accept is
/// committed, so every record before it is too.
fn first_life(dir: &Path, queued: &'static [(i64, Priority)], attempts: u32) -> Vec<TaskId> {
    let dir = dir.to_path_buf();
    life(move || async move { first_life_in(&dir, queued, attempts).await })
}

async fn first_life_in(dir: &Path, queued: &[(i64, Priority)], attempts: u32) -> Vec<TaskId> {
    let mgr = manager_over(dir, WAIT).await;
    let session = Session::start();
    let (_, mut link) = register(&mgr, 1, vec![]).await;
    let mut ids = vec![submit(&mgr, &session, 0, spec(0, Priority::Normal, attempts)).await];
    let (run, _, _) = next_assign(&mut link).await;
    assert_eq!(run, ids[0], "a first run goes by its task's id");
    for (i, &(arg, p)) in queued.iter().enumerate() {
        ids.push(submit(&mgr, &session, i as u64 + 1, spec(arg, p, attempts)).await);
    }
    // The manager goes away as in a crash: nothing is answered or cleaned.
    drop(mgr);
    ids
}

#[test]
fn queued_tasks_come_back_in_priority_then_order_and_a_claimed_run_is_attached() {
    let dir = tempfile::tempdir().unwrap();
    static QUEUED: [(i64, Priority); 5] = [
        (1, Priority::Low),
        (2, Priority::High),
        (3, Priority::Normal),
        (4, Priority::High),
        (5, Priority::Normal),
    ];
    let queued = &QUEUED;
    let ids = first_life(dir.path(), queued, 1);
    let (path, ids2) = (dir.path().to_path_buf(), ids.clone());
    life(move || async move { second_life(&path, &ids2, queued).await });
    let path = dir.path().to_path_buf();
    life(move || async move { third_life(&path, &ids).await });
}

/// Recovers the store [`first_life`] left, runs it all to the end.
async fn second_life(dir: &Path, ids: &[TaskId], queued: &[(i64, Priority)]) {
    let running = ids[0];
    let mgr = manager_over(dir, WAIT).await;
    for &id in ids {
        let expected = if id == running {
            TaskState::Running
        } else {
            TaskState::Queued
        };
        assert_eq!(result(&mgr, id, false).await, expected, "task {id}");
    }
    // The worker comes back still running the first task in slot 0.
    let (worker, mut link) = register(&mgr, 1, vec![(running, 0)]).await;
    let orders = link.drain().await;
    assert!(
        orders.is_empty(),
        "a claimed run is neither cancelled nor is its slot reused: {orders:?}"
    );
    assert_eq!(result(&mgr, running, false).await, TaskState::Running);
    finish(&mgr, worker, running, Value::from("kept")).await;
    assert_eq!(
        result(&mgr, running, true).await,
        TaskState::finished(TaskOutcome::Done(Value::from("kept"))),
        "the attached run's result is kept for collection"
    );
    // Then the queue, high first, each level in acceptance order.
    let mut order = Vec::new();
    for _ in 0..queued.len() {
        let (run, _, arg) = next_assign(&mut link).await;
        order.push(arg.as_i64().unwrap());
        finish(&mgr, worker, run, arg).await;
    }
    assert_eq!(order, vec![2, 4, 3, 5, 1]);
    for (&id, &(arg, _)) in ids[1..].iter().zip(queued) {
        assert_eq!(
            result(&mgr, id, true).await,
            TaskState::finished(TaskOutcome::Done(Value::from(arg)))
        );
    }
}

/// Outcomes are kept, nothing runs again, ids go on.
async fn third_life(dir: &Path, ids: &[TaskId]) {
    let mgr = manager_over(dir, WAIT).await;
    let (_, mut link) = register(&mgr, 1, vec![]).await;
    assert_eq!(
        result(&mgr, ids[1], false).await,
        TaskState::finished(TaskOutcome::Done(Value::from(1)))
    );
    link.assert_none("nothing left to run").await;
    let session = Session::start();
    let new = submit(&mgr, &session, 50, spec(9, Priority::Normal, 1)).await;
    assert!(
        ids.iter().all(|&id| new > id),
        "id {new} reused or below the earlier ones {ids:?}"
    );
}

const GRACE: Duration = Duration::from_millis(300);

/// A recovered run no worker claims within the grace is queued again
/// without spending an attempt (whether it ran is unknown; a manager crash
/// must not fail a task): with one attempt it still runs once more, and
/// that run's loss then spends it.
#[test]
fn an_unclaimed_run_is_queued_again_after_the_grace_without_spending_an_attempt() {
    for attempts in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let ids = first_life(dir.path(), &[], attempts);
        let path = dir.path().to_path_buf();
        life(move || async move { requeued_after_grace(&path, ids[0], attempts).await });
    }
}

async fn requeued_after_grace(dir: &Path, task: TaskId, attempts: u32) {
    let grace = GRACE;
    let mgr = manager_over(dir, grace).await;
    let began = Instant::now();
    let (worker, mut link) = register(&mgr, 1, vec![]).await;
    let (run, _, arg) = next_assign(&mut link).await;
    assert!(
        began.elapsed() >= grace,
        "requeued only after the grace ({:?})",
        began.elapsed()
    );
    assert_eq!(arg, Value::from(0));
    assert_ne!(run, task, "the new run has a fresh id");
    if attempts == 1 {
        // The run after the restart is the task's one attempt: losing it
        // fails the task.
        within("WorkerLost", mgr.send(WorkerLost { worker }))
            .await
            .unwrap();
        assert_eq!(
            result(&mgr, task, true).await,
            TaskState::finished(TaskOutcome::Failed("worker lost before completion".into()))
        );
        return;
    }
    finish(&mgr, worker, run, Value::from("again")).await;
    assert_eq!(
        result(&mgr, task, true).await,
        TaskState::finished(TaskOutcome::Done(Value::from("again")))
    );
}

/// Recovered tasks wait for a worker that provides them for the provider
/// grace (at least the recovery grace), counted from the restart: a worker
/// of another task joining and leaving meanwhile does not fail them, and
/// after the grace they fail saying how long they waited.
#[test]
fn recovered_tasks_wait_for_a_provider_for_the_grace_then_fail() {
    static QUEUED: [(i64, Priority); 2] = [(1, Priority::Normal), (2, Priority::Normal)];
    let dir = tempfile::tempdir().unwrap();
    let ids = first_life(dir.path(), &QUEUED, 1);
    let path = dir.path().to_path_buf();
    life(move || async move {
        let grace = Duration::from_millis(600);
        let mgr = Manager::with_store(
            ManagerSettings {
                provider_grace: Some(grace),
                ..settings(GRACE)
            },
            open_blocking(&path),
        )
        .start();
        let began = Instant::now();
        let st = within("status", mgr.send(GetStatus)).await.unwrap();
        assert_eq!((st.awaiting_provider, st.queued), (2, 0), "{st:?}");

        let other = Link::start();
        let worker = within(
            "registration",
            mgr.send(RegisterWorker {
                address: "stub".into(),
                capacity: 1,
                tasks: vec!["u".into()],
                eval: false,
                running: vec![],
                link: other.recipient(),
                load: None,
                finished: vec![],
                finished_dropped: 0,
            }),
        )
        .await
        .unwrap()
        .expect("worker accepted");
        within("WorkerLost", mgr.send(WorkerLost { worker }))
            .await
            .unwrap();
        assert_eq!(result(&mgr, ids[1], false).await, TaskState::Queued);

        // The unclaimed run is queued again after the recovery grace, into
        // its kind's window, and fails with the queued ones.
        for &id in &ids {
            assert_eq!(
                result(&mgr, id, true).await,
                TaskState::finished(TaskOutcome::Failed(
                    "no worker provides task t: waited 600ms for one".into()
                ))
            );
        }
        assert!(began.elapsed() >= grace, "{:?}", began.elapsed());
    });
}

#[actix::test]
async fn a_worker_claiming_an_unknown_run_has_it_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mgr = manager_over(dir.path(), WAIT).await;
    let (_, mut link) = register(&mgr, 2, vec![(12_345, 1)]).await;
    let orders = link.drain().await;
    assert_eq!(
        orders,
        vec![WorkerOrder::Cancel {
            run: 12_345,
            slot: 1
        }]
    );
}

#[actix::test]
async fn a_corrupt_store_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir
        .path()
        .join(argon::actors::manager::store::redb::STORE_FILE);
    std::fs::write(&file, vec![0xa5u8; 8192]).unwrap();
    let err: StoreError = match RedbStore::open(dir.path()) {
        Ok(_) => panic!("a corrupt store opened"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    // The file is left as it was: nothing is discarded.
    assert_eq!(std::fs::read(&file).unwrap(), vec![0xa5u8; 8192]);
}

#[actix::test]
async fn a_store_behind_its_bound_denies_submits_as_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_blocking(dir.path());
    let mgr = Manager::with_store(
        ManagerSettings {
            // The first submit makes two records (accept, start).
            store_backlog: 2,
            ..settings(WAIT)
        },
        store,
    )
    .start();
    let session = Session::start();
    register(&mgr, 4, vec![]).await;
    // Sent together: the first's records are not committed when the others
    // arrive.
    let asks: Vec<_> = (0..3)
        .map(|i| {
            mgr.send(SubmitTask {
                session: SESSION,
                request_id: i,
                spec: spec(i as i64, Priority::Normal, 1),
                reply_to: session.recipient(),
                detach: true,
                opts: Default::default(),
            })
        })
        .collect();
    let mut answers = Vec::new();
    for a in asks {
        answers.push(within("a submit answer", a).await.expect("manager alive"));
    }
    assert!(answers[0].is_ok(), "{answers:?}");
    for a in &answers[1..] {
        match a {
            Err(Rejection::Denied { reason, .. }) => assert_eq!(reason, STORE_BUSY),
            other => panic!("expected a store-busy deny, got {other:?}"),
        }
    }
    // Once committed, submits are accepted again.
    submit(&mgr, &session, 10, spec(10, Priority::Normal, 1)).await;
}

#[test]
fn a_graceful_stop_keeps_queued_tasks_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (running, kept) = life(move || async move {
        let mgr = manager_over(&path, WAIT).await;
        let mut session = Session::start();
        let (worker, mut link) = register(&mgr, 1, vec![]).await;
        let to = session.recipient();
        let ask = |request_id: u64, arg: i64| SubmitTask {
            session: SESSION,
            request_id,
            spec: spec(arg, Priority::Normal, 1),
            reply_to: to.clone(),
            detach: false,
            opts: Default::default(),
        };
        let running = within("accept", mgr.send(ask(1, 1)))
            .await
            .unwrap()
            .unwrap()
            .task;
        let kept = within("accept", mgr.send(ask(2, 2)))
            .await
            .unwrap()
            .unwrap()
            .task;
        let (run, _, _) = next_assign(&mut link).await;
        let stopped = mgr.send(Shutdown {
            deadline: Duration::from_secs(5),
        });
        let reply = session.next().await;
        assert_eq!(reply.request_id, 2);
        assert_eq!(
            reply.outcome,
            TaskOutcome::Failed(format!(
                "manager shutting down: task {kept} kept for the next start"
            ))
        );
        finish(&mgr, worker, run, Value::from("one")).await;
        let report = within("the drain", stopped).await.unwrap();
        assert_eq!(report.not_started, 1);
        let reply = session.next().await;
        assert_eq!(
            (reply.request_id, reply.outcome),
            (1, TaskOutcome::Done(Value::from("one")))
        );
        (running, kept)
    });
    let path = dir.path().to_path_buf();
    life(move || async move {
        let mgr = manager_over(&path, WAIT).await;
        assert_eq!(result(&mgr, running, false).await, TaskState::Unknown);
        assert_eq!(result(&mgr, kept, false).await, TaskState::Queued);
        let (worker, mut link) = register(&mgr, 1, vec![]).await;
        let (run, _, arg) = next_assign(&mut link).await;
        assert_eq!(arg, Value::from(2));
        finish(&mgr, worker, run, Value::from("two")).await;
        assert_eq!(
            result(&mgr, kept, true).await,
            TaskState::finished(TaskOutcome::Done(Value::from("two"))),
            "a kept task runs after the restart, detached"
        );
    });
}

/// A client that will wait on its task by id after reconnecting
/// (`reattach`, from `want_id`) is told nothing when a graceful stop keeps
/// its queued task for the next start: the task's one reply comes from
/// there, to the client that waits on its id again.
#[test]
fn a_kept_task_whose_client_reattaches_gets_no_reply_at_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let kept = life(move || async move {
        let mgr = manager_over(&path, WAIT).await;
        let mut session = Session::start();
        let (worker, mut link) = register(&mgr, 1, vec![]).await;
        let to = session.recipient();
        let ask = |request_id: u64, arg: i64| SubmitTask {
            session: SESSION,
            request_id,
            spec: spec(arg, Priority::Normal, 1),
            reply_to: to.clone(),
            detach: false,
            opts: SubmitOptions {
                reattach: true,
                ..Default::default()
            },
        };
        within("accept", mgr.send(ask(1, 1)))
            .await
            .unwrap()
            .unwrap();
        let kept = within("accept", mgr.send(ask(2, 2)))
            .await
            .unwrap()
            .unwrap()
            .task;
        let (run, _, _) = next_assign(&mut link).await;
        let stopped = mgr.send(Shutdown {
            deadline: Duration::from_secs(5),
        });
        finish(&mgr, worker, run, Value::from("one")).await;
        let report = within("the drain", stopped).await.unwrap();
        assert_eq!(report.not_started, 1);
        let reply = session.next().await;
        assert_eq!(
            (reply.request_id, reply.outcome),
            (1, TaskOutcome::Done(Value::from("one"))),
            "the running task's reply, and none for the kept one"
        );
        session.assert_none("no reply for the kept task").await;
        kept
    });
    let path = dir.path().to_path_buf();
    life(move || async move {
        let mgr = manager_over(&path, WAIT).await;
        assert_eq!(result(&mgr, kept, false).await, TaskState::Queued);
    });
}

/// With a store, a task still running at the drain's deadline is not
/// failed: its run goes on uncancelled, its client is told it was kept,
/// and the next start finds it running, for its worker to claim.
#[test]
fn a_task_running_at_the_drain_deadline_is_kept_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (task, run) = life(move || async move {
        let mgr = manager_over(&path, WAIT).await;
        let mut session = Session::start();
        let (_, mut link) = register(&mgr, 1, vec![]).await;
        let attached = SubmitTask {
            session: SESSION,
            request_id: 1,
            spec: spec(1, Priority::Normal, 1),
            reply_to: session.recipient(),
            detach: false,
            opts: Default::default(),
        };
        let task = within("accept", mgr.send(attached))
            .await
            .unwrap()
            .unwrap()
            .task;
        let (run, _, _) = next_assign(&mut link).await;
        let report = within(
            "the drain",
            mgr.send(Shutdown {
                deadline: Duration::from_millis(50),
            }),
        )
        .await
        .unwrap();
        assert_eq!(
            (report.running, report.kept_running, report.cancelled),
            (1, 1, 0)
        );
        let reply = session.next().await;
        assert_eq!(
            reply.outcome,
            TaskOutcome::Failed(format!(
                "manager shutting down: task {task} kept for the next start"
            ))
        );
        link.assert_none("the run is not cancelled").await;
        (task, run)
    });
    let path = dir.path().to_path_buf();
    life(move || async move {
        let mgr = manager_over(&path, WAIT).await;
        assert_eq!(result(&mgr, task, false).await, TaskState::Running);
        let (worker, _link) = register(&mgr, 1, vec![(run, 0)]).await;
        finish(&mgr, worker, run, Value::from("done")).await;
        assert_eq!(
            result(&mgr, task, true).await,
            TaskState::finished(TaskOutcome::Done(Value::from("done")))
        );
    });
}

#[test]
fn answered_tasks_and_expired_results_leave_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let ttl = Duration::from_millis(200);
    life(move || async move {
        let store = open_blocking(&path);
        let mgr = Manager::with_store(
            ManagerSettings {
                result_ttl: ttl,
                ..settings(WAIT)
            },
            store,
        )
        .start();
        let session = Session::start();
        let (worker, mut link) = register(&mgr, 1, vec![]).await;
        let attached = within(
            "accept",
            mgr.send(SubmitTask {
                session: SESSION,
                request_id: 1,
                spec: spec(1, Priority::Normal, 1),
                reply_to: session.recipient(),
                detach: false,
                opts: Default::default(),
            }),
        )
        .await
        .unwrap()
        .unwrap()
        .task;
        let (run, _, _) = next_assign(&mut link).await;
        finish(&mgr, worker, run, Value::from(1)).await;
        let detached = submit(&mgr, &session, 2, spec(2, Priority::Normal, 1)).await;
        let (run, _, _) = next_assign(&mut link).await;
        finish(&mgr, worker, run, Value::from(2)).await;
        assert_eq!(
            result(&mgr, detached, true).await,
            TaskState::finished(TaskOutcome::Done(Value::from(2)))
        );
        assert_eq!(result(&mgr, attached, false).await, TaskState::Unknown);
    });
    let store = open_blocking(dir.path());
    assert_eq!(store.task_count(), 0, "answered tasks leave no record");
    assert_eq!(store.result_count(), 1, "the kept result is recorded");
    drop(store);

    // The ttl passes, then the manager's sweep (at least every second)
    // lets the result go, and its record with it.
    let path = dir.path().to_path_buf();
    life(move || async move {
        let mgr = Manager::with_store(
            ManagerSettings {
                result_ttl: ttl,
                ..settings(WAIT)
            },
            open_blocking(&path),
        )
        .start();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // A round trip, so the sweep's deletion has been sent.
        register(&mgr, 1, vec![]).await;
    });
    let store = open_blocking(dir.path());
    assert_eq!(
        store.result_count(),
        0,
        "an expired result leaves no record"
    );
}

/// Opens the store in `dir`, retrying while the writer thread of a manager
/// whose life ended still holds it.
fn open_blocking(dir: &Path) -> RedbStore {
    let deadline = Instant::now() + WAIT;
    loop {
        match RedbStore::open(dir) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("store does not open: {e}"),
        }
    }
}

/// Settings whose retries wait exactly `backoff` (no jitter).
fn retrying(grace: Duration, backoff: Duration) -> ManagerSettings {
    ManagerSettings {
        retry_base: backoff,
        retry_max: backoff,
        retry_jitter: |d| d,
        ..settings(grace)
    }
}

fn with_retries(arg: i64, attempts: u32, retries: u32) -> TaskSpec {
    TaskSpec {
        retries: Some(retries),
        ..spec(arg, Priority::Normal, attempts)
    }
}

async fn fail(mgr: &Addr<Manager>, worker: WorkerId, run: RunId, error: &str) {
    within(
        "RunFinished to be handled",
        mgr.send(RunFinished {
            worker,
            run,
            outcome: TaskOutcome::Failed(error.into()),
        }),
    )
    .await
    .expect("manager alive");
}

async fn dead(mgr: &Addr<Manager>) -> DeadList {
    within(
        "the dead list",
        mgr.send(GetDeadList {
            limit: 100,
            max_bytes: 1 << 20,
        }),
    )
    .await
    .expect("manager alive")
}

/// After a restart the task gets only the retries it had left: `runs`
/// more runs, each failing with "boom N"; then it is answered with the
/// last error and listed as dead with all its retries used.
async fn fails_after_runs(
    mgr: &Addr<Manager>,
    link: &mut Link,
    worker: WorkerId,
    task: TaskId,
    runs: usize,
) {
    for n in 1..=runs {
        let (run, _, _) = next_assign(link).await;
        fail(mgr, worker, run, &format!("boom {n}")).await;
    }
    let last = format!("boom {runs}");
    assert_eq!(
        result(mgr, task, true).await,
        TaskState::finished(TaskOutcome::Failed(last.clone()))
    );
    link.assert_none("no run past the retries asked for").await;
    let dead = dead(mgr).await;
    let entries: Vec<_> = dead
        .tasks
        .iter()
        .map(|t| (t.task_id, t.retries, t.error.as_str()))
        .collect();
    assert_eq!(entries, vec![(task, 2, last.as_str())]);
}

// When a life ends, the writer thread still commits what its manager sent
// before the store can be opened again; so every record sent is recovered.

#[test]
fn a_task_waiting_for_its_retry_comes_back_queued_with_its_retries_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let task = life(move || async move {
        // A long backoff: the task still waits for its retry when the
        // manager goes.
        let settings = retrying(WAIT, Duration::from_secs(3600));
        let mgr = Manager::with_store(settings, open_blocking(&path)).start();
        let session = Session::start();
        let (worker, mut link) = register(&mgr, 1, vec![]).await;
        let task = submit(&mgr, &session, 1, with_retries(0, 1, 2)).await;
        let (run, _, _) = next_assign(&mut link).await;
        fail(&mgr, worker, run, "boom 0").await;
        assert_eq!(result(&mgr, task, false).await, TaskState::Queued);
        task
    });
    let path = dir.path().to_path_buf();
    life(move || async move {
        let settings = retrying(WAIT, Duration::from_millis(20));
        let mgr = Manager::with_store(settings, open_blocking(&path)).start();
        assert_eq!(
            result(&mgr, task, false).await,
            TaskState::Queued,
            "queued again, not waiting for a worker to claim a run"
        );
        let (worker, mut link) = register(&mgr, 1, vec![]).await;
        // One retry was used: the retried run and one more.
        fails_after_runs(&mgr, &mut link, worker, task, 2).await;
    });
}

#[test]
fn a_retry_running_at_the_crash_keeps_its_retries_used_and_its_own_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let task = life(move || async move {
        let settings = retrying(WAIT, Duration::from_millis(10));
        let mgr = Manager::with_store(settings, open_blocking(&path)).start();
        let session = Session::start();
        let (worker, mut link) = register(&mgr, 1, vec![]).await;
        let task = submit(&mgr, &session, 1, with_retries(0, 2, 2)).await;
        let (run, _, _) = next_assign(&mut link).await;
        fail(&mgr, worker, run, "boom 0").await;
        // The first retry starts; the manager goes while it runs.
        next_assign(&mut link).await;
        assert_eq!(result(&mgr, task, false).await, TaskState::Running);
        task
    });
    let path = dir.path().to_path_buf();
    life(move || async move {
        let settings = retrying(GRACE, Duration::from_millis(20));
        let mgr = Manager::with_store(settings, open_blocking(&path)).start();
        assert_eq!(result(&mgr, task, false).await, TaskState::Running);
        // Its worker does not claim the run. The lost run spent one of the
        // retry's two attempts (not both runs so far): requeued after the
        // grace, then it has one retry left.
        let (worker, mut link) = register(&mgr, 1, vec![]).await;
        fails_after_runs(&mgr, &mut link, worker, task, 2).await;
    });
}

/// A store that takes records until it fails: what a full or broken disk
/// looks like to the manager.
struct FailingStore {
    left: usize,
}

impl argon::actors::manager::TaskStore for FailingStore {
    fn durable(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "task store under test".into()
    }

    fn take_recovered(&mut self) -> argon::actors::manager::store::Recovered {
        Default::default()
    }

    fn start(&mut self, _: argon::actors::manager::store::CommitSink) -> Result<(), StoreError> {
        Ok(())
    }

    fn record(&mut self, _: argon::actors::manager::store::Record) -> Result<(), StoreError> {
        if self.left == 0 {
            return Err(StoreError {
                path: "/nowhere".into(),
                what: "no space left on device".into(),
            });
        }
        self.left -= 1;
        Ok(())
    }

    fn close(&mut self) {}
}

/// A store that fails while the manager runs stops the manager with an
/// error its owner can read (the binary exits with it): the library never
/// ends the process itself.
#[actix::test]
async fn a_failing_store_stops_the_manager_with_its_error() {
    let manager = Manager::with_store(settings(WAIT), FailingStore { left: 0 });
    let mut failure = manager.failure();
    let mgr = manager.start();
    let (_, _link) = register(&mgr, 1, vec![]).await;
    let session = Session::start();
    let _ = mgr
        .send(SubmitTask {
            session: SESSION,
            request_id: 1,
            spec: spec(1, Priority::Normal, 1),
            reply_to: session.recipient(),
            detach: true,
            opts: Default::default(),
        })
        .await;
    let why = within("the failure", failure.wait_for(Option::is_some))
        .await
        .expect("the manager says why")
        .clone()
        .unwrap_or_default();
    assert!(why.contains("no space left on device"), "{why}");
    within("the manager to stop", async {
        while mgr.connected() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// A run that ended while its worker had no manager is handed over when the
/// worker registers again: the recovered task takes that outcome, once, and
/// is not run again. An outcome for a run no task waits for is let go.
#[test]
fn an_outcome_handed_over_at_registration_is_its_recovered_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let ids = first_life(dir.path(), &[(1, Priority::Normal)], 1);
    let path = dir.path().to_path_buf();
    life(move || async move {
        let mgr = manager_over(&path, WAIT).await;
        assert_eq!(result(&mgr, ids[0], false).await, TaskState::Running);
        let link = Link::start();
        within(
            "registration",
            mgr.send(RegisterWorker {
                address: "stub".into(),
                capacity: 1,
                tasks: vec!["t".into()],
                eval: false,
                running: vec![],
                link: link.recipient(),
                load: None,
                finished: vec![
                    (ids[0], TaskOutcome::Done(Value::from("kept"))),
                    (u64::MAX - 7, TaskOutcome::Done(Value::from("stray"))),
                ],
                finished_dropped: 2,
            }),
        )
        .await
        .unwrap()
        .expect("worker accepted");
        assert_eq!(
            result(&mgr, ids[0], true).await,
            TaskState::finished(TaskOutcome::Done(Value::from("kept")))
        );
        // The queued task runs; the handed-over one does not run again.
        let mut link = link;
        let (_, _, arg) = next_assign(&mut link).await;
        assert_eq!(arg, Value::from(1));
        link.assert_none("no second run of the handed-over task")
            .await;
    });
}
