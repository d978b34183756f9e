//! The connection handshake: turns a fresh TCP stream into an authenticated,
//! encrypted pair of halves.
//!
//! 1. Both sides send a clear hello frame: `ARGN`, the protocol version byte,
//!    and 32 fresh random bytes.
//! 2. Both derive per-direction session keys from the master key and the two
//!    nonces (see [`crate::protocol::crypto`]).
//! 3. Both send a sealed `auth` message (version, role). The first sealed
//!    frame that opens proves the peer holds the key; one that does not open
//!    is [`WireError::BadKey`].
//!
//! The whole exchange is bounded by [`HandshakeSettings::timeout`], so a peer
//! that stalls half-way is dropped, and the auth frames by
//! [`HANDSHAKE_MAX_FRAME`], so a peer without the key cannot make the other
//! side buffer more than that.
//!
//! A manager that takes no more connections sends a [`Refusal`] frame in
//! place of its hello ([`refuse`]); the initiator reports it as
//! [`WireError::AtLimit`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use super::codec::{FrameReader, FrameWriter, IDLE_READ_BUFFER, LEN_PREFIX};
use super::crypto::{fill_random, MasterKey, NONCE_LEN};
use super::{AuthFrame, Role, WireError, WireMessage, DEFAULT_HEARTBEAT, PROTOCOL_VERSION};

/// Magic bytes that open a hello frame.
pub const HELLO_MAGIC: &[u8; 4] = b"ARGN";
/// Length of a hello frame's body: magic, version byte, nonce.
pub const HELLO_LEN: usize = 4 + 1 + NONCE_LEN;
/// Length of a refusal frame's body: magic, a zero byte, the reason code.
pub const REFUSAL_LEN: usize = 4 + 1 + 1;
/// Largest `auth` frame body either side reads, whatever its
/// `max_frame`: the length prefix is checked before anything is buffered.
pub const HANDSHAKE_MAX_FRAME: usize = 4096;

/// Why a manager refused a connection, sent in place of its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It already holds its `max_connections` connections (code 1).
    Connections,
    /// Its handshake slots (overall, or for the peer's address) are all
    /// taken by handshakes too recent to evict (code 2): transient, worth
    /// retrying after a few milliseconds.
    Handshakes,
    /// A reason code this build does not know.
    Other(u8),
}

impl Refusal {
    /// The reason's byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            Refusal::Connections => 1,
            Refusal::Handshakes => 2,
            Refusal::Other(c) => c,
        }
    }

    /// The reason a code stands for.
    pub fn from_code(code: u8) -> Refusal {
        match code {
            1 => Refusal::Connections,
            2 => Refusal::Handshakes,
            c => Refusal::Other(c),
        }
    }

    /// The whole frame: length prefix 6, `ARGN`, `0x00`, the code.
    pub fn frame(self) -> [u8; LEN_PREFIX + REFUSAL_LEN] {
        let mut f = [0u8; LEN_PREFIX + REFUSAL_LEN];
        f[..LEN_PREFIX].copy_from_slice(&(REFUSAL_LEN as u32).to_be_bytes());
        f[LEN_PREFIX..LEN_PREFIX + 4].copy_from_slice(HELLO_MAGIC);
        f[LEN_PREFIX + 5] = self.code();
        f
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Connections => f.write_str("too many connections"),
            Refusal::Handshakes => f.write_str("too many handshakes in progress"),
            Refusal::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

/// Refuses a freshly accepted connection: writes the refusal frame in place
/// of the hello and closes. Never waits: a fresh socket's send buffer takes
/// the 10 bytes at once.
pub fn refuse(stream: TcpStream, why: Refusal) {
    use std::io::{Read, Write};
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    let _ = stream.write(&why.frame());
    // Consuming what the peer already sent (its hello) makes the close a
    // FIN rather than a reset, which some stacks let overtake the refusal.
    let mut sink = [0u8; 256];
    for _ in 0..4 {
        if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// What both sides of a handshake need.
#[derive(Clone, Debug)]
pub struct HandshakeSettings {
    /// The cluster's shared key.
    pub key: Arc<MasterKey>,
    /// Largest frame body accepted or sent.
    pub max_frame: usize,
    /// Bound on the whole handshake.
    pub timeout: Duration,
    /// A quiet connection sends a heartbeat this often; a peer silent for
    /// three intervals is disconnected.
    pub heartbeat: Duration,
    /// Bound on the bytes queued for a peer that does not read them; at
    /// least `max_frame`.
    pub max_outgoing: usize,
}

impl HandshakeSettings {
    /// Settings with the default frame limit, a 5 s handshake timeout and
    /// a 5 s heartbeat.
    pub fn new(key: MasterKey) -> HandshakeSettings {
        HandshakeSettings {
            key: Arc::new(key),
            max_frame: super::DEFAULT_MAX_FRAME,
            timeout: Duration::from_secs(5),
            heartbeat: DEFAULT_HEARTBEAT,
            max_outgoing: super::DEFAULT_MAX_OUTGOING,
        }
    }
}

/// Something held for as long as a connection lives and released when it
/// is dropped (on the manager, its count of the connection).
pub type Guard = Box<dyn Send>;

/// An authenticated connection, ready for sealed traffic.
pub struct Established {
    /// Frames from the peer, past its auth; [`Established::reader`] types them.
    pub read: FramedRead<OwnedReadHalf, FrameReader<AuthFrame>>,
    /// The raw write half.
    pub write: OwnedWriteHalf,
    /// Encoder for messages to the peer (its counter is past the auth frame).
    pub writer: FrameWriter,
    /// Role the peer proved.
    pub peer_role: Role,
    /// Peer's self-description.
    pub peer_agent: String,
    /// Peer's address.
    pub peer_addr: SocketAddr,
    /// Heartbeat interval (from the settings).
    pub heartbeat: Duration,
    /// Bound on bytes queued for the peer (from the settings).
    pub max_outgoing: usize,
    /// The manager's count of this connection, released when the
    /// connection's actor is dropped; `None` on the initiator's side.
    pub permit: Option<Guard>,
    /// The connection's part of the manager's bound on the bytes all
    /// connections hold for their peers; `None` on the initiator's side.
    pub outgoing: Option<crate::outgoing::Share>,
}

impl Established {
    /// The read half, decoding the peer's messages as `T` (its role's
    /// direction), together with the rest of the connection.
    pub fn reader<T: WireMessage>(self) -> (FramedRead<OwnedReadHalf, FrameReader<T>>, Writing) {
        let reader = self.read.map_decoder(FrameReader::retype);
        let rest = Writing {
            write: self.write,
            writer: self.writer,
            peer_addr: self.peer_addr,
            heartbeat: self.heartbeat,
            max_outgoing: self.max_outgoing,
            permit: self.permit,
            outgoing: self.outgoing,
        };
        (reader, rest)
    }
}

/// The writing side of an established connection, and what both sides
/// need to know about it.
pub struct Writing {
    /// The raw write half.
    pub write: OwnedWriteHalf,
    /// Encoder for messages to the peer (its counter is past the auth frame).
    pub writer: FrameWriter,
    /// Peer's address.
    pub peer_addr: SocketAddr,
    /// Heartbeat interval (from the settings).
    pub heartbeat: Duration,
    /// Bound on bytes queued for the peer (from the settings).
    pub max_outgoing: usize,
    /// See [`Established::permit`].
    pub permit: Option<Guard>,
    /// See [`Established::outgoing`].
    pub outgoing: Option<crate::outgoing::Share>,
}

/// Connects as `role` (client or worker) over an already connected stream.
pub async fn initiate(
    stream: TcpStream,
    role: Role,
    settings: &HandshakeSettings,
) -> Result<Established, WireError> {
    bounded(settings.timeout, run(stream, role, true, settings)).await
}

/// Accepts a client or worker on a freshly accepted stream (manager side).
pub async fn accept(
    stream: TcpStream,
    settings: &HandshakeSettings,
) -> Result<Established, WireError> {
    accept_within(stream, settings, settings.timeout).await
}

/// [`accept`] bounded by `limit` instead of the settings' timeout (shorter
/// while many handshakes are in progress).
pub async fn accept_within(
    stream: TcpStream,
    settings: &HandshakeSettings,
    limit: Duration,
) -> Result<Established, WireError> {
    bounded(limit, run(stream, Role::Manager, false, settings)).await
}

async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, WireError>>,
) -> Result<T, WireError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(WireError::HandshakeTimeout))
}

fn eof_is_early(e: std::io::Error) -> WireError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        WireError::ClosedEarly
    } else {
        WireError::Io(e)
    }
}

async fn run(
    mut stream: TcpStream,
    role: Role,
    initiator: bool,
    settings: &HandshakeSettings,
) -> Result<Established, WireError> {
    let peer_addr = stream.peer_addr()?;
    let mut mine = [0u8; NONCE_LEN];
    fill_random(&mut mine)?;
    let mut hello = Vec::with_capacity(LEN_PREFIX + HELLO_LEN);
    hello.extend_from_slice(&(HELLO_LEN as u32).to_be_bytes());
    hello.extend_from_slice(HELLO_MAGIC);
    hello.push(PROTOCOL_VERSION as u8);
    hello.extend_from_slice(&mine);
    // A manager that refuses the connection may close it before our hello
    // is out: its refusal, already on its way, still says why.
    let sent = stream.write_all(&hello).await;

    let mut len = [0u8; LEN_PREFIX];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) => return Err(sent.err().map_or_else(|| eof_is_early(e), WireError::Io)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if initiator && len == REFUSAL_LEN {
        let mut body = [0u8; REFUSAL_LEN];
        stream.read_exact(&mut body).await.map_err(eof_is_early)?;
        if &body[..4] == HELLO_MAGIC && body[4] == 0 {
            return Err(WireError::AtLimit(Refusal::from_code(body[5])));
        }
        return Err(WireError::BadHello);
    }
    sent?;
    if len != HELLO_LEN {
        return Err(WireError::BadHello);
    }
    let mut theirs_hello = [0u8; HELLO_LEN];
    stream
        .read_exact(&mut theirs_hello)
        .await
        .map_err(eof_is_early)?;
    if &theirs_hello[..4] != HELLO_MAGIC {
        return Err(WireError::BadHello);
    }
    if theirs_hello[4] as u32 != PROTOCOL_VERSION {
        return Err(WireError::Version(theirs_hello[4] as u32));
    }
    let mut theirs = [0u8; NONCE_LEN];
    theirs.copy_from_slice(&theirs_hello[5..]);

    let (i_nonce, r_nonce) = if initiator {
        (&mine, &theirs)
    } else {
        (&theirs, &mine)
    };
    let (i2r, r2i) = settings.key.session_keys(i_nonce, r_nonce);
    let (send_key, recv_key) = if initiator { (i2r, r2i) } else { (r2i, i2r) };

    let (read, mut write) = stream.into_split();
    let mut writer = FrameWriter::new(&send_key, settings.max_frame);
    let mut out = BytesMut::new();
    writer.write(
        &AuthFrame::Auth {
            version: PROTOCOL_VERSION,
            role,
            agent: format!("argon-rs/{}", env!("CARGO_PKG_VERSION")),
        },
        &mut out,
    )?;
    write.write_all(&out).await?;

    let mut reader = FramedRead::with_capacity(
        read,
        FrameReader::<AuthFrame>::new(&recv_key, settings.max_frame.min(HANDSHAKE_MAX_FRAME)),
        IDLE_READ_BUFFER,
    );
    let (peer_role, peer_agent) = match reader.next().await {
        None => return Err(WireError::ClosedEarly),
        // Under the right key, anything but an auth map is a refusal.
        Some(Err(WireError::Decode(e))) => {
            return Err(WireError::Refused(format!("expected auth: {e}")))
        }
        Some(Err(e)) => return Err(e),
        Some(Ok(AuthFrame::Auth {
            version,
            role,
            agent,
        })) => {
            if version != PROTOCOL_VERSION {
                return Err(WireError::Version(version));
            }
            (role, agent)
        }
    };
    let role_ok = if initiator {
        peer_role == Role::Manager
    } else {
        matches!(peer_role, Role::Client | Role::Worker)
    };
    if !role_ok {
        return Err(WireError::Refused(format!(
            "a {role} does not talk to a {peer_role}"
        )));
    }
    reader.decoder_mut().set_max_frame(settings.max_frame);
    Ok(Established {
        read: reader,
        write,
        writer,
        peer_role,
        peer_agent,
        peer_addr,
        heartbeat: settings.heartbeat,
        max_outgoing: settings.max_outgoing,
        permit: None,
        outgoing: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn settings(material: &[u8]) -> HandshakeSettings {
        let mut s = HandshakeSettings::new(MasterKey::from_material(material));
        s.timeout = Duration::from_secs(2);
        s
    }

    async fn pair(
        client_key: &[u8],
        server_key: &[u8],
    ) -> (
        Result<Established, WireError>,
        Result<Established, WireError>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_settings = settings(server_key);
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            accept(s, &server_settings).await
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let client = initiate(stream, Role::Client, &settings(client_key)).await;
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn same_key_establishes_both_sides() {
        let (c, s) = pair(b"the same key", b"the same key").await;
        let (c, s) = (c.unwrap(), s.unwrap());
        assert_eq!(c.peer_role, Role::Manager);
        assert_eq!(s.peer_role, Role::Client);
    }

    #[tokio::test]
    async fn wrong_key_is_bad_key_on_both_sides() {
        let (c, s) = pair(b"key one", b"key two").await;
        assert!(matches!(c, Err(WireError::BadKey)), "{:?}", c.err());
        assert!(matches!(s, Err(WireError::BadKey)), "{:?}", s.err());
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _idle = TcpStream::connect(addr).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        let mut st = settings(b"k");
        st.timeout = Duration::from_millis(200);
        assert!(matches!(
            accept(s, &st).await,
            Err(WireError::HandshakeTimeout)
        ));
    }

    #[tokio::test]
    async fn a_refusal_in_place_of_the_hello_says_why() {
        for why in [Refusal::Connections, Refusal::Handshakes, Refusal::Other(9)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let stream = TcpStream::connect(addr).await.unwrap();
            let (s, _) = listener.accept().await.unwrap();
            refuse(s, why);
            match initiate(stream, Role::Client, &settings(b"k")).await {
                Err(WireError::AtLimit(got)) => assert_eq!(got, why),
                other => panic!("expected a refusal, got {:?}", other.err()),
            }
        }
        assert_eq!(
            Refusal::Connections.frame(),
            [0, 0, 0, 6, b'A', b'R', b'G', b'N', 0, 1]
        );
    }

    #[tokio::test]
    async fn a_responder_takes_a_refusal_for_a_bad_hello() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut g = TcpStream::connect(addr).await.unwrap();
        g.write_all(&Refusal::Connections.frame()).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        assert!(matches!(
            accept(s, &settings(b"k")).await,
            Err(WireError::BadHello)
        ));
    }

    /// A hello, then the length prefix of an auth frame of `len` bytes and
    /// `len` bytes of it, as a peer without the key might send.
    async fn oversized_auth(len: usize) -> Result<Established, WireError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut g = TcpStream::connect(addr).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        let server = tokio::spawn(async move { accept(s, &settings(b"k")).await });
        let mut bytes = (HELLO_LEN as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(HELLO_MAGIC);
        bytes.push(PROTOCOL_VERSION as u8);
        bytes.extend_from_slice(&[3; NONCE_LEN]);
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.resize(bytes.len() + len, 0);
        let _ = g.write_all(&bytes).await;
        server.await.unwrap()
    }

    #[tokio::test]
    async fn an_auth_frame_over_the_handshake_limit_is_refused_unread() {
        match oversized_auth(HANDSHAKE_MAX_FRAME + 1).await {
            Err(WireError::FrameTooLarge { len, max }) => {
                assert_eq!((len, max), (HANDSHAKE_MAX_FRAME + 1, HANDSHAKE_MAX_FRAME));
            }
            other => panic!("expected FrameTooLarge, got {:?}", other.err()),
        }
        // At the limit, the frame is read, and fails as a frame of another key.
        assert!(matches!(
            oversized_auth(HANDSHAKE_MAX_FRAME).await,
            Err(WireError::BadKey)
        ));
    }

    #[tokio::test]
    async fn frames_past_the_handshake_may_be_large_again() {
        let (c, s) = pair(b"k", b"k").await;
        let (mut c, s) = (c.unwrap(), s.unwrap());
        let mut out = BytesMut::new();
        let big = AuthFrame::Auth {
            version: PROTOCOL_VERSION,
            role: Role::Client,
            agent: "x".repeat(64 * 1024),
        };
        c.writer.write(&big, &mut out).unwrap();
        c.write.write_all(&out).await.unwrap();
        let mut read = s.read;
        match read.next().await {
            Some(Ok(AuthFrame::Auth { agent, .. })) => assert_eq!(agent.len(), 64 * 1024),
            other => panic!("expected the large frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_hello_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut g = TcpStream::connect(addr).await.unwrap();
        g.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        assert!(matches!(
            accept(s, &settings(b"k")).await,
            Err(WireError::BadHello)
        ));
    }
}
