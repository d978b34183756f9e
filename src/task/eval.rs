//! Eval: scripts in Rhai, a small embedded language, sent by clients to
//! workers whose operator started them with `--allow-eval`.
//!
//! A script sees its arguments as `args`; its last value is the result. It
//! runs on a blocking thread under limits on operations, call depth,
//! expression depth, string, array and map sizes, and wall-clock time
//! (checked from the engine's progress callback, which also stops the script
//! once the task's [`CancellationToken`] is cancelled). Rhai has no file, process
//! or network access, and this build has no module loading (`import`).
//!
//! On the wire an eval is a `submit` of task `@eval` whose arguments are a
//! map `{"script": TEXT, "args": VALUE}`.

use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, Scope};
use serde::Deserialize;

use super::{CancellationToken, TaskContext, TaskError};
use crate::duration::Dur;
use crate::logsafe::escaped;
use crate::protocol::Value;

/// Limits on one script. All have safe defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalLimits {
    /// Operations (roughly, evaluation steps). Default 10,000,000.
    pub max_operations: u64,
    /// Function call depth. Default 64.
    pub max_call_depth: usize,
    /// Expression nesting depth. Default 64.
    pub max_expr_depth: usize,
    /// Longest string, in bytes. Default 1 MiB.
    pub max_string_bytes: usize,
    /// Largest array. Default 100,000 elements.
    pub max_array_len: usize,
    /// Largest object map. Default 100,000 entries.
    pub max_map_len: usize,
    /// Wall-clock time (the task's own timeout may be shorter). Default 5 s.
    pub max_time: Dur,
    /// Longest script text, in bytes. Default 64 KiB.
    pub max_script_bytes: usize,
}

impl Default for EvalLimits {
    fn default() -> Self {
        EvalLimits {
            max_operations: 10_000_000,
            max_call_depth: 64,
            max_expr_depth: 64,
            max_string_bytes: 1 << 20,
            max_array_len: 100_000,
            max_map_len: 100_000,
            max_time: Dur(Duration::from_secs(5)),
            max_script_bytes: 64 << 10,
        }
    }
}

/// The arguments of an `@eval` task.
#[derive(Debug, Deserialize)]
struct EvalArgs {
    script: String,
    #[serde(default)]
    args: Option<Value>,
}

/// Builds the arguments of an `@eval` submit.
pub fn eval_args(script: &str, args: Value) -> Value {
    Value::Map(vec![
        (Value::from("script"), Value::from(script)),
        (Value::from("args"), args),
    ])
}

/// Runs one eval task on a blocking thread. A cancel of `ctx.cancel` stops
/// the script at its next progress check; the result is then
/// [`TaskError::cancelled`].
pub async fn run(limits: &EvalLimits, ctx: &TaskContext, args: Value) -> Result<Value, TaskError> {
    let a: EvalArgs = rmpv::ext::from_value(args).map_err(|e| {
        TaskError::new(format!(
            "eval takes {{\"script\": TEXT, \"args\": VALUE}}: {e}"
        ))
    })?;
    let limit = match ctx.remaining() {
        Some(r) => r.min(limits.max_time.0),
        None => limits.max_time.0,
    };
    let limits = limits.clone();
    let cancel = ctx.cancel.clone();
    let r = super::run_blocking_stoppable("eval", move || {
        run_script_cancellable(
            &limits,
            &a.script,
            a.args.unwrap_or(Value::Nil),
            limit,
            cancel,
        )
    })
    .await;
    if ctx.cancel.is_cancelled() {
        return Err(TaskError::cancelled(&ctx.name));
    }
    r
}

/// What the progress callback stops a script with once it is cancelled.
const CANCELLED: &str = "cancelled";
/// How many operations pass between two looks at the cancellation token
/// (each look takes a lock; the deadline is checked at every operation).
const CANCEL_CHECK_EVERY: u64 = 1024;

fn engine(limits: &EvalLimits, deadline: Instant, cancel: CancellationToken) -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_bytes)
        .set_max_array_size(limits.max_array_len)
        .set_max_map_size(limits.max_map_len)
        .on_print(|s| log::debug!("eval print: {}", escaped(s)))
        .on_debug(|s, _, _| log::debug!("eval debug: {}", escaped(s)))
        .on_progress(move |ops| {
            if ops % CANCEL_CHECK_EVERY == 0 && cancel.is_cancelled() {
                Some(Dynamic::from(CANCELLED))
            } else {
                (Instant::now() >= deadline).then(|| Dynamic::from("time limit"))
            }
        });
    e
}

/// Runs `script` with `args` under `limits`, for at most `limit`.
pub fn run_script(
    limits: &EvalLimits,
    script: &str,
    args: Value,
    limit: Duration,
) -> Result<Value, TaskError> {
    run_script_cancellable(limits, script, args, limit, CancellationToken::new())
}

/// Like [`run_script`], and stopped early once `cancel` is cancelled.
pub fn run_script_cancellable(
    limits: &EvalLimits,
    script: &str,
    args: Value,
    limit: Duration,
    cancel: CancellationToken,
) -> Result<Value, TaskError> {
    if script.len() > limits.max_script_bytes {
        return Err(TaskError::new(format!(
            "script of {} bytes exceeds the limit of {} bytes",
            script.len(),
            limits.max_script_bytes
        )));
    }
    let engine = engine(limits, Instant::now() + limit, cancel);
    let args = rhai::serde::to_dynamic(&args)
        .map_err(|e| TaskError::new(format!("eval arguments: {e}")))?;
    let mut scope = Scope::new();
    scope.push_constant_dynamic("args", args);
    let ast = engine.compile_with_scope(&scope, script).map_err(|e| {
        TaskError::new(format!(
            "script syntax error: {}",
            e.to_string().replace('\n', "; ")
        ))
    })?;
    let out: Dynamic = engine
        .eval_ast_with_scope(&mut scope, &ast)
        .map_err(|e| TaskError::new(describe(&e, limits, limit)))?;
    rhai::serde::from_dynamic::<Value>(&out)
        .map_err(|e| TaskError::new(format!("script result cannot be sent: {e}")))
}

fn describe(e: &EvalAltResult, limits: &EvalLimits, limit: Duration) -> String {
    let pos = e.position();
    let at = if pos.is_none() {
        String::new()
    } else {
        format!(" at {pos}")
    };
    match e {
        EvalAltResult::ErrorTerminated(why, _)
            if why.clone().try_cast::<String>().as_deref() == Some(CANCELLED) =>
        {
            format!("script stopped{at}: it was cancelled")
        }
        EvalAltResult::ErrorTerminated(..) => format!(
            "script stopped{at}: it ran past its time limit of {}",
            humantime::format_duration(limit)
        ),
        EvalAltResult::ErrorTooManyOperations(..) => format!(
            "script stopped{at}: it exceeded {} operations",
            limits.max_operations
        ),
        EvalAltResult::ErrorDataTooLarge(what, ..) => format!(
            "script stopped{at}: {what} exceeds its limit (strings {} bytes, arrays {}, maps {})",
            limits.max_string_bytes, limits.max_array_len, limits.max_map_len
        ),
        EvalAltResult::ErrorStackOverflow(..) => format!(
            "script stopped{at}: calls nested deeper than {}",
            limits.max_call_depth
        ),
        other => format!("script error: {}", other.to_string().replace('\n', "; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(script: &str) -> Result<Value, TaskError> {
        let l = EvalLimits {
            max_time: Dur(Duration::from_secs(2)),
            ..EvalLimits::default()
        };
        run_script(
            &l,
            script,
            Value::Array(vec![Value::from(2), Value::from(3)]),
            l.max_time.0,
        )
    }

    #[test]
    fn script_sees_args_and_returns_its_last_value() {
        assert_eq!(eval("args[0] * args[1] + 1"), Ok(Value::from(7)));
        let m = eval(r#"#{ sum: args[0] + args[1], name: "x" }"#).unwrap();
        let json = crate::json::to_json(&m);
        assert_eq!(json["sum"], 5);
        assert_eq!(json["name"], "x");
    }

    #[test]
    fn endless_loop_is_stopped_by_the_operation_limit() {
        let e = eval("loop {}").unwrap_err();
        assert!(
            e.0.contains("operations") || e.0.contains("time limit"),
            "{e}"
        );
    }

    #[test]
    fn time_limit_stops_a_script_with_operations_to_spare() {
        let l = EvalLimits {
            max_operations: u64::MAX,
            ..EvalLimits::default()
        };
        let started = Instant::now();
        let e = run_script(&l, "loop {}", Value::Nil, Duration::from_millis(200)).unwrap_err();
        assert!(e.0.contains("time limit"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn string_doubling_is_stopped_before_it_eats_memory() {
        let e = eval(r#"let s = "xxxxxxxx"; loop { s += s; }"#).unwrap_err();
        assert!(e.0.contains("exceeds its limit"), "{e}");
    }

    #[test]
    fn deep_recursion_is_stopped() {
        let e = eval("fn f(n) { f(n + 1) } f(0)").unwrap_err();
        assert!(e.0.contains("nested deeper"), "{e}");
    }

    #[test]
    fn no_files_processes_network_or_modules() {
        for s in [
            r#"open("/etc/passwd")"#,
            r#"system("id")"#,
            r#"read_file("/etc/passwd")"#,
            r#"import "os" as os; 1"#,
        ] {
            assert!(eval(s).is_err(), "{s} should fail");
        }
    }

    #[test]
    fn syntax_error_names_line_and_position() {
        let e = eval("let x = 1;\nlet = 2;").unwrap_err();
        assert!(e.0.contains("syntax error"), "{e}");
        assert!(e.0.contains("line 2"), "{e}");
    }

    #[test]
    fn runtime_error_is_one_line_with_its_position() {
        let e = eval("[1, 2].map(|x| x + ())").unwrap_err();
        assert!(e.0.starts_with("script error: Function not found"), "{e}");
        assert!(!e.0.contains('\n'), "{e}");
        assert!(e.0.contains("line 1"), "{e}");
    }

    #[tokio::test]
    async fn cancel_stops_an_endless_script() {
        let limits = EvalLimits {
            max_operations: u64::MAX,
            // Far beyond the wait below, yet a failing test ends.
            max_time: Dur(Duration::from_secs(20)),
            ..EvalLimits::default()
        };
        let ctx = TaskContext {
            task_id: 1,
            name: crate::task::EVAL_TASK.into(),
            deadline: None,
            cancel: CancellationToken::new(),
        };
        let mut fut = Box::pin(run(&limits, &ctx, eval_args("loop {}", Value::Nil)));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut fut)
                .await
                .is_err(),
            "an endless script ended by itself"
        );
        ctx.cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .expect("a cancelled script stops");
        assert_eq!(r, Err(TaskError::cancelled("@eval")));
    }

    #[test]
    fn a_cancelled_token_terminates_the_script_itself() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let l = EvalLimits {
            max_operations: u64::MAX,
            ..EvalLimits::default()
        };
        let e = run_script_cancellable(
            &l,
            "loop {}",
            Value::Nil,
            // Long enough to tell, short enough that a failing test ends.
            Duration::from_secs(20),
            cancel,
        )
        .unwrap_err();
        assert!(e.0.contains("it was cancelled"), "{e}");
    }

    #[test]
    fn oversized_script_is_refused() {
        let l = EvalLimits {
            max_script_bytes: 10,
            ..EvalLimits::default()
        };
        let e =
            run_script(&l, "1 + 1 + 1 + 1 + 1", Value::Nil, Duration::from_secs(1)).unwrap_err();
        assert!(e.0.contains("exceeds the limit"), "{e}");
    }
}
