//! Wire message types. These are what travels, serialized as MessagePack
//! maps with named fields (`rmp_serde::to_vec_named`); each [`Message`] is a
//! one-entry map from the variant's snake_case name to its fields.
//!
//! Wire types are kept apart from actor messages (`crate::messages`): the
//! connection actor converts at one boundary.

use serde::{Deserialize, Serialize};

/// Any MessagePack value: task arguments and results.
pub type Value = rmpv::Value;

fn nil() -> Value {
    Value::Nil
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
    /// Task names it provides.
    pub tasks: Vec<String>,
    /// Whether it accepts eval scripts.
    pub eval: bool,
    /// Whether it is draining (takes no new tasks).
    pub draining: bool,
}

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

/// The manager's view of the cluster (`argon status`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
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
    /// Average task time over recent history, milliseconds.
    pub avg_task_ms: f64,
    /// Accepted tasks answered so far.
    pub completed: u64,
    /// Tasks denied so far.
    pub denied: u64,
    /// One entry per worker.
    pub worker_list: Vec<WorkerStatus>,
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
    /// Deadline for the task in milliseconds, if any.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// How many times the task may be started (worker loss requeues it);
    /// 0 means the manager's default (once, unless configured).
    #[serde(default)]
    pub attempts: u32,
}

/// What a worker announces about itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Register {
    /// Number of slots.
    pub capacity: u32,
    /// Task names it provides.
    pub tasks: Vec<String>,
    /// Whether it accepts eval scripts.
    #[serde(default)]
    pub eval: bool,
}

/// A task the manager hands to a worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Assign {
    /// Manager-assigned task id, echoed in `finished` / `refused`.
    pub task_id: u64,
    /// Task name.
    pub task: String,
    /// Arguments.
    pub args: Value,
    /// Deadline in milliseconds, if any.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Every message on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// First sealed frame in each direction: proves the key, names the role.
    Auth {
        /// Protocol version.
        version: u32,
        /// Role of the sender.
        role: Role,
        /// Free-form software name and version, for logs.
        #[serde(default)]
        agent: String,
    },
    /// Client → manager: run a task.
    Submit(Submit),
    /// Manager → client: the one answer to a submit.
    Reply {
        /// The submit's request id.
        id: u64,
        /// What happened.
        outcome: Outcome,
    },
    /// Client → manager: round-trip probe.
    Ping {
        /// Request id.
        id: u64,
    },
    /// Manager → client: answer to `ping`.
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// Client → manager: ask for a status report.
    StatusRequest {
        /// Request id.
        id: u64,
    },
    /// Manager → client: the report.
    Status {
        /// The request's id.
        id: u64,
        /// The report.
        status: ClusterStatus,
    },
    /// Worker → manager: announce capacity and tasks. Must come first.
    Register(Register),
    /// Manager → worker: registration accepted.
    Registered {
        /// The id the manager knows this worker by.
        worker_id: u64,
    },
    /// Manager → worker: run this task.
    Assign(Assign),
    /// Worker → manager: a task's outcome.
    Finished {
        /// The assign's task id.
        task_id: u64,
        /// What happened (never `denied`).
        outcome: Outcome,
    },
    /// Worker → manager: no idle slot for that task; the manager requeues it.
    Refused {
        /// The assign's task id.
        task_id: u64,
    },
    /// Worker → manager: shutting down; send no more tasks.
    Drain {},
    /// Either way, on an otherwise quiet connection: "still here". A peer
    /// silent for three heartbeat intervals is taken for gone.
    Heartbeat {},
    /// Either way: a protocol error, sent just before closing.
    Error {
        /// One line for a person.
        message: String,
    },
}

impl Message {
    /// The request id a manager → client message answers, if any.
    pub fn reply_id(&self) -> Option<u64> {
        match self {
            Message::Reply { id, .. } | Message::Pong { id } | Message::Status { id, .. } => {
                Some(*id)
            }
            _ => None,
        }
    }

    /// The variant's wire name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Auth { .. } => "auth",
            Message::Submit(_) => "submit",
            Message::Reply { .. } => "reply",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::StatusRequest { .. } => "status_request",
            Message::Status { .. } => "status",
            Message::Register(_) => "register",
            Message::Registered { .. } => "registered",
            Message::Assign(_) => "assign",
            Message::Finished { .. } => "finished",
            Message::Refused { .. } => "refused",
            Message::Drain {} => "drain",
            Message::Heartbeat {} => "heartbeat",
            Message::Error { .. } => "error",
        }
    }
}
