//! Fuzz target for the frame decoder ([`FrameReader`]) and the message
//! decoders of every direction, written as proptest properties so that it
//! runs under plain `cargo test` with a bounded number of cases. Set
//! `PROPTEST_CASES` to run more (see `tests/fuzz_corpus/README.md`).
//!
//! - Raw bytes, alone or after valid frames, sealed with the right key or
//!   another, reach a reader before the handshake's auth and after it, in
//!   pieces of any size: no panic, only the frame-level errors, and the
//!   reader gives back exactly the valid frames before the garbage.
//! - Arbitrary MessagePack-ish plaintexts, sealed under the session key with
//!   the right counter (so they reach the message decoder), and mutations of
//!   the valid messages of `tests/fuzz_corpus/`: each decodes to a message
//!   that re-encodes stably, or fails with a decode error.
//! - No decode allocates in proportion to a length or count the input
//!   declares: a thread-local counting allocator checks every call.
//! - A manager whose peer opens with garbage instead of a hello closes the
//!   connection after its own hello (and auth, when the hello was one).
//!   After the handshake, its connection actor fed garbage by a client or
//!   a worker closes the connection with at most one `error`, the one the
//!   decoder predicts. Nothing panics, and another client is served
//!   throughout.
//!
//! Every `*.bin` of `tests/fuzz_corpus/` is a seed. Failing cases are kept
//! in `tests/proptest-regressions/fuzz_decode.txt` and replayed first.

mod alloc_count;
mod support;

use alloc_count::{measured, Alloc};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{LazyLock, Once};
use std::task::{Context, Poll};

use argon::actors::ManagerSettings;
use argon::protocol::codec::{decode_message, encode_message, LEN_PREFIX};
use argon::protocol::crypto::{Opener, Sealer};
use argon::protocol::handshake::{HandshakeSettings, HELLO_LEN, HELLO_MAGIC};
use argon::protocol::{
    Assign, AuthFrame, CancelState, ClusterStatus, DeadList, DeadTask, FinishedRun, FrameReader,
    FrameWriter, FromClient, FromWorker, MasterKey, Outcome, Priority, QueuedByPriority, Register,
    Role, RunningRun, ScheduleInfo, Submit, TaskState, ToClient, ToWorker, Value, WireError,
    WireMessage, WorkerStatus, ALL_NAMES, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use argon::runtime::{start_manager, ManagerHandle};
use bytes::{BufMut, BytesMut};
use futures_util::{FutureExt, StreamExt};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestRunner};
use support::within;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, FramedRead};

// ---------------------------------------------------------------------------
// Configuration

/// Cases per decoder property unless `PROPTEST_CASES` says otherwise.
const DECODER_CASES: u32 = 512;
/// Cases of the connection-actor properties (each is a TCP connection).
const CONNECTION_CASES: u32 = 96;

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/fuzz_decode.txt"
        )))),
        ..ProptestConfig::default()
    }
}

/// Frame limit of the readers under test: small, so that any allocation
/// sized by the limit rather than by the input shows.
const FUZZ_MAX_FRAME: usize = 64 * 1024;

/// Key material of the corpus and the decoder properties (no secret).
const FUZZ_KEY: &[u8] = b"argon fuzz corpus key: public, for tests only";
const INITIATOR_NONCE: [u8; 32] = [0x11; 32];
const RESPONDER_NONCE: [u8; 32] = [0x22; 32];

static SESSION_KEYS: LazyLock<([u8; 32], [u8; 32])> = LazyLock::new(|| {
    MasterKey::from_material(FUZZ_KEY).session_keys(&INITIATOR_NONCE, &RESPONDER_NONCE)
});

/// Fixed overhead any decode may allocate: the read buffer a reader grows
/// to once busy, error texts, small vectors.
const ALLOC_SLACK: usize = argon::protocol::codec::BUSY_READ_BUFFER + 8 * 1024;

/// The most a decode of `input` bytes may allocate at once: a decoded
/// array or map element takes at least one input byte and at most a pair
/// of values in memory, and vectors grow by doubling.
fn largest_allowed(input: usize) -> usize {
    2 * std::mem::size_of::<(Value, Value)>() * input + ALLOC_SLACK
}

/// The most a decode of `input` bytes may allocate in all: vectors grow
/// by doubling, and no value is built twice.
fn total_allowed(input: usize) -> usize {
    4 * largest_allowed(input)
}

fn check_alloc(a: Alloc, input: usize, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        a.largest <= largest_allowed(input),
        "{what}: one allocation of {} bytes for {input} bytes of input",
        a.largest
    );
    prop_assert!(
        a.total <= total_allowed(input),
        "{what}: {} bytes allocated for {input} bytes of input",
        a.total
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Panics on the current thread (actors included: the actix system runs on
// the test's thread, and tokio would otherwise swallow their panics).

thread_local! {
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = PANICS.try_with(|p| p.set(p.get() + 1));
            previous(info)
        }));
    });
}

fn panics_here() -> usize {
    PANICS.with(Cell::get)
}

// ---------------------------------------------------------------------------
// The five readers: the handshake's (auth, before it completes) and the
// four directions' (after a valid auth).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Auth,
    FromClient,
    ToClient,
    FromWorker,
    ToWorker,
}

const TARGETS: [Target; 5] = [
    Target::Auth,
    Target::FromClient,
    Target::ToClient,
    Target::FromWorker,
    Target::ToWorker,
];

impl Target {
    /// Folder of its seeds in the corpus.
    fn folder(self) -> &'static str {
        match self {
            Target::Auth => "auth",
            Target::FromClient => "from_client",
            Target::ToClient => "to_client",
            Target::FromWorker => "from_worker",
            Target::ToWorker => "to_worker",
        }
    }

    /// The key its frames are sealed with: the manager reads the
    /// initiator's direction (auth included), clients and workers the other.
    fn key(self) -> [u8; 32] {
        match self {
            Target::Auth | Target::FromClient | Target::FromWorker => SESSION_KEYS.0,
            Target::ToClient | Target::ToWorker => SESSION_KEYS.1,
        }
    }
}

macro_rules! for_target {
    ($target:expr, $f:ident($($arg:expr),*)) => {
        match $target {
            Target::Auth => $f::<AuthFrame>($($arg),*),
            Target::FromClient => $f::<FromClient>($($arg),*),
            Target::ToClient => $f::<ToClient>($($arg),*),
            Target::FromWorker => $f::<FromWorker>($($arg),*),
            Target::ToWorker => $f::<ToWorker>($($arg),*),
        }
    };
}

/// What the harness needs of a wire type beyond [`WireMessage`].
trait Wire: WireMessage + Debug + PartialEq {
    const TARGET: Target;
    /// A valid message of this type.
    fn probe() -> Self;
    /// The text of an `error` message.
    fn error_text(&self) -> Option<&str> {
        None
    }
    /// Whether the manager answers it without an `error` of its role.
    fn benign(&self) -> bool {
        true
    }
}

impl Wire for AuthFrame {
    const TARGET: Target = Target::Auth;
    fn probe() -> Self {
        AuthFrame::Auth {
            version: PROTOCOL_VERSION,
            role: Role::Client,
            agent: "fuzz".into(),
        }
    }
}

impl Wire for FromClient {
    const TARGET: Target = Target::FromClient;
    fn probe() -> Self {
        FromClient::Ping { id: 7 }
    }
}

impl Wire for ToClient {
    const TARGET: Target = Target::ToClient;
    fn probe() -> Self {
        ToClient::Pong { id: 7 }
    }
    fn error_text(&self) -> Option<&str> {
        match self {
            ToClient::Error { message } => Some(message),
            _ => None,
        }
    }
}

impl Wire for FromWorker {
    const TARGET: Target = Target::FromWorker;
    fn probe() -> Self {
        FromWorker::Heartbeat {}
    }
    fn error_text(&self) -> Option<&str> {
        match self {
            FromWorker::Error { message } => Some(message),
            _ => None,
        }
    }
    fn benign(&self) -> bool {
        matches!(self, FromWorker::Heartbeat {} | FromWorker::Error { .. })
    }
}

impl Wire for ToWorker {
    const TARGET: Target = Target::ToWorker;
    fn probe() -> Self {
        ToWorker::Heartbeat {}
    }
    fn error_text(&self) -> Option<&str> {
        match self {
            ToWorker::Error { message, .. } => Some(message),
            _ => None,
        }
    }
}

fn encoded(msg: &impl serde::Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(msg, &mut out).expect("wire types encode");
    out
}

/// A whole sealed frame holding `plain`, with the sealer's next counter.
fn frame(sealer: &mut Sealer, plain: &[u8]) -> Vec<u8> {
    let mut body = plain.to_vec();
    let (counter, tag) = sealer.seal_in_place(&mut body);
    let mut out = Vec::with_capacity(LEN_PREFIX + 8 + body.len() + tag.len());
    out.put_u32((8 + body.len() + tag.len()) as u32);
    out.put_u64(counter);
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    out
}

/// A reader of `T` at its stage (past a valid auth for every direction,
/// fresh for the handshake's) and a sealer at the counter it expects.
struct Inbound<T> {
    reader: FrameReader<T>,
    sealer: Sealer,
}

impl<T: Wire> Inbound<T> {
    fn new() -> Inbound<T> {
        let key = T::TARGET.key();
        let mut sealer = Sealer::new(&key);
        if T::TARGET == Target::Auth {
            return Inbound {
                reader: FrameReader::new(&key, FUZZ_MAX_FRAME),
                sealer,
            };
        }
        let mut auth = FrameReader::<AuthFrame>::new(&key, FUZZ_MAX_FRAME);
        let mut buf = BytesMut::from(&frame(&mut sealer, &encoded(&AuthFrame::probe()))[..]);
        assert!(matches!(auth.decode(&mut buf), Ok(Some(_))));
        Inbound {
            reader: auth.retype(),
            sealer,
        }
    }

    fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        frame(&mut self.sealer, plain)
    }
}

/// The message name a misplaced-message error may name: a one-entry map
/// whose key is a fixstr (see `codec::misplaced`).
fn fixstr_name(plain: &[u8]) -> Option<&str> {
    match plain {
        [0x81, tag @ 0xa0..=0xbf, rest @ ..] => rest
            .get(..usize::from(tag & 0x1f))
            .and_then(|n| std::str::from_utf8(n).ok()),
        _ => None,
    }
}

/// A decoded message re-encodes to bytes that decode to the same encoding.
fn stable<T: Wire>(msg: &T) -> Result<(), TestCaseError> {
    let once = encoded(msg);
    let again: T = decode_message(&once)
        .map_err(|e| TestCaseError::fail(format!("{msg:?} re-encoded does not decode: {e}")))?;
    prop_assert_eq!(
        &once,
        &encoded(&again),
        "{:?} does not re-encode stably",
        msg
    );
    Ok(())
}

/// Seals `plain` as the next frame of `T`'s reader and checks the outcome:
/// a message that re-encodes stably, after which the reader still reads the
/// next frame, or a decode error; never a frame-level error, and no
/// allocation out of proportion to the frame.
fn check_sealed<T: Wire>(plain: &[u8]) -> Result<(), TestCaseError> {
    let mut inbound = Inbound::<T>::new();
    let bytes = inbound.seal(plain);
    let mut buf = BytesMut::from(&bytes[..]);
    let (result, alloc) = measured(|| inbound.reader.decode(&mut buf));
    check_alloc(alloc, bytes.len(), "decoding a sealed plaintext")?;
    match result {
        Ok(Some(msg)) => {
            prop_assert!(buf.is_empty());
            stable(&msg)?;
            let mut next = BytesMut::from(&inbound.seal(&encoded(&T::probe()))[..]);
            let after = inbound.reader.decode(&mut next);
            prop_assert!(
                matches!(&after, Ok(Some(m)) if *m == T::probe()),
                "the reader is unusable after {msg:?}: {after:?}"
            );
        }
        Ok(None) => prop_assert!(false, "a whole frame gave no result"),
        Err(WireError::Decode(_)) => {}
        Err(WireError::NotAllowed(name)) => {
            prop_assert_eq!(fixstr_name(plain), Some(name));
            prop_assert!(!T::NAMES.contains(&name));
        }
        Err(e) => prop_assert!(false, "a well-sealed frame failed with {e:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// MessagePack as the fuzzer writes it: well-formed, or lying.

/// Markers of items with a length or count: str, bin, ext, array, map.
const SIZED_MARKERS: &[u8] = &[
    0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xdc, 0xdd, 0xde, 0xdf,
];

#[derive(Clone, Debug)]
enum Mp {
    Nil,
    Bool(bool),
    /// An unsigned integer: 0 shortest encoding, 1 uint 64, 2 int 64.
    UInt(u64, u8),
    Int(i64),
    F32(f32),
    F64(f64),
    /// A str of these bytes (UTF-8 or not): 0 shortest, 1 str 8, 2 str 16, 3 str 32.
    Str(Vec<u8>, u8),
    Bin(Vec<u8>),
    Ext(i8, Vec<u8>),
    Array(Vec<Mp>),
    Map(Vec<(Mp, Mp)>),
    /// A header with this marker declaring this length or count, then these bytes.
    Sized(u8, u32, Vec<u8>),
    Raw(Vec<u8>),
}

impl Mp {
    fn str(s: &str) -> Mp {
        Mp::Str(s.as_bytes().to_vec(), 0)
    }

    fn uint(v: u64) -> Mp {
        Mp::UInt(v, 0)
    }

    /// A one-entry map from `name` to a map of `fields`: a message's shape.
    fn message(name: &str, fields: Vec<(&str, Mp)>) -> Mp {
        let fields = fields.into_iter().map(|(k, v)| (Mp::str(k), v)).collect();
        Mp::Map(vec![(Mp::str(name), Mp::Map(fields))])
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.put(&mut out);
        out
    }

    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Mp::Nil => out.push(0xc0),
            Mp::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Mp::UInt(v, enc) => match enc % 3 {
                0 => put_uint(out, *v),
                1 => {
                    out.push(0xcf);
                    out.extend_from_slice(&v.to_be_bytes());
                }
                _ => {
                    out.push(0xd3);
                    out.extend_from_slice(&(*v as i64).to_be_bytes());
                }
            },
            Mp::Int(v) => put_int(out, *v),
            Mp::F32(f) => {
                out.push(0xca);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Mp::F64(f) => {
                out.push(0xcb);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Mp::Str(b, fmt) => {
                let n = b.len();
                match fmt % 4 {
                    0 if n < 32 => out.push(0xa0 | n as u8),
                    0 | 1 if n < 256 => out.extend_from_slice(&[0xd9, n as u8]),
                    0..=2 if n < 65536 => {
                        out.push(0xda);
                        out.extend_from_slice(&(n as u16).to_be_bytes());
                    }
                    _ => {
                        out.push(0xdb);
                        out.extend_from_slice(&(n as u32).to_be_bytes());
                    }
                }
                out.extend_from_slice(b);
            }
            Mp::Bin(b) => {
                put_len(out, [0xc4, 0xc5, 0xc6], b.len());
                out.extend_from_slice(b);
            }
            Mp::Ext(t, d) => {
                match d.len() {
                    1 => out.push(0xd4),
                    2 => out.push(0xd5),
                    4 => out.push(0xd6),
                    8 => out.push(0xd7),
                    16 => out.push(0xd8),
                    n => put_len(out, [0xc7, 0xc8, 0xc9], n),
                }
                out.push(*t as u8);
                out.extend_from_slice(d);
            }
            Mp::Array(items) => {
                if items.len() < 16 {
                    out.push(0x90 | items.len() as u8);
                } else {
                    put_len(out, [0xdc, 0xdc, 0xdd], items.len());
                }
                items.iter().for_each(|i| i.put(out));
            }
            Mp::Map(entries) => {
                if entries.len() < 16 {
                    out.push(0x80 | entries.len() as u8);
                } else {
                    put_len(out, [0xde, 0xde, 0xdf], entries.len());
                }
                for (k, v) in entries {
                    k.put(out);
                    v.put(out);
                }
            }
            Mp::Sized(marker, declared, body) => {
                out.push(*marker);
                match marker {
                    0xd9 | 0xc4 | 0xc7 => out.push(*declared as u8),
                    0xda | 0xc5 | 0xc8 | 0xdc | 0xde => {
                        out.extend_from_slice(&(*declared as u16).to_be_bytes())
                    }
                    _ => out.extend_from_slice(&declared.to_be_bytes()),
                }
                if matches!(marker, 0xc7..=0xc9) {
                    out.push(0x01);
                }
                out.extend_from_slice(body);
            }
            Mp::Raw(b) => out.extend_from_slice(b),
        }
    }
}

fn put_uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        return put_uint(out, v as u64);
    }
    if v >= -32 {
        out.push(v as i8 as u8);
    } else if v >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// A length header: the 8-, 16- or 32-bit form of `markers`, by size.
fn put_len(out: &mut Vec<u8>, markers: [u8; 3], n: usize) {
    if n < 256 && markers[0] != markers[1] {
        out.extend_from_slice(&[markers[0], n as u8]);
    } else if n < 65536 {
        out.push(markers[1]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(markers[2]);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// `levels` containers each holding the next, around `inner`.
fn nested(levels: usize, kind: u8, inner: &Mp) -> Mp {
    let mut out = Vec::new();
    for _ in 0..levels {
        match kind % 3 {
            0 => out.push(0x91),
            1 => out.extend_from_slice(&[0x81, 0xa1, b'k']),
            _ => out.extend_from_slice(&[0xdc, 0x00, 0x01]),
        }
    }
    inner.put(&mut out);
    Mp::Raw(out)
}

// ---------------------------------------------------------------------------
// Strategies

/// Field names of every message, and other words the decoders know.
const WORDS: &[&str] = &[
    "id",
    "task",
    "args",
    "priority",
    "timeout_ms",
    "attempts",
    "outcome",
    "value",
    "error",
    "reason",
    "retry_after_ms",
    "status",
    "message",
    "capacity",
    "tasks",
    "eval",
    "running",
    "run_id",
    "slot",
    "max_frame",
    "worker_id",
    "version",
    "role",
    "agent",
    "workers",
    "in_flight",
    "queued",
    "queue_limit",
    "queued_by_priority",
    "avg_task_ms",
    "completed",
    "failed",
    "denied",
    "worker_list",
    "address",
    "avg_ms",
    "draining",
    "done",
    "failed",
    "high",
    "normal",
    "low",
    "manager",
    "client",
    "worker",
    "echo",
    "@eval",
    "",
];

fn word() -> impl Strategy<Value = &'static str> {
    prop_oneof![select(WORDS), select(ALL_NAMES)]
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => word().prop_map(|w| w.as_bytes().to_vec()),
        2 => "\\PC{0,12}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..=10u64,
        1 => Just(u64::from(u32::MAX)),
        1 => Just(u64::from(u32::MAX) + 1),
        1 => Just(u64::MAX),
        1 => Just(1u64 << 53),
        2 => any::<u64>(),
    ]
}

fn declared() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(1 << 31),
        Just(u32::MAX),
        Just(0xffff),
        0..64u32,
        any::<u32>(),
    ]
}

fn leaf() -> impl Strategy<Value = Mp> {
    prop_oneof![
        3 => Just(Mp::Nil),
        1 => any::<bool>().prop_map(Mp::Bool),
        4 => (interesting_u64(), 0..3u8).prop_map(|(v, e)| Mp::UInt(v, e)),
        1 => any::<i64>().prop_map(Mp::Int),
        1 => any::<f32>().prop_map(Mp::F32),
        1 => any::<f64>().prop_map(Mp::F64),
        5 => (text(), 0..4u8).prop_map(|(t, f)| Mp::Str(t, f)),
        1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Mp::Bin),
        1 => (any::<i8>(), prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(t, d)| Mp::Ext(t, d)),
        2 => (select(SIZED_MARKERS), declared(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(m, n, b)| Mp::Sized(m, n, b)),
        1 => prop::collection::vec(any::<u8>(), 1..8).prop_map(Mp::Raw),
    ]
}

fn value() -> impl Strategy<Value = Mp> {
    leaf().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Mp::Array),
            prop::collection::vec((inner.clone(), inner), 0..5).prop_map(Mp::Map),
        ]
    })
}

/// Nesting around the decoders' limit, and far past it.
fn deep() -> impl Strategy<Value = Mp> {
    let levels = prop_oneof![3 => 118..=132usize, 1 => 133..2000usize];
    (levels, 0..3u8, leaf()).prop_map(|(n, kind, inner)| nested(n, kind, &inner))
}

/// A message name: known, in a string format other than fixstr, or any.
fn name() -> impl Strategy<Value = Mp> {
    prop_oneof![
        6 => select(ALL_NAMES).prop_map(Mp::str),
        1 => (select(ALL_NAMES), 1..4u8).prop_map(|(n, f)| Mp::Str(n.as_bytes().to_vec(), f)),
        1 => select(ALL_NAMES).prop_map(|n| Mp::Bin(n.as_bytes().to_vec())),
        2 => (text(), 0..4u8).prop_map(|(t, f)| Mp::Str(t, f)),
    ]
}

fn outcome() -> impl Strategy<Value = Mp> {
    let fields = prop::collection::vec((select(WORDS).prop_map(Mp::str), value()), 0..4);
    (select(vec!["done", "failed", "denied", "bogus"]), fields)
        .prop_map(|(n, f)| Mp::Map(vec![(Mp::str(n), Mp::Map(f))]))
}

fn running() -> impl Strategy<Value = Mp> {
    let run = (interesting_u64(), interesting_u64()).prop_map(|(r, s)| {
        Mp::Map(vec![
            (Mp::str("run_id"), Mp::uint(r)),
            (Mp::str("slot"), Mp::uint(s)),
        ])
    });
    prop::collection::vec(run, 0..4).prop_map(Mp::Array)
}

fn field_value() -> impl Strategy<Value = Mp> {
    prop_oneof![
        6 => value(),
        2 => outcome(),
        1 => running(),
        1 => deep(),
    ]
}

/// Message-shaped maps: known or unknown names, known or unknown fields
/// of any type, fields missing or repeated, or no field map at all.
fn message() -> impl Strategy<Value = Mp> {
    let field_name = prop_oneof![
        6 => select(WORDS).prop_map(Mp::str),
        1 => value(),
    ];
    let fields = prop::collection::vec((field_name, field_value()), 0..8);
    prop_oneof![
        8 => (name(), fields).prop_map(|(n, f)| Mp::Map(vec![(n, Mp::Map(f))])),
        1 => (name(), value()).prop_map(|(n, v)| Mp::Map(vec![(n, v)])),
        1 => prop::collection::vec((name(), value()), 0..3).prop_map(Mp::Map),
    ]
}

/// The type of a field, as the messages declare them.
#[derive(Debug)]
enum Ty {
    U64,
    U32,
    F64,
    Bool,
    Str,
    Strs,
    Any,
    OptU64,
    Words(&'static [&'static str]),
    Fields(&'static [(&'static str, Ty)]),
    List(&'static Ty),
    Variants(&'static [(&'static str, &'static [(&'static str, Ty)])]),
}

const OUTCOME: Ty = Ty::Variants(&[
    ("done", &[("value", Ty::Any)]),
    ("failed", &[("error", Ty::Str)]),
    (
        "denied",
        &[("reason", Ty::Str), ("retry_after_ms", Ty::U64)],
    ),
]);

const TASK_STATE: Ty = Ty::Variants(&[
    ("queued", &[]),
    ("running", &[]),
    ("done", &[("value", Ty::Any)]),
    ("failed", &[("error", Ty::Str)]),
    ("unknown", &[]),
]);

const WORKER_STATUS: Ty = Ty::Fields(&[
    ("id", Ty::U64),
    ("address", Ty::Str),
    ("capacity", Ty::U32),
    ("in_flight", Ty::U32),
    ("avg_ms", Ty::F64),
    ("tasks", Ty::Strs),
    ("eval", Ty::Bool),
    ("draining", Ty::Bool),
]);

const CLUSTER_STATUS: Ty = Ty::Fields(&[
    ("workers", Ty::U64),
    ("capacity", Ty::U64),
    ("in_flight", Ty::U64),
    ("queued", Ty::U64),
    ("queue_limit", Ty::U64),
    (
        "queued_by_priority",
        Ty::Fields(&[("high", Ty::U64), ("normal", Ty::U64), ("low", Ty::U64)]),
    ),
    ("avg_task_ms", Ty::F64),
    ("completed", Ty::U64),
    ("failed", Ty::U64),
    ("denied", Ty::U64),
    ("worker_list", Ty::List(&WORKER_STATUS)),
]);

/// Every message of every direction with its fields (docs/PROTOCOL.md §7).
const MESSAGES: Ty = Ty::Variants(&[
    (
        "auth",
        &[
            ("version", Ty::U32),
            ("role", Ty::Words(&["client", "worker", "manager"])),
            ("agent", Ty::Str),
        ],
    ),
    (
        "submit",
        &[
            ("id", Ty::U64),
            ("task", Ty::Str),
            ("args", Ty::Any),
            ("priority", Ty::Words(&["high", "normal", "low"])),
            ("timeout_ms", Ty::OptU64),
            ("attempts", Ty::U32),
            ("detach", Ty::Bool),
        ],
    ),
    ("cancel", &[("id", Ty::U64)]),
    (
        "result_request",
        &[("id", Ty::U64), ("task_id", Ty::U64), ("wait", Ty::Bool)],
    ),
    ("cancel_task", &[("id", Ty::U64), ("task_id", Ty::U64)]),
    ("accepted", &[("id", Ty::U64), ("task_id", Ty::U64)]),
    (
        "result",
        &[("id", Ty::U64), ("task_id", Ty::U64), ("state", TASK_STATE)],
    ),
    (
        "cancel_result",
        &[
            ("id", Ty::U64),
            ("task_id", Ty::U64),
            ("result", Ty::Words(&["cancelled", "finished", "unknown"])),
        ],
    ),
    ("cancel", &[("run_id", Ty::U64), ("slot", Ty::U32)]),
    ("ping", &[("id", Ty::U64)]),
    ("status_request", &[("id", Ty::U64)]),
    ("heartbeat", &[]),
    ("reply", &[("id", Ty::U64), ("outcome", OUTCOME)]),
    ("pong", &[("id", Ty::U64)]),
    ("status", &[("id", Ty::U64), ("status", CLUSTER_STATUS)]),
    ("error", &[("message", Ty::Str)]),
    (
        "register",
        &[
            ("capacity", Ty::U32),
            ("tasks", Ty::Strs),
            ("eval", Ty::Bool),
            (
                "running",
                Ty::List(&Ty::Fields(&[("run_id", Ty::U64), ("slot", Ty::U32)])),
            ),
            ("max_frame", Ty::U64),
        ],
    ),
    ("finished", &[("run_id", Ty::U64), ("outcome", OUTCOME)]),
    ("drain", &[]),
    (
        "registered",
        &[("worker_id", Ty::U64), ("max_frame", Ty::U64)],
    ),
    (
        "assign",
        &[
            ("run_id", Ty::U64),
            ("slot", Ty::U32),
            ("task", Ty::Str),
            ("args", Ty::Any),
            ("timeout_ms", Ty::OptU64),
        ],
    ),
]);

/// A value of type `ty` most of the time; now and then `nil` or anything.
fn typed(ty: &'static Ty) -> BoxedStrategy<Mp> {
    let right = match ty {
        Ty::U64 => interesting_u64().prop_map(Mp::uint).boxed(),
        Ty::U32 => prop_oneof![
            6 => 0..=8u64,
            1 => Just(u64::from(u32::MAX)),
            1 => Just(1u64 << 32),
        ]
        .prop_map(Mp::uint)
        .boxed(),
        Ty::F64 => any::<f64>().prop_map(Mp::F64).boxed(),
        Ty::Bool => any::<bool>().prop_map(Mp::Bool).boxed(),
        Ty::Str => (text(), 0..4u8).prop_map(|(t, f)| Mp::Str(t, f)).boxed(),
        Ty::Strs => prop::collection::vec(text().prop_map(|t| Mp::Str(t, 0)), 0..4)
            .prop_map(Mp::Array)
            .boxed(),
        Ty::Any => prop_oneof![6 => value(), 1 => deep()].boxed(),
        Ty::OptU64 => prop::option::of(interesting_u64())
            .prop_map(|v| v.map_or(Mp::Nil, Mp::uint))
            .boxed(),
        Ty::Words(words) => select(*words).prop_map(Mp::str).boxed(),
        Ty::Fields(fields) => fields_of(fields),
        Ty::List(item) => prop::collection::vec(typed(item), 0..3)
            .prop_map(Mp::Array)
            .boxed(),
        Ty::Variants(variants) => {
            let each: Vec<BoxedStrategy<Mp>> = variants
                .iter()
                .map(|(name, fields)| {
                    fields_of(fields)
                        .prop_map(move |f| Mp::Map(vec![(Mp::str(name), f)]))
                        .boxed()
                })
                .collect();
            proptest::strategy::Union::new(each).boxed()
        }
    };
    prop_oneof![16 => right, 1 => Just(Mp::Nil), 1 => value()].boxed()
}

/// A map of `fields`, in any order, each left out now and then, with now
/// and then a field the type does not have.
fn fields_of(fields: &'static [(&'static str, Ty)]) -> BoxedStrategy<Mp> {
    let each: Vec<BoxedStrategy<Option<(Mp, Mp)>>> = fields
        .iter()
        .map(|(name, ty)| {
            prop::option::weighted(0.92, typed(ty))
                .prop_map(move |v| v.map(|v| (Mp::str(name), v)))
                .boxed()
        })
        .collect();
    let extra = prop::option::weighted(0.1, (select(WORDS).prop_map(Mp::str), value()));
    (each, extra)
        .prop_map(|(each, extra)| each.into_iter().flatten().chain(extra).collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(Mp::Map)
        .boxed()
}

/// Any plaintext for the message decoders.
fn plaintext() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => typed(&MESSAGES).prop_map(|m| m.bytes()),
        4 => message().prop_map(|m| m.bytes()),
        2 => value().prop_map(|m| m.bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Byte strings a mutation may insert: markers declaring huge sizes, and
/// the like.
const SPLICES: &[&[u8]] = &[
    &[0xc0],
    &[0xc1],
    &[0xdd, 0xff, 0xff, 0xff, 0xff],
    &[0xdd, 0x80, 0x00, 0x00, 0x00],
    &[0xdf, 0xff, 0xff, 0xff, 0xff],
    &[0xdb, 0xff, 0xff, 0xff, 0xff],
    &[0xc6, 0xff, 0xff, 0xff, 0xff],
    &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0xce, 0xff, 0xff, 0xff, 0xff],
    &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
    &[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],
    &[0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91],
    &[0xff],
    &[0x00],
];

#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Splice(Index, &'static [u8]),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        3 => (any::<Index>(), select(SPLICES)).prop_map(|(i, s)| Mutation::Splice(i, s)),
        2 => (any::<Index>(), 1..6usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), 1..16usize).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            bytes.push(0x80);
        }
        let len = bytes.len();
        match m {
            Mutation::Flip(i, bit) => bytes[i.index(len)] ^= 1 << bit,
            Mutation::Set(i, b) => bytes[i.index(len)] = *b,
            Mutation::Insert(i, b) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Splice(i, s) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, s.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(i, n) => {
                let at = i.index(len);
                let copy = bytes[at..(at + n).min(len)].to_vec();
                bytes.splice(at..at, copy);
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
        }
    }
    bytes
}

// ---------------------------------------------------------------------------
// The corpus: tests/fuzz_corpus/<direction>/<name>.bin holds whole frames
// sealed with counter 0 under the corpus key (see the README there);
// tests/fuzz_corpus/raw/ holds byte strings for any reader.

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus")
}

/// What a generated seed does when decoded by its direction's reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Decodes,
    Undecodable,
    Misplaced,
    Anything,
}

/// Every seed the codec generates: (folder, name, bytes, expectation).
fn generated_seeds() -> Vec<(&'static str, String, Vec<u8>, Expect)> {
    let mut out = Vec::new();
    valid_seeds(&mut out);
    edge_seeds(&mut out);
    raw_seeds(&mut out);
    out
}

fn seal_with_writer<T: serde::Serialize>(target: Target, msg: &T) -> Vec<u8> {
    let mut w = FrameWriter::new(&target.key(), DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::new();
    w.write(msg, &mut buf).expect("seed encodes");
    buf.to_vec()
}

fn seal_plain(target: Target, plain: &[u8]) -> Vec<u8> {
    frame(&mut Sealer::new(&target.key()), plain)
}

type Seeds = Vec<(&'static str, String, Vec<u8>, Expect)>;

fn add<T: Wire>(out: &mut Seeds, name: &str, msg: T) {
    let bytes = seal_with_writer(T::TARGET, &msg);
    out.push((T::TARGET.folder(), name.to_string(), bytes, Expect::Decodes));
}

fn valid_seeds(out: &mut Seeds) {
    for (name, role) in [
        ("auth-client", Role::Client),
        ("auth-worker", Role::Worker),
        ("auth-manager", Role::Manager),
    ] {
        add(
            out,
            name,
            AuthFrame::Auth {
                version: PROTOCOL_VERSION,
                role,
                agent: "argon-rs/0.1.0".into(),
            },
        );
    }

    let args = Value::Array(vec![
        Value::from("hello"),
        Value::from(42),
        Value::Map(vec![(Value::from(1), Value::Binary(vec![0, 1, 2]))]),
        Value::F64(1.5),
        Value::Ext(3, vec![9, 9]),
        Value::Nil,
        Value::from(u64::MAX),
        Value::from(-7),
    ]);
    add(
        out,
        "submit",
        FromClient::Submit(Submit {
            id: 7,
            task: "echo".into(),
            args: args.clone(),
            priority: Priority::High,
            timeout_ms: Some(5000),
            attempts: 3,
            retries: None,
            detach: false,
            want_id: false,
            due_ms: None,
            delay_ms: None,
            unique_key: None,
            unique_for_ms: None,
        }),
    );
    add(
        out,
        "submit-eval",
        FromClient::Submit(Submit {
            id: u64::MAX,
            task: "@eval".into(),
            args: Value::Map(vec![
                (Value::from("script"), Value::from("args.len()")),
                (Value::from("args"), Value::Array(vec![1.into(), 2.into()])),
            ]),
            priority: Priority::Low,
            timeout_ms: None,
            attempts: 0,
            retries: None,
            detach: false,
            want_id: false,
            due_ms: None,
            delay_ms: None,
            unique_key: None,
            unique_for_ms: None,
        }),
    );
    add(
        out,
        "submit-want-id",
        FromClient::Submit(Submit {
            id: 9,
            task: "sleep".into(),
            args: Value::from(3000),
            priority: Priority::Normal,
            timeout_ms: None,
            attempts: 0,
            retries: None,
            detach: false,
            want_id: true,
            due_ms: None,
            delay_ms: None,
            unique_key: None,
            unique_for_ms: None,
        }),
    );
    add(
        out,
        "submit-delayed",
        FromClient::Submit(Submit {
            id: 10,
            task: "echo".into(),
            args: Value::Nil,
            priority: Priority::Low,
            timeout_ms: None,
            attempts: 0,
            retries: None,
            detach: true,
            want_id: false,
            due_ms: Some(1_798_135_200_000),
            delay_ms: None,
            unique_key: None,
            unique_for_ms: None,
        }),
    );
    add(out, "cancel", FromClient::Cancel { id: 7 });
    add(out, "ping", FromClient::Ping { id: 1 << 60 });
    add(out, "status_request", FromClient::StatusRequest { id: 3 });
    add(
        out,
        "dead_request",
        FromClient::DeadRequest { id: 6, limit: 20 },
    );
    add(
        out,
        "dead_retry",
        FromClient::DeadRetry {
            id: 9,
            task_id: Some(1 << 61),
            task: None,
        },
    );
    add(
        out,
        "schedules_request",
        FromClient::SchedulesRequest { id: 11 },
    );
    add(
        out,
        "dead_purge",
        FromClient::DeadPurge {
            id: 10,
            task_id: None,
            task: Some("echo".into()),
        },
    );
    add(
        out,
        "submit-retries",
        FromClient::Submit(Submit {
            id: 8,
            task: "echo".into(),
            args: Value::Nil,
            priority: Priority::Normal,
            timeout_ms: None,
            attempts: 0,
            retries: Some(3),
            detach: true,
            want_id: false,
            due_ms: None,
            delay_ms: None,
            unique_key: None,
            unique_for_ms: None,
        }),
    );
    add(
        out,
        "result_request",
        FromClient::ResultRequest {
            id: 4,
            task_id: 1 << 61,
            wait: true,
        },
    );
    add(
        out,
        "cancel_task",
        FromClient::CancelTask {
            id: 5,
            task_id: 1 << 61,
        },
    );
    add(out, "heartbeat", FromClient::Heartbeat {});

    add(
        out,
        "reply-done",
        ToClient::Reply {
            id: 7,
            outcome: Outcome::Done {
                value: args.clone(),
            },
        },
    );
    add(
        out,
        "reply-failed",
        ToClient::Reply {
            id: 7,
            outcome: Outcome::Failed {
                error: "task echo failed".into(),
            },
        },
    );
    add(
        out,
        "reply-denied",
        ToClient::Reply {
            id: 7,
            outcome: Outcome::Denied {
                reason: "queue full".into(),
                retry_after_ms: 250,
            },
        },
    );
    add(out, "pong", ToClient::Pong { id: 1 << 60 });
    add(
        out,
        "accepted",
        ToClient::Accepted {
            id: 8,
            task_id: 1 << 61,
        },
    );
    add(
        out,
        "result",
        ToClient::Result {
            id: 4,
            task_id: 1 << 61,
            state: TaskState::Done {
                value: args.clone(),
            },
        },
    );
    add(
        out,
        "result-running",
        ToClient::Result {
            id: 4,
            task_id: 1 << 61,
            state: TaskState::Running {},
        },
    );
    add(
        out,
        "cancel_result",
        ToClient::CancelResult {
            id: 5,
            task_id: 1 << 61,
            result: CancelState::Cancelled,
        },
    );
    add(
        out,
        "status",
        ToClient::Status {
            id: 3,
            status: ClusterStatus {
                limits: vec![],
                workers: 1,
                capacity: 4,
                in_flight: 2,
                queued: 5,
                queue_limit: 12,
                queued_by_priority: QueuedByPriority {
                    high: 1,
                    normal: 3,
                    low: 1,
                },
                avg_task_ms: 12.5,
                completed: 100,
                failed: 2,
                denied: 3,
                retrying: 1,
                scheduled: 1,
                awaiting_provider: 2,
                worker_list: vec![WorkerStatus {
                    id: 1,
                    address: "127.0.0.1:40000".into(),
                    capacity: 4,
                    in_flight: 2,
                    avg_ms: 12.5,
                    tasks: vec!["echo".into(), "sleep".into()],
                    eval: true,
                    draining: false,
                    tasks_total: 2,
                }],
                worker_list_total: 1,
                worker_list_truncated: false,
            },
        },
    );
    add(
        out,
        "dead_list",
        ToClient::DeadList {
            id: 6,
            list: DeadList {
                tasks: vec![DeadTask {
                    task_id: 1 << 61,
                    task: "echo".into(),
                    args: Value::Array(vec![1.into(), "two".into()]),
                    args_truncated: false,
                    retries: 3,
                    error: "exited with status 1".into(),
                    failed_at_ms: 1_700_000_000_000,
                }],
                total: 5,
                truncated: true,
                evicted: 2,
            },
        },
    );
    add(
        out,
        "schedules",
        ToClient::Schedules {
            id: 11,
            list: vec![ScheduleInfo {
                name: "tick".into(),
                task: "echo".into(),
                cadence: "every 30s".into(),
                overlap: "skip".into(),
                next_ms: Some(1_700_000_030_000),
                last_ms: Some(1_700_000_000_000),
                last_task_id: Some(1 << 61),
                note: Some("started task 2305843009213693952".into()),
                started: 1,
                skipped: 0,
            }],
            total: 1,
        },
    );
    add(
        out,
        "dead_done",
        ToClient::DeadDone {
            id: 9,
            retried: vec![(1 << 61, (1 << 61) + 1)],
            purged: 0,
            left: 1,
            reason: Some("task 7: queue full".into()),
            denied: true,
        },
    );
    add(out, "heartbeat", ToClient::Heartbeat {});
    add(
        out,
        "error",
        ToClient::Error {
            message: "a client may not send drain".into(),
        },
    );

    add(
        out,
        "register",
        FromWorker::Register(Register {
            capacity: 4,
            tasks: vec!["echo".into(), "sleep".into()],
            eval: true,
            running: vec![RunningRun { run_id: 9, slot: 2 }],
            max_frame: DEFAULT_MAX_FRAME as u64,
            finished: Vec::new(),
            finished_dropped: 0,
        }),
    );
    add(
        out,
        "register-handover",
        FromWorker::Register(Register {
            capacity: 4,
            tasks: vec!["echo".into()],
            eval: false,
            running: vec![RunningRun { run_id: 9, slot: 2 }],
            max_frame: DEFAULT_MAX_FRAME as u64,
            finished: vec![
                FinishedRun {
                    run_id: 1 << 62,
                    outcome: Outcome::Done {
                        value: args.clone(),
                    },
                },
                FinishedRun {
                    run_id: (1 << 62) + 1,
                    outcome: Outcome::Failed {
                        error: "exit status 3".into(),
                    },
                },
            ],
            finished_dropped: 2,
        }),
    );
    add(
        out,
        "finished-done",
        FromWorker::Finished {
            run_id: 1 << 62,
            outcome: Outcome::Done {
                value: args.clone(),
            },
        },
    );
    add(
        out,
        "finished-failed",
        FromWorker::Finished {
            run_id: 1 << 62,
            outcome: Outcome::Failed {
                error: "run 1 was cancelled".into(),
            },
        },
    );
    add(out, "drain", FromWorker::Drain {});
    add(out, "heartbeat", FromWorker::Heartbeat {});
    add(
        out,
        "error",
        FromWorker::Error {
            message: "assign of run 1 names slot 9 of 4".into(),
        },
    );

    add(
        out,
        "registered",
        ToWorker::Registered {
            worker_id: 1,
            max_frame: DEFAULT_MAX_FRAME as u64,
        },
    );
    add(
        out,
        "assign",
        ToWorker::Assign(Assign {
            run_id: 1 << 62,
            slot: 3,
            task: "echo".into(),
            args,
            timeout_ms: Some(1000),
        }),
    );
    add(
        out,
        "cancel",
        ToWorker::Cancel {
            run_id: 1 << 62,
            slot: 3,
        },
    );
    add(out, "heartbeat", ToWorker::Heartbeat {});
    add(
        out,
        "error",
        ToWorker::Error {
            message: "registration refused: capacity must be at least 1".into(),
            permanent: true,
        },
    );
}

/// A submit whose `args` are `args`, as plaintext.
fn submit_with(args: Mp) -> Mp {
    Mp::message(
        "submit",
        vec![
            ("id", Mp::uint(1)),
            ("task", Mp::str("echo")),
            ("args", args),
        ],
    )
}

fn edge_seeds(out: &mut Seeds) {
    let mut edge = |target: Target, name: &str, plain: Mp, expect: Expect| {
        out.push((
            target.folder(),
            format!("edge-{name}"),
            seal_plain(target, &plain.bytes()),
            expect,
        ))
    };
    use Expect::*;
    use Target::*;
    let huge = |marker: u8, declared: u32| submit_with(Mp::Sized(marker, declared, vec![]));
    edge(
        FromClient,
        "array32-count-2p31",
        huge(0xdd, 1 << 31),
        Undecodable,
    );
    edge(
        FromClient,
        "array32-count-max",
        huge(0xdd, u32::MAX),
        Undecodable,
    );
    edge(
        FromClient,
        "map32-count-max",
        huge(0xdf, u32::MAX),
        Undecodable,
    );
    edge(
        FromClient,
        "str32-len-max",
        huge(0xdb, u32::MAX),
        Undecodable,
    );
    edge(
        FromClient,
        "bin32-len-max",
        huge(0xc6, u32::MAX),
        Undecodable,
    );
    edge(
        FromClient,
        "ext32-len-max",
        huge(0xc9, u32::MAX),
        Undecodable,
    );
    edge(
        FromClient,
        "task-str32-len-max",
        Mp::message(
            "submit",
            vec![
                ("id", Mp::uint(1)),
                ("task", Mp::Sized(0xdb, u32::MAX, vec![])),
            ],
        ),
        Undecodable,
    );
    edge(
        FromClient,
        "envelope-map32-count-max",
        Mp::Sized(0xdf, u32::MAX, Mp::str("ping").bytes()),
        Undecodable,
    );
    // 2 envelope levels + 126 = the decoders' limit of 128; one more is past it.
    edge(
        FromClient,
        "deep-126",
        submit_with(nested(126, 0, &Mp::Nil)),
        Decodes,
    );
    edge(
        FromClient,
        "deep-127",
        submit_with(nested(127, 0, &Mp::Nil)),
        Undecodable,
    );
    edge(
        FromClient,
        "deep-5000",
        submit_with(nested(5000, 1, &Mp::Nil)),
        Undecodable,
    );
    edge(
        FromClient,
        "deep-unknown-field",
        Mp::message(
            "ping",
            vec![("id", Mp::uint(1)), ("x", nested(500, 0, &Mp::Nil))],
        ),
        Undecodable,
    );
    // An ext is a scalar, like a str or a bin: it adds no level.
    edge(
        FromClient,
        "deep-126-ext",
        submit_with(nested(126, 0, &Mp::Ext(1, vec![7]))),
        Decodes,
    );
    edge(
        FromClient,
        "deep-127-ext",
        submit_with(nested(127, 0, &Mp::Ext(1, vec![7]))),
        Undecodable,
    );
    // `finished`, `reply` and `result` wrap a value in 4 levels, so 124 is
    // the most they carry; `submit` and `assign` wrap it in 2.
    let finished = |levels| {
        Mp::message(
            "finished",
            vec![
                ("run_id", Mp::uint(1)),
                (
                    "outcome",
                    Mp::message("done", vec![("value", nested(levels, 1, &Mp::Nil))]),
                ),
            ],
        )
    };
    edge(FromWorker, "finished-deep-124", finished(124), Decodes);
    edge(FromWorker, "finished-deep-125", finished(125), Undecodable);
    let reply = |levels| {
        Mp::message(
            "reply",
            vec![
                ("id", Mp::uint(1)),
                (
                    "outcome",
                    Mp::message("done", vec![("value", nested(levels, 0, &Mp::Nil))]),
                ),
            ],
        )
    };
    edge(ToClient, "reply-deep-124", reply(124), Decodes);
    edge(ToClient, "reply-deep-125", reply(125), Undecodable);
    let result = |levels| {
        Mp::message(
            "result",
            vec![
                ("id", Mp::uint(1)),
                ("task_id", Mp::uint(2)),
                (
                    "state",
                    Mp::message("done", vec![("value", nested(levels, 2, &Mp::Nil))]),
                ),
            ],
        )
    };
    edge(ToClient, "result-deep-124", result(124), Decodes);
    edge(ToClient, "result-deep-125", result(125), Undecodable);
    edge(
        ToWorker,
        "assign-deep-127",
        Mp::message(
            "assign",
            vec![
                ("run_id", Mp::uint(1)),
                ("slot", Mp::uint(0)),
                ("task", Mp::str("echo")),
                ("args", nested(127, 0, &Mp::Nil)),
            ],
        ),
        Undecodable,
    );
    edge(
        FromClient,
        "nil-priority",
        Mp::message(
            "submit",
            vec![
                ("id", Mp::uint(1)),
                ("task", Mp::str("echo")),
                ("priority", Mp::Nil),
            ],
        ),
        Undecodable,
    );
    edge(
        FromClient,
        "nil-timeout",
        Mp::message(
            "submit",
            vec![
                ("id", Mp::uint(1)),
                ("task", Mp::str("echo")),
                ("timeout_ms", Mp::Nil),
            ],
        ),
        Decodes,
    );
    edge(
        FromClient,
        "id-string",
        Mp::message("ping", vec![("id", Mp::str("seven"))]),
        Undecodable,
    );
    edge(
        FromClient,
        "id-negative",
        Mp::message("ping", vec![("id", Mp::Int(-1))]),
        Undecodable,
    );
    edge(
        FromClient,
        "id-float",
        Mp::message("ping", vec![("id", Mp::F64(1.0))]),
        Undecodable,
    );
    edge(
        FromClient,
        "id-twice",
        Mp::message("ping", vec![("id", Mp::uint(1)), ("id", Mp::uint(2))]),
        Undecodable,
    );
    edge(
        FromClient,
        "name-as-bin",
        Mp::Map(vec![(
            Mp::Bin(b"ping".to_vec()),
            Mp::Map(vec![(Mp::str("id"), Mp::uint(1))]),
        )]),
        Decodes,
    );
    edge(
        FromClient,
        "name-not-utf8",
        Mp::Map(vec![(Mp::Str(vec![0xff, 0xfe], 0), Mp::Map(vec![]))]),
        Undecodable,
    );
    edge(
        FromClient,
        "unknown-name",
        Mp::message("hug", vec![]),
        Undecodable,
    );
    edge(
        FromClient,
        "misplaced-drain",
        Mp::message("drain", vec![]),
        Misplaced,
    );
    edge(
        FromClient,
        "misplaced-auth",
        Mp::message("auth", vec![]),
        Misplaced,
    );
    edge(
        FromClient,
        "heartbeat-nil-fields",
        Mp::Map(vec![(Mp::str("heartbeat"), Mp::Nil)]),
        Undecodable,
    );
    edge(FromClient, "empty-map", Mp::Map(vec![]), Undecodable);
    edge(FromClient, "reserved-c1", Mp::Raw(vec![0xc1]), Undecodable);
    edge(FromClient, "empty-plaintext", Mp::Raw(vec![]), Undecodable);
    edge(
        FromClient,
        "trailing-bytes",
        Mp::Raw([Mp::message("heartbeat", vec![]).bytes(), vec![0xc0, 0xc1]].concat()),
        Anything,
    );
    edge(
        FromWorker,
        "running-count-2p31",
        Mp::message(
            "register",
            vec![
                ("capacity", Mp::uint(1)),
                ("tasks", Mp::Array(vec![Mp::str("echo")])),
                ("running", Mp::Sized(0xdd, 1 << 31, vec![])),
            ],
        ),
        Undecodable,
    );
    edge(
        FromWorker,
        "tasks-count-2p31",
        Mp::message(
            "register",
            vec![
                ("capacity", Mp::uint(1)),
                ("tasks", Mp::Sized(0xdd, 1 << 31, vec![])),
            ],
        ),
        Undecodable,
    );
    edge(
        FromWorker,
        "capacity-max",
        Mp::message(
            "register",
            vec![
                ("capacity", Mp::uint(u64::from(u32::MAX))),
                ("tasks", Mp::Array(vec![Mp::str("echo")])),
            ],
        ),
        Decodes,
    );
    edge(
        FromWorker,
        "capacity-too-big",
        Mp::message(
            "register",
            vec![
                ("capacity", Mp::uint(1 << 32)),
                ("tasks", Mp::Array(vec![Mp::str("echo")])),
            ],
        ),
        Undecodable,
    );
    edge(
        FromWorker,
        "finished-outcome-unknown",
        Mp::message(
            "finished",
            vec![
                ("run_id", Mp::uint(1)),
                ("outcome", Mp::message("exploded", vec![])),
            ],
        ),
        Undecodable,
    );
    edge(
        FromWorker,
        "finished-done-without-value",
        Mp::message(
            "finished",
            vec![
                ("run_id", Mp::uint(1)),
                ("outcome", Mp::message("done", vec![])),
            ],
        ),
        Undecodable,
    );
    edge(
        ToClient,
        "worker-list-count-2p31",
        Mp::message(
            "status",
            vec![
                ("id", Mp::uint(1)),
                (
                    "status",
                    Mp::Map(vec![(
                        Mp::str("worker_list"),
                        Mp::Sized(0xdd, 1 << 31, vec![]),
                    )]),
                ),
            ],
        ),
        Undecodable,
    );
    edge(
        ToWorker,
        "assign-args-missing",
        Mp::message(
            "assign",
            vec![
                ("run_id", Mp::uint(1)),
                ("slot", Mp::uint(0)),
                ("task", Mp::str("echo")),
            ],
        ),
        Undecodable,
    );
    edge(
        Auth,
        "version-2",
        Mp::message(
            "auth",
            vec![("version", Mp::uint(2)), ("role", Mp::str("client"))],
        ),
        Decodes,
    );
    edge(
        Auth,
        "role-unknown",
        Mp::message(
            "auth",
            vec![("version", Mp::uint(1)), ("role", Mp::str("admin"))],
        ),
        Undecodable,
    );
    edge(
        Auth,
        "misplaced-submit",
        Mp::message("submit", vec![]),
        Misplaced,
    );
}

/// Frame-level seeds, fed to every reader.
fn raw_seeds(out: &mut Seeds) {
    let mut raw = |name: &str, bytes: Vec<u8>| {
        out.push(("raw", name.to_string(), bytes, Expect::Anything));
    };
    raw("len-max", vec![0xff, 0xff, 0xff, 0xff, 0x00]);
    raw("len-2p31", vec![0x80, 0x00, 0x00, 0x00]);
    raw("len-zero", vec![0, 0, 0, 0]);
    raw("body-shorter-than-tag", vec![0, 0, 0, 3, 1, 2, 3]);
    raw("body-exactly-counter-and-tag", {
        let mut v = vec![0, 0, 0, 24];
        v.extend_from_slice(&[0; 24]);
        v
    });
    let mut hello = Vec::new();
    hello.extend_from_slice(&(HELLO_LEN as u32).to_be_bytes());
    hello.extend_from_slice(HELLO_MAGIC);
    hello.push(PROTOCOL_VERSION as u8);
    hello.extend_from_slice(&INITIATOR_NONCE);
    raw("hello", hello);
    let mut ahead = Sealer::new(&Target::FromClient.key());
    for _ in 0..5 {
        frame(&mut ahead, &[]);
    }
    raw(
        "counter-ahead",
        frame(&mut ahead, &encoded(&FromClient::Ping { id: 1 })),
    );
    let mut counter_max = seal_plain(Target::FromClient, &encoded(&FromClient::Ping { id: 1 }));
    counter_max[4..12].copy_from_slice(&u64::MAX.to_be_bytes());
    raw("counter-max", counter_max);
    let mut cut = seal_plain(Target::FromClient, &encoded(&FromClient::Heartbeat {}));
    cut.truncate(cut.len() - 3);
    raw("truncated", cut);
}

/// A seed read from the corpus folder.
#[derive(Clone, Debug)]
struct Seed {
    /// Its direction; `None` for the raw folder.
    target: Option<Target>,
    name: String,
    bytes: Vec<u8>,
    /// The plaintext, for sealed seeds that open under the corpus key.
    plain: Option<Vec<u8>>,
}

static CORPUS: LazyLock<Vec<Seed>> = LazyLock::new(load_corpus);

fn load_corpus() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let folders = TARGETS.iter().map(|t| (Some(*t), t.folder()));
    for (target, folder) in folders.chain([(None, "raw")]) {
        let dir = corpus_dir().join(folder);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .collect();
        entries.sort();
        for path in entries {
            let bytes = std::fs::read(&path).expect("corpus file");
            let plain = target.and_then(|t| open_seed(t, &bytes));
            seeds.push(Seed {
                target,
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                bytes,
                plain,
            });
        }
    }
    assert!(!seeds.is_empty(), "the corpus is empty");
    seeds
}

/// The plaintext of a sealed corpus frame (counter 0, corpus key).
fn open_seed(target: Target, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut body = bytes.get(LEN_PREFIX..)?.to_vec();
    let range = Opener::new(&target.key()).open_in_place(&mut body).ok()?;
    Some(body[range].to_vec())
}

/// Plaintexts of the corpus, each with the reader it is meant for.
fn sealed_seeds() -> Vec<(Target, Vec<u8>)> {
    CORPUS
        .iter()
        .filter_map(|s| Some((s.target?, s.plain.clone()?)))
        .collect()
}

fn any_seed_bytes() -> impl Strategy<Value = Vec<u8>> {
    select(CORPUS.iter().map(|s| s.bytes.clone()).collect::<Vec<_>>())
}

// ---------------------------------------------------------------------------
// (a) Raw bytes to the frame reader.

#[derive(Clone, Debug)]
struct RawInput {
    /// Valid frames (the reader's probe message) before the garbage.
    valid: usize,
    /// Whether one more frame, sealed with another key, comes next.
    wrong_key: bool,
    garbage: Vec<u8>,
    /// Where the stream is cut into reads.
    cuts: Vec<Index>,
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        Just(0u32),
        Just(23),
        Just(24),
        Just(25),
        Just(FUZZ_MAX_FRAME as u32),
        Just(FUZZ_MAX_FRAME as u32 + 1),
        Just(u32::MAX),
        0..200u32,
    ];
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..96),
        2 => (prefix, prop::collection::vec(any::<u8>(), 0..96)).prop_map(|(n, body)| {
            let mut v = n.to_be_bytes().to_vec();
            v.extend(body);
            v
        }),
        3 => any_seed_bytes(),
        2 => (any_seed_bytes(), prop::collection::vec(mutation(), 1..4))
            .prop_map(|(s, m)| mutate(s, &m)),
    ]
}

fn raw_input() -> impl Strategy<Value = RawInput> {
    (
        0..3usize,
        prop::bool::weighted(0.2),
        garbage(),
        prop::collection::vec(any::<Index>(), 0..6),
    )
        .prop_map(|(valid, wrong_key, garbage, cuts)| RawInput {
            valid,
            wrong_key,
            garbage,
            cuts,
        })
}

/// Errors a reader may give on bytes off the wire.
fn frame_level_or_decode(e: &WireError) -> bool {
    matches!(
        e,
        WireError::FrameTooLarge { .. }
            | WireError::BadKey
            | WireError::Tampered
            | WireError::Replayed { .. }
            | WireError::OutOfOrder { .. }
            | WireError::Truncated { .. }
            | WireError::Decode(_)
            | WireError::NotAllowed(_)
    )
}

/// An `AsyncRead` handing out one chunk per read: a socket's view of the
/// stream.
struct Chunked(VecDeque<Vec<u8>>);

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut chunk) = self.0.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.push_front(chunk.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn chunks(bytes: &[u8], cuts: &[Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

fn check_raw<T: Wire>(input: &RawInput) -> Result<(), TestCaseError> {
    let mut inbound = Inbound::<T>::new();
    let mut stream = Vec::new();
    for _ in 0..input.valid {
        stream.extend(inbound.seal(&encoded(&T::probe())));
    }
    if input.wrong_key {
        let mut other = [0u8; 32];
        other[0] = 1;
        let mut sealer = Sealer::new(&other);
        for _ in 0..input.valid + usize::from(T::TARGET != Target::Auth) {
            frame(&mut sealer, &[]);
        }
        stream.extend(frame(&mut sealer, &encoded(&T::probe())));
    }
    stream.extend_from_slice(&input.garbage);
    let pieces = chunks(&stream, &input.cuts);

    // The decoder, called as a FramedRead calls it, read by read.
    let mut reader = inbound.reader;
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut failure = None;
    let bound = largest_allowed(stream.len()).max(FUZZ_MAX_FRAME + LEN_PREFIX + ALLOC_SLACK);
    'reads: for piece in &pieces {
        buf.extend_from_slice(piece);
        loop {
            let (r, alloc) = measured(|| reader.decode(&mut buf));
            prop_assert!(
                alloc.largest <= bound,
                "one allocation of {} bytes",
                alloc.largest
            );
            match r {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break 'reads;
                }
            }
        }
    }
    if failure.is_none() {
        loop {
            match reader.decode_eof(&mut buf) {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
    }
    for m in &got {
        stable(m)?;
    }
    let probes = got.iter().take_while(|m| **m == T::probe()).count();
    prop_assert!(
        probes >= input.valid,
        "{} valid frames came first, {probes} were read",
        input.valid
    );
    if input.wrong_key {
        let expected_err = if T::TARGET == Target::Auth && input.valid == 0 {
            "BadKey"
        } else {
            "Tampered"
        };
        let failed = format!("{failure:?}");
        prop_assert!(
            got.len() == input.valid && failed.contains(expected_err),
            "a frame under another key gave {failed} after {} messages",
            got.len()
        );
    }
    if let Some(e) = &failure {
        prop_assert!(frame_level_or_decode(e), "unexpected error {e:?}");
        // Called again after an error (which closes a connection), the
        // decoder still does not panic.
        for _ in 0..3 {
            let _ = reader.decode(&mut buf);
        }
        let _ = reader.decode_eof(&mut buf);
    }

    // The same bytes through a FramedRead, as a connection reads them: the
    // same messages, then at most one error, after which the stream ends.
    let mut framed = FramedRead::new(
        Chunked(pieces.into_iter().filter(|p| !p.is_empty()).collect()),
        Inbound::<T>::new().reader,
    );
    let mut items = Vec::new();
    while let Some(item) = framed
        .next()
        .now_or_never()
        .expect("a chunked reader is always ready")
    {
        let is_err = item.is_err();
        items.push(item);
        if is_err {
            let after = framed.next().now_or_never().expect("ready");
            prop_assert!(
                after.is_none(),
                "the stream goes on after an error: {after:?}"
            );
            break;
        }
    }
    let framed_msgs: Vec<&T> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
    prop_assert_eq!(framed_msgs, got.iter().collect::<Vec<_>>());
    let framed_err = items
        .iter()
        .find_map(|i| i.as_ref().err())
        .map(|e| e.to_string());
    prop_assert_eq!(framed_err, failure.map(|e| e.to_string()));
    Ok(())
}

proptest! {
    #![proptest_config(config(DECODER_CASES))]

    #[test]
    fn raw_bytes_never_panic_a_frame_reader(
        target in select(TARGETS.to_vec()),
        input in raw_input(),
    ) {
        for_target!(target, check_raw(&input))?;
    }

    // (b) Arbitrary plaintexts, sealed right, to each role's message decoder.
    #[test]
    fn sealed_plaintexts_decode_or_fail_cleanly(
        target in select(TARGETS.to_vec()),
        plain in plaintext(),
    ) {
        for_target!(target, check_sealed(&plain))?;
    }

    // (c) Mutations of the corpus's valid messages, sealed right.
    #[test]
    fn mutated_messages_decode_or_fail_cleanly(
        (target, seed) in select(sealed_seeds()),
        mutations in prop::collection::vec(mutation(), 1..6),
        elsewhere in prop::bool::weighted(0.2),
        other in select(TARGETS.to_vec()),
    ) {
        let target = if elsewhere { other } else { target };
        let plain = mutate(seed, &mutations);
        for_target!(target, check_sealed(&plain))?;
    }
}

// ---------------------------------------------------------------------------
// The corpus itself.

/// Set to write the generated seeds into `tests/fuzz_corpus/` instead of
/// checking them.
const REGENERATE: &str = "ARGON_FUZZ_REGENERATE";

#[test]
fn corpus_holds_every_message_of_every_direction() {
    let regenerate = std::env::var_os(REGENERATE).is_some();
    let seeds = generated_seeds();
    for (folder, name, bytes, _) in &seeds {
        let path = corpus_dir().join(folder).join(format!("{name}.bin"));
        if regenerate {
            std::fs::create_dir_all(path.parent().unwrap()).expect("corpus folder");
            std::fs::write(&path, bytes).expect("corpus file");
        } else {
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == *bytes,
                "{} is missing or stale: regenerate the corpus with \
                 `{REGENERATE}=1 cargo test --test fuzz_decode corpus`",
                path.display()
            );
        }
    }
    for target in TARGETS {
        for_target!(target, check_seeds(&seeds));
    }
}

/// Each generated seed of `T`'s folder does what it is meant to, and the
/// valid ones cover every message of the direction.
fn check_seeds<T: Wire>(seeds: &Seeds) {
    let mut kinds = Vec::new();
    for (folder, name, bytes, expect) in seeds {
        if *folder != T::TARGET.folder() {
            continue;
        }
        let mut reader = FrameReader::<T>::new(&T::TARGET.key(), DEFAULT_MAX_FRAME);
        let result = reader.decode(&mut BytesMut::from(&bytes[..]));
        match (expect, &result) {
            (Expect::Decodes, Ok(Some(m))) => {
                if !name.starts_with("edge-") {
                    kinds.push(m.kind());
                }
            }
            (Expect::Undecodable, Err(WireError::Decode(_)))
            | (Expect::Misplaced, Err(WireError::NotAllowed(_)))
            | (Expect::Anything, _) => {}
            _ => panic!("{folder}/{name}: expected {expect:?}, got {result:?}"),
        }
    }
    kinds.sort_unstable();
    kinds.dedup();
    let mut names = T::NAMES.to_vec();
    names.sort_unstable();
    assert_eq!(kinds, names, "valid seeds of {}", T::TARGET.folder());
}

#[test]
fn every_seed_of_the_corpus_is_checked_by_every_reader() {
    for seed in CORPUS.iter() {
        for target in TARGETS {
            let input = RawInput {
                valid: 0,
                wrong_key: false,
                garbage: seed.bytes.clone(),
                cuts: vec![],
            };
            if let Err(e) = for_target!(target, check_raw(&input)) {
                panic!("raw seed {} to {target:?}: {e}", seed.name);
            }
            if let (Some(own), Some(plain)) = (seed.target, &seed.plain) {
                if let Err(e) = for_target!(target, check_sealed(plain)) {
                    panic!("{:?} seed {} to {target:?}: {e}", own, seed.name);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Declared sizes: refused without allocating for them.

#[test]
fn a_declared_length_of_2p32_minus_1_is_refused_without_allocating() {
    let mut reader = FrameReader::<FromClient>::new(&Target::FromClient.key(), 1024);
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x00][..]);
    let (result, alloc) = measured(|| reader.decode(&mut buf));
    assert!(
        matches!(result, Err(WireError::FrameTooLarge { len, max: 1024 }) if len == u32::MAX as usize),
        "{result:?}"
    );
    assert!(alloc.largest < 1024, "allocated {alloc:?}");
}

#[test]
fn declared_counts_and_lengths_past_the_input_are_refused_without_allocating() {
    let seeds = generated_seeds();
    let mut checked = 0;
    for (folder, name, bytes, _) in &seeds {
        if !(name.contains("2p31") || name.contains("len-max") || name.contains("count-max")) {
            continue;
        }
        let target = TARGETS.into_iter().find(|t| t.folder() == *folder);
        let Some(target) = target else { continue };
        let check =
            |bytes: &[u8]| -> Result<(), String> { for_target!(target, refused_cheaply(bytes)) };
        if let Err(e) = check(bytes) {
            panic!("{folder}/{name}: {e}");
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} such seeds");
}

/// Decodes a sealed frame declaring a huge size with a 1 KiB frame limit:
/// it must fail, allocating no more than a few KiB.
fn refused_cheaply<T: Wire>(bytes: &[u8]) -> Result<(), String> {
    let mut reader = FrameReader::<T>::new(&T::TARGET.key(), 1024);
    let mut buf = BytesMut::from(bytes);
    let (result, alloc) = measured(|| reader.decode(&mut buf));
    if !matches!(result, Err(WireError::Decode(_))) {
        return Err(format!("expected a decode error, got {result:?}"));
    }
    if alloc.largest > 4096 || alloc.total > 16 * 1024 {
        return Err(format!(
            "{} bytes of frame allocated {alloc:?}",
            bytes.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The real connection actor, fed garbage.

/// What a fuzzing peer sends after its auth.
#[derive(Clone, Debug)]
enum Item {
    /// A message its role may send, that the manager answers without error.
    Probe,
    /// A plaintext sealed with the right key and counter.
    Sealed(Vec<u8>),
    /// Bytes as they are.
    Raw(Vec<u8>),
}

fn items(target: Target) -> impl Strategy<Value = Vec<Item>> {
    let own: Vec<Vec<u8>> = sealed_seeds()
        .into_iter()
        .filter(|(t, _)| *t == target)
        .map(|(_, p)| p)
        .collect();
    let item = prop_oneof![
        2 => Just(Item::Probe),
        3 => plaintext().prop_map(Item::Sealed),
        3 => (select(own), prop::collection::vec(mutation(), 0..4))
            .prop_map(|(p, m)| Item::Sealed(mutate(p, &m))),
        1 => garbage().prop_map(Item::Raw),
    ];
    prop::collection::vec(item, 1..5)
}

/// A client or worker speaking the protocol by hand, so that it can seal
/// anything. `predict` is the manager's reader of what it sends.
struct RawPeer<In, Out> {
    write: tokio::net::tcp::OwnedWriteHalf,
    read: FramedRead<OwnedReadHalf, FrameReader<Out>>,
    sealer: Sealer,
    predict: FrameReader<In>,
}

impl<In: Wire, Out: Wire> RawPeer<In, Out> {
    async fn connect(m: &ManagerHandle, role: Role) -> RawPeer<In, Out> {
        let mut stream = TcpStream::connect(m.addr).await.expect("connect");
        let mine = [0x5a; 32];
        let mut hello = (HELLO_LEN as u32).to_be_bytes().to_vec();
        hello.extend_from_slice(HELLO_MAGIC);
        hello.push(PROTOCOL_VERSION as u8);
        hello.extend_from_slice(&mine);
        stream.write_all(&hello).await.expect("hello");
        let mut theirs = [0u8; LEN_PREFIX + HELLO_LEN];
        stream
            .read_exact(&mut theirs)
            .await
            .expect("manager's hello");
        let nonce: [u8; 32] = theirs[LEN_PREFIX + 5..].try_into().unwrap();
        let (i2r, r2i) = key().session_keys(&mine, &nonce);
        let mut sealer = Sealer::new(&i2r);
        let auth = encoded(&AuthFrame::Auth {
            version: PROTOCOL_VERSION,
            role,
            agent: "fuzz".into(),
        });
        let auth = frame(&mut sealer, &auth);
        let mut predict_auth = FrameReader::<AuthFrame>::new(&i2r, DEFAULT_MAX_FRAME);
        assert!(matches!(
            predict_auth.decode(&mut BytesMut::from(&auth[..])),
            Ok(Some(_))
        ));
        stream.write_all(&auth).await.expect("auth");
        let (read, write) = stream.into_split();
        let mut read =
            FramedRead::new(read, FrameReader::<AuthFrame>::new(&r2i, DEFAULT_MAX_FRAME));
        match read.next().await {
            Some(Ok(AuthFrame::Auth {
                role: Role::Manager,
                ..
            })) => {}
            other => panic!("expected the manager's auth, got {other:?}"),
        }
        RawPeer {
            write,
            read: read.map_decoder(FrameReader::retype),
            sealer,
            predict: predict_auth.retype(),
        }
    }
}

fn key() -> MasterKey {
    MasterKey::from_material(b"connection fuzz key, long enough to pass the length check")
}

/// Sends `items`, closes its side, and checks what the manager answered:
/// frames that decode, at most one `error`, last, with the text the decoder
/// predicts when everything before the garbage was benign; then the end.
async fn garbage_case<In: Wire, Out: Wire>(
    m: &ManagerHandle,
    role: Role,
    items: &[Item],
) -> Result<(), TestCaseError> {
    let mut peer = RawPeer::<In, Out>::connect(m, role).await;
    let mut bytes = Vec::new();
    for item in items {
        match item {
            Item::Probe => bytes.extend(frame(&mut peer.sealer, &encoded(&In::probe()))),
            Item::Sealed(plain) => bytes.extend(frame(&mut peer.sealer, plain)),
            Item::Raw(raw) => bytes.extend_from_slice(raw),
        }
    }
    let mut buf = BytesMut::from(&bytes[..]);
    let mut decoded = Vec::new();
    let failure = loop {
        match peer.predict.decode_eof(&mut buf) {
            Ok(Some(msg)) => decoded.push(msg),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    // The manager may close before it has read everything: fine.
    let _ = peer.write.write_all(&bytes).await;
    let _ = peer.write.shutdown().await;

    let mut answers = Vec::new();
    loop {
        match within("the manager to answer or close", peer.read.next()).await {
            Some(Ok(msg)) => answers.push(msg),
            // A reset once the manager closed with our bytes unread.
            Some(Err(WireError::Io(_))) | None => break,
            Some(Err(e)) => prop_assert!(false, "bad frame from the manager: {e}"),
        }
    }
    let errors: Vec<(usize, &str)> = answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| Some((i, a.error_text()?)))
        .collect();
    prop_assert!(errors.len() <= 1, "more than one error: {errors:?}");
    if let Some((at, _)) = errors.first() {
        prop_assert_eq!(*at, answers.len() - 1, "the error is the last frame");
    }
    if decoded.iter().all(|m| m.benign()) {
        let label = role.to_string();
        let expected = match &failure {
            Some(WireError::NotAllowed(kind)) => Some(format!("a {label} may not send {kind}")),
            Some(e @ WireError::Decode(_)) => Some(e.to_string()),
            _ => None,
        };
        let got = errors.first().map(|(_, text)| text.to_string());
        prop_assert_eq!(got, expected, "after {:?}", decoded);
    }
    Ok(())
}

/// A client that stays connected throughout and must be served.
async fn bystander_is_served(c: &mut RawPeer<FromClient, ToClient>, id: u64) {
    let ping = frame(&mut c.sealer, &encoded(&FromClient::Ping { id }));
    c.write.write_all(&ping).await.expect("bystander sends");
    match within("the bystander's pong", c.read.next()).await {
        Some(Ok(ToClient::Pong { id: got })) if got == id => {}
        other => panic!("the bystander got {other:?}"),
    }
}

type CaseFuture<'a> = Pin<Box<dyn std::future::Future<Output = Result<(), TestCaseError>> + 'a>>;

/// Runs `case` on every input of `strategy` against one manager, in the
/// test's own actix system; after each case a bystanding client must be
/// served, and nothing may have panicked.
fn against_a_manager<S: Strategy>(
    strategy: S,
    case: impl for<'a> Fn(&'a ManagerHandle, S::Value) -> CaseFuture<'a>,
) {
    count_panics();
    let sys = actix::System::new();
    let mut hs = HandshakeSettings::new(key());
    hs.heartbeat = std::time::Duration::from_secs(60);
    let m = sys
        .block_on(start_manager("127.0.0.1:0", ManagerSettings::default(), hs))
        .expect("manager starts");
    let bystander = RefCell::new(Some(sys.block_on(RawPeer::connect(&m, Role::Client))));
    let next_id = Cell::new(0u64);
    let mut runner = TestRunner::new(config(CONNECTION_CASES));
    let result = runner.run(&strategy, |input| {
        let panics = panics_here();
        sys.block_on(async {
            case(&m, input).await?;
            next_id.set(next_id.get() + 1);
            let mut b = bystander
                .take()
                .expect("the bystander is back after each case");
            bystander_is_served(&mut b, next_id.get()).await;
            bystander.replace(Some(b));
            Ok::<(), TestCaseError>(())
        })?;
        prop_assert_eq!(panics_here(), panics, "something panicked");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn a_client_connection_fed_garbage_closes_with_one_error() {
    against_a_manager(items(Target::FromClient), |m, items| {
        Box::pin(async move { garbage_case::<FromClient, ToClient>(m, Role::Client, &items).await })
    });
}

#[test]
fn a_worker_connection_fed_garbage_closes_with_one_error() {
    against_a_manager(items(Target::FromWorker), |m, items| {
        Box::pin(async move { garbage_case::<FromWorker, ToWorker>(m, Role::Worker, &items).await })
    });
}

fn hello() -> Vec<u8> {
    let mut hello = (HELLO_LEN as u32).to_be_bytes().to_vec();
    hello.extend_from_slice(HELLO_MAGIC);
    hello.push(PROTOCOL_VERSION as u8);
    hello.extend_from_slice(&[0x5a; 32]);
    hello
}

/// Bytes a peer may send instead of a hello and an auth.
fn opening() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..80),
        2 => (prop::collection::vec(mutation(), 1..4)).prop_map(|m| mutate(hello(), &m)),
        3 => garbage().prop_map(|g| [hello(), g].concat()),
        1 => any_seed_bytes(),
    ]
}

/// Sends `bytes` as the opening of a connection and closes its side: the
/// manager answers with its hello, and its auth only if the hello was
/// one, then closes without anything else.
async fn opening_case(m: &ManagerHandle, bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let mut stream = TcpStream::connect(m.addr).await.expect("connect");
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
    let mut got = Vec::new();
    let clean = within("the manager to close", stream.read_to_end(&mut got))
        .await
        .is_ok();
    let ours = hello();
    let valid_hello = bytes.len() >= ours.len() && bytes[..9] == ours[..9];
    let theirs = LEN_PREFIX + HELLO_LEN;
    if got.len() < theirs {
        prop_assert!(!clean, "the manager's hello is cut short: {got:?}");
        return Ok(());
    }
    prop_assert_eq!(&got[..9], &ours[..9], "the manager's hello");
    let rest = &got[theirs..];
    if valid_hello {
        let declared = rest
            .get(..LEN_PREFIX)
            .map(|p| u32::from_be_bytes(p.try_into().unwrap()) as usize);
        prop_assert!(
            !clean || declared.is_some_and(|n| rest.len() == LEN_PREFIX + n),
            "after a valid hello, one auth frame and nothing else: {rest:?}"
        );
    } else {
        prop_assert!(rest.is_empty(), "nothing after a bad hello: {rest:?}");
    }
    Ok(())
}

#[test]
fn a_connection_opened_with_garbage_is_closed_after_the_hello() {
    against_a_manager(opening(), |m, bytes| Box::pin(opening_case(m, bytes)));
}
