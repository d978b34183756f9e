//! Command tasks: programs the worker's operator declares in TOML, run once
//! per task with the arguments as JSON on stdin and the result read as JSON
//! from stdout. Clients can only name a declared task; the task name is never
//! a path or a command.
//!
//! ```toml
//! [tasks.wordcount]
//! command = ["python3", "/opt/tasks/wordcount.py"]   # argv, no shell
//! timeout = "10s"
//! env = { LANG = "C.UTF-8" }
//! cwd = "/opt/tasks"
//! ```
//!
//! Each run gets its own process group. On timeout, on cancel (the task's
//! [`TaskContext::cancel`]), or when the task is abandoned, the whole group
//! is killed with SIGKILL and the child reaped; whatever the command left
//! running in its group is killed when it exits. On Linux the worker makes
//! itself a child subreaper, so the group's orphans become its children and
//! are reaped too, leaving no zombies even where PID 1 does not reap. A
//! cancelled run resolves with [`TaskError::cancelled`] once that is done.
//!
//! # When the worker itself dies
//!
//! None of the above runs if the worker is killed (SIGKILL, OOM killer). On
//! Linux the command's own process is then killed by the kernel: it is
//! spawned with `PR_SET_PDEATHSIG(SIGKILL)` (see `spawn` below). That
//! covers the direct child only, which is the limit of the mechanism:
//!
//! - The kernel sends the signal when the *thread* that spawned the child
//!   exits, not the process. The child is spawned synchronously from the
//!   future of [`run`], that is on the thread that polls the slot's future:
//!   in the `argon` binary the actix system's arbiter, the main thread,
//!   which lives as long as the worker. Never call [`run`] from a
//!   short-lived thread (a `spawn_blocking` thread exits after a while idle,
//!   and would take the child with it).
//! - The setting is not inherited across `fork`: processes the command
//!   starts itself (its grandchildren, e.g. a `sleep &` in a shell script)
//!   are not covered. After the worker's death they are reparented to init
//!   (or the nearest subreaper) and live on until they exit by themselves.
//!   Only the graceful paths above (timeout, cancel, exit) kill the group.
//! - It is cleared when the child executes a set-user-ID or set-group-ID
//!   program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{TaskContext, TaskError};
use crate::duration::Dur;
use crate::logsafe::escaped;
use crate::protocol::Value;

/// Bytes of stderr kept for the error message.
pub const STDERR_TAIL: usize = 2048;
/// Largest stdout accepted as a result.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// One `[tasks.NAME]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandTask {
    /// Program and arguments (argv); no shell unless the operator writes one.
    pub command: Vec<String>,
    /// Longest a run may take; the client's own timeout applies too.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory. Default: the worker's.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

impl CommandTask {
    /// Checks the entry of task `name`.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        super::check_task_name(name)?;
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(format!("tasks.{name}.command must name a program"));
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(format!("tasks.{name}.timeout must be more than 0"));
        }
        Ok(())
    }

    /// What is missing for this task to run, checked now: its program (a
    /// path with a slash must exist; a bare name must be found on the
    /// task's `PATH`, else the worker's) and its `cwd` (must be a folder).
    /// Empty when nothing is found wrong; a later change on disk is not seen.
    pub fn missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(program) = self.command.first() {
            let found = if program.contains('/') {
                let p = Path::new(program.as_str());
                match (&self.cwd, p.is_relative()) {
                    (Some(cwd), true) => cwd.join(p).is_file(),
                    _ => p.is_file(),
                }
            } else {
                let path = self
                    .env
                    .get("PATH")
                    .map(std::ffi::OsString::from)
                    .or_else(|| std::env::var_os("PATH"))
                    .unwrap_or_default();
                std::env::split_paths(&path).any(|d| d.join(program).is_file())
            };
            if !found {
                out.push(format!("program {} not found", escaped(program)));
            }
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.is_dir() {
                out.push(format!("cwd {} is not a folder", escaped(cwd.display())));
            }
        }
        out
    }
}

/// Logs one warning per task in `tasks` whose program or `cwd` is missing
/// now; the worker still starts (the file may appear later), and a run of
/// such a task fails with the spawn error.
pub fn warn_missing(tasks: &BTreeMap<String, CommandTask>) {
    for (name, task) in tasks {
        let missing = task.missing();
        if !missing.is_empty() {
            log::warn!("command task {}: {}", escaped(name), missing.join("; "));
        }
    }
}

/// Makes this process the reaper of its descendants' orphans (Linux), once.
fn become_subreaper() {
    #[cfg(target_os = "linux")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if nix::sys::prctl::set_child_subreaper(true).is_err() {
                log::debug!("cannot become a child subreaper; orphans go to init");
            }
        });
    }
}

/// Reaps the dead members of process group `pgid` that are our children,
/// waiting up to about a second for killed ones to die.
async fn reap_group(pgid: Pid) {
    // waitpid with a negative pid waits for any child in that group.
    let group = Pid::from_raw(-pgid.as_raw());
    for _ in 0..50 {
        match waitpid(group, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

/// Kills a process group when dropped, unless disarmed.
pub(crate) struct GroupGuard(pub(crate) Option<Pid>);

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            // A group that is already empty yields ESRCH: nothing to do.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the group of `child` and reaps the child and the group's dead.
pub(crate) async fn kill_and_reap(guard: &GroupGuard, child: &mut Child) {
    guard.kill();
    let _ = child.wait().await;
    if let Some(pgid) = guard.0 {
        reap_group(pgid).await;
    }
}

/// Spawns `cmd`; on Linux the child is killed (SIGKILL) when the calling
/// thread dies, so call it only from a thread that lives as long as the
/// worker (see the module docs for what this covers and what it does not).
pub(crate) fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    #[cfg(target_os = "linux")]
    {
        // Read before the fork: the parent the child must outlive.
        let parent = nix::unistd::getpid();
        // SAFETY: the hook runs in the child between fork and exec; it only
        // makes async-signal-safe syscalls (prctl, getppid) and builds an
        // io::Error from a raw code, which does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // If the parent died before the prctl, no signal will come:
                // the child now has another parent. Do not run the command.
                if nix::unistd::getppid() != parent {
                    return Err(Errno::ESRCH.into());
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

pub(crate) async fn read_capped(
    mut r: impl AsyncRead + Unpin,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut over = false;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((out, over));
        }
        if out.len() + n > cap {
            over = true;
            continue;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

async fn read_tail(mut r: impl AsyncRead + Unpin, keep: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > keep {
            out.drain(..out.len() - keep);
        }
    }
}

fn tail_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        "(no stderr)".to_string()
    } else {
        text.replace('\n', " | ")
    }
}

/// Runs `spec` for one task. Once `ctx.cancel` is cancelled, the command's
/// process group is killed and reaped and the result is
/// [`TaskError::cancelled`].
///
/// The command is spawned on the thread that polls this future; on Linux it
/// dies with that thread (see the module docs).
pub async fn run(spec: &CommandTask, ctx: &TaskContext, args: Value) -> Result<Value, TaskError> {
    let name = &ctx.name;
    become_subreaper();
    let input = crate::json::to_text(&args);
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .envs(&spec.env)
        .env("ARGON_TASK_ID", ctx.task_id.to_string())
        .env("ARGON_TASK_NAME", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let mut child = spawn(&mut cmd).map_err(|e| {
        TaskError::new(format!(
            "command task {name}: cannot start {:?}: {e}",
            spec.command[0]
        ))
    })?;
    let guard = GroupGuard(child.id().map(|p| Pid::from_raw(p as i32)));
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");

    let limit = match (spec.timeout.map(|d| d.0), ctx.remaining()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let work = async {
        let feed = async {
            // A command that does not read its stdin is not an error.
            let _ = stdin.write_all(input.as_bytes()).await;
            drop(stdin);
        };
        let (_, out, err, status) = tokio::join!(
            feed,
            read_capped(stdout, MAX_OUTPUT),
            read_tail(stderr, STDERR_TAIL),
            child.wait()
        );
        (out, err, status)
    };
    let time_limit = async {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let (out, err, status) = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => {
            kill_and_reap(&guard, &mut child).await;
            return Err(TaskError::cancelled(name));
        }
        _ = time_limit => {
            kill_and_reap(&guard, &mut child).await;
            let limit = limit.unwrap_or_default();
            return Err(TaskError::new(format!(
                "command task {name} timed out after {}",
                humantime::format_duration(Duration::from_millis(limit.as_millis() as u64))
            )));
        }
        done = work => done,
    };
    // Whatever the command left behind in its group goes with it.
    let pgid = guard.0;
    drop(guard);
    if let Some(pgid) = pgid {
        reap_group(pgid).await;
    }
    let status = status.map_err(|e| TaskError::new(format!("command task {name}: {e}")))?;
    let err = err.unwrap_or_default();
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "failed".to_string(),
        };
        return Err(TaskError::new(format!(
            "command task {name} {how}: {}",
            tail_text(&err)
        )));
    }
    let (out, over) = out.map_err(|e| TaskError::new(format!("command task {name}: {e}")))?;
    if over {
        return Err(TaskError::new(format!(
            "command task {name} printed more than {MAX_OUTPUT} bytes"
        )));
    }
    let json: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        TaskError::new(format!(
            "command task {name} did not print a JSON result ({e}); stderr: {}",
            tail_text(&err)
        ))
    })?;
    Ok(crate::json::to_value(json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::kill;

    fn ctx() -> TaskContext {
        TaskContext {
            task_id: 7,
            name: "t".into(),
            deadline: None,
            cancel: Default::default(),
        }
    }

    fn sh(script: &str) -> CommandTask {
        CommandTask {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: None,
            env: BTreeMap::new(),
            cwd: None,
        }
    }

    #[tokio::test]
    async fn reads_json_args_on_stdin_and_returns_json_from_stdout() {
        let spec = sh(
            r#"read line; printf '{"got": %s, "id": "%s", "name": "%s"}' "$line" "$ARGON_TASK_ID" "$ARGON_TASK_NAME""#,
        );
        let v = run(&spec, &ctx(), Value::Array(vec![Value::from(1)]))
            .await
            .unwrap();
        assert_eq!(
            crate::json::to_text(&v),
            r#"{"got":[1],"id":"7","name":"t"}"#
        );
    }

    #[tokio::test]
    async fn nonzero_exit_carries_the_stderr_tail() {
        let spec = sh("echo first >&2; echo 'it broke' >&2; exit 3");
        let e = run(&spec, &ctx(), Value::Nil).await.unwrap_err();
        assert!(e.0.contains("exited with status 3"), "{e}");
        assert!(e.0.contains("it broke"), "{e}");
    }

    #[tokio::test]
    async fn output_that_is_not_json_is_an_error() {
        let e = run(&sh("echo hello"), &ctx(), Value::Nil)
            .await
            .unwrap_err();
        assert!(e.0.contains("did not print a JSON result"), "{e}");
    }

    #[tokio::test]
    async fn output_nested_past_the_parsers_limit_is_an_error() {
        let e = run(&sh("printf '%0200d' 0 | tr 0 '['"), &ctx(), Value::Nil)
            .await
            .unwrap_err();
        assert!(e.0.contains("recursion limit exceeded"), "{e}");
    }

    #[tokio::test]
    async fn missing_program_is_a_clear_error() {
        let mut spec = sh("");
        spec.command = vec!["/nonexistent/argon-test-program".into()];
        let e = run(&spec, &ctx(), Value::Nil).await.unwrap_err();
        assert!(e.0.contains("cannot start"), "{e}");
    }

    #[tokio::test]
    async fn long_stderr_is_cut_to_its_tail() {
        let spec = sh("i=0; while [ $i -lt 2000 ]; do echo line$i >&2; i=$((i+1)); done; exit 1");
        let e = run(&spec, &ctx(), Value::Nil).await.unwrap_err();
        assert!(e.0.contains("line1999"), "{e}");
        assert!(!e.0.contains("line5 "), "head was kept: {e}");
        assert!(e.0.len() < 2 * STDERR_TAIL, "{} bytes", e.0.len());
    }

    /// Whether process `pid` is gone: no such process (a zombie still
    /// counts as there, since it was not reaped).
    fn gone(pid: i32) -> bool {
        kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH)
    }

    async fn read_pid(path: &std::path::Path) -> i32 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never written",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn cancel_kills_the_command_and_its_grandchild_and_resolves_cancelled() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("argon-cancel-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (child_file, main_file) = (dir.join("child"), dir.join("main"));
        // Each pid is written to a temporary name, then renamed: a file that
        // exists is complete.
        let spec = sh(&format!(
            "sleep 1000 & echo $! > '{c}.tmp'; mv '{c}.tmp' '{c}'; \
             echo $$ > '{m}.tmp'; mv '{m}.tmp' '{m}'; sleep 1000",
            c = child_file.display(),
            m = main_file.display()
        ));
        let ctx = ctx();
        let cancel = ctx.cancel.clone();
        let task = tokio::spawn(async move { run(&spec, &ctx, Value::Nil).await });
        let grandchild = read_pid(&child_file).await;
        let main = read_pid(&main_file).await;
        assert!(!gone(grandchild) && !gone(main), "started and running");

        cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a cancelled command task resolves")
            .expect("no panic");
        assert_eq!(r, Err(TaskError::cancelled("t")));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !(gone(main) && gone(grandchild)) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone(main), "command {main} left behind");
        assert!(gone(grandchild), "its child {grandchild} left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut t = sh("true");
        assert!(t.validate("ok").is_ok());
        assert!(t.validate("bad name").is_err());
        t.command.clear();
        assert!(t.validate("ok").unwrap_err().contains("command"));
    }
}
