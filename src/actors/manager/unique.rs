//! Unique tasks: a submit with a `unique_key` while a task with that key is
//! scheduled, queued or running (or finished less than its `unique_for`
//! ago) is answered with that task's id instead of making a new one.
//!
//! The keys are a map from key to task id, kept beside the task table: an
//! entry is live while its task is in the table (or its outcome waits for
//! its commit), and then, once the task is answered, for its `unique_for`
//! (none by default). An entry whose task left without being answered (its
//! attached client left) is stale and goes at the next look.
//!
//! A duplicate detached submit is answered `accepted` with the existing id.
//! A duplicate attached submit waits on the existing task as a
//! `result_request` with `wait` would, and gets its outcome as its `reply`;
//! if that task has finished already, it gets the kept outcome of a
//! detached one, and otherwise an error naming the task (its outcome went
//! to its own client).
//!
//! Bound: at most `unique_max` keys. A full map is swept of expired and
//! stale entries; if it is still full, a submit with a new key is denied
//! [`UNIQUE_FULL`] with a `retry_after` of the time until the first
//! finished entry expires, 10 ms to 1 s (1 s if none has finished), and the
//! map is not swept again before then (a sweep is a pass over every key).
//! With a task store the
//! key is in the task's record, so live keys survive a restart; the window
//! after finishing survives for detached tasks (it is in their kept
//! result's record).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Manager, Waiter, MAX_RESULT_WAITERS};
use crate::logsafe::{escaped, RateLimit, WARN_WINDOW};
use crate::messages::{Rejection, SubmitTask, TaskId, TaskOutcome, TaskReply};

/// Default bound on the keys held (`manager.unique_max`).
pub const UNIQUE_MAX: usize = 100_000;

/// Longest key, in bytes.
pub const KEY_MAX: usize = 256;

/// Longest `unique_for`.
pub const UNIQUE_FOR_MAX: Duration = Duration::from_secs(30 * 24 * 3600);

/// Reason of the deny a submit with a new key gets past `unique_max`.
pub const UNIQUE_FULL: &str = "unique keys full";

/// Why a submit's `unique_key` and `unique_for_ms` are refused, if they
/// are: a key empty or longer than [`KEY_MAX`] bytes, a window without a
/// key or longer than [`UNIQUE_FOR_MAX`].
pub fn unfit(key: Option<&str>, unique_for_ms: Option<u64>) -> Option<String> {
    match (key, unique_for_ms) {
        (None, Some(_)) => Some("unique_for_ms needs a unique_key".into()),
        (Some(k), _) if k.is_empty() || k.len() > KEY_MAX => Some(format!(
            "unique_key must be 1 to {KEY_MAX} bytes (got {})",
            k.len()
        )),
        (_, Some(ms)) if Duration::from_millis(ms) > UNIQUE_FOR_MAX => Some(format!(
            "unique_for_ms must be at most {} days",
            UNIQUE_FOR_MAX.as_secs() / 86_400
        )),
        _ => None,
    }
}

/// One key's task.
#[derive(Debug, Clone, Copy)]
struct Entry {
    task: TaskId,
    /// How long the key holds after the task is answered.
    keep: Duration,
    /// When the task was answered, once it was.
    finished: Option<Instant>,
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// No task holds it.
    Free,
    /// Task `TaskId` holds it and is not answered yet.
    Live(TaskId),
    /// Task `TaskId` holds it, answered within its `unique_for`.
    Finished(TaskId),
}

/// See the module docs.
pub(super) struct Uniques {
    keys: HashMap<String, Entry>,
    max: usize,
    /// After a sweep that left the map full: no new sweep before this
    /// (each costs a pass over the keys).
    full_until: Option<Instant>,
}

impl Uniques {
    /// An empty map of at most `max` keys.
    pub(super) fn new(max: usize) -> Uniques {
        Uniques {
            keys: HashMap::new(),
            max,
            full_until: None,
        }
    }

    /// Keys held.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Where `key` stands at `now`; `live` says whether a task is still
    /// held (not answered). An expired or stale entry is removed.
    pub(super) fn find(&mut self, key: &str, now: Instant, live: impl Fn(TaskId) -> bool) -> Found {
        let Some(e) = self.keys.get(key).copied() else {
            return Found::Free;
        };
        match e.finished {
            None if live(e.task) => Found::Live(e.task),
            Some(at) if now < at + e.keep => Found::Finished(e.task),
            _ => {
                self.keys.remove(key);
                Found::Free
            }
        }
    }

    /// Makes room for one more key, sweeping if full: `Err` with the time
    /// until room is likely when there is none.
    pub(super) fn room(
        &mut self,
        now: Instant,
        live: impl Fn(TaskId) -> bool,
    ) -> Result<(), Duration> {
        if self.keys.len() < self.max {
            return Ok(());
        }
        if let Some(until) = self.full_until.filter(|&t| now < t) {
            return Err(until - now);
        }
        self.sweep(now, live);
        if self.keys.len() < self.max {
            return Ok(());
        }
        let soonest = self
            .keys
            .values()
            .filter_map(|e| {
                e.finished
                    .map(|at| (at + e.keep).saturating_duration_since(now))
            })
            .min()
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        self.full_until = Some(now + soonest);
        Err(soonest)
    }

    /// Task `task` now holds `key`, for `keep` after it is answered.
    pub(super) fn insert(&mut self, key: String, task: TaskId, keep: Duration) {
        self.keys.insert(
            key,
            Entry {
                task,
                keep,
                finished: None,
            },
        );
    }

    /// A key recovered from a task store whose task finished before the
    /// restart and that holds `left` more from `now`.
    pub(super) fn recovered_window(
        &mut self,
        key: String,
        task: TaskId,
        now: Instant,
        left: Duration,
    ) {
        self.keys.insert(
            key,
            Entry {
                task,
                keep: left,
                finished: Some(now),
            },
        );
    }

    /// Task `task`, holding `key`, was answered at `now`: the key holds for
    /// its `unique_for`, or goes.
    pub(super) fn finished(&mut self, key: &str, task: TaskId, now: Instant) {
        let Some(e) = self.keys.get_mut(key) else {
            return;
        };
        if e.task != task {
            return;
        }
        if e.keep.is_zero() {
            self.keys.remove(key);
        } else {
            e.finished = Some(now);
        }
    }

    /// Takes out expired entries and those of tasks gone unanswered.
    pub(super) fn sweep(&mut self, now: Instant, live: impl Fn(TaskId) -> bool) {
        self.keys.retain(|_, e| match e.finished {
            None => live(e.task),
            Some(at) => now < at + e.keep,
        });
    }
}

impl Manager {
    /// The answer to a submit with unique key `key`: the id of the task
    /// that holds it, or a deny when the key is new and there is no room
    /// for it; `None` when the submit goes on as a new task.
    pub(super) fn duplicate(
        &mut self,
        key: &str,
        msg: &SubmitTask,
    ) -> Option<Result<TaskId, Rejection>> {
        let now = Instant::now();
        let (tasks, journal) = (&self.tasks, &self.journal);
        let live = |id| tasks.get(id).is_some() || journal.holds(id);
        let found = self.uniques.find(key, now, live);
        let id = match found {
            Found::Live(id) | Found::Finished(id) => id,
            Found::Free => {
                let retry_after = self.uniques.room(now, live).err()?;
                static FULL: RateLimit = RateLimit::new(WARN_WINDOW);
                crate::log_limited!(
                    FULL,
                    log::Level::Warn,
                    "unique keys full ({} held): submits with a new key denied",
                    self.uniques.len()
                );
                return Some(Err(Rejection::Denied {
                    reason: UNIQUE_FULL.to_string(),
                    retry_after: retry_after
                        .clamp(Duration::from_millis(10), Duration::from_secs(60)),
                }));
            }
        };
        log::debug!(
            "submit with unique key {} answered with task {id}, which holds it",
            escaped(key).max_chars(100)
        );
        if msg.detach {
            return Some(Ok(id));
        }
        let answer = |outcome| {
            msg.reply_to.do_send(TaskReply {
                request_id: msg.request_id,
                outcome,
            })
        };
        if let Found::Finished(id) = found {
            let outcome = match self.results.get(id, now) {
                Some(kept) => TaskOutcome::clone(kept),
                None => TaskOutcome::Failed(format!(
                    "task {id}, which holds this unique key, has finished; its outcome went to \
                     its own client"
                )),
            };
            answer(outcome);
            return Some(Ok(id));
        }
        if self.waiting >= MAX_RESULT_WAITERS {
            return Some(Err(Rejection::Denied {
                reason: format!(
                    "task {id} holds this unique key; {MAX_RESULT_WAITERS} waits are held \
                     already"
                ),
                retry_after: Duration::from_secs(1),
            }));
        }
        let (tx, rx) = oneshot::channel::<Arc<TaskOutcome>>();
        self.waiters.entry(id).or_default().push(Waiter {
            session: msg.session,
            tx,
        });
        self.waiting += 1;
        let (to, request_id) = (msg.reply_to.clone(), msg.request_id);
        actix::spawn(async move {
            let outcome = match rx.await {
                Ok(outcome) => Arc::unwrap_or_clone(outcome),
                Err(_) => TaskOutcome::Failed(format!(
                    "task {id}, which holds this unique key, ended without an outcome (its \
                     client left)"
                )),
            };
            to.do_send(TaskReply {
                request_id,
                outcome,
            });
        });
        Some(Ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_while_live_then_for_its_window_and_stale_ones_go() {
        let now = Instant::now();
        let mut u = Uniques::new(2);
        let live = |id| id == 1;
        u.insert("a".into(), 1, Duration::from_secs(10));
        assert_eq!(u.find("a", now, live), Found::Live(1));
        u.finished("a", 1, now);
        assert_eq!(
            u.find("a", now + Duration::from_secs(9), |_| false),
            Found::Finished(1)
        );
        assert_eq!(
            u.find("a", now + Duration::from_secs(10), |_| false),
            Found::Free
        );
        assert_eq!(u.len(), 0);

        u.insert("b".into(), 2, Duration::ZERO);
        assert_eq!(
            u.find("b", now, live),
            Found::Free,
            "task 2 left unanswered"
        );
        u.insert("c".into(), 3, Duration::ZERO);
        u.finished("c", 4, now);
        assert_eq!(u.len(), 1, "another task's answer leaves the key");
        u.finished("c", 3, now);
        assert_eq!(u.len(), 0, "no window: the key goes with the answer");
    }

    #[test]
    fn bad_keys_and_windows_are_refused() {
        assert_eq!(unfit(None, None), None);
        assert_eq!(unfit(Some("k"), Some(600_000)), None);
        assert!(unfit(None, Some(1)).is_some());
        assert!(unfit(Some(""), None).is_some());
        assert!(unfit(Some(&"k".repeat(KEY_MAX + 1)), None).is_some());
        assert!(unfit(Some(&"k".repeat(KEY_MAX)), None).is_none());
        assert!(unfit(Some("k"), Some(31 * 24 * 3600 * 1000)).is_some());
    }

    #[test]
    fn a_full_map_is_swept_then_says_when_room_is_likely() {
        let now = Instant::now();
        let mut u = Uniques::new(2);
        u.insert("a".into(), 1, Duration::from_secs(5));
        u.insert("b".into(), 2, Duration::ZERO);
        assert_eq!(u.room(now, |id| id == 1), Ok(()), "b is stale");
        u.insert("b".into(), 2, Duration::ZERO);
        assert_eq!(u.room(now, |_| true), Err(Duration::from_secs(1)));
        u.finished("a", 1, now);
        assert_eq!(
            u.room(now + Duration::from_millis(400), |_| true),
            Err(Duration::from_millis(600)),
            "not swept again within the second"
        );
        assert_eq!(
            u.room(now + Duration::from_millis(4500), |_| true),
            Err(Duration::from_millis(500)),
            "swept again: a's window ends in 0.5 s"
        );
        assert_eq!(u.room(now + Duration::from_secs(5), |_| true), Ok(()));
    }
}
