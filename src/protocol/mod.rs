//! The wire protocol: length-prefixed frames, the key handshake, AES-256-GCM
//! sealing and the MessagePack message types.
//!
//! Layers, bottom up: [`crypto`] (keys and sealing, no I/O), [`codec`]
//! (frames to typed messages of one direction and back), [`handshake`]
//! (turning a fresh TCP stream into an authenticated, encrypted pair of
//! halves), [`liveness`] (the heartbeat rule every peer follows). `docs/PROTOCOL.md`
//! describes the same thing byte by byte.

pub mod codec;
pub mod crypto;
pub mod handshake;
pub mod liveness;
pub mod message;

pub use codec::{FrameReader, FrameWriter};
pub use crypto::MasterKey;
pub use handshake::{Established, HandshakeSettings, Writing};
pub use liveness::{Liveness, Tick};

pub use message::*;

/// Version of the wire protocol spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default heartbeat interval on quiet connections.
pub const DEFAULT_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// Heartbeat intervals a peer may stay silent before it is taken for gone.
pub const SILENT_INTERVALS: u32 = 3;

/// Requests one connection may have waiting for their answers; at this
/// many the receiving side reads nothing more from it until one is
/// answered (`Connection::ask` in the actors). Far above what one client
/// keeps in flight per turn of the manager (its frames are read 16 at a
/// time), far below what would let one peer fill the manager's mailbox.
pub const MAX_OPEN_REQUESTS: usize = 256;

/// Default largest frame body accepted or sent: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Default bound on the bytes a connection holds for a peer that is slow to
/// read them; past it the connection is closed (see `docs/PROTOCOL.md`,
/// "Limits").
pub const DEFAULT_MAX_OUTGOING: usize = 64 * 1024 * 1024;

/// Everything that can go wrong between bytes on a socket and a typed message.
///
/// Decryption errors never echo the input.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A length prefix announced more than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length (0 if unknown).
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The peer's first sealed frame did not authenticate: it holds another key.
    #[error("authentication failed: the peer does not use the same key")]
    BadKey,
    /// A later frame did not authenticate: tampered with, or corrupt.
    #[error("frame failed authentication (tampered or corrupt)")]
    Tampered,
    /// A frame carried a counter already seen on this connection.
    #[error("replayed frame (counter {got}, expected {expected})")]
    Replayed {
        /// Counter in the frame.
        got: u64,
        /// Counter the receiver expected next.
        expected: u64,
    },
    /// A frame carried a counter from the future: one was dropped or reordered.
    #[error("out-of-order frame (counter {got}, expected {expected})")]
    OutOfOrder {
        /// Counter in the frame.
        got: u64,
        /// Counter the receiver expected next.
        expected: u64,
    },
    /// A frame too short to hold a counter and a tag, or a stream that ended
    /// in the middle of a frame.
    #[error("truncated frame ({len} bytes)")]
    Truncated {
        /// Bytes that were there.
        len: usize,
    },
    /// The first frame was not an Argon hello.
    #[error("not an Argon peer (bad hello frame)")]
    BadHello,
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    Version(u32),
    /// A well-formed message that this direction and role may not send.
    #[error("{0} is not allowed here")]
    NotAllowed(&'static str),
    /// The plaintext was not a valid message.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// A message could not be serialized (should not happen for our types).
    #[error("message could not be encoded: {0}")]
    Encode(String),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer closed the connection before the handshake finished.
    #[error("connection closed during the handshake")]
    ClosedEarly,
    /// The handshake finished but the peer's role or first message was wrong.
    #[error("handshake refused: {0}")]
    Refused(String),
    /// The manager sent a refusal in place of its hello: it takes no more
    /// connections now.
    #[error("the manager is at its connection limit ({0})")]
    AtLimit(handshake::Refusal),
}
