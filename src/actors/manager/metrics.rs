//! The manager's Prometheus metrics: counters and histograms it updates as
//! tasks come and go, and gauges set from its state when [`GetMetrics`]
//! asks for the encoded text. Every label set is bounded: deny reasons and
//! priorities are fixed lists, and task names are labelled only when some
//! registered worker provides them, [`MAX_TASK_LABELS`] at most; the rest
//! count as `other`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use actix::prelude::*;
#[cfg(feature = "http")]
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::counter::Counter,
    metrics::family::Family,
    metrics::gauge::Gauge,
    metrics::histogram::{exponential_buckets, Histogram},
    metrics::info::Info,
    registry::Registry,
};

#[cfg(not(feature = "http"))]
use crate::plain_metrics::{exponential_buckets, Counter, Family, Gauge, Histogram, Registry};

use super::windows::{CountHistory, FailureLog, SampleWindow, TASK_RUN_WINDOW};
use super::Manager;
use crate::messages::{Rejection, SessionId, TaskId};
#[cfg(feature = "http")]
use crate::protocol::Priority;

/// Most task names given a series of their own in
/// `argon_tasks_completed_total`; further names count as `other`.
pub const MAX_TASK_LABELS: usize = 100;

/// The `task` label of tasks past [`MAX_TASK_LABELS`].
pub const OTHER_TASK: &str = "other";

/// Where "invalid" is in [`DENY_REASONS`] (a test holds the two together).
const INVALID: usize = 4;

/// The `reason` label values of `argon_tasks_denied_total`.
pub const DENY_REASONS: [&str; 7] = [
    "no_capacity",
    "queue_full",
    "waiting_clients",
    "shutting_down",
    "invalid",
    "rate_limited",
    "other",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
#[cfg_attr(feature = "http", derive(EncodeLabelSet))]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
#[cfg_attr(feature = "http", derive(EncodeLabelSet))]
struct TaskLabels {
    task: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
#[cfg_attr(feature = "http", derive(EncodeLabelSet))]
struct PriorityLabel {
    priority: String,
}

/// Counters `[ok, failed]` of one task label.
type Outcomes = [Counter; 2];

/// The manager's metrics registry and the handles it updates.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub struct ManagerMetrics {
    registry: Registry,
    submitted: Counter,
    accepted: Counter,
    denied: [Counter; DENY_REASONS.len()],
    completed: Family<TaskLabels, Counter>,
    by_task: HashMap<String, Outcomes>,
    other: Outcomes,
    queue_wait: Histogram,
    run_time: Histogram,
    queue_depth: [Gauge; 3],
    queue_limit: Gauge,
    capacity: Gauge,
    slots_busy: Gauge,
    workers: Gauge,
    clients: Gauge,
    predicted_wait: Gauge<f64, AtomicU64>,
    retries: Counter,
    outcomes_dropped: Counter,
    retrying: Gauge,
    scheduled: Gauge,
    awaiting_provider: Gauge,
    results_kept: Gauge,
    results_kept_bytes: Gauge,
    result_waits: Gauge,
    dead_tasks: Gauge,
    open_clients: i64,
    /// Recent queue waits, for the dashboard's percentiles.
    pub(super) recent_queue_wait: SampleWindow,
    /// Recent run times, for the dashboard's percentiles.
    pub(super) recent_run_time: SampleWindow,
    /// The last failed tasks, for the dashboard.
    pub(super) failures: FailureLog,
    /// Recent run times of each name in `by_task`, for the dashboard.
    pub(super) run_by_task: HashMap<String, SampleWindow>,
    /// The counters once a second, for the dashboard's charts.
    pub(super) history: CountHistory,
}

fn outcomes(family: &Family<TaskLabels, Counter>, task: &str) -> Outcomes {
    ["ok", "failed"].map(|outcome| {
        family
            .get_or_create(&TaskLabels {
                task: task.to_string(),
                outcome: outcome.to_string(),
            })
            .clone()
    })
}

impl Default for ManagerMetrics {
    fn default() -> Self {
        ManagerMetrics::new()
    }
}

impl ManagerMetrics {
    /// Every metric registered, at zero.
    pub fn new() -> ManagerMetrics {
        let mut registry = Registry::default();
        let submitted = Counter::default();
        registry.register(
            "argon_tasks_submitted",
            "Tasks clients submitted, accepted or not",
            submitted.clone(),
        );
        let accepted = Counter::default();
        registry.register(
            "argon_tasks_accepted",
            "Tasks accepted: started at once or queued",
            accepted.clone(),
        );
        let denied_family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "argon_tasks_denied",
            "Tasks not accepted, by reason (invalid: no worker provides the task)",
            denied_family.clone(),
        );
        let denied = DENY_REASONS.map(|reason| {
            denied_family
                .get_or_create(&ReasonLabel {
                    reason: reason.to_string(),
                })
                .clone()
        });
        let completed = Family::<TaskLabels, Counter>::default();
        registry.register(
            "argon_tasks_completed",
            "Accepted tasks answered, by task and outcome (ok or failed; failed includes \
             timeouts, cancels and lost workers)",
            completed.clone(),
        );
        let other = outcomes(&completed, OTHER_TASK);
        let queue_wait = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        registry.register(
            "argon_task_queue_wait_seconds",
            "Time from a task's acceptance to its first start on a worker",
            queue_wait.clone(),
        );
        let run_time = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        registry.register(
            "argon_task_run_seconds",
            "Time a worker took for a run of a task, successful or not",
            run_time.clone(),
        );
        let depth_family = Family::<PriorityLabel, Gauge>::default();
        registry.register(
            "argon_queue_depth",
            "Tasks waiting in the queue, by priority",
            depth_family.clone(),
        );
        let queue_depth = ["high", "normal", "low"].map(|p| {
            depth_family
                .get_or_create(&PriorityLabel {
                    priority: p.to_string(),
                })
                .clone()
        });
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let queue_limit = gauge(
            "argon_queue_limit",
            "Most tasks the queue holds: capacity x queue factor",
        );
        let capacity = gauge(
            "argon_capacity_slots",
            "Slots of the workers taking tasks (draining workers excluded)",
        );
        let slots_busy = gauge(
            "argon_slots_busy",
            "Slots running a task, or a run the manager is waiting on",
        );
        let workers = gauge("argon_workers", "Workers registered");
        let clients = gauge("argon_clients", "Client sessions connected");
        let retrying = gauge(
            "argon_tasks_retrying",
            "Failed tasks waiting out their backoff before a retry",
        );
        let scheduled = gauge(
            "argon_tasks_scheduled",
            "Accepted tasks scheduled to run later, not yet due (bounded by \
             manager.scheduled_max, outside the queue bound)",
        );
        let awaiting_provider = gauge(
            "argon_tasks_awaiting_provider",
            "Accepted tasks waiting for a worker that provides them after their kind's last \
             provider went (kept beyond the queue bound for manager.provider_grace)",
        );
        let results_kept = gauge(
            "argon_results_kept",
            "Outcomes of detached tasks kept for `argon result`",
        );
        let results_kept_bytes = gauge(
            "argon_results_kept_bytes",
            "Bytes of the kept outcomes, as counted against manager.result_max_bytes",
        );
        let result_waits = gauge(
            "argon_result_waits",
            "Result requests waiting for a task to finish",
        );
        let dead_tasks = gauge(
            "argon_dead_tasks",
            "Failed tasks in the dead list (`argon failed`), at most manager.dead_max",
        );
        let retries = Counter::default();
        registry.register(
            "argon_task_retries",
            "Retries scheduled after a failed run",
            retries.clone(),
        );
        let outcomes_dropped = Counter::default();
        registry.register(
            "argon_worker_outcomes_dropped",
            "Outcomes of runs that ended while their worker had no manager, which the worker \
             dropped past its bounds instead of handing them over",
            outcomes_dropped.clone(),
        );
        let predicted_wait = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "argon_predicted_wait_seconds",
            "The retry_after a task denied now would be given",
            predicted_wait.clone(),
        );
        #[cfg(feature = "http")]
        {
            registry.register(
                "argon_build",
                "The version of the running manager",
                Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
            );
            registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        }
        ManagerMetrics {
            registry,
            submitted,
            accepted,
            denied,
            completed,
            by_task: HashMap::new(),
            other,
            queue_wait,
            run_time,
            queue_depth,
            queue_limit,
            capacity,
            slots_busy,
            workers,
            clients,
            predicted_wait,
            retries,
            outcomes_dropped,
            retrying,
            scheduled,
            awaiting_provider,
            results_kept,
            results_kept_bytes,
            result_waits,
            dead_tasks,
            open_clients: 0,
            recent_queue_wait: SampleWindow::default(),
            recent_run_time: SampleWindow::default(),
            failures: FailureLog::default(),
            run_by_task: HashMap::new(),
            history: CountHistory::default(),
        }
    }

    /// A failed run will be retried.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// A registering worker dropped `n` outcomes it could not keep.
    pub fn outcomes_dropped(&self, n: u64) {
        self.outcomes_dropped.inc_by(n);
    }

    /// Counts a submit and how it was answered.
    pub fn submitted(&self, result: &Result<TaskId, Rejection>) {
        self.submitted.inc();
        match result {
            Ok(_) => {
                self.accepted.inc();
            }
            Err(r) => {
                self.denied[deny_reason_index(r)].inc();
            }
        }
    }

    /// Counts an answered task. `provided` tells whether some registered
    /// worker provides `task`, which it needs to get a series of its own.
    pub fn completed(&mut self, task: &str, ok: bool, provided: impl FnOnce(&str) -> bool) {
        let i = usize::from(!ok);
        match self.series(task, provided) {
            Some(c) => c[i].inc(),
            None => self.other[i].inc(),
        };
    }

    /// The counters of `task`'s own series, made if it may have one (see
    /// [`ManagerMetrics::completed`]); `None` when it counts as `other`.
    fn series(&mut self, task: &str, provided: impl FnOnce(&str) -> bool) -> Option<&Outcomes> {
        if !self.by_task.contains_key(task) {
            if self.by_task.len() >= MAX_TASK_LABELS || !provided(task) {
                return None;
            }
            let c = outcomes(&self.completed, task);
            self.by_task.insert(task.to_string(), c);
        }
        self.by_task.get(task)
    }

    /// Names with a series of their own, and their counters `[ok, failed]`.
    pub(super) fn task_series(&self) -> impl Iterator<Item = (&str, [u64; 2])> + '_ {
        self.by_task
            .iter()
            .map(|(name, c)| (name.as_str(), [c[0].get(), c[1].get()]))
    }

    /// Counters `[ok, failed]` of the names counted as `other`.
    pub(super) fn other_series(&self) -> [u64; 2] {
        [self.other[0].get(), self.other[1].get()]
    }

    /// Records how long a task waited before its first start.
    pub fn queue_wait(&mut self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
        self.recent_queue_wait.push(waited);
    }

    /// Records how long a run of `task` took; also in the name's own
    /// window when it has a series of its own (see [`ManagerMetrics::completed`]).
    pub fn run_time(&mut self, took: Duration, task: &str, provided: impl FnOnce(&str) -> bool) {
        self.run_time.observe(took.as_secs_f64());
        self.recent_run_time.push(took);
        if self.series(task, provided).is_none() {
            return;
        }
        match self.run_by_task.get_mut(task) {
            Some(window) => window.push(took),
            None => {
                let mut window = SampleWindow::bounded(TASK_RUN_WINDOW);
                window.push(took);
                self.run_by_task.insert(task.to_string(), window);
            }
        }
    }

    /// Submits counted so far.
    pub fn submitted_total(&self) -> u64 {
        self.submitted.get()
    }

    /// Submits accepted so far.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.get()
    }

    /// Submits refused because no worker provides the task.
    pub fn invalid_total(&self) -> u64 {
        self.denied[INVALID].get()
    }

    /// Submits denied so far (for want of room, or the manager stopping;
    /// those refused as invalid are not denials).
    pub fn denied_total(&self) -> u64 {
        self.denied.iter().map(Counter::get).sum::<u64>() - self.invalid_total()
    }

    /// Tasks answered so far: done, and failed.
    pub fn answered_totals(&self) -> (u64, u64) {
        self.by_task
            .values()
            .chain(std::iter::once(&self.other))
            .fold((0, 0), |(done, failed), c| {
                (done + c[0].get(), failed + c[1].get())
            })
    }

    /// Client sessions open.
    pub fn open_clients(&self) -> u64 {
        u64::try_from(self.open_clients).unwrap_or(0)
    }

    /// Counts a client session opened (`true`) or closed.
    pub fn client(&mut self, opened: bool) {
        self.open_clients = if opened {
            self.open_clients + 1
        } else {
            (self.open_clients - 1).max(0)
        };
        self.clients.set(self.open_clients);
    }

    /// The text exposition of every metric.
    #[cfg(feature = "http")]
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Where a rejection counts in [`DENY_REASONS`].
fn deny_reason_index(r: &Rejection) -> usize {
    let reason = match r {
        Rejection::Invalid(_) => "invalid",
        Rejection::Denied { reason, .. } => {
            let reason = reason.as_str();
            if reason == "no capacity" {
                "no_capacity"
            } else if reason.starts_with("queue full for newcomers") {
                "waiting_clients"
            } else if reason.starts_with("queue full") {
                "queue_full"
            } else if reason.contains("shutting down") || reason.contains("shuts down") {
                "shutting_down"
            } else if reason == super::limits::RATE_LIMITED {
                "rate_limited"
            } else {
                "other"
            }
        }
    };
    DENY_REASONS
        .iter()
        .position(|&r| r == reason)
        .unwrap_or(DENY_REASONS.len() - 1)
}

/// Asks the manager for its metrics, encoded as Prometheus text.
#[cfg(feature = "http")]
#[derive(Message, Debug)]
#[rtype(result = "MetricsSnapshot")]
pub struct GetMetrics;

/// The answer to [`GetMetrics`].
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// The OpenMetrics text exposition (Prometheus scrapes it).
    pub text: String,
    /// Workers registered, for readiness.
    pub workers: u64,
}

/// A client session opened; [`crate::messages::ClientGone`] closes it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ClientOpened {
    /// The session.
    pub session: SessionId,
}

impl Handler<ClientOpened> for Manager {
    type Result = ();

    fn handle(&mut self, _: ClientOpened, _: &mut Self::Context) {
        self.metrics.client(true);
    }
}

#[cfg(feature = "http")]
impl Handler<GetMetrics> for Manager {
    type Result = MessageResult<GetMetrics>;

    fn handle(&mut self, _: GetMetrics, _: &mut Self::Context) -> Self::Result {
        let m = &self.metrics;
        for (gauge, p) in m.queue_depth.iter().zip(Priority::ALL) {
            gauge.set(gauge_value(self.tasks.queue(p).len() as u64));
        }
        m.queue_limit.set(gauge_value(self.queue_limit()));
        m.capacity.set(gauge_value(self.sched.capacity()));
        m.slots_busy.set(gauge_value(self.runs.len() as u64));
        m.workers.set(gauge_value(self.sched.len() as u64));
        m.predicted_wait.set(self.retry_after().as_secs_f64());
        m.retrying.set(gauge_value(self.tasks.retrying() as u64));
        m.scheduled.set(gauge_value(self.tasks.scheduled() as u64));
        m.awaiting_provider
            .set(gauge_value(self.tasks.awaiting() as u64));
        let (kept, bytes) = self.results.size();
        m.results_kept.set(gauge_value(kept as u64));
        m.results_kept_bytes.set(gauge_value(bytes as u64));
        m.result_waits.set(gauge_value(self.waiting as u64));
        m.dead_tasks.set(gauge_value(self.dead.len() as u64));
        MessageResult(MetricsSnapshot {
            text: m.encode(),
            workers: self.sched.len() as u64,
        })
    }
}

#[cfg(feature = "http")]
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;

    #[test]
    fn unknown_task_names_share_one_series() {
        let mut m = ManagerMetrics::new();
        m.completed("echo", true, |_| true);
        m.completed("nobody-provides", false, |_| false);
        for i in 0..MAX_TASK_LABELS + 5 {
            m.completed(&format!("t{i}"), true, |_| true);
        }
        let text = m.encode();
        assert!(text.contains(r#"argon_tasks_completed_total{task="echo",outcome="ok"} 1"#));
        assert!(!text.contains("nobody-provides"));
        assert!(text.contains(r#"argon_tasks_completed_total{task="other",outcome="failed"} 1"#));
        assert!(text.contains(r#"argon_tasks_completed_total{task="other",outcome="ok"} 6"#));
        assert!(!text.contains(&format!("t{}\"", MAX_TASK_LABELS)));
    }

    #[test]
    fn rejections_count_by_reason() {
        let m = ManagerMetrics::new();
        m.submitted(&Ok(1));
        m.submitted(&Err(Rejection::Invalid("no worker provides task x".into())));
        m.submitted(&Err(Rejection::Denied {
            reason: "queue full for newcomers: places go to waiting clients in turn".into(),
            retry_after: Duration::from_secs(1),
        }));
        let text = m.encode();
        assert!(text.contains("argon_tasks_submitted_total 3"));
        assert!(text.contains("argon_tasks_accepted_total 1"));
        assert!(text.contains(r#"argon_tasks_denied_total{reason="invalid"} 1"#));
        assert!(text.contains(r#"argon_tasks_denied_total{reason="waiting_clients"} 1"#));
        assert!(text.contains(r#"argon_tasks_denied_total{reason="queue_full"} 0"#));
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;

    #[test]
    fn only_labelled_names_keep_run_times_of_their_own() {
        let mut m = ManagerMetrics::new();
        let ms = Duration::from_millis;
        m.run_time(ms(5), "echo", |_| true);
        m.run_time(ms(7), "nobody-provides", |_| false);
        for i in 0..MAX_TASK_LABELS + 5 {
            m.run_time(ms(1), &format!("t{i}"), |_| true);
        }
        assert_eq!(m.run_by_task.len(), MAX_TASK_LABELS);
        assert_eq!(m.run_by_task["echo"].percentiles().p50_ms, Some(5.0));
        assert!(!m.run_by_task.contains_key("nobody-provides"));
        assert_eq!(m.recent_run_time.len(), MAX_TASK_LABELS + 7);
        for _ in 0..TASK_RUN_WINDOW + 10 {
            m.run_time(ms(9), "echo", |_| true);
        }
        let echo = m.run_by_task["echo"].percentiles();
        assert_eq!((echo.samples, echo.p50_ms), (TASK_RUN_WINDOW, Some(9.0)));
    }

    #[test]
    fn invalid_is_where_its_index_says() {
        assert_eq!(DENY_REASONS[INVALID], "invalid");
    }

    #[test]
    fn status_counts_come_from_the_metrics_counters() {
        let mut m = ManagerMetrics::new();
        m.completed("echo", true, |_| true);
        m.completed("echo", false, |_| true);
        m.completed("elsewhere", false, |_| false);
        m.submitted(&Err(Rejection::Invalid("no worker provides task x".into())));
        assert_eq!(
            (m.answered_totals(), m.denied_total(), m.invalid_total()),
            ((1, 2), 0, 1)
        );
    }
}
