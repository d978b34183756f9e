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

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::time::{sleep, sleep_until, Instant};

use argon::client::{Client, ClientConfig};
use argon::launch::{Failure, EXIT_FAILED, EXIT_USAGE};
use argon::protocol::{ClusterStatus, Value};

use super::driver::{
    self, latency_histogram, percentile, record, End, Lane, Load, Mode, OnDeny, Tally, TaskRecord,
    Until,
};

/// Every this many clients, one is a probe (see the module docs).
pub const PROBE_EVERY: u64 = 8;

/// A probe submits again every `retry_after` / this after a deny.
pub const PROBE_DIVISOR: u32 = 20;

/// Most client connections one step may open.
pub const MAX_SWEEP_CLIENTS: u64 = 10_000;

/// Largest offered load, as a multiple of capacity.
pub const MAX_LOAD: f64 = 1000.0;

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

    /// The duration of task number `i` of a step whose tasks draw from
    /// `seed`: the `i`th number of the SplitMix64 sequence from `seed`,
    /// spread evenly over the range.
    fn draw(&self, seed: u64, i: u32) -> u64 {
        let mut z = seed.wrapping_add((u64::from(i) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.min + (z ^ (z >> 31)) % (self.max - self.min + 1)
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

/// Measures one offered load: `n` connections, one lane each, every
/// [`PROBE_EVERY`]th a probe.
async fn run_step(
    config: &ClientConfig,
    observer: &Client,
    load: f64,
    n: u64,
    plan: &SweepPlan,
    drain: Duration,
) -> Result<StepReport, Failure> {
    let lanes: Vec<Lane> = driver::connect(config, n)
        .await?
        .into_iter()
        .enumerate()
        .map(|(i, client)| Lane {
            client,
            on_deny: if i as u64 % PROBE_EVERY == PROBE_EVERY - 1 {
                OnDeny::Probe {
                    divisor: PROBE_DIVISOR,
                }
            } else {
                OnDeny::Backoff
            },
        })
        .collect();
    let start = Instant::now();
    let clock = Clock {
        from: start + plan.warmup,
        to: start + plan.warmup + plan.step,
        drain_until: start + plan.warmup + plan.step + drain,
    };
    let seed = getrandom::u64().unwrap_or(0x5eed);
    let task_ms = plan.task_ms;
    let run = Load {
        mode: Mode::Attached,
        until: Until::Window {
            to: clock.to,
            answers_by: clock.drain_until,
        },
        make: Box::new(move |i| ("sleep".into(), Value::from(task_ms.draw(seed, i)))),
        check_echo: false,
    };
    let stats = Mutex::new(StepStats::new(clock));
    let pb = ProgressBar::hidden();
    let (_, samples) = tokio::join!(
        driver::run(&lanes, &run, &stats, &pb),
        sample_status(observer, clock)
    );
    let stats = stats.into_inner().expect("stats lock");
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

impl Tally for StepStats {
    fn add(&mut self, t: TaskRecord) {
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
            End::Done { at, .. } if c.inside(*at) => {
                self.completed += 1;
                if !t.probe {
                    let accepted = t.accepted.unwrap_or(t.first);
                    record(&mut self.from_accept, *at - accepted);
                    record(&mut self.from_first, *at - t.first);
                }
            }
            End::Failed { at, .. } if c.inside(*at) => self.failed += 1,
            End::Done { .. } | End::Failed { .. } | End::Accepted { .. } => {}
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
        s.add(TaskRecord {
            task: "sleep".into(),
            probe: false,
            first: at(1000),
            first_deny: Some((at(1000), Duration::from_millis(400))),
            denials: 2,
            accepted: Some(at(1500)),
            end: End::Done {
                at: at(2000),
                wrong: false,
            },
        });
        // Tried before the window, done inside it.
        s.add(TaskRecord {
            task: "sleep".into(),
            probe: true,
            first: c.from - Duration::from_millis(100),
            first_deny: None,
            denials: 0,
            accepted: Some(c.from - Duration::from_millis(100)),
            end: End::Done {
                at: at(200),
                wrong: false,
            },
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
    fn task_durations_spread_over_the_range() {
        let ms = TaskMs { min: 20, max: 40 };
        let drawn: Vec<u64> = (0..1000).map(|i| ms.draw(7, i)).collect();
        assert!(drawn.iter().all(|d| (20..=40).contains(d)), "{drawn:?}");
        for d in [20, 30, 40] {
            assert!(drawn.contains(&d), "{d} never drawn");
        }
        assert_eq!(ms.draw(7, 3), ms.draw(7, 3));
        assert_eq!(TaskMs { min: 5, max: 5 }.draw(1, 9), 5);
    }
}
