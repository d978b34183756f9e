//! Actor-level tests of retries on failure and the dead list: a failing
//! task is run again on a doubling backoff until its retries are used, then
//! answered with its error and listed as dead; waiting retries hold places
//! in the queue bound, can be cancelled and are listed on the dashboard's
//! overview; the dead list is bounded.
//!
//! The clock is paused and the jitter is the identity (a settings seam), so
//! the backoffs are exact: a retry does not start a millisecond before its
//! delay, and has started a millisecond after it (timers fire on whole
//! milliseconds).

mod support;

use std::time::Duration;

use actix::prelude::*;
#[cfg(feature = "http")]
use argon::actors::manager::metrics::GetMetrics;
use argon::actors::manager::overview::{GetOverview, Overview, OVERVIEW_MAX_RETRYING};
use argon::actors::{Manager, ManagerSettings};
use argon::messages::*;
use argon::protocol::{DeadList, Value};
use support::manager::{register_stub, report_run};
use support::{within, Stub};

type Session = Stub<TaskReply>;
type Link = Stub<WorkerOrder>;

/// A manager on a paused clock whose retries wait exactly their planned
/// backoff (1 s, 2 s, 4 s, ... up to 60 s).
fn manager(queue_factor: u32, dead_max: usize) -> Addr<Manager> {
    tokio::time::pause();
    Manager::new(ManagerSettings {
        queue_factor,
        dead_max,
        retry_jitter: |d| d,
        ..ManagerSettings::default()
    })
    .start()
}

async fn register(mgr: &Addr<Manager>, tasks: &[&str]) -> (WorkerId, Link) {
    register_stub(mgr, "stub", 1, tasks).await
}

fn task(name: &str, retries: Option<u32>) -> TaskSpec {
    TaskSpec {
        retries,
        ..TaskSpec::new(name, Value::from(name))
    }
}

async fn submit(
    mgr: &Addr<Manager>,
    to: &Session,
    request_id: u64,
    spec: TaskSpec,
) -> Result<TaskId, Rejection> {
    within(
        "a submit to be answered",
        mgr.send(SubmitTask {
            session: 1,
            request_id,
            spec,
            reply_to: to.recipient(),
            detach: false,
            opts: Default::default(),
        }),
    )
    .await
    .unwrap()
    .map(|a| a.task)
}

async fn fail(mgr: &Addr<Manager>, worker: WorkerId, run: RunId, error: &str) {
    report_run(mgr, worker, run, TaskOutcome::Failed(error.into())).await;
}

/// Run ids assigned to `link` since the last look. The status round trip
/// first lets the manager handle what is due.
async fn assigned(mgr: &Addr<Manager>, link: &mut Link) -> Vec<RunId> {
    status(mgr).await;
    link.drain()
        .await
        .into_iter()
        .filter_map(|o| match o {
            WorkerOrder::Assign { run, .. } => Some(run),
            WorkerOrder::Cancel { .. } => None,
        })
        .collect()
}

async fn replies(mgr: &Addr<Manager>, s: &mut Session) -> Vec<(u64, TaskOutcome)> {
    status(mgr).await;
    s.drain()
        .await
        .into_iter()
        .map(|r| (r.request_id, r.outcome))
        .collect()
}

async fn status(mgr: &Addr<Manager>) -> argon::protocol::ClusterStatus {
    within("status", mgr.send(GetStatus)).await.unwrap()
}

async fn dead(mgr: &Addr<Manager>) -> DeadList {
    within(
        "the dead list",
        mgr.send(GetDeadList {
            limit: 1000,
            max_bytes: 1 << 20,
        }),
    )
    .await
    .unwrap()
}

async fn overview(mgr: &Addr<Manager>) -> Overview {
    within("the overview", mgr.send(GetOverview)).await.unwrap()
}

/// `(task id, retry, retries, due in ms)` of each listed waiting retry.
fn listed(o: &Overview) -> Vec<(TaskId, u32, u32, u64)> {
    o.retrying_list
        .iter()
        .map(|r| (r.task_id, r.retry, r.retries, r.due_in_ms))
        .collect()
}

async fn advance(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
}

/// Advances the clock by `before` ms and checks nothing started, then by
/// 2 ms more (the timer wheel fires on whole milliseconds, rounding up) and
/// returns the one run that started then.
async fn restarts_after(mgr: &Addr<Manager>, link: &mut Link, before: u64) -> RunId {
    advance(before).await;
    assert_eq!(
        assigned(mgr, link).await,
        Vec::<RunId>::new(),
        "retry started before its backoff of {}ms",
        before + 1
    );
    advance(2).await;
    let runs = assigned(mgr, link).await;
    let st = status(mgr).await;
    assert_eq!(
        runs.len(),
        1,
        "retry not started at {}ms: {runs:?}; retrying {} queued {}",
        before + 2,
        st.retrying,
        st.queued,
    );
    runs[0]
}

/// Retries 2: three runs, 1 s then 2 s apart; the third failure is the
/// task's answer, and the task is on the dead list with 2 retries used.
#[actix::test]
async fn a_failing_task_runs_once_per_retry_on_a_doubling_backoff_then_is_dead() {
    let mgr = manager(3, 10);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, &["t"]).await;
    let id = submit(&mgr, &s, 1, task("t", Some(2))).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![id]);

    fail(&mgr, w, id, "boom 1").await;
    assert!(replies(&mgr, &mut s).await.is_empty(), "not answered yet");
    let st = status(&mgr).await;
    assert_eq!((st.retrying, st.queued), (1, 0));
    #[cfg(feature = "http")]
    {
        let metrics = within("metrics", mgr.send(GetMetrics)).await.unwrap().text;
        for line in ["argon_tasks_retrying 1", "argon_task_retries_total 1"] {
            assert!(metrics.lines().any(|l| l == line), "no {line}:\n{metrics}");
        }
    }
    let second = restarts_after(&mgr, &mut link, 999).await;
    assert_ne!(second, id, "a retry runs under a fresh run id");
    assert_eq!(status(&mgr).await.retrying, 0);

    fail(&mgr, w, second, "boom 2").await;
    assert!(replies(&mgr, &mut s).await.is_empty());
    let third = restarts_after(&mgr, &mut link, 1999).await;

    fail(&mgr, w, third, "boom 3").await;
    assert_eq!(
        replies(&mgr, &mut s).await,
        vec![(1, TaskOutcome::Failed("boom 3".into()))],
        "answered once, with the last error"
    );
    advance(60_000).await;
    assert!(assigned(&mgr, &mut link).await.is_empty(), "no fourth run");

    let list = dead(&mgr).await;
    assert_eq!((list.total, list.truncated), (1, false));
    let entry = &list.tasks[0];
    assert_eq!(
        (entry.task_id, entry.task.as_str(), entry.retries),
        (id, "t", 2)
    );
    assert_eq!(entry.error, "boom 3");
    assert_eq!(entry.args, Value::from("t"));
}

/// Without retries a failure is answered at once and nothing is listed; a
/// success after a retry is answered done and nothing is listed either.
#[actix::test]
async fn only_tasks_that_use_up_their_retries_are_dead() {
    let mgr = manager(3, 10);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, &["t"]).await;
    let plain = submit(&mgr, &s, 1, task("t", None)).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![plain]);
    fail(&mgr, w, plain, "once").await;
    assert_eq!(
        replies(&mgr, &mut s).await,
        vec![(1, TaskOutcome::Failed("once".into()))]
    );

    let id = submit(&mgr, &s, 2, task("t", Some(3))).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![id]);
    fail(&mgr, w, id, "flaky").await;
    let again = restarts_after(&mgr, &mut link, 999).await;
    within(
        "RunFinished",
        mgr.send(RunFinished {
            worker: w,
            run: again,
            outcome: TaskOutcome::Done(Value::from(7)),
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        replies(&mgr, &mut s).await,
        vec![(2, TaskOutcome::Done(Value::from(7)))]
    );
    assert_eq!(dead(&mgr).await.total, 0);
}

/// A waiting retry cancelled by its client, or by id, is answered cancelled
/// and never runs again; one of a client that leaves is dropped.
#[actix::test]
async fn a_cancelled_waiting_retry_is_answered_cancelled_and_never_rerun() {
    let mgr = manager(3, 10);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, &["t"]).await;
    let mut ids = Vec::new();
    for request_id in 1..=3 {
        let id = submit(&mgr, &s, request_id, task("t", Some(5)))
            .await
            .unwrap();
        ids.push(id);
        assert_eq!(assigned(&mgr, &mut link).await, vec![id]);
        fail(&mgr, w, id, "boom").await;
    }
    assert_eq!(status(&mgr).await.retrying, 3);

    mgr.do_send(CancelTask {
        session: 1,
        request_id: 1,
    });
    let by_id = within("cancel by id", mgr.send(CancelById { task: ids[1] }))
        .await
        .unwrap();
    assert_eq!(by_id, CancelResult::Cancelled);
    let got = replies(&mgr, &mut s).await;
    assert_eq!(
        got,
        vec![
            (1, TaskOutcome::Failed("cancelled by the client".into())),
            (2, TaskOutcome::Failed("cancelled by the client".into())),
        ]
    );
    assert_eq!(status(&mgr).await.retrying, 1);

    mgr.do_send(ClientGone { session: 1 });
    assert_eq!(status(&mgr).await.retrying, 0, "dropped with its client");
    advance(120_000).await;
    assert!(assigned(&mgr, &mut link).await.is_empty(), "none ran again");
    assert!(replies(&mgr, &mut s).await.is_empty());
    assert_eq!(dead(&mgr).await.total, 0, "cancelled tasks are not dead");
}

/// Capacity 1 and queue factor 1: a waiting retry holds the one place, so
/// a task that cannot start is denied until the retry has started.
#[actix::test]
async fn waiting_retries_count_against_the_queue_bound() {
    let mgr = manager(1, 10);
    let s = Session::start();
    let (w, mut link) = register(&mgr, &["t"]).await;
    let a = submit(&mgr, &s, 1, task("t", Some(1))).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![a]);
    fail(&mgr, w, a, "boom").await;

    // The slot is free: this one starts at once, whatever the queue holds.
    let b = submit(&mgr, &s, 2, task("t", None)).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![b]);
    let st = status(&mgr).await;
    assert_eq!((st.queued, st.retrying, st.queue_limit), (0, 1, 1));
    match submit(&mgr, &s, 3, task("t", None)).await {
        Err(Rejection::Denied { reason, .. }) => assert_eq!(reason, "queue full"),
        other => panic!("expected a deny for a full queue, got {other:?}"),
    }

    // Due, the retry moves to the queue (still one place), then to the slot.
    advance(1001).await;
    // The first round trip may be handled before the timer.
    status(&mgr).await;
    let st = status(&mgr).await;
    assert_eq!((st.queued, st.retrying), (1, 0));
    within(
        "RunFinished",
        mgr.send(RunFinished {
            worker: w,
            run: b,
            outcome: TaskOutcome::Done(Value::Nil),
        }),
    )
    .await
    .unwrap();
    assert_eq!(assigned(&mgr, &mut link).await.len(), 1, "the retry ran");
    assert!(
        submit(&mgr, &s, 4, task("t", None)).await.is_ok(),
        "room again"
    );
}

/// A run that fails while the queue bound is taken (by tasks its worker
/// cannot run) is answered with its error, not retried, and is dead.
#[actix::test]
async fn a_failure_with_no_room_to_wait_is_answered_and_dead() {
    let mgr = manager(1, 10);
    let mut s = Session::start();
    let (wt, mut t_link) = register(&mgr, &["t"]).await;
    let (_wu, mut u_link) = register(&mgr, &["u"]).await;
    let a = submit(&mgr, &s, 1, task("t", Some(3))).await.unwrap();
    assert_eq!(assigned(&mgr, &mut t_link).await, vec![a]);
    for request_id in 2..=4 {
        submit(&mgr, &s, request_id, task("u", None)).await.unwrap();
    }
    assert_eq!(assigned(&mgr, &mut u_link).await.len(), 1);
    assert_eq!(status(&mgr).await.queued, 2, "the bound of 2 is taken");

    fail(&mgr, wt, a, "boom").await;
    assert_eq!(
        replies(&mgr, &mut s).await,
        vec![(
            1,
            TaskOutcome::Failed("boom (not retried: queue full)".into())
        )]
    );
    let list = dead(&mgr).await;
    assert_eq!(list.total, 1);
    assert_eq!((list.tasks[0].task_id, list.tasks[0].retries), (a, 0));
}

/// A dead list of 2 keeps the newest 2 of 3 and counts the eviction.
#[actix::test]
async fn the_dead_list_evicts_the_oldest_past_its_bound() {
    let mgr = manager(3, 2);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, &["t"]).await;
    let mut ids = Vec::new();
    for request_id in 1..=3 {
        let id = submit(&mgr, &s, request_id, task("t", Some(1)))
            .await
            .unwrap();
        assert_eq!(assigned(&mgr, &mut link).await, vec![id]);
        fail(&mgr, w, id, "first").await;
        let again = restarts_after(&mgr, &mut link, 999).await;
        fail(&mgr, w, again, &format!("last of {request_id}")).await;
        ids.push(id);
    }
    assert_eq!(replies(&mgr, &mut s).await.len(), 3);
    let list = dead(&mgr).await;
    let listed: Vec<(TaskId, &str)> = list
        .tasks
        .iter()
        .map(|t| (t.task_id, t.error.as_str()))
        .collect();
    assert_eq!(listed, vec![(ids[2], "last of 3"), (ids[1], "last of 2")]);
    assert_eq!((list.total, list.evicted), (2, 1));
}

/// More retries than the cap is refused as invalid, not clamped; the
/// manager's default applies to a task sent without a number.
#[actix::test]
async fn retries_past_the_cap_are_invalid_and_the_default_applies() {
    tokio::time::pause();
    let mgr = Manager::new(ManagerSettings {
        default_retries: 1,
        retry_jitter: |d| d,
        ..ManagerSettings::default()
    })
    .start();
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, &["t"]).await;
    match submit(&mgr, &s, 1, task("t", Some(11))).await {
        Err(Rejection::Invalid(e)) => assert!(e.contains("at most 10"), "{e}"),
        other => panic!("expected invalid, got {other:?}"),
    }
    let id = submit(&mgr, &s, 2, task("t", None)).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![id]);
    fail(&mgr, w, id, "boom").await;
    assert_eq!(status(&mgr).await.retrying, 1, "the default of 1 applies");
    let again = restarts_after(&mgr, &mut link, 999).await;
    fail(&mgr, w, again, "boom").await;
    assert_eq!(replies(&mgr, &mut s).await.len(), 1);

    let id = submit(&mgr, &s, 3, task("t", Some(0))).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![id]);
    fail(&mgr, w, id, "boom").await;
    assert_eq!(replies(&mgr, &mut s).await.len(), 1, "0 asked: no retry");
}

/// A shutdown answers a waiting retry as not retried, with its last error.
#[actix::test]
async fn shutdown_answers_waiting_retries() {
    let mgr = manager(3, 10);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, &["t"]).await;
    let id = submit(&mgr, &s, 1, task("t", Some(2))).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![id]);
    fail(&mgr, w, id, "boom").await;
    let report = within(
        "shutdown",
        mgr.send(Shutdown {
            deadline: Duration::from_secs(1),
        }),
    )
    .await
    .unwrap();
    assert_eq!(report.not_started, 1);
    assert_eq!(
        replies(&mgr, &mut s).await,
        vec![(
            1,
            TaskOutcome::Failed("boom (not retried: manager shutting down)".into())
        )]
    );
    advance(10_000).await;
    assert!(assigned(&mgr, &mut link).await.is_empty());
}

/// Attempts start afresh with each retry: with attempts 2 and retries 1, a
/// retry whose worker is lost is started again, though the task has been
/// started twice in all.
#[actix::test]
async fn worker_loss_during_a_retry_spends_attempts_not_retries() {
    let mgr = manager(3, 10);
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, &["t"]).await;
    let spec = TaskSpec {
        attempts: 2,
        ..task("t", Some(1))
    };
    let id = submit(&mgr, &s, 1, spec).await.unwrap();
    assert_eq!(assigned(&mgr, &mut a_link).await, vec![id]);
    fail(&mgr, a, id, "boom").await;
    restarts_after(&mgr, &mut a_link, 999).await;

    let (_b, mut b_link) = register(&mgr, &["t"]).await;
    within("WorkerLost", mgr.send(WorkerLost { worker: a }))
        .await
        .unwrap();
    assert!(
        replies(&mgr, &mut s).await.is_empty(),
        "requeued, not failed"
    );
    assert_eq!(assigned(&mgr, &mut b_link).await.len(), 1, "started again");
    assert_eq!(dead(&mgr).await.total, 0);
}

/// The overview counts the waiting retries as `argon status` does and lists
/// them soonest due first, with the retry each waits for, the retries asked,
/// the time left and the last error; a peer's task name goes into the JSON
/// escaped, as it came.
#[actix::test]
async fn the_overview_lists_waiting_retries_soonest_first() {
    let mgr = manager(3, 10);
    let odd = "odd\"name</td>\n";
    let (w, mut link) = register(&mgr, &["t", odd]).await;
    let s = Session::start();
    assert_eq!(overview(&mgr).await.retrying, 0);

    let a = submit(&mgr, &s, 1, task("t", Some(2))).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![a]);
    fail(&mgr, w, a, "boom a").await;
    assert_eq!(listed(&overview(&mgr).await), vec![(a, 1, 2, 1000)]);

    advance(300).await;
    let b = submit(&mgr, &s, 2, task(odd, Some(3))).await.unwrap();
    assert_eq!(assigned(&mgr, &mut link).await, vec![b]);
    fail(&mgr, w, b, "boom b").await;
    let o = overview(&mgr).await;
    assert_eq!(o.retrying, status(&mgr).await.retrying);
    assert_eq!(o.retrying, 2);
    assert_eq!(listed(&o), vec![(a, 1, 2, 700), (b, 1, 3, 1000)]);
    assert_eq!(o.retrying_list[1].error, "boom b");

    let json = serde_json::to_string(&o).expect("the overview serializes");
    let back: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(back["retrying"], 2);
    assert_eq!(back["retrying_list"][1]["task"], odd);
    assert_eq!(
        back["retrying_list"][0]["task_id"],
        a.to_string(),
        "ids as text"
    );

    // A's retry starts and leaves the list; B is left, its retry nearer.
    restarts_after(&mgr, &mut link, 699).await;
    let o = overview(&mgr).await;
    assert_eq!(o.retrying, 1);
    let left = listed(&o);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, b);
    assert!(left[0].3 < 300, "{left:?}");
}

/// The list stops at its bound, keeping the retries due soonest; the count
/// covers them all.
#[actix::test]
async fn the_overview_lists_at_most_its_bound_of_waiting_retries() {
    let mgr = manager(40, 10);
    let (w, mut link) = register(&mgr, &["t"]).await;
    let s = Session::start();
    let n = OVERVIEW_MAX_RETRYING + 3;
    let mut ids = Vec::new();
    for request_id in 0..n as u64 {
        let id = submit(&mgr, &s, request_id, task("t", Some(1)))
            .await
            .unwrap();
        assert_eq!(assigned(&mgr, &mut link).await, vec![id]);
        fail(&mgr, w, id, "boom").await;
        ids.push(id);
        advance(10).await;
    }
    let o = overview(&mgr).await;
    assert_eq!(o.retrying, n as u64);
    let got: Vec<TaskId> = o.retrying_list.iter().map(|r| r.task_id).collect();
    assert_eq!(got, ids[..OVERVIEW_MAX_RETRYING]);
    assert!(
        o.retrying_list
            .windows(2)
            .all(|p| p[0].due_in_ms < p[1].due_in_ms),
        "{:?}",
        listed(&o)
    );
}
