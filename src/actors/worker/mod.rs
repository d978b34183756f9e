//! The worker process's actors: the [`WorkerPool`] and its
//! [`WorkerSlot`]s, and [`ManagerLink`], the role of its connection to the
//! manager.
//!
//! The slots are the one record of the worker's capacity: each slot knows
//! whether it is running a run. The manager holds a credit for every slot
//! the worker announced free (at registration, with the runs still going
//! in the others) and names the slot in each `assign`; the connection hands
//! the task straight to that slot, whose own state decides whether it runs.
//!
//! A run that ends while the worker has no manager keeps its outcome in the
//! pool ([`kept`]), and the next connection hands it over as it registers:
//! a manager crash costs no finished run its outcome.

pub mod kept;
pub mod manager_link;
pub mod pool;
pub mod slot;

pub use kept::{KeepBounds, KeptRun};
pub use manager_link::ManagerLink;
pub use pool::{backoff_delay, WorkerPool, WorkerSettings};
pub use slot::WorkerSlot;
