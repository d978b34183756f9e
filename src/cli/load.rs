//! A closed-loop load generator shared by `argon demo` and `argon bench`:
//! several clients keep a fixed number of tasks in flight until a total is
//! reached, retrying denials, and every round trip is measured. Both show
//! its progress with [`progress_bar`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};

use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::protocol::Value;

/// Makes the task (name, arguments) for index `i`.
pub type TaskMaker = Arc<dyn Fn(u32) -> (String, Value) + Send + Sync>;

/// What a load run measured.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Round trips of completed tasks, microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// Completed tasks per task name.
    pub per_task: std::collections::BTreeMap<String, u32>,
    /// Denials that were retried.
    pub denials: u64,
    /// Tasks denied at least once.
    pub denied_tasks: u32,
    /// Errors of failed tasks.
    pub failed: Vec<String>,
    /// Tasks whose result differed from their arguments, when checked.
    pub wrong: u32,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadReport {
    fn merge(&mut self, o: LoadReport) {
        self.latencies_us.extend(o.latencies_us);
        for (k, v) in o.per_task {
            *self.per_task.entry(k).or_default() += v;
        }
        self.denials += o.denials;
        self.denied_tasks += o.denied_tasks;
        self.failed.extend(o.failed);
        self.wrong += o.wrong;
    }

    /// Completed tasks.
    pub fn completed(&self) -> usize {
        self.latencies_us.len()
    }

    /// Completed tasks per second.
    pub fn throughput(&self) -> f64 {
        self.completed() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile `p` (0–100), microseconds.
    pub fn percentile_us(&self, p: f64) -> u64 {
        percentile(&self.latencies_us, p)
    }
}

/// Percentile `p` (0–100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
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
    let mut loops = Vec::new();
    for (client, &window) in clients.iter().zip(&spec.windows) {
        for _ in 0..window {
            loops.push(one_loop(
                client.clone(),
                next.clone(),
                spec.tasks,
                spec.make.clone(),
                spec.check_echo,
                pb.clone(),
            ));
        }
    }
    let started = Instant::now();
    let mut report = LoadReport::default();
    for r in join_all(loops).await {
        report.merge(r);
    }
    report.elapsed = started.elapsed();
    report.latencies_us.sort_unstable();
    report
}

async fn one_loop(
    client: Client,
    next: Arc<AtomicU32>,
    total: u32,
    make: TaskMaker,
    check: bool,
    pb: ProgressBar,
) -> LoadReport {
    let mut r = LoadReport::default();
    let opts = QueueOptions {
        retry: Some(true),
        ..QueueOptions::default()
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return r;
        }
        let (name, args) = make(i);
        let expected = check.then(|| args.clone());
        let start = Instant::now();
        match client.queue_detailed(&name, args, &opts).await {
            Ok(done) => {
                r.latencies_us.push(start.elapsed().as_micros() as u64);
                if done.denials > 0 {
                    r.denied_tasks += 1;
                    r.denials += u64::from(done.denials);
                }
                if expected.is_some_and(|e| e != done.value) {
                    r.wrong += 1;
                }
                *r.per_task.entry(name).or_default() += 1;
            }
            Err(e) => r.failed.push(e.to_string()),
        }
        pb.inc(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 51);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn spread_is_even_and_sums_to_total() {
        assert_eq!(spread(10, 3), vec![4, 3, 3]);
        assert_eq!(spread(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(spread(5, 0), vec![5]);
    }
}
