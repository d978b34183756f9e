//! Wire message types. These are what travels, serialized as MessagePack
//! maps with named fields (`rmp_serde::to_vec_named`); each message is a
//! one-entry map from the variant's snake_case name to its fields.
//!
//! There is one enum per direction and role: [`FromClient`], [`ToClient`],
//! [`FromWorker`], [`ToWorker`], plus [`AuthFrame`] for the handshake. A
//! message a role may not send does not decode for it, so a protocol
//! violation is a decode error at the connection, never a run-time check in
//! an actor. Wire types are kept apart from actor messages
//! (`crate::messages`): the connection actor converts at one boundary.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Any MessagePack value: task arguments and results.
pub type Value = rmpv::Value;

fn nil() -> Value {
    Value::Nil
}

/// Deserializes a sequence without reserving room for the count it
/// declares: serde's `Vec` reserves up to 1 MiB for a count the input need
/// not hold, which a frame of a few bytes could ask for. Memory grows with
/// the elements that actually arrive instead, each at least one byte of the
/// frame.
fn grown<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Grown<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Grown<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    d.deserialize_seq(Grown(std::marker::PhantomData))
}

/// The role a peer claims in its first sealed frame.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The manager (always the accepting side).
    Manager,
    /// A client that submits tasks.
    Client,
    /// A worker that runs tasks.
    Worker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Client => "client",
            Role::Worker => "worker",
        })
    }
}

/// Task priority. Dequeue order is high, normal, low; FIFO within one.
#[derive(
    Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Served last, but promoted by aging so it never starves.
    Low,
}

impl Priority {
    /// Every level, served first first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// Index into per-priority arrays: high 0, normal 1, low 2.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The next level up (high stays high).
    pub fn promoted(self) -> Priority {
        match self {
            Priority::Low => Priority::Normal,
            _ => Priority::High,
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            _ => Err(format!("unknown priority {s:?} (high, normal or low)")),
        }
    }
}

/// The answer to one task.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The task ran and returned a value.
    Done {
        /// The result.
        value: Value,
    },
    /// The task failed, or could not be run; `error` says why.
    Failed {
        /// One line for a person.
        error: String,
    },
    /// The manager had no room: the task was not accepted. Try again later.
    Denied {
        /// Why ("queue full", "no capacity").
        reason: String,
        /// When room is likely, in milliseconds.
        retry_after_ms: u64,
    },
}

impl Outcome {
    /// The failure that stands in for a result too large for a frame.
    pub fn too_large(len: usize, max: usize) -> Outcome {
        Outcome::Failed {
            error: format!("result of {len} bytes exceeds the frame limit of {max} bytes"),
        }
    }

    /// The failure that stands in for a result nested deeper than
    /// [`MAX_VALUE_DEPTH`]: a worker sends it instead, and the manager takes
    /// a deeper result from a worker as it.
    pub fn too_deep() -> Outcome {
        Outcome::Failed {
            error: format!("result nested deeper than {MAX_VALUE_DEPTH} levels"),
        }
    }
}

/// Per-worker line of a status report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    /// Manager-assigned id.
    pub id: u64,
    /// Peer address as the manager sees it.
    pub address: String,
    /// Slots it announced.
    pub capacity: u32,
    /// Tasks it is running now.
    pub in_flight: u32,
    /// Its average task time (recent history), milliseconds.
    pub avg_ms: f64,
    /// Task names it provides; at most [`STATUS_MAX_TASK_NAMES`] of them,
    /// fewer if the reply would not fit a frame. See `tasks_total`.
    #[serde(deserialize_with = "grown")]
    pub tasks: Vec<String>,
    /// Whether it accepts eval scripts.
    pub eval: bool,
    /// Whether it is draining (takes no new tasks).
    pub draining: bool,
    /// How many task names it provides in all; more than `tasks.len()`
    /// when the list was cut. 0 from a manager that predates the field
    /// (its list is whole): [`WorkerStatus::tasks_total`] reads either.
    #[serde(default)]
    pub tasks_total: u32,
}

impl WorkerStatus {
    /// Task names it provides in all, whichever manager sent the report.
    pub fn tasks_total(&self) -> usize {
        (self.tasks_total as usize).max(self.tasks.len())
    }
}

/// Most workers listed in a status report: the busiest (most runs in
/// flight), then the lowest ids. The counts cover every worker.
pub const STATUS_MAX_WORKERS: usize = 100;

/// Most task names listed per worker in a status report.
pub const STATUS_MAX_TASK_NAMES: usize = 50;

/// Queue length per priority.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct QueuedByPriority {
    /// High-priority tasks waiting.
    pub high: u64,
    /// Normal-priority tasks waiting.
    pub normal: u64,
    /// Low-priority tasks waiting.
    pub low: u64,
}

/// The manager's view of the cluster (`argon status`). Its counts are
/// exact; `worker_list` is a bounded sample, so a report always fits in
/// a frame however many workers the cluster holds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ClusterStatus {
    /// Registered workers.
    pub workers: u64,
    /// Sum of their capacities (draining workers excluded).
    pub capacity: u64,
    /// Tasks running on workers.
    pub in_flight: u64,
    /// Tasks waiting in the queue.
    pub queued: u64,
    /// Queue bound: capacity × queue factor.
    pub queue_limit: u64,
    /// Waiting tasks per priority.
    pub queued_by_priority: QueuedByPriority,
    /// Average time of successful runs over recent history, milliseconds.
    pub avg_task_ms: f64,
    /// Accepted tasks answered with their result so far.
    pub completed: u64,
    /// Accepted tasks answered with an error so far (the task's own error,
    /// a timeout, a cancel, a lost worker, a shutdown); 0 from a manager
    /// that predates the field.
    #[serde(default)]
    pub failed: u64,
    /// Tasks denied so far.
    pub denied: u64,
    /// Accepted tasks waiting out the backoff before a retry; they count
    /// against `queue_limit` with `queued`. 0 from a manager that predates
    /// the field.
    #[serde(default)]
    pub retrying: u64,
    /// Accepted tasks scheduled to run later, not yet due; they count
    /// against nothing but the manager's `scheduled_max`. 0 from a manager
    /// that predates the field.
    #[serde(default)]
    pub scheduled: u64,
    /// Accepted tasks waiting for a worker that provides them, their kind's
    /// last provider having gone; they are kept beyond `queue_limit` for the
    /// manager's provider grace. 0 from a manager that predates the field.
    #[serde(default)]
    pub awaiting_provider: u64,
    /// One entry per worker, busiest first, at most
    /// [`STATUS_MAX_WORKERS`] (fewer if the reply would not fit a frame).
    #[serde(deserialize_with = "grown")]
    pub worker_list: Vec<WorkerStatus>,
    /// Workers the list was taken from (all registered ones); 0 from a
    /// manager that predates the field.
    #[serde(default)]
    pub worker_list_total: u64,
    /// Whether `worker_list` leaves workers out.
    #[serde(default)]
    pub worker_list_truncated: bool,
    /// The task names with limits (`[limits.NAME]`), by name; empty from a
    /// manager without them or that predates the field.
    #[serde(default, deserialize_with = "grown")]
    pub limits: Vec<TaskLimitStatus>,
}

/// Where one limited task name stands.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct TaskLimitStatus {
    /// The task name.
    pub task: String,
    /// Most runs at once, if limited.
    #[serde(default)]
    pub max_running: Option<u32>,
    /// Runs going now.
    #[serde(default)]
    pub running: u32,
    /// Most queued, if limited.
    #[serde(default)]
    pub max_queued: Option<u32>,
    /// Queued now (counted only with a `max_queued`).
    #[serde(default)]
    pub queued: Option<u64>,
    /// The rate as configured (`"20/s"`), if limited.
    #[serde(default)]
    pub rate: Option<String>,
    /// Submits denied `rate limited` since the manager started.
    #[serde(default)]
    pub rate_limited: u64,
}

impl ClusterStatus {
    /// Workers registered but not in `worker_list`.
    pub fn workers_not_listed(&self) -> u64 {
        self.worker_list_total
            .max(self.workers)
            .saturating_sub(self.worker_list.len() as u64)
    }

    /// The largest encoded report (`codec::encoded_len`) whose `status`
    /// message fits in a frame body of `max_frame` bytes.
    pub fn max_len_for_frame(max_frame: usize) -> usize {
        let empty = ClusterStatus::default();
        let envelope = super::codec::encoded_len(&ToClient::Status {
            id: u64::MAX,
            status: empty.clone(),
        }) - super::codec::encoded_len(&empty);
        super::codec::max_plaintext(max_frame).saturating_sub(envelope)
    }
}

/// A task that failed after using its retries, as `dead_list` lists it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DeadTask {
    /// The manager-wide id of the task.
    pub task_id: u64,
    /// Task name.
    pub task: String,
    /// Its arguments; when they encode to more than [`DEAD_ARGS_MAX`]
    /// bytes, a string holding the start of their JSON text instead, and
    /// `args_truncated` is set.
    #[serde(default = "nil")]
    pub args: Value,
    /// Whether `args` is a cut-down preview.
    #[serde(default)]
    pub args_truncated: bool,
    /// Retries it used (runs after the first).
    pub retries: u32,
    /// The error of its last run, at most [`DEAD_ERROR_MAX`] bytes.
    pub error: String,
    /// When it was answered with that error, milliseconds since the Unix
    /// epoch (the manager's clock).
    pub failed_at_ms: u64,
}

/// Largest encoded arguments a dead-list entry keeps whole.
pub const DEAD_ARGS_MAX: usize = 1024;

/// Longest error text a dead-list entry keeps (cut on a character
/// boundary).
pub const DEAD_ERROR_MAX: usize = 1024;

/// Most entries one `dead_list` reply carries.
pub const DEAD_LIST_MAX: u32 = 1000;

/// The manager's dead list, newest first: a bounded listing that fits one
/// frame.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct DeadList {
    /// Entries, newest first.
    #[serde(deserialize_with = "grown")]
    pub tasks: Vec<DeadTask>,
    /// Entries the manager holds in all.
    pub total: u64,
    /// Whether `tasks` leaves entries out (the asked limit, or the frame).
    pub truncated: bool,
    /// Entries evicted as the oldest since the manager started.
    #[serde(default)]
    pub evicted: u64,
}

impl DeadList {
    /// The largest encoded list (`codec::encoded_len`) whose `dead_list`
    /// message fits in a frame body of `max_frame` bytes.
    pub fn max_len_for_frame(max_frame: usize) -> usize {
        let empty = DeadList::default();
        let envelope = super::codec::encoded_len(&ToClient::DeadList {
            id: u64::MAX,
            list: empty.clone(),
        }) - super::codec::encoded_len(&empty);
        super::codec::max_plaintext(max_frame).saturating_sub(envelope)
    }
}

/// One periodic task as `schedules` lists it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ScheduleInfo {
    /// The entry's name.
    pub name: String,
    /// The task it submits.
    pub task: String,
    /// When: `every 30s`, or `cron EXPR (ZONE)`.
    pub cadence: String,
    /// `skip` or `allow`: whether it runs while its last task is held.
    pub overlap: String,
    /// Its next due time, ms since the Unix epoch (absent: never).
    #[serde(default)]
    pub next_ms: Option<u64>,
    /// Its last run's due time, if it ran since the manager started (or,
    /// with a task store, before).
    #[serde(default)]
    pub last_ms: Option<u64>,
    /// The task its last run submitted.
    #[serde(default)]
    pub last_task_id: Option<u64>,
    /// What happened at its last due time (`started task N`, `skipped: ...`,
    /// `not run: ...`).
    #[serde(default)]
    pub note: Option<String>,
    /// Runs started since the manager started.
    #[serde(default)]
    pub started: u64,
    /// Due times skipped or denied since the manager started.
    #[serde(default)]
    pub skipped: u64,
}

/// A task as a client submits it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Submit {
    /// Request id chosen by the client, echoed in the reply.
    pub id: u64,
    /// Task name.
    pub task: String,
    /// Arguments.
    #[serde(default = "nil")]
    pub args: Value,
    /// Priority.
    #[serde(default)]
    pub priority: Priority,
    /// Deadline for the task in milliseconds, if any; 0 means no deadline.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// How many times the task may be started (worker loss requeues it);
    /// 0 means the manager's default (once, unless configured).
    #[serde(default)]
    pub attempts: u32,
    /// How many times the task may be run again after a run that failed
    /// (its own error: non-zero exit, panic, timeout, eval error), with a
    /// growing wait before each; absent or nil means the manager's default
    /// (`manager.default_retries`, 0 unless configured). Not sent when
    /// absent, so a submit without it encodes as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Detached: the manager answers `accepted` with the task's id instead
    /// of a `reply` with its outcome, keeps the task when this connection
    /// closes, and keeps its outcome for `result_request`. False if absent;
    /// not sent when false, so an attached submit encodes as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detach: bool,
    /// For an attached submit: ask for the task's id in an `accepted`
    /// (besides the later `reply`), so that the client can wait on the task
    /// again by id if the connection is lost. Only a manager with a task
    /// store (`--persist`) answers it, since only its tasks outlive it.
    /// False if absent; not sent when false, so older managers (which
    /// ignore it) and older clients (which never ask, and so are never sent
    /// an `accepted` they do not expect) see the same bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub want_id: bool,
    /// Run the task no earlier than this time, in milliseconds since the
    /// Unix epoch (UTC) by the manager's clock: it is accepted at once and
    /// queued when due. A time now or past runs it now; more than 365 days
    /// ahead is refused as invalid. Absent or nil: run now. Not sent when
    /// absent, so a submit without it encodes as before; a manager that
    /// predates it ignores it and runs the task now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_ms: Option<u64>,
    /// Run the task no earlier than this many milliseconds after the
    /// manager receives the submit (`due_ms` relative to the manager's
    /// clock, immune to skew between the clocks). At most one of `due_ms`
    /// and `delay_ms` may be given. Not sent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// A unique task: while a task submitted with this key is scheduled,
    /// queued or running (or answered less than its `unique_for_ms` ago),
    /// this submit is answered with that task's id instead of making a new
    /// one. 1 to 256 bytes. Not sent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// With `unique_key`: how long the key keeps holding after the task is
    /// answered, in milliseconds, at most 30 days; absent: not after it is
    /// answered. Not sent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_for_ms: Option<u64>,
}

/// Where a task named by its id is, in a `result` message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted, waiting for a slot; or, with `due_ms`, scheduled to be
    /// queued at that time.
    Queued {
        /// For a task scheduled to run later and not yet due: its due time
        /// in milliseconds since the Unix epoch. Absent otherwise (an older
        /// client reads the state as queued).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due_ms: Option<u64>,
    },
    /// Running on a worker.
    Running {},
    /// Finished with a result.
    Done {
        /// The result.
        value: Value,
    },
    /// Finished with a failure (including "cancelled by the client").
    Failed {
        /// One line for a person.
        error: String,
    },
    /// Not queued, running or kept: never accepted by this manager, not
    /// detached, or its outcome expired or was evicted.
    Unknown {},
}

/// What a `cancel_task` did.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CancelState {
    /// It was queued or running; it is now answered failed "cancelled by
    /// the client".
    Cancelled,
    /// It had finished already; its kept outcome is unchanged.
    Finished,
    /// No task by that id is queued, running or kept.
    Unknown,
}

/// A run a worker still has in a slot when it registers.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningRun {
    /// The run's id, from its `assign`.
    pub run_id: u64,
    /// The slot it occupies.
    pub slot: u32,
}

/// What a worker announces about itself. Its free slots are `0..capacity`
/// minus the slots of `running`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Register {
    /// Number of slots.
    pub capacity: u32,
    /// Task names it provides.
    #[serde(deserialize_with = "grown")]
    pub tasks: Vec<String>,
    /// Whether it accepts eval scripts.
    #[serde(default)]
    pub eval: bool,
    /// Runs still going in its slots (from an earlier connection).
    #[serde(default, deserialize_with = "grown")]
    pub running: Vec<RunningRun>,
    /// Largest frame body it accepts; 0 if unsaid. The manager refuses a
    /// worker whose limit is below its own.
    #[serde(default)]
    pub max_frame: u64,
    /// Outcomes of runs that ended while the worker had no manager, oldest
    /// first: as many as fit this frame; the rest follow as `finished`
    /// messages once `registered` arrives. Their slots are free (they are
    /// not in `running`). Not sent when empty, so a worker with nothing to
    /// hand over encodes as before; a manager that predates the field
    /// ignores it.
    #[serde(
        default,
        deserialize_with = "grown",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub finished: Vec<FinishedRun>,
    /// Outcomes of such runs the worker dropped, the oldest first, past its
    /// bounds (`worker.kept_outcomes_max`, `worker.kept_outcomes_max_bytes`)
    /// since it last handed outcomes over. 0 if absent; not sent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub finished_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A run's outcome as a worker hands it over in `register`: what a
/// `finished` message says, for a run that ended while the worker had no
/// manager.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FinishedRun {
    /// The run's id, from its `assign`.
    pub run_id: u64,
    /// What happened: `done` or `failed`.
    pub outcome: Outcome,
}

/// A task the manager hands to a worker: one run of it, in one slot.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Assign {
    /// Manager-assigned id of this run, echoed in `finished`; unique per
    /// start, so a requeued task runs under a new one.
    pub run_id: u64,
    /// The worker's slot that runs it: one the manager holds as free.
    pub slot: u32,
    /// Task name.
    pub task: String,
    /// Arguments.
    pub args: Value,
    /// Deadline in milliseconds, if any.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The handshake's sealed frame: the first in each direction.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum AuthFrame {
    /// Proves the key, names the role.
    Auth {
        /// Protocol version.
        version: u32,
        /// Role of the sender.
        role: Role,
        /// Free-form software name and version, for logs.
        #[serde(default)]
        agent: String,
    },
}

/// Client → manager.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FromClient {
    /// Run a task.
    Submit(Submit),
    /// Cancel the task of an earlier `submit` with this request id; its
    /// `reply` then says it was cancelled (unless it was already answered).
    Cancel {
        /// The submit's request id.
        id: u64,
    },
    /// Round-trip probe.
    Ping {
        /// Request id.
        id: u64,
    },
    /// Ask where a task is, by its manager-wide id (from `accepted`).
    /// Answered by `result`.
    ResultRequest {
        /// Request id, echoed in the `result`.
        id: u64,
        /// The task's id.
        task_id: u64,
        /// Answer only once the task has finished (or is unknown).
        #[serde(default)]
        wait: bool,
    },
    /// Cancel a task by its manager-wide id, whoever submitted it.
    /// Answered by `cancel_result`.
    CancelTask {
        /// Request id, echoed in the `cancel_result`.
        id: u64,
        /// The task's id.
        task_id: u64,
    },
    /// Ask for a status report.
    StatusRequest {
        /// Request id.
        id: u64,
    },
    /// Ask for the dead list: tasks that failed after using their retries.
    /// Answered by `dead_list`.
    DeadRequest {
        /// Request id, echoed in the `dead_list`.
        id: u64,
        /// Most entries wanted, newest first; 0 or absent means
        /// [`DEAD_LIST_MAX`], and more is taken as that.
        #[serde(default)]
        limit: u32,
    },
    /// Queue dead-list entries again as new detached tasks, oldest first:
    /// the entry `task_id`, or every entry (of task name `task`, if given),
    /// [`DEAD_LIST_MAX`] at most per request. Answered by `dead_done`.
    DeadRetry {
        /// Request id, echoed in the `dead_done`.
        id: u64,
        /// One entry, by its task's id.
        #[serde(default)]
        task_id: Option<u64>,
        /// Only entries of this task name.
        #[serde(default)]
        task: Option<String>,
    },
    /// Remove dead-list entries: the entry `task_id`, or every entry (of
    /// task name `task`, if given). Answered by `dead_done`.
    DeadPurge {
        /// Request id, echoed in the `dead_done`.
        id: u64,
        /// One entry, by its task's id.
        #[serde(default)]
        task_id: Option<u64>,
        /// Only entries of this task name.
        #[serde(default)]
        task: Option<String>,
    },
    /// Ask for the periodic tasks. Answered by `schedules`.
    SchedulesRequest {
        /// Request id, echoed in the `schedules`.
        id: u64,
    },
    /// "Still here" on a quiet connection.
    Heartbeat {},
}

/// Manager → client.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ToClient {
    /// The one answer to a submit.
    Reply {
        /// The submit's request id.
        id: u64,
        /// What happened.
        outcome: Outcome,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// A detached `submit` was accepted (instead of its `reply`); or an
    /// attached one that asked with `want_id`, accepted by a manager with a
    /// task store (its `reply` still follows).
    Accepted {
        /// The submit's request id.
        id: u64,
        /// The manager-wide id of the task.
        task_id: u64,
    },
    /// Answer to `result_request`.
    Result {
        /// The request's id.
        id: u64,
        /// The task's id.
        task_id: u64,
        /// Where the task is.
        state: TaskState,
    },
    /// Answer to `cancel_task`.
    CancelResult {
        /// The request's id.
        id: u64,
        /// The task's id.
        task_id: u64,
        /// What the cancel did.
        result: CancelState,
    },
    /// The status report.
    Status {
        /// The request's id.
        id: u64,
        /// The report.
        status: ClusterStatus,
    },
    /// Answer to `dead_request`.
    DeadList {
        /// The request's id.
        id: u64,
        /// The listing.
        list: DeadList,
    },
    /// Answer to `schedules_request`.
    Schedules {
        /// The request's id.
        id: u64,
        /// The entries, in config order, cut to fit the frame.
        #[serde(deserialize_with = "grown")]
        list: Vec<ScheduleInfo>,
        /// Entries the manager has in all.
        #[serde(default)]
        total: u64,
    },
    /// Answer to `dead_retry` and `dead_purge`.
    DeadDone {
        /// The request's id.
        id: u64,
        /// Entries queued again: (the dead task's id, the new task's id).
        #[serde(default, deserialize_with = "grown")]
        retried: Vec<(u64, u64)>,
        /// Entries removed by a purge.
        #[serde(default)]
        purged: u64,
        /// Entries the request selected that are still listed.
        #[serde(default)]
        left: u64,
        /// Why the first of those was not queued again, if any.
        #[serde(default)]
        reason: Option<String>,
        /// Whether that was a deny (the queue is full, or the like): the
        /// same request may succeed later.
        #[serde(default)]
        denied: bool,
    },
    /// "Still here" on a quiet connection.
    Heartbeat {},
    /// A protocol error, sent just before closing.
    Error {
        /// One line for a person.
        message: String,
    },
}

/// Worker → manager.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    /// Announce slots and tasks. The first message after auth, once.
    Register(Register),
    /// A run's outcome; frees its slot.
    Finished {
        /// The assign's run id.
        run_id: u64,
        /// What happened; `denied` for a run the worker did not start,
        /// which the manager queues again without spending an attempt.
        outcome: Outcome,
    },
    /// Shutting down; send no more tasks.
    Drain {},
    /// "Still here" on a quiet connection.
    Heartbeat {},
    /// Something the manager should log.
    Error {
        /// One line for a person.
        message: String,
    },
}

/// Manager → worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    /// Registration accepted.
    Registered {
        /// The id the manager knows this worker by.
        worker_id: u64,
        /// Largest frame body the manager accepts; 0 if unsaid.
        #[serde(default)]
        max_frame: u64,
    },
    /// Run this task in this slot.
    Assign(Assign),
    /// Stop this run; its `finished` still follows and frees the slot.
    Cancel {
        /// The assign's run id.
        run_id: u64,
        /// The slot it runs in.
        slot: u32,
    },
    /// "Still here" on a quiet connection.
    Heartbeat {},
    /// A protocol error or a refused registration, sent just before closing.
    Error {
        /// One line for a person.
        message: String,
        /// The worker would be refused the same way on every new
        /// connection: it should stop rather than reconnect. False if
        /// absent; not sent when false, so older peers read the same bytes.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        permanent: bool,
    },
}

/// What every direction's message type offers the codec and the
/// connection actor.
pub trait WireMessage: Serialize + DeserializeOwned + Send + Unpin + 'static {
    /// The heartbeat of this direction.
    fn heartbeat() -> Self;
    /// Whether this is a heartbeat.
    fn is_heartbeat(&self) -> bool;
    /// The variant's wire name, for logs.
    fn kind(&self) -> &'static str;
    /// Wire names of every variant.
    const NAMES: &'static [&'static str];
}

/// Wire names of every message of the protocol, all directions.
pub const ALL_NAMES: &[&str] = &[
    "auth",
    "submit",
    "cancel",
    "ping",
    "status_request",
    "result_request",
    "cancel_task",
    "dead_request",
    "dead_retry",
    "dead_purge",
    "schedules_request",
    "reply",
    "pong",
    "accepted",
    "result",
    "cancel_result",
    "status",
    "dead_list",
    "dead_done",
    "schedules",
    "register",
    "registered",
    "assign",
    "finished",
    "drain",
    "heartbeat",
    "error",
];

macro_rules! wire_message {
    ($ty:ident { $($variant:ident $pat:tt => $name:literal),* $(,)? }) => {
        impl WireMessage for $ty {
            const NAMES: &'static [&'static str] = &[$($name),*];

            fn heartbeat() -> Self {
                $ty::Heartbeat {}
            }

            fn is_heartbeat(&self) -> bool {
                matches!(self, $ty::Heartbeat {})
            }

            fn kind(&self) -> &'static str {
                match self {
                    $($ty::$variant $pat => $name,)*
                }
            }
        }
    };
}

wire_message!(FromClient {
    Submit(_) => "submit",
    Cancel { .. } => "cancel",
    Ping { .. } => "ping",
    ResultRequest { .. } => "result_request",
    CancelTask { .. } => "cancel_task",
    StatusRequest { .. } => "status_request",
    DeadRequest { .. } => "dead_request",
    DeadRetry { .. } => "dead_retry",
    DeadPurge { .. } => "dead_purge",
    SchedulesRequest { .. } => "schedules_request",
    Heartbeat {} => "heartbeat",
});

wire_message!(ToClient {
    Reply { .. } => "reply",
    Pong { .. } => "pong",
    Accepted { .. } => "accepted",
    Result { .. } => "result",
    CancelResult { .. } => "cancel_result",
    Status { .. } => "status",
    DeadList { .. } => "dead_list",
    DeadDone { .. } => "dead_done",
    Schedules { .. } => "schedules",
    Heartbeat {} => "heartbeat",
    Error { .. } => "error",
});

wire_message!(FromWorker {
    Register(_) => "register",
    Finished { .. } => "finished",
    Drain {} => "drain",
    Heartbeat {} => "heartbeat",
    Error { .. } => "error",
});

wire_message!(ToWorker {
    Registered { .. } => "registered",
    Assign(_) => "assign",
    Cancel { .. } => "cancel",
    Heartbeat {} => "heartbeat",
    Error { .. } => "error",
});

impl WireMessage for AuthFrame {
    const NAMES: &'static [&'static str] = &["auth"];

    fn heartbeat() -> Self {
        unreachable!("the handshake sends no heartbeat")
    }

    fn is_heartbeat(&self) -> bool {
        false
    }

    fn kind(&self) -> &'static str {
        "auth"
    }
}

impl ToClient {
    /// The request id this message answers, if any.
    pub fn reply_id(&self) -> Option<u64> {
        match self {
            ToClient::Reply { id, .. }
            | ToClient::Pong { id }
            | ToClient::Status { id, .. }
            | ToClient::DeadList { id, .. }
            | ToClient::DeadDone { id, .. }
            | ToClient::Schedules { id, .. }
            | ToClient::Accepted { id, .. }
            | ToClient::Result { id, .. }
            | ToClient::CancelResult { id, .. } => Some(*id),
            ToClient::Heartbeat {} | ToClient::Error { .. } => None,
        }
    }
}

/// Nesting limit of every decoder: a frame nested deeper is undecodable.
/// Kept small enough that decoding, re-encoding and dropping such a value
/// cannot exhaust a thread's stack (JSON parsers commonly stop at 128 too).
pub const MAX_DECODE_DEPTH: usize = 128;

/// Values nested deeper than this are refused as task arguments and
/// results, so that every envelope they travel in (at most 4 levels) stays
/// under [`MAX_DECODE_DEPTH`].
pub const MAX_VALUE_DEPTH: usize = 120;

/// Nesting depth of a value: 0 for a scalar, 1 for a flat array or map.
/// Stops counting past `MAX_VALUE_DEPTH + 1`, and uses no recursion, so any
/// value is safe to measure.
pub fn value_depth(v: &Value) -> usize {
    if !matches!(v, Value::Array(_) | Value::Map(_)) {
        return 0;
    }
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, d + 1))),
            Value::Map(entries) => {
                stack.extend(entries.iter().flat_map(|(k, v)| [(k, d + 1), (v, d + 1)]))
            }
            _ => continue,
        }
        deepest = deepest.max(d + 1);
        if deepest > MAX_VALUE_DEPTH {
            return deepest;
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(Value::from(1), |inner, _| Value::Array(vec![inner]))
    }

    #[test]
    fn depth_counts_arrays_and_maps_and_stops_past_the_limit() {
        assert_eq!(value_depth(&Value::from("scalar")), 0);
        assert_eq!(value_depth(&Value::Array(vec![1.into(), 2.into()])), 1);
        let map = Value::Map(vec![
            (Value::from("flat"), Value::from(1)),
            (nested(2), nested(3)),
        ]);
        assert_eq!(value_depth(&map), 4, "the deepest key or value counts");
        assert_eq!(value_depth(&nested(MAX_VALUE_DEPTH)), MAX_VALUE_DEPTH);
        assert_eq!(
            value_depth(&nested(MAX_VALUE_DEPTH * 10)),
            MAX_VALUE_DEPTH + 1,
            "counting stops just past the limit"
        );
    }
}
