//! `argon status` and `argon ping`: ask the manager how the cluster stands
//! and how long a round trip takes.

use clap::Args;

use argon::client::Client;
use argon::config::Config;
use argon::launch::{Failure, EXIT_FAILED};
use argon::logsafe::escaped;

use super::args::{client_config, ClientArgs};

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

/// Most round trips one `argon ping` makes (each is kept for the median).
const MAX_PINGS: i64 = 100_000;

/// `argon ping`
#[derive(Args, Debug)]
pub struct PingArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Number of round trips, 1 to 100000; with more than one, a summary
    /// line (min, median, max) follows them.
    #[arg(long, short = 'c', default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=MAX_PINGS))]
    pub count: u32,
}

/// `argon status`: a table, or one JSON object with `--json`.
pub async fn status(a: StatusArgs, config: &Config) -> Result<(), Failure> {
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
    outln!(
        "completed {}  failed {}  denied {}",
        s.completed,
        s.failed,
        s.denied
    );
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
                "{:>4}  {:<22} {:>8} {:>9} {:>10.3}  {:<5} {}{}{}",
                w.id,
                escaped(&w.address),
                w.capacity,
                w.in_flight,
                w.avg_ms,
                if w.eval { "yes" } else { "no" },
                TaskNames(&w.tasks),
                match w.tasks_total() - w.tasks.len() {
                    0 => String::new(),
                    n => format!(" … and {n} more"),
                },
                if w.draining { "  (draining)" } else { "" }
            );
        }
    }
    match s.workers_not_listed() {
        0 => {}
        1 => outln!("… and 1 more worker (the busiest are listed)"),
        n => outln!("… and {n} more workers (the busiest are listed)"),
    }
    Ok(())
}

/// Task names as workers registered them, comma-separated, each escaped
/// and cut: they are whatever a worker sent.
struct TaskNames<'a>(&'a [String]);

impl std::fmt::Display for TaskNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", escaped(name).max_chars(64))?;
        }
        Ok(())
    }
}

/// `argon ping`: `count` round trips, one line each, then (for more than
/// one) a summary line with the minimum, median and maximum.
pub async fn ping(a: PingArgs, config: &Config) -> Result<(), Failure> {
    let client = Client::connect(client_config(&a.client, config)?).await?;
    let mgr = &client.config().mgr;
    let mut rtts = Vec::with_capacity(a.count as usize);
    for _ in 0..a.count {
        let rtt = client.ping().await?.as_secs_f64() * 1e3;
        outln!("pong from {mgr} in {rtt:.3} ms");
        rtts.push(rtt);
    }
    let n = rtts.len();
    if n < 2 {
        return Ok(());
    }
    rtts.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        rtts[n / 2]
    } else {
        (rtts[n / 2 - 1] + rtts[n / 2]) / 2.0
    };
    outln!(
        "{n} pong(s) from {mgr}: round trip min {:.3} ms, median {median:.3} ms, max {:.3} ms",
        rtts[0],
        rtts[n - 1]
    );
    Ok(())
}
