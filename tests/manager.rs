//! Actor-level tests of the `Manager`: admission and the bounded queue,
//! priorities and aging, routing, worker and client loss, refusals, and the
//! exactly-one-reply invariant.
//!
//! Client sessions and worker links are stub actors that forward what they
//! receive into channels. The clock is paused, so task durations and waiting
//! times are whatever the test advances it by.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use actix::prelude::*;
use argon::actors::{Manager, ManagerSettings};
use argon::messages::*;
use argon::protocol::{ClusterStatus, Priority, Value};
use support::{within, Rng, Stub};

type Session = Stub<TaskReply>;
type Link = Stub<AssignTask>;

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
    let link = Link::start();
    let id = within(
        "registration",
        mgr.send(RegisterWorker {
            address: format!("stub:{capacity}"),
            capacity,
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            eval: false,
            link: link.recipient(),
        }),
    )
    .await
    .expect("manager alive")
    .expect("worker accepted");
    (id, link)
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
        }),
    )
    .await
    .expect("manager alive")
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

/// Reports task `task` done on `worker`; its value is the task id.
async fn finish(mgr: &Addr<Manager>, worker: WorkerId, task: TaskId) {
    within(
        "TaskFinished to be handled",
        mgr.send(TaskFinished {
            worker,
            task,
            outcome: TaskOutcome::Done(Value::from(task)),
        }),
    )
    .await
    .expect("manager alive");
}

async fn status(mgr: &Addr<Manager>) -> ClusterStatus {
    within("a status report", mgr.send(GetStatus))
        .await
        .expect("manager alive")
}

/// Task ids assigned to `link` since the last look.
async fn assigned(link: &mut Link) -> Vec<TaskId> {
    link.drain().await.into_iter().map(|a| a.task).collect()
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
    assert_eq!(assigned(&mut b_link).await, vec![twice]);
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
    let got: BTreeMap<u64, TaskOutcome> = replies(&mut s).await.into_iter().collect();
    assert_eq!(got.len(), 2, "{got:?}");
    let tried = failure(&got[&2]);
    assert!(
        tried.contains("worker lost before completion") && tried.contains("tried 2 times"),
        "{tried:?}"
    );
    let orphan = failure(&got[&4]);
    assert!(orphan.contains("no worker provides task t"), "{orphan:?}");
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

/// Over a seeded random mix of submits, finishes, worker losses and joins,
/// every accepted task gets exactly one reply and no rejected one gets any.
#[actix::test]
async fn every_accepted_task_gets_exactly_one_reply_under_random_churn() {
    struct Worker {
        link: Link,
        tasks: Vec<String>,
        running: BTreeSet<TaskId>,
    }

    let mgr = paused_manager(3);
    let mut rng = Rng::new(0x5eed_a11c_e0ff_1ce5);
    let mut sessions: Vec<Session> = (0..4).map(|_| Session::start()).collect();
    let mut workers: BTreeMap<WorkerId, Worker> = BTreeMap::new();
    let mut accepted: BTreeMap<u64, (usize, TaskId)> = BTreeMap::new();
    let mut rejected = BTreeSet::new();
    let mut where_running: HashMap<TaskId, WorkerId> = HashMap::new();
    let mut ever_assigned: BTreeSet<TaskId> = BTreeSet::new();
    let mut reassigned = 0;
    let mut losses = 0;
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
                running: BTreeSet::new(),
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
            50..=84 => {
                let busy: Vec<WorkerId> = workers
                    .iter()
                    .filter(|(_, w)| !w.running.is_empty())
                    .map(|(id, _)| *id)
                    .collect();
                if !busy.is_empty() {
                    let wid = busy[rng.below(busy.len() as u64) as usize];
                    let w = workers.get_mut(&wid).unwrap();
                    let tasks: Vec<TaskId> = w.running.iter().copied().collect();
                    let task = tasks[rng.below(tasks.len() as u64) as usize];
                    w.running.remove(&task);
                    where_running.remove(&task);
                    let outcome = if rng.chance(10) {
                        TaskOutcome::Failed("failed on purpose".into())
                    } else {
                        TaskOutcome::Done(Value::from(task))
                    };
                    within(
                        "TaskFinished",
                        mgr.send(TaskFinished {
                            worker: wid,
                            task,
                            outcome,
                        }),
                    )
                    .await
                    .unwrap();
                }
            }
            85..=91 => {
                if !workers.is_empty() {
                    let ids: Vec<WorkerId> = workers.keys().copied().collect();
                    let wid = ids[rng.below(ids.len() as u64) as usize];
                    let w = workers.remove(&wid).unwrap();
                    for t in &w.running {
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
                    join(&mgr, &mut rng, &mut workers, tasks).await;
                }
            }
            _ => tokio::time::advance(Duration::from_millis(1 + rng.below(50))).await,
        }

        // Record what each worker was given, and check nothing runs twice.
        for (wid, w) in workers.iter_mut() {
            for a in w.link.drain().await {
                assert!(
                    w.tasks.contains(&a.name),
                    "step {step}: worker {wid} got {} it does not provide",
                    a.name
                );
                if let Some(other) = where_running.insert(a.task, *wid) {
                    panic!(
                        "step {step}: task {} assigned to {wid} while on {other}",
                        a.task
                    );
                }
                if !ever_assigned.insert(a.task) {
                    reassigned += 1;
                }
                w.running.insert(a.task);
            }
        }
    }

    // Drain: a worker that provides everything, then finish all that runs.
    join(&mgr, &mut rng, &mut workers, &["a", "b"]).await;
    for _ in 0..10_000 {
        for (wid, w) in workers.iter_mut() {
            for a in w.link.drain().await {
                assert!(where_running.insert(a.task, *wid).is_none());
                w.running.insert(a.task);
            }
        }
        let st = status(&mgr).await;
        if st.queued == 0 && st.in_flight == 0 {
            break;
        }
        let Some((wid, task)) = workers
            .iter()
            .find_map(|(id, w)| w.running.first().map(|t| (*id, *t)))
        else {
            panic!("tasks queued but none running: {st:?}");
        };
        workers.get_mut(&wid).unwrap().running.remove(&task);
        where_running.remove(&task);
        finish(&mgr, wid, task).await;
    }
    let st = status(&mgr).await;
    assert_eq!((st.queued, st.in_flight), (0, 0), "did not drain: {st:?}");

    let mut answered: BTreeMap<u64, usize> = BTreeMap::new();
    let mut lost_failures = 0;
    for (sess, session) in sessions.iter_mut().enumerate() {
        for (req, outcome) in replies(session).await {
            assert!(
                !rejected.contains(&req),
                "rejected request {req} got a reply"
            );
            let (owner, id) = accepted
                .get(&req)
                .unwrap_or_else(|| panic!("reply for unknown request {req}"));
            assert_eq!(*owner, sess, "request {req} answered to the wrong session");
            match &outcome {
                TaskOutcome::Done(v) => {
                    assert_eq!(
                        *v,
                        Value::from(*id),
                        "request {req} got another task's value"
                    )
                }
                TaskOutcome::Failed(e) if e.starts_with("worker lost before completion") => {
                    lost_failures += 1
                }
                TaskOutcome::Failed(e) => assert!(
                    e == "failed on purpose" || e.starts_with("no worker provides task "),
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
    assert_eq!(st.completed, accepted.len() as u64);

    // The run exercised what it claims to.
    assert!(accepted.len() > 100, "only {} accepted", accepted.len());
    assert!(!rejected.is_empty(), "nothing was denied");
    assert!(losses > 3, "only {losses} worker losses");
    assert!(lost_failures > 0, "no task failed by worker loss");
    assert!(reassigned > 0, "no task was requeued after a worker loss");
}

/// A refused task is requeued, later runs and is answered once; the refusing
/// worker's slot counts as busy until a result for an unknown task frees it.
#[actix::test]
async fn refused_task_is_requeued_and_the_refusing_slot_stays_busy_until_freed() {
    let mgr = paused_manager(5);
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, 1, &["t"]).await;
    let first = accept(&mgr, 1, &s, 1, spec("t", Priority::Normal)).await;
    assert_eq!(assigned(&mut a_link).await, vec![first]);
    let (b, mut b_link) = register(&mgr, 1, &["t"]).await;

    within(
        "TaskRefused",
        mgr.send(TaskRefused {
            worker: a,
            task: first,
        }),
    )
    .await
    .unwrap();
    assert_eq!(assigned(&mut b_link).await, vec![first]);
    assert!(replies(&mut s).await.is_empty(), "a refusal is not a reply");

    // A's slot is a phantom: busy with something this manager does not know.
    let second = accept(&mgr, 1, &s, 2, spec("t", Priority::Normal)).await;
    a_link.assert_none("the refusing worker").await;
    let st = status(&mgr).await;
    assert_eq!((st.in_flight, st.queued), (1, 1));

    finish(&mgr, b, first).await;
    assert_eq!(assigned(&mut b_link).await, vec![second]);
    let third = accept(&mgr, 1, &s, 3, spec("t", Priority::Normal)).await;
    a_link.assert_none("the refusing worker").await;

    // The result of whatever occupied A's slot frees it.
    within(
        "TaskFinished for an unknown task",
        mgr.send(TaskFinished {
            worker: a,
            task: 9_999,
            outcome: TaskOutcome::Done(Value::Nil),
        }),
    )
    .await
    .unwrap();
    assert_eq!(assigned(&mut a_link).await, vec![third]);

    finish(&mgr, b, second).await;
    finish(&mgr, a, third).await;
    assert_eq!(
        replies(&mut s).await,
        vec![
            (1, TaskOutcome::Done(Value::from(first))),
            (2, TaskOutcome::Done(Value::from(second))),
            (3, TaskOutcome::Done(Value::from(third))),
        ]
    );
    let st = status(&mgr).await;
    assert_eq!((st.in_flight, st.queued, st.completed), (0, 0, 3));
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
    // The slot is still busy with the silent task: nothing new goes there.
    link.assert_none("the silent worker").await;

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
    let a = link.next().await;
    assert_eq!(
        a.timeout,
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
    assert_eq!(assigned(&mut other_link).await, vec![id]);
    within("WorkerLost", mgr.send(WorkerLost { worker: other }))
        .await
        .unwrap();
    let got = replies(&mut s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(failure(&got[0].1).contains("tried 2 times"), "{got:?}");
}

/// A timed task that was refused and started again elsewhere is timed from
/// its new start: the timer of its first start does not expire it.
#[actix::test]
async fn timer_of_a_refused_start_does_not_expire_the_restarted_task() {
    let mgr = paused_manager(3);
    let mut s = Session::start();
    let (a, mut a_link) = register(&mgr, 1, &["t"]).await;
    let timed = TaskSpec {
        timeout: Some(Duration::from_secs(1)),
        ..spec("t", Priority::Normal)
    };
    let id = accept(&mgr, 1, &s, 1, timed).await;
    assert_eq!(assigned(&mut a_link).await, vec![id]);
    let (b, mut b_link) = register(&mgr, 1, &["t"]).await;

    tokio::time::advance(Duration::from_millis(2_500)).await;
    within(
        "TaskRefused",
        mgr.send(TaskRefused {
            worker: a,
            task: id,
        }),
    )
    .await
    .unwrap();
    assert_eq!(assigned(&mut b_link).await, vec![id]);
    // The first start's timer (1 s + 2 s grace) fires here; the task is 1 s
    // into its second start and must not be answered.
    tokio::time::advance(Duration::from_millis(1_000)).await;
    assert!(replies(&mut s).await.is_empty(), "expired by a stale timer");

    finish(&mgr, b, id).await;
    assert_eq!(
        replies(&mut s).await,
        vec![(1, TaskOutcome::Done(Value::from(id)))]
    );
}
