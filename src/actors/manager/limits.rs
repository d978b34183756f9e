//! Limits per task name: the `[limits.NAME]` tables of the manager's config
//! file. `max_running`: at most that many slots run NAME at once (its
//! other tasks wait in the queue, and tasks of other names pass them);
//! `max_queued`: at most that many tasks of NAME wait in the queue (past it
//! a submit is denied like one to a full queue); `rate` (`"20/s"`,
//! `"5/min"`, `"100/h"`) with `burst` (default 1): a token bucket, and a
//! submit that finds no token is denied `rate limited` with a
//! `retry_after` of the time until its next token.
//!
//! Running counts are held by the runs themselves ([`Held`], in the run
//! map): a run of a limited name holds one count until it is dropped, so
//! every way a run ends (finished, refused, its worker lost) gives it back
//! without bookkeeping of its own. Queued counts are kept by the task
//! table ([`super::tasks`]), for the names with a `max_queued` only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::messages::Rejection;
use crate::protocol::TaskLimitStatus;

/// The deny reason of a submit over its name's rate.
pub const RATE_LIMITED: &str = "rate limited";

/// Most `[limits.NAME]` tables.
pub const MAX_LIMITS: usize = 1000;

/// One `[limits.NAME]` table as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitEntry {
    /// Most runs of the name at once.
    pub max_running: Option<u32>,
    /// Most tasks of the name waiting in the queue.
    pub max_queued: Option<u32>,
    /// Most submits accepted per unit of time: `"N/s"`, `"N/min"`, `"N/h"`.
    pub rate: Option<String>,
    /// Submits a full bucket takes at once [default: 1].
    pub burst: Option<u32>,
}

/// A checked limit.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLimit {
    /// Most runs at once.
    pub max_running: Option<u32>,
    /// Most queued.
    pub max_queued: Option<u32>,
    /// Time between two tokens, and the bucket's size.
    pub rate: Option<(Duration, u32)>,
    /// The rate as written, for status.
    pub rate_text: Option<String>,
}

impl TaskLimit {
    /// Checks the table of task `name`; the error is one line naming it.
    pub fn from_entry(name: &str, e: &LimitEntry) -> Result<TaskLimit, String> {
        let named = |what: String| format!("limits.{name}: {what}");
        if e.max_running == Some(0) {
            return Err(named("max_running must be at least 1".into()));
        }
        if e.burst == Some(0) {
            return Err(named("burst must be at least 1".into()));
        }
        if e.burst.is_some() && e.rate.is_none() {
            return Err(named("burst goes with rate".into()));
        }
        let rate = match &e.rate {
            Some(text) => Some((parse_rate(text).map_err(named)?, e.burst.unwrap_or(1))),
            None => None,
        };
        if e.max_running.is_none() && e.max_queued.is_none() && rate.is_none() {
            return Err(named("set max_running, max_queued or rate".into()));
        }
        Ok(TaskLimit {
            max_running: e.max_running,
            max_queued: e.max_queued,
            rate,
            rate_text: e.rate.clone(),
        })
    }
}

/// `"N/s"`, `"N/min"`, `"N/h"` as the time between two tokens.
fn parse_rate(text: &str) -> Result<Duration, String> {
    let bad = || format!("rate {text:?} is not N/s, N/min or N/h (e.g. \"20/s\")");
    let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let unit = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if n == 0 || n > 1_000_000 {
        return Err(format!("rate {text:?}: N must be 1 to 1000000"));
    }
    Ok(unit / n)
}

/// Checks every table.
pub fn check_limits(
    tables: &std::collections::BTreeMap<String, LimitEntry>,
) -> Result<HashMap<String, TaskLimit>, String> {
    if tables.len() > MAX_LIMITS {
        return Err(format!("at most {MAX_LIMITS} [limits.NAME] tables"));
    }
    tables
        .iter()
        .map(|(name, e)| Ok((name.clone(), TaskLimit::from_entry(name, e)?)))
        .collect()
}

/// One running count a run holds; dropping it gives the count back.
#[derive(Debug)]
pub struct Held(Arc<AtomicU32>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct NameLimit {
    limit: TaskLimit,
    running: Arc<AtomicU32>,
    /// Tokens in the bucket, and when it was last filled.
    bucket: (f64, Instant),
    rate_limited: u64,
}

/// Every name's limit. See the module docs.
#[derive(Default)]
pub(super) struct Limits {
    by_name: HashMap<String, NameLimit>,
}

impl Limits {
    pub(super) fn new(limits: HashMap<String, TaskLimit>) -> Limits {
        let now = Instant::now();
        Limits {
            by_name: limits
                .into_iter()
                .map(|(name, limit)| {
                    let full = limit.rate.map_or(0.0, |(_, burst)| f64::from(burst));
                    let l = NameLimit {
                        limit,
                        running: Arc::default(),
                        bucket: (full, now),
                        rate_limited: 0,
                    };
                    (name, l)
                })
                .collect(),
        }
    }

    /// Whether no name has a limit (then nothing here costs anything).
    pub(super) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The names with a `max_queued`, whose queued tasks the table counts.
    pub(super) fn counted_names(&self) -> Vec<String> {
        self.by_name
            .iter()
            .filter(|(_, l)| l.limit.max_queued.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Why a submit of `name` is denied now, with `queued` of its tasks
    /// waiting, if it is; takes a token when it is not.
    pub(super) fn admit(&mut self, name: &str, queued: usize, now: Instant) -> Option<Rejection> {
        let l = self.by_name.get_mut(name)?;
        if let Some(max) = l.limit.max_queued {
            if queued >= max as usize {
                return Some(Rejection::Denied {
                    reason: format!("queue full for task {name} (max_queued {max})"),
                    retry_after: Duration::from_secs(1),
                });
            }
        }
        let (every, burst) = l.limit.rate?;
        let (tokens, since) = l.bucket;
        let every_s = every.as_secs_f64();
        let filled = (tokens + now.saturating_duration_since(since).as_secs_f64() / every_s)
            .min(f64::from(burst));
        if filled >= 1.0 {
            l.bucket = (filled - 1.0, now);
            return None;
        }
        l.bucket = (filled, now);
        l.rate_limited += 1;
        Some(Rejection::Denied {
            reason: RATE_LIMITED.into(),
            retry_after: Duration::from_secs_f64((1.0 - filled) * every_s),
        })
    }

    /// Whether a run of `name` may start now.
    pub(super) fn may_start(&self, name: &str) -> bool {
        match self.by_name.get(name) {
            Some(l) => l
                .limit
                .max_running
                .is_none_or(|max| l.running.load(Ordering::Relaxed) < max),
            None => true,
        }
    }

    /// A running count for a run of `name` starting now, if it is limited.
    pub(super) fn hold(&self, name: &str) -> Option<Held> {
        let l = self.by_name.get(name)?;
        l.running.fetch_add(1, Ordering::Relaxed);
        Some(Held(Arc::clone(&l.running)))
    }

    /// Where each limited name stands, by name; `queued` counts a name's
    /// waiting tasks.
    pub(super) fn status(&self, queued: impl Fn(&str) -> usize) -> Vec<TaskLimitStatus> {
        let mut list: Vec<TaskLimitStatus> = self
            .by_name
            .iter()
            .map(|(name, l)| TaskLimitStatus {
                task: name.clone(),
                max_running: l.limit.max_running,
                running: l.running.load(Ordering::Relaxed),
                max_queued: l.limit.max_queued,
                queued: l.limit.max_queued.map(|_| queued(name) as u64),
                rate: l.limit.rate_text.clone(),
                rate_limited: l.rate_limited,
            })
            .collect();
        list.sort_by(|a, b| a.task.cmp(&b.task));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: &str, burst: Option<u32>) -> TaskLimit {
        TaskLimit::from_entry(
            "t",
            &LimitEntry {
                rate: Some(rate.into()),
                burst,
                ..LimitEntry::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn rates_read_as_the_time_between_tokens() {
        assert_eq!(parse_rate("20/s"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_rate("5/min"), Ok(Duration::from_secs(12)));
        assert_eq!(parse_rate("100/h"), Ok(Duration::from_secs(36)));
        for bad in ["20", "0/s", "x/s", "5/fortnight"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        let err = TaskLimit::from_entry("t", &LimitEntry::default()).unwrap_err();
        assert!(err.starts_with("limits.t: "), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_gives_a_token_per_interval_and_says_when_the_next_comes() {
        let mut limits = Limits::new(HashMap::from([("t".to_string(), limit("20/s", None))]));
        let t0 = Instant::now();
        assert!(limits.admit("t", 0, t0).is_none(), "a full bucket of one");
        match limits.admit("t", 0, t0 + Duration::from_millis(20)) {
            Some(Rejection::Denied {
                reason,
                retry_after,
            }) => {
                assert_eq!(reason, RATE_LIMITED);
                assert_eq!(retry_after, Duration::from_millis(30));
            }
            other => panic!("expected a deny, got {other:?}"),
        }
        assert!(limits
            .admit("t", 0, t0 + Duration::from_millis(50))
            .is_none());
        // 1 s later: 20 tokens would have come, but the bucket holds 1.
        let t1 = t0 + Duration::from_millis(1050);
        assert!(limits.admit("t", 0, t1).is_none());
        assert!(limits.admit("t", 0, t1).is_some());
        assert!(limits.admit("other", 0, t1).is_none(), "other names pass");
    }

    #[test]
    fn running_counts_go_back_when_the_run_is_dropped() {
        let l = TaskLimit::from_entry(
            "t",
            &LimitEntry {
                max_running: Some(1),
                ..LimitEntry::default()
            },
        )
        .unwrap();
        let limits = Limits::new(HashMap::from([("t".to_string(), l)]));
        assert!(limits.may_start("t"));
        let held = limits.hold("t");
        assert!(!limits.may_start("t"));
        assert!(limits.may_start("u"));
        drop(held);
        assert!(limits.may_start("t"));
    }
}
