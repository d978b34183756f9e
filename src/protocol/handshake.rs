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
//! that stalls half-way is dropped.

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
    bounded(
        settings.timeout,
        run(stream, Role::Manager, false, settings),
    )
    .await
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
    stream.write_all(&hello).await?;

    let mut len = [0u8; LEN_PREFIX];
    stream.read_exact(&mut len).await.map_err(eof_is_early)?;
    if u32::from_be_bytes(len) as usize != HELLO_LEN {
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
        FrameReader::<AuthFrame>::new(&recv_key, settings.max_frame),
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
    Ok(Established {
        read: reader,
        write,
        writer,
        peer_role,
        peer_agent,
        peer_addr,
        heartbeat: settings.heartbeat,
        max_outgoing: settings.max_outgoing,
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
