//! `argon cluster`: a manager and workers in one process on 127.0.0.1 until
//! a signal, with a fresh key or the config file's `security.key_file`, and
//! the config's command tasks and `worker.allow_eval`. [`start_cluster`] is
//! also how `bench --cluster` and `demo` get theirs.

use std::time::Duration;

use clap::Args;

use argon::actors::ManagerSettings;
use argon::config::Config;
use argon::launch::{handshake_settings, Failure, KeyArgs, EXIT_FAILED};
use argon::runtime::{self, ClusterOptions};
use argon::task::command::warn_missing;
use argon::task::TaskRegistry;

/// `argon cluster`
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Number of workers.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: u32,
    /// Port for the manager; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Queue bound = total capacity × this.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub queue_factor: u32,
    /// On SIGINT/SIGTERM, how long running tasks may take to finish before
    /// they are cancelled.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,
    /// Workers accept eval scripts (also `worker.allow_eval` in the config).
    #[arg(long)]
    pub allow_eval: bool,
}

/// Starts an embedded cluster on 127.0.0.1; a failure is exit 1 with one line.
#[cfg(feature = "bench")]
pub async fn start_cluster(
    workers: usize,
    capacity: usize,
    port: u16,
    settings: ManagerSettings,
) -> Result<runtime::Cluster, Failure> {
    start_cluster_with(workers, capacity, port, settings, ClusterOptions::default()).await
}

/// [`start_cluster`] with tasks, eval and key of `opts`.
pub async fn start_cluster_with(
    workers: usize,
    capacity: usize,
    port: u16,
    settings: ManagerSettings,
    opts: ClusterOptions,
) -> Result<runtime::Cluster, Failure> {
    runtime::Cluster::start_with(workers, capacity, port, settings, opts)
        .await
        .map_err(|e| {
            Failure::new(
                EXIT_FAILED,
                format!("cannot start the embedded cluster: {e}"),
            )
        })
}

/// The config's part in a cluster: its command tasks, eval (with its
/// limits) and key file with its transport settings.
fn cluster_options(allow_eval: bool, config: &Config) -> Result<ClusterOptions, Failure> {
    let mut registry = TaskRegistry::with_builtins();
    warn_missing(&config.tasks);
    registry.register_commands(&config.tasks);
    let allow_eval = argon::worker_main::allow_eval(allow_eval, config, &mut registry)?;
    let handshake = match &config.security.key_file {
        Some(path) => Some((
            path.clone(),
            handshake_settings(&KeyArgs { key: None }, config)?,
        )),
        None => None,
    };
    Ok(ClusterOptions {
        registry,
        allow_eval,
        handshake,
    })
}

/// `argon cluster`: prints where the manager listens and its key file;
/// stops as `argon manager` does ([`super::server::until_stopped`]).
pub async fn cluster(a: ClusterArgs, config: &Config) -> Result<(), Failure> {
    let mut signals = runtime::Signals::new();
    let settings = ManagerSettings {
        queue_factor: a.queue_factor,
        ..ManagerSettings::default()
    };
    let opts = cluster_options(a.allow_eval, config)?;
    let c = start_cluster_with(
        a.workers as usize,
        a.capacity as usize,
        a.port,
        settings,
        opts,
    )
    .await?;
    outln!("argon manager listening on {}", c.manager.addr);
    outln!("key file: {}", c.key_path.display());
    outln!(
        "{} workers x {} slots; try: argon submit --mgr {} --key {} echo '[\"hi\"]'",
        a.workers,
        a.capacity,
        c.manager.addr,
        c.key_path.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    signals.next().await;
    super::server::until_stopped(c.shutdown(a.drain_timeout), &mut signals).await
}
