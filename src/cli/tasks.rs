//! `argon result` and `argon cancel`: name a task by the id `argon submit
//! --detach` printed, from any process holding the key.
//!
//! Exit codes: `result` 0 with the result JSON on stdout, 1 for a failed
//! task or an unknown id, 75 when the task has not finished (without
//! `--wait`, or by `--timeout`); `cancel` 0 when the task was cancelled or
//! had finished already, 1 for an unknown id. Both: 69 unreachable, 77 bad
//! key, 2 for an id that is not a whole number.

use std::time::Duration;

use clap::Args;

use argon::client::{CancelState, Client};
use argon::config::Config;
use argon::launch::{Failure, EXIT_FAILED};

use super::args::{client_config, ClientArgs};

/// Exit code of `argon result` for a task that has not finished yet.
const EXIT_NOT_READY: i32 = 75;

/// `argon result`
#[derive(Args, Debug)]
pub struct ResultArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Wait until the task finished (bounded by --timeout if given).
    #[arg(long)]
    pub wait: bool,
    /// With --wait, give up after this long: exit 75.
    #[arg(long, value_name = "DUR", requires = "wait", value_parser = positive)]
    pub timeout: Option<Duration>,
    /// The task's id, as `argon submit --detach` printed it.
    #[arg(value_name = "ID", value_parser = task_id)]
    pub id: u64,
}

/// `argon cancel`
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The task's id, as `argon submit --detach` printed it.
    #[arg(value_name = "ID", value_parser = task_id)]
    pub id: u64,
}

fn task_id(text: &str) -> Result<u64, String> {
    text.trim().parse::<u64>().map_err(|_| {
        "a task id is a whole number, as `argon submit --detach` prints it".to_string()
    })
}

fn positive(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Prints the task's result as JSON, or fails as `argon submit` does.
pub async fn result(a: ResultArgs, config: &Config) -> Result<(), Failure> {
    let client = Client::connect(client_config(&a.client, config)?).await?;
    let fetch = client.result(a.id, a.wait);
    let value = match a.timeout {
        Some(limit) => tokio::time::timeout(limit, fetch).await.map_err(|_| {
            Failure::new(
                EXIT_NOT_READY,
                format!(
                    "task {} did not finish within {} (--timeout); try again later",
                    a.id,
                    humantime::format_duration(limit)
                ),
            )
        })??,
        None => fetch.await?,
    };
    outln!("{}", argon::json::to_text(&value));
    Ok(())
}

/// Cancels the task and says what happened.
pub async fn cancel(a: CancelArgs, config: &Config) -> Result<(), Failure> {
    let client = Client::connect(client_config(&a.client, config)?).await?;
    match client.cancel_task(a.id).await? {
        CancelState::Cancelled => outln!("cancelled task {}", a.id),
        CancelState::Finished => {
            outln!("task {} had already finished; nothing to cancel", a.id)
        }
        CancelState::Unknown => {
            return Err(Failure::new(
                EXIT_FAILED,
                format!(
                    "unknown task id {}: never accepted by this manager, or its result \
                     expired or was evicted",
                    a.id
                ),
            ))
        }
    }
    Ok(())
}
