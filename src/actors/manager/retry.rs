//! Retries on failure and the dead list.
//!
//! A task submitted with `retries` N > 0 whose run fails (its own error: a
//! non-zero exit, a panic, a timeout, an eval error) is not answered while
//! it has retries left: it waits out a backoff in [`Retrying`], then
//! re-enters the queue at its priority. The wait before retry k (from 1) is
//! `retry_base × 2^(k-1)`, capped at `retry_max`, then jittered
//! ([`uniform_jitter`]: uniform in [d/2, d]). Worker loss does not use a
//! retry; it still goes by `attempts`, counted afresh for each retry.
//!
//! Waiting retries are accepted work: they count against the queue bound
//! with the queued tasks, and a failed run whose retry would pass the bound
//! is answered with its error instead (" (not retried: queue full)"). Cancels
//! (by the client, by id, the client leaving for an attached task) reach a
//! waiting retry as they reach a queued task; a shutdown answers it as not
//! retried. Cancelled and denied tasks are never retried.
//!
//! A task with retries > 0 that is answered with its run's error because no
//! retry follows (all used, or no room) goes to the [`DeadList`]: at most
//! `dead_max` entries, the oldest evicted first (logged at debug), each with
//! its arguments and error cut to a bound. `argon failed` reads it.
//!
//! With a task store each scheduled retry is recorded (`Journal::retry`),
//! so a restarted manager gives a task only the retries it had left; the
//! due time is not recorded (see [`super::persist`]).
//!
//! One timer serves every waiting retry: it is set for the earliest due
//! time, and a retry cancelled meanwhile leaves it to fire on nothing.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use tokio::time::Instant;

use super::lifecycle::Event;
use super::tasks::{At, State};
use super::{Manager, Pending};
use crate::messages::{GetDeadList, TaskId, TaskOutcome};
use crate::protocol::{codec, DeadList, DeadTask, Value, DEAD_ARGS_MAX, DEAD_ERROR_MAX};

/// Most retries a task may ask for; more is refused as invalid.
pub const MAX_RETRIES: u32 = 10;

/// Characters of JSON text kept as the preview of arguments too large for
/// a dead-list entry (`…` follows when the text is longer).
const ARGS_PREVIEW_CHARS: usize = 256;

/// The backoff before retry `k` (from 1), before jitter: `base × 2^(k-1)`,
/// at most `max`.
pub fn backoff(base: Duration, max: Duration, k: u32) -> Duration {
    let doublings = k.saturating_sub(1).min(31);
    base.saturating_mul(1 << doublings).min(max)
}

/// The default jitter: a delay drawn uniformly from `[d/2, d]`, so retries
/// of tasks that failed together spread out.
pub fn uniform_jitter(d: Duration) -> Duration {
    let half = d / 2;
    let span = (d - half).as_nanos() as u64;
    let draw = match getrandom::u64() {
        Ok(r) if span > 0 => r % (span + 1),
        _ => 0,
    };
    half + Duration::from_nanos(draw)
}

/// The one timer of the waiting retries (the tasks themselves are in the
/// task table, in their retrying state). See the module docs.
#[derive(Default)]
pub(super) struct RetryTimer {
    /// When it fires, if it is set.
    timer: Option<(Instant, SpawnHandle)>,
}

/// The tasks that failed after using their retries, oldest first; at most
/// `max`. See the module docs.
pub(super) struct DeadStore {
    entries: VecDeque<DeadTask>,
    max: usize,
    evicted: u64,
}

impl DeadStore {
    /// An empty list holding at most `max` entries (0 keeps none).
    pub(super) fn new(max: usize) -> DeadStore {
        DeadStore {
            entries: VecDeque::new(),
            max,
            evicted: 0,
        }
    }

    /// Entries held.
    #[cfg(feature = "http")]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds an entry, evicting the oldest past the bound.
    pub(super) fn push(&mut self, entry: DeadTask) {
        if self.max == 0 {
            self.evicted += 1;
            return;
        }
        while self.entries.len() >= self.max {
            if let Some(old) = self.entries.pop_front() {
                self.evicted += 1;
                log::debug!(
                    "dead list full ({} entries): evicted task {}, the oldest",
                    self.max,
                    old.task_id
                );
            }
        }
        self.entries.push_back(entry);
    }

    /// Newest first, at most `limit` entries and `max_bytes` encoded.
    pub(super) fn list(&self, limit: usize, max_bytes: usize) -> DeadList {
        let mut list = DeadList {
            tasks: Vec::new(),
            total: self.entries.len() as u64,
            truncated: false,
            evicted: self.evicted,
        };
        // Room for the array header to grow with its length (5 bytes at most).
        let mut used = codec::encoded_len(&list) + 5;
        for e in self.entries.iter().rev().take(limit) {
            let cost = codec::encoded_len(e);
            if used + cost > max_bytes {
                break;
            }
            used += cost;
            list.tasks.push(e.clone());
        }
        list.truncated = list.tasks.len() < self.entries.len();
        while codec::encoded_len(&list) > max_bytes && list.tasks.pop().is_some() {
            list.truncated = true;
        }
        list
    }
}

/// The dead-list entry of `task`, answered with `error`; arguments and
/// error cut to their bounds.
fn dead_entry(task: &Pending, error: &str) -> DeadTask {
    DeadTask {
        task_id: task.id,
        task: task.spec.name.clone(),
        retries: task.retried,
        ..bounded_entry(&task.spec.args, error)
    }
}

/// An entry with `args` and `error` cut to their bounds, stamped now.
fn bounded_entry(args: &Value, error: &str) -> DeadTask {
    let (args, args_truncated) = if codec::encoded_len(args) <= DEAD_ARGS_MAX {
        (args.clone(), false)
    } else {
        let (preview, _) = crate::json::preview(args, ARGS_PREVIEW_CHARS);
        (Value::from(preview), true)
    };
    let mut error = error.to_string();
    if error.len() > DEAD_ERROR_MAX {
        let mut cut = DEAD_ERROR_MAX - '…'.len_utf8();
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
        error.push('…');
    }
    let failed_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    DeadTask {
        task_id: 0,
        task: String::new(),
        args,
        args_truncated,
        retries: 0,
        error,
        failed_at_ms,
    }
}

impl Manager {
    /// Queued tasks plus waiting retries: what the queue bound holds.
    pub(super) fn held(&self) -> usize {
        self.tasks.queued() + self.tasks.retrying()
    }

    /// A run of task `id` (running) failed with `error`, and the task asked
    /// for retries: schedule the next one, or answer the task for `done`
    /// (and list it as dead).
    pub(super) fn failed_run(
        &mut self,
        id: TaskId,
        error: String,
        done: Event,
        ctx: &mut Context<Self>,
    ) {
        let Some(task) = self.tasks.get(id).map(|e| &e.task) else {
            return;
        };
        let allowed = task.spec.retries.unwrap_or(0);
        let retried = task.retried;
        let error = if self.shutdown.is_some() {
            Err(format!("{error} (not retried: manager shutting down)"))
        } else if retried >= allowed {
            Err(error)
        } else if self.held() as u64 >= self.queue_limit() {
            log::debug!(
                "task {id} failed with {} retries left, and the queue is full: not retried",
                allowed - retried
            );
            Err(format!("{error} (not retried: queue full)"))
        } else {
            Ok(error)
        };
        let error = match error {
            Ok(error) => error,
            Err(error) => {
                let Some(task) = self.tasks.leave(id, done) else {
                    return;
                };
                if self.shutdown.is_none() {
                    self.dead.push(dead_entry(&task, &error));
                }
                self.reply(task, TaskOutcome::Failed(error));
                return;
            }
        };
        let planned = backoff(
            self.settings.retry_base,
            self.settings.retry_max,
            retried + 1,
        );
        let delay = (self.settings.retry_jitter)(planned);
        let due = Instant::now() + delay;
        log::debug!(
            "task {id} failed ({}); retry {} of {allowed} in {}",
            crate::logsafe::escaped(&error).max_chars(200),
            retried + 1,
            humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
        );
        if let Some(task) = self.tasks.task_mut(id) {
            task.retried += 1;
        }
        self.tasks
            .move_to(id, Event::Failed, State::Retrying { due, error }, At::Back);
        if let Some(e) = self.tasks.get(id) {
            self.journal.retry(&e.task);
        }
        self.metrics.retried();
        self.arm_retry_timer(ctx);
    }

    /// Sets the one timer for the earliest waiting retry, unless it is set
    /// for that time or earlier already.
    fn arm_retry_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(due) = self.tasks.next_due() else {
            return;
        };
        if let Some((at, handle)) = self.retry_timer.timer {
            if at <= due {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = due.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| {
            act.retry_timer.timer = None;
            act.retries_due(ctx);
        });
        self.retry_timer.timer = Some((due, handle));
    }

    /// Puts the retries that are due back in the queue at their priority.
    fn retries_due(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        for id in self.tasks.due(now) {
            if let Some(task) = self.tasks.task_mut(id) {
                task.attempt_base = task.started_times;
                task.level = task.spec.priority;
                task.waiting_since = now;
            }
            self.tasks
                .move_to(id, Event::RetryDue, State::Queued, At::Back);
            let runnable = self
                .tasks
                .get(id)
                .is_some_and(|e| self.runnable(&e.task.spec.name));
            if !runnable {
                if let Some(task) = self.tasks.leave(id, Event::Unrunnable) {
                    let msg = format!("no worker provides task {} any more", task.spec.name);
                    self.reply(task, TaskOutcome::Failed(msg));
                }
            }
        }
        self.arm_retry_timer(ctx);
        self.dispatch(ctx);
    }

    /// Shutdown: answers every waiting retry as not retried (or keeps it
    /// for the next start with a durable store); returns how many there
    /// were.
    pub(super) fn shed_retries(&mut self) -> usize {
        let ids: Vec<TaskId> = self.tasks.retrying_ids().map(|(_, id)| id).collect();
        let n = ids.len();
        for id in ids {
            let error = match self.tasks.get(id).map(|e| &e.state) {
                Some(State::Retrying { error, .. }) => error.clone(),
                _ => continue,
            };
            let Some(task) = self.tasks.leave(id, Event::Stopping) else {
                continue;
            };
            if self.journal.durable() {
                self.keep_for_next_start(task);
            } else {
                let msg = format!("{error} (not retried: manager shutting down)");
                self.reply(task, TaskOutcome::Failed(msg));
            }
        }
        n
    }

    /// The waiting retries soonest due first, at most `n`: each with its
    /// due time, task and last error.
    pub(super) fn soonest_retries(&self, n: usize) -> Vec<(Instant, &Pending, &str)> {
        self.tasks
            .retrying_ids()
            .take(n)
            .filter_map(|(due, id)| {
                let e = self.tasks.get(id)?;
                match &e.state {
                    State::Retrying { error, .. } => Some((due, &e.task, error.as_str())),
                    _ => None,
                }
            })
            .collect()
    }
}

impl Handler<GetDeadList> for Manager {
    type Result = MessageResult<GetDeadList>;

    fn handle(&mut self, msg: GetDeadList, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.dead.list(msg.limit, msg.max_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let got: Vec<u64> = (1..=8).map(|k| backoff(base, max, k).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(base, max, u32::MAX), max, "no overflow");
        assert_eq!(backoff(Duration::ZERO, max, 3), Duration::ZERO);
    }

    #[test]
    fn uniform_jitter_stays_between_half_and_the_whole() {
        let d = Duration::from_millis(800);
        let draws: Vec<Duration> = (0..200).map(|_| uniform_jitter(d)).collect();
        assert!(draws.iter().all(|x| *x >= d / 2 && *x <= d), "{draws:?}");
        assert!(
            draws.iter().any(|x| *x != draws[0]),
            "200 draws are not all equal"
        );
        assert_eq!(uniform_jitter(Duration::ZERO), Duration::ZERO);
    }

    fn entry(task_id: u64, error: &str) -> DeadTask {
        DeadTask {
            task_id,
            task: "t".into(),
            args: Value::Nil,
            args_truncated: false,
            retries: 1,
            error: error.into(),
            failed_at_ms: 0,
        }
    }

    #[test]
    fn entries_keep_small_arguments_and_cut_large_ones_and_long_errors() {
        let small = Value::Array(vec![1.into(), "two".into()]);
        let e = bounded_entry(&small, "short");
        assert_eq!(
            (e.args, e.args_truncated, e.error.as_str()),
            (small, false, "short")
        );
        assert!(e.failed_at_ms > 0);

        let big = Value::from("x".repeat(5000));
        let error = "é".repeat(3000);
        let e = bounded_entry(&big, &error);
        assert!(e.args_truncated);
        let preview = e.args.as_str().expect("a string preview");
        assert!(preview.starts_with("\"xxx") && preview.ends_with('…'));
        assert_eq!(preview.chars().count(), ARGS_PREVIEW_CHARS + 1);
        assert!(e.error.len() <= DEAD_ERROR_MAX && e.error.ends_with('…'));
        assert!(e.error.len() > DEAD_ERROR_MAX - 8, "cut near the bound");
    }

    #[test]
    fn the_list_is_newest_first_and_cut_to_the_byte_budget() {
        let mut dead = DeadStore::new(10);
        for id in 1..=5 {
            dead.push(entry(id, &"e".repeat(100)));
        }
        let all = dead.list(100, 1 << 20);
        let ids: Vec<u64> = all.tasks.iter().map(|t| t.task_id).collect();
        assert_eq!(ids, vec![5, 4, 3, 2, 1]);
        assert!(!all.truncated);

        let two = dead.list(2, 1 << 20);
        assert_eq!(two.tasks.len(), 2);
        assert!(two.truncated && two.total == 5);

        let budget = codec::encoded_len(&all) - 150;
        let cut = dead.list(100, budget);
        assert!(codec::encoded_len(&cut) <= budget);
        assert!(cut.truncated && cut.tasks.len() < 5 && !cut.tasks.is_empty());
    }
}
