//! Eval: scripts in Rhai, a small embedded language, sent by clients to
//! workers whose operator started them with `--allow-eval`.
//!
//! A script sees its arguments as `args`; its last value is the result. It
//! runs under limits on operations, call depth, expression depth, data
//! nesting, string, array and map sizes, stack and wall-clock time (which
//! the engine's progress callback checks). Rhai has no file, process or
//! network access, and this build has no module loading (`import`).
//!
//! On the wire an eval is a `submit` of task `@eval` whose arguments are a
//! map `{"script": TEXT, "args": VALUE}`.
//!
//! # Each script runs in a process of its own
//!
//! Rhai bounds the sizes of strings, arrays and maps, but not how deeply
//! values nest, and it walks nested values recursively in its own code: it
//! clones a value on every read of a variable, recounts sizes after every
//! change, compares, prints and drops values, with no hook where a guard of
//! ours could run. The size limits let arrays and maps nest 100,000 levels
//! each by default; curried function pointers and closures that capture
//! closures are not counted at all, and `f = curry(Fn("g"), take(f))` in a
//! loop nests some 700,000 levels within the default operation limit in
//! under two seconds: no stack holds the drop of that. On a worker thread
//! any of these walks can overflow the stack, which aborts the worker.
//!
//! So a worker runs each script in a child process, the eval runner
//! ([`Evaluator`]): its own program started again with [`RUNNER_ARG`]. The
//! runner runs the script on a thread whose stack is `max_stack_bytes`,
//! writes the result and exits without dropping the script's data. A stack
//! overflow ends the runner only, and the worker reports it as the script's
//! error. A cancel kills the runner, and so does a script still running a
//! second past its time limit (a call to `sleep` blocks the progress checks).
//!
//! In the runner a guard makes the usual ways of nesting fail fast, with an
//! error naming the limit: each read of a variable walks its value (the
//! first and last few elements of each level, a few hundred values at
//! most) and stops the script once the value is nested deeper than
//! `max_data_depth`. That is how loops like `x = [x]` deepen. What the walk
//! does not reach (a nested value amid a wide level, a value never read
//! from a variable) is left to the size limits and the stack. The
//! arguments and the result are checked in full.
//!
//! The engine (`eval/script.rs`) and the runner need the cargo feature `eval`
//! (on by default). Without it this module has only [`EvalLimits`] and
//! [`eval_args`]: a client can still send scripts and a config file can
//! still hold an `[eval]` table, but no worker of the build runs them.

#[cfg(feature = "eval")]
mod runner;
#[cfg(feature = "eval")]
mod script;

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(feature = "eval")]
pub use runner::{serve_if_runner, Evaluator, RUNNER_ARG};

use crate::duration::Dur;
use crate::protocol::Value;

/// Limits on one script. All have safe defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalLimits {
    /// Operations (roughly, evaluation steps). Default 10,000,000.
    pub max_operations: u64,
    /// Function call depth. Default 64.
    pub max_call_depth: usize,
    /// Expression nesting depth. Default 64.
    pub max_expr_depth: usize,
    /// How deeply the script's data may nest: arrays, maps and function
    /// pointers with curried arguments each add a level (a flat array is
    /// 1). Checked in full on the arguments and the result (which may never
    /// be deeper than the protocol's 120), and by a short walk on each read
    /// of a variable. Default 256.
    pub max_data_depth: usize,
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
    /// Stack of the thread that runs the script, in bytes: bounds how deep
    /// its calls and data can nest in Rhai's own recursion (a script
    /// function call takes about 6 KiB). Past it the script fails. Default
    /// 8 MiB.
    pub max_stack_bytes: usize,
}

impl Default for EvalLimits {
    fn default() -> Self {
        EvalLimits {
            max_operations: 10_000_000,
            max_call_depth: 64,
            max_expr_depth: 64,
            max_data_depth: 256,
            max_string_bytes: 1 << 20,
            max_array_len: 100_000,
            max_map_len: 100_000,
            max_time: Dur(Duration::from_secs(5)),
            max_script_bytes: 64 << 10,
            max_stack_bytes: 8 << 20,
        }
    }
}

/// Smallest `max_stack_bytes` accepted; it holds some 40 nested calls.
pub const MIN_STACK_BYTES: usize = 256 << 10;

impl EvalLimits {
    /// Checks values a config file could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_time.0.is_zero() || self.max_operations == 0 {
            return Err("eval.max_time and eval.max_operations must be more than 0".into());
        }
        if self.max_data_depth == 0 {
            return Err("eval.max_data_depth must be at least 1".into());
        }
        if self.max_stack_bytes < MIN_STACK_BYTES {
            return Err(format!(
                "eval.max_stack_bytes must be at least {MIN_STACK_BYTES} (got {})",
                self.max_stack_bytes
            ));
        }
        Ok(())
    }
}

/// Builds the arguments of an `@eval` submit.
pub fn eval_args(script: &str, args: Value) -> Value {
    Value::Map(vec![
        (Value::from("script"), Value::from(script)),
        (Value::from("args"), args),
    ])
}
