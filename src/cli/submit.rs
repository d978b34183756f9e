//! `argon submit` and `argon eval`: queue one task (or one Rhai script) and
//! print its result as JSON. With `--retry`, denies and an unreachable
//! manager are retried on a backoff for at most `--retry-for`, and a task
//! whose manager goes away while it runs is waited on again by its id once
//! the manager is back (a manager with a task store tells the id), within
//! the same bound. With `--detach`, print the task's id once it is accepted
//! instead, and leave it running (see `argon result` and `argon cancel`).

use argon::actors::manager::retry::MAX_RETRIES;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use argon::client::{Client, ClientConfig, ClientError, QueueOptions, RunAt};
use argon::config::Config;
use argon::launch::{Failure, EXIT_USAGE};
use argon::logsafe::escaped;
use argon::protocol::{Priority, Value, DEFAULT_MAX_FRAME};
use argon::task::eval::eval_args;
use argon::task::EVAL_TASK;

use super::args::{client_config, parse_json_arg, ClientArgs};

/// How `submit` and `eval` send their one task.
#[derive(Args, Debug)]
pub struct TaskOptArgs {
    /// Manager and key.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Denials and an unreachable manager (not failed runs: --retries; not
    /// lost workers: --attempts): retry on a logarithmic backoff instead of
    /// exiting 75 or 69 (for at most --retry-for); when
    /// the manager goes away while the task runs, wait on the task again
    /// once it is back (a manager with --persist).
    #[arg(long)]
    pub retry: bool,
    /// Give up retrying after this long: exit 75 if still denied, 69 if the
    /// manager is still unreachable. Implies --retry
    /// [default: client.retry_for, else 5m].
    #[arg(long, value_parser = positive_duration, value_name = "DUR")]
    pub retry_for: Option<Duration>,
    /// high, normal or low.
    #[arg(long, default_value = "normal")]
    pub priority: Priority,
    /// Deadline for the task, e.g. 500ms, 5s, 2m; at least 1ms.
    #[arg(long, value_parser = parse_timeout, value_name = "DUR")]
    pub timeout: Option<Duration>,
    /// Lost workers (not failed runs: --retries): how many times the task
    /// may be started if its worker is lost, at least 1 [default: the manager's, 1 unless configured].
    #[arg(long, value_name = "N", value_parser = parse_attempts)]
    pub attempts: Option<u32>,
    /// Failed runs (not denials: --retry): how many times the manager may
    /// run the task again after a run that failed, waiting 1s, 2s, 4s, ... (jittered) before each; at most 10
    /// [default: the manager's, 0 unless configured]. Tasks that fail after
    /// using them are listed by `argon failed`.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RETRIES)))]
    pub retries: Option<u32>,
    /// Read the arguments as JSON from FILE, or from stdin with `-`, instead
    /// of ARGS_JSON (for arguments too long for a command line).
    #[arg(long, value_name = "FILE", conflicts_with = "args")]
    pub args_file: Option<PathBuf>,
    /// Print the task's id once it is accepted and exit 0; the task runs on
    /// after this client exits. Read its result with `argon result ID`.
    #[arg(long)]
    pub detach: bool,
    /// Run the task this long from now (e.g. 90s, 10m, 2h) instead of at
    /// once: it is accepted now and waits on the manager until then.
    /// At most 365 days.
    #[arg(long = "in", value_name = "DUR", value_parser = parse_delay, conflicts_with = "at")]
    pub run_in: Option<Duration>,
    /// Run the task at this time, in RFC 3339 UTC (e.g.
    /// 2026-12-24T18:00:00Z) instead of at once; a time past runs it now.
    /// At most 365 days ahead.
    #[arg(long, value_name = "TIME", value_parser = parse_at)]
    pub at: Option<std::time::SystemTime>,
    /// A unique task: while a task submitted with this key is scheduled,
    /// queued or running, the manager answers with that task's id (with
    /// --detach) or result instead of running another. 1 to 256 bytes.
    #[arg(long, value_name = "KEY")]
    pub unique_key: Option<String>,
    /// With --unique-key: the key also holds this long after the task
    /// finished (e.g. 10m; at most 30 days).
    #[arg(long, value_name = "DUR", value_parser = parse_delay, requires = "unique_key")]
    pub unique_for: Option<Duration>,
}

/// `--in`: a human duration, such as 90s or 2h30m.
fn parse_delay(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 90s, 10m, 2h)"))
}

/// `--at`: an RFC 3339 time in UTC, such as 2026-12-24T18:00:00Z.
fn parse_at(s: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339(s)
        .map_err(|e| format!("{e}: give a UTC time such as 2026-12-24T18:00:00Z"))
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

/// How long `--retry` keeps trying when neither `--retry-for` nor
/// `client.retry_for` says.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(300);

/// Base of the backoff after a failed connect, where no `retry_after` from
/// the manager sets one: the first retries come at 0.2 s, 0.34 s, 0.42 s, ...
const CONNECT_RETRY_BASE: Duration = Duration::from_millis(200);

fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs one task and prints its result as JSON.
async fn run_one(o: TaskOptArgs, config: &Config, task: &str, args: Value) -> Result<(), Failure> {
    let mut cc = client_config(&o.client, config)?;
    let retry = cc.retry || o.retry || o.retry_for.is_some();
    cc.retry = false;
    let opts = QueueOptions {
        priority: o.priority,
        timeout: o.timeout,
        attempts: o.attempts.unwrap_or(0),
        retries: o.retries,
        retry: Some(false),
        run_at: match (o.run_in, o.at) {
            (Some(d), _) => Some(RunAt::In(d)),
            (None, Some(t)) => Some(RunAt::At(t)),
            (None, None) => None,
        },
        unique_key: o.unique_key.clone(),
        unique_for: o.unique_for,
    };
    let limit = o
        .retry_for
        .or(config.client.retry_for.map(|d| d.0))
        .unwrap_or(DEFAULT_RETRY_FOR);
    let deadline = Instant::now() + limit;
    // Attached, the task asks for its id (with retry), to be waited on
    // again if its manager goes away; `submit` never resends a deny.
    let attached = QueueOptions {
        retry: Some(retry),
        ..opts.clone()
    };
    let (args, opts, attached) = (&args, &opts, &attached);
    if o.detach {
        let send = |c: Client| async move { c.submit_detached(task, args.clone(), opts).await };
        let id = if retry {
            retrying(&cc, limit, send).await?
        } else {
            send(Client::connect(cc).await?).await?
        };
        outln!("{id}");
        return Ok(());
    }
    let send = |c: Client| async move {
        let submitted = c.submit(task, args.clone(), attached).await?;
        submitted.result_until(deadline).await
    };
    let value = if retry {
        retrying(&cc, limit, send).await?
    } else {
        send(Client::connect(cc).await?).await?
    };
    outln!("{}", argon::json::to_text(&value));
    Ok(())
}

/// `--timeout`: a duration of at least 1 ms (the wire carries milliseconds,
/// and a zero deadline would fail every task).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("a task's timeout must be at least 1ms (e.g. 500ms, 5s, 2m)".into());
    }
    Ok(d)
}

/// `--attempts`: at least 1 (1 means the task is never started again).
fn parse_attempts(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("a task needs at least 1 attempt (1: never started again)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!(
            "{e}: expected a whole number of attempts, at least 1"
        )),
    }
}

/// The arguments: ARGS_JSON, the `--args-file` (`-` for stdin), or null.
fn json_args(text: Option<&str>, file: Option<&Path>, config: &Config) -> Result<Value, Failure> {
    match (text, file) {
        (Some(t), _) => parse_json_arg("ARGS_JSON", t),
        (None, Some(f)) => {
            let text = read_args_file(f, config)?;
            parse_json_arg("--args-file", &text)
        }
        (None, None) => Ok(Value::Nil),
    }
}

/// Reads an `--args-file` (`-`: stdin), refusing one larger than four
/// frames: a task's arguments travel in one frame, and JSON text is larger
/// than its MessagePack form.
fn read_args_file(path: &Path, config: &Config) -> Result<String, Failure> {
    let frame = config.security.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME);
    let limit = frame.saturating_mul(4);
    let stdin = path == Path::new("-");
    let shown = if stdin {
        "stdin".to_string()
    } else {
        path.display().to_string()
    };
    let bad = |e: std::io::Error| Failure::new(EXIT_USAGE, format!("cannot read {shown}: {e}"));
    let reader: Box<dyn Read> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(bad)?)
    };
    let mut text = String::new();
    reader
        .take(limit as u64 + 1)
        .read_to_string(&mut text)
        .map_err(bad)?;
    if text.len() > limit {
        return Err(Failure::new(
            EXIT_USAGE,
            format!(
                "{shown} holds more than {limit} bytes of arguments; a task's arguments \
                 must fit in one frame of security.max_frame_bytes ({frame})"
            ),
        ));
    }
    Ok(text)
}

/// Runs `send` (the task's submit) until it is accepted and answered (a
/// detached one: accepted), backing off after each deny and each failure to
/// reach the manager, for at most `limit`; at `-v` each wait is logged with
/// its reason. A task that was accepted is never resent.
async fn retrying<T, F, Fut>(cc: &ClientConfig, limit: Duration, send: F) -> Result<T, Failure>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + limit;
    let mut client: Option<Client> = None;
    let mut tries = 0u32;
    loop {
        let err = match attempt(&mut client, cc, &send, deadline).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let retry_after = match &err {
            ClientError::Denied { retry_after, .. } => *retry_after,
            ClientError::Unreachable { .. } | ClientError::AtLimit { .. } => {
                client = None;
                CONNECT_RETRY_BASE
            }
            _ => return Err(err.into()),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Failure::new(
                err.exit_code(),
                format!(
                    "gave up after retrying for {} (--retry-for): {}",
                    humantime::format_duration(limit),
                    escaped(&err)
                ),
            ));
        }
        tries += 1;
        let delay = cc.retry_delay(tries, retry_after).min(deadline - now);
        log::info!(
            "{}; retry {tries} in {} ({} left)",
            escaped(&err),
            whole_ms(delay),
            whole_ms(deadline - now)
        );
        tokio::time::sleep(delay).await;
    }
}

/// One try: connects if there is no connection (bounded by the time left),
/// then sends the task and waits for its answer.
async fn attempt<T, F, Fut>(
    client: &mut Option<Client>,
    cc: &ClientConfig,
    send: &F,
    deadline: Instant,
) -> Result<T, ClientError>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let c = match client {
        Some(c) => c.clone(),
        None => {
            let left = deadline.saturating_duration_since(Instant::now());
            let c = tokio::time::timeout(
                left.max(Duration::from_millis(1)),
                Client::connect(cc.clone()),
            )
            .await
            .map_err(|_| ClientError::Unreachable {
                addr: cc.mgr.clone(),
                reason: "connect timed out".into(),
            })??;
            *client = Some(c.clone());
            c
        }
    };
    send(c).await
}

fn whole_ms(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

/// `argon submit`: queues `a.task` with its JSON arguments and prints the result.
pub async fn submit(a: SubmitArgs, config: &Config) -> Result<(), Failure> {
    let args = json_args(a.args.as_deref(), a.opts.args_file.as_deref(), config)?;
    run_one(a.opts, config, &a.task, args).await
}

/// `argon eval`: the script's text, or `@FILE` to read it from a file.
pub async fn eval(a: EvalArgs, config: &Config) -> Result<(), Failure> {
    let script = match a.script.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("cannot read script {path}: {e}")))?,
        None => a.script.clone(),
    };
    let args = json_args(a.args.as_deref(), a.opts.args_file.as_deref(), config)?;
    let args = eval_args(&script, args);
    run_one(a.opts, config, EVAL_TASK, args).await
}
