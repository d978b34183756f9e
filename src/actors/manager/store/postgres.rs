//! The task store in PostgreSQL (`--persist postgres://USER@HOST:PORT/DB`).
//!
//! The manager's task table stays its working state; the database is its
//! journal, laid out as in the redb store: accepted tasks without an
//! outcome (`argon_tasks`), the starts of those that run (`argon_starts`),
//! kept outcomes (`argon_results`), the dead list (`argon_dead`), each a
//! MessagePack record in a `bytea` under its id as `bigint`; the last run
//! of each periodic task (`argon_fired`, by name); and `argon_meta` (the
//! schema version, the id high-water mark, and whether the last manager
//! closed the store).
//! Records are MessagePack, so new fields pass through without a
//! migration; the schema is versioned and created or migrated at open, and
//! a schema newer than this build knows is refused.
//!
//! One writer thread with its own single-threaded tokio runtime owns the
//! connection: it takes everything waiting (up to [`MAX_BATCH`] records),
//! folds it into its net effect per table (ids are never reused, so the
//! last record of an id decides its row), writes that in one transaction
//! (a delete and an upsert per table, pipelined) and acknowledges it. A
//! write that fails stops the manager, as with redb; the manager's commit
//! backlog bounds what waits while the database is slow.
//!
//! Several managers on one database, one leader: the lease row in
//! `argon_leader` names the leader, its fencing epoch (raised at every
//! election), its database session and when the lease expires. Opening
//! waits as a standby while another manager's lease is live and its
//! session exists; then it takes the lease with the epoch raised. The
//! leader renews the lease every third of it ([`PgOptions::lease`]) and in
//! every commit, and every commit first checks the epoch on the locked row:
//! once another manager took over, the deposed leader's commit fails and it
//! stops (`StoreFailed`). A leader that could not renew within its lease
//! by its own clock (it was frozen, or the database did not answer) stops
//! as well, as soon as it notices, before writing anything. A leader killed outright is replaced as soon as its
//! session is gone from `pg_stat_activity` (checked every
//! [`STANDBY_POLL`]); a frozen one once its lease expired.
//!
//! Connection settings the libpq way, as far as `tokio-postgres` goes: the
//! URL's user, password, host, port, database and `sslmode`; without a
//! password in the URL, the first matching line of `PGPASSFILE` (or
//! `~/.pgpass`). This build has no TLS: `sslmode=disable` and `prefer`
//! connect without it; `require` is refused at open. The password is never
//! logged: logs and errors show the URL with it masked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::{
    CommitSink, Committed, DeadRecord, Record, Recovered, ResultRecord, StartRecord, StoreError,
    StoreFailed, TaskRecord, TaskStore,
};

/// Most records written in one transaction.
pub const MAX_BATCH: usize = 16_384;

/// The schema version this build writes. Version 1: the tasks, starts,
/// results and meta tables of the module docs; version 2 adds the lease row
/// (`argon_leader`); version 3 the dead list and the periodic tasks' last
/// runs (`argon_dead`, `argon_fired`).
pub const SCHEMA_VERSION: i64 = 3;

/// Longest wait for opening the store: connecting, migrating and reading.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a standby looks at the lease.
pub const STANDBY_POLL: Duration = Duration::from_millis(250);

/// The lease of a leader, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// How a PostgreSQL store is run.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How long a leader's lease lasts unless renewed (renewed every third
    /// of it): a frozen leader is replaced after this, and stops serving
    /// once it finds it passed.
    pub lease: Duration,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            lease: DEFAULT_LEASE,
        }
    }
}

/// Largest password file read.
const MAX_PASSFILE: u64 = 1 << 20;

/// Serialises concurrent schema creation (a transaction-level advisory lock
/// key: "argon" in ASCII).
const MIGRATION_LOCK: i64 = 0x61_72_67_6f_6e;

/// `url` with its password (in the user part or a `password=` parameter)
/// replaced by `***`, for logs and errors.
pub fn masked(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end);
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (user_info, hosts) = authority.split_at(at);
            match user_info.find(':') {
                Some(colon) => format!("{}:***{hosts}", &user_info[..colon]),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    let tail = match tail.find('?') {
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k == "password" => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{head}{authority}{tail}")
}

/// An error's text on one line, with its causes (tokio-postgres says only
/// "db error" at the top).
fn line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text.replace('\n', " ")
}

fn pg(e: tokio_postgres::Error) -> String {
    line(&e)
}

/// The PostgreSQL store. See the module docs.
pub struct PgStore {
    /// The URL, password masked.
    url: String,
    recovered: Recovered,
    repaired: bool,
    /// Until started: where the writer waits for its sink.
    start: Option<oneshot::Sender<CommitSink>>,
    tx: Option<mpsc::UnboundedSender<Record>>,
    /// The writer thread; joined by [`TaskStore::close`].
    writer: Option<std::thread::JoinHandle<()>>,
}

impl PgStore {
    /// [`PgStore::open_with`] with the default options.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        PgStore::open_with(url, &PgOptions::default())
    }

    /// Connects to the database at `url` and creates or migrates the
    /// schema (within [`OPEN_TIMEOUT`]), waits as a standby for as long as
    /// another manager leads, takes the lease, and reads the store whole.
    /// A URL that does not parse, `sslmode=require`, an unreachable or
    /// refusing database, a newer schema and an unreadable record are
    /// errors.
    pub fn open_with(url: &str, options: &PgOptions) -> Result<PgStore, StoreError> {
        let shown = masked(url);
        let err = |what: String| StoreError {
            path: PathBuf::from(&shown),
            what,
        };
        let mut config = Config::from_str(url)
            .map_err(|e| err(format!("not a usable PostgreSQL URL: {}", line(&e))))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(err(
                "sslmode=require: this build has no TLS; use sslmode=disable or prefer (no TLS), \
                 or reach the database over a secure network or tunnel"
                    .into(),
            ));
        }
        if config.get_password().is_none() {
            if let Some(password) = passfile_password(&config) {
                config.password(password);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (start_tx, start_rx) = oneshot::channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let for_log = shown.clone();
        let lease = options.lease;
        let handle = std::thread::Builder::new()
            .name("argon-store".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start a runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let opened = open_db(&config, &for_log, lease).await;
                    let (client, statements, recovered, repaired, lead) = match opened {
                        Ok(o) => o,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let high = recovered.high_id.unwrap_or(0);
                    if ready_tx.send(Ok((recovered, repaired))).is_err() {
                        return;
                    }
                    let Ok(sink) = start_rx.await else {
                        return;
                    };
                    writer(client, statements, rx, sink, high, lead).await;
                });
            })
            .map_err(|e| err(format!("cannot start the writer thread: {e}")))?;
        let (recovered, repaired) = match ready_rx.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = handle.join();
                return Err(err(e));
            }
            Err(_) => {
                let _ = handle.join();
                return Err(err("the writer thread stopped while opening".into()));
            }
        };
        if repaired {
            log::warn!(
                "task store {} was not closed cleanly (the manager was killed or crashed); \
                 PostgreSQL kept every committed record",
                crate::logsafe::escaped(&shown)
            );
        }
        Ok(PgStore {
            url: shown,
            recovered,
            repaired,
            start: Some(start_tx),
            tx: Some(tx),
            writer: Some(handle),
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

/// The statements a batch uses, prepared once.
struct Statements {
    put: [Statement; 4],
    delete: [Statement; 4],
    /// Upserts the last runs of periodic tasks: names $1, times $2.
    fired: Statement,
    high: Statement,
    /// Renews the lease of epoch $1 by $2 ms; one row while it leads.
    renew: Statement,
}

const TABLES: [&str; 4] = ["argon_tasks", "argon_starts", "argon_results", "argon_dead"];

/// Within [`OPEN_TIMEOUT`], or an error saying so.
async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(OPEN_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}s while {what}",
                OPEN_TIMEOUT.as_secs()
            ))
        })
}

async fn open_db(
    config: &Config,
    shown: &str,
    lease: Duration,
) -> Result<(Client, Statements, Recovered, bool, Lead), String> {
    let mut client = bounded("opening", async {
        let (mut client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| format!("cannot connect: {}", pg(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("task store connection ended: {}", pg(e));
            }
        });
        // Notices (the server's chatter) stay out of the manager's log.
        client
            .batch_execute("SET client_min_messages TO warning")
            .await
            .map_err(pg)?;
        migrate(&mut client).await?;
        Ok(client)
    })
    .await?;
    let lead = lead(&mut client, shown, lease).await?;
    bounded("reading", async {
        let repaired = client
            .query_opt("SELECT value FROM argon_meta WHERE key = 'open'", &[])
            .await
            .map_err(pg)?
            .is_some_and(|r| r.get::<_, i64>(0) != 0);
        client
            .execute(
                "INSERT INTO argon_meta (key, value) VALUES ('open', 1) \
                 ON CONFLICT (key) DO UPDATE SET value = 1",
                &[],
            )
            .await
            .map_err(pg)?;
        let recovered = read(&client).await?;
        let statements = prepare(&client).await.map_err(pg)?;
        Ok((statements, recovered, repaired))
    })
    .await
    .map(|(statements, recovered, repaired)| (client, statements, recovered, repaired, lead))
}

/// Creates the schema of a new store, or checks (and would migrate) an
/// existing one, in one transaction under [`MIGRATION_LOCK`].
async fn migrate(client: &mut Client) -> Result<(), String> {
    let txn = client.transaction().await.map_err(pg)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    let exists: bool = txn
        .query_one("SELECT to_regclass('argon_meta') IS NOT NULL", &[])
        .await
        .map_err(pg)?
        .get(0);
    let version: Option<i64> = if exists {
        txn.query_opt(
            "SELECT value FROM argon_meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(pg)?
        .map(|r| r.get(0))
    } else {
        txn.batch_execute("CREATE TABLE argon_meta (key text PRIMARY KEY, value bigint NOT NULL)")
            .await
            .map_err(|e| format!("cannot create the schema: {}", pg(e)))?;
        None
    };
    match version {
        None => {
            txn.batch_execute(
                "CREATE TABLE argon_tasks (id bigint PRIMARY KEY, record bytea NOT NULL);
                 CREATE TABLE argon_starts (id bigint PRIMARY KEY, record bytea NOT NULL);
                 CREATE TABLE argon_results (id bigint PRIMARY KEY, record bytea NOT NULL);
                 INSERT INTO argon_meta (key, value) VALUES ('next_id', 0)
                     ON CONFLICT (key) DO NOTHING;",
            )
            .await
            .map_err(|e| format!("cannot create the schema: {}", pg(e)))?;
            txn.batch_execute(LEADER_TABLE)
                .await
                .map_err(|e| format!("cannot create the schema: {}", pg(e)))?;
            txn.batch_execute(VERSION_3_TABLES)
                .await
                .map_err(|e| format!("cannot create the schema: {}", pg(e)))?;
            txn.execute(
                "INSERT INTO argon_meta (key, value) VALUES ('schema_version', $1)",
                &[&SCHEMA_VERSION],
            )
            .await
            .map_err(pg)?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(format!(
                "schema version {v} is newer than this argon knows ({SCHEMA_VERSION}): \
                 run a newer argon"
            ));
        }
        Some(v) if v < 1 => return Err(format!("schema version {v} is not a version")),
        Some(v) => {
            // One step per version.
            if v < 2 {
                txn.batch_execute(LEADER_TABLE)
                    .await
                    .map_err(|e| format!("cannot migrate the schema to version 2: {}", pg(e)))?;
            }
            if v < 3 {
                txn.batch_execute(VERSION_3_TABLES)
                    .await
                    .map_err(|e| format!("cannot migrate the schema to version 3: {}", pg(e)))?;
            }
            if v < SCHEMA_VERSION {
                txn.execute(
                    "UPDATE argon_meta SET value = $1 WHERE key = 'schema_version'",
                    &[&SCHEMA_VERSION],
                )
                .await
                .map_err(pg)?;
                log::info!("task store schema migrated from version {v} to {SCHEMA_VERSION}");
            }
        }
    }
    txn.commit().await.map_err(pg)
}

/// The tables schema version 3 adds: the dead list, by task id, and the
/// last run of each periodic task, by its name.
const VERSION_3_TABLES: &str =
    "CREATE TABLE argon_dead (id bigint PRIMARY KEY, record bytea NOT NULL);
     CREATE TABLE argon_fired (name text PRIMARY KEY, at_ms bigint NOT NULL);";

/// The lease table (schema version 2): one row, the leader's.
const LEADER_TABLE: &str = "CREATE TABLE argon_leader (
    id int PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL,
    holder text NOT NULL,
    backend_pid int NOT NULL,
    expires timestamptz NOT NULL
)";

/// This manager's leadership: its epoch and lease.
struct Lead {
    epoch: i64,
    lease: Duration,
    /// Until when, by this process's clock, the lease is surely held: the
    /// start of the last renewal that succeeded, plus the lease.
    until: tokio::time::Instant,
}

/// Who this manager is, for the lease row and the logs.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("pid {} on {}", std::process::id(), host)
}

/// Waits, as a standby, until no other manager leads (no lease row, or its
/// lease expired, or its database session is gone), then takes the lease
/// with the epoch raised. Queries are bounded; the wait is not.
async fn lead(client: &mut Client, shown: &str, lease: Duration) -> Result<Lead, String> {
    let me = holder();
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let mut told = false;
    loop {
        let began = tokio::time::Instant::now();
        let attempt = bounded("electing", async {
            let txn = client.transaction().await.map_err(pg)?;
            let row = txn
                .query_opt(
                    "SELECT epoch, holder, expires < clock_timestamp() AS expired,
                            EXISTS (SELECT 1 FROM pg_stat_activity a
                                    WHERE a.pid = l.backend_pid) AS alive
                     FROM argon_leader l WHERE id = 1 FOR UPDATE",
                    &[],
                )
                .await
                .map_err(pg)?;
            let taken = match row {
                None => Some(
                    txn.query_one(
                        "INSERT INTO argon_leader (id, epoch, holder, backend_pid, expires)
                         VALUES (1, 1, $1, pg_backend_pid(),
                                 clock_timestamp() + $2::bigint * interval '1 millisecond')
                         RETURNING epoch",
                        &[&me, &lease_ms],
                    )
                    .await
                    .map_err(pg)?
                    .get::<_, i64>(0),
                ),
                Some(r) if r.get::<_, bool>(2) || !r.get::<_, bool>(3) => Some(
                    txn.query_one(
                        "UPDATE argon_leader SET epoch = epoch + 1, holder = $1,
                             backend_pid = pg_backend_pid(),
                             expires = clock_timestamp() + $2::bigint * interval '1 millisecond'
                         WHERE id = 1 RETURNING epoch",
                        &[&me, &lease_ms],
                    )
                    .await
                    .map_err(pg)?
                    .get::<_, i64>(0),
                ),
                Some(r) => {
                    if !told {
                        log::info!(
                            "task store {}: standby; {} leads (epoch {}); waiting for its lease to end",
                            crate::logsafe::escaped(shown),
                            crate::logsafe::escaped(r.get::<_, &str>(1)),
                            r.get::<_, i64>(0)
                        );
                        told = true;
                    }
                    None
                }
            };
            txn.commit().await.map_err(pg)?;
            Ok(taken)
        })
        .await?;
        if let Some(epoch) = attempt {
            log::info!(
                "task store {}: leading (epoch {epoch}, lease {} ms)",
                crate::logsafe::escaped(shown),
                lease_ms
            );
            return Ok(Lead {
                epoch,
                lease,
                until: began + lease,
            });
        }
        tokio::time::sleep(STANDBY_POLL).await;
    }
}

/// Renews the lease if this manager still leads: the fencing check every
/// commit makes too. `Err` says why it does not lead any more.
async fn renew(client: &Client, statements: &Statements, lead: &Lead) -> Result<(), String> {
    let lease_ms = i64::try_from(lead.lease.as_millis()).unwrap_or(i64::MAX);
    let held = client
        .execute(&statements.renew, &[&lead.epoch, &lease_ms])
        .await
        .map_err(pg)?;
    if held == 1 {
        Ok(())
    } else {
        Err(deposed(lead))
    }
}

fn deposed(lead: &Lead) -> String {
    format!(
        "deposed: another manager took over the store (this one led epoch {})",
        lead.epoch
    )
}

async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
    let mut put = Vec::new();
    let mut delete = Vec::new();
    for table in TABLES {
        put.push(
            client
                .prepare(&format!(
                    "INSERT INTO {table} (id, record) \
                     SELECT * FROM unnest($1::bigint[], $2::bytea[]) \
                     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record"
                ))
                .await?,
        );
        delete.push(
            client
                .prepare(&format!("DELETE FROM {table} WHERE id = ANY($1::bigint[])"))
                .await?,
        );
    }
    let high = client
        .prepare("UPDATE argon_meta SET value = GREATEST(value, $1::bigint) WHERE key = 'next_id'")
        .await?;
    let renew = client
        .prepare(
            "UPDATE argon_leader SET expires = clock_timestamp() + $2::bigint * interval '1 millisecond' \
             WHERE id = 1 AND epoch = $1",
        )
        .await?;
    let fired = client
        .prepare(
            "INSERT INTO argon_fired (name, at_ms) SELECT * FROM unnest($1::text[], $2::bigint[]) \
             ON CONFLICT (name) DO UPDATE SET at_ms = EXCLUDED.at_ms",
        )
        .await?;
    let four = |v: Vec<Statement>| -> [Statement; 4] {
        v.try_into()
            .unwrap_or_else(|_| unreachable!("one statement per table"))
    };
    Ok(Statements {
        put: four(put),
        delete: four(delete),
        fired,
        high,
        renew,
    })
}

/// Rows of `table` as (id, record).
async fn rows(client: &Client, table: &str) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let rows = client
        .query(&format!("SELECT id, record FROM {table} ORDER BY id"), &[])
        .await
        .map_err(|e| format!("cannot read {table}: {}", pg(e)))?;
    rows.iter()
        .map(|r| {
            let bad = |e: tokio_postgres::Error| {
                format!("{table} is not as this argon made it: {}", pg(e))
            };
            let id: i64 = r.try_get(0).map_err(bad)?;
            let id = u64::try_from(id).map_err(|_| format!("{table} holds id {id}"))?;
            Ok((id, r.try_get::<_, Vec<u8>>(1).map_err(bad)?))
        })
        .collect()
}

async fn read(client: &Client) -> Result<Recovered, String> {
    let mut out = Recovered::default();
    let next: Option<i64> = client
        .query_opt("SELECT value FROM argon_meta WHERE key = 'next_id'", &[])
        .await
        .map_err(pg)?
        .map(|r| r.get(0));
    let mut high = next.and_then(|v| u64::try_from(v).ok());
    let mut seen = |id: u64| high = Some(high.map_or(id, |h| h.max(id)));
    let mut starts: HashMap<u64, StartRecord> = HashMap::new();
    for (id, bytes) in rows(client, "argon_starts").await? {
        let start = rmp_serde::from_slice::<StartRecord>(&bytes)
            .map_err(|e| format!("start record of task {id} cannot be read: {}", line(&e)))?;
        starts.insert(id, start);
    }
    for (id, bytes) in rows(client, "argon_tasks").await? {
        let record: TaskRecord = rmp_serde::from_slice(&bytes)
            .map_err(|e| format!("record of task {id} cannot be read: {}", line(&e)))?;
        let start = starts.remove(&id);
        seen(id);
        if let Some(s) = &start {
            seen(s.run);
        }
        out.tasks.push((id, record, start));
    }
    for (id, bytes) in rows(client, "argon_results").await? {
        let record: ResultRecord = rmp_serde::from_slice(&bytes)
            .map_err(|e| format!("result of task {id} cannot be read: {}", line(&e)))?;
        seen(id);
        out.results.push((id, record));
    }
    for (id, bytes) in rows(client, "argon_dead").await? {
        let record: DeadRecord = rmp_serde::from_slice(&bytes)
            .map_err(|e| format!("dead-list entry of task {id} cannot be read: {}", line(&e)))?;
        seen(id);
        out.dead.push((id, record));
    }
    let fired = client
        .query("SELECT name, at_ms FROM argon_fired ORDER BY name", &[])
        .await
        .map_err(|e| format!("cannot read argon_fired: {}", pg(e)))?;
    for r in &fired {
        let bad = |e: tokio_postgres::Error| {
            format!("argon_fired is not as this argon made it: {}", pg(e))
        };
        let name: String = r.try_get(0).map_err(bad)?;
        let at: i64 = r.try_get(1).map_err(bad)?;
        out.fired.push((name, u64::try_from(at).unwrap_or(0)));
    }
    out.high_id = high;
    Ok(out)
}

impl TaskStore for PgStore {
    fn durable(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("task store {}", self.url)
    }

    fn take_recovered(&mut self) -> Recovered {
        std::mem::take(&mut self.recovered)
    }

    fn was_repaired(&self) -> bool {
        self.repaired
    }

    fn start(&mut self, sink: CommitSink) -> Result<(), StoreError> {
        let Some(start) = self.start.take() else {
            return Ok(());
        };
        start.send(sink).map_err(|_| StoreError {
            path: PathBuf::from(&self.url),
            what: "the writer thread is gone".into(),
        })
    }

    fn record(&mut self, record: Record) -> Result<(), StoreError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(record).is_ok());
        if sent {
            return Ok(());
        }
        Err(StoreError {
            path: PathBuf::from(&self.url),
            what: "the writer thread is gone".into(),
        })
    }

    fn close(&mut self) {
        self.tx = None;
        self.start = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                log::error!("the task store's writer thread panicked");
            }
        }
    }
}

/// What a batch leaves in one table: per id, its record or its absence.
type Net = HashMap<i64, Option<Vec<u8>>>;

/// A batch folded into its net effect: the tables in [`TABLES`] order, and
/// the id high-water mark it raises.
#[derive(Debug, Default)]
struct Folded {
    tables: [Net; 4],
    /// The last run of each periodic task named in the batch.
    fired: HashMap<String, i64>,
    high: u64,
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec(record).map_err(|e| line(&e))
}

fn key(id: u64) -> Result<i64, String> {
    i64::try_from(id).map_err(|_| format!("task id {id} does not fit a bigint"))
}

/// Folds `records`, in order, into what they leave in each table. Ids are
/// never reused, so the last record of an id decides its row: the result
/// equals applying them one by one.
fn fold(records: &[Record], high: u64) -> Result<Folded, String> {
    let mut f = Folded {
        high,
        ..Folded::default()
    };
    let [tasks, starts, results, dead] = &mut f.tables;
    for record in records {
        match record {
            Record::Accept(id, r) => {
                f.high = f.high.max(*id);
                tasks.insert(key(*id)?, Some(encode(r)?));
            }
            Record::Start(id, s) => {
                f.high = f.high.max(s.run);
                starts.insert(key(*id)?, Some(encode(s)?));
            }
            Record::Retry(id, r) => {
                tasks.insert(key(*id)?, Some(encode(r)?));
                starts.insert(key(*id)?, None);
            }
            Record::Finish(id, kept) => {
                tasks.insert(key(*id)?, None);
                starts.insert(key(*id)?, None);
                if let Some(r) = kept {
                    results.insert(key(*id)?, Some(encode(r)?));
                }
            }
            Record::Forget(id) => {
                results.insert(key(*id)?, None);
            }
            Record::Dead(id, r) => {
                dead.insert(key(*id)?, Some(encode(r)?));
            }
            Record::Unlist(id) => {
                dead.insert(key(*id)?, None);
            }
            Record::Fired(name, at) => {
                let at = i64::try_from(*at).map_err(|_| format!("time {at} does not fit"))?;
                f.fired.insert(name.clone(), at);
            }
        }
    }
    key(f.high)?;
    Ok(f)
}

async fn write_batch(
    client: &mut Client,
    statements: &Statements,
    folded: Folded,
    lead: &mut Lead,
) -> Result<(), String> {
    let (fired_names, fired_at): (Vec<String>, Vec<i64>) = folded.fired.into_iter().unzip();
    let mut puts: Vec<(Vec<i64>, Vec<Vec<u8>>)> = Vec::new();
    let mut deletes: Vec<Vec<i64>> = Vec::new();
    for net in folded.tables {
        let (mut put_ids, mut put_records, mut delete_ids) = (Vec::new(), Vec::new(), Vec::new());
        for (id, row) in net {
            match row {
                Some(bytes) => {
                    put_ids.push(id);
                    put_records.push(bytes);
                }
                None => delete_ids.push(id),
            }
        }
        puts.push((put_ids, put_records));
        deletes.push(delete_ids);
    }
    let high = key(folded.high)?;
    let lease_ms = i64::try_from(lead.lease.as_millis()).unwrap_or(i64::MAX);
    // The lease renewal goes first: it locks the lease row to the end of
    // the transaction, so a takeover waits for it, or it finds the epoch
    // raised and the transaction is dropped (rolled back).
    let mut statements_params: Vec<(&Statement, Vec<&(dyn ToSql + Sync)>)> =
        vec![(&statements.renew, vec![&lead.epoch, &lease_ms])];
    for (i, (ids, records)) in puts.iter().enumerate() {
        if !ids.is_empty() {
            statements_params.push((&statements.put[i], vec![ids, records]));
        }
    }
    for (i, ids) in deletes.iter().enumerate() {
        if !ids.is_empty() {
            statements_params.push((&statements.delete[i], vec![ids]));
        }
    }
    if !fired_names.is_empty() {
        statements_params.push((&statements.fired, vec![&fired_names, &fired_at]));
    }
    statements_params.push((&statements.high, vec![&high]));
    let began = tokio::time::Instant::now();
    let txn = client.transaction().await.map_err(pg)?;
    // Sent together (pipelined), run and answered in order.
    let pending = statements_params
        .iter()
        .map(|(statement, params)| txn.execute(*statement, params));
    let rows = futures_util::future::try_join_all(pending)
        .await
        .map_err(pg)?;
    if rows.first() != Some(&1) {
        return Err(deposed(lead));
    }
    txn.commit().await.map_err(pg)?;
    lead.until = began + lead.lease;
    Ok(())
}

async fn writer(
    mut client: Client,
    statements: Statements,
    mut rx: mpsc::UnboundedReceiver<Record>,
    sink: CommitSink,
    mut high: u64,
    mut lead: Lead,
) {
    let fail = |e: String| {
        if sink.failed.connected() {
            sink.failed.do_send(StoreFailed(e));
        } else {
            log::error!("task store write failed after the manager stopped: {e}");
        }
    };
    let mut done = 0u64;
    let mut batch = Vec::new();
    let mut renewals = tokio::time::interval(lead.lease / 3);
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = renewals.tick() => {
                if let Err(e) = keep_lead(&client, &statements, &mut lead).await {
                    fail(e);
                    return;
                }
                continue;
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        if let Err(e) = lost(&lead) {
            fail(e);
            return;
        }
        // Once the manager is gone, what it sent is still written, until
        // the channel is empty and closed.
        let written = match fold(&batch, high) {
            Ok(folded) => {
                let raised = folded.high;
                write_batch(&mut client, &statements, folded, &mut lead)
                    .await
                    .map(|()| high = raised)
            }
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {
                done += batch.len() as u64;
                batch.clear();
                sink.committed.do_send(Committed { upto: done });
            }
            Err(e) => {
                fail(e);
                return;
            }
        }
    }
    let closed = client
        .batch_execute(&format!(
            "UPDATE argon_meta SET value = 0 WHERE key = 'open';
             UPDATE argon_leader SET expires = clock_timestamp() WHERE id = 1 AND epoch = {}",
            lead.epoch
        ))
        .await;
    if let Err(e) = closed {
        log::warn!("task store: cannot mark it closed: {}", pg(e));
    }
}

/// `Err` once the lease may have ended: not renewed within it by this
/// process's clock (it was frozen, or the database did not answer), so a
/// standby may lead by now.
fn lost(lead: &Lead) -> Result<(), String> {
    if tokio::time::Instant::now() < lead.until {
        return Ok(());
    }
    Err(format!(
        "lease lost: not renewed within {} ms (the process was stopped or the database did \
         not answer); another manager may lead now",
        lead.lease.as_millis()
    ))
}

/// Renews the lease between commits, bounded by what is left of it.
async fn keep_lead(
    client: &Client,
    statements: &Statements,
    lead: &mut Lead,
) -> Result<(), String> {
    lost(lead)?;
    let began = tokio::time::Instant::now();
    let left = lead.until.saturating_duration_since(began);
    match tokio::time::timeout(left, renew(client, statements, lead)).await {
        Ok(Ok(())) => {
            lead.until = began + lead.lease;
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => lost(lead),
    }
}

/// The password for `config` from the password file, the libpq way:
/// `PGPASSFILE`, or `~/.pgpass`; ignored when others may read it.
fn passfile_password(config: &Config) -> Option<String> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let text = read_passfile(&path)?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // A socket folder, or no host (the default socket), matches
        // "localhost", as in libpq.
        _ => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user()?;
    let db = config.get_dbname().unwrap_or(user);
    passfile_lookup(&text, &host, &port, db, user)
}

fn read_passfile(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "password file {} has group or world access; it is ignored (chmod 0600 it)",
            crate::logsafe::escaped(path.display())
        );
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_PASSFILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The password of the first line of a password file matching (`*` matches
/// anything; `\:` and `\\` escape).
fn passfile_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for l in text.lines() {
        if l.trim_start().starts_with('#') || l.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut field = String::new();
        let mut chars = l.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        field.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                _ => field.push(c),
            }
        }
        fields.push(field);
        let [h, p, d, u, password] = fields.as_slice() else {
            continue;
        };
        let fits = |pattern: &String, value: &str| pattern == "*" || pattern == value;
        if fits(h, host) && fits(p, port) && fits(d, db) && fits(u, user) {
            return Some(password.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DeadTask, Priority, Value};

    #[test]
    fn the_password_is_masked_in_the_user_part_and_the_parameters() {
        assert_eq!(
            masked("postgres://argon:s3cr:et@db.example:5433/tasks?sslmode=prefer"),
            "postgres://argon:***@db.example:5433/tasks?sslmode=prefer"
        );
        assert_eq!(
            masked("postgresql://argon@h/db?password=hunter2&sslmode=disable"),
            "postgresql://argon@h/db?password=***&sslmode=disable"
        );
        assert_eq!(masked("postgres://h:5432/db"), "postgres://h:5432/db");
        assert_eq!(masked("postgres://u:p@h"), "postgres://u:***@h");
    }

    #[test]
    fn the_password_file_gives_the_first_matching_line() {
        let text = "# comment\n\
                    other:5432:*:argon:wrong\n\
                    db\\:x:*:tasks:argon:a\\:b\\\\c\n\
                    *:*:*:argon:fallback\n";
        assert_eq!(
            passfile_lookup(text, "db:x", "5432", "tasks", "argon").as_deref(),
            Some("a:b\\c")
        );
        assert_eq!(
            passfile_lookup(text, "h", "1", "x", "argon").as_deref(),
            Some("fallback")
        );
        assert_eq!(passfile_lookup(text, "h", "1", "x", "nobody"), None);
        assert_eq!(passfile_lookup("a:b:c\n", "a", "b", "c", "d"), None);
    }

    fn task(n: u32) -> TaskRecord {
        TaskRecord {
            name: "t".into(),
            args: Value::from(n),
            priority: Priority::Normal,
            timeout_ms: None,
            attempts: 1,
            detached: true,
            retries: n,
            retried: 0,
            attempt_base: 0,
            due_ms: None,
            unique_key: None,
            unique_for_ms: 0,
        }
    }

    #[test]
    fn a_batch_folds_to_the_last_record_of_each_id() {
        let done = ResultRecord {
            finished_ms: 1,
            outcome: super::super::StoredOutcome::Done(Value::from(1)),
            unique: None,
        };
        let entry = |task_id| DeadTask {
            task_id,
            task: "t".into(),
            args: Value::Nil,
            args_truncated: false,
            retries: 1,
            error: "e".into(),
            failed_at_ms: 1,
        };
        let records = vec![
            Record::Accept(1, task(1)),
            Record::Accept(2, task(2)),
            Record::Start(
                1,
                StartRecord {
                    run: 40,
                    started_times: 1,
                },
            ),
            Record::Finish(1, Some(done)),
            Record::Retry(2, task(7)),
            Record::Forget(9),
            Record::Dead(
                5,
                super::super::DeadRecord {
                    entry: entry(5),
                    task: Some(task(5)),
                },
            ),
            Record::Dead(
                6,
                super::super::DeadRecord {
                    entry: entry(6),
                    task: None,
                },
            ),
            Record::Unlist(6),
            Record::Fired("tick".into(), 10),
            Record::Fired("tick".into(), 20),
        ];
        let f = fold(&records, 3).unwrap();
        let [tasks, starts, results, dead] = &f.tables;
        assert!(
            dead[&5].is_some() && dead[&6].is_none(),
            "listed, then unlisted"
        );
        assert_eq!(
            f.fired.get("tick"),
            Some(&20),
            "the last run of a name wins"
        );
        assert_eq!(tasks.get(&1), Some(&None), "finished: its record goes");
        let back: TaskRecord = rmp_serde::from_slice(tasks[&2].as_ref().unwrap()).unwrap();
        assert_eq!(back.retries, 7, "the retry's rewrite wins");
        assert_eq!(starts.get(&1), Some(&None));
        assert_eq!(starts.get(&2), Some(&None));
        assert!(results[&1].is_some(), "the kept outcome is written");
        assert_eq!(results.get(&9), Some(&None), "the forgotten one goes");
        assert_eq!(f.high, 40, "the run id raises the high-water mark");
        assert!(fold(&[Record::Forget(u64::MAX)], 0).is_err());
    }
}
