//! `WorkerSlot`: runs one task at a time. Its own state (idle, or busy with
//! one run) is the worker's record of capacity: an `ExecuteTask` for a busy
//! slot is refused by the mailbox reply.
//!
//! The task's future runs inside the slot's own actor future, under
//! `catch_unwind`: a panic in it is a failure, and the slot lives on. A
//! cancel or the task's timeout cancels the task's token and the slot keeps
//! waiting for the future, which ends promptly for every kind of task but a
//! blocking native one (whose thread cannot be stopped). The slot is free
//! again only when the future has ended, and then reports the run finished:
//! to the connection that attached it, or to the pool, which keeps the
//! outcome for the next registration, once that connection is gone.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::messages::*;
use crate::task::{panic_text, TaskRegistry};

struct Current {
    run: RunId,
    cancel: CancellationToken,
    /// Why the slot stopped the run (timeout, cancel), once it did.
    stopped: Option<String>,
}

/// One slot. See the module docs.
pub struct WorkerSlot {
    index: SlotIndex,
    registry: Arc<TaskRegistry>,
    reporter: Option<Recipient<SlotFinished>>,
    keeper: Option<Recipient<SlotFinished>>,
    current: Option<Current>,
    draining: bool,
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl WorkerSlot {
    /// Slot `index`, running tasks from `registry`.
    pub fn new(index: SlotIndex, registry: Arc<TaskRegistry>) -> WorkerSlot {
        WorkerSlot {
            index,
            registry,
            reporter: None,
            keeper: None,
            current: None,
            draining: false,
            idle_waiters: Vec::new(),
        }
    }

    /// Stops the current run if it is `run`, with `why` as its outcome.
    fn stop(&mut self, run: RunId, why: String) {
        let Some(c) = self.current.as_mut().filter(|c| c.run == run) else {
            return;
        };
        if c.stopped.is_none() {
            log::debug!(
                "slot {}: stopping run {run}: {}",
                self.index,
                crate::logsafe::escaped(&why)
            );
            c.stopped = Some(why);
            c.cancel.cancel();
        }
    }

    fn finish(&mut self, run: RunId, outcome: TaskOutcome) {
        let Some(c) = self.current.take().filter(|c| c.run == run) else {
            return;
        };
        let outcome = match c.stopped {
            Some(why) => TaskOutcome::Failed(why),
            None => outcome,
        };
        let done = SlotFinished {
            slot: self.index,
            run,
            outcome,
        };
        // A connection that has stopped is no longer connected. One that
        // stops with this still in its mailbox loses it, as it loses the
        // frames it had queued: the manager then runs the task again.
        match (&self.reporter, &self.keeper) {
            (Some(r), _) if r.connected() => r.do_send(done),
            (_, Some(k)) => k.do_send(done),
            _ => log::debug!("slot {}: run {run} ended with nobody to tell", self.index),
        }
        for w in self.idle_waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

impl Actor for WorkerSlot {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A cancel (`do_send`) must not overtake the `ExecuteTask` (`send`)
        // it follows, which a full mailbox could make it do.
        ctx.set_mailbox_capacity(0);
    }
}

impl Handler<ExecuteTask> for WorkerSlot {
    type Result = Result<(), SlotBusy>;

    fn handle(&mut self, msg: ExecuteTask, ctx: &mut Self::Context) -> Self::Result {
        if let Some(c) = &self.current {
            return Err(SlotBusy::Running(c.run));
        }
        if self.draining {
            return Err(SlotBusy::Draining);
        }
        let run = msg.run;
        let since = Instant::now();
        let cancel = CancellationToken::new();
        self.current = Some(Current {
            run,
            cancel: cancel.clone(),
            stopped: None,
        });
        let name = msg.name;
        let func = self.registry.get(&name);
        let task_ctx = crate::task::TaskContext {
            task_id: run,
            name: name.clone(),
            // A timeout too far out to represent is no deadline at all.
            deadline: msg.timeout.and_then(|t| since.checked_add(t)),
            cancel,
        };
        if let Some(limit) = msg.timeout {
            let why = format!(
                "task {name} timed out after {}",
                humantime::format_duration(limit)
            );
            ctx.run_later(limit, move |act, _| act.stop(run, why));
        }
        let args = msg.args;
        let work = async move {
            let Some(func) = func else {
                return TaskOutcome::Failed(if name == crate::task::EVAL_TASK {
                    "this worker does not allow eval".to_string()
                } else {
                    format!("this worker does not provide task {name}")
                });
            };
            match std::panic::AssertUnwindSafe(func(task_ctx, args))
                .catch_unwind()
                .await
            {
                Ok(Ok(value)) => TaskOutcome::Done(value),
                Ok(Err(e)) => TaskOutcome::Failed(e.0),
                Err(p) => TaskOutcome::Failed(format!("task {name} panicked: {}", panic_text(p))),
            }
        };
        work.into_actor(self)
            .map(move |outcome, act, _| act.finish(run, outcome))
            .spawn(ctx);
        Ok(())
    }
}

impl Handler<CancelRun> for WorkerSlot {
    type Result = ();

    fn handle(&mut self, msg: CancelRun, _: &mut Self::Context) {
        self.stop(msg.0, format!("run {} was cancelled", msg.0));
    }
}

impl Handler<AttachSlot> for WorkerSlot {
    type Result = Option<RunId>;

    fn handle(&mut self, msg: AttachSlot, _: &mut Self::Context) -> Option<RunId> {
        self.reporter = Some(msg.reporter);
        self.keeper = Some(msg.keeper);
        self.current.as_ref().map(|c| c.run)
    }
}

impl Handler<GetSlotState> for WorkerSlot {
    type Result = Option<RunId>;

    fn handle(&mut self, _: GetSlotState, _: &mut Self::Context) -> Option<RunId> {
        self.current.as_ref().map(|c| c.run)
    }
}

impl Handler<DrainSlot> for WorkerSlot {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: DrainSlot, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        let (tx, rx) = oneshot::channel();
        if self.current.is_some() {
            self.idle_waiters.push(tx);
        } else {
            let _ = tx.send(());
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
