//! `ClientSession`: the role of a manager-side connection to one client.
//! The actor is `Connection<ClientSession>`: it decodes the client's
//! requests and sends them straight to the [`Manager`], and encodes the
//! manager's answers ([`TaskReply`]) for the client. Requests by task id
//! (`result_request`, `cancel_task`) become [`GetResult`] and
//! [`CancelById`], and `dead_request` becomes [`GetDeadList`], answered on
//! this connection when the manager replies.
//!
//! An accepted submit is answered `accepted` with its task's id when it is
//! detached, or when it asked (`want_id`) and the manager has a task store;
//! an attached task's `reply` comes later either way.
//!
//! A submit is checked here, where the wire is known, before the manager
//! sees it: arguments nested too deep for the decoders, or too large for the
//! `assign` frame they must travel in to a worker, fail that one task at
//! once and harm nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use actix::prelude::*;

use super::Manager;
use crate::actors::connection::{Connection, Peer};
use crate::messages::*;
use crate::protocol::{
    codec, value_depth, Assign, CancelState, ClusterStatus, DeadList, Established, FromClient,
    Outcome, Submit, ToClient, ToWorker, Value, WireError, DEAD_LIST_MAX, MAX_VALUE_DEPTH,
};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A session id no other session has: for each client connection, and for
/// the manager's other sources of submits (its periodic tasks, the HTTP
/// side's actions).
pub fn fresh_session_id() -> SessionId {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

pub(super) static ASSIGN_OVERHEAD: LazyLock<usize> = LazyLock::new(assign_overhead);

/// One connected client. See the module docs.
pub struct ClientSession {
    id: SessionId,
    manager: Addr<Manager>,
    /// Largest `assign` plaintext a worker will accept from this manager.
    max_assign: usize,
}

/// Bytes an `assign` takes besides its task name's text and its arguments,
/// at most: the envelope with the largest ids and timeout, an empty name
/// and nil arguments, plus the longest string header.
fn assign_overhead() -> usize {
    let envelope = ToWorker::Assign(Assign {
        run_id: u64::MAX,
        slot: u32::MAX,
        task: String::new(),
        args: Value::Nil,
        timeout_ms: Some(u64::MAX),
    });
    codec::encoded_len(&envelope) + 4
}

impl ClientSession {
    /// Starts the connection actor for an established client.
    pub fn start(est: Established, manager: Addr<Manager>) -> Addr<Connection<ClientSession>> {
        Self::connection(est, manager).start()
    }

    /// The connection actor for an established client, not yet started.
    pub fn connection(est: Established, manager: Addr<Manager>) -> Connection<ClientSession> {
        let id = fresh_session_id();
        log::debug!("[client {}] session {id} opened", est.peer_addr);
        let max_assign = codec::max_plaintext(est.writer.max_frame());
        manager.do_send(super::metrics::ClientOpened { session: id });
        Connection::new(
            est,
            ClientSession {
                id,
                manager,
                max_assign,
            },
        )
    }

    /// Why a submit cannot be forwarded to a worker, if it cannot.
    fn unfit(&self, s: &Submit) -> Option<String> {
        if s.due_ms.is_some() && s.delay_ms.is_some() {
            return Some("give at most one of due_ms and delay_ms".to_string());
        }
        if let Some(error) = super::unique::unfit(s.unique_key.as_deref(), s.unique_for_ms) {
            return Some(error);
        }
        if value_depth(&s.args) > MAX_VALUE_DEPTH {
            return Some(format!(
                "arguments nested deeper than {MAX_VALUE_DEPTH} levels are not accepted"
            ));
        }
        let len = *ASSIGN_OVERHEAD + s.task.len() + codec::encoded_len(&s.args);
        (len > self.max_assign).then(|| {
            format!(
                "task of {len} bytes would not fit in a frame to a worker (limit {} bytes)",
                self.max_assign
            )
        })
    }

    fn submit(conn: &mut Connection<Self>, s: Submit, ctx: &mut Context<Connection<Self>>) {
        let request_id = s.id;
        let detach = s.detach;
        let want_id = s.want_id;
        if let Some(error) = conn.role.unfit(&s) {
            conn.send(
                ToClient::Reply {
                    id: request_id,
                    outcome: Outcome::Failed { error },
                },
                ctx,
            );
            return;
        }
        let spec = TaskSpec {
            name: s.task,
            args: s.args,
            priority: s.priority,
            timeout: s.timeout_ms.filter(|&ms| ms > 0).map(Duration::from_millis),
            attempts: s.attempts,
            retries: s.retries,
        };
        let due_ms = s.due_ms.or_else(|| {
            s.delay_ms
                .map(|d| super::journal::now_ms().saturating_add(d))
        });
        let msg = SubmitTask {
            session: conn.role.id,
            request_id,
            spec,
            reply_to: ctx.address().recipient(),
            detach,
            opts: SubmitOptions {
                due_ms,
                unique: s
                    .unique_key
                    .map(|k| (k, Duration::from_millis(s.unique_for_ms.unwrap_or(0)))),
                reattach: want_id,
            },
        };
        let request = conn.role.manager.send(msg);
        conn.ask(request, move |res, conn, ctx| {
            let outcome = match res {
                // An attached task is told its id only where it outlives
                // the manager, so the client can wait on it again after a
                // restart: elsewhere that would cost a frame per task for
                // nothing.
                Ok(Ok(a)) if detach || (want_id && a.durable) => {
                    conn.send(
                        ToClient::Accepted {
                            id: request_id,
                            task_id: a.task,
                        },
                        ctx,
                    );
                    return;
                }
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
            conn.send(
                ToClient::Reply {
                    id: request_id,
                    outcome,
                },
                ctx,
            );
        });
    }
}

impl Peer for ClientSession {
    type In = FromClient;
    type Out = ToClient;
    const LABEL: &'static str = "client";

    fn received(conn: &mut Connection<Self>, msg: FromClient, ctx: &mut Context<Connection<Self>>) {
        match msg {
            FromClient::Submit(s) => Self::submit(conn, s, ctx),
            FromClient::Cancel { id } => conn.role.manager.do_send(CancelTask {
                session: conn.role.id,
                request_id: id,
            }),
            FromClient::Ping { id } => conn.send(ToClient::Pong { id }, ctx),
            FromClient::ResultRequest { id, task_id, wait } => {
                let ask = GetResult {
                    task: task_id,
                    wait,
                    session: conn.role.id,
                };
                let request = conn.role.manager.send(ask);
                conn.ask(request, move |res, conn, ctx| {
                    let state = match res {
                        Ok(state) => wire_state(state),
                        Err(_) => crate::protocol::TaskState::Failed {
                            error: "manager unavailable".into(),
                        },
                    };
                    conn.send(ToClient::Result { id, task_id, state }, ctx);
                });
            }
            FromClient::CancelTask { id, task_id } => {
                let request = conn.role.manager.send(CancelById { task: task_id });
                conn.ask(request, move |res, conn, ctx| {
                    let result = match res {
                        Ok(CancelResult::Cancelled) => CancelState::Cancelled,
                        Ok(CancelResult::Finished) => CancelState::Finished,
                        Ok(CancelResult::Unknown) | Err(_) => CancelState::Unknown,
                    };
                    conn.send(
                        ToClient::CancelResult {
                            id,
                            task_id,
                            result,
                        },
                        ctx,
                    );
                });
            }
            FromClient::StatusRequest { id } => {
                let max_bytes = ClusterStatus::max_len_for_frame(conn.max_frame());
                let request = conn.role.manager.send(GetStatusWithin { max_bytes });
                conn.ask(request, move |res, conn, ctx| {
                    if let Ok(status) = res {
                        conn.send(ToClient::Status { id, status }, ctx);
                    }
                });
            }
            FromClient::DeadRequest { id, limit } => {
                let limit = match limit {
                    0 => DEAD_LIST_MAX,
                    n => n.min(DEAD_LIST_MAX),
                } as usize;
                let max_bytes = DeadList::max_len_for_frame(conn.max_frame());
                let request = conn.role.manager.send(GetDeadList { limit, max_bytes });
                conn.ask(request, move |res, conn, ctx| {
                    if let Ok(list) = res {
                        conn.send(ToClient::DeadList { id, list }, ctx);
                    }
                });
            }
            FromClient::DeadRetry { id, task_id, task } => {
                let select = DeadSelect { task_id, task };
                let request = conn.role.manager.send(RetryDead {
                    session: conn.role.id,
                    select,
                    limit: DEAD_LIST_MAX as usize,
                });
                conn.ask(request, move |res, conn, ctx| {
                    if let Ok(done) = res {
                        conn.send(dead_done(id, done), ctx);
                    }
                });
            }
            FromClient::DeadPurge { id, task_id, task } => {
                let select = DeadSelect { task_id, task };
                let request = conn.role.manager.send(PurgeDead { select });
                conn.ask(request, move |res, conn, ctx| {
                    if let Ok(done) = res {
                        conn.send(dead_done(id, done), ctx);
                    }
                });
            }
            FromClient::SchedulesRequest { id } => {
                let budget = codec::max_plaintext(conn.max_frame());
                let request = conn.role.manager.send(GetSchedules);
                conn.ask(request, move |res, conn, ctx| {
                    if let Ok(list) = res {
                        conn.send(schedules_within(id, list, budget), ctx);
                    }
                });
            }
            FromClient::Heartbeat {} => {}
        }
    }

    fn stopped(&mut self, _failure: Option<String>) {
        self.manager.do_send(ClientGone { session: self.id });
        log::debug!("session {} closed", self.id);
    }

    fn error_message(message: String) -> Option<ToClient> {
        Some(ToClient::Error { message })
    }

    fn substitute(msg: &ToClient, err: &WireError) -> Option<ToClient> {
        match (msg, err) {
            (ToClient::Reply { id, .. }, WireError::FrameTooLarge { len, max }) => {
                Some(ToClient::Reply {
                    id: *id,
                    outcome: Outcome::too_large(*len, *max),
                })
            }
            (
                ToClient::Result {
                    id,
                    task_id,
                    state: crate::protocol::TaskState::Done { .. },
                },
                WireError::FrameTooLarge { len, max },
            ) => Some(ToClient::Result {
                id: *id,
                task_id: *task_id,
                state: crate::protocol::TaskState::Failed {
                    error: format!("result of {len} bytes exceeds the frame limit of {max} bytes"),
                },
            }),
            _ => None,
        }
    }
}

fn wire_state(state: TaskState) -> crate::protocol::TaskState {
    use crate::protocol::TaskState as Wire;
    match state {
        TaskState::Queued => Wire::Queued { due_ms: None },
        TaskState::Scheduled(due) => Wire::Queued { due_ms: Some(due) },
        TaskState::Running => Wire::Running {},
        TaskState::Finished(outcome) => match Arc::unwrap_or_clone(outcome) {
            TaskOutcome::Done(value) => Wire::Done { value },
            TaskOutcome::Failed(error) => Wire::Failed { error },
        },
        TaskState::Unknown => Wire::Unknown {},
    }
}

impl Handler<TaskReply> for Connection<ClientSession> {
    type Result = ();

    fn handle(&mut self, msg: TaskReply, ctx: &mut Self::Context) {
        let outcome = match msg.outcome {
            TaskOutcome::Done(value) => Outcome::Done { value },
            TaskOutcome::Failed(error) => Outcome::Failed { error },
        };
        self.send(
            ToClient::Reply {
                id: msg.request_id,
                outcome,
            },
            ctx,
        );
    }
}

/// The wire answer to a `dead_retry` or `dead_purge`.
fn dead_done(id: u64, done: DeadDone) -> ToClient {
    ToClient::DeadDone {
        id,
        retried: done.retried,
        purged: done.purged,
        left: done.left,
        reason: done.reason,
        denied: done.denied,
    }
}

/// The `schedules` answer, its list cut to what encodes in `budget` bytes
/// (linear: each entry is measured once).
fn schedules_within(
    id: u64,
    mut list: Vec<crate::protocol::ScheduleInfo>,
    budget: usize,
) -> ToClient {
    let total = list.len() as u64;
    // Room for the array header to grow with its length (5 bytes at most).
    let mut used = codec::encoded_len(&ToClient::Schedules {
        id,
        list: Vec::new(),
        total,
    }) + 5;
    let keep = list
        .iter()
        .take_while(|e| {
            used += codec::encoded_len(*e);
            used <= budget
        })
        .count();
    list.truncate(keep);
    ToClient::Schedules { id, list, total }
}
