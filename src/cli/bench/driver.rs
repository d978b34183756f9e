//! The one load driver, behind `argon bench` (attached and `--detach`),
//! `bench --sweep` and `argon demo`. A run is a set of [`Lane`]s, each a
//! loop with one task outstanding on one connection; lanes take task
//! numbers from a shared counter until the run's [`Until`] says stop. A
//! denied task is sent again after a wait (the client's backoff, or a
//! probe's fraction of `retry_after`), and every task ends as one
//! [`TaskRecord`] handed to the run's [`Tally`]. Attached and detached runs
//! differ only in [`submit`]: an attached task ends with its result, a
//! detached one with the id the manager accepted it under.
//!
//! Latencies go into HDR histograms ([`latency_histogram`]), so memory
//! stays the same however many tasks a run has.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::join_all;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::{sleep, sleep_until, Instant};

use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::protocol::Value;

/// Makes the task (name, arguments) for task number `i`.
pub type TaskMaker = Box<dyn Fn(u32) -> (String, Value) + Send + Sync>;

/// Largest latency a histogram of [`latency_histogram`] tells apart: an
/// hour, in microseconds. Longer samples count as an hour.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Error texts of failed tasks [`Counts`] keeps; the rest are counted.
pub const KEPT_ERRORS: usize = 10;

/// Shortest wait after a deny, as the protocol asks.
const MIN_RESUBMIT: Duration = Duration::from_millis(10);

/// Connections [`connect`] opens at once, so the manager's accept backlog
/// never overflows.
const CONNECT_BATCH: u64 = 64;

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

/// Records `d` in microseconds, at least 1.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// Opens `n` connections with `config`, [`CONNECT_BATCH`] at a time.
pub async fn connect(config: &ClientConfig, n: u64) -> Result<Vec<Client>, ClientError> {
    let mut conns = Vec::with_capacity(n as usize);
    while (conns.len() as u64) < n {
        let batch = CONNECT_BATCH.min(n - conns.len() as u64);
        let tries = (0..batch).map(|_| Client::connect(config.clone()));
        for c in join_all(tries).await {
            conns.push(c?);
        }
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

/// `windows[i]` lanes on `clients[i]`, each waiting out denials on the
/// client's backoff.
pub fn lanes(clients: &[Client], windows: &[u32]) -> Vec<Lane> {
    clients
        .iter()
        .zip(windows)
        .flat_map(|(client, &window)| {
            (0..window).map(|_| Lane {
                client: client.clone(),
                on_deny: OnDeny::Backoff,
            })
        })
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

/// How tasks are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The lane waits for each task's result.
    Attached,
    /// The lane waits only for the manager's acknowledgement with the id.
    Detached,
}

/// When a run ends.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this many tasks in all.
    Tasks(u32),
    /// No task starts, and no denied one is sent again, from `to` on;
    /// results not in by `answers_by` are given up on. A lane also stops
    /// after a task it gave up on or that met an error, so a lost
    /// connection does not spin until the end.
    Window {
        /// End of the window.
        to: Instant,
        /// Deadline for the results of accepted tasks.
        answers_by: Instant,
    },
}

/// What a lane does after a deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDeny {
    /// Waits as the client's config says (`ClientConfig::retry_delay`), as
    /// the protocol recommends.
    Backoff,
    /// Sends again every 1/`divisor` of the first deny's `retry_after`, to
    /// find how long the wait needed to be.
    Probe {
        /// Fraction of `retry_after` between tries.
        divisor: u32,
    },
}

/// One loop of a run: a connection (shared with other lanes or not) and
/// its way with denials.
pub struct Lane {
    /// The connection.
    pub client: Client,
    /// What it does after a deny.
    pub on_deny: OnDeny,
}

/// What a run sends and until when.
pub struct Load {
    /// Attached or detached.
    pub mode: Mode,
    /// When it ends.
    pub until: Until,
    /// The task for each number.
    pub make: TaskMaker,
    /// Whether a result must equal its arguments (for `echo`).
    pub check_echo: bool,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// Its result came at `at`; `wrong` if it was checked and differed
    /// from the arguments.
    Done {
        /// When.
        at: Instant,
        /// Checked and wrong.
        wrong: bool,
    },
    /// Accepted detached under `id`, acknowledged at `at`.
    Accepted {
        /// When.
        at: Instant,
        /// The manager's task id.
        id: u64,
    },
    /// Answered with a failure at `at`.
    Failed {
        /// When.
        at: Instant,
        /// Why.
        error: String,
    },
    /// Denied, and the run ended before its next try.
    Abandoned,
    /// Accepted, with no answer by the run's deadline for answers.
    Unfinished,
    /// Not answered for another reason (connection lost, protocol error).
    Error(String),
}

/// How one task went.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Its name.
    pub task: String,
    /// Whether its lane was a probe.
    pub probe: bool,
    /// When it was first sent.
    pub first: Instant,
    /// When the first deny came and the `retry_after` it gave.
    pub first_deny: Option<(Instant, Duration)>,
    /// Denials in all.
    pub denials: u32,
    /// When the submit the manager accepted was sent.
    pub accepted: Option<Instant>,
    /// How it ended.
    pub end: End,
}

/// Where the records of a run go, one at a time, under a lock never held
/// across an await.
pub trait Tally {
    /// Takes the record of one task.
    fn add(&mut self, t: TaskRecord);
}

/// Runs `load` on `lanes`, every record into `tally`, and returns the
/// wall time of the run.
pub async fn run<T: Tally>(
    lanes: &[Lane],
    load: &Load,
    tally: &Mutex<T>,
    pb: &ProgressBar,
) -> Duration {
    let next = AtomicU32::new(0);
    let started = Instant::now();
    join_all(
        lanes
            .iter()
            .map(|lane| lane_loop(lane, load, &next, tally, pb)),
    )
    .await;
    started.elapsed()
}

async fn lane_loop<T: Tally>(
    lane: &Lane,
    load: &Load,
    next: &AtomicU32,
    tally: &Mutex<T>,
    pb: &ProgressBar,
) {
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let more = match load.until {
            Until::Tasks(total) => i < total,
            Until::Window { to, .. } => Instant::now() < to,
        };
        if !more {
            return;
        }
        let t = one_task(lane, load, i).await;
        let gave_up = matches!(load.until, Until::Window { .. })
            && matches!(t.end, End::Abandoned | End::Unfinished | End::Error(_));
        tally.lock().expect("tally lock").add(t);
        pb.inc(1);
        if gave_up {
            return;
        }
    }
}

/// Sends task number `i` until it is accepted, or the run gives it up.
async fn one_task(lane: &Lane, load: &Load, i: u32) -> TaskRecord {
    let (task, args) = (load.make)(i);
    let (resend_until, answers_by) = match load.until {
        Until::Tasks(_) => (None, None),
        Until::Window { to, answers_by } => (Some(to), Some(answers_by)),
    };
    let mut t = TaskRecord {
        task,
        probe: matches!(lane.on_deny, OnDeny::Probe { .. }),
        first: Instant::now(),
        first_deny: None,
        denials: 0,
        accepted: None,
        end: End::Abandoned,
    };
    loop {
        let sent = Instant::now();
        let answer = submit(&lane.client, load.mode, &t.task, args.clone(), answers_by).await;
        let now = Instant::now();
        t.end = match answer {
            Some(Err(ClientError::Denied { retry_after, .. })) => {
                t.denials += 1;
                let (_, first) = *t.first_deny.get_or_insert((now, retry_after));
                let wait = match lane.on_deny {
                    OnDeny::Backoff => lane.client.config().retry_delay(t.denials, retry_after),
                    OnDeny::Probe { divisor } => (first / divisor).max(MIN_RESUBMIT),
                };
                if resend_until.is_some_and(|to| now + wait >= to) {
                    return t;
                }
                sleep(wait).await;
                continue;
            }
            Some(Err(e @ ClientError::Failed(_))) => End::Failed {
                at: now,
                error: e.to_string(),
            },
            Some(Err(e)) => End::Error(e.to_string()),
            Some(Ok(Answer::Value(v))) => End::Done {
                at: now,
                wrong: load.check_echo && v != args,
            },
            Some(Ok(Answer::Id(id))) => End::Accepted { at: now, id },
            None => End::Unfinished,
        };
        if !matches!(t.end, End::Error(_)) {
            t.accepted = Some(sent);
        }
        return t;
    }
}

/// A manager's answer to a submit it accepted.
enum Answer {
    /// An attached task's result.
    Value(Value),
    /// A detached task's id.
    Id(u64),
}

/// One try of a task: the one place attached and detached runs differ.
/// `None` when an attached result did not come by `answers_by`.
async fn submit(
    client: &Client,
    mode: Mode,
    task: &str,
    args: Value,
    answers_by: Option<Instant>,
) -> Option<Result<Answer, ClientError>> {
    let opts = QueueOptions {
        retry: Some(false),
        ..QueueOptions::default()
    };
    if mode == Mode::Detached {
        return Some(
            client
                .submit_detached(task, args, &opts)
                .await
                .map(Answer::Id),
        );
    }
    let result = match client.submit(task, args, &opts).await {
        Ok(submitted) => submitted.result(),
        Err(e) => return Some(Err(e)),
    };
    let Some(deadline) = answers_by else {
        return Some(result.await.map(Answer::Value));
    };
    tokio::select! {
        r = result => Some(r.map(Answer::Value)),
        _ = sleep_until(deadline) => None,
    }
}

/// The tally of a run of a fixed number of tasks.
#[derive(Debug, Clone)]
pub struct Counts {
    /// First submit to result (attached) or acknowledgement (detached),
    /// microseconds, of the tasks that got one.
    pub latency: Histogram<u64>,
    /// Tasks done or accepted, per task name.
    pub per_task: BTreeMap<String, u32>,
    /// The ids of detached tasks accepted.
    pub ids: Vec<u64>,
    /// Denials that were retried.
    pub denials: u64,
    /// Tasks denied at least once.
    pub denied_tasks: u32,
    /// Tasks that failed, were not accepted, or (detached) whose result
    /// could not be read.
    pub failed: u64,
    /// Errors of the first [`KEPT_ERRORS`] of those.
    pub errors: Vec<String>,
    /// Results that differed from their arguments, when checked.
    pub wrong: u32,
    /// Results of detached tasks read by id.
    pub read: usize,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            latency: latency_histogram(),
            per_task: BTreeMap::new(),
            ids: Vec::new(),
            denials: 0,
            denied_tasks: 0,
            failed: 0,
            errors: Vec::new(),
            wrong: 0,
            read: 0,
        }
    }
}

impl Counts {
    /// Tasks answered: with their result (attached) or their id (detached).
    pub fn answered(&self) -> usize {
        self.latency.len() as usize
    }

    /// Latency percentile `p` (0–100), microseconds.
    pub fn percentile_us(&self, p: f64) -> u64 {
        percentile(&self.latency, p)
    }

    /// Counts a failure, keeping its text if few were kept yet.
    pub fn fail(&mut self, error: String) {
        self.failed += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(error);
        }
    }
}

impl Tally for Counts {
    fn add(&mut self, t: TaskRecord) {
        if t.denials > 0 {
            self.denied_tasks += 1;
            self.denials += u64::from(t.denials);
        }
        match t.end {
            End::Done { at, wrong } => {
                record(&mut self.latency, at - t.first);
                self.wrong += u32::from(wrong);
                *self.per_task.entry(t.task).or_default() += 1;
            }
            End::Accepted { at, id } => {
                record(&mut self.latency, at - t.first);
                self.ids.push(id);
                *self.per_task.entry(t.task).or_default() += 1;
            }
            End::Failed { error, .. } | End::Error(error) => self.fail(error),
            End::Abandoned | End::Unfinished => self.fail(format!("{}: given up", t.task)),
        }
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
        let mut r = Counts::default();
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

    #[test]
    fn counts_take_results_ids_and_failures() {
        let first = Instant::now();
        let rec = |end: End, denials: u32| TaskRecord {
            task: "echo".into(),
            probe: false,
            first,
            first_deny: None,
            denials,
            accepted: Some(first),
            end,
        };
        let at = first + Duration::from_millis(3);
        let mut c = Counts::default();
        c.add(rec(End::Done { at, wrong: true }, 2));
        c.add(rec(End::Accepted { at, id: 7 }, 0));
        c.add(rec(End::Error("lost".into()), 1));
        assert_eq!((c.answered(), c.wrong, c.failed), (2, 1, 1));
        assert_eq!((c.denials, c.denied_tasks), (3, 2));
        assert_eq!(c.ids, vec![7]);
        assert_eq!(c.per_task["echo"], 2);
        assert!(c.percentile_us(50.0).abs_diff(3000) <= 3, "{c:?}");
    }
}
