//! The eval runner: both sides of the child process that runs one script.
//!
//! The worker writes one [`Request`] as MessagePack to the runner's stdin
//! and closes it; the runner writes one [`Reply`] to its stdout and exits.
//! Its stderr carries the script's `print` and `debug` lines, which the
//! worker logs, and whatever the runner says when it dies (Rust's
//! "has overflowed its stack"), which the worker reads to explain the death.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::script::{check_args, check_script, evaluate, EvalArgs};
use super::EvalLimits;
use crate::protocol::{Value, MAX_DECODE_DEPTH};
use crate::task::command::{kill_and_reap, read_capped, spawn, GroupGuard};
use crate::task::{TaskContext, TaskError};

/// The first argument that makes a program an eval runner; see
/// [`serve_if_runner`].
pub const RUNNER_ARG: &str = "__argon_eval_runner";

/// Largest reply read from a runner. Results are bounded by the frame limit
/// (16 MiB by default) anyway; this only keeps a runaway runner from
/// filling the worker's memory.
const MAX_REPLY_BYTES: usize = 64 << 20;

/// How long past its time limit a runner may go on before it is killed.
/// The script stops itself at the limit unless it is blocked in a call
/// (`sleep`) or in a long walk of its data.
const GRACE: Duration = Duration::from_secs(1);

/// Bytes of the runner's own stderr (not the script's prints) kept to
/// explain its death.
const STDERR_TAIL: usize = 2048;

/// What Rust writes to stderr before it aborts on a stack overflow.
const STACK_OVERFLOW: &str = "has overflowed its stack";

/// Prefixes of the lines that carry a script's `print` and `debug`.
const SCRIPT_LINES: [&str; 2] = ["eval print: ", "eval debug: "];

#[derive(Serialize, Deserialize)]
struct Request {
    limits: EvalLimits,
    script: String,
    args: Value,
    time_limit_ms: u64,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Done(Value),
    Failed(String),
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DECODE_DEPTH);
    T::deserialize(&mut de)
}

/// Runs eval tasks under its limits, each script in a runner process of
/// its own (see the [module docs](super) for why).
#[derive(Debug, Clone)]
pub struct Evaluator {
    limits: EvalLimits,
    program: PathBuf,
}

impl Evaluator {
    /// Runs scripts under `limits` in runners that are this very program,
    /// which must therefore call [`serve_if_runner`] first thing in `main`
    /// (the `argon` binary and [`crate::worker_main()`] do).
    pub fn new(limits: EvalLimits) -> Evaluator {
        Evaluator {
            limits,
            program: this_program(),
        }
    }

    /// Runs the runners from `program` instead, e.g. an `argon` binary, for
    /// a program that does not call [`serve_if_runner`].
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Evaluator {
        self.program = program.into();
        self
    }

    /// Runs one eval task: `args` is `{"script": TEXT, "args": VALUE}`.
    /// Once `ctx.cancel` is cancelled the runner is killed and the result
    /// is [`TaskError::cancelled`].
    ///
    /// The runner is spawned on the thread that polls this future and dies
    /// with that thread, as a command task does (see
    /// [`command`](crate::task::command)).
    pub async fn run(&self, ctx: &TaskContext, args: Value) -> Result<Value, TaskError> {
        let a: EvalArgs = rmpv::ext::from_value(args).map_err(|e| {
            TaskError::new(format!(
                "eval takes {{\"script\": TEXT, \"args\": VALUE}}: {e}"
            ))
        })?;
        let limits = &self.limits;
        let args = a.args.unwrap_or(Value::Nil);
        check_script(limits, &a.script)?;
        check_args(limits, &args)?;
        let limit = match ctx.remaining() {
            Some(r) => r.min(limits.max_time.0),
            None => limits.max_time.0,
        };
        let request = rmp_serde::to_vec_named(&Request {
            limits: limits.clone(),
            script: a.script,
            args,
            time_limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        })
        .map_err(|e| TaskError::new(format!("eval arguments cannot be encoded: {e}")))?;
        self.talk(ctx, &request, limit).await
    }

    async fn talk(
        &self,
        ctx: &TaskContext,
        request: &[u8],
        limit: Duration,
    ) -> Result<Value, TaskError> {
        let mut cmd = Command::new(&self.program);
        cmd.arg(RUNNER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = spawn(&mut cmd).map_err(|e| {
            TaskError::new(format!(
                "cannot start the eval runner {}: {e}",
                self.program.display()
            ))
        })?;
        let mut guard = GroupGuard(child.id().map(|p| Pid::from_raw(p as i32)));
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_and_reap(&guard, &mut child).await;
            return Err(TaskError::new("the eval runner has no pipes"));
        };
        let work = async {
            let feed = async {
                // A runner that died early says why on stderr.
                let _ = stdin.write_all(request).await;
                drop(stdin);
            };
            let (_, out, err, status) = tokio::join!(
                feed,
                read_capped(stdout, MAX_REPLY_BYTES),
                read_stderr(stderr),
                child.wait()
            );
            (out, err, status)
        };
        let (out, err, status) = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                kill_and_reap(&guard, &mut child).await;
                return Err(TaskError::cancelled(&ctx.name));
            }
            _ = tokio::time::sleep(limit + GRACE) => {
                kill_and_reap(&guard, &mut child).await;
                return Err(TaskError::new(format!(
                    "script stopped: it ran past its time limit of {}",
                    humantime::format_duration(limit)
                )));
            }
            done = work => done,
        };
        // The runner starts no processes, and once reaped its id may be
        // another's: nothing is left to kill.
        guard.0 = None;
        let (out, over) =
            out.map_err(|e| TaskError::new(format!("reading the eval runner: {e}")))?;
        if over {
            return Err(TaskError::new(format!(
                "script result of more than {MAX_REPLY_BYTES} bytes cannot be sent"
            )));
        }
        match decode::<Reply>(&out) {
            Ok(Reply::Done(v)) => Ok(v),
            Ok(Reply::Failed(e)) => Err(TaskError(e)),
            Err(_) => Err(TaskError::new(self.explain_death(
                &out,
                &err.unwrap_or_default(),
                status.ok(),
            ))),
        }
    }

    /// Why a runner ended without a reply.
    fn explain_death(&self, out: &[u8], err: &[u8], status: Option<ExitStatus>) -> String {
        let err = String::from_utf8_lossy(err);
        if err.contains(STACK_OVERFLOW) {
            return format!(
                "script stopped: it ran out of stack ({} bytes, eval.max_stack_bytes): \
                 its data or calls are nested too deeply",
                self.limits.max_stack_bytes
            );
        }
        use std::os::unix::process::ExitStatusExt;
        let how = match status.map(|s| (s.code(), s.signal())) {
            Some((Some(code), _)) => format!("exited with status {code}"),
            Some((None, Some(sig))) => format!("was killed by signal {sig}"),
            _ => "ended".to_string(),
        };
        let said = err.trim();
        let said = if said.is_empty() {
            "(no stderr)".to_string()
        } else {
            said.replace('\n', " | ")
        };
        let hint = if out.is_empty() {
            ""
        } else {
            // Not a runner at all: a program that does not call
            // serve_if_runner ran its own main and printed something.
            "; does it call argon::task::eval::serve_if_runner first?"
        };
        format!(
            "the eval runner {} {how} without a result: {said}{hint}",
            self.program.display()
        )
    }
}

/// The program to start as a runner: `/proc/self/exe` starts the binary
/// this process runs even if its file was replaced since.
fn this_program() -> PathBuf {
    if cfg!(target_os = "linux") {
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("argon"))
    }
}

/// Reads a runner's stderr to the end: the script's `print` and `debug`
/// lines go to the log (debug level), the last [`STDERR_TAIL`] bytes of
/// the rest are returned.
async fn read_stderr(mut r: impl AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    let mut tail = Vec::new();
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            take_line(&mut line, &mut tail);
            return Ok(tail);
        }
        for chunk in buf[..n].split_inclusive(|b| *b == b'\n') {
            let (text, ends) = match chunk.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (chunk, false),
            };
            // Lines are short (the runner cuts prints to 200 characters);
            // a longer one is cut here too.
            let room = STDERR_TAIL.saturating_sub(line.len());
            line.extend_from_slice(&text[..text.len().min(room)]);
            if ends {
                take_line(&mut line, &mut tail);
            }
        }
    }
}

fn take_line(line: &mut Vec<u8>, tail: &mut Vec<u8>) {
    if line.is_empty() {
        return;
    }
    if SCRIPT_LINES.iter().any(|p| line.starts_with(p.as_bytes())) {
        log::debug!("{}", String::from_utf8_lossy(line));
    } else {
        tail.extend_from_slice(line);
        tail.push(b'\n');
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    line.clear();
}

/// If this process was started as an eval runner (its first argument is
/// [`RUNNER_ARG`]), runs the one script it is sent and exits; otherwise
/// returns at once. A program that runs eval tasks with
/// [`Evaluator::new`] calls this first thing in `main`.
pub fn serve_if_runner() {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(RUNNER_ARG)) {
        std::process::exit(serve());
    }
}

fn serve() -> i32 {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut input) {
        let _ = writeln!(std::io::stderr(), "eval runner: reading the request: {e}");
        return 2;
    }
    let request: Request = match decode(&input) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "eval runner: bad request: {e}");
            return 2;
        }
    };
    let stack = request.limits.max_stack_bytes;
    let thread = std::thread::Builder::new()
        .name("eval script".into())
        .stack_size(stack)
        .spawn(move || {
            let Request {
                limits,
                script,
                args,
                time_limit_ms,
            } = request;
            let (result, _leftovers) =
                evaluate(&limits, &script, args, Duration::from_millis(time_limit_ms));
            // Exits with the script's data still alive: no drop to recurse.
            std::process::exit(reply(result))
        });
    match thread {
        Ok(t) => {
            let why = match t.join() {
                Err(p) => format!("the script panicked: {}", crate::task::panic_text(p)),
                Ok(()) => "the script thread ended without a reply".to_string(),
            };
            reply(Err(TaskError::new(why)))
        }
        Err(e) => reply(Err(TaskError::new(format!(
            "cannot start a script thread with a stack of {stack} bytes: {e}"
        )))),
    }
}

/// Writes the reply to stdout; the exit status to end with.
fn reply(result: Result<Value, TaskError>) -> i32 {
    let reply = match result {
        Ok(v) => Reply::Done(v),
        Err(e) => Reply::Failed(e.0),
    };
    let bytes = match rmp_serde::to_vec_named(&reply) {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "eval runner: encoding the reply: {e}");
            return 2;
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(&bytes).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::CancellationToken;

    fn evaluator() -> Evaluator {
        Evaluator::new(EvalLimits::default()).with_program("/nonexistent/argon")
    }

    #[test]
    fn a_stack_overflow_is_named_with_the_limit() {
        let err = b"\nthread 'eval script' (12) has overflowed its stack\nfatal runtime error: \
                    stack overflow, aborting\n";
        let e = evaluator().explain_death(b"", err, None);
        assert!(e.contains("ran out of stack (8388608 bytes"), "{e}");
        assert!(e.contains("eval.max_stack_bytes"), "{e}");
    }

    #[test]
    fn another_death_shows_the_status_and_stderr() {
        use std::os::unix::process::ExitStatusExt;
        let status = ExitStatus::from_raw(9);
        let e = evaluator().explain_death(b"", b"line one\nline two\n", Some(status));
        assert!(e.contains("was killed by signal 9"), "{e}");
        assert!(e.contains("line one | line two"), "{e}");
        let e = evaluator().explain_death(b"running 0 tests", b"", None);
        assert!(e.contains("serve_if_runner"), "{e}");
    }

    #[tokio::test]
    async fn prints_are_logged_and_the_rest_is_kept() {
        let mut text = b"eval print: hello\nsomething broke\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 10_000));
        text.extend_from_slice(b"\nthe end");
        let tail = read_stderr(&text[..]).await.unwrap();
        let tail = String::from_utf8(tail).unwrap();
        assert!(!tail.contains("hello"), "{tail}");
        assert!(tail.ends_with("x\nthe end\n"), "{tail}");
        assert!(tail.len() <= STDERR_TAIL, "{}", tail.len());
    }

    #[tokio::test]
    async fn a_program_that_cannot_start_is_an_error() {
        let ctx = TaskContext {
            task_id: 1,
            name: crate::task::EVAL_TASK.into(),
            deadline: None,
            cancel: CancellationToken::new(),
        };
        let args = super::super::eval_args("1", Value::Nil);
        let e = evaluator().run(&ctx, args).await.unwrap_err();
        assert!(e.0.contains("cannot start the eval runner"), "{e}");
    }
}
