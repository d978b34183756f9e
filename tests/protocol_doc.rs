//! docs/PROTOCOL.md against the wire types, so its lists cannot go stale:
//! the per-direction lists of §1 and the message table of §7 name exactly
//! the messages of each direction's enum, §8.1's list of request ids names
//! exactly the client messages answered under their `id`, and §5's example
//! of a decode error is the decoder's own text. A message added to the code
//! without its line in the document (or the other way round) fails here.

use std::collections::BTreeSet;

use argon::protocol::codec::{decode_message, encode_message};
use argon::protocol::{
    AuthFrame, FromClient, FromWorker, ToClient, ToWorker, Value, WireError, WireMessage, ALL_NAMES,
};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The directions as the document writes them, with their messages.
const DIRECTIONS: [(&str, &[&str]); 4] = [
    ("C → M", FromClient::NAMES),
    ("M → C", ToClient::NAMES),
    ("W → M", FromWorker::NAMES),
    ("M → W", ToWorker::NAMES),
];

/// The text under the heading that starts with `heading`, up to the next
/// heading of the same or a higher level.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let level = heading.split(' ').next().unwrap_or_default();
    let start = doc
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"))
        + 1;
    let body = &doc[start..];
    let body_start = body.find('\n').map_or(body.len(), |i| i + 1);
    let end = body[body_start..]
        .match_indices('\n')
        .map(|(i, _)| body_start + i + 1)
        .find(|&i| {
            let hashes = body[i..].bytes().take_while(|&b| b == b'#').count();
            hashes > 0 && hashes <= level.len() && body[i + hashes..].starts_with(' ')
        })
        .unwrap_or(body.len());
    &body[..end]
}

/// The items of the bullet lists in `text`, each on one line.
fn bullets(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if let Some(item) = line.strip_prefix("- ") {
            out.push(item.trim().to_string());
            open = true;
        } else if open && line.starts_with("  ") && !line.trim().is_empty() {
            let last = out.last_mut().expect("an open item");
            last.push(' ');
            last.push_str(line.trim());
        } else {
            open = false;
        }
    }
    out
}

/// The `code spans` of `text`.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Compares what the document lists with what the code has.
fn same(what: &str, listed: &[&str], code: &[&str]) -> Result<(), String> {
    let listed_set: BTreeSet<&str> = listed.iter().copied().collect();
    let code_set: BTreeSet<&str> = code.iter().copied().collect();
    let missing: Vec<_> = code_set.difference(&listed_set).collect();
    let extra: Vec<_> = listed_set.difference(&code_set).collect();
    if missing.is_empty() && extra.is_empty() && listed.len() == listed_set.len() {
        return Ok(());
    }
    Err(format!(
        "{what}: missing {missing:?}, not in the code {extra:?}, listed {listed:?}"
    ))
}

fn check_all(checks: Vec<Result<(), String>>) {
    let failures: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
    assert!(
        failures.is_empty(),
        "docs/PROTOCOL.md is out of step with the wire enums:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_overview_lists_every_message_of_every_direction() {
    let doc = doc();
    let items = bullets(section(&doc, "## 1."));
    let checks = DIRECTIONS
        .iter()
        .map(|(direction, names)| {
            let prefix = format!("{direction}:");
            match items.iter().find(|i| i.starts_with(&prefix)) {
                Some(item) => same(&format!("§1, {direction}"), &code_spans(item), names),
                None => Err(format!("§1 has no list starting {prefix:?}")),
            }
        })
        .collect();
    check_all(checks);
}

/// The decoders tell a message of another direction (answered `a ROLE
/// may not send NAME`, §5) from an unknown one by `ALL_NAMES`.
#[test]
fn all_names_are_those_of_every_direction() {
    let mut every: Vec<&str> = DIRECTIONS
        .iter()
        .flat_map(|(_, n)| n.iter().copied())
        .collect();
    every.extend(AuthFrame::NAMES);
    every.sort_unstable();
    every.dedup();
    check_all(vec![same("ALL_NAMES", ALL_NAMES, &every)]);
}

#[test]
fn the_message_table_has_a_row_for_every_message_of_every_direction() {
    let doc = doc();
    let table = section(&doc, "## 7.");
    let table = &table[..table.find("\n### ").unwrap_or(table.len())];
    let rows: Vec<(&str, &str)> = table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Some((code_spans(cells.get(1)?).first().copied()?, *cells.get(2)?))
        })
        .collect();
    let mut checks: Vec<Result<(), String>> = DIRECTIONS
        .iter()
        .map(|(direction, names)| {
            let listed: Vec<&str> = rows
                .iter()
                .filter(|(_, d)| d == direction)
                .map(|(n, _)| *n)
                .collect();
            same(&format!("§7 table, {direction}"), &listed, names)
        })
        .collect();
    let known: Vec<&str> = rows.iter().map(|(n, _)| *n).collect();
    checks.push(same(
        "§7 table, auth",
        &known
            .iter()
            .copied()
            .filter(|n| AuthFrame::NAMES.contains(n))
            .collect::<Vec<_>>(),
        AuthFrame::NAMES,
    ));
    check_all(checks);
}

/// The request id of a client message: the `id` its answer echoes. Every
/// variant is named, so a new one cannot compile without a decision here.
fn request_id(msg: &FromClient) -> Option<u64> {
    match msg {
        FromClient::Submit(s) => Some(s.id),
        FromClient::Ping { id }
        | FromClient::StatusRequest { id }
        | FromClient::ResultRequest { id, .. }
        | FromClient::CancelTask { id, .. }
        | FromClient::DeadRequest { id, .. }
        | FromClient::DeadRetry { id, .. }
        | FromClient::DeadPurge { id, .. }
        | FromClient::SchedulesRequest { id } => Some(*id),
        // Its id names an earlier submit; it gets no answer of its own.
        FromClient::Cancel { .. } => None,
        FromClient::Heartbeat {} => None,
    }
}

/// A message of each client kind, decoded from its name and the fields any
/// of them requires (unknown fields are ignored).
fn sample(name: &str) -> FromClient {
    let fields = vec![
        (Value::from("id"), Value::from(1)),
        (Value::from("task"), Value::from("t")),
        (Value::from("task_id"), Value::from(2)),
    ];
    let msg = Value::Map(vec![(Value::from(name), Value::Map(fields))]);
    let mut bytes = Vec::new();
    encode_message(&msg, &mut bytes).expect("encodes");
    decode_message(&bytes).unwrap_or_else(|e| {
        panic!("a sample `{name}` does not decode ({e}): give sample() the field it needs")
    })
}

#[test]
fn the_request_ids_listed_are_those_of_the_client_requests() {
    let doc = doc();
    let items = bullets(section(&doc, "### 8.1"));
    let item = items
        .iter()
        .find(|i| i.starts_with("**Request ids**"))
        .expect("§8.1 has a bullet starting **Request ids**");
    let listed = &item[item.find('(').expect("a list in parentheses")..];
    let listed = &listed[..listed.find(')').expect("a closing parenthesis")];
    let requests: Vec<&str> = FromClient::NAMES
        .iter()
        .copied()
        .filter(|n| request_id(&sample(n)).is_some())
        .collect();
    check_all(vec![same(
        "§8.1 request ids",
        &code_spans(listed),
        &requests,
    )]);
}

#[test]
fn the_decode_error_example_is_the_decoders_own_text() {
    let hug = [0x81, 0xa3, b'h', b'u', b'g', 0x80];
    let detail = match decode_message::<FromClient>(&hug) {
        Err(WireError::Decode(detail)) => detail,
        other => panic!("expected a decode error, got {other:?}"),
    };
    let doc = doc().split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        doc.contains(&format!("``{detail} ``")),
        "§5's example should read ``{detail} ``"
    );
}
