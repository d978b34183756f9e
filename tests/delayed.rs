//! Actor-level tests of delayed tasks (a submit with a due time): they are
//! accepted at once, wait in a bounded set of their own outside the queue
//! bound, enter their priority's queue in due order when due (at its head
//! when it is full), and can be looked up, cancelled and dropped like
//! queued tasks.
//!
//! The clock is paused. Due times are wall-clock milliseconds (the manager
//! turns them into a wait when the submit arrives), so a wait may be a few
//! milliseconds shorter than asked: checks leave 50 ms either side.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
#[cfg(feature = "http")]
use argon::actors::manager::metrics::GetMetrics;
use argon::actors::manager::overview::GetOverview;
use argon::actors::manager::schedule::SCHEDULE_FULL;
use argon::actors::manager::{CANCELLED, NOT_STARTED};
use argon::actors::{Manager, ManagerSettings};
use argon::messages::*;
use argon::protocol::{Priority, Value};
use support::manager::{
    assign_runs, register_stub, report_run, send_submit, settled_status, Link, Session,
};
use support::within;

fn manager(queue_factor: u32, scheduled_max: usize) -> Addr<Manager> {
    tokio::time::pause();
    Manager::new(ManagerSettings {
        queue_factor,
        scheduled_max,
        ..ManagerSettings::default()
    })
    .start()
}

async fn register(mgr: &Addr<Manager>, capacity: u32) -> (WorkerId, Link) {
    register_stub(mgr, "stub", capacity, &["t"]).await
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Submits task "t" (argument `arg`) as request `request_id`, due
/// `in_ms` from now when given.
async fn submit(
    mgr: &Addr<Manager>,
    to: &Session,
    request_id: u64,
    priority: Priority,
    in_ms: Option<u64>,
) -> Result<TaskId, Rejection> {
    send_submit(
        mgr,
        SubmitTask {
            session: 1,
            request_id,
            spec: TaskSpec {
                priority,
                ..TaskSpec::new("t", Value::from(request_id))
            },
            reply_to: to.recipient(),
            detach: false,
            opts: SubmitOptions {
                due_ms: in_ms.map(|ms| now_ms() + ms),
                ..Default::default()
            },
        },
    )
    .await
}

async fn status(mgr: &Addr<Manager>) -> argon::protocol::ClusterStatus {
    settled_status(mgr).await
}

/// Run ids assigned to `link` since the last look.
async fn assigned(mgr: &Addr<Manager>, link: &mut Link) -> Vec<RunId> {
    settled_status(mgr).await;
    assign_runs(link.drain().await)
}

async fn advance(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
}

async fn finish(mgr: &Addr<Manager>, worker: WorkerId, run: RunId) {
    report_run(mgr, worker, run, TaskOutcome::Done(Value::Nil)).await;
}

async fn state(mgr: &Addr<Manager>, task: TaskId) -> TaskState {
    within(
        "a result",
        mgr.send(GetResult {
            task,
            wait: false,
            session: 1,
        }),
    )
    .await
    .unwrap()
}

/// Three tasks due in 3 s, 1 s and 2 s start in due order, each at its
/// time and not before; while they wait they are counted as scheduled,
/// not queued, and a lookup by id says when each is due.
#[actix::test]
async fn scheduled_tasks_start_in_due_order_at_their_due_times() {
    let mgr = manager(3, 100);
    let s = Session::start();
    let (_, mut link) = register(&mgr, 3).await;
    let before = now_ms();
    let a = submit(&mgr, &s, 1, Priority::Normal, Some(3000))
        .await
        .unwrap();
    let b = submit(&mgr, &s, 2, Priority::Normal, Some(1000))
        .await
        .unwrap();
    let c = submit(&mgr, &s, 3, Priority::Normal, Some(2000))
        .await
        .unwrap();
    let st = status(&mgr).await;
    assert_eq!((st.scheduled, st.queued, st.in_flight), (3, 0, 0));
    match state(&mgr, a).await {
        TaskState::Scheduled(due) => assert!(
            (before + 3000..=now_ms() + 3000).contains(&due),
            "due {due}"
        ),
        other => panic!("task {a}: {other:?}"),
    }
    assert_eq!(
        within("overview", mgr.send(GetOverview))
            .await
            .unwrap()
            .scheduled,
        3
    );
    #[cfg(feature = "http")]
    {
        let metrics = within("metrics", mgr.send(GetMetrics)).await.unwrap().text;
        assert!(
            metrics.lines().any(|l| l == "argon_tasks_scheduled 3"),
            "{metrics}"
        );
    }

    let (mut order, mut clock) = (Vec::new(), 0);
    for (at, task) in [(1000, b), (2000, c), (3000, a)] {
        advance(at - 50 - clock).await;
        clock = at + 50;
        assert!(
            assigned(&mgr, &mut link).await.is_empty(),
            "task {task} started 50 ms before its due time"
        );
        advance(100).await;
        let runs = assigned(&mgr, &mut link).await;
        assert_eq!(runs.len(), 1, "one task due at {at} ms: {runs:?}");
        order.push(runs[0]);
    }
    assert_eq!(order, vec![b, c, a], "started in due order");
    assert_eq!(status(&mgr).await.scheduled, 0);
}

/// A scheduled task does not hold a place in the queue bound while it
/// waits; the scheduled set has its own bound, past which a submit with a
/// due time is denied "schedule full" with the time to the next due one.
#[actix::test]
async fn the_scheduled_set_is_bounded_apart_from_the_queue() {
    let mgr = manager(1, 2);
    let s = Session::start();
    let (_, mut link) = register(&mgr, 1).await;
    submit(&mgr, &s, 1, Priority::Normal, None).await.unwrap();
    submit(&mgr, &s, 2, Priority::Normal, None).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await.len(), 1);
    match submit(&mgr, &s, 3, Priority::Normal, None).await {
        Err(Rejection::Denied { reason, .. }) => assert_eq!(reason, "queue full"),
        other => panic!("the queue (bound 1) is full: {other:?}"),
    }
    submit(&mgr, &s, 4, Priority::Normal, Some(10_000))
        .await
        .expect("a scheduled task is taken with the queue full");
    submit(&mgr, &s, 5, Priority::Normal, Some(5_000))
        .await
        .expect("a second fits scheduled_max 2");
    match submit(&mgr, &s, 6, Priority::Normal, Some(20_000)).await {
        Err(Rejection::Denied {
            reason,
            retry_after,
        }) => {
            assert_eq!(reason, SCHEDULE_FULL);
            assert!(
                retry_after > Duration::from_millis(4900) && retry_after <= Duration::from_secs(5),
                "retry after the next one is due: {retry_after:?}"
            );
        }
        other => panic!("past scheduled_max: {other:?}"),
    }
    let st = status(&mgr).await;
    assert_eq!((st.scheduled, st.queued), (2, 1));
}

/// A task that comes due with its queue full is not denied or lost: it
/// goes to the head of its priority, past the bound, and starts before
/// the task that was queued normally; new submits are denied meanwhile.
#[actix::test]
async fn a_task_due_on_a_full_queue_waits_at_the_head_of_its_priority() {
    let mgr = manager(1, 100);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 1).await;
    let running = submit(&mgr, &s, 1, Priority::Normal, None).await.unwrap();
    let queued = submit(&mgr, &s, 2, Priority::Normal, None).await.unwrap();
    let later = submit(&mgr, &s, 3, Priority::Normal, Some(1000))
        .await
        .unwrap();
    let earlier = submit(&mgr, &s, 4, Priority::Normal, Some(900))
        .await
        .unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![running]);
    advance(1100).await;
    let st = status(&mgr).await;
    assert_eq!(
        (st.scheduled, st.queued, st.queue_limit),
        (0, 3, 1),
        "queued past the bound"
    );
    assert!(matches!(
        submit(&mgr, &s, 5, Priority::Normal, None).await,
        Err(Rejection::Denied { .. })
    ));
    let mut order = Vec::new();
    let mut run = running;
    for _ in 0..3 {
        finish(&mgr, w, run).await;
        let runs = assigned(&mgr, &mut link).await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        run = runs[0];
        order.push(run);
    }
    assert_eq!(order, vec![earlier, later, queued]);
}

/// A scheduled task can be looked up and cancelled by id, cancelled by its
/// request, and dropped when its client leaves; none of them starts.
#[actix::test]
async fn scheduled_tasks_are_cancelled_and_dropped_like_queued_ones() {
    let mgr = manager(3, 100);
    let mut s = Session::start();
    let (_, mut link) = register(&mgr, 3).await;
    let by_id = submit(&mgr, &s, 1, Priority::High, Some(1000))
        .await
        .unwrap();
    submit(&mgr, &s, 2, Priority::Normal, Some(1000))
        .await
        .unwrap();
    let gone = submit(&mgr, &s, 3, Priority::Low, Some(1000))
        .await
        .unwrap();
    assert_eq!(
        within("cancel", mgr.send(CancelById { task: by_id }))
            .await
            .unwrap(),
        CancelResult::Cancelled
    );
    mgr.do_send(CancelTask {
        session: 1,
        request_id: 2,
    });
    status(&mgr).await;
    let replies: Vec<(u64, TaskOutcome)> = s
        .drain()
        .await
        .into_iter()
        .map(|r| (r.request_id, r.outcome))
        .collect();
    assert_eq!(
        replies,
        vec![
            (1, TaskOutcome::Failed(CANCELLED.into())),
            (2, TaskOutcome::Failed(CANCELLED.into()))
        ]
    );
    assert_eq!(status(&mgr).await.scheduled, 1);
    mgr.do_send(ClientGone { session: 1 });
    assert_eq!(status(&mgr).await.scheduled, 0);
    assert_eq!(state(&mgr, gone).await, TaskState::Unknown);
    advance(2000).await;
    assert!(assigned(&mgr, &mut link).await.is_empty(), "none started");
    s.assert_none("no reply for a dropped task").await;
}

/// A due time past runs the task now; one more than a year ahead is
/// refused as invalid, and nothing is scheduled.
#[actix::test]
async fn a_past_due_time_runs_now_and_one_too_far_ahead_is_refused() {
    let mgr = manager(3, 100);
    let s = Session::start();
    let (_, mut link) = register(&mgr, 1).await;
    let id = within(
        "a submit",
        mgr.send(SubmitTask {
            session: 1,
            request_id: 1,
            spec: TaskSpec::new("t", Value::Nil),
            reply_to: s.recipient(),
            detach: false,
            opts: SubmitOptions {
                due_ms: Some(now_ms() - 60_000),
                ..Default::default()
            },
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .task;
    assert_eq!(assigned(&mgr, &mut link).await, vec![id]);
    let year = 366 * 24 * 3600 * 1000;
    match submit(&mgr, &s, 2, Priority::Normal, Some(year)).await {
        Err(Rejection::Invalid(why)) => assert!(why.contains("at most 365 days"), "{why}"),
        other => panic!("a year ahead: {other:?}"),
    }
    assert_eq!(status(&mgr).await.scheduled, 0);
}

/// A shutdown answers a scheduled task as not started, as it does a queued
/// one (a manager without a task store cannot keep it); it never starts.
#[actix::test]
async fn a_shutdown_answers_scheduled_tasks_as_not_started() {
    let mgr = manager(3, 100);
    let mut s = Session::start();
    let (_, mut link) = register(&mgr, 1).await;
    submit(&mgr, &s, 1, Priority::Normal, Some(1000))
        .await
        .unwrap();
    let report = within(
        "the shutdown",
        mgr.send(Shutdown {
            deadline: Duration::ZERO,
        }),
    )
    .await
    .unwrap();
    assert_eq!(report.not_started, 1);
    let reply = within("the reply", s.next()).await;
    assert_eq!(
        (reply.request_id, reply.outcome),
        (1, TaskOutcome::Failed(NOT_STARTED.into()))
    );
    advance(2000).await;
    assert!(link.drain().await.is_empty(), "it never started");
}
