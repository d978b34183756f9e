//! Actor-level test of the `Manager`'s metrics: what `GetMetrics` returns
//! after submits, denies, runs and client sessions, with a paused clock.

#![cfg(feature = "http")]

mod support;

use std::time::Duration;

use actix::prelude::*;
use argon::actors::manager::metrics::{ClientOpened, GetMetrics};
use argon::actors::{Manager, ManagerSettings};
use argon::messages::*;
use argon::protocol::Value;
use support::{within, Stub};

async fn submit(
    mgr: &Addr<Manager>,
    session: SessionId,
    to: &Stub<TaskReply>,
    request_id: u64,
    name: &str,
) -> Result<TaskId, Rejection> {
    within(
        "a submit",
        mgr.send(SubmitTask {
            session,
            request_id,
            spec: TaskSpec::new(name, Value::Nil),
            reply_to: to.recipient(),
            detach: false,
            opts: Default::default(),
        }),
    )
    .await
    .expect("manager alive")
    .map(|a| a.task)
}

async fn report(mgr: &Addr<Manager>, worker: WorkerId, run: RunId, outcome: TaskOutcome) {
    within(
        "a run reported",
        mgr.send(RunFinished {
            worker,
            run,
            outcome,
        }),
    )
    .await
    .expect("manager alive");
}

/// Registers a one-slot worker providing `echo`, its orders going to the
/// returned stub, which the caller holds for the test's length.
async fn register_echo(mgr: &Addr<Manager>) -> (WorkerId, Stub<WorkerOrder>) {
    let link = Stub::<WorkerOrder>::start();
    let worker = within(
        "registration",
        mgr.send(RegisterWorker {
            address: "stub".into(),
            capacity: 1,
            tasks: vec!["echo".into()],
            eval: false,
            running: vec![],
            link: link.recipient(),
            load: None,
            finished: vec![],
            finished_dropped: 0,
        }),
    )
    .await
    .unwrap()
    .unwrap();
    (worker, link)
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

#[actix::test]
async fn metrics_follow_the_managers_work() {
    tokio::time::pause();
    let mgr = Manager::new(ManagerSettings {
        queue_factor: 1,
        ..ManagerSettings::default()
    })
    .start();
    let empty = within("metrics", mgr.send(GetMetrics)).await.unwrap();
    assert_eq!(empty.workers, 0);
    has(&empty.text, "argon_workers 0");

    let (worker, _link) = register_echo(&mgr).await;
    let to = Stub::<TaskReply>::start();
    mgr.do_send(ClientOpened { session: 1 });
    mgr.do_send(ClientOpened { session: 2 });
    mgr.do_send(ClientGone { session: 2 });

    let first = submit(&mgr, 1, &to, 1, "echo").await.unwrap();
    let second = submit(&mgr, 1, &to, 2, "echo").await.unwrap();
    assert!(submit(&mgr, 1, &to, 3, "echo").await.is_err(), "queue full");
    assert!(matches!(
        submit(&mgr, 1, &to, 4, "made-up-name").await,
        Err(Rejection::Invalid(_))
    ));
    let queued = within("metrics", mgr.send(GetMetrics)).await.unwrap();
    has(&queued.text, r#"argon_queue_depth{priority="normal"} 1"#);
    has(&queued.text, "argon_slots_busy 1");

    tokio::time::advance(Duration::from_millis(250)).await;
    report(&mgr, worker, first, TaskOutcome::Done(Value::Nil)).await;
    tokio::time::advance(Duration::from_millis(250)).await;
    report(&mgr, worker, second, TaskOutcome::Failed("no".into())).await;

    let m = within("metrics", mgr.send(GetMetrics)).await.unwrap();
    let t = &m.text;
    assert_eq!(m.workers, 1);
    has(t, "argon_tasks_submitted_total 4");
    has(t, "argon_tasks_accepted_total 2");
    has(t, r#"argon_tasks_denied_total{reason="queue_full"} 1"#);
    has(t, r#"argon_tasks_denied_total{reason="invalid"} 1"#);
    has(
        t,
        r#"argon_tasks_completed_total{task="echo",outcome="ok"} 1"#,
    );
    has(
        t,
        r#"argon_tasks_completed_total{task="echo",outcome="failed"} 1"#,
    );
    assert!(!t.contains("made-up-name"), "{t}");
    has(t, "argon_task_run_seconds_count 2");
    has(t, "argon_task_run_seconds_sum 0.5");
    // The second task waited in the queue while the first ran.
    has(t, "argon_task_queue_wait_seconds_count 2");
    has(t, "argon_task_queue_wait_seconds_sum 0.25");
    has(t, r#"argon_queue_depth{priority="normal"} 0"#);
    has(t, "argon_queue_limit 1");
    has(t, "argon_capacity_slots 1");
    has(t, "argon_slots_busy 0");
    has(t, "argon_workers 1");
    has(t, "argon_clients 1");
    assert!(t
        .lines()
        .any(|l| l.starts_with("argon_predicted_wait_seconds 0.")));
}

/// The result store's gauges: outcomes kept for detached tasks, their
/// bytes, and result requests waiting.
#[actix::test]
async fn kept_results_and_waiting_result_requests_show_in_metrics() {
    let mgr = Manager::new(ManagerSettings::default()).start();
    let (worker, _link) = register_echo(&mgr).await;
    let to = Stub::<TaskReply>::start();
    let detached = |request_id: u64| SubmitTask {
        session: 1,
        request_id,
        spec: TaskSpec::new("echo", Value::from("a result")),
        reply_to: to.recipient(),
        detach: true,
        opts: Default::default(),
    };
    let first = within("a submit", mgr.send(detached(1)))
        .await
        .unwrap()
        .unwrap()
        .task;
    let second = within("a submit", mgr.send(detached(2)))
        .await
        .unwrap()
        .unwrap()
        .task;
    let wait = mgr.send(GetResult {
        task: second,
        wait: true,
        session: 1,
    });
    let waiting = actix::spawn(wait);
    let m = within("metrics", mgr.send(GetMetrics)).await.unwrap();
    has(&m.text, "argon_result_waits 1");
    has(&m.text, "argon_results_kept 0");

    report(
        &mgr,
        worker,
        first,
        TaskOutcome::Done(Value::from("a result")),
    )
    .await;
    let m = within("metrics", mgr.send(GetMetrics)).await.unwrap();
    has(&m.text, "argon_results_kept 1");
    let bytes: u64 = m
        .text
        .lines()
        .find_map(|l| l.strip_prefix("argon_results_kept_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no argon_results_kept_bytes in\n{}", m.text));
    assert!(bytes > "a result".len() as u64, "{bytes}");

    report(
        &mgr,
        worker,
        second,
        TaskOutcome::Done(Value::from("a result")),
    )
    .await;
    let state = within("the waiting result", waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(state, TaskState::Finished(o) if matches!(*o, TaskOutcome::Done(_))));
    let m = within("metrics", mgr.send(GetMetrics)).await.unwrap();
    has(&m.text, "argon_result_waits 0");
    has(&m.text, "argon_results_kept 2");
}

/// Tasks waiting for a provider after their kind's last worker went show
/// in `argon_tasks_awaiting_provider` and the overview, not in the queue.
#[actix::test]
async fn tasks_awaiting_a_provider_show_in_metrics_and_the_overview() {
    use argon::actors::manager::overview::GetOverview;
    tokio::time::pause();
    let mgr = Manager::new(ManagerSettings::default()).start();
    let (worker, _link) = register_echo(&mgr).await;
    let to = Stub::<TaskReply>::start();
    for request_id in 1..=3 {
        submit(&mgr, 1, &to, request_id, "echo").await.unwrap();
    }
    within("WorkerLost", mgr.send(WorkerLost { worker }))
        .await
        .unwrap();
    let m = within("metrics", mgr.send(GetMetrics)).await.unwrap();
    has(&m.text, "argon_tasks_awaiting_provider 2");
    has(&m.text, r#"argon_queue_depth{priority="normal"} 0"#);
    let o = within("overview", mgr.send(GetOverview)).await.unwrap();
    assert_eq!((o.awaiting_provider, o.queue.normal), (2, 0));

    let (_, _again) = register_echo(&mgr).await;
    let m = within("metrics", mgr.send(GetMetrics)).await.unwrap();
    has(&m.text, "argon_tasks_awaiting_provider 0");
    has(&m.text, r#"argon_queue_depth{priority="normal"} 1"#);
}
