//! The eval runner seen from the worker's side, with the real binary as the
//! runner and this test process as the worker: a cancel or the time limit
//! kills a runner whatever its script does, and a runner that dies of a
//! stack overflow is reported as the script's error while the worker (this
//! process) lives on.

#![cfg(feature = "eval")]

use std::time::{Duration, Instant};

use argon::task::eval::{eval_args, EvalLimits, Evaluator};
use argon::task::{CancellationToken, TaskContext, TaskError, EVAL_TASK};
use argon::Value;

fn evaluator(limits: EvalLimits) -> Evaluator {
    Evaluator::new(limits).with_program(env!("CARGO_BIN_EXE_argon"))
}

fn ctx() -> TaskContext {
    TaskContext {
        task_id: 1,
        name: EVAL_TASK.into(),
        deadline: None,
        cancel: CancellationToken::new(),
    }
}

async fn eval(limits: EvalLimits, script: &str, args: Value) -> Result<Value, TaskError> {
    let run = evaluator(limits);
    tokio::time::timeout(
        Duration::from_secs(30),
        run.run(&ctx(), eval_args(script, args)),
    )
    .await
    .expect("the script ends")
}

#[tokio::test]
async fn a_script_runs_in_the_runner_and_its_result_comes_back() {
    let args = Value::Array(vec![Value::from(2), Value::from(3)]);
    let out = eval(
        EvalLimits::default(),
        r#"print("hi"); #{ sum: args[0] + args[1] }"#,
        args,
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        Value::Map(vec![(Value::from("sum"), Value::from(5))]),
        "{out}"
    );
}

#[tokio::test]
async fn cancel_kills_an_endless_script() {
    let limits = EvalLimits {
        max_operations: u64::MAX,
        // Far beyond the wait below, yet a failing test ends.
        max_time: argon::duration::Dur(Duration::from_secs(20)),
        ..EvalLimits::default()
    };
    let run = evaluator(limits);
    let ctx = ctx();
    let mut fut = Box::pin(run.run(&ctx, eval_args("loop {}", Value::Nil)));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut fut)
            .await
            .is_err(),
        "an endless script ended by itself"
    );
    ctx.cancel.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("a cancelled script stops");
    assert_eq!(r, Err(TaskError::cancelled(EVAL_TASK)));
}

/// `sleep` blocks the engine's progress checks, so only the worker's own
/// clock stops it: at the time limit plus a second.
#[tokio::test]
async fn a_script_blocked_past_its_time_limit_is_killed() {
    let limits = EvalLimits {
        max_time: argon::duration::Dur(Duration::from_millis(500)),
        ..EvalLimits::default()
    };
    let started = Instant::now();
    let e = eval(limits, "sleep(60); 1", Value::Nil).await.unwrap_err();
    assert!(e.0.contains("ran past its time limit of 500ms"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// With the depth guard out of the way, deep data overflows the runner's
/// stack; the error names the stack limit.
#[tokio::test]
async fn a_stack_overflow_ends_the_runner_only() {
    let limits = EvalLimits {
        max_data_depth: 1_000_000,
        max_stack_bytes: 256 << 10,
        max_time: argon::duration::Dur(Duration::from_secs(20)),
        ..EvalLimits::default()
    };
    let e = eval(
        limits.clone(),
        "let x = []; for i in 0..100000 { x = [x]; } 0",
        Value::Nil,
    )
    .await
    .unwrap_err();
    assert!(e.0.contains("ran out of stack (262144 bytes"), "{e}");
    assert!(e.0.contains("eval.max_stack_bytes"), "{e}");
    assert_eq!(
        eval(limits, "40 + 2", Value::Nil).await,
        Ok(Value::from(42))
    );
}

#[tokio::test]
async fn deep_results_and_arguments_are_refused() {
    let e = eval(
        EvalLimits::default(),
        "let x = []; for i in 0..150 { x = [x]; } x",
        Value::Nil,
    )
    .await
    .unwrap_err();
    assert!(e.0.contains("result nested deeper than 120 levels"), "{e}");
    let nested = (0..30).fold(Value::from(1), |v, _| Value::Array(vec![v]));
    let shallow = EvalLimits {
        max_data_depth: 20,
        ..EvalLimits::default()
    };
    let e = eval(shallow, "args", nested).await.unwrap_err();
    assert!(
        e.0.contains("arguments nested deeper than 20 levels (eval.max_data_depth)"),
        "{e}"
    );
}
