//! Durable mode's part of the manager: starting over a task store and
//! taking over what it held, and keeping tasks for the next start when the
//! manager stops. With a store that keeps nothing none of this does
//! anything.
//!
//! Recovery: tasks never started are queued again by priority in id
//! (acceptance) order; tasks recorded as started wait for a worker to claim
//! their run when it registers (then the run is attached and its result
//! accepted), for at most the recovery grace; then they are queued again
//! without spending an attempt (whether they ran is unknown, and a crash
//! must not fail a task). A restart loses every provider at once: the
//! recovered tasks wait for workers that provide them in the windows of
//! [`super::awaiting`], opened at the start for at least the recovery
//! grace. A recovered task keeps its retries used, so it gets only those
//! left. A task that was waiting for its retry is queued again at once: the
//! backoff's due time is not recorded (it is in-process time, and a restart
//! is itself a wait). A retry whose record was not yet committed at the
//! crash is not counted. A worker that claims the first run of a task
//! recovered as queued (its start was not yet committed) gets it attached
//! too. Every recovered task is detached: its outcome goes to the result
//! store. New ids continue past the recorded high-water mark plus
//! [`ID_GAP`], so an id is never handed out twice.
//!
//! A task scheduled to run later keeps its due time (wall clock): it is
//! scheduled again for it, or queued at once if it came due during the
//! outage ([`super::schedule`]).
//!
//! A store that fails to write stops the manager ([`Manager::failure`]):
//! what was committed is recovered at the next start.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::journal::{now_ms, spec_of, Deferred, ID_GAP};
use super::lifecycle::Event;
use super::store::{CommitSink, Committed, StoreFailed, StoredOutcome};
use super::tasks::{At, State};
use super::{Manager, Pending, ReplyTo};
use crate::messages::*;

impl Manager {
    /// Starts the store, and installs what it held (once, when the actor
    /// starts). Returns the last runs of the periodic tasks it held.
    pub(super) fn recover(&mut self, ctx: &mut Context<Self>) -> Vec<(String, u64)> {
        let sink = CommitSink {
            committed: ctx.address().recipient(),
            failed: ctx.address().recipient(),
        };
        if let Err(e) = self.journal.start(sink) {
            self.store_failed(e.to_string(), ctx);
            return Vec::new();
        }
        if !self.journal.durable() {
            return Vec::new();
        }
        let recovered = self.journal.take_recovered();
        if let Some(high) = recovered.high_id {
            self.next_id = high.saturating_add(ID_GAP);
        }
        let now = Instant::now();
        let wall = now_ms();
        let mut results = recovered.results;
        results.sort_by_key(|(id, r)| (r.finished_ms, *id));
        let mut expired = Vec::new();
        let kept = results.len();
        for (id, r) in results {
            let age = Duration::from_millis(wall.saturating_sub(r.finished_ms));
            let Some(at) = now
                .checked_sub(age)
                .filter(|_| age < self.settings.result_ttl)
            else {
                expired.push(id);
                continue;
            };
            if let Some((key, until_ms)) = r.unique {
                let left = Duration::from_millis(until_ms.saturating_sub(wall));
                if !left.is_zero() {
                    self.uniques.recovered_window(key, id, now, left);
                }
            }
            let outcome = match r.outcome {
                StoredOutcome::Done(v) => TaskOutcome::Done(v),
                StoredOutcome::Failed(e) => TaskOutcome::Failed(e),
            };
            self.results.insert(id, Arc::new(outcome), at);
        }
        for id in expired {
            self.journal.forget(id);
        }
        self.forget_gone();
        self.restore_dead(recovered.dead);
        let mut tasks = recovered.tasks;
        tasks.sort_by_key(|(id, _, _)| *id);
        let (mut queued, mut running, mut scheduled) = (0, 0, 0);
        let mut kinds = HashSet::new();
        for (id, r, start) in tasks {
            let task = Pending {
                id,
                origin: None,
                reply: ReplyTo::Kept,
                level: r.priority,
                started_times: start.as_ref().map_or(r.attempt_base, |s| s.started_times),
                waiting_since: now,
                accepted_at: now,
                worker: None,
                retried: r.retried,
                attempt_base: r.attempt_base,
                due_ms: r.due_ms,
                unique: r
                    .unique_key
                    .clone()
                    .map(|k| (k, Duration::from_millis(r.unique_for_ms))),
                spec: spec_of(r),
            };
            if let Some((key, keep)) = &task.unique {
                self.uniques.insert(key.clone(), id, *keep);
            }
            kinds.insert(task.spec.name.clone());
            match start {
                Some(s) => {
                    running += 1;
                    self.tasks.insert(task, State::Unclaimed(s.run), At::Back);
                }
                None => match task.due_ms.map(|due| due.saturating_sub(wall)) {
                    Some(wait) if wait > 0 => {
                        scheduled += 1;
                        let due = now + Duration::from_millis(wait);
                        self.tasks.insert(task, State::Scheduled { due }, At::Back);
                    }
                    // Due during the outage, or never scheduled: runs now.
                    _ => {
                        queued += 1;
                        self.tasks.insert(task, State::Queued, At::Back);
                    }
                },
            }
        }
        let grace = self.journal.grace;
        // Unclaimed runs are requeued after `grace`: their kinds' windows
        // last at least that long, so they find them open.
        let window = self.awaiting.grace().max(grace);
        self.open_windows(&kinds, now, window);
        self.hold_orphans(&kinds);
        self.arm_provider_timer(ctx);
        self.arm_schedule_timer(ctx);
        log::info!(
            "{}: recovered {queued} queued task(s), {scheduled} scheduled for later, {running} \
             running (their workers have {} to claim them), {kept} kept result(s); they wait up \
             to {} for workers that provide them",
            self.journal.describe(),
            humantime::format_duration(grace),
            humantime::format_duration(window)
        );
        if running > 0 {
            ctx.run_later(grace, |act, ctx| act.reclaim_unclaimed(ctx));
        }
        recovered.fired
    }

    /// The recovered task whose run `run` worker `worker` reports at its
    /// registration, if there is one: it is attached to the run (now
    /// running there) instead of the run being cancelled.
    pub(super) fn claim_recovered(
        &mut self,
        run: RunId,
        worker: WorkerId,
        ctx: &mut Context<Self>,
    ) -> Option<TaskId> {
        let (id, recorded) = self.recovered_run(run)?;
        let task = self.tasks.task_mut(id)?;
        task.started_times = task.started_times.max(1);
        task.worker = Some(worker);
        let (started, timeout) = (task.started_times, task.spec.timeout);
        self.tasks
            .move_to(id, Event::Claimed, State::Running(run), At::Back);
        if !recorded {
            self.journal.start_run(id, run, started);
        }
        if let Some(limit) = timeout {
            ctx.run_later(limit + self.settings.timeout_grace, move |act, ctx| {
                act.expire(run, limit, ctx)
            });
        }
        log::debug!("recovered task {id} attached to its running run {run}");
        Some(id)
    }

    /// The recovered task run `run` belongs to, if it is one nobody claimed
    /// yet, and whether its start is recorded: a run recorded as going, or
    /// a first run whose start was not committed (its id is the task's; a
    /// task recovered after a retry was scheduled has started before, so
    /// its first run ended).
    fn recovered_run(&self, run: RunId) -> Option<(TaskId, bool)> {
        if let Some(id) = self.tasks.unclaimed_run(run) {
            return Some((id, true));
        }
        let e = self.tasks.get(run)?;
        let waiting = matches!(e.state, State::Queued | State::Awaiting);
        (waiting && e.task.origin.is_none() && e.task.started_times == 0).then_some((run, false))
    }

    /// An outcome a worker kept for run `run` while it had no manager: if
    /// the run is of a recovered task nobody claimed, it is that task's
    /// outcome (one outcome per id, delivered once); otherwise (another
    /// manager's run, or one this manager already requeued) it is let go.
    /// Returns whether it was taken.
    pub(super) fn handed_over(
        &mut self,
        run: RunId,
        outcome: TaskOutcome,
        ctx: &mut Context<Self>,
    ) -> bool {
        let Some((id, _)) = self.recovered_run(run) else {
            log::debug!(
                "outcome of run {run} handed over by a worker: no task of this manager waits \
                 for it; let go"
            );
            return false;
        };
        log::debug!("recovered task {id} takes the outcome its worker kept for run {run}");
        if let Some(task) = self.tasks.task_mut(id) {
            task.started_times = task.started_times.max(1);
        }
        // Claimed by the outcome, and finished with it.
        self.tasks
            .move_to(id, Event::Claimed, State::Running(run), At::Back);
        self.finished(id, outcome, Event::Finished, ctx);
        true
    }

    /// The recovery grace is over: recovered runs no worker claimed are
    /// queued again without spending an attempt: whether they ran is not
    /// known, and a manager crash must not fail a task.
    fn reclaim_unclaimed(&mut self, ctx: &mut Context<Self>) {
        let mut left = self.tasks.unclaimed();
        if left.is_empty() || self.shutdown.is_some() {
            // Shutting down: they stay in the store for the next start.
            return;
        }
        // Requeued at the head one by one: newest first, so the oldest ends up in front.
        left.sort_unstable_by_key(|&id| std::cmp::Reverse(id));
        for &id in &left {
            if let Some(task) = self.tasks.task_mut(id) {
                task.started_times = task.started_times.saturating_sub(1).max(task.attempt_base);
            }
            self.requeue_front(id, Event::Unclaimed);
            self.settle(id, At::Front);
        }
        let failed = left
            .iter()
            .filter(|&&id| self.tasks.get(id).is_none())
            .count();
        log::info!(
            "recovered running task(s) no worker claimed: {} requeued, {failed} failed",
            left.len() - failed
        );
        self.dispatch(ctx);
    }

    /// Sends deletions for the outcomes the result store let go.
    pub(super) fn forget_gone(&mut self) {
        for id in self.results.take_gone() {
            self.journal.forget(id);
        }
    }

    /// Graceful shutdown with a durable store: queued tasks stay recorded
    /// for the next start instead of being answered; an attached client is
    /// told so. Returns how many.
    pub(super) fn keep_queue(&mut self) -> usize {
        let kept = self.not_started();
        for t in kept.iter() {
            kept_for_next_start(t);
        }
        log::info!(
            "{} queued task(s) kept in {} for the next start",
            kept.len(),
            self.journal.describe()
        );
        kept.len()
    }

    /// The drain's deadline with a durable store: the tasks still running
    /// stay recorded as running and their runs go on, for their workers to
    /// hand the outcomes over (or claim the runs) after the next start;
    /// nothing is cancelled, and an attached client is told its task was
    /// kept.
    pub(super) fn keep_running(&mut self) {
        let ids: Vec<TaskId> = self
            .runs
            .values_mut()
            .filter_map(|r| r.task.take())
            .collect();
        let late: Vec<Pending> = ids
            .into_iter()
            .filter_map(|id| self.tasks.leave(id, Event::DrainDeadline))
            .collect();
        for task in &late {
            kept_for_next_start(task);
        }
        if !late.is_empty() {
            log::info!(
                "drain deadline: {} running task(s) left running on their workers, kept in {} \
                 for the next start",
                late.len(),
                self.journal.describe()
            );
        }
        if let Some(d) = self.shutdown.as_mut() {
            d.past_deadline = true;
            d.report.kept_running = late.len();
        }
        self.check_drained();
    }

    /// Lets go of a task the store keeps for the next start (the manager
    /// stops): its record stays, and an attached client is told so.
    pub(super) fn keep_for_next_start(&mut self, task: Pending) {
        kept_for_next_start(&task);
    }

    /// The store failed: the manager stops serving, says why to whoever
    /// waits on [`Manager::failure`], and stops. What was committed is
    /// recovered at the next start.
    pub(super) fn store_failed(&mut self, why: String, ctx: &mut Context<Self>) {
        log::error!(
            "{} failed: {why}; stopping (committed tasks are recovered at the next start)",
            self.journal.describe()
        );
        let _ = self
            .failure
            .send(Some(format!("{} failed: {why}", self.journal.describe())));
        ctx.stop();
    }
}

/// Tells the attached client of `task` that its task stays in the store
/// for the next start instead of being answered now; a client that will
/// wait on it again by id after reconnecting (`reattach`) is told nothing,
/// and gets the task's one reply from the next start.
fn kept_for_next_start(task: &Pending) {
    if let (ReplyTo::Session(to), Some(origin)) = (&task.reply, &task.origin) {
        if origin.reattach {
            log::debug!(
                "task {} kept for the next start; its client waits on it again once reconnected",
                task.id
            );
            return;
        }
        to.do_send(TaskReply {
            request_id: origin.request_id,
            outcome: TaskOutcome::Failed(format!(
                "manager shutting down: task {} kept for the next start",
                task.id
            )),
        });
    }
}

impl Handler<Committed> for Manager {
    type Result = ();

    fn handle(&mut self, msg: Committed, _: &mut Self::Context) {
        for d in self.journal.committed(msg.upto) {
            match d {
                Deferred::Accept(id, tx) => {
                    let _ = tx.send(Ok(id));
                }
                Deferred::Outcome(answered) => {
                    let (task, outcome) = *answered;
                    self.deliver(task, outcome);
                }
            }
        }
        self.forget_gone();
        self.check_drained();
    }
}

impl Handler<StoreFailed> for Manager {
    type Result = ();

    fn handle(&mut self, msg: StoreFailed, ctx: &mut Self::Context) {
        self.store_failed(msg.0, ctx)
    }
}
