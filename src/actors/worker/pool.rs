//! `WorkerPool`: the worker process's actor. Owns `capacity`
//! [`WorkerSlot`]s and the connection to the manager; keeps no count of its
//! own of which slots are busy (it asks them).
//!
//! It connects (the connection registers itself), reconnects on a
//! logarithmic backoff when the manager goes away (logging tries 1, 2, 4,
//! 8, ... only), and on [`Drain`] tells the manager, stops its slots taking
//! work, lets them finish (up to a deadline), and then leaves. A manager
//! that refuses its key, or refuses its registration for good (an `error`
//! marked `permanent`), is not retried: the pool gives up and answers
//! [`WaitGaveUp`]. A registration refused for now is retried on the
//! backoff, like a manager that went away.
//!
//! While it has no manager, the pool keeps the outcomes of runs that end
//! ([`Kept`], bounded by [`WorkerSettings::keep`]) and hands them to the
//! next connection, which hands them over as it registers.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::kept::{KeepBounds, Kept, KeptRun};
use super::manager_link::wire_outcome;
use super::{ManagerLink, WorkerSlot};
use crate::actors::Connection;
use crate::logsafe::{escaped, RateLimit, WARN_WINDOW};
use crate::messages::*;
use crate::protocol::handshake::{self, HandshakeSettings};
use crate::protocol::{Role, WireError};
use crate::task::TaskRegistry;

/// What a worker needs to run.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Manager address, `host:port`.
    pub mgr: String,
    /// Number of slots (tasks run at once).
    pub capacity: usize,
    /// Whether to accept eval scripts.
    pub allow_eval: bool,
    /// Key, frame limit and handshake timeout.
    pub handshake: HandshakeSettings,
    /// First reconnect delay; later ones grow as base × (1 + ln n).
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Bounds on the outcomes kept while the manager is away.
    pub keep: KeepBounds,
}

/// Delay before reconnect attempt `n` (1-based): base × (1 + ln n), capped.
pub fn backoff_delay(base: Duration, max: Duration, n: u32) -> Duration {
    let factor = 1.0 + f64::from(n.max(1)).ln();
    base.mul_f64(factor).min(max)
}

/// The worker-side pool. See the module docs.
pub struct WorkerPool {
    settings: WorkerSettings,
    registry: Arc<TaskRegistry>,
    slots: Arc<[Addr<WorkerSlot>]>,
    conn: Option<Addr<Connection<ManagerLink>>>,
    worker_id: Option<WorkerId>,
    /// Tries since the last registration the manager accepted.
    failures: u32,
    draining: bool,
    drained: Vec<oneshot::Sender<()>>,
    gave_up: Option<GaveUp>,
    gave_up_waiters: Vec<oneshot::Sender<GaveUp>>,
    /// Outcomes of runs that ended with no connection to take them.
    kept: Kept,
    /// The frame limit the last manager announced; 0 before the first.
    manager_max_frame: usize,
    /// The last connection closed while registering with a `register`
    /// that carried outcomes: the next one carries none.
    register_failed: bool,
}

impl WorkerPool {
    /// A pool that runs tasks from `registry`.
    pub fn new(settings: WorkerSettings, registry: Arc<TaskRegistry>) -> WorkerPool {
        let keep = settings.keep;
        WorkerPool {
            settings,
            registry,
            slots: Arc::from(Vec::new()),
            conn: None,
            worker_id: None,
            failures: 0,
            draining: false,
            drained: Vec::new(),
            gave_up: None,
            gave_up_waiters: Vec::new(),
            kept: Kept::new(keep),
            manager_max_frame: 0,
            register_failed: false,
        }
    }

    /// Logs that `gone` kept outcomes were dropped past the bounds.
    fn dropped(&self, gone: usize) {
        if gone == 0 {
            return;
        }
        static DROPS: RateLimit = RateLimit::new(WARN_WINDOW);
        let b = self.kept.bounds();
        crate::log_limited!(
            DROPS,
            log::Level::Warn,
            "outcomes kept for the manager over their bound ({} outcomes, {} bytes): dropped \
             the {gone} oldest, {} since the last registration; the manager will not learn \
             them (a manager that waits for such a run runs its task again)",
            b.max,
            b.max_bytes,
            self.kept.dropped()
        );
    }

    /// Stops trying for good; whoever waits on [`WaitGaveUp`] learns why.
    fn give_up(&mut self, why: GaveUp) {
        log::debug!("giving up: {why}");
        for w in self.gave_up_waiters.drain(..) {
            let _ = w.send(why.clone());
        }
        self.gave_up = Some(why);
    }

    fn retry_later(&mut self, ctx: &mut Context<Self>) -> Duration {
        self.failures += 1;
        let delay = backoff_delay(
            self.settings.backoff_base,
            self.settings.backoff_max,
            self.failures,
        );
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
        delay
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.draining || self.gave_up.is_some() {
            return;
        }
        let mgr = self.settings.mgr.clone();
        let hs = self.settings.handshake.clone();
        async move {
            let stream = TcpStream::connect(&mgr).await?;
            stream.set_nodelay(true)?;
            handshake::initiate(stream, Role::Worker, &hs).await
        }
        .into_actor(self)
        .map(|res, act, ctx| match res {
            Ok(est) => {
                // Tries count until the manager accepts the registration:
                // one that refuses it is retried on the same backoff.
                let failed = act.failures;
                if act.draining {
                    return;
                }
                if failed > 0 {
                    log::info!(
                        "connected to manager at {} after {failed} failed tr{}",
                        act.settings.mgr,
                        if failed == 1 { "y" } else { "ies" }
                    );
                } else {
                    log::info!("connected to manager at {}", act.settings.mgr);
                }
                act.conn = Some(ManagerLink::start(
                    est,
                    ctx.address(),
                    act.slots.clone(),
                    act.registry.names(),
                    act.settings.allow_eval,
                ));
            }
            Err(WireError::BadKey) => act.give_up(GaveUp::BadKey {
                mgr: act.settings.mgr.clone(),
            }),
            Err(e) => {
                let delay = act.retry_later(ctx);
                // One line per doubling of the tries (1, 2, 4, 8, ...), not
                // one per try, while the manager stays away.
                let n = act.failures;
                if n.is_power_of_two() {
                    let shown =
                        humantime::format_duration(Duration::from_millis(delay.as_millis() as u64));
                    log::warn!(
                        "cannot reach manager at {} (try {n}): {}; retrying in {shown}, \
                         next line after try {}",
                        act.settings.mgr,
                        escaped(&e),
                        n.saturating_mul(2)
                    );
                }
            }
        })
        .spawn(ctx);
    }

    fn finish_drain(&mut self) {
        if let Some(c) = self.conn.take() {
            c.do_send(CloseConnection);
        }
        if !self.kept.is_empty() {
            log::warn!(
                "stopping with {} outcome(s) of runs kept for a manager that did not come back",
                self.kept.len()
            );
        }
        for tx in self.drained.drain(..) {
            let _ = tx.send(());
        }
    }
}

impl Actor for WorkerPool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.slots = (0..self.settings.capacity)
            .map(|i| WorkerSlot::new(i as SlotIndex, self.registry.clone()).start())
            .collect();
        self.connect(ctx);
    }
}

impl Handler<Registered> for WorkerPool {
    type Result = ();

    fn handle(&mut self, msg: Registered, _: &mut Self::Context) {
        log::info!(
            "registered as worker {} with {} slot(s): {}",
            msg.worker,
            self.settings.capacity,
            self.registry.names().join(", ")
        );
        self.worker_id = Some(msg.worker);
        self.failures = 0;
        self.manager_max_frame = msg.max_frame;
        self.register_failed = false;
    }
}

impl Handler<TakeKept> for WorkerPool {
    type Result = MessageResult<TakeKept>;

    fn handle(&mut self, _: TakeKept, _: &mut Self::Context) -> Self::Result {
        let (runs, dropped) = self.kept.take();
        MessageResult(KeptOutcomes {
            runs,
            dropped,
            in_register: !self.register_failed,
            manager_max_frame: self.manager_max_frame,
        })
    }
}

impl Handler<SlotFinished> for WorkerPool {
    type Result = ();

    /// A run ended with no connection to take its outcome: kept.
    fn handle(&mut self, msg: SlotFinished, _: &mut Self::Context) {
        let frame = match self.manager_max_frame {
            0 => self.settings.handshake.max_frame,
            theirs => theirs.min(self.settings.handshake.max_frame),
        };
        let kept = KeptRun::new(msg.run, wire_outcome(msg.run, msg.outcome), frame);
        if self.kept.is_empty() {
            log::info!(
                "run {} ended while the manager is away: its outcome is kept for the next \
                 registration (at most {} outcomes, {} bytes)",
                msg.run,
                self.kept.bounds().max,
                self.kept.bounds().max_bytes
            );
        } else {
            log::debug!("run {} ended while the manager is away: kept", msg.run);
        }
        let gone = self.kept.push(kept);
        self.dropped(gone);
    }
}

impl Handler<RefusedForGood> for WorkerPool {
    type Result = ();

    fn handle(&mut self, msg: RefusedForGood, _: &mut Self::Context) {
        let why = msg.0;
        let why = why.strip_prefix("registration refused: ").unwrap_or(&why);
        self.give_up(GaveUp::Refused {
            mgr: self.settings.mgr.clone(),
            why: escaped(why).to_string(),
        });
    }
}

impl Handler<LinkClosed> for WorkerPool {
    type Result = ();

    fn handle(&mut self, msg: LinkClosed, ctx: &mut Self::Context) {
        self.conn = None;
        self.worker_id = None;
        self.register_failed |= msg.register_failed;
        if !msg.unsent.is_empty() || msg.dropped > 0 {
            log::debug!(
                "{} outcome(s) not handed over: kept for the next connection",
                msg.unsent.len()
            );
            let gone = self.kept.put_back(msg.unsent, msg.dropped);
            self.dropped(gone);
        }
        if self.draining {
            self.finish_drain();
            return;
        }
        if self.gave_up.is_some() {
            return;
        }
        match msg.failure {
            Some(e) => log::warn!("lost the manager: {}", escaped(&e)),
            None => log::warn!("the manager closed the connection"),
        }
        self.retry_later(ctx);
    }
}

impl Handler<Drain> for WorkerPool {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        if !self.draining {
            self.draining = true;
            log::info!(
                "draining: waiting up to {:?} for tasks in flight",
                msg.deadline
            );
            if let Some(c) = &self.conn {
                c.do_send(SendDrain);
            }
            let idle = join_all(self.slots.iter().map(|s| s.send(DrainSlot)));
            idle.into_actor(self)
                .map(|_, act, _| act.finish_drain())
                .spawn(ctx);
            ctx.run_later(msg.deadline, |act, _| {
                if !act.drained.is_empty() {
                    log::warn!("drain deadline passed; abandoning tasks still running");
                    act.finish_drain();
                }
            });
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<WaitGaveUp> for WorkerPool {
    type Result = ResponseFuture<GaveUp>;

    fn handle(&mut self, _: WaitGaveUp, _: &mut Self::Context) -> Self::Result {
        if let Some(why) = &self.gave_up {
            let why = why.clone();
            return Box::pin(async move { why });
        }
        let (tx, rx) = oneshot::channel();
        self.gave_up_waiters.push(tx);
        Box::pin(async move {
            match rx.await {
                Ok(why) => why,
                // The pool stopped without giving up: nothing to report, ever.
                Err(_) => std::future::pending().await,
            }
        })
    }
}

impl Handler<GetPoolState> for WorkerPool {
    type Result = ResponseFuture<PoolState>;

    fn handle(&mut self, _: GetPoolState, _: &mut Self::Context) -> Self::Result {
        let asks = join_all(self.slots.iter().map(|s| s.send(GetSlotState)));
        let capacity = self.slots.len();
        let worker_id = self.worker_id;
        Box::pin(async move {
            let idle = asks
                .await
                .into_iter()
                .filter(|a| matches!(a, Ok(None)))
                .count();
            PoolState {
                capacity,
                idle,
                worker_id,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_logarithmically_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let d: Vec<_> = (1..=5).map(|n| backoff_delay(base, max, n)).collect();
        assert_eq!(d[0], base);
        assert!(d.windows(2).all(|w| w[0] < w[1]));
        assert!((d[1].as_secs_f64() - 0.1 * (1.0 + 2f64.ln())).abs() < 1e-6);
        assert_eq!(backoff_delay(base, max, 100_000), max);
    }
}
