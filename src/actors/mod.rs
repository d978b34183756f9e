//! The actors. Manager side: [`Manager`], one [`ClientSession`] per client
//! connection, one [`WorkerLink`] per worker connection. Worker side:
//! [`WorkerPool`] and its [`WorkerSlot`]s. Both sides speak to the network
//! through a [`Connection`].

pub mod client_session;
pub mod connection;
pub mod manager;
pub mod scheduler;
pub mod worker_link;
pub mod worker_pool;
pub mod worker_slot;

pub use client_session::ClientSession;
pub use connection::Connection;
pub use manager::{Manager, ManagerSettings};
pub use worker_link::WorkerLink;
pub use worker_pool::{WorkerPool, WorkerSettings};
pub use worker_slot::WorkerSlot;
