//! Actor-level tests of the `Manager`: admission and the bounded queue,
//! priorities and aging, routing, worker and client loss, cancellation, the
//! worker credits, and the exactly-one-reply invariant.
//!
//! Client sessions and worker links are stub actors that forward what they
//! receive into channels. The clock is paused, so task durations and waiting
//! times are whatever the test advances it by.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use actix::prelude::*;
use argon::actors::manager::{MAX_RESULT_WAITERS, MAX_WORKER_CAPACITY};
use argon::actors::{Manager, ManagerSettings};
use argon::messages::*;
use argon::protocol::{ClusterStatus, Priority, Value};
use support::manager::{self as mgr_support, register_stub};
use support::{within, Rng, Stub};

type Session = Stub<TaskReply>;
type Link = Stub<WorkerOrder>;

/// Pauses the clock and starts a manager with the given queue factor.
fn paused_manager(queue_factor: u32) -> Addr<Manager> {
    tokio::time::pause();
    Manager::new(ManagerSettings {
        queue_factor,
        ..ManagerSettings::default()
    })
    .start()
}

async fn register(mgr: &Addr<Manager>, capacity: u32, tasks: &[&str]) -> (WorkerId, Link) {
    register_stub(mgr, &format!("stub:{capacity}"), capacity, tasks).await
}

fn spec(name: &str, priority: Priority) -> TaskSpec {
    TaskSpec {
        priority,
        ..TaskSpec::new(name, Value::Nil)
    }
}

async fn submit(
    mgr: &Addr<Manager>,
    session: SessionId,
    to: &Session,
    request_id: u64,
    spec: TaskSpec,
) -> Result<TaskId, Rejection> {
    within(
        "a submit to be answered",
        mgr.send(SubmitTask {
            session,
            request_id,
            spec,
            reply_to: to.recipient(),
            detach: false,
            opts: Default::default(),
        }),
    )
    .await
    .expect("manager alive")
    .map(|a| {
        assert!(!a.durable, "a manager without a store says so");
        a.task
    })
}

/// Submits a task that must be accepted and returns its id.
async fn accept(
    mgr: &Addr<Manager>,
    session: SessionId,
    to: &Session,
    request_id: u64,
    spec: TaskSpec,
) -> TaskId {
    let name = spec.name.clone();
    submit(mgr, session, to, request_id, spec)
        .await
        .unwrap_or_else(|e| panic!("task {name} (request {request_id}) not accepted: {e}"))
}

/// Reports run `run` done on `worker`; its value is the run id (a task's
/// first run goes by the task's id).
async fn finish(mgr: &Addr<Manager>, worker: WorkerId, run: RunId) {
    report(mgr, worker, run, TaskOutcome::Done(Value::from(run))).await;
}

async fn report(mgr: &Addr<Manager>, worker: WorkerId, run: RunId, outcome: TaskOutcome) {
    mgr_support::report_run(mgr, worker, run, outcome).await;
}

async fn status(mgr: &Addr<Manager>) -> ClusterStatus {
    within("a status report", mgr.send(GetStatus))
        .await
        .expect("manager alive")
}

/// Run ids assigned to `link` since the last look (cancels are dropped).
async fn assigned(link: &mut Link) -> Vec<RunId> {
    assigns(link.drain().await)
        .into_iter()
        .map(|(run, _, _)| run)
        .collect()
}

/// (run, slot, args) of the assigns among `orders`.
fn assigns(orders: Vec<WorkerOrder>) -> Vec<(RunId, SlotIndex, Value)> {
    orders
        .into_iter()
        .filter_map(|o| match o {
            WorkerOrder::Assign {
                run, slot, args, ..
            } => Some((run, slot, args)),
            WorkerOrder::Cancel { .. } => None,
        })
        .collect()
}

/// (run, slot) of the cancels among `orders`.
fn cancels(orders: &[WorkerOrder]) -> Vec<(RunId, SlotIndex)> {
    orders
        .iter()
        .filter_map(|o| match o {
            WorkerOrder::Cancel { run, slot } => Some((*run, *slot)),
            WorkerOrder::Assign { .. } => None,
        })
        .collect()
}

/// (request id, outcome) of every reply `session` got since the last look.
async fn replies(session: &mut Session) -> Vec<(u64, TaskOutcome)> {
    session
        .drain()
        .await
        .into_iter()
        .map(|r| (r.request_id, r.outcome))
        .collect()
}

fn failure(outcome: &TaskOutcome) -> &str {
    match outcome {
        TaskOutcome::Failed(e) => e,
        TaskOutcome::Done(v) => panic!("expected a failure, got done with {v:?}"),
    }
}

/// With no worker every task is denied "no capacity"; with workers, a task
/// no worker provides is rejected as invalid, naming the task.
#[actix::test]
async fn denies_without_workers_and_rejects_unknown_task_names() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    for req in 1..=5 {
        match submit(&mgr, 1, &s, req, spec("echo", Priority::Normal)).await {
            Err(Rejection::Denied {
                reason,
                retry_after,
            }) => {
                assert_eq!(reason, "no capacity");
                assert!(retry_after > Duration::ZERO);
            }
            other => panic!("request {req}: expected a deny, got {other:?}"),
        }
    }
    assert_eq!(status(&mgr).await.denied, 5);

    let (_, mut link) = register(&mgr, 2, &["echo"]).await;
    match submit(&mgr, 1, &s, 6, spec("frobnicate", Priority::Normal)).await {
        Err(Rejection::Invalid(text)) => {
            assert!(
                text.contains("frobnicate"),
                "{text:?} does not name the task"
            );
            assert!(text.contains("no worker provides"), "{text:?}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let st = status(&mgr).await;
    assert_eq!((st.queued, st.in_flight), (0, 0));
    link.assert_none("a worker after rejected tasks").await;
    s.assert_none("a session whose tasks were all rejected")
        .await;
}

/// Capacity 1 × queue factor 1: one runs, one waits, the third is denied
/// "queue full" with a retry_after; a finish makes room again.
#[actix::test]
async fn denies_at_the_queue_bound_and_admits_again_after_a_finish() {
    let mgr = paused_manager(1);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;

    let first = accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![first]);
    let second = accept(&mgr, 1, &s, 2, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, Vec::<TaskId>::new());
    let st = status(&mgr).await;
    assert_eq!((st.in_flight, st.queued, st.queue_limit), (1, 1, 1));

    match submit(&mgr, 1, &s, 3, spec("t", Priority::High)).await {
        Err(Rejection::Denied {
            reason,
            retry_after,
        }) => {
            assert_eq!(reason, "queue full");
            assert!(retry_after > Duration::ZERO, "retry_after {retry_after:?}");
        }
        other => panic!("third task: expected a deny, got {other:?}"),
    }

    tokio::time::advance(Duration::from_millis(20)).await;
    finish(&mgr, w, first).await;
    assert_eq!(
        replies(&mut s).await,
        vec![(1, TaskOutcome::Done(Value::from(first)))]
    );
    assert_eq!(assigned(&mut link).await, vec![second]);

    let fourth = accept(&mgr, 1, &s, 4, spec("t", Priority::Normal)).await;
    assert!(fourth > second);
    let st = status(&mgr).await;
    assert_eq!((st.in_flight, st.queued, st.denied), (1, 1, 1));
    assert!(
        replies(&mut s).await.is_empty(),
        "the denied task got a reply"
    );
}

/// Queued tasks start high first, then normal, then low, FIFO within a level.
#[actix::test]
async fn starts_queued_tasks_by_priority_then_fifo() {
    let mgr = paused_manager(10);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;

    // A long first task sets the average, so aging (1.5 × average) stays far
    // off while the queue below drains with the clock standing still.
    let warmup = accept(&mgr, 1, &s, 100, spec("t", Priority::Normal)).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    finish(&mgr, w, warmup).await;

    let busy = accept(&mgr, 1, &s, 101, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![warmup, busy]);

    let order = [
        ("low-1", Priority::Low),
        ("normal-1", Priority::Normal),
        ("high-1", Priority::High),
        ("low-2", Priority::Low),
        ("normal-2", Priority::Normal),
        ("high-2", Priority::High),
        ("normal-3", Priority::Normal),
    ];
    let mut label = HashMap::new();
    for (i, (name, prio)) in order.iter().enumerate() {
        let id = accept(&mgr, 1, &s, i as u64, spec("t", *prio)).await;
        label.insert(id, *name);
    }
    let st = status(&mgr).await;
    let q = &st.queued_by_priority;
    assert_eq!((q.high, q.normal, q.low), (2, 3, 2));

    let mut started = Vec::new();
    let mut running = busy;
    for _ in 0..order.len() {
        finish(&mgr, w, running).await;
        let next = assigned(&mut link).await;
        assert_eq!(next.len(), 1, "one task starts per finish: {next:?}");
        running = next[0];
        started.push(label[&running]);
    }
    assert_eq!(
        started,
        ["high-1", "high-2", "normal-1", "normal-2", "normal-3", "low-1", "low-2"]
    );
}

/// A low task that waits longer than 1.5 × the average task time is promoted
/// and runs while a steady stream of normal and high tasks keeps coming.
#[actix::test]
async fn aging_promotes_a_waiting_low_task_so_it_is_not_starved() {
    let mgr = paused_manager(100);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let step = Duration::from_millis(100);

    // Every task takes 100 ms: the average is 100 ms, the aging limit 150 ms.
    for req in 0..3 {
        let id = accept(&mgr, 1, &s, req, spec("t", Priority::Normal)).await;
        assert_eq!(assigned(&mut link).await, vec![id]);
        tokio::time::advance(step).await;
        finish(&mgr, w, id).await;
    }
    assert!((status(&mgr).await.avg_task_ms - 100.0).abs() < 1e-6);

    let mut running = accept(&mgr, 1, &s, 10, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![running]);
    let low = accept(&mgr, 1, &s, 11, spec("t", Priority::Low)).await;

    let mut req = 100;
    let mut low_started_in_round = None;
    for round in 1..=40 {
        // Each round: one high and one normal task arrive, one task finishes.
        for prio in [Priority::High, Priority::Normal] {
            accept(&mgr, 1, &s, req, spec("t", prio)).await;
            req += 1;
        }
        tokio::time::advance(step).await;
        finish(&mgr, w, running).await;
        let next = assigned(&mut link).await;
        assert_eq!(next.len(), 1, "round {round}: {next:?}");
        running = next[0];

        let st = status(&mgr).await;
        match round {
            // Waited 100 ms: not yet past 150 ms, still low.
            1 => assert_eq!(st.queued_by_priority.low, 1, "promoted too early"),
            // Waited 200 ms: promoted to normal at this dispatch.
            2 => assert_eq!(st.queued_by_priority.low, 0, "not promoted"),
            _ => {}
        }
        if running == low {
            assert!(
                st.queued > 0,
                "the low task ran only because the queue emptied"
            );
            low_started_in_round = Some(round);
            break;
        }
    }
    let round = low_started_in_round.expect("the low task starved behind higher priorities");
    assert!(round > 2, "the low task ran before it aged (round {round})");
}

/// Tasks go to the worker with the lowest (assigned + 1) × average time;
/// a worker that does not provide the task never gets it.
#[actix::test]
async fn routes_to_the_least_loaded_worker_that_provides_the_task() {
    let mgr = paused_manager(3);
    let s = Session::start();
    let (other, mut other_link) = register(&mgr, 8, &["u"]).await;
    let (slow, mut slow_link) = register(&mgr, 8, &["t"]).await;
    let first = accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut slow_link).await, vec![first]);
    let (fast, mut fast_link) = register(&mgr, 8, &["t"]).await;
    // The slow worker is busy with one task, so the fast (idle) one is less loaded.
    let second = accept(&mgr, 1, &s, 2, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut fast_link).await, vec![second]);

    // Measured averages: fast 30 ms, slow 100 ms.
    tokio::time::advance(Duration::from_millis(30)).await;
    finish(&mgr, fast, second).await;
    tokio::time::advance(Duration::from_millis(70)).await;
    finish(&mgr, slow, first).await;
    let st = status(&mgr).await;
    let avg = |id: WorkerId| st.worker_list.iter().find(|w| w.id == id).unwrap().avg_ms;
    assert!((avg(fast) - 30.0).abs() < 1e-6, "fast avg {}", avg(fast));
    assert!((avg(slow) - 100.0).abs() < 1e-6, "slow avg {}", avg(slow));

    // fast: 30, 60, 90, then 120 > slow's 100 → slow; fast 120 < slow 200 …
    let mut got = Vec::new();
    for req in 10..18 {
        let id = accept(&mgr, 1, &s, req, spec("t", Priority::Normal)).await;
        let on_fast = assigned(&mut fast_link).await;
        let on_slow = assigned(&mut slow_link).await;
        match (on_fast.as_slice(), on_slow.as_slice()) {
            ([f], []) if *f == id => got.push("fast"),
            ([], [s]) if *s == id => got.push("slow"),
            other => panic!("task {id} went to {other:?}"),
        }
    }
    assert_eq!(
        got,
        ["fast", "fast", "fast", "slow", "fast", "fast", "fast", "slow"]
    );
    other_link
        .assert_none("the worker that does not provide t")
        .await;
    let st = status(&mgr).await;
    let w = st.worker_list.iter().find(|w| w.id == other).unwrap();
    assert_eq!(w.in_flight, 0);
}

/// A lost worker's tasks fail "worker lost before completion", except one
/// with attempts left, which is requeued at the head and runs elsewhere;
/// once its attempts are used up the error says how many were tried.
#[actix::test]
async fn worker_loss_fails_or_requeues_in_flight_tasks_and_shrinks_capacity() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, 2, &["t"]).await;
    let once = accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    let twice = accept(
        &mgr,
        1,
        &s,
        2,
        TaskSpec {
            attempts: 2,
            ..spec("t", Priority::Normal)
        },
    )
    .await;
    assert_eq!(assigned(&mut a_link).await, vec![once, twice]);

    let (b, mut b_link) = register(&mgr, 1, &["t"]).await;
    let on_b = accept(&mgr, 1, &s, 3, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut b_link).await, vec![on_b]);
    accept(&mgr, 1, &s, 4, spec("t", Priority::Normal)).await;
    let st = status(&mgr).await;
    assert_eq!((st.workers, st.capacity, st.queue_limit), (2, 3, 9));

    within("WorkerLost", mgr.send(WorkerLost { worker: a }))
        .await
        .unwrap();
    let st = status(&mgr).await;
    assert_eq!((st.workers, st.capacity, st.queue_limit), (1, 1, 3));
    assert_eq!((st.in_flight, st.queued), (1, 2));
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 1);
    assert_eq!(failure(&got[0].1), "worker lost before completion");

    // The requeued task goes ahead of the one that was already waiting.
    finish(&mgr, b, on_b).await;
    assert_eq!(
        replies(&mut s).await,
        vec![(3, TaskOutcome::Done(Value::from(on_b)))]
    );
    let rerun = assigned(&mut b_link).await;
    assert_eq!(rerun.len(), 1, "the requeued task is started again");
    assert_ne!(rerun[0], twice, "a restart runs under a fresh run id");
    a_link
        .assert_none("the lost worker after it was lost")
        .await;

    within("WorkerLost", mgr.send(WorkerLost { worker: b }))
        .await
        .unwrap();
    let st = status(&mgr).await;
    assert_eq!(
        (st.workers, st.capacity, st.in_flight, st.queued),
        (0, 0, 0, 0)
    );
    assert_eq!(st.awaiting_provider, 1, "task 4 waits for a provider");
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let tried = failure(&got[0].1);
    assert!(
        got[0].0 == 2
            && tried.contains("worker lost before completion")
            && tried.contains("tried 2 times"),
        "{got:?}"
    );
    // Timers fire on whole milliseconds.
    tokio::time::advance(Duration::from_millis(30_001)).await;
    settle(&mgr).await;
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0, failure(&got[0].1)),
        (4, "no worker provides task t: waited 30s for one")
    );
}

/// ClientGone drops that session's queued tasks, leaves other sessions'
/// tasks alone, and no reply is sent for the dropped ones.
#[actix::test]
async fn client_loss_drops_only_that_sessions_queued_tasks() {
    let mgr = paused_manager(5);
    let mut gone = Session::start();
    let mut stays = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;

    let running = accept(&mgr, 2, &stays, 1, spec("t", Priority::Normal)).await;
    accept(&mgr, 1, &gone, 2, spec("t", Priority::High)).await;
    accept(&mgr, 1, &gone, 3, spec("t", Priority::Normal)).await;
    let kept = accept(&mgr, 2, &stays, 4, spec("t", Priority::Low)).await;
    accept(&mgr, 1, &gone, 5, spec("t", Priority::Low)).await;
    assert_eq!(assigned(&mut link).await, vec![running]);
    assert_eq!(status(&mgr).await.queued, 4);

    within("ClientGone", mgr.send(ClientGone { session: 1 }))
        .await
        .unwrap();
    let st = status(&mgr).await;
    assert_eq!(st.queued, 1);
    assert_eq!(st.queued_by_priority.low, 1);

    finish(&mgr, w, running).await;
    assert_eq!(assigned(&mut link).await, vec![kept]);
    finish(&mgr, w, kept).await;
    assert_eq!(assigned(&mut link).await, Vec::<TaskId>::new());
    assert_eq!(
        replies(&mut stays).await,
        vec![
            (1, TaskOutcome::Done(Value::from(running))),
            (4, TaskOutcome::Done(Value::from(kept))),
        ]
    );
    gone.assert_none("the session that left").await;
    let st = status(&mgr).await;
    assert_eq!((st.queued, st.in_flight, st.completed), (0, 0, 2));
}

/// Over a seeded random mix of submits, finishes, cancels, worker losses
/// and joins, every accepted task gets exactly one reply and no rejected one
/// gets any. Task `b` loses all its providers now and then: with a short
/// provider grace, some of its tasks wait and run once a provider is back,
/// and others fail when the grace ends.
#[actix::test]
async fn every_accepted_task_gets_exactly_one_reply_under_random_churn() {
    struct Worker {
        link: Link,
        tasks: Vec<String>,
        capacity: u32,
        /// Runs it was given and has not finished, with their args.
        running: BTreeMap<RunId, Value>,
    }

    tokio::time::pause();
    let mgr = Manager::new(ManagerSettings {
        queue_factor: 3,
        provider_grace: Some(Duration::from_millis(40)),
        ..ManagerSettings::default()
    })
    .start();
    let mut rng = Rng::new(0x5eed_a11c_e0ff_1ce5);
    let mut sessions: Vec<Session> = (0..4).map(|_| Session::start()).collect();
    let mut workers: BTreeMap<WorkerId, Worker> = BTreeMap::new();
    let mut accepted: BTreeMap<u64, (usize, TaskId)> = BTreeMap::new();
    let mut rejected = BTreeSet::new();
    let mut where_running: HashMap<RunId, WorkerId> = HashMap::new();
    let mut ever_assigned: BTreeSet<String> = BTreeSet::new();
    let mut reassigned = 0;
    let mut losses = 0;
    let mut cancelled = 0;
    let mut awaited_then_back = 0;
    let mut next_req = 1u64;

    async fn join(
        mgr: &Addr<Manager>,
        rng: &mut Rng,
        workers: &mut BTreeMap<WorkerId, Worker>,
        tasks: &[&str],
    ) {
        let cap = 1 + rng.below(3) as u32;
        let (id, link) = register(mgr, cap, tasks).await;
        workers.insert(
            id,
            Worker {
                link,
                tasks: tasks.iter().map(|t| t.to_string()).collect(),
                capacity: cap,
                running: BTreeMap::new(),
            },
        );
    }

    for _ in 0..3 {
        join(&mgr, &mut rng, &mut workers, &["a", "b"]).await;
    }

    for step in 0..500 {
        match rng.below(100) {
            0..=49 => {
                let sess = rng.below(sessions.len() as u64) as usize;
                let name = if rng.chance(25) { "b" } else { "a" };
                let priority =
                    [Priority::High, Priority::Normal, Priority::Low][rng.below(3) as usize];
                let task = TaskSpec {
                    priority,
                    attempts: 1 + rng.below(3) as u32,
                    ..TaskSpec::new(name, Value::from(next_req))
                };
                match submit(&mgr, sess as u64 + 1, &sessions[sess], next_req, task).await {
                    Ok(id) => {
                        accepted.insert(next_req, (sess, id));
                    }
                    Err(_) => {
                        rejected.insert(next_req);
                    }
                }
                next_req += 1;
            }
            50..=82 => {
                let busy: Vec<WorkerId> = workers
                    .iter()
                    .filter(|(_, w)| !w.running.is_empty())
                    .map(|(id, _)| *id)
                    .collect();
                if !busy.is_empty() {
                    let wid = busy[rng.below(busy.len() as u64) as usize];
                    let w = workers.get_mut(&wid).unwrap();
                    let runs: Vec<RunId> = w.running.keys().copied().collect();
                    let run = runs[rng.below(runs.len() as u64) as usize];
                    let args = w.running.remove(&run).unwrap();
                    where_running.remove(&run);
                    let outcome = if rng.chance(10) {
                        TaskOutcome::Failed("failed on purpose".into())
                    } else {
                        TaskOutcome::Done(args)
                    };
                    report(&mgr, wid, run, outcome).await;
                }
            }
            83..=84 => {
                let reqs: Vec<u64> = accepted.keys().copied().collect();
                if !reqs.is_empty() {
                    let req = reqs[rng.below(reqs.len() as u64) as usize];
                    let (sess, _) = accepted[&req];
                    within(
                        "CancelTask",
                        mgr.send(CancelTask {
                            session: sess as u64 + 1,
                            request_id: req,
                        }),
                    )
                    .await
                    .unwrap();
                    cancelled += 1;
                }
            }
            85..=91 => {
                if !workers.is_empty() {
                    let ids: Vec<WorkerId> = workers.keys().copied().collect();
                    let wid = ids[rng.below(ids.len() as u64) as usize];
                    let w = workers.remove(&wid).unwrap();
                    for t in w.running.keys() {
                        where_running.remove(t);
                    }
                    within("WorkerLost", mgr.send(WorkerLost { worker: wid }))
                        .await
                        .unwrap();
                    losses += 1;
                }
            }
            92..=97 => {
                if workers.len() < 6 {
                    let tasks: &[&str] = if rng.chance(50) { &["a"] } else { &["a", "b"] };
                    let waiting = status(&mgr).await.awaiting_provider;
                    join(&mgr, &mut rng, &mut workers, tasks).await;
                    if waiting > status(&mgr).await.awaiting_provider {
                        awaited_then_back += 1;
                    }
                }
            }
            _ => tokio::time::advance(Duration::from_millis(1 + rng.below(50))).await,
        }

        // Record what each worker was given, check nothing runs twice, and
        // that the manager's credits are the slots not running anything.
        let credits: BTreeMap<WorkerId, Vec<SlotIndex>> = within("credits", mgr.send(GetCredits))
            .await
            .unwrap()
            .into_iter()
            .collect();
        for (wid, w) in workers.iter_mut() {
            for order in w.link.drain().await {
                let WorkerOrder::Assign {
                    run, name, args, ..
                } = order
                else {
                    panic!("step {step}: unexpected {order:?}");
                };
                assert!(
                    w.tasks.contains(&name),
                    "step {step}: worker {wid} got {name} it does not provide",
                );
                if let Some(other) = where_running.insert(run, *wid) {
                    panic!("step {step}: run {run} assigned to {wid} while on {other}");
                }
                if !ever_assigned.insert(args.to_string()) {
                    reassigned += 1;
                }
                w.running.insert(run, args);
            }
            let free = credits.get(wid).map_or(0, Vec::len);
            assert_eq!(
                free + w.running.len(),
                w.capacity as usize,
                "step {step}: worker {wid}: credits {free} + running {} != slots",
                w.running.len()
            );
        }
    }

    // Drain: a worker that provides everything, then finish all that runs.
    join(&mgr, &mut rng, &mut workers, &["a", "b"]).await;
    for _ in 0..10_000 {
        for (wid, w) in workers.iter_mut() {
            for (run, _, args) in assigns(w.link.drain().await) {
                assert!(where_running.insert(run, *wid).is_none());
                w.running.insert(run, args);
            }
        }
        let st = status(&mgr).await;
        if st.queued == 0 && st.in_flight == 0 && st.awaiting_provider == 0 {
            break;
        }
        let Some((wid, run)) = workers
            .iter()
            .find_map(|(id, w)| w.running.keys().next().map(|t| (*id, *t)))
        else {
            panic!("tasks queued but none running: {st:?}");
        };
        let args = workers.get_mut(&wid).unwrap().running.remove(&run).unwrap();
        where_running.remove(&run);
        report(&mgr, wid, run, TaskOutcome::Done(args)).await;
    }
    let st = status(&mgr).await;
    assert_eq!(
        (st.queued, st.in_flight, st.awaiting_provider),
        (0, 0, 0),
        "did not drain: {st:?}"
    );

    let mut answered: BTreeMap<u64, usize> = BTreeMap::new();
    let mut lost_failures = 0;
    let mut grace_failures = 0;
    for (sess, session) in sessions.iter_mut().enumerate() {
        for (req, outcome) in replies(session).await {
            assert!(
                !rejected.contains(&req),
                "rejected request {req} got a reply"
            );
            let (owner, _) = accepted
                .get(&req)
                .unwrap_or_else(|| panic!("reply for unknown request {req}"));
            assert_eq!(*owner, sess, "request {req} answered to the wrong session");
            match &outcome {
                TaskOutcome::Done(v) => {
                    assert_eq!(
                        *v,
                        Value::from(req),
                        "request {req} got another task's value"
                    )
                }
                TaskOutcome::Failed(e) if e.starts_with("worker lost before completion") => {
                    lost_failures += 1
                }
                TaskOutcome::Failed(e) if e.starts_with("no worker provides task b: waited ") => {
                    grace_failures += 1
                }
                TaskOutcome::Failed(e) => assert!(
                    e == "failed on purpose"
                        || e == "cancelled by the client"
                        || e == "no worker provides task b any more",
                    "request {req}: unexpected failure {e:?}"
                ),
            }
            *answered.entry(req).or_default() += 1;
        }
    }
    let twice: Vec<_> = answered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "answered more than once: {twice:?}");
    let missing: Vec<_> = accepted
        .keys()
        .filter(|r| !answered.contains_key(r))
        .collect();
    assert!(missing.is_empty(), "never answered: {missing:?}");
    assert_eq!(st.completed + st.failed, accepted.len() as u64);
    for (wid, free) in within("credits", mgr.send(GetCredits)).await.unwrap() {
        let cap = workers[&wid].capacity;
        assert_eq!(
            free,
            (0..cap).collect::<Vec<_>>(),
            "worker {wid}: every slot is a credit again"
        );
    }

    // The run exercised what it claims to.
    assert!(accepted.len() > 100, "only {} accepted", accepted.len());
    assert!(!rejected.is_empty(), "nothing was denied");
    assert!(losses > 3, "only {losses} worker losses");
    assert!(lost_failures > 0, "no task failed by worker loss");
    assert!(reassigned > 0, "no task was requeued after a worker loss");
    assert!(cancelled > 0, "nothing was cancelled");
    assert!(
        grace_failures > 0,
        "no task failed after the provider grace"
    );
    assert!(
        awaited_then_back > 0,
        "no waiting task was taken back by a joining provider"
    );
}

/// A full queue of tasks for a busy worker does not deny a task that an idle
/// worker can start at once: the bound is on waiting tasks, not on running ones.
#[actix::test]
async fn full_queue_does_not_deny_a_task_an_idle_worker_can_start_now() {
    let mgr = paused_manager(1);
    let mut s = Session::start();
    let (_, mut b_link) = register(&mgr, 1, &["b"]).await;
    let (a, mut a_link) = register(&mgr, 1, &["a"]).await;

    let running = accept(&mgr, 1, &s, 1, spec("b", Priority::Normal)).await;
    accept(&mgr, 1, &s, 2, spec("b", Priority::Normal)).await;
    accept(&mgr, 1, &s, 3, spec("b", Priority::Normal)).await;
    assert_eq!(assigned(&mut b_link).await, vec![running]);
    let st = status(&mgr).await;
    assert_eq!((st.queued, st.queue_limit), (2, 2));

    // The queue is full, but worker `a` is idle and provides `a`.
    let now = accept(&mgr, 1, &s, 4, spec("a", Priority::Low)).await;
    assert_eq!(assigned(&mut a_link).await, vec![now]);
    // Another `b` task still finds the queue full.
    match submit(&mgr, 1, &s, 5, spec("b", Priority::High)).await {
        Err(Rejection::Denied { reason, .. }) => assert_eq!(reason, "queue full"),
        other => panic!("expected a deny, got {other:?}"),
    }
    finish(&mgr, a, now).await;
    assert_eq!(
        replies(&mut s).await,
        vec![(4, TaskOutcome::Done(Value::from(now)))]
    );
    let st = status(&mgr).await;
    assert_eq!((st.queued, st.in_flight, st.denied), (2, 1, 1));
}

/// A task whose worker stays silent past its timeout plus the grace is
/// answered by the manager; the slot stays busy until the worker reports the
/// task after all, and a late result is not a second reply.
#[actix::test]
async fn silent_worker_past_the_timeout_gets_the_task_answered_by_the_manager() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let timed = TaskSpec {
        timeout: Some(Duration::from_secs(1)),
        ..spec("t", Priority::Normal)
    };
    let first = accept(&mgr, 1, &s, 1, timed).await;
    assert_eq!(assigned(&mut link).await, vec![first]);
    let second = accept(&mgr, 1, &s, 2, spec("t", Priority::Normal)).await;

    tokio::time::advance(Duration::from_millis(2_900)).await;
    assert!(
        replies(&mut s).await.is_empty(),
        "answered before timeout + grace"
    );
    tokio::time::advance(Duration::from_millis(200)).await;
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 1);
    assert!(failure(&got[0].1).contains("timeout of 1s"), "{got:?}");
    // The worker is told to stop the run; the slot stays busy with it until
    // the worker reports it: nothing new goes there.
    assert_eq!(cancels(&link.drain().await), vec![(first, 0)]);

    finish(&mgr, w, first).await;
    assert_eq!(assigned(&mut link).await, vec![second]);
    finish(&mgr, w, second).await;
    assert_eq!(
        replies(&mut s).await,
        vec![(2, TaskOutcome::Done(Value::from(second)))],
        "the late result of the first task is not a second reply"
    );
}

/// The manager's default timeout applies to tasks submitted without one.
#[actix::test]
async fn default_timeout_applies_to_tasks_without_one() {
    tokio::time::pause();
    let mgr = Manager::new(ManagerSettings {
        default_timeout: Some(Duration::from_millis(500)),
        timeout_grace: Duration::from_millis(100),
        ..ManagerSettings::default()
    })
    .start();
    let mut s = Session::start();
    let (_w, mut link) = register(&mgr, 1, &["t"]).await;
    accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    let WorkerOrder::Assign { timeout, .. } = link.next().await else {
        panic!("expected an assign");
    };
    assert_eq!(
        timeout,
        Some(Duration::from_millis(500)),
        "the worker is told"
    );
    tokio::time::advance(Duration::from_millis(700)).await;
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(failure(&got[0].1).contains("timeout of 500ms"), "{got:?}");
}

/// A task sent without a number of attempts (0) gets the manager's default;
/// with a default of 2 it survives the loss of its first worker.
#[actix::test]
async fn default_attempts_apply_to_tasks_without_a_number() {
    tokio::time::pause();
    let mgr = Manager::new(ManagerSettings {
        default_attempts: 2,
        ..ManagerSettings::default()
    })
    .start();
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, 1, &["t"]).await;
    let (b, b_link) = register(&mgr, 1, &["t"]).await;
    let unset = TaskSpec {
        attempts: 0,
        ..spec("t", Priority::Normal)
    };
    let id = accept(&mgr, 1, &s, 1, unset).await;
    let (lost, other, mut other_link) = if assigned(&mut a_link).await == vec![id] {
        (a, b, b_link)
    } else {
        (b, a, a_link)
    };
    within("WorkerLost", mgr.send(WorkerLost { worker: lost }))
        .await
        .unwrap();
    assert!(replies(&mut s).await.is_empty(), "requeued, not failed");
    assert_eq!(assigned(&mut other_link).await.len(), 1, "started again");
    within("WorkerLost", mgr.send(WorkerLost { worker: other }))
        .await
        .unwrap();
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(failure(&got[0].1).contains("tried 2 times"), "{got:?}");
}

async fn credits(mgr: &Addr<Manager>) -> Vec<(WorkerId, Vec<SlotIndex>)> {
    within("credits", mgr.send(GetCredits))
        .await
        .expect("manager alive")
}

/// The production path of admission: once a worker's credits are spent and
/// the queue is at its bound, the reply to the submit message is the deny.
/// A credit comes back only with the report of the run in its slot.
#[actix::test]
async fn spent_credits_make_the_submit_reply_a_deny() {
    let mgr = paused_manager(0);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 2, &["t"]).await;
    let a = accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    let b = accept(&mgr, 1, &s, 2, spec("t", Priority::Normal)).await;
    let given = assigns(link.drain().await);
    let slots: BTreeSet<SlotIndex> = given.iter().map(|(_, slot, _)| *slot).collect();
    assert_eq!(slots, BTreeSet::from([0, 1]), "each run names its own slot");
    assert_eq!(credits(&mgr).await, vec![(w, vec![])]);
    match submit(&mgr, 1, &s, 3, spec("t", Priority::Normal)).await {
        Err(Rejection::Denied { reason, .. }) => assert_eq!(reason, "queue full"),
        other => panic!("expected a deny, got {other:?}"),
    }
    finish(&mgr, w, a).await;
    assert_eq!(credits(&mgr).await.len(), 1);
    assert_eq!(credits(&mgr).await[0].1.len(), 1, "one credit is back");
    accept(&mgr, 1, &s, 4, spec("t", Priority::Normal)).await;
    finish(&mgr, w, b).await;
}

/// An explicit cancel answers a queued task at once and a running one too,
/// and tells the worker to stop the run; the run's slot is a credit again
/// only when the worker reports the run, and its late result is no second
/// reply.
#[actix::test]
async fn cancel_answers_queued_and_running_tasks_and_stops_the_run() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let running = accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    accept(&mgr, 1, &s, 2, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![running]);

    for request_id in [2, 1, 77] {
        mgr.do_send(CancelTask {
            session: 1,
            request_id,
        });
    }
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[0].0, failure(&got[0].1)),
        (2, "cancelled by the client")
    );
    assert_eq!(
        (got[1].0, failure(&got[1].1)),
        (1, "cancelled by the client")
    );
    let orders = link.drain().await;
    assert_eq!(cancels(&orders), vec![(running, 0)]);
    assert_eq!(
        credits(&mgr).await,
        vec![(w, vec![])],
        "slot busy until reported"
    );
    assert_eq!(status(&mgr).await.worker_list[0].in_flight, 1);

    report(&mgr, w, running, TaskOutcome::Failed("cancelled".into())).await;
    assert!(replies(&mut s).await.is_empty(), "no second reply");
    assert_eq!(credits(&mgr).await, vec![(w, vec![0])]);
}

/// A client that leaves has its queued tasks dropped and its running ones
/// cancelled on their workers; another session's task then gets the slot.
#[actix::test]
async fn a_client_that_leaves_has_its_running_tasks_cancelled() {
    let mgr = paused_manager(3);
    let gone = Session::start();
    let mut stays = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let run = accept(&mgr, 1, &gone, 1, spec("t", Priority::Normal)).await;
    accept(&mgr, 1, &gone, 2, spec("t", Priority::Normal)).await;
    let other = accept(&mgr, 2, &stays, 1, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![run]);

    within("ClientGone", mgr.send(ClientGone { session: 1 }))
        .await
        .unwrap();
    assert_eq!(cancels(&link.drain().await), vec![(run, 0)]);
    let st = status(&mgr).await;
    assert_eq!((st.queued, st.in_flight), (1, 1));

    report(&mgr, w, run, TaskOutcome::Failed("cancelled".into())).await;
    assert_eq!(assigned(&mut link).await, vec![other]);
    finish(&mgr, w, other).await;
    assert_eq!(
        replies(&mut stays).await,
        vec![(1, TaskOutcome::Done(Value::from(other)))]
    );
}

/// A worker that registers with runs still going (from a connection the
/// manager lost, or from before a manager restart) gets them cancelled, and
/// their slots are not credits until it reports them.
#[actix::test]
async fn runs_a_worker_brings_to_registration_are_cancelled_and_hold_their_slots() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let mut link = Link::start();
    let w = within(
        "registration",
        mgr.send(RegisterWorker {
            address: "stub".into(),
            capacity: 3,
            tasks: vec!["t".into()],
            eval: false,
            running: vec![(9_001, 2), (9_002, 0)],
            link: link.recipient(),
            load: None,
            finished: vec![],
            finished_dropped: 0,
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let mut got = cancels(&link.drain().await);
    got.sort_unstable();
    assert_eq!(got, vec![(9_001, 2), (9_002, 0)]);
    assert_eq!(credits(&mgr).await, vec![(w, vec![1])]);
    let st = status(&mgr).await;
    assert_eq!((st.capacity, st.in_flight), (3, 2));

    let t = accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    let given = assigns(link.drain().await);
    assert_eq!((given[0].0, given[0].1), (t, 1), "the one free slot");
    report(&mgr, w, 9_001, TaskOutcome::Done(Value::Nil)).await;
    assert_eq!(credits(&mgr).await, vec![(w, vec![2])]);
    assert!(
        replies(&mut s).await.is_empty(),
        "an orphan's result is nobody's reply"
    );

    // Slots named twice, or beyond the capacity, are refused.
    for running in [vec![(1, 0), (2, 0)], vec![(3, 5)]] {
        let refused = within(
            "registration",
            mgr.send(RegisterWorker {
                address: "stub".into(),
                capacity: 2,
                tasks: vec!["t".into()],
                eval: false,
                running,
                link: Link::start().recipient(),
                load: None,
                finished: vec![],
                finished_dropped: 0,
            }),
        )
        .await
        .unwrap();
        assert!(refused.is_err(), "{refused:?}");
    }
}

/// A worker may claim at most MAX_WORKER_CAPACITY slots: the manager keeps
/// a credit for each.
#[actix::test]
async fn a_worker_claiming_more_slots_than_the_bound_is_refused() {
    let mgr = paused_manager(3);
    let refused = within(
        "registration",
        mgr.send(RegisterWorker {
            address: "stub".into(),
            capacity: MAX_WORKER_CAPACITY + 1,
            tasks: vec!["t".into()],
            eval: false,
            running: vec![],
            link: Link::start().recipient(),
            load: None,
            finished: vec![],
            finished_dropped: 0,
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        refused.unwrap_err(),
        Refusal::permanent(format!("capacity must be at most {MAX_WORKER_CAPACITY}"))
    );
    assert_eq!(status(&mgr).await.capacity, 0);
    register(&mgr, MAX_WORKER_CAPACITY, &["t"]).await;
    assert_eq!(status(&mgr).await.capacity, u64::from(MAX_WORKER_CAPACITY));
}

/// Each refusal says whether retrying can help: a registration that is
/// wrong in itself is refused for good; one naming a run the manager still
/// tracks (it has not yet noticed the worker's old connection is gone) only
/// for now, and the same registration is taken once that run is let go.
#[actix::test]
async fn registration_refusals_say_whether_retrying_can_help() {
    let mgr = paused_manager(3);
    let try_register = |capacity: u32, tasks: &[&str], running: Vec<(RunId, SlotIndex)>| {
        mgr.send(RegisterWorker {
            address: "stub".into(),
            capacity,
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            eval: false,
            running,
            link: Link::start().recipient(),
            load: None,
            finished: vec![],
            finished_dropped: 0,
        })
    };
    for (capacity, tasks, running, why) in [
        (0, &["t"][..], vec![], "capacity must be at least 1"),
        (
            1,
            &[][..],
            vec![],
            "a worker must provide at least one task",
        ),
        (
            2,
            &["t"][..],
            vec![(1, 0), (2, 0)],
            "running runs must name distinct slots below the capacity",
        ),
        (
            2,
            &["t"][..],
            vec![(1, 2)],
            "running runs must name distinct slots below the capacity",
        ),
    ] {
        let refused = within("registration", try_register(capacity, tasks, running))
            .await
            .unwrap();
        assert_eq!(refused, Err(Refusal::permanent(why)));
    }

    let s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let task = accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![task]);
    let refused = within("registration", try_register(1, &["t"], vec![(task, 0)]))
        .await
        .unwrap();
    assert_eq!(
        refused,
        Err(Refusal::for_now(format!(
            "run {task} is already known to this manager"
        )))
    );
    within("WorkerLost", mgr.send(WorkerLost { worker: w }))
        .await
        .unwrap();
    let again = within("registration", try_register(1, &["t"], vec![(task, 0)]))
        .await
        .unwrap();
    assert!(again.is_ok(), "{again:?}");
}

/// A task whose worker is lost is requeued and runs elsewhere under a fresh
/// run id; when the lost worker comes back with the old run still going, that
/// run is cancelled and its late result frees the slot without a reply.
#[actix::test]
async fn the_old_run_of_a_requeued_task_is_cancelled_when_its_worker_returns() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, 1, &["t"]).await;
    let task = accept(
        &mgr,
        1,
        &s,
        1,
        TaskSpec {
            attempts: 2,
            ..spec("t", Priority::Normal)
        },
    )
    .await;
    assert_eq!(assigned(&mut a_link).await, vec![task]);
    let (b, mut b_link) = register(&mgr, 1, &["t"]).await;
    within("WorkerLost", mgr.send(WorkerLost { worker: a }))
        .await
        .unwrap();
    let rerun = assigned(&mut b_link).await;
    assert_eq!(rerun.len(), 1);
    assert_ne!(rerun[0], task);

    let mut back = Link::start();
    let a2 = within(
        "re-registration",
        mgr.send(RegisterWorker {
            address: "stub".into(),
            capacity: 1,
            tasks: vec!["t".into()],
            eval: false,
            running: vec![(task, 0)],
            link: back.recipient(),
            load: None,
            finished: vec![],
            finished_dropped: 0,
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(cancels(&back.drain().await), vec![(task, 0)]);
    report(&mgr, a2, task, TaskOutcome::Done(Value::from("stale"))).await;
    assert!(
        replies(&mut s).await.is_empty(),
        "the old run's result is no reply"
    );
    finish(&mgr, b, rerun[0]).await;
    assert_eq!(
        replies(&mut s).await,
        vec![(1, TaskOutcome::Done(Value::from(rerun[0])))]
    );
    assert_eq!(credits(&mgr).await, vec![(b, vec![0]), (a2, vec![0])]);
}

/// A place freed in a full queue goes to the clients that were denied, in
/// the order they were first denied, not to whoever asks first; a client
/// that leaves gives up its turn.
#[actix::test]
async fn a_freed_place_goes_to_the_client_denied_first() {
    let mgr = paused_manager(2);
    let (mut a, mut b, c) = (Session::start(), Session::start(), Session::start());
    let (w, mut link) = register(&mgr, 1, &["t"]).await;

    let first = accept(&mgr, 1, &a, 1, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![first]);
    let second = accept(&mgr, 1, &a, 2, spec("t", Priority::Normal)).await;
    let third = accept(&mgr, 1, &a, 3, spec("t", Priority::Normal)).await;
    let deny_reason = |r: Result<TaskId, Rejection>| match r {
        Err(Rejection::Denied { reason, .. }) => reason,
        other => panic!("expected a deny, got {other:?}"),
    };
    assert_eq!(
        deny_reason(submit(&mgr, 2, &b, 1, spec("t", Priority::Normal)).await),
        "queue full"
    );

    // A place frees: session 1 asks first, but session 2 was waiting.
    finish(&mgr, w, first).await;
    assert_eq!(replies(&mut a).await.len(), 1);
    assert_eq!(assigned(&mut link).await, vec![second]);
    let reason = deny_reason(submit(&mgr, 1, &a, 4, spec("t", Priority::Normal)).await);
    assert!(reason.contains("in turn"), "{reason:?}");
    accept(&mgr, 2, &b, 2, spec("t", Priority::Normal)).await;

    // Next place: session 1 is now first in line; a newcomer waits.
    finish(&mgr, w, second).await;
    assert_eq!(assigned(&mut link).await, vec![third]);
    let reason = deny_reason(submit(&mgr, 3, &c, 1, spec("t", Priority::Normal)).await);
    assert!(reason.contains("in turn"), "{reason:?}");
    // Session 1 leaves: its turn passes to session 3.
    mgr.do_send(ClientGone { session: 1 });
    accept(&mgr, 3, &c, 2, spec("t", Priority::Normal)).await;
    b.assert_none("session 2 before its task finished").await;
}

/// With a queue factor of 1 (queue bound = capacity) places are held for
/// waiting clients too, once the queue is half full: otherwise the client
/// that was just served would take every freed place.
#[actix::test]
async fn with_queue_factor_one_a_freed_place_still_goes_to_the_waiting_client() {
    let mgr = paused_manager(1);
    let (mut a, b) = (Session::start(), Session::start());
    let (w, mut link) = register(&mgr, 2, &["t"]).await;
    let t1 = accept(&mgr, 1, &a, 1, spec("t", Priority::Normal)).await;
    let t2 = accept(&mgr, 1, &a, 2, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![t1, t2]);
    let t3 = accept(&mgr, 1, &a, 3, spec("t", Priority::Normal)).await;
    accept(&mgr, 1, &a, 4, spec("t", Priority::Normal)).await;
    assert!(matches!(
        submit(&mgr, 2, &b, 1, spec("t", Priority::Normal)).await,
        Err(Rejection::Denied { .. })
    ));

    finish(&mgr, w, t1).await;
    assert_eq!(replies(&mut a).await.len(), 1);
    assert_eq!(assigned(&mut link).await, vec![t3]);
    match submit(&mgr, 1, &a, 5, spec("t", Priority::Normal)).await {
        Err(Rejection::Denied { reason, .. }) => assert!(reason.contains("in turn"), "{reason:?}"),
        other => panic!("the served client took the waiting one's place: {other:?}"),
    }
    accept(&mgr, 2, &b, 2, spec("t", Priority::Normal)).await;
}

/// A denied client is told to come back when a place is likely to be
/// there for it: one place for each client ahead of it in line and one for
/// itself, less the places free now, each freeing in an average task time
/// ÷ capacity. The time the queue ahead takes to drain does not count (it
/// did once, and told clients to stay away several times too long).
#[actix::test]
async fn retry_after_counts_the_places_a_denied_client_waits_for() {
    let mgr = paused_manager(2);
    let (w, mut link) = register(&mgr, 2, &["t"]).await;
    let mut s = Session::start();
    let t = || spec("t", Priority::Normal);

    // Two runs of 100 ms each: the average task time is 100 ms.
    accept(&mgr, 1, &s, 1, t()).await;
    accept(&mgr, 1, &s, 2, t()).await;
    let warm = assigned(&mut link).await;
    assert_eq!(warm.len(), 2);
    tokio::time::advance(Duration::from_millis(100)).await;
    for run in warm {
        finish(&mgr, w, run).await;
    }
    assert_eq!(replies(&mut s).await.len(), 2);

    // Both slots busy and the queue full (capacity 2 × factor 2).
    for req in 3..=8 {
        accept(&mgr, 1, &s, req, t()).await;
    }
    let running = assigned(&mut link).await;
    assert_eq!(running.len(), 2);

    let others: Vec<Session> = (0..4).map(|_| Session::start()).collect();
    let denied = |r: Result<TaskId, Rejection>| match r {
        Err(Rejection::Denied {
            reason,
            retry_after,
        }) => (reason, retry_after),
        other => panic!("expected a deny, got {other:?}"),
    };
    let near = |got: Duration, ms: u64| {
        let want = Duration::from_millis(ms);
        assert!(
            got.abs_diff(want) <= Duration::from_millis(2),
            "retry_after {got:?}, expected about {want:?}"
        );
    };
    // Newcomers 10, 11, 12 line up: 1, 2, 3 places at 50 ms each.
    for (i, ms) in [50, 100, 150].into_iter().enumerate() {
        let session = 10 + i as SessionId;
        let (reason, after) = denied(submit(&mgr, session, &others[i], 1, t()).await);
        assert_eq!(reason, "queue full");
        near(after, ms);
    }
    // The first in line asking again is still one place away.
    near(denied(submit(&mgr, 10, &others[0], 2, t()).await).1, 50);

    // A run ends after 100 ms, a queued task starts: one place is free,
    // held for 10.
    tokio::time::advance(Duration::from_millis(100)).await;
    finish(&mgr, w, running[0]).await;
    assert_eq!(assigned(&mut link).await.len(), 1);
    let (reason, after) = denied(submit(&mgr, 11, &others[1], 2, t()).await);
    assert!(reason.contains("in turn"), "{reason:?}");
    near(after, 50);
    // A newcomer behind three, with one place free: three more to free.
    near(denied(submit(&mgr, 13, &others[3], 1, t()).await).1, 150);
    accept(&mgr, 10, &others[0], 3, t()).await;
}

/// `status` counts failures apart from successes, and the average task
/// time (like each worker's, which routing uses) is over successes only.
#[actix::test]
async fn failures_are_counted_apart_and_left_out_of_the_average() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;

    let slow_failure = accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![slow_failure]);
    tokio::time::advance(Duration::from_secs(10)).await;
    report(&mgr, w, slow_failure, TaskOutcome::Failed("boom".into())).await;
    assert_eq!(replies(&mut s).await.len(), 1);
    let st = status(&mgr).await;
    assert_eq!((st.completed, st.failed), (0, 1), "{st:?}");
    assert_eq!(st.avg_task_ms, 0.0, "a failure is not a task time: {st:?}");
    assert_eq!(st.worker_list[0].avg_ms, 0.0, "{st:?}");

    let quick = accept(&mgr, 1, &s, 2, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![quick]);
    tokio::time::advance(Duration::from_millis(20)).await;
    finish(&mgr, w, quick).await;
    assert_eq!(replies(&mut s).await.len(), 1);
    let st = status(&mgr).await;
    assert_eq!((st.completed, st.failed), (1, 1), "{st:?}");
    assert!(
        (st.avg_task_ms - 20.0).abs() < 1.0,
        "average over the success only: {st:?}"
    );
}

/// Shutdown: a queued task is answered at once as not started, new tasks
/// are denied "manager shutting down", nothing more is started, and the
/// running task finishes with its result; the report then comes.
#[actix::test]
async fn shutdown_answers_the_queue_lets_running_tasks_finish_and_denies_new_ones() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let running = accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    accept(&mgr, 1, &s, 2, spec("t", Priority::Low)).await;
    assert_eq!(assigned(&mut link).await, vec![running]);

    let report = actix_rt::spawn(mgr.send(Shutdown {
        deadline: Duration::from_secs(30),
    }));
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0, failure(&got[0].1)),
        (2, "manager shutting down: task not started")
    );
    match submit(&mgr, 2, &s, 3, spec("t", Priority::High)).await {
        Err(Rejection::Denied {
            reason,
            retry_after,
        }) => {
            assert_eq!(reason, "manager shutting down");
            assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
        }
        other => panic!("expected a deny, got {other:?}"),
    }
    let st = status(&mgr).await;
    assert_eq!((st.queued, st.in_flight), (0, 1), "{st:?}");
    assert!(
        !report.is_finished(),
        "the drain waits for the running task"
    );

    finish(&mgr, w, running).await;
    assert_eq!(
        replies(&mut s).await,
        vec![(1, TaskOutcome::Done(Value::from(running)))]
    );
    assert!(link.drain().await.is_empty(), "nothing started after");
    let report = within("the drain report", report).await.unwrap().unwrap();
    assert_eq!(
        report,
        ShutdownReport {
            running: 1,
            not_started: 1,
            cancelled: 0,
            unconfirmed: 0,
            kept_running: 0,
        }
    );
    // Asked again, it answers at once with the same report.
    let again = within(
        "a second shutdown",
        mgr.send(Shutdown {
            deadline: Duration::ZERO,
        }),
    )
    .await
    .unwrap();
    assert_eq!(again, report);
}

/// At the drain deadline a task still running is answered as cancelled and
/// its run cancelled on the worker; the drain ends once the worker reports
/// the run stopped, or after the grace if it never does. A task whose
/// worker is lost during the drain is answered, not requeued.
#[actix::test]
async fn at_the_drain_deadline_running_tasks_are_cancelled_and_answered() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let (w1, mut link1) = register(&mgr, 1, &["t"]).await;
    let (w2, mut link2) = register(&mgr, 1, &["t"]).await;
    let (w3, mut link3) = register(&mgr, 1, &["t"]).await;
    let retried = TaskSpec {
        attempts: 3,
        ..spec("t", Priority::Normal)
    };
    let mut runs = BTreeMap::new();
    for request_id in 1..=3 {
        let id = accept(&mgr, 1, &s, request_id, retried.clone()).await;
        runs.insert(id, request_id);
    }
    let mut on = HashMap::new();
    for (w, link) in [(w1, &mut link1), (w2, &mut link2), (w3, &mut link3)] {
        for run in assigned(link).await {
            on.insert(w, run);
        }
    }
    assert_eq!(on.len(), 3, "one task per worker: {on:?}");

    let report = actix_rt::spawn(mgr.send(Shutdown {
        deadline: Duration::from_secs(1),
    }));
    within("WorkerLost", mgr.send(WorkerLost { worker: w3 }))
        .await
        .unwrap();
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, runs[&on[&w3]]);
    assert!(
        failure(&got[0].1).contains("not requeued: manager shutting down"),
        "{got:?}"
    );

    tokio::time::advance(Duration::from_millis(900)).await;
    assert!(
        replies(&mut s).await.is_empty(),
        "answered before the deadline"
    );
    tokio::time::advance(Duration::from_millis(200)).await;
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for (_, outcome) in &got {
        assert_eq!(
            failure(outcome),
            "manager shutting down: task cancelled at the drain deadline (1s)"
        );
    }
    assert_eq!(cancels(&link1.drain().await), vec![(on[&w1], 0)]);
    assert_eq!(cancels(&link2.drain().await), vec![(on[&w2], 0)]);
    assert!(!report.is_finished(), "waits for the cancelled runs");

    // One worker reports its run stopped; the other never does.
    report_run(&mgr, w1, on[&w1]).await;
    assert!(replies(&mut s).await.is_empty(), "no second reply");
    tokio::time::advance(Duration::from_millis(2_100)).await;
    let report = within("the drain report", report).await.unwrap().unwrap();
    assert_eq!(
        report,
        ShutdownReport {
            running: 3,
            not_started: 0,
            cancelled: 2,
            unconfirmed: 1,
            kept_running: 0,
        }
    );
}

async fn report_run(mgr: &Addr<Manager>, worker: WorkerId, run: RunId) {
    report(mgr, worker, run, TaskOutcome::Failed("cancelled".into())).await;
}

// ---- tasks by id ----

/// Starts a paused manager that keeps outcomes within these bounds.
fn keeping_manager(ttl: Duration, max: usize, max_bytes: usize) -> Addr<Manager> {
    tokio::time::pause();
    Manager::new(ManagerSettings {
        result_ttl: ttl,
        result_max: max,
        result_max_bytes: max_bytes,
        ..ManagerSettings::default()
    })
    .start()
}

async fn detach(mgr: &Addr<Manager>, session: SessionId, to: &Session, request_id: u64) -> TaskId {
    within(
        "a detached submit to be answered",
        mgr.send(SubmitTask {
            session,
            request_id,
            spec: spec("t", Priority::Normal),
            reply_to: to.recipient(),
            detach: true,
            opts: Default::default(),
        }),
    )
    .await
    .expect("manager alive")
    .expect("detached task accepted")
    .task
}

async fn state(mgr: &Addr<Manager>, task: TaskId) -> TaskState {
    within(
        "a result request",
        mgr.send(GetResult {
            task,
            wait: false,
            session: 99,
        }),
    )
    .await
    .expect("manager alive")
}

async fn cancel_id(mgr: &Addr<Manager>, task: TaskId) -> CancelResult {
    within("a cancel by id", mgr.send(CancelById { task }))
        .await
        .expect("manager alive")
}

fn done(v: impl Into<Value>) -> TaskState {
    TaskState::finished(TaskOutcome::Done(v.into()))
}

/// A detached task is neither dropped nor cancelled when its client
/// leaves; its outcome goes to no session but is kept, and read again and
/// again by id. An attached task's outcome is not kept.
#[actix::test]
async fn a_detached_task_outlives_its_client_and_its_outcome_is_kept() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let id = detach(&mgr, 1, &s, 1).await;
    let queued = detach(&mgr, 1, &s, 2).await;
    assert_eq!(assigned(&mut link).await, vec![id]);
    assert_eq!(state(&mgr, id).await, TaskState::Running);
    assert_eq!(state(&mgr, queued).await, TaskState::Queued);

    within("ClientGone", mgr.send(ClientGone { session: 1 }))
        .await
        .unwrap();
    assert!(cancels(&link.drain().await).is_empty(), "not cancelled");
    assert_eq!(status(&mgr).await.queued, 1, "not dropped");

    finish(&mgr, w, id).await;
    assert_eq!(assigned(&mut link).await, vec![queued]);
    finish(&mgr, w, queued).await;
    assert!(replies(&mut s).await.is_empty(), "no reply to a session");
    assert_eq!(state(&mgr, id).await, done(id));
    assert_eq!(state(&mgr, id).await, done(id), "read twice");
    assert_eq!(state(&mgr, queued).await, done(queued));

    let attached = accept(&mgr, 2, &s, 1, spec("t", Priority::Normal)).await;
    assert_eq!(state(&mgr, attached).await, TaskState::Running);
    finish(&mgr, w, attached).await;
    assert_eq!(replies(&mut s).await.len(), 1);
    assert_eq!(state(&mgr, attached).await, TaskState::Unknown);
    assert_eq!(
        state(&mgr, id.wrapping_add(1_000_000)).await,
        TaskState::Unknown
    );
}

/// A waiting request is answered once the task finishes, not before; a
/// wait on an unknown id is answered at once.
#[actix::test]
async fn a_wait_is_answered_when_the_task_finishes() {
    let mgr = paused_manager(3);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let id = detach(&mgr, 1, &s, 1).await;
    assert_eq!(assigned(&mut link).await, vec![id]);
    let mut wait = Box::pin(mgr.send(GetResult {
        task: id,
        wait: true,
        session: 2,
    }));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut wait)
            .await
            .is_err(),
        "answered before the task finished"
    );
    report(&mgr, w, id, TaskOutcome::Failed("boom".into())).await;
    let got = within("the wait to end", wait).await.unwrap();
    assert_eq!(got, TaskState::finished(TaskOutcome::Failed("boom".into())));
    let unknown = within(
        "a wait on an unknown id",
        mgr.send(GetResult {
            task: id.wrapping_add(77),
            wait: true,
            session: 2,
        }),
    )
    .await
    .unwrap();
    assert_eq!(unknown, TaskState::Unknown);
}

/// A wait of a session that leaves is let go; the task's outcome is still
/// kept for others.
#[actix::test]
async fn a_wait_ends_with_its_session() {
    let mgr = paused_manager(3);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let id = detach(&mgr, 1, &s, 1).await;
    assert_eq!(assigned(&mut link).await, vec![id]);
    let wait = mgr.send(GetResult {
        task: id,
        wait: true,
        session: 5,
    });
    within("ClientGone", mgr.send(ClientGone { session: 5 }))
        .await
        .unwrap();
    assert_eq!(within("the wait", wait).await.unwrap(), TaskState::Unknown);
    finish(&mgr, w, id).await;
    assert_eq!(state(&mgr, id).await, done(id));
}

/// Past `result_max` outcomes the oldest is evicted first.
#[actix::test]
async fn outcomes_past_the_count_bound_evict_the_oldest() {
    let mgr = keeping_manager(Duration::from_secs(3600), 2, 1 << 20);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let mut ids = Vec::new();
    for request in 1..=3 {
        let id = detach(&mgr, 1, &s, request).await;
        assert_eq!(assigned(&mut link).await, vec![id]);
        finish(&mgr, w, id).await;
        ids.push(id);
    }
    assert_eq!(state(&mgr, ids[0]).await, TaskState::Unknown, "evicted");
    assert_eq!(state(&mgr, ids[1]).await, done(ids[1]));
    assert_eq!(state(&mgr, ids[2]).await, done(ids[2]));
}

/// Past `result_max_bytes` the oldest outcomes are evicted first; one
/// larger than the bound alone is kept as a failure that says so.
#[actix::test]
async fn outcomes_past_the_byte_bound_evict_the_oldest() {
    let mgr = keeping_manager(Duration::from_secs(3600), 100, 500);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let big = Value::from("x".repeat(150));
    let mut ids = Vec::new();
    for request in 1..=3 {
        let id = detach(&mgr, 1, &s, request).await;
        assert_eq!(assigned(&mut link).await, vec![id]);
        report(&mgr, w, id, TaskOutcome::Done(big.clone())).await;
        ids.push(id);
    }
    assert_eq!(state(&mgr, ids[0]).await, TaskState::Unknown, "evicted");
    assert_eq!(state(&mgr, ids[1]).await, done(big.clone()));
    assert_eq!(state(&mgr, ids[2]).await, done(big));

    let huge = detach(&mgr, 1, &s, 4).await;
    assert_eq!(assigned(&mut link).await, vec![huge]);
    report(
        &mgr,
        w,
        huge,
        TaskOutcome::Done(Value::from("y".repeat(1000))),
    )
    .await;
    match state(&mgr, huge).await {
        TaskState::Finished(o) if matches!(&*o, TaskOutcome::Failed(e) if e.contains("result_max_bytes")) =>
            {}
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// One outcome per id: a wait on a detached task whose result is too large
/// to keep gets the failure every later read gets, not the value; a wait on
/// one that is kept gets what is kept.
#[actix::test]
async fn a_wait_gets_the_outcome_that_is_kept() {
    let mgr = keeping_manager(Duration::from_secs(3600), 100, 500);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    for (request, len) in [(1, 100), (2, 1000)] {
        let id = detach(&mgr, 1, &s, request).await;
        assert_eq!(assigned(&mut link).await, vec![id]);
        let wait = mgr.send(GetResult {
            task: id,
            wait: true,
            session: 2,
        });
        let value = Value::from("y".repeat(len));
        report(&mgr, w, id, TaskOutcome::Done(value)).await;
        let waited = within("the wait to end", wait).await.unwrap();
        let kept = state(&mgr, id).await;
        assert_eq!(waited, kept, "a result of {len} bytes");
        if len > 500 {
            assert!(
                matches!(&kept, TaskState::Finished(o) if matches!(&**o, TaskOutcome::Failed(e) if e.contains("not kept"))),
                "{kept:?}"
            );
        }
    }
}

/// An outcome expires `result_ttl` after its task finished.
#[actix::test]
async fn outcomes_expire_after_the_ttl() {
    let mgr = keeping_manager(Duration::from_secs(10), 100, 1 << 20);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let id = detach(&mgr, 1, &s, 1).await;
    assert_eq!(assigned(&mut link).await, vec![id]);
    finish(&mgr, w, id).await;
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(state(&mgr, id).await, done(id));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(state(&mgr, id).await, TaskState::Unknown, "expired");
}

/// Cancel by id, from any session: a queued task is removed, a running
/// one cancelled on its worker, both answered (kept, for detached ones) as
/// cancelled; a second cancel finds it finished; an unknown id is said so.
/// An attached task cancelled by id is answered to its own session.
#[actix::test]
async fn cancel_by_id_stops_queued_and_running_tasks() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let running = detach(&mgr, 1, &s, 1).await;
    let queued = detach(&mgr, 1, &s, 2).await;
    let attached = accept(&mgr, 1, &s, 3, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut link).await, vec![running]);

    let cancelled = TaskState::finished(TaskOutcome::Failed("cancelled by the client".into()));
    assert_eq!(cancel_id(&mgr, queued).await, CancelResult::Cancelled);
    assert_eq!(state(&mgr, queued).await, cancelled);
    assert_eq!(cancel_id(&mgr, running).await, CancelResult::Cancelled);
    assert_eq!(state(&mgr, running).await, cancelled);
    assert_eq!(cancels(&link.drain().await), vec![(running, 0)]);
    assert_eq!(cancel_id(&mgr, running).await, CancelResult::Finished);
    assert_eq!(
        cancel_id(&mgr, running.wrapping_add(1_000_000)).await,
        CancelResult::Unknown
    );

    assert_eq!(cancel_id(&mgr, attached).await, CancelResult::Cancelled);
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0, failure(&got[0].1)),
        (3, "cancelled by the client")
    );
    report(&mgr, w, running, TaskOutcome::Failed("cancelled".into())).await;
    assert_eq!(state(&mgr, running).await, cancelled, "outcome unchanged");
    assert_eq!(credits(&mgr).await, vec![(w, vec![0])]);
}

/// Past `MAX_RESULT_WAITERS` waits held, a wait on a running task is
/// answered at once with its state; the waits held are all answered when
/// it finishes.
#[actix::test]
async fn waits_past_the_bound_are_answered_at_once() {
    let mgr = paused_manager(3);
    let s = Session::start();
    let (w, mut link) = register(&mgr, 1, &["t"]).await;
    let id = detach(&mgr, 1, &s, 1).await;
    assert_eq!(assigned(&mut link).await, vec![id]);
    let ask = || GetResult {
        task: id,
        wait: true,
        session: 2,
    };
    let held: Vec<_> = (0..MAX_RESULT_WAITERS).map(|_| mgr.send(ask())).collect();
    let over = within("a wait past the bound", mgr.send(ask()))
        .await
        .unwrap();
    assert_eq!(over, TaskState::Running);
    finish(&mgr, w, id).await;
    let answers = within("the held waits", futures_util::future::join_all(held)).await;
    assert_eq!(answers.len(), MAX_RESULT_WAITERS);
    assert!(answers.into_iter().all(|a| a.unwrap() == done(id)));
}

// ---- the grace for a task kind's providers ----

/// A worker `t` runs alone (capacity 1): task `first` runs on it with two
/// attempts, four more wait behind it. Returns the ids in order.
async fn one_provider_busy(mgr: &Addr<Manager>, s: &Session, link: &mut Link) -> Vec<TaskId> {
    let mut ids = vec![
        accept(
            mgr,
            1,
            s,
            1,
            TaskSpec {
                attempts: 2,
                ..TaskSpec::new("t", Value::from(1))
            },
        )
        .await,
    ];
    for req in 2..=5 {
        ids.push(accept(mgr, 1, s, req, TaskSpec::new("t", Value::from(req))).await);
    }
    assert_eq!(assigned(link).await, vec![ids[0]]);
    ids
}

/// Lets the manager act on what fell due after the clock moved. An actor
/// serves its mailbox before its timers in each turn, so a first round trip
/// may be answered before them; the second is answered after.
async fn settle(mgr: &Addr<Manager>) -> ClusterStatus {
    status(mgr).await;
    status(mgr).await
}

async fn lose(mgr: &Addr<Manager>, worker: WorkerId) {
    within("WorkerLost", mgr.send(WorkerLost { worker }))
        .await
        .unwrap();
}

/// The only worker providing `t` is lost with four tasks queued and one
/// running that has an attempt left: nothing is answered; a replacement
/// registering within the grace gets all five, the requeued one first,
/// then the queue in its order.
#[actix::test]
async fn a_replacement_within_the_grace_gets_the_queue_of_the_lost_provider() {
    let mgr = paused_manager(5);
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, 1, &["t"]).await;
    let ids = one_provider_busy(&mgr, &s, &mut a_link).await;
    lose(&mgr, a).await;
    tokio::time::advance(Duration::from_secs(29)).await;
    let st = settle(&mgr).await;
    assert_eq!(
        (
            st.awaiting_provider,
            st.queued,
            st.queue_limit,
            st.in_flight
        ),
        (5, 0, 0, 0),
        "kept beyond a bound of 0: {st:?}"
    );
    assert_eq!(
        replies(&mut s).await,
        vec![],
        "nothing answered in the grace"
    );
    assert_eq!(state(&mgr, ids[4]).await, TaskState::Queued);

    let (b, mut b_link) = register(&mgr, 1, &["t"]).await;
    let st = status(&mgr).await;
    assert_eq!((st.awaiting_provider, st.queued, st.in_flight), (0, 4, 1));
    let mut order = Vec::new();
    for _ in 0..5 {
        let got = assigns(b_link.drain().await);
        assert_eq!(got.len(), 1, "one slot, one assign: {got:?}");
        let (run, _, args) = got.into_iter().next().unwrap();
        order.push(args.as_i64().unwrap());
        report(&mgr, b, run, TaskOutcome::Done(args)).await;
    }
    assert_eq!(order, vec![1, 2, 3, 4, 5]);
    let got = replies(&mut s).await;
    let done: Vec<u64> = got
        .iter()
        .filter(|(_, o)| matches!(o, TaskOutcome::Done(_)))
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(done, vec![1, 2, 3, 4, 5], "{got:?}");
    assert_eq!(ids.len(), 5);
}

/// With no provider back, the tasks wait the whole grace (30 s by default)
/// and are then failed, saying how long they waited.
#[actix::test]
async fn without_a_replacement_the_queue_fails_after_the_grace() {
    let mgr = paused_manager(5);
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, 1, &["t"]).await;
    one_provider_busy(&mgr, &s, &mut a_link).await;
    lose(&mgr, a).await;
    tokio::time::advance(Duration::from_millis(29_999)).await;
    settle(&mgr).await;
    assert_eq!(replies(&mut s).await, vec![], "answered before the grace");

    assert_eq!(settle(&mgr).await.awaiting_provider, 5);
    tokio::time::advance(Duration::from_millis(2)).await;
    assert_eq!(settle(&mgr).await.awaiting_provider, 0);
    let got = replies(&mut s).await;
    let reqs: Vec<u64> = got.iter().map(|(r, _)| *r).collect();
    assert_eq!(reqs, vec![1, 2, 3, 4, 5], "{got:?}");
    for (_, outcome) in &got {
        assert_eq!(
            failure(outcome),
            "no worker provides task t: waited 30s for one"
        );
    }
    // After the grace the old rule applies again.
    let (_, _other) = register(&mgr, 1, &["u"]).await;
    match submit(&mgr, 1, &s, 9, spec("t", Priority::Normal)).await {
        Err(Rejection::Invalid(text)) => assert_eq!(text, "no worker provides task t"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// During the grace a new task of the kind is accepted while other workers
/// give the queue room (with none at all it is denied "no capacity"), can
/// be cancelled, and runs after the waiting ones once a provider is back.
#[actix::test]
async fn a_new_submit_in_the_grace_is_queued_behind_the_waiting_tasks() {
    let mgr = paused_manager(5);
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, 1, &["t"]).await;
    one_provider_busy(&mgr, &s, &mut a_link).await;
    lose(&mgr, a).await;
    match submit(&mgr, 1, &s, 6, spec("t", Priority::Normal)).await {
        Err(Rejection::Denied { reason, .. }) => assert_eq!(reason, "no capacity"),
        other => panic!("expected no capacity, got {other:?}"),
    }

    let (_, mut u_link) = register(&mgr, 1, &["u"]).await;
    let late = accept(&mgr, 1, &s, 7, TaskSpec::new("t", Value::from(7))).await;
    let gone = accept(&mgr, 1, &s, 8, TaskSpec::new("t", Value::from(8))).await;
    assert_eq!(state(&mgr, late).await, TaskState::Queued);
    let st = status(&mgr).await;
    assert_eq!(
        (st.awaiting_provider, st.queued, st.queue_limit),
        (5, 2, 5),
        "new ones count against the bound, the waiting ones do not: {st:?}"
    );
    within(
        "CancelTask",
        mgr.send(CancelTask {
            session: 1,
            request_id: 8,
        }),
    )
    .await
    .unwrap();
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0, failure(&got[0].1)),
        (8, "cancelled by the client")
    );
    assert_eq!(state(&mgr, gone).await, TaskState::Unknown);
    assert_eq!(status(&mgr).await.queued, 1);
    assert!(u_link.drain().await.is_empty(), "u does not provide t");

    tokio::time::advance(Duration::from_secs(10)).await;
    let (b, mut b_link) = register(&mgr, 1, &["t"]).await;
    let mut order = Vec::new();
    for _ in 0..6 {
        let got = assigns(b_link.drain().await);
        assert_eq!(got.len(), 1, "{got:?}");
        let (run, _, args) = got.into_iter().next().unwrap();
        order.push(args.as_i64().unwrap());
        report(&mgr, b, run, TaskOutcome::Done(args)).await;
    }
    assert_eq!(order, vec![1, 2, 3, 4, 5, 7]);
    assert_eq!(replies(&mut s).await.len(), 6);
}

/// A new task accepted in the grace waits only for the rest of it, and its
/// error says how long that was.
#[actix::test]
async fn a_task_accepted_in_the_grace_fails_with_it_saying_its_own_wait() {
    let mgr = paused_manager(5);
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, 1, &["t"]).await;
    let (_, _u) = register(&mgr, 1, &["u"]).await;
    one_provider_busy(&mgr, &s, &mut a_link).await;
    lose(&mgr, a).await;
    tokio::time::advance(Duration::from_secs(20)).await;
    accept(&mgr, 1, &s, 6, spec("t", Priority::High)).await;
    tokio::time::advance(Duration::from_millis(10_001)).await;
    settle(&mgr).await;
    let got: BTreeMap<u64, TaskOutcome> = replies(&mut s).await.into_iter().collect();
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(
        failure(&got[&1]),
        "no worker provides task t: waited 30s for one"
    );
    assert_eq!(
        failure(&got[&6]),
        "no worker provides task t: waited 10s for one"
    );
}

/// A draining worker that was the only provider is replaced like a lost
/// one: its queue waits for the next provider instead of failing.
#[actix::test]
async fn the_queue_of_a_draining_last_provider_waits_for_the_next() {
    let mgr = paused_manager(5);
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, 1, &["t"]).await;
    let ids = one_provider_busy(&mgr, &s, &mut a_link).await;
    within("WorkerDraining", mgr.send(WorkerDraining { worker: a }))
        .await
        .unwrap();
    status(&mgr).await;
    assert_eq!(replies(&mut s).await, vec![]);
    let (b, mut b_link) = register(&mgr, 2, &["t"]).await;
    let got = assigns(b_link.drain().await);
    let args: Vec<i64> = got.iter().map(|(_, _, a)| a.as_i64().unwrap()).collect();
    assert_eq!(args, vec![2, 3]);
    finish(&mgr, a, ids[0]).await;
    for (run, _, _) in got {
        finish(&mgr, b, run).await;
    }
    assert_eq!(replies(&mut s).await.len(), 3);
}

/// Tasks given back to the queue by a returning provider may pass the
/// bound of its smaller capacity: they all run, in their order, while a
/// newcomer is denied "queue full" with the `retry_after` of one place
/// (100 ms per task before any finished, ÷ capacity 1), and is accepted
/// once the queue is under the bound again.
#[actix::test]
async fn tasks_back_from_the_grace_may_pass_the_bound_and_newcomers_wait() {
    let mgr = paused_manager(1);
    let mut s = Session::start();
    let other = Session::start();
    let (a, mut a_link) = register(&mgr, 4, &["t"]).await;
    for req in 1..=8 {
        let spec = TaskSpec {
            attempts: 2,
            ..TaskSpec::new("t", Value::from(req))
        };
        accept(&mgr, 1, &s, req, spec).await;
    }
    assert_eq!(assigned(&mut a_link).await.len(), 4);
    lose(&mgr, a).await;
    assert_eq!(status(&mgr).await.awaiting_provider, 8);

    let (b, mut b_link) = register(&mgr, 1, &["t"]).await;
    let st = status(&mgr).await;
    assert_eq!(
        (st.queued, st.queue_limit, st.in_flight),
        (7, 1, 1),
        "{st:?}"
    );
    match submit(&mgr, 2, &other, 1, spec("t", Priority::Normal)).await {
        Err(Rejection::Denied {
            reason,
            retry_after,
        }) => {
            assert_eq!(reason, "queue full");
            assert_eq!(retry_after, Duration::from_millis(100));
        }
        other => panic!("expected a deny, got {other:?}"),
    }
    let mut order = Vec::new();
    for _ in 0..7 {
        let (run, _, args) = assigns(b_link.drain().await).pop().expect("an assign");
        order.push(args.as_i64().unwrap());
        report(&mgr, b, run, TaskOutcome::Done(args)).await;
    }
    assert_eq!(status(&mgr).await.queued, 0);
    accept(&mgr, 2, &other, 2, spec("t", Priority::Normal)).await;
    let (run, _, args) = assigns(b_link.drain().await).pop().expect("the last one");
    order.push(args.as_i64().unwrap());
    report(&mgr, b, run, TaskOutcome::Done(args)).await;
    assert_eq!(order, (1..=8).collect::<Vec<i64>>());
    assert_eq!(replies(&mut s).await.len(), 8);
}

/// A run a draining worker's slot refused never started: the task goes
/// back to the head of its queue and runs elsewhere, without spending an
/// attempt (so with 2 attempts it still survives one worker lost after).
#[actix::test]
async fn a_run_refused_by_a_draining_slot_is_queued_again_without_spending_an_attempt() {
    let mgr = paused_manager(3);
    let (a, mut link_a) = register(&mgr, 1, &["t"]).await;
    let mut s = Session::start();
    let task = accept(
        &mgr,
        1,
        &s,
        1,
        TaskSpec {
            attempts: 2,
            ..spec("t", Priority::Normal)
        },
    )
    .await;
    assert_eq!(assigned(&mut link_a).await, vec![task]);
    mgr.send(WorkerDraining { worker: a }).await.expect("alive");
    let (b, mut link_b) = register(&mgr, 1, &["t"]).await;
    mgr.send(RunRefused {
        worker: a,
        run: task,
        reason: "the worker is shutting down".into(),
    })
    .await
    .expect("alive");
    let on_b = assigned(&mut link_b).await;
    assert_eq!(on_b.len(), 1, "the refused task runs on the other worker");
    assert!(
        assigned(&mut link_a).await.is_empty(),
        "not on the draining one"
    );

    // Its first real run is lost: one attempt of two is spent, so it is
    // queued again rather than failed.
    let (c, mut link_c) = register(&mgr, 1, &["t"]).await;
    mgr.send(WorkerLost { worker: b }).await.expect("alive");
    let on_c = assigned(&mut link_c).await;
    assert_eq!(on_c.len(), 1, "requeued after the loss: attempts were left");
    finish(&mgr, c, on_c[0]).await;
    let replies = s.drain().await;
    assert_eq!(replies.len(), 1);
    assert!(
        matches!(replies[0].outcome, TaskOutcome::Done(_)),
        "{:?}",
        replies[0].outcome
    );
}

/// The manager sends a worker no assign that would take the bytes its link
/// holds past the link's limit (one always goes to a link that holds
/// nothing): the rest wait in the queue with their credits unspent, and go
/// once the link says it has room again.
#[actix::test]
async fn big_tasks_wait_in_the_queue_while_the_workers_link_is_full() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let mgr = paused_manager(3);
    let waiting = Arc::new(AtomicUsize::new(0));
    let load = Arc::new(LinkLoad::new(waiting.clone(), 2500));
    let mut link = Link::start();
    let worker = within(
        "registration",
        mgr.send(RegisterWorker {
            address: "stub".into(),
            capacity: 4,
            tasks: vec!["t".into()],
            eval: false,
            running: vec![],
            link: link.recipient(),
            load: Some(load.clone()),
            finished: vec![],
            finished_dropped: 0,
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let s = Session::start();
    let big = |n: u64| TaskSpec::new("t", Value::Binary(vec![n as u8; 1000]));
    for n in 0..4 {
        accept(&mgr, 1, &s, n, big(n)).await;
    }
    // Two of about 1,030 bytes fit under 2,500; the third would not.
    let first = assigns(link.drain().await);
    assert_eq!(first.len(), 2, "{first:?}");
    let reserved = load.reserved.load(Ordering::Relaxed);
    assert!((2000..2500).contains(&reserved), "{reserved}");
    assert_eq!(status(&mgr).await.queued, 2);
    assert!(load.wanted.load(Ordering::Relaxed));

    // The link encoded them and the worker read them all.
    load.reserved.store(0, Ordering::Relaxed);
    waiting.store(0, Ordering::Relaxed);
    mgr.send(WorkerReady { worker }).await.unwrap();
    let rest = assigns(link.drain().await);
    assert_eq!(rest.len(), 2, "the held tasks go once there is room");
    assert_eq!(status(&mgr).await.queued, 0);
}

/// Dead tasks queued again (`RetryDead`) are new detached tasks admitted
/// like submits: the first starts on the idle slot, the next fills the
/// queue, the third is denied and stays listed; a purge empties the list.
#[actix::test]
async fn dead_tasks_are_queued_again_as_far_as_the_queue_takes_them() {
    tokio::time::pause();
    let mgr = Manager::new(ManagerSettings {
        queue_factor: 1,
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(10),
        retry_jitter: |d| d,
        ..ManagerSettings::default()
    })
    .start();
    let (worker, mut link) = register(&mgr, 1, &["t"]).await;
    let mut session = Session::start();
    let mut dead = Vec::new();
    for request in 1..=3 {
        let spec = TaskSpec {
            retries: Some(1),
            ..TaskSpec::new("t", Value::from(request))
        };
        dead.push(accept(&mgr, 1, &session, request, spec).await);
        for _ in 0..2 {
            let runs = assigned(&mut link).await;
            assert_eq!(runs.len(), 1, "one run at a time: {runs:?}");
            report(&mgr, worker, runs[0], TaskOutcome::Failed("boom".into())).await;
            tokio::time::advance(Duration::from_millis(20)).await;
        }
        let got = replies(&mut session).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(failure(&got[0].1), "boom");
    }
    let list = |mgr: &Addr<Manager>| {
        let ask = mgr.send(GetDeadList {
            limit: 100,
            max_bytes: 1 << 20,
        });
        async move {
            let mut ids: Vec<TaskId> = within("the dead list", ask)
                .await
                .expect("manager alive")
                .tasks
                .iter()
                .map(|t| t.task_id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(list(&mgr).await, dead);

    let done = within(
        "a retry of the dead list",
        mgr.send(RetryDead {
            session: 2,
            select: DeadSelect::default(),
            limit: 1000,
        }),
    )
    .await
    .expect("manager alive");
    let retried: Vec<TaskId> = done.retried.iter().map(|(old, _)| *old).collect();
    assert_eq!(retried, dead[..2], "oldest first: {done:?}");
    assert!(done.retried.iter().all(|(old, new)| new > old));
    assert_eq!(done.left, 1, "{done:?}");
    assert!(done.denied, "{done:?}");
    assert!(
        done.reason.as_deref().unwrap_or("").contains("queue full"),
        "{done:?}"
    );
    assert_eq!(list(&mgr).await, dead[2..]);
    let s = status(&mgr).await;
    assert_eq!((s.in_flight, s.queued), (1, 1), "{s:?}");
    let runs = assigned(&mut link).await;
    assert_eq!(runs.len(), 1, "the first retried task started: {runs:?}");

    let done = within(
        "a purge by name",
        mgr.send(PurgeDead {
            select: DeadSelect {
                task_id: None,
                task: Some("other".into()),
            },
        }),
    )
    .await
    .expect("manager alive");
    assert_eq!(done.purged, 0);
    let done = within(
        "a purge",
        mgr.send(PurgeDead {
            select: DeadSelect::default(),
        }),
    )
    .await
    .expect("manager alive");
    assert_eq!(done.purged, 1);
    assert!(list(&mgr).await.is_empty());
}

/// A periodic task every second whose runs take 2.5 s, with the default
/// overlap policy (skip while the last is held): runs start every 3 s,
/// never two at once, and `GetSchedules` counts the skipped due times.
#[actix::test]
async fn a_periodic_task_skips_while_its_last_run_is_held() {
    use argon::actors::manager::periodic::PeriodicSpec;
    use argon::actors::manager::periodic::ScheduleEntry;
    use argon::duration::Dur;

    tokio::time::pause();
    let entry = ScheduleEntry {
        name: Some("tick".into()),
        task: "t".into(),
        every: Some(Dur(Duration::from_secs(1))),
        ..ScheduleEntry::default()
    };
    let mgr = Manager::new(ManagerSettings {
        schedules: vec![PeriodicSpec::from_entry(&entry, 1).expect("a valid entry")],
        ..ManagerSettings::default()
    })
    .start();
    let (worker, mut link) = register(&mgr, 4, &["t"]).await;
    let begin = tokio::time::Instant::now();
    let mut starts = Vec::new();
    let mut running: Option<(RunId, tokio::time::Instant)> = None;
    // 10.2 s in steps of 100 ms: a run ends 2.5 s after it started.
    for _ in 0..102 {
        tokio::time::advance(Duration::from_millis(100)).await;
        let now = tokio::time::Instant::now();
        if let Some((run, since)) = running {
            if now - since >= Duration::from_millis(2500) {
                finish(&mgr, worker, run).await;
                running = None;
            }
        }
        for run in assigned(&mut link).await {
            assert!(running.is_none(), "two runs at once, at {:?}", now - begin);
            starts.push((now - begin).as_millis() as u64);
            running = Some((run, now));
        }
    }
    assert_eq!(starts.len(), 4, "starts at {starts:?} ms");
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((2900..=3100).contains(&gap), "starts at {starts:?} ms");
    }
    let list = within("the schedules", mgr.send(GetSchedules))
        .await
        .expect("manager alive");
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].name.as_str(), list[0].started), ("tick", 4));
    assert_eq!(
        list[0].skipped, 6,
        "due at 2, 3, 5, 6, 8 and 9 s: {:?}",
        list[0]
    );
}

/// Limits per task name: `max_running = 1` keeps a second run of `a` in
/// the queue while `b` takes the other slots, and starts it when the first
/// ends; `max_queued = 1` denies a second waiting `a` like a full queue;
/// `rate = "20/s"` denies past the token, saying when the next comes.
#[actix::test]
async fn per_name_limits_hold_one_name_back_and_let_others_pass() {
    use argon::actors::manager::limits::{LimitEntry, TaskLimit, RATE_LIMITED};

    tokio::time::pause();
    let limit = |e: LimitEntry| TaskLimit::from_entry("x", &e).expect("a valid limit");
    let limits = std::collections::HashMap::from([
        (
            "a".to_string(),
            limit(LimitEntry {
                max_running: Some(1),
                max_queued: Some(1),
                ..LimitEntry::default()
            }),
        ),
        (
            "r".to_string(),
            limit(LimitEntry {
                rate: Some("20/s".into()),
                burst: Some(1),
                ..LimitEntry::default()
            }),
        ),
    ]);
    let mgr = Manager::new(ManagerSettings {
        limits,
        ..ManagerSettings::default()
    })
    .start();
    let (worker, mut link) = register(&mgr, 4, &["a", "b", "r"]).await;
    let session = Session::start();
    let a1 = accept(&mgr, 1, &session, 1, spec("a", Priority::Normal)).await;
    let a2 = accept(&mgr, 1, &session, 2, spec("a", Priority::Normal)).await;
    match submit(&mgr, 1, &session, 3, spec("a", Priority::Normal)).await {
        Err(Rejection::Denied { reason, .. }) => {
            assert!(reason.starts_with("queue full for task a"), "{reason}")
        }
        other => panic!("a second queued `a` must be denied: {other:?}"),
    }
    let b1 = accept(&mgr, 1, &session, 4, spec("b", Priority::Normal)).await;
    let b2 = accept(&mgr, 1, &session, 5, spec("b", Priority::Normal)).await;
    let started: BTreeSet<RunId> = assigned(&mut link).await.into_iter().collect();
    assert_eq!(
        started,
        BTreeSet::from([a1, b1, b2]),
        "a2 waits, b passes it"
    );
    let s = status(&mgr).await;
    let a = s.limits.iter().find(|l| l.task == "a").expect("a's status");
    assert_eq!((a.running, a.queued, a.max_running), (1, Some(1), Some(1)));

    finish(&mgr, worker, a1).await;
    assert_eq!(
        assigned(&mut link).await,
        vec![a2],
        "a2 starts once a1 ended"
    );

    let r1 = accept(&mgr, 1, &session, 6, spec("r", Priority::Normal)).await;
    tokio::time::advance(Duration::from_millis(20)).await;
    match submit(&mgr, 1, &session, 7, spec("r", Priority::Normal)).await {
        Err(Rejection::Denied {
            reason,
            retry_after,
        }) => {
            assert_eq!(reason, RATE_LIMITED);
            assert_eq!(
                retry_after,
                Duration::from_millis(30),
                "the next token's time"
            );
        }
        other => panic!("over the rate: {other:?}"),
    }
    tokio::time::advance(Duration::from_millis(30)).await;
    let r2 = accept(&mgr, 1, &session, 8, spec("r", Priority::Normal)).await;
    assert!(r2 > r1);
    let s = status(&mgr).await;
    let r = s.limits.iter().find(|l| l.task == "r").expect("r's status");
    assert_eq!((r.rate.as_deref(), r.rate_limited), (Some("20/s"), 1));
}

/// A periodic run denied for want of capacity (no worker yet, as after a
/// restart) is tried again after the deny's `retry_after`, before the
/// entry's next due time, instead of being missed.
#[actix::test]
async fn a_denied_periodic_run_is_tried_again_before_its_next_time() {
    use argon::actors::manager::periodic::PeriodicSpec;
    use argon::actors::manager::periodic::ScheduleEntry;
    use argon::duration::Dur;

    tokio::time::pause();
    let entry = ScheduleEntry {
        task: "t".into(),
        every: Some(Dur(Duration::from_secs(10))),
        ..ScheduleEntry::default()
    };
    let mgr = Manager::new(ManagerSettings {
        schedules: vec![PeriodicSpec::from_entry(&entry, 1).expect("a valid entry")],
        ..ManagerSettings::default()
    })
    .start();
    // The actor times its entries when it starts: let it start first.
    status(&mgr).await;
    let mut list = Vec::new();
    for _ in 0..102 {
        tokio::time::advance(Duration::from_millis(100)).await;
        list = within("the schedules", mgr.send(GetSchedules))
            .await
            .expect("manager alive");
        if list[0].note.is_some() {
            break;
        }
    }
    let note = list[0].note.clone().unwrap_or_default();
    assert!(note.starts_with("waiting: "), "{note}");
    assert_eq!(list[0].started, 0);

    let (_worker, mut link) = register(&mgr, 1, &["t"]).await;
    let begin = tokio::time::Instant::now();
    let mut runs = Vec::new();
    while runs.is_empty() && begin.elapsed() < Duration::from_secs(5) {
        tokio::time::advance(Duration::from_millis(100)).await;
        runs = assigned(&mut link).await;
    }
    assert_eq!(runs.len(), 1, "tried again within 5 s, not at 20 s");
    let list = within("the schedules", mgr.send(GetSchedules))
        .await
        .expect("manager alive");
    assert_eq!(list[0].started, 1, "{:?}", list[0]);
}
