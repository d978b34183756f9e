//! Actor-level tests of what the dashboard reads and does beyond the
//! counters: the runs listed longest first and bounded, the per-name rows,
//! tasks promoted by aging counted apart, failures with their task ids, the
//! counters sampled once a second, and draining a worker from the manager's
//! side ([`DrainWorker`]). The clock is paused, so every duration is exact.

mod support;

use std::time::Duration;

use actix::prelude::*;
use argon::actors::manager::console::{DrainResult, DrainWorker};
use argon::actors::manager::overview::{GetOverview, Overview, OVERVIEW_MAX_RUNNING};
use argon::actors::{Manager, ManagerSettings};
use argon::messages::*;
use argon::protocol::{Priority, Value};
use support::manager::{register_stub, report_run, send_submit};
use support::{within, Stub};

async fn submit(
    mgr: &Addr<Manager>,
    to: &Stub<TaskReply>,
    request_id: u64,
    level: Priority,
) -> TaskId {
    let spec = TaskSpec {
        priority: level,
        ..TaskSpec::new("echo", Value::Nil)
    };
    send_submit(
        mgr,
        SubmitTask {
            session: 1,
            request_id,
            spec,
            reply_to: to.recipient(),
            detach: false,
            opts: Default::default(),
        },
    )
    .await
    .expect("accepted")
}

async fn overview(mgr: &Addr<Manager>) -> Overview {
    within("the overview", mgr.send(GetOverview))
        .await
        .expect("manager alive")
}

/// Registers a worker of `capacity` slots providing `echo`; its orders go to
/// the returned stub, which the caller holds for the test's length.
async fn register(mgr: &Addr<Manager>, capacity: u32) -> (WorkerId, Stub<WorkerOrder>) {
    register_stub(mgr, "stub", capacity, &["echo"]).await
}

#[actix::test]
async fn runs_are_listed_longest_first_and_bounded() {
    tokio::time::pause();
    let mgr = Manager::new(ManagerSettings::default()).start();
    let (worker, _link) = register(&mgr, 60).await;
    let to = Stub::<TaskReply>::start();
    let total = OVERVIEW_MAX_RUNNING as u64 + 5;
    let mut ids = Vec::new();
    for i in 0..total {
        ids.push(submit(&mgr, &to, i, Priority::Normal).await);
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    let o = overview(&mgr).await;
    assert_eq!(
        (o.running.len(), o.running_total),
        (OVERVIEW_MAX_RUNNING, total)
    );
    let listed: Vec<TaskId> = o.running.iter().filter_map(|r| r.task_id).collect();
    assert_eq!(
        listed,
        ids[..OVERVIEW_MAX_RUNNING],
        "the oldest runs, oldest first"
    );
    assert_eq!(o.running[0].running_ms, 10 * total);
    assert_eq!(o.running[1].running_ms, 10 * (total - 1));
    assert!(o
        .running
        .iter()
        .all(|r| r.worker == worker && r.task.as_deref() == Some("echo")));
    let row = &o.tasks[0];
    assert_eq!(
        (row.task.as_str(), row.running, row.queued),
        ("echo", total, 0)
    );
}

#[actix::test]
async fn aging_names_failures_and_history_show_in_the_overview() {
    tokio::time::pause();
    let mgr = Manager::new(ManagerSettings {
        queue_factor: 10,
        ..ManagerSettings::default()
    })
    .start();
    let (worker, _link) = register(&mgr, 1).await;
    let to = Stub::<TaskReply>::start();
    let a = submit(&mgr, &to, 1, Priority::Normal).await;
    let b = submit(&mgr, &to, 2, Priority::Low).await;
    let c = submit(&mgr, &to, 3, Priority::Low).await;
    let d = submit(&mgr, &to, 4, Priority::Low).await;
    let o = overview(&mgr).await;
    assert_eq!((o.queue.low, o.queue.promoted_normal), (3, 0));
    assert_eq!(o.tasks[0].queued, 3, "{:?}", o.tasks);

    // A took 200 ms: a queue head waiting more than 1.5 × that moves up.
    tokio::time::advance(Duration::from_millis(200)).await;
    report_run(&mgr, worker, a, TaskOutcome::Done(Value::Nil)).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    report_run(&mgr, worker, b, TaskOutcome::Done(Value::Nil)).await;
    let o = overview(&mgr).await;
    // C and D moved up to normal; C took the slot, D waits there.
    assert_eq!(
        (o.queue.high, o.queue.normal, o.queue.low),
        (0, 1, 0),
        "{:?}",
        o.queue
    );
    assert_eq!((o.queue.promoted_high, o.queue.promoted_normal), (0, 1));
    assert_eq!(o.running[0].task_id, Some(c));

    tokio::time::advance(Duration::from_millis(300)).await;
    report_run(&mgr, worker, c, TaskOutcome::Failed("broke".into())).await;
    let o = overview(&mgr).await;
    assert_eq!(
        (o.failures[0].task_id, o.failures[0].error.as_str()),
        (c, "broke")
    );
    let row = o
        .tasks
        .iter()
        .find(|r| r.task == "echo")
        .expect("an echo row");
    assert_eq!(
        (row.completed, row.failed, row.queued, row.running),
        (2, 1, 0, 1)
    );
    let runs = row.run_time.as_ref().expect("run times");
    assert_eq!(
        (runs.samples, runs.p50_ms, runs.max_ms),
        (3, Some(300.0), Some(1000.0))
    );
    assert_eq!(o.running[0].task_id, Some(d));

    // One sample a second, the newest with every count so far.
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(1)).await;
        overview(&mgr).await;
    }
    let o = overview(&mgr).await;
    assert!(o.history.len() >= 3, "{:?}", o.history);
    let newest = o.history.last().unwrap();
    assert_eq!(
        (newest.accepted, newest.completed, newest.failed),
        (4, 2, 1)
    );
    assert!(o.history.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
}

#[actix::test]
async fn a_worker_drained_from_the_manager_takes_nothing_more() {
    let mgr = Manager::new(ManagerSettings::default()).start();
    let (worker, mut link) = register(&mgr, 2).await;
    let to = Stub::<TaskReply>::start();
    let first = submit(&mgr, &to, 1, Priority::Normal).await;
    assert!(matches!(link.next().await, WorkerOrder::Assign { run, .. } if run == first));

    let drained = within("a drain", mgr.send(DrainWorker { worker }))
        .await
        .unwrap();
    assert_eq!(drained, DrainResult::Drained);
    let o = overview(&mgr).await;
    assert_eq!((o.capacity, o.busy), (0, 1), "its run goes on");
    assert!(o.worker_list[0].draining);
    let again = within("a drain", mgr.send(DrainWorker { worker }))
        .await
        .unwrap();
    assert_eq!(again, DrainResult::AlreadyDraining);
    let unknown = within(
        "a drain",
        mgr.send(DrainWorker {
            worker: worker + 100,
        }),
    )
    .await
    .unwrap();
    assert_eq!(unknown, DrainResult::Unknown);

    report_run(&mgr, worker, first, TaskOutcome::Done(Value::Nil)).await;
    let denied = mgr
        .send(SubmitTask {
            session: 1,
            request_id: 2,
            spec: TaskSpec::new("echo", Value::Nil),
            reply_to: to.recipient(),
            detach: false,
            opts: Default::default(),
        })
        .await
        .unwrap();
    assert!(denied.is_err(), "a task went to a drained worker");
    link.assert_none("an assign to the drained worker").await;
}
