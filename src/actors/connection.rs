//! The codec actor: owns an established connection's socket halves, turns
//! sealed frames into typed [`Inbound`] messages for its owner and
//! [`Outbound`] messages back into frames.
//!
//! Writes go through `actix::io::Writer`, which buffers and flushes when the
//! socket is ready, so a burst of replies becomes few syscalls. Any wire
//! error is logged once, with the peer's address, and closes the connection.
//! A reply or result too large for one frame is replaced by a failure that
//! says so, rather than breaking the connection for everyone on it.
//!
//! On a quiet connection it sends a heartbeat every interval, and it closes a
//! connection on which nothing has arrived for three intervals, so a peer
//! whose host vanished without closing its socket is noticed. Heartbeats are
//! never forwarded to the owner.

use std::net::SocketAddr;
use std::time::Duration;

use actix::io::{WriteHandler, Writer};
use actix::prelude::*;
use bytes::BytesMut;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{Encoder, FramedRead};

use crate::messages::{CloseConnection, Inbound, Outbound};
use crate::protocol::{
    Established, FrameReader, FrameWriter, Message, Outcome, WireError, SILENT_INTERVALS,
};

/// One established connection.
pub struct Connection {
    peer: SocketAddr,
    label: &'static str,
    owner: Recipient<Inbound>,
    reader: Option<FramedRead<OwnedReadHalf, FrameReader>>,
    writer: Option<Writer<OwnedWriteHalf, WireError>>,
    write_half: Option<OwnedWriteHalf>,
    codec: FrameWriter,
    scratch: BytesMut,
    failure: Option<String>,
    heartbeat: Duration,
    heard: bool,
    spoke: bool,
    silent_ticks: u32,
}

impl Connection {
    /// Wraps an established connection; `label` names the peer's kind in logs.
    pub fn new(est: Established, label: &'static str, owner: Recipient<Inbound>) -> Connection {
        Connection {
            peer: est.peer_addr,
            label,
            owner,
            reader: Some(est.reader),
            writer: None,
            write_half: Some(est.write),
            codec: est.writer,
            // Grows to the largest frame sent, on first use: an idle
            // connection holds no write buffer.
            scratch: BytesMut::new(),
            failure: None,
            heartbeat: est.heartbeat,
            heard: false,
            spoke: false,
            silent_ticks: 0,
        }
    }

    /// Address of the peer.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Once per heartbeat interval: say something if nothing was said, and
    /// give up on a peer that has said nothing for `SILENT_INTERVALS`.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if std::mem::take(&mut self.heard) {
            self.silent_ticks = 0;
        } else {
            self.silent_ticks += 1;
            if self.silent_ticks >= SILENT_INTERVALS {
                log::warn!(
                    "[{} {}] closing: silent for {}",
                    self.label,
                    self.peer,
                    humantime::format_duration(self.heartbeat * SILENT_INTERVALS)
                );
                self.failure = Some("peer silent".to_string());
                ctx.stop();
                return;
            }
        }
        if !std::mem::take(&mut self.spoke) {
            self.send(Message::Heartbeat {}, ctx);
        }
    }

    fn send(&mut self, msg: Message, ctx: &mut Context<Self>) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        log::trace!("[{} {}] -> {}", self.label, self.peer, msg.kind());
        self.spoke = true;
        self.scratch.clear();
        let encoded = match self.codec.encode(&msg, &mut self.scratch) {
            Err(WireError::FrameTooLarge { len, max }) => match too_large(msg, len, max) {
                Some(substitute) => self.codec.encode(substitute, &mut self.scratch),
                None => Err(WireError::FrameTooLarge { len, max }),
            },
            other => other,
        };
        match encoded {
            Ok(()) => w.write(&self.scratch),
            Err(e) => self.fail(&e, ctx),
        }
    }

    fn fail(&mut self, err: &WireError, ctx: &mut Context<Self>) {
        log::warn!("[{} {}] closing: {err}", self.label, self.peer);
        self.failure = Some(err.to_string());
        ctx.stop();
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(half) = self.write_half.take() {
            self.writer = Some(Writer::new(half, ctx));
        }
        if let Some(reader) = self.reader.take() {
            ctx.add_stream(reader);
        }
        if !self.heartbeat.is_zero() {
            ctx.run_interval(self.heartbeat, |act, ctx| act.tick(ctx));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.owner.do_send(Inbound::Closed(self.failure.take()));
    }
}

impl StreamHandler<Result<Message, WireError>> for Connection {
    fn handle(&mut self, item: Result<Message, WireError>, ctx: &mut Self::Context) {
        match item {
            Ok(msg) => {
                log::trace!("[{} {}] <- {}", self.label, self.peer, msg.kind());
                self.heard = true;
                if msg != (Message::Heartbeat {}) {
                    self.owner.do_send(Inbound::Frame(msg));
                }
            }
            Err(e) => self.fail(&e, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        log::debug!("[{} {}] closed by peer", self.label, self.peer);
        ctx.stop();
    }
}

impl WriteHandler<WireError> for Connection {
    fn error(&mut self, err: WireError, ctx: &mut Self::Context) -> Running {
        self.fail(&err, ctx);
        Running::Stop
    }
}

impl Handler<Outbound> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        self.send(msg.0, ctx);
    }
}

impl Handler<CloseConnection> for Connection {
    type Result = ();

    fn handle(&mut self, _: CloseConnection, ctx: &mut Self::Context) {
        match self.writer.as_mut() {
            // The writer stops the actor once the buffer is flushed.
            Some(w) => w.close(),
            None => ctx.stop(),
        }
    }
}

/// The failure that stands in for a reply or result too large for a frame.
fn too_large(msg: Message, len: usize, max: usize) -> Option<Message> {
    let outcome = Outcome::Failed {
        error: format!("result of {len} bytes exceeds the frame limit of {max} bytes"),
    };
    match msg {
        Message::Reply { id, .. } => Some(Message::Reply { id, outcome }),
        Message::Finished { task_id, .. } => Some(Message::Finished { task_id, outcome }),
        _ => None,
    }
}
