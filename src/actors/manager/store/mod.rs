//! The task store behind a trait: what the manager records so that a
//! restarted manager can take over, and the seam each backend plugs into.
//!
//! The manager writes [`Record`]s in the order things happen and never
//! waits on the disk or the network: a store queues them, makes them
//! durable in groups (one commit for everything that arrived meanwhile),
//! and acknowledges each group by how many records are durable
//! ([`Committed`]). Until then the manager holds back what depends on them
//! (see [`super::journal`]). A store that cannot write any more says so
//! ([`StoreFailed`]); the manager then stops and the process exits with an
//! error, as after a crash: what was committed is recovered at the next
//! start.
//!
//! Three stores: [`MemoryStore`] keeps nothing (the default: a manager
//! without `--persist`), [`redb::RedbStore`] keeps a file on the manager's
//! disk (`--persist DIR`), and `postgres::PgStore` (cargo feature
//! `postgres`) keeps tables in a PostgreSQL database (`--persist
//! postgres://...`). A store reads what it held when it is
//! opened ([`Recovered`]); the manager installs that when it starts.

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod redb;

use std::path::PathBuf;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::messages::{RunId, TaskId};
use crate::protocol::{DeadTask, Priority, Value};

/// A task store that cannot be used: not openable, not a store, holding a
/// record that cannot be read, or failing to write. One line.
#[derive(Debug, thiserror::Error)]
#[error("task store {}: {what}", path.display())]
pub struct StoreError {
    /// The store (its file or folder, or its URL with the password masked).
    pub path: PathBuf,
    /// What is wrong.
    pub what: String,
}

/// An accepted task as recorded.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TaskRecord {
    /// Task name.
    pub name: String,
    /// Arguments.
    pub args: Value,
    /// Priority it was submitted with.
    pub priority: Priority,
    /// Its timeout, if any.
    pub timeout_ms: Option<u64>,
    /// Attempts it may use per try.
    pub attempts: u32,
    /// Whether its outcome is kept by id.
    pub detached: bool,
    /// Retries after a failed run (resolved at acceptance); absent in
    /// records written before retries existed.
    #[serde(default)]
    pub retries: u32,
    /// Retries used so far; the record is rewritten when a retry is
    /// scheduled. Absent (read as 0) in records written before it was.
    #[serde(default)]
    pub retried: u32,
    /// Times started when the current retry was scheduled: worker loss
    /// spends the attempts of one try, counted from here.
    #[serde(default)]
    pub attempt_base: u32,
    /// When it was scheduled to run, in milliseconds since the Unix epoch
    /// (a delayed task); absent for a task to run at once, and in records
    /// written before delayed tasks existed.
    #[serde(default)]
    pub due_ms: Option<u64>,
    /// Its unique key (a unique task), if any; absent in records written
    /// before unique tasks existed.
    #[serde(default)]
    pub unique_key: Option<String>,
    /// How long its unique key holds after it is answered, in ms.
    #[serde(default)]
    pub unique_for_ms: u64,
}

/// A start of a task as recorded: the run that was going.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct StartRecord {
    /// The run's id.
    pub run: RunId,
    /// Times the task had been started, this one included.
    pub started_times: u32,
}

/// An outcome as recorded.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum StoredOutcome {
    /// The task's value.
    Done(Value),
    /// Its error.
    Failed(String),
}

/// A kept outcome of a detached task, with its wall-clock finish time (for
/// the result ttl across restarts).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ResultRecord {
    /// Milliseconds since the Unix epoch when the task finished.
    pub finished_ms: u64,
    /// The outcome.
    pub outcome: StoredOutcome,
    /// The unique key its task held, while the key still holds after the
    /// task finished (its `unique_for`): the key and until when, in ms
    /// since the Unix epoch. Absent otherwise, and in records written
    /// before unique tasks existed.
    #[serde(default)]
    pub unique: Option<(String, u64)>,
}

/// A dead-list entry as recorded: what `argon failed` lists, and the task
/// as it was submitted when it can be queued again (its arguments within
/// the dead list's bound for that).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DeadRecord {
    /// The entry as listed.
    pub entry: DeadTask,
    /// The task, with its retries as submitted; `None` when its arguments
    /// were too large to keep for a retry.
    pub task: Option<TaskRecord>,
}

/// One thing to record.
#[derive(Debug)]
pub enum Record {
    /// A task was accepted.
    Accept(TaskId, TaskRecord),
    /// A task started a run.
    Start(TaskId, StartRecord),
    /// A run failed and a retry is scheduled: the task's record is
    /// rewritten with its retries used, and it is no longer running.
    Retry(TaskId, TaskRecord),
    /// The task is answered: its record goes, and its outcome is kept when
    /// given (detached tasks).
    Finish(TaskId, Option<ResultRecord>),
    /// A kept outcome was let go.
    Forget(TaskId),
    /// A task joined the dead list (its own record goes with its
    /// [`Record::Finish`]).
    Dead(TaskId, DeadRecord),
    /// A dead-list entry went: evicted, purged, or queued again.
    Unlist(TaskId),
    /// Periodic task `name` ran for its due time `at_ms` (ms since the
    /// Unix epoch); only the last one is kept.
    Fired(String, u64),
}

/// What a store held when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Tasks without an outcome, each with its start if it was running.
    pub tasks: Vec<(TaskId, TaskRecord, Option<StartRecord>)>,
    /// Kept outcomes.
    pub results: Vec<(TaskId, ResultRecord)>,
    /// The highest id recorded, if any.
    pub high_id: Option<u64>,
    /// The dead list, in any order.
    pub dead: Vec<(TaskId, DeadRecord)>,
    /// The last run of each periodic task: its name and due time.
    pub fired: Vec<(String, u64)>,
}

/// Store → Manager: the first `upto` records sent are durable.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Committed {
    /// Records durable, counted from the first sent.
    pub upto: u64,
}

/// Store → Manager: writing failed; nothing more will be committed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StoreFailed(pub String);

/// Where a store sends its acknowledgements.
#[derive(Clone)]
pub struct CommitSink {
    /// Told how many records are durable after each group.
    pub committed: Recipient<Committed>,
    /// Told once when writing fails.
    pub failed: Recipient<StoreFailed>,
}

/// A place where the manager's records are kept. See the module docs.
///
/// The manager calls [`TaskStore::start`] once, then [`TaskStore::record`]
/// for each record in order, and [`TaskStore::close`] at the end of a
/// graceful stop. A store that keeps records ([`TaskStore::durable`])
/// acknowledges them through the sink, in order, possibly many at once;
/// one that does not is never sent a record.
pub trait TaskStore: Send + 'static {
    /// Whether records are kept: if not, nothing waits for a commit and a
    /// stopping manager has nowhere to keep its tasks.
    fn durable(&self) -> bool;

    /// What it is, for logs ("task store /var/lib/argon/argon.redb").
    fn describe(&self) -> String;

    /// What it held when opened (taken once; empty afterwards).
    fn take_recovered(&mut self) -> Recovered;

    /// Whether it had to be repaired when opened (its last manager did not
    /// close it).
    fn was_repaired(&self) -> bool {
        false
    }

    /// Starts writing; acknowledgements go to `sink`.
    fn start(&mut self, sink: CommitSink) -> Result<(), StoreError>;

    /// Queues one record; it is durable once a [`Committed`] covers it.
    fn record(&mut self, record: Record) -> Result<(), StoreError>;

    /// Commits what it was sent and lets go of the store: called at the
    /// end of a graceful stop, so the next start needs no repair. Records
    /// after it are not written.
    fn close(&mut self);
}

/// The store of a manager without `--persist`: keeps nothing.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl TaskStore for MemoryStore {
    fn durable(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        "no task store (memory only)".into()
    }

    fn take_recovered(&mut self) -> Recovered {
        Recovered::default()
    }

    fn start(&mut self, _: CommitSink) -> Result<(), StoreError> {
        Ok(())
    }

    fn record(&mut self, _: Record) -> Result<(), StoreError> {
        Ok(())
    }

    fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_record_from_before_retries_reads_as_none() {
        let old = rmp_serde::to_vec(&(
            "echo",
            Value::from(1),
            Priority::High,
            Some(5u64),
            2u32,
            true,
        ))
        .unwrap();
        let r: TaskRecord = rmp_serde::from_slice(&old).expect("old record reads");
        assert_eq!((r.name.as_str(), r.attempts, r.retries), ("echo", 2, 0));

        let new = TaskRecord { retries: 3, ..r };
        let back: TaskRecord = rmp_serde::from_slice(&rmp_serde::to_vec(&new).unwrap()).unwrap();
        assert_eq!(back.retries, 3);
    }

    #[test]
    fn a_task_record_from_before_used_retries_reads_as_none_used() {
        let old = rmp_serde::to_vec(&(
            "flaky",
            Value::from(7),
            Priority::Normal,
            None::<u64>,
            1u32,
            true,
            3u32,
        ))
        .unwrap();
        let r: TaskRecord = rmp_serde::from_slice(&old).expect("old record reads");
        assert_eq!(
            (r.name.as_str(), r.retries, r.retried, r.attempt_base),
            ("flaky", 3, 0, 0)
        );

        let new = TaskRecord {
            retried: 2,
            attempt_base: 4,
            ..r
        };
        let back: TaskRecord = rmp_serde::from_slice(&rmp_serde::to_vec(&new).unwrap()).unwrap();
        assert_eq!((back.retries, back.retried, back.attempt_base), (3, 2, 4));
        assert_eq!(back.due_ms, None, "an old record is not scheduled");
    }

    #[test]
    fn a_due_time_is_kept_with_the_record() {
        let r = TaskRecord {
            name: "later".into(),
            args: Value::Nil,
            priority: Priority::Low,
            timeout_ms: None,
            attempts: 1,
            detached: true,
            retries: 0,
            retried: 0,
            attempt_base: 0,
            due_ms: Some(1_800_000_000_000),
            unique_key: Some("k".into()),
            unique_for_ms: 600_000,
        };
        let back: TaskRecord = rmp_serde::from_slice(&rmp_serde::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back.due_ms, Some(1_800_000_000_000));
        assert_eq!(
            (back.unique_key.as_deref(), back.unique_for_ms),
            (Some("k"), 600_000)
        );
    }
}
