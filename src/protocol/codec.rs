//! Frame codecs: a typed wire message (any [`WireMessage`]) to a sealed,
//! length-prefixed frame and back. Both are plain tokio-util codecs,
//! testable without a socket.
//!
//! Frame layout: `u32` big-endian body length, then the body. A sealed body is
//! an 8-byte big-endian counter, the AES-256-GCM ciphertext of the
//! MessagePack-encoded message, and the 16-byte tag.

use std::marker::PhantomData;

use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::crypto::{Opener, Sealer, COUNTER_LEN, TAG_LEN};
use super::{WireError, WireMessage, ALL_NAMES, MAX_DECODE_DEPTH};

/// Length of the frame length prefix.
pub const LEN_PREFIX: usize = 4;

/// Serializes a message the way the wire wants it (named fields).
pub fn encode_message<T: Serialize>(
    msg: &T,
    out: &mut impl std::io::Write,
) -> Result<(), WireError> {
    let mut ser = rmp_serde::Serializer::new(out).with_struct_map();
    serde::Serialize::serialize(msg, &mut ser).map_err(|e| WireError::Encode(e.to_string()))
}

/// Parses one message from plaintext, refusing nesting deeper than
/// [`MAX_DECODE_DEPTH`] (see [`check_nesting`]), so no input can exhaust a
/// thread's stack.
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    check_nesting(bytes, MAX_DECODE_DEPTH)?;
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    // rmp_serde's own count leaves out the maps it reads as enums (every
    // message's envelope, outcomes) but counts ext values, and refuses at
    // its limit rather than past it: one above ours never refuses what
    // passed the count above, and still bounds the stack on its own.
    de.set_max_depth(MAX_DECODE_DEPTH + 1);
    T::deserialize(&mut de).map_err(|e| WireError::Decode(e.to_string()))
}

/// Refuses a MessagePack value nested deeper than `max` levels, the way
/// `docs/PROTOCOL.md` §5 counts them: each array and map is one level,
/// every other value (str, bin, ext, number, nil, bool) none. Reads only
/// the headers, without recursion. Input that ends early or is not
/// MessagePack passes, for the decoder to refuse in its own words.
pub fn check_nesting(bytes: &[u8], max: usize) -> Result<(), WireError> {
    // Items still to come in each open array or map, innermost last.
    let mut open: Vec<u64> = Vec::new();
    let mut at = 0usize;
    loop {
        let Some(&marker) = bytes.get(at) else {
            return Ok(());
        };
        at += 1;
        let items = match marker {
            0x80..=0x8f => Some(2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => Some(u64::from(marker & 0x0f)),
            0xdc => read_be(bytes, &mut at, 2),
            0xdd => read_be(bytes, &mut at, 4),
            0xde => read_be(bytes, &mut at, 2).map(|n| 2 * n),
            0xdf => read_be(bytes, &mut at, 4).map(|n| 2 * n),
            _ => {
                let Some(skip) = scalar_len(marker, bytes, &mut at) else {
                    return Ok(());
                };
                at = at.saturating_add(skip);
                None
            }
        };
        if let Some(items) = items {
            if open.len() >= max {
                return Err(WireError::Decode(format!(
                    "nested deeper than {max} levels"
                )));
            }
            if items > 0 {
                open.push(items);
                continue;
            }
        }
        // One item is complete: count it off, and every container it completes.
        loop {
            let Some(left) = open.last_mut() else {
                return Ok(());
            };
            *left -= 1;
            if *left > 0 {
                break;
            }
            open.pop();
        }
    }
}

/// The `n`-byte big-endian number at `at`, which it then passes; `None`
/// past the end of `bytes`.
fn read_be(bytes: &[u8], at: &mut usize, n: usize) -> Option<u64> {
    let field = bytes.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(field.iter().fold(0, |v, &b| v << 8 | u64::from(b)))
}

/// Bytes that follow the header of a value that is not an array or map,
/// reading (and passing) its length field if it has one; `None` for input
/// that ends early or a marker MessagePack does not use.
fn scalar_len(marker: u8, bytes: &[u8], at: &mut usize) -> Option<usize> {
    let len = |at: &mut usize, n| read_be(bytes, at, n).map(|l| l as usize);
    Some(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
        0xa0..=0xbf => usize::from(marker & 0x1f),
        0xcc | 0xd0 => 1,
        0xcd | 0xd1 => 2,
        0xca | 0xce | 0xd2 => 4,
        0xcb | 0xcf | 0xd3 => 8,
        // fixext 1, 2, 4, 8, 16: a type byte and the data.
        0xd4..=0xd8 => 1 + (1 << (marker - 0xd4)),
        0xc4 | 0xd9 => len(at, 1)?,
        0xc5 | 0xda => len(at, 2)?,
        0xc6 | 0xdb => len(at, 4)?,
        0xc7 => len(at, 1)?.saturating_add(1),
        0xc8 => len(at, 2)?.saturating_add(1),
        0xc9 => len(at, 4)?.saturating_add(1),
        _ => return None,
    })
}

/// Turns a decode error for a well-formed message of another direction
/// (a `drain` from a client, say) into [`WireError::NotAllowed`].
fn misplaced<T: WireMessage>(plain: &[u8], err: WireError) -> WireError {
    // A one-entry map (0x81) whose key is a short string (fixstr 0xa0..=0xbf).
    let name = match plain {
        [0x81, tag @ 0xa0..=0xbf, rest @ ..] => rest.get(..usize::from(tag & 0x1f)),
        _ => None,
    };
    match name.and_then(|n| std::str::from_utf8(n).ok()) {
        Some(n) if !T::NAMES.contains(&n) => match ALL_NAMES.iter().find(|k| **k == n) {
            Some(known) => WireError::NotAllowed(known),
            None => err,
        },
        _ => err,
    }
}

/// Encoder for one direction of a connection: serializes, seals and frames.
pub struct FrameWriter {
    sealer: Sealer,
    max_frame: usize,
}

impl FrameWriter {
    /// A writer sealing with `key`, refusing bodies over `max_frame` bytes.
    pub fn new(key: &[u8; 32], max_frame: usize) -> FrameWriter {
        FrameWriter {
            sealer: Sealer::new(key),
            max_frame,
        }
    }

    /// The largest frame body it writes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Lowers the largest frame body it writes to `max` (the peer's limit),
    /// if that is lower; 0 leaves it as it is.
    pub fn limit_to(&mut self, max: usize) {
        if max > 0 {
            self.max_frame = self.max_frame.min(max);
        }
    }
}

/// The largest message (plaintext) a frame body of `max_frame` bytes holds.
pub fn max_plaintext(max_frame: usize) -> usize {
    max_frame.saturating_sub(COUNTER_LEN + TAG_LEN)
}

/// Bytes `msg` takes MessagePack-encoded the wire's way, without keeping them.
pub fn encoded_len<T: Serialize>(msg: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Our types always serialize; a failure would only under-count.
    let _ = encode_message(msg, &mut c);
    c.0
}

impl<T: WireMessage> Encoder<T> for FrameWriter {
    type Error = WireError;

    fn encode(&mut self, msg: T, dst: &mut BytesMut) -> Result<(), WireError> {
        self.write(&msg, dst)
    }
}

impl FrameWriter {
    /// Serializes, seals and frames `msg` onto `dst`. A message over the
    /// frame limit is refused before anything is sealed, so the connection
    /// stays usable.
    pub fn write<T: Serialize>(&mut self, msg: &T, dst: &mut BytesMut) -> Result<(), WireError> {
        let start = dst.len();
        dst.reserve(LEN_PREFIX + COUNTER_LEN + 64 + TAG_LEN);
        dst.put_u32(0);
        dst.put_u64(0);
        let plain_at = dst.len();
        let mut w = dst.writer();
        let encoded = encode_message(msg, &mut w);
        let dst = w.into_inner();
        if let Err(e) = encoded {
            dst.truncate(start);
            return Err(e);
        }
        let body_len = dst.len() - plain_at + COUNTER_LEN + TAG_LEN;
        if body_len > self.max_frame {
            dst.truncate(start);
            return Err(WireError::FrameTooLarge {
                len: body_len,
                max: self.max_frame,
            });
        }
        let (counter, tag) = self.sealer.seal_in_place(&mut dst[plain_at..]);
        dst.extend_from_slice(&tag);
        dst[start..start + LEN_PREFIX].copy_from_slice(&(body_len as u32).to_be_bytes());
        dst[start + LEN_PREFIX..plain_at].copy_from_slice(&counter.to_be_bytes());
        Ok(())
    }
}

/// Decoder for one direction of a connection: unframes, opens and parses
/// into `T`, the message type of that direction.
pub struct FrameReader<T> {
    frames: LengthDelimitedCodec,
    opener: Opener,
    max_frame: usize,
    frames_read: u64,
    kind: PhantomData<fn() -> T>,
}

/// Read buffer a connection starts with: enough for the handshake, so an
/// idle connection holds little memory (see [`FrameReader`]).
pub const IDLE_READ_BUFFER: usize = 1024;

/// Read buffer of a connection in use: room for a burst of frames per read.
pub const BUSY_READ_BUFFER: usize = 8 * 1024;

impl<T> FrameReader<T> {
    /// A reader opening with `key`, refusing bodies over `max_frame` bytes.
    pub fn new(key: &[u8; 32], max_frame: usize) -> FrameReader<T> {
        FrameReader {
            frames: length_codec(max_frame),
            opener: Opener::new(key),
            max_frame,
            frames_read: 0,
            kind: PhantomData,
        }
    }

    /// Changes the largest frame body it accepts: the handshake reads the
    /// auth frame under a small limit, then lifts it.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.frames.set_max_frame_length(max_frame);
        self.max_frame = max_frame;
    }

    /// The same reader (keys, counter) decoding another message type: the
    /// handshake reads `auth` and hands the stream on for the role's messages.
    pub fn retype<U>(self) -> FrameReader<U> {
        FrameReader {
            frames: self.frames,
            opener: self.opener,
            max_frame: self.max_frame,
            frames_read: self.frames_read,
            kind: PhantomData,
        }
    }
}

/// The length-prefix codec every Argon frame uses.
pub fn length_codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(LEN_PREFIX)
        .big_endian()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Maps the length codec's errors to ours: oversize is typed, not an I/O error.
pub fn frame_error(e: std::io::Error, max_frame: usize, pending: &[u8]) -> WireError {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<tokio_util::codec::LengthDelimitedCodecError>())
    {
        let len = pending
            .get(..LEN_PREFIX)
            .map(|p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize)
            .unwrap_or(0);
        WireError::FrameTooLarge {
            len,
            max: max_frame,
        }
    } else {
        WireError::Io(e)
    }
}

impl<T: WireMessage> Decoder for FrameReader<T> {
    type Item = T;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<T>, WireError> {
        let mut body = match self.frames.decode(src) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(None),
            Err(e) => return Err(frame_error(e, self.max_frame, src)),
        };
        let plain = self.opener.open_in_place(&mut body)?;
        let plain = &body[plain];
        let msg: T = decode_message(plain).map_err(|e| misplaced::<T>(plain, e))?;
        if !msg.is_heartbeat() {
            self.frames_read += 1;
        }
        // A connection starts with a small read buffer (IDLE_READ_BUFFER);
        // once it carries traffic past the handshake's auth frame (heartbeats
        // do not count), it gets room for bursts, so a busy peer costs no
        // extra reads.
        if self.frames_read == 2 && src.capacity() < BUSY_READ_BUFFER {
            src.reserve(BUSY_READ_BUFFER - src.len().min(BUSY_READ_BUFFER));
        }
        Ok(Some(msg))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<T>, WireError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => Err(WireError::Truncated { len: src.len() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::crypto::MasterKey;
    use crate::protocol::{FromClient, Submit, ToClient, Value};

    const MAX: usize = 1 << 20;

    type Reader = FrameReader<FromClient>;

    fn codecs() -> (FrameWriter, Reader) {
        let k = MasterKey::from_material(b"codec test key, long enough to not warn");
        let (i2r, _) = k.session_keys(&[9; 32], &[8; 32]);
        (FrameWriter::new(&i2r, MAX), FrameReader::new(&i2r, MAX))
    }

    fn submit(id: u64, payload: usize) -> FromClient {
        FromClient::Submit(Submit {
            id,
            task: "echo".into(),
            args: Value::Binary(vec![0xab; payload]),
            priority: Default::default(),
            timeout_ms: Some(5),
            attempts: 2,
            retries: Some(1),
            detach: false,
            want_id: false,
            due_ms: None,
            delay_ms: None,
            unique_key: None,
            unique_for_ms: None,
        })
    }

    #[test]
    fn messages_round_trip_through_the_codecs() {
        let (mut w, mut r) = codecs();
        let msgs = vec![
            submit(1, 10),
            FromClient::Cancel { id: 1 },
            FromClient::DeadRequest { id: 3, limit: 0 },
            FromClient::Heartbeat {},
            submit(2, 70_000),
        ];
        let mut buf = BytesMut::new();
        for m in &msgs {
            w.write(m, &mut buf).unwrap();
        }
        for m in &msgs {
            assert_eq!(r.decode(&mut buf).unwrap().as_ref(), Some(m));
        }
        assert!(r.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn partial_frame_waits_for_more_bytes() {
        let (mut w, mut r) = codecs();
        let mut full = BytesMut::new();
        w.encode(submit(1, 100), &mut full).unwrap();
        let mut part = full.split_to(full.len() / 2);
        assert!(r.decode(&mut part).unwrap().is_none());
        part.unsplit(full);
        assert!(r.decode(&mut part).unwrap().is_some());
    }

    #[test]
    fn stream_ending_mid_frame_is_truncated() {
        let (mut w, mut r) = codecs();
        let mut buf = BytesMut::new();
        w.encode(submit(1, 100), &mut buf).unwrap();
        buf.truncate(buf.len() - 5);
        assert!(matches!(
            r.decode_eof(&mut buf),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn body_too_short_for_a_tag_is_truncated() {
        let (_, mut r) = codecs();
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 1, 2, 3][..]);
        assert!(matches!(
            r.decode(&mut buf),
            Err(WireError::Truncated { len: 3 })
        ));
    }

    #[test]
    fn huge_length_prefix_is_rejected_without_allocating() {
        let (_, mut r) = codecs();
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0][..]);
        match r.decode(&mut buf) {
            Err(WireError::FrameTooLarge { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, MAX);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn oversized_message_is_refused_by_the_writer() {
        let (mut w, _) = codecs();
        let mut buf = BytesMut::new();
        assert!(matches!(
            w.encode(submit(1, MAX + 1), &mut buf),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn replayed_frame_is_rejected() {
        let (mut w, mut r) = codecs();
        let mut buf = BytesMut::new();
        w.encode(submit(1, 1), &mut buf).unwrap();
        let copy = buf.clone();
        r.decode(&mut buf).unwrap().unwrap();
        let mut again = copy;
        assert!(matches!(
            r.decode(&mut again),
            Err(WireError::Replayed {
                got: 0,
                expected: 1
            })
        ));
    }

    #[test]
    fn skipped_frame_is_out_of_order() {
        let (mut w, mut r) = codecs();
        let mut first = BytesMut::new();
        let mut second = BytesMut::new();
        w.encode(submit(1, 1), &mut first).unwrap();
        w.encode(submit(2, 1), &mut second).unwrap();
        assert!(matches!(
            r.decode(&mut second),
            Err(WireError::OutOfOrder {
                got: 1,
                expected: 0
            })
        ));
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let (mut w, mut r) = codecs();
        let mut buf = BytesMut::new();
        w.encode(submit(1, 1), &mut buf).unwrap();
        r.decode(&mut buf).unwrap().unwrap();
        w.encode(submit(2, 1), &mut buf).unwrap();
        let n = buf.len();
        buf[n - 20] ^= 0x40;
        assert!(matches!(r.decode(&mut buf), Err(WireError::Tampered)));
    }

    #[test]
    fn frame_from_another_session_is_rejected() {
        let k = MasterKey::from_material(b"codec test key, long enough to not warn");
        let (a, _) = k.session_keys(&[1; 32], &[2; 32]);
        let (b, _) = k.session_keys(&[3; 32], &[4; 32]);
        let mut w_a = FrameWriter::new(&a, MAX);
        let mut r_a = Reader::new(&a, MAX);
        let mut w_b = FrameWriter::new(&b, MAX);
        let mut buf = BytesMut::new();
        w_a.encode(submit(1, 1), &mut buf).unwrap();
        r_a.decode(&mut buf).unwrap().unwrap();
        w_b.encode(submit(1, 1), &mut buf).unwrap();
        w_b.encode(submit(2, 1), &mut buf).unwrap();
        let _ = buf.split_to(buf.len() / 2);
        assert!(matches!(r_a.decode(&mut buf), Err(WireError::Tampered)));
    }

    #[test]
    fn garbage_plaintext_under_the_right_key_is_a_decode_error() {
        let k = MasterKey::from_material(b"codec test key, long enough to not warn");
        let (key, _) = k.session_keys(&[9; 32], &[8; 32]);
        let mut sealer = Sealer::new(&key);
        let mut r = Reader::new(&key, MAX);
        let mut plain = vec![0xc1u8, 0xc1, 0xc1];
        let (c, tag) = sealer.seal_in_place(&mut plain);
        let mut buf = BytesMut::new();
        buf.put_u32((COUNTER_LEN + plain.len() + TAG_LEN) as u32);
        buf.put_u64(c);
        buf.extend_from_slice(&plain);
        buf.extend_from_slice(&tag);
        assert!(matches!(r.decode(&mut buf), Err(WireError::Decode(_))));
    }

    #[test]
    fn a_message_of_another_direction_does_not_decode() {
        let (mut w, mut r) = codecs();
        let mut buf = BytesMut::new();
        w.encode(ToClient::Pong { id: 1 }, &mut buf).unwrap();
        assert!(matches!(
            r.decode(&mut buf),
            Err(WireError::NotAllowed("pong"))
        ));
    }

    fn nested(depth: usize, inner: Value) -> Value {
        (0..depth).fold(inner, |v, i| match i % 2 {
            0 => Value::Array(vec![Value::Nil, v]),
            _ => Value::Map(vec![(Value::from("k"), v)]),
        })
    }

    /// Every kind of scalar, in each of its encodings, beside the nesting.
    fn scalars() -> Vec<Value> {
        let mut all = vec![
            Value::Nil,
            Value::Boolean(true),
            Value::F32(1.5),
            Value::F64(2.5),
            Value::Array(vec![]),
            Value::Map(vec![]),
        ];
        for n in [0u64, 200, 60_000, 4_000_000_000, u64::MAX] {
            all.push(Value::from(n));
        }
        for n in [-5i64, -100, -30_000, -2_000_000_000, i64::MIN] {
            all.push(Value::from(n));
        }
        for len in [0usize, 31, 200, 70_000] {
            all.push(Value::from("s".repeat(len)));
            all.push(Value::Binary(vec![7; len]));
        }
        for len in [1usize, 2, 3, 4, 8, 16, 17, 300, 70_000] {
            all.push(Value::Ext(5, vec![9; len]));
        }
        all
    }

    fn encoded(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_message(v, &mut out).unwrap();
        out
    }

    #[test]
    fn nesting_counts_arrays_and_maps_as_value_depth_does() {
        let wide = Value::Array(scalars());
        let cases = [
            wide.clone(),
            nested(40, wide.clone()),
            nested(3, Value::Map(vec![(nested(5, Value::Nil), wide.clone())])),
            nested(60, Value::Ext(1, vec![1, 2])),
            nested(119, Value::Array(vec![])),
        ];
        for v in cases {
            let depth = crate::protocol::value_depth(&v);
            let bytes = encoded(&v);
            assert!(check_nesting(&bytes, depth).is_ok(), "depth {depth}");
            assert!(check_nesting(&bytes, depth - 1).is_err(), "depth {depth}");
        }
        for v in scalars() {
            let depth = crate::protocol::value_depth(&v);
            assert!(check_nesting(&encoded(&v), depth).is_ok(), "{depth}");
        }
    }

    #[test]
    fn nesting_passes_input_cut_short_for_the_decoder_to_refuse() {
        let v = nested(10, Value::Array(scalars()));
        let (bytes, depth) = (encoded(&v), crate::protocol::value_depth(&v));
        for cut in 0..bytes.len() {
            assert!(check_nesting(&bytes[..cut], depth).is_ok(), "cut at {cut}");
        }
        assert!(check_nesting(&[0x91, 0xc1], 0).is_err(), "the array counts");
        assert!(
            check_nesting(&[0xc1, 0x91, 0x91], 1).is_ok(),
            "not MessagePack"
        );
        let deep = [0xdd, 0xff, 0xff, 0xff, 0xff].repeat(200);
        assert!(
            check_nesting(&deep, 128).is_err(),
            "declared counts past the input"
        );
    }

    #[test]
    fn random_bytes_never_panic_the_decoder() {
        let (_, mut r) = codecs();
        let mut seed = 0x9e3779b97f4a7c15u64;
        for round in 0..2000 {
            let mut data = Vec::new();
            let n = (round % 64) + 1;
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                data.push(seed as u8);
            }
            if round % 3 == 0 && n >= 4 {
                data[..4].copy_from_slice(&((n as u32).saturating_sub(4)).to_be_bytes()[..]);
            }
            let mut buf = BytesMut::from(&data[..]);
            let mut r2 = codecs().1;
            let _ = r2.decode(&mut buf);
            let _ = r2.decode_eof(&mut buf);
            let _ = r.decode(&mut BytesMut::from(&data[..]));
        }
    }
}
