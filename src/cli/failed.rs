//! `argon failed`: list the manager's dead list, the tasks that failed
//! after using their `--retries`, newest first.
//!
//! Text: one line per task (id, time, name, retries used, arguments as
//! JSON cut to 200 characters, the last error), peer text escaped; when
//! the manager left entries out (the `--limit`, or a reply cut to a frame)
//! a note on stderr says how many. `--json`: one JSON object, `{"tasks":
//! [...], "total", "truncated", "evicted"}`. Exit codes as other client
//! commands: 0 (an empty list too), 69 unreachable, 77 wrong key.

use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use serde_json::Value as Json;

use argon::client::{Client, DeadList, DeadTask};
use argon::config::Config;
use argon::launch::Failure;
use argon::logsafe::{escaped, MAX_LOGGED_CHARS};
use argon::protocol::DEAD_LIST_MAX;

use super::args::{client_config, ClientArgs};

/// `argon failed`
#[derive(Args, Debug)]
pub struct FailedArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print one JSON object instead of one line per task.
    #[arg(long)]
    pub json: bool,
    /// List at most this many, newest first (1 to 1000) [default: 1000].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(DEAD_LIST_MAX)))]
    pub limit: Option<u32>,
}

/// Prints the dead list.
pub async fn failed(a: FailedArgs, config: &Config) -> Result<(), Failure> {
    let client = Client::connect(client_config(&a.client, config)?).await?;
    let list = client.dead_list(a.limit.unwrap_or(0)).await?;
    if a.json {
        outln!("{}", json_text(&list));
        return Ok(());
    }
    if list.total == 0 {
        // On stderr, like the note on older tasks: stdout lists tasks only.
        eprintln!("no failed tasks");
    }
    for t in &list.tasks {
        outln!("{}", line(t));
    }
    let left_out = list.total.saturating_sub(list.tasks.len() as u64);
    if list.truncated && left_out > 0 {
        eprintln!(
            "… {left_out} older failed task(s) not listed (of {}; see --limit)",
            list.total
        );
    }
    Ok(())
}

fn failed_at(t: &DeadTask) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(t.failed_at_ms))
}

/// One task as one line of text, its arguments cut to [`MAX_LOGGED_CHARS`].
/// A preview the manager cut is JSON text already: shown as it is, not
/// quoted again.
fn line(t: &DeadTask) -> String {
    let preview;
    let args = match t.args.as_str() {
        Some(text) if t.args_truncated => text,
        _ => {
            preview = argon::json::preview(&t.args, MAX_LOGGED_CHARS).0;
            &preview
        }
    };
    format!(
        "{}  {}  {}  retries {}  args {}{}  error: {}",
        t.task_id,
        failed_at(t),
        escaped(&t.task),
        t.retries,
        escaped(args).max_chars(MAX_LOGGED_CHARS + 1),
        if t.args_truncated { " (cut)" } else { "" },
        escaped(&t.error)
    )
}

/// The list as one JSON object, its keys in alphabetical order.
fn json_text(list: &DeadList) -> String {
    let tasks: Vec<String> = list
        .tasks
        .iter()
        .map(|t| {
            format!(
                r#"{{"args":{},"args_truncated":{},"error":{},"failed_at":{},"failed_at_ms":{},"retries":{},"task":{},"task_id":{}}}"#,
                argon::json::to_text(&t.args),
                t.args_truncated,
                Json::from(t.error.as_str()),
                Json::from(failed_at(t).to_string()),
                t.failed_at_ms,
                t.retries,
                Json::from(t.task.as_str()),
                t.task_id,
            )
        })
        .collect();
    format!(
        r#"{{"evicted":{},"tasks":[{}],"total":{},"truncated":{}}}"#,
        list.evicted,
        tasks.join(","),
        list.total,
        list.truncated
    )
}
