//! Argon: distributed task processing with a bounded queue.
//!
//! A manager schedules tasks from clients onto workers with a fixed number of
//! slots. When the cluster is full, new tasks are denied at once and clients
//! back off, so load never piles up inside the system.
//!
//! # Layout
//!
//! - [`protocol`]: frames, crypto, the handshake and wire message types.
//! - [`messages`]: typed messages between actors.
//! - [`actors`]: by process: `manager` (`Manager`, and the connection roles
//!   `ClientSession`, `WorkerLink`), `worker` (`WorkerPool`, `WorkerSlot`,
//!   and the role `ManagerLink`), and the `Connection` codec actor.
//! - [`client`]: the async client library.
//! - [`task`]: the task registry and the built-in tasks.
//! - [`runtime`]: starting managers, workers and embedded clusters.
//! - [`admission`]: the manager's limits on connections and handshakes.
//! - `http`: the manager's read-only HTTP side: metrics, health, readiness
//!   (cargo feature `http`).
//! - [`worker_main`]: the worker process, for `argon worker` and worker
//!   programs with tasks of their own.
//! - [`launch`]: logging, config loading, key flags and exit codes shared by
//!   the `argon` binary and worker programs.
//! - [`config`], [`duration`]: the TOML configuration file.
//! - [`logsafe`]: escaping peer-supplied text for logs, and rate limits
//!   for warnings that peers can repeat at will.
//! - [`json`]: JSON to and from wire values, for the CLI and command tasks.
//!
//! The `argon` binary's subcommands are not part of the library; they live
//! in `src/cli/` next to `src/main.rs`.

#![warn(missing_docs)]

pub mod actors;
pub mod admission;
pub mod client;
pub mod config;
pub mod duration;
#[cfg(feature = "http")]
pub mod http;
pub mod json;
pub mod launch;
pub mod logsafe;
pub mod messages;
pub mod outgoing;
#[cfg(not(feature = "http"))]
mod plain_metrics;
#[cfg(feature = "http")]
pub mod process_metrics;
pub mod protocol;
pub mod runtime;
pub mod task;
pub mod worker_main;

pub use client::{Client, ClientConfig, ClientError, QueueOptions};
pub use protocol::{MasterKey, Priority, Value};
pub use task::{TaskError, TaskRegistry};
pub use worker_main::worker_main;
