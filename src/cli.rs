//! Command-line interface: clap types for every subcommand and the code that
//! runs each one. `main.rs` only parses, sets up logging and calls [`run`].
//!
//! Flag precedence: flag, then environment (`ARGON_KEY`, `ARGON_MGR`), then
//! the `--config` file, then the built-in default.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::actors::ManagerSettings;
use crate::client::{Client, ClientConfig, QueueOptions};
use crate::config::Config;
use crate::launch::{
    check_mgr_addr, handshake_settings, load_config, Failure, KeyArgs, DEFAULT_MGR, EXIT_FAILED,
    EXIT_USAGE,
};
use crate::protocol::{Priority, Value};
use crate::runtime;
use crate::task::eval::eval_args;
use crate::task::{TaskRegistry, EVAL_TASK};
use crate::worker_main::{run_worker, WorkerArgs};

/// Argon: distributed task processing with a bounded queue.
#[derive(Parser, Debug)]
#[command(name = "argon", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file; flags override its values.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (-q errors only, -qq nothing).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a new random key file (mode 0600); never overwrites.
    Keygen {
        /// Where to write it.
        path: PathBuf,
    },
    /// Run the manager.
    Manager(ManagerArgs),
    /// Run a worker.
    Worker(WorkerArgs),
    /// Queue one task and print its result as JSON.
    Submit(SubmitArgs),
    /// Run a Rhai script on a worker that allows eval; print its result as JSON.
    Eval(EvalArgs),
    /// Show workers, capacity, tasks in flight and queue lengths.
    Status(StatusArgs),
    /// Measure the round trip to the manager.
    Ping(PingArgs),
    /// Run a manager and workers in one process on 127.0.0.1 with a fresh key.
    Cluster(ClusterArgs),
    /// Start an embedded cluster and overrun it with work, showing what Argon does when full.
    Demo(DemoArgs),
    /// Load generator: throughput and round-trip percentiles against a manager.
    Bench(BenchArgs),
}

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
}

/// Manager address and key for client commands.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Manager address [default: 127.0.0.1:8000].
    #[arg(long, env = "ARGON_MGR", value_name = "HOST:PORT")]
    pub mgr: Option<String>,
    /// Key file.
    #[command(flatten)]
    pub key: KeyArgs,
}

/// How `submit` and `eval` send their one task.
#[derive(Args, Debug)]
pub struct TaskOptArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// When denied, retry on a logarithmic backoff instead of exiting 75.
    #[arg(long)]
    pub retry: bool,
    /// high, normal or low.
    #[arg(long, default_value = "normal")]
    pub priority: Priority,
    /// Deadline for the task, e.g. 500ms, 5s, 2m.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DUR")]
    pub timeout: Option<Duration>,
    /// How many times the task may be started if its worker is lost
    /// [default: the manager's, 1 unless configured].
    #[arg(long, value_name = "N")]
    pub attempts: Option<u32>,
}

/// `argon submit`
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Manager, key and task options.
    #[command(flatten)]
    pub opts: TaskOptArgs,
    /// Task name.
    pub task: String,
    /// Arguments as JSON [default: null].
    #[arg(value_name = "ARGS_JSON")]
    pub args: Option<String>,
}

/// `argon eval`
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Manager, key and task options.
    #[command(flatten)]
    pub opts: TaskOptArgs,
    /// The script's text, or @FILE to read it from a file. It sees its
    /// arguments as `args`; its last value is the result.
    pub script: String,
    /// Arguments as JSON [default: null].
    #[arg(value_name = "ARGS_JSON")]
    pub args: Option<String>,
}

/// `argon status`
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `argon ping`
#[derive(Args, Debug)]
pub struct PingArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Number of round trips.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub count: u32,
}

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
}

/// `argon demo`
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Tasks to run in all.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tasks: u32,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub clients: u32,
    /// Tasks each client keeps in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub window: u32,
}

/// `argon bench`
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Manager and key (not needed with --cluster).
    #[command(flatten)]
    pub client: ClientArgs,
    /// Start an embedded cluster and measure it instead of a running manager.
    #[arg(long)]
    pub cluster: bool,
    /// With --cluster: number of workers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: u32,
    /// With --cluster: slots per worker.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: u32,
    /// With --cluster: queue bound = capacity × this.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub queue_factor: u32,
    /// Tasks in all.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub tasks: u32,
    /// Tasks in flight at once.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Connections to spread them over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// Task to run.
    #[arg(long, default_value = "echo")]
    pub task: String,
    /// Bytes of binary payload sent as each task's arguments.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub payload: usize,
    /// JSON arguments for each task (instead of --payload), e.g. 5 for sleep.
    #[arg(long, value_name = "JSON")]
    pub args: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Instead of a load run: open N authenticated connections that stay idle,
    /// print one line once all are up, hold them for --hold, then exit (to
    /// measure what idle clients cost the manager).
    #[arg(long, value_name = "N", conflicts_with = "cluster",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub idle_clients: Option<u32>,
    /// With --idle-clients: how long to hold the connections (e.g. 10s); SIGINT or
    /// SIGTERM ends the hold early.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "10s")]
    pub hold: Duration,
}

/// The default log level for a command: servers say what they do, client
/// commands stay quiet unless something is wrong.
pub fn default_log_level(cmd: &Command) -> log::LevelFilter {
    match cmd {
        Command::Manager(_) | Command::Worker(_) | Command::Cluster(_) => log::LevelFilter::Info,
        _ => log::LevelFilter::Warn,
    }
}

/// Starts an embedded cluster on 127.0.0.1; a failure is exit 1 with one line.
pub async fn start_cluster(
    workers: usize,
    capacity: usize,
    port: u16,
    settings: ManagerSettings,
) -> Result<runtime::Cluster, Failure> {
    runtime::Cluster::start(workers, capacity, port, settings)
        .await
        .map_err(|e| {
            Failure::new(
                EXIT_FAILED,
                format!("cannot start the embedded cluster: {e}"),
            )
        })
}

/// Runs a parsed command line. Returns the exit code's failure, if any.
pub fn run(cli: Cli) -> Result<(), Failure> {
    let config = load_config(cli.config.as_deref())?;
    let system = actix::System::new();
    match cli.command {
        Command::Keygen { path } => runtime::write_key_file(&path)
            .map(|_| outln!("wrote a new key to {}", path.display()))
            .map_err(|e| Failure::new(EXIT_FAILED, e.to_string())),
        Command::Manager(a) => system.block_on(manager(a, &config)),
        Command::Worker(a) => {
            system.block_on(run_worker(a, &config, TaskRegistry::with_builtins()))
        }
        Command::Submit(a) => system.block_on(submit(a, &config)),
        Command::Eval(a) => system.block_on(eval(a, &config)),
        Command::Status(a) => system.block_on(status(a, &config)),
        Command::Ping(a) => system.block_on(ping(a, &config)),
        Command::Cluster(a) => system.block_on(cluster(a)),
        Command::Demo(a) => system.block_on(crate::demo::run(a.tasks, a.clients, a.window)),
        Command::Bench(a) => system.block_on(bench(a, &config)),
    }
}

fn parse_json_arg(what: &str, text: &str) -> Result<Value, Failure> {
    let j: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("{what} is not valid JSON: {e}")))?;
    Ok(crate::json::to_value(j))
}

async fn bench(a: BenchArgs, config: &Config) -> Result<(), Failure> {
    if let Some(n) = a.idle_clients {
        let cc = client_config(&a.client, config)?;
        return crate::bench::hold_idle(cc, n, a.hold, runtime::shutdown_signal()).await;
    }
    let plan = crate::bench::BenchPlan {
        tasks: a.tasks,
        concurrency: a.concurrency,
        clients: a.clients,
        task: a.task.clone(),
        args: a
            .args
            .as_deref()
            .map(|t| parse_json_arg("--args", t))
            .transpose()?,
        payload: a.payload,
    };
    let show = !a.json;
    let report = if a.cluster {
        crate::bench::run_on_cluster(
            a.workers as usize,
            a.capacity as usize,
            a.queue_factor,
            &plan,
            show,
        )
        .await?
    } else {
        crate::bench::run(client_config(&a.client, config)?, &plan, show).await?
    };
    if a.json {
        let text =
            serde_json::to_string(&report).map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
        outln!("{text}");
    } else {
        outln!("{}", crate::bench::describe(&report));
    }
    Ok(())
}

async fn manager(a: ManagerArgs, config: &Config) -> Result<(), Failure> {
    let hs = handshake_settings(&a.key, config)?;
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
        ..defaults
    };
    let bind = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let handle = runtime::start_manager(&bind, settings, hs)
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, format!("cannot listen on {bind}: {e}")))?;
    outln!("argon manager listening on {}", handle.addr);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    runtime::shutdown_signal().await;
    log::info!("manager shutting down");
    Ok(())
}

fn client_config(a: &ClientArgs, config: &Config) -> Result<ClientConfig, Failure> {
    let hs = handshake_settings(&a.key, config)?;
    let mgr = a
        .mgr
        .clone()
        .or_else(|| config.client.mgr.clone())
        .unwrap_or_else(|| DEFAULT_MGR.into());
    check_mgr_addr(&mgr)?;
    let mut c = ClientConfig::new(mgr, hs);
    c.retry = config.client.retry.unwrap_or(false);
    Ok(c)
}

/// Runs one task and prints its result as JSON.
async fn run_one(o: TaskOptArgs, config: &Config, task: &str, args: Value) -> Result<(), Failure> {
    let mut cc = client_config(&o.client, config)?;
    cc.retry = cc.retry || o.retry;
    let client = Client::connect(cc).await?;
    let opts = QueueOptions {
        priority: o.priority,
        timeout: o.timeout,
        attempts: o.attempts.unwrap_or(0),
        retry: None,
    };
    let value = client.queue_with(task, args, &opts).await?;
    outln!("{}", crate::json::to_json(&value));
    Ok(())
}

fn json_args(text: Option<&str>) -> Result<Value, Failure> {
    text.map_or(Ok(Value::Nil), |t| parse_json_arg("ARGS_JSON", t))
}

async fn submit(a: SubmitArgs, config: &Config) -> Result<(), Failure> {
    let args = json_args(a.args.as_deref())?;
    run_one(a.opts, config, &a.task, args).await
}

async fn eval(a: EvalArgs, config: &Config) -> Result<(), Failure> {
    let script = match a.script.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("cannot read script {path}: {e}")))?,
        None => a.script.clone(),
    };
    let args = eval_args(&script, json_args(a.args.as_deref())?);
    run_one(a.opts, config, EVAL_TASK, args).await
}

async fn status(a: StatusArgs, config: &Config) -> Result<(), Failure> {
    let client = Client::connect(client_config(&a.client, config)?).await?;
    let s = client.status().await?;
    if a.json {
        let text =
            serde_json::to_string(&s).map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
        outln!("{text}");
        return Ok(());
    }
    outln!(
        "workers {}  capacity {}  in flight {}  queued {}/{} (high {}, normal {}, low {})  avg task {:.3} ms",
        s.workers,
        s.capacity,
        s.in_flight,
        s.queued,
        s.queue_limit,
        s.queued_by_priority.high,
        s.queued_by_priority.normal,
        s.queued_by_priority.low,
        s.avg_task_ms
    );
    outln!("completed {}  denied {}", s.completed, s.denied);
    if !s.worker_list.is_empty() {
        outln!(
            "\n{:>4}  {:<22} {:>8} {:>9} {:>10}  {:<5} tasks",
            "id",
            "address",
            "capacity",
            "in flight",
            "avg ms",
            "eval"
        );
        for w in &s.worker_list {
            outln!(
                "{:>4}  {:<22} {:>8} {:>9} {:>10.3}  {:<5} {}{}",
                w.id,
                w.address,
                w.capacity,
                w.in_flight,
                w.avg_ms,
                if w.eval { "yes" } else { "no" },
                w.tasks.join(","),
                if w.draining { "  (draining)" } else { "" }
            );
        }
    }
    Ok(())
}

async fn ping(a: PingArgs, config: &Config) -> Result<(), Failure> {
    let client = Client::connect(client_config(&a.client, config)?).await?;
    for _ in 0..a.count.max(1) {
        let rtt = client.ping().await?;
        outln!(
            "pong from {} in {:.3} ms",
            client.config().mgr,
            rtt.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

async fn cluster(a: ClusterArgs) -> Result<(), Failure> {
    let settings = ManagerSettings {
        queue_factor: a.queue_factor,
        ..ManagerSettings::default()
    };
    let c = start_cluster(a.workers as usize, a.capacity as usize, a.port, settings).await?;
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
    runtime::shutdown_signal().await;
    log::info!("shutting down the cluster");
    c.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
