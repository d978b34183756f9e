//! The client library: an async [`Client`] that submits tasks to a manager.
//!
//! One connection carries many tasks at once. A single driver task owns the
//! socket and the table of pending requests, so there is no lock per message:
//! callers hand it a request and a oneshot for the answer. If the connection
//! drops, every pending call fails with [`ClientError::Disconnected`] and the
//! next call reconnects. [`Client::submit`] hands out a [`Submitted`] task
//! that can be cancelled while it waits or runs.
//!
//! Tasks by id: [`Client::submit_detached`] returns the manager-wide id of
//! a task that outlives the connection; [`Client::result`] and
//! [`Client::cancel_task`] name it later, from this or any other client
//! holding the key.
//!
//! Waiting again: with retry on, an attached submit asks for its task's id
//! (`want_id`), which a manager with a task store tells. If the connection
//! is lost before the answer, [`Submitted::result`] reconnects and waits on
//! that id (a restarted durable manager runs its recovered tasks detached),
//! for at most [`ClientConfig::reattach_for`]; the caller gets the task's
//! one outcome. A task whose id was not told fails with
//! [`ClientError::Disconnected`] as before.
//!
//! A result wait is a request the manager holds open until the task ends,
//! and the manager stops reading a connection with
//! [`MAX_OPEN_REQUESTS`] requests open: the driver keeps at most
//! [`MAX_OPEN_WAITS`] waits open and sends the others, in order, as
//! earlier ones are answered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedWrite;

use crate::messages::{DeadDone, DeadSelect};
use crate::protocol::handshake::{self, HandshakeSettings, Refusal};
use crate::protocol::{
    value_depth, ClusterStatus, FromClient, Liveness, Outcome, Priority, Role, Submit, TaskState,
    Tick, ToClient, Value, WireError, MAX_OPEN_REQUESTS, MAX_VALUE_DEPTH,
};
pub use crate::protocol::{CancelState, DeadList, DeadTask, ScheduleInfo};

/// How a client reaches its manager.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Manager address, `host:port`.
    pub mgr: String,
    /// Key, frame limit and handshake timeout.
    pub handshake: HandshakeSettings,
    /// Resend denied tasks on a logarithmic backoff instead of failing.
    pub retry: bool,
    /// Smallest retry delay (the manager's `retry_after` wins when larger).
    pub min_backoff: Duration,
    /// Largest retry delay.
    pub max_backoff: Duration,
    /// Bound on connecting (TCP connect plus handshake).
    pub connect_timeout: Duration,
    /// With `retry`: how long after losing its connection a task waited on
    /// ([`Submitted::result`]) keeps trying to reconnect and wait on its id
    /// again (see the module docs).
    pub reattach_for: Duration,
}

impl ClientConfig {
    /// Defaults: no retry, backoff 10 ms to 5 s, connect timeout 5 s,
    /// waiting again for 5 min.
    pub fn new(mgr: impl Into<String>, handshake: HandshakeSettings) -> ClientConfig {
        ClientConfig {
            mgr: mgr.into(),
            handshake,
            retry: false,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            reattach_for: Duration::from_secs(300),
        }
    }

    /// Delay before retry `n` (from 1): base × (1 + ln n) plus up to 25 %
    /// jitter, base = max(min_backoff, the manager's `retry_after`), capped
    /// at max_backoff.
    pub fn retry_delay(&self, n: u32, retry_after: Duration) -> Duration {
        // The manager's estimate is capped first: it comes off the wire.
        let base = self.min_backoff.max(retry_after.min(self.max_backoff));
        let jitter = 1.0 + (getrandom::u64().unwrap_or(0) % 1000) as f64 / 4000.0;
        base.mul_f64((1.0 + f64::from(n).ln()) * jitter)
            .min(self.max_backoff)
    }
}

/// Per-task options for [`Client::queue_with`].
#[derive(Debug, Clone, Default)]
pub struct QueueOptions {
    /// Priority (default normal).
    pub priority: Priority,
    /// Deadline for the task.
    pub timeout: Option<Duration>,
    /// How many times the task may be started if workers are lost; 0 means
    /// the manager's default (`manager.default_attempts`, 1 unless set).
    pub attempts: u32,
    /// How many times the manager may run the task again after a run that
    /// failed, with a growing backoff between; `None` means the manager's
    /// default (`manager.default_retries`, 0 unless set). At most 10.
    /// Unlike `retry`, which resends denied tasks from the client.
    pub retries: Option<u32>,
    /// Overrides the client's `retry` setting for this task: resending it
    /// when denied, and waiting on it again when the connection is lost.
    pub retry: Option<bool>,
    /// Run the task later instead of as soon as it can: the manager accepts
    /// it at once and queues it when due. An attached task's call returns
    /// once it ran.
    pub run_at: Option<RunAt>,
    /// A unique task: while a task submitted with this key is scheduled,
    /// queued or running (or answered less than `unique_for` ago), the
    /// manager answers with that task's id instead of making a new one (an
    /// attached call gets that task's result). 1 to 256 bytes.
    pub unique_key: Option<String>,
    /// With `unique_key`: how long the key keeps holding after the task is
    /// answered (at most 30 days); `None`: not after it.
    pub unique_for: Option<Duration>,
}

/// When a task submitted to run later is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAt {
    /// This long after the manager receives the submit (by its clock).
    In(Duration),
    /// At this time (as the manager's clock reads it). A time past runs
    /// the task now; more than 365 days ahead is refused.
    At(std::time::SystemTime),
}

/// What went wrong with a call. [`ClientError::exit_code`] maps each to the
/// CLI's sysexits code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The manager could not be reached.
    #[error("cannot reach manager at {addr}: {reason}")]
    Unreachable {
        /// Address tried.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The manager does not hold our key.
    #[error("authentication failed: the manager at {addr} does not use this key")]
    Auth {
        /// Address tried.
        addr: String,
    },
    /// The manager refused the connection before the handshake: it is at its
    /// connection limit (`max_connections`, or too many handshakes at once).
    /// Nothing was sent; try again later.
    #[error("the manager at {addr} is at its connection limit ({reason}); try again later")]
    AtLimit {
        /// Address tried.
        addr: String,
        /// Which limit, as the manager said.
        reason: String,
    },
    /// The manager had no room (and retry was off).
    #[error("denied: {reason}; try again in {retry_after:?}")]
    Denied {
        /// Why.
        reason: String,
        /// The manager's estimate of when room is likely.
        retry_after: Duration,
    },
    /// The task ran, or was rejected as invalid, and failed.
    #[error("task failed: {0}")]
    Failed(String),
    /// The connection dropped while the call was pending.
    #[error("connection to the manager lost: {0}")]
    Disconnected(String),
    /// The request does not fit in one frame (`security.max_frame_bytes`).
    #[error("request too large: {0}")]
    TooLarge(String),
    /// The manager answered with something that does not fit the call.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A task asked for by id has not finished yet.
    #[error("task {task} is {state}: not finished yet; try again later")]
    NotReady {
        /// The task's id.
        task: u64,
        /// "queued", "running" or "scheduled" (to run later).
        state: &'static str,
    },
    /// No task by this id is queued, running or kept by the manager.
    #[error(
        "unknown task id {0}: never accepted by this manager, not detached, \
         or its result expired or was evicted"
    )]
    UnknownTask(u64),
}

impl ClientError {
    /// sysexits code for the CLI: 1 failed or unknown task id, 2 request
    /// too large, 69 unreachable/disconnected, 75 denied or not finished
    /// yet, 76 protocol or the manager at its connection limit, 77 bad key.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Failed(_) | ClientError::UnknownTask(_) => 1,
            ClientError::NotReady { .. } => 75,
            ClientError::TooLarge(_) => 2,
            ClientError::Unreachable { .. } | ClientError::Disconnected(_) => 69,
            ClientError::Denied { .. } => 75,
            ClientError::Protocol(_) | ClientError::AtLimit { .. } => 76,
            ClientError::Auth { .. } => 77,
        }
    }
}

/// A finished task and how many times it was denied before it was accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// The result.
    pub value: Value,
    /// Denials that were retried.
    pub denials: u32,
}

type Answer = Result<ToClient, ClientError>;

struct Request {
    msg: FromClient,
    id: u64,
    /// Where the answer goes; `None` for a message that gets none (cancel).
    reply: Option<oneshot::Sender<Answer>>,
    /// For an attached submit that asked for its task's id: where the
    /// `accepted` goes (the `reply` still goes to `reply`).
    accepted: Option<oneshot::Sender<u64>>,
}

/// A request sent and not answered yet.
struct Waiter {
    reply: oneshot::Sender<Answer>,
    accepted: Option<oneshot::Sender<u64>>,
}

/// A task sent with [`Client::submit`]: wait for its answer with
/// [`Submitted::result`], or stop it with [`Submitted::cancel`].
pub struct Submitted {
    client: Client,
    id: u64,
    answer: oneshot::Receiver<Answer>,
    /// The task's id, from the manager's `accepted`, when it was asked.
    accepted: Option<oneshot::Receiver<u64>>,
    task_id: Option<u64>,
}

impl Submitted {
    /// The request id it was submitted under (what `cancel` names).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Asks the manager to cancel it: if it still waits or runs, its result
    /// is the failure "cancelled by the client". Returns once sent.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.client.cancel(self.id).await
    }

    /// The task's manager-wide id, once the manager told it: only to a
    /// submit with retry on, and only a manager with a task store does.
    pub fn task_id(&mut self) -> Option<u64> {
        if self.task_id.is_none() {
            self.task_id = self.accepted.as_mut().and_then(|rx| rx.try_recv().ok());
        }
        self.task_id
    }

    /// Waits for its answer. A deny is [`ClientError::Denied`]: a submitted
    /// task is not retried. With retry on, a connection lost before the
    /// answer is not the end while the task's id is known: the client waits
    /// on it again for at most [`ClientConfig::reattach_for`] (see the
    /// module docs).
    pub async fn result(self) -> Result<Value, ClientError> {
        let limit = self.client.inner.config.reattach_for;
        self.result_until(Instant::now() + limit).await
    }

    /// [`Submitted::result`], trying to wait on the task again only until
    /// `deadline` (the CLI's `--retry-for`).
    pub async fn result_until(mut self, deadline: Instant) -> Result<Value, ClientError> {
        let answer = (&mut self.answer)
            .await
            .unwrap_or_else(|_| Err(ClientError::Disconnected("connection closed".into())));
        match answer {
            Ok(ToClient::Reply { outcome, .. }) => outcome_result(outcome),
            Ok(other) => Err(unexpected("a reply", &other)),
            Err(ClientError::Disconnected(why)) => match self.task_id() {
                Some(task) => self.client.wait_again(task, why, deadline).await,
                None => Err(ClientError::Disconnected(why)),
            },
            Err(e) => Err(e),
        }
    }
}

fn outcome_result(outcome: Outcome) -> Result<Value, ClientError> {
    match outcome {
        Outcome::Done { value } => Ok(value),
        Outcome::Failed { error } => Err(ClientError::Failed(error)),
        Outcome::Denied {
            reason,
            retry_after_ms,
        } => Err(ClientError::Denied {
            reason,
            retry_after: Duration::from_millis(retry_after_ms),
        }),
    }
}

fn unexpected(wanted: &str, got: &ToClient) -> ClientError {
    use crate::protocol::WireMessage;
    ClientError::Protocol(format!("expected {wanted}, got {}", got.kind()))
}

struct Inner {
    config: ClientConfig,
    next_id: AtomicU64,
    tx: Mutex<Option<mpsc::UnboundedSender<Request>>>,
    reconnect: tokio::sync::Mutex<()>,
}

/// An async connection to a manager. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects and authenticates now, so a wrong key or a missing manager
    /// shows at once.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let client = Client {
            inner: Arc::new(Inner {
                config,
                next_id: AtomicU64::new(1),
                tx: Mutex::new(None),
                reconnect: tokio::sync::Mutex::new(()),
            }),
        };
        client.sender().await?;
        Ok(client)
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    async fn sender(&self) -> Result<mpsc::UnboundedSender<Request>, ClientError> {
        if let Some(tx) = self.current() {
            return Ok(tx);
        }
        let _guard = self.inner.reconnect.lock().await;
        if let Some(tx) = self.current() {
            return Ok(tx);
        }
        let tx = open(&self.inner.config).await?;
        *self.inner.tx.lock().expect("sender lock") = Some(tx.clone());
        Ok(tx)
    }

    fn current(&self) -> Option<mpsc::UnboundedSender<Request>> {
        let guard = self.inner.tx.lock().expect("sender lock");
        guard.as_ref().filter(|tx| !tx.is_closed()).cloned()
    }

    /// Hands a request to the driver; the receiver gets its answer.
    async fn start(
        &self,
        make: impl FnOnce(u64) -> FromClient,
    ) -> Result<(u64, oneshot::Receiver<Answer>), ClientError> {
        self.start_with(make, None).await
    }

    /// [`Client::start`], with where an `accepted` for an attached submit
    /// goes.
    async fn start_with(
        &self,
        make: impl FnOnce(u64) -> FromClient,
        accepted: Option<oneshot::Sender<u64>>,
    ) -> Result<(u64, oneshot::Receiver<Answer>), ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let req = Request {
            msg: make(id),
            id,
            reply: Some(reply),
            accepted,
        };
        let tx = self.sender().await?;
        if tx.send(req).is_err() {
            return Err(ClientError::Disconnected("connection closed".into()));
        }
        Ok((id, rx))
    }

    async fn call(&self, make: impl FnOnce(u64) -> FromClient) -> Answer {
        let (_, rx) = self.start(make).await?;
        rx.await
            .unwrap_or_else(|_| Err(ClientError::Disconnected("connection closed".into())))
    }

    /// Sends `task` and returns at once with a handle to its answer, for
    /// waiting on or cancelling it. A deny is the handle's result (no
    /// resend); with retry on, it asks for the task's id, to wait on it
    /// again if the connection is lost ([`Submitted::result`]).
    pub async fn submit(
        &self,
        task: &str,
        args: Value,
        opts: &QueueOptions,
    ) -> Result<Submitted, ClientError> {
        if value_depth(&args) > MAX_VALUE_DEPTH {
            return Err(ClientError::TooLarge(format!(
                "arguments nested deeper than {MAX_VALUE_DEPTH} levels"
            )));
        }
        let want_id = opts.retry.unwrap_or(self.inner.config.retry);
        let (tx, accepted) = match want_id {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let (id, answer) = self
            .start_with(
                |id| {
                    let mut msg = submit_message(id, task, args, opts);
                    if let FromClient::Submit(s) = &mut msg {
                        s.want_id = want_id;
                    }
                    msg
                },
                tx,
            )
            .await?;
        Ok(Submitted {
            client: self.clone(),
            id,
            answer,
            accepted,
            task_id: None,
        })
    }

    /// Waits on task `task` again, its connection having been lost (`lost`
    /// says how): reconnects on the retry backoff until `deadline`, then
    /// waits for its outcome by id. See the module docs.
    async fn wait_again(
        &self,
        task: u64,
        lost: String,
        deadline: Instant,
    ) -> Result<Value, ClientError> {
        log::info!(
            "connection to the manager lost while waiting on task {task} ({}); waiting on it \
             again by id",
            crate::logsafe::escaped(&lost)
        );
        let mut tries = 0u32;
        loop {
            let err = match self.result(task, true).await {
                Ok(value) => return Ok(value),
                Err(ClientError::UnknownTask(_)) => {
                    return Err(ClientError::Disconnected(format!(
                        "{lost}; the manager reached again does not know task {task} (it \
                         drops an attached task whose connection ends, unless restarted \
                         with its task store)"
                    )))
                }
                Err(
                    e @ (ClientError::Unreachable { .. }
                    | ClientError::AtLimit { .. }
                    | ClientError::Disconnected(_)),
                ) => e,
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Disconnected(format!(
                    "{lost}; gave up waiting on task {task} again: {err}"
                )));
            }
            tries += 1;
            let delay = self
                .inner
                .config
                .retry_delay(tries, REATTACH_BASE)
                .min(deadline - now);
            log::debug!(
                "task {task}: {}; trying again in {delay:?}",
                crate::logsafe::escaped(&err)
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Cancels the task submitted under request id `id` on this client's
    /// current connection; see [`Submitted::cancel`].
    pub async fn cancel(&self, id: u64) -> Result<(), ClientError> {
        let tx = self.sender().await?;
        let req = Request {
            msg: FromClient::Cancel { id },
            id,
            reply: None,
            accepted: None,
        };
        tx.send(req)
            .map_err(|_| ClientError::Disconnected("connection closed".into()))
    }

    /// Sends `task` detached and returns its manager-wide id once the
    /// manager accepted it. The task runs on when this client goes; read
    /// its result with [`Client::result`]. A deny is
    /// [`ClientError::Denied`], retried as for [`Client::queue_with`] when
    /// retry is on.
    pub async fn submit_detached(
        &self,
        task: &str,
        args: Value,
        opts: &QueueOptions,
    ) -> Result<u64, ClientError> {
        if value_depth(&args) > MAX_VALUE_DEPTH {
            return Err(ClientError::TooLarge(format!(
                "arguments nested deeper than {MAX_VALUE_DEPTH} levels"
            )));
        }
        let retry = opts.retry.unwrap_or(self.inner.config.retry);
        let mut denials = 0u32;
        loop {
            let answer = self
                .call(|id| {
                    let mut msg = submit_message(id, task, args.clone(), opts);
                    if let FromClient::Submit(s) = &mut msg {
                        s.detach = true;
                    }
                    msg
                })
                .await?;
            let err = match answer {
                ToClient::Accepted { task_id, .. } => return Ok(task_id),
                ToClient::Reply {
                    outcome: Outcome::Failed { error },
                    ..
                } => ClientError::Failed(error),
                ToClient::Reply {
                    outcome:
                        Outcome::Denied {
                            reason,
                            retry_after_ms,
                        },
                    ..
                } => ClientError::Denied {
                    reason,
                    retry_after: Duration::from_millis(retry_after_ms),
                },
                // A manager that predates detached tasks runs it attached.
                other => return Err(unexpected("accepted", &other)),
            };
            match err {
                ClientError::Denied { retry_after, .. } if retry => {
                    denials += 1;
                    tokio::time::sleep(self.inner.config.retry_delay(denials, retry_after)).await;
                }
                e => return Err(e),
            }
        }
    }

    /// The result of task `task_id` (from [`Client::submit_detached`]).
    /// Without `wait`, a task not finished yet is
    /// [`ClientError::NotReady`]; with it, the call returns once the task
    /// finished. A failed task is [`ClientError::Failed`]; an id the
    /// manager does not know (or no longer keeps) is
    /// [`ClientError::UnknownTask`]. Results stay readable until they
    /// expire on the manager.
    pub async fn result(&self, task_id: u64, wait: bool) -> Result<Value, ClientError> {
        loop {
            let answer = self
                .call(|id| FromClient::ResultRequest { id, task_id, wait })
                .await?;
            let state = match answer {
                ToClient::Result { state, .. } => state,
                other => return Err(unexpected("result", &other)),
            };
            let pending = match state {
                TaskState::Done { value } => return Ok(value),
                TaskState::Failed { error } => return Err(ClientError::Failed(error)),
                TaskState::Unknown {} => return Err(ClientError::UnknownTask(task_id)),
                TaskState::Queued { due_ms: Some(_) } => "scheduled",
                TaskState::Queued { due_ms: None } => "queued",
                TaskState::Running {} => "running",
            };
            if !wait {
                return Err(ClientError::NotReady {
                    task: task_id,
                    state: pending,
                });
            }
            // The manager holds a bounded number of waits; past it, it
            // answers at once, and the client asks again.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Cancels task `task_id`, whoever submitted it: a queued task is
    /// removed, a running one stopped on its worker; either is then
    /// answered failed "cancelled by the client".
    pub async fn cancel_task(&self, task_id: u64) -> Result<CancelState, ClientError> {
        match self
            .call(|id| FromClient::CancelTask { id, task_id })
            .await?
        {
            ToClient::CancelResult { result, .. } => Ok(result),
            other => Err(unexpected("cancel_result", &other)),
        }
    }

    /// Runs `task` with `args` at normal priority and returns its result.
    pub async fn queue(&self, task: &str, args: Value) -> Result<Value, ClientError> {
        self.queue_with(task, args, &QueueOptions::default()).await
    }

    /// Runs `task` with options and returns its result.
    pub async fn queue_with(
        &self,
        task: &str,
        args: Value,
        opts: &QueueOptions,
    ) -> Result<Value, ClientError> {
        self.queue_detailed(task, args, opts).await.map(|c| c.value)
    }

    /// Like [`Client::queue`], with serde types for arguments and result.
    pub async fn queue_as<A: Serialize, R: DeserializeOwned>(
        &self,
        task: &str,
        args: &A,
    ) -> Result<R, ClientError> {
        let args = rmpv::ext::to_value(args)
            .map_err(|e| ClientError::Protocol(format!("arguments do not serialize: {e}")))?;
        let value = self.queue(task, args).await?;
        rmpv::ext::from_value(value)
            .map_err(|e| ClientError::Protocol(format!("result does not deserialize: {e}")))
    }

    /// Runs `task` and also reports how many times it was denied and retried.
    pub async fn queue_detailed(
        &self,
        task: &str,
        args: Value,
        opts: &QueueOptions,
    ) -> Result<Completed, ClientError> {
        let retry = opts.retry.unwrap_or(self.inner.config.retry);
        let mut denials = 0u32;
        loop {
            let result = self.submit(task, args.clone(), opts).await?.result().await;
            match result {
                Ok(value) => return Ok(Completed { value, denials }),
                Err(ClientError::Denied { retry_after, .. }) if retry => {
                    denials += 1;
                    tokio::time::sleep(self.inner.config.retry_delay(denials, retry_after)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs a Rhai script on a worker that allows eval; the script sees
    /// `args` and its last value is the result.
    pub async fn eval(&self, script: &str, args: Value) -> Result<Value, ClientError> {
        self.eval_with(script, args, &QueueOptions::default()).await
    }

    /// Like [`Client::eval`], with options.
    pub async fn eval_with(
        &self,
        script: &str,
        args: Value,
        opts: &QueueOptions,
    ) -> Result<Value, ClientError> {
        let args = crate::task::eval::eval_args(script, args);
        self.queue_with(crate::task::EVAL_TASK, args, opts).await
    }

    /// Measures one round trip to the manager.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        match self.call(|id| FromClient::Ping { id }).await? {
            ToClient::Pong { .. } => Ok(start.elapsed()),
            other => Err(unexpected("pong", &other)),
        }
    }

    /// Asks the manager for its dead list: tasks that failed after using
    /// their retries, newest first, at most `limit` (0: as many as the
    /// manager lists, 1000) and as many as fit a frame; the list says when
    /// it leaves some out. A manager that predates the request closes the
    /// connection: [`ClientError::Disconnected`].
    pub async fn dead_list(&self, limit: u32) -> Result<DeadList, ClientError> {
        match self
            .call(|id| FromClient::DeadRequest { id, limit })
            .await?
        {
            ToClient::DeadList { list, .. } => Ok(list),
            other => Err(unexpected("dead_list", &other)),
        }
    }

    /// Queues the dead-list entries `select` names again, as new detached
    /// tasks (oldest first, at most 1000 per call): the new ids, and how
    /// many selected entries are still listed, with why.
    pub async fn dead_retry(&self, select: DeadSelect) -> Result<DeadDone, ClientError> {
        let DeadSelect { task_id, task } = select;
        let answer = self
            .call(|id| FromClient::DeadRetry { id, task_id, task })
            .await?;
        dead_done(answer)
    }

    /// Removes the dead-list entries `select` names.
    pub async fn dead_purge(&self, select: DeadSelect) -> Result<DeadDone, ClientError> {
        let DeadSelect { task_id, task } = select;
        let answer = self
            .call(|id| FromClient::DeadPurge { id, task_id, task })
            .await?;
        dead_done(answer)
    }

    /// The manager's periodic tasks (`[[schedule]]`), in config order, as
    /// many as fit a frame, and how many it has in all.
    pub async fn schedules(&self) -> Result<(Vec<ScheduleInfo>, u64), ClientError> {
        match self.call(|id| FromClient::SchedulesRequest { id }).await? {
            ToClient::Schedules { list, total, .. } => Ok((list, total)),
            other => Err(unexpected("schedules", &other)),
        }
    }

    /// Asks the manager for its status report.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        match self.call(|id| FromClient::StatusRequest { id }).await? {
            ToClient::Status { status, .. } => Ok(status),
            other => Err(unexpected("status", &other)),
        }
    }
}

fn dead_done(answer: ToClient) -> Result<DeadDone, ClientError> {
    match answer {
        ToClient::DeadDone {
            retried,
            purged,
            left,
            reason,
            denied,
            ..
        } => Ok(DeadDone {
            retried,
            purged,
            left,
            reason,
            denied,
        }),
        other => Err(unexpected("dead_done", &other)),
    }
}

fn submit_message(id: u64, task: &str, args: Value, opts: &QueueOptions) -> FromClient {
    FromClient::Submit(Submit {
        id,
        task: task.to_string(),
        args,
        priority: opts.priority,
        timeout_ms: opts.timeout.map(|d| d.as_millis() as u64),
        attempts: opts.attempts,
        retries: opts.retries,
        detach: false,
        want_id: false,
        due_ms: match opts.run_at {
            Some(RunAt::At(t)) => Some(
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ),
            _ => None,
        },
        delay_ms: match opts.run_at {
            Some(RunAt::In(d)) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            _ => None,
        },
        unique_key: opts.unique_key.clone(),
        unique_for_ms: opts
            .unique_for
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// Base of the backoff between tries to reach the manager again while
/// waiting on a task (the first comes after 0.2 s, then 0.34 s, ...).
const REATTACH_BASE: Duration = Duration::from_millis(200);

async fn open(config: &ClientConfig) -> Result<mpsc::UnboundedSender<Request>, ClientError> {
    let addr = config.mgr.clone();
    let unreachable = |reason: String| ClientError::Unreachable {
        addr: addr.clone(),
        reason,
    };
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut pause = HANDSHAKE_RETRY_FIRST;
    let est = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let stream = tokio::time::timeout(left, TcpStream::connect(&config.mgr))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        match handshake::initiate(stream, Role::Client, &config.handshake).await {
            Ok(est) => break est,
            Err(WireError::BadKey) => return Err(ClientError::Auth { addr }),
            // Handshake slots taken by recent handshakes: they clear in
            // milliseconds, so try again within the connect timeout.
            Err(WireError::AtLimit(Refusal::Handshakes))
                if tokio::time::Instant::now() + pause < deadline =>
            {
                // Spread out, so a burst of refused clients does not return
                // as one.
                let spread = 0.5 + (getrandom::u64().unwrap_or(0) % 1000) as f64 / 1000.0;
                tokio::time::sleep(pause.mul_f64(spread)).await;
                pause = (pause * 2).min(HANDSHAKE_RETRY_MAX);
            }
            Err(WireError::AtLimit(why)) => {
                return Err(ClientError::AtLimit {
                    addr,
                    reason: why.to_string(),
                })
            }
            Err(e) => return Err(unreachable(e.to_string())),
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(est, rx));
    Ok(tx)
}

/// Owns the connection: writes requests (batched per wake-up), matches replies
/// to pending requests, keeps the heartbeat rule, and fails every pending
/// request when the connection ends.
async fn drive(est: handshake::Established, mut rx: mpsc::UnboundedReceiver<Request>) {
    let (mut reader, rest) = est.reader::<ToClient>();
    let mut liveness = Liveness::new(rest.heartbeat);
    let beat = liveness.interval();
    let mut writer = FramedWrite::new(rest.write, rest.writer);
    let mut pending: HashMap<u64, Waiter> = HashMap::new();
    let mut waits = Waits::default();
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + beat,
        beat.max(Duration::from_millis(1)),
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        tokio::select! {
            _ = ticks.tick(), if !beat.is_zero() => match liveness.tick() {
                Tick::Quiet => {}
                Tick::Beat => {
                    if let Err(e) = writer.send(FromClient::Heartbeat {}).await {
                        break Some(e.to_string());
                    }
                }
                Tick::Silent => {
                    break Some(format!(
                        "the manager was silent for {}",
                        humantime::format_duration(liveness.silence_limit())
                    ));
                }
            },
            req = rx.recv() => {
                liveness.spoke();
                let Some(req) = req else { break None };
                let mut next = Some(req);
                let mut failed = None;
                while let Some(req) = next.take() {
                    let Some(req) = waits.admit(req) else {
                        next = rx.try_recv().ok();
                        continue;
                    };
                    match writer.feed(req.msg).await {
                        Ok(()) => {
                            if let Some(reply) = req.reply {
                                pending.insert(req.id, Waiter { reply, accepted: req.accepted });
                            }
                        }
                        // The encoder checks the size before sealing, so the
                        // connection is intact: only this request fails.
                        Err(e @ WireError::FrameTooLarge { .. }) => {
                            if let Some(reply) = req.reply {
                                let _ = reply.send(Err(ClientError::TooLarge(e.to_string())));
                            }
                        }
                        Err(e) => {
                            if let Some(reply) = req.reply {
                                let _ = reply.send(Err(ClientError::Disconnected(e.to_string())));
                            }
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                    next = rx.try_recv().ok();
                }
                if failed.is_none() {
                    if let Err(e) = SinkExt::<FromClient>::flush(&mut writer).await {
                        failed = Some(e.to_string());
                    }
                }
                if failed.is_some() {
                    break failed;
                }
            }
            frame = reader.next() => {
                liveness.heard();
                match frame {
                    Some(Ok(ToClient::Error { message })) => {
                        break Some(format!("manager says: {message}"))
                    }
                    Some(Ok(msg)) => {
                        let Some(id) = msg.reply_id() else { continue };
                        // An attached submit's `accepted` is not its answer.
                        if let ToClient::Accepted { task_id, .. } = msg {
                            if let Some(tx) = pending.get_mut(&id).and_then(|w| w.accepted.take()) {
                                log::debug!("request {id}: accepted as task {task_id}");
                                let _ = tx.send(task_id);
                                continue;
                            }
                        }
                        if let Some(w) = pending.remove(&id) {
                            let _ = w.reply.send(Ok(msg));
                        }
                        if let Some(req) = waits.answered(id) {
                            if let Err(e) = writer.send(req.msg).await {
                                if let Some(reply) = req.reply {
                                    let _ = reply.send(Err(ClientError::Disconnected(e.to_string())));
                                }
                                break Some(e.to_string());
                            }
                            if let Some(reply) = req.reply {
                                pending.insert(req.id, Waiter { reply, accepted: req.accepted });
                            }
                        }
                    }
                    Some(Err(e)) => break Some(e.to_string()),
                    None => break Some("closed by the manager".to_string()),
                }
            }
        }
    };
    let reason = reason.unwrap_or_else(|| "client closed".to_string());
    rx.close();
    for req in waits.held.drain(..) {
        if let Some(reply) = req.reply {
            pending.insert(
                req.id,
                Waiter {
                    reply,
                    accepted: None,
                },
            );
        }
    }
    // Not sent: their `accepted` can never come.
    while let Ok(req) = rx.try_recv() {
        if let Some(reply) = req.reply {
            pending.insert(
                req.id,
                Waiter {
                    reply,
                    accepted: None,
                },
            );
        }
    }
    for (_, w) in pending {
        let _ = w.reply.send(Err(ClientError::Disconnected(reason.clone())));
    }
}

/// First pause before connecting again after a manager refused the
/// connection because its handshake slots were taken; it doubles per try.
const HANDSHAKE_RETRY_FIRST: Duration = Duration::from_millis(5);
/// Longest such pause.
const HANDSHAKE_RETRY_MAX: Duration = Duration::from_millis(200);

/// Result requests with `wait` one connection keeps open at the manager
/// at most: half of what the manager holds for a connection
/// ([`MAX_OPEN_REQUESTS`]), leaving the rest to requests it answers at
/// once, so the manager never stops reading a stock client's connection.
pub const MAX_OPEN_WAITS: usize = MAX_OPEN_REQUESTS / 2;

/// The connection's open result waits, and those held back in order until
/// one of them is answered.
#[derive(Default)]
struct Waits {
    open: HashSet<u64>,
    held: VecDeque<Request>,
}

impl Waits {
    /// `req` if it may go out now; a wait past [`MAX_OPEN_WAITS`] is held.
    fn admit(&mut self, req: Request) -> Option<Request> {
        if !matches!(req.msg, FromClient::ResultRequest { wait: true, .. }) {
            return Some(req);
        }
        if self.open.len() >= MAX_OPEN_WAITS {
            self.held.push_back(req);
            return None;
        }
        self.open.insert(req.id);
        Some(req)
    }

    /// The answer to request `id` came: the held wait that may go out now.
    fn answered(&mut self, id: u64) -> Option<Request> {
        if self.open.is_empty() || !self.open.remove(&id) {
            return None;
        }
        let next = self.held.pop_front()?;
        self.open.insert(next.id);
        Some(next)
    }
}
