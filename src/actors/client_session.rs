//! `ClientSession`: one per client connection on the manager. Turns the
//! client's wire requests into [`SubmitTask`] / [`GetStatus`] messages and
//! the manager's answers back into wire replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;

use crate::actors::{Connection, Manager};
use crate::messages::*;
use crate::protocol::{Established, Message, Outcome, Submit};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// One connected client. See the module docs.
pub struct ClientSession {
    id: SessionId,
    peer: String,
    manager: Addr<Manager>,
    conn: Option<Addr<Connection>>,
}

impl ClientSession {
    /// Starts a session and its connection actor for an established client.
    pub fn start(est: Established, manager: Addr<Manager>) -> Addr<ClientSession> {
        let peer = est.peer_addr.to_string();
        ClientSession::create(move |ctx| {
            let conn = Connection::new(est, "client", ctx.address().recipient()).start();
            let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
            log::debug!("[client {peer}] session {id} opened");
            ClientSession {
                id,
                peer,
                manager,
                conn: Some(conn),
            }
        })
    }

    fn send(&self, msg: Message) {
        if let Some(c) = &self.conn {
            c.do_send(Outbound(msg));
        }
    }

    fn submit(&mut self, s: Submit, ctx: &mut Context<Self>) {
        let request_id = s.id;
        let spec = TaskSpec {
            name: s.task,
            args: s.args,
            priority: s.priority,
            timeout: s.timeout_ms.map(Duration::from_millis),
            attempts: s.attempts,
        };
        let msg = SubmitTask {
            session: self.id,
            request_id,
            spec,
            reply_to: ctx.address().recipient(),
        };
        self.manager
            .send(msg)
            .into_actor(self)
            .map(move |res, act, _| {
                let outcome = match res {
                    Ok(Ok(_)) => return,
                    Ok(Err(Rejection::Denied {
                        reason,
                        retry_after,
                    })) => Outcome::Denied {
                        reason,
                        retry_after_ms: retry_after.as_millis().max(1) as u64,
                    },
                    Ok(Err(Rejection::Invalid(error))) => Outcome::Failed { error },
                    Err(_) => Outcome::Failed {
                        error: "manager unavailable".into(),
                    },
                };
                act.send(Message::Reply {
                    id: request_id,
                    outcome,
                });
            })
            .spawn(ctx);
    }

    fn protocol_error(&mut self, what: String, ctx: &mut Context<Self>) {
        log::warn!("[client {}] protocol error: {what}; closing", self.peer);
        self.send(Message::Error { message: what });
        if let Some(c) = self.conn.take() {
            c.do_send(CloseConnection);
        }
        ctx.stop();
    }
}

impl Actor for ClientSession {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.manager.do_send(ClientGone { session: self.id });
        if let Some(c) = self.conn.take() {
            c.do_send(CloseConnection);
        }
        log::debug!("[client {}] session {} closed", self.peer, self.id);
    }
}

impl Handler<Inbound> for ClientSession {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Self::Context) {
        match msg {
            Inbound::Frame(Message::Submit(s)) => self.submit(s, ctx),
            Inbound::Frame(Message::Ping { id }) => self.send(Message::Pong { id }),
            Inbound::Frame(Message::StatusRequest { id }) => {
                self.manager
                    .send(GetStatus)
                    .into_actor(self)
                    .map(move |res, act, _| {
                        if let Ok(status) = res {
                            act.send(Message::Status { id, status });
                        }
                    })
                    .spawn(ctx);
            }
            Inbound::Frame(other) => {
                self.protocol_error(format!("a client may not send {}", other.kind()), ctx)
            }
            Inbound::Closed(_) => {
                self.conn = None;
                ctx.stop();
            }
        }
    }
}

impl Handler<TaskReply> for ClientSession {
    type Result = ();

    fn handle(&mut self, msg: TaskReply, _: &mut Self::Context) {
        let outcome = match msg.outcome {
            TaskOutcome::Done(value) => Outcome::Done { value },
            TaskOutcome::Failed(error) => Outcome::Failed { error },
        };
        self.send(Message::Reply {
            id: msg.request_id,
            outcome,
        });
    }
}
