//! A task's life as a table: the states a task the manager holds can be
//! in, what can happen to it in each, and where that leads. The task table
//! ([`super::tasks`]) moves a task only along these transitions, and
//! docs/ARCHITECTURE.md lists the same table (a test compares the two).
//!
//! The table is about the task, not its runs: a run can outlive its task
//! (answered early, its run cancelled), and a slot is free only once its
//! worker reports the run finished, whatever became of the task.

/// Where a task the manager holds is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Waiting in its priority's queue for a free slot.
    Queued,
    /// Waiting for a worker that provides its kind, its last provider
    /// having left (a window of [`super::awaiting`]).
    Awaiting,
    /// Running: one run in one slot.
    Running,
    /// Its run failed with retries left: waiting out a backoff.
    Retrying,
    /// Recovered from a task store as running: waiting for its worker to
    /// claim the run or hand its outcome over.
    Unclaimed,
    /// Submitted to run later: waiting for its due time, outside the queue
    /// and its bound (a set of its own, [`super::schedule`]).
    Scheduled,
}

/// What can happen to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// A slot that provides it took it.
    Started,
    /// Its run ended: done, or failed with no retry left.
    Finished,
    /// Its run failed (or gave no result within its timeout plus the
    /// grace) with retries left.
    Failed,
    /// Its run gave no result within its timeout plus the grace, and no
    /// retry is left.
    TimedOut,
    /// The slot it was sent to did not start it (a draining worker).
    Refused,
    /// Its worker was lost while it ran, with attempts left.
    LostRetryable,
    /// Its worker was lost while it ran, with no attempt left.
    Lost,
    /// Its client cancelled it (by request or by id).
    Cancelled,
    /// Its client left (an attached task).
    ClientGone,
    /// Its backoff is over.
    RetryDue,
    /// The last worker that provides its kind left or began draining.
    ProviderLost,
    /// A worker that provides its kind registered.
    ProviderBack,
    /// Its kind's window ended with no provider.
    GraceOver,
    /// Its worker claimed the run at registration, or handed over the
    /// outcome it kept while it had no manager (the run then finishes).
    Claimed,
    /// Nobody claimed its run within the recovery grace.
    Unclaimed,
    /// No worker provides its kind any more and the kind has no window.
    Unrunnable,
    /// The manager stops: what has not started.
    Stopping,
    /// The manager stops: the drain's deadline passed while it ran.
    DrainDeadline,
    /// Its due time came (a scheduled task).
    Due,
}

/// Where an event leads a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Next {
    /// To this stage.
    To(Stage),
    /// Back to the head of its priority's queue (it waited before).
    Requeued,
    /// Out of the table with its one outcome (or, with a task store, kept
    /// recorded for the next start instead).
    Answered,
    /// Out of the table with no outcome owed: its client left.
    Dropped,
}

use Event as E;
use Next as N;
use Stage as S;

/// Every transition, as (stage, event, next). An event not listed for a
/// stage cannot happen there.
pub const TRANSITIONS: &[(Stage, Event, Next)] = &[
    (S::Queued, E::Started, N::To(S::Running)),
    (S::Queued, E::Cancelled, N::Answered),
    (S::Queued, E::ClientGone, N::Dropped),
    (S::Queued, E::ProviderLost, N::To(S::Awaiting)),
    (S::Queued, E::GraceOver, N::Answered),
    (S::Queued, E::Claimed, N::To(S::Running)),
    (S::Queued, E::Unrunnable, N::Answered),
    (S::Queued, E::Stopping, N::Answered),
    (S::Awaiting, E::ProviderBack, N::Requeued),
    (S::Awaiting, E::GraceOver, N::Answered),
    (S::Awaiting, E::Cancelled, N::Answered),
    (S::Awaiting, E::ClientGone, N::Dropped),
    (S::Awaiting, E::Claimed, N::To(S::Running)),
    (S::Awaiting, E::Stopping, N::Answered),
    (S::Running, E::Finished, N::Answered),
    (S::Running, E::Failed, N::To(S::Retrying)),
    (S::Running, E::TimedOut, N::Answered),
    (S::Running, E::Refused, N::Requeued),
    (S::Running, E::LostRetryable, N::Requeued),
    (S::Running, E::Lost, N::Answered),
    (S::Running, E::Cancelled, N::Answered),
    (S::Running, E::ClientGone, N::Dropped),
    (S::Running, E::DrainDeadline, N::Answered),
    (S::Retrying, E::RetryDue, N::To(S::Queued)),
    (S::Retrying, E::Cancelled, N::Answered),
    (S::Retrying, E::ClientGone, N::Dropped),
    (S::Retrying, E::Stopping, N::Answered),
    (S::Unclaimed, E::Claimed, N::To(S::Running)),
    (S::Unclaimed, E::Unclaimed, N::Requeued),
    (S::Unclaimed, E::Cancelled, N::Answered),
    (S::Scheduled, E::Due, N::To(S::Queued)),
    (S::Scheduled, E::Cancelled, N::Answered),
    (S::Scheduled, E::ClientGone, N::Dropped),
    (S::Scheduled, E::Stopping, N::Answered),
];

/// Where `event` leads a task in `stage`; `None` if it cannot happen there.
pub fn next(stage: Stage, event: Event) -> Option<Next> {
    BY_PAIR[stage as usize][event as usize]
}

/// [`TRANSITIONS`] by stage and event, for a lookup per change.
static BY_PAIR: [[Option<Next>; EVENTS.len()]; STAGES.len()] = {
    let mut t = [[None; EVENTS.len()]; STAGES.len()];
    let mut i = 0;
    while i < TRANSITIONS.len() {
        let (s, e, n) = TRANSITIONS[i];
        t[s as usize][e as usize] = Some(n);
        i += 1;
    }
    t
};

/// Every stage, for tables and tests.
pub const STAGES: [Stage; 6] = [
    Stage::Queued,
    Stage::Awaiting,
    Stage::Running,
    Stage::Retrying,
    Stage::Unclaimed,
    Stage::Scheduled,
];

/// Every event, for tables and tests.
pub const EVENTS: [Event; 19] = [
    Event::Started,
    Event::Finished,
    Event::Failed,
    Event::TimedOut,
    Event::Refused,
    Event::LostRetryable,
    Event::Lost,
    Event::Cancelled,
    Event::ClientGone,
    Event::RetryDue,
    Event::ProviderLost,
    Event::ProviderBack,
    Event::GraceOver,
    Event::Claimed,
    Event::Unclaimed,
    Event::Unrunnable,
    Event::Stopping,
    Event::DrainDeadline,
    Event::Due,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_table_is_a_function_of_stage_and_event() {
        let pairs: HashSet<(Stage, Event)> = TRANSITIONS.iter().map(|&(s, e, _)| (s, e)).collect();
        assert_eq!(pairs.len(), TRANSITIONS.len(), "a pair is listed twice");
        for &(s, e, n) in TRANSITIONS {
            assert_eq!(next(s, e), Some(n));
        }
    }

    #[test]
    fn every_live_task_can_be_cancelled_and_every_event_happens_somewhere() {
        for stage in STAGES {
            assert_eq!(
                next(stage, Event::Cancelled),
                Some(Next::Answered),
                "{stage:?}"
            );
        }
        for event in EVENTS {
            assert!(
                TRANSITIONS.iter().any(|&(_, e, _)| e == event),
                "{event:?} leads nowhere"
            );
        }
        // Every stage is reached from another, or a task starts there.
        for stage in [
            Stage::Running,
            Stage::Retrying,
            Stage::Awaiting,
            Stage::Queued,
        ] {
            assert!(
                TRANSITIONS.iter().any(|&(_, _, n)| n == Next::To(stage)),
                "{stage:?} is never reached"
            );
        }
    }
}
