//! `argon bench --sweep`: the degradation curve of a manager. For each
//! offered load, a multiple of the cluster's capacity, it opens that many
//! client connections; each keeps one `sleep` task outstanding and, when
//! denied, waits as the protocol recommends (docs/PROTOCOL.md §8.1) before
//! it submits again. Over a measurement window it records accepted tasks per
//! second, the deny rate, latency from acceptance and from the first attempt,
//! and how the `retry_after` the manager gave compares with the wait that
//! was needed. The result is a [`SweepReport`] (JSON) and, optionally, an
//! SVG plot of it.
//!
//! A client that waits the whole `retry_after` can only show that the wait
//! was long enough, never that it was too long. So every [`PROBE_EVERY`]th
//! client is a probe: after a deny it submits again every
//! 1/[`PROBE_DIVISOR`] of the `retry_after` it was given, and the time until
//! it is accepted is the wait that was needed. The manager's line for places
//! (§8.1) gives a client nothing for coming back early, so probes take
//! nothing from the others. Latency figures leave probes out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::{sleep, sleep_until, Instant};

use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::launch::{Failure, EXIT_FAILED, EXIT_USAGE};
use argon::protocol::{ClusterStatus, Value};

use super::load::{latency_histogram, percentile};

/// Every this many clients, one is a probe (see the module docs).
pub const PROBE_EVERY: u64 = 8;

/// A probe submits again every `retry_after` / this after a deny.
pub const PROBE_DIVISOR: u32 = 20;

/// Shortest wait after a deny, as the protocol asks.
const MIN_RESUBMIT: Duration = Duration::from_millis(10);

/// Most client connections one step may open.
pub const MAX_SWEEP_CLIENTS: u64 = 10_000;

/// Largest offered load, as a multiple of capacity.
pub const MAX_LOAD: f64 = 1000.0;

/// Connections opened at once.
const CONNECT_BATCH: usize = 64;

/// How often the manager's status is sampled during a window.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Longest wait for the manager to be idle between steps.
const SETTLE: Duration = Duration::from_secs(10);

/// Error texts kept per step; the rest are only counted.
const KEPT_ERRORS: usize = 5;

/// The range task durations are drawn from, uniformly, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMs {
    /// Shortest.
    pub min: u64,
    /// Longest.
    pub max: u64,
}

impl TaskMs {
    /// Mean duration, milliseconds.
    pub fn mean(&self) -> f64 {
        (self.min + self.max) as f64 / 2.0
    }
}

/// Parses `MS` or `MIN-MAX` (milliseconds, 1 to 600000).
pub fn parse_task_ms(s: &str) -> Result<TaskMs, String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=600_000).contains(n))
            .ok_or_else(|| format!("{t:?} is not a number of milliseconds from 1 to 600000"))
    };
    let (min, max) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(s)?;
            (n, n)
        }
    };
    if min > max {
        return Err(format!("{min}-{max}: the shortest comes first"));
    }
    Ok(TaskMs { min, max })
}

/// Parses an offered load: a multiple of capacity above 0, at most [`MAX_LOAD`].
pub fn parse_load(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|k| k.is_finite() && *k > 0.0 && *k <= MAX_LOAD)
        .ok_or_else(|| format!("{s:?} is not a load above 0 and at most {MAX_LOAD}"))
}

/// Parses a number of seconds above 0 and at most an hour.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|k| k.is_finite() && *k > 0.0 && *k <= 3600.0)
        .ok_or_else(|| format!("{s:?} is not a number of seconds above 0 and at most 3600"))
}

/// What a sweep offers and for how long.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// Offered loads, as multiples of capacity, in the order they run.
    pub loads: Vec<f64>,
    /// Durations of the `sleep` tasks.
    pub task_ms: TaskMs,
    /// Time before each window, for the queue to fill.
    pub warmup: Duration,
    /// Length of each measurement window.
    pub step: Duration,
}

/// How the `retry_after` the manager gave compares with the wait from a
/// task's first deny to the submit that was accepted.
#[derive(Debug, Clone, Serialize)]
pub struct WaitFit {
    /// Tasks denied in the window and accepted later.
    pub samples: u64,
    /// Median `retry_after` of their first deny, milliseconds.
    pub predicted_p50_ms: f64,
    /// Median wait from that deny to acceptance, milliseconds.
    pub wait_p50_ms: f64,
    /// `retry_after` ÷ wait, per task: 10th percentile.
    pub ratio_p10: f64,
    /// Median of the ratio.
    pub ratio_p50: f64,
    /// 90th percentile of the ratio.
    pub ratio_p90: f64,
}

/// One offered load, measured.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Offered load, as a multiple of capacity.
    pub load: f64,
    /// Client connections, each with one task outstanding.
    pub clients: u64,
    /// Of those, probes.
    pub probes: u64,
    /// Length of the measurement window, seconds.
    pub window_s: f64,
    /// Tasks whose accepted submit was sent in the window.
    pub accepted: u64,
    /// `accepted` per second of window.
    pub accepted_per_s: f64,
    /// Tasks whose result came in the window.
    pub completed: u64,
    /// `completed` per second of window.
    pub completed_per_s: f64,
    /// Accepted tasks answered with an error in the window.
    pub failed: u64,
    /// Tasks first submitted in the window.
    pub tried: u64,
    /// Share of `tried` denied at their first submit.
    pub deny_rate: f64,
    /// Denies per denied task, for clients that follow the protocol.
    pub denials_per_denied_task: f64,
    /// Denied tasks given up when the window closed before their retry.
    pub abandoned: u64,
    /// Accepted tasks with no answer by the end of the drain.
    pub unfinished: u64,
    /// Submits that failed otherwise (connection lost, protocol error).
    pub errors: u64,
    /// The first few of those errors.
    pub error_texts: Vec<String>,
    /// Latency from the accepted submit to the result, median, ms.
    pub accept_p50_ms: f64,
    /// The same, 99th percentile.
    pub accept_p99_ms: f64,
    /// Latency from a task's first submit to its result, median, ms.
    pub first_p50_ms: f64,
    /// The same, 99th percentile.
    pub first_p99_ms: f64,
    /// Against the wait probes needed; absent without samples.
    pub retry_after_needed: Option<WaitFit>,
    /// Against the wait clients following the protocol took; absent without samples.
    pub retry_after_taken: Option<WaitFit>,
    /// Tasks in the manager's queue, mean over the window's samples.
    pub queued_mean: f64,
    /// The same, most.
    pub queued_max: u64,
    /// Tasks running, mean over the window's samples.
    pub in_flight_mean: f64,
    /// The manager's average task time at the end of the window, ms.
    pub manager_avg_task_ms: f64,
}

/// A whole sweep, as `--out` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// `argon` version that measured.
    pub version: String,
    /// When the sweep started, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Manager address.
    pub manager: String,
    /// Workers registered at the start.
    pub workers: u64,
    /// Slots at the start.
    pub capacity: u64,
    /// Queue bound at the start.
    pub queue_limit: u64,
    /// `queue_limit` ÷ `capacity`.
    pub queue_factor: f64,
    /// The task every client runs.
    pub task: String,
    /// Shortest task, ms.
    pub task_ms_min: u64,
    /// Longest task, ms.
    pub task_ms_max: u64,
    /// What the cluster can finish per second: capacity ÷ mean task time.
    pub capacity_tasks_per_s: f64,
    /// Warm-up before each window, seconds.
    pub warmup_s: f64,
    /// Each window, seconds.
    pub window_s: f64,
    /// One client in this many is a probe.
    pub probe_every: u64,
    /// One entry per offered load, in the order run.
    pub steps: Vec<StepReport>,
}

impl SweepReport {
    /// Tasks that failed, errored or were left unfinished, over all steps.
    pub fn troubles(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| s.failed + s.errors + s.unfinished)
            .sum()
    }
}

/// Runs `plan` against the manager `config` points at.
pub async fn sweep(config: ClientConfig, plan: &SweepPlan) -> Result<SweepReport, Failure> {
    let observer = Client::connect(config.clone()).await?;
    let st = observer.status().await?;
    if st.capacity == 0 {
        return Err(Failure::new(
            EXIT_FAILED,
            "the manager has no capacity: start workers first",
        ));
    }
    for &load in &plan.loads {
        let n = clients_for(load, st.capacity);
        if n > MAX_SWEEP_CLIENTS {
            return Err(Failure::new(
                EXIT_USAGE,
                format!(
                    "load {load} x capacity {} is {n} clients; at most {MAX_SWEEP_CLIENTS}",
                    st.capacity
                ),
            ));
        }
    }
    let queue_factor = st.queue_limit as f64 / st.capacity as f64;
    let mut report = SweepReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        manager: config.mgr.clone(),
        workers: st.workers,
        capacity: st.capacity,
        queue_limit: st.queue_limit,
        queue_factor,
        task: "sleep".into(),
        task_ms_min: plan.task_ms.min,
        task_ms_max: plan.task_ms.max,
        capacity_tasks_per_s: st.capacity as f64 / (plan.task_ms.mean() / 1000.0),
        warmup_s: plan.warmup.as_secs_f64(),
        window_s: plan.step.as_secs_f64(),
        probe_every: PROBE_EVERY,
        steps: Vec::new(),
    };
    // Long enough for a full queue and every slot to finish, twice over.
    let drain = Duration::from_millis(plan.task_ms.max)
        .mul_f64(2.0 * (queue_factor + 2.0))
        .max(Duration::from_secs(5));
    for &load in &plan.loads {
        let n = clients_for(load, st.capacity);
        log::info!("sweep: load {load} x capacity, {n} clients");
        let step = run_step(&config, &observer, load, n, plan, drain).await?;
        report.steps.push(step);
        settle(&observer).await;
    }
    Ok(report)
}

fn clients_for(load: f64, capacity: u64) -> u64 {
    ((load * capacity as f64).round() as u64).max(1)
}

/// Waits, bounded, until the manager has nothing queued or running.
async fn settle(observer: &Client) {
    let until = Instant::now() + SETTLE;
    while Instant::now() < until {
        match observer.status().await {
            Ok(s) if s.queued == 0 && s.in_flight == 0 => return,
            Ok(_) => {}
            Err(e) => {
                log::warn!("sweep: status between steps: {e}");
                return;
            }
        }
        sleep(Duration::from_millis(50)).await;
    }
    log::warn!("sweep: the manager was still busy {SETTLE:?} after a step");
}

/// Opens `n` connections, [`CONNECT_BATCH`] at a time.
async fn connect_all(config: &ClientConfig, n: u64) -> Result<Vec<Client>, ClientError> {
    let mut conns = Vec::with_capacity(n as usize);
    while (conns.len() as u64) < n {
        let batch = CONNECT_BATCH.min((n - conns.len() as u64) as usize);
        let tries = (0..batch).map(|_| Client::connect(config.clone()));
        for c in join_all(tries).await {
            conns.push(c?);
        }
    }
    Ok(conns)
}

/// Times of one step.
#[derive(Clone, Copy)]
struct Clock {
    /// Measurement window: from, to.
    from: Instant,
    to: Instant,
    /// Outstanding tasks are given up on at this time.
    drain_until: Instant,
}

impl Clock {
    fn inside(&self, t: Instant) -> bool {
        self.from <= t && t < self.to
    }
}

async fn run_step(
    config: &ClientConfig,
    observer: &Client,
    load: f64,
    n: u64,
    plan: &SweepPlan,
    drain: Duration,
) -> Result<StepReport, Failure> {
    let conns = connect_all(config, n).await?;
    let start = Instant::now();
    let clock = Clock {
        from: start + plan.warmup,
        to: start + plan.warmup + plan.step,
        drain_until: start + plan.warmup + plan.step + drain,
    };
    let stats = Arc::new(Mutex::new(StepStats::new(clock)));
    let loops = conns.iter().enumerate().map(|(i, c)| {
        let probe = i as u64 % PROBE_EVERY == PROBE_EVERY - 1;
        client_loop(c.clone(), probe, plan.task_ms, clock, stats.clone())
    });
    let (_, samples) = tokio::join!(join_all(loops), sample_status(observer, clock));
    drop(conns);
    let stats = Arc::into_inner(stats)
        .and_then(|m| m.into_inner().ok())
        .ok_or_else(|| Failure::new(EXIT_FAILED, "a client outlived its step of the sweep"))?;
    Ok(stats.report(load, n, plan.step, &samples))
}

/// Samples the manager's status through the window.
async fn sample_status(observer: &Client, clock: Clock) -> Vec<ClusterStatus> {
    sleep_until(clock.from).await;
    let mut samples = Vec::new();
    while Instant::now() < clock.to {
        match observer.status().await {
            Ok(s) => samples.push(s),
            Err(e) => {
                log::warn!("sweep: status during a step: {e}");
                break;
            }
        }
        sleep(SAMPLE_EVERY).await;
    }
    samples
}

/// How one task went.
struct TaskRecord {
    probe: bool,
    first: Instant,
    /// When the first deny came and the `retry_after` it gave.
    first_deny: Option<(Instant, Duration)>,
    denials: u32,
    /// When the accepted submit was sent.
    accepted: Option<Instant>,
    end: End,
}

enum End {
    Done(Instant),
    Failed(Instant),
    /// Denied, and the window closed before its next try.
    Abandoned,
    /// Accepted, no answer by the end of the drain.
    Unfinished,
    Error(String),
}

/// One client: one task outstanding at a time until the window closes.
async fn client_loop(
    client: Client,
    probe: bool,
    task_ms: TaskMs,
    clock: Clock,
    stats: Arc<Mutex<StepStats>>,
) {
    let mut rng = SplitMix(getrandom::u64().unwrap_or(0x5eed));
    let opts = QueueOptions {
        retry: Some(false),
        ..QueueOptions::default()
    };
    while Instant::now() < clock.to {
        let ms = task_ms.min + rng.next() % (task_ms.max - task_ms.min + 1);
        let mut t = TaskRecord {
            probe,
            first: Instant::now(),
            first_deny: None,
            denials: 0,
            accepted: None,
            end: End::Abandoned,
        };
        let stop = loop {
            let sent = Instant::now();
            let answer = match client.submit("sleep", Value::from(ms), &opts).await {
                Ok(s) => tokio::select! {
                    r = s.result() => Some(r),
                    _ = sleep_until(clock.drain_until) => None,
                },
                Err(e) => Some(Err(e)),
            };
            match answer {
                None => {
                    t.accepted = Some(sent);
                    t.end = End::Unfinished;
                    break true;
                }
                Some(Ok(_)) => {
                    t.accepted = Some(sent);
                    t.end = End::Done(Instant::now());
                    break false;
                }
                Some(Err(ClientError::Denied { retry_after, .. })) => {
                    let now = Instant::now();
                    t.denials += 1;
                    let first = *t.first_deny.get_or_insert((now, retry_after));
                    let wait = if probe {
                        (first.1 / PROBE_DIVISOR).max(MIN_RESUBMIT)
                    } else {
                        client.config().retry_delay(t.denials, retry_after)
                    };
                    if now + wait >= clock.to {
                        t.end = End::Abandoned;
                        break true;
                    }
                    sleep(wait).await;
                }
                Some(Err(ClientError::Failed(_))) => {
                    t.accepted = Some(sent);
                    t.end = End::Failed(Instant::now());
                    break false;
                }
                Some(Err(e)) => {
                    t.end = End::Error(e.to_string());
                    break true;
                }
            }
        };
        stats.lock().expect("stats lock").add(&t);
        if stop {
            return;
        }
    }
}

/// A small generator for task durations.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Ratios are kept in thousandths, from 0.001 to a million.
fn ratio_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000_000, 3).expect("constant bounds are valid")
}

/// `retry_after` against waits, in one histogram each.
struct FitStats {
    predicted: Histogram<u64>,
    waited: Histogram<u64>,
    ratio: Histogram<u64>,
}

impl FitStats {
    fn new() -> FitStats {
        FitStats {
            predicted: latency_histogram(),
            waited: latency_histogram(),
            ratio: ratio_histogram(),
        }
    }

    fn add(&mut self, predicted: Duration, waited: Duration) {
        let p = predicted.as_micros() as u64;
        let w = (waited.as_micros() as u64).max(1);
        self.predicted.saturating_record(p.max(1));
        self.waited.saturating_record(w);
        self.ratio
            .saturating_record((p.saturating_mul(1000) / w).max(1));
    }

    fn fit(&self) -> Option<WaitFit> {
        if self.ratio.is_empty() {
            return None;
        }
        let r = |p| percentile(&self.ratio, p) as f64 / 1000.0;
        Some(WaitFit {
            samples: self.ratio.len(),
            predicted_p50_ms: ms(percentile(&self.predicted, 50.0)),
            wait_p50_ms: ms(percentile(&self.waited, 50.0)),
            ratio_p10: r(10.0),
            ratio_p50: r(50.0),
            ratio_p90: r(90.0),
        })
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// What the clients of one step saw, in bounded memory.
struct StepStats {
    clock: Clock,
    tried: u64,
    denied_first: u64,
    accepted: u64,
    completed: u64,
    failed: u64,
    abandoned: u64,
    unfinished: u64,
    errors: u64,
    error_texts: Vec<String>,
    denied_tasks: u64,
    denials: u64,
    from_accept: Histogram<u64>,
    from_first: Histogram<u64>,
    needed: FitStats,
    taken: FitStats,
}

impl StepStats {
    fn new(clock: Clock) -> StepStats {
        StepStats {
            clock,
            tried: 0,
            denied_first: 0,
            accepted: 0,
            completed: 0,
            failed: 0,
            abandoned: 0,
            unfinished: 0,
            errors: 0,
            error_texts: Vec::new(),
            denied_tasks: 0,
            denials: 0,
            from_accept: latency_histogram(),
            from_first: latency_histogram(),
            needed: FitStats::new(),
            taken: FitStats::new(),
        }
    }

    fn add(&mut self, t: &TaskRecord) {
        let c = self.clock;
        if c.inside(t.first) {
            self.tried += 1;
            self.denied_first += u64::from(t.first_deny.is_some());
        }
        if let Some((at, _)) = t.first_deny {
            if c.inside(at) && !t.probe {
                self.denied_tasks += 1;
                self.denials += u64::from(t.denials);
            }
        }
        if t.accepted.is_some_and(|a| c.inside(a)) {
            self.accepted += 1;
        }
        if let (Some((at, predicted)), Some(accepted)) = (t.first_deny, t.accepted) {
            if c.inside(at) {
                let fit = if t.probe {
                    &mut self.needed
                } else {
                    &mut self.taken
                };
                fit.add(predicted, accepted - at);
            }
        }
        match &t.end {
            End::Done(done) if c.inside(*done) => {
                self.completed += 1;
                if !t.probe {
                    let accepted = t.accepted.unwrap_or(t.first);
                    self.from_accept
                        .saturating_record(((*done - accepted).as_micros() as u64).max(1));
                    self.from_first
                        .saturating_record(((*done - t.first).as_micros() as u64).max(1));
                }
            }
            End::Failed(done) if c.inside(*done) => self.failed += 1,
            End::Done(_) | End::Failed(_) => {}
            End::Abandoned => self.abandoned += 1,
            End::Unfinished => self.unfinished += 1,
            End::Error(e) => {
                self.errors += 1;
                if self.error_texts.len() < KEPT_ERRORS {
                    self.error_texts
                        .push(argon::logsafe::escaped(e).max_chars(200).to_string());
                }
            }
        }
    }

    fn report(
        self,
        load: f64,
        clients: u64,
        window: Duration,
        samples: &[ClusterStatus],
    ) -> StepReport {
        let secs = window.as_secs_f64();
        let mean = |f: fn(&ClusterStatus) -> u64| {
            if samples.is_empty() {
                0.0
            } else {
                samples.iter().map(|s| f(s) as f64).sum::<f64>() / samples.len() as f64
            }
        };
        StepReport {
            load,
            clients,
            probes: clients / PROBE_EVERY,
            window_s: secs,
            accepted: self.accepted,
            accepted_per_s: self.accepted as f64 / secs,
            completed: self.completed,
            completed_per_s: self.completed as f64 / secs,
            failed: self.failed,
            tried: self.tried,
            deny_rate: if self.tried == 0 {
                0.0
            } else {
                self.denied_first as f64 / self.tried as f64
            },
            denials_per_denied_task: if self.denied_tasks == 0 {
                0.0
            } else {
                self.denials as f64 / self.denied_tasks as f64
            },
            abandoned: self.abandoned,
            unfinished: self.unfinished,
            errors: self.errors,
            error_texts: self.error_texts,
            accept_p50_ms: ms(percentile(&self.from_accept, 50.0)),
            accept_p99_ms: ms(percentile(&self.from_accept, 99.0)),
            first_p50_ms: ms(percentile(&self.from_first, 50.0)),
            first_p99_ms: ms(percentile(&self.from_first, 99.0)),
            retry_after_needed: self.needed.fit(),
            retry_after_taken: self.taken.fit(),
            queued_mean: mean(|s| s.queued),
            queued_max: samples.iter().map(|s| s.queued).max().unwrap_or(0),
            in_flight_mean: mean(|s| s.in_flight),
            manager_avg_task_ms: samples.last().map_or(0.0, |s| s.avg_task_ms),
        }
    }
}

/// The report as a table, one line per step.
pub fn describe(r: &SweepReport) -> String {
    let mut out = format!(
        "{} workers, {} slots, queue bound {} (factor {:.1}); sleep {}-{} ms: capacity {:.1} tasks/s\n\
         {:>5} {:>7} {:>9} {:>6} {:>17} {:>17} {:>26}\n",
        r.workers,
        r.capacity,
        r.queue_limit,
        r.queue_factor,
        r.task_ms_min,
        r.task_ms_max,
        r.capacity_tasks_per_s,
        "load",
        "clients",
        "accept/s",
        "deny%",
        "accepted p50/p99",
        "first try p50/p99",
        "retry_after/needed p50 [p10-p90]",
    );
    for s in &r.steps {
        let fit = s.retry_after_needed.as_ref().map_or("-".to_string(), |f| {
            format!(
                "{:.2} [{:.2}-{:.2}] n={}",
                f.ratio_p50, f.ratio_p10, f.ratio_p90, f.samples
            )
        });
        out.push_str(&format!(
            "{:>5} {:>7} {:>9.1} {:>6.1} {:>8.0}/{:<8.0} {:>8.0}/{:<8.0} {:>26}\n",
            s.load,
            s.clients,
            s.accepted_per_s,
            s.deny_rate * 100.0,
            s.accept_p50_ms,
            s.accept_p99_ms,
            s.first_p50_ms,
            s.first_p99_ms,
            fit
        ));
    }
    let troubles = r.troubles();
    if troubles > 0 {
        out.push_str(&format!(
            "{troubles} task(s) failed, errored or were left unfinished (see the JSON)\n"
        ));
    }
    out.pop();
    out
}

/// The sweep as an SVG: throughput, latency, deny rate and the fit of
/// `retry_after`, each against the offered load.
pub fn svg(r: &SweepReport) -> Result<String, String> {
    plot::draw(r).map_err(|e| format!("cannot draw the plot: {e}"))
}

mod plot {
    //! The four panels of [`super::svg`].

    use plotters::coord::combinators::WithKeyPoints;
    use plotters::coord::types::RangedCoordf64;
    use plotters::prelude::*;

    use super::SweepReport;

    type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
    type Chart<'a, 'b> =
        ChartContext<'a, SVGBackend<'b>, Cartesian2d<WithKeyPoints<LogCoord<f64>>, RangedCoordf64>>;
    type Res = Result<(), Box<dyn std::error::Error>>;

    const FONT: &str = "sans-serif";

    fn loads(r: &SweepReport) -> (f64, f64) {
        let lo = r.steps.iter().map(|s| s.load).fold(f64::MAX, f64::min);
        let hi = r.steps.iter().map(|s| s.load).fold(0.0, f64::max);
        if r.steps.is_empty() {
            (0.5, 2.0)
        } else {
            (lo / 1.3, hi * 1.3)
        }
    }

    fn load_label(x: &f64) -> String {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }

    fn chart<'a, 'b>(
        area: &'a Area<'b>,
        r: &SweepReport,
        title: &str,
        y: std::ops::Range<f64>,
    ) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
        let (lo, hi) = loads(r);
        let ticks = r.steps.iter().map(|s| s.load).collect();
        let c = ChartBuilder::on(area)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(58)
            .build_cartesian_2d((lo..hi).log_scale().with_key_points(ticks), y)?;
        Ok(c)
    }

    fn legend<'a, 'b: 'a>(c: &mut Chart<'a, 'b>, at: SeriesLabelPosition) -> Res {
        c.configure_series_labels()
            .position(at)
            .border_style(BLACK.mix(0.4))
            .background_style(WHITE.mix(0.9))
            .label_font((FONT, 13))
            .draw()?;
        Ok(())
    }

    fn line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
        move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
    }

    fn series<'a, 'b: 'a>(
        c: &mut Chart<'a, 'b>,
        pts: Vec<(f64, f64)>,
        color: RGBColor,
        label: &str,
    ) -> Res {
        c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(line(color));
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
        Ok(())
    }

    fn mesh<'a, 'b: 'a>(c: &mut Chart<'a, 'b>, y_desc: &str) -> Res {
        c.configure_mesh()
            .x_desc("offered load (x capacity)")
            .y_desc(y_desc)
            .x_label_formatter(&load_label)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(TRANSPARENT)
            .draw()?;
        Ok(())
    }

    fn dashed<'a, 'b: 'a>(
        c: &mut Chart<'a, 'b>,
        r: &SweepReport,
        y: f64,
        color: RGBColor,
        label: Option<&str>,
    ) -> Res {
        let (lo, hi) = loads(r);
        let s = c.draw_series(DashedLineSeries::new(
            vec![(lo, y), (hi, y)],
            8,
            5,
            color.stroke_width(1),
        ))?;
        if let Some(label) = label {
            s.label(label).legend(line(color));
        }
        Ok(())
    }

    pub fn draw(r: &SweepReport) -> Result<String, Box<dyn std::error::Error>> {
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, (1200, 860)).into_drawing_area();
            root.fill(&WHITE)?;
            let title = format!(
                "Argon degradation curve: {} slots on {} worker(s), queue bound {} (factor {:.1}), sleep {}-{} ms",
                r.capacity, r.workers, r.queue_limit, r.queue_factor, r.task_ms_min, r.task_ms_max
            );
            let root = root.titled(&title, (FONT, 20))?;
            let panels = root.split_evenly((2, 2));
            throughput(&panels[0], r)?;
            latency(&panels[1], r)?;
            denies(&panels[2], r)?;
            retry_after(&panels[3], r)?;
            root.present()?;
        }
        Ok(text)
    }

    fn throughput(area: &Area<'_>, r: &SweepReport) -> Res {
        let top = r
            .steps
            .iter()
            .map(|s| s.accepted_per_s)
            .fold(r.capacity_tasks_per_s, f64::max)
            * 1.25;
        let mut c = chart(area, r, "Accepted tasks per second", 0.0..top.max(1.0))?;
        mesh(&mut c, "tasks/s")?;
        dashed(
            &mut c,
            r,
            r.capacity_tasks_per_s,
            BLACK,
            Some("capacity / mean task time"),
        )?;
        let pts = r.steps.iter().map(|s| (s.load, s.accepted_per_s)).collect();
        series(&mut c, pts, BLUE, "accepted")?;
        legend(&mut c, SeriesLabelPosition::LowerRight)
    }

    fn latency(area: &Area<'_>, r: &SweepReport) -> Res {
        let top = r
            .steps
            .iter()
            .map(|s| s.first_p99_ms.max(s.accept_p99_ms))
            .fold(1.0, f64::max)
            * 1.15;
        let mut c = chart(area, r, "Latency of accepted tasks", 0.0..top)?;
        mesh(&mut c, "ms")?;
        let pick = |f: fn(&super::StepReport) -> f64| -> Vec<(f64, f64)> {
            r.steps.iter().map(|s| (s.load, f(s))).collect()
        };
        series(
            &mut c,
            pick(|s| s.accept_p50_ms),
            BLUE,
            "p50 from acceptance",
        )?;
        series(
            &mut c,
            pick(|s| s.accept_p99_ms),
            CYAN,
            "p99 from acceptance",
        )?;
        series(&mut c, pick(|s| s.first_p50_ms), RED, "p50 from first try")?;
        series(
            &mut c,
            pick(|s| s.first_p99_ms),
            MAGENTA,
            "p99 from first try",
        )?;
        legend(&mut c, SeriesLabelPosition::UpperLeft)
    }

    fn denies(area: &Area<'_>, r: &SweepReport) -> Res {
        let mut c = chart(area, r, "Tasks denied at their first submit", 0.0..100.0)?;
        mesh(&mut c, "% of tasks")?;
        let pts = r
            .steps
            .iter()
            .map(|s| (s.load, s.deny_rate * 100.0))
            .collect();
        series(&mut c, pts, RED, "deny rate")?;
        legend(&mut c, SeriesLabelPosition::UpperLeft)
    }

    fn retry_after(area: &Area<'_>, r: &SweepReport) -> Res {
        let fits: Vec<_> = r
            .steps
            .iter()
            .filter_map(|s| s.retry_after_needed.as_ref().map(|f| (s.load, f)))
            .collect();
        let top = fits.iter().map(|(_, f)| f.ratio_p90).fold(2.0, f64::max) * 1.1;
        let mut c = chart(area, r, "retry_after / wait a probe needed", 0.0..top)?;
        mesh(&mut c, "ratio")?;
        dashed(&mut c, r, 1.0, BLACK, Some("exact"))?;
        dashed(&mut c, r, 0.75, GREEN, Some("within 25 %"))?;
        dashed(&mut c, r, 1.25, GREEN, None)?;
        c.draw_series(fits.iter().map(|(x, f)| {
            PathElement::new(
                vec![(*x, f.ratio_p10), (*x, f.ratio_p90)],
                BLUE.mix(0.6).stroke_width(2),
            )
        }))?
        .label("p10 to p90")
        .legend(line(RGBColor(120, 120, 255)));
        let pts = fits.iter().map(|(x, f)| (*x, f.ratio_p50)).collect();
        series(&mut c, pts, BLUE, "median")?;
        legend(&mut c, SeriesLabelPosition::UpperRight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ms_takes_one_number_or_a_range() {
        assert_eq!(parse_task_ms("250"), Ok(TaskMs { min: 250, max: 250 }));
        assert_eq!(parse_task_ms("200-500"), Ok(TaskMs { min: 200, max: 500 }));
        assert!(parse_task_ms("500-200").is_err());
        assert!(parse_task_ms("0").is_err());
        assert!(parse_task_ms("a-b").is_err());
        assert_eq!(TaskMs { min: 200, max: 500 }.mean(), 350.0);
    }

    #[test]
    fn loads_and_seconds_must_be_positive_and_bounded() {
        assert_eq!(parse_load("0.5"), Ok(0.5));
        assert!(parse_load("0").is_err());
        assert!(parse_load("NaN").is_err());
        assert!(parse_load("1e9").is_err());
        assert_eq!(parse_secs("1.5"), Ok(1.5));
        assert!(parse_secs("-1").is_err());
    }

    fn clock() -> Clock {
        let from = Instant::now();
        Clock {
            from,
            to: from + Duration::from_secs(10),
            drain_until: from + Duration::from_secs(20),
        }
    }

    #[test]
    fn a_task_counts_where_each_of_its_times_falls() {
        let c = clock();
        let mut s = StepStats::new(c);
        let at = |ms: u64| c.from + Duration::from_millis(ms);
        // Denied at 1 s with retry_after 400 ms, accepted at 1.5 s, done at 2 s.
        s.add(&TaskRecord {
            probe: false,
            first: at(1000),
            first_deny: Some((at(1000), Duration::from_millis(400))),
            denials: 2,
            accepted: Some(at(1500)),
            end: End::Done(at(2000)),
        });
        // Tried before the window, done inside it.
        s.add(&TaskRecord {
            probe: true,
            first: c.from - Duration::from_millis(100),
            first_deny: None,
            denials: 0,
            accepted: Some(c.from - Duration::from_millis(100)),
            end: End::Done(at(200)),
        });
        let r = s.report(2.0, 4, Duration::from_secs(10), &[]);
        assert_eq!((r.tried, r.accepted, r.completed), (1, 1, 2));
        assert_eq!(r.deny_rate, 1.0);
        assert_eq!(r.denials_per_denied_task, 2.0);
        // Probes stay out of the latencies (kept to 0.1 %).
        assert!((r.accept_p50_ms - 500.0).abs() <= 0.5, "{r:?}");
        assert!((r.first_p50_ms - 1000.0).abs() <= 1.0, "{r:?}");
        let taken = r.retry_after_taken.expect("one sample");
        assert_eq!(taken.samples, 1);
        assert!((taken.ratio_p50 - 0.8).abs() < 0.01, "{taken:?}");
        assert!(r.retry_after_needed.is_none());
    }

    #[test]
    fn the_plot_is_an_svg_document() {
        let step = |load: f64| StepReport {
            load,
            clients: (load * 8.0) as u64,
            probes: 1,
            window_s: 10.0,
            accepted: 200,
            accepted_per_s: 20.0,
            completed: 200,
            completed_per_s: 20.0,
            failed: 0,
            tried: 200,
            deny_rate: 0.1,
            denials_per_denied_task: 1.2,
            abandoned: 0,
            unfinished: 0,
            errors: 0,
            error_texts: vec![],
            accept_p50_ms: 350.0,
            accept_p99_ms: 500.0,
            first_p50_ms: 400.0,
            first_p99_ms: 900.0,
            retry_after_needed: Some(WaitFit {
                samples: 10,
                predicted_p50_ms: 100.0,
                wait_p50_ms: 100.0,
                ratio_p10: 0.8,
                ratio_p50: 1.0,
                ratio_p90: 1.3,
            }),
            retry_after_taken: None,
            queued_mean: 1.0,
            queued_max: 2,
            in_flight_mean: 8.0,
            manager_avg_task_ms: 350.0,
        };
        let r = SweepReport {
            version: "0".into(),
            started_unix_s: 0,
            manager: "127.0.0.1:1".into(),
            workers: 2,
            capacity: 8,
            queue_limit: 24,
            queue_factor: 3.0,
            task: "sleep".into(),
            task_ms_min: 200,
            task_ms_max: 500,
            capacity_tasks_per_s: 22.9,
            warmup_s: 1.0,
            window_s: 10.0,
            probe_every: PROBE_EVERY,
            steps: [0.5, 1.0, 2.0, 5.0, 10.0].map(step).to_vec(),
        };
        let text = svg(&r).expect("drawn");
        assert!(text.starts_with("<svg"), "{}", &text[..80.min(text.len())]);
        assert!(text.trim_end().ends_with("</svg>"));
        assert!(text.contains("Accepted tasks per second"));
        assert!(describe(&r).lines().count() == 7, "{}", describe(&r));
    }
}
