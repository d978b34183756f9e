//! The heartbeat rule, in one place for every peer (the connection actor
//! and the client library): on each tick of the heartbeat interval, send a
//! heartbeat if nothing was sent since the last tick, and take the peer for
//! gone once nothing has been heard for [`SILENT_INTERVALS`] ticks in a row.
//! Ticks that come in a burst after the process itself was stalled (closer
//! together than half an interval) count as one, so a starved process does
//! not blame its peers before it has read what they sent meanwhile.

use std::time::{Duration, Instant};

use super::SILENT_INTERVALS;

/// What to do on a heartbeat tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Nothing: both sides were heard recently.
    Quiet,
    /// Send a heartbeat: this side said nothing for a whole interval.
    Beat,
    /// Close: the peer said nothing for `SILENT_INTERVALS` intervals.
    Silent,
}

/// One connection's heartbeat state.
#[derive(Debug, Clone)]
pub struct Liveness {
    interval: Duration,
    heard: bool,
    spoke: bool,
    silent_ticks: u32,
    last_tick: Option<Instant>,
}

impl Liveness {
    /// State for a connection that ticks every `interval` (zero: never).
    pub fn new(interval: Duration) -> Liveness {
        Liveness {
            interval,
            heard: false,
            spoke: false,
            silent_ticks: 0,
            last_tick: None,
        }
    }

    /// The tick interval; zero means heartbeats are off.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long a peer may stay silent before it is taken for gone, at most.
    pub fn silence_limit(&self) -> Duration {
        self.interval * SILENT_INTERVALS
    }

    /// Something arrived from the peer.
    pub fn heard(&mut self) {
        self.heard = true;
    }

    /// Something was sent to the peer.
    pub fn spoke(&mut self) {
        self.spoke = true;
    }

    /// Called once per interval: what to do now.
    pub fn tick(&mut self) -> Tick {
        self.tick_at(Instant::now())
    }

    /// [`Liveness::tick`] at `now`.
    pub fn tick_at(&mut self, now: Instant) -> Tick {
        if let Some(last) = self.last_tick {
            if now.saturating_duration_since(last) < self.interval / 2 {
                return Tick::Quiet;
            }
        }
        self.last_tick = Some(now);
        if std::mem::take(&mut self.heard) {
            self.silent_ticks = 0;
        } else {
            self.silent_ticks += 1;
            if self.silent_ticks >= SILENT_INTERVALS {
                return Tick::Silent;
            }
        }
        if std::mem::take(&mut self.spoke) {
            Tick::Quiet
        } else {
            Tick::Beat
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks one interval apart, from a fixed start.
    struct Clock(Instant);

    impl Clock {
        fn next(&mut self) -> Instant {
            self.0 += Duration::from_secs(1);
            self.0
        }
    }

    #[test]
    fn beats_when_quiet_and_gives_up_after_three_silent_ticks() {
        let mut t = Clock(Instant::now());
        let mut l = Liveness::new(Duration::from_secs(1));
        l.heard();
        l.spoke();
        assert_eq!(l.tick_at(t.next()), Tick::Quiet);
        assert_eq!(
            l.tick_at(t.next()),
            Tick::Beat,
            "nothing said or heard for one tick"
        );
        l.spoke();
        assert_eq!(l.tick_at(t.next()), Tick::Quiet, "silent twice, but spoke");
        assert_eq!(l.tick_at(t.next()), Tick::Silent, "third silent tick");
    }

    #[test]
    fn hearing_anything_resets_the_silence() {
        let mut t = Clock(Instant::now());
        let mut l = Liveness::new(Duration::from_secs(1));
        for _ in 0..10 {
            assert_ne!(l.tick_at(t.next()), Tick::Silent);
            assert_ne!(l.tick_at(t.next()), Tick::Silent);
            l.heard();
        }
        assert_eq!(l.silence_limit(), Duration::from_secs(3));
    }

    #[test]
    fn a_burst_of_late_ticks_counts_as_one() {
        let mut t = Clock(Instant::now());
        let mut l = Liveness::new(Duration::from_secs(1));
        l.heard();
        assert_ne!(l.tick_at(t.next()), Tick::Silent);
        // The process was stalled for several intervals; the timer then
        // fires its missed ticks back to back.
        let late = t.next() + Duration::from_secs(5);
        for i in 0..5 {
            let at = late + Duration::from_millis(i);
            assert_ne!(l.tick_at(at), Tick::Silent, "burst tick {i}");
        }
        l.heard();
        t.0 = late;
        assert_ne!(l.tick_at(t.next()), Tick::Silent, "heard after the stall");
    }
}
