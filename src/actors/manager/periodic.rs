//! Periodic tasks: the `[[schedule]]` entries of the manager's config file,
//! each a task the manager submits itself at an interval (`every`) or at
//! the times of a cron expression (`cron`, in UTC or a named `timezone`).
//!
//! A due entry is admitted like any submit ([`Manager::admit`]), as a
//! detached task whose outcome is kept by id. A denied run (a full queue,
//! no capacity yet after a start) is tried again after the deny's
//! `retry_after`, until the entry's next due time, which supersedes it: an
//! entry never has more than one run waiting, so nothing piles up. With `overlap =
//! "skip"` (the default) an entry whose previous task is still held by the
//! manager (queued, running, waiting for a retry) is skipped. One timer
//! serves every entry, set for the earliest due time.
//!
//! With a task store each run's time is recorded (`Record::Fired`), so a
//! restarted manager knows whether a due time passed while it was down:
//! `catch_up = "one"` (the default) runs the entry once at start, `"none"`
//! waits for the next time. An `every` entry keeps its rhythm across a
//! restart (due one interval after its last run). Without a store a start
//! is a fresh start: the first run comes one interval (or the first cron
//! time) after it.
//!
//! Due times are kept both as wall-clock milliseconds (for display, the
//! cron arithmetic and the store) and as the timer's [`Instant`]; the next
//! instant is the last one plus the wall-clock step, so the rhythm does not
//! drift with the time the firing itself takes.

use std::str::FromStr;
use std::time::Duration;

use actix::prelude::*;
use jiff_cron::jiff::{tz::TimeZone, Timestamp};
use serde::Deserialize;
use tokio::time::Instant;

use super::due_timer::DueTimer;
use super::journal::now_ms;
use super::{Manager, ReplyTo};
use crate::duration::Dur;
use crate::logsafe::{RateLimit, WARN_WINDOW};
use crate::messages::{GetSchedules, Rejection, SessionId, TaskId, TaskSpec};
use crate::protocol::{Priority, ScheduleInfo};

/// One `[[schedule]]` entry of the manager's config file as written;
/// [`PeriodicSpec::from_entry`] checks it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// Its name in logs and `argon schedules` [default: the task's name].
    pub name: Option<String>,
    /// The task to submit.
    pub task: String,
    /// Its arguments [default: none (nil)].
    pub args: Option<serde_json::Value>,
    /// `high`, `normal` or `low` [default: normal].
    pub priority: Option<crate::protocol::Priority>,
    /// Submit it at this interval, e.g. `"30s"`.
    pub every: Option<Dur>,
    /// Or at the times of this cron expression: five fields (minute hour
    /// day-of-month month day-of-week), or six with seconds first.
    pub cron: Option<String>,
    /// The time zone `cron` is read in, e.g. `"Europe/Berlin"` [default: UTC].
    pub timezone: Option<String>,
    /// `skip` (the default): not while the previous run is queued or
    /// running; `allow`: regardless.
    pub overlap: Option<String>,
    /// After the manager was down over a due time: `one` run at once (the
    /// default), or `none`. Needs `--persist` to know it was down.
    pub catch_up: Option<String>,
    /// Deadline of each run.
    pub timeout: Option<Dur>,
    /// Retries of each run after a failure [default: the manager's].
    pub retries: Option<u32>,
}

/// Most `[[schedule]]` entries a config may hold.
pub const MAX_SCHEDULES: usize = 1000;

/// Shortest `every`.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// When an entry is due.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// At this interval.
    Every(Duration),
    /// At the times of a cron expression, in a time zone.
    Cron {
        /// The parsed expression.
        schedule: Box<jiff_cron::Schedule>,
        /// The zone it is read in.
        zone: TimeZone,
        /// The expression as written.
        source: String,
        /// The zone's name as written.
        zone_name: String,
    },
}

/// What an entry does while its previous task is still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Skip this run.
    Skip,
    /// Run anyway.
    Allow,
}

/// What an entry does after the manager was down over a due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Run once at start.
    One,
    /// Wait for the next due time.
    Skip,
}

/// A checked `[[schedule]]` entry.
#[derive(Debug, Clone)]
pub struct PeriodicSpec {
    /// Its name (unique among the entries).
    pub name: String,
    /// The task it submits.
    pub task: TaskSpec,
    /// When.
    pub cadence: Cadence,
    /// While the previous run is held.
    pub overlap: Overlap,
    /// After downtime.
    pub catch_up: CatchUp,
}

impl PeriodicSpec {
    /// Checks entry number `index` (from 1) of the config file; the error
    /// is one line naming the entry.
    pub fn from_entry(entry: &ScheduleEntry, index: usize) -> Result<PeriodicSpec, String> {
        let name = entry.name.clone().unwrap_or_else(|| entry.task.clone());
        let named = |what: String| format!("schedule {index} ({name:?}): {what}");
        if entry.task.is_empty() {
            return Err(named("task must not be empty".into()));
        }
        let cadence = match (&entry.every, &entry.cron) {
            (Some(_), Some(_)) => return Err(named("give either every or cron, not both".into())),
            (None, None) => return Err(named("give every (e.g. \"30s\") or cron".into())),
            (Some(every), None) => {
                if every.0 < MIN_EVERY {
                    return Err(named(format!(
                        "every must be at least {}",
                        humantime::format_duration(MIN_EVERY)
                    )));
                }
                if entry.timezone.is_some() {
                    return Err(named("timezone goes with cron, not every".into()));
                }
                Cadence::Every(every.0)
            }
            (None, Some(source)) => {
                let zone_name = entry.timezone.clone().unwrap_or_else(|| "UTC".into());
                let zone = TimeZone::get(&zone_name)
                    .map_err(|e| named(format!("unknown timezone {zone_name:?}: {e}")))?;
                let schedule = parse_cron(source).map_err(|e| named(e.to_string()))?;
                let cadence = Cadence::Cron {
                    schedule: Box::new(schedule),
                    zone,
                    source: source.clone(),
                    zone_name,
                };
                if next_after(&cadence, now_ms()).is_none() {
                    return Err(named(format!("cron {source:?} never comes due")));
                }
                cadence
            }
        };
        let overlap = match entry.overlap.as_deref() {
            None | Some("skip") => Overlap::Skip,
            Some("allow") => Overlap::Allow,
            Some(other) => {
                return Err(named(format!(
                    "overlap is \"skip\" or \"allow\", not {other:?}"
                )))
            }
        };
        let catch_up = match entry.catch_up.as_deref() {
            None | Some("one") => CatchUp::One,
            Some("none") => CatchUp::Skip,
            Some(other) => {
                return Err(named(format!(
                    "catch_up is \"one\" or \"none\", not {other:?}"
                )))
            }
        };
        if entry.timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(named("timeout must be more than 0".into()));
        }
        if let Some(r) = entry.retries.filter(|r| *r > super::retry::MAX_RETRIES) {
            return Err(named(format!(
                "retries must be at most {} (got {r})",
                super::retry::MAX_RETRIES
            )));
        }
        let args = entry
            .args
            .clone()
            .map_or(crate::protocol::Value::Nil, crate::json::to_value);
        let task = TaskSpec {
            priority: entry.priority.unwrap_or(Priority::Normal),
            timeout: entry.timeout.map(|t| t.0),
            attempts: 0,
            retries: entry.retries,
            ..TaskSpec::new(entry.task.clone(), args)
        };
        Ok(PeriodicSpec {
            name,
            task,
            cadence,
            overlap,
            catch_up,
        })
    }

    /// How the cadence reads in `argon schedules`.
    fn cadence_text(&self) -> String {
        match &self.cadence {
            Cadence::Every(d) => format!("every {}", humantime::format_duration(*d)),
            Cadence::Cron {
                source, zone_name, ..
            } => format!("cron {source} ({zone_name})"),
        }
    }
}

/// Checks every entry and that their names differ.
pub fn check_entries(entries: &[ScheduleEntry]) -> Result<Vec<PeriodicSpec>, String> {
    if entries.len() > MAX_SCHEDULES {
        return Err(format!(
            "at most {MAX_SCHEDULES} [[schedule]] entries (got {})",
            entries.len()
        ));
    }
    let mut specs: Vec<PeriodicSpec> = Vec::with_capacity(entries.len());
    let mut names = std::collections::HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let spec = PeriodicSpec::from_entry(e, i + 1)?;
        if !names.insert(spec.name.clone()) {
            return Err(format!(
                "schedule {} ({:?}): another entry has that name (set name = \"...\")",
                i + 1,
                spec.name
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// A cron expression of five fields (minute first) or six or seven
/// (seconds first, a year last), or a shorthand such as `@daily`.
fn parse_cron(source: &str) -> Result<jiff_cron::Schedule, String> {
    let fields = source.split_whitespace().count();
    let text = if fields == 5 {
        format!("0 {source}")
    } else {
        source.to_string()
    };
    jiff_cron::Schedule::from_str(&text).map_err(|e| {
        // The parser's message quotes the expression with a caret under
        // the fault on lines of their own; its last line says what is wrong.
        let text = e.to_string();
        let reason = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.chars().all(|c| c == '^'))
            .unwrap_or("not a cron expression");
        format!("cron {source:?}: {reason}")
    })
}

/// The first due time of `cadence` after wall-clock `after_ms`.
fn next_after(cadence: &Cadence, after_ms: u64) -> Option<u64> {
    match cadence {
        Cadence::Every(d) => Some(after_ms.saturating_add(d.as_millis() as u64)),
        Cadence::Cron { schedule, zone, .. } => {
            let at = Timestamp::from_millisecond(i64::try_from(after_ms).ok()?).ok()?;
            let next = schedule.after(at.to_zoned(zone.clone())).next()?;
            u64::try_from(next.timestamp().as_millisecond()).ok()
        }
    }
}

/// An entry's first due time at a start at wall-clock `now_ms`, given its
/// last run (`last`, as a task store recorded it): `now_ms` itself when a
/// due time passed since and it catches up; `u64::MAX` for never.
fn first_due(spec: &PeriodicSpec, last: Option<u64>, now_ms: u64) -> u64 {
    let Some(next) = next_after(&spec.cadence, last.unwrap_or(now_ms)) else {
        return u64::MAX;
    };
    match (last.is_some() && next <= now_ms, spec.catch_up) {
        (true, CatchUp::One) => now_ms,
        (true, CatchUp::Skip) => next_after(&spec.cadence, now_ms).unwrap_or(u64::MAX),
        (false, _) => next,
    }
}

/// One entry and where it stands.
struct Entry {
    spec: PeriodicSpec,
    /// Next due time, wall clock.
    due_ms: u64,
    /// The same on the timer's clock.
    due: Instant,
    /// Its last run: when, and the task it submitted.
    last: Option<(u64, TaskId)>,
    /// What happened at its last due time.
    note: Option<String>,
    /// A denied run to try again: when, and the due time it is for.
    retry: Option<(Instant, u64)>,
    started: u64,
    skipped: u64,
}

/// Every entry, and the one timer. See the module docs.
pub(super) struct Periodic {
    entries: Vec<Entry>,
    /// The session the manager's own submits count as, for the queue's
    /// turns.
    session: SessionId,
    timer: DueTimer,
}

impl Periodic {
    /// The entries of `specs`, not yet timed ([`Manager::start_periodic`]).
    pub(super) fn new(specs: Vec<PeriodicSpec>) -> Periodic {
        let now = Instant::now();
        Periodic {
            entries: specs
                .into_iter()
                .map(|spec| Entry {
                    spec,
                    due_ms: u64::MAX,
                    due: now,
                    last: None,
                    note: None,
                    retry: None,
                    started: 0,
                    skipped: 0,
                })
                .collect(),
            session: super::client_session::fresh_session_id(),
            timer: DueTimer::default(),
        }
    }
}

/// The wall-clock step from `from_ms` to `to_ms`.
fn step(from_ms: u64, to_ms: u64) -> Duration {
    Duration::from_millis(to_ms.saturating_sub(from_ms))
}

impl Manager {
    /// Times every entry (once, when the actor starts, after recovery):
    /// `fired` holds the last run of each entry a task store recorded.
    pub(super) fn start_periodic(&mut self, fired: &[(String, u64)], ctx: &mut Context<Self>) {
        let (now, now_ms) = (Instant::now(), now_ms());
        for e in &mut self.periodic.entries {
            let last = fired
                .iter()
                .find(|(name, _)| *name == e.spec.name)
                .map(|(_, at)| *at);
            e.due_ms = first_due(&e.spec, last, now_ms);
            if last.is_some() && e.due_ms == now_ms {
                log::info!(
                    "schedule {:?}: came due while the manager was down; runs now",
                    e.spec.name
                );
            }
            e.due = now + step(now_ms, e.due_ms);
        }
        if !self.periodic.entries.is_empty() {
            log::info!("{} periodic task(s) scheduled", self.periodic.entries.len());
        }
        self.arm_periodic(ctx);
    }

    /// Sets the timer for the earliest due entry (or retry of a denied run).
    fn arm_periodic(&mut self, ctx: &mut Context<Self>) {
        let Some(first) = self
            .periodic
            .entries
            .iter()
            .flat_map(|e| {
                let due = (e.due_ms != u64::MAX).then_some(e.due);
                due.into_iter().chain(e.retry.map(|(at, _)| at))
            })
            .min()
        else {
            return;
        };
        self.periodic.timer.arm(
            first,
            ctx,
            |m| &mut m.periodic.timer,
            Manager::fire_periodic,
        );
    }

    /// Submits every entry that is due (or whose denied run is to be tried
    /// again), and times its next run.
    fn fire_periodic(&mut self, ctx: &mut Context<Self>) {
        if self.shutdown.is_some() {
            return;
        }
        let now = Instant::now();
        for i in 0..self.periodic.entries.len() {
            let e = &self.periodic.entries[i];
            let due = e.due <= now && e.due_ms != u64::MAX;
            let again = e.retry.filter(|(at, _)| *at <= now && !due);
            if !due && again.is_none() {
                continue;
            }
            // The due time this run is for: now's, or a denied one's.
            let at_ms = again.map_or(e.due_ms, |(_, at_ms)| at_ms);
            self.periodic.entries[i].retry = None;
            self.run_entry(i, at_ms, now, ctx);
            if due {
                self.step_entry(i, now);
            }
        }
        self.arm_periodic(ctx);
    }

    /// Submits entry `i`'s task for its due time `at_ms`, unless its
    /// previous task is still held and it skips then. A denied run is
    /// tried again after the deny's `retry_after` (a second for a task no
    /// worker provides: workers may still be registering after a start),
    /// until the entry's next due time, which supersedes it.
    fn run_entry(&mut self, i: usize, at_ms: u64, now: Instant, ctx: &mut Context<Self>) {
        let e = &self.periodic.entries[i];
        let held = e
            .last
            .map(|(_, id)| id)
            .filter(|id| self.tasks.get(*id).is_some());
        if let (Some(id), Overlap::Skip) = (held, e.spec.overlap) {
            log::debug!(
                "schedule {:?}: skipped, task {id} still queued or running",
                e.spec.name
            );
            let e = &mut self.periodic.entries[i];
            e.skipped += 1;
            e.note = Some(format!("skipped: task {id} still queued or running"));
            return;
        }
        let spec = e.spec.task.clone();
        let session = self.periodic.session;
        let admitted = self.admit(spec, session, None, ReplyTo::Kept, Default::default(), ctx);
        let e = &mut self.periodic.entries[i];
        match admitted {
            Ok(id) => {
                e.last = Some((at_ms, id));
                e.started += 1;
                e.note = Some(format!("started task {id}"));
                log::debug!("schedule {:?}: task {id}", e.spec.name);
                self.journal.fired(&e.spec.name, at_ms);
            }
            Err(why) => {
                let wait = match &why {
                    Rejection::Denied { retry_after, .. } => {
                        (*retry_after).clamp(Duration::from_millis(100), Duration::from_secs(60))
                    }
                    Rejection::Invalid(_) => Duration::from_secs(1),
                };
                let at = now + wait;
                if at < e.due || e.due <= now {
                    e.retry = Some((at, at_ms));
                    e.note = Some(format!("waiting: {why}"));
                } else {
                    e.skipped += 1;
                    e.note = Some(format!("not run: {why}"));
                }
                static NOT_RUN: RateLimit = RateLimit::new(WARN_WINDOW);
                crate::log_limited!(
                    NOT_RUN,
                    log::Level::Warn,
                    "schedule {:?}: not run yet: {why}",
                    e.spec.name
                );
            }
        }
    }

    /// Moves entry `i` (just due) to its next due time.
    fn step_entry(&mut self, i: usize, now: Instant) {
        let now_ms = now_ms();
        let e = &mut self.periodic.entries[i];
        let mut next = next_after(&e.spec.cadence, e.due_ms).unwrap_or(u64::MAX);
        let mut due = e.due + step(e.due_ms, next);
        if due <= now {
            // Late by more than a period (a stalled process): the next
            // time from now, not a burst of the missed ones.
            next = next_after(&e.spec.cadence, now_ms.max(e.due_ms)).unwrap_or(u64::MAX);
            due = now + step(now_ms, next);
        }
        (e.due_ms, e.due) = (next, due);
        // A retry of a denied run waits no later than the next due time.
        if e.retry.is_some_and(|(at, _)| at >= due) {
            e.skipped += 1;
            e.retry = None;
        }
    }
}

impl Handler<GetSchedules> for Manager {
    type Result = MessageResult<GetSchedules>;

    fn handle(&mut self, _: GetSchedules, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.periodic
                .entries
                .iter()
                .map(|e| ScheduleInfo {
                    name: e.spec.name.clone(),
                    task: e.spec.task.name.clone(),
                    cadence: e.spec.cadence_text(),
                    overlap: match e.spec.overlap {
                        Overlap::Skip => "skip".into(),
                        Overlap::Allow => "allow".into(),
                    },
                    next_ms: (e.due_ms != u64::MAX).then_some(e.due_ms),
                    last_ms: e.last.map(|(at, _)| at),
                    last_task_id: e.last.map(|(_, id)| id),
                    note: e.note.clone(),
                    started: e.started,
                    skipped: e.skipped,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(every: Option<&str>, cron: Option<&str>) -> ScheduleEntry {
        ScheduleEntry {
            name: Some("n".into()),
            task: "echo".into(),
            every: every.map(|e| Dur(humantime::parse_duration(e).unwrap())),
            cron: cron.map(String::from),
            ..ScheduleEntry::default()
        }
    }

    #[test]
    fn an_entry_names_itself_in_every_error() {
        for (e, says) in [
            (entry(None, None), "give every"),
            (entry(Some("1s"), Some("* * * * *")), "not both"),
            (entry(Some("10ms"), None), "at least 1s"),
            (entry(None, Some("61 * * * *")), "cron \"61 * * * *\""),
            (
                ScheduleEntry {
                    timezone: Some("Mars/Olympus".into()),
                    ..entry(None, Some("0 3 * * *"))
                },
                "unknown timezone",
            ),
            (
                ScheduleEntry {
                    overlap: Some("sometimes".into()),
                    ..entry(Some("1s"), None)
                },
                "overlap",
            ),
        ] {
            let err = PeriodicSpec::from_entry(&e, 3).unwrap_err();
            assert!(err.starts_with("schedule 3 (\"n\"): "), "{err}");
            assert!(err.contains(says), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let twice = vec![entry(Some("1s"), None), entry(Some("2s"), None)];
        assert!(check_entries(&twice).unwrap_err().contains("another entry"));
    }

    #[test]
    fn after_downtime_one_run_comes_at_once_or_none() {
        let mut spec = PeriodicSpec::from_entry(&entry(Some("10s"), None), 1).unwrap();
        let now = 100_000;
        assert_eq!(first_due(&spec, None, now), now + 10_000, "a fresh start");
        assert_eq!(
            first_due(&spec, Some(95_000), now),
            105_000,
            "the rhythm goes on"
        );
        assert_eq!(
            first_due(&spec, Some(50_000), now),
            now,
            "missed: one at once"
        );
        spec.catch_up = CatchUp::Skip;
        assert_eq!(
            first_due(&spec, Some(50_000), now),
            now + 10_000,
            "missed: none"
        );
    }

    #[test]
    fn every_steps_by_its_interval_and_cron_by_its_times() {
        let every = PeriodicSpec::from_entry(&entry(Some("30s"), None), 1).unwrap();
        assert_eq!(next_after(&every.cadence, 1_000), Some(31_000));

        // 2026-12-08T03:00:00Z; five fields: minute hour dom month dow.
        let t0 = 1_796_698_800_000;
        let five = PeriodicSpec::from_entry(&entry(None, Some("*/15 * * * *")), 1).unwrap();
        assert_eq!(next_after(&five.cadence, t0), Some(t0 + 15 * 60_000));
        let daily = ScheduleEntry {
            timezone: Some("Europe/Berlin".into()),
            ..entry(None, Some("0 0 4 * * *"))
        };
        let berlin = PeriodicSpec::from_entry(&daily, 1).unwrap();
        // 04:00 in Berlin in December is 03:00 UTC: the next is a day on.
        assert_eq!(next_after(&berlin.cadence, t0), Some(t0 + 86_400_000));
        assert_eq!(berlin.cadence_text(), "cron 0 0 4 * * * (Europe/Berlin)");
    }
}
