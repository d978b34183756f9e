//! Conversion between JSON (what the CLI speaks) and MessagePack values (what
//! the wire carries).

use rmpv::Value;
use serde_json::Value as Json;

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

/// A MessagePack value to JSON. Binary becomes an array of byte values,
/// non-finite floats become null, non-string map keys their JSON text.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                Json::from(u)
            } else {
                Json::from(i.as_i64().unwrap_or_default())
            }
        }
        Value::F32(f) => float(f64::from(*f)),
        Value::F64(f) => float(*f),
        Value::String(s) => Json::String(match s.as_str() {
            Some(s) => s.to_string(),
            None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        }),
        Value::Binary(b) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(t, b) => Json::Array(vec![
            Json::from(*t),
            Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
        ]),
    }
}

fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
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
    }

    #[test]
    fn binary_and_odd_keys_become_plain_json() {
        let v = Value::Map(vec![(Value::from(7), Value::Binary(vec![1, 2]))]);
        assert_eq!(to_json(&v).to_string(), r#"{"7":[1,2]}"#);
        assert_eq!(to_json(&Value::F64(f64::NAN)), Json::Null);
    }
}
