//! What the dashboard's actions ask of the manager beyond the messages
//! clients already send (cancelling by id is [`crate::messages::CancelById`],
//! a dead task's retry [`crate::messages::RetryDead`]): draining a worker
//! from the manager's side ([`DrainWorker`]). It takes the path a worker's
//! own `drain` takes ([`WorkerDraining`]): the worker is assigned nothing
//! more, its runs go on, and its slots leave the capacity. The worker is not
//! told; it stays registered until it goes, and a worker that registers
//! again is a new one, taking tasks.

use actix::prelude::*;

use super::Manager;
use crate::messages::{WorkerDraining, WorkerId};

/// HTTP side → Manager: stop assigning tasks to worker `worker`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "DrainResult")]
pub struct DrainWorker {
    /// The worker.
    pub worker: WorkerId,
}

/// What a [`DrainWorker`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainResult {
    /// It was taking tasks and now drains.
    Drained,
    /// It was draining already.
    AlreadyDraining,
    /// No worker by that id is registered.
    Unknown,
}

impl Handler<DrainWorker> for Manager {
    type Result = MessageResult<DrainWorker>;

    fn handle(&mut self, msg: DrainWorker, ctx: &mut Self::Context) -> Self::Result {
        let result = match self.sched.get(msg.worker) {
            None => DrainResult::Unknown,
            Some(w) if w.draining => DrainResult::AlreadyDraining,
            Some(_) => {
                log::info!("worker {} drained from the HTTP side", msg.worker);
                <Self as Handler<WorkerDraining>>::handle(
                    self,
                    WorkerDraining { worker: msg.worker },
                    ctx,
                );
                DrainResult::Drained
            }
        };
        MessageResult(result)
    }
}
