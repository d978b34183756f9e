//! Helpers shared by the actor-level tests: stub actors that stand in for a
//! client session or a worker link and forward what they receive into a
//! channel, bounded waits, and a tiny seeded random number generator.

#![allow(dead_code)]

pub mod manager;

use std::future::Future;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

/// Longest wait for something the test expects to happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Asks a stub to answer once every message before it has been forwarded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

/// An actor that forwards every `M` it receives into a channel.
pub struct Forwarder<M> {
    tx: mpsc::UnboundedSender<M>,
}

impl<M: Unpin + 'static> Actor for Forwarder<M> {
    type Context = Context<Self>;
}

/// Messages a [`Stub`] can stand in for.
pub trait Forwarded: Message<Result = ()> + Send + Unpin + std::fmt::Debug + 'static {}

impl Forwarded for argon::messages::TaskReply {}
impl Forwarded for argon::messages::WorkerOrder {}
impl Forwarded for argon::messages::SlotFinished {}

impl<M: Forwarded> Handler<M> for Forwarder<M> {
    type Result = ();

    fn handle(&mut self, msg: M, _: &mut Self::Context) {
        let _ = self.tx.send(msg);
    }
}

impl<M: Unpin + 'static> Handler<Flush> for Forwarder<M> {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {}
}

/// A stub actor plus the receiving end of what it got.
pub struct Stub<M: Forwarded> {
    addr: Addr<Forwarder<M>>,
    rx: mpsc::UnboundedReceiver<M>,
}

impl<M: Forwarded> Stub<M> {
    /// Starts a stub.
    pub fn start() -> Stub<M> {
        let (tx, rx) = mpsc::unbounded_channel();
        Stub {
            addr: Forwarder { tx }.start(),
            rx,
        }
    }

    /// A recipient to hand to the actor under test.
    pub fn recipient(&self) -> Recipient<M> {
        self.addr.clone().recipient()
    }

    /// The next message, waiting at most [`WAIT`].
    pub async fn next(&mut self) -> M {
        within("a message at a stub", self.rx.recv())
            .await
            .expect("stub channel closed")
    }

    /// Every message delivered to the stub so far. Call after a round trip
    /// to the actor under test, so that what it sent before is in the stub's
    /// mailbox; the flush then makes sure the stub has forwarded it.
    pub async fn drain(&mut self) -> Vec<M> {
        within("a stub to flush", self.addr.send(Flush))
            .await
            .expect("stub is alive");
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            out.push(m);
        }
        out
    }

    /// Fails the test if the stub got anything so far (see [`Stub::drain`]).
    pub async fn assert_none(&mut self, what: &str) {
        let got = self.drain().await;
        assert!(got.is_empty(), "{what}: expected nothing, got {got:?}");
    }
}

/// SplitMix64: a small, seeded, reproducible generator.
pub struct Rng(u64);

impl Rng {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
