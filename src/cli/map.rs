//! `argon map TASK`: batch work. Reads JSON Lines (one task's arguments per
//! line), runs the task once per line with at most `--concurrency` in
//! flight, and writes one JSON line per input line: the result, or
//! `{"error": "..."}`. Output keeps the input's order unless `--unordered`.
//! A blank line is no task: ordered output keeps an empty line in its place
//! (so line N of the output still answers line N of the input), unordered
//! output skips it, and it counts neither as done nor failed.
//!
//! Memory stays bounded by the concurrency whatever the input's size: a
//! line is read only when a place in the window is free, and in ordered
//! mode the window spans from the oldest line not yet written, so finished
//! results wait for at most `concurrency` lines. Denied tasks are retried on
//! the client's logarithmic backoff; the queue bound stays the manager's.

use argon::actors::manager::retry::MAX_RETRIES;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use argon::client::{Client, ClientError, QueueOptions};
use argon::config::Config;
use argon::launch::{Failure, EXIT_FAILED, EXIT_USAGE};
use argon::protocol::{Priority, Value};

use super::args::{client_config, ClientArgs};

/// `argon map`
#[derive(Args, Debug)]
pub struct MapArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Task name.
    pub task: String,
    /// JSON Lines to read, one task's arguments per line; - is stdin.
    #[arg(long, short, value_name = "FILE", default_value = "-")]
    pub input: PathBuf,
    /// Where to write one result per line; - is stdout.
    #[arg(long, short, value_name = "FILE", default_value = "-")]
    pub output: PathBuf,
    /// Tasks in flight at once [default: what the cluster can take now,
    /// its slots plus its queue bound, at most 10,000]. More than that is
    /// denied and retried on a backoff, which only slows the run.
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: Option<u32>,
    /// Write each result as it comes, as `{"line": N, "result": ...}` (or
    /// `{"line": N, "error": ...}`), instead of in input order.
    #[arg(long)]
    pub unordered: bool,
    /// high, normal or low.
    #[arg(long, default_value = "normal")]
    pub priority: Priority,
    /// Deadline for each task, e.g. 500ms, 5s, 2m.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DUR")]
    pub timeout: Option<Duration>,
    /// Lost workers (not failed runs: --retries): how many times each task
    /// may be started if its worker is lost [default: the manager's].
    #[arg(long, value_name = "N")]
    pub attempts: Option<u32>,
    /// Failed runs: how many times the manager may run each task again
    /// after a run that failed, on a growing backoff; at most 10
    /// [default: the manager's].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RETRIES)))]
    pub retries: Option<u32>,
}

/// Largest window chosen from the cluster's size when `--concurrency` is
/// not given.
const DEFAULT_WINDOW_MAX: u64 = 10_000;

/// What one line became.
type Outcome = Result<Value, String>;

/// What one line became, if it was a task (not blank).
type LineOutcome = Option<Outcome>;

/// Counts for the progress line and the summary.
#[derive(Default)]
struct Tally {
    done: u64,
    failed: u64,
    denied: u64,
    /// Blank lines: no task.
    blank: u64,
}

/// `argon map`: see the module docs. Exits 1 if any task failed (each
/// failure is also on its line), 2 if the input or output cannot be opened.
pub async fn map(a: MapArgs, config: &Config) -> Result<(), Failure> {
    if a.timeout.is_some_and(|t| t.is_zero()) {
        return Err(Failure::new(EXIT_USAGE, "--timeout must be more than 0"));
    }
    let mut cc = client_config(&a.client, config)?;
    cc.retry = true;
    let input = open_input(&a.input).await?;
    let mut out = open_output(&a.output)?;
    let total = count_lines(&a.input);
    let client = Client::connect(cc).await?;
    let opts = QueueOptions {
        priority: a.priority,
        timeout: a.timeout,
        attempts: a.attempts.unwrap_or(0),
        retries: a.retries,
        retry: Some(true),
        ..QueueOptions::default()
    };
    let window = match a.concurrency {
        Some(n) => u64::from(n),
        None => {
            let s = client.status().await?;
            (s.capacity + s.queue_limit).clamp(1, DEFAULT_WINDOW_MAX)
        }
    };
    log::debug!("map: {window} task(s) in flight at most");
    let bar = progress_bar(total);
    let started = Instant::now();
    let mut tally = Tally::default();

    let mut lines = input.lines();
    let mut next_line: u64 = 0; // lines read so far
    let mut next_out: u64 = 0; // ordered mode: the oldest line not written
    let mut finished: BTreeMap<u64, LineOutcome> = BTreeMap::new();
    let mut running = FuturesUnordered::new();
    let mut input_done = false;
    let write_err =
        |e: std::io::Error| Failure::new(EXIT_FAILED, format!("cannot write output: {e}"));

    loop {
        // Fill the window: in flight, plus (ordered) results held back.
        while !input_done && next_line - next_out < window && (running.len() as u64) < window {
            match lines.next_line().await {
                Ok(Some(text)) => {
                    let n = next_line;
                    next_line += 1;
                    let client = &client;
                    let opts = &opts;
                    let task = a.task.as_str();
                    running.push(async move {
                        if text.trim().is_empty() {
                            return (n, (None, 0));
                        }
                        let outcome = match parse_line(&text) {
                            Ok(args) => match client.queue_detailed(task, args, opts).await {
                                Ok(c) => (Ok(c.value), c.denials),
                                Err(e) => (Err(error_text(&e)), 0),
                            },
                            Err(e) => (Err(e), 0),
                        };
                        (n, (Some(outcome.0), outcome.1))
                    });
                }
                Ok(None) => input_done = true,
                Err(e) => {
                    return Err(Failure::new(
                        EXIT_USAGE,
                        format!("cannot read line {}: {e}", next_line + 1),
                    ))
                }
            }
        }
        let Some((n, (outcome, denials))) = running.next().await else {
            break;
        };
        tally.denied += u64::from(denials);
        match &outcome {
            Some(Ok(_)) => tally.done += 1,
            Some(Err(_)) => tally.failed += 1,
            None => tally.blank += 1,
        }
        if a.unordered {
            if let Some(o) = &outcome {
                writeln!(out, "{}", unordered_line(n, o)).map_err(write_err)?;
            }
            next_out = next_line.min(next_out + 1);
        } else {
            finished.insert(n, outcome);
            while let Some(o) = finished.remove(&next_out) {
                match &o {
                    Some(o) => writeln!(out, "{}", ordered_line(o)),
                    None => writeln!(out),
                }
                .map_err(write_err)?;
                next_out += 1;
            }
        }
        if running.is_empty() || finished.is_empty() {
            out.flush().map_err(write_err)?;
        }
        bar.set_position(tally.done + tally.failed + tally.blank);
        bar.set_message(format!(
            "done {}  failed {}  denied {}",
            tally.done, tally.failed, tally.denied
        ));
    }
    out.flush().map_err(write_err)?;
    bar.finish_and_clear();
    let n = tally.done + tally.failed;
    log::info!(
        "{n} task(s) in {:.2} s: {} done, {} failed, {} denial(s) retried, {} blank line(s)",
        started.elapsed().as_secs_f64(),
        tally.done,
        tally.failed,
        tally.denied,
        tally.blank
    );
    if tally.failed > 0 {
        return Err(Failure::new(
            EXIT_FAILED,
            format!("{} of {n} task(s) failed (see their lines)", tally.failed),
        ));
    }
    Ok(())
}

fn parse_line(text: &str) -> Result<Value, String> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(argon::json::to_value)
        .map_err(|e| format!("not valid JSON: {e}"))
}

fn error_text(e: &ClientError) -> String {
    match e {
        ClientError::Failed(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Lines per second for the progress line: whole numbers from 10 up, one
/// decimal below.
fn rate_text(per_sec: f64) -> String {
    if per_sec >= 10.0 {
        format!("{per_sec:.0}/s")
    } else {
        format!("{per_sec:.1}/s")
    }
}

fn ordered_line(o: &Outcome) -> String {
    match o {
        Ok(v) => argon::json::to_text(v),
        Err(e) => serde_json::json!({ "error": e }).to_string(),
    }
}

fn unordered_line(n: u64, o: &Outcome) -> String {
    let line = n + 1;
    match o {
        Ok(v) => format!(r#"{{"line":{line},"result":{}}}"#, argon::json::to_text(v)),
        Err(e) => serde_json::json!({ "line": line, "error": e }).to_string(),
    }
}

async fn open_input(path: &PathBuf) -> Result<Box<dyn AsyncBufRead + Unpin>, Failure> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::new(tokio::io::stdin())));
    }
    let f = tokio::fs::File::open(path).await.map_err(|e| {
        Failure::new(
            EXIT_USAGE,
            format!("cannot open input {}: {e}", path.display()),
        )
    })?;
    Ok(Box::new(BufReader::new(f)))
}

fn open_output(path: &PathBuf) -> Result<Box<dyn Write>, Failure> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufWriter::new(std::io::stdout())));
    }
    let f = std::fs::File::create(path).map_err(|e| {
        Failure::new(
            EXIT_USAGE,
            format!("cannot create output {}: {e}", path.display()),
        )
    })?;
    Ok(Box::new(std::io::BufWriter::new(f)))
}

/// Lines in a regular input file, for the progress bar's ETA; `None` for
/// stdin (which is read once, as it comes).
fn count_lines(path: &PathBuf) -> Option<u64> {
    use std::io::BufRead;
    if path.as_os_str() == "-" {
        return None;
    }
    let f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    let mut r = std::io::BufReader::new(f);
    let mut buf = Vec::new();
    while r.read_until(b'\n', &mut buf).ok()? > 0 {
        n += 1;
        buf.clear();
    }
    Some(n)
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total.is_some() {
        "{pos}/{len} lines  {msg}  {rate}  eta {eta}"
    } else {
        "{pos} lines  {msg}  {rate}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(
            style.with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate_text(s.per_sec()));
            }),
        );
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_without_a_string_of_decimals() {
        assert_eq!(rate_text(1234.5678), "1235/s");
        assert_eq!(rate_text(10.0), "10/s");
        assert_eq!(rate_text(2.345), "2.3/s");
    }
}
