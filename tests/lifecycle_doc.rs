//! docs/ARCHITECTURE.md lists the task lifecycle's transitions as a table;
//! this test holds it to the code's table (`lifecycle::TRANSITIONS`), row
//! for row, so neither can change without the other.

use std::collections::BTreeSet;

use argon::actors::manager::lifecycle::{Next, TRANSITIONS};

/// The rows of the table under "### The lifecycle as a table".
fn documented() -> BTreeSet<(String, String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md");
    let section = doc
        .split("### The lifecycle as a table")
        .nth(1)
        .expect("the section is there");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| stage |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            assert_eq!(cells.len(), 3, "row {l:?}");
            (cells[0].clone(), cells[1].clone(), cells[2].clone())
        })
        .collect()
}

fn next_as_documented(n: Next) -> String {
    match n {
        Next::To(stage) => format!("{stage:?}"),
        Next::Requeued => "Queued (head of its level)".into(),
        Next::Answered => "answered (out of the table)".into(),
        Next::Dropped => "dropped (out of the table, no outcome owed)".into(),
    }
}

#[test]
fn the_documented_lifecycle_is_the_codes() {
    let code: BTreeSet<(String, String, String)> = TRANSITIONS
        .iter()
        .map(|&(s, e, n)| (format!("{s:?}"), format!("{e:?}"), next_as_documented(n)))
        .collect();
    let doc = documented();
    let missing: Vec<_> = code.difference(&doc).collect();
    let extra: Vec<_> = doc.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/ARCHITECTURE.md's lifecycle table differs from the code's:\n  not in the doc: \
         {missing:?}\n  not in the code: {extra:?}"
    );
    assert_eq!(doc.len(), TRANSITIONS.len(), "a row is listed twice");
}
