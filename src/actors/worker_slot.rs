//! `WorkerSlot`: runs one task at a time for its [`WorkerPool`](crate::actors::WorkerPool).
//!
//! The task's future runs inside the slot's own actor future, under
//! `catch_unwind`: a panic in it is caught and reported as a failure, and a
//! timeout drops (cancels) it; the slot itself never dies with the task.
//! Blocking work runs on a blocking thread (see [`crate::task::run_blocking`]).

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures_util::FutureExt;

use crate::messages::*;
use crate::task::{panic_text, TaskRegistry};

/// What a slot is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// Ready for a task.
    Idle,
    /// Running `task` since `since`.
    Busy {
        /// The task.
        task: TaskId,
        /// When it started.
        since: Instant,
    },
}

/// One slot. See the module docs.
pub struct WorkerSlot {
    index: usize,
    registry: Arc<TaskRegistry>,
    pool: Recipient<SlotFinished>,
    state: SlotState,
}

impl WorkerSlot {
    /// Slot `index`, reporting to `pool`.
    pub fn new(
        index: usize,
        registry: Arc<TaskRegistry>,
        pool: Recipient<SlotFinished>,
    ) -> WorkerSlot {
        WorkerSlot {
            index,
            registry,
            pool,
            state: SlotState::Idle,
        }
    }
}

impl Actor for WorkerSlot {
    type Context = Context<Self>;
}

impl Handler<ExecuteTask> for WorkerSlot {
    type Result = Result<(), PoolBusy>;

    fn handle(&mut self, msg: ExecuteTask, ctx: &mut Self::Context) -> Self::Result {
        if self.state != SlotState::Idle {
            return Err(PoolBusy::NoIdleSlot);
        }
        let run = msg.0;
        let since = Instant::now();
        self.state = SlotState::Busy {
            task: run.task,
            since,
        };
        let task_id = run.task;
        let name = run.name;
        let func = self.registry.get(&name);
        let task_ctx = crate::task::TaskContext {
            task_id: run.task,
            name: name.clone(),
            // A timeout too far out to represent is no deadline at all.
            deadline: run.timeout.and_then(|t| since.checked_add(t)),
            cancel: crate::task::CancellationToken::new(),
        };
        let timeout = run.timeout;
        let args = run.args;
        let work = async move {
            let Some(func) = func else {
                return TaskOutcome::Failed(if name == crate::task::EVAL_TASK {
                    "this worker does not allow eval".to_string()
                } else {
                    format!("this worker does not provide task {name}")
                });
            };
            // Run in place; a panic unwinds to catch_unwind and a timeout
            // drops (cancels) the future.
            let fut = std::panic::AssertUnwindSafe(func(task_ctx, args)).catch_unwind();
            let joined = match timeout {
                Some(limit) => match tokio::time::timeout(limit, fut).await {
                    Ok(j) => j,
                    Err(_) => {
                        return TaskOutcome::Failed(format!(
                            "task {name} timed out after {}",
                            humantime::format_duration(limit)
                        ));
                    }
                },
                None => fut.await,
            };
            match joined {
                Ok(Ok(value)) => TaskOutcome::Done(value),
                Ok(Err(e)) => TaskOutcome::Failed(e.0),
                Err(p) => TaskOutcome::Failed(format!("task {name} panicked: {}", panic_text(p))),
            }
        };
        work.into_actor(self)
            .map(move |outcome, act, _| {
                act.state = SlotState::Idle;
                act.pool.do_send(SlotFinished {
                    slot: act.index,
                    task: task_id,
                    outcome,
                    started: since,
                });
            })
            .spawn(ctx);
        Ok(())
    }
}
