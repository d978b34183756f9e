//! `argon submit` and `argon eval`: queue one task (or one Rhai script) and
//! print its result as JSON.

use std::time::Duration;

use clap::Args;

use argon::client::{Client, QueueOptions};
use argon::config::Config;
use argon::launch::{Failure, EXIT_USAGE};
use argon::protocol::{Priority, Value};
use argon::task::eval::eval_args;
use argon::task::EVAL_TASK;

use super::args::{client_config, parse_json_arg, ClientArgs};

/// How `submit` and `eval` send their one task.
#[derive(Args, Debug)]
pub struct TaskOptArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// When denied, retry on a logarithmic backoff instead of exiting 75.
    #[arg(long)]
    pub retry: bool,
    /// high, normal or low.
    #[arg(long, default_value = "normal")]
    pub priority: Priority,
    /// Deadline for the task, e.g. 500ms, 5s, 2m.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DUR")]
    pub timeout: Option<Duration>,
    /// How many times the task may be started if its worker is lost
    /// [default: the manager's, 1 unless configured].
    #[arg(long, value_name = "N")]
    pub attempts: Option<u32>,
}

/// `argon submit`
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Manager, key and task options.
    #[command(flatten)]
    pub opts: TaskOptArgs,
    /// Task name.
    pub task: String,
    /// Arguments as JSON [default: null].
    #[arg(value_name = "ARGS_JSON")]
    pub args: Option<String>,
}

/// `argon eval`
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Manager, key and task options.
    #[command(flatten)]
    pub opts: TaskOptArgs,
    /// The script's text, or @FILE to read it from a file. It sees its
    /// arguments as `args`; its last value is the result.
    pub script: String,
    /// Arguments as JSON [default: null].
    #[arg(value_name = "ARGS_JSON")]
    pub args: Option<String>,
}

/// Runs one task and prints its result as JSON.
async fn run_one(o: TaskOptArgs, config: &Config, task: &str, args: Value) -> Result<(), Failure> {
    let mut cc = client_config(&o.client, config)?;
    cc.retry = cc.retry || o.retry;
    let client = Client::connect(cc).await?;
    let opts = QueueOptions {
        priority: o.priority,
        timeout: o.timeout,
        attempts: o.attempts.unwrap_or(0),
        retry: None,
    };
    let value = client.queue_with(task, args, &opts).await?;
    outln!("{}", argon::json::to_json(&value));
    Ok(())
}

fn json_args(text: Option<&str>) -> Result<Value, Failure> {
    text.map_or(Ok(Value::Nil), |t| parse_json_arg("ARGS_JSON", t))
}

/// `argon submit`: queues `a.task` with its JSON arguments and prints the result.
pub async fn submit(a: SubmitArgs, config: &Config) -> Result<(), Failure> {
    let args = json_args(a.args.as_deref())?;
    run_one(a.opts, config, &a.task, args).await
}

/// `argon eval`: the script's text, or `@FILE` to read it from a file.
pub async fn eval(a: EvalArgs, config: &Config) -> Result<(), Failure> {
    let script = match a.script.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("cannot read script {path}: {e}")))?,
        None => a.script.clone(),
    };
    let args = eval_args(&script, json_args(a.args.as_deref())?);
    run_one(a.opts, config, EVAL_TASK, args).await
}
