//! The manager's worker registry and routing decision, kept apart from the
//! actor so it can be tested and benchmarked on its own.
//!
//! A worker's capacity is held as credits: the numbers of the slots it
//! announced free and that have not been assigned since. Assigning takes a
//! credit (a slot number the assign names); only the worker's report that a
//! run finished in that slot gives it back. There is no other count.
//!
//! A task goes to the least-loaded worker that has a free slot and provides
//! the task, load = (tasks assigned + 1) × the worker's average task time.
//! For every task name, the workers that provide it and have an idle slot sit
//! in a `BTreeSet` ordered by load, so picking one is O(log n) and so is
//! updating a worker after an assignment or a result.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::messages::{SlotIndex, WorkerId};

pub use crate::task::EVAL_TASK;

/// A moving average of task time: the one kind the manager keeps, per
/// worker (for routing) and for the cluster (for `retry_after`, aging and
/// status). Only successful runs count: a failure's time says little about
/// how long the next task will take.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TaskTime(Option<f64>);

impl TaskTime {
    /// Weight of the newest sample.
    pub const WEIGHT: f64 = 0.1;

    /// Counts one run that took `took`.
    pub fn add(&mut self, took: Duration) {
        let sample = took.as_secs_f64() * 1e6;
        self.0 = Some(match self.0 {
            Some(avg) => avg + (sample - avg) * Self::WEIGHT,
            None => sample,
        });
    }

    /// The average in microseconds, once a run has counted.
    pub fn micros(&self) -> Option<f64> {
        self.0
    }
}

/// What the manager knows about one worker.
#[derive(Debug, Clone)]
pub struct WorkerState {
    /// Manager-assigned id.
    pub id: WorkerId,
    /// Peer address.
    pub address: String,
    /// Slots it announced.
    pub capacity: u32,
    /// Its free slots: the credits the manager holds for it.
    free: Vec<SlotIndex>,
    /// Task names it provides.
    pub tasks: Vec<String>,
    /// Whether it accepts eval scripts.
    pub eval: bool,
    /// Draining workers get nothing new.
    pub draining: bool,
    /// Its link holds as much as the manager sends it: it gets nothing new
    /// until the link has room (its free slots do not count as idle).
    pub congested: bool,
    /// Moving average of its task time.
    pub avg: TaskTime,
    load_key: Option<u64>,
}

impl WorkerState {
    /// Whether it can take one more task now.
    pub fn has_idle_slot(&self) -> bool {
        self.takes() && !self.free.is_empty()
    }

    /// Whether its free slots count as idle: it is neither draining nor
    /// congested.
    fn takes(&self) -> bool {
        !self.draining && !self.congested
    }

    /// Slots busy with runs (assigned and not yet reported finished).
    pub fn busy(&self) -> u32 {
        self.capacity - self.free.len() as u32
    }

    /// Its free slots, in no particular order.
    pub fn free_slots(&self) -> &[SlotIndex] {
        &self.free
    }

    fn load(&self) -> u64 {
        (f64::from(self.busy() + 1) * self.avg.micros().unwrap_or(1.0).max(1.0)) as u64
    }

    /// The names it is picked for: its tasks, and [`EVAL_TASK`] if it
    /// allows eval.
    pub fn routing_names(&self) -> impl Iterator<Item = &str> {
        self.tasks
            .iter()
            .map(String::as_str)
            .chain(self.eval.then_some(EVAL_TASK))
    }
}

/// Registry of workers plus the per-task routing index.
#[derive(Debug, Default)]
pub struct Scheduler {
    workers: HashMap<WorkerId, WorkerState>,
    ready: HashMap<String, BTreeSet<(u64, WorkerId)>>,
    providers: HashMap<String, u32>,
    capacity: u64,
    idle: u64,
    next_id: WorkerId,
}

impl Scheduler {
    /// An empty registry.
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// Registers a worker whose slots `busy` are taken (by runs from before
    /// it registered) and returns its id. Every other slot below `capacity`
    /// is a credit.
    pub fn add(
        &mut self,
        address: String,
        capacity: u32,
        tasks: Vec<String>,
        eval: bool,
        busy: &[SlotIndex],
    ) -> WorkerId {
        self.next_id += 1;
        let id = self.next_id;
        // Popped from the end: the lowest slot number goes first.
        let free: Vec<SlotIndex> = (0..capacity).rev().filter(|s| !busy.contains(s)).collect();
        let w = WorkerState {
            id,
            address,
            capacity,
            free,
            tasks,
            eval,
            draining: false,
            congested: false,
            avg: TaskTime::default(),
            load_key: None,
        };
        for name in w.routing_names() {
            *self.providers.entry(name.to_string()).or_default() += 1;
        }
        self.capacity += u64::from(capacity);
        self.idle += w.free.len() as u64;
        self.workers.insert(id, w);
        self.reindex(id);
        id
    }

    /// Forgets a worker; returns what was known of it.
    pub fn remove(&mut self, id: WorkerId) -> Option<WorkerState> {
        self.unindex(id);
        let w = self.workers.remove(&id)?;
        if !w.draining {
            self.withdraw(&w);
        }
        Some(w)
    }

    /// Marks a worker as draining: it keeps its tasks in flight but gets no
    /// new ones, and no longer counts towards capacity.
    pub fn drain(&mut self, id: WorkerId) {
        self.unindex(id);
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if w.draining {
            return;
        }
        w.draining = true;
        let w = w.clone();
        self.withdraw(&w);
    }

    fn withdraw(&mut self, w: &WorkerState) {
        for name in w.routing_names() {
            if let Some(n) = self.providers.get_mut(name) {
                *n -= 1;
                if *n == 0 {
                    self.providers.remove(name);
                }
            }
        }
        self.capacity -= u64::from(w.capacity);
        if !w.congested {
            self.idle -= w.free.len() as u64;
        }
    }

    /// Marks a worker's link as congested (or not any more): see
    /// [`WorkerState::congested`].
    pub fn set_congested(&mut self, id: WorkerId, congested: bool) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if w.congested == congested {
            return;
        }
        w.congested = congested;
        if !w.draining {
            let free = w.free.len() as u64;
            if congested {
                self.idle -= free;
            } else {
                self.idle += free;
            }
        }
        self.reindex(id);
    }

    /// The least-loaded worker with an idle slot that provides `task`.
    pub fn pick(&self, task: &str) -> Option<WorkerId> {
        self.ready.get(task)?.first().map(|&(_, id)| id)
    }

    /// Takes one of `id`'s credits: the slot a new run goes to. `None` if
    /// it has none (or is unknown).
    pub fn assign(&mut self, id: WorkerId) -> Option<SlotIndex> {
        let w = self.workers.get_mut(&id)?;
        let slot = w.free.pop()?;
        if w.takes() {
            self.idle -= 1;
        }
        self.reindex(id);
        Some(slot)
    }

    /// Gives back `id`'s credit for `slot`, whose run ended, with the run's
    /// duration when it counts towards the average.
    pub fn release(&mut self, id: WorkerId, slot: SlotIndex, took: Option<Duration>) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if slot >= w.capacity || w.free.contains(&slot) {
            log::warn!("worker {id}: slot {slot} released twice or out of range; ignored");
            return;
        }
        w.free.push(slot);
        if w.takes() {
            self.idle += 1;
        }
        if let Some(t) = took {
            w.avg.add(t);
        }
        self.reindex(id);
    }

    /// Whether any registered, non-draining worker provides `task`.
    pub fn provides(&self, task: &str) -> bool {
        self.providers.contains_key(task)
    }

    /// Sum of the capacities of non-draining workers.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Idle slots on non-draining workers.
    pub fn idle_slots(&self) -> u64 {
        self.idle
    }

    /// Number of registered workers (draining ones included).
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether no worker is registered.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// One worker's state.
    pub fn get(&self, id: WorkerId) -> Option<&WorkerState> {
        self.workers.get(&id)
    }

    /// All workers, in id order.
    pub fn workers(&self) -> Vec<&WorkerState> {
        let mut v: Vec<_> = self.workers.values().collect();
        v.sort_by_key(|w| w.id);
        v
    }

    fn unindex(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let Some(key) = w.load_key.take() else {
            return;
        };
        let w = &self.workers[&id];
        for name in w.routing_names() {
            if let Some(set) = self.ready.get_mut(name) {
                set.remove(&(key, id));
            }
        }
    }

    fn reindex(&mut self, id: WorkerId) {
        self.unindex(id);
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if !w.has_idle_slot() {
            return;
        }
        let key = w.load();
        w.load_key = Some(key);
        let w = &self.workers[&id];
        for name in w.routing_names() {
            self.ready
                .entry(name.to_string())
                .or_default()
                .insert((key, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_only_workers_that_provide_the_task() {
        let mut s = Scheduler::new();
        let a = s.add("a".into(), 1, names(&["echo"]), false, &[]);
        let b = s.add("b".into(), 1, names(&["sleep"]), true, &[]);
        assert_eq!(s.pick("echo"), Some(a));
        assert_eq!(s.pick("sleep"), Some(b));
        assert_eq!(s.pick(EVAL_TASK), Some(b));
        assert_eq!(s.pick("nope"), None);
        assert!(!s.provides("nope"));
    }

    #[test]
    fn full_worker_is_not_picked_until_released() {
        let mut s = Scheduler::new();
        let a = s.add("a".into(), 1, names(&["echo"]), false, &[]);
        assert_eq!(s.assign(a), Some(0));
        assert_eq!(s.pick("echo"), None);
        assert_eq!(s.idle_slots(), 0);
        assert_eq!(s.assign(a), None, "no credit left");
        s.release(a, 0, Some(Duration::from_millis(1)));
        assert_eq!(s.pick("echo"), Some(a));
        assert_eq!(s.idle_slots(), 1);
    }

    #[test]
    fn least_loaded_wins_by_assigned_times_average_time() {
        let mut s = Scheduler::new();
        let slow = s.add("slow".into(), 4, names(&["t"]), false, &[]);
        let fast = s.add("fast".into(), 4, names(&["t"]), false, &[]);
        let slot = s.assign(slow).unwrap();
        s.release(slow, slot, Some(Duration::from_millis(100)));
        let slot = s.assign(fast).unwrap();
        s.release(fast, slot, Some(Duration::from_millis(10)));
        // fast: (0+1)*10ms beats slow: (0+1)*100ms, and still wins with
        // 3 tasks assigned: (3+1)*10ms < 100ms.
        for _ in 0..3 {
            assert_eq!(s.pick("t"), Some(fast));
            s.assign(fast);
        }
        assert_eq!(s.pick("t"), Some(fast));
        s.assign(fast);
        // fast is now full (4 slots): slow is the only choice.
        assert_eq!(s.pick("t"), Some(slow));
    }

    #[test]
    fn a_congested_worker_is_not_picked_and_its_free_slots_are_not_idle() {
        let mut s = Scheduler::new();
        let a = s.add("a".into(), 3, names(&["echo"]), false, &[]);
        let b = s.add("b".into(), 2, names(&["echo"]), false, &[]);
        assert_eq!(s.idle_slots(), 5);
        s.set_congested(a, true);
        assert_eq!((s.idle_slots(), s.capacity()), (2, 5));
        assert_eq!(s.pick("echo"), Some(b));
        let slot = s.assign(b).unwrap();
        s.assign(b).unwrap();
        assert_eq!((s.idle_slots(), s.pick("echo")), (0, None));
        s.release(b, slot, None);
        s.set_congested(a, false);
        assert_eq!(s.idle_slots(), 4);
        // Draining while congested, then removed: nothing counted twice.
        s.set_congested(a, true);
        s.drain(a);
        s.set_congested(a, false);
        assert_eq!((s.idle_slots(), s.capacity()), (1, 2));
        s.remove(a);
        assert_eq!((s.idle_slots(), s.capacity()), (1, 2));
    }

    #[test]
    fn draining_and_removal_shrink_capacity_at_once() {
        let mut s = Scheduler::new();
        let a = s.add("a".into(), 3, names(&["echo"]), false, &[]);
        let b = s.add("b".into(), 2, names(&["echo"]), false, &[]);
        assert_eq!(s.capacity(), 5);
        let slot = s.assign(a).unwrap();
        s.drain(a);
        assert_eq!(s.capacity(), 2);
        assert_eq!(s.idle_slots(), 2);
        assert_eq!(s.pick("echo"), Some(b));
        s.release(a, slot, None);
        assert_eq!(s.idle_slots(), 2);
        s.remove(b);
        assert_eq!(s.capacity(), 0);
        assert_eq!(s.idle_slots(), 0);
        assert!(!s.provides("echo"));
        s.remove(a);
        assert!(s.is_empty());
    }

    #[test]
    fn slots_busy_at_registration_are_not_credits_until_released() {
        let mut s = Scheduler::new();
        let a = s.add("a".into(), 3, names(&["echo"]), false, &[1]);
        assert_eq!(s.idle_slots(), 2);
        assert_eq!(s.get(a).unwrap().busy(), 1);
        let mut got = vec![s.assign(a).unwrap(), s.assign(a).unwrap()];
        got.sort_unstable();
        assert_eq!(got, vec![0, 2], "slot 1 is never handed out");
        assert_eq!(s.assign(a), None);
        s.release(a, 1, None);
        assert_eq!(s.assign(a), Some(1));
    }

    #[test]
    fn a_credit_released_twice_counts_once() {
        let mut s = Scheduler::new();
        let a = s.add("a".into(), 2, names(&["echo"]), false, &[]);
        let slot = s.assign(a).unwrap();
        s.release(a, slot, None);
        s.release(a, slot, None);
        s.release(a, 7, None);
        assert_eq!(s.idle_slots(), 2);
        assert_eq!(s.get(a).unwrap().free_slots().len(), 2);
    }
}
