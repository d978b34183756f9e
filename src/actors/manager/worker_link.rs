//! `WorkerLink`: the role of a manager-side connection to one worker. The
//! actor is `Connection<WorkerLink>`: it registers the worker with the
//! [`Manager`], sends finished runs and the drain notice straight to it, and
//! encodes the manager's orders ([`WorkerOrder`]) for the worker. It shares
//! the bytes it holds for the worker with the manager ([`LinkLoad`]) and
//! tells it when they fall back under their limit after it held an assign
//! back.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;

use super::Manager;
use crate::actors::connection::{Connection, Peer};
use crate::log_limited;
use crate::logsafe::{escaped, RateLimit, WARN_WINDOW};
use crate::messages::*;
use crate::protocol::{
    value_depth, Assign, Established, FromWorker, Outcome, ToWorker, WireMessage, MAX_VALUE_DEPTH,
};

/// One connected worker. See the module docs.
pub struct WorkerLink {
    peer: String,
    manager: Addr<Manager>,
    worker: Option<WorkerId>,
    registering: bool,
    load: Option<Arc<LinkLoad>>,
}

impl WorkerLink {
    /// Starts the connection actor for an established worker.
    pub fn start(est: Established, manager: Addr<Manager>) -> Addr<Connection<WorkerLink>> {
        Self::connection(est, manager).start()
    }

    /// The connection actor for an established worker, not yet started.
    pub fn connection(est: Established, manager: Addr<Manager>) -> Connection<WorkerLink> {
        let peer = est.peer_addr.to_string();
        Connection::new(
            est,
            WorkerLink {
                peer,
                manager,
                worker: None,
                registering: false,
                load: None,
            },
        )
    }

    fn register(
        conn: &mut Connection<Self>,
        r: crate::protocol::Register,
        ctx: &mut Context<Connection<Self>>,
    ) {
        conn.role.registering = true;
        let ours = conn.max_frame();
        if r.max_frame != 0 && r.max_frame < ours as u64 {
            let why = format!(
                "the worker accepts frames up to {} bytes, less than the manager's {ours}: \
                 give both the same security.max_frame_bytes",
                r.max_frame
            );
            Self::refuse(conn, Refusal::permanent(why), ctx);
            return;
        }
        let load = Arc::new(LinkLoad::new(conn.backlog(), conn.max_outgoing() / 2));
        conn.role.load = Some(load.clone());
        let reg = RegisterWorker {
            address: conn.role.peer.clone(),
            capacity: r.capacity,
            tasks: r.tasks,
            eval: r.eval,
            running: r.running.iter().map(|x| (x.run_id, x.slot)).collect(),
            link: ctx.address().recipient(),
            load: Some(load),
            // A handed-over `denied` never ran: after the recovery grace
            // its task is queued again, as if nobody had claimed it.
            finished: r
                .finished
                .into_iter()
                .filter_map(|f| task_outcome(f.outcome).map(|o| (f.run_id, o)))
                .collect(),
            finished_dropped: r.finished_dropped,
        };
        // Orders the manager sends while registering wait in the mailbox
        // until `registered` is out.
        conn.role
            .manager
            .send(reg)
            .into_actor(conn)
            .map(|res, conn, ctx| match res {
                Ok(Ok(id)) => {
                    conn.role.worker = Some(id);
                    let max_frame = conn.max_frame() as u64;
                    conn.send(
                        ToWorker::Registered {
                            worker_id: id,
                            max_frame,
                        },
                        ctx,
                    );
                }
                Ok(Err(refusal)) => Self::refuse(conn, refusal, ctx),
                Err(_) => conn.close_with_error("manager unavailable".into(), ctx),
            })
            .wait(ctx);
    }

    /// Sends `error` `registration refused: WHY`, marked `permanent` when
    /// retrying cannot help, then closes. Logged at most once per window.
    fn refuse(conn: &mut Connection<Self>, refusal: Refusal, ctx: &mut Context<Connection<Self>>) {
        static REFUSALS: RateLimit = RateLimit::new(WARN_WINDOW);
        let message = format!("registration refused: {}", refusal.why);
        log_limited!(
            REFUSALS,
            log::Level::Warn,
            "[worker {}] {message}; closing",
            conn.role.peer
        );
        conn.send(
            ToWorker::Error {
                message,
                permanent: refusal.permanent,
            },
            ctx,
        );
        conn.close(ctx);
    }
}

impl Peer for WorkerLink {
    type In = FromWorker;
    type Out = ToWorker;
    const LABEL: &'static str = "worker";

    fn flushed(conn: &mut Connection<Self>, _: &mut Context<Connection<Self>>) {
        let (Some(load), Some(worker)) = (&conn.role.load, conn.role.worker) else {
            return;
        };
        if load.wanted.load(Ordering::Relaxed) && !load.over(0) {
            load.wanted.store(false, Ordering::Relaxed);
            conn.role.manager.do_send(WorkerReady { worker });
        }
    }

    fn received(conn: &mut Connection<Self>, msg: FromWorker, ctx: &mut Context<Connection<Self>>) {
        match (conn.role.worker, msg) {
            (None, FromWorker::Register(r)) if !conn.role.registering => {
                Self::register(conn, r, ctx)
            }
            (Some(worker), FromWorker::Finished { run_id, outcome }) => {
                // Results are held to the bound on arguments: no client is
                // sent a value deeper than PROTOCOL.md §5 lets it expect.
                let outcome = match outcome {
                    Outcome::Denied { reason, .. } => {
                        return conn.role.manager.do_send(RunRefused {
                            worker,
                            run: run_id,
                            reason,
                        })
                    }
                    outcome => outcome,
                };
                let Some(outcome) = task_outcome(outcome) else {
                    return;
                };
                conn.role.manager.do_send(RunFinished {
                    worker,
                    run: run_id,
                    outcome,
                });
            }
            (Some(worker), FromWorker::Drain {}) => {
                conn.role.manager.do_send(WorkerDraining { worker })
            }
            (_, FromWorker::Error { message }) => {
                static REPORTS: RateLimit = RateLimit::new(WARN_WINDOW);
                log_limited!(
                    REPORTS,
                    log::Level::Warn,
                    "[worker {}] reports: {}",
                    conn.role.peer,
                    escaped(&message)
                );
            }
            (_, FromWorker::Heartbeat {}) => {}
            (registered, other) => {
                let when = if registered.is_some() {
                    "after registering"
                } else {
                    "before registering"
                };
                conn.close_with_error(format!("unexpected {} {when}", other.kind()), ctx);
            }
        }
    }

    fn stopped(&mut self, _failure: Option<String>) {
        if let Some(worker) = self.worker {
            self.manager.do_send(WorkerLost { worker });
        }
    }

    fn error_message(message: String) -> Option<ToWorker> {
        Some(ToWorker::Error {
            message,
            permanent: false,
        })
    }
}

impl Handler<WorkerOrder> for Connection<WorkerLink> {
    type Result = ();

    fn handle(&mut self, msg: WorkerOrder, ctx: &mut Self::Context) {
        let wire = match msg {
            WorkerOrder::Assign {
                run,
                slot,
                name,
                args,
                timeout,
                reserved,
            } => {
                if let Some(load) = &self.role.load {
                    load.reserved.fetch_sub(reserved, Ordering::Relaxed);
                }
                ToWorker::Assign(Assign {
                    run_id: run,
                    slot,
                    task: name,
                    args,
                    timeout_ms: timeout.map(|d| d.as_millis() as u64),
                })
            }
            WorkerOrder::Cancel { run, slot } => ToWorker::Cancel { run_id: run, slot },
        };
        self.send(wire, ctx);
    }
}

/// A worker's outcome as the manager takes it: a result nested deeper than
/// the bound on values becomes the failure that says so (no client is sent
/// a value deeper than PROTOCOL.md §5 lets it expect); `None` for a
/// `denied`, a run that never started.
fn task_outcome(outcome: Outcome) -> Option<TaskOutcome> {
    match outcome {
        Outcome::Done { value } if value_depth(&value) > MAX_VALUE_DEPTH => {
            task_outcome(Outcome::too_deep())
        }
        Outcome::Done { value } => Some(TaskOutcome::Done(value)),
        Outcome::Failed { error } => Some(TaskOutcome::Failed(error)),
        Outcome::Denied { .. } => None,
    }
}
