//! `argon bench`: load against a running manager (or, with `--cluster`, an
//! embedded one). A plain run keeps `concurrency` tasks in flight over
//! `clients` connections until `tasks` are done and reports throughput and
//! round-trip percentiles; `--detach` measures accepts/s of detached
//! submissions, then completions/s ([`fixed`]); `--sweep` measures the
//! degradation curve ([`sweep`], drawn by [`plot`]). All three run on the
//! one load driver, [`driver`], which `argon demo` uses too. With
//! `--idle-clients` it only opens connections and holds them, to measure
//! what idle clients cost the manager.

pub mod driver;
mod fixed;
mod plot;
mod sweep;

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use argon::actors::ManagerSettings;
use argon::client::ClientConfig;
use argon::config::Config;
use argon::launch::{Failure, EXIT_FAILED};
use argon::runtime;

use super::args::{client_config, parse_json_arg, ClientArgs};
use super::cluster::start_cluster;
use fixed::BenchPlan;
use sweep::{SweepPlan, TaskMs};

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
    /// Submit every task detached (the manager acknowledges it with its id
    /// once accepted, like gearmand's background jobs), --concurrency of
    /// them unacknowledged at once; report accepts/s, then read every
    /// result and report completed tasks/s.
    #[arg(long, conflicts_with_all = ["idle_clients", "sweep"])]
    pub detach: bool,
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
    /// Instead of a load run: offer load at several multiples of the
    /// cluster's capacity (--loads), one client connection per task in
    /// flight, each backing off on a deny as the protocol recommends; report
    /// throughput, deny rate, latency and how retry_after compares with the
    /// wait denied clients needed, per load.
    #[arg(long, conflicts_with_all = ["idle_clients", "tasks", "concurrency", "clients", "task", "payload", "args"])]
    pub sweep: bool,
    /// With --sweep: offered loads, as multiples of the capacity.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,5,10", value_name = "K,K,...",
          value_parser = sweep::parse_load, requires = "sweep")]
    pub loads: Vec<f64>,
    /// With --sweep: each task sleeps MS, or a duration drawn evenly from MIN-MAX.
    #[arg(long, default_value = "200-500", value_name = "MS|MIN-MAX",
          value_parser = sweep::parse_task_ms, requires = "sweep")]
    pub task_ms: TaskMs,
    /// With --sweep: seconds each load is measured for.
    #[arg(long, default_value = "12", value_name = "SECS", value_parser = sweep::parse_secs,
          requires = "sweep")]
    pub step_secs: f64,
    /// With --sweep: seconds each load runs before it is measured.
    #[arg(long, default_value = "3", value_name = "SECS", value_parser = sweep::parse_secs,
          requires = "sweep")]
    pub warmup_secs: f64,
    /// With --sweep: write the report as JSON to FILE.
    #[arg(long, value_name = "FILE", requires = "sweep")]
    pub out: Option<std::path::PathBuf>,
    /// With --sweep: draw the curve as SVG into FILE.
    #[arg(long, value_name = "FILE", requires = "sweep")]
    pub svg: Option<std::path::PathBuf>,
}

/// `argon bench`: a load run, or with `--idle-clients` a hold of idle
/// connections. The report is printed either way; any failed task makes the
/// run a failure (exit 1).
pub async fn bench(a: BenchArgs, config: &Config) -> Result<(), Failure> {
    if let Some(n) = a.idle_clients {
        let cc = client_config(&a.client, config)?;
        return hold_idle(cc, n, a.hold, runtime::shutdown_signal()).await;
    }
    if a.sweep {
        return run_sweep(&a, config).await;
    }
    let plan = BenchPlan {
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
    let (failed, of) = if a.detach {
        let report = on_target(&a, config, |cc| fixed::measure_detached(cc, &plan, show)).await?;
        print(&report, a.json, fixed::describe_detached)?;
        (report.failed, format!("{} detached", plan.tasks))
    } else {
        let report = on_target(&a, config, |cc| fixed::measure(cc, &plan, show)).await?;
        print(&report, a.json, fixed::describe)?;
        (report.failed, (report.tasks + report.failed).to_string())
    };
    match failed {
        0 => Ok(()),
        n => Err(Failure::new(
            EXIT_FAILED,
            format!("{n} of {of} task(s) failed"),
        )),
    }
}

/// Prints `report` as one line of JSON, or as `describe` puts it.
fn print<R: Serialize>(report: &R, json: bool, describe: fn(&R) -> String) -> Result<(), Failure> {
    if json {
        let text =
            serde_json::to_string(report).map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
        outln!("{text}");
    } else {
        outln!("{}", describe(report));
    }
    Ok(())
}

/// Runs `measure` against an embedded cluster (`--cluster`: `--workers` ×
/// `--capacity` slots at `--queue-factor`, stopped afterwards) or against
/// the manager the client flags and config name.
async fn on_target<T, F, Fut>(a: &BenchArgs, config: &Config, measure: F) -> Result<T, Failure>
where
    F: FnOnce(ClientConfig) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    if !a.cluster {
        return measure(client_config(&a.client, config)?).await;
    }
    let settings = ManagerSettings {
        queue_factor: a.queue_factor,
        ..ManagerSettings::default()
    };
    let cluster = start_cluster(a.workers as usize, a.capacity as usize, 0, settings).await?;
    let cc = ClientConfig::new(cluster.manager.addr.to_string(), cluster.handshake.clone());
    let report = measure(cc).await;
    cluster.shutdown(Duration::from_secs(2)).await;
    report
}

/// `argon bench --sweep`: runs the sweep, writes `--out` and `--svg`, and
/// prints the table (or the JSON with `--json`). Any failed, lost or
/// unfinished task makes it a failure (exit 1), after the report is out.
async fn run_sweep(a: &BenchArgs, config: &Config) -> Result<(), Failure> {
    let plan = SweepPlan {
        loads: a.loads.clone(),
        task_ms: a.task_ms,
        warmup: Duration::from_secs_f64(a.warmup_secs),
        step: Duration::from_secs_f64(a.step_secs),
    };
    let report = on_target(a, config, |cc| async move { sweep::sweep(cc, &plan).await }).await?;
    let failed = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        Failure::new(
            EXIT_FAILED,
            format!("cannot write {what} {}: {e}", path.display()),
        )
    };
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
    if let Some(path) = &a.out {
        std::fs::write(path, format!("{json}\n")).map_err(|e| failed("the report", path, &e))?;
    }
    if let Some(path) = &a.svg {
        let text = plot::svg(&report).map_err(|e| Failure::new(EXIT_FAILED, e))?;
        std::fs::write(path, text).map_err(|e| failed("the plot", path, &e))?;
    }
    if a.json {
        outln!("{json}");
    } else {
        outln!("{}", sweep::describe(&report));
    }
    match report.troubles() {
        0 => Ok(()),
        n => Err(Failure::new(
            EXIT_FAILED,
            format!("{n} task(s) failed, were lost or left unfinished"),
        )),
    }
}

/// Opens `n` authenticated connections that send nothing, prints one line
/// once all are up, holds them for `hold` (or until `stop` resolves), then
/// closes them. Measures what idle clients cost a manager.
pub async fn hold_idle(
    config: ClientConfig,
    n: u32,
    hold: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Failure> {
    let open_all = driver::connect(&config, u64::from(n));
    tokio::pin!(stop);
    // `stop` is polled first, so its signal handlers are in place before the
    // line below tells anyone they may signal us.
    let conns = tokio::select! {
        biased;
        _ = &mut stop => return Ok(()),
        conns = open_all => conns?,
    };
    outln!(
        "argon bench: {n} idle connections open to {}; holding for {}",
        config.mgr,
        humantime::format_duration(hold)
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = tokio::time::sleep(hold) => {}
        _ = &mut stop => {}
    }
    drop(conns);
    Ok(())
}
