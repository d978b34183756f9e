//! [`Kept`]: outcomes of runs that ended while the worker had no manager to
//! tell, held by the [`WorkerPool`](super::WorkerPool) for its next
//! registration, where they are handed over (docs/PROTOCOL.md §7.4).
//!
//! Bounded in count and in bytes (each outcome's MessagePack size as a
//! `register` entry): a run that ends past either bound pushes out the
//! oldest kept ones. The pool logs that (one warning per window, counting
//! what went) and tells the next manager how many went (`finished_dropped`).
//! A task whose run's outcome never reaches the manager is queued again
//! after its recovery grace, so a dropped outcome costs a second run, not
//! a failure.

use std::collections::VecDeque;

use crate::protocol::crypto::{COUNTER_LEN, TAG_LEN};
use crate::protocol::{codec, FinishedRun, FromWorker, Outcome};

/// Default of `worker.kept_outcomes_max`.
pub const DEFAULT_KEPT_MAX: usize = 1000;
/// Default of `worker.kept_outcomes_max_bytes`: 64 MiB.
pub const DEFAULT_KEPT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// How much a worker keeps while it has no manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepBounds {
    /// Most outcomes kept; 0 keeps none.
    pub max: usize,
    /// Most bytes of them (their `register` entries' encoded size).
    pub max_bytes: usize,
}

impl Default for KeepBounds {
    fn default() -> KeepBounds {
        KeepBounds {
            max: DEFAULT_KEPT_MAX,
            max_bytes: DEFAULT_KEPT_MAX_BYTES,
        }
    }
}

/// One kept outcome, with its size as a `register` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptRun {
    /// The run and its outcome.
    pub run: FinishedRun,
    /// Its encoded size in bytes.
    pub bytes: usize,
}

impl KeptRun {
    /// `outcome` of `run_id`, as it will travel. One whose `finished` would
    /// not fit a frame of `max_frame` bytes is kept as the failure a
    /// connection would have sent instead (`Outcome::too_large`).
    pub fn new(run_id: u64, outcome: Outcome, max_frame: usize) -> KeptRun {
        let finished = FromWorker::Finished { run_id, outcome };
        // The frame body's length, as the codec counts it.
        let len = codec::encoded_len(&finished) + COUNTER_LEN + TAG_LEN;
        let FromWorker::Finished { outcome, .. } = finished else {
            unreachable!("built as finished")
        };
        let outcome = if len > max_frame {
            Outcome::too_large(len, max_frame)
        } else {
            outcome
        };
        let run = FinishedRun { run_id, outcome };
        let bytes = codec::encoded_len(&run);
        KeptRun { run, bytes }
    }
}

/// The kept outcomes, oldest first. See the module docs.
#[derive(Debug, Default)]
pub struct Kept {
    bounds: KeepBounds,
    runs: VecDeque<KeptRun>,
    bytes: usize,
    /// Dropped since the last hand-over.
    dropped: u64,
}

impl Kept {
    /// An empty store within `bounds`.
    pub fn new(bounds: KeepBounds) -> Kept {
        Kept {
            bounds,
            ..Kept::default()
        }
    }

    /// Keeps `run` as the newest. Returns how many went to make room: the
    /// oldest first, `run` itself last if it alone passes the byte bound.
    pub fn push(&mut self, run: KeptRun) -> usize {
        self.bytes += run.bytes;
        self.runs.push_back(run);
        self.trim()
    }

    /// Puts back what [`Kept::take`] handed out and was not handed over
    /// (oldest first), ahead of what was kept since, with its dropped
    /// count. Returns how many went to stay within the bounds.
    pub fn put_back(&mut self, runs: VecDeque<KeptRun>, dropped: u64) -> usize {
        self.dropped += dropped;
        self.bytes += runs.iter().map(|r| r.bytes).sum::<usize>();
        let newer = std::mem::replace(&mut self.runs, runs);
        self.runs.extend(newer);
        self.trim()
    }

    /// Hands out everything kept, oldest first, and the dropped count;
    /// the store is then empty.
    pub fn take(&mut self) -> (VecDeque<KeptRun>, u64) {
        self.bytes = 0;
        (
            std::mem::take(&mut self.runs),
            std::mem::take(&mut self.dropped),
        )
    }

    /// Outcomes kept.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Their bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Dropped since the last hand-over.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The bounds.
    pub fn bounds(&self) -> KeepBounds {
        self.bounds
    }

    fn trim(&mut self) -> usize {
        let mut gone = 0;
        while self.runs.len() > self.bounds.max || self.bytes > self.bounds.max_bytes {
            let Some(old) = self.runs.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            gone += 1;
        }
        self.dropped += gone as u64;
        gone
    }
}

/// The runs of `kept` that go in a `register` whose other fields encode to
/// `base` bytes, for a frame of `max_frame`: the oldest, in order, as long
/// as the whole fits. The rest are sent as `finished` messages.
pub fn fitting(kept: &VecDeque<KeptRun>, base: usize, max_frame: usize) -> usize {
    // The `finished` key and the array's header: at most 9 + 5 bytes.
    const ENVELOPE: usize = 16;
    let mut room = codec::max_plaintext(max_frame).saturating_sub(base + ENVELOPE);
    let mut n = 0;
    for r in kept {
        if r.bytes > room {
            break;
        }
        room -= r.bytes;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Register, Value};

    fn run(id: u64, len: usize) -> KeptRun {
        let outcome = Outcome::Done {
            value: Value::from("x".repeat(len)),
        };
        KeptRun::new(id, outcome, crate::protocol::DEFAULT_MAX_FRAME)
    }

    fn ids(k: &mut Kept) -> Vec<u64> {
        let (runs, _) = k.take();
        runs.into_iter().map(|r| r.run.run_id).collect()
    }

    #[test]
    fn past_the_count_the_oldest_go_and_are_counted() {
        let mut k = Kept::new(KeepBounds {
            max: 2,
            max_bytes: usize::MAX,
        });
        assert_eq!(k.push(run(1, 1)), 0);
        assert_eq!(k.push(run(2, 1)), 0);
        assert_eq!(k.push(run(3, 1)), 1);
        assert_eq!((k.len(), k.dropped()), (2, 1));
        assert_eq!(ids(&mut k), vec![2, 3]);
        assert_eq!((k.len(), k.bytes(), k.dropped()), (0, 0, 0));
    }

    #[test]
    fn past_the_bytes_the_oldest_go_and_one_too_large_alone_goes_too() {
        let one = run(1, 100).bytes;
        let mut k = Kept::new(KeepBounds {
            max: 100,
            max_bytes: 2 * one,
        });
        k.push(run(1, 100));
        k.push(run(2, 100));
        assert_eq!(k.bytes(), 2 * one);
        assert_eq!(k.push(run(3, 100)), 1, "the oldest makes room");
        assert_eq!(k.push(run(4, 10_000)), 3, "alone over the bound: all go");
        assert_eq!((k.len(), k.bytes(), k.dropped()), (0, 0, 4));
    }

    #[test]
    fn what_is_put_back_goes_ahead_of_newer_runs_within_the_bounds() {
        let mut k = Kept::new(KeepBounds {
            max: 3,
            max_bytes: usize::MAX,
        });
        k.push(run(1, 1));
        k.push(run(2, 1));
        let (taken, dropped) = k.take();
        k.push(run(3, 1));
        k.push(run(4, 1));
        assert_eq!(k.put_back(taken, dropped + 5), 1);
        assert_eq!(k.dropped(), 6);
        assert_eq!(ids(&mut k), vec![2, 3, 4]);
    }

    #[test]
    fn a_result_too_large_for_a_frame_is_kept_as_that_failure() {
        let big = Outcome::Done {
            value: Value::Binary(vec![0; 2000]),
        };
        let kept = KeptRun::new(7, big, 1024);
        match &kept.run.outcome {
            Outcome::Failed { error } => {
                assert!(error.contains("exceeds the frame limit of 1024"), "{error}")
            }
            other => panic!("expected the failure, got {other:?}"),
        }
        assert_eq!(kept.bytes, codec::encoded_len(&kept.run));
    }

    #[test]
    fn a_result_at_the_depth_limit_decodes_in_a_register() {
        let deep = (0..crate::protocol::MAX_VALUE_DEPTH)
            .fold(Value::from(1), |inner, _| Value::Array(vec![inner]));
        let kept = KeptRun::new(7, Outcome::Done { value: deep }, 1 << 20);
        let msg = FromWorker::Register(Register {
            capacity: 1,
            tasks: vec!["deep".into()],
            eval: false,
            running: Vec::new(),
            max_frame: 0,
            finished: vec![kept.run.clone()],
            finished_dropped: 0,
        });
        let mut bytes = Vec::new();
        codec::encode_message(&msg, &mut bytes).unwrap();
        assert_eq!(codec::decode_message::<FromWorker>(&bytes).unwrap(), msg);
    }

    #[test]
    fn a_register_takes_the_oldest_runs_that_fit_its_frame() {
        let mut reg = Register {
            capacity: 4,
            tasks: vec!["echo".into()],
            eval: false,
            running: Vec::new(),
            max_frame: 4096,
            finished: Vec::new(),
            finished_dropped: u64::MAX,
        };
        let base = codec::encoded_len(&FromWorker::Register(reg.clone()));
        let kept: VecDeque<KeptRun> = (0..10).map(|i| run(u64::MAX - i, 900)).collect();
        let n = fitting(&kept, base, 4096);
        assert_eq!(n, 4, "4 × ~910 bytes fit 4 KiB, 5 do not");
        reg.finished = kept.iter().take(n).map(|r| r.run.clone()).collect();
        let len = codec::encoded_len(&FromWorker::Register(reg.clone()));
        assert!(len <= codec::max_plaintext(4096), "{len}");
        reg.finished.push(kept[n].run.clone());
        let len = codec::encoded_len(&FromWorker::Register(reg));
        assert!(len > codec::max_plaintext(4096), "{len}");
    }
}
