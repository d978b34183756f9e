//! The heartbeat rule, in one place for every peer (the connection actor
//! and the client library): on each tick of the heartbeat interval, send a
//! heartbeat if nothing was sent since the last tick, and take the peer for
//! gone once nothing has been heard for [`SILENT_INTERVALS`] ticks in a row.

use std::time::Duration;

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
}

impl Liveness {
    /// State for a connection that ticks every `interval` (zero: never).
    pub fn new(interval: Duration) -> Liveness {
        Liveness {
            interval,
            heard: false,
            spoke: false,
            silent_ticks: 0,
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

    #[test]
    fn beats_when_quiet_and_gives_up_after_three_silent_ticks() {
        let mut l = Liveness::new(Duration::from_secs(1));
        l.heard();
        l.spoke();
        assert_eq!(l.tick(), Tick::Quiet);
        assert_eq!(l.tick(), Tick::Beat, "nothing said or heard for one tick");
        l.spoke();
        assert_eq!(l.tick(), Tick::Quiet, "silent twice, but spoke");
        assert_eq!(l.tick(), Tick::Silent, "third silent tick");
    }

    #[test]
    fn hearing_anything_resets_the_silence() {
        let mut l = Liveness::new(Duration::from_secs(1));
        for _ in 0..10 {
            assert_ne!(l.tick(), Tick::Silent);
            assert_ne!(l.tick(), Tick::Silent);
            l.heard();
        }
        assert_eq!(l.silence_limit(), Duration::from_secs(3));
    }
}
