//! The `Manager` actor: the bounded queue, the worker registry and every
//! scheduling decision.
//!
//! Invariant: every accepted task gets exactly one [`TaskReply`], done or
//! failed, unless its client left first. A task is accepted only if it can
//! start now or the queue has room (queue bound = capacity × queue factor);
//! otherwise it is denied at once with an estimate of when room is likely.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use crate::actors::scheduler::{Scheduler, EVAL_TASK};
use crate::messages::*;
use crate::protocol::{ClusterStatus, Priority, QueuedByPriority, WorkerStatus};

/// Weight of the newest sample in the cluster-wide average task time.
const EWMA_WEIGHT: f64 = 0.05;

/// Tunables of the manager.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    /// Queue bound = capacity × this. Default 3, as in Argon.
    pub queue_factor: u32,
    /// A queued task is promoted one priority level after waiting this many
    /// average task times at its level. Default 1.5.
    pub aging_factor: f64,
    /// Timeout given to tasks submitted without one. Default: none.
    pub default_timeout: Option<Duration>,
    /// Attempts given to tasks submitted without a number (0). Default 1.
    pub default_attempts: u32,
    /// How long past a task's timeout the manager waits for the worker's
    /// answer before answering the client itself. Default 2 s.
    pub timeout_grace: Duration,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        ManagerSettings {
            queue_factor: 3,
            aging_factor: 1.5,
            default_timeout: None,
            default_attempts: 1,
            timeout_grace: Duration::from_secs(2),
        }
    }
}

/// Hashes the ids the manager hands out itself (task and worker ids; no
/// client chooses them) with one multiply, instead of SipHash: these maps are
/// touched several times per task.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

struct Pending {
    id: TaskId,
    session: SessionId,
    request_id: u64,
    spec: TaskSpec,
    reply_to: Recipient<TaskReply>,
    started_times: u32,
    level: Priority,
    waiting_since: Instant,
}

struct Running {
    task: Pending,
    worker: WorkerId,
    started: Instant,
    /// Which start of the task this is (unique per manager), so a timeout
    /// timer of an earlier start never expires a later one.
    start: u64,
}

/// Whose task a worker's report is about.
enum Report {
    /// A task running on that worker, now taken out of the running set.
    Mine(Running),
    /// A task running on another worker.
    Elsewhere,
    /// No task this manager knows of.
    Unknown,
}

/// The manager actor. See the module docs.
pub struct Manager {
    settings: ManagerSettings,
    sched: Scheduler,
    links: IdMap<Recipient<AssignTask>>,
    queues: [VecDeque<Pending>; 3],
    running: IdMap<Running>,
    next_task: TaskId,
    starts: u64,
    avg_us: Option<f64>,
    completed: u64,
    denied: u64,
}

impl Manager {
    /// A manager with no workers.
    pub fn new(settings: ManagerSettings) -> Manager {
        Manager {
            settings,
            sched: Scheduler::new(),
            links: IdMap::default(),
            queues: Default::default(),
            running: IdMap::default(),
            next_task: random_task_id_base(),
            starts: 0,
            avg_us: None,
            completed: 0,
            denied: 0,
        }
    }

    fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    fn queue_limit(&self) -> u64 {
        self.sched.capacity() * u64::from(self.settings.queue_factor)
    }

    fn retry_after(&self) -> Duration {
        let cap = self.sched.capacity();
        if cap == 0 {
            return Duration::from_secs(1);
        }
        let avg = self.avg_us.unwrap_or(1000.0);
        let waves = self.queued() as f64 / cap as f64 + 1.0;
        Duration::from_micros((avg * waves) as u64)
            .clamp(Duration::from_millis(1), Duration::from_secs(60))
    }

    fn deny(&mut self, reason: &str) -> Rejection {
        self.denied += 1;
        Rejection::Denied {
            reason: reason.to_string(),
            retry_after: self.retry_after(),
        }
    }

    fn reply(&mut self, task: Pending, outcome: TaskOutcome) {
        self.completed += 1;
        task.reply_to.do_send(TaskReply {
            request_id: task.request_id,
            outcome,
        });
    }

    fn start(&mut self, mut task: Pending, worker: WorkerId, ctx: &mut Context<Self>) {
        let Some(link) = self.links.get(&worker) else {
            self.reply(task, TaskOutcome::Failed("worker vanished".into()));
            return;
        };
        task.started_times += 1;
        self.starts += 1;
        let start = self.starts;
        if let Some(limit) = task.spec.timeout {
            let id = task.id;
            ctx.run_later(limit + self.settings.timeout_grace, move |act, ctx| {
                act.expire(id, start, limit, ctx)
            });
        }
        self.sched.assign(worker);
        link.do_send(AssignTask {
            task: task.id,
            name: task.spec.name.clone(),
            args: task.spec.args.clone(),
            timeout: task.spec.timeout,
        });
        self.running.insert(
            task.id,
            Running {
                task,
                worker,
                started: Instant::now(),
                start,
            },
        );
    }

    /// Answers a task whose worker has not reported by its timeout plus the
    /// grace. The worker's slot stays counted as busy (a phantom) until the
    /// worker reports that task after all.
    fn expire(&mut self, id: TaskId, start: u64, limit: Duration, ctx: &mut Context<Self>) {
        if self.running.get(&id).is_none_or(|r| r.start != start) {
            return;
        }
        let r = self.running.remove(&id).expect("checked above");
        self.sched.mark_phantom(r.worker);
        log::warn!(
            "task {id} on worker {} gave no result within its timeout; answered as failed",
            r.worker
        );
        let msg = format!(
            "no result within the task's timeout of {} (worker {} did not answer)",
            humantime::format_duration(limit),
            r.worker
        );
        self.reply(r.task, TaskOutcome::Failed(msg));
        self.dispatch(ctx);
    }

    /// Takes task `id` out of the running set if it runs on `worker`. A report
    /// about a task that runs elsewhere is logged (with `verb`) and ignored.
    fn take_running(&mut self, id: TaskId, worker: WorkerId, verb: &str) -> Report {
        match self.running.remove(&id) {
            Some(run) if run.worker == worker => Report::Mine(run),
            Some(run) => {
                log::warn!(
                    "worker {worker} {verb} task {id} that runs on worker {}; ignored",
                    run.worker
                );
                self.running.insert(id, run);
                Report::Elsewhere
            }
            None => Report::Unknown,
        }
    }

    /// Moves queue heads that waited too long one level up.
    fn promote_aged(&mut self, now: Instant) {
        let Some(avg) = self.avg_us else {
            return;
        };
        let limit = Duration::from_micros((avg * self.settings.aging_factor) as u64);
        for level in [Priority::Normal, Priority::Low] {
            while let Some(head) = self.queues[level.index()].front() {
                if now.duration_since(head.waiting_since) <= limit {
                    break;
                }
                let mut t = self.queues[level.index()].pop_front().expect("head exists");
                t.level = level.promoted();
                t.waiting_since = now;
                log::debug!("task {} promoted to {:?} after waiting", t.id, t.level);
                self.queues[t.level.index()].push_back(t);
            }
        }
    }

    /// Starts queued tasks while there are idle slots that fit them.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.sched.idle_slots() == 0 || self.queued() == 0 {
            return;
        }
        self.promote_aged(Instant::now());
        for level in 0..self.queues.len() {
            let mut i = 0;
            while i < self.queues[level].len() {
                if self.sched.idle_slots() == 0 {
                    return;
                }
                match self.sched.pick(&self.queues[level][i].spec.name) {
                    Some(worker) => {
                        let t = self.queues[level].remove(i).expect("index in range");
                        self.start(t, worker, ctx);
                    }
                    None => i += 1,
                }
            }
        }
    }

    /// Answers queued tasks that no remaining worker provides.
    fn fail_orphaned(&mut self) {
        let mut orphans = Vec::new();
        for q in &mut self.queues {
            let mut i = 0;
            while i < q.len() {
                if self.sched.provides(&q[i].spec.name) {
                    i += 1;
                } else {
                    orphans.push(q.remove(i).expect("index in range"));
                }
            }
        }
        for t in orphans {
            let msg = format!("no worker provides task {} any more", t.spec.name);
            self.reply(t, TaskOutcome::Failed(msg));
        }
    }

    fn requeue_front(&mut self, mut task: Pending) {
        task.waiting_since = Instant::now();
        self.queues[task.level.index()].push_front(task);
    }
}

/// Task ids start at a random point, so a worker that reconnects after a
/// manager restart and reports a task from before cannot be mistaken for a
/// task of the new manager's.
fn random_task_id_base() -> TaskId {
    let mut b = [0u8; 8];
    if crate::protocol::crypto::fill_random(&mut b).is_err() {
        return 0;
    }
    // Leave headroom so ids never wrap.
    u64::from_be_bytes(b) >> 2
}

impl Actor for Manager {
    type Context = Context<Self>;
}

impl Handler<SubmitTask> for Manager {
    type Result = Result<TaskId, Rejection>;

    fn handle(&mut self, mut msg: SubmitTask, ctx: &mut Self::Context) -> Self::Result {
        if self.sched.capacity() == 0 {
            return Err(self.deny("no capacity"));
        }
        if !self.sched.provides(&msg.spec.name) {
            return Err(Rejection::Invalid(if msg.spec.name == EVAL_TASK {
                "no worker allows eval (start one with --allow-eval)".to_string()
            } else {
                format!("no worker provides task {}", msg.spec.name)
            }));
        }
        if msg.spec.timeout.is_none() {
            msg.spec.timeout = self.settings.default_timeout;
        }
        if msg.spec.attempts == 0 {
            msg.spec.attempts = self.settings.default_attempts.max(1);
        }
        self.next_task += 1;
        let task = Pending {
            id: self.next_task,
            session: msg.session,
            request_id: msg.request_id,
            level: msg.spec.priority,
            spec: msg.spec,
            reply_to: msg.reply_to,
            started_times: 0,
            waiting_since: Instant::now(),
        };
        let id = task.id;
        // Start it now if an idle worker provides it, even when the queue is
        // full: after every dispatch no queued task fits an idle worker, so
        // this overtakes nobody, and the bound is on waiting tasks only.
        if let Some(worker) = self.sched.pick(&task.spec.name) {
            self.start(task, worker, ctx);
            return Ok(id);
        }
        if self.queued() as u64 >= self.queue_limit() {
            return Err(self.deny("queue full"));
        }
        self.queues[task.level.index()].push_back(task);
        self.dispatch(ctx);
        Ok(id)
    }
}

impl Handler<ClientGone> for Manager {
    type Result = ();

    fn handle(&mut self, msg: ClientGone, _: &mut Self::Context) {
        let before = self.queued();
        for q in &mut self.queues {
            q.retain(|t| t.session != msg.session);
        }
        let dropped = before - self.queued();
        if dropped > 0 {
            log::debug!(
                "session {} left: dropped {dropped} queued task(s)",
                msg.session
            );
        }
    }
}

impl Handler<RegisterWorker> for Manager {
    type Result = Result<WorkerId, String>;

    fn handle(&mut self, msg: RegisterWorker, ctx: &mut Self::Context) -> Self::Result {
        if msg.capacity == 0 {
            return Err("capacity must be at least 1".into());
        }
        if msg.tasks.is_empty() && !msg.eval {
            return Err("a worker must provide at least one task".into());
        }
        let id = self
            .sched
            .add(msg.address.clone(), msg.capacity, msg.tasks, msg.eval);
        self.links.insert(id, msg.link);
        log::info!(
            "worker {id} joined from {} with {} slot(s); capacity now {}",
            msg.address,
            msg.capacity,
            self.sched.capacity()
        );
        self.dispatch(ctx);
        Ok(id)
    }
}

impl Handler<TaskFinished> for Manager {
    type Result = ();

    fn handle(&mut self, msg: TaskFinished, ctx: &mut Self::Context) {
        let run = match self.take_running(msg.task, msg.worker, "answered") {
            Report::Mine(run) => run,
            Report::Elsewhere => return,
            Report::Unknown => {
                if !self.sched.clear_phantom(msg.worker) {
                    log::debug!("result for unknown task {} ignored", msg.task);
                }
                self.dispatch(ctx);
                return;
            }
        };
        let took = run.started.elapsed();
        self.sched.release(msg.worker, Some(took));
        let sample = took.as_secs_f64() * 1e6;
        self.avg_us = Some(match self.avg_us {
            Some(avg) => avg + (sample - avg) * EWMA_WEIGHT,
            None => sample,
        });
        self.reply(run.task, msg.outcome);
        self.dispatch(ctx);
    }
}

impl Handler<TaskRefused> for Manager {
    type Result = ();

    fn handle(&mut self, msg: TaskRefused, ctx: &mut Self::Context) {
        let Report::Mine(run) = self.take_running(msg.task, msg.worker, "refused") else {
            return;
        };
        self.sched.mark_phantom(msg.worker);
        let mut task = run.task;
        task.started_times -= 1;
        log::debug!(
            "worker {} had no idle slot for task {}; requeued",
            msg.worker,
            task.id
        );
        self.requeue_front(task);
        self.dispatch(ctx);
    }
}

impl Handler<WorkerDraining> for Manager {
    type Result = ();

    fn handle(&mut self, msg: WorkerDraining, _: &mut Self::Context) {
        self.sched.drain(msg.worker);
        log::info!(
            "worker {} is draining; capacity now {}",
            msg.worker,
            self.sched.capacity()
        );
        self.fail_orphaned();
    }
}

impl Handler<WorkerLost> for Manager {
    type Result = ();

    fn handle(&mut self, msg: WorkerLost, ctx: &mut Self::Context) {
        if self.sched.remove(msg.worker).is_none() {
            return;
        }
        self.links.remove(&msg.worker);
        let mut lost: Vec<TaskId> = self
            .running
            .iter()
            .filter(|(_, r)| r.worker == msg.worker)
            .map(|(id, _)| *id)
            .collect();
        // Requeued at the head one by one: newest first, so the oldest ends up in front.
        lost.sort_unstable_by(|a, b| b.cmp(a));
        let mut requeued = 0;
        for id in &lost {
            let run = self.running.remove(id).expect("collected above");
            let task = run.task;
            if task.started_times < task.spec.attempts.max(1) {
                requeued += 1;
                self.requeue_front(task);
            } else {
                let msg = if task.spec.attempts > 1 {
                    format!(
                        "worker lost before completion (tried {} times)",
                        task.started_times
                    )
                } else {
                    "worker lost before completion".to_string()
                };
                self.reply(task, TaskOutcome::Failed(msg));
            }
        }
        log::info!(
            "worker {} left with {} task(s) in flight ({requeued} requeued); capacity now {}",
            msg.worker,
            lost.len(),
            self.sched.capacity()
        );
        self.fail_orphaned();
        self.dispatch(ctx);
    }
}

impl Handler<GetStatus> for Manager {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        let worker_list = self
            .sched
            .workers()
            .into_iter()
            .map(|w| WorkerStatus {
                id: w.id,
                address: w.address.clone(),
                capacity: w.capacity,
                in_flight: w.assigned - w.phantom,
                avg_ms: w.avg_us.unwrap_or(0.0) / 1000.0,
                tasks: w.tasks.clone(),
                eval: w.eval,
                draining: w.draining,
            })
            .collect();
        MessageResult(ClusterStatus {
            workers: self.sched.len() as u64,
            capacity: self.sched.capacity(),
            in_flight: self.running.len() as u64,
            queued: self.queued() as u64,
            queue_limit: self.queue_limit(),
            queued_by_priority: QueuedByPriority {
                high: self.queues[0].len() as u64,
                normal: self.queues[1].len() as u64,
                low: self.queues[2].len() as u64,
            },
            avg_task_ms: self.avg_us.unwrap_or(0.0) / 1000.0,
            completed: self.completed,
            denied: self.denied,
            worker_list,
        })
    }
}
