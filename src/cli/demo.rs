//! `argon demo`: an embedded cluster (a manager and two workers on
//! 127.0.0.1, a fresh key) overrun on purpose by concurrent clients, so the
//! bounded queue shows: tasks are denied, clients back off and retry, and
//! every task still completes exactly once.

use std::sync::Mutex;
use std::time::Duration;

use clap::Args;

use argon::actors::ManagerSettings;
use argon::client::ClientConfig;
use argon::launch::{Failure, EXIT_FAILED};
use argon::protocol::Value;

use super::bench::driver::{self, Counts, Load, Mode, Until};
use super::cluster::start_cluster;

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

const WORKERS: usize = 2;
const SLOTS: usize = 4;

/// The task for index `i`: two echoes (of a unique payload) for each short sleep.
fn task_for(i: u32) -> (String, Value) {
    if i % 3 == 2 {
        ("sleep".into(), Value::from(2 + u64::from(i % 7)))
    } else {
        (
            "echo".into(),
            Value::Array(vec![Value::from(i), Value::from("demo payload")]),
        )
    }
}

/// `argon demo`: `tasks` tasks from `clients` clients with `window` each in flight.
pub async fn demo(
    DemoArgs {
        tasks,
        clients,
        window,
    }: DemoArgs,
) -> Result<(), Failure> {
    let settings = ManagerSettings::default();
    let queue_factor = settings.queue_factor as usize;
    let cluster = start_cluster(WORKERS, SLOTS, 0, settings).await?;
    let capacity = WORKERS * SLOTS;
    outln!(
        "Embedded cluster on {}: {WORKERS} workers x {SLOTS} slots = capacity {capacity}, queue bound {}.",
        cluster.manager.addr,
        capacity * queue_factor
    );
    outln!(
        "{clients} clients keep {} tasks in flight ({tasks} in all: echo, and sleeps of 2-8 ms),",
        clients * window
    );
    outln!("far more than fits: the manager denies the excess at once and clients retry on a backoff.\n");

    let mut config = ClientConfig::new(cluster.manager.addr.to_string(), cluster.handshake.clone());
    config.min_backoff = Duration::from_millis(5);
    config.max_backoff = Duration::from_millis(500);
    let conns = driver::connect(&config, u64::from(clients)).await?;
    let lanes = driver::lanes(&conns, &vec![window; clients as usize]);
    let load = Load {
        mode: Mode::Attached,
        until: Until::Tasks(tasks),
        make: Box::new(task_for),
        check_echo: true,
    };
    let report = Mutex::new(Counts::default());
    let pb = driver::progress_bar(tasks);
    let elapsed = driver::run(&lanes, &load, &report, &pb).await;
    pb.finish_and_clear();
    cluster.shutdown(Duration::from_secs(2)).await;
    let report = report.into_inner().expect("tally lock");

    let ms = |us: u64| us as f64 / 1000.0;
    let count = |name: &str| report.per_task.get(name).copied().unwrap_or(0);
    outln!(
        "completed  {} of {tasks} tasks ({} echo, {} sleep) in {:.2} s: {:.0} tasks/s",
        report.answered(),
        count("echo"),
        count("sleep"),
        elapsed.as_secs_f64(),
        report.answered() as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    outln!(
        "denied     {} times, all retried; {} tasks were denied at least once",
        report.denials,
        report.denied_tasks
    );
    outln!(
        "latency    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (submit to result, retries included)",
        ms(report.percentile_us(50.0)),
        ms(report.percentile_us(99.0)),
        ms(report.percentile_us(100.0))
    );
    outln!("failed     {}", report.failed);
    if report.wrong > 0 || report.failed > 0 {
        let first = report.errors.first().cloned().unwrap_or_default();
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "{} task(s) failed and {} returned a wrong result; first error: {}",
                report.failed,
                report.wrong,
                argon::logsafe::escaped(first)
            ),
        ));
    }
    Ok(())
}
