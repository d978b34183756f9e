//! `argon demo`: an embedded cluster (a manager and two workers on
//! 127.0.0.1, a fresh key) overrun on purpose by concurrent clients, so the
//! bounded queue shows: tasks are denied, clients back off and retry, and
//! every task still completes exactly once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};

use crate::actors::ManagerSettings;
use crate::cli::{Failure, EXIT_FAILED};
use crate::client::{Client, ClientConfig, QueueOptions};
use crate::protocol::Value;
use crate::runtime::Cluster;

const WORKERS: usize = 2;
const SLOTS: usize = 4;

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    echo: u32,
    sleep: u32,
    denials: u64,
    denied_tasks: u32,
    failed: Vec<String>,
    wrong: u32,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.latencies_us.extend(o.latencies_us);
        self.echo += o.echo;
        self.sleep += o.sleep;
        self.denials += o.denials;
        self.denied_tasks += o.denied_tasks;
        self.failed.extend(o.failed);
        self.wrong += o.wrong;
    }
}

/// Percentile `p` (0–100) of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The task for index `i`: two echoes (of a unique payload) for each short sleep.
fn task_for(i: u32) -> (&'static str, Value) {
    if i % 3 == 2 {
        ("sleep", Value::from(2 + u64::from(i % 7)))
    } else {
        (
            "echo",
            Value::Array(vec![Value::from(i), Value::from("demo payload")]),
        )
    }
}

async fn client_loop(client: Client, next: Arc<AtomicU32>, total: u32, pb: ProgressBar) -> Tally {
    let mut t = Tally::default();
    let opts = QueueOptions {
        retry: Some(true),
        ..QueueOptions::default()
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return t;
        }
        let (name, args) = task_for(i);
        let start = Instant::now();
        match client.queue_detailed(name, args.clone(), &opts).await {
            Ok(done) => {
                t.latencies_us.push(start.elapsed().as_micros() as u64);
                if done.denials > 0 {
                    t.denied_tasks += 1;
                    t.denials += u64::from(done.denials);
                }
                if done.value != args {
                    t.wrong += 1;
                }
                if name == "echo" {
                    t.echo += 1;
                } else {
                    t.sleep += 1;
                }
            }
            Err(e) => t.failed.push(e.to_string()),
        }
        pb.inc(1);
    }
}

/// Runs the demo: `tasks` tasks from `clients` clients with `window` each in flight.
pub async fn run(tasks: u32, clients: u32, window: u32) -> Result<(), Failure> {
    let settings = ManagerSettings::default();
    let queue_factor = settings.queue_factor;
    let cluster = Cluster::start(WORKERS, SLOTS, 0, settings)
        .await
        .map_err(|e| {
            Failure::new(
                EXIT_FAILED,
                format!("cannot start the embedded cluster: {e}"),
            )
        })?;
    let capacity = WORKERS * SLOTS;
    let in_flight = clients * window;
    println!(
        "Embedded cluster on {}: {WORKERS} workers x {SLOTS} slots = capacity {capacity}, queue bound {}.",
        cluster.manager.addr,
        capacity * queue_factor as usize
    );
    println!(
        "{clients} clients keep {in_flight} tasks in flight ({tasks} in all: echo, and sleeps of 2-8 ms),"
    );
    println!("far more than fits: the manager denies the excess at once and clients retry on a backoff.\n");

    let pb = ProgressBar::new(u64::from(tasks));
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tasks  {per_sec}  {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut config = ClientConfig::new(cluster.manager.addr.to_string(), cluster.handshake.clone());
    config.retry = true;
    config.min_backoff = Duration::from_millis(5);
    config.max_backoff = Duration::from_millis(500);
    let next = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..clients {
        let client = Client::connect(config.clone()).await?;
        for _ in 0..window {
            loops.push(client_loop(client.clone(), next.clone(), tasks, pb.clone()));
        }
    }
    let mut tally = Tally::default();
    for t in join_all(loops).await {
        tally.merge(t);
    }
    let elapsed = started.elapsed();
    pb.finish_and_clear();
    cluster.shutdown(Duration::from_secs(2)).await;

    tally.latencies_us.sort_unstable();
    let done = tally.latencies_us.len();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "completed  {done} of {tasks} tasks ({} echo, {} sleep) in {:.2} s: {:.0} tasks/s",
        tally.echo,
        tally.sleep,
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64()
    );
    println!(
        "denied     {} times, all retried; {} tasks were denied at least once",
        tally.denials, tally.denied_tasks
    );
    println!(
        "latency    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (submit to result, retries included)",
        ms(percentile(&tally.latencies_us, 50.0)),
        ms(percentile(&tally.latencies_us, 99.0)),
        ms(*tally.latencies_us.last().unwrap_or(&0))
    );
    println!("failed     {}", tally.failed.len());
    if tally.wrong > 0 || !tally.failed.is_empty() {
        let first = tally.failed.first().cloned().unwrap_or_default();
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "{} task(s) failed and {} returned a wrong result; first error: {first}",
                tally.failed.len(),
                tally.wrong
            ),
        ));
    }
    Ok(())
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
}
