//! Conversion between JSON (what the CLI and command tasks speak) and
//! MessagePack values (what the wire carries).
//!
//! A value becomes JSON text by one renderer, which writes as it walks the
//! value and can stop at a character limit:
//!
//! - nil is `null`, and so is a float that is not finite; binary is an
//!   array of byte values, ext `[type, [bytes]]`; a str that is not UTF-8
//!   has its bad sequences replaced by U+FFFD.
//! - A map is an object with its entries in the map's own order (a key
//!   that occurs twice is written twice).
//! - A map key that is a string is that string. Any other key is its own
//!   compact JSON text by these rules, cut to [`KEY_CHARS`] characters with
//!   `…` appended when longer. The key's text is produced once, escaped on
//!   its way into the key's string and stopped at the cut: a key whose keys
//!   are maps, nested any depth, costs at most its cut, not a text that
//!   doubles with every level of quoting.
//!
//! So the text is at most linear in the value's encoded size, and a
//! preview ([`preview`]) costs about what it keeps, whatever the value's
//! size.
//! Recursion is as deep as the value: values off the wire are at most 128
//! levels deep (the decoder's limit), and JSON parsed by serde_json at most
//! 128 (its default limit).

use std::fmt;

use rmpv::Value;
use serde_json::Value as Json;

/// Characters of a non-string map key's JSON text kept in a key; a longer
/// text is cut there and ends with `…`.
pub const KEY_CHARS: usize = 64;

/// JSON to a MessagePack value. Objects become maps with string keys.
pub fn to_value(j: Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::String(s.into()),
        Json::Array(a) => Value::Array(a.into_iter().map(to_value).collect()),
        Json::Object(o) => Value::Map(
            o.into_iter()
                .map(|(k, v)| (Value::String(k.into()), to_value(v)))
                .collect(),
        ),
    }
}

/// The whole JSON text of `v`, compact.
pub fn to_text(v: &Value) -> String {
    let mut out = String::new();
    // A String takes every write, and only a limit stops the renderer.
    let _ = render(v, &mut out);
    out
}

/// At most the first `max_chars` characters of `v`'s JSON text, with `…`
/// appended when there was more, and whether it was cut. Rendering stops at
/// the limit, so the work is in proportion to the characters kept (times
/// the nesting of keys within keys that they pass through), whatever the
/// value's size.
pub fn preview(v: &Value, max_chars: usize) -> (String, bool) {
    let mut out = String::new();
    let mut limit = Limit::new(&mut out, max_chars, false);
    let cut = render(v, &mut limit).is_err() && limit.cut;
    if cut {
        out.push('…');
    }
    (out, cut)
}

/// `v` as a `serde_json` value: its JSON text read back, so objects come out
/// with sorted keys (the last of a repeated key wins). `null` if the text is
/// nested deeper than serde_json reads (128 levels), which no value off the
/// wire is.
pub fn to_json(v: &Value) -> Json {
    serde_json::from_str(&to_text(v)).unwrap_or(Json::Null)
}

/// A writer that takes at most `left` characters and fails once it has to
/// drop one, setting `cut`. With `escape`, it writes what it takes into
/// `out` as the inside of a JSON string (the quotes and backslashes of a
/// key's JSON text escaped); a failure of `out` leaves `cut` unset.
struct Limit<'a> {
    out: &'a mut dyn fmt::Write,
    left: usize,
    escape: bool,
    cut: bool,
}

impl<'a> Limit<'a> {
    fn new(out: &'a mut dyn fmt::Write, left: usize, escape: bool) -> Limit<'a> {
        Limit {
            out,
            left,
            escape,
            cut: false,
        }
    }
}

impl fmt::Write for Limit<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let (mut taken, mut chars) = (s.len(), 0);
        for (i, _) in s.char_indices() {
            if chars == self.left {
                taken = i;
                break;
            }
            chars += 1;
        }
        self.left -= chars;
        let kept = &s[..taken];
        if self.escape {
            let mut plain = 0;
            for (i, c) in kept.char_indices() {
                if c == '"' || c == '\\' {
                    self.out.write_str(&kept[plain..i])?;
                    self.out.write_char('\\')?;
                    plain = i;
                }
            }
            self.out.write_str(&kept[plain..])?;
        } else {
            self.out.write_str(kept)?;
        }
        if taken < s.len() {
            self.cut = true;
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// Writes `v` as JSON into `w`; an error is `w` refusing more.
fn render(v: &Value, w: &mut dyn fmt::Write) -> fmt::Result {
    match v {
        Value::Nil => w.write_str("null"),
        Value::Boolean(b) => w.write_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => write!(w, "{u}"),
            (None, Some(i)) => write!(w, "{i}"),
            (None, None) => w.write_str("0"),
        },
        Value::F32(f) => float(f64::from(*f), w),
        Value::F64(f) => float(*f, w),
        Value::String(s) => string(s.as_bytes(), w),
        Value::Binary(b) => bytes(b, w),
        Value::Array(items) => {
            w.write_char('[')?;
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    w.write_char(',')?;
                }
                render(item, w)?;
            }
            w.write_char(']')
        }
        Value::Map(entries) => {
            w.write_char('{')?;
            for (n, (k, v)) in entries.iter().enumerate() {
                if n > 0 {
                    w.write_char(',')?;
                }
                key(k, w)?;
                w.write_char(':')?;
                render(v, w)?;
            }
            w.write_char('}')
        }
        Value::Ext(t, b) => {
            write!(w, "[{t},")?;
            bytes(b, w)?;
            w.write_char(']')
        }
    }
}

/// Writes a map key as a JSON string: a string key as itself, any other as
/// its JSON text cut to [`KEY_CHARS`].
fn key(k: &Value, w: &mut dyn fmt::Write) -> fmt::Result {
    if let Value::String(s) = k {
        return string(s.as_bytes(), w);
    }
    w.write_char('"')?;
    let mut text = Limit::new(w, KEY_CHARS, true);
    if render(k, &mut text).is_err() {
        if !text.cut {
            return Err(fmt::Error);
        }
        w.write_char('…')?;
    }
    w.write_char('"')
}

fn float(f: f64, w: &mut dyn fmt::Write) -> fmt::Result {
    match serde_json::Number::from_f64(f) {
        Some(n) => write!(w, "{n}"),
        None => w.write_str("null"),
    }
}

fn bytes(b: &[u8], w: &mut dyn fmt::Write) -> fmt::Result {
    w.write_char('[')?;
    for (n, x) in b.iter().enumerate() {
        if n > 0 {
            w.write_char(',')?;
        }
        write!(w, "{x}")?;
    }
    w.write_char(']')
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it; each
/// sequence that is not UTF-8 becomes U+FFFD, as in
/// `String::from_utf8_lossy`.
fn string(s: &[u8], w: &mut dyn fmt::Write) -> fmt::Result {
    w.write_char('"')?;
    for chunk in s.utf8_chunks() {
        escaped(chunk.valid(), w)?;
        if !chunk.invalid().is_empty() {
            w.write_char(char::REPLACEMENT_CHARACTER)?;
        }
    }
    w.write_char('"')
}

fn escaped(s: &str, w: &mut dyn fmt::Write) -> fmt::Result {
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if c < ' ' => "",
            _ => continue,
        };
        w.write_str(&s[plain..i])?;
        if escape.is_empty() {
            write!(w, "\\u{:04x}", c as u32)?;
        } else {
            w.write_str(escape)?;
        }
        plain = i + c.len_utf8();
    }
    w.write_str(&s[plain..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_messagepack_values() {
        let j: Json = serde_json::from_str(
            r#"{"a":[1,-2,3.5,"x",null,true],"b":{"c":18446744073709551615}}"#,
        )
        .unwrap();
        assert_eq!(to_json(&to_value(j.clone())), j);
        assert_eq!(to_text(&to_value(j.clone())), j.to_string());
    }

    #[test]
    fn binary_and_odd_keys_become_plain_json() {
        let v = Value::Map(vec![(Value::from(7), Value::Binary(vec![1, 2]))]);
        assert_eq!(to_text(&v), r#"{"7":[1,2]}"#);
        assert_eq!(to_json(&Value::F64(f64::NAN)), Json::Null);
        assert_eq!(to_text(&Value::Ext(-3, vec![9])), "[-3,[9]]");
        assert_eq!(to_text(&Value::F32(0.5)), "0.5");
        assert_eq!(to_text(&Value::from(-7)), "-7");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let s = "q\" b\\ \n\r\t\u{8}\u{c}\u{1}\u{1f} é \u{7f} ☃";
        assert_eq!(to_text(&Value::from(s)), Json::from(s).to_string());
        let bad = rmpv::decode::read_value(&mut &[0xa2, b'a', 0xff][..]).unwrap();
        assert_eq!(to_text(&bad), "\"a\u{fffd}\"");
    }

    #[test]
    fn maps_keep_their_order_and_key_texts_are_cut() {
        let v = Value::Map(vec![
            (Value::from("b"), Value::from(1)),
            (Value::from("a"), Value::from(2)),
            (Value::Array(vec![Value::from("x")]), Value::Nil),
        ]);
        assert_eq!(to_text(&v), r#"{"b":1,"a":2,"[\"x\"]":null}"#);

        let long = Value::Map(vec![(Value::Binary(vec![0; 100]), Value::Nil)]);
        let text = to_text(&long);
        let key = &to_json(&long)
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        assert_eq!(key.chars().count(), KEY_CHARS + 1, "{text}");
        assert!(key.starts_with("[0,0,") && key.ends_with('…'), "{text}");
    }

    #[test]
    fn a_key_inside_a_key_is_escaped_once_per_level_and_cut_at_each() {
        let inner = Value::Map(vec![(Value::from(1), Value::from(2))]);
        let outer = Value::Map(vec![(inner.clone(), Value::from(3))]);
        // The key of the outer map is the inner map's text, `{"1":2}`.
        assert_eq!(to_text(&outer), r#"{"{\"1\":2}":3}"#);
        let twice = Value::Map(vec![(outer, Value::Nil)]);
        assert_eq!(to_json(&twice).as_object().unwrap().len(), 1);
        assert_eq!(
            to_json(&twice).as_object().unwrap().keys().next().unwrap(),
            r#"{"{\"1\":2}":3}"#
        );

        let mut deep = Value::from(0);
        for _ in 0..60 {
            deep = Value::Map(vec![(deep, Value::Nil)]);
        }
        let text = to_text(&deep);
        assert!(text.len() < 4 * KEY_CHARS, "{} bytes: {text}", text.len());
    }

    #[test]
    fn previews_stop_at_their_limit() {
        let v = Value::Array((0..1000).map(Value::from).collect());
        let (text, cut) = preview(&v, 10);
        assert_eq!((text.as_str(), cut), ("[0,1,2,3,4…", true));
        let (text, cut) = preview(&Value::from("é"), 3);
        assert_eq!((text.as_str(), cut), ("\"é\"", false));
        let (text, cut) = preview(&Value::from("éé"), 3);
        assert_eq!((text.as_str(), cut), ("\"éé…", true));
    }
}
