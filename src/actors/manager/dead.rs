//! The dead list: tasks answered with their run's error after using their
//! retries (see [`super::retry`]), for `argon failed` to list, queue again
//! or purge.
//!
//! At most `dead_max` entries, the oldest evicted first (logged at debug).
//! Each keeps what the listing shows, with its arguments and error cut to a
//! bound, and the task as submitted when its arguments encode to at most
//! [`DEAD_RETRY_ARGS_MAX`] bytes: only those can be queued again. So the
//! list holds at most `dead_max` × that many bytes of arguments.
//!
//! Queued again ([`RetryDead`]), an entry becomes a new detached task with
//! a new id, admitted like any submit (a full queue stops the request; the
//! entries not reached stay listed), and leaves the list. With a task store
//! every entry is recorded, and so is its leaving: the list survives a
//! restart.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use futures_util::future::join_all;

use super::journal::{record_of, spec_of};
use super::store::DeadRecord;
use super::{Manager, Pending, ReplyTo};
use crate::messages::{
    DeadDone, DeadSelect, GetDeadList, PurgeDead, Rejection, RetryDead, TaskId, TaskSpec,
};
use crate::protocol::{codec, DeadList, DeadTask, Value, DEAD_ARGS_MAX, DEAD_ERROR_MAX};

/// Characters of JSON text kept as the preview of arguments too large for
/// a dead-list entry (`…` follows when the text is longer).
const ARGS_PREVIEW_CHARS: usize = 256;

/// Largest encoded arguments a dead-list entry keeps for a retry.
pub const DEAD_RETRY_ARGS_MAX: usize = 64 * 1024;

/// One entry.
struct Dead {
    /// What the listing shows.
    listed: DeadTask,
    /// The task as submitted, if its arguments were small enough to keep.
    spec: Option<TaskSpec>,
}

/// The dead list, oldest first. See the module docs.
pub(super) struct DeadStore {
    entries: VecDeque<Dead>,
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

    /// Adds an entry; returns the ids of those evicted past the bound
    /// (the new one itself when the list keeps none).
    fn push(&mut self, entry: Dead) -> Vec<TaskId> {
        let mut gone = Vec::new();
        if self.max == 0 {
            self.evicted += 1;
            gone.push(entry.listed.task_id);
            return gone;
        }
        while self.entries.len() >= self.max {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.evicted += 1;
            log::debug!(
                "dead list full ({} entries): evicted task {}, the oldest",
                self.max,
                old.listed.task_id
            );
            gone.push(old.listed.task_id);
        }
        self.entries.push_back(entry);
        gone
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
            let cost = codec::encoded_len(&e.listed);
            if used + cost > max_bytes {
                break;
            }
            used += cost;
            list.tasks.push(e.listed.clone());
        }
        list.truncated = list.tasks.len() < self.entries.len();
        while codec::encoded_len(&list) > max_bytes && list.tasks.pop().is_some() {
            list.truncated = true;
        }
        list
    }

    /// The ids of the entries `select` names, oldest first.
    fn selected(&self, select: &DeadSelect) -> Vec<TaskId> {
        self.entries
            .iter()
            .filter(|e| select.task_id.is_none_or(|id| e.listed.task_id == id))
            .filter(|e| select.task.as_ref().is_none_or(|t| e.listed.task == *t))
            .map(|e| e.listed.task_id)
            .collect()
    }

    /// Removes the entries of `ids` (each linear in the list's length; a
    /// request names at most the list's length of them, so purging all is
    /// one pass).
    fn remove(&mut self, ids: &[TaskId]) -> usize {
        let before = self.entries.len();
        if ids.len() == 1 {
            self.entries.retain(|e| e.listed.task_id != ids[0]);
        } else {
            let ids: std::collections::HashSet<TaskId> = ids.iter().copied().collect();
            self.entries.retain(|e| !ids.contains(&e.listed.task_id));
        }
        before - self.entries.len()
    }

    fn get(&self, id: TaskId) -> Option<&Dead> {
        self.entries.iter().find(|e| e.listed.task_id == id)
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
    /// Lists `task`, answered with `error` after its retries, as dead.
    pub(super) fn bury(&mut self, task: &Pending, error: &str) {
        let listed = dead_entry(task, error);
        let keep = codec::encoded_len(&task.spec.args) <= DEAD_RETRY_ARGS_MAX;
        let record = DeadRecord {
            entry: listed.clone(),
            task: keep.then(|| record_of(task)),
        };
        let spec = keep.then(|| TaskSpec {
            retries: task.spec.retries,
            ..task.spec.clone()
        });
        let id = task.id;
        let gone = self.dead.push(Dead { listed, spec });
        if !gone.contains(&id) {
            self.journal.dead(id, record);
        }
        for old in gone.into_iter().filter(|old| *old != id) {
            self.journal.unlist(old);
        }
    }

    /// Installs the dead list a store held, oldest first, evicting past
    /// the bound (which may have shrunk since).
    pub(super) fn restore_dead(&mut self, mut dead: Vec<(TaskId, DeadRecord)>) {
        dead.sort_by_key(|(id, r)| (r.entry.failed_at_ms, *id));
        for (id, r) in dead {
            let entry = Dead {
                listed: DeadTask {
                    task_id: id,
                    ..r.entry
                },
                spec: r.task.map(spec_of),
            };
            for old in self.dead.push(entry) {
                self.journal.unlist(old);
            }
        }
    }
}

impl Handler<GetDeadList> for Manager {
    type Result = MessageResult<GetDeadList>;

    fn handle(&mut self, msg: GetDeadList, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.dead.list(msg.limit, msg.max_bytes))
    }
}

impl Handler<RetryDead> for Manager {
    type Result = ResponseFuture<DeadDone>;

    fn handle(&mut self, msg: RetryDead, ctx: &mut Self::Context) -> Self::Result {
        let ids = self.dead.selected(&msg.select);
        let mut done = DeadDone::default();
        let mut commits = Vec::new();
        for &old in &ids {
            if done.retried.len() >= msg.limit {
                done.reason
                    .get_or_insert_with(|| format!("at most {} entries per request", msg.limit));
                break;
            }
            let Some(dead) = self.dead.get(old) else {
                continue;
            };
            let Some(spec) = dead.spec.clone() else {
                done.reason.get_or_insert_with(|| {
                    format!(
                        "task {old}: its arguments were larger than {DEAD_RETRY_ARGS_MAX} bytes \
                         and not kept; submit it again"
                    )
                });
                continue;
            };
            let admitted = self.admit(
                spec,
                msg.session,
                None,
                ReplyTo::Kept,
                Default::default(),
                ctx,
            );
            match admitted {
                Ok(new) => {
                    log::info!("dead task {old} queued again as task {new}");
                    self.dead.remove(&[old]);
                    self.journal.unlist(old);
                    commits.extend(self.journal.accept_commit());
                    done.retried.push((old, new));
                }
                Err(why) => {
                    done.denied = matches!(why, Rejection::Denied { .. });
                    done.reason = Some(format!("task {old}: {why}"));
                    break;
                }
            }
        }
        if msg.select.task_id.is_some() && ids.is_empty() {
            done.reason = Some("not in the dead list".into());
        }
        done.left = self.dead.selected(&msg.select).len() as u64;
        Box::pin(async move {
            // With a task store the answer waits for the new tasks'
            // acceptances to be committed, as a submit's does.
            for result in join_all(commits).await {
                if let Err(why) = result {
                    done.reason.get_or_insert_with(|| why.to_string());
                }
            }
            done
        })
    }
}

impl Handler<PurgeDead> for Manager {
    type Result = MessageResult<PurgeDead>;

    fn handle(&mut self, msg: PurgeDead, _: &mut Self::Context) -> Self::Result {
        let ids = self.dead.selected(&msg.select);
        let purged = self.dead.remove(&ids) as u64;
        for &id in &ids {
            self.journal.unlist(id);
        }
        if purged > 0 {
            log::info!("dead list: {purged} entries purged");
        }
        let reason = (msg.select.task_id.is_some() && purged == 0)
            .then(|| "not in the dead list".to_string());
        MessageResult(DeadDone {
            purged,
            reason,
            ..DeadDone::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(task_id: u64, task: &str, error: &str) -> Dead {
        Dead {
            listed: DeadTask {
                task_id,
                task: task.into(),
                args: Value::Nil,
                args_truncated: false,
                retries: 1,
                error: error.into(),
                failed_at_ms: 0,
            },
            spec: None,
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
            dead.push(entry(id, "t", &"e".repeat(100)));
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

    #[test]
    fn past_the_bound_the_oldest_go_and_are_named() {
        let mut dead = DeadStore::new(2);
        assert!(dead.push(entry(1, "a", "e")).is_empty());
        assert!(dead.push(entry(2, "b", "e")).is_empty());
        assert_eq!(dead.push(entry(3, "a", "e")), vec![1]);
        assert_eq!(dead.list(10, 1 << 20).evicted, 1);
        let mut none = DeadStore::new(0);
        assert_eq!(none.push(entry(7, "a", "e")), vec![7]);
    }

    #[test]
    fn a_selection_is_by_id_or_by_name_oldest_first() {
        let mut dead = DeadStore::new(10);
        for (id, name) in [(1, "a"), (2, "b"), (3, "a")] {
            dead.push(entry(id, name, "e"));
        }
        let by = |dead: &DeadStore, task_id: Option<u64>, task: Option<&str>| {
            dead.selected(&DeadSelect {
                task_id,
                task: task.map(String::from),
            })
        };
        assert_eq!(by(&dead, None, None), vec![1, 2, 3]);
        assert_eq!(by(&dead, None, Some("a")), vec![1, 3]);
        assert_eq!(by(&dead, Some(2), None), vec![2]);
        assert_eq!(by(&dead, Some(2), Some("a")), Vec::<u64>::new());
        assert_eq!(by(&dead, Some(9), None), Vec::<u64>::new());
        assert_eq!(dead.remove(&[1, 3]), 2);
        assert_eq!(by(&dead, None, None), vec![2]);
    }
}
