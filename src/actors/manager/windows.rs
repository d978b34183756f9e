//! The bounded windows the manager keeps of recent activity, for the
//! dashboard and its metrics: recent durations (for percentiles), the last
//! failures, and the counters sampled once a second. Each drops its oldest
//! entry past its bound.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::messages::{TaskId, WorkerId};

/// Recent queue waits (and, apart, run times) kept for percentiles; the
/// oldest sample leaves when a new one comes.
pub const LATENCY_WINDOW: usize = 1000;

/// Failed tasks listed; the oldest leaves when a new one fails.
pub const RECENT_FAILURES: usize = 20;

/// Most characters of a task name kept for a failure; longer ones end in `…`.
pub const FAILURE_TASK_CHARS: usize = 200;

/// Most characters of an error text kept for a failure; longer ones end in `…`.
pub const FAILURE_ERROR_CHARS: usize = 500;

/// Counter samples kept: two minutes at one a second.
pub const HISTORY_SAMPLES: usize = 120;

/// Run times kept for each labelled task name, for its percentiles.
pub const TASK_RUN_WINDOW: usize = 200;

/// The last durations pushed, at most its bound ([`LATENCY_WINDOW`] unless
/// made with [`SampleWindow::bounded`]), in microseconds.
#[derive(Debug)]
pub struct SampleWindow {
    samples: VecDeque<u64>,
    bound: usize,
}

impl Default for SampleWindow {
    fn default() -> Self {
        SampleWindow::bounded(LATENCY_WINDOW)
    }
}

impl SampleWindow {
    /// An empty window keeping the last `bound` durations (at least one).
    pub fn bounded(bound: usize) -> SampleWindow {
        SampleWindow {
            samples: VecDeque::new(),
            bound: bound.max(1),
        }
    }

    /// Adds one duration, dropping the oldest past the bound.
    pub fn push(&mut self, d: Duration) {
        if self.samples.len() >= self.bound {
            self.samples.pop_front();
        }
        self.samples
            .push_back(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Samples held, at most the bound.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Nearest-rank percentiles of the window, in milliseconds.
    pub fn percentiles(&self) -> Percentiles {
        let mut sorted: Vec<u64> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let rank = |p: f64| -> Option<f64> {
            let n = sorted.len();
            if n == 0 {
                return None;
            }
            let i = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1;
            Some(sorted[i] as f64 / 1000.0)
        };
        Percentiles {
            samples: sorted.len(),
            p50_ms: rank(50.0),
            p90_ms: rank(90.0),
            p99_ms: rank(99.0),
            max_ms: rank(100.0),
        }
    }
}

/// Percentiles of a [`SampleWindow`]; `None` while it is empty.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples they were taken from.
    pub samples: usize,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Largest sample.
    pub max_ms: Option<f64>,
}

/// One failed task as the dashboard lists it. The texts are as the peers
/// sent them, cut but not escaped: the page shows them as text.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailureRecord {
    /// When the manager answered it, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The manager's id for the task.
    #[serde(serialize_with = "id_text")]
    pub task_id: TaskId,
    /// The task's name, at most [`FAILURE_TASK_CHARS`] characters.
    pub task: String,
    /// The worker of its last run; `None` if it never started.
    pub worker: Option<WorkerId>,
    /// That worker's address, if it was still registered when the task failed.
    pub worker_address: Option<String>,
    /// The error text, at most [`FAILURE_ERROR_CHARS`] characters.
    pub error: String,
}

/// The last [`RECENT_FAILURES`] failures, oldest first.
#[derive(Debug, Default)]
pub struct FailureLog {
    records: VecDeque<FailureRecord>,
}

impl FailureLog {
    /// Records a failure, dropping the oldest past the bound. The texts are
    /// cut to their bounds here.
    pub fn push(
        &mut self,
        task_id: TaskId,
        task: &str,
        worker: Option<WorkerId>,
        worker_address: Option<&str>,
        error: &str,
    ) {
        if self.records.len() == RECENT_FAILURES {
            self.records.pop_front();
        }
        self.records.push_back(FailureRecord {
            time_ms: unix_ms(SystemTime::now()),
            task_id,
            task: cut(task, FAILURE_TASK_CHARS),
            worker,
            worker_address: worker_address.map(|a| cut(a, FAILURE_TASK_CHARS)),
            error: cut(error, FAILURE_ERROR_CHARS),
        });
    }

    /// The records, newest first.
    pub fn newest_first(&self) -> Vec<FailureRecord> {
        self.records.iter().rev().cloned().collect()
    }
}

/// A task or run id as decimal text: ids take up to 62 bits, and a
/// JavaScript number holds integers exactly only up to 2^53.
pub(super) fn id_text<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// [`id_text`] of an id that may be absent (`null`).
pub(super) fn opt_id_text<S: serde::Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

/// `text` cut to `max` characters, the last of them `…` when it was longer.
pub(super) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) if text[i..].chars().nth(1).is_some() => format!("{}…", &text[..i]),
        _ => text.to_string(),
    }
}

pub(super) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The counters at one moment, for the charts.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CountSample {
    /// When, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// [`Counts::accepted`] then.
    pub accepted: u64,
    /// [`Counts::denied`] then.
    pub denied: u64,
    /// [`Counts::completed`] then.
    pub completed: u64,
    /// [`Counts::failed`] then.
    pub failed: u64,
}

/// The last [`HISTORY_SAMPLES`] counter samples, oldest first.
#[derive(Debug, Default)]
pub struct CountHistory {
    samples: VecDeque<CountSample>,
}

impl CountHistory {
    /// Adds a sample, dropping the oldest past the bound.
    pub fn push(&mut self, sample: CountSample) {
        if self.samples.len() >= HISTORY_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn list(&self) -> Vec<CountSample> {
        self.samples.iter().copied().collect()
    }
}
