//! The manager process's actors: the [`Manager`] (the bounded queue, the
//! worker registry and every scheduling decision), and the roles of its
//! connections, [`ClientSession`] and [`WorkerLink`].
//!
//! Invariant: every accepted task gets exactly one [`TaskReply`], done or
//! failed, unless its client left first; a detached task's one outcome goes
//! to the result store ([`results`]) instead, where [`GetResult`] reads it
//! by task id. A task is accepted only if a worker
//! credit lets it start now or the queue has room (queue bound = capacity ×
//! queue factor); otherwise the reply to its [`SubmitTask`] is the deny, with
//! an estimate of when room is likely.
//!
//! A task's life: queued → running (one run, in one slot a worker announced
//! free) → answered (done, failed, cancelled) or requeued (its worker was
//! lost and attempts remain) or retrying (its run failed and retries remain:
//! it waits out a backoff, then is queued again; see [`retry`]). A queued
//! task whose kind loses its last provider waits for another for a grace,
//! outside the queue's bound ([`awaiting`]). A run
//! outlives its task when the task is answered early (timeout, cancel,
//! client gone): the worker is told to cancel it, and its slot is a credit
//! again only once the worker reports the run finished.
//!
//! Shutdown ([`Shutdown`]): new tasks are denied, queued ones answered as
//! not started, running ones may finish until a deadline, and those still
//! running then are answered as cancelled and cancelled on their workers.
//! Without persistence nothing survives the manager; [`Manager::shed_queue`]
//! is where tasks that could be kept for the next start are let go.

pub mod awaiting;
pub mod client_session;
pub mod console;
mod dead;
mod due_timer;
pub mod journal;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod overview;
pub mod periodic;
mod recovery;
pub mod results;
pub mod retry;
pub mod schedule;
pub mod scheduler;
pub mod store;
mod tasks;
pub mod turns;
pub mod unique;
pub mod windows;
pub mod worker_link;

pub use client_session::ClientSession;
#[cfg(feature = "postgres")]
pub use store::postgres::PgStore;
pub use store::redb::RedbStore;
pub use store::{MemoryStore, StoreError, TaskStore};
pub use worker_link::WorkerLink;

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::logsafe::{RateLimit, WARN_WINDOW};
use crate::messages::*;
use crate::protocol::{
    codec, ClusterStatus, Priority, QueuedByPriority, WorkerStatus, DEFAULT_MAX_FRAME,
    STATUS_MAX_TASK_NAMES, STATUS_MAX_WORKERS,
};
use awaiting::Awaiting;
use dead::DeadStore;
use due_timer::DueTimer;
use lifecycle::Event;
use metrics::ManagerMetrics;
use results::ResultStore;
use scheduler::{Scheduler, TaskTime, EVAL_TASK};
use tasks::{At, State, Tasks};
use turns::Turns;

/// Most slots one worker may register. The manager keeps a credit per
/// free slot, so a worker claiming billions would have it allocate
/// gigabytes; a larger `register` is refused.
pub const MAX_WORKER_CAPACITY: u32 = 65_536;

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
    /// How long the outcome of a detached task is kept after it finished.
    /// Default 1 h.
    pub result_ttl: Duration,
    /// Most outcomes of detached tasks kept; the oldest go first. Default
    /// 100,000.
    pub result_max: usize,
    /// Most bytes of kept outcomes (values as encoded, error texts, plus
    /// 64 each); the oldest go first. Default 256 MiB.
    pub result_max_bytes: usize,
    /// Retries given to tasks submitted without a number, at most
    /// [`retry::MAX_RETRIES`]. Default 0.
    pub default_retries: u32,
    /// Backoff before a task's first retry; each further one doubles it.
    /// Default 1 s.
    pub retry_base: Duration,
    /// Longest backoff before a retry. Default 60 s.
    pub retry_max: Duration,
    /// Turns a planned backoff into the wait used. Default
    /// [`retry::uniform_jitter`]; tests pass a fixed one.
    pub retry_jitter: fn(Duration) -> Duration,
    /// Most tasks kept in the dead list; the oldest go first. Default 1000.
    pub dead_max: usize,
    /// Most tasks scheduled to run later held at once ([`schedule`]);
    /// past it such a submit is denied [`schedule::SCHEDULE_FULL`].
    /// Default 100,000.
    pub scheduled_max: usize,
    /// Most unique-task keys held at once ([`unique`]); past it a submit
    /// with a new key is denied [`unique::UNIQUE_FULL`]. Default 100,000.
    pub unique_max: usize,
    /// With a task store: how long after a restart a worker has to claim
    /// a recovered running task before it is requeued (or failed). Default
    /// the peer liveness window, 15 s.
    pub recovery_grace: Duration,
    /// With a task store: most records waiting for their commit when a
    /// submit is still accepted; past it submits are denied "store busy".
    /// Default [`journal::STORE_BACKLOG`].
    pub store_backlog: u64,
    /// How long the tasks of a kind whose last provider went wait for
    /// another before they fail ([`awaiting`]); zero fails them at once.
    /// `None`: [`awaiting::PROVIDER_GRACE`], or
    /// [`awaiting::PROVIDER_GRACE_STORED`] with a task store.
    pub provider_grace: Option<Duration>,
    /// Periodic tasks the manager submits itself ([`periodic`]).
    pub schedules: Vec<periodic::PeriodicSpec>,
    /// Limits per task name ([`limits`]).
    pub limits: HashMap<String, limits::TaskLimit>,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        ManagerSettings {
            queue_factor: 3,
            aging_factor: 1.5,
            default_timeout: None,
            default_attempts: 1,
            timeout_grace: Duration::from_secs(2),
            result_ttl: Duration::from_secs(3600),
            result_max: 100_000,
            result_max_bytes: 256 << 20,
            default_retries: 0,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            retry_jitter: retry::uniform_jitter,
            dead_max: 1000,
            scheduled_max: schedule::SCHEDULED_MAX,
            unique_max: unique::UNIQUE_MAX,
            recovery_grace: crate::protocol::DEFAULT_HEARTBEAT * crate::protocol::SILENT_INTERVALS,
            store_backlog: journal::STORE_BACKLOG,
            provider_grace: None,
            schedules: Vec::new(),
            limits: HashMap::new(),
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

/// Where a task's one outcome goes.
enum ReplyTo {
    /// To the session that submitted it (an attached task).
    Session(Recipient<TaskReply>),
    /// To the result store, read by task id: a detached task, or any task
    /// recovered from a store.
    Kept,
}

/// The submit a task came from.
struct Origin {
    session: SessionId,
    request_id: u64,
    /// Its client will wait on the task by id after losing its manager
    /// ([`SubmitOptions::reattach`]).
    reattach: bool,
}

struct Pending {
    id: TaskId,
    /// `None` for a task recovered from a store: its session is gone.
    origin: Option<Origin>,
    spec: TaskSpec,
    reply: ReplyTo,
    started_times: u32,
    level: Priority,
    waiting_since: Instant,
    /// When it was accepted, for the queue wait metric.
    accepted_at: Instant,
    /// The worker of its last run, for the dashboard's failure list.
    worker: Option<WorkerId>,
    /// Retries used so far (see [`retry`]).
    retried: u32,
    /// `started_times` when its current try began: worker loss spends the
    /// attempts of one try.
    attempt_base: u32,
    /// When it was scheduled to run, in milliseconds since the Unix epoch
    /// (`submit` with a due time; see [`schedule`]); kept once it is due.
    due_ms: Option<u64>,
    /// Its unique key and how long the key holds after it is answered
    /// ([`unique`]).
    unique: Option<(String, Duration)>,
}

impl Pending {
    /// Whether it outlives its session: its outcome is kept by id.
    fn detached(&self) -> bool {
        matches!(self.reply, ReplyTo::Kept)
    }
}

/// One run of a task in one worker slot.
struct Run {
    worker: WorkerId,
    slot: SlotIndex,
    started: Instant,
    /// The task it runs; `None` once the task was answered or requeued
    /// while the run goes on: the worker was told to cancel it, and its
    /// slot stays busy until the worker reports it finished.
    task: Option<TaskId>,
    /// The running count of its task name, if the name is limited; given
    /// back when the run is dropped.
    _held: Option<limits::Held>,
}

/// A shutdown in progress, or done (see [`Shutdown`]).
struct Draining {
    began: Instant,
    deadline: Instant,
    limit: Duration,
    /// Whether the deadline has passed and the tasks still running then
    /// were cancelled.
    past_deadline: bool,
    /// Runs cancelled at the deadline that their workers have not reported
    /// finished yet.
    cancelled: HashSet<RunId>,
    report: ShutdownReport,
    /// The final report, once the drain is over.
    done: bool,
    waiters: Vec<oneshot::Sender<ShutdownReport>>,
}

/// The manager actor. See the module docs.
pub struct Manager {
    settings: ManagerSettings,
    sched: Scheduler,
    links: IdMap<Recipient<WorkerOrder>>,
    /// What each worker's link holds for it, where it is measured.
    loads: IdMap<Arc<LinkLoad>>,
    /// Every task it holds, with its state ([`tasks`]).
    tasks: Tasks,
    runs: IdMap<Run>,
    next_id: u64,
    /// The cluster's moving average of task time.
    avg: TaskTime,
    /// Clients denied for a full queue, in the order they get places.
    turns: Turns,
    metrics: ManagerMetrics,
    shutdown: Option<Draining>,
    /// Outcomes of finished detached tasks.
    results: ResultStore,
    /// `GetResult` requests waiting for a task's outcome, by task id; at
    /// most [`MAX_RESULT_WAITERS`] in all.
    waiters: IdMap<Vec<Waiter>>,
    waiting: usize,
    /// The timer of the waiting retries.
    retry_timer: DueTimer,
    /// The timer of the scheduled tasks.
    schedule_timer: DueTimer,
    /// The keys of unique tasks.
    uniques: unique::Uniques,
    /// Tasks waiting for a provider of their kind.
    awaiting: Awaiting,
    /// Tasks that failed after using their retries.
    dead: DeadStore,
    periodic: periodic::Periodic,
    limits: limits::Limits,
    /// The task store and what waits for its commits ([`journal`]).
    journal: journal::Journal,
    /// Set when the manager stops for good on an error (its store failed).
    failure: tokio::sync::watch::Sender<Option<String>>,
}

/// One `GetResult` with `wait`.
struct Waiter {
    session: SessionId,
    tx: oneshot::Sender<Arc<TaskOutcome>>,
}

/// Most `GetResult` requests waiting at once, over all sessions; past it a
/// request for a queued or running task is answered at once with its state.
pub const MAX_RESULT_WAITERS: usize = 10_000;

/// Error text of a task cancelled at its client's request.
pub const CANCELLED: &str = "cancelled by the client";

/// Reason of the deny a submit gets while the manager shuts down.
pub const SHUTTING_DOWN: &str = "manager shutting down";

/// Error text of a queued task answered when the manager shuts down.
pub const NOT_STARTED: &str = "manager shutting down: task not started";

impl Manager {
    /// A manager with no workers and no task store (nothing is kept).
    pub fn new(settings: ManagerSettings) -> Manager {
        Manager::with_store(settings, MemoryStore)
    }

    /// A manager over `store` (for example [`RedbStore::open`]): a durable
    /// one continues its ids, and its tasks and results are recovered when
    /// the actor starts.
    pub fn with_store(mut settings: ManagerSettings, store: impl TaskStore) -> Manager {
        let durable = store.durable();
        let settings_schedules = std::mem::take(&mut settings.schedules);
        let limits = limits::Limits::new(std::mem::take(&mut settings.limits));
        let mut tasks = Tasks::default();
        tasks.count_queued(limits.counted_names());
        let journal = journal::Journal::new(
            Box::new(store),
            settings.recovery_grace,
            settings.store_backlog,
        );
        let mut results = ResultStore::new(
            settings.result_ttl,
            settings.result_max,
            settings.result_max_bytes,
        );
        let dead = DeadStore::new(settings.dead_max);
        let uniques = unique::Uniques::new(settings.unique_max);
        let grace = settings.provider_grace.unwrap_or(if durable {
            awaiting::PROVIDER_GRACE_STORED
        } else {
            awaiting::PROVIDER_GRACE
        });
        if durable {
            results.track_gone();
        }
        Manager {
            settings,
            sched: Scheduler::new(),
            links: IdMap::default(),
            loads: IdMap::default(),
            tasks,
            limits,
            runs: IdMap::default(),
            next_id: random_id_base(),
            avg: TaskTime::default(),
            turns: Turns::default(),
            metrics: ManagerMetrics::new(),
            shutdown: None,
            results,
            waiters: IdMap::default(),
            waiting: 0,
            retry_timer: DueTimer::default(),
            schedule_timer: DueTimer::default(),
            uniques,
            awaiting: Awaiting::new(grace, awaiting::MAX_WINDOWS),
            dead,
            periodic: periodic::Periodic::new(settings_schedules),
            journal,
            failure: tokio::sync::watch::channel(None).0,
        }
    }

    /// Resolves with why, if the manager stops for good on an error (its
    /// task store failed); a receiver taken before the actor starts.
    pub fn failure(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn queue_limit(&self) -> u64 {
        self.sched.capacity() * u64::from(self.settings.queue_factor)
    }

    /// The `retry_after` a client new to the line for places would be given
    /// now (see [`Manager::retry_after_for`]).
    fn retry_after(&self) -> Duration {
        self.retry_after_for(self.places_needed(self.turns.len()))
    }

    /// Places that must free before a client with `ahead` clients before it
    /// in the line for places (see [`turns`]) can take one: one for each of
    /// them and one for itself, less the places free now.
    fn places_needed(&self, ahead: usize) -> usize {
        let free = self.queue_limit().saturating_sub(self.held() as u64);
        let free = usize::try_from(free).unwrap_or(usize::MAX);
        (ahead + 1).saturating_sub(free).max(1)
    }

    /// When a place is likely for a client that needs `needed` places to
    /// free. A place frees each time a queued task starts: with every slot
    /// busy, `capacity` times per average task time (100 ms assumed before
    /// any task has finished). Between 10 ms and 60 s.
    ///
    /// How long the queue ahead takes to drain does not matter here: the
    /// client waits for a place in the queue, not for its task to start.
    fn retry_after_for(&self, needed: usize) -> Duration {
        let cap = self.sched.capacity();
        if cap == 0 {
            return Duration::from_secs(1);
        }
        let avg = self.avg.micros().unwrap_or(100_000.0);
        Duration::from_micros((avg * needed as f64 / cap as f64) as u64)
            .clamp(Duration::from_millis(10), Duration::from_secs(60))
    }

    /// Denies a submit of `session` for want of a place in the queue; the
    /// session joins the line for places (see [`turns`]).
    fn deny_place(&mut self, session: SessionId, reason: &str) -> Rejection {
        let needed = self.places_needed(self.turns.place(session));
        let retry_after = self.retry_after_for(needed);
        self.turns.denied(session, retry_after, Instant::now());
        Rejection::Denied {
            reason: reason.to_string(),
            retry_after,
        }
    }

    fn deny(&mut self, reason: &str) -> Rejection {
        Rejection::Denied {
            reason: reason.to_string(),
            retry_after: self.retry_after(),
        }
    }

    fn reply(&mut self, task: Pending, outcome: TaskOutcome) {
        if let Some((key, _)) = &task.unique {
            self.uniques.finished(key, task.id, Instant::now());
        }
        let ok = matches!(outcome, TaskOutcome::Done(_));
        let sched = &self.sched;
        self.metrics
            .completed(&task.spec.name, ok, |name| sched.provides(name));
        if let TaskOutcome::Failed(error) = &outcome {
            let address = task
                .worker
                .and_then(|w| self.sched.get(w))
                .map(|w| w.address.as_str());
            self.metrics
                .failures
                .push(task.id, &task.spec.name, task.worker, address, error);
        }
        if let Some((task, outcome)) = self.journal.finish(task, outcome) {
            self.deliver(task, outcome);
        }
    }

    /// Hands `task`'s outcome to its waiters and its client, or keeps it.
    /// A detached task's waiters get the outcome as kept, so every reader
    /// of its id sees the same one.
    fn deliver(&mut self, task: Pending, outcome: TaskOutcome) {
        let waiters = self.waiters.remove(&task.id).unwrap_or_default();
        if let (true, ReplyTo::Session(to), Some(origin)) =
            (waiters.is_empty(), &task.reply, &task.origin)
        {
            return to.do_send(TaskReply {
                request_id: origin.request_id,
                outcome,
            });
        }
        let outcome = Arc::new(outcome);
        let outcome = match task.reply {
            ReplyTo::Kept => self.results.insert(task.id, outcome, Instant::now()),
            ReplyTo::Session(_) => outcome,
        };
        self.waiting -= waiters.len();
        for w in waiters {
            let _ = w.tx.send(outcome.clone());
        }
        if let (ReplyTo::Session(to), Some(origin)) = (&task.reply, &task.origin) {
            to.do_send(TaskReply {
                request_id: origin.request_id,
                outcome: Arc::unwrap_or_clone(outcome),
            });
        }
    }

    /// Lets go of the waits on tasks that will have no outcome.
    fn forget_waiters(&mut self, tasks: &[TaskId]) {
        for id in tasks {
            if let Some(w) = self.waiters.remove(id) {
                self.waiting -= w.len();
            }
        }
    }

    /// Where task `id` is, if it is queued, running or kept.
    fn state_of(&mut self, id: TaskId) -> TaskState {
        if let Some(e) = self.tasks.get(id) {
            return match e.state {
                State::Running(_) | State::Unclaimed(_) => TaskState::Running,
                State::Queued | State::Awaiting | State::Retrying { .. } => TaskState::Queued,
                State::Scheduled { .. } => TaskState::Scheduled(e.task.due_ms.unwrap_or(0)),
            };
        }
        if self.journal.holds(id) {
            return TaskState::Running;
        }
        match self.results.get(id, Instant::now()) {
            Some(outcome) => TaskState::Finished(outcome.clone()),
            None => TaskState::Unknown,
        }
    }

    /// Starts task `id` (queued) on `worker`, spending one of its credits;
    /// its assign takes `bytes` on the worker's link.
    fn start(&mut self, id: TaskId, worker: WorkerId, bytes: usize, ctx: &mut Context<Self>) {
        let credit = if self.links.contains_key(&worker) {
            self.sched.assign(worker)
        } else {
            None
        };
        let Some(slot) = credit else {
            log::error!("worker {worker} was picked without a credit; task {id} stays queued");
            return;
        };
        let Some(e) = self.tasks.get(id) else {
            return;
        };
        // A task's first run goes by the task's id; a restart gets a fresh
        // one (ids share one counter), so a late report of an earlier run is
        // never taken for the current one.
        // A recovered task's earlier run may still be reported by its id.
        let first = e.task.started_times == 0;
        let run = if first && e.task.origin.is_some() {
            id
        } else {
            self.fresh_id()
        };
        let Some(task) = self.tasks.task_mut(id) else {
            return;
        };
        if first {
            self.metrics.queue_wait(task.accepted_at.elapsed());
        }
        task.started_times += 1;
        task.worker = Some(worker);
        let (started, timeout) = (task.started_times, task.spec.timeout);
        // The name's running count, if it is limited, held by the run.
        let held = self.limits.hold(&task.spec.name);
        let order = WorkerOrder::Assign {
            run,
            slot,
            name: task.spec.name.clone(),
            args: task.spec.args.clone(),
            timeout,
            reserved: bytes,
        };
        self.tasks
            .move_to(id, Event::Started, State::Running(run), At::Back);
        self.journal.start_run(id, run, started);
        if let Some(limit) = timeout {
            ctx.run_later(limit + self.settings.timeout_grace, move |act, ctx| {
                act.expire(run, limit, ctx)
            });
        }
        if let Some(load) = self.loads.get(&worker) {
            load.reserved
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
        self.links[&worker].do_send(order);
        self.runs.insert(
            run,
            Run {
                worker,
                slot,
                started: Instant::now(),
                task: Some(id),
                _held: held,
            },
        );
    }

    /// Tells the run's worker to stop it. The run stays (without its task)
    /// until the worker reports it finished, which frees the slot.
    fn cancel_run(&self, run: RunId) {
        let Some(r) = self.runs.get(&run) else {
            return;
        };
        if let Some(link) = self.links.get(&r.worker) {
            link.do_send(WorkerOrder::Cancel { run, slot: r.slot });
        }
    }

    /// Parts run `run` from its task (which `event` takes elsewhere): the
    /// run goes on until its worker reports it, its task no longer waits.
    fn part(&mut self, run: RunId) -> Option<TaskId> {
        self.runs.get_mut(&run).and_then(|r| r.task.take())
    }

    /// Answers a task whose worker has not reported by its timeout plus the
    /// grace (or schedules its retry), and cancels the run.
    fn expire(&mut self, run: RunId, limit: Duration, ctx: &mut Context<Self>) {
        let Some(id) = self.runs.get(&run).and_then(|r| r.task) else {
            return;
        };
        let worker = self.runs[&run].worker;
        log::warn!(
            "task {id} on worker {worker} gave no result within its timeout; answered as failed"
        );
        let msg = format!(
            "no result within the task's timeout of {} (worker {worker} did not answer)",
            humantime::format_duration(limit),
        );
        self.part(run);
        self.cancel_run(run);
        self.finished(id, TaskOutcome::Failed(msg), Event::TimedOut, ctx);
        self.check_drained();
    }

    /// Moves queue heads that waited too long one level up.
    fn promote_aged(&mut self, now: Instant) {
        let Some(avg) = self.avg.micros() else {
            return;
        };
        let limit = Duration::from_micros((avg * self.settings.aging_factor) as u64);
        for level in [Priority::Normal, Priority::Low] {
            while let Some(&head) = self.tasks.queue(level).front() {
                let Some(e) = self.tasks.get(head) else {
                    break;
                };
                if now.duration_since(e.task.waiting_since) <= limit {
                    break;
                }
                self.tasks.promote(head, now);
                log::debug!(
                    "task {head} promoted to {:?} after waiting",
                    level.promoted()
                );
            }
        }
    }

    /// Starts queued tasks while there are free slots that fit them.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.sched.idle_slots() == 0 || self.tasks.queued() == 0 || self.shutdown.is_some() {
            return;
        }
        self.promote_aged(Instant::now());
        for level in Priority::ALL {
            let mut i = 0;
            while let Some(&id) = self.tasks.queue(level).get(i) {
                if self.sched.idle_slots() == 0 {
                    return;
                }
                let Some(e) = self.tasks.get(id) else {
                    i += 1;
                    continue;
                };
                if !self.limits.is_empty() && !self.limits.may_start(&e.task.spec.name) {
                    i += 1;
                    continue;
                }
                match pick_for(&mut self.sched, &self.loads, &e.task.spec) {
                    Some((worker, bytes)) => self.start(id, worker, bytes, ctx),
                    None => i += 1,
                }
            }
        }
    }

    /// A run of task `id` (running) ended with `outcome`, which `done`
    /// brought (it finished, or timed out): it is answered, or it waits
    /// for a retry when it failed with retries left.
    fn finished(&mut self, id: TaskId, outcome: TaskOutcome, done: Event, ctx: &mut Context<Self>) {
        let retries = self
            .tasks
            .get(id)
            .is_some_and(|e| e.task.spec.retries.unwrap_or(0) > 0);
        match outcome {
            TaskOutcome::Failed(error) if retries => self.failed_run(id, error, done, ctx),
            outcome => {
                if let Some(task) = self.tasks.leave(id, done) {
                    self.reply(task, outcome);
                }
            }
        }
    }

    /// Puts back task `id` (running) whose run never started: at the head
    /// of its queue, or of its kind's window when no worker provides it any
    /// more; when the manager is shutting down, as its queued tasks are
    /// (answered as not started, or kept for the next start by a store).
    fn requeue_refused(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.task_mut(id) {
            task.started_times = task.started_times.saturating_sub(1);
        }
        self.requeue_front(id, Event::Refused);
        if self.shutdown.is_some() {
            if let Some(task) = self.tasks.leave(id, Event::Stopping) {
                match self.journal.durable() {
                    true => self.keep_for_next_start(task),
                    false => self.reply(task, TaskOutcome::Failed(NOT_STARTED.to_string())),
                }
            }
        } else {
            self.settle(id, At::Front);
        }
    }

    /// Puts task `id` back at the head of its queue for `event`.
    fn requeue_front(&mut self, id: TaskId, event: Event) {
        if let Some(task) = self.tasks.task_mut(id) {
            task.waiting_since = Instant::now();
        }
        self.tasks.move_to(id, event, State::Queued, At::Front);
    }

    /// Task `id`, just queued again, stays queued if a worker provides its
    /// kind; otherwise it waits in its kind's window (at `at`), or fails
    /// at once where the kind has none.
    fn settle(&mut self, id: TaskId, at: At) {
        let Some(kind) = self.tasks.get(id).map(|e| e.task.spec.name.clone()) else {
            return;
        };
        if self.sched.provides(&kind) {
            return;
        }
        if self.awaiting.is_open(&kind) {
            self.tasks
                .move_to(id, Event::ProviderLost, State::Awaiting, at);
        } else if let Some(task) = self.tasks.leave(id, Event::Unrunnable) {
            let msg = format!("no worker provides task {kind} any more");
            self.reply(task, TaskOutcome::Failed(msg));
        }
    }

    /// Takes task `id` out of the table for `event` (a cancel, its client
    /// gone, the stop): its run, if it has one, is cancelled.
    fn take_task(&mut self, id: TaskId, event: Event) -> Option<Pending> {
        let run = match self.tasks.get(id)?.state {
            State::Running(run) => Some(run),
            _ => None,
        };
        let task = self.tasks.leave(id, event)?;
        if let Some(run) = run {
            self.part(run);
            self.cancel_run(run);
        }
        Some(task)
    }
}

/// Shutdown: see [`Shutdown`].
impl Manager {
    /// Answers every queued task (those waiting for a provider too) as not
    /// started and empties the queue; returns how many there were. Without
    /// persistence a task that has not started cannot outlive the manager;
    /// with it, queued tasks are kept for the next start instead
    /// ([`Manager::keep_queue`]).
    fn shed_queue(&mut self) -> usize {
        if self.journal.durable() {
            return self.keep_queue();
        }
        let shed = self.not_started();
        let n = shed.len();
        for t in shed {
            self.reply(t, TaskOutcome::Failed(NOT_STARTED.to_string()));
        }
        n
    }

    /// Takes every task that has not started, queued or waiting for a
    /// provider, out of the table (the manager stops); windows close.
    fn not_started(&mut self) -> Vec<Pending> {
        let mut ids = self.tasks.queued_ids();
        ids.extend(self.tasks.awaiting_ids());
        ids.extend(self.tasks.scheduled_ids().map(|(_, id)| id));
        self.awaiting.close_all();
        ids.into_iter()
            .filter_map(|id| self.tasks.leave(id, Event::Stopping))
            .collect()
    }

    fn begin_shutdown(&mut self, limit: Duration, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let not_started = self.shed_queue() + self.shed_retries();
        let running = self.runs.values().filter(|r| r.task.is_some()).count();
        let queued = if self.journal.durable() {
            "kept for the next start"
        } else {
            "answered as not started"
        };
        log::info!(
            "shutting down: new tasks are denied; {running} running task(s) may finish within {}, \
             {not_started} queued task(s) {queued}",
            humantime::format_duration(limit)
        );
        self.shutdown = Some(Draining {
            began: now,
            deadline: now + limit,
            limit,
            past_deadline: false,
            cancelled: HashSet::new(),
            report: ShutdownReport {
                running,
                not_started,
                ..ShutdownReport::default()
            },
            done: false,
            waiters: Vec::new(),
        });
        ctx.run_later(limit, |act, ctx| act.drain_deadline(ctx));
        self.check_drained();
    }

    /// The drain's deadline: answers the tasks still running as cancelled,
    /// cancels their runs, and waits at most `timeout_grace` for the workers
    /// to report them stopped. With a task store they are kept instead
    /// ([`Manager::keep_running`]).
    fn drain_deadline(&mut self, ctx: &mut Context<Self>) {
        let Some(d) = self.shutdown.as_ref().filter(|d| !d.done) else {
            return;
        };
        if self.journal.durable() {
            return self.keep_running();
        }
        let msg = format!(
            "manager shutting down: task cancelled at the drain deadline ({})",
            humantime::format_duration(d.limit)
        );
        let late: Vec<RunId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.task.is_some())
            .map(|(id, _)| *id)
            .collect();
        for run in &late {
            let answered = self
                .part(*run)
                .and_then(|id| self.tasks.leave(id, Event::DrainDeadline));
            if let Some(task) = answered {
                self.reply(task, TaskOutcome::Failed(msg.clone()));
            }
            self.cancel_run(*run);
        }
        if let Some(d) = self.shutdown.as_mut() {
            d.past_deadline = true;
            d.report.cancelled = late.len();
            d.cancelled.extend(late);
        }
        ctx.run_later(self.settings.timeout_grace, |act, _| act.finish_drain());
        self.check_drained();
    }

    /// Ends the drain once nothing is left to wait for: before the deadline,
    /// no task running; after it, no cancelled run unreported.
    fn check_drained(&mut self) {
        let committing = self.journal.answering();
        let runs = &self.runs;
        let Some(d) = self.shutdown.as_mut().filter(|d| !d.done) else {
            return;
        };
        d.cancelled.retain(|r| runs.contains_key(r));
        let waiting = committing
            || if d.past_deadline {
                !d.cancelled.is_empty()
            } else {
                runs.values().any(|r| r.task.is_some())
            };
        if !waiting {
            self.finish_drain();
        }
    }

    fn finish_drain(&mut self) {
        let runs = &self.runs;
        let Some(d) = self.shutdown.as_mut().filter(|d| !d.done) else {
            return;
        };
        d.cancelled.retain(|r| runs.contains_key(r));
        d.done = true;
        d.report.unconfirmed = d.cancelled.len();
        let r = d.report;
        let took = Duration::from_millis(d.began.elapsed().as_millis() as u64);
        let unconfirmed = match r.unconfirmed {
            0 => String::new(),
            n => format!(", {n} of them not reported stopped by their workers"),
        };
        let queued = if self.journal.durable() {
            "kept for the next start"
        } else {
            "answered as not started"
        };
        log::info!(
            "drained in {}: {} running task(s) answered, {} cancelled at the deadline{unconfirmed}; \
             {} queued task(s) {queued}",
            humantime::format_duration(took),
            r.running,
            r.cancelled,
            r.not_started
        );
        let waiters = std::mem::take(&mut d.waiters);
        self.journal.close();
        for w in waiters {
            let _ = w.send(r);
        }
    }

    /// The deny a submit gets while the manager shuts down: try again once
    /// the drain is over (and a manager may be back), 1 s to 60 s.
    fn deny_shutting_down(&mut self) -> Option<Rejection> {
        let d = self.shutdown.as_ref()?;
        let left = d.deadline.saturating_duration_since(Instant::now());
        let retry_after = (left + self.settings.timeout_grace)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        Some(Rejection::Denied {
            reason: SHUTTING_DOWN.to_string(),
            retry_after,
        })
    }
}

impl Manager {
    /// The cluster's status, encoded in at most `max_bytes` (when the
    /// counts alone fit): exact counts, and a worker list cut to the
    /// busiest [`STATUS_MAX_WORKERS`] with at most [`STATUS_MAX_TASK_NAMES`]
    /// names each, then to what fits. Names are handed out one per worker
    /// per round, so a worker with a long list does not crowd out the rest.
    fn status(&self, max_bytes: usize) -> ClusterStatus {
        let mut status = ClusterStatus {
            workers: self.sched.len() as u64,
            capacity: self.sched.capacity(),
            in_flight: self.runs.len() as u64,
            queued: self.tasks.queued() as u64,
            retrying: self.tasks.retrying() as u64,
            scheduled: self.tasks.scheduled() as u64,
            awaiting_provider: self.tasks.awaiting() as u64,
            queue_limit: self.queue_limit(),
            queued_by_priority: QueuedByPriority {
                high: self.tasks.queue(Priority::High).len() as u64,
                normal: self.tasks.queue(Priority::Normal).len() as u64,
                low: self.tasks.queue(Priority::Low).len() as u64,
            },
            avg_task_ms: self.avg.micros().unwrap_or(0.0) / 1000.0,
            completed: self.metrics.answered_totals().0,
            failed: self.metrics.answered_totals().1,
            denied: self.metrics.denied_total(),
            worker_list: Vec::new(),
            worker_list_total: self.sched.len() as u64,
            worker_list_truncated: false,
            limits: self.limits.status(|name| self.tasks.queued_of(name)),
        };
        let mut workers = self.sched.workers();
        workers.sort_by_key(|w| (Reverse(w.busy()), w.id));
        // Array headers grow with their length (up to 3 bytes below 2^16
        // entries): room for that is set aside up front.
        let mut used = codec::encoded_len(&status) + 2;
        let mut list = Vec::new();
        for w in workers.iter().take(STATUS_MAX_WORKERS) {
            let entry = WorkerStatus {
                id: w.id,
                address: w.address.clone(),
                capacity: w.capacity,
                in_flight: w.busy(),
                avg_ms: w.avg.micros().unwrap_or(0.0) / 1000.0,
                tasks: Vec::new(),
                eval: w.eval,
                draining: w.draining,
                tasks_total: u32::try_from(w.tasks.len()).unwrap_or(u32::MAX),
            };
            let cost = codec::encoded_len(&entry) + 2;
            if used + cost > max_bytes {
                break;
            }
            used += cost;
            list.push(entry);
        }
        'names: for round in 0..STATUS_MAX_TASK_NAMES {
            let mut more = false;
            for (entry, w) in list.iter_mut().zip(&workers) {
                let Some(name) = w.tasks.get(round) else {
                    continue;
                };
                more = true;
                let cost = codec::encoded_len(name);
                if used + cost > max_bytes {
                    break 'names;
                }
                used += cost;
                entry.tasks.push(name.clone());
            }
            if !more {
                break;
            }
        }
        status.worker_list_truncated = list.len() < workers.len();
        status.worker_list = list;
        // The sums above bound the size; this only guards them.
        while codec::encoded_len(&status) > max_bytes && status.worker_list.pop().is_some() {
            status.worker_list_truncated = true;
        }
        status
    }
}

/// The worker a task of `spec` goes to now, and the bytes its assign takes:
/// the least loaded that provides it, has a free slot, and has room on its
/// link for the assign ([`LinkLoad`]). A worker without room is set aside
/// until its link says it has some ([`WorkerReady`]), and the next is tried.
fn pick_for(
    sched: &mut Scheduler,
    loads: &IdMap<Arc<LinkLoad>>,
    spec: &TaskSpec,
) -> Option<(WorkerId, usize)> {
    let mut bytes = None;
    loop {
        let worker = sched.pick(&spec.name)?;
        let Some(load) = loads.get(&worker) else {
            return Some((worker, 0));
        };
        let size = *bytes.get_or_insert_with(|| {
            *client_session::ASSIGN_OVERHEAD + spec.name.len() + codec::encoded_len(&spec.args)
        });
        if !load.over(size) {
            return Some((worker, size));
        }
        load.wanted
            .store(true, std::sync::atomic::Ordering::Relaxed);
        sched.set_congested(worker, true);
        log::debug!(
            "worker {worker}: {} bytes wait on its link; an assign of {size} waits for room",
            load.held()
        );
    }
}

/// Task and run ids start at a random point, so a worker that reconnects
/// after a manager restart and reports a run from before cannot be mistaken
/// for a run of the new manager's.
fn random_id_base() -> u64 {
    let mut b = [0u8; 8];
    if crate::protocol::crypto::fill_random(&mut b).is_err() {
        return 0;
    }
    // Leave headroom so ids never wrap.
    u64::from_be_bytes(b) >> 2
}

impl Actor for Manager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // No parking of senders: a session's `SubmitTask` (sent with `send`)
        // and its later `CancelTask` or `ClientGone` (`do_send`) must arrive
        // in the order they were sent, which a full mailbox would not keep.
        ctx.set_mailbox_capacity(0);
        // Lookups and inserts expire outcomes too; this lets memory go on a
        // quiet manager.
        let sweep =
            (self.settings.result_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        ctx.run_interval(sweep, |act, _| {
            act.results.expire(Instant::now());
            act.forget_gone();
            let (tasks, journal) = (&act.tasks, &act.journal);
            act.uniques.sweep(Instant::now(), |id| {
                tasks.get(id).is_some() || journal.holds(id)
            });
        });
        ctx.run_interval(overview::SAMPLE_EVERY, |act, _| act.sample_counts());
        let fired = self.recover(ctx);
        self.start_periodic(&fired, ctx);
    }
}

impl Handler<SubmitTask> for Manager {
    type Result = SubmitAnswer;

    fn handle(&mut self, msg: SubmitTask, ctx: &mut Self::Context) -> Self::Result {
        let unique = msg.opts.unique.clone();
        if let Some((key, _)) = &unique {
            if let Some(answer) = self.duplicate(key, &msg) {
                return SubmitAnswer::Now(answer);
            }
        }
        let result = self.submit(msg, ctx);
        if let (Ok(id), Some((key, keep))) = (&result, unique) {
            self.uniques.insert(key, *id, keep);
        }
        // In durable mode an acceptance is sent once it is committed.
        match self.journal.accept_reply() {
            Some(reply) => SubmitAnswer::Committed(reply),
            None => SubmitAnswer::Now(result),
        }
    }
}

impl Manager {
    fn submit(&mut self, msg: SubmitTask, ctx: &mut Context<Self>) -> Result<TaskId, Rejection> {
        let origin = Origin {
            session: msg.session,
            request_id: msg.request_id,
            reattach: msg.opts.reattach,
        };
        let reply = if msg.detach {
            ReplyTo::Kept
        } else {
            ReplyTo::Session(msg.reply_to)
        };
        self.admit(msg.spec, msg.session, Some(origin), reply, msg.opts, ctx)
    }

    /// Why a task of `name` is denied by its name's limits now, if it is
    /// (see [`limits`]); takes a token of its rate when it is not.
    fn limit(&mut self, name: &str) -> Result<(), Rejection> {
        if self.limits.is_empty() {
            return Ok(());
        }
        let queued = self.tasks.queued_of(name);
        match self.limits.admit(name, queued, Instant::now()) {
            Some(deny) => Err(deny),
            None => Ok(()),
        }
    }

    /// Accepts task `spec` from `session` (queued, started at once, or
    /// scheduled for its due time in `opts`) or says why not, and counts
    /// the submit in the metrics: every way into the queue goes through
    /// here (a client's submit, a dead task queued again, a periodic run).
    fn admit(
        &mut self,
        spec: TaskSpec,
        session: SessionId,
        origin: Option<Origin>,
        reply: ReplyTo,
        opts: SubmitOptions,
        ctx: &mut Context<Self>,
    ) -> Result<TaskId, Rejection> {
        let admitted = self.try_admit(spec, session, origin, reply, opts, ctx);
        self.metrics.submitted(&admitted);
        admitted
    }

    fn try_admit(
        &mut self,
        mut spec: TaskSpec,
        session: SessionId,
        origin: Option<Origin>,
        reply: ReplyTo,
        opts: SubmitOptions,
        ctx: &mut Context<Self>,
    ) -> Result<TaskId, Rejection> {
        if let Some(deny) = self.deny_shutting_down() {
            return Err(deny);
        }
        if let Some(busy) = self.journal.busy() {
            return Err(self.deny(busy));
        }
        if self.sched.capacity() == 0 {
            return Err(self.deny("no capacity"));
        }
        if !self.runnable(&spec.name) {
            return Err(Rejection::Invalid(if spec.name == EVAL_TASK {
                "no worker allows eval (start one with --allow-eval)".to_string()
            } else {
                format!("no worker provides task {}", spec.name)
            }));
        }
        if spec.timeout.is_none() {
            spec.timeout = self.settings.default_timeout;
        }
        if spec.attempts == 0 {
            spec.attempts = self.settings.default_attempts.max(1);
        }
        let retries = spec.retries.unwrap_or(self.settings.default_retries);
        if retries > retry::MAX_RETRIES {
            return Err(Rejection::Invalid(format!(
                "retries must be at most {} (got {retries})",
                retry::MAX_RETRIES
            )));
        }
        spec.retries = Some(retries);
        let wait = match opts.due_ms {
            Some(due) => {
                schedule::wait_until(due, journal::now_ms()).map_err(Rejection::Invalid)?
            }
            None => None,
        };
        let task = Pending {
            id: self.fresh_id(),
            origin,
            level: spec.priority,
            spec,
            reply,
            started_times: 0,
            waiting_since: Instant::now(),
            accepted_at: Instant::now(),
            worker: None,
            retried: 0,
            attempt_base: 0,
            due_ms: wait.and(opts.due_ms),
            unique: opts.unique,
        };
        if let Some(wait) = wait {
            return self.schedule(task, wait, ctx);
        }
        let id = task.id;
        let may_start = self.limits.is_empty() || self.limits.may_start(&task.spec.name);
        // Start it now if a free slot provides it, even when the queue is
        // full: after every dispatch no queued task fits a free slot, so this
        // overtakes nobody, and the bound is on waiting tasks only.
        let now = pick_for(&mut self.sched, &self.loads, &task.spec).filter(|_| may_start);
        if let Some((worker, bytes)) = now {
            self.limit(&task.spec.name)?;
            self.journal.accept(&task);
            self.tasks.insert(task, State::Queued, At::Back);
            self.start(id, worker, bytes, ctx);
            return Ok(id);
        }
        let free = self.queue_limit().saturating_sub(self.held() as u64) as usize;
        if free == 0 {
            return Err(self.deny_place(session, "queue full"));
        }
        // Places are held for waiting clients only while the queue has work
        // for every slot, or half its bound where that is less (with a
        // queue factor of 1 it would otherwise never hold one): a queue
        // running dry takes anyone.
        let dry_below = self.sched.capacity().min((self.queue_limit() / 2).max(1));
        let running_dry = (self.tasks.queued() as u64) < dry_below;
        if !self.turns.admit(session, free, Instant::now()) && !running_dry {
            return Err(self.deny_place(
                session,
                "queue full for newcomers: places go to waiting clients in turn",
            ));
        }
        self.limit(&task.spec.name)?;
        self.journal.accept(&task);
        self.tasks.insert(task, State::Queued, At::Back);
        self.dispatch(ctx);
        Ok(id)
    }
}

impl Handler<CancelTask> for Manager {
    type Result = ();

    fn handle(&mut self, msg: CancelTask, _: &mut Self::Context) {
        let task = self
            .tasks
            .of_request(msg.session, msg.request_id)
            .and_then(|id| self.take_task(id, Event::Cancelled));
        match task {
            Some(task) => {
                log::debug!("task {} cancelled by its client", task.id);
                self.reply(task, TaskOutcome::Failed(CANCELLED.to_string()));
            }
            None => log::debug!(
                "session {}: cancel of request {} that has no task waiting or running",
                msg.session,
                msg.request_id
            ),
        }
        self.check_drained();
    }
}

impl Handler<GetResult> for Manager {
    type Result = ResponseFuture<TaskState>;

    fn handle(&mut self, msg: GetResult, _: &mut Self::Context) -> Self::Result {
        let state = self.state_of(msg.task);
        let pending = matches!(
            state,
            TaskState::Queued | TaskState::Running | TaskState::Scheduled(_)
        );
        if !msg.wait || !pending {
            return Box::pin(async move { state });
        }
        if self.waiting >= MAX_RESULT_WAITERS {
            log::debug!(
                "session {}: wait on task {} answered at once: {MAX_RESULT_WAITERS} waits held already",
                msg.session,
                msg.task
            );
            return Box::pin(async move { state });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(msg.task).or_default().push(Waiter {
            session: msg.session,
            tx,
        });
        self.waiting += 1;
        Box::pin(async move {
            match rx.await {
                Ok(outcome) => TaskState::Finished(outcome),
                Err(_) => TaskState::Unknown,
            }
        })
    }
}

impl Handler<CancelById> for Manager {
    type Result = MessageResult<CancelById>;

    fn handle(&mut self, msg: CancelById, _: &mut Self::Context) -> Self::Result {
        let result = match self.take_task(msg.task, Event::Cancelled) {
            Some(task) => {
                log::debug!("task {} cancelled by id", task.id);
                self.reply(task, TaskOutcome::Failed(CANCELLED.to_string()));
                CancelResult::Cancelled
            }
            None if self.results.get(msg.task, Instant::now()).is_some() => CancelResult::Finished,
            None => CancelResult::Unknown,
        };
        self.check_drained();
        MessageResult(result)
    }
}

impl Handler<ClientGone> for Manager {
    type Result = ();

    fn handle(&mut self, msg: ClientGone, _: &mut Self::Context) {
        self.metrics.client(false);
        self.turns.gone(msg.session);
        let mut let_go: Vec<TaskId> = Vec::new();
        let mut running = 0;
        for id in self.tasks.of_session(msg.session) {
            if matches!(
                self.tasks.get(id).map(|e| &e.state),
                Some(State::Running(_))
            ) {
                running += 1;
            }
            if self.take_task(id, Event::ClientGone).is_some() {
                let_go.push(id);
            }
        }
        let dropped = let_go.len() - running;
        self.forget_waiters(&let_go);
        for id in &let_go {
            self.journal.drop_task(*id);
        }
        let mut ended = 0;
        for list in self.waiters.values_mut() {
            let before = list.len();
            list.retain(|w| w.session != msg.session && !w.tx.is_closed());
            ended += before - list.len();
        }
        self.waiters.retain(|_, list| !list.is_empty());
        self.waiting -= ended;
        if !let_go.is_empty() {
            log::debug!(
                "session {} left: dropped {dropped} queued task(s), cancelled {running} running",
                msg.session
            );
        }
        self.check_drained();
    }
}

impl Handler<RegisterWorker> for Manager {
    type Result = Result<WorkerId, Refusal>;

    fn handle(&mut self, msg: RegisterWorker, ctx: &mut Self::Context) -> Self::Result {
        if msg.capacity == 0 {
            return Err(Refusal::permanent("capacity must be at least 1"));
        }
        if msg.capacity > MAX_WORKER_CAPACITY {
            return Err(Refusal::permanent(format!(
                "capacity must be at most {MAX_WORKER_CAPACITY}"
            )));
        }
        if msg.tasks.is_empty() && !msg.eval {
            return Err(Refusal::permanent(
                "a worker must provide at least one task",
            ));
        }
        let mut busy: Vec<SlotIndex> = msg.running.iter().map(|(_, slot)| *slot).collect();
        busy.sort_unstable();
        busy.dedup();
        if busy.len() != msg.running.len() || busy.last().is_some_and(|&s| s >= msg.capacity) {
            return Err(Refusal::permanent(
                "running runs must name distinct slots below the capacity",
            ));
        }
        // The manager has not yet noticed the worker's previous connection
        // is gone; once it has, the run is no longer known.
        if let Some(run) = msg
            .running
            .iter()
            .map(|(run, _)| run)
            .chain(msg.finished.iter().map(|(run, _)| run))
            .find(|run| self.runs.contains_key(run))
        {
            return Err(Refusal::for_now(format!(
                "run {run} is already known to this manager"
            )));
        }
        let id = self.sched.add(
            msg.address.clone(),
            msg.capacity,
            msg.tasks,
            msg.eval,
            &busy,
        );
        if let Some(w) = self.sched.get(id) {
            let kinds: Vec<String> = w.routing_names().map(str::to_string).collect();
            self.providers_back(kinds.iter().map(String::as_str));
        }
        // Runs from before registering belong to no task of this manager's
        // (it answered or requeued them when their connection was lost, or it
        // was restarted): cancel them; each slot is a credit once finished.
        // In durable mode, a run of a recovered task is attached instead.
        let mut attached = 0;
        for &(run, slot) in &msg.running {
            if let Some(task) = self.claim_recovered(run, id, ctx) {
                attached += 1;
                self.runs.insert(
                    run,
                    Run {
                        worker: id,
                        slot,
                        started: Instant::now(),
                        task: Some(task),
                        _held: None,
                    },
                );
                continue;
            }
            self.runs.insert(
                run,
                Run {
                    worker: id,
                    slot,
                    started: Instant::now(),
                    task: None,
                    _held: None,
                },
            );
            msg.link.do_send(WorkerOrder::Cancel { run, slot });
        }
        self.links.insert(id, msg.link);
        if let Some(load) = msg.load {
            self.loads.insert(id, load);
        }
        let kept = msg.finished.len();
        let mut taken = 0;
        for (run, outcome) in msg.finished {
            if self.handed_over(run, outcome, ctx) {
                taken += 1;
            }
        }
        if kept > 0 {
            log::info!(
                "worker {id} handed over {kept} outcome(s) of runs that ended while it had no \
                 manager: {taken} taken as their tasks' outcomes, the rest let go"
            );
        }
        if msg.finished_dropped > 0 {
            self.metrics.outcomes_dropped(msg.finished_dropped);
            log::warn!(
                "worker {id} dropped {} outcome(s) of runs that ended while it had no manager \
                 (past worker.kept_outcomes_max or kept_outcomes_max_bytes): their tasks run again",
                msg.finished_dropped
            );
        }
        log::info!(
            "worker {id} joined from {} with {} slot(s), {} busy with earlier runs \
             ({attached} of recovered tasks attached, the rest cancelled); capacity now {}",
            msg.address,
            msg.capacity,
            msg.running.len(),
            self.sched.capacity()
        );
        self.dispatch(ctx);
        Ok(id)
    }
}

impl Handler<RunFinished> for Manager {
    type Result = ();

    fn handle(&mut self, msg: RunFinished, ctx: &mut Self::Context) {
        let run = match self.runs.remove(&msg.run) {
            Some(r) if r.worker == msg.worker => r,
            Some(r) => {
                static FOREIGN_RUN: RateLimit = RateLimit::new(WARN_WINDOW);
                crate::log_limited!(
                    FOREIGN_RUN,
                    log::Level::Warn,
                    "worker {} reported run {} of worker {}; ignored",
                    msg.worker,
                    msg.run,
                    r.worker
                );
                self.runs.insert(msg.run, r);
                return;
            }
            // Not a run of this manager's: perhaps one that ended while
            // the worker had no manager, handed over after `registered`.
            None => {
                self.handed_over(msg.run, msg.outcome, ctx);
                self.check_drained();
                return;
            }
        };
        let took = run.started.elapsed();
        let Run {
            task, slot, _held, ..
        } = run;
        // Its name's running count goes back before anything is dispatched.
        drop(_held);
        match task {
            Some(task) => {
                if let Some(e) = self.tasks.get(task) {
                    let sched = &self.sched;
                    self.metrics
                        .run_time(took, &e.task.spec.name, |name| sched.provides(name));
                }
                let ok = matches!(msg.outcome, TaskOutcome::Done(_));
                self.sched.release(msg.worker, slot, ok.then_some(took));
                if ok {
                    self.avg.add(took);
                }
                // The freed slot is refilled before the reply goes out, so
                // the worker's next assign leaves first (see PERFORMANCE.md).
                self.dispatch(ctx);
                self.finished(task, msg.outcome, Event::Finished, ctx);
            }
            None => {
                self.sched.release(msg.worker, slot, None);
                self.dispatch(ctx);
            }
        }
        self.check_drained();
    }
}

impl Handler<WorkerReady> for Manager {
    type Result = ();

    fn handle(&mut self, msg: WorkerReady, ctx: &mut Self::Context) {
        self.sched.set_congested(msg.worker, false);
        self.dispatch(ctx);
    }
}

impl Handler<RunRefused> for Manager {
    type Result = ();

    fn handle(&mut self, msg: RunRefused, ctx: &mut Self::Context) {
        let run = match self.runs.remove(&msg.run) {
            Some(r) if r.worker == msg.worker => r,
            Some(r) => {
                self.runs.insert(msg.run, r);
                return;
            }
            None => return,
        };
        self.sched.release(msg.worker, run.slot, None);
        let task = run.task;
        drop(run);
        if let Some(task) = task {
            log::debug!(
                "worker {} did not start task {task} ({}); queued again",
                msg.worker,
                crate::logsafe::escaped(&msg.reason)
            );
            self.requeue_refused(task);
        }
        self.dispatch(ctx);
        self.check_drained();
    }
}

impl Handler<WorkerDraining> for Manager {
    type Result = ();

    fn handle(&mut self, msg: WorkerDraining, ctx: &mut Self::Context) {
        let was_taking = self.sched.get(msg.worker).is_some_and(|w| !w.draining);
        self.sched.drain(msg.worker);
        log::info!(
            "worker {} is draining; capacity now {}",
            msg.worker,
            self.sched.capacity()
        );
        if was_taking {
            let lost = self.unprovided(msg.worker);
            self.providers_lost(lost, true, ctx);
        }
    }
}

impl Handler<WorkerLost> for Manager {
    type Result = ();

    fn handle(&mut self, msg: WorkerLost, ctx: &mut Self::Context) {
        let Some(gone) = self.sched.remove(msg.worker) else {
            return;
        };
        let unprovided: HashSet<String> = gone
            .routing_names()
            .filter(|n| !self.sched.provides(n))
            .map(str::to_string)
            .collect();
        self.links.remove(&msg.worker);
        self.loads.remove(&msg.worker);
        let mut lost: Vec<RunId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.worker == msg.worker)
            .map(|(id, _)| *id)
            .collect();
        // Requeued at the head one by one: newest first, so the oldest ends up in front.
        lost.sort_unstable_by(|a, b| b.cmp(a));
        let (mut requeued, mut in_flight) = (0, 0);
        for run in &lost {
            let Some(id) = self.runs.remove(run).and_then(|r| r.task) else {
                continue;
            };
            in_flight += 1;
            let Some(e) = self.tasks.get(id) else {
                continue;
            };
            let tried = e.task.started_times - e.task.attempt_base;
            let attempts = e.task.spec.attempts;
            if self.shutdown.is_none() && tried < attempts.max(1) {
                requeued += 1;
                self.requeue_front(id, Event::LostRetryable);
                continue;
            }
            let Some(task) = self.tasks.leave(id, Event::Lost) else {
                continue;
            };
            if self.shutdown.is_some() && self.journal.durable() {
                // Its start stays recorded: requeued at the next start.
                self.keep_for_next_start(task);
            } else if self.shutdown.is_some() {
                // Requeued, it could not start: see `shed_queue`.
                let msg = "worker lost before completion (not requeued: manager shutting down)";
                self.reply(task, TaskOutcome::Failed(msg.to_string()));
            } else {
                let msg = if attempts > 1 {
                    format!("worker lost before completion (tried {tried} times)")
                } else {
                    "worker lost before completion".to_string()
                };
                self.reply(task, TaskOutcome::Failed(msg));
            }
        }
        log::info!(
            "worker {} left with {in_flight} task(s) in flight ({requeued} requeued); capacity now {}",
            msg.worker,
            self.sched.capacity()
        );
        // A draining worker's kinds got their windows when it began to drain.
        self.providers_lost(unprovided, !gone.draining, ctx);
        self.dispatch(ctx);
        self.check_drained();
    }
}

impl Handler<Shutdown> for Manager {
    type Result = ResponseFuture<ShutdownReport>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        if self.shutdown.is_none() {
            self.begin_shutdown(msg.deadline, ctx);
        }
        let (tx, rx) = oneshot::channel();
        match self.shutdown.as_mut() {
            Some(d) if !d.done => d.waiters.push(tx),
            Some(d) => {
                let _ = tx.send(d.report);
            }
            None => {}
        }
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

impl Handler<GetCredits> for Manager {
    type Result = MessageResult<GetCredits>;

    fn handle(&mut self, _: GetCredits, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.sched
                .workers()
                .into_iter()
                .map(|w| {
                    let mut free = w.free_slots().to_vec();
                    free.sort_unstable();
                    (w.id, free)
                })
                .collect(),
        )
    }
}

impl Handler<GetStatus> for Manager {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.status(ClusterStatus::max_len_for_frame(DEFAULT_MAX_FRAME)))
    }
}

impl Handler<GetStatusWithin> for Manager {
    type Result = MessageResult<GetStatusWithin>;

    fn handle(&mut self, msg: GetStatusWithin, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.status(msg.max_bytes))
    }
}
