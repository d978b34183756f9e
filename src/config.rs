//! The TOML configuration file. Every subcommand reads the same schema with
//! `--config FILE`; flags override what the file says, and built-in defaults
//! fill the rest. Unknown keys are errors that name the key and the file.
//!
//! ```toml
//! [security]
//! key_file = "/etc/argon/key"      # path of the shared key file
//! max_frame_bytes = 16777216       # largest frame accepted or sent (16 MiB)
//! handshake_timeout = "5s"         # a peer must finish its handshake within this
//! heartbeat_interval = "5s"        # quiet connections say so; 3 silent intervals = gone
//! max_outgoing_bytes = 67108864    # bytes held for a peer before the sender slows (64 MiB)
//!
//! [manager]
//! host = "127.0.0.1"               # address to listen on
//! port = 8000                      # 0 picks a free port
//! queue_factor = 3                 # queue bound = capacity × this
//! max_connections = 960            # default: descriptor limit minus 64
//! max_handshakes = 256             # handshakes in progress at once; past it the oldest goes
//! max_handshakes_per_address = 64  # of those, from one IP address (default: a quarter)
//! max_outgoing_total_bytes = 3221225472 # bytes held for all peers (default: RAM / 8)
//! drain_timeout = "30s"            # on SIGTERM, running tasks may finish within this
//! result_ttl = "1h"                # outcomes of detached tasks are kept this long
//! result_max = 100000              # most outcomes kept; the oldest go first
//! result_max_bytes = 268435456     # most bytes of kept outcomes (256 MiB)
//! provider_grace = "30s"           # tasks whose kind lost its last worker wait this long
//!
//! [worker]
//! mgr = "127.0.0.1:8000"           # manager address
//! capacity = 4                     # slots: tasks run at once
//! allow_eval = false               # accept eval scripts
//! drain_timeout = "30s"            # on SIGTERM, wait this long for tasks in flight
//! kept_outcomes_max = 1000         # outcomes kept while the manager is away
//! kept_outcomes_max_bytes = 67108864 # and their bytes (64 MiB); past either the oldest go
//!
//! [client]
//! mgr = "127.0.0.1:8000"
//! retry = false                    # resend denied tasks on a logarithmic backoff
//! retry_for = "5m"                 # with retry: give up after this long
//!
//! [tasks.wordcount]                # a command task (see `task::command`)
//! command = ["python3", "/opt/tasks/wordcount.py"]
//! timeout = "10s"
//!
//! [eval]                           # limits on eval scripts (see `task::eval`)
//! max_time = "5s"
//!
//! [limits.report]                  # limits per task name
//! max_running = 2                  # at most 2 slots run it at once
//! max_queued = 100                 # at most 100 wait in the queue
//! rate = "20/s"                    # submits past it: denied "rate limited"
//!
//! [[schedule]]                     # a periodic task the manager submits
//! name = "cleanup"
//! task = "sleep"
//! args = 100
//! every = "10m"                    # or: cron = "0 3 * * *", timezone = "Europe/Berlin"
//! overlap = "skip"                 # not while the last one is queued or running
//! catch_up = "one"                 # one run after downtime over a due time (or "none")
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::Dur;
use crate::task::command::CommandTask;
use crate::task::eval::EvalLimits;

/// `[security]`: the key and the transport limits.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Path of the shared key file. No default: it must be given here, with
    /// `--key`, or with `ARGON_KEY`.
    pub key_file: Option<PathBuf>,
    /// Largest frame body accepted or sent, in bytes. Default 16 MiB.
    pub max_frame_bytes: Option<usize>,
    /// Bound on a connection's handshake. Default 5 s.
    pub handshake_timeout: Option<Dur>,
    /// A quiet connection sends a heartbeat this often; a peer silent for
    /// three intervals is disconnected (its tasks are then answered or
    /// requeued as for any lost worker). Default 5 s.
    pub heartbeat_interval: Option<Dur>,
    /// Bytes one connection holds for its peer before it slows down: past
    /// it the connection takes on no more answers to the peer's requests,
    /// and a manager sends a worker no assign past half of it. (A peer that
    /// takes no byte for three heartbeat intervals is closed.) At least
    /// `max_frame_bytes`. Default 64 MiB.
    pub max_outgoing_bytes: Option<usize>,
}

/// `[manager]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerSection {
    /// Address to listen on. Default `127.0.0.1`.
    pub host: Option<String>,
    /// Port; 0 picks a free one. Default 8000.
    pub port: Option<u16>,
    /// Queue bound = capacity × this. Default 3.
    pub queue_factor: Option<u32>,
    /// Timeout for tasks submitted without one. Default: none.
    pub default_timeout: Option<Dur>,
    /// Attempts for tasks submitted without a number. Default 1.
    pub default_attempts: Option<u32>,
    /// Retries after a failed run for tasks submitted without a number, at
    /// most 10. Default 0.
    pub default_retries: Option<u32>,
    /// Backoff before a task's first retry; it doubles for each further
    /// one. Default 1 s.
    pub retry_base: Option<Dur>,
    /// Longest backoff before a retry. Default 60 s.
    pub retry_max: Option<Dur>,
    /// Most tasks kept in the dead list (`argon failed`); past it the
    /// oldest is evicted. Default 1000.
    pub dead_max: Option<usize>,
    /// Most tasks scheduled to run later (`submit --in`/`--at`) held at
    /// once; past it such a submit is denied "schedule full". Default
    /// 100,000.
    pub scheduled_max: Option<usize>,
    /// Most unique-task keys (`submit --unique-key`) held at once; past it
    /// a submit with a new key is denied "unique keys full". Default
    /// 100,000.
    pub unique_max: Option<usize>,
    /// How long past a task's timeout the manager waits for the worker's
    /// answer before answering the client itself. Default 2 s.
    pub timeout_grace: Option<Dur>,
    /// Connections held at once (clients, workers and handshakes); more are
    /// refused. Default: the descriptor limit minus a reserve
    /// ([`crate::admission::default_max_connections`]).
    pub max_connections: Option<usize>,
    /// Handshakes in progress at once; past it the oldest is closed to
    /// admit a new connection. Default 256.
    pub max_handshakes: Option<usize>,
    /// Handshakes in progress from one IP address (default: a quarter of
    /// `max_handshakes`); past it that address's oldest is closed.
    pub max_handshakes_per_address: Option<usize>,
    /// Bytes all connections together may hold for peers that do not read
    /// them (default: an eighth of the machine's memory, 256 MiB to 8 GiB);
    /// past it the largest holders are closed.
    pub max_outgoing_total_bytes: Option<usize>,
    /// Address (`host:port`) of the read-only HTTP side (the dashboard `/`,
    /// `/api/overview`, `/metrics`, `/healthz`, `/readyz`). Default: off.
    pub http: Option<String>,
    /// File holding the bearer token the HTTP side requires (but on
    /// `/healthz`). Default: none.
    pub http_token_file: Option<std::path::PathBuf>,
    /// On SIGINT/SIGTERM, how long running tasks may take to finish before
    /// they are cancelled and answered as such. Default 30 s.
    pub drain_timeout: Option<Dur>,
    /// How long the outcome of a detached task is kept after it finished.
    /// Default 1 h.
    pub result_ttl: Option<Dur>,
    /// Most outcomes of detached tasks kept; past it the oldest is evicted.
    /// Default 100,000.
    pub result_max: Option<usize>,
    /// Most bytes of kept outcomes; past it the oldest are evicted. Default
    /// 256 MiB.
    pub result_max_bytes: Option<usize>,
    /// Folder of the task store, or a `postgres://` URL of a PostgreSQL
    /// database to keep it in (durable mode): queued and running tasks and
    /// kept results survive a restart. Default: none (nothing survives).
    pub persist: Option<PathBuf>,
    /// With `persist` a PostgreSQL URL: how long a leading manager's lease
    /// lasts unless renewed (it renews every third of it); a frozen leader
    /// is replaced after this. 1 s to 1 h; default 10 s.
    pub lease: Option<Dur>,
    /// With `persist`: how long after a restart workers have to claim the
    /// tasks that were running before it is requeued or failed. Default
    /// 15 s (the peer liveness window).
    pub recovery_grace: Option<Dur>,
    /// How long the queued tasks of a kind whose last worker went wait for
    /// another that provides it before they fail; `"0s"` fails them at
    /// once. Default 30 s, or 2 min with `persist`.
    pub provider_grace: Option<Dur>,
}

/// `[worker]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Manager address, `host:port`. Default `127.0.0.1:8000`.
    pub mgr: Option<String>,
    /// Slots. Default: the number of CPUs.
    pub capacity: Option<usize>,
    /// Accept eval scripts. Default false.
    pub allow_eval: Option<bool>,
    /// On SIGINT/SIGTERM, how long to wait for tasks in flight. Default 30 s.
    pub drain_timeout: Option<Dur>,
    /// Most outcomes of runs that ended while the manager was away kept
    /// for the next registration; past it the oldest go. 0 keeps none.
    /// Default 1000.
    pub kept_outcomes_max: Option<usize>,
    /// Most bytes of such outcomes (their MessagePack size); past it the
    /// oldest go. Default 64 MiB.
    pub kept_outcomes_max_bytes: Option<usize>,
}

/// `[client]`: for `submit`, `status`, `ping`, `bench`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSection {
    /// Manager address, `host:port`. Default `127.0.0.1:8000`.
    pub mgr: Option<String>,
    /// Resend denied tasks on a logarithmic backoff. Default false.
    pub retry: Option<bool>,
    /// With retry, how long `submit` and `eval` keep trying (denied, or the
    /// manager unreachable) before they give up. Default 5 min.
    pub retry_for: Option<Dur>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[security]`
    pub security: SecuritySection,
    /// `[manager]`
    pub manager: ManagerSection,
    /// `[worker]`
    pub worker: WorkerSection,
    /// `[client]`
    pub client: ClientSection,
    /// `[tasks.NAME]`: command tasks a worker provides.
    pub tasks: BTreeMap<String, CommandTask>,
    /// `[eval]`: limits on eval scripts, for workers that allow eval.
    pub eval: EvalLimits,
    /// `[[schedule]]`: periodic tasks the manager submits (see
    /// [`crate::actors::manager::periodic`]).
    pub schedule: Vec<crate::actors::manager::periodic::ScheduleEntry>,
    /// `[limits.NAME]`: limits per task name (see
    /// [`crate::actors::manager::limits`]).
    pub limits: BTreeMap<String, crate::actors::manager::limits::LimitEntry>,
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading failed.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or not our schema (unknown key, wrong type). The
    /// message is toml's own, several lines with a caret under the fault.
    #[error("invalid config file {path}:\n{message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said, with line and column.
        message: String,
    },
    /// Parsed, but a value is out of range.
    #[error("invalid setting in {path}: {message}")]
    Invalid {
        /// The file (or "command line").
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and checks a file. Relative paths in it are taken from the
    /// file's folder (see [`Config::resolve_paths`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut cfg = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: shown.clone(),
            message,
        })?;
        cfg.resolve_paths(&config_dir(path));
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: shown,
            message,
        })?;
        Ok(cfg)
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Makes the file's relative paths relative to `base` (the folder of
    /// the file): `security.key_file`, `manager.persist`, each task's `cwd`, and each task's
    /// program when it is a path with a slash (`./run.sh`, `bin/x`); a bare
    /// program name is left for the `PATH` search.
    pub fn resolve_paths(&mut self, base: &Path) {
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(k) = self.security.key_file.as_mut() {
            rebase(k);
        }
        if let Some(p) = self.manager.persist.as_mut() {
            if !persist_is_url(p) {
                rebase(p);
            }
        }
        for task in self.tasks.values_mut() {
            if let Some(cwd) = task.cwd.as_mut() {
                rebase(cwd);
            }
            if let Some(program) = task.command.first_mut() {
                if program.contains('/') && Path::new(program.as_str()).is_relative() {
                    *program = base.join(program.as_str()).to_string_lossy().into_owned();
                }
            }
        }
    }

    /// Range checks that the types alone do not make.
    pub fn validate(&self) -> Result<(), String> {
        if self.worker.capacity == Some(0) {
            return Err("worker.capacity must be at least 1".into());
        }
        if let Some(n) = self.security.max_frame_bytes {
            check_max_frame(n)?;
        }
        if let Some(n) = self.security.max_outgoing_bytes {
            let frame = self
                .security
                .max_frame_bytes
                .unwrap_or(crate::protocol::DEFAULT_MAX_FRAME);
            if n < frame {
                return Err(format!(
                    "security.max_outgoing_bytes ({n}) must be at least max_frame_bytes ({frame})"
                ));
            }
        }
        if let Some(d) = self.manager.lease {
            check_lease(d.0)?;
        }
        if self.manager.result_ttl.is_some_and(|d| d.0.is_zero()) {
            return Err("manager.result_ttl must be more than 0".into());
        }
        if let Some(Dur(d)) = self.security.handshake_timeout {
            if d.is_zero() {
                return Err("security.handshake_timeout must be more than 0".into());
            }
        }
        if self
            .security
            .heartbeat_interval
            .is_some_and(|d| d.0 < Duration::from_millis(10))
        {
            return Err("security.heartbeat_interval must be at least 10ms".into());
        }
        if self.manager.max_connections == Some(0) {
            return Err("manager.max_connections must be at least 1".into());
        }
        if self.manager.max_handshakes == Some(0) {
            return Err("manager.max_handshakes must be at least 1".into());
        }
        if self.manager.max_handshakes_per_address == Some(0) {
            return Err("manager.max_handshakes_per_address must be at least 1".into());
        }
        if let Some(n) = self.manager.max_outgoing_total_bytes {
            let per_peer = self
                .security
                .max_outgoing_bytes
                .unwrap_or(crate::protocol::DEFAULT_MAX_OUTGOING);
            if n < per_peer {
                return Err(format!(
                    "manager.max_outgoing_total_bytes ({n}) must be at least \
                     security.max_outgoing_bytes ({per_peer})"
                ));
            }
        }
        if self.manager.default_timeout.is_some_and(|d| d.0.is_zero()) {
            return Err("manager.default_timeout must be more than 0".into());
        }
        if self.client.retry_for.is_some_and(|d| d.0.is_zero()) {
            return Err("client.retry_for must be more than 0".into());
        }
        for (name, task) in &self.tasks {
            task.validate(name)?;
        }
        crate::actors::manager::periodic::check_entries(&self.schedule)?;
        crate::actors::manager::limits::check_limits(&self.limits)?;
        self.eval.validate()?;
        Ok(())
    }
}

/// The folder relative paths of the file at `path` are taken from, made
/// absolute with the working directory when `path` is relative.
/// A lease of a PostgreSQL store's leader must be 1 s to 1 h.
pub fn check_lease(d: Duration) -> Result<(), String> {
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(format!(
            "manager.lease must be 1s to 1h, not {}",
            humantime::format_duration(d)
        ));
    }
    Ok(())
}

/// Whether a `persist` value is a PostgreSQL URL (`postgres://` or
/// `postgresql://`) rather than a folder.
pub fn persist_is_url(p: &Path) -> bool {
    p.to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

fn config_dir(path: &Path) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new(""));
    std::path::absolute(parent)
        .or_else(|_| std::env::current_dir().map(|d| d.join(parent)))
        .unwrap_or_else(|_| parent.to_path_buf())
}

/// Largest frame must hold a useful message and fit the 32-bit length prefix.
pub fn check_max_frame(n: usize) -> Result<(), String> {
    if !(1024..=u32::MAX as usize).contains(&n) {
        return Err(format!(
            "security.max_frame_bytes must be between 1024 and {} (got {n})",
            u32::MAX
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"
            [security]
            key_file = "/k"
            max_frame_bytes = 2048
            handshake_timeout = "250ms"
            [manager]
            port = 0
            queue_factor = 5
            max_connections = 100
            max_handshakes = 10
            [worker]
            capacity = 2
            drain_timeout = "1m"
            kept_outcomes_max = 10
            kept_outcomes_max_bytes = 4096
            [client]
            retry = true
            "#,
        )
        .unwrap();
        assert_eq!(
            c.security.handshake_timeout,
            Some(Dur(Duration::from_millis(250)))
        );
        assert_eq!(c.worker.drain_timeout, Some(Dur(Duration::from_secs(60))));
        assert_eq!(c.worker.kept_outcomes_max, Some(10));
        assert_eq!(c.worker.kept_outcomes_max_bytes, Some(4096));
        assert_eq!(c.manager.queue_factor, Some(5));
        assert_eq!(c.manager.max_connections, Some(100));
        assert_eq!(c.manager.max_handshakes, Some(10));
        assert_eq!(c.client.retry, Some(true));
        c.validate().unwrap();
    }

    #[test]
    fn http_keys_parse() {
        let c = Config::parse(
            "[manager]\nhttp = \"127.0.0.1:9100\"\nhttp_token_file = \"/etc/argon/t\"\n",
        )
        .unwrap();
        assert_eq!(c.manager.http.as_deref(), Some("127.0.0.1:9100"));
        assert_eq!(
            c.manager.http_token_file.as_deref(),
            Some(std::path::Path::new("/etc/argon/t"))
        );
    }

    #[test]
    fn command_tasks_and_eval_limits_parse_and_validate() {
        let c = Config::parse(
            r#"
            [tasks.wc]
            command = ["wc", "-w"]
            timeout = "2s"
            env = { LANG = "C" }
            cwd = "/tmp"
            [eval]
            max_time = "1s"
            max_operations = 1000
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.tasks["wc"].command, vec!["wc", "-w"]);
        assert_eq!(c.tasks["wc"].env["LANG"], "C");
        assert_eq!(c.eval.max_operations, 1000);
        assert_eq!(c.eval.max_call_depth, EvalLimits::default().max_call_depth);
        let bad = Config::parse("[tasks.\"bad name\"]\ncommand = [\"x\"]\n").unwrap();
        assert!(bad.validate().unwrap_err().contains("invalid task name"));
        let e = Config::parse("[tasks.x]\ncommand = [\"x\"]\nshell = true\n").unwrap_err();
        assert!(e.contains("shell"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[manager]\nqueue_factr = 3\n").unwrap_err();
        assert!(e.contains("queue_factr"), "{e}");
        let e = Config::parse("[managr]\n").unwrap_err();
        assert!(e.contains("managr"), "{e}");
    }

    #[test]
    fn bad_duration_and_zero_capacity_are_errors() {
        let e = Config::parse("[worker]\ndrain_timeout = \"soon\"\n").unwrap_err();
        assert!(e.contains("invalid duration"), "{e}");
        let c = Config::parse("[worker]\ncapacity = 0\n").unwrap();
        assert!(c.validate().unwrap_err().contains("capacity"));
        let c = Config::parse("[security]\nmax_frame_bytes = 10\n").unwrap();
        assert!(c.validate().unwrap_err().contains("max_frame_bytes"));
        let c = Config::parse("[security]\nmax_outgoing_bytes = 4096\n").unwrap();
        assert!(c.validate().unwrap_err().contains("max_outgoing_bytes"));
        let c = Config::parse("[security]\nmax_frame_bytes = 4096\nmax_outgoing_bytes = 4096\n")
            .unwrap();
        assert_eq!(c.validate(), Ok(()));
        let c = Config::parse("[manager]\nmax_connections = 0\n").unwrap();
        assert!(c.validate().unwrap_err().contains("max_connections"));
        let c = Config::parse("[manager]\nmax_handshakes = 0\n").unwrap();
        assert!(c.validate().unwrap_err().contains("max_handshakes"));
        let c = Config::parse("[manager]\nmax_outgoing_total_bytes = 1000\n").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .contains("max_outgoing_total_bytes"));
        let c = Config::parse("[manager]\nmax_handshakes_per_address = 0\n").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .contains("max_handshakes_per_address"));
        let c = Config::parse("[manager]\nresult_ttl = \"0s\"\n").unwrap();
        assert!(c.validate().unwrap_err().contains("result_ttl"));
        let c = Config::parse(
            "[manager]\nresult_ttl = \"10m\"\nresult_max = 5\nresult_max_bytes = 4096\n",
        )
        .unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.manager.result_ttl.map(|d| d.0),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            (c.manager.result_max, c.manager.result_max_bytes),
            (Some(5), Some(4096))
        );
    }

    #[test]
    fn load_names_the_file_in_errors() {
        let dir = std::env::temp_dir().join(format!("argon-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(&p, "[manager\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.toml"), "{e}");
        let e = Config::load(&dir.join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parse_errors_keep_the_caret_diagram() {
        let e = Config::parse("[manager]\nport = \"x\"\n").unwrap_err();
        let caret = e
            .lines()
            .find(|l| l.trim_start().starts_with('|') && l.contains('^'));
        assert!(caret.is_some(), "no caret line in {e:?}");
    }

    #[test]
    fn load_resolves_relative_paths_from_the_files_folder() {
        let dir = std::env::temp_dir().join(format!("argon-cfg-rel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            "[security]\nkey_file = \"keys/k\"\n\
             [tasks.a]\ncommand = [\"./bin/run\", \"./arg\"]\ncwd = \"work\"\n\
             [tasks.b]\ncommand = [\"cat\"]\ncwd = \"/abs\"\n",
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        let base = std::path::absolute(&dir).unwrap();
        assert_eq!(c.security.key_file, Some(base.join("keys/k")));
        assert_eq!(c.tasks["a"].cwd, Some(base.join("work")));
        assert_eq!(
            c.tasks["a"].command,
            vec![
                base.join("./bin/run").to_string_lossy().into_owned(),
                "./arg".into()
            ]
        );
        assert_eq!(c.tasks["b"].command, vec!["cat"]);
        assert_eq!(c.tasks["b"].cwd, Some(PathBuf::from("/abs")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_postgres_url_in_persist_is_not_taken_for_a_relative_path() {
        for url in ["postgres://argon@db:5432/tasks", "postgresql://db/tasks"] {
            let mut c = Config::parse(&format!("[manager]\npersist = \"{url}\"\n")).unwrap();
            c.resolve_paths(Path::new("/etc/argon"));
            assert_eq!(c.manager.persist, Some(PathBuf::from(url)));
        }
        let mut c = Config::parse("[manager]\npersist = \"store\"\n").unwrap();
        c.resolve_paths(Path::new("/etc/argon"));
        assert_eq!(c.manager.persist, Some(PathBuf::from("/etc/argon/store")));
        assert!(!persist_is_url(Path::new("postgres")));
    }

    #[test]
    fn a_lease_is_one_second_to_one_hour() {
        let c = Config::parse("[manager]\nlease = \"3s\"\n").unwrap();
        assert_eq!(c.manager.lease, Some(Dur(Duration::from_secs(3))));
        assert!(c.validate().is_ok());
        for bad in ["500ms", "2h"] {
            let c = Config::parse(&format!("[manager]\nlease = \"{bad}\"\n")).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.contains("manager.lease must be 1s to 1h"), "{e}");
        }
    }
}
