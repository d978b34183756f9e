//! The codec actor: one per established connection, on both sides. It owns
//! the socket halves, decodes sealed frames into its role's inbound wire
//! type, and hands each message to the role ([`Peer::received`]), which
//! sends a typed actix message straight to the actor that handles it. Typed
//! messages to the peer come in as actix messages handled by
//! `Connection<Role>` and leave as frames through [`Connection::send`].
//!
//! The roles are [`ClientSession`](crate::actors::manager::ClientSession)
//! and [`WorkerLink`](crate::actors::manager::WorkerLink) on the manager,
//! and [`ManagerLink`](crate::actors::worker::ManagerLink) in a worker.
//!
//! Frames to the peer are sealed straight into one outgoing buffer, which a
//! flushing future empties into the socket after the actor has handled what
//! its mailbox holds, so a burst of replies becomes few syscalls. Past
//! `max_outgoing` bytes waiting, the connection takes on no more answers to
//! the peer's requests (they wait, and at [`MAX_OPEN_REQUESTS`] it stops
//! reading): a peer that reads slowly is slowed, never dropped for the
//! volume the other side chose to send. A peer that takes no byte for the
//! silence limit while bytes wait is not reading: the connection is closed
//! with one log line, and its role handles the loss as any other (a client's tasks are
//! cancelled, a worker's runs requeued). The bytes waiting are published
//! ([`Connection::backlog`]) for the manager, which sends a worker no
//! assign that would take them past half the bound. A wire error is logged once, with the peer's
//! address, and closes the connection; a message the role may not receive
//! is answered with the protocol's `error` message first. Those lines are
//! escaped and rate-limited per kind ([`crate::logsafe`]): any peer can
//! cause them. Heartbeats follow
//! [`Liveness`] and never reach the role.
//!
//! A request whose answer comes back later (a submit to the manager, an
//! `assign` to a slot) goes through [`Connection::ask`]: its answer is
//! handled by one long-lived future of the connection, not by a future
//! spawned per request. That keeps each wake-up of the actor short (actix
//! polls an actor again at once while new futures are spawned, so a spawn
//! per frame from a peer that keeps the socket full would hold the thread
//! for as long as the peer writes) and it bounds the requests a peer can
//! have open: at [`MAX_OPEN_REQUESTS`] the connection stops reading until
//! answers come back, and the peer's writes wait in its socket. While it
//! is paused so, the peer's heartbeats are not read either, so its
//! liveness is judged by its socket instead: on each heartbeat tick the
//! connection peeks at the bytes waiting there, and a peer whose bytes
//! grew since the last tick (or fill what one peek sees, or whose end of
//! stream is there) counts as heard; one that sent nothing for the
//! silence limit is closed as silent, as it would be while read.
//!
//! A connection given a token ([`Connection::close_on`]) closes when the
//! token is cancelled, after the messages already in its mailbox and the
//! bytes they queue: the manager's shutdown closes every connection so.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Buf, BytesMut};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use futures_util::FutureExt;
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::log_limited;
use crate::logsafe::{escaped, RateLimit, WARN_WINDOW};
use crate::messages::CloseConnection;
use crate::outgoing::Share;
use crate::protocol::MAX_OPEN_REQUESTS;

/// Capacity of the outgoing buffer kept once it is empty; a larger one,
/// grown by a burst, is let go.
const KEEP_OUT_CAPACITY: usize = 64 * 1024;

/// Bytes one look at a paused connection's socket sees at most
/// ([`Connection::peer_wrote`]); more waiting count as the peer writing.
const PEEK_BYTES: usize = 16 * 1024;

/// What to do with one answer, on the connection that asked.
type Then<P> = Box<dyn FnOnce(&mut Connection<P>, &mut Context<Connection<P>>)>;

/// Shared by a connection and its reader: how many asks are open (the
/// length of the connection's `asks`, kept here for the reader), and the
/// reader's waker while it waits for that number to fall.
#[derive(Default)]
struct Gate {
    open: Cell<usize>,
    reader: Cell<Option<Waker>>,
}

/// The connection's frame stream, paused while [`MAX_OPEN_REQUESTS`] requests
/// wait for their answers.
struct Gated<S> {
    inner: S,
    gate: Rc<Gate>,
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<S::Item>> {
        if self.gate.open.get() >= MAX_OPEN_REQUESTS {
            self.gate.reader.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        self.inner.poll_next_unpin(cx)
    }
}
use crate::protocol::{
    Established, FrameReader, FrameWriter, Liveness, Tick, WireError, WireMessage,
};

/// The role side of a connection: which messages flow each way and what
/// to do with those that arrive.
pub trait Peer: Sized + Unpin + 'static {
    /// Messages the peer sends.
    type In: WireMessage;
    /// Messages sent to the peer.
    type Out: WireMessage;
    /// The peer's kind, for logs ("client", "worker", "manager").
    const LABEL: &'static str;

    /// The connection started: e.g. a worker registers.
    fn started(_conn: &mut Connection<Self>, _ctx: &mut Context<Connection<Self>>) {}

    /// A message arrived from the peer.
    fn received(conn: &mut Connection<Self>, msg: Self::In, ctx: &mut Context<Connection<Self>>);

    /// The socket took bytes of what waited for the peer.
    fn flushed(_conn: &mut Connection<Self>, _ctx: &mut Context<Connection<Self>>) {}

    /// The connection is closed; `failure` says why, `None` for a clean close.
    fn stopped(&mut self, failure: Option<String>);

    /// The protocol's `error` message to the peer, where the direction has one.
    fn error_message(message: String) -> Option<Self::Out>;

    /// What to send instead of `msg` when it cannot be encoded (too large
    /// for a frame): a failure for the one task it concerns. `None` closes
    /// the connection.
    fn substitute(_msg: &Self::Out, _err: &WireError) -> Option<Self::Out> {
        None
    }
}

/// One established connection in the role `P`. See the module docs.
pub struct Connection<P: Peer> {
    /// The role's own state.
    pub role: P,
    peer: SocketAddr,
    reader: Option<FramedRead<OwnedReadHalf, FrameReader<P::In>>>,
    reading: Option<SpawnHandle>,
    /// The socket, for peeking at it while reading is paused.
    fd: RawFd,
    /// Bytes waiting in the socket at the last tick while reading was
    /// paused; `None` while reading.
    peeked: Option<usize>,
    /// Requests waiting for their answers, with what to do with each.
    asks: FuturesUnordered<LocalBoxFuture<'static, Then<P>>>,
    /// Wakes the future that handles answers when `asks` gains one.
    asks_waker: Option<Waker>,
    gate: Rc<Gate>,
    write_half: Option<OwnedWriteHalf>,
    codec: FrameWriter,
    /// Sealed frames not yet taken by the socket.
    out: BytesMut,
    /// Bytes taken by the socket from the front of `out`'s allocation
    /// since it was last made or emptied.
    sent_front: usize,
    max_outgoing: usize,
    /// Wakes the flusher when `out` gains bytes while it is idle.
    flush_waker: Option<Waker>,
    /// Last time the socket took bytes (or `out` was empty).
    last_progress: Instant,
    failure: Option<String>,
    liveness: Liveness,
    /// Set once this side decided to close: what is queued is still sent.
    closing: bool,
    /// Cancelled when the connection is to close (see the module docs).
    close_token: Option<CancellationToken>,
    /// The manager's count of this connection: released with the actor.
    _permit: Option<crate::protocol::handshake::Guard>,
    /// Its part of the manager's bound on all connections' outgoing bytes.
    outgoing: Option<Share>,
    /// The length of `out`, for whoever decides what to send this peer.
    backlog: Arc<AtomicUsize>,
    /// The answers' future, while it waits for `out` to fall under the
    /// bound.
    answers_held: Option<Waker>,
}

impl<P: Peer> Connection<P> {
    /// Wraps an established connection for the role `role`; start it with
    /// `Actor::start` (or `create`, to hand the role its own address).
    pub fn new(est: Established, role: P) -> Connection<P> {
        let (reader, rest) = est.reader::<P::In>();
        let fd = reader.get_ref().as_ref().as_raw_fd();
        Connection {
            role,
            peer: rest.peer_addr,
            reader: Some(reader),
            reading: None,
            fd,
            peeked: None,
            asks: FuturesUnordered::new(),
            asks_waker: None,
            gate: Rc::default(),
            write_half: Some(rest.write),
            codec: rest.writer,
            // Grows on first use and is let go once flushed after a burst:
            // an idle connection holds little or no write buffer.
            out: BytesMut::new(),
            sent_front: 0,
            max_outgoing: rest.max_outgoing,
            flush_waker: None,
            last_progress: Instant::now(),
            failure: None,
            liveness: Liveness::new(rest.heartbeat),
            closing: false,
            close_token: None,
            _permit: rest.permit,
            outgoing: rest.outgoing,
            backlog: Arc::default(),
            answers_held: None,
        }
    }

    /// Closes the connection once `token` is cancelled (at once if it
    /// already is): see the module docs.
    pub fn close_on(mut self, token: CancellationToken) -> Connection<P> {
        self.close_token = Some(token);
        self
    }

    /// Address of the peer.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The largest frame body this side writes.
    pub fn max_frame(&self) -> usize {
        self.codec.max_frame()
    }

    /// Lowers the largest frame body this side writes to the peer's limit.
    pub fn limit_frames(&mut self, max: usize) {
        self.codec.limit_to(max);
    }

    /// Encodes `msg` and queues it for the peer. A message too large for a
    /// frame is replaced by the role's substitute, or closes the connection;
    /// so does passing the outgoing bound (see the module docs).
    pub fn send(&mut self, msg: P::Out, ctx: &mut Context<Self>) {
        if self.write_half.is_none() {
            return;
        }
        log::trace!("[{} {}] -> {}", P::LABEL, self.peer, msg.kind());
        self.liveness.spoke();
        let encoded = match self.codec.write(&msg, &mut self.out) {
            Err(e @ WireError::FrameTooLarge { .. }) => match P::substitute(&msg, &e) {
                Some(substitute) => self.codec.write(&substitute, &mut self.out),
                None => Err(e),
            },
            other => other,
        };
        if let Err(e) = encoded {
            return self.fail(&e, ctx);
        }
        self.report_outgoing();
        if self.outgoing.as_ref().is_some_and(Share::is_evicted) {
            return self.abandon(self.evicted_why(), ctx);
        }
        if let Some(w) = self.flush_waker.take() {
            w.wake();
        }
    }

    /// The bytes waiting for the peer, kept current by the connection.
    pub fn backlog(&self) -> Arc<AtomicUsize> {
        self.backlog.clone()
    }

    /// The bound on bytes waiting for the peer (`security.max_outgoing_bytes`).
    pub fn max_outgoing(&self) -> usize {
        self.max_outgoing
    }

    /// Waits for `request` (e.g. an actix `send`) and then runs `then` with
    /// its answer on this connection. See the module docs.
    pub fn ask<R: 'static>(
        &mut self,
        request: impl Future<Output = R> + 'static,
        then: impl FnOnce(R, &mut Connection<P>, &mut Context<Connection<P>>) + 'static,
    ) {
        self.asks.push(
            async move {
                let answer = request.await;
                Box::new(
                    move |conn: &mut Connection<P>, ctx: &mut Context<Connection<P>>| {
                        then(answer, conn, ctx)
                    },
                ) as Then<P>
            }
            .boxed_local(),
        );
        self.gate.open.set(self.asks.len());
        if let Some(w) = self.asks_waker.take() {
            w.wake();
        }
    }

    /// Handles the answers that are in; see [`Steady`].
    fn answer(&mut self, ctx: &mut Context<Self>, task: &mut std::task::Context<'_>) -> Poll<()> {
        loop {
            if let Some(share) = self.outgoing.as_ref().filter(|s| s.over()) {
                share.wake_when_under(task.waker());
                return Poll::Pending;
            }
            if self.out.len() > self.max_outgoing {
                // The flusher wakes this once the peer took enough.
                self.answers_held = Some(task.waker().clone());
                return Poll::Pending;
            }
            let Poll::Ready(Some(then)) = self.asks.poll_next_unpin(task) else {
                break;
            };
            self.gate.open.set(self.asks.len());
            if self.asks.len() < MAX_OPEN_REQUESTS {
                if let Some(w) = self.gate.reader.take() {
                    w.wake();
                }
            }
            then(self, ctx);
        }
        match &self.asks_waker {
            Some(w) if w.will_wake(task.waker()) => {}
            _ => self.asks_waker = Some(task.waker().clone()),
        }
        Poll::Pending
    }

    /// Whether a message [`Connection::send`] queues now still leaves: the
    /// connection is neither stopping nor dropping what it queued. After
    /// [`Connection::close`] it is, until what was queued is flushed.
    pub fn can_send(&self, ctx: &Context<Self>) -> bool {
        self.write_half.is_some() && ctx.state().alive()
    }

    /// Bytes queued for the peer and not yet taken by the socket.
    pub fn unsent(&self) -> usize {
        self.out.len()
    }

    /// Sends the protocol's `error` message (where the direction has one),
    /// then closes once it is flushed. Logged once.
    pub fn close_with_error(&mut self, message: String, ctx: &mut Context<Self>) {
        static VIOLATION: RateLimit = RateLimit::new(WARN_WINDOW);
        log_limited!(
            VIOLATION,
            log::Level::Warn,
            "[{} {}] {}; closing",
            P::LABEL,
            self.peer,
            escaped(&message)
        );
        self.failure = Some(message.clone());
        if let Some(m) = P::error_message(message) {
            self.send(m, ctx);
        }
        self.close(ctx);
    }

    /// Flushes what is queued, then stops.
    pub fn close(&mut self, ctx: &mut Context<Self>) {
        // Nothing more is read once we decided to close, and the end of
        // the peer's stream no longer stops the actor before the writer has
        // flushed (see `finished`).
        self.closing = true;
        if let Some(reading) = self.reading.take() {
            ctx.cancel_future(reading);
        }
        match self.flush_waker.take() {
            Some(w) => w.wake(),
            None if self.write_half.is_none() => ctx.stop(),
            None => {}
        }
    }

    /// Tells the manager's outgoing budget the memory `out` takes now: the
    /// bytes waiting and the sent front of the allocation they sit in
    /// (spare capacity is left out: an idle buffer is not a slow peer's).
    fn report_outgoing(&self) {
        self.backlog.store(self.out.len(), Ordering::Relaxed);
        if let Some(share) = &self.outgoing {
            share.set(self.out.len() + self.sent_front);
        }
    }

    fn evicted_why(&self) -> String {
        format!(
            "bytes held for all peers are over their bound; this peer's {} waiting are \
             among the most",
            self.out.len()
        )
    }

    /// Drops what is queued and stops at once: the peer will not take it.
    fn abandon(&mut self, why: String, ctx: &mut Context<Self>) {
        static SLOW: RateLimit = RateLimit::new(WARN_WINDOW);
        log_limited!(
            SLOW,
            log::Level::Warn,
            "[{} {}] closing: {why}",
            P::LABEL,
            self.peer
        );
        self.failure = Some(why);
        self.out = BytesMut::new();
        self.sent_front = 0;
        self.report_outgoing();
        self.write_half = None;
        ctx.stop();
    }

    /// Writes what `out` holds until the socket would block; see [`Steady`].
    fn flush(&mut self, ctx: &mut Context<Self>, task: &mut std::task::Context<'_>) -> Poll<()> {
        let before = self.out.len();
        let step = self.flush_out(ctx, task);
        if self.out.len() < before {
            if self.out.len() <= self.max_outgoing {
                if let Some(w) = self.answers_held.take() {
                    w.wake();
                }
            }
            P::flushed(self, ctx);
        }
        step
    }

    fn flush_out(
        &mut self,
        ctx: &mut Context<Self>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        let Some(io) = self.write_half.as_mut() else {
            return Poll::Ready(());
        };
        while !self.out.is_empty() {
            match Pin::new(&mut *io).poll_write(task, &self.out) {
                Poll::Ready(Ok(0)) => {
                    let e = std::io::Error::new(std::io::ErrorKind::WriteZero, "socket closed");
                    self.fail(&WireError::Io(e), ctx);
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    self.sent_front += n;
                    self.last_progress = Instant::now();
                }
                Poll::Ready(Err(e)) => {
                    self.fail(&WireError::Io(e), ctx);
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    // What the socket took still takes memory at the
                    // buffer's front: once it outweighs what waits, the rest
                    // moves to a buffer of its own size (each byte is so
                    // copied at most once per byte sent before it).
                    if self.sent_front > self.out.len().max(KEEP_OUT_CAPACITY) {
                        self.out = BytesMut::from(&self.out[..]);
                        self.sent_front = 0;
                    }
                    self.report_outgoing();
                    return Poll::Pending;
                }
            }
        }
        self.last_progress = Instant::now();
        self.sent_front = 0;
        if self.out.capacity() > KEEP_OUT_CAPACITY {
            self.out = BytesMut::new();
        }
        self.report_outgoing();
        if self.closing {
            ctx.stop();
            return Poll::Ready(());
        }
        match &self.flush_waker {
            Some(w) if w.will_wake(task.waker()) => {}
            _ => self.flush_waker = Some(task.waker().clone()),
        }
        Poll::Pending
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let stalled = self.last_progress.elapsed();
        if !self.out.is_empty() && stalled >= self.liveness.silence_limit() {
            let why = format!(
                "peer is not reading: {} bytes waiting, none taken for {}",
                self.out.len(),
                humantime::format_duration(Duration::from_secs(stalled.as_secs()))
            );
            return self.abandon(why, ctx);
        }
        // The write half holds the socket open, so `fd` is still this one.
        if self.gate.open.get() >= MAX_OPEN_REQUESTS && self.write_half.is_some() {
            match self.peer_wrote() {
                Some(true) => self.liveness.heard(),
                Some(false) => {}
                None => {
                    log::debug!("[{} {}] closed by peer", P::LABEL, self.peer);
                    return ctx.stop();
                }
            }
        } else {
            self.peeked = None;
        }
        match self.liveness.tick() {
            Tick::Quiet => {}
            Tick::Beat => self.send(P::Out::heartbeat(), ctx),
            Tick::Silent => {
                static SILENT: RateLimit = RateLimit::new(WARN_WINDOW);
                log_limited!(
                    SILENT,
                    log::Level::Warn,
                    "[{} {}] closing: silent for {}",
                    P::LABEL,
                    self.peer,
                    humantime::format_duration(self.liveness.silence_limit())
                );
                self.failure = Some("peer silent".to_string());
                ctx.stop();
            }
        }
    }

    /// While reading is paused: whether the peer wrote since the last
    /// look (its bytes in the socket grew, or fill a whole peek), or
    /// `None` once its end of stream (or a socket error) is all that waits
    /// there.
    fn peer_wrote(&mut self) -> Option<bool> {
        use nix::errno::Errno;
        use nix::sys::socket::{recv, MsgFlags};
        let mut buf = [0u8; PEEK_BYTES];
        let waiting = match recv(
            self.fd,
            &mut buf,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => 0,
            Err(_) => return None,
        };
        let before = self.peeked.replace(waiting);
        Some(waiting == PEEK_BYTES || before.is_none_or(|b| waiting > b) && waiting > 0)
    }

    fn fail(&mut self, err: &WireError, ctx: &mut Context<Self>) {
        static FAILED: RateLimit = RateLimit::new(WARN_WINDOW);
        log_limited!(
            FAILED,
            log::Level::Warn,
            "[{} {}] closing: {}",
            P::LABEL,
            self.peer,
            escaped(err)
        );
        self.failure = Some(err.to_string());
        ctx.stop();
    }
}

impl<P: Peer> Actor for Connection<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.spawn(Steady(Self::flush));
        ctx.spawn(Steady(Self::answer));
        if let Some(reader) = self.reader.take() {
            let gate = self.gate.clone();
            self.reading = Some(ctx.add_stream(Gated {
                inner: reader,
                gate,
            }));
        }
        let every = self.liveness.interval();
        if !every.is_zero() {
            ctx.run_interval(every, |act, ctx| act.tick(ctx));
        }
        if let Some(evicted) = self.outgoing.as_ref().map(|s| s.evicted.clone()) {
            ctx.spawn(fut::wrap_future(evicted.cancelled_owned()).map(
                |_, act: &mut Self, ctx: &mut Context<Self>| act.abandon(act.evicted_why(), ctx),
            ));
        }
        if let Some(token) = self.close_token.take() {
            // Through the mailbox, behind what is already there.
            ctx.spawn(fut::wrap_future(token.cancelled_owned()).map(
                |_, _: &mut Self, ctx: &mut Context<Self>| ctx.address().do_send(CloseConnection),
            ));
        }
        P::started(self, ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let failure = self.failure.take();
        self.role.stopped(failure);
    }
}

impl<P: Peer> StreamHandler<Result<P::In, WireError>> for Connection<P> {
    fn handle(&mut self, item: Result<P::In, WireError>, ctx: &mut Self::Context) {
        // Frames read in the same burst as the one that closed the
        // connection are dropped: the peer gets one `error`, and nothing
        // after it is acted on.
        if self.closing || self.failure.is_some() {
            return;
        }
        match item {
            Ok(msg) => {
                log::trace!("[{} {}] <- {}", P::LABEL, self.peer, msg.kind());
                self.liveness.heard();
                if !msg.is_heartbeat() {
                    P::received(self, msg, ctx);
                }
            }
            Err(WireError::NotAllowed(kind)) => {
                self.close_with_error(format!("a {} may not send {kind}", P::LABEL), ctx)
            }
            Err(e @ WireError::Decode(_)) => self.close_with_error(e.to_string(), ctx),
            Err(e) => self.fail(&e, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        log::debug!("[{} {}] closed by peer", P::LABEL, self.peer);
        ctx.stop();
    }
}

/// One of a connection's long-lived futures: it runs its step on every
/// wake-up of the actor, after the mailbox. [`Connection::flush`] empties
/// the outgoing buffer (woken by [`Connection::send`] when it had nothing
/// to do); [`Connection::answer`] handles the answers to the connection's
/// requests (woken by each answer, and by [`Connection::ask`] while it had
/// none).
struct Steady<P: Peer>(Step<P>);

type Step<P> =
    fn(&mut Connection<P>, &mut Context<Connection<P>>, &mut std::task::Context<'_>) -> Poll<()>;

impl<P: Peer> ActorFuture<Connection<P>> for Steady<P> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Connection<P>,
        ctx: &mut Context<Connection<P>>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        (self.0)(act, ctx, task)
    }
}

impl<P: Peer> Handler<CloseConnection> for Connection<P> {
    type Result = ();

    fn handle(&mut self, _: CloseConnection, ctx: &mut Self::Context) {
        self.close(ctx);
    }
}
