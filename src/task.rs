//! Tasks a worker can run, and the registry that finds them by name.
//!
//! A task takes MessagePack arguments and returns a value or an error. The
//! stock worker registers `echo` and `sleep`; other kinds plug in through
//! [`TaskRegistry::register_fn`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::protocol::Value;

/// A task's failure, reported to the client as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TaskError(pub String);

impl TaskError {
    /// A failure with the given message.
    pub fn new(msg: impl Into<String>) -> TaskError {
        TaskError(msg.into())
    }
}

/// The function behind a registered task name.
pub type TaskFn = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, TaskError>> + Send + Sync>;

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

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> TaskRegistry {
        TaskRegistry::default()
    }

    /// A registry with the built-in tasks `echo` and `sleep`.
    pub fn with_builtins() -> TaskRegistry {
        let mut r = TaskRegistry::new();
        r.register_fn("echo", |args| async move { Ok(args) });
        r.register_fn("sleep", |args| async move {
            let ms = sleep_millis(&args)?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(args)
        });
        r
    }

    /// Registers (or replaces) `name`, run by the async function `f`.
    pub fn register_fn<F, Fut>(&mut self, name: &str, f: F)
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        self.tasks
            .insert(name.to_string(), Arc::new(move |args| Box::pin(f(args))));
    }

    /// The function registered under `name`.
    pub fn get(&self, name: &str) -> Option<TaskFn> {
        self.tasks.get(name).cloned()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }
}

/// `sleep` takes a number of milliseconds, bare or as the first element of an array.
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

    #[tokio::test]
    async fn echo_returns_its_arguments() {
        let r = TaskRegistry::with_builtins();
        let args = Value::Array(vec![Value::from(1), Value::from("x")]);
        assert_eq!((r.get("echo").unwrap())(args.clone()).await, Ok(args));
    }

    #[tokio::test]
    async fn sleep_accepts_bare_and_wrapped_millis_and_rejects_text() {
        let r = TaskRegistry::with_builtins();
        let f = r.get("sleep").unwrap();
        assert_eq!(f(Value::from(1)).await, Ok(Value::from(1)));
        let wrapped = Value::Array(vec![Value::from(2)]);
        assert_eq!(f(wrapped.clone()).await, Ok(wrapped));
        assert!(f(Value::from("soon")).await.is_err());
        assert!(f(Value::from(-5)).await.is_err());
    }

    #[test]
    fn names_are_sorted_and_unknown_is_none() {
        let r = TaskRegistry::with_builtins();
        assert_eq!(r.names(), vec!["echo", "sleep"]);
        assert!(r.get("rm -rf").is_none());
    }
}
