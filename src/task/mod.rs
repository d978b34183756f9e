//! Tasks a worker can run, and the registry that finds them by name.
//!
//! A task takes MessagePack arguments and returns a value or an error. Three
//! kinds plug into the same [`TaskRegistry`]:
//!
//! - native Rust tasks: a type implementing [`Task`] (blocking, run on a
//!   blocking thread) or [`AsyncTask`], built from its arguments with serde
//!   and then run, like Argon's `new` + `run`; the stock worker's `echo` and
//!   `sleep` are of this kind;
//! - command tasks ([`command`]), declared by the worker's operator in TOML;
//! - eval scripts ([`eval`]), only where the operator allows them.
//!
//! Every kind can be cancelled through [`TaskContext::cancel`]; see
//! [`TaskContext`] for the contract a task's future keeps.

pub mod command;
pub mod eval;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use tokio_util::sync::CancellationToken;

use crate::protocol::Value;

/// Routing name of eval scripts. Names starting with `@` are reserved.
pub const EVAL_TASK: &str = "@eval";

/// A task's failure, reported to the client as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TaskError(pub String);

impl TaskError {
    /// A failure with the given message.
    pub fn new(msg: impl Into<String>) -> TaskError {
        TaskError(msg.into())
    }

    /// The error of a task that resolved because it was cancelled:
    /// `task NAME was cancelled`.
    pub fn cancelled(name: &str) -> TaskError {
        TaskError(format!("task {name} was cancelled"))
    }
}

/// What a running task may know about itself, and how it is told to stop.
///
/// # Cancellation contract
///
/// The worker's slot does not drop a task's future to stop it: on a cancel
/// or a timeout it cancels [`cancel`](TaskContext::cancel) and keeps
/// awaiting the future, and takes the future's completion to mean that the
/// task's resources (its thread, its processes) are free again. So, once
/// `cancel` is cancelled, a task's future must resolve promptly (well within
/// one second) with an `Err(TaskError)` saying the task was cancelled:
/// [`TaskError::cancelled`], whose text is `task NAME was cancelled`.
///
/// - Native async tasks ([`TaskRegistry::register_async`],
///   [`TaskRegistry::register_fn`]): the registry drops the task's own
///   future at once and resolves with that error.
/// - Native blocking tasks ([`TaskRegistry::register`], [`run_blocking`]):
///   the one exception. A thread cannot be stopped from outside, so the
///   future resolves only when the task's thread returns (then with that
///   error, whatever the thread returned); until then the slot stays busy,
///   and one warning says so.
/// - Eval scripts ([`eval`]): the process that runs the script is killed
///   with SIGKILL and reaped.
/// - Command tasks ([`command`]): the whole process group is killed with
///   SIGKILL and reaped.
///
/// A custom [`TaskFn`] keeps the same contract; [`cancellable`] does it for
/// any future that can simply be dropped.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The manager's id for this task.
    pub task_id: u64,
    /// The name it was submitted under.
    pub name: String,
    /// When the worker gives up on it, if it has a timeout.
    pub deadline: Option<Instant>,
    /// Cancelled when the task is to stop (a cancel or a timeout). Once it
    /// is, the task's future must resolve promptly with
    /// [`TaskError::cancelled`]; see the contract above.
    pub cancel: CancellationToken,
}

impl TaskContext {
    /// Time left before the deadline, if there is one (zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// A blocking native task: built from its arguments, then run on a blocking
/// thread so it never stalls the worker's actors.
///
/// ```
/// use argon::task::{Task, TaskError};
///
/// #[derive(serde::Deserialize)]
/// struct Add(i64, i64);
///
/// impl Task for Add {
///     type Output = i64;
///     fn run(self) -> Result<i64, TaskError> {
///         self.0.checked_add(self.1).ok_or_else(|| TaskError::new("overflow"))
///     }
/// }
/// ```
pub trait Task: DeserializeOwned + Send + 'static {
    /// The result, sent back as MessagePack.
    type Output: Serialize + Send + 'static;

    /// Does the work. A panic is caught and reported as a failure.
    fn run(self) -> Result<Self::Output, TaskError>;
}

/// An async native task: built from its arguments, then awaited on the
/// worker's runtime. It must not block.
pub trait AsyncTask: DeserializeOwned + Send + 'static {
    /// The result, sent back as MessagePack.
    type Output: Serialize + Send + 'static;

    /// Does the work. A panic is caught and reported as a failure.
    fn run(self) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;
}

/// The function behind a registered task name.
///
/// Its future must keep the cancellation contract described on
/// [`TaskContext`]: once `ctx.cancel` is cancelled it resolves promptly
/// (well within one second) with `Err(`[`TaskError::cancelled`]`)` — except
/// a blocking native task, which resolves only when its thread returns. The
/// slot awaits the future to the end and takes its completion to mean the
/// slot is free again.
pub type TaskFn =
    Arc<dyn Fn(TaskContext, Value) -> BoxFuture<'static, Result<Value, TaskError>> + Send + Sync>;

/// Task names to the functions that run them.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, TaskFn>,
}

impl std::fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tasks.keys()).finish()
    }
}

/// Checks a task name: non-empty, at most 128 bytes, letters, digits and
/// `_ - . :` only. Names starting with `@` are reserved for Argon.
pub fn check_task_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid task name {name:?}: use 1-128 letters, digits, '_', '-', '.' or ':'"
        ))
    }
}

fn args_of<T: DeserializeOwned>(name: &str, args: Value) -> Result<T, TaskError> {
    rmpv::ext::from_value(args)
        .map_err(|e| TaskError::new(format!("invalid arguments for task {name}: {e}")))
}

fn value_of<T: Serialize>(name: &str, out: &T) -> Result<Value, TaskError> {
    rmpv::ext::to_value(out)
        .map_err(|e| TaskError::new(format!("task {name} returned an unencodable result: {e}")))
}

/// The text of a caught panic.
pub fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `fut` until it resolves or `ctx.cancel` is cancelled, whichever
/// comes first. On cancel `fut` is dropped (it must hold nothing that
/// outlives it) and the result is [`TaskError::cancelled`]. A token that is
/// already cancelled wins without `fut` being polled.
pub async fn cancellable<R>(
    ctx: &TaskContext,
    fut: impl Future<Output = Result<R, TaskError>>,
) -> Result<R, TaskError> {
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Err(TaskError::cancelled(&ctx.name)),
        r = fut => r,
    }
}

/// A blocking thread's result; a panic becomes a [`TaskError`].
fn joined<R>(
    name: &str,
    r: Result<Result<R, TaskError>, tokio::task::JoinError>,
) -> Result<R, TaskError> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(TaskError::new(format!(
            "task {name} panicked: {}",
            panic_text(e.into_panic())
        ))),
        Err(_) => Err(TaskError::cancelled(name)),
    }
}

/// Runs `f` on a blocking thread for the task `ctx`; a panic becomes a
/// [`TaskError`].
///
/// A thread cannot be stopped from outside, so a cancel of `ctx.cancel`
/// does not end the wait: it logs one warning that the task's slot stays
/// busy until the thread returns, keeps waiting for it, and then resolves
/// with [`TaskError::cancelled`] whatever `f` returned. Code that can stop
/// itself early checks a clone of `ctx.cancel` (`is_cancelled`) in `f`.
pub async fn run_blocking<R: Send + 'static>(
    ctx: &TaskContext,
    f: impl FnOnce() -> Result<R, TaskError> + Send + 'static,
) -> Result<R, TaskError> {
    let mut handle = tokio::task::spawn_blocking(f);
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => {
            if !handle.is_finished() {
                log::warn!(
                    "task {} (id {}) was cancelled, but it runs on a blocking thread that cannot \
                     be stopped: its slot stays busy until the thread returns",
                    crate::logsafe::escaped(&ctx.name),
                    ctx.task_id
                );
            }
            // The thread's result, even a panic, is of no use any more.
            let _ = handle.await;
            Err(TaskError::cancelled(&ctx.name))
        }
        r = &mut handle => joined(&ctx.name, r),
    }
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> TaskRegistry {
        TaskRegistry::default()
    }

    /// A registry with the built-in tasks `echo` and `sleep`.
    pub fn with_builtins() -> TaskRegistry {
        let mut r = TaskRegistry::new();
        r.register_async::<Echo>("echo");
        r.register_async::<Sleep>("sleep");
        r
    }

    fn insert(&mut self, name: &str, f: TaskFn) {
        if let Err(e) = check_task_name(name) {
            panic!("{e}");
        }
        self.tasks.insert(name.to_string(), f);
    }

    /// Registers (or replaces) the blocking task type `T` under `name`. It
    /// runs on a blocking thread ([`run_blocking`]): a cancel cannot stop it,
    /// only wait for it.
    ///
    /// # Panics
    /// If `name` is not a valid task name ([`check_task_name`]).
    pub fn register<T: Task>(&mut self, name: &str) -> &mut Self {
        self.insert(
            name,
            Arc::new(|ctx: TaskContext, args: Value| {
                Box::pin(async move {
                    let task: T = args_of(&ctx.name, args)?;
                    let out = run_blocking(&ctx, move || task.run()).await?;
                    value_of(&ctx.name, &out)
                })
            }),
        );
        self
    }

    /// Registers (or replaces) the async task type `T` under `name`. On
    /// cancel its future is dropped ([`cancellable`]).
    ///
    /// # Panics
    /// If `name` is not a valid task name ([`check_task_name`]).
    pub fn register_async<T: AsyncTask>(&mut self, name: &str) -> &mut Self {
        self.insert(
            name,
            Arc::new(|ctx: TaskContext, args: Value| {
                Box::pin(async move {
                    let task: T = args_of(&ctx.name, args)?;
                    let out = cancellable(&ctx, task.run()).await?;
                    value_of(&ctx.name, &out)
                })
            }),
        );
        self
    }

    /// Registers (or replaces) `name`, run by the async function `f` on raw
    /// values. On cancel its future is dropped ([`cancellable`]).
    ///
    /// # Panics
    /// If `name` is not a valid task name ([`check_task_name`]).
    pub fn register_fn<F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        self.insert(
            name,
            Arc::new(move |ctx: TaskContext, args| {
                let fut = f(args);
                Box::pin(async move { cancellable(&ctx, fut).await })
            }),
        );
        self
    }

    /// Registers the command tasks an operator declared.
    pub fn register_commands(
        &mut self,
        commands: &BTreeMap<String, command::CommandTask>,
    ) -> &mut Self {
        for (name, spec) in commands {
            let spec = Arc::new(spec.clone());
            self.insert(
                name,
                Arc::new(move |ctx, args| {
                    let spec = spec.clone();
                    Box::pin(async move { command::run(&spec, &ctx, args).await })
                }),
            );
        }
        self
    }

    /// Accepts eval scripts within `limits` (the operator's `--allow-eval`).
    /// Each runs in a process started from this program, whose `main` must
    /// call [`eval::serve_if_runner`] first; see [`eval::Evaluator::new`].
    #[cfg(feature = "eval")]
    pub fn enable_eval(&mut self, limits: eval::EvalLimits) -> &mut Self {
        self.enable_evaluator(eval::Evaluator::new(limits))
    }

    /// [`TaskRegistry::enable_eval`] in a build with the cargo feature
    /// `eval`; returns whether the build has it (without, nothing changes).
    #[cfg_attr(not(feature = "eval"), allow(unused_variables))]
    pub fn enable_eval_if_built(&mut self, limits: eval::EvalLimits) -> bool {
        #[cfg(feature = "eval")]
        self.enable_eval(limits);
        cfg!(feature = "eval")
    }

    /// Accepts eval scripts, run by `evaluator`.
    #[cfg(feature = "eval")]
    pub fn enable_evaluator(&mut self, evaluator: eval::Evaluator) -> &mut Self {
        let evaluator = Arc::new(evaluator);
        self.tasks.insert(
            EVAL_TASK.to_string(),
            Arc::new(move |ctx, args| {
                let evaluator = evaluator.clone();
                Box::pin(async move { evaluator.run(&ctx, args).await })
            }),
        );
        self
    }

    /// Stops accepting eval scripts.
    pub fn disable_eval(&mut self) -> &mut Self {
        self.tasks.remove(EVAL_TASK);
        self
    }

    /// Whether eval scripts are accepted.
    pub fn allows_eval(&self) -> bool {
        self.tasks.contains_key(EVAL_TASK)
    }

    /// The function registered under `name`.
    pub fn get(&self, name: &str) -> Option<TaskFn> {
        self.tasks.get(name).cloned()
    }

    /// Registered task names, sorted, without reserved ones like eval.
    pub fn names(&self) -> Vec<String> {
        self.tasks
            .keys()
            .filter(|n| !n.starts_with('@'))
            .cloned()
            .collect()
    }
}

/// `echo`: returns its arguments.
#[derive(Deserialize)]
#[serde(transparent)]
struct Echo(Value);

impl AsyncTask for Echo {
    type Output = Value;
    async fn run(self) -> Result<Value, TaskError> {
        Ok(self.0)
    }
}

/// `sleep`: waits its argument in milliseconds (bare or as `[ms]`), returns it.
#[derive(Deserialize)]
#[serde(transparent)]
struct Sleep(Value);

impl AsyncTask for Sleep {
    type Output = Value;
    async fn run(self) -> Result<Value, TaskError> {
        let ms = sleep_millis(&self.0)?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(self.0)
    }
}

fn sleep_millis(args: &Value) -> Result<u64, TaskError> {
    let v = match args {
        Value::Array(a) if !a.is_empty() => &a[0],
        v => v,
    };
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        .ok_or_else(|| TaskError::new("sleep takes a number of milliseconds, e.g. 250 or [250]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(name: &str) -> TaskContext {
        TaskContext {
            task_id: 1,
            name: name.into(),
            deadline: None,
            cancel: CancellationToken::new(),
        }
    }

    #[tokio::test]
    async fn echo_returns_its_arguments() {
        let r = TaskRegistry::with_builtins();
        let args = Value::Array(vec![Value::from(1), Value::from("x")]);
        assert_eq!(
            (r.get("echo").unwrap())(ctx("echo"), args.clone()).await,
            Ok(args)
        );
    }

    #[tokio::test]
    async fn sleep_accepts_bare_and_wrapped_millis_and_rejects_text() {
        let r = TaskRegistry::with_builtins();
        let f = r.get("sleep").unwrap();
        assert_eq!(f(ctx("sleep"), Value::from(1)).await, Ok(Value::from(1)));
        let wrapped = Value::Array(vec![Value::from(2)]);
        assert_eq!(f(ctx("sleep"), wrapped.clone()).await, Ok(wrapped));
        assert!(f(ctx("sleep"), Value::from("soon")).await.is_err());
        assert!(f(ctx("sleep"), Value::from(-5)).await.is_err());
    }

    #[derive(Deserialize)]
    struct Add(i64, i64);

    impl Task for Add {
        type Output = i64;
        fn run(self) -> Result<i64, TaskError> {
            if self.0 == 13 {
                panic!("unlucky");
            }
            self.0
                .checked_add(self.1)
                .ok_or_else(|| TaskError::new("overflow"))
        }
    }

    #[tokio::test]
    async fn typed_blocking_task_runs_and_reports_bad_args_errors_and_panics() {
        let mut r = TaskRegistry::new();
        r.register::<Add>("add");
        let f = r.get("add").unwrap();
        let args = |a: i64, b: i64| Value::Array(vec![Value::from(a), Value::from(b)]);
        assert_eq!(f(ctx("add"), args(2, 3)).await, Ok(Value::from(5)));
        assert_eq!(
            f(ctx("add"), args(i64::MAX, 1)).await,
            Err(TaskError::new("overflow"))
        );
        let bad = f(ctx("add"), Value::from("two")).await.unwrap_err();
        assert!(bad.0.contains("invalid arguments for task add"), "{bad}");
        let boom = f(ctx("add"), args(13, 0)).await.unwrap_err();
        assert!(boom.0.contains("panicked: unlucky"), "{boom}");
    }

    /// A pending future stays pending for a short while: `timeout` elapses.
    async fn still_pending<F: Future + Unpin>(fut: &mut F) -> bool {
        tokio::time::timeout(Duration::from_millis(200), fut)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn cancel_drops_an_async_task_and_resolves_cancelled() {
        let mut r = TaskRegistry::with_builtins();
        r.register_fn("forever", |_| std::future::pending());
        for (name, args) in [
            ("sleep", Value::from(u64::MAX / 4)),
            ("forever", Value::Nil),
        ] {
            let c = ctx(name);
            let mut fut = (r.get(name).unwrap())(c.clone(), args);
            assert!(still_pending(&mut fut).await, "{name} ended by itself");
            c.cancel.cancel();
            let out = tokio::time::timeout(Duration::from_secs(5), fut)
                .await
                .unwrap_or_else(|_| panic!("cancelled {name} did not resolve"));
            assert_eq!(out, Err(TaskError(format!("task {name} was cancelled"))));
        }
    }

    #[tokio::test]
    async fn an_already_cancelled_async_task_does_not_run() {
        let r = TaskRegistry::with_builtins();
        let c = ctx("echo");
        c.cancel.cancel();
        let out = (r.get("echo").unwrap())(c, Value::from(1)).await;
        assert_eq!(out, Err(TaskError::cancelled("echo")));
    }

    /// The release of the one running [`Held`] task, for the test below.
    static HELD_GATE: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>> =
        std::sync::Mutex::new(None);

    /// A blocking task that holds its thread until the test releases it.
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Held(Value);

    impl Task for Held {
        type Output = Value;
        fn run(self) -> Result<Value, TaskError> {
            let gate = HELD_GATE.lock().unwrap().take().expect("gate set");
            // Released by a send, or by the test's end dropping the sender.
            let _ = gate.recv();
            Ok(self.0)
        }
    }

    #[tokio::test]
    async fn a_cancelled_blocking_task_resolves_only_when_its_thread_returns() {
        let (release, gate) = std::sync::mpsc::channel();
        *HELD_GATE.lock().unwrap() = Some(gate);
        let mut r = TaskRegistry::new();
        r.register::<Held>("held");
        let c = ctx("held");
        let mut fut = (r.get("held").unwrap())(c.clone(), Value::from(1));
        assert!(still_pending(&mut fut).await, "held task ended by itself");
        c.cancel.cancel();
        assert!(
            still_pending(&mut fut).await,
            "resolved on cancel while its thread was still held"
        );
        release.send(()).unwrap();
        let out = tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .expect("resolves once its thread returns");
        assert_eq!(out, Err(TaskError::cancelled("held")));
    }

    #[test]
    #[cfg(feature = "eval")]
    fn names_are_sorted_without_reserved_ones() {
        let mut r = TaskRegistry::with_builtins();
        r.enable_eval(eval::EvalLimits::default());
        assert_eq!(r.names(), vec!["echo", "sleep"]);
        assert!(r.allows_eval());
        assert!(r.get("rm -rf").is_none());
    }

    #[test]
    fn task_names_are_checked() {
        assert!(check_task_name("word_count.v2").is_ok());
        for bad in ["", "@eval", "../bin/sh", "a b", &"x".repeat(129)] {
            assert!(check_task_name(bad).is_err(), "{bad:?}");
        }
    }
}
