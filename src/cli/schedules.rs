//! `argon schedules`: the manager's periodic tasks (`[[schedule]]` in its
//! config file), one line each: name, task, cadence, next due time, last
//! run and what happened at the last due time. `--json`: one object,
//! `{"schedules": [...], "total": N}`. Exit codes as other client commands.

use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use serde_json::{json, Value as Json};

use argon::client::{Client, ScheduleInfo};
use argon::config::Config;
use argon::launch::Failure;
use argon::logsafe::escaped;

use super::args::{client_config, ClientArgs};

/// `argon schedules`
#[derive(Args, Debug)]
pub struct SchedulesArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print one JSON object instead of one line per entry.
    #[arg(long)]
    pub json: bool,
}

/// Prints the periodic tasks.
pub async fn schedules(a: SchedulesArgs, config: &Config) -> Result<(), Failure> {
    let client = Client::connect(client_config(&a.client, config)?).await?;
    let (list, total) = client.schedules().await?;
    if a.json {
        let entries: Vec<Json> = list.iter().map(entry_json).collect();
        outln!("{}", json!({"schedules": entries, "total": total}));
        return Ok(());
    }
    if total == 0 {
        eprintln!("no periodic tasks (add [[schedule]] entries to the manager's config file)");
    }
    for e in &list {
        outln!("{}", line(e));
    }
    if (list.len() as u64) < total {
        eprintln!(
            "… {} more not listed (the answer is cut to a frame)",
            total - list.len() as u64
        );
    }
    Ok(())
}

fn time_text(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_string(),
        |ms| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
    )
}

fn line(e: &ScheduleInfo) -> String {
    let last = match (e.last_ms, e.last_task_id) {
        (Some(at), Some(id)) => format!("{} (task {id})", time_text(Some(at))),
        _ => "-".into(),
    };
    format!(
        "{}  task {}  {}  overlap {}  next {}  last {}  {}",
        escaped(&e.name),
        escaped(&e.task),
        escaped(&e.cadence),
        e.overlap,
        time_text(e.next_ms),
        last,
        escaped(e.note.as_deref().unwrap_or("not due yet"))
    )
}

fn entry_json(e: &ScheduleInfo) -> Json {
    json!({
        "name": e.name,
        "task": e.task,
        "cadence": e.cadence,
        "overlap": e.overlap,
        "next_ms": e.next_ms,
        "next": e.next_ms.map(|ms| time_text(Some(ms))),
        "last_ms": e.last_ms,
        "last_task_id": e.last_task_id,
        "note": e.note,
        "started": e.started,
        "skipped": e.skipped,
    })
}
