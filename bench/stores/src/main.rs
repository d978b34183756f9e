//! Durable commits/s of three embedded stores under the write pattern of
//! Argon's `manager --persist`: every accepted task is stored under its id
//! (a u64) as a ~120-byte blob, and deleted again once its outcome is
//! collected. Writes arrive in groups; each group is one transaction with one
//! durable commit, as a group-committing writer thread does it.
//!
//! One run of a store at group size G: COMMITS commits, commit i inserting G
//! new records and deleting the G records inserted LAG commits before (their
//! outcomes), then LAG delete-only commits so that the store ends empty. Every
//! record is thus inserted once and deleted once, each in a durable commit.
//!
//! ```text
//! cargo run --release -- [--dir DIR] [--commits N] [--runs R] [--groups 1,16,128] [--stores redb,fjall,sqlite,file]
//! ```
//!
//! `file` is no store but the floor under all of them: each commit's bytes
//! appended to one file and fdatasync'd.
//!
//! Prints one line per store and group size: the median of R runs of durable
//! commits/s and of records/s (records taken through accept and outcome),
//! and every run's figure. Each run uses a fresh folder under DIR (default:
//! the current folder), removed afterwards.

use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bytes per stored record, about one MessagePack-encoded accepted task.
const RECORD_BYTES: usize = 120;
/// A record's outcome is collected this many commits after its accept.
const LAG: u64 = 4;

/// One embedded store, opened on a fresh folder.
trait Store {
    /// Inserts `adds` and deletes `dels` in one transaction, durable on return.
    fn commit(&mut self, adds: &[(u64, Vec<u8>)], dels: &[u64]);
    /// How many records the store holds (checked after a run: must be 0).
    fn count(&mut self) -> u64;
}

struct Redb {
    db: redb::Database,
}

const TASKS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("tasks");

impl Redb {
    fn open(dir: &Path) -> Self {
        let db = redb::Database::create(dir.join("argon.redb")).expect("redb: create");
        Redb { db }
    }
}

impl Store for Redb {
    fn commit(&mut self, adds: &[(u64, Vec<u8>)], dels: &[u64]) {
        let mut tx = self.db.begin_write().expect("redb: begin");
        tx.set_durability(redb::Durability::Immediate);
        {
            let mut t = tx.open_table(TASKS).expect("redb: table");
            for (k, v) in adds {
                t.insert(*k, v.as_slice()).expect("redb: insert");
            }
            for k in dels {
                t.remove(*k).expect("redb: remove");
            }
        }
        tx.commit().expect("redb: commit");
    }
    fn count(&mut self) -> u64 {
        use redb::ReadableTableMetadata;
        let tx = self.db.begin_read().expect("redb: read");
        match tx.open_table(TASKS) {
            Ok(t) => t.len().expect("redb: len"),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => panic!("redb: {e}"),
        }
    }
}

struct Fjall {
    keyspace: fjall::Keyspace,
    tasks: fjall::PartitionHandle,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let keyspace = fjall::Config::new(dir.join("fjall"))
            .open()
            .expect("fjall: open");
        let tasks = keyspace
            .open_partition("tasks", fjall::PartitionCreateOptions::default())
            .expect("fjall: partition");
        Fjall { keyspace, tasks }
    }
}

impl Store for Fjall {
    fn commit(&mut self, adds: &[(u64, Vec<u8>)], dels: &[u64]) {
        // fsync of the journal before commit() returns.
        let mut b = self
            .keyspace
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        for (k, v) in adds {
            b.insert(&self.tasks, k.to_be_bytes(), v.as_slice());
        }
        for k in dels {
            b.remove(&self.tasks, k.to_be_bytes());
        }
        b.commit().expect("fjall: commit");
    }
    fn count(&mut self) -> u64 {
        self.tasks.len().expect("fjall: len") as u64
    }
}

struct Sqlite {
    conn: rusqlite::Connection,
}

impl Sqlite {
    fn open(dir: &Path) -> Self {
        let conn = rusqlite::Connection::open(dir.join("argon.sqlite")).expect("sqlite: open");
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .expect("sqlite: wal");
        assert_eq!(mode, "wal");
        conn.execute_batch(
            "PRAGMA synchronous=FULL;
             CREATE TABLE tasks (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        )
        .expect("sqlite: schema");
        Sqlite { conn }
    }
}

impl Store for Sqlite {
    fn commit(&mut self, adds: &[(u64, Vec<u8>)], dels: &[u64]) {
        let tx = self.conn.transaction().expect("sqlite: begin");
        {
            let mut ins = tx
                .prepare_cached("INSERT INTO tasks (id, body) VALUES (?1, ?2)")
                .expect("sqlite: prepare");
            for (k, v) in adds {
                ins.execute(rusqlite::params![*k as i64, v])
                    .expect("sqlite: insert");
            }
            let mut del = tx
                .prepare_cached("DELETE FROM tasks WHERE id = ?1")
                .expect("sqlite: prepare");
            for k in dels {
                del.execute([*k as i64]).expect("sqlite: delete");
            }
        }
        tx.commit().expect("sqlite: commit");
    }
    fn count(&mut self) -> u64 {
        self.conn
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get::<_, i64>(0))
            .expect("sqlite: count") as u64
    }
}

/// Not a store: appends each commit's records (and 8 bytes per deleted
/// id) to one file and calls fdatasync, the floor every store above sits on.
struct File {
    file: std::fs::File,
}

impl File {
    fn open(dir: &Path) -> Self {
        let file = std::fs::File::create(dir.join("append.log")).expect("file: create");
        File { file }
    }
}

impl Store for File {
    fn commit(&mut self, adds: &[(u64, Vec<u8>)], dels: &[u64]) {
        use std::io::Write;
        let mut buf = Vec::with_capacity(adds.len() * (RECORD_BYTES + 8) + dels.len() * 8);
        for (k, v) in adds {
            buf.extend_from_slice(&k.to_be_bytes());
            buf.extend_from_slice(v);
        }
        for k in dels {
            buf.extend_from_slice(&k.to_be_bytes());
        }
        self.file.write_all(&buf).expect("file: write");
        self.file.sync_data().expect("file: fdatasync");
    }
    fn count(&mut self) -> u64 {
        0
    }
}

/// A record body of RECORD_BYTES bytes that differs per id (so that no store
/// gains from identical values), shaped like a MessagePack map header
/// followed by fields.
fn record(id: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(RECORD_BYTES);
    v.push(0x86);
    v.extend_from_slice(&id.to_be_bytes());
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < RECORD_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(if x.is_multiple_of(3) {
            b'a' + (x % 26) as u8
        } else {
            (x >> 8) as u8
        });
    }
    v
}

#[derive(Clone)]
struct RunResult {
    commits_per_s: f64,
    records_per_s: f64,
}

fn run(store: &str, dir: &Path, group: u64, commits: u64) -> RunResult {
    let mut s: Box<dyn Store> = match store {
        "redb" => Box::new(Redb::open(dir)),
        "fjall" => Box::new(Fjall::open(dir)),
        "sqlite" => Box::new(Sqlite::open(dir)),
        "file" => Box::new(File::open(dir)),
        other => panic!("unknown store {other}"),
    };
    let ids = |c: u64| (c * group..(c + 1) * group).collect::<Vec<u64>>();
    let bodies: Vec<Vec<(u64, Vec<u8>)>> = (0..commits)
        .map(|c| ids(c).into_iter().map(|k| (k, record(k))).collect())
        .collect();
    let start = Instant::now();
    for c in 0..commits + LAG {
        let adds: &[(u64, Vec<u8>)] = bodies.get(c as usize).map_or(&[], |b| b.as_slice());
        let dels = if c >= LAG { ids(c - LAG) } else { Vec::new() };
        s.commit(adds, &dels);
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(s.count(), 0, "{store}: records left after the run");
    RunResult {
        commits_per_s: (commits + LAG) as f64 / secs,
        records_per_s: (commits * group) as f64 / secs,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    xs[(xs.len() - 1) / 2]
}

fn arg_after(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = PathBuf::from(arg_after(&args, "--dir").unwrap_or_else(|| ".".into()));
    let commits: u64 =
        arg_after(&args, "--commits").map_or(200, |s| s.parse().expect("--commits N"));
    let runs: usize = arg_after(&args, "--runs").map_or(3, |s| s.parse().expect("--runs R"));
    let groups: Vec<u64> = arg_after(&args, "--groups")
        .unwrap_or_else(|| "1,16,128".into())
        .split(',')
        .map(|s| s.parse().expect("--groups 1,16,128"))
        .collect();
    let stores: Vec<String> = arg_after(&args, "--stores")
        .unwrap_or_else(|| "redb,fjall,sqlite,file".into())
        .split(',')
        .map(String::from)
        .collect();
    println!(
        "# {commits} commits per run (+{LAG} delete-only), {RECORD_BYTES}-byte records, \
         median of {runs} runs, folder {}",
        base.display()
    );
    // Runs of one store are spread over the whole measurement (run r of every
    // store and group, then run r + 1), and the order of the stores turns
    // from one run to the next: the disk's fsync latency drifts with what
    // else the machine writes, and this spreads the drift over all of them.
    let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); groups.len() * stores.len()];
    for r in 0..runs {
        for (gi, group) in groups.iter().enumerate() {
            for k in 0..stores.len() {
                let si = (k + r) % stores.len();
                let store = &stores[si];
                let dir = base.join(format!(
                    "store-bench-{store}-{group}-{r}-{}",
                    std::process::id()
                ));
                std::fs::create_dir_all(&dir).expect("create run folder");
                let res = run(store, &dir, *group, commits);
                std::fs::remove_dir_all(&dir).expect("remove run folder");
                results[gi * stores.len() + si].push(res);
            }
        }
    }
    println!(
        "{:<7} {:>6} {:>12} {:>12}   runs (records/s)",
        "store", "group", "commits/s", "records/s"
    );
    for (gi, group) in groups.iter().enumerate() {
        for (si, store) in stores.iter().enumerate() {
            let rs = &results[gi * stores.len() + si];
            let all: Vec<String> = rs
                .iter()
                .map(|x| format!("{:.0}", x.records_per_s))
                .collect();
            println!(
                "{:<7} {:>6} {:>12.0} {:>12.0}   {}",
                store,
                group,
                median(rs.iter().map(|x| x.commits_per_s).collect()),
                median(rs.iter().map(|x| x.records_per_s).collect()),
                all.join(" ")
            );
        }
    }
}
