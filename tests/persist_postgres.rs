//! The PostgreSQL task store against a real, throwaway PostgreSQL
//! (`common::postgres`): records written read back equal after a reopen,
//! the schema is versioned and a newer one refused, one manager per
//! database, an unreadable record is an error; and the `argon manager`
//! side of it: exit 78 with one line (password masked) for a store that
//! cannot be opened, the password from `PGPASSFILE`, exit 1 when the
//! database goes away under a running manager.
//!
//! Without PostgreSQL installed the tests that need it skip, saying so,
//! unless `ARGON_REQUIRE_POSTGRES=1`.

#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use actix::prelude::*;
use argon::actors::manager::store::postgres::SCHEMA_VERSION;
use argon::actors::manager::store::{
    CommitSink, Committed, DeadRecord, Record, Recovered, ResultRecord, StartRecord, StoreFailed,
    StoredOutcome, TaskRecord,
};
use argon::actors::manager::{PgStore, TaskStore};
use argon::protocol::{DeadTask, Priority, Value};
use common::postgres::Postgres;
use common::{argon, TempDir};
use tokio::sync::mpsc;

/// Longest wait for a commit.
const COMMIT: Duration = Duration::from_secs(30);

/// Collects a store's acknowledgements.
struct Acks(mpsc::UnboundedSender<Result<u64, String>>);

impl Actor for Acks {
    type Context = Context<Self>;
}

impl Handler<Committed> for Acks {
    type Result = ();
    fn handle(&mut self, m: Committed, _: &mut Context<Self>) {
        let _ = self.0.send(Ok(m.upto));
    }
}

impl Handler<StoreFailed> for Acks {
    type Result = ();
    fn handle(&mut self, m: StoreFailed, _: &mut Context<Self>) {
        let _ = self.0.send(Err(m.0));
    }
}

fn task(n: u32) -> TaskRecord {
    TaskRecord {
        name: format!("task-{n}"),
        args: Value::from(n),
        priority: Priority::High,
        timeout_ms: Some(u64::from(n) * 10),
        attempts: 2,
        detached: n % 2 == 0,
        retries: 3,
        retried: 0,
        attempt_base: 0,
        due_ms: None,
        unique_key: None,
        unique_for_ms: 0,
    }
}

fn dead(id: u64) -> DeadRecord {
    DeadRecord {
        entry: DeadTask {
            task_id: id,
            task: "t".into(),
            args: Value::Nil,
            args_truncated: false,
            retries: 1,
            error: format!("boom {id}"),
            failed_at_ms: 1,
        },
        task: Some(task(id as u32)),
    }
}

/// Writes `records` through a started store and waits until all are
/// committed; then closes it.
fn write_all(mut store: PgStore, records: Vec<Record>) {
    let n = records.len() as u64;
    std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let acks = Acks(tx).start();
            store
                .start(CommitSink {
                    committed: acks.clone().recipient(),
                    failed: acks.recipient(),
                })
                .expect("store starts");
            for r in records {
                store.record(r).expect("record queued");
            }
            loop {
                match tokio::time::timeout(COMMIT, rx.recv()).await {
                    Ok(Some(Ok(upto))) if upto >= n => break,
                    Ok(Some(Ok(_))) => {}
                    other => panic!("no commit of {n} records: {other:?}"),
                }
            }
            store.close();
        })
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// What a store read, in a form that compares: (tasks, results, high id).
fn shown(r: &Recovered) -> (Vec<String>, Vec<String>, Option<u64>) {
    let mut tasks: Vec<String> = r.tasks.iter().map(|t| format!("{t:?}")).collect();
    let mut results: Vec<String> = r.results.iter().map(|t| format!("{t:?}")).collect();
    tasks.sort();
    results.sort();
    (tasks, results, r.high_id)
}

#[test]
fn records_written_read_back_equal_after_a_reopen() {
    let Some(pg) = Postgres::start("records_written_read_back_equal_after_a_reopen") else {
        return;
    };
    let url = pg.url("argon");
    let mut store = PgStore::open(&url).expect("a new store opens");
    assert!(!store.was_repaired());
    assert_eq!(shown(&store.take_recovered()), (vec![], vec![], Some(0)));
    let start = |run| StartRecord {
        run,
        started_times: 1,
    };
    let kept = |v: i64| ResultRecord {
        finished_ms: 1_700_000_000_000,
        outcome: StoredOutcome::Done(Value::from(v)),
        unique: None,
    };
    let mut records = Vec::new();
    for id in 1..=6 {
        records.push(Record::Accept(id, task(id as u32)));
    }
    records.extend([
        Record::Start(1, start(101)),
        Record::Start(2, start(102)),
        Record::Retry(
            2,
            TaskRecord {
                retried: 1,
                attempt_base: 1,
                ..task(2)
            },
        ),
        Record::Start(3, start(103)),
        Record::Finish(3, Some(kept(3))),
        Record::Finish(4, None),
        Record::Finish(
            5,
            Some(ResultRecord {
                finished_ms: 5,
                outcome: StoredOutcome::Failed("boom".into()),
                unique: None,
            }),
        ),
        Record::Forget(5),
        Record::Dead(8, dead(8)),
        Record::Dead(9, dead(9)),
        Record::Unlist(9),
        Record::Fired("tick".into(), 40),
        Record::Fired("tick".into(), 42),
    ]);
    write_all(store, records);

    // A second group, after the first was committed: the running task
    // finishes, a new one comes.
    let mut store = PgStore::open(&url).expect("reopens");
    assert!(!store.was_repaired(), "it was closed cleanly");
    let first = store.take_recovered();
    let dead_ids: Vec<u64> = first.dead.iter().map(|(id, _)| *id).collect();
    assert_eq!(dead_ids, [8], "the dead list, its unlisted entry gone");
    assert_eq!(first.dead[0].1.entry.error, "boom 8");
    assert_eq!(
        first.fired,
        [("tick".to_string(), 42)],
        "the last run of each name"
    );
    write_all(
        store,
        vec![Record::Finish(1, Some(kept(1))), Record::Accept(7, task(7))],
    );

    let mut expected = Recovered {
        tasks: vec![
            (
                2,
                TaskRecord {
                    retried: 1,
                    attempt_base: 1,
                    ..task(2)
                },
                None,
            ),
            (6, task(6), None),
            (7, task(7), None),
        ],
        results: vec![(1, kept(1)), (3, kept(3))],
        high_id: Some(103),
        ..Recovered::default()
    };
    let mut store = PgStore::open(&url).expect("reopens");
    assert_eq!(shown(&store.take_recovered()), shown(&expected));

    expected.tasks = vec![
        (1, task(1), Some(start(101))),
        (
            2,
            TaskRecord {
                retried: 1,
                attempt_base: 1,
                ..task(2)
            },
            None,
        ),
        (6, task(6), None),
    ];
    expected.results = vec![(3, kept(3))];
    assert_eq!(
        shown(&first),
        shown(&expected),
        "the first reopen saw the first group exactly"
    );
    assert_eq!(
        pg.psql("argon", "SELECT count(*) FROM argon_tasks"),
        Ok("3".into())
    );
}

#[test]
fn the_schema_is_versioned_and_a_newer_one_is_refused() {
    let Some(pg) = Postgres::start("the_schema_is_versioned_and_a_newer_one_is_refused") else {
        return;
    };
    let url = pg.url("argon");
    drop(PgStore::open(&url).expect("a new store opens"));
    assert_eq!(
        pg.psql(
            "argon",
            "SELECT value FROM argon_meta WHERE key = 'schema_version'"
        ),
        Ok(SCHEMA_VERSION.to_string())
    );
    drop(PgStore::open(&url).expect("its own schema opens again"));

    pg.psql(
        "argon",
        "UPDATE argon_meta SET value = 99 WHERE key = 'schema_version'",
    )
    .unwrap();
    let err = PgStore::open(&url)
        .err()
        .expect("a newer schema is refused");
    assert!(err.what.contains("schema version 99 is newer"), "{err}");

    // The binary: exit 78, one line, no password.
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let out = argon(["manager", "--host", "127.0.0.1", "--port", "0", "--key"])
        .arg(&key)
        .arg("--persist")
        .arg(&url)
        .run();
    assert_eq!(out.code, Some(78), "{out}");
    let line = out.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "one line: {out}");
    assert!(line.contains("schema version 99 is newer"), "{out}");
    assert!(line.contains("argon:***@127.0.0.1"), "masked: {out}");
    assert!(!line.contains(common::postgres::PASSWORD), "{out}");
    assert!(out.stdout.is_empty(), "it never listened: {out}");
}

#[test]
fn an_unreadable_record_is_an_error() {
    let Some(pg) = Postgres::start("an_unreadable_record_is_an_error") else {
        return;
    };
    let url = pg.url("argon");
    drop(PgStore::open(&url).expect("opens"));
    pg.psql(
        "argon",
        "INSERT INTO argon_tasks (id, record) VALUES (42, '\\x00ff')",
    )
    .unwrap();
    let err = PgStore::open(&url)
        .err()
        .expect("a broken record is refused");
    assert!(
        err.what.contains("record of task 42 cannot be read"),
        "{err}"
    );
}

/// A store of schema version 1 (before the lease row) with one task.
const SCHEMA_V1: &str = "
    CREATE TABLE argon_meta (key text PRIMARY KEY, value bigint NOT NULL);
    CREATE TABLE argon_tasks (id bigint PRIMARY KEY, record bytea NOT NULL);
    CREATE TABLE argon_starts (id bigint PRIMARY KEY, record bytea NOT NULL);
    CREATE TABLE argon_results (id bigint PRIMARY KEY, record bytea NOT NULL);
    INSERT INTO argon_meta VALUES ('schema_version', 1), ('next_id', 9), ('open', 0);";

#[test]
fn a_version_1_store_is_migrated_and_keeps_its_tasks() {
    let Some(pg) = Postgres::start("a_version_1_store_is_migrated_and_keeps_its_tasks") else {
        return;
    };
    pg.psql("argon", SCHEMA_V1).unwrap();
    let record = rmp_serde::to_vec(&task(5)).unwrap();
    let hex: String = record.iter().map(|b| format!("{b:02x}")).collect();
    pg.psql(
        "argon",
        &format!("INSERT INTO argon_tasks VALUES (5, '\\x{hex}')"),
    )
    .unwrap();
    let mut store = PgStore::open(&pg.url("argon")).expect("a version 1 store opens");
    let r = store.take_recovered();
    assert_eq!(r.tasks.len(), 1, "{r:?}");
    assert_eq!(format!("{:?}", r.tasks[0].1), format!("{:?}", task(5)));
    assert_eq!(r.high_id, Some(9));
    drop(store);
    assert_eq!(
        pg.psql(
            "argon",
            "SELECT value FROM argon_meta WHERE key = 'schema_version'"
        ),
        Ok(SCHEMA_VERSION.to_string())
    );
    assert_eq!(
        pg.psql("argon", "SELECT epoch FROM argon_leader"),
        Ok("1".into()),
        "the migrated store has its lease row"
    );
    assert_eq!(
        pg.psql("argon", "SELECT count(*) FROM argon_dead, argon_fired"),
        Ok("0".into()),
        "the migrated store has the version 3 tables"
    );
}

/// Starts `store` in an actix system on its own thread, sends `record`
/// after `before` ran, and returns what the store acknowledged.
fn record_after(
    mut store: PgStore,
    before: impl FnOnce() + Send,
    record: Record,
) -> Result<u64, String> {
    std::thread::scope(|s| {
        s.spawn(move || {
            actix::System::new().block_on(async move {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let acks = Acks(tx).start();
                store
                    .start(CommitSink {
                        committed: acks.clone().recipient(),
                        failed: acks.recipient(),
                    })
                    .expect("store starts");
                before();
                store.record(record).expect("record queued");
                let got = tokio::time::timeout(COMMIT, rx.recv())
                    .await
                    .expect("an answer within the bound")
                    .expect("the sink is alive");
                store.close();
                got
            })
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

#[test]
fn a_deposed_leaders_commit_fails() {
    let Some(pg) = Postgres::start("a_deposed_leaders_commit_fails") else {
        return;
    };
    let url = pg.url("argon");
    let store = PgStore::open(&url).expect("opens");
    assert_eq!(
        record_after(store, || {}, Record::Accept(1, task(1))),
        Ok(1),
        "the leader commits"
    );
    let store = PgStore::open(&url).expect("reopens, leading again");
    // What a standby's election does: the epoch is raised.
    let takeover = || {
        pg.psql("argon", "UPDATE argon_leader SET epoch = epoch + 1")
            .expect("the epoch is raised");
    };
    let got = record_after(store, takeover, Record::Accept(2, task(2)));
    let err = got.expect_err("a deposed leader's commit fails");
    assert!(err.contains("deposed"), "{err}");
    let mut store = PgStore::open(&url).expect("opens");
    let ids: Vec<u64> = store.take_recovered().tasks.iter().map(|t| t.0).collect();
    assert_eq!(ids, vec![1], "the fenced record was not written");
}

#[test]
fn the_password_comes_from_pgpassfile_and_is_never_printed() {
    let Some(pg) = Postgres::start("the_password_comes_from_pgpassfile_and_is_never_printed")
    else {
        return;
    };
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let manager = |url: &str| {
        argon(["manager", "--host", "127.0.0.1", "--port", "0", "--key"])
            .arg(&key)
            .arg("--persist")
            .arg(url)
            .env("PGPASSFILE", dir.join("none"))
    };
    let bare = pg.url_without_password("argon");
    let out = manager(&bare).run();
    assert_eq!(out.code, Some(78), "no password: {out}");
    assert!(out.stderr.contains("password"), "{out}");

    let wrong = format!("postgres://argon:not-the-pw@127.0.0.1:{}/argon", pg.port());
    let out = manager(&wrong).run();
    assert_eq!(out.code, Some(78), "a wrong password: {out}");
    assert!(!out.stderr.contains("not-the-pw"), "{out}");
    assert!(out.stderr.contains("argon:***@"), "{out}");
    assert!(out.stderr.contains("authentication"), "{out}");

    let (var, file) = pg.passfile();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(["manager", "--host", "127.0.0.1", "--port", "0", "--key"])
        .arg(&key)
        .arg("--persist")
        .arg(&bare)
        .env(var, &file)
        .env_remove("ARGON_KEY");
    let proc = common::Proc::spawn(cmd);
    let line = proc.next_line(common::STARTUP);
    assert!(
        line.as_deref().and_then(common::parse_listening).is_some(),
        "the password file's password opens it: {line:?}\n{}",
        proc.stderr()
    );
}

#[test]
fn a_store_that_cannot_be_reached_or_needs_tls_is_exit_78_with_one_line() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    for (url, says) in [
        (
            format!("postgres://argon:secret@127.0.0.1:{port}/argon"),
            "cannot connect",
        ),
        (
            format!("postgresql://argon:secret@127.0.0.1:{port}/argon?sslmode=require"),
            "sslmode=require",
        ),
        (
            format!("postgres://argon:secret@127.0.0.1:{port}/argon?sslmode=verify-full"),
            "not a usable PostgreSQL URL",
        ),
    ] {
        let out = argon(["manager", "--host", "127.0.0.1", "--port", "0", "--key"])
            .arg(&key)
            .arg("--persist")
            .arg(&url)
            .run();
        assert_eq!(out.code, Some(78), "{url}: {out}");
        let line = out.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "one line: {out}");
        assert!(line.starts_with("argon: task store postgres"), "{out}");
        assert!(line.contains(says), "{url}: {out}");
        assert!(!line.contains("secret"), "the password is masked: {out}");
    }
}

#[test]
fn a_database_that_goes_away_stops_the_manager_with_exit_1() {
    let Some(pg) = Postgres::start("a_database_that_goes_away_stops_the_manager_with_exit_1")
    else {
        return;
    };
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = dir.write(
        "m.toml",
        &format!("[manager]\npersist = \"{}\"\n", pg.url("argon")),
    );
    let opts = common::ManagerOpts {
        config: Some(cfg),
        ..Default::default()
    };
    let mut mgr = common::Manager::start_with(&key, opts);
    let _worker = mgr.add_worker(1, 1);
    let out = mgr.submit(["--detach", "echo", "1"]).run();
    assert_eq!(out.code, Some(0), "{out}");

    drop(pg);
    let out = mgr.submit(["--detach", "echo", "2"]).run();
    assert_ne!(
        out.code,
        Some(0),
        "nothing is accepted without its commit: {out}"
    );
    let status = mgr.proc.wait_within(common::COMMAND);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "{}",
        mgr.proc.stderr()
    );
    assert!(
        mgr.proc.stderr().contains("task store"),
        "it says why: {}",
        mgr.proc.stderr()
    );
}

/// `argon manager` on `cfg`, without waiting for it to listen (a standby
/// does not until it leads).
fn manager_proc(key: &std::path::Path, cfg: &std::path::Path) -> common::Proc {
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(["manager", "--host", "127.0.0.1", "--port", "0", "--key"])
        .arg(key)
        .arg("--config")
        .arg(cfg)
        .env_remove("ARGON_KEY")
        .env_remove("ARGON_MGR");
    common::Proc::spawn(cmd)
}

/// Waits for `proc`'s listening line: it leads now.
fn leading(proc: common::Proc, key: &std::path::Path, limit: Duration) -> common::Manager {
    let line = proc.next_line(limit);
    let Some(addr) = line.as_deref().and_then(common::parse_listening) else {
        panic!(
            "no listening line within {limit:?}: {line:?}\n{}",
            proc.stderr()
        );
    };
    common::Manager {
        proc,
        addr,
        key: key.to_path_buf(),
    }
}

fn leader_config(dir: &TempDir, pg: &Postgres, lease: &str) -> std::path::PathBuf {
    dir.write(
        "m.toml",
        &format!(
            "[manager]\npersist = \"{}\"\nlease = \"{lease}\"\nrecovery_grace = \"1s\"\n",
            pg.url("argon")
        ),
    )
}

/// With a lease far longer than the test's bound, the standby can only take
/// over because the killed leader's database session is gone.
#[test]
fn a_standby_takes_over_a_killed_leaders_tasks() {
    let Some(pg) = Postgres::start("a_standby_takes_over_a_killed_leaders_tasks") else {
        return;
    };
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = leader_config(&dir, &pg, "10m");
    let mut a = leading(manager_proc(&key, &cfg), &key, common::STARTUP);
    let b = manager_proc(&key, &cfg);
    assert!(
        b.wait_stderr("standby", common::STARTUP),
        "the second manager waits as a standby\n{}",
        b.stderr()
    );
    // A frozen worker: one task is running on it, the rest queued.
    let mut frozen = a.add_worker(1, 1);
    frozen.proc.signal(libc::SIGSTOP);
    let mut ids = Vec::new();
    for i in 0..4 {
        let out = a.submit(["--detach", "echo", &i.to_string()]).run();
        assert_eq!(out.code, Some(0), "{out}");
        ids.push((i, out.stdout.trim().to_string()));
    }
    assert!(
        !b.stdout().contains("listening"),
        "the standby does not listen while the leader lives"
    );

    a.proc.kill();
    drop(frozen);
    let began = std::time::Instant::now();
    let b = leading(b, &key, Duration::from_secs(60));
    eprintln!("the standby led {:?} after kill -9", began.elapsed());
    assert!(
        b.proc.stderr().contains("leading (epoch 2"),
        "{}",
        b.proc.stderr()
    );
    let _worker = b.add_worker(2, 1);
    for (i, id) in ids {
        let out = b
            .client_cmd("result", ["--wait", "--timeout", "30s", &id])
            .run();
        assert_eq!(out.code, Some(0), "task {id}: {out}");
        assert_eq!(out.stdout.trim(), i.to_string(), "task {id}: {out}");
    }
}

/// A leader frozen past its lease is replaced; woken, it finds its lease
/// lost and stops with exit 1 without writing.
#[test]
fn a_frozen_leader_is_replaced_and_stops_when_it_wakes() {
    let Some(pg) = Postgres::start("a_frozen_leader_is_replaced_and_stops_when_it_wakes") else {
        return;
    };
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = leader_config(&dir, &pg, "1s");
    let mut a = leading(manager_proc(&key, &cfg), &key, common::STARTUP);
    let b = manager_proc(&key, &cfg);
    assert!(b.wait_stderr("standby", common::STARTUP), "{}", b.stderr());

    a.proc.signal(libc::SIGSTOP);
    let b = leading(b, &key, Duration::from_secs(60));
    a.proc.signal(libc::SIGCONT);
    let status = a.proc.wait_within(common::COMMAND);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the deposed leader stops\n{}",
        a.proc.stderr()
    );
    let said = a.proc.stderr();
    assert!(
        said.contains("lease lost") || said.contains("deposed"),
        "it says why\n{said}"
    );

    let _worker = b.add_worker(1, 1);
    let out = b.submit(["echo", "7"]).run();
    assert_eq!(out.code, Some(0), "the new leader serves: {out}");
    assert_eq!(
        pg.psql("argon", "SELECT epoch FROM argon_leader"),
        Ok("2".into())
    );
}
