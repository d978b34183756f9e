//! The `argon` subcommands: the clap types of the whole command line, and
//! [`run`], which hands each parsed command to its module. `main.rs` only
//! parses, sets up logging and calls [`run`].
//!
//! Flag precedence: flag, then environment (`ARGON_KEY`, `ARGON_MGR`), then
//! the `--config` file, then the built-in default.

mod args;
#[cfg(feature = "bench")]
mod bench;
mod cluster;
#[cfg(feature = "bench")]
mod demo;
mod failed;
mod map;
mod schedules;
mod server;
mod status;
mod submit;
mod tasks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[cfg(not(feature = "bench"))]
use argon::launch::not_built;
use argon::launch::{load_config, Failure};
use argon::worker_main::WorkerArgs;

#[cfg(feature = "bench")]
use bench::BenchArgs;
use cluster::ClusterArgs;
#[cfg(feature = "bench")]
use demo::DemoArgs;
use failed::FailedArgs;
use map::MapArgs;
use schedules::SchedulesArgs;
use server::ManagerArgs;
use status::{PingArgs, StatusArgs};
use submit::{EvalArgs, SubmitArgs};
use tasks::{CancelArgs, ResultArgs};

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
    /// Print the result of a task by its id (from `submit --detach`).
    Result(ResultArgs),
    /// Cancel a queued or running task by its id.
    Cancel(CancelArgs),
    /// List the dead list: tasks that failed after using their --retries.
    Failed(FailedArgs),
    /// List the manager's periodic tasks, with their next and last run.
    Schedules(SchedulesArgs),
    /// Run a Rhai script on a worker that allows eval; print its result as JSON.
    Eval(EvalArgs),
    /// Run a task once per line of JSON Lines input; one result per line out.
    Map(MapArgs),
    /// Show workers, capacity, tasks in flight and queue lengths.
    Status(StatusArgs),
    /// Measure the round trip to the manager.
    Ping(PingArgs),
    /// Run a manager and workers in one process on 127.0.0.1 (a fresh key
    /// unless the config file names one; its command tasks too).
    Cluster(ClusterArgs),
    /// Start an embedded cluster and overrun it with work, showing what Argon does when full.
    #[cfg(feature = "bench")]
    Demo(DemoArgs),
    /// Load generator: throughput and round-trip percentiles against a manager.
    #[cfg(feature = "bench")]
    Bench(BenchArgs),
    /// Not in this build (it needs the cargo feature `bench`).
    #[cfg(not(feature = "bench"))]
    Demo(NotBuilt),
    /// Not in this build (it needs the cargo feature `bench`).
    #[cfg(not(feature = "bench"))]
    Bench(NotBuilt),
}

/// The arguments of a subcommand this build leaves out, whatever they are:
/// the command is refused with the feature it needs, not with a parse error.
#[cfg(not(feature = "bench"))]
#[derive(clap::Args, Debug)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

/// The default log level for a command: servers say what they do, client
/// commands stay quiet unless something is wrong.
pub fn default_log_level(cmd: &Command) -> log::LevelFilter {
    match cmd {
        Command::Manager(_) | Command::Worker(_) | Command::Cluster(_) => log::LevelFilter::Info,
        _ => log::LevelFilter::Warn,
    }
}

/// Runs a parsed command line. Returns the exit code's failure, if any.
pub fn run(cli: Cli) -> Result<(), Failure> {
    let config = load_config(cli.config.as_deref())?;
    let system = actix::System::new();
    match cli.command {
        Command::Keygen { path } => server::keygen(&path),
        Command::Manager(a) => system.block_on(server::manager(a, &config)),
        Command::Worker(a) => system.block_on(server::worker(a, &config)),
        Command::Submit(a) => system.block_on(submit::submit(a, &config)),
        Command::Result(a) => system.block_on(tasks::result(a, &config)),
        Command::Cancel(a) => system.block_on(tasks::cancel(a, &config)),
        Command::Failed(a) => system.block_on(failed::failed(a, &config)),
        Command::Schedules(a) => system.block_on(schedules::schedules(a, &config)),
        Command::Eval(a) => system.block_on(submit::eval(a, &config)),
        Command::Map(a) => system.block_on(map::map(a, &config)),
        Command::Status(a) => system.block_on(status::status(a, &config)),
        Command::Ping(a) => system.block_on(status::ping(a, &config)),
        Command::Cluster(a) => system.block_on(cluster::cluster(a, &config)),
        #[cfg(feature = "bench")]
        Command::Demo(a) => system.block_on(demo::demo(a)),
        #[cfg(feature = "bench")]
        Command::Bench(a) => system.block_on(bench::bench(a, &config)),
        #[cfg(not(feature = "bench"))]
        Command::Demo(_) => Err(not_built("bench", "argon demo")),
        #[cfg(not(feature = "bench"))]
        Command::Bench(_) => Err(not_built("bench", "argon bench")),
    }
}
