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
//! retry follows (all used, or no room) goes to the dead list
//! ([`super::dead`]).
//!
//! With a task store each scheduled retry is recorded (`Journal::retry`),
//! so a restarted manager gives a task only the retries it had left; the
//! due time is not recorded (see [`super::persist`]).
//!
//! One timer serves every waiting retry: it is set for the earliest due
//! time, and a retry cancelled meanwhile leaves it to fire on nothing.

use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::lifecycle::Event;
use super::tasks::{At, State};
use super::{Manager, Pending};
use crate::messages::{TaskId, TaskOutcome};

/// Most retries a task may ask for; more is refused as invalid.
pub const MAX_RETRIES: u32 = 10;

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
                    self.bury(&task, &error);
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
        self.retry_timer
            .arm(due, ctx, |m| &mut m.retry_timer, Manager::retries_due);
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
}
