//! Typed messages between actors, grouped by the actor that receives them.
//!
//! These never travel on the wire; the direction types in
//! `crate::protocol` do. The [`Connection`](crate::actors::Connection) actor
//! converts between the two, and sends what it decodes straight to the actor
//! that handles it.

use std::time::Duration;

use actix::prelude::*;

use crate::protocol::{ClusterStatus, DeadList, Priority, Value};

/// Id the manager gives an accepted task.
pub type TaskId = u64;
/// Id the manager gives one run (one start) of a task on a worker slot.
pub type RunId = u64;
/// Id the manager gives a registered worker.
pub type WorkerId = u64;
/// Id of one client connection on the manager.
pub type SessionId = u64;
/// Index of a slot within its worker: `0..capacity`.
pub type SlotIndex = u32;

/// What a client asks to run.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Task name.
    pub name: String,
    /// Arguments.
    pub args: Value,
    /// Priority.
    pub priority: Priority,
    /// Deadline for the task, if any.
    pub timeout: Option<Duration>,
    /// Times the task may be started; worker loss requeues it until used up.
    /// 0 means the manager's default.
    pub attempts: u32,
    /// Times the task may be run again after a failed run, each after a
    /// growing backoff; `None` means the manager's default
    /// (`default_retries`). Apart from `attempts`: worker loss does not use
    /// a retry, and a failed run does not use an attempt.
    pub retries: Option<u32>,
}

impl TaskSpec {
    /// A normal-priority task that runs once, with no deadline.
    pub fn new(name: impl Into<String>, args: Value) -> TaskSpec {
        TaskSpec {
            name: name.into(),
            args,
            priority: Priority::Normal,
            timeout: None,
            attempts: 1,
            retries: None,
        }
    }
}

/// How a task (or one run of it) ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// It returned a value.
    Done(Value),
    /// It failed, could not run, or was cancelled.
    Failed(String),
}

/// Why the manager did not accept a task.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// No room: queue full, no capacity, or the manager is shutting down.
    /// Try again after `retry_after`.
    #[error("denied: {reason} (retry after {retry_after:?})")]
    Denied {
        /// "queue full", "no capacity" or "manager shutting down".
        reason: String,
        /// Estimate of when room is likely.
        retry_after: Duration,
    },
    /// The task can never run here as asked (no worker provides it, bad spec).
    #[error("{0}")]
    Invalid(String),
}

// ---- to the Manager ----

/// Client connection → Manager: accept or deny a task. The deny is this
/// message's reply; an accepted task's outcome comes later as a
/// [`TaskReply`] to `reply_to`.
#[derive(Message)]
#[rtype(result = "Result<Accepted, Rejection>")]
pub struct SubmitTask {
    /// Submitting session.
    pub session: SessionId,
    /// The client's request id, echoed in the [`TaskReply`].
    pub request_id: u64,
    /// The task.
    pub spec: TaskSpec,
    /// Where the outcome goes, unless `detach`.
    pub reply_to: Recipient<TaskReply>,
    /// Keep the task when its session leaves, and keep its outcome for
    /// [`GetResult`] instead of sending a [`TaskReply`].
    pub detach: bool,
    /// When it runs, and the like.
    pub opts: SubmitOptions,
}

/// What a submit may ask beyond the task itself; the default is a task
/// that runs as soon as it can.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitOptions {
    /// Run it no earlier than this, in milliseconds since the Unix epoch by
    /// the manager's clock: it waits in the manager's scheduled set until
    /// then. A time now or past runs it now.
    pub due_ms: Option<u64>,
    /// A unique task: its key, and how long the key holds after the task
    /// is answered (see `actors::manager::unique`).
    pub unique: Option<(String, Duration)>,
    /// The client asked for the task's id to wait on it again after losing
    /// its manager (`want_id`): with a task store, a graceful stop that
    /// keeps the task for the next start sends it no reply, and it waits
    /// on the id once it has reconnected.
    pub reattach: bool,
}

/// The answer to a [`SubmitTask`] the manager accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The task's manager-wide id.
    pub task: TaskId,
    /// The task outlives the manager (it has a task store, and answered
    /// once the acceptance was committed): only then is an attached client
    /// that asks (`want_id`) told the id.
    pub durable: bool,
}

/// What the manager's [`SubmitTask`] handler returns: its answer at once
/// (every rejection, and an acceptance without a task store), or once the
/// acceptance is committed to the store.
pub enum SubmitAnswer {
    /// At once; an acceptance is not durable.
    Now(Result<TaskId, Rejection>),
    /// Once the task store committed it; an acceptance is durable.
    Committed(Response<Result<TaskId, Rejection>>),
}

/// The answer a store's commit resolves, as [`SubmitAnswer::Committed`]
/// holds it (the type actix needs to hand it on).
struct Commit;

impl Message for Commit {
    type Result = Result<TaskId, Rejection>;
}

impl<A: Actor> actix::dev::MessageResponse<A, SubmitTask> for SubmitAnswer {
    fn handle(
        self,
        ctx: &mut A::Context,
        tx: Option<actix::dev::OneshotSender<Result<Accepted, Rejection>>>,
    ) {
        let durable = matches!(self, SubmitAnswer::Committed(_));
        let answer = move |r: Result<TaskId, Rejection>| {
            if let Some(tx) = tx {
                let _ = tx.send(r.map(|task| Accepted { task, durable }));
            }
        };
        match self {
            SubmitAnswer::Now(r) => answer(r),
            SubmitAnswer::Committed(later) => {
                let (inner, committed) = tokio::sync::oneshot::channel();
                actix::dev::MessageResponse::<A, Commit>::handle(later, ctx, Some(inner));
                actix_rt::spawn(async move {
                    if let Ok(r) = committed.await {
                        answer(r);
                    }
                });
            }
        }
    }
}

/// Client connection → Manager: cancel the task a session submitted under
/// `request_id`. If it is still queued or running, its reply says so.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct CancelTask {
    /// The session that submitted it.
    pub session: SessionId,
    /// The submit's request id.
    pub request_id: u64,
}

/// Anyone → Manager: where task `task` is, by its manager-wide id. With
/// `wait`, the reply comes once the task has an outcome (or is let go
/// without one: then [`TaskState::Unknown`]); a queued or running task is
/// answered at once when the manager already holds its most waiters.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "TaskState")]
pub struct GetResult {
    /// The task's id.
    pub task: TaskId,
    /// Answer only once the task has an outcome.
    pub wait: bool,
    /// The asking session: its waits end when it leaves.
    pub session: SessionId,
}

/// Where a task is (see [`GetResult`]).
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Accepted, waiting for a slot.
    Queued,
    /// Running on a worker.
    Running,
    /// Scheduled to run at this time (milliseconds since the Unix epoch).
    Scheduled(u64),
    /// Answered: for a detached task, its kept outcome. Shared with the
    /// store and every other reader: a reply clones the handle, and the
    /// value is copied only where it is encoded for one peer.
    Finished(std::sync::Arc<TaskOutcome>),
    /// Never accepted here, or its outcome is not kept (an attached task,
    /// or a detached one whose outcome expired or was evicted).
    Unknown,
}

impl TaskState {
    /// [`TaskState::Finished`] with `outcome`.
    pub fn finished(outcome: TaskOutcome) -> TaskState {
        TaskState::Finished(std::sync::Arc::new(outcome))
    }
}

/// Anyone → Manager: cancel task `task`, whoever submitted it. A queued
/// task is removed, a running one cancelled on its worker; either is
/// answered failed [`CANCELLED`](crate::actors::manager::CANCELLED).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "CancelResult")]
pub struct CancelById {
    /// The task's id.
    pub task: TaskId,
}

/// What a [`CancelById`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelResult {
    /// It was queued or running, and is now answered as cancelled.
    Cancelled,
    /// It had already finished (its outcome is kept, and unchanged).
    Finished,
    /// No task by that id is queued, running or kept.
    Unknown,
}

/// Anyone → Manager: the dead list (tasks that failed after using their
/// retries), newest first, at most `limit` entries and cut to what encodes
/// in `max_bytes`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "DeadList")]
pub struct GetDeadList {
    /// Most entries wanted.
    pub limit: usize,
    /// Largest encoded list (see [`DeadList::max_len_for_frame`]).
    pub max_bytes: usize,
}

/// Which dead-list entries a [`RetryDead`] or [`PurgeDead`] is about: the
/// one of `task_id`, or all (of task name `task`, if given).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadSelect {
    /// One entry, by its task's id.
    pub task_id: Option<u64>,
    /// Only entries of this task name.
    pub task: Option<String>,
}

/// What a [`RetryDead`] or [`PurgeDead`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadDone {
    /// Entries queued again: (the dead task's id, the new task's id).
    pub retried: Vec<(TaskId, TaskId)>,
    /// Entries removed by a purge.
    pub purged: u64,
    /// Entries selected that are still listed.
    pub left: u64,
    /// Why the first of those was not queued again.
    pub reason: Option<String>,
    /// Whether that was a deny: the same request may succeed later.
    pub denied: bool,
}

/// Client session → Manager: queue the selected dead-list entries again
/// as new detached tasks, oldest first, up to `limit`; each leaves the list
/// once its new task is accepted (committed, with a task store). The answer
/// comes once those acceptances are committed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "DeadDone")]
pub struct RetryDead {
    /// The asking session (for the queue's turns).
    pub session: SessionId,
    /// Which entries.
    pub select: DeadSelect,
    /// Most entries queued again by this request.
    pub limit: usize,
}

/// Client session → Manager: remove the selected dead-list entries.
#[derive(Message, Debug, Clone)]
#[rtype(result = "DeadDone")]
pub struct PurgeDead {
    /// Which entries.
    pub select: DeadSelect,
}

/// Anyone → Manager: the periodic tasks (`[[schedule]]`) and where each
/// stands, in config order.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<crate::protocol::ScheduleInfo>")]
pub struct GetSchedules;

/// Client connection → Manager: the client is gone; drop its queued tasks
/// and cancel its running ones, but for detached ones.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientGone {
    /// The session that closed.
    pub session: SessionId,
}

/// Worker connection → Manager: a worker announced itself. Replies with its
/// id, or why it was refused.
#[derive(Message)]
#[rtype(result = "Result<WorkerId, Refusal>")]
pub struct RegisterWorker {
    /// Peer address, for status and logs.
    pub address: String,
    /// Slots.
    pub capacity: u32,
    /// Task names it provides.
    pub tasks: Vec<String>,
    /// Whether it accepts eval scripts.
    pub eval: bool,
    /// Runs still going in its slots: those slots are not free.
    pub running: Vec<(RunId, SlotIndex)>,
    /// Where assignments and cancels go.
    pub link: Recipient<WorkerOrder>,
    /// What the worker's connection holds for it; `None` where nothing
    /// measures it (an actor standing in for a connection).
    pub load: Option<std::sync::Arc<LinkLoad>>,
    /// Outcomes of runs that ended while it had no manager, handed over:
    /// each is its task's outcome if that task is one this manager
    /// recovered and nobody claimed yet.
    pub finished: Vec<(RunId, TaskOutcome)>,
    /// Such outcomes the worker dropped past its bounds.
    pub finished_dropped: u64,
}

/// The bytes a worker's connection holds for it, shared by the connection
/// and the manager. The manager assigns the worker nothing while the
/// assign would take them over `limit`, so big tasks wait in the queue
/// (with their credits unspent) instead of piling up in a connection the
/// worker reads as fast as it can.
#[derive(Debug)]
pub struct LinkLoad {
    /// Bytes waiting in the connection's outgoing buffer, as it last set.
    pub waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes of assigns the manager sent the connection that it has not
    /// encoded yet (their size as the manager reckoned it).
    pub reserved: std::sync::atomic::AtomicUsize,
    /// Past this many bytes, no assign is sent.
    pub limit: usize,
    /// Set by the manager when it held an assign back: once the bytes are
    /// back under `limit`, the connection says so ([`WorkerReady`]).
    pub wanted: std::sync::atomic::AtomicBool,
}

impl LinkLoad {
    /// A load over `waiting`, the connection's own count, held to `limit`.
    pub fn new(waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>, limit: usize) -> LinkLoad {
        LinkLoad {
            waiting,
            reserved: Default::default(),
            limit,
            wanted: Default::default(),
        }
    }

    /// Bytes held for the worker now, encoded or not.
    pub fn held(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        self.waiting.load(Relaxed) + self.reserved.load(Relaxed)
    }

    /// Whether `more` bytes would take it over its limit. A connection that
    /// holds nothing always takes one more, whatever its size.
    pub fn over(&self, more: usize) -> bool {
        let held = self.held();
        held > 0 && held + more > self.limit
    }
}

/// Worker connection → Manager: the bytes held for the worker are back
/// under its limit after the manager held an assign back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerReady {
    /// The worker.
    pub worker: WorkerId,
}

/// Why the manager refused a worker's registration, and whether trying
/// again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct Refusal {
    /// One line for a person: the WHY of `registration refused: WHY`.
    pub why: String,
    /// The registration itself is at fault (the worker's settings, or a
    /// malformed message): the same one is refused however often and long
    /// the worker tries. Otherwise the refusal may heal with time.
    pub permanent: bool,
}

impl Refusal {
    /// A refusal no retry can heal.
    pub fn permanent(why: impl Into<String>) -> Refusal {
        Refusal {
            why: why.into(),
            permanent: true,
        }
    }

    /// A refusal that may heal: the worker should try again later.
    pub fn for_now(why: impl Into<String>) -> Refusal {
        Refusal {
            why: why.into(),
            permanent: false,
        }
    }
}

/// Worker connection → Manager: a run ended and its slot is free again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunFinished {
    /// The worker.
    pub worker: WorkerId,
    /// The run.
    pub run: RunId,
    /// Its outcome.
    pub outcome: TaskOutcome,
}

/// Worker connection → Manager: a run was refused by its slot and never
/// started (the slot was draining); the slot is free again, and the task
/// goes back to the head of its queue without spending an attempt.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunRefused {
    /// The worker.
    pub worker: WorkerId,
    /// The run.
    pub run: RunId,
    /// Why, as the worker says it.
    pub reason: String,
}

/// Worker connection → Manager: the worker is draining; assign it nothing more.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerDraining {
    /// The worker.
    pub worker: WorkerId,
}

/// Worker connection → Manager: the worker's connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerLost {
    /// The worker.
    pub worker: WorkerId,
}

/// Anyone → Manager: a status report that fits a frame of the default
/// size (exact counts, a cut worker list; see [`GetStatusWithin`]).
#[derive(Message)]
#[rtype(result = "ClusterStatus")]
pub struct GetStatus;

/// Client session → Manager: a status report whose encoding
/// (`codec::encoded_len`) takes at most `max_bytes`, for a reply that must
/// fit the connection's frames. The counts are always exact; the worker
/// list is cut to the busiest workers and a few task names each, then to
/// what fits.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "ClusterStatus")]
pub struct GetStatusWithin {
    /// Bound on the encoded report.
    pub max_bytes: usize,
}

/// Anyone → Manager: each worker's free slots as the manager holds them,
/// by worker id, sorted. For tests of the capacity invariant.
#[derive(Message)]
#[rtype(result = "Vec<(WorkerId, Vec<SlotIndex>)>")]
pub struct GetCredits;

/// Runtime → Manager: stop taking tasks and drain. New submits are denied
/// ("manager shutting down"); queued tasks, which have not started, are
/// answered at once; running tasks may finish until `deadline`, and those
/// still running then are answered as cancelled and cancelled on their
/// workers. Replies once every task is answered and the cancelled runs are
/// reported stopped, or the manager's `timeout_grace` after the deadline has
/// passed. A second `Shutdown` waits for the same drain; the first one's
/// deadline counts.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "ShutdownReport")]
pub struct Shutdown {
    /// How long running tasks may take to finish.
    pub deadline: Duration,
}

/// What a manager's drain did (see [`Shutdown`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Tasks running when the drain began; each was answered during it.
    pub running: usize,
    /// Queued tasks answered at once, as not started (with a task store:
    /// kept in it for the next start).
    pub not_started: usize,
    /// Of the running tasks, those still running at the deadline: answered
    /// as cancelled, and cancelled on their workers.
    pub cancelled: usize,
    /// Of those, runs whose workers had not reported them stopped when the
    /// manager stopped waiting (a blocking task cannot be stopped).
    pub unconfirmed: usize,
    /// With a task store: of the running tasks, those still running at the
    /// deadline, left running on their workers and kept recorded as
    /// running, for the workers to hand their outcomes over after the next
    /// start (none is cancelled then).
    pub kept_running: usize,
}

// ---- from the Manager ----

/// Manager → client connection: the one outcome of an accepted task.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TaskReply {
    /// The client's request id from [`SubmitTask`].
    pub request_id: u64,
    /// The outcome.
    pub outcome: TaskOutcome,
}

/// Manager → worker connection.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub enum WorkerOrder {
    /// Run a task in a slot the manager holds as free.
    Assign {
        /// The run's id.
        run: RunId,
        /// The slot.
        slot: SlotIndex,
        /// Task name.
        name: String,
        /// Arguments.
        args: Value,
        /// Deadline, if any.
        timeout: Option<Duration>,
        /// Bytes the manager reserved for it in the worker's [`LinkLoad`],
        /// given back once it is encoded.
        reserved: usize,
    },
    /// Stop a run; its finish still comes and frees the slot.
    Cancel {
        /// The run.
        run: RunId,
        /// Its slot.
        slot: SlotIndex,
    },
}

// ---- worker side ----

/// Worker connection → WorkerSlot: run this task. The slot's own state
/// decides: `Err` if it is running something else or draining.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), SlotBusy>")]
pub struct ExecuteTask {
    /// The run's id.
    pub run: RunId,
    /// Task name.
    pub name: String,
    /// Arguments.
    pub args: Value,
    /// Deadline, if any.
    pub timeout: Option<Duration>,
}

/// Why a slot refused a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotBusy {
    /// The slot is running another run.
    #[error("slot is running run {0}")]
    Running(RunId),
    /// The worker is shutting down.
    #[error("worker is draining")]
    Draining,
}

/// Worker connection → WorkerSlot: stop this run if it is the slot's.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct CancelRun(pub RunId);

/// WorkerSlot → its reporter (the current connection to the manager): a
/// run ended, and the slot is free again.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SlotFinished {
    /// The slot.
    pub slot: SlotIndex,
    /// The run.
    pub run: RunId,
    /// Its outcome.
    pub outcome: TaskOutcome,
}

/// Worker connection → WorkerSlot, as it registers: report finished runs
/// to `reporter` from now on, or to `keeper` once `reporter` is gone.
/// Replies with the run the slot is busy with.
#[derive(Message)]
#[rtype(result = "Option<RunId>")]
pub struct AttachSlot {
    /// Where finished runs go: the connection to the manager.
    pub reporter: Recipient<SlotFinished>,
    /// Where they go while the worker has no connection: the pool, which
    /// keeps them for the next registration.
    pub keeper: Recipient<SlotFinished>,
}

/// Anyone → WorkerSlot: the run it is busy with, if any.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<RunId>")]
pub struct GetSlotState;

/// WorkerPool → WorkerSlot: take no new run; reply once idle.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct DrainSlot;

/// Worker connection → WorkerPool: registered under this id; the outcomes
/// the connection took from the pool are handed over.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Registered {
    /// The manager's id for this worker.
    pub worker: WorkerId,
    /// The largest frame body the manager accepts (its `registered`; 0 if
    /// unsaid): the next `register` is sized to fit it.
    pub max_frame: usize,
}

/// Worker connection → WorkerPool, as it registers: hand over the outcomes
/// kept while the worker had no manager ([`KeptOutcomes`]).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "KeptOutcomes")]
pub struct TakeKept;

/// What [`TakeKept`] hands the connection: the pool keeps none of it until
/// the connection gives back what it did not hand over ([`LinkClosed`]).
#[derive(Debug, Default)]
pub struct KeptOutcomes {
    /// Oldest first.
    pub runs: std::collections::VecDeque<crate::actors::worker::KeptRun>,
    /// Outcomes dropped past the bounds since the last hand-over.
    pub dropped: u64,
    /// How many of `runs` may go in the `register` at most: none when the
    /// last connection ended before `registered` after a `register` that
    /// carried some (it may have been too large for the manager), else
    /// all that fit the frame.
    pub in_register: bool,
    /// The frame limit the last manager announced (0: none yet).
    pub manager_max_frame: usize,
}

/// Worker connection → WorkerPool: the manager refused this worker for
/// good (an `error` marked `permanent`); the pool stops trying. The text is
/// the manager's, unescaped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RefusedForGood(pub String);

/// Worker connection → WorkerPool: the connection closed, with what it
/// had not handed over.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LinkClosed {
    /// Why; `None` for a clean close by the peer.
    pub failure: Option<String>,
    /// Outcomes taken from the pool or reported by slots and not handed
    /// over (no `registered` came, or the connection could not send them):
    /// kept again, ahead of newer ones. Oldest first.
    pub unsent: std::collections::VecDeque<crate::actors::worker::KeptRun>,
    /// The dropped count taken with them, not yet told to a manager.
    pub dropped: u64,
    /// The connection's `register` carried outcomes and no `registered`
    /// came back.
    pub register_failed: bool,
}

/// Runtime → WorkerPool: stop taking tasks, finish those in flight (up to
/// `deadline`), then close. Replies once drained.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Drain {
    /// Longest wait for tasks in flight.
    pub deadline: Duration,
}

/// Anyone → WorkerPool: its slots and whether it is registered.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "PoolState")]
pub struct GetPoolState;

/// Owner → WorkerPool: resolves when the pool gives up connecting for good,
/// saying why. Until then (and for a pool that never gives up) it stays
/// pending.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "GaveUp")]
pub struct WaitGaveUp;

/// Why a worker pool stopped trying to reach its manager. It runs nothing
/// more; its owner decides what follows (`argon worker` exits 77 for a
/// wrong key, 78 for a refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GaveUp {
    /// The manager does not use the worker's key: retrying cannot help.
    #[error("authentication failed: the manager at {mgr} does not use this key")]
    BadKey {
        /// The manager's address.
        mgr: String,
    },
    /// The manager refused the registration for good: the worker's
    /// settings must change first.
    #[error("the manager at {mgr} refused this worker: {why}")]
    Refused {
        /// The manager's address.
        mgr: String,
        /// The manager's reason, escaped for a terminal.
        why: String,
    },
}

/// A pool's state as its slots report it, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Slots in total.
    pub capacity: usize,
    /// Slots idle now.
    pub idle: usize,
    /// The manager's id for this worker, once registered.
    pub worker_id: Option<WorkerId>,
}

// ---- connection plumbing ----

/// Owner → Connection: send what is queued, then close.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CloseConnection;

/// WorkerPool → its connection: tell the manager the worker is draining.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendDrain;
