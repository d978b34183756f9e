//! Typed messages between actors, grouped by the actor that receives them.
//!
//! These never travel on the wire; `crate::protocol::Message` does. The
//! [`Connection`](crate::actors::Connection) actor converts between the two.

use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::protocol::{ClusterStatus, Message as WireMessage, Priority, Value, WireError};

/// Id the manager gives an accepted task.
pub type TaskId = u64;
/// Id the manager gives a registered worker.
pub type WorkerId = u64;
/// Id of one client connection on the manager.
pub type SessionId = u64;

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
        }
    }
}

/// How a task ended, as the manager reports it to the client's session.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// It returned a value.
    Done(Value),
    /// It failed or could not run.
    Failed(String),
}

/// Why the manager did not accept a task.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// No room: queue full or no capacity. Try again after `retry_after`.
    #[error("denied: {reason} (retry after {retry_after:?})")]
    Denied {
        /// "queue full" or "no capacity".
        reason: String,
        /// Estimate of when room is likely.
        retry_after: Duration,
    },
    /// The task can never run here as asked (no worker provides it, bad spec).
    #[error("{0}")]
    Invalid(String),
}

// ---- to the Manager ----

/// ClientSession → Manager: accept or reject a task. `Ok` carries the
/// manager's task id; the outcome comes later as a [`TaskReply`] to `reply_to`.
#[derive(Message)]
#[rtype(result = "Result<TaskId, Rejection>")]
pub struct SubmitTask {
    /// Submitting session.
    pub session: SessionId,
    /// The client's request id, echoed in the [`TaskReply`].
    pub request_id: u64,
    /// The task.
    pub spec: TaskSpec,
    /// Where the outcome goes.
    pub reply_to: Recipient<TaskReply>,
}

/// ClientSession → Manager: the client is gone; drop its queued tasks.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientGone {
    /// The session that closed.
    pub session: SessionId,
}

/// WorkerLink → Manager: a worker announced itself. Replies with its id, or
/// why it was refused.
#[derive(Message)]
#[rtype(result = "Result<WorkerId, String>")]
pub struct RegisterWorker {
    /// Peer address, for status and logs.
    pub address: String,
    /// Slots.
    pub capacity: u32,
    /// Task names it provides.
    pub tasks: Vec<String>,
    /// Whether it accepts eval scripts.
    pub eval: bool,
    /// Where assignments go.
    pub link: Recipient<AssignTask>,
}

/// WorkerLink → Manager: a task ended on a worker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TaskFinished {
    /// The worker.
    pub worker: WorkerId,
    /// The task.
    pub task: TaskId,
    /// Its outcome.
    pub outcome: TaskOutcome,
}

/// WorkerLink → Manager: the worker had no idle slot; requeue the task.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TaskRefused {
    /// The worker.
    pub worker: WorkerId,
    /// The task.
    pub task: TaskId,
}

/// WorkerLink → Manager: the worker is draining; assign it nothing more.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerDraining {
    /// The worker.
    pub worker: WorkerId,
}

/// WorkerLink → Manager: the worker's connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerLost {
    /// The worker.
    pub worker: WorkerId,
}

/// Anyone → Manager: a status report.
#[derive(Message)]
#[rtype(result = "ClusterStatus")]
pub struct GetStatus;

// ---- from the Manager ----

/// Manager → ClientSession: the one outcome of an accepted task.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TaskReply {
    /// The client's request id from [`SubmitTask`].
    pub request_id: u64,
    /// The outcome.
    pub outcome: TaskOutcome,
}

/// Manager → WorkerLink: send this task to the worker.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct AssignTask {
    /// Manager's task id.
    pub task: TaskId,
    /// Task name.
    pub name: String,
    /// Arguments.
    pub args: Value,
    /// Deadline, if any.
    pub timeout: Option<Duration>,
}

// ---- connection plumbing ----

/// Connection → its owner: a message arrived, or the connection closed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Inbound {
    /// A decoded message from the peer.
    Frame(WireMessage),
    /// The connection is closed; `None` for a clean close by the peer.
    Closed(Option<String>),
}

/// Owner → Connection: send this message to the peer.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Outbound(pub WireMessage);

/// Owner → Connection: flush what is queued, then close.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CloseConnection;

/// A wire error, as seen by a connection owner.
pub type ConnError = WireError;

// ---- worker side ----

/// Anyone → WorkerPool: run a task in an idle slot. `Err` means every slot
/// is busy (or the pool is draining): the refusal is this mailbox reply.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), PoolBusy>")]
pub struct RunTask {
    /// Manager's task id.
    pub task: TaskId,
    /// Task name.
    pub name: String,
    /// Arguments.
    pub args: Value,
    /// Deadline, if any.
    pub timeout: Option<Duration>,
}

/// Why a pool refused a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolBusy {
    /// Every slot is running a task.
    #[error("no idle slot")]
    NoIdleSlot,
    /// The pool is shutting down.
    #[error("worker is draining")]
    Draining,
}

/// WorkerPool → WorkerSlot: run this task. `Err` if the slot is not idle.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), PoolBusy>")]
pub struct ExecuteTask(pub RunTask);

/// WorkerSlot → WorkerPool: the slot's task ended and the slot is idle again.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SlotFinished {
    /// Slot index.
    pub slot: usize,
    /// The task.
    pub task: TaskId,
    /// Its outcome.
    pub outcome: TaskOutcome,
    /// When it started.
    pub started: Instant,
}

/// Runtime → WorkerPool: stop taking tasks, finish those in flight (up to
/// `deadline`), then close. Replies once drained.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Drain {
    /// Longest wait for tasks in flight.
    pub deadline: Duration,
}

/// Anyone → WorkerPool: how many slots are idle and whether it is registered.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "PoolState")]
pub struct GetPoolState;

/// A pool's state, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Slots in total.
    pub capacity: usize,
    /// Slots idle now.
    pub idle: usize,
    /// The manager's id for this worker, once registered.
    pub worker_id: Option<WorkerId>,
}
