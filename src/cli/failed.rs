//! `argon failed`: list the manager's dead list, the tasks that failed
//! after using their `--retries`, newest first; queue entries again
//! (`--retry ID`, `--retry-all [--task NAME]`: new detached tasks, whose new
//! ids are printed) or remove them (`--purge [--task NAME]`).
//!
//! Text: one line per task (id, time, name, retries used, arguments as
//! JSON cut to 200 characters, the last error), peer text escaped; when
//! the manager left entries out (the `--limit`, or a reply cut to a frame)
//! a note on stderr says how many. `--json`: one JSON object, `{"tasks":
//! [...], "total", "truncated", "evicted"}`. Exit codes as other client
//! commands: 0 (an empty list too), 69 unreachable, 77 wrong key; for
//! `--retry`, 1 when the id is not listed or its task cannot be queued
//! again (no worker provides it, its arguments were not kept), 75 when the
//! manager denied it (queue full: the entries stay listed).

use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use serde_json::Value as Json;

use argon::client::{Client, DeadList, DeadTask};
use argon::config::Config;
use argon::launch::{Failure, EXIT_FAILED};
use argon::logsafe::{escaped, MAX_LOGGED_CHARS};
use argon::messages::{DeadDone, DeadSelect};
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
    /// Queue the dead task ID again as a new detached task and print its
    /// new id (read its result with `argon result NEW_ID`).
    #[arg(long, value_name = "ID", conflicts_with_all = ["retry_all", "purge", "task"])]
    pub retry: Option<u64>,
    /// Queue every listed task again (oldest first; those of --task only),
    /// as far as the queue takes them; print the new ids.
    #[arg(long, conflicts_with = "purge")]
    pub retry_all: bool,
    /// Remove every entry from the list (those of --task only).
    #[arg(long)]
    pub purge: bool,
    /// With --retry-all or --purge: only the entries of this task name.
    #[arg(long, value_name = "NAME")]
    pub task: Option<String>,
}

/// Exit code of a retry the manager denied: try later.
const EXIT_DENIED: i32 = 75;

/// Prints the dead list, or acts on it.
pub async fn failed(a: FailedArgs, config: &Config) -> Result<(), Failure> {
    if a.task.is_some() && !(a.retry_all || a.purge) {
        return Err(Failure::new(
            argon::launch::EXIT_USAGE,
            "--task goes with --retry-all or --purge",
        ));
    }
    let client = Client::connect(client_config(&a.client, config)?).await?;
    if a.purge {
        let done = client
            .dead_purge(DeadSelect {
                task_id: None,
                task: a.task.clone(),
            })
            .await?;
        if a.json {
            outln!(r#"{{"purged":{}}}"#, done.purged);
        } else {
            outln!("purged {} failed task(s)", done.purged);
        }
        return Ok(());
    }
    if a.retry.is_some() || a.retry_all {
        return retry(&client, &a).await;
    }
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

/// `--retry ID` and `--retry-all`: asks until everything selected is
/// queued again or the manager stops short (each answer covers at most
/// 1000 entries).
async fn retry(client: &Client, a: &FailedArgs) -> Result<(), Failure> {
    let select = DeadSelect {
        task_id: a.retry,
        task: a.task.clone(),
    };
    let mut all = DeadDone::default();
    loop {
        let done = client.dead_retry(select.clone()).await?;
        let more = done.left > 0 && done.retried.len() as u64 >= u64::from(DEAD_LIST_MAX);
        all.retried.extend(done.retried);
        all.left = done.left;
        all.reason = done.reason;
        all.denied = done.denied;
        if !more {
            break;
        }
    }
    for (old, new) in &all.retried {
        if !a.json {
            outln!("task {old} queued again as task {new}");
        }
    }
    if a.json {
        let pairs: Vec<String> = all
            .retried
            .iter()
            .map(|(old, new)| format!(r#"{{"new_task_id":{new},"task_id":{old}}}"#))
            .collect();
        outln!(
            r#"{{"left":{},"reason":{},"retried":[{}]}}"#,
            all.left,
            all.reason.as_deref().map_or(Json::Null, Json::from),
            pairs.join(",")
        );
    }
    let Some(reason) = all
        .reason
        .filter(|_| all.left > 0 || all.retried.is_empty())
    else {
        if all.retried.is_empty() && !a.json {
            eprintln!("no failed tasks to queue again");
        }
        return Ok(());
    };
    let reason = escaped(&reason).to_string();
    let code = if all.denied { EXIT_DENIED } else { EXIT_FAILED };
    let message = match a.retry {
        Some(id) if reason == "not in the dead list" => {
            format!("task {id} is not in the dead list")
        }
        _ if all.left > 0 => format!("{} failed task(s) left in the list: {reason}", all.left),
        _ => reason,
    };
    Err(Failure::new(code, message))
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
