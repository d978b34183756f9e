//! One bound on the bytes all of a manager's connections hold for their
//! peers. Each connection's own outgoing buffer is bounded
//! (`security.max_outgoing_bytes`), but many peers that each stay just
//! under that bound while not reading would still add up to more memory
//! than the machine has; this bound caps the sum.
//!
//! Every connection the manager accepts takes a [`Share`] of an
//! [`OutgoingBudget`] and reports what its buffer holds after each change
//! ([`Share::set`]). When the sum passes the bound, the budget closes the
//! largest holders first (they are the peers that read least) until the
//! rest fits, by cancelling their [`Share::evicted`] token; each such
//! connection drops what it holds and closes, and its role handles the
//! loss as for any lost peer. One warning line per shedding, with counts.
//!
//! A connection closed so lets go of its bytes only when its actor next
//! runs, and meanwhile others could go on adding theirs. So while the sum is
//! over the bound no connection takes on more answers
//! ([`Share::over`], [`Share::wake_when_under`]): answers wait where they
//! are (a kept result as a shared handle, not a copy) until the closed
//! connections have let go, and the process's memory stays near the bound
//! however far behind its thread is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

use tokio_util::sync::CancellationToken;

use crate::log_limited;
use crate::logsafe::{RateLimit, WARN_WINDOW};

/// Size from which the allocator serves (and returns) memory by mapping it
/// on its own; see [`fix_large_allocations`].
pub const LARGE_ALLOCATION: usize = 128 * 1024;

/// Makes every allocation of [`LARGE_ALLOCATION`] or more a mapping of its
/// own, given back to the system when freed. glibc's allocator otherwise
/// raises that threshold after the first large buffer is freed (up to
/// 32 MiB) and serves later ones from its heap, which keeps what they
/// leave behind: a burst of slow peers' buffers then stays resident long
/// after the bytes are gone, and the bound above would say nothing about
/// the process's memory. Call once at start, before other threads exist.
/// A no-op where the allocator is not glibc's.
pub fn fix_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; it is called
        // before any other thread of this process allocates.
        unsafe {
            nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, LARGE_ALLOCATION as i32);
        }
    }
}

/// The default bound: an eighth of the machine's memory, between 256 MiB
/// and 8 GiB (1 GiB where the memory cannot be read).
pub fn default_max_total() -> usize {
    const MIB: u64 = 1 << 20;
    let total = machine_memory().map_or(1024 * MIB, |ram| (ram / 8).clamp(256 * MIB, 8192 * MIB));
    usize::try_from(total).unwrap_or(usize::MAX)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn machine_memory() -> Option<u64> {
    nix::sys::sysinfo::sysinfo().ok().map(|i| i.ram_total())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn machine_memory() -> Option<u64> {
    None
}

/// The bound and what every registered connection holds. See the module
/// docs.
#[derive(Debug)]
pub struct OutgoingBudget {
    limit: usize,
    total: AtomicUsize,
    next: AtomicU64,
    holders: Mutex<HashMap<u64, Holder>>,
    closed: AtomicU64,
    /// Connections waiting for the total to fall within the bound.
    waiters: Mutex<Vec<Waker>>,
}

#[derive(Debug)]
struct Holder {
    held: Arc<AtomicUsize>,
    evicted: CancellationToken,
    flagged: Arc<AtomicBool>,
    peer: SocketAddr,
}

impl OutgoingBudget {
    /// A budget of `limit` bytes, nothing held yet.
    pub fn new(limit: usize) -> Arc<OutgoingBudget> {
        Arc::new(OutgoingBudget {
            limit,
            total: AtomicUsize::new(0),
            next: AtomicU64::new(0),
            holders: Mutex::default(),
            closed: AtomicU64::new(0),
            waiters: Mutex::default(),
        })
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by all connections now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Connections closed so far for holding too much.
    pub fn closed(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }

    /// Registers a connection to `peer`.
    pub fn share(self: &Arc<Self>, peer: SocketAddr) -> Share {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let held = Arc::new(AtomicUsize::new(0));
        let evicted = CancellationToken::new();
        let flagged = Arc::new(AtomicBool::new(false));
        self.lock().insert(
            id,
            Holder {
                held: held.clone(),
                evicted: evicted.clone(),
                flagged: flagged.clone(),
                peer,
            },
        );
        Share {
            id,
            budget: self.clone(),
            held,
            evicted,
            flagged,
        }
    }

    fn wake_waiters(&self) {
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for w in waiters {
            w.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Holder>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the largest holders until what the others hold fits the
    /// bound. Holders already told to close count as freed.
    fn shed(&self) {
        let holders = self.lock();
        let mut total = self.total();
        let mut live: Vec<&Holder> = Vec::with_capacity(holders.len());
        for h in holders.values() {
            if h.flagged.load(Ordering::Relaxed) {
                total = total.saturating_sub(h.held.load(Ordering::Relaxed));
            } else {
                live.push(h);
            }
        }
        if total <= self.limit {
            return;
        }
        live.sort_unstable_by_key(|h| std::cmp::Reverse(h.held.load(Ordering::Relaxed)));
        let (mut closed, mut freed, mut largest) = (0u64, 0usize, None);
        for h in live {
            if total <= self.limit {
                break;
            }
            let held = h.held.load(Ordering::Relaxed);
            if held == 0 {
                break;
            }
            h.flagged.store(true, Ordering::Relaxed);
            h.evicted.cancel();
            total -= held.min(total);
            freed += held;
            closed += 1;
            largest.get_or_insert((h.peer, held));
        }
        drop(holders);
        self.closed.fetch_add(closed, Ordering::Relaxed);
        static SHED: RateLimit = RateLimit::new(WARN_WINDOW);
        if let Some((peer, held)) = largest {
            log_limited!(
                SHED,
                log::Level::Warn,
                "bytes held for peers that do not read passed the bound of {} across all \
                 connections: closing {closed} connection(s) holding {freed} bytes, the \
                 largest first ({peer}: {held} bytes); {} closed so far",
                self.limit,
                self.closed()
            );
        }
    }
}

/// One connection's part of an [`OutgoingBudget`]; dropping it gives back
/// what it held.
#[derive(Debug)]
pub struct Share {
    id: u64,
    budget: Arc<OutgoingBudget>,
    held: Arc<AtomicUsize>,
    /// Cancelled when the connection is to close for holding too much.
    pub evicted: CancellationToken,
    flagged: Arc<AtomicBool>,
}

impl Share {
    /// Whether the connection is to close for holding too much (as
    /// [`Share::evicted`] says, without its lock: it is asked per frame).
    pub fn is_evicted(&self) -> bool {
        self.flagged.load(Ordering::Relaxed)
    }

    /// The connection now holds `bytes` for its peer; past the bound the
    /// largest holders are told to close (this one among them, perhaps).
    pub fn set(&self, bytes: usize) {
        let before = self.held.swap(bytes, Ordering::Relaxed);
        if bytes > before {
            let total = self
                .budget
                .total
                .fetch_add(bytes - before, Ordering::Relaxed)
                + bytes
                - before;
            if total > self.budget.limit {
                self.budget.shed();
            }
        } else if bytes < before {
            let total = self
                .budget
                .total
                .fetch_sub(before - bytes, Ordering::Relaxed)
                - (before - bytes);
            if total <= self.budget.limit {
                self.budget.wake_waiters();
            }
        }
    }

    /// Whether all connections together hold more than the bound: the
    /// largest were told to close, and until they have let go nobody
    /// should add more.
    pub fn over(&self) -> bool {
        self.budget.total() > self.budget.limit
    }

    /// Wakes `waker` once the bytes held are back within the bound.
    pub fn wake_when_under(&self, waker: &Waker) {
        let mut waiters = self
            .budget
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
        drop(waiters);
        // It may have fallen meanwhile.
        if !self.over() {
            self.budget.wake_waiters();
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.set(0);
        self.budget.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn past_the_bound_the_largest_holders_close_until_the_rest_fits() {
        let budget = OutgoingBudget::new(1000);
        let shares: Vec<Share> = (0..5).map(|i| budget.share(peer(i))).collect();
        shares[0].set(100);
        shares[1].set(400);
        shares[2].set(300);
        shares[3].set(150);
        assert_eq!(budget.total(), 950);
        assert!(shares.iter().all(|s| !s.evicted.is_cancelled()));
        // 1250 in all: closing the 400 leaves 850, which fits.
        shares[4].set(300);
        let evicted: Vec<bool> = shares.iter().map(|s| s.evicted.is_cancelled()).collect();
        assert_eq!(evicted, [false, true, false, false, false]);
        assert_eq!(budget.closed(), 1);
        // Until it lets go, the evicted one counts as freed: more growth
        // closes the largest of the others (the one that grew), not it again.
        shares[0].set(700);
        let evicted: Vec<bool> = shares.iter().map(|s| s.evicted.is_cancelled()).collect();
        assert_eq!(evicted, [true, true, false, false, false]);
        assert_eq!(budget.closed(), 2);
    }

    #[test]
    fn while_over_the_bound_waiters_wait_until_the_closed_let_go() {
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let budget = OutgoingBudget::new(1000);
        let big = budget.share(peer(1));
        let small = budget.share(peer(2));
        big.set(900);
        small.set(200);
        assert!(big.evicted.is_cancelled() && !small.evicted.is_cancelled());
        assert!(small.over(), "the evicted one still holds its bytes");
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        small.wake_when_under(&waker);
        small.wake_when_under(&waker);
        small.set(150);
        assert_eq!(woken.0.load(Ordering::Relaxed), 0, "still over");
        drop(big);
        assert!(!small.over());
        assert_eq!(woken.0.load(Ordering::Relaxed), 1, "woken once");
        // Registering while under wakes at once.
        small.wake_when_under(&waker);
        assert_eq!(woken.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn dropping_and_shrinking_give_bytes_back() {
        let budget = OutgoingBudget::new(1000);
        let a = budget.share(peer(1));
        let b = budget.share(peer(2));
        a.set(600);
        b.set(300);
        a.set(200);
        assert_eq!(budget.total(), 500);
        drop(b);
        assert_eq!((budget.total(), budget.lock().len()), (200, 1));
        drop(a);
        assert_eq!(budget.total(), 0);
        assert!(budget.lock().is_empty());
    }

    #[test]
    fn the_default_is_an_eighth_of_memory_within_its_range() {
        let d = default_max_total();
        assert!((256 << 20..=8192 << 20).contains(&d), "{d}");
    }
}
