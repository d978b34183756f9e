//! `argon bench`: a load generator against a running manager (or, with
//! `--cluster`, an embedded one). It keeps `concurrency` tasks in flight over
//! `clients` connections until `tasks` are done, retries denials (and counts
//! them), and reports throughput and round-trip percentiles. With
//! `--idle-clients` it only opens connections and holds them, to measure what
//! idle clients cost the manager. With `--sweep` it measures the degradation
//! curve instead (see [`super::sweep`]); with `--detach`, accepts/s of
//! detached submissions (see [`super::detach`]).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use argon::actors::ManagerSettings;
use argon::client::{Client, ClientConfig};
use argon::config::Config;
use argon::launch::{Failure, EXIT_FAILED};
use argon::runtime;

use super::args::{client_config, parse_json_arg, ClientArgs};
use super::cluster::start_cluster;
use super::detach;
use super::load::{self, BenchPlan, LoadSpec};
use super::sweep::{self, SweepPlan, TaskMs};

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
    if a.detach {
        return run_detached(&a, &plan, config, show).await;
    }
    let report = on_target(&a, config, |cc| measure(cc, &plan, show)).await?;
    if a.json {
        let text =
            serde_json::to_string(&report).map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
        outln!("{text}");
    } else {
        outln!("{}", describe(&report));
    }
    match report.failed {
        0 => Ok(()),
        n => Err(Failure::new(
            EXIT_FAILED,
            format!("{n} of {} task(s) failed", report.tasks + n),
        )),
    }
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
        let text = sweep::svg(&report).map_err(|e| Failure::new(EXIT_FAILED, e))?;
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

/// `argon bench --detach`: on a running manager or an embedded cluster;
/// prints the report, and any task not accepted, failed or unread makes it
/// a failure (exit 1).
async fn run_detached(
    a: &BenchArgs,
    plan: &BenchPlan,
    config: &Config,
    show: bool,
) -> Result<(), Failure> {
    let report = on_target(a, config, |cc| detach::measure(cc, plan, show)).await?;
    if a.json {
        let text =
            serde_json::to_string(&report).map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
        outln!("{text}");
    } else {
        outln!("{}", detach::describe(&report));
    }
    match report.failed {
        0 => Ok(()),
        n => Err(Failure::new(
            EXIT_FAILED,
            format!("{n} of {} detached task(s) failed", plan.tasks),
        )),
    }
}

/// The result, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Completed tasks.
    pub tasks: usize,
    /// Completed tasks per second.
    pub throughput: f64,
    /// Round-trip percentiles and maximum, microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Denials that were retried.
    pub denied: u64,
    /// Tasks that failed.
    pub failed: usize,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Tasks in flight.
    pub concurrency: u32,
    /// Connections.
    pub clients: u32,
    /// Task name.
    pub task: String,
    /// Payload bytes per task.
    pub payload: usize,
}

/// Runs `plan` against the manager `config` points at.
pub async fn measure(
    config: ClientConfig,
    plan: &BenchPlan,
    show_progress: bool,
) -> Result<BenchReport, Failure> {
    let clients = plan.connections();
    let conns = plan.connect(config).await?;
    let args = plan.task_args();
    let name = plan.task.clone();
    let spec = LoadSpec {
        tasks: plan.tasks,
        windows: plan.windows(),
        make: Arc::new(move |_| (name.clone(), args.clone())),
        check_echo: plan.task == "echo",
    };
    let pb = plan.progress_bar(show_progress);
    let r = load::run(&conns, spec, &pb).await;
    pb.finish_and_clear();
    load::check_outcomes(u64::from(r.wrong), r.failed, &r.errors)?;
    Ok(BenchReport {
        tasks: r.completed(),
        throughput: r.throughput(),
        p50_us: r.percentile_us(50.0),
        p90_us: r.percentile_us(90.0),
        p99_us: r.percentile_us(99.0),
        max_us: r.percentile_us(100.0),
        denied: r.denials,
        failed: r.failed as usize,
        elapsed_s: r.elapsed.as_secs_f64(),
        concurrency: plan.concurrency,
        clients,
        task: plan.task.clone(),
        payload: plan.payload,
    })
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
    /// Connections opened at once, so the manager's accept backlog never overflows.
    const BATCH: u32 = 64;
    let open_all = async {
        let mut conns = Vec::with_capacity(n as usize);
        let mut opened = 0;
        while opened < n {
            let batch = BATCH.min(n - opened);
            let tries = (0..batch).map(|_| Client::connect(config.clone()));
            for c in futures_util::future::join_all(tries).await {
                conns.push(c?);
            }
            opened += batch;
        }
        Ok::<_, Failure>(conns)
    };
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

/// The human-readable summary.
pub fn describe(r: &BenchReport) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "{} {} tasks ({} B payload, {} in flight over {} connection(s)) in {:.2} s: {:.0} tasks/s\n\
         round trip  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n\
         denied {} (retried)  failed {}",
        r.tasks,
        r.task,
        r.payload,
        r.concurrency,
        r.clients,
        r.elapsed_s,
        r.throughput,
        ms(r.p50_us),
        ms(r.p90_us),
        ms(r.p99_us),
        ms(r.max_us),
        r.denied,
        r.failed
    )
}
