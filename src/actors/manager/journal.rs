//! The manager's side of its task store: what it records, and what waits
//! for the records' commit.
//!
//! Every manager has a journal over a store ([`super::store`]); a store
//! that keeps nothing ([`super::store::MemoryStore`]) is never sent a
//! record, and nothing waits for it. With a durable store the journal holds
//! back what depends on a record until the store acknowledges it: the
//! acceptance of a task (the reply to its submit) and the delivery of an
//! outcome (the reply, the kept result, the waiters). A task starts on a
//! worker before its acceptance is committed: only the answers wait, not
//! the work.
//!
//! Bound: at most `store_backlog` records may wait for their commit when a
//! submit arrives; past it the submit is denied ("store busy", logged at
//! most once per warning window). Records other than acceptances are never
//! refused: each accepted task makes a few at most (start, outcome,
//! deletion), so they are bounded by the tasks the manager holds.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::store::{
    CommitSink, DeadRecord, Record, Recovered, ResultRecord, StartRecord, StoreFailed,
    StoredOutcome, TaskRecord, TaskStore,
};
use super::Pending;
use crate::logsafe::{RateLimit, WARN_WINDOW};
use crate::messages::*;

/// Most records waiting for their commit when a submit is still accepted,
/// by default (`ManagerSettings::store_backlog`).
pub const STORE_BACKLOG: u64 = 65_536;

/// Reason of the deny a submit gets while the store is behind.
pub const STORE_BUSY: &str = "store busy: too many records waiting for their commit";

/// How far past the recorded id high-water mark a restarted manager
/// continues: run ids handed out after the last commit were not recorded.
pub const ID_GAP: u64 = 1 << 24;

/// Milliseconds since the Unix epoch, now.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What waits for a record's commit.
pub(super) enum Deferred {
    /// The reply to a submit.
    Accept(TaskId, oneshot::Sender<Result<TaskId, Rejection>>),
    /// An outcome to deliver.
    Outcome(Box<(Pending, TaskOutcome)>),
}

/// See the module docs.
pub(super) struct Journal {
    store: Box<dyn TaskStore>,
    durable: bool,
    /// Told when a record cannot be handed to the store.
    failed: Option<Recipient<StoreFailed>>,
    /// Set by [`Journal::close`].
    closed: bool,
    sent: u64,
    committed: u64,
    deferred: VecDeque<(u64, Deferred)>,
    /// Tasks answered whose outcome is not committed yet.
    answering: HashSet<TaskId>,
    /// The receiver of the last accept's commit, for the submit's reply.
    accepted: Option<oneshot::Receiver<Result<TaskId, Rejection>>>,
    /// How long recovered runs wait for their workers' claims.
    pub(super) grace: Duration,
    backlog: u64,
}

impl Journal {
    pub(super) fn new(store: Box<dyn TaskStore>, grace: Duration, backlog: u64) -> Journal {
        Journal {
            durable: store.durable(),
            store,
            failed: None,
            closed: false,
            sent: 0,
            committed: 0,
            deferred: VecDeque::new(),
            answering: HashSet::new(),
            accepted: None,
            grace,
            backlog,
        }
    }

    /// Whether records are kept (`--persist`).
    pub(super) fn durable(&self) -> bool {
        self.durable
    }

    /// The store, for logs.
    pub(super) fn describe(&self) -> String {
        self.store.describe()
    }

    /// What the store held when opened.
    pub(super) fn take_recovered(&mut self) -> Recovered {
        self.store.take_recovered()
    }

    /// Starts the store; its acknowledgements go to `sink`.
    pub(super) fn start(&mut self, sink: CommitSink) -> Result<(), super::store::StoreError> {
        self.failed = Some(sink.failed.clone());
        self.store.start(sink)
    }

    fn send(&mut self, record: Record) -> u64 {
        if self.closed {
            log::debug!("task store closed: a record after the graceful stop is not written");
            return self.sent;
        }
        if let Err(e) = self.store.record(record) {
            if let Some(failed) = self.failed.take() {
                failed.do_send(StoreFailed(e.to_string()));
            }
        }
        self.sent += 1;
        self.sent
    }

    /// Why a submit must be denied now, if it must.
    pub(super) fn busy(&self) -> Option<&'static str> {
        let waiting = self.sent - self.committed;
        if waiting < self.backlog {
            return None;
        }
        static BUSY: RateLimit = RateLimit::new(WARN_WINDOW);
        crate::log_limited!(
            BUSY,
            log::Level::Warn,
            "{} is behind: {waiting} records wait for their commit; submits denied",
            self.store.describe()
        );
        Some(STORE_BUSY)
    }

    /// Records the acceptance of `task`; with a durable store the reply to
    /// its submit waits for the commit (see [`Journal::accept_reply`]).
    pub(super) fn accept(&mut self, task: &Pending) {
        if !self.durable {
            return;
        }
        let seq = self.send(Record::Accept(task.id, record_of(task)));
        let (tx, rx) = oneshot::channel();
        self.deferred
            .push_back((seq, Deferred::Accept(task.id, tx)));
        self.accepted = Some(rx);
    }

    /// The reply to the submit whose task was just recorded, resolving
    /// once its acceptance is committed; `None` when nothing waits.
    pub(super) fn accept_reply(&mut self) -> Option<Response<Result<TaskId, Rejection>>> {
        let commit = self.accept_commit()?;
        Some(Response::fut(commit))
    }

    /// The acceptance of the task just recorded, once committed; `None`
    /// when nothing waits.
    pub(super) fn accept_commit(
        &mut self,
    ) -> Option<impl std::future::Future<Output = Result<TaskId, Rejection>> + use<>> {
        let rx = self.accepted.take()?;
        Some(async move {
            rx.await.unwrap_or_else(|_| {
                Err(Rejection::Denied {
                    reason: "manager stopping: the task store closed".into(),
                    retry_after: Duration::from_secs(1),
                })
            })
        })
    }

    /// Records a start of `task`.
    pub(super) fn start_run(&mut self, task: TaskId, run: RunId, started_times: u32) {
        if self.durable {
            self.send(Record::Start(task, StartRecord { run, started_times }));
        }
    }

    /// Records that `task` waits for a retry: its retries used (already
    /// counted) and its times started so far. Nothing waits for this
    /// commit: a crash before it recovers the task as it was recorded last.
    pub(super) fn retry(&mut self, task: &Pending) {
        if self.durable {
            let record = TaskRecord {
                attempt_base: task.started_times,
                ..record_of(task)
            };
            self.send(Record::Retry(task.id, record));
        }
    }

    /// Records `task`'s outcome. Returns it when it may be delivered now
    /// (nothing is kept); with a durable store it is delivered once
    /// committed.
    pub(super) fn finish(
        &mut self,
        task: Pending,
        outcome: TaskOutcome,
    ) -> Option<(Pending, TaskOutcome)> {
        if !self.durable {
            return Some((task, outcome));
        }
        let finished_ms = now_ms();
        let kept = task.detached().then(|| ResultRecord {
            finished_ms,
            outcome: match &outcome {
                TaskOutcome::Done(v) => StoredOutcome::Done(v.clone()),
                TaskOutcome::Failed(e) => StoredOutcome::Failed(e.clone()),
            },
            unique: task
                .unique
                .as_ref()
                .filter(|(_, keep)| !keep.is_zero())
                .map(|(k, keep)| (k.clone(), finished_ms + keep.as_millis() as u64)),
        });
        let seq = self.send(Record::Finish(task.id, kept));
        self.answering.insert(task.id);
        self.deferred
            .push_back((seq, Deferred::Outcome(Box::new((task, outcome)))));
        None
    }

    /// Deletes the record of a task let go without an outcome (its client
    /// left).
    pub(super) fn drop_task(&mut self, task: TaskId) {
        if self.durable {
            self.send(Record::Finish(task, None));
        }
    }

    /// Deletes a kept outcome the result store let go.
    pub(super) fn forget(&mut self, task: TaskId) {
        if self.durable {
            self.send(Record::Forget(task));
        }
    }

    /// Records that task `id` joined the dead list.
    pub(super) fn dead(&mut self, id: TaskId, record: DeadRecord) {
        if self.durable {
            self.send(Record::Dead(id, record));
        }
    }

    /// Records that dead-list entry `id` went.
    pub(super) fn unlist(&mut self, id: TaskId) {
        if self.durable {
            self.send(Record::Unlist(id));
        }
    }

    /// Records that periodic task `name` ran for its due time `at_ms`.
    pub(super) fn fired(&mut self, name: &str, at_ms: u64) {
        if self.durable {
            self.send(Record::Fired(name.to_string(), at_ms));
        }
    }

    /// The first `upto` records are committed: what waited for them.
    pub(super) fn committed(&mut self, upto: u64) -> Vec<Deferred> {
        self.committed = upto;
        let mut ready = Vec::new();
        while self.deferred.front().is_some_and(|(seq, _)| *seq <= upto) {
            let (_, d) = self.deferred.pop_front().expect("front exists");
            if let Deferred::Outcome(o) = &d {
                self.answering.remove(&o.0.id);
            }
            ready.push(d);
        }
        ready
    }

    /// Whether `task` was answered and its outcome is not yet committed.
    pub(super) fn holds(&self, task: TaskId) -> bool {
        self.answering.contains(&task)
    }

    /// Whether outcomes still wait for their commit.
    pub(super) fn answering(&self) -> bool {
        !self.answering.is_empty()
    }

    /// Ends the writes at the end of a graceful stop: the store commits
    /// what it was sent and is closed, so the next start needs no repair.
    /// Later records are dropped.
    pub(super) fn close(&mut self) {
        self.closed = true;
        self.store.close();
    }
}

/// The record of `task` as it stands.
pub(super) fn record_of(task: &Pending) -> TaskRecord {
    TaskRecord {
        name: task.spec.name.clone(),
        args: task.spec.args.clone(),
        priority: task.spec.priority,
        timeout_ms: task.spec.timeout.map(|d| d.as_millis() as u64),
        attempts: task.spec.attempts,
        detached: task.detached(),
        retries: task.spec.retries.unwrap_or(0),
        retried: task.retried,
        attempt_base: task.attempt_base,
        due_ms: task.due_ms,
        unique_key: task.unique.as_ref().map(|(k, _)| k.clone()),
        unique_for_ms: task
            .unique
            .as_ref()
            .map_or(0, |(_, keep)| keep.as_millis() as u64),
    }
}

/// The task a record holds, as submitted (its retries resolved).
pub(super) fn spec_of(r: TaskRecord) -> TaskSpec {
    TaskSpec {
        name: r.name,
        args: r.args,
        priority: r.priority,
        timeout: r.timeout_ms.map(Duration::from_millis),
        attempts: r.attempts,
        retries: Some(r.retries),
    }
}
