//! The worker process: `argon worker` and worker programs built with the
//! library run the same code here. [`worker_main`] is the whole `main` of a
//! program with tasks of its own; [`run_worker`] is the part after parsing
//! and logging, which `argon worker` calls with the built-in tasks.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::actors::worker::kept::{KeepBounds, DEFAULT_KEPT_MAX, DEFAULT_KEPT_MAX_BYTES};
use crate::actors::WorkerSettings;
use crate::client::ClientError;
use crate::config::Config;
use crate::launch::{
    check_mgr_addr, exit_code, handshake_settings, init_logging, install_panic_hook, load_config,
    not_built, Failure, KeyArgs, DEFAULT_MGR, EXIT_CONFIG,
};
use crate::messages::{GaveUp, WaitGaveUp};
use crate::runtime;
use crate::task::TaskRegistry;

/// `argon worker`
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Manager address [default: 127.0.0.1:8000].
    #[arg(long, env = "ARGON_MGR", value_name = "HOST:PORT")]
    pub mgr: Option<String>,
    /// Slots: how many tasks run at once [default: number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: Option<u32>,
    /// Key file.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Accept eval scripts from clients.
    #[arg(long)]
    pub allow_eval: bool,
    /// For load tests: run N independent workers in this process, each with
    /// its own connection, registration and `capacity` slots.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub instances: u32,
}

/// Turns eval on in `registry`, with the config's `[eval]` limits, when
/// `flag` (`--allow-eval`) or `worker.allow_eval` asks for it; returns
/// whether it did. In a build without the cargo feature `eval`, asking is
/// an error (exit 2) rather than a worker that takes no scripts.
pub fn allow_eval(
    flag: bool,
    config: &Config,
    registry: &mut TaskRegistry,
) -> Result<bool, Failure> {
    if !(flag || config.worker.allow_eval.unwrap_or(false)) {
        return Ok(false);
    }
    if !registry.enable_eval_if_built(config.eval.clone()) {
        return Err(not_built("eval", "--allow-eval (or worker.allow_eval)"));
    }
    Ok(true)
}

/// Runs a worker with `registry`'s tasks plus the command tasks of the
/// config file, until SIGINT/SIGTERM, then drains it; a second signal
/// while draining stops it at once (exit 130 or 143).
pub async fn run_worker(
    a: WorkerArgs,
    config: &Config,
    mut registry: TaskRegistry,
) -> Result<(), Failure> {
    let hs = handshake_settings(&a.key, config)?;
    let capacity = a
        .capacity
        .map(|c| c as usize)
        .or(config.worker.capacity)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    crate::task::command::warn_missing(&config.tasks);
    registry.register_commands(&config.tasks);
    let allow_eval = allow_eval(a.allow_eval, config, &mut registry)?;
    let mgr = a
        .mgr
        .or_else(|| config.worker.mgr.clone())
        .unwrap_or_else(|| DEFAULT_MGR.into());
    check_mgr_addr(&mgr)?;
    let settings = WorkerSettings {
        mgr,
        capacity,
        allow_eval,
        handshake: hs,
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(10),
        keep: KeepBounds {
            max: config.worker.kept_outcomes_max.unwrap_or(DEFAULT_KEPT_MAX),
            max_bytes: config
                .worker
                .kept_outcomes_max_bytes
                .unwrap_or(DEFAULT_KEPT_MAX_BYTES),
        },
    };
    let drain = config
        .worker
        .drain_timeout
        .map_or(Duration::from_secs(30), |d| d.0);
    let pools: Vec<_> = (0..a.instances)
        .map(|_| runtime::start_worker(settings.clone(), registry.clone()))
        .collect();
    let gave_up =
        futures_util::future::select_all(pools.iter().map(|p| Box::pin(p.send(WaitGaveUp))));
    let mut signals = runtime::Signals::new();
    tokio::select! {
        _ = signals.next() => {}
        (Ok(why), _, _) = gave_up => return Err(gave_up_failure(why)),
    }
    log::info!(
        "signal received: draining (up to {}); a second signal stops at once",
        humantime::format_duration(drain)
    );
    let drained =
        futures_util::future::join_all(pools.iter().map(|p| runtime::drain_worker(p, drain)));
    tokio::select! {
        _ = drained => {}
        signo = signals.next() => return Err(stopped_at_once(signo)),
    }
    log::info!("worker stopped");
    Ok(())
}

/// A second signal while draining: exit at once with 128 + its number (130
/// for SIGINT, 143 for SIGTERM); the tasks in flight are killed with the
/// worker, and the manager answers or requeues them as for any lost worker.
fn stopped_at_once(signo: i32) -> Failure {
    Failure::new(
        128 + signo,
        "second signal while draining: stopped without waiting for the tasks in flight",
    )
}

/// The exit of a worker whose pool gave up: a refused key is the key
/// error clients report (exit 77); a registration refused for good is a
/// configuration the manager cannot take (exit 78).
fn gave_up_failure(why: GaveUp) -> Failure {
    match why {
        GaveUp::BadKey { mgr } => Failure::from(ClientError::Auth { addr: mgr }),
        refused @ GaveUp::Refused { .. } => Failure::new(EXIT_CONFIG, refused.to_string()),
    }
}

/// Command line of a worker program built with the library: the same
/// flags and config file as `argon worker`.
#[derive(Parser, Debug)]
#[command(version, about = "An Argon worker", long_about = None)]
pub struct WorkerCli {
    /// TOML configuration file; flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (-q errors only, -qq nothing).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// Worker flags.
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// The `main` of a worker program with tasks of its own: parses the same
/// flags and config as `argon worker`, sets up logging, runs until SIGINT or
/// SIGTERM, and returns the exit code.
///
/// ```no_run
/// use argon::task::TaskRegistry;
///
/// fn main() -> std::process::ExitCode {
///     let mut tasks = TaskRegistry::with_builtins();
///     tasks.register_fn("shout", |v| async move {
///         Ok(argon::Value::from(v.as_str().unwrap_or_default().to_uppercase()))
///     });
///     argon::worker_main(tasks)
/// }
/// ```
pub fn worker_main(registry: TaskRegistry) -> std::process::ExitCode {
    #[cfg(feature = "eval")]
    crate::task::eval::serve_if_runner();
    let cli = WorkerCli::parse();
    init_logging(log::LevelFilter::Info, cli.verbose, cli.quiet);
    install_panic_hook();
    let result = load_config(cli.config.as_deref()).and_then(|config| {
        actix::System::new().block_on(run_worker(cli.worker, &config, registry))
    });
    exit_code(result)
}
