//! `argon bench` and `bench --detach`: a fixed number of tasks, kept
//! `concurrency` in flight over `clients` connections, denials retried on
//! the client's backoff and counted.
//!
//! Attached, each lane waits for its task's result; the report has
//! throughput and round-trip percentiles. Detached, as gearmand's
//! background jobs, the manager answers with the task's id as soon as it
//! accepted it (with `manager --persist`, once the accept is stored) and
//! the task runs on without the client. Two rates come out: accepts per
//! second (first submission until the last acknowledgement) and
//! completions per second (first submission until the last result was
//! read, by id, waiting for each). The ids wait between the two phases in a
//! list of at most `--tasks` entries; with more detached tasks than the
//! manager's `result_max`, the oldest results are evicted before they are
//! read and count as failed.

use std::sync::Mutex;
use std::time::Instant;

use futures_util::future::join_all;
use indicatif::ProgressBar;
use serde::Serialize;

use argon::client::{Client, ClientConfig};
use argon::launch::{Failure, EXIT_FAILED};
use argon::protocol::Value;

use super::driver::{self, Counts, Load, Mode, Until};

/// What to run and how hard.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Tasks in all.
    pub tasks: u32,
    /// Tasks in flight.
    pub concurrency: u32,
    /// Connections.
    pub clients: u32,
    /// Task name.
    pub task: String,
    /// Arguments; `None` sends `payload` bytes.
    pub args: Option<Value>,
    /// Size of the binary argument when `args` is `None`.
    pub payload: usize,
}

impl BenchPlan {
    /// Connections the plan uses: `clients`, at least one and at most one
    /// per task in flight.
    pub fn connections(&self) -> u32 {
        self.clients.clamp(1, self.concurrency.max(1))
    }

    /// Opens [`BenchPlan::connections`] clients, denials retried quickly.
    async fn connect(&self, mut config: ClientConfig) -> Result<Vec<Client>, Failure> {
        config.min_backoff = std::time::Duration::from_millis(1);
        config.max_backoff = std::time::Duration::from_millis(200);
        Ok(driver::connect(&config, u64::from(self.connections())).await?)
    }

    /// The arguments every task is sent with.
    fn task_args(&self) -> Value {
        self.args
            .clone()
            .unwrap_or_else(|| Value::Binary(vec![0x5a; self.payload]))
    }

    /// Tasks in flight per connection.
    fn windows(&self) -> Vec<u32> {
        driver::spread(self.concurrency.max(1), self.connections())
    }

    /// The run: every task the same.
    fn load(&self, mode: Mode) -> Load {
        let (name, args) = (self.task.clone(), self.task_args());
        Load {
            mode,
            until: Until::Tasks(self.tasks),
            make: Box::new(move |_| (name.clone(), args.clone())),
            check_echo: self.task == "echo",
        }
    }

    /// A progress bar over the plan's tasks, or a hidden one.
    fn progress_bar(&self, show: bool) -> ProgressBar {
        if show {
            driver::progress_bar(self.tasks)
        } else {
            ProgressBar::hidden()
        }
    }
}

/// The result of an attached run, as `--json` prints it.
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

/// The result of `argon bench --detach`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct DetachReport {
    /// Always `"detach"`, to tell this report from an attached run's.
    pub mode: &'static str,
    /// Tasks accepted.
    pub accepted: usize,
    /// Accepts per second; the same figure as `accept_rate`, under the name
    /// `bench/compare.sh` sorts attached and detached runs by.
    pub throughput: f64,
    /// Accepts per second, first submission until the last acknowledgement.
    pub accept_rate: f64,
    /// Results read (the task finished and its outcome was collected).
    pub completed: usize,
    /// Completed tasks per second, first submission until the last result read.
    pub complete_rate: f64,
    /// Submission until acknowledgement, microseconds: median.
    pub accept_p50_us: u64,
    /// 99th percentile.
    pub accept_p99_us: u64,
    /// Slowest.
    pub accept_max_us: u64,
    /// Denials that were retried.
    pub denied: u64,
    /// Tasks not accepted, failed, or whose result could not be read.
    pub failed: usize,
    /// Seconds until the last acknowledgement.
    pub accept_s: f64,
    /// Seconds until the last result was read.
    pub elapsed_s: f64,
    /// Submissions left unacknowledged at once (and results waited for at once).
    pub concurrency: u32,
    /// Connections.
    pub clients: u32,
    /// Task name.
    pub task: String,
    /// Payload bytes per task.
    pub payload: usize,
}

/// Runs `plan` attached against the manager `config` points at.
pub async fn measure(
    config: ClientConfig,
    plan: &BenchPlan,
    show_progress: bool,
) -> Result<BenchReport, Failure> {
    let conns = plan.connect(config).await?;
    let lanes = driver::lanes(&conns, &plan.windows());
    let counts = Mutex::new(Counts::default());
    let pb = plan.progress_bar(show_progress);
    let elapsed = driver::run(&lanes, &plan.load(Mode::Attached), &counts, &pb).await;
    pb.finish_and_clear();
    let c = counts.into_inner().expect("tally lock");
    check_outcomes(&c)?;
    Ok(BenchReport {
        tasks: c.answered(),
        throughput: c.answered() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_us: c.percentile_us(50.0),
        p90_us: c.percentile_us(90.0),
        p99_us: c.percentile_us(99.0),
        max_us: c.percentile_us(100.0),
        denied: c.denials,
        failed: c.failed as usize,
        elapsed_s: elapsed.as_secs_f64(),
        concurrency: plan.concurrency,
        clients: plan.connections(),
        task: plan.task.clone(),
        payload: plan.payload,
    })
}

/// Runs `plan` detached against the manager `config` points at, then
/// reads every result.
pub async fn measure_detached(
    config: ClientConfig,
    plan: &BenchPlan,
    show_progress: bool,
) -> Result<DetachReport, Failure> {
    let conns = plan.connect(config).await?;
    let lanes = driver::lanes(&conns, &plan.windows());
    let counts = Mutex::new(Counts {
        ids: Vec::with_capacity(plan.tasks as usize),
        ..Counts::default()
    });
    let load = plan.load(Mode::Detached);
    let started = Instant::now();
    let pb = plan.progress_bar(show_progress);
    let accept_s = driver::run(&lanes, &load, &counts, &pb).await.as_secs_f64();
    pb.finish_and_clear();

    let ids = Mutex::new(std::mem::take(&mut counts.lock().expect("tally lock").ids));
    let expected = load.check_echo.then(|| plan.task_args());
    let pb = plan.progress_bar(show_progress);
    let reads = lanes
        .iter()
        .map(|lane| read_results(&lane.client, &ids, expected.as_ref(), &counts, &pb));
    join_all(reads).await;
    pb.finish_and_clear();
    let elapsed_s = started.elapsed().as_secs_f64();

    let c = counts.into_inner().expect("tally lock");
    check_outcomes(&c)?;
    let accepted = c.answered();
    Ok(DetachReport {
        mode: "detach",
        accepted,
        throughput: accepted as f64 / accept_s.max(1e-9),
        accept_rate: accepted as f64 / accept_s.max(1e-9),
        completed: c.read,
        complete_rate: c.read as f64 / elapsed_s.max(1e-9),
        accept_p50_us: c.percentile_us(50.0),
        accept_p99_us: c.percentile_us(99.0),
        accept_max_us: c.percentile_us(100.0),
        denied: c.denials,
        failed: c.failed as usize,
        accept_s,
        elapsed_s,
        concurrency: plan.concurrency,
        clients: plan.connections(),
        task: plan.task.clone(),
        payload: plan.payload,
    })
}

/// Reads results by id, waiting for each, until none is left; with
/// `expected`, a result must equal it.
async fn read_results(
    client: &Client,
    ids: &Mutex<Vec<u64>>,
    expected: Option<&Value>,
    counts: &Mutex<Counts>,
    pb: &ProgressBar,
) {
    loop {
        let Some(id) = ids.lock().expect("ids lock").pop() else {
            return;
        };
        let result = client.result(id, true).await;
        let mut c = counts.lock().expect("tally lock");
        match result {
            Ok(value) => {
                c.read += 1;
                c.wrong += u32::from(expected.is_some_and(|e| *e != value));
            }
            Err(e) => c.fail(format!("task {id}: {e}")),
        }
        drop(c);
        pb.inc(1);
    }
}

/// The end of a measured run: an echo result that differed from its
/// arguments fails the run (exit 1); failed tasks are logged with the first
/// error, and counted in the report by the caller.
fn check_outcomes(c: &Counts) -> Result<(), Failure> {
    if c.wrong > 0 {
        return Err(Failure::new(
            EXIT_FAILED,
            format!("{} echo result(s) differed from their arguments", c.wrong),
        ));
    }
    if let Some(first) = c.errors.first() {
        log::warn!(
            "{} task(s) failed; first: {}",
            c.failed,
            argon::logsafe::escaped(first)
        );
    }
    Ok(())
}

/// The human-readable summary of an attached run.
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

/// The human-readable summary of a detached run.
pub fn describe_detached(r: &DetachReport) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "{} {} tasks detached ({} B payload, {} unacknowledged at most over {} connection(s))\n\
         accepted in {:.2} s: {:.0} accepts/s   all {} results read after {:.2} s: {:.0} tasks/s\n\
         acknowledgement  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n\
         denied {} (retried)  failed {}",
        r.accepted,
        r.task,
        r.payload,
        r.concurrency,
        r.clients,
        r.accept_s,
        r.accept_rate,
        r.completed,
        r.elapsed_s,
        r.complete_rate,
        ms(r.accept_p50_us),
        ms(r.accept_p99_us),
        ms(r.accept_max_us),
        r.denied,
        r.failed
    )
}
