//! What rendering a value as JSON may cost (`argon::json`), over nested
//! shapes a peer can send: map keys that are maps, arrays, ext, binary and
//! strings, wrapped at every depth up to the wire's limit.
//!
//! - The whole text is valid JSON of at most `TEXT_PER_BYTE` bytes per
//!   encoded byte (plus a constant), and rendering it allocates in the same
//!   proportion.
//! - A preview of `n` characters keeps at most `n` and `…`, is the start of
//!   the whole text, and allocates in proportion to `n` whatever the size
//!   of the value: it is cut while rendering, not after.
//!
//! Bytes, not time, are the measure: a counting allocator records what the
//! current thread allocates while a rendering runs.

mod alloc_count;

use alloc_count::measured;
use argon::json::{preview, to_text, KEY_CHARS};
use argon::protocol::{Value, MAX_VALUE_DEPTH};
use proptest::prelude::*;

/// Bytes of JSON text a rendering may write per byte of the value's
/// MessagePack encoding, plus a constant. The worst found is about 9: a
/// key whose keys are maps five levels deep (11 bytes), each level of
/// quoting about doubling the text, before the cut at `KEY_CHARS` stops
/// the growth.
const TEXT_PER_BYTE: usize = 12;
const TEXT_SLACK: usize = 64;
/// Character limits the previews are taken at.
const PREVIEW_LIMITS: [usize; 5] = [0, 1, 7, 64, 256];

// ---------------------------------------------------------------------------
// The checks

fn encoded_len(v: &Value) -> usize {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, v).expect("encodes into a Vec");
    buf.len()
}

/// The text bound for a value of `size` encoded bytes.
fn text_allowed(size: usize) -> usize {
    TEXT_PER_BYTE * size + TEXT_SLACK
}

/// What a preview of `n` characters may allocate: its own text (at most 4
/// bytes a character) as a String grows by doubling.
fn preview_allowed(n: usize) -> usize {
    16 * (n + 1) + 64
}

/// Checks every bound on `v`; `Err` says which failed.
fn check(v: &Value) -> Result<(), String> {
    let size = encoded_len(v);
    let (text, allocated) = measured(|| to_text(v));
    let allocated = allocated.total;
    if text.len() > text_allowed(size) {
        return Err(format!(
            "{} bytes of text from {size} encoded bytes (allowed {})",
            text.len(),
            text_allowed(size)
        ));
    }
    if allocated > 4 * text_allowed(size) {
        return Err(format!(
            "the text allocated {allocated} bytes for {size} encoded bytes"
        ));
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
        return Err(format!("not JSON ({e}): {text}"));
    }
    let chars = text.chars().count();
    for n in PREVIEW_LIMITS {
        let ((shown, cut), allocated) = measured(|| preview(v, n));
        let allocated = allocated.total;
        let kept = shown.strip_suffix('…').filter(|_| cut).unwrap_or(&shown);
        if kept.chars().count() > n || cut != (chars > n) || !text.starts_with(kept) {
            return Err(format!(
                "preview of {n} chars is {shown:?} (cut: {cut}); the text has {chars}"
            ));
        }
        if allocated > preview_allowed(n) {
            return Err(format!(
                "a preview of {n} chars allocated {allocated} bytes (allowed {}) \
                 for {size} encoded bytes",
                preview_allowed(n)
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Shapes

/// One level around a value: where the inner value goes.
#[derive(Clone, Copy, Debug)]
enum Wrap {
    /// `{inner: leaf, leaf: leaf, ...}`
    Key,
    /// `{leaf: inner}`
    Value,
    /// `[leaf, inner, leaf]`
    Array,
    /// `{leaf: leaf, inner: leaf}`: the inner value as a later key.
    LaterKey,
}

/// `inner` wrapped in `w`, with `extra` for the other places.
fn wrap(inner: Value, w: Wrap, extra: &[Value]) -> Value {
    let other = |i: usize| extra.get(i).cloned().unwrap_or(Value::Nil);
    match w {
        Wrap::Key => {
            let mut entries = vec![(inner, other(0))];
            entries.extend(extra.get(1..).unwrap_or_default().chunks(2).map(|p| {
                (
                    p[0].clone(),
                    p.get(1).cloned().unwrap_or(Value::Boolean(true)),
                )
            }));
            Value::Map(entries)
        }
        Wrap::Value => Value::Map(vec![(other(0), inner)]),
        Wrap::Array => Value::Array(vec![other(0), inner, other(1)]),
        Wrap::LaterKey => Value::Map(vec![(other(0), other(1)), (inner, other(2))]),
    }
}

fn nested(leaf: Value, levels: &[(Wrap, Vec<Value>)]) -> Value {
    levels
        .iter()
        .fold(leaf, |inner, (w, extra)| wrap(inner, *w, extra))
}

/// Text that needs escaping: quotes, backslashes, control characters,
/// non-ASCII.
fn awkward_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('\n'),
            Just('\u{1}'),
            Just('é'),
            Just('☃'),
            Just('…'),
            proptest::char::range('a', 'z'),
        ],
        0..12,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f32>().prop_map(Value::F32),
        any::<f64>().prop_map(Value::F64),
        awkward_text().prop_map(Value::from),
        // A str that is not UTF-8.
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| {
            let mut enc = vec![0xd9, b.len() as u8 + 1, 0xff];
            enc.extend(b);
            rmpv::decode::read_value(&mut &enc[..]).expect("a str")
        }),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(t, b)| Value::Ext(t, b)),
        Just(Value::Map(vec![])),
        Just(Value::Array(vec![])),
    ]
}

/// A leaf, now and then a large one (so that previews have much to skip).
fn bottom() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => leaf(),
        1 => (0usize..60_000).prop_map(|n| Value::Binary(vec![0x22; n])),
        1 => (0usize..60_000).prop_map(|n| Value::from("\"\\".repeat(n / 2))),
    ]
}

fn level() -> impl Strategy<Value = (Wrap, Vec<Value>)> {
    (
        prop_oneof![
            3 => Just(Wrap::Key),
            1 => Just(Wrap::Value),
            1 => Just(Wrap::Array),
            1 => Just(Wrap::LaterKey),
        ],
        proptest::collection::vec(leaf(), 0..4),
    )
}

/// A value wrapped in up to [`MAX_VALUE_DEPTH`] levels, most often as a
/// map key.
fn spine() -> impl Strategy<Value = Value> {
    (
        bottom(),
        proptest::collection::vec(level(), 0..=MAX_VALUE_DEPTH),
    )
        .prop_map(|(leaf, levels)| nested(leaf, &levels))
}

/// Trees that branch: any value may be a key.
fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(12, 256, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..6).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn nested_keys_render_within_linear_bounds(v in spine()) {
        check(&v).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn branching_values_render_within_linear_bounds(v in tree()) {
        check(&v).map_err(TestCaseError::fail)?;
    }
}

/// Every depth up to the limit, for each way of wrapping, around each kind
/// of key: the worst cases, not left to chance.
#[test]
fn every_depth_of_each_shape_renders_within_bounds() {
    let leaves = [
        Value::Nil,
        Value::from(7),
        Value::from("q\"\\\u{1}"),
        Value::Binary(vec![1, 2, 3]),
        Value::Ext(5, vec![9, 9]),
        Value::F64(-1.2345e-300),
        Value::Map(vec![]),
    ];
    let shapes: [&[Wrap]; 5] = [
        &[Wrap::Key],
        &[Wrap::Key, Wrap::Array],
        &[Wrap::Key, Wrap::Value],
        &[Wrap::LaterKey],
        &[Wrap::Key, Wrap::Key, Wrap::LaterKey, Wrap::Array],
    ];
    for leaf in &leaves {
        for shape in shapes {
            let mut v = leaf.clone();
            for depth in 0..=MAX_VALUE_DEPTH {
                if let Err(e) = check(&v) {
                    panic!("{leaf:?} wrapped {depth} times in {shape:?}: {e}");
                }
                v = wrap(v, shape[depth % shape.len()], std::slice::from_ref(leaf));
            }
        }
    }
}

/// The shape of issue 22: keys nested 40 and 60 deep beside more than
/// 1 KiB of other arguments.
#[test]
fn keys_nested_40_and_60_deep_stay_small() {
    for depth in [40, 60] {
        let mut key = Value::from(0);
        for _ in 0..depth {
            key = Value::Map(vec![(key, Value::from(1))]);
        }
        let v = Value::Map(vec![
            (key, Value::from(0)),
            (Value::from("pad"), Value::from("x".repeat(2000))),
        ]);
        check(&v).unwrap();
        let text = to_text(&v);
        assert!(text.len() < 2000 + 4 * KEY_CHARS, "{} bytes", text.len());
    }
}
