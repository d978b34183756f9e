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
//! Writes go through `actix::io::Writer`, which buffers and flushes when the
//! socket is ready, so a burst of replies becomes few syscalls. A wire error
//! is logged once, with the peer's address, and closes the connection; a
//! message the role may not receive is answered with the protocol's `error`
//! message first. Heartbeats follow [`Liveness`] and never reach the role.

use std::net::SocketAddr;

use actix::io::{WriteHandler, Writer};
use actix::prelude::*;
use bytes::BytesMut;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

use crate::messages::CloseConnection;
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
    writer: Option<Writer<OwnedWriteHalf, WireError>>,
    write_half: Option<OwnedWriteHalf>,
    codec: FrameWriter,
    scratch: BytesMut,
    failure: Option<String>,
    liveness: Liveness,
    /// Set once this side decided to close: what is queued is still sent.
    closing: bool,
}

impl<P: Peer> Connection<P> {
    /// Wraps an established connection for the role `role`; start it with
    /// `Actor::start` (or `create`, to hand the role its own address).
    pub fn new(est: Established, role: P) -> Connection<P> {
        let (reader, rest) = est.reader::<P::In>();
        Connection {
            role,
            peer: rest.peer_addr,
            reader: Some(reader),
            reading: None,
            writer: None,
            write_half: Some(rest.write),
            codec: rest.writer,
            // Grows to the largest frame sent, on first use: an idle
            // connection holds no write buffer.
            scratch: BytesMut::new(),
            failure: None,
            liveness: Liveness::new(rest.heartbeat),
            closing: false,
        }
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
    /// frame is replaced by the role's substitute, or closes the connection.
    pub fn send(&mut self, msg: P::Out, ctx: &mut Context<Self>) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        log::trace!("[{} {}] -> {}", P::LABEL, self.peer, msg.kind());
        self.liveness.spoke();
        self.scratch.clear();
        let encoded = match self.codec.write(&msg, &mut self.scratch) {
            Err(e @ WireError::FrameTooLarge { .. }) => match P::substitute(&msg, &e) {
                Some(substitute) => self.codec.write(&substitute, &mut self.scratch),
                None => Err(e),
            },
            other => other,
        };
        match encoded {
            Ok(()) => w.write(&self.scratch),
            Err(e) => self.fail(&e, ctx),
        }
    }

    /// Sends the protocol's `error` message (where the direction has one),
    /// then closes once it is flushed. Logged once.
    pub fn close_with_error(&mut self, message: String, ctx: &mut Context<Self>) {
        log::warn!(
            "[{} {}] {}; closing",
            P::LABEL,
            self.peer,
            message.escape_debug()
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
        match self.writer.as_mut() {
            // The writer stops the actor once the buffer is flushed.
            Some(w) => w.close(),
            None => ctx.stop(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        match self.liveness.tick() {
            Tick::Quiet => {}
            Tick::Beat => self.send(P::Out::heartbeat(), ctx),
            Tick::Silent => {
                log::warn!(
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

    fn fail(&mut self, err: &WireError, ctx: &mut Context<Self>) {
        log::warn!("[{} {}] closing: {err}", P::LABEL, self.peer);
        self.failure = Some(err.to_string());
        ctx.stop();
    }
}

impl<P: Peer> Actor for Connection<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(half) = self.write_half.take() {
            self.writer = Some(Writer::new(half, ctx));
        }
        if let Some(reader) = self.reader.take() {
            self.reading = Some(ctx.add_stream(reader));
        }
        let every = self.liveness.interval();
        if !every.is_zero() {
            ctx.run_interval(every, |act, ctx| act.tick(ctx));
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

impl<P: Peer> WriteHandler<WireError> for Connection<P> {
    fn error(&mut self, err: WireError, ctx: &mut Self::Context) -> Running {
        self.fail(&err, ctx);
        Running::Stop
    }
}

impl<P: Peer> Handler<CloseConnection> for Connection<P> {
    type Result = ();

    fn handle(&mut self, _: CloseConnection, ctx: &mut Self::Context) {
        self.close(ctx);
    }
}
