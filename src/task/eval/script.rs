//! The Rhai side of eval: the engine with its limits and the guard on
//! variable reads, the checks on a script and its arguments, and how its
//! errors read. The runner ([`super::runner`]) calls [`evaluate`].

use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, EvalContext, FnPtr, Position, Scope};
use serde::Deserialize;

use super::EvalLimits;
use crate::logsafe::escaped;
use crate::protocol::{value_depth, Value, MAX_VALUE_DEPTH};
use crate::task::TaskError;

/// The arguments of an `@eval` task.
#[derive(Debug, Deserialize)]
pub(super) struct EvalArgs {
    pub(super) script: String,
    #[serde(default)]
    pub(super) args: Option<Value>,
}

/// What the variable guard stops a script with.
const TOO_DEEP: &str = "too deep";

/// Writes a script's `print` or `debug` output as one line on stderr, where
/// the worker reads and logs it.
fn script_line(kind: &str, text: &str) {
    use std::io::Write as _;
    // Nobody reading is no reason to stop the script.
    let _ = writeln!(std::io::stderr(), "eval {kind}: {}", escaped(text));
}

fn engine(limits: &EvalLimits, deadline: Instant) -> Engine {
    let mut e = Engine::new();
    let max_depth = limits.max_data_depth;
    e.set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_bytes)
        .set_max_array_size(limits.max_array_len)
        .set_max_map_size(limits.max_map_len)
        .on_print(|s| script_line("print", s))
        .on_debug(|s, _, _| script_line("debug", s))
        .on_progress(move |_| (Instant::now() >= deadline).then(|| Dynamic::from("time limit")));
    // `on_var` is marked deprecated only to say that its signature may
    // change in a later Rhai.
    #[allow(deprecated)]
    e.on_var(move |name, index, ctx| guard_read(name, index, &ctx, max_depth));
    e
}

/// Values one read of a variable may walk: this many per level allowed,
/// plus 64. Enough to follow a chain of small levels (`[x]`, `#{a: x}`, a
/// curry of one value, a closure's capture) to the limit.
const WALK_PER_LEVEL: usize = 2;

/// Elements a read of a variable looks at from each end of an array, map
/// or curry list. Reading a big flat array (`a[i]` in a loop) then costs a
/// few steps, not a walk of the array; a level with its nested value
/// further inside is missed.
const WALK_EDGE: usize = 8;

/// The variable guard: fails the read of variable `name` if its value is
/// nested deeper than `max_depth`, as far as a short walk sees.
fn guard_read(
    name: &str,
    index: usize,
    ctx: &EvalContext,
    max_depth: usize,
) -> Result<Option<Dynamic>, Box<EvalAltResult>> {
    let scope = ctx.scope();
    let by_index = (index > 0)
        .then(|| scope.iter_raw().nth(index - 1))
        .flatten()
        .filter(|(n, ..)| *n == name)
        .map(|(.., v)| v);
    let Some(value) = by_index.or_else(|| scope.get(name)) else {
        return Ok(None);
    };
    let budget = max_depth.saturating_mul(WALK_PER_LEVEL).saturating_add(64);
    match nesting(value, max_depth, budget, WALK_EDGE) {
        Nesting::Deeper => {
            Err(EvalAltResult::ErrorTerminated(Dynamic::from(TOO_DEEP), Position::NONE).into())
        }
        Nesting::Within | Nesting::Unknown => Ok(None),
    }
}

/// What a walk of a value found out about its nesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nesting {
    /// No deeper than the limit, as far as the walk looked.
    Within,
    /// Deeper than the limit.
    Deeper,
    /// The walk ran out of budget first, or met a value shared with
    /// closures that was locked.
    Unknown,
}

/// Whether `v` nests deeper than `max` levels, walking at most `budget`
/// values and `edge` elements from each end of a level. Arrays, maps and
/// function pointers with curried arguments add a level each; a value
/// shared with closures is looked through. The walk recurses at most
/// `max + 1` levels deep.
fn nesting(v: &Dynamic, max: usize, budget: usize, edge: usize) -> Nesting {
    let mut walk = Walk {
        max,
        left: budget,
        edge,
    };
    match walk.value(v, 0) {
        Ok(()) => Nesting::Within,
        Err(stop) => stop,
    }
}

struct Walk {
    max: usize,
    left: usize,
    edge: usize,
}

impl Walk {
    fn value(&mut self, v: &Dynamic, depth: usize) -> Result<(), Nesting> {
        if self.left == 0 {
            return Err(Nesting::Unknown);
        }
        self.left -= 1;
        if v.is_shared() {
            // A value locked for writing is in use; the walk cannot look in.
            return match v.read_lock::<Dynamic>() {
                Some(inner) if !inner.is_shared() => self.value(&inner, depth),
                _ => Err(Nesting::Unknown),
            };
        }
        if v.is_array() {
            if let Ok(items) = v.as_array_ref() {
                return self.level(self.ends(&items), depth);
            }
        } else if v.is_map() {
            if let Ok(map) = v.as_map_ref() {
                let (front, back) = if map.len() <= self.edge.saturating_mul(2) {
                    (map.len(), 0)
                } else {
                    (self.edge, self.edge)
                };
                let values = map.values().take(front);
                return self.level(values.chain(map.values().rev().take(back)), depth);
            }
        } else if v.is_fnptr() {
            if let Some(f) = v.read_lock::<FnPtr>() {
                if !f.curry().is_empty() {
                    return self.level(self.ends(f.curry()), depth);
                }
            }
        }
        Ok(())
    }

    /// The first and last `edge` of `items`, or all of them.
    fn ends<'a>(&self, items: &'a [Dynamic]) -> impl Iterator<Item = &'a Dynamic> {
        let (front, back) = if items.len() <= self.edge.saturating_mul(2) {
            (items, &items[..0])
        } else {
            (&items[..self.edge], &items[items.len() - self.edge..])
        };
        front.iter().chain(back)
    }

    /// Walks the `children` of a value `depth` levels down.
    fn level<'a>(
        &mut self,
        children: impl Iterator<Item = &'a Dynamic>,
        depth: usize,
    ) -> Result<(), Nesting> {
        if depth >= self.max {
            return Err(Nesting::Deeper);
        }
        for c in children {
            self.value(c, depth + 1)?;
        }
        Ok(())
    }
}

/// The deepest a script's result may be nested.
fn max_result_depth(limits: &EvalLimits) -> usize {
    limits.max_data_depth.min(MAX_VALUE_DEPTH)
}

/// Refuses a script longer than the limit.
pub(super) fn check_script(limits: &EvalLimits, script: &str) -> Result<(), TaskError> {
    if script.len() > limits.max_script_bytes {
        return Err(TaskError::new(format!(
            "script of {} bytes exceeds the limit of {} bytes",
            script.len(),
            limits.max_script_bytes
        )));
    }
    Ok(())
}

/// Refuses arguments nested deeper than `max_data_depth`.
pub(super) fn check_args(limits: &EvalLimits, args: &Value) -> Result<(), TaskError> {
    if value_depth(args) > limits.max_data_depth {
        return Err(TaskError::new(format!(
            "eval arguments nested deeper than {} levels (eval.max_data_depth)",
            limits.max_data_depth
        )));
    }
    Ok(())
}

/// What a script leaves behind: its variables and its last value. The
/// runner exits without dropping them, since dropping a deeply nested
/// value recurses as deep.
pub(super) struct Leftovers {
    _scope: Scope<'static>,
    _value: Option<Dynamic>,
}

/// Runs `script` with `args` under `limits`, for at most `limit`, in this
/// thread; the runner's way.
pub(super) fn evaluate(
    limits: &EvalLimits,
    script: &str,
    args: Value,
    limit: Duration,
) -> (Result<Value, TaskError>, Leftovers) {
    let mut left = Leftovers {
        _scope: Scope::new(),
        _value: None,
    };
    let r = evaluate_into(limits, script, args, limit, &mut left);
    (r, left)
}

fn evaluate_into(
    limits: &EvalLimits,
    script: &str,
    args: Value,
    limit: Duration,
    left: &mut Leftovers,
) -> Result<Value, TaskError> {
    check_script(limits, script)?;
    check_args(limits, &args)?;
    let engine = engine(limits, Instant::now() + limit);
    let args = rhai::serde::to_dynamic(&args)
        .map_err(|e| TaskError::new(format!("eval arguments: {e}")))?;
    let scope = &mut left._scope;
    scope.push_constant_dynamic("args", args);
    let ast = engine.compile_with_scope(scope, script).map_err(|e| {
        TaskError::new(format!(
            "script syntax error: {}",
            e.to_string().replace('\n', "; ")
        ))
    })?;
    let out: &Dynamic = left._value.insert(
        engine
            .eval_ast_with_scope(scope, &ast)
            .map_err(|e| TaskError::new(describe(&e, limits, limit)))?,
    );
    let max = max_result_depth(limits);
    if nesting(out, max, usize::MAX, usize::MAX) != Nesting::Within {
        return Err(TaskError::new(if max < MAX_VALUE_DEPTH {
            format!("script result nested deeper than {max} levels (eval.max_data_depth)")
        } else {
            format!("script result nested deeper than {max} levels (the protocol's limit)")
        }));
    }
    rhai::serde::from_dynamic::<Value>(out)
        .map_err(|e| TaskError::new(format!("script result cannot be sent: {e}")))
}

/// Runs `script` with `args` under `limits`, for at most `limit`, in this
/// thread (which deep data can overflow; workers use an [`super::Evaluator`]).
#[cfg(test)]
fn run_script(
    limits: &EvalLimits,
    script: &str,
    args: Value,
    limit: Duration,
) -> Result<Value, TaskError> {
    evaluate(limits, script, args, limit).0
}

fn describe(e: &EvalAltResult, limits: &EvalLimits, limit: Duration) -> String {
    let pos = e.position();
    let at = if pos.is_none() {
        String::new()
    } else {
        format!(" at {pos}")
    };
    let token = match e {
        EvalAltResult::ErrorTerminated(why, _) => why.clone().try_cast::<String>(),
        _ => None,
    };
    match e {
        EvalAltResult::ErrorTerminated(..) if token.as_deref() == Some(TOO_DEEP) => format!(
            "script stopped{at}: its data is nested deeper than {} levels (eval.max_data_depth)",
            limits.max_data_depth
        ),
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
    use crate::duration::Dur;

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

    /// Runs `script` with `max_data_depth` 10.
    fn shallow(script: &str) -> Result<Value, TaskError> {
        let l = EvalLimits {
            max_data_depth: 10,
            max_time: Dur(Duration::from_secs(2)),
            ..EvalLimits::default()
        };
        run_script(&l, script, Value::Nil, l.max_time.0)
    }

    #[test]
    fn data_at_the_depth_limit_is_read_and_one_level_more_is_not() {
        // A start value, how it is wrapped in one more level, and how many
        // wraps make it 10 levels deep (an empty array is 1 already).
        let kinds = [
            ("[]", "[x]", 9),
            ("#{}", "#{a: x}", 9),
            ("[]", "[1, 2, #{b: [take(x)]}][2].b", 9),
            (r#"Fn("f")"#, r#"Fn("f").curry(x)"#, 10),
            ("|| 0", "{ let g = x; || g }", 10),
        ];
        for (start, wrap, n) in kinds {
            let script = |n: usize| {
                format!("fn f(a) {{ a }} let x = {start}; for i in 0..{n} {{ x = {wrap}; }} let y = x; 1")
            };
            assert_eq!(shallow(&script(n)), Ok(Value::from(1)), "{}", script(n));
            let deep = script(n + 1);
            let e = shallow(&deep).expect_err(&deep);
            assert!(
                e.0.contains("its data is nested deeper than 10 levels (eval.max_data_depth)"),
                "{deep}: {e}"
            );
            assert!(e.0.contains("line 1"), "{deep}: {e}");
        }
    }

    #[test]
    fn a_script_cannot_catch_the_depth_limit() {
        let e = shallow("let x = []; try { loop { x = [x]; } } catch { 0 }").unwrap_err();
        assert!(e.0.contains("eval.max_data_depth"), "{e}");
    }

    #[test]
    fn nesting_counts_levels_and_stops_at_the_limit() {
        let nested =
            |n: usize| (0..n).fold(Dynamic::from(1_i64), |v, _| Dynamic::from_array(vec![v]));
        assert_eq!(nesting(&Dynamic::from(1_i64), 0, 10, 8), Nesting::Within);
        assert_eq!(nesting(&nested(5), 5, 100, 8), Nesting::Within);
        assert_eq!(nesting(&nested(6), 5, 100, 8), Nesting::Deeper);
        // The walk stops at the limit however deep the value goes on.
        assert_eq!(nesting(&nested(1000), 5, usize::MAX, 8), Nesting::Deeper);
        assert_eq!(nesting(&nested(50), 100, 20, 8), Nesting::Unknown);
    }

    #[test]
    fn the_guard_looks_at_the_ends_of_a_level_and_the_result_check_at_all() {
        let deep = (0..20).fold(Dynamic::from(1_i64), |v, _| Dynamic::from_array(vec![v]));
        let mut flat: Vec<Dynamic> = (0..100_000_i64).map(Dynamic::from).collect();
        let mut walk = Walk {
            max: 10,
            left: 1000,
            edge: WALK_EDGE,
        };
        assert_eq!(walk.value(&Dynamic::from_array(flat.clone()), 0), Ok(()));
        assert_eq!(
            1000 - walk.left,
            1 + 2 * WALK_EDGE,
            "a flat array costs its ends"
        );
        flat[99_995] = deep.clone();
        let last = Dynamic::from_array(flat.clone());
        assert_eq!(nesting(&last, 10, 1000, WALK_EDGE), Nesting::Deeper);
        flat[99_995] = Dynamic::UNIT;
        flat[50_000] = deep;
        let middle = Dynamic::from_array(flat);
        assert_eq!(nesting(&middle, 10, 1000, WALK_EDGE), Nesting::Within);
        assert_eq!(
            nesting(&middle, 10, usize::MAX, usize::MAX),
            Nesting::Deeper
        );
    }

    #[test]
    fn results_deeper_than_the_limit_or_the_protocol_are_refused() {
        let e = shallow("let x = []; for i in 0..9 { x = [x]; } [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, x, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]").unwrap_err();
        assert_eq!(
            e.0,
            "script result nested deeper than 10 levels (eval.max_data_depth)"
        );
        let e = eval("let x = []; for i in 0..120 { x = [x]; } x").unwrap_err();
        assert_eq!(
            e.0,
            "script result nested deeper than 120 levels (the protocol's limit)"
        );
        assert!(eval("let x = []; for i in 0..119 { x = [x]; } x").is_ok());
    }

    #[test]
    fn arguments_deeper_than_the_limit_are_refused() {
        let l = EvalLimits {
            max_data_depth: 3,
            ..EvalLimits::default()
        };
        let args = |n: usize| (0..n).fold(Value::from(1), |v, _| Value::Array(vec![v]));
        assert!(run_script(&l, "1", args(3), Duration::from_secs(1)).is_ok());
        let e = run_script(&l, "1", args(4), Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            e.0,
            "eval arguments nested deeper than 3 levels (eval.max_data_depth)"
        );
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        assert_eq!(EvalLimits::default().validate(), Ok(()));
        let no_depth = EvalLimits {
            max_data_depth: 0,
            ..EvalLimits::default()
        };
        assert!(no_depth.validate().unwrap_err().contains("max_data_depth"));
        let tiny_stack = EvalLimits {
            max_stack_bytes: 4096,
            ..EvalLimits::default()
        };
        assert!(tiny_stack
            .validate()
            .unwrap_err()
            .contains("max_stack_bytes"));
    }
}
