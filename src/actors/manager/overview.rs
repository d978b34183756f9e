//! What the dashboard shows (`GET /api/overview`): [`GetOverview`] asks the
//! [`Manager`] for an [`Overview`] built from its own state, so the page and
//! `argon status` read the same numbers. Besides the counters, the manager
//! keeps bounded windows for it ([`super::windows`]): the last [`LATENCY_WINDOW`] queue waits
//! and run times (for percentiles), and the last [`RECENT_FAILURES`] failed
//! tasks. Tasks waiting for a retry are read from the manager's retry list
//! when asked: their count, and the [`OVERVIEW_MAX_RETRYING`] due soonest.
//! It also keeps the counters sampled once a second ([`CountHistory`], so
//! the page's charts draw on first paint) and, for each task name the
//! metrics label, its last [`TASK_RUN_WINDOW`] run times. Running tasks
//! (the [`OVERVIEW_MAX_RUNNING`] running longest), queued and running counts
//! by name, the tasks promoted by aging and the newest dead-list entries are
//! read from the manager's state when asked, each in one pass over it.
//! Nothing here holds task arguments or results.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use serde::Serialize;

use super::metrics::{ManagerMetrics, MAX_TASK_LABELS, OTHER_TASK};
use super::windows::{cut, id_text, opt_id_text, unix_ms};
pub use super::windows::{
    CountHistory, CountSample, FailureLog, FailureRecord, Percentiles, SampleWindow,
    FAILURE_ERROR_CHARS, FAILURE_TASK_CHARS, HISTORY_SAMPLES, LATENCY_WINDOW, RECENT_FAILURES,
    TASK_RUN_WINDOW,
};
use super::Manager;
use crate::messages::{RunId, TaskId, WorkerId};
use crate::protocol::Priority;

/// Most workers listed, the busiest first; the counts cover all of them.
pub const OVERVIEW_MAX_WORKERS: usize = 200;

/// Most tasks waiting for a retry listed, the soonest due first; the count
/// covers all of them.
pub const OVERVIEW_MAX_RETRYING: usize = 20;

/// How often the manager samples its counters into its [`CountHistory`].
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Most running tasks listed, the longest running first; the count covers
/// all of them.
pub const OVERVIEW_MAX_RUNNING: usize = 50;

/// Newest dead-list entries listed; the count covers all of them.
pub const OVERVIEW_MAX_DEAD: usize = 10;

/// The cumulative counts of `m`.
fn counts(m: &ManagerMetrics) -> Counts {
    let (completed, failed) = m.answered_totals();
    Counts {
        submitted: m.submitted_total(),
        accepted: m.accepted_total(),
        denied: m.denied_total(),
        invalid: m.invalid_total(),
        completed,
        failed,
    }
}

impl Manager {
    /// Adds the counters as they are now to the charts' history.
    pub(super) fn sample_counts(&mut self) {
        let c = counts(&self.metrics);
        self.metrics.history.push(CountSample {
            time_ms: unix_ms(SystemTime::now()),
            accepted: c.accepted,
            denied: c.denied,
            completed: c.completed,
            failed: c.failed,
        });
    }

    /// The runs going on, the longest running first, at most `limit`.
    fn longest_runs(&self, limit: usize) -> Vec<RunningTask> {
        let now = tokio::time::Instant::now();
        let mut runs: Vec<(RunId, &super::Run)> =
            self.runs.iter().map(|(id, r)| (*id, r)).collect();
        let key = |(id, r): &(RunId, &super::Run)| (r.started, *id);
        if runs.len() > limit && limit > 0 {
            runs.select_nth_unstable_by_key(limit - 1, key);
        }
        runs.truncate(limit);
        runs.sort_unstable_by_key(key);
        runs.into_iter()
            .map(|(run_id, r)| RunningTask {
                run_id,
                task_id: r.task,
                task: r
                    .task
                    .and_then(|id| self.tasks.get(id))
                    .map(|e| cut(&e.task.spec.name, FAILURE_TASK_CHARS)),
                worker: r.worker,
                worker_address: self
                    .sched
                    .get(r.worker)
                    .map(|w| cut(&w.address, FAILURE_TASK_CHARS)),
                running_ms: u64::try_from(now.saturating_duration_since(r.started).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// One row per task name the metrics label (and one for the rest, if
    /// it has any), sorted by name, the rest last.
    fn task_rows(&self) -> Vec<TaskRow> {
        let m = &self.metrics;
        let row = |task: &str, [completed, failed]: [u64; 2], other: bool| TaskRow {
            task: task.to_string(),
            other,
            completed,
            failed,
            queued: 0,
            running: 0,
            run_time: if other {
                None
            } else {
                m.run_by_task.get(task).map(SampleWindow::percentiles)
            },
        };
        let mut rows: HashMap<&str, TaskRow> = m
            .task_series()
            .map(|(name, c)| (name, row(name, c, false)))
            .collect();
        let mut rest = row(OTHER_TASK, m.other_series(), true);
        let name_of = |id: TaskId| self.tasks.get(id).map(|e| e.task.spec.name.as_str());
        let queued = Priority::ALL
            .into_iter()
            .flat_map(|p| self.tasks.queue(p).iter())
            .filter_map(|id| name_of(*id))
            .map(|name| (name, true));
        let running = self
            .runs
            .values()
            .filter_map(|r| r.task.and_then(name_of))
            .map(|name| (name, false));
        for (name, is_queued) in queued.chain(running) {
            // A name the metrics will label once a run of it ends has its
            // row already, while there is room for it.
            if !rows.contains_key(name) && rows.len() < MAX_TASK_LABELS && self.sched.provides(name)
            {
                rows.insert(name, row(name, [0, 0], false));
            }
            let r = rows.get_mut(name).unwrap_or(&mut rest);
            if is_queued {
                r.queued += 1;
            } else {
                r.running += 1;
            }
        }
        let mut rows: Vec<TaskRow> = rows.into_values().collect();
        rows.sort_unstable_by(|a, b| a.task.cmp(&b.task));
        if rest.completed + rest.failed + rest.queued + rest.running > 0 {
            rows.push(rest);
        }
        rows
    }

    /// Queued tasks at priority high and normal that aging moved there.
    fn promoted(&self) -> (u64, u64) {
        let count = |p: Priority| {
            self.tasks
                .queue(p)
                .iter()
                .filter_map(|id| self.tasks.get(*id))
                .filter(|e| e.task.spec.priority != e.task.level)
                .count() as u64
        };
        (count(Priority::High), count(Priority::Normal))
    }
}

/// One run going on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunningTask {
    /// The manager's id for the run.
    #[serde(serialize_with = "id_text")]
    pub run_id: RunId,
    /// Its task; `None` when the task was answered (cancelled, timed out)
    /// and the worker has not yet said the run ended: the slot stays busy.
    #[serde(serialize_with = "opt_id_text")]
    pub task_id: Option<TaskId>,
    /// The task's name, at most [`FAILURE_TASK_CHARS`] characters.
    pub task: Option<String>,
    /// The worker running it.
    pub worker: WorkerId,
    /// That worker's address.
    pub worker_address: Option<String>,
    /// Milliseconds since the run was assigned.
    pub running_ms: u64,
}

/// One task name: its counts and recent run times.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskRow {
    /// The name; `other` for the row of the names without a series.
    pub task: String,
    /// Whether this is the row of the names the metrics do not label.
    pub other: bool,
    /// Answered done.
    pub completed: u64,
    /// Answered failed.
    pub failed: u64,
    /// Waiting in the queue.
    pub queued: u64,
    /// Running now.
    pub running: u64,
    /// Percentiles of its last [`TASK_RUN_WINDOW`] run times; `None` for the
    /// `other` row and before a run of it ended.
    pub run_time: Option<Percentiles>,
}

/// One dead-list entry as the page lists it (no arguments). The texts are
/// as the peers sent them, cut but not escaped, as in [`FailureRecord`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadRow {
    /// The dead task's id, which a retry names.
    #[serde(serialize_with = "id_text")]
    pub task_id: TaskId,
    /// Its name, at most [`FAILURE_TASK_CHARS`] characters.
    pub task: String,
    /// Retries it used.
    pub retries: u32,
    /// Its last error, at most [`FAILURE_ERROR_CHARS`] characters.
    pub error: String,
    /// When it failed for good, milliseconds since the Unix epoch.
    pub failed_at_ms: u64,
}

/// Asks the manager for an [`Overview`].
#[derive(Message, Debug)]
#[rtype(result = "Overview")]
pub struct GetOverview;

/// The cluster as the dashboard shows it: the body of `GET /api/overview`.
/// Task and run ids are decimal strings (see [`id_text`]); worker ids,
/// counted from 1, are numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The manager's clock, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Workers registered.
    pub workers: u64,
    /// Slots of the workers taking tasks (draining workers excluded).
    pub capacity: u64,
    /// Slots running a run, including runs being cancelled.
    pub busy: u64,
    /// Client sessions connected.
    pub clients: u64,
    /// Tasks waiting, by priority, and the bound.
    pub queue: QueueDepth,
    /// Failed tasks waiting out their backoff before a retry; they count
    /// against `queue.limit` too. The `retrying` of `argon status`.
    pub retrying: u64,
    /// The waiting retries due soonest, at most [`OVERVIEW_MAX_RETRYING`].
    pub retrying_list: Vec<RetryingTask>,
    /// Tasks scheduled to run later, not yet due; outside `queue.limit`.
    /// The `scheduled` of `argon status`.
    pub scheduled: u64,
    /// Tasks waiting for a worker that provides them, beyond `queue.limit`.
    /// The `awaiting_provider` of `argon status`.
    pub awaiting_provider: u64,
    /// The `retry_after` a task denied now would get.
    pub predicted_wait_ms: f64,
    /// Counters since the manager started.
    pub counts: Counts,
    /// Queue wait and run time over the recent windows.
    pub latency: Latency,
    /// The busiest workers, at most [`OVERVIEW_MAX_WORKERS`].
    pub worker_list: Vec<WorkerSlots>,
    /// The last failures, newest first, at most [`RECENT_FAILURES`].
    pub failures: Vec<FailureRecord>,
    /// The counters once a second, oldest first, at most
    /// [`HISTORY_SAMPLES`]: the charts draw from these at once.
    pub history: Vec<CountSample>,
    /// Runs going on, the longest running first, at most
    /// [`OVERVIEW_MAX_RUNNING`].
    pub running: Vec<RunningTask>,
    /// All runs going on (`busy`).
    pub running_total: u64,
    /// One row per task name (see [`TaskRow`]).
    pub tasks: Vec<TaskRow>,
    /// The newest dead-list entries, at most [`OVERVIEW_MAX_DEAD`].
    pub dead: Vec<DeadRow>,
    /// Entries in the dead list.
    pub dead_total: u64,
    /// The task names with limits (`[limits.NAME]`), by name: the
    /// `limits` of `argon status`.
    pub limits: Vec<crate::protocol::TaskLimitStatus>,
}

/// Queue depth by priority against the queue bound.
#[derive(Debug, Clone, Serialize)]
pub struct QueueDepth {
    /// Waiting at priority high.
    pub high: u64,
    /// Waiting at priority normal.
    pub normal: u64,
    /// Waiting at priority low.
    pub low: u64,
    /// Of `high`, the tasks sent at a lower priority that aging promoted.
    pub promoted_high: u64,
    /// Of `normal`, the tasks sent at priority low that aging promoted.
    pub promoted_normal: u64,
    /// The bound on all three together: capacity × queue factor.
    pub limit: u64,
}

/// One task waiting for a retry. The texts are as the peers sent them, cut
/// but not escaped, as in [`FailureRecord`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RetryingTask {
    /// The manager's id for the task.
    #[serde(serialize_with = "id_text")]
    pub task_id: TaskId,
    /// Its name, at most [`FAILURE_TASK_CHARS`] characters.
    pub task: String,
    /// The retry it waits for, from 1: retries used, counting this one.
    pub retry: u32,
    /// Retries it asked for.
    pub retries: u32,
    /// Milliseconds until the retry is due; 0 once it is due and about to
    /// re-enter the queue.
    pub due_in_ms: u64,
    /// The error of its last run, at most [`FAILURE_ERROR_CHARS`] characters.
    pub error: String,
}

/// Cumulative counts; rates are the browser's differences between polls.
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    /// Submits that reached the manager.
    pub submitted: u64,
    /// Tasks accepted: started at once or queued.
    pub accepted: u64,
    /// Submits answered `denied` (no room); as in `argon status`.
    pub denied: u64,
    /// Submits refused because no worker provides the task.
    pub invalid: u64,
    /// Accepted tasks answered done; as in `argon status`.
    pub completed: u64,
    /// Accepted tasks answered failed (timeouts, cancels, lost workers too).
    pub failed: u64,
}

/// Percentiles of the recent windows.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// The windows' bound, [`LATENCY_WINDOW`].
    pub window: usize,
    /// From acceptance to a task's first start.
    pub queue_wait: Percentiles,
    /// How long a worker took for a run.
    pub run_time: Percentiles,
}

/// One worker's slots.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSlots {
    /// The manager's id for it.
    pub id: WorkerId,
    /// Its address as the manager saw the connection.
    pub address: String,
    /// Slots it registered.
    pub capacity: u32,
    /// Slots running a run.
    pub busy: u32,
    /// Whether it is draining (takes nothing new).
    pub draining: bool,
}

impl Handler<GetOverview> for Manager {
    type Result = MessageResult<GetOverview>;

    fn handle(&mut self, _: GetOverview, _: &mut Self::Context) -> Self::Result {
        let mut workers = self.sched.workers();
        workers.sort_by_key(|w| (Reverse(w.busy()), w.id));
        let worker_list = workers
            .iter()
            .take(OVERVIEW_MAX_WORKERS)
            .map(|w| WorkerSlots {
                id: w.id,
                address: w.address.clone(),
                capacity: w.capacity,
                busy: w.busy(),
                draining: w.draining,
            })
            .collect();
        let now = tokio::time::Instant::now();
        let retrying_list = self
            .soonest_retries(OVERVIEW_MAX_RETRYING)
            .into_iter()
            .map(|(due, task, error)| RetryingTask {
                task_id: task.id,
                task: cut(&task.spec.name, FAILURE_TASK_CHARS),
                retry: task.retried,
                retries: task.spec.retries.unwrap_or(0),
                due_in_ms: u64::try_from(due.saturating_duration_since(now).as_millis())
                    .unwrap_or(u64::MAX),
                error: cut(error, FAILURE_ERROR_CHARS),
            })
            .collect();
        let (promoted_high, promoted_normal) = self.promoted();
        let dead = self.dead.list(OVERVIEW_MAX_DEAD, usize::MAX);
        let m = &self.metrics;
        MessageResult(Overview {
            time_ms: unix_ms(SystemTime::now()),
            workers: self.sched.len() as u64,
            capacity: self.sched.capacity(),
            busy: self.runs.len() as u64,
            clients: m.open_clients(),
            queue: QueueDepth {
                high: self.tasks.queue(Priority::High).len() as u64,
                normal: self.tasks.queue(Priority::Normal).len() as u64,
                low: self.tasks.queue(Priority::Low).len() as u64,
                promoted_high,
                promoted_normal,
                limit: self.queue_limit(),
            },
            retrying: self.tasks.retrying() as u64,
            retrying_list,
            scheduled: self.tasks.scheduled() as u64,
            awaiting_provider: self.tasks.awaiting() as u64,
            predicted_wait_ms: self.retry_after().as_secs_f64() * 1e3,
            counts: counts(m),
            latency: Latency {
                window: LATENCY_WINDOW,
                queue_wait: m.recent_queue_wait.percentiles(),
                run_time: m.recent_run_time.percentiles(),
            },
            worker_list,
            failures: m.failures.newest_first(),
            history: m.history.list(),
            running: self.longest_runs(OVERVIEW_MAX_RUNNING),
            running_total: self.runs.len() as u64,
            tasks: self.task_rows(),
            dead: dead
                .tasks
                .into_iter()
                .map(|d| DeadRow {
                    task_id: d.task_id,
                    task: cut(&d.task, FAILURE_TASK_CHARS),
                    retries: d.retries,
                    error: cut(&d.error, FAILURE_ERROR_CHARS),
                    failed_at_ms: d.failed_at_ms,
                })
                .collect(),
            dead_total: dead.total,
            limits: self.limits.status(|name| self.tasks.queued_of(name)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_newest_samples() {
        let mut w = SampleWindow::default();
        assert_eq!(w.percentiles().p50_ms, None);
        for ms in 1..=(LATENCY_WINDOW as u64 + 500) {
            w.push(Duration::from_millis(ms));
        }
        assert_eq!(w.len(), LATENCY_WINDOW);
        let p = w.percentiles();
        assert_eq!(p.samples, LATENCY_WINDOW);
        // 501 ..= 1500 ms are left.
        assert_eq!(p.p50_ms, Some(1000.0));
        assert_eq!(p.p90_ms, Some(1400.0));
        assert_eq!(p.p99_ms, Some(1490.0));
        assert_eq!(p.max_ms, Some(1500.0));
    }

    #[test]
    fn the_history_keeps_the_last_samples() {
        let mut h = CountHistory::default();
        for t in 0..HISTORY_SAMPLES as u64 + 7 {
            h.push(CountSample {
                time_ms: t,
                accepted: t,
                denied: 0,
                completed: 0,
                failed: 0,
            });
        }
        let list = h.list();
        assert_eq!(list.len(), HISTORY_SAMPLES);
        assert_eq!(
            (list[0].time_ms, list[HISTORY_SAMPLES - 1].time_ms),
            (7, HISTORY_SAMPLES as u64 + 6)
        );
    }

    #[test]
    fn ids_are_text_in_json() {
        let r = RunningTask {
            run_id: u64::MAX >> 2,
            task_id: None,
            task: None,
            worker: 3,
            worker_address: None,
            running_ms: 1,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["run_id"], (u64::MAX >> 2).to_string());
        assert_eq!(json["task_id"], serde_json::Value::Null);
        assert_eq!(json["worker"], 3);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let mut w = SampleWindow::default();
        w.push(Duration::from_micros(2500));
        let p = w.percentiles();
        assert_eq!(
            (p.p50_ms, p.p99_ms, p.max_ms),
            (Some(2.5), Some(2.5), Some(2.5))
        );
    }

    #[test]
    fn the_failure_log_keeps_the_last_ones_cut() {
        let mut log = FailureLog::default();
        for i in 0..RECENT_FAILURES + 3 {
            log.push(i as u64, &format!("t{i}"), Some(1), None, "boom");
        }
        let list = log.newest_first();
        assert_eq!(list.len(), RECENT_FAILURES);
        assert_eq!(list[0].task, format!("t{}", RECENT_FAILURES + 2));
        assert_eq!(list[0].task_id, RECENT_FAILURES as u64 + 2);
        assert_eq!(list[RECENT_FAILURES - 1].task, "t3");

        let long = "é".repeat(FAILURE_ERROR_CHARS + 10);
        log.push(7, &"n".repeat(FAILURE_TASK_CHARS), None, Some("a"), &long);
        let last = &log.newest_first()[0];
        assert_eq!(last.task.chars().count(), FAILURE_TASK_CHARS);
        assert!(!last.task.ends_with('…'));
        assert_eq!(last.error.chars().count(), FAILURE_ERROR_CHARS);
        assert!(last.error.ends_with('…'));
    }

    #[test]
    fn cut_counts_characters() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "ab…");
        assert_eq!(cut("", 3), "");
        assert_eq!(cut("日本語です", 4), "日本語…");
    }
}
