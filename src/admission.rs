//! Admission of connections on the manager: how many it holds at once, how
//! many may be in their handshake, and how its accept loop paces itself when
//! the process runs out of descriptors.
//!
//! The accept loop asks a [`Gate`] before it sends its hello. Past
//! `max_connections` connections, or `max_handshakes` handshakes in
//! progress, the connection is refused at once with a refusal frame
//! ([`crate::protocol::handshake::refuse`]), counted, and logged at most once
//! a second ([`Throttle`]). While more than half the handshake slots are
//! taken, a new connection gets at most [`PRESSURE_TIMEOUT`] for its
//! handshake, so idle sockets without the key cannot hold slots for long.
//!
//! `max_connections` covers every connection: handshakes in progress,
//! clients and workers alike. The limit exists to keep the manager's
//! descriptors from running out, and a descriptor is a descriptor whatever
//! the peer's role; nor is the role known before the peer's auth frame,
//! which comes after the point where the manager must decide. A cluster
//! therefore needs `max_connections` above its workers plus its clients; a
//! refused worker retries on its backoff.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::handshake::Refusal;

/// Default bound on handshakes in progress.
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;

/// Descriptors the default `max_connections` leaves to the rest of the
/// process (listener, logs, the runtime's own).
pub const DESCRIPTOR_RESERVE: u64 = 64;

/// Handshake timeout for new connections while more than half the handshake
/// slots are in use (unless the configured one is shorter).
pub const PRESSURE_TIMEOUT: Duration = Duration::from_secs(1);

/// How many connections the manager takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections held at once: handshaking, clients and workers.
    pub max_connections: usize,
    /// Handshakes in progress at once (within `max_connections`).
    pub max_handshakes: usize,
}

impl Default for ConnectionLimits {
    /// `max_connections` from the descriptor limit
    /// ([`default_max_connections`]), 256 handshakes.
    fn default() -> Self {
        ConnectionLimits {
            max_connections: default_max_connections(),
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
        }
    }
}

/// The process's soft limit on open descriptors (`RLIMIT_NOFILE`), if known.
pub fn descriptor_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

/// `max_connections` for a soft descriptor limit of `soft`: the limit
/// minus [`DESCRIPTOR_RESERVE`], or half of it when it is below twice the
/// reserve; at least 1.
pub fn max_connections_for(soft: u64) -> usize {
    let n = if soft > 2 * DESCRIPTOR_RESERVE {
        soft - DESCRIPTOR_RESERVE
    } else {
        soft / 2
    };
    usize::try_from(n).unwrap_or(usize::MAX).max(1)
}

/// The default `max_connections`: [`max_connections_for`] the process's
/// soft descriptor limit, or for 1024 when it cannot be read.
pub fn default_max_connections() -> usize {
    max_connections_for(descriptor_limit().unwrap_or(1024))
}

/// One counted connection or handshake; dropping it gives the place back.
#[derive(Debug)]
pub struct Permit {
    count: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an admitted connection holds while it shakes hands.
#[derive(Debug)]
pub struct Admitted {
    /// Its place among the connections; held as long as the connection lives.
    pub connection: Permit,
    /// Its place among the handshakes; drop it when the handshake ends.
    pub handshake: Permit,
    /// The bound on its handshake.
    pub timeout: Duration,
}

/// The counts the accept loop admits against. See the module docs.
#[derive(Debug)]
pub struct Gate {
    limits: ConnectionLimits,
    connections: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    refused_connections: AtomicU64,
    refused_handshakes: AtomicU64,
}

impl Gate {
    /// A gate with nothing admitted yet.
    pub fn new(limits: ConnectionLimits) -> Gate {
        Gate {
            limits,
            connections: Arc::default(),
            handshakes: Arc::default(),
            refused_connections: AtomicU64::new(0),
            refused_handshakes: AtomicU64::new(0),
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Admits one more connection whose handshake would be bounded by
    /// `timeout`, or says why not (and counts the refusal).
    pub fn admit(&self, timeout: Duration) -> Result<Admitted, Refusal> {
        let Some(connection) = take(&self.connections, self.limits.max_connections) else {
            self.refused_connections.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Connections);
        };
        let Some(handshake) = take(&self.handshakes, self.limits.max_handshakes) else {
            self.refused_handshakes.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Handshakes);
        };
        let timeout = if self.handshakes() > self.limits.max_handshakes / 2 {
            timeout.min(PRESSURE_TIMEOUT)
        } else {
            timeout
        };
        Ok(Admitted {
            connection,
            handshake,
            timeout,
        })
    }

    /// Connections held now (handshaking or established).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Handshakes in progress now.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Acquire)
    }

    /// Connections refused so far for `why`.
    pub fn refused(&self, why: Refusal) -> u64 {
        match why {
            Refusal::Connections => self.refused_connections.load(Ordering::Relaxed),
            Refusal::Handshakes => self.refused_handshakes.load(Ordering::Relaxed),
            Refusal::Other(_) => 0,
        }
    }
}

fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Permit> {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Permit {
            count: count.clone(),
        })
}

/// Lets one log line of a kind through per interval and counts the ones it
/// held back, for the next line to report.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held: 0,
        }
    }

    /// Whether to log the event that happens `now`: `Some(n)` with the
    /// number of events held back since the last line, or `None`.
    pub fn pass(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

/// The accept loop's pause after an accept error (out of descriptors,
/// typically): 100 ms, doubling up to 1 s, back to 100 ms after a success.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    /// The pause after one more failure in a row.
    pub fn failed(&mut self) -> Duration {
        let pause = Duration::from_millis(100) * 2u32.pow(self.failures.min(4));
        self.failures = self.failures.saturating_add(1);
        pause.min(Duration::from_secs(1))
    }

    /// An accept succeeded.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_connections: usize, max_handshakes: usize) -> Gate {
        Gate::new(ConnectionLimits {
            max_connections,
            max_handshakes,
        })
    }

    #[test]
    fn connections_past_the_limit_are_refused_and_counted() {
        let g = gate(2, 10);
        let a = g.admit(Duration::from_secs(5)).unwrap();
        let b = g.admit(Duration::from_secs(5)).unwrap();
        drop(a.handshake);
        drop(b.handshake);
        assert_eq!(
            g.admit(Duration::from_secs(5)).unwrap_err(),
            Refusal::Connections
        );
        assert_eq!((g.connections(), g.refused(Refusal::Connections)), (2, 1));
        drop(a.connection);
        assert!(g.admit(Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn handshakes_past_their_limit_are_refused_and_give_the_connection_back() {
        let g = gate(10, 2);
        let _a = g.admit(Duration::from_secs(5)).unwrap();
        let b = g.admit(Duration::from_secs(5)).unwrap();
        assert_eq!(
            g.admit(Duration::from_secs(5)).unwrap_err(),
            Refusal::Handshakes
        );
        assert_eq!((g.connections(), g.handshakes()), (2, 2));
        assert_eq!(g.refused(Refusal::Handshakes), 1);
        drop(b.handshake);
        assert!(g.admit(Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn timeout_drops_to_a_second_past_half_the_handshake_slots() {
        let g = gate(100, 4);
        let long = Duration::from_secs(5);
        let a = g.admit(long).unwrap();
        let b = g.admit(long).unwrap();
        assert_eq!((a.timeout, b.timeout), (long, long));
        let c = g.admit(long).unwrap();
        assert_eq!(c.timeout, PRESSURE_TIMEOUT);
        assert_eq!(
            g.admit(Duration::from_millis(300)).unwrap().timeout,
            Duration::from_millis(300)
        );
        drop((a, b, c));
        assert_eq!(g.admit(long).unwrap().timeout, long);
    }

    #[test]
    fn default_leaves_a_reserve_of_descriptors() {
        assert_eq!(max_connections_for(1024), 960);
        assert_eq!(max_connections_for(100), 50);
        assert_eq!(max_connections_for(1), 1);
        assert_eq!(
            max_connections_for(u64::MAX) as u64,
            u64::MAX - DESCRIPTOR_RESERVE
        );
    }

    #[test]
    fn throttle_passes_one_line_a_second_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(t.pass(t0), Some(0));
        assert_eq!(t.pass(t0 + Duration::from_millis(10)), None);
        assert_eq!(t.pass(t0 + Duration::from_millis(900)), None);
        assert_eq!(t.pass(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(t.pass(t0 + Duration::from_millis(1500)), None);
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let ms: Vec<u128> = (0..6).map(|_| b.failed().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(100));
    }
}
