//! `WorkerPool`: the worker process's actor. Owns the connection to the
//! manager and `capacity` [`WorkerSlot`]s; knows which slots are idle.
//!
//! It registers on connect, reconnects on a logarithmic backoff when the
//! manager goes away, refuses an assignment that finds no idle slot (by the
//! [`RunTask`] mailbox reply, and a `refused` frame to the manager), and on
//! [`Drain`] stops taking work, lets its slots finish, and then leaves.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::actors::{Connection, WorkerSlot};
use crate::messages::*;
use crate::protocol::handshake::{self, HandshakeSettings};
use crate::protocol::{Message, Outcome, Register, Role, WireError};
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
    slots: Vec<Addr<WorkerSlot>>,
    idle: Vec<usize>,
    conn: Option<Addr<Connection>>,
    worker_id: Option<WorkerId>,
    failures: u32,
    draining: bool,
    drained: Vec<oneshot::Sender<()>>,
}

impl WorkerPool {
    /// A pool that runs tasks from `registry`.
    pub fn new(settings: WorkerSettings, registry: Arc<TaskRegistry>) -> WorkerPool {
        WorkerPool {
            settings,
            registry,
            slots: Vec::new(),
            idle: Vec::new(),
            conn: None,
            worker_id: None,
            failures: 0,
            draining: false,
            drained: Vec::new(),
        }
    }

    fn send(&self, msg: Message) {
        if let Some(c) = &self.conn {
            c.do_send(Outbound(msg));
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
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
                act.failures = 0;
                if act.draining {
                    return;
                }
                log::info!("connected to manager at {}", act.settings.mgr);
                let conn = Connection::new(est, "manager", ctx.address().recipient()).start();
                act.conn = Some(conn);
                act.send(Message::Register(Register {
                    capacity: act.settings.capacity as u32,
                    tasks: act.registry.names(),
                    eval: act.settings.allow_eval,
                }));
            }
            Err(e) => {
                act.failures += 1;
                let delay = backoff_delay(
                    act.settings.backoff_base,
                    act.settings.backoff_max,
                    act.failures,
                );
                let shown =
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64));
                if matches!(e, WireError::BadKey) {
                    log::error!(
                        "manager at {} refused our key ({e}); retrying in {shown}",
                        act.settings.mgr
                    );
                } else {
                    log::warn!(
                        "cannot reach manager at {}: {e}; retrying in {shown}",
                        act.settings.mgr
                    );
                }
                ctx.run_later(delay, |act, ctx| act.connect(ctx));
            }
        })
        .spawn(ctx);
    }

    fn try_run(&mut self, run: RunTask) -> Result<(), PoolBusy> {
        if self.draining {
            return Err(PoolBusy::Draining);
        }
        let slot = self.idle.pop().ok_or(PoolBusy::NoIdleSlot)?;
        self.slots[slot].do_send(ExecuteTask(run));
        Ok(())
    }

    fn maybe_drained(&mut self) {
        if self.draining && self.idle.len() == self.slots.len() {
            self.finish_drain();
        }
    }

    fn finish_drain(&mut self) {
        if let Some(c) = self.conn.take() {
            c.do_send(CloseConnection);
        }
        for tx in self.drained.drain(..) {
            let _ = tx.send(());
        }
    }
}

impl Actor for WorkerPool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address().recipient();
        for i in 0..self.settings.capacity {
            self.slots
                .push(WorkerSlot::new(i, self.registry.clone(), me.clone()).start());
        }
        self.idle = (0..self.settings.capacity).rev().collect();
        self.connect(ctx);
    }
}

impl Handler<Inbound> for WorkerPool {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Self::Context) {
        match msg {
            Inbound::Frame(Message::Registered { worker_id }) => {
                log::info!(
                    "registered as worker {worker_id} with {} slot(s): {}",
                    self.settings.capacity,
                    self.registry.names().join(", ")
                );
                self.worker_id = Some(worker_id);
            }
            Inbound::Frame(Message::Assign(a)) => {
                let task_id = a.task_id;
                let run = RunTask {
                    task: a.task_id,
                    name: a.task,
                    args: a.args,
                    timeout: a.timeout_ms.map(Duration::from_millis),
                };
                if let Err(why) = self.try_run(run) {
                    log::debug!("refusing task {task_id}: {why}");
                    self.send(Message::Refused { task_id });
                }
            }
            Inbound::Frame(Message::Error { message }) => {
                log::error!("manager says: {message}");
            }
            Inbound::Frame(other) => {
                log::warn!("unexpected {} from the manager; ignored", other.kind());
            }
            Inbound::Closed(why) => {
                self.conn = None;
                self.worker_id = None;
                if self.draining {
                    self.finish_drain();
                    return;
                }
                match why {
                    Some(e) => log::warn!("lost the manager: {e}"),
                    None => log::warn!("the manager closed the connection"),
                }
                self.failures += 1;
                let delay = backoff_delay(
                    self.settings.backoff_base,
                    self.settings.backoff_max,
                    self.failures,
                );
                ctx.run_later(delay, |act, ctx| act.connect(ctx));
            }
        }
    }
}

impl Handler<RunTask> for WorkerPool {
    type Result = Result<(), PoolBusy>;

    fn handle(&mut self, msg: RunTask, _: &mut Self::Context) -> Self::Result {
        self.try_run(msg)
    }
}

impl Handler<SlotFinished> for WorkerPool {
    type Result = ();

    fn handle(&mut self, msg: SlotFinished, _: &mut Self::Context) {
        self.idle.push(msg.slot);
        let outcome = match msg.outcome {
            TaskOutcome::Done(value) => Outcome::Done { value },
            TaskOutcome::Failed(error) => {
                log::debug!("task {} failed: {error}", msg.task);
                Outcome::Failed { error }
            }
        };
        self.send(Message::Finished {
            task_id: msg.task,
            outcome,
        });
        self.maybe_drained();
    }
}

impl Handler<Drain> for WorkerPool {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        if !self.draining {
            self.draining = true;
            let busy = self.slots.len() - self.idle.len();
            log::info!(
                "draining: {busy} task(s) in flight, waiting up to {:?}",
                msg.deadline
            );
            self.send(Message::Drain {});
            ctx.run_later(msg.deadline, |act, _| {
                if !act.drained.is_empty() {
                    log::warn!("drain deadline passed; abandoning tasks still running");
                    act.finish_drain();
                }
            });
        }
        self.maybe_drained();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<GetPoolState> for WorkerPool {
    type Result = MessageResult<GetPoolState>;

    fn handle(&mut self, _: GetPoolState, _: &mut Self::Context) -> Self::Result {
        MessageResult(PoolState {
            capacity: self.slots.len(),
            idle: self.idle.len(),
            worker_id: self.worker_id,
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
