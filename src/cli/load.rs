//! A closed-loop load generator shared by `argon demo` and `argon bench`:
//! several clients keep a fixed number of tasks in flight until a total is
//! reached, retrying denials, and every round trip is measured. Both show
//! its progress with [`progress_bar`]. Round trips go into one HDR
//! histogram, so memory stays the same however many tasks a run has.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::launch::{Failure, EXIT_FAILED};
use argon::protocol::Value;

/// Makes the task (name, arguments) for index `i`.
pub type TaskMaker = Arc<dyn Fn(u32) -> (String, Value) + Send + Sync>;

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
    pub async fn connect(&self, config: ClientConfig) -> Result<Vec<Client>, ClientError> {
        connect_retrying(
            config,
            self.connections(),
            Duration::from_millis(1),
            Duration::from_millis(200),
        )
        .await
    }

    /// The arguments every task is sent with.
    pub fn task_args(&self) -> Value {
        self.args
            .clone()
            .unwrap_or_else(|| Value::Binary(vec![0x5a; self.payload]))
    }

    /// Tasks in flight per connection.
    pub fn windows(&self) -> Vec<u32> {
        spread(self.concurrency.max(1), self.connections())
    }

    /// A progress bar over the plan's tasks, or a hidden one.
    pub fn progress_bar(&self, show: bool) -> ProgressBar {
        if show {
            progress_bar(self.tasks)
        } else {
            ProgressBar::hidden()
        }
    }
}

/// Largest latency a histogram of [`latency_histogram`] tells apart: an
/// hour, in microseconds. Longer samples count as an hour.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Error texts of failed tasks a [`LoadReport`] keeps; the rest are counted.
pub const KEPT_ERRORS: usize = 10;

/// An empty histogram of microseconds from 1 us to [`MAX_LATENCY_US`], to 3
/// significant digits (a sample is off by at most 0.1 %). It takes about
/// 190 KiB whatever it holds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// Percentile `p` (0–100) of `h`: the smallest recorded value that `p` % of
/// the samples are at or below (to the histogram's precision); 0 if empty.
pub fn percentile(h: &Histogram<u64>, p: f64) -> u64 {
    if h.is_empty() {
        0
    } else if p >= 100.0 {
        h.max()
    } else {
        h.value_at_percentile(p)
    }
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Round trips of completed tasks, microseconds.
    pub latency: Histogram<u64>,
    /// Completed tasks per task name.
    pub per_task: std::collections::BTreeMap<String, u32>,
    /// Denials that were retried.
    pub denials: u64,
    /// Tasks denied at least once.
    pub denied_tasks: u32,
    /// Tasks that failed.
    pub failed: u64,
    /// Errors of the first [`KEPT_ERRORS`] failed tasks.
    pub errors: Vec<String>,
    /// Tasks whose result differed from their arguments, when checked.
    pub wrong: u32,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Default for LoadReport {
    fn default() -> Self {
        LoadReport {
            latency: latency_histogram(),
            per_task: Default::default(),
            denials: 0,
            denied_tasks: 0,
            failed: 0,
            errors: Vec::new(),
            wrong: 0,
            elapsed: Duration::ZERO,
        }
    }
}

impl LoadReport {
    /// Completed tasks.
    pub fn completed(&self) -> usize {
        self.latency.len() as usize
    }

    /// Completed tasks per second.
    pub fn throughput(&self) -> f64 {
        self.completed() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile `p` (0–100), microseconds.
    pub fn percentile_us(&self, p: f64) -> u64 {
        percentile(&self.latency, p)
    }

    fn fail(&mut self, error: String) {
        self.failed += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(error);
        }
    }
}

/// The shape of a load run.
pub struct LoadSpec {
    /// Tasks in all.
    pub tasks: u32,
    /// Tasks in flight on each client.
    pub windows: Vec<u32>,
    /// What to run.
    pub make: TaskMaker,
    /// Whether a result must equal its arguments (true for `echo`).
    pub check_echo: bool,
}

/// Opens `n` connections with `config`, retrying denials on a backoff
/// between `min_backoff` and `max_backoff`.
pub async fn connect_retrying(
    mut config: ClientConfig,
    n: u32,
    min_backoff: Duration,
    max_backoff: Duration,
) -> Result<Vec<Client>, ClientError> {
    config.retry = true;
    config.min_backoff = min_backoff;
    config.max_backoff = max_backoff;
    let mut conns = Vec::with_capacity(n as usize);
    for _ in 0..n {
        conns.push(Client::connect(config.clone()).await?);
    }
    Ok(conns)
}

/// The end of a measured run: an echo result that differed from its
/// arguments fails the run (exit 1); failed tasks are logged with the first
/// error, and counted in the report by the caller.
pub fn check_outcomes(wrong: u64, failed: u64, errors: &[String]) -> Result<(), Failure> {
    if wrong > 0 {
        return Err(Failure::new(
            EXIT_FAILED,
            format!("{wrong} echo result(s) differed from their arguments"),
        ));
    }
    if let Some(first) = errors.first() {
        log::warn!(
            "{failed} task(s) failed; first: {}",
            argon::logsafe::escaped(first)
        );
    }
    Ok(())
}

/// Spreads `total` tasks in flight over `clients` connections as evenly as possible.
pub fn spread(total: u32, clients: u32) -> Vec<u32> {
    let clients = clients.max(1);
    (0..clients)
        .map(|i| total / clients + u32::from(i < total % clients))
        .collect()
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(total: u32) -> ProgressBar {
    let pb = ProgressBar::new(u64::from(total));
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tasks  {per_sec}  {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// Runs `spec` over `clients` (one per window entry), denials retried.
pub async fn run(clients: &[Client], spec: LoadSpec, pb: &ProgressBar) -> LoadReport {
    let next = Arc::new(AtomicU32::new(0));
    // One report for every loop: a histogram per loop would cost its size
    // once per task in flight. The lock is never held across an await.
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let mut loops = Vec::new();
    for (client, &window) in clients.iter().zip(&spec.windows) {
        for _ in 0..window {
            loops.push(one_loop(
                client.clone(),
                next.clone(),
                spec.tasks,
                spec.make.clone(),
                spec.check_echo,
                report.clone(),
                pb.clone(),
            ));
        }
    }
    let started = Instant::now();
    join_all(loops).await;
    let mut report = std::mem::take(&mut *report.lock().expect("report lock"));
    report.elapsed = started.elapsed();
    report
}

async fn one_loop(
    client: Client,
    next: Arc<AtomicU32>,
    total: u32,
    make: TaskMaker,
    check: bool,
    report: Arc<Mutex<LoadReport>>,
    pb: ProgressBar,
) {
    let opts = QueueOptions {
        retry: Some(true),
        ..QueueOptions::default()
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return;
        }
        let (name, args) = make(i);
        let expected = check.then(|| args.clone());
        let start = Instant::now();
        let result = client.queue_detailed(&name, args, &opts).await;
        let took = start.elapsed().as_micros() as u64;
        let mut r = report.lock().expect("report lock");
        match result {
            Ok(done) => {
                r.latency.saturating_record(took.max(1));
                if done.denials > 0 {
                    r.denied_tasks += 1;
                    r.denials += u64::from(done.denials);
                }
                if expected.is_some_and(|e| e != done.value) {
                    r.wrong += 1;
                }
                *r.per_task.entry(name).or_default() += 1;
            }
            Err(e) => r.fail(e.to_string()),
        }
        drop(r);
        pb.inc(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_the_value_at_or_below_which_p_percent_lie() {
        let mut h = latency_histogram();
        for v in 1..=100 {
            h.record(v).unwrap();
        }
        assert_eq!(percentile(&h, 50.0), 50);
        assert_eq!(percentile(&h, 99.0), 99);
        assert_eq!(percentile(&h, 100.0), 100);
        assert_eq!(percentile(&latency_histogram(), 50.0), 0);
    }

    #[test]
    fn large_samples_keep_three_significant_digits() {
        let mut h = latency_histogram();
        h.saturating_record(1_234_567);
        h.saturating_record(MAX_LATENCY_US * 10);
        let p50 = percentile(&h, 50.0);
        assert!(p50.abs_diff(1_234_567) <= 1_235, "{p50}");
        let max = percentile(&h, 100.0);
        let top = MAX_LATENCY_US..=MAX_LATENCY_US + MAX_LATENCY_US / 1000;
        assert!(top.contains(&max), "{max}");
    }

    #[test]
    fn failures_beyond_the_kept_ones_are_only_counted() {
        let mut r = LoadReport::default();
        for i in 0..KEPT_ERRORS + 5 {
            r.fail(format!("e{i}"));
        }
        assert_eq!(r.failed, (KEPT_ERRORS + 5) as u64);
        assert_eq!(r.errors.len(), KEPT_ERRORS);
        assert_eq!(r.errors[0], "e0");
    }

    #[test]
    fn spread_is_even_and_sums_to_total() {
        assert_eq!(spread(10, 3), vec![4, 3, 3]);
        assert_eq!(spread(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(spread(5, 0), vec![5]);
    }
}
