//! `ManagerLink`: the role of a worker's connection to its manager. The
//! actor is `Connection<ManagerLink>`. On start it attaches every slot to
//! itself and registers with the slots' own answers (free, or busy with a
//! run from an earlier connection) and with the outcomes the pool kept
//! while the worker had no manager; then it hands each `assign` straight to
//! the slot it names, each `cancel` to its slot, and each finished run
//! ([`SlotFinished`]) back to the manager.
//!
//! **Hand-over.** The kept outcomes go in the `register` as far as they fit
//! one frame (the smaller of this worker's limit and the one the last
//! manager announced), oldest first; the rest follow as `finished`
//! messages once `registered` arrives, as do the outcomes of runs that end
//! in between. Until then the connection holds them all: if it ends first,
//! they go back to the pool for the next connection (docs/PROTOCOL.md
//! §7.4).

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::{join, join_all};

use super::{KeptRun, WorkerPool, WorkerSlot};
use crate::actors::connection::{Connection, Peer};
use crate::logsafe::{escaped, RateLimit, WARN_WINDOW};
use crate::messages::*;
use crate::protocol::{
    codec, value_depth, Established, FromWorker, Outcome, Register, RunningRun, ToWorker,
    WireError, MAX_VALUE_DEPTH,
};

/// The worker side of the connection to the manager. See the module docs.
pub struct ManagerLink {
    pool: Addr<WorkerPool>,
    slots: Arc<[Addr<WorkerSlot>]>,
    tasks: Vec<String>,
    eval: bool,
    /// Whether `registered` came.
    registered: bool,
    /// Whether the manager sent an `error` (a refused registration).
    refused: bool,
    /// Outcomes not handed over yet, oldest first: the first `in_register`
    /// went in the `register`.
    held: VecDeque<KeptRun>,
    in_register: usize,
    /// Dropped outcomes announced in the `register` (`finished_dropped`).
    dropped: u64,
}

/// What a slot's outcome becomes on the wire: a result nested deeper than
/// [`MAX_VALUE_DEPTH`] is sent as the failure saying so.
pub fn wire_outcome(run: RunId, outcome: TaskOutcome) -> Outcome {
    match outcome {
        TaskOutcome::Done(value) if value_depth(&value) > MAX_VALUE_DEPTH => Outcome::too_deep(),
        TaskOutcome::Done(value) => Outcome::Done { value },
        TaskOutcome::Failed(error) => {
            log::debug!("run {run} failed: {}", escaped(&error));
            Outcome::Failed { error }
        }
    }
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
                registered: false,
                refused: false,
                held: VecDeque::new(),
                in_register: 0,
                dropped: 0,
            },
        )
        .start()
    }

    /// The manager took the registration: the outcomes in the `register`
    /// are handed over, and the others held are sent now, oldest first.
    fn handed_over(conn: &mut Connection<Self>, ctx: &mut Context<Connection<Self>>) {
        let role = &mut conn.role;
        role.registered = true;
        role.held.drain(..role.in_register);
        role.in_register = 0;
        role.dropped = 0;
        while conn.can_send(ctx) {
            let Some(kept) = conn.role.held.pop_front() else {
                break;
            };
            let (run_id, outcome) = (kept.run.run_id, kept.run.outcome);
            conn.send(FromWorker::Finished { run_id, outcome }, ctx);
        }
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
        let keeper = conn.role.pool.clone().recipient::<SlotFinished>();
        let asks: Vec<_> = conn
            .role
            .slots
            .iter()
            .map(|s| {
                s.send(AttachSlot {
                    reporter: me.clone(),
                    keeper: keeper.clone(),
                })
            })
            .collect();
        let capacity = conn.role.slots.len() as u32;
        let kept = conn.role.pool.send(TakeKept);
        // Nothing is received or sent before the registration is out.
        join(join_all(asks), kept)
            .into_actor(conn)
            .map(move |(answers, kept), conn, ctx| {
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
                let max_frame = conn.max_frame();
                let kept = kept.unwrap_or_default();
                let mut register = Register {
                    capacity,
                    tasks: conn.role.tasks.clone(),
                    eval: conn.role.eval,
                    running,
                    max_frame: max_frame as u64,
                    finished: Vec::new(),
                    finished_dropped: kept.dropped,
                };
                if kept.in_register && !kept.runs.is_empty() {
                    // The manager's limit may be below ours: it accepts a
                    // worker whose limit is larger.
                    let frame = match kept.manager_max_frame {
                        0 => max_frame,
                        theirs => theirs.min(max_frame),
                    };
                    let base = codec::encoded_len(&FromWorker::Register(register.clone()));
                    let n = super::kept::fitting(&kept.runs, base, frame);
                    register.finished = kept.runs.iter().take(n).map(|k| k.run.clone()).collect();
                    conn.role.in_register = n;
                }
                if !kept.runs.is_empty() || kept.dropped > 0 {
                    log::info!(
                        "handing over {} outcome(s) of runs that ended while the manager was \
                         away: {} in the registration, the rest once it is accepted; {} \
                         dropped past the bounds",
                        kept.runs.len(),
                        conn.role.in_register,
                        kept.dropped
                    );
                }
                conn.role.held = kept.runs;
                conn.role.dropped = kept.dropped;
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
                conn.role.pool.do_send(Registered {
                    worker: worker_id,
                    max_frame: max_frame as usize,
                });
                Self::handed_over(conn, ctx);
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
            } => {
                conn.role.refused = true;
                conn.role.pool.do_send(RefusedForGood(message))
            }
            ToWorker::Error { message, .. } => {
                conn.role.refused = true;
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
        self.pool.do_send(LinkClosed {
            failure,
            // Closed without a word while registering: the `register` may
            // have been too large for the manager.
            register_failed: !self.registered && !self.refused && self.in_register > 0,
            unsent: std::mem::take(&mut self.held),
            dropped: if self.registered { 0 } else { self.dropped },
        });
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
        let outcome = wire_outcome(msg.run, msg.outcome);
        if self.role.registered && self.can_send(ctx) {
            self.send(
                FromWorker::Finished {
                    run_id: msg.run,
                    outcome,
                },
                ctx,
            );
            return;
        }
        // Before `registered` (or on a connection that is going), it waits
        // with the kept ones: sent after them, or given back to the pool.
        let kept = KeptRun::new(msg.run, outcome, self.max_frame());
        self.role.held.push_back(kept);
    }
}

impl Handler<SendDrain> for Connection<ManagerLink> {
    type Result = ();

    fn handle(&mut self, _: SendDrain, ctx: &mut Self::Context) {
        self.send(FromWorker::Drain {}, ctx);
    }
}
