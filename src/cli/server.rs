//! The server commands: `keygen` writes the shared key, `manager` runs the
//! manager until a signal (then drains it; a second signal stops at once),
//! and `worker` runs the library's worker process with the built-in tasks.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use argon::actors::manager::retry::MAX_RETRIES;
use argon::actors::manager::{Manager, RedbStore};
use argon::actors::ManagerSettings;
use argon::admission::{self, ConnectionLimits};
use argon::config::{persist_is_url, Config};
use argon::launch::{
    handshake_settings, Failure, KeyArgs, EXIT_CONFIG, EXIT_FAILED, EXIT_OS, EXIT_USAGE,
};
use argon::runtime;
use argon::task::TaskRegistry;
use argon::worker_main::{run_worker, WorkerArgs};

/// `argon manager`
#[derive(Args, Debug)]
pub struct ManagerArgs {
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one [default: 8000].
    #[arg(long)]
    pub port: Option<u16>,
    /// Key file.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Queue bound = total capacity × this [default: 3].
    #[arg(long, value_name = "N")]
    pub queue_factor: Option<u32>,
    /// Connections held at once, workers and handshakes included; more are
    /// refused [default: the descriptor limit minus 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Serve the dashboard (/) and its actions, /api/overview, /metrics,
    /// /healthz and /readyz over HTTP on this address
    /// [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// File with the bearer token the HTTP side requires (except /healthz
    /// and the page /); the dashboard's actions are off without one.
    #[arg(long, value_name = "FILE")]
    pub http_token_file: Option<std::path::PathBuf>,
    /// On SIGINT/SIGTERM, how long running tasks may take to finish before
    /// they are cancelled [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Retries after a failed run for tasks submitted without --retries, at
    /// most 10 [default: 0].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RETRIES)))]
    pub default_retries: Option<u32>,
    /// Durable mode: keep the task store in this folder, or in the
    /// PostgreSQL database at this URL (postgres://USER@HOST:PORT/DB), so
    /// queued and running tasks and kept results survive a restart (see the
    /// README's Durability) [default: off].
    #[arg(long, value_name = "DIR|URL")]
    pub persist: Option<std::path::PathBuf>,
    /// With --persist a PostgreSQL URL: how long the leading manager's
    /// lease lasts unless renewed; a frozen leader is replaced after it
    /// (1s to 1h) [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub lease: Option<Duration>,
}

/// How long a stopping manager lets running tasks finish, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `argon keygen`: writes a new random key file; never overwrites. A path
/// that cannot take a new file (it exists, its folder is missing or not
/// writable) is bad input (exit 2); a failure while writing is exit 1.
pub fn keygen(path: &Path) -> Result<(), Failure> {
    use std::io::ErrorKind::*;
    runtime::write_key_file(path)
        .map(|_| outln!("wrote a new key to {}", path.display()))
        .map_err(|e| {
            let code = match e.kind() {
                AlreadyExists | NotFound | PermissionDenied | NotADirectory | IsADirectory
                | ReadOnlyFilesystem => EXIT_USAGE,
                _ => EXIT_FAILED,
            };
            Failure::new(code, e.to_string())
        })
}

/// `argon manager`: listens until SIGINT or SIGTERM, then drains (see
/// [`until_stopped`]).
pub async fn manager(a: ManagerArgs, config: &Config) -> Result<(), Failure> {
    let hs = handshake_settings(&a.key, config)?;
    #[cfg_attr(not(feature = "http"), allow(unused_variables))]
    let http = http_side(&a, config)?;
    let host = a
        .host
        .or_else(|| config.manager.host.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = a.port.or(config.manager.port).unwrap_or(8000);
    let defaults = ManagerSettings::default();
    let settings = ManagerSettings {
        queue_factor: a.queue_factor.or(config.manager.queue_factor).unwrap_or(3),
        default_timeout: config.manager.default_timeout.map(|d| d.0),
        default_attempts: config.manager.default_attempts.unwrap_or(1),
        timeout_grace: config
            .manager
            .timeout_grace
            .map_or(defaults.timeout_grace, |d| d.0),
        result_ttl: config
            .manager
            .result_ttl
            .map_or(defaults.result_ttl, |d| d.0),
        result_max: config.manager.result_max.unwrap_or(defaults.result_max),
        default_retries: a
            .default_retries
            .or(config.manager.default_retries)
            .unwrap_or(defaults.default_retries),
        retry_base: config
            .manager
            .retry_base
            .map_or(defaults.retry_base, |d| d.0),
        retry_max: config.manager.retry_max.map_or(defaults.retry_max, |d| d.0),
        dead_max: config.manager.dead_max.unwrap_or(defaults.dead_max),
        scheduled_max: config
            .manager
            .scheduled_max
            .unwrap_or(defaults.scheduled_max),
        unique_max: config.manager.unique_max.unwrap_or(defaults.unique_max),
        result_max_bytes: config
            .manager
            .result_max_bytes
            .unwrap_or(defaults.result_max_bytes),
        recovery_grace: config
            .manager
            .recovery_grace
            .map_or(defaults.recovery_grace, |d| d.0),
        provider_grace: config.manager.provider_grace.map(|d| d.0),
        schedules: argon::actors::manager::periodic::check_entries(&config.schedule)
            .map_err(|e| Failure::new(EXIT_USAGE, e))?,
        limits: argon::actors::manager::limits::check_limits(&config.limits)
            .map_err(|e| Failure::new(EXIT_USAGE, e))?,
        ..defaults
    };
    if settings.default_retries > MAX_RETRIES {
        return Err(Failure::new(
            EXIT_USAGE,
            format!(
                "manager.default_retries must be at most {MAX_RETRIES} (got {})",
                settings.default_retries
            ),
        ));
    }
    if settings.retry_base > settings.retry_max {
        return Err(Failure::new(
            EXIT_USAGE,
            "manager.retry_base must not exceed manager.retry_max",
        ));
    }
    let max_handshakes = config
        .manager
        .max_handshakes
        .unwrap_or(admission::DEFAULT_MAX_HANDSHAKES);
    let limits = ConnectionLimits {
        max_connections: a
            .max_connections
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .or(config.manager.max_connections)
            .unwrap_or_else(admission::default_max_connections),
        max_handshakes,
        max_handshakes_per_address: config
            .manager
            .max_handshakes_per_address
            .unwrap_or_else(|| admission::default_per_address(max_handshakes)),
        max_outgoing_total: config
            .manager
            .max_outgoing_total_bytes
            .unwrap_or_else(argon::outgoing::default_max_total),
    };
    let drain = a
        .drain_timeout
        .or(config.manager.drain_timeout.map(|d| d.0))
        .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    let bind = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    // Caught from before the startup line on, so that no signal after it
    // finds the default action (exit at once) in place.
    let mut signals = runtime::Signals::new();
    let manager = match a.persist.as_deref().or(config.manager.persist.as_deref()) {
        Some(url) if persist_is_url(url) => {
            let lease = a.lease.or(config.manager.lease.map(|d| d.0));
            if let Some(d) = lease {
                argon::config::check_lease(d).map_err(|e| Failure::new(EXIT_USAGE, e))?;
            }
            open_postgres(url, lease, settings)?
        }
        Some(dir) => {
            let store =
                RedbStore::open(dir).map_err(|e| Failure::new(EXIT_CONFIG, e.to_string()))?;
            Manager::with_store(settings, store)
        }
        None => Manager::new(settings),
    };
    let handle = runtime::start_manager_for(&bind, manager, hs, limits)
        .await
        .map_err(|e| Failure::new(EXIT_OS, format!("cannot listen on {bind}: {e}")))?;
    outln!("argon manager listening on {}", handle.addr);
    #[cfg(feature = "http")]
    if let Some((bind, token)) = http {
        let addr = argon::http::start(bind, handle.manager.clone(), token)
            .map_err(|e| Failure::new(EXIT_OS, format!("cannot serve HTTP: {e}")))?;
        outln!("argon manager http on {addr}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    argon::launch::notify_service_manager(sd_notify::NotifyState::Ready);
    tokio::select! {
        _ = signals.next() => {
            argon::launch::notify_service_manager(sd_notify::NotifyState::Stopping);
            until_stopped(handle.shutdown(drain), &mut signals).await
        }
        why = handle.failed() => Err(Failure::new(EXIT_FAILED, why)),
    }
}

/// A manager over the PostgreSQL store at `url`, waiting as a standby
/// while another manager leads; `lease` overrides the default lease. A
/// store that cannot be opened is exit 78, a build without the cargo
/// feature `postgres` exit 2.
#[cfg(feature = "postgres")]
fn open_postgres(
    url: &Path,
    lease: Option<Duration>,
    settings: ManagerSettings,
) -> Result<Manager, Failure> {
    use argon::actors::manager::store::postgres::{PgOptions, PgStore};
    let mut options = PgOptions::default();
    if let Some(d) = lease {
        options.lease = d;
    }
    let store = PgStore::open_with(&url.to_string_lossy(), &options)
        .map_err(|e| Failure::new(EXIT_CONFIG, e.to_string()))?;
    Ok(Manager::with_store(settings, store))
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_: &Path, _: Option<Duration>, _: ManagerSettings) -> Result<Manager, Failure> {
    Err(argon::launch::not_built(
        "postgres",
        "--persist postgres://... (or manager.persist)",
    ))
}

/// Runs a graceful stop (`stop`) unless another signal comes first: then
/// stops at once, leaving tasks unanswered, with exit code 1.
pub async fn until_stopped<F: std::future::Future>(
    stop: F,
    signals: &mut runtime::Signals,
) -> Result<(), Failure> {
    tokio::select! {
        _ = stop => Ok(()),
        _ = signals.next() => {
            log::warn!("second signal: stopping at once, without answering the tasks left");
            Err(Failure::new(
                EXIT_FAILED,
                "stopped at once by a second signal; tasks still running were not answered",
            ))
        }
    }
}

/// The HTTP side `a` and the config ask for: where it listens and the
/// token it requires, if any. Asking for it from a build without the cargo
/// feature `http` is an error.
fn http_side(
    a: &ManagerArgs,
    config: &Config,
) -> Result<Option<(HttpListener, Option<String>)>, Failure> {
    let token = match a
        .http_token_file
        .as_deref()
        .or(config.manager.http_token_file.as_deref())
    {
        Some(path) => Some(read_http_token(path)?),
        None => None,
    };
    let Some(bind) = a.http.clone().or_else(|| config.manager.http.clone()) else {
        return Ok(None);
    };
    #[cfg(not(feature = "http"))]
    {
        let _ = (bind, token);
        Err(argon::launch::not_built("http", "--http (or manager.http)"))
    }
    #[cfg(feature = "http")]
    {
        use argon::http::BindError;
        let listener = argon::http::bind(&bind).map_err(|e| {
            let code = match e {
                BindError::Address(..) => EXIT_USAGE,
                BindError::Refused(..) => EXIT_OS,
            };
            Failure::new(code, e.to_string())
        })?;
        Ok(Some((listener, token)))
    }
}

/// The HTTP side's listener, bound before the manager starts.
#[cfg(feature = "http")]
type HttpListener = std::net::TcpListener;
#[cfg(not(feature = "http"))]
type HttpListener = std::convert::Infallible;

/// The bearer token in `path`, without surrounding whitespace; an empty or
/// unreadable file is bad usage.
fn read_http_token(path: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            EXIT_USAGE,
            format!("cannot read HTTP token file {}: {e}", path.display()),
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Failure::new(
            EXIT_USAGE,
            format!("HTTP token file {} is empty", path.display()),
        ));
    }
    Ok(token.to_string())
}

/// `argon worker`: the stock worker, with the built-in tasks.
pub async fn worker(a: WorkerArgs, config: &Config) -> Result<(), Failure> {
    run_worker(a, config, TaskRegistry::with_builtins()).await
}
