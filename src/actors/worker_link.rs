//! `WorkerLink`: the manager's side of one worker connection. Registers the
//! worker with the [`Manager`], forwards assignments to it and its results,
//! refusals and drain notice back.

use actix::prelude::*;

use crate::actors::{Connection, Manager};
use crate::messages::*;
use crate::protocol::{Established, Message, Outcome};

/// One connected worker. See the module docs.
pub struct WorkerLink {
    peer: String,
    manager: Addr<Manager>,
    conn: Option<Addr<Connection>>,
    worker: Option<WorkerId>,
    registering: bool,
}

impl WorkerLink {
    /// Starts a link and its connection actor for an established worker.
    pub fn start(est: Established, manager: Addr<Manager>) -> Addr<WorkerLink> {
        let peer = est.peer_addr.to_string();
        WorkerLink::create(move |ctx| {
            let conn = Connection::new(est, "worker", ctx.address().recipient()).start();
            WorkerLink {
                peer,
                manager,
                conn: Some(conn),
                worker: None,
                registering: false,
            }
        })
    }

    fn send(&self, msg: Message) {
        if let Some(c) = &self.conn {
            c.do_send(Outbound(msg));
        }
    }

    fn close(&mut self, why: String, ctx: &mut Context<Self>) {
        log::warn!("[worker {}] {why}; closing", self.peer);
        self.send(Message::Error { message: why });
        if let Some(c) = self.conn.take() {
            c.do_send(CloseConnection);
        }
        ctx.stop();
    }
}

impl Actor for WorkerLink {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(worker) = self.worker {
            self.manager.do_send(WorkerLost { worker });
        }
        if let Some(c) = self.conn.take() {
            c.do_send(CloseConnection);
        }
    }
}

impl Handler<Inbound> for WorkerLink {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Self::Context) {
        let frame = match msg {
            Inbound::Frame(f) => f,
            Inbound::Closed(_) => {
                self.conn = None;
                ctx.stop();
                return;
            }
        };
        match (self.worker, frame) {
            (None, Message::Register(r)) if !self.registering => {
                self.registering = true;
                let reg = RegisterWorker {
                    address: self.peer.clone(),
                    capacity: r.capacity,
                    tasks: r.tasks,
                    eval: r.eval,
                    link: ctx.address().recipient(),
                };
                self.manager
                    .send(reg)
                    .into_actor(self)
                    .map(|res, act, ctx| match res {
                        Ok(Ok(id)) => {
                            act.worker = Some(id);
                            act.send(Message::Registered { worker_id: id });
                        }
                        Ok(Err(why)) => act.close(format!("registration refused: {why}"), ctx),
                        Err(_) => act.close("manager unavailable".into(), ctx),
                    })
                    .wait(ctx);
            }
            (Some(worker), Message::Finished { task_id, outcome }) => {
                let outcome = match outcome {
                    Outcome::Done { value } => TaskOutcome::Done(value),
                    Outcome::Failed { error } => TaskOutcome::Failed(error),
                    Outcome::Denied { reason, .. } => TaskOutcome::Failed(reason),
                };
                self.manager.do_send(TaskFinished {
                    worker,
                    task: task_id,
                    outcome,
                });
            }
            (Some(worker), Message::Refused { task_id }) => {
                self.manager.do_send(TaskRefused {
                    worker,
                    task: task_id,
                });
            }
            (Some(worker), Message::Drain {}) => {
                self.manager.do_send(WorkerDraining { worker });
            }
            (_, Message::Error { message }) => {
                log::warn!("[worker {}] reports: {message}", self.peer);
            }
            (registered, other) => {
                let when = if registered.is_some() {
                    "after registering"
                } else {
                    "before registering"
                };
                self.close(format!("unexpected {} {when}", other.kind()), ctx);
            }
        }
    }
}

impl Handler<AssignTask> for WorkerLink {
    type Result = ();

    fn handle(&mut self, msg: AssignTask, _: &mut Self::Context) {
        self.send(Message::Assign(crate::protocol::Assign {
            task_id: msg.task,
            task: msg.name,
            args: msg.args,
            timeout_ms: msg.timeout.map(|d| d.as_millis() as u64),
        }));
    }
}
