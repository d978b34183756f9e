//! The grace for a task kind's providers: when the last worker providing a
//! task (or eval) is lost or starts draining, its queued tasks, and those
//! requeued from the lost worker's runs, are not failed at once. They wait
//! in a *window* for that kind, outside the queue and beyond its bound,
//! for `provider_grace` ([`PROVIDER_GRACE`], or [`PROVIDER_GRACE_STORED`]
//! with a task store). A worker that registers providing the kind within
//! the window gets them back at the head of their priorities, in their
//! order. When the window ends with no provider, they fail with
//! "no worker provides task X: waited D for one".
//!
//! While a window is open, a new submit of its kind is queued like any
//! task, within the queue bound (so with no worker at all it is denied "no
//! capacity"); so is a retry that falls due. Such tasks fail with the
//! window if no provider comes. Once the window is over, the old rule
//! applies: a submit is refused "no worker provides task X".
//!
//! A restarted manager with a task store is a manager whose providers were
//! all lost at once: the kinds of its recovered tasks get a window from the
//! start, and the recovered tasks wait in them like any others.
//!
//! Bound: at most [`MAX_WINDOWS`] windows at once (kinds without a
//! provider); a kind past it gets none and its tasks fail at once, as does
//! every kind with a grace of zero (logged at most once per warning
//! window). The tasks in windows are accepted work the manager already
//! held: their number is bounded by the queue bound plus the slots at the
//! time they came.
//!
//! One timer serves every window: it is set for the earliest end.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::due_timer::DueTimer;
use super::lifecycle::Event;
use super::tasks::At;
use super::Manager;
use crate::logsafe::{escaped, RateLimit, WARN_WINDOW};
use crate::messages::{TaskId, TaskOutcome, WorkerId};

/// How long tasks wait for a provider of their kind by default.
pub const PROVIDER_GRACE: Duration = Duration::from_secs(30);

/// The same with a task store (`--persist`).
pub const PROVIDER_GRACE_STORED: Duration = Duration::from_secs(120);

/// Most kinds waiting for a provider at once.
pub const MAX_WINDOWS: usize = 10_000;

/// Most kind names one log line shows.
const LOGGED_KINDS: usize = 5;

/// One kind's wait for a provider (its tasks are in the task table, in
/// their awaiting state).
struct Window {
    /// When its last provider went.
    since: Instant,
    until: Instant,
}

/// The windows of the kinds that lost their providers. See the module docs.
pub(super) struct Awaiting {
    grace: Duration,
    max: usize,
    windows: HashMap<String, Window>,
    ends: BTreeSet<(Instant, String)>,
    timer: DueTimer,
}

impl Awaiting {
    /// No window yet; each will last `grace`, and at most `max` are open.
    pub(super) fn new(grace: Duration, max: usize) -> Awaiting {
        Awaiting {
            grace,
            max,
            windows: HashMap::new(),
            ends: BTreeSet::new(),
            timer: DueTimer::default(),
        }
    }

    /// How long a window lasts.
    pub(super) fn grace(&self) -> Duration {
        self.grace
    }

    /// Whether `kind` is in its window: tasks of it are kept and accepted.
    pub(super) fn is_open(&self, kind: &str) -> bool {
        self.windows.contains_key(kind)
    }

    /// Opens a window for `kind` from `now` that lasts `grace`, unless one
    /// is open already. `false` if it cannot have one (a grace of zero, or
    /// [`MAX_WINDOWS`] open).
    fn open(&mut self, kind: &str, now: Instant, grace: Duration) -> bool {
        if self.windows.contains_key(kind) {
            return true;
        }
        if grace.is_zero() || self.windows.len() >= self.max {
            return false;
        }
        let until = now + grace;
        self.windows
            .insert(kind.to_string(), Window { since: now, until });
        self.ends.insert((until, kind.to_string()));
        true
    }

    /// Closes `kind`'s window: a provider is back.
    fn close(&mut self, kind: &str) -> Option<Window> {
        let w = self.windows.remove(kind)?;
        self.ends.remove(&(w.until, kind.to_string()));
        Some(w)
    }

    /// Closes the windows that end by `now`.
    fn ended(&mut self, now: Instant) -> Vec<(String, Window)> {
        let mut out = Vec::new();
        while let Some((until, _)) = self.ends.first() {
            if *until > now {
                break;
            }
            let (_, kind) = self.ends.pop_first().expect("an end");
            if let Some(w) = self.close(&kind) {
                out.push((kind, w));
            }
        }
        out
    }

    /// Closes every window (a shutdown).
    pub(super) fn close_all(&mut self) {
        self.ends.clear();
        self.windows.clear();
    }

    fn next_end(&self) -> Option<Instant> {
        self.ends.first().map(|(until, _)| *until)
    }
}

/// `kinds` as a log line shows them: a few names, escaped, and how many
/// more.
fn some_kinds<'a>(kinds: impl IntoIterator<Item = &'a String>) -> String {
    let mut shown = Vec::new();
    let mut more = 0;
    for k in kinds {
        if shown.len() < LOGGED_KINDS {
            shown.push(escaped(k).to_string());
        } else {
            more += 1;
        }
    }
    match more {
        0 => shown.join(", "),
        n => format!("{} and {n} more", shown.join(", ")),
    }
}

/// A wait as an error text shows it, to the millisecond.
fn waited(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

impl Manager {
    /// Kinds no worker provides any more (`kinds`, just lost with a worker
    /// that was lost or began draining; `open` says whether they get a
    /// window now): their queued tasks wait in their windows, or fail at
    /// once where there is none.
    pub(super) fn providers_lost(
        &mut self,
        kinds: HashSet<String>,
        open: bool,
        ctx: &mut Context<Self>,
    ) {
        if kinds.is_empty() {
            return;
        }
        if open && self.shutdown.is_none() {
            self.open_windows(&kinds, Instant::now(), self.awaiting.grace);
        }
        let held_before = self.tasks.awaiting();
        let failed = self.hold_orphans(&kinds);
        let held = self.tasks.awaiting() - held_before;
        if held + failed > 0 {
            log::info!(
                "no worker provides {} any more: {held} task(s) wait up to {} for one, \
                 {failed} failed",
                some_kinds(&kinds),
                humantime::format_duration(self.awaiting.grace)
            );
        }
        self.arm_provider_timer(ctx);
    }

    /// Opens a window lasting `grace` for each of `kinds`; one that cannot
    /// have one is logged.
    pub(super) fn open_windows(&mut self, kinds: &HashSet<String>, now: Instant, grace: Duration) {
        let refused: Vec<&String> = kinds
            .iter()
            .filter(|k| !self.awaiting.open(k, now, grace))
            .collect();
        if !refused.is_empty() && !grace.is_zero() {
            static FULL: RateLimit = RateLimit::new(WARN_WINDOW);
            crate::log_limited!(
                FULL,
                log::Level::Warn,
                "{} task kinds wait for a provider already: the queued tasks of {} fail at once",
                self.awaiting.max,
                some_kinds(refused)
            );
        }
    }

    /// Moves the queued tasks of `kinds` that no worker provides into their
    /// windows; those without one are answered at once. Returns how many
    /// were answered.
    pub(super) fn hold_orphans(&mut self, kinds: &HashSet<String>) -> usize {
        let orphans: Vec<TaskId> = self
            .tasks
            .queued_ids()
            .into_iter()
            .filter(|&id| {
                self.tasks.get(id).is_some_and(|e| {
                    kinds.contains(&e.task.spec.name) && !self.sched.provides(&e.task.spec.name)
                })
            })
            .collect();
        let mut failed = 0;
        for id in orphans {
            self.settle(id, At::Back);
            if self.tasks.get(id).is_none() {
                failed += 1;
            }
        }
        failed
    }

    /// A worker providing `kinds` registered: their windows close and their
    /// tasks go back to the head of their priorities, in their order (the
    /// kind that waited longest first).
    pub(super) fn providers_back<'a>(&mut self, kinds: impl Iterator<Item = &'a str>) {
        let mut back: Vec<(String, Window)> = kinds
            .filter_map(|k| self.awaiting.close(k).map(|w| (k.to_string(), w)))
            .collect();
        if back.is_empty() {
            return;
        }
        back.sort_by_key(|(_, w)| std::cmp::Reverse(w.since));
        let now = Instant::now();
        let mut n = 0;
        let mut longest = Duration::ZERO;
        for (kind, w) in &back {
            longest = longest.max(now.duration_since(w.since));
            // Each to the head of its level, the last first: their order
            // is kept.
            for id in self.tasks.awaiting_of(kind).into_iter().rev() {
                self.requeue_front(id, Event::ProviderBack);
                n += 1;
            }
        }
        let level = if n > 0 {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "a provider of {} is back: {n} task(s) that waited up to {} for one are queued again",
            some_kinds(back.iter().map(|(k, _)| k)),
            waited(longest)
        );
    }

    /// The kinds worker `worker` is picked for that no other worker taking
    /// tasks provides.
    pub(super) fn unprovided(&self, worker: WorkerId) -> HashSet<String> {
        self.sched.get(worker).map_or_else(HashSet::new, |w| {
            w.routing_names()
                .filter(|n| !self.sched.provides(n))
                .map(str::to_string)
                .collect()
        })
    }

    /// Whether a task of `kind` may be accepted (or requeued) now: a worker
    /// provides it, or its kind is in its window.
    pub(super) fn runnable(&self, kind: &str) -> bool {
        self.sched.provides(kind) || self.awaiting.is_open(kind)
    }

    /// Sets the one timer for the earliest window end, unless it is set for
    /// that time or earlier already.
    pub(super) fn arm_provider_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(end) = self.awaiting.next_end() else {
            return;
        };
        self.awaiting.timer.arm(
            end,
            ctx,
            |m| &mut m.awaiting.timer,
            Manager::provider_grace_over,
        );
    }

    /// Fails the tasks of the windows that ended without a provider: those
    /// waiting in them and those of their kinds accepted meanwhile.
    fn provider_grace_over(&mut self, ctx: &mut Context<Self>) {
        let ended = self.awaiting.ended(Instant::now());
        for (kind, w) in ended {
            let mut ids = self.tasks.awaiting_of(&kind);
            ids.extend(
                self.tasks
                    .queued_ids()
                    .into_iter()
                    .filter(|&id| self.tasks.get(id).is_some_and(|e| e.task.spec.name == kind)),
            );
            if !ids.is_empty() {
                log::warn!(
                    "no worker provided task {} within {}: {} task(s) failed",
                    escaped(&kind),
                    waited(w.until.saturating_duration_since(w.since)),
                    ids.len()
                );
            }
            // The wait each was given: from when it came (its kind's last
            // provider went, or it was accepted later) to the window's end.
            for id in ids {
                let Some(task) = self.tasks.leave(id, Event::GraceOver) else {
                    continue;
                };
                let from = w.since.max(task.accepted_at);
                let msg = format!(
                    "no worker provides task {kind}: waited {} for one",
                    waited(w.until.saturating_duration_since(from))
                );
                self.reply(task, TaskOutcome::Failed(msg));
            }
        }
        self.arm_provider_timer(ctx);
        self.check_drained();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_a_kind_gets_no_window_and_zero_grace_opens_none() {
        let now = Instant::now();
        let g = Duration::from_secs(1);
        let mut a = Awaiting::new(g, 2);
        assert!(a.open("x", now, g) && a.open("y", now, g));
        assert!(a.open("x", now, g), "an open window stays open");
        assert!(!a.open("z", now, g), "the third kind is past the bound");
        assert!(!a.is_open("z"));
        a.close("x");
        assert!(a.open("z", now, g), "a closed window makes room");
        assert!(!a.open("w", now, Duration::ZERO) && !a.is_open("w"));
    }

    #[test]
    fn windows_end_in_order_of_their_ends() {
        let now = Instant::now();
        let g = Duration::from_secs(10);
        let mut a = Awaiting::new(g, 10);
        a.open("x", now, g);
        a.open("y", now + Duration::from_secs(5), g);
        assert_eq!(a.next_end(), Some(now + Duration::from_secs(10)));
        assert!(a.ended(now + Duration::from_secs(9)).is_empty());
        let first: Vec<String> = a
            .ended(now + Duration::from_secs(10))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(first, vec!["x".to_string()]);
        assert_eq!(a.next_end(), Some(now + Duration::from_secs(15)));
        assert!(a.close("y").is_some());
        assert_eq!(a.next_end(), None);
    }
}
