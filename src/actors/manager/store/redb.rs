//! The task store in a redb file, `DIR/argon.redb` (`--persist DIR`).
//!
//! Six tables: accepted tasks without an outcome, the starts of those
//! that run, kept outcomes, the dead list, the last run of each periodic
//! task, and the id high-water mark. An answered task's
//! record is deleted with its outcome (kept only for detached tasks); a
//! kept outcome's record is deleted when the result store lets it go. So
//! the file holds at most the queue bound + the running tasks + the kept
//! results.
//!
//! Writes happen on one writer thread, never on the manager's: it takes
//! everything waiting (up to [`MAX_BATCH`] records), writes it in one write
//! transaction with immediate durability (one fsync), and acknowledges it.
//! Opening fails on a file another process holds, on a file that is not a
//! store, and on any record that cannot be read: nothing is discarded.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::Serialize;

use super::{
    CommitSink, Committed, DeadRecord, Record, Recovered, ResultRecord, StartRecord, StoreError,
    StoreFailed, TaskRecord, TaskStore,
};

/// File name of the store inside the `--persist` folder.
pub const STORE_FILE: &str = "argon.redb";

/// Most records written in one transaction.
pub const MAX_BATCH: usize = 16_384;

const TASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks");
const STARTS: TableDefinition<u64, &[u8]> = TableDefinition::new("starts");
const RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("results");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
const FIRED: TableDefinition<&str, u64> = TableDefinition::new("fired");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_ID: &str = "next_id";

/// An error's text on one line.
fn line(e: impl std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}

/// The redb store. See the module docs.
pub struct RedbStore {
    path: PathBuf,
    /// Until started: the database, read but not yet written.
    db: Option<Database>,
    recovered: Recovered,
    repaired: bool,
    tx: Option<mpsc::Sender<Record>>,
    /// The writer thread; joined by [`TaskStore::close`].
    writer: Option<std::thread::JoinHandle<()>>,
}

impl RedbStore {
    /// Opens (or creates) the store in folder `dir` and reads it whole.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
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
            txn.open_table(DEAD).map_err(line)?;
            txn.open_table(FIRED).map_err(line)?;
            txn.open_table(META).map_err(line)?;
            txn.commit().map_err(line)
        })()
        .map_err(|e| err(format!("cannot prepare: {e}")))?;
        let recovered = read(&db).map_err(err)?;
        Ok(RedbStore {
            path,
            db: Some(db),
            recovered,
            repaired,
            tx: None,
            writer: None,
        })
    }

    /// Tasks it held that have no outcome yet (before they are taken).
    pub fn task_count(&self) -> usize {
        self.recovered.tasks.len()
    }

    /// Outcomes it held (before they are taken).
    pub fn result_count(&self) -> usize {
        self.recovered.results.len()
    }
}

fn read(db: &Database) -> Result<Recovered, String> {
    let mut out = Recovered::default();
    let txn = db.begin_read().map_err(line)?;
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
        let start = match starts.get(id).map_err(line)? {
            Some(s) => Some(
                rmp_serde::from_slice::<StartRecord>(s.value()).map_err(|e| {
                    format!("start record of task {id} cannot be read: {}", line(e))
                })?,
            ),
            None => None,
        };
        seen(id);
        if let Some(s) = &start {
            seen(s.run);
        }
        out.tasks.push((id, record, start));
    }
    let results = txn.open_table(RESULTS).map_err(line)?;
    for entry in results.iter().map_err(line)? {
        let (k, v) = entry.map_err(line)?;
        let id = k.value();
        let record: ResultRecord = rmp_serde::from_slice(v.value())
            .map_err(|e| format!("result of task {id} cannot be read: {}", line(e)))?;
        seen(id);
        out.results.push((id, record));
    }
    let dead = txn.open_table(DEAD).map_err(line)?;
    for entry in dead.iter().map_err(line)? {
        let (k, v) = entry.map_err(line)?;
        let id = k.value();
        let record: DeadRecord = rmp_serde::from_slice(v.value())
            .map_err(|e| format!("dead-list entry of task {id} cannot be read: {}", line(e)))?;
        seen(id);
        out.dead.push((id, record));
    }
    let fired = txn.open_table(FIRED).map_err(line)?;
    for entry in fired.iter().map_err(line)? {
        let (k, v) = entry.map_err(line)?;
        out.fired.push((k.value().to_string(), v.value()));
    }
    out.high_id = high;
    Ok(out)
}

impl TaskStore for RedbStore {
    fn durable(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("task store {}", self.path.display())
    }

    fn take_recovered(&mut self) -> Recovered {
        std::mem::take(&mut self.recovered)
    }

    fn was_repaired(&self) -> bool {
        self.repaired
    }

    fn start(&mut self, sink: CommitSink) -> Result<(), StoreError> {
        let Some(db) = self.db.take() else {
            return Ok(());
        };
        let (tx, rx) = mpsc::channel();
        let high = self.recovered.high_id.unwrap_or(0);
        let handle = std::thread::Builder::new()
            .name("argon-store".into())
            .spawn(move || writer(db, rx, sink, high))
            .map_err(|e| StoreError {
                path: self.path.clone(),
                what: format!("cannot start the writer thread: {e}"),
            })?;
        self.tx = Some(tx);
        self.writer = Some(handle);
        Ok(())
    }

    fn record(&mut self, record: Record) -> Result<(), StoreError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(record).is_ok());
        if sent {
            return Ok(());
        }
        Err(StoreError {
            path: self.path.clone(),
            what: "the writer thread is gone".into(),
        })
    }

    fn close(&mut self) {
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                log::error!("the task store's writer thread panicked");
            }
        }
    }
}

fn write_batch(db: &Database, records: &[Record], high: &mut u64) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(line)?;
    txn.set_durability(Durability::Immediate);
    {
        let mut tasks = txn.open_table(TASKS).map_err(line)?;
        let mut starts = txn.open_table(STARTS).map_err(line)?;
        let mut results = txn.open_table(RESULTS).map_err(line)?;
        let mut dead = txn.open_table(DEAD).map_err(line)?;
        let mut fired = txn.open_table(FIRED).map_err(line)?;
        let mut meta = txn.open_table(META).map_err(line)?;
        for record in records {
            match record {
                Record::Accept(id, r) => {
                    *high = (*high).max(*id);
                    tasks.insert(*id, encode(r)?.as_slice()).map_err(line)?;
                }
                Record::Start(id, s) => {
                    *high = (*high).max(s.run);
                    starts.insert(*id, encode(s)?.as_slice()).map_err(line)?;
                }
                Record::Retry(id, r) => {
                    tasks.insert(*id, encode(r)?.as_slice()).map_err(line)?;
                    starts.remove(*id).map_err(line)?;
                }
                Record::Finish(id, kept) => {
                    tasks.remove(*id).map_err(line)?;
                    starts.remove(*id).map_err(line)?;
                    if let Some(r) = kept {
                        results.insert(*id, encode(r)?.as_slice()).map_err(line)?;
                    }
                }
                Record::Forget(id) => {
                    results.remove(*id).map_err(line)?;
                }
                Record::Dead(id, r) => {
                    dead.insert(*id, encode(r)?.as_slice()).map_err(line)?;
                }
                Record::Unlist(id) => {
                    dead.remove(*id).map_err(line)?;
                }
                Record::Fired(name, at) => {
                    fired.insert(name.as_str(), *at).map_err(line)?;
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

fn writer(db: Database, rx: mpsc::Receiver<Record>, sink: CommitSink, mut high: u64) {
    let mut done = 0u64;
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // Once the manager is gone, what it sent is still written, until
        // the channel is empty and closed.
        match write_batch(&db, &batch, &mut high) {
            Ok(()) => {
                done += batch.len() as u64;
                batch.clear();
                sink.committed.do_send(Committed { upto: done });
            }
            Err(e) => {
                if sink.failed.connected() {
                    sink.failed.do_send(StoreFailed(e));
                } else {
                    log::error!("task store write failed after the manager stopped: {e}");
                }
                return;
            }
        }
    }
}
