//! Durable mode (`argon manager --persist DIR`): the task store, a redb
//! file `DIR/argon.redb`, and the manager's side of it, the [`Journal`].
//!
//! What is recorded: each accepted task (its spec, whether detached), each
//! start of a task (run id, times started), each retry scheduled after a
//! failed run (the task's record is rewritten with its retries used and
//! times started, and its start record goes), each outcome of a detached task
//! (with its wall-clock finish time, for the result ttl), and the id
//! high-water mark. An answered task's record is deleted with its outcome
//! (kept only for detached tasks); a kept outcome's record is deleted when
//! the result store lets it go (ttl, count or byte bound). So the store
//! holds at most the queue bound + the running tasks + the kept results.
//!
//! Writes happen on one writer thread, never on the actor's thread. The
//! manager hands it records through a channel; the thread takes everything
//! waiting (up to [`MAX_BATCH`] records), writes it in one write transaction
//! with immediate durability (one fsync), and then tells the manager how
//! many records are committed ([`Committed`]). Until then the manager holds
//! back what depends on them: the acceptance of a task (the reply to its
//! submit) and the delivery of an outcome (the reply, the kept result, the
//! waiters). A task starts on a worker before its acceptance is committed:
//! only the answers wait, not the work.
//!
//! Bound: at most `store_backlog` ([`STORE_BACKLOG`]) records may wait for their commit when
//! a submit arrives; past it the submit is denied ("store busy", logged at
//! most once per warning window). Records other than acceptances are never
//! refused: each accepted task makes a few at most (start, outcome,
//! deletion), so they are bounded by the tasks the manager holds.
//!
//! Recovery ([`Store::open`] reads, [`Manager::recover`] installs): tasks
//! never started are queued again by priority in id (acceptance) order;
//! tasks recorded as started wait for a worker to claim their run when it
//! registers (then the run is attached and its result accepted), for at most
//! the recovery grace; then they are requeued while attempts remain, or
//! failed as their worker lost. A restart loses every provider at once:
//! the recovered tasks wait for workers that provide them in the windows of
//! [`super::awaiting`], opened at the start for at least the recovery
//! grace. A recovered task keeps its retries used, so it gets only those
//! left. A task that was waiting for its retry is queued
//! again at once: the backoff's due time is not recorded (it is in-process
//! time, and a restart is itself a wait). A retry whose record was not yet
//! committed at the crash is not counted. A worker that claims the first
//! run of a task recovered as queued (its start was not yet committed) gets it attached
//! too. Every recovered task is detached: its outcome goes to the result
//! store. New ids continue past the recorded high-water mark plus
//! [`ID_GAP`], so an id is never handed out twice.
//!
//! A store that cannot be opened or read is a [`StoreError`] (the binary
//! exits 78); a write that fails later stops the process (exit 1) as a
//! crash would: what was committed is recovered at the next start.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Manager, Pending, Run};
use crate::logsafe::{RateLimit, WARN_WINDOW};
use crate::messages::*;
use crate::protocol::{Priority, Value};

/// File name of the store inside the `--persist` folder.
pub const STORE_FILE: &str = "argon.redb";

/// Most records waiting for their commit when a submit is still accepted,
/// by default (`ManagerSettings::store_backlog`).
pub const STORE_BACKLOG: u64 = 65_536;

/// Most records written in one transaction.
pub const MAX_BATCH: usize = 16_384;

/// How far past the recorded id high-water mark a restarted manager
/// continues: run ids handed out after the last commit were not recorded.
pub const ID_GAP: u64 = 1 << 24;

/// Reason of the deny a submit gets while the store is behind.
pub const STORE_BUSY: &str = "store busy: too many records waiting for their commit";

/// Session id of recovered tasks (sessions count from 1).
pub(super) const RECOVERED_SESSION: SessionId = 0;

const TASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks");
const STARTS: TableDefinition<u64, &[u8]> = TableDefinition::new("starts");
const RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("results");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_ID: &str = "next_id";

/// A task store that cannot be used: not openable, not a store, or holding
/// a record that cannot be read. One line.
#[derive(Debug, thiserror::Error)]
#[error("task store {}: {what}", path.display())]
pub struct StoreError {
    /// The store file (or folder).
    pub path: PathBuf,
    /// What is wrong.
    pub what: String,
}

#[derive(Serialize, Deserialize)]
struct TaskRecord {
    name: String,
    args: Value,
    priority: Priority,
    timeout_ms: Option<u64>,
    attempts: u32,
    detached: bool,
    /// Retries after a failed run (resolved at acceptance); absent in
    /// records written before retries existed.
    #[serde(default)]
    retries: u32,
    /// Retries used so far; the record is rewritten when a retry is
    /// scheduled. Absent (read as 0) in records written before it was.
    #[serde(default)]
    retried: u32,
    /// Times started when the current retry was scheduled: worker loss
    /// spends the attempts of one try, counted from here.
    #[serde(default)]
    attempt_base: u32,
}

impl TaskRecord {
    /// The record of `task` as it stands.
    fn of(task: &Pending) -> TaskRecord {
        TaskRecord {
            name: task.spec.name.clone(),
            args: task.spec.args.clone(),
            priority: task.spec.priority,
            timeout_ms: task.spec.timeout.map(|d| d.as_millis() as u64),
            attempts: task.spec.attempts,
            detached: task.detached,
            retries: task.spec.retries.unwrap_or(0),
            retried: task.retried,
            attempt_base: task.attempt_base,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StartRecord {
    run: RunId,
    started_times: u32,
}

#[derive(Serialize, Deserialize)]
enum StoredOutcome {
    Done(Value),
    Failed(String),
}

#[derive(Serialize, Deserialize)]
struct ResultRecord {
    finished_ms: u64,
    outcome: StoredOutcome,
}

/// What the writer thread is asked to write.
enum Op {
    Accept(TaskId, TaskRecord),
    Start(TaskId, StartRecord),
    /// A run failed and a retry is scheduled: the task's record is
    /// rewritten with its retries used, and it is no longer running.
    Retry(TaskId, TaskRecord),
    /// The task is answered: its record goes, and its outcome is kept when
    /// given (detached tasks).
    Finish(TaskId, Option<ResultRecord>),
    /// A kept outcome was let go.
    Forget(TaskId),
}

/// An opened store and what it held, before the manager takes it over.
pub struct Store {
    db: Database,
    path: PathBuf,
    tasks: Vec<(TaskId, TaskRecord, Option<StartRecord>)>,
    results: Vec<(TaskId, ResultRecord)>,
    next_id: Option<u64>,
    repaired: bool,
}

/// An error's text on one line.
fn line(e: impl std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens (or creates) the store in folder `dir` and reads it whole.
    /// Fails on a store another process holds, on a file that is not a
    /// store, and on any record that cannot be read: nothing is discarded.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(STORE_FILE);
        let err = |what: String| StoreError {
            path: path.clone(),
            what,
        };
        std::fs::create_dir_all(dir).map_err(|e| StoreError {
            path: dir.to_path_buf(),
            what: format!("cannot create the folder: {}", line(e)),
        })?;
        let repaired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&repaired);
        let began = std::time::Instant::now();
        let db = Database::builder()
            .set_repair_callback(move |_| flag.store(true, Ordering::Relaxed))
            .create(&path)
            .map_err(|e| err(format!("cannot open: {}", line(e))))?;
        let repaired = repaired.load(Ordering::Relaxed);
        if repaired {
            log::warn!(
                "task store {} was not closed cleanly (the manager was killed or crashed): checked and repaired in {} ms",
                crate::logsafe::escaped(path.display()),
                began.elapsed().as_millis()
            );
        }
        // Creates the tables of a new store.
        (|| -> Result<(), String> {
            let txn = db.begin_write().map_err(line)?;
            txn.open_table(TASKS).map_err(line)?;
            txn.open_table(STARTS).map_err(line)?;
            txn.open_table(RESULTS).map_err(line)?;
            txn.open_table(META).map_err(line)?;
            txn.commit().map_err(line)
        })()
        .map_err(|e| err(format!("cannot prepare: {e}")))?;
        let mut store = Store {
            db,
            path: path.clone(),
            tasks: Vec::new(),
            results: Vec::new(),
            next_id: None,
            repaired,
        };
        store.read().map_err(err)?;
        Ok(store)
    }

    fn read(&mut self) -> Result<(), String> {
        let txn = self.db.begin_read().map_err(line)?;
        let meta = txn.open_table(META).map_err(line)?;
        let mut high = meta.get(NEXT_ID).map_err(line)?.map(|v| v.value());
        let mut seen = |id: u64| high = Some(high.map_or(id, |h| h.max(id)));
        let starts = txn.open_table(STARTS).map_err(line)?;
        let tasks = txn.open_table(TASKS).map_err(line)?;
        for entry in tasks.iter().map_err(line)? {
            let (k, v) = entry.map_err(line)?;
            let id = k.value();
            let record: TaskRecord = rmp_serde::from_slice(v.value())
                .map_err(|e| format!("record of task {id} cannot be read: {}", line(e)))?;
            let start =
                match starts.get(id).map_err(line)? {
                    Some(s) => Some(rmp_serde::from_slice::<StartRecord>(s.value()).map_err(
                        |e| format!("start record of task {id} cannot be read: {}", line(e)),
                    )?),
                    None => None,
                };
            seen(id);
            if let Some(s) = &start {
                seen(s.run);
            }
            self.tasks.push((id, record, start));
        }
        let results = txn.open_table(RESULTS).map_err(line)?;
        for entry in results.iter().map_err(line)? {
            let (k, v) = entry.map_err(line)?;
            let id = k.value();
            let record: ResultRecord = rmp_serde::from_slice(v.value())
                .map_err(|e| format!("result of task {id} cannot be read: {}", line(e)))?;
            seen(id);
            self.results.push((id, record));
        }
        self.next_id = high;
        Ok(())
    }

    /// Whether the store had to be repaired on opening: the last manager
    /// that held it did not close it (killed, crashed). A graceful stop
    /// closes it.
    pub fn was_repaired(&self) -> bool {
        self.repaired
    }

    /// The first id a manager over this store may count from, if the store
    /// has recorded any.
    pub fn next_id(&self) -> Option<u64> {
        self.next_id.map(|h| h.saturating_add(ID_GAP))
    }

    /// Tasks it holds that have no outcome yet.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Outcomes it holds.
    pub fn result_count(&self) -> usize {
        self.results.len()
    }
}

/// Writer thread → Manager: the first `upto` records sent are committed.
#[derive(Message)]
#[rtype(result = "()")]
struct Committed {
    upto: u64,
}

/// Writer thread → Manager: a write failed; nothing more will commit.
#[derive(Message)]
#[rtype(result = "()")]
struct StoreFailed(String);

/// What waits for a record's commit.
enum Deferred {
    Accept(TaskId, oneshot::Sender<Result<TaskId, Rejection>>),
    Outcome(Box<(Pending, TaskOutcome)>),
}

/// The manager's side of the store. See the module docs.
pub(super) struct Journal {
    /// Until the actor starts: the store, read but not yet installed.
    store: Option<Store>,
    tx: Option<mpsc::Sender<Op>>,
    /// The writer thread; joined by [`Journal::close`].
    writer: Option<std::thread::JoinHandle<()>>,
    /// Set by [`Journal::close`].
    closed: bool,
    sent: u64,
    committed: u64,
    deferred: VecDeque<(u64, Deferred)>,
    /// Tasks answered whose outcome is not committed yet.
    answering: HashSet<TaskId>,
    /// Recovered started tasks no worker has claimed yet, by run id.
    unclaimed: super::IdMap<Pending>,
    /// The receiver of the last accept's commit, for the submit's reply.
    accepted: Option<oneshot::Receiver<Result<TaskId, Rejection>>>,
    grace: Duration,
    backlog: u64,
    path: PathBuf,
}

impl Journal {
    pub(super) fn new(store: Store, grace: Duration, backlog: u64) -> Journal {
        Journal {
            path: store.path.clone(),
            store: Some(store),
            tx: None,
            writer: None,
            closed: false,
            sent: 0,
            committed: 0,
            deferred: VecDeque::new(),
            answering: HashSet::new(),
            unclaimed: Default::default(),
            accepted: None,
            grace,
            backlog,
        }
    }

    fn send(&mut self, op: Op) -> u64 {
        if self.closed {
            log::debug!("task store closed: a record after the graceful stop is not written");
            return self.sent;
        }
        let alive = self.tx.as_ref().is_some_and(|tx| tx.send(op).is_ok());
        if !alive {
            store_failed(&self.path, "the writer thread is gone");
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
            "task store {} is behind: {waiting} records wait for their commit; submits denied",
            self.path.display()
        );
        Some(STORE_BUSY)
    }

    /// Records the acceptance of `task`; the reply to its submit waits for
    /// the commit (see [`Journal::accept_reply`]).
    pub(super) fn accept(&mut self, task: &Pending) {
        let seq = self.send(Op::Accept(task.id, TaskRecord::of(task)));
        let (tx, rx) = oneshot::channel();
        self.deferred
            .push_back((seq, Deferred::Accept(task.id, tx)));
        self.accepted = Some(rx);
    }

    /// The reply to the submit whose task was just recorded: it resolves
    /// once the acceptance is committed.
    pub(super) fn accept_reply(&mut self) -> Option<Response<Result<TaskId, Rejection>>> {
        let rx = self.accepted.take()?;
        Some(Response::fut(async move {
            rx.await.unwrap_or_else(|_| {
                Err(Rejection::Denied {
                    reason: "manager stopping: the task store closed".into(),
                    retry_after: Duration::from_secs(1),
                })
            })
        }))
    }

    pub(super) fn start(&mut self, task: TaskId, run: RunId, started_times: u32) {
        self.send(Op::Start(task, StartRecord { run, started_times }));
    }

    /// Records that `task` waits for a retry: its retries used (already
    /// counted) and its times started so far. Nothing waits for this
    /// commit: a crash before it recovers the task as it was recorded last.
    pub(super) fn retry(&mut self, task: &Pending) {
        let record = TaskRecord {
            attempt_base: task.started_times,
            ..TaskRecord::of(task)
        };
        self.send(Op::Retry(task.id, record));
    }

    /// Records `task`'s outcome; it is delivered once committed.
    pub(super) fn finish(&mut self, task: Pending, outcome: TaskOutcome) {
        let kept = task.detached.then(|| ResultRecord {
            finished_ms: now_ms(),
            outcome: match &outcome {
                TaskOutcome::Done(v) => StoredOutcome::Done(v.clone()),
                TaskOutcome::Failed(e) => StoredOutcome::Failed(e.clone()),
            },
        });
        let seq = self.send(Op::Finish(task.id, kept));
        self.answering.insert(task.id);
        self.deferred
            .push_back((seq, Deferred::Outcome(Box::new((task, outcome)))));
    }

    /// Deletes the record of a task let go without an outcome (its client
    /// left).
    pub(super) fn drop_task(&mut self, task: TaskId) {
        self.send(Op::Finish(task, None));
    }

    /// Whether `task` is known here: recovered and unclaimed, or answered
    /// and not yet committed.
    pub(super) fn holds(&self, task: TaskId) -> bool {
        self.answering.contains(&task) || self.unclaimed.values().any(|t| t.id == task)
    }

    /// Takes an unclaimed recovered task that `which` picks.
    pub(super) fn take_unclaimed(&mut self, which: impl Fn(&Pending) -> bool) -> Option<Pending> {
        let run = self
            .unclaimed
            .iter()
            .find_map(|(run, t)| which(t).then_some(*run))?;
        self.unclaimed.remove(&run)
    }

    /// Whether outcomes still wait for their commit.
    /// Ends the writes: the writer thread commits what it was sent, closes
    /// the store and is joined, so the next start opens it without repair.
    /// Called at the end of a graceful stop; later records are dropped.
    pub(super) fn close(&mut self) {
        self.closed = true;
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                log::error!("the task store's writer thread panicked");
            }
        }
    }

    pub(super) fn answering(&self) -> bool {
        !self.answering.is_empty()
    }
}

/// Tells the attached client of `task` that its task stays in the store
/// for the next start instead of being answered now.
fn kept_for_next_start(task: &Pending) {
    if !task.detached {
        task.reply_to.do_send(TaskReply {
            request_id: task.request_id,
            outcome: TaskOutcome::Failed(format!(
                "manager shutting down: task {} kept for the next start",
                task.id
            )),
        });
    }
}

/// Stops the process: the store can no longer record what the manager
/// promises. What was committed is recovered at the next start.
fn store_failed(path: &Path, why: &str) -> ! {
    log::error!(
        "task store {} failed: {why}; stopping (committed tasks are recovered at the next start)",
        path.display()
    );
    std::process::exit(crate::launch::EXIT_FAILED)
}

fn write_batch(db: &Database, ops: &[Op], high: &mut u64) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(line)?;
    txn.set_durability(Durability::Immediate);
    {
        let mut tasks = txn.open_table(TASKS).map_err(line)?;
        let mut starts = txn.open_table(STARTS).map_err(line)?;
        let mut results = txn.open_table(RESULTS).map_err(line)?;
        let mut meta = txn.open_table(META).map_err(line)?;
        for op in ops {
            match op {
                Op::Accept(id, r) => {
                    *high = (*high).max(*id);
                    tasks.insert(*id, encode(r)?.as_slice()).map_err(line)?;
                }
                Op::Start(id, s) => {
                    *high = (*high).max(s.run);
                    starts.insert(*id, encode(s)?.as_slice()).map_err(line)?;
                }
                Op::Retry(id, r) => {
                    tasks.insert(*id, encode(r)?.as_slice()).map_err(line)?;
                    starts.remove(*id).map_err(line)?;
                }
                Op::Finish(id, kept) => {
                    tasks.remove(*id).map_err(line)?;
                    starts.remove(*id).map_err(line)?;
                    if let Some(r) = kept {
                        results.insert(*id, encode(r)?.as_slice()).map_err(line)?;
                    }
                }
                Op::Forget(id) => {
                    results.remove(*id).map_err(line)?;
                }
            }
        }
        meta.insert(NEXT_ID, *high).map_err(line)?;
    }
    txn.commit().map_err(line)
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec(record).map_err(line)
}

fn writer(db: Database, rx: mpsc::Receiver<Op>, manager: actix::WeakAddr<Manager>, mut high: u64) {
    let mut done = 0u64;
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // Once the manager is gone, what it sent is still written, until
        // the channel is empty and closed.
        match write_batch(&db, &batch, &mut high) {
            Ok(()) => {
                done += batch.len() as u64;
                batch.clear();
                if let Some(m) = manager.upgrade() {
                    m.do_send(Committed { upto: done });
                }
            }
            Err(e) => {
                match manager.upgrade() {
                    Some(m) => m.do_send(StoreFailed(e)),
                    None => log::error!("task store write failed after the manager stopped: {e}"),
                }
                return;
            }
        }
    }
}

impl Handler<Committed> for Manager {
    type Result = ();

    fn handle(&mut self, msg: Committed, _: &mut Self::Context) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        j.committed = msg.upto;
        let mut ready = Vec::new();
        while j.deferred.front().is_some_and(|(seq, _)| *seq <= msg.upto) {
            ready.push(j.deferred.pop_front().expect("front exists").1);
        }
        for d in ready {
            match d {
                Deferred::Accept(id, tx) => {
                    let _ = tx.send(Ok(id));
                }
                Deferred::Outcome(answered) => {
                    let (task, outcome) = *answered;
                    if let Some(j) = self.journal.as_mut() {
                        j.answering.remove(&task.id);
                    }
                    self.deliver(task, outcome);
                }
            }
        }
        self.forget_gone();
        self.check_drained();
    }
}

impl Handler<StoreFailed> for Manager {
    type Result = ();

    fn handle(&mut self, msg: StoreFailed, _: &mut Self::Context) {
        let path = self
            .journal
            .as_ref()
            .map(|j| j.path.clone())
            .unwrap_or_default();
        store_failed(&path, &msg.0)
    }
}

/// The `reply_to` of recovered tasks. They are detached, so their outcomes
/// go to the result store and nothing is sent here.
struct Nobody;

impl Actor for Nobody {
    type Context = Context<Self>;
}

impl Handler<TaskReply> for Nobody {
    type Result = ();

    fn handle(&mut self, msg: TaskReply, _: &mut Self::Context) {
        log::debug!("reply to recovered request {} dropped", msg.request_id);
    }
}

impl Manager {
    /// A manager over `store` (see [`Store::open`]): it continues the
    /// store's ids, and recovers its tasks and results when started.
    pub fn with_store(settings: super::ManagerSettings, store: Store) -> Manager {
        let (grace, backlog) = (settings.recovery_grace, settings.store_backlog);
        let provider_grace = settings
            .provider_grace
            .unwrap_or(super::awaiting::PROVIDER_GRACE_STORED);
        let next = store.next_id();
        let mut m = Manager::new(settings);
        m.awaiting.set_grace(provider_grace);
        if let Some(next) = next {
            m.next_id = next;
        }
        m.results.track_gone();
        m.journal = Some(Journal::new(store, grace, backlog));
        m
    }

    /// Installs what the store held and starts its writer thread; called
    /// once, when the actor starts.
    pub(super) fn recover(&mut self, ctx: &mut Context<Self>) {
        let Some(store) = self.journal.as_mut().and_then(|j| j.store.take()) else {
            return;
        };
        let Store {
            db,
            path,
            mut tasks,
            mut results,
            ..
        } = store;
        let (tx, rx) = mpsc::channel();
        let high = self.next_id;
        let weak = ctx.address().downgrade();
        let spawned = std::thread::Builder::new()
            .name("argon-store".into())
            .spawn(move || writer(db, rx, weak, high));
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => store_failed(&path, &format!("cannot start the writer thread: {e}")),
        };
        if let Some(j) = self.journal.as_mut() {
            j.tx = Some(tx);
            j.writer = Some(handle);
        }
        let now = Instant::now();
        let wall = now_ms();
        results.sort_by_key(|(id, r)| (r.finished_ms, *id));
        let mut expired = Vec::new();
        let kept = results.len();
        for (id, r) in results {
            let age = Duration::from_millis(wall.saturating_sub(r.finished_ms));
            let Some(at) = now
                .checked_sub(age)
                .filter(|_| age < self.settings.result_ttl)
            else {
                expired.push(id);
                continue;
            };
            let outcome = match r.outcome {
                StoredOutcome::Done(v) => TaskOutcome::Done(v),
                StoredOutcome::Failed(e) => TaskOutcome::Failed(e),
            };
            self.results.insert(id, Arc::new(outcome), at);
        }
        if let Some(j) = self.journal.as_mut() {
            for id in expired {
                j.send(Op::Forget(id));
            }
        }
        self.forget_gone();
        tasks.sort_by_key(|(id, _, _)| *id);
        let reply_to = Nobody.start().recipient();
        let (mut queued, mut running) = (0, 0);
        let mut kinds = HashSet::new();
        for (id, r, start) in tasks {
            let task = Pending {
                id,
                session: RECOVERED_SESSION,
                request_id: 0,
                level: r.priority,
                spec: TaskSpec {
                    name: r.name,
                    args: r.args,
                    priority: r.priority,
                    timeout: r.timeout_ms.map(Duration::from_millis),
                    attempts: r.attempts,
                    retries: Some(r.retries),
                },
                reply_to: reply_to.clone(),
                detached: true,
                started_times: start.as_ref().map_or(r.attempt_base, |s| s.started_times),
                waiting_since: now,
                accepted_at: now,
                worker: None,
                retried: r.retried,
                attempt_base: r.attempt_base,
            };
            kinds.insert(task.spec.name.clone());
            match start {
                Some(s) => {
                    running += 1;
                    if let Some(j) = self.journal.as_mut() {
                        j.unclaimed.insert(s.run, task);
                    }
                }
                None => {
                    queued += 1;
                    self.queues[task.level.index()].push_back(task);
                }
            }
        }
        let grace = self.journal.as_ref().map_or(Duration::ZERO, |j| j.grace);
        // Unclaimed runs are requeued after `grace`: their kinds' windows
        // last at least that long, so they find them open.
        let window = self.awaiting.grace().max(grace);
        self.open_windows(&kinds, now, window);
        self.hold_orphans(&kinds);
        self.arm_provider_timer(ctx);
        log::info!(
            "task store {}: recovered {queued} queued task(s), {running} running (their workers \
             have {} to claim them), {kept} kept result(s); they wait up to {} for workers \
             that provide them",
            path.display(),
            humantime::format_duration(grace),
            humantime::format_duration(window)
        );
        if running > 0 {
            ctx.run_later(grace, |act, ctx| act.reclaim_unclaimed(ctx));
        }
    }

    /// The recovered task whose run `run` a registering worker reports, if
    /// there is one: it is attached to the run instead of the run being
    /// cancelled.
    pub(super) fn claim_recovered(
        &mut self,
        run: RunId,
        ctx: &mut Context<Self>,
    ) -> Option<Pending> {
        let j = self.journal.as_mut()?;
        let task = match j.unclaimed.remove(&run) {
            Some(t) => t,
            None => {
                // A first run whose start was not committed: its id is the
                // task's. A task recovered after a retry was scheduled has
                // started before, so its first run ended.
                let first = |t: &Pending| {
                    t.id == run && t.session == RECOVERED_SESSION && t.started_times == 0
                };
                let queued = self.queues.iter().position(|q| q.iter().any(first));
                let mut t = match queued {
                    Some(level) => {
                        let i = self.queues[level].iter().position(first)?;
                        self.queues[level].remove(i)?
                    }
                    None => self.awaiting.take(first)?,
                };
                t.started_times = t.started_times.max(1);
                j.start(t.id, run, t.started_times);
                t
            }
        };
        if let Some(limit) = task.spec.timeout {
            ctx.run_later(limit + self.settings.timeout_grace, move |act, ctx| {
                act.expire(run, limit, ctx)
            });
        }
        log::debug!(
            "recovered task {} attached to its running run {run}",
            task.id
        );
        Some(task)
    }

    /// The recovery grace is over: recovered runs no worker claimed are
    /// queued again without spending an attempt: whether they ran is not
    /// known, and a manager crash must not fail a task.
    fn reclaim_unclaimed(&mut self, ctx: &mut Context<Self>) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        let mut left: Vec<Pending> = j.unclaimed.drain().map(|(_, t)| t).collect();
        if left.is_empty() || self.shutdown.is_some() {
            // Shutting down: they stay in the store for the next start.
            return;
        }
        // Requeued at the head one by one: newest first, so the oldest ends up in front.
        left.sort_unstable_by_key(|t| std::cmp::Reverse(t.id));
        let (mut requeued, mut failed) = (0, 0);
        for mut task in left {
            task.started_times = task.started_times.saturating_sub(1).max(task.attempt_base);
            if self.sched.provides(&task.spec.name) {
                requeued += 1;
                self.requeue_front(task);
            } else if let Some(task) = self.hold_front(task) {
                failed += 1;
                let msg = format!("no worker provides task {} any more", task.spec.name);
                self.reply(task, TaskOutcome::Failed(msg));
            } else {
                requeued += 1;
            }
        }
        log::info!(
            "recovered running task(s) no worker claimed: {requeued} requeued, {failed} failed"
        );
        self.dispatch(ctx);
    }

    /// Sends deletions for the outcomes the result store let go.
    pub(super) fn forget_gone(&mut self) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        for id in self.results.take_gone() {
            j.send(Op::Forget(id));
        }
    }

    /// Graceful shutdown with a store: queued tasks stay recorded for the
    /// next start instead of being answered; an attached client is told so.
    /// Returns how many.
    pub(super) fn keep_queue(&mut self) -> usize {
        let mut kept: Vec<Pending> = self.queues.iter_mut().flat_map(|q| q.drain(..)).collect();
        kept.extend(self.awaiting.drain());
        for t in &kept {
            kept_for_next_start(t);
        }
        if let Some(j) = self.journal.as_ref() {
            log::info!(
                "{} queued task(s) kept in task store {} for the next start",
                kept.len(),
                j.path.display()
            );
        }
        kept.len()
    }

    /// The drain's deadline with a store: the tasks still running stay
    /// recorded as running and their runs go on, for their workers to hand
    /// the outcomes over (or claim the runs) after the next start; nothing
    /// is cancelled, and an attached client is told its task was kept.
    pub(super) fn keep_running(&mut self) {
        let late: Vec<Pending> = self
            .runs
            .values_mut()
            .filter_map(|r| r.task.take())
            .collect();
        for task in &late {
            kept_for_next_start(task);
        }
        if !late.is_empty() {
            log::info!(
                "drain deadline: {} running task(s) left running on their workers, kept in \
                 task store {} for the next start",
                late.len(),
                self.journal
                    .as_ref()
                    .map(|j| j.path.display().to_string())
                    .unwrap_or_default()
            );
        }
        if let Some(d) = self.shutdown.as_mut() {
            d.past_deadline = true;
            d.report.kept_running = late.len();
        }
        self.check_drained();
    }

    /// Lets go of a task the store keeps for the next start (the manager
    /// stops): its record stays, and an attached client is told so.
    pub(super) fn keep_for_next_start(&mut self, task: Pending) {
        kept_for_next_start(&task);
    }

    /// A run a registering worker reports that belongs to a recovered task:
    /// the run as the manager tracks it.
    pub(super) fn attached_run(worker: WorkerId, slot: SlotIndex, mut task: Pending) -> Run {
        task.worker = Some(worker);
        Run {
            worker,
            slot,
            started: Instant::now(),
            task: Some(task),
        }
    }
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
    }
}
