//! The outcomes of finished detached tasks, kept in memory for `result`
//! requests by task id. Three bounds, each checked as an outcome is added
//! or looked up: an outcome expires `ttl` after its task finished; past
//! `max` outcomes, or past `max_bytes` of result values and error texts,
//! the oldest are evicted first. Expiry and eviction are logged at debug;
//! afterwards the id is unknown, as if never accepted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::IdMap;
use crate::messages::{TaskId, TaskOutcome};
use crate::protocol::codec;

/// Bytes counted for a kept outcome besides its value or error text.
const ENTRY_OVERHEAD: usize = 64;

/// Outcomes by task id, oldest first. See the module docs.
pub struct ResultStore {
    ttl: Duration,
    max: usize,
    max_bytes: usize,
    order: VecDeque<(TaskId, Instant)>,
    kept: IdMap<(Arc<TaskOutcome>, usize)>,
    bytes: usize,
    /// Ids let go since the last [`ResultStore::take_gone`], when tracked.
    gone: Option<Vec<TaskId>>,
}

impl ResultStore {
    /// An empty store with these bounds (`max` of 0 keeps nothing).
    pub fn new(ttl: Duration, max: usize, max_bytes: usize) -> ResultStore {
        ResultStore {
            ttl,
            max,
            max_bytes,
            order: VecDeque::new(),
            kept: IdMap::default(),
            bytes: 0,
            gone: None,
        }
    }

    /// How many outcomes are kept, and their bytes as counted against
    /// `max_bytes`.
    pub fn size(&self) -> (usize, usize) {
        (self.kept.len(), self.bytes)
    }

    /// From now on, remembers the ids of the outcomes it lets go (expired
    /// or evicted) until [`ResultStore::take_gone`]: a task store deletes
    /// their records.
    pub fn track_gone(&mut self) {
        self.gone = Some(Vec::new());
    }

    /// The ids let go since the last call (none unless tracked).
    pub fn take_gone(&mut self) -> Vec<TaskId> {
        self.gone.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Keeps `outcome` of task `id`, finished at `now`, then evicts the
    /// oldest outcomes past the bounds. An outcome larger than `max_bytes`
    /// on its own is kept as a failure that says so. Returns the outcome as
    /// kept, the one every reader of `id` is to get (even when the count
    /// bound evicts it at once).
    pub fn insert(
        &mut self,
        id: TaskId,
        outcome: Arc<TaskOutcome>,
        now: Instant,
    ) -> Arc<TaskOutcome> {
        self.expire(now);
        let mut size = outcome_size(&outcome);
        let outcome = if size > self.max_bytes {
            let error = format!(
                "result of {size} bytes not kept: larger than manager.result_max_bytes ({})",
                self.max_bytes
            );
            size = error.len() + ENTRY_OVERHEAD;
            Arc::new(TaskOutcome::Failed(error))
        } else {
            outcome
        };
        if let Some((_, old)) = self.kept.insert(id, (outcome.clone(), size)) {
            self.bytes -= old;
            self.order.retain(|(t, _)| *t != id);
        }
        self.bytes += size;
        self.order.push_back((id, now));
        while self.kept.len() > self.max || self.bytes > self.max_bytes {
            let Some(id) = self.pop_oldest() else {
                break;
            };
            log::debug!(
                "result of task {id} evicted: over manager.result_max ({}) or result_max_bytes ({})",
                self.max,
                self.max_bytes
            );
        }
        outcome
    }

    /// The outcome of task `id`, unless it expired by `now` or was evicted.
    pub fn get(&mut self, id: TaskId, now: Instant) -> Option<&Arc<TaskOutcome>> {
        self.expire(now);
        self.kept.get(&id).map(|(o, _)| o)
    }

    /// Drops the outcomes older than the ttl.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(id, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.ttl {
                break;
            }
            self.pop_oldest();
            log::debug!(
                "result of task {id} expired: kept for manager.result_ttl ({})",
                humantime::format_duration(self.ttl)
            );
        }
    }

    fn pop_oldest(&mut self) -> Option<TaskId> {
        let (id, _) = self.order.pop_front()?;
        if let Some((_, size)) = self.kept.remove(&id) {
            self.bytes -= size;
        }
        if let Some(gone) = self.gone.as_mut() {
            gone.push(id);
        }
        Some(id)
    }
}

fn outcome_size(outcome: &TaskOutcome) -> usize {
    ENTRY_OVERHEAD
        + match outcome {
            TaskOutcome::Done(v) => codec::encoded_len(v),
            TaskOutcome::Failed(e) => e.len(),
        }
}
