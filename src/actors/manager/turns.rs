//! Fair admission to a full queue: clients that were denied wait in line,
//! and a place that frees goes to the first of them rather than to whoever
//! resubmits fastest.
//!
//! A client joins the line (once) when a submit of its finds the queue
//! full. While the line is not empty, the queue's free places are held for
//! the clients at its head: a submit is admitted if its client is among the
//! first `free` of the line, or if there are more free places than clients
//! in line. A client admitted from the line leaves it (it joins again at the
//! back if a later submit is denied). The manager applies the line only
//! while the queue holds at least one task per slot (or half its bound,
//! where that is less), so holding a place never leaves a slot without
//! work. A client that stops trying, having not
//! been denied for its hold time (four times the `retry_after` it was last
//! given, plus a second), or that disconnects, leaves the line, so a place is never
//! held for nobody for long. The line holds at most one entry per connected
//! client, so it is bounded by the manager's connection limit.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::messages::SessionId;

/// Extra time a client in line is given beyond four times its
/// `retry_after` (a client backing off logarithmically waits a few times
/// that before it tries again).
const HOLD_SLACK: Duration = Duration::from_secs(1);

/// The line of denied clients. See the module docs.
#[derive(Debug, Default)]
pub struct Turns {
    line: VecDeque<SessionId>,
    /// Members and the time after which each has given up.
    until: HashMap<SessionId, Instant>,
}

impl Turns {
    /// Whether a submit from `session` may take one of `free` places in the
    /// queue (`free` > 0). If it may and it was in line, it leaves the line.
    pub fn admit(&mut self, session: SessionId, free: usize, now: Instant) -> bool {
        self.expire(now);
        if self.line.len() < free && !self.until.contains_key(&session) {
            return true;
        }
        match self.line.iter().take(free).position(|s| *s == session) {
            Some(i) => {
                self.line.remove(i);
                self.until.remove(&session);
                true
            }
            None => false,
        }
    }

    /// `session` was denied and told to come back after `retry_after`: it
    /// joins the line if it is not in it. Returns its place (0 = first).
    pub fn denied(&mut self, session: SessionId, retry_after: Duration, now: Instant) -> usize {
        let until = now + retry_after * 4 + HOLD_SLACK;
        if self.until.insert(session, until).is_none() {
            self.line.push_back(session);
        }
        self.place(session)
    }

    /// `session` disconnected.
    pub fn gone(&mut self, session: SessionId) {
        if self.until.remove(&session).is_some() {
            self.line.retain(|s| *s != session);
        }
    }

    /// The place `session` has in line, or would have if it joined now.
    pub fn place(&self, session: SessionId) -> usize {
        if !self.until.contains_key(&session) {
            return self.line.len();
        }
        self.line
            .iter()
            .position(|s| *s == session)
            .unwrap_or(self.line.len())
    }

    /// Clients in line.
    pub fn len(&self) -> usize {
        self.line.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.line.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        if self.until.values().all(|t| *t > now) {
            return;
        }
        self.until.retain(|_, t| *t > now);
        let until = &self.until;
        self.line.retain(|s| until.contains_key(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RA: Duration = Duration::from_millis(100);

    #[test]
    fn with_nobody_in_line_everyone_is_admitted() {
        let mut t = Turns::default();
        let now = Instant::now();
        assert!(t.admit(1, 1, now));
        assert!(t.admit(2, 1, now));
        assert!(t.is_empty());
    }

    #[test]
    fn a_freed_place_goes_to_the_first_in_line() {
        let mut t = Turns::default();
        let now = Instant::now();
        assert_eq!(t.denied(7, RA, now), 0);
        assert_eq!(t.denied(8, RA, now), 1);
        // A greedy client that was denied again keeps its place, no better.
        assert_eq!(t.denied(8, RA, now), 1);
        // One place frees: the greedy newcomer and the second in line wait.
        assert!(!t.admit(9, 1, now));
        assert!(!t.admit(8, 1, now));
        assert!(t.admit(7, 1, now));
        // 7 left the line; the next place is 8's.
        assert_eq!(t.len(), 1);
        assert!(!t.admit(9, 1, now));
        assert!(t.admit(8, 1, now));
        assert!(t.admit(9, 1, now));
    }

    #[test]
    fn places_beyond_the_line_are_open_to_all() {
        let mut t = Turns::default();
        let now = Instant::now();
        t.denied(1, RA, now);
        assert!(t.admit(2, 2, now), "two places, one client in line");
        assert!(!t.admit(2, 1, now), "one place, held for the line");
        assert!(t.admit(1, 1, now));
    }

    #[test]
    fn a_client_that_stops_trying_or_leaves_loses_its_place() {
        let mut t = Turns::default();
        let now = Instant::now();
        t.denied(1, RA, now);
        t.denied(2, RA, now);
        t.gone(1);
        assert!(t.admit(2, 1, now));
        t.denied(3, RA, now);
        assert!(!t.admit(4, 1, now + RA));
        let later = now + RA * 4 + HOLD_SLACK + Duration::from_millis(1);
        assert!(t.admit(4, 1, later), "3 gave up: the place is free");
        assert!(t.is_empty());
    }
}
