//! `argon status` and `argon ping`: ask the manager how the cluster stands
//! (once, or again and again with `--watch`) and how long a round trip takes.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use clap::Args;

use argon::client::Client;
use argon::config::Config;
use argon::launch::{Failure, EXIT_FAILED};
use argon::logsafe::escaped;
use argon::protocol::ClusterStatus;

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
    /// Ask again every interval until Ctrl-C: redrawn in place on a
    /// terminal, else one snapshot after another, each ended by a blank line.
    #[arg(long)]
    pub watch: bool,
    /// Time between two snapshots with --watch, e.g. 500ms, 2s; at least 100ms.
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = parse_interval,
          requires = "watch")]
    pub interval: Duration,
}

/// Shortest `--interval`: a status request costs the manager a walk over
/// its workers.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "the interval must be at least {}",
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    Ok(d)
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

/// `argon status`: a table, or one JSON object with `--json`; with
/// `--watch`, again every `--interval` until SIGINT or SIGTERM (exit 0).
pub async fn status(a: StatusArgs, config: &Config) -> Result<(), Failure> {
    let client = Client::connect(client_config(&a.client, config)?).await?;
    if a.watch {
        return watch(&client, &a).await;
    }
    let s = client.status().await?;
    let text = render(&s, a.json)?;
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// Snapshots every `a.interval` on one connection. On a terminal each one
/// overwrites the last (cursor home, each line cleared to its end, the rest
/// of the screen cleared); elsewhere each is followed by a blank line and
/// has none inside (the table's blank line is left out). Ends
/// with exit 0 on a signal or when stdout is closed.
async fn watch(client: &Client, a: &StatusArgs) -> Result<(), Failure> {
    let tty = std::io::stdout().is_terminal();
    let mut ticks = tokio::time::interval(a.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = argon::runtime::shutdown_signal();
    tokio::pin!(stop);
    loop {
        // `biased`: the signal future is polled first, so its handlers are
        // in place before the first snapshot is printed.
        tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            _ = ticks.tick() => {}
        }
        let s = tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            s = client.status() => s?,
        };
        let text = render(&s, a.json)?;
        let frame = if tty {
            let mut f = format!(
                "\x1b[Hargon status every {} (Ctrl-C stops)\x1b[K\n\x1b[K\n",
                humantime::format_duration(a.interval)
            );
            for line in text.lines() {
                let _ = writeln!(f, "{line}\x1b[K");
            }
            f.push_str("\x1b[J");
            f
        } else {
            // Blank lines end snapshots, so none inside one.
            let mut f: String = text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| format!("{l}\n"))
                .collect();
            f.push('\n');
            f
        };
        let mut out = std::io::stdout().lock();
        if out
            .write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            // Whoever read the snapshots has gone (a closed pipe).
            return Ok(());
        }
    }
}

/// The status as `argon status` prints it: a table, or one line of JSON.
fn render(s: &ClusterStatus, json: bool) -> Result<String, Failure> {
    if json {
        let text =
            serde_json::to_string(s).map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?;
        return Ok(text + "\n");
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = table(&mut out, s);
    Ok(out)
}

fn table(out: &mut String, s: &ClusterStatus) -> std::fmt::Result {
    writeln!(
        out,
"workers {}  capacity {}  in flight {}  queued {}/{} (high {}, normal {}, low {}){}{}{}  avg task {:.3} ms",
        s.workers,
        s.capacity,
        s.in_flight,
        s.queued,
        s.queue_limit,
        s.queued_by_priority.high,
        s.queued_by_priority.normal,
        s.queued_by_priority.low,
        match s.retrying {
            0 => String::new(),
            n => format!("  retrying {n}"),
        },
        match s.awaiting_provider {
            0 => String::new(),
            n => format!("  awaiting a provider {n}"),
        },
        match s.scheduled {
            0 => String::new(),
            n => format!("  scheduled {n}"),
        },
        s.avg_task_ms
    )?;
    writeln!(
        out,
        "completed {}  failed {}  denied {}",
        s.completed, s.failed, s.denied
    )?;
    for l in &s.limits {
        let mut parts = Vec::new();
        if let Some(max) = l.max_running {
            parts.push(format!("running {}/{max}", l.running));
        }
        if let Some(max) = l.max_queued {
            parts.push(format!("queued {}/{max}", l.queued.unwrap_or(0)));
        }
        if let Some(rate) = &l.rate {
            parts.push(format!("rate {}, {} denied", escaped(rate), l.rate_limited));
        }
        writeln!(
            out,
            "limit {}: {}",
            escaped(&l.task).max_chars(64),
            parts.join(", ")
        )?;
    }
    if !s.worker_list.is_empty() {
        writeln!(
            out,
            "\n{:>4}  {:<22} {:>8} {:>9} {:>10}  {:<5} tasks",
            "id", "address", "capacity", "in flight", "avg ms", "eval"
        )?;
        for w in &s.worker_list {
            writeln!(
                out,
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
            )?;
        }
    }
    match s.workers_not_listed() {
        0 => {}
        1 => writeln!(out, "… and 1 more worker (the busiest are listed)")?,
        n => writeln!(out, "… and {n} more workers (the busiest are listed)")?,
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
