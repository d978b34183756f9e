//! Admission of connections on the manager: how many it holds at once, how
//! many may be in their handshake, and how its accept loop paces itself when
//! the process runs out of descriptors.
//!
//! The accept loop asks a [`Gate`] before it sends its hello. Past
//! `max_connections` connections the connection is refused at once with a
//! refusal frame ([`crate::protocol::handshake::refuse`]), counted, and
//! logged at most once a second (a [`crate::logsafe::RateLimit`]).
//!
//! Handshakes cost a peer no key, so their slots must not be something a
//! peer without the key can hold against everyone else. When
//! `max_handshakes` are taken, a new connection evicts (closes) the oldest
//! handshake in progress, and when its address already has
//! `max_handshakes_per_address` in progress, the oldest of that address's
//! instead. Only a handshake in progress for at least [`EVICTABLE_AFTER`]
//! is evicted: an Argon peer finishes within milliseconds, so what is that
//! old has stalled. Where the oldest candidate is younger, the new
//! connection is refused instead (a refusal frame with code 2, which the
//! Rust peers retry on a short backoff), so a burst of honest peers is
//! slowed, never cut off mid-handshake. A peer that opens connections and
//! stalls thus holds at most its address's share, each slot for as long as
//! it takes a newer connection to push it out, while peers that complete
//! their handshake get through. While more than half the handshake slots
//! are taken, counting the new connection, it gets at most
//! [`PRESSURE_TIMEOUT`] for its handshake.
//!
//! `max_connections` covers every connection: handshakes in progress,
//! clients and workers alike. The limit exists to keep the manager's
//! descriptors from running out, and a descriptor is a descriptor whatever
//! the peer's role; nor is the role known before the peer's auth frame,
//! which comes after the point where the manager must decide. A cluster
//! therefore needs `max_connections` above its workers plus its clients; a
//! refused worker retries on its backoff.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::protocol::handshake::Refusal;

/// Default bound on handshakes in progress.
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;

/// Descriptors the default `max_connections` leaves to the rest of the
/// process (listener, logs, the runtime's own).
pub const DESCRIPTOR_RESERVE: u64 = 64;

/// Handshake timeout for new connections while more than half the handshake
/// slots are in use (unless the configured one is shorter).
pub const PRESSURE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a handshake must have been in progress before a new connection
/// may evict it; see the module docs.
pub const EVICTABLE_AFTER: Duration = Duration::from_millis(250);

/// How many connections the manager takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections held at once: handshaking, clients and workers.
    pub max_connections: usize,
    /// Handshakes in progress at once (within `max_connections`); past it
    /// the oldest is evicted.
    pub max_handshakes: usize,
    /// Handshakes in progress from one IP address; past it that address's
    /// oldest is evicted.
    pub max_handshakes_per_address: usize,
    /// Bytes all connections together hold for peers that have not read
    /// them ([`crate::outgoing`]); past it the largest holders are closed.
    pub max_outgoing_total: usize,
}

impl Default for ConnectionLimits {
    /// `max_connections` from the descriptor limit
    /// ([`default_max_connections`]), 256 handshakes, a quarter of them
    /// per address, outgoing bytes from the machine's memory
    /// ([`crate::outgoing::default_max_total`]).
    fn default() -> Self {
        ConnectionLimits::new(default_max_connections(), DEFAULT_MAX_HANDSHAKES)
    }
}

impl ConnectionLimits {
    /// Limits of `max_connections` and `max_handshakes`, with the default
    /// share per address ([`default_per_address`]) and outgoing bound.
    pub fn new(max_connections: usize, max_handshakes: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            max_handshakes,
            max_handshakes_per_address: default_per_address(max_handshakes),
            max_outgoing_total: crate::outgoing::default_max_total(),
        }
    }
}

/// The default `max_handshakes_per_address`: a quarter of the handshake
/// slots, at least 1.
pub fn default_per_address(max_handshakes: usize) -> usize {
    (max_handshakes / 4).max(1)
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

/// One counted connection; dropping it gives the place back.
#[derive(Debug)]
pub struct Permit {
    count: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One handshake in progress; dropping it gives the slot back.
#[derive(Debug)]
pub struct HandshakeSlot {
    seq: u64,
    handshakes: Arc<Mutex<Handshakes>>,
    /// Cancelled when the handshake is evicted to make room for a newer one.
    pub evicted: CancellationToken,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        lock(&self.handshakes).remove(self.seq);
    }
}

/// What an admitted connection holds while it shakes hands.
#[derive(Debug)]
pub struct Admitted {
    /// Its place among the connections; held as long as the connection lives.
    pub connection: Permit,
    /// Its place among the handshakes; drop it when the handshake ends.
    pub handshake: HandshakeSlot,
    /// The bound on its handshake.
    pub timeout: Duration,
    /// Whether an older handshake was evicted to admit this one, and why.
    pub evicted: Option<Eviction>,
}

/// Why a handshake in progress was evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Every handshake slot was taken.
    Full,
    /// Its address had its share of the slots.
    Address,
}

/// The handshakes in progress, oldest first, and how many each address has.
#[derive(Debug, Default)]
struct Handshakes {
    next: u64,
    live: BTreeMap<u64, (IpAddr, Instant, CancellationToken)>,
    per_address: HashMap<IpAddr, usize>,
}

impl Handshakes {
    fn remove(&mut self, seq: u64) {
        let Some((addr, _, token)) = self.live.remove(&seq) else {
            return;
        };
        token.cancel();
        if let Some(n) = self.per_address.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&addr);
            }
        }
    }

    /// The oldest handshake, of `addr` when given, and when it began.
    fn oldest(&self, addr: Option<IpAddr>) -> Option<(u64, Instant)> {
        self.live
            .iter()
            .find(|(_, (a, _, _))| addr.is_none_or(|addr| *a == addr))
            .map(|(seq, (_, at, _))| (*seq, *at))
    }
}

fn lock(h: &Mutex<Handshakes>) -> std::sync::MutexGuard<'_, Handshakes> {
    h.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The counts the accept loop admits against. See the module docs.
#[derive(Debug)]
pub struct Gate {
    limits: ConnectionLimits,
    connections: Arc<AtomicUsize>,
    handshakes: Arc<Mutex<Handshakes>>,
    refused_connections: AtomicU64,
    refused_handshakes: AtomicU64,
    evicted_handshakes: AtomicU64,
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
            evicted_handshakes: AtomicU64::new(0),
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Admits one more connection from `addr` whose handshake would be
    /// bounded by `timeout`, evicting an older handshake if the slots are
    /// taken; refused (and counted) past `max_connections`, or when the
    /// handshake it would evict is younger than [`EVICTABLE_AFTER`].
    pub fn admit(&self, addr: IpAddr, timeout: Duration) -> Result<Admitted, Refusal> {
        self.admit_at(addr, timeout, Instant::now())
    }

    /// [`Gate::admit`] at `now`.
    pub fn admit_at(
        &self,
        addr: IpAddr,
        timeout: Duration,
        now: Instant,
    ) -> Result<Admitted, Refusal> {
        let Some(connection) = take(&self.connections, self.limits.max_connections) else {
            self.refused_connections.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Connections);
        };
        let mut hs = lock(&self.handshakes);
        let mine = hs.per_address.get(&addr).copied().unwrap_or(0);
        let evict = if mine >= self.limits.max_handshakes_per_address {
            hs.oldest(Some(addr)).map(|o| (o, Eviction::Address))
        } else if hs.live.len() >= self.limits.max_handshakes {
            hs.oldest(None).map(|o| (o, Eviction::Full))
        } else {
            None
        };
        if let Some(((seq, began), _)) = evict {
            if now.saturating_duration_since(began) < EVICTABLE_AFTER {
                self.refused_handshakes.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Handshakes);
            }
            hs.remove(seq);
            self.evicted_handshakes.fetch_add(1, Ordering::Relaxed);
        }
        let seq = hs.next;
        hs.next += 1;
        let token = CancellationToken::new();
        hs.live.insert(seq, (addr, now, token.clone()));
        *hs.per_address.entry(addr).or_default() += 1;
        let timeout = if hs.live.len() > self.limits.max_handshakes / 2 {
            timeout.min(PRESSURE_TIMEOUT)
        } else {
            timeout
        };
        drop(hs);
        Ok(Admitted {
            connection,
            handshake: HandshakeSlot {
                seq,
                handshakes: self.handshakes.clone(),
                evicted: token,
            },
            timeout,
            evicted: evict.map(|(_, why)| why),
        })
    }

    /// Connections held now (handshaking or established).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Handshakes in progress now.
    pub fn handshakes(&self) -> usize {
        lock(&self.handshakes).live.len()
    }

    /// Connections refused so far for `why`.
    pub fn refused(&self, why: Refusal) -> u64 {
        match why {
            Refusal::Connections => self.refused_connections.load(Ordering::Relaxed),
            Refusal::Handshakes => self.refused_handshakes.load(Ordering::Relaxed),
            Refusal::Other(_) => 0,
        }
    }

    /// Handshakes evicted so far to make room for newer ones.
    pub fn evicted(&self) -> u64 {
        self.evicted_handshakes.load(Ordering::Relaxed)
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
            max_handshakes_per_address: max_handshakes,
            max_outgoing_total: usize::MAX,
        })
    }

    const LONG: Duration = Duration::from_secs(5);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn connections_past_the_limit_are_refused_and_counted() {
        let g = gate(2, 10);
        let a = g.admit(ip(1), LONG).unwrap();
        let b = g.admit(ip(1), LONG).unwrap();
        drop(a.handshake);
        drop(b.handshake);
        assert_eq!(g.admit(ip(1), LONG).unwrap_err(), Refusal::Connections);
        assert_eq!((g.connections(), g.refused(Refusal::Connections)), (2, 1));
        drop(a.connection);
        assert!(g.admit(ip(1), LONG).is_ok());
    }

    #[test]
    fn a_full_set_of_handshakes_evicts_the_oldest_once_it_is_old_enough() {
        let g = gate(10, 2);
        let t0 = Instant::now();
        let a = g.admit_at(ip(1), LONG, t0).unwrap();
        let b = g
            .admit_at(ip(2), LONG, t0 + Duration::from_millis(1))
            .unwrap();
        assert_eq!((a.evicted, b.evicted), (None, None));
        // The oldest is too young to be taken for stalled: refused, and
        // the connection's place given back.
        let young = t0 + EVICTABLE_AFTER - Duration::from_millis(1);
        assert_eq!(
            g.admit_at(ip(3), LONG, young).unwrap_err(),
            Refusal::Handshakes
        );
        assert_eq!((g.connections(), g.refused(Refusal::Handshakes)), (2, 1));
        let c = g.admit_at(ip(3), LONG, t0 + EVICTABLE_AFTER).unwrap();
        assert_eq!(c.evicted, Some(Eviction::Full));
        assert!(a.handshake.evicted.is_cancelled(), "the oldest goes");
        assert!(!b.handshake.evicted.is_cancelled());
        assert!(!c.handshake.evicted.is_cancelled());
        assert_eq!((g.connections(), g.handshakes(), g.evicted()), (3, 2, 1));
        // The evicted handshake's task drops its slot later: nothing more
        // is given back then.
        drop(a.handshake);
        assert_eq!(g.handshakes(), 2);
        drop(b.handshake);
        let d = g.admit(ip(4), LONG).unwrap();
        assert_eq!(d.evicted, None);
        assert_eq!(g.handshakes(), 2);
    }

    #[test]
    fn an_address_past_its_share_evicts_its_own_oldest() {
        let g = Gate::new(ConnectionLimits {
            max_connections: 1000,
            max_handshakes: 8,
            max_handshakes_per_address: 2,
            max_outgoing_total: usize::MAX,
        });
        let t0 = Instant::now();
        let at = |ms: u64| t0 + EVICTABLE_AFTER * 2 * ms as u32;
        let other = g.admit_at(ip(9), LONG, at(0)).unwrap();
        let a = g.admit_at(ip(1), LONG, at(1)).unwrap();
        let b = g.admit_at(ip(1), LONG, at(2)).unwrap();
        let c = g.admit_at(ip(1), LONG, at(3)).unwrap();
        assert_eq!(c.evicted, Some(Eviction::Address));
        assert!(a.handshake.evicted.is_cancelled());
        assert!(
            !other.handshake.evicted.is_cancelled(),
            "older, but elsewhere"
        );
        assert!(!b.handshake.evicted.is_cancelled());
        assert_eq!(g.handshakes(), 3);
        // A flood from one address never reaches the other's handshake,
        // and new connections from elsewhere still get in.
        let flood: Vec<Admitted> = (4..54)
            .map(|i| g.admit_at(ip(1), LONG, at(i)).unwrap())
            .collect();
        assert!(!other.handshake.evicted.is_cancelled());
        assert_eq!(g.handshakes(), 3);
        assert_eq!(g.evicted(), 51);
        let elsewhere = g.admit_at(ip(7), LONG, at(54)).unwrap();
        assert_eq!(elsewhere.evicted, None);
        drop(flood);
        assert_eq!(g.handshakes(), 2);
    }

    #[test]
    fn timeout_drops_to_a_second_past_half_the_handshake_slots() {
        let g = gate(100, 4);
        let a = g.admit(ip(1), LONG).unwrap();
        let b = g.admit(ip(1), LONG).unwrap();
        assert_eq!((a.timeout, b.timeout), (LONG, LONG));
        let c = g.admit(ip(1), LONG).unwrap();
        assert_eq!(
            c.timeout, PRESSURE_TIMEOUT,
            "the third of four counts itself"
        );
        assert_eq!(
            g.admit(ip(1), Duration::from_millis(300)).unwrap().timeout,
            Duration::from_millis(300)
        );
        drop((a, b, c));
        assert_eq!(g.admit(ip(1), LONG).unwrap().timeout, LONG);
    }

    #[test]
    fn the_default_share_is_a_quarter() {
        assert_eq!(default_per_address(256), 64);
        assert_eq!(default_per_address(3), 1);
        assert_eq!(ConnectionLimits::new(10, 8).max_handshakes_per_address, 2);
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
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let ms: Vec<u128> = (0..6).map(|_| b.failed().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(100));
    }
}
