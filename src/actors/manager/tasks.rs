//! The task table: every task the manager holds, by id, each in one
//! [`State`]. The priority queues, the retry line, the windows of the
//! kinds that wait for a provider and the recovered runs nobody claimed
//! are indexes of ids into it, and so are the requests and sessions tasks
//! came from; a task's state is its entry's, never which container it
//! happens to sit in. A task changes state only through [`Tasks::move_to`]
//! and leaves only through [`Tasks::leave`], both held to the transitions
//! of [`lifecycle`], so every index is updated in one place and a lookup
//! by id is one map access.
//!
//! A task answered and waiting for its outcome's commit has left the table
//! (its outcome is the journal's, [`super::journal`]); a kept outcome is
//! the result store's ([`super::results`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use tokio::time::Instant;

use super::lifecycle::{self, Event, Next, Stage};
use super::{IdHasher, IdMap, Pending};
use crate::messages::{RunId, SessionId, TaskId};
use crate::protocol::Priority;

/// Where a task is, with what that state needs.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum State {
    /// In its level's queue.
    Queued,
    /// In its kind's window, waiting for a provider.
    Awaiting,
    /// Running as run `RunId` (the manager's run map has the slot).
    Running(RunId),
    /// Waiting until `due` for a retry; `error` is its last run's.
    Retrying { due: Instant, error: String },
    /// Recovered as running in run `RunId`, waiting for a claim.
    Unclaimed(RunId),
    /// Submitted to run later: waiting until `due`, outside the queue.
    Scheduled { due: Instant },
}

impl State {
    /// The lifecycle stage it is.
    pub(super) fn stage(&self) -> Stage {
        match self {
            State::Queued => Stage::Queued,
            State::Awaiting => Stage::Awaiting,
            State::Running(_) => Stage::Running,
            State::Retrying { .. } => Stage::Retrying,
            State::Unclaimed(_) => Stage::Unclaimed,
            State::Scheduled { .. } => Stage::Scheduled,
        }
    }
}

/// Where in its queue (or window) a task goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum At {
    /// Behind the others of its level: a new or retried task.
    Back,
    /// Before them: a task that waited before (requeued, given back).
    Front,
}

/// One task and its state.
pub(super) struct Entry {
    /// The task.
    pub(super) task: Pending,
    /// Its state.
    pub(super) state: State,
}

/// See the module docs.
#[derive(Default)]
pub(super) struct Tasks {
    entries: IdMap<Entry>,
    queues: [VecDeque<TaskId>; 3],
    windows: HashMap<String, [VecDeque<TaskId>; 3]>,
    awaiting: usize,
    retrying: BTreeSet<(Instant, TaskId)>,
    scheduled: BTreeSet<(Instant, TaskId)>,
    unclaimed: IdMap<TaskId>,
    by_request: HashMap<(SessionId, u64), TaskId, BuildHasherDefault<IdHasher>>,
    by_session: IdMap<HashSet<TaskId, BuildHasherDefault<IdHasher>>>,
    /// Queued tasks of the names whose queued tasks are counted (those
    /// with a `max_queued` limit); empty, and never looked up, without.
    queued_by_name: HashMap<String, usize>,
}

impl Tasks {
    /// Counts the queued tasks of `names` from now on (call before any
    /// task comes in).
    pub(super) fn count_queued(&mut self, names: Vec<String>) {
        self.queued_by_name = names.into_iter().map(|n| (n, 0)).collect();
    }

    /// Queued tasks of `name`, if its queued tasks are counted (else 0).
    pub(super) fn queued_of(&self, name: &str) -> usize {
        self.queued_by_name.get(name).copied().unwrap_or(0)
    }

    /// Takes in an accepted (or recovered) task in `state`.
    pub(super) fn insert(&mut self, task: Pending, state: State, at: At) {
        let id = task.id;
        if let Some(o) = &task.origin {
            self.by_request.insert((o.session, o.request_id), id);
            if !task.detached() {
                self.by_session.entry(o.session).or_default().insert(id);
            }
        }
        self.entries.insert(id, Entry { task, state });
        self.index(id, at);
    }

    /// Task `id` and its state.
    pub(super) fn get(&self, id: TaskId) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// Task `id`, to change what it carries (not its state).
    pub(super) fn task_mut(&mut self, id: TaskId) -> Option<&mut Pending> {
        self.entries.get_mut(&id).map(|e| &mut e.task)
    }

    /// The task of request `request_id` of `session`, if it is here.
    pub(super) fn of_request(&self, session: SessionId, request_id: u64) -> Option<TaskId> {
        self.by_request.get(&(session, request_id)).copied()
    }

    /// The attached tasks of `session`.
    pub(super) fn of_session(&self, session: SessionId) -> Vec<TaskId> {
        self.by_session
            .get(&session)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The recovered task of unclaimed run `run`.
    pub(super) fn unclaimed_run(&self, run: RunId) -> Option<TaskId> {
        self.unclaimed.get(&run).copied()
    }

    /// Moves task `id` to `state` for `event` (at `at` of its queue or
    /// window). Returns whether it did: a move the lifecycle does not have
    /// is refused, and logged as the manager's error.
    pub(super) fn move_to(&mut self, id: TaskId, event: Event, state: State, at: At) -> bool {
        let Some(entry) = self.entries.get(&id) else {
            return false;
        };
        let from = entry.state.stage();
        let wanted = match (&state, at) {
            (State::Queued, At::Front) if !matches!(from, Stage::Retrying | Stage::Scheduled) => {
                Next::Requeued
            }
            _ => Next::To(state.stage()),
        };
        if !self.allowed(id, from, event, wanted) {
            return false;
        }
        self.unindex(id);
        if let Some(e) = self.entries.get_mut(&id) {
            e.state = state;
        }
        self.index(id, at);
        true
    }

    /// Takes task `id` out of the table for `event`: it is answered (or
    /// kept for the next start), or dropped with no outcome owed.
    pub(super) fn leave(&mut self, id: TaskId, event: Event) -> Option<Pending> {
        let from = self.entries.get(&id)?.state.stage();
        let next = lifecycle::next(from, event);
        if !matches!(next, Some(Next::Answered | Next::Dropped)) {
            self.refuse(id, from, event);
            return None;
        }
        self.unindex(id);
        let e = self.entries.remove(&id)?;
        if let Some(o) = &e.task.origin {
            self.by_request.remove(&(o.session, o.request_id));
            if let Some(s) = self.by_session.get_mut(&o.session) {
                s.remove(&id);
                if s.is_empty() {
                    self.by_session.remove(&o.session);
                }
            }
        }
        Some(e.task)
    }

    fn allowed(&self, id: TaskId, from: Stage, event: Event, wanted: Next) -> bool {
        if lifecycle::next(from, event) == Some(wanted) {
            return true;
        }
        self.refuse(id, from, event);
        false
    }

    fn refuse(&self, id: TaskId, from: Stage, event: Event) {
        log::error!(
            "task {id}: {event:?} while {from:?} is not in its lifecycle; left as it is \
             (a manager defect: please report it)"
        );
        // The table-driven test below tries every pair on purpose.
        if !cfg!(test) {
            debug_assert!(false, "task {id}: {event:?} while {from:?}");
        }
    }

    fn index(&mut self, id: TaskId, at: At) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        let level = e.task.level.index();
        let push = |q: &mut VecDeque<TaskId>| match at {
            At::Back => q.push_back(id),
            At::Front => q.push_front(id),
        };
        match &e.state {
            State::Queued => {
                push(&mut self.queues[level]);
                if !self.queued_by_name.is_empty() {
                    if let Some(n) = self.queued_by_name.get_mut(&e.task.spec.name) {
                        *n += 1;
                    }
                }
            }
            State::Awaiting => {
                let w = self.windows.entry(e.task.spec.name.clone()).or_default();
                push(&mut w[level]);
                self.awaiting += 1;
            }
            State::Retrying { due, .. } => {
                self.retrying.insert((*due, id));
            }
            State::Unclaimed(run) => {
                self.unclaimed.insert(*run, id);
            }
            State::Scheduled { due } => {
                self.scheduled.insert((*due, id));
            }
            State::Running(_) => {}
        }
    }

    fn unindex(&mut self, id: TaskId) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        let level = e.task.level.index();
        // A task leaves its queue from an end, most often: the head (it
        // starts) or the tail (it just came and starts at once).
        let remove = |q: &mut VecDeque<TaskId>| {
            if q.front() == Some(&id) {
                q.pop_front();
            } else if q.back() == Some(&id) {
                q.pop_back();
            } else if let Some(i) = q.iter().position(|&t| t == id) {
                q.remove(i);
            }
        };
        match &e.state {
            State::Queued => {
                remove(&mut self.queues[level]);
                if !self.queued_by_name.is_empty() {
                    if let Some(n) = self.queued_by_name.get_mut(&e.task.spec.name) {
                        *n -= 1;
                    }
                }
            }
            State::Awaiting => {
                let kind = &e.task.spec.name;
                if let Some(w) = self.windows.get_mut(kind) {
                    remove(&mut w[level]);
                    if w.iter().all(VecDeque::is_empty) {
                        self.windows.remove(kind);
                    }
                }
                self.awaiting -= 1;
            }
            State::Retrying { due, .. } => {
                self.retrying.remove(&(*due, id));
            }
            State::Unclaimed(run) => {
                self.unclaimed.remove(run);
            }
            State::Scheduled { due } => {
                self.scheduled.remove(&(*due, id));
            }
            State::Running(_) => {}
        }
    }

    /// Tasks waiting in the queues.
    pub(super) fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Tasks waiting in `priority`'s queue, in order.
    pub(super) fn queue(&self, priority: Priority) -> &VecDeque<TaskId> {
        &self.queues[priority.index()]
    }

    /// Every queued task, level by level, each in queue order.
    pub(super) fn queued_ids(&self) -> Vec<TaskId> {
        self.queues.iter().flatten().copied().collect()
    }

    /// Moves queued task `id` one level up, behind that level's tasks
    /// (aging).
    pub(super) fn promote(&mut self, id: TaskId, now: Instant) {
        self.unindex(id);
        if let Some(e) = self.entries.get_mut(&id) {
            e.task.level = e.task.level.promoted();
            e.task.waiting_since = now;
        }
        self.index(id, At::Back);
    }

    /// Tasks waiting for a retry.
    pub(super) fn retrying(&self) -> usize {
        self.retrying.len()
    }

    /// Tasks waiting for a retry, soonest due first.
    pub(super) fn retrying_ids(&self) -> impl Iterator<Item = (Instant, TaskId)> + '_ {
        self.retrying.iter().copied()
    }

    /// The ids of the retries due by `now`, earliest first.
    pub(super) fn due(&self, now: Instant) -> Vec<TaskId> {
        self.retrying
            .iter()
            .take_while(|(due, _)| *due <= now)
            .map(|&(_, id)| id)
            .collect()
    }

    /// When the next retry is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.retrying.first().map(|&(due, _)| due)
    }

    /// Tasks scheduled to run later.
    pub(super) fn scheduled(&self) -> usize {
        self.scheduled.len()
    }

    /// Scheduled tasks, soonest due first.
    pub(super) fn scheduled_ids(&self) -> impl Iterator<Item = (Instant, TaskId)> + '_ {
        self.scheduled.iter().copied()
    }

    /// The ids of the scheduled tasks due by `now`, earliest first.
    pub(super) fn scheduled_due(&self, now: Instant) -> Vec<TaskId> {
        self.scheduled
            .iter()
            .take_while(|(due, _)| *due <= now)
            .map(|&(_, id)| id)
            .collect()
    }

    /// When the next scheduled task is due.
    pub(super) fn next_scheduled(&self) -> Option<Instant> {
        self.scheduled.first().map(|&(due, _)| due)
    }

    /// Tasks waiting for a provider.
    pub(super) fn awaiting(&self) -> usize {
        self.awaiting
    }

    /// The tasks waiting for a provider of `kind`, level by level, each in
    /// order.
    pub(super) fn awaiting_of(&self, kind: &str) -> Vec<TaskId> {
        self.windows
            .get(kind)
            .map(|w| w.iter().flatten().copied().collect())
            .unwrap_or_default()
    }

    /// Every task waiting for a provider.
    pub(super) fn awaiting_ids(&self) -> Vec<TaskId> {
        self.windows.values().flatten().flatten().copied().collect()
    }

    /// Recovered runs nobody claimed yet.
    pub(super) fn unclaimed(&self) -> Vec<TaskId> {
        self.unclaimed.values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Origin, ReplyTo};
    use super::*;
    use crate::messages::TaskSpec;
    use crate::protocol::Value;

    fn task(id: TaskId, session: SessionId, name: &str, level: Priority) -> Pending {
        let now = Instant::now();
        Pending {
            id,
            origin: Some(Origin {
                session,
                request_id: id,
                reattach: false,
            }),
            spec: TaskSpec::new(name, Value::Nil),
            reply: ReplyTo::Kept,
            started_times: 0,
            level,
            waiting_since: now,
            accepted_at: now,
            worker: None,
            retried: 0,
            attempt_base: 0,
            due_ms: None,
            unique: None,
        }
    }

    #[test]
    fn each_state_has_its_index_and_leaving_clears_them() {
        let mut t = Tasks::default();
        t.insert(task(1, 7, "a", Priority::Normal), State::Queued, At::Back);
        t.insert(task(2, 7, "a", Priority::Normal), State::Queued, At::Front);
        assert_eq!(t.queued_ids(), vec![2, 1]);
        assert_eq!(t.of_request(7, 1), Some(1));

        assert!(t.move_to(1, Event::ProviderLost, State::Awaiting, At::Back));
        assert_eq!(
            (t.queued(), t.awaiting(), t.awaiting_of("a")),
            (1, 1, vec![1])
        );
        assert!(t.move_to(1, Event::ProviderBack, State::Queued, At::Front));
        assert_eq!(t.queued_ids(), vec![1, 2]);

        assert!(t.move_to(1, Event::Started, State::Running(11), At::Back));
        let due = Instant::now();
        let retry = State::Retrying {
            due,
            error: "boom".into(),
        };
        assert!(t.move_to(1, Event::Failed, retry, At::Back));
        assert_eq!((t.retrying(), t.due(due)), (1, vec![1]));
        assert!(t.move_to(1, Event::RetryDue, State::Queued, At::Back));
        assert_eq!(t.queued_ids(), vec![2, 1]);

        assert_eq!(t.leave(1, Event::Cancelled).map(|p| p.id), Some(1));
        assert_eq!(t.leave(2, Event::Stopping).map(|p| p.id), Some(2));
        assert_eq!((t.queued(), t.retrying(), t.awaiting()), (0, 0, 0));
        assert!(t.of_request(7, 1).is_none() && t.get(1).is_none() && t.get(2).is_none());
        assert!(t.of_session(7).is_empty());
    }

    #[test]
    fn scheduled_tasks_are_indexed_by_due_time_and_enter_the_queue_from_either_end() {
        let mut t = Tasks::default();
        let now = Instant::now();
        let at = |ms| State::Scheduled {
            due: now + std::time::Duration::from_millis(ms),
        };
        t.insert(task(1, 7, "a", Priority::Normal), at(300), At::Back);
        t.insert(task(2, 7, "a", Priority::Normal), at(100), At::Back);
        t.insert(task(3, 7, "a", Priority::Normal), State::Queued, At::Back);
        assert_eq!((t.scheduled(), t.queued()), (2, 1));
        assert_eq!(
            t.next_scheduled(),
            Some(now + std::time::Duration::from_millis(100))
        );
        let due = t.scheduled_due(now + std::time::Duration::from_millis(300));
        assert_eq!(due, vec![2, 1]);
        assert!(t.move_to(2, Event::Due, State::Queued, At::Back));
        assert!(t.move_to(1, Event::Due, State::Queued, At::Front));
        assert_eq!(t.queued_ids(), vec![1, 3, 2]);
        assert_eq!((t.scheduled(), t.next_scheduled()), (0, None));
    }

    #[test]
    fn aging_moves_a_task_one_level_up_behind_that_level() {
        let mut t = Tasks::default();
        t.insert(task(1, 7, "a", Priority::High), State::Queued, At::Back);
        t.insert(task(2, 7, "a", Priority::Low), State::Queued, At::Back);
        t.promote(2, Instant::now());
        assert_eq!(
            t.queue(Priority::Normal)
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![2]
        );
        t.promote(2, Instant::now());
        assert_eq!(t.queued_ids(), vec![1, 2]);
    }

    /// A task in each stage, as the table builds it.
    fn in_stage(t: &mut Tasks, id: TaskId, stage: Stage) {
        let state = match stage {
            Stage::Queued => State::Queued,
            Stage::Awaiting => State::Awaiting,
            Stage::Running => State::Running(id),
            Stage::Retrying => State::Retrying {
                due: Instant::now(),
                error: "e".into(),
            },
            Stage::Unclaimed => State::Unclaimed(id),
            Stage::Scheduled => State::Scheduled {
                due: Instant::now(),
            },
        };
        t.insert(task(id, 1, "a", Priority::Normal), state, At::Back);
    }

    /// The state each `Next::To` leads to, as a move asks for it.
    fn target(next: Next) -> Option<(State, At)> {
        Some(match next {
            Next::To(Stage::Queued) => (State::Queued, At::Back),
            Next::To(Stage::Awaiting) => (State::Awaiting, At::Back),
            Next::To(Stage::Running) => (State::Running(99), At::Back),
            Next::To(Stage::Retrying) => (
                State::Retrying {
                    due: Instant::now(),
                    error: "e".into(),
                },
                At::Back,
            ),
            Next::To(Stage::Unclaimed) => (State::Unclaimed(99), At::Back),
            Next::To(Stage::Scheduled) => (
                State::Scheduled {
                    due: Instant::now(),
                },
                At::Back,
            ),
            Next::Requeued => (State::Queued, At::Front),
            Next::Answered | Next::Dropped => return None,
        })
    }

    /// Every (stage, event) pair: the table moves or takes out a task
    /// exactly where the lifecycle says, and refuses every other pair,
    /// leaving the task as it was.
    #[test]
    fn every_stage_and_event_pair_is_held_to_the_lifecycle() {
        let mut id = 0;
        for stage in lifecycle::STAGES {
            for event in lifecycle::EVENTS {
                id += 1;
                let mut t = Tasks::default();
                in_stage(&mut t, id, stage);
                match lifecycle::next(stage, event) {
                    Some(next @ (Next::Answered | Next::Dropped)) => {
                        assert!(
                            t.leave(id, event).is_some(),
                            "{stage:?} {event:?} -> {next:?}"
                        );
                        assert!(t.get(id).is_none());
                        assert_eq!(
                            (t.queued(), t.awaiting(), t.retrying(), t.scheduled()),
                            (0, 0, 0, 0)
                        );
                    }
                    Some(next) => {
                        let (state, at) = target(next).expect("a stage");
                        let want = state.stage();
                        assert!(t.move_to(id, event, state, at), "{stage:?} {event:?}");
                        assert_eq!(t.get(id).map(|e| e.state.stage()), Some(want));
                    }
                    None => {
                        assert!(t.leave(id, event).is_none(), "{stage:?} {event:?} left");
                        for next in [
                            Next::To(Stage::Queued),
                            Next::To(Stage::Awaiting),
                            Next::To(Stage::Running),
                            Next::To(Stage::Retrying),
                            Next::To(Stage::Scheduled),
                            Next::Requeued,
                        ] {
                            let (state, at) = target(next).expect("a stage");
                            assert!(
                                !t.move_to(id, event, state, at),
                                "{stage:?} {event:?} moved"
                            );
                        }
                        assert_eq!(t.get(id).map(|e| e.state.stage()), Some(stage));
                    }
                }
            }
        }
    }
}
