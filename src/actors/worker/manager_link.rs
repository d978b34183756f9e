//! `ManagerLink`: the role of a worker's connection to its manager. The
//! actor is `Connection<ManagerLink>`. On start it attaches every slot to
//! itself and registers with the slots' own answers (free, or busy with a
//! run from an earlier connection); then it hands each `assign` straight to
//! the slot it names, each `cancel` to its slot, and each finished run
//! ([`SlotFinished`]) back to the manager.

use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::join_all;

use super::{WorkerPool, WorkerSlot};
use crate::actors::connection::{Connection, Peer};
use crate::logsafe::{escaped, RateLimit, WARN_WINDOW};
use crate::messages::*;
use crate::protocol::{
    value_depth, Established, FromWorker, Outcome, Register, RunningRun, ToWorker, WireError,
    MAX_VALUE_DEPTH,
};

/// The worker side of the connection to the manager. See the module docs.
pub struct ManagerLink {
    pool: Addr<WorkerPool>,
    slots: Arc<[Addr<WorkerSlot>]>,
    tasks: Vec<String>,
    eval: bool,
}

impl ManagerLink {
    /// Starts the connection actor; it registers at once.
    pub fn start(
        est: Established,
        pool: Addr<WorkerPool>,
        slots: Arc<[Addr<WorkerSlot>]>,
        tasks: Vec<String>,
        eval: bool,
    ) -> Addr<Connection<ManagerLink>> {
        Connection::new(
            est,
            ManagerLink {
                pool,
                slots,
                tasks,
                eval,
            },
        )
        .start()
    }

    fn assign(
        conn: &mut Connection<Self>,
        a: crate::protocol::Assign,
        ctx: &mut Context<Connection<Self>>,
    ) {
        let (run, slot) = (a.run_id, a.slot);
        let Some(target) = conn.role.slots.get(slot as usize) else {
            let n = conn.role.slots.len();
            conn.close_with_error(format!("assign of run {run} names slot {slot} of {n}"), ctx);
            return;
        };
        let exec = ExecuteTask {
            run,
            name: a.task,
            args: a.args,
            timeout: a
                .timeout_ms
                .filter(|&ms| ms > 0)
                .map(std::time::Duration::from_millis),
        };
        let request = target.send(exec);
        conn.ask(request, move |res, conn, ctx| match res {
            Ok(Ok(())) => {}
            // Not run: the manager gives the task to another worker.
            Ok(Err(SlotBusy::Draining)) => {
                let outcome = Outcome::Denied {
                    reason: "the worker is shutting down".into(),
                    retry_after_ms: 0,
                };
                conn.send(
                    FromWorker::Finished {
                        run_id: run,
                        outcome,
                    },
                    ctx,
                );
            }
            Ok(Err(SlotBusy::Running(other))) => conn.close_with_error(
                format!("run {run} was assigned to slot {slot}, which is running run {other}"),
                ctx,
            ),
            Err(_) => conn.close_with_error(format!("slot {slot} is gone"), ctx),
        });
    }
}

impl Peer for ManagerLink {
    type In = ToWorker;
    type Out = FromWorker;
    const LABEL: &'static str = "manager";

    fn started(conn: &mut Connection<Self>, ctx: &mut Context<Connection<Self>>) {
        let me = ctx.address().recipient::<SlotFinished>();
        let asks: Vec<_> = conn
            .role
            .slots
            .iter()
            .map(|s| {
                s.send(AttachSlot {
                    reporter: me.clone(),
                })
            })
            .collect();
        let capacity = conn.role.slots.len() as u32;
        // Nothing is received or sent before the registration is out.
        join_all(asks)
            .into_actor(conn)
            .map(move |answers, conn, ctx| {
                let running: Vec<RunningRun> = answers
                    .into_iter()
                    .enumerate()
                    .filter_map(|(slot, a)| match a {
                        Ok(Some(run)) => Some(RunningRun {
                            run_id: run,
                            slot: slot as u32,
                        }),
                        _ => None,
                    })
                    .collect();
                if !running.is_empty() {
                    log::info!(
                        "{} slot(s) still busy with runs from before; the manager decides their fate",
                        running.len()
                    );
                }
                let max_frame = conn.max_frame() as u64;
                let register = Register {
                    capacity,
                    tasks: conn.role.tasks.clone(),
                    eval: conn.role.eval,
                    running,
                    max_frame,
                };
                conn.send(FromWorker::Register(register), ctx);
            })
            .wait(ctx);
    }

    fn received(conn: &mut Connection<Self>, msg: ToWorker, ctx: &mut Context<Connection<Self>>) {
        match msg {
            ToWorker::Registered {
                worker_id,
                max_frame,
            } => {
                conn.limit_frames(max_frame as usize);
                conn.role.pool.do_send(Registered(worker_id));
            }
            ToWorker::Assign(a) => Self::assign(conn, a, ctx),
            ToWorker::Cancel { run_id, slot } => {
                if let Some(s) = conn.role.slots.get(slot as usize) {
                    s.do_send(CancelRun(run_id));
                }
            }
            ToWorker::Error {
                message,
                permanent: true,
            } => conn.role.pool.do_send(RefusedForGood(message)),
            ToWorker::Error { message, .. } => {
                // A refused registration says the same on every try.
                static SAYS: RateLimit = RateLimit::new(WARN_WINDOW);
                crate::log_limited!(
                    SAYS,
                    log::Level::Error,
                    "manager says: {}",
                    escaped(&message)
                );
            }
            ToWorker::Heartbeat {} => {}
        }
    }

    fn stopped(&mut self, failure: Option<String>) {
        self.pool.do_send(LinkClosed(failure));
    }

    fn error_message(message: String) -> Option<FromWorker> {
        Some(FromWorker::Error { message })
    }

    fn substitute(msg: &FromWorker, err: &WireError) -> Option<FromWorker> {
        match (msg, err) {
            (FromWorker::Finished { run_id, .. }, WireError::FrameTooLarge { len, max }) => {
                Some(FromWorker::Finished {
                    run_id: *run_id,
                    outcome: Outcome::too_large(*len, *max),
                })
            }
            _ => None,
        }
    }
}

impl Handler<SlotFinished> for Connection<ManagerLink> {
    type Result = ();

    fn handle(&mut self, msg: SlotFinished, ctx: &mut Self::Context) {
        let outcome = match msg.outcome {
            TaskOutcome::Done(value) if value_depth(&value) > MAX_VALUE_DEPTH => {
                Outcome::too_deep()
            }
            TaskOutcome::Done(value) => Outcome::Done { value },
            TaskOutcome::Failed(error) => {
                log::debug!("run {} failed: {}", msg.run, escaped(&error));
                Outcome::Failed { error }
            }
        };
        self.send(
            FromWorker::Finished {
                run_id: msg.run,
                outcome,
            },
            ctx,
        );
    }
}

impl Handler<SendDrain> for Connection<ManagerLink> {
    type Result = ();

    fn handle(&mut self, _: SendDrain, ctx: &mut Self::Context) {
        self.send(FromWorker::Drain {}, ctx);
    }
}
