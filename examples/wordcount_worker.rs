//! A worker with tasks of its own, built on the Argon library.
//!
//! It provides `word_count` (counts words and lines of a text and lists the
//! most frequent words) and `sha256` (hashes bytes sent as arguments), plus
//! the stock `echo` and `sleep`. It takes the same flags and config file as
//! `argon worker`:
//!
//! ```sh
//! cargo run --example wordcount_worker -- --mgr 127.0.0.1:8000 --key KEY --capacity 2
//! ```

use std::collections::HashMap;
use std::process::ExitCode;

use argon::task::{Task, TaskError, TaskRegistry};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Arguments of `word_count`: `{"text": "...", "top": 5}`.
#[derive(Deserialize)]
struct WordCount {
    text: String,
    #[serde(default = "default_top")]
    top: usize,
}

fn default_top() -> usize {
    5
}

/// Result of `word_count`.
#[derive(Serialize)]
struct Counts {
    words: usize,
    lines: usize,
    top: Vec<(String, usize)>,
}

impl Task for WordCount {
    type Output = Counts;

    fn run(self) -> Result<Counts, TaskError> {
        let mut freq: HashMap<String, usize> = HashMap::new();
        let mut words = 0;
        for w in self.text.split(|c: char| !c.is_alphanumeric() && c != '\'') {
            if w.is_empty() {
                continue;
            }
            words += 1;
            *freq.entry(w.to_lowercase()).or_default() += 1;
        }
        let mut top: Vec<(String, usize)> = freq.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(self.top);
        Ok(Counts {
            words,
            lines: self.text.lines().count(),
            top,
        })
    }
}

/// Arguments of `sha256`: the bytes to hash (MessagePack binary).
#[derive(Deserialize)]
#[serde(transparent)]
struct Sha256Task(serde_bytes::ByteBuf);

impl Task for Sha256Task {
    type Output = String;

    fn run(self) -> Result<String, TaskError> {
        let digest = Sha256::digest(&self.0);
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

fn main() -> ExitCode {
    let mut tasks = TaskRegistry::with_builtins();
    tasks
        .register::<WordCount>("word_count")
        .register::<Sha256Task>("sha256");
    argon::worker_main(tasks)
}
