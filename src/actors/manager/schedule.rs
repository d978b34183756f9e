//! Delayed tasks: a submit with a due time (`argon submit --in 90s` or
//! `--at 2026-12-24T18:00:00Z`; `due_ms` or `delay_ms` on the wire).
//!
//! A scheduled task is accepted at once with an id and waits in the task
//! table's scheduled set ([`State::Scheduled`]), ordered by due time and
//! served by one timer, as the retry line is. The set is bounded by
//! `scheduled_max`: past it a submit with a due time is denied
//! [`SCHEDULE_FULL`], with a `retry_after` of the time until the next one
//! comes due (a place frees then). It does not count against the queue
//! bound while it waits; when it comes due it enters its priority's queue
//! at the back, and counts from then. If the queue is full then, it is
//! queued anyway, at the head of its priority (it was accepted, and is not
//! denied or lost): the queue may pass its bound by at most the tasks that
//! came due together, and new submits are denied until it drains. Of those
//! that come due together on a full queue, the earliest due ends up first.
//!
//! A due time now or past runs the task now; one more than [`MAX_AHEAD`]
//! ahead is refused as invalid. Due times are wall-clock milliseconds
//! since the Unix epoch by the manager's clock (`delay_ms` is resolved
//! against it when the submit arrives); the timer runs on the monotonic
//! clock, so a wall-clock step after acceptance does not move it.
//!
//! Cancels (by request or id), the client leaving (an attached task) and
//! the shutdown reach a scheduled task as they reach a queued one. With a
//! task store the due time is recorded with the task; a restarted manager
//! schedules it again for the same wall-clock time, and one that came due
//! during the outage is queued at once.

use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::lifecycle::Event;
use super::tasks::{At, State};
use super::{Manager, Pending};
use crate::logsafe::{RateLimit, WARN_WINDOW};
use crate::messages::{Rejection, TaskId};

/// Default bound of the scheduled set (`manager.scheduled_max`).
pub const SCHEDULED_MAX: usize = 100_000;

/// Reason of the deny a submit with a due time gets past `scheduled_max`.
pub const SCHEDULE_FULL: &str = "schedule full";

/// Farthest ahead a task may be scheduled (365 days); later is refused as
/// invalid.
pub const MAX_AHEAD: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long from `now_ms` until `due_ms` (both milliseconds since the Unix
/// epoch): `None` if it is now or past (the task runs now), an error for a
/// time more than [`MAX_AHEAD`] ahead.
pub fn wait_until(due_ms: u64, now_ms: u64) -> Result<Option<Duration>, String> {
    let wait = Duration::from_millis(due_ms.saturating_sub(now_ms));
    if wait.is_zero() {
        return Ok(None);
    }
    if wait > MAX_AHEAD {
        return Err(format!(
            "due time is {} days ahead; at most {} days are allowed",
            wait.as_secs() / 86_400,
            MAX_AHEAD.as_secs() / 86_400
        ));
    }
    Ok(Some(wait))
}

impl Manager {
    /// Takes `task` in to run `wait` from now, or denies it when the
    /// scheduled set is full.
    pub(super) fn schedule(
        &mut self,
        task: Pending,
        wait: Duration,
        ctx: &mut Context<Self>,
    ) -> Result<TaskId, Rejection> {
        if self.tasks.scheduled() >= self.settings.scheduled_max {
            static FULL: RateLimit = RateLimit::new(WARN_WINDOW);
            crate::log_limited!(
                FULL,
                log::Level::Warn,
                "schedule full ({} tasks wait for their due time): submits with a due time \
                 denied",
                self.settings.scheduled_max
            );
            let next = self
                .tasks
                .next_scheduled()
                .map_or(Duration::from_secs(1), |due| {
                    due.saturating_duration_since(Instant::now())
                });
            return Err(Rejection::Denied {
                reason: SCHEDULE_FULL.to_string(),
                retry_after: next.clamp(Duration::from_millis(10), Duration::from_secs(60)),
            });
        }
        self.limit(&task.spec.name)?;
        let id = task.id;
        let due = Instant::now() + wait;
        self.journal.accept(&task);
        self.tasks.insert(task, State::Scheduled { due }, At::Back);
        self.arm_schedule_timer(ctx);
        Ok(id)
    }

    /// Sets the one timer for the earliest scheduled task, unless it is set
    /// for that time or earlier already.
    pub(super) fn arm_schedule_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(due) = self.tasks.next_scheduled() else {
            return;
        };
        self.schedule_timer
            .arm(due, ctx, |m| &mut m.schedule_timer, Manager::scheduled_due);
    }

    /// Queues the scheduled tasks that are due: at the back of their
    /// priority while the queue has room, at its head past that.
    fn scheduled_due(&mut self, ctx: &mut Context<Self>) {
        if self.shutdown.is_some() {
            return;
        }
        let now = Instant::now();
        let mut room = self.queue_limit().saturating_sub(self.held() as u64);
        let mut over = Vec::new();
        for id in self.tasks.scheduled_due(now) {
            let due = match self.tasks.get(id).map(|e| &e.state) {
                Some(State::Scheduled { due }) => *due,
                _ => now,
            };
            if let Some(task) = self.tasks.task_mut(id) {
                task.level = task.spec.priority;
                task.waiting_since = now;
                // Its queue wait counts from its due time.
                task.accepted_at = due;
            }
            if room == 0 {
                over.push(id);
                continue;
            }
            room -= 1;
            self.tasks.move_to(id, Event::Due, State::Queued, At::Back);
            self.settle(id, At::Back);
        }
        if !over.is_empty() {
            log::info!(
                "{} scheduled task(s) came due with the queue full: queued at the head of their \
                 priorities, past the bound of {}",
                over.len(),
                self.queue_limit()
            );
        }
        // Latest first, so the earliest due ends up in front.
        for &id in over.iter().rev() {
            self.tasks.move_to(id, Event::Due, State::Queued, At::Front);
            self.settle(id, At::Front);
        }
        self.arm_schedule_timer(ctx);
        self.dispatch(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_time_past_or_now_runs_now_and_one_too_far_ahead_is_refused() {
        let now = 1_800_000_000_000;
        assert_eq!(wait_until(now - 5, now), Ok(None));
        assert_eq!(wait_until(now, now), Ok(None));
        assert_eq!(wait_until(0, now), Ok(None));
        assert_eq!(
            wait_until(now + 90_000, now),
            Ok(Some(Duration::from_secs(90)))
        );
        let limit = now + MAX_AHEAD.as_millis() as u64;
        assert_eq!(wait_until(limit, now), Ok(Some(MAX_AHEAD)));
        let err = wait_until(limit + 1, now).unwrap_err();
        assert!(err.contains("at most 365 days"), "{err}");
        assert!(wait_until(u64::MAX, now).is_err());
    }
}
