//! A client for the `wordcount_worker` example: sends a file's text to
//! `word_count` and its bytes to `sha256`, both in flight at once.
//!
//! ```sh
//! cargo run --example wordcount_client -- 127.0.0.1:8000 KEY README.md
//! ```

use std::process::ExitCode;

use argon::protocol::HandshakeSettings;
use argon::{Client, ClientConfig, MasterKey, Value};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Counts {
    words: usize,
    lines: usize,
    top: Vec<(String, usize)>,
}

#[derive(serde::Serialize)]
struct WordCountArgs<'a> {
    text: &'a str,
    top: usize,
}

async fn run(mgr: &str, key: &str, file: &str) -> Result<(), String> {
    let key = MasterKey::load(key.as_ref()).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut config = ClientConfig::new(mgr, HandshakeSettings::new(key));
    config.retry = true;
    let client = Client::connect(config).await.map_err(|e| e.to_string())?;

    let wc_args = WordCountArgs {
        text: &text,
        top: 3,
    };
    let counting = client.queue_as::<_, Counts>("word_count", &wc_args);
    let hashing = client.queue("sha256", Value::Binary(bytes.clone()));
    let (counts, hash) = tokio::join!(counting, hashing);
    let counts = counts.map_err(|e| e.to_string())?;
    let hash = hash.map_err(|e| e.to_string())?;
    println!("{file}: {} words, {} lines", counts.words, counts.lines);
    for (word, n) in &counts.top {
        println!("  {word:<12} {n}");
    }
    println!("sha256 {}", hash.as_str().unwrap_or("?"));
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mgr, key, file] = args.as_slice() else {
        eprintln!("usage: wordcount_client MGR_HOST:PORT KEY_FILE FILE");
        return ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(mgr, key, file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wordcount_client: {e}");
            ExitCode::from(1)
        }
    }
}
