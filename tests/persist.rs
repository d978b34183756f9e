//! End-to-end crash tests of durable mode: a real manager with a task store
//! (`persist` in its config file, a path relative to the file), one worker,
//! thousands of detached tasks, `kill -9` in the middle, a restart on the
//! same port and store, and every accepted id collected with `result` wait.
//! The same without a store shows the documented loss; a corrupt store
//! stops the manager with exit 78.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::protocol::{HandshakeSettings, MasterKey, Value};
use common::{argon, Manager, ManagerOpts, TempDir, Worker, COMMAND};
use futures_util::future::join_all;

/// Tasks submitted in all.
const TASKS: i64 = 5_000;
/// Submits in flight at once.
const WINDOW: usize = 64;
/// Longest wait for one submit's acceptance: it waits for a commit, and an
/// fsync on a disk busy with other writes can take seconds.
const SUBMIT: Duration = Duration::from_secs(60);
/// Longest wait for all results after the restart.
const COLLECT: Duration = Duration::from_secs(120);

fn config(dir: &TempDir, persist: bool) -> PathBuf {
    config_with(dir, persist.then_some("store"))
}

/// A manager config with `persist` set to `store` (a folder or a URL).
fn config_with(dir: &TempDir, store: Option<&str>) -> PathBuf {
    let text = match store {
        Some(s) => format!("[manager]\npersist = \"{s}\"\nrecovery_grace = \"1s\"\n"),
        None => "[manager]\n".into(),
    };
    dir.write("manager.toml", &text)
}

fn start(key: &Path, config: &Path, port: Option<u16>) -> Manager {
    let opts = ManagerOpts {
        config: Some(config.to_path_buf()),
        queue_factor: Some(250),
        port,
        ..Default::default()
    };
    Manager::try_start_with(key, opts).unwrap_or_else(|e| panic!("{e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn connect(mgr: &Manager) -> Client {
    let key = MasterKey::load(&mgr.key).expect("key loads");
    let config = ClientConfig::new(mgr.addr.clone(), HandshakeSettings::new(key));
    Client::connect(config).await.expect("client connects")
}

fn opts() -> QueueOptions {
    QueueOptions {
        attempts: 3,
        retry: Some(true),
        ..Default::default()
    }
}

/// Submits tasks `from..to` (each echoes its number), `WINDOW` at a time;
/// returns (id, number) of those accepted, stopping at the first window
/// that met an error (the manager went away).
async fn submit_range(client: &Client, from: i64, to: i64) -> (Vec<(u64, i64)>, bool) {
    let mut accepted = Vec::new();
    let mut n = from;
    while n < to {
        let end = (n + WINDOW as i64).min(to);
        let asks = (n..end).map(|i| {
            let c = client.clone();
            async move {
                let opts = opts();
                let r =
                    tokio::time::timeout(SUBMIT, c.submit_detached("echo", Value::from(i), &opts))
                        .await;
                (i, r)
            }
        });
        let mut broke = false;
        for (i, r) in join_all(asks).await {
            match r {
                Ok(Ok(id)) => accepted.push((id, i)),
                Ok(Err(e)) => {
                    eprintln!("submit of {i}: {e}");
                    broke = true;
                }
                Err(_) => {
                    eprintln!("submit of {i}: no answer within {SUBMIT:?}");
                    broke = true;
                }
            }
        }
        if broke {
            return (accepted, true);
        }
        n = end;
    }
    (accepted, false)
}

/// `result` with wait for every id, 256 at a time, within [`COLLECT`].
async fn collect(
    client: &Client,
    ids: &[(u64, i64)],
) -> Vec<(u64, i64, Result<Value, ClientError>)> {
    let all = async {
        let mut out = Vec::new();
        for chunk in ids.chunks(256) {
            let asks = chunk.iter().map(|&(id, i)| {
                let c = client.clone();
                async move { (id, i, c.result(id, true).await) }
            });
            out.extend(join_all(asks).await);
        }
        out
    };
    tokio::time::timeout(COLLECT, all)
        .await
        .expect("every result within the bound")
}

#[test]
fn with_persist_every_accepted_task_has_one_outcome_after_kill_9() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = config(&dir, true);
    let mgr = start(&key, &cfg, None);
    assert!(
        dir.join("store").join("argon.redb").exists(),
        "the relative persist path is taken from the config file's folder"
    );
    every_accepted_task_has_one_outcome_after_kill_9(mgr, &key, &cfg);
}

/// The same with the store in PostgreSQL (`persist` a URL).
#[cfg(feature = "postgres")]
#[test]
fn with_postgres_every_accepted_task_has_one_outcome_after_kill_9() {
    let Some(pg) = common::postgres::Postgres::start(
        "with_postgres_every_accepted_task_has_one_outcome_after_kill_9",
    ) else {
        return;
    };
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = config_with(&dir, Some(&pg.url("argon")));
    let mgr = start(&key, &cfg, None);
    every_accepted_task_has_one_outcome_after_kill_9(mgr, &key, &cfg);
    let left = pg.psql("argon", "SELECT count(*) FROM argon_tasks");
    assert_eq!(left, Ok("0".into()), "every answered task's record is gone");
}

/// Detached tasks through `mgr` (with a store), `kill -9` with tasks in
/// flight, a restart on the same port and config, more tasks; then every
/// accepted id has its own right outcome.
fn every_accepted_task_has_one_outcome_after_kill_9(mut mgr: Manager, key: &Path, cfg: &Path) {
    let port = mgr.port();
    let mut worker = Worker::start(&mgr.addr, key, 4);
    mgr.wait_for_workers(1);
    let rt = runtime();
    let half = TASKS / 2;
    let w = WINDOW as i64;

    // The first half; then, with the worker frozen (SIGSTOP), two windows
    // that must wait in the queue; then two more windows in flight when the
    // manager is killed.
    let client = rt.block_on(connect(&mgr));
    let (mut accepted, broke) = rt.block_on(submit_range(&client, 0, half));
    assert!(!broke, "the first half is accepted\n{}", mgr.proc.stderr());
    // On a slow machine the first half can fill the queue (1,000 places):
    // let it drain, so the frozen worker's queue has room for what follows.
    mgr.wait_status("the first half to be done", |s| {
        s.queued == 0 && s.in_flight == 0
    });
    worker.proc.signal(libc::SIGSTOP);
    let (more, broke) = rt.block_on(submit_range(&client, half, half + 2 * w));
    assert!(
        !broke,
        "tasks are queued while the worker is frozen\n{}",
        mgr.proc.stderr()
    );
    accepted.extend(more);
    let in_flight = {
        let c = client.clone();
        rt.spawn(async move { submit_range(&c, half + 2 * w, half + 4 * w).await })
    };
    std::thread::sleep(Duration::from_millis(5));
    mgr.proc.kill();
    let (more, _) = rt.block_on(in_flight).expect("submit task");
    accepted.extend(more);
    drop(client);

    // The same port at once (SO_REUSEADDR), the same store.
    let mgr = start(key, cfg, Some(port));
    let status = mgr.status();
    // No worker is back yet: they wait for one beyond the (zero) bound.
    assert!(
        status.awaiting_provider >= w as u64,
        "the tasks queued at the crash wait for a worker again: {status:?}\n{}",
        mgr.proc.stderr()
    );
    // The worker comes back by itself.
    worker.proc.signal(libc::SIGCONT);
    mgr.wait_for_workers(1);
    let client = rt.block_on(connect(&mgr));
    let (more, broke) = rt.block_on(submit_range(&client, half + 4 * w, TASKS));
    assert!(!broke, "the second half is accepted\n{}", mgr.proc.stderr());
    accepted.extend(more);

    let ids: HashSet<u64> = accepted.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), accepted.len(), "an id was handed out twice");
    assert!(accepted.len() as i64 >= TASKS - 2 * WINDOW as i64);
    assert!(
        mgr.proc.stderr().contains("recovered"),
        "the restarted manager says what it recovered\n{}",
        mgr.proc.stderr()
    );
    assert!(
        mgr.proc.stderr().contains("was not closed cleanly"),
        "the restart after kill -9 says the store was repaired\n{}",
        mgr.proc.stderr()
    );

    // A run nobody claims after the restart is queued again without
    // spending an attempt: no task fails for the crash.
    let results = rt.block_on(collect(&client, &accepted));
    for (id, i, r) in results {
        match r {
            Ok(v) => assert_eq!(v, Value::from(i), "task {id} echoes its own number"),
            Err(e) => panic!(
                "task {id} (number {i}) has no outcome after the restart: {e}\n--- manager stderr\n{}",
                mgr.proc.stderr()
            ),
        }
    }
    let recovered = mgr
        .proc
        .stderr()
        .lines()
        .find(|l| l.contains("recovered"))
        .map(str::to_string);
    eprintln!("{} accepted, none failed; {recovered:?}", accepted.len());
}

/// SIGTERM with a store: the queued task is kept (its client is told so),
/// the store is closed cleanly (the next start needs no repair), and the
/// task runs after the restart and its result can be collected by id.
#[test]
fn sigterm_keeps_the_queue_and_closes_the_store_cleanly() {
    let dir = TempDir::new();
    let cfg = config(&dir, true);
    sigterm_keeps_the_queue(&dir, &cfg);
}

/// The same with the store in PostgreSQL.
#[cfg(feature = "postgres")]
#[test]
fn sigterm_with_postgres_keeps_the_queue_and_closes_the_store_cleanly() {
    let Some(pg) = common::postgres::Postgres::start(
        "sigterm_with_postgres_keeps_the_queue_and_closes_the_store_cleanly",
    ) else {
        return;
    };
    let dir = TempDir::new();
    let cfg = config_with(&dir, Some(&pg.url("argon")));
    sigterm_keeps_the_queue(&dir, &cfg);
}

fn sigterm_keeps_the_queue(dir: &TempDir, cfg: &Path) {
    let key = dir.keygen("key");
    let mut mgr = start(&key, cfg, None);
    let port = mgr.port();
    let worker = Worker::start(&mgr.addr, &key, 1);
    mgr.wait_for_workers(1);
    let running = mgr.submit(["sleep", "300"]).spawn();
    mgr.wait_status("the first task to run", |s| s.in_flight == 1);
    let queued = mgr.submit(["--detach", "echo", "\"kept\""]).run();
    assert_eq!(queued.code, Some(0), "{queued}");
    let id = queued.stdout.trim().to_string();
    // An attached client that retries: it knows its task's id, so the stop
    // tells it nothing and it waits on the id again after reconnecting.
    let waiting = mgr.submit(["--retry", "echo", "\"waited\""]).spawn();
    mgr.wait_status("the queued tasks to wait", |s| s.queued == 2);

    mgr.proc.signal(libc::SIGTERM);
    let out = running.finish(COMMAND);
    assert_eq!(out.code, Some(0), "the running task completes: {out}");
    let status = mgr.proc.wait_within(COMMAND);
    assert!(
        status.is_some_and(|s| s.success()),
        "manager exit {status:?}\n{}",
        mgr.proc.stderr()
    );
    assert!(
        mgr.proc
            .stderr()
            .contains("2 queued task(s) kept for the next start"),
        "{}",
        mgr.proc.stderr()
    );
    drop(worker);

    let mgr = start(&key, cfg, Some(port));
    assert!(
        !mgr.proc.stderr().contains("not closed cleanly"),
        "a graceful stop closes the store\n{}",
        mgr.proc.stderr()
    );
    let _worker = Worker::start(&mgr.addr, &key, 1);
    let out = mgr
        .client_cmd("result", ["--wait", "--timeout", "30s", &id])
        .run();
    assert_eq!(
        out.code,
        Some(0),
        "the kept task ran after the restart: {out}"
    );
    assert_eq!(out.stdout.trim(), "\"kept\"", "{out}");
    let out = waiting.finish(COMMAND);
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), "\"waited\""),
        "the attached client got its task's result across the graceful stop: {out}"
    );
}

#[test]
fn without_persist_ids_from_before_the_kill_are_unknown_at_once() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = config(&dir, false);
    let mut mgr = start(&key, &cfg, None);
    let port = mgr.port();
    let _worker = Worker::start(&mgr.addr, &key, 4);
    mgr.wait_for_workers(1);
    let rt = runtime();
    let client = rt.block_on(connect(&mgr));
    let (accepted, broke) = rt.block_on(submit_range(&client, 0, 500));
    assert!(!broke);
    drop(client);
    mgr.proc.kill();

    let mgr = start(&key, &cfg, Some(port));
    let client = rt.block_on(connect(&mgr));
    let results = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), collect(&client, &accepted))
            .await
            .expect("unknown ids are answered promptly, not held")
    });
    for (id, _, r) in results {
        assert!(
            matches!(r, Err(ClientError::UnknownTask(t)) if t == id),
            "task {id}: {r:?}"
        );
    }
}

#[test]
fn a_corrupt_store_stops_the_manager_with_exit_78_and_one_line() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let store = dir.join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::write(store.join("argon.redb"), vec![0x5au8; 8192]).unwrap();
    let out = argon(["manager", "--host", "127.0.0.1", "--port", "0", "--key"])
        .arg(&key)
        .arg("--persist")
        .arg(&store)
        .run();
    assert_eq!(out.code, Some(78), "{out}");
    let err = out.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "one line: {out}");
    assert!(err.starts_with("argon: task store "), "{out}");
    assert!(err.contains("argon.redb"), "{out}");
    assert!(out.stdout.is_empty(), "it never listened: {out}");
}
