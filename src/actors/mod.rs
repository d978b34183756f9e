//! The actors, grouped by process. Manager side ([`manager`]): the
//! [`Manager`], and the roles of its connections, [`ClientSession`] and
//! [`WorkerLink`]. Worker side ([`worker`]): [`WorkerPool`], its
//! [`WorkerSlot`]s and the role of its connection, [`ManagerLink`]. Both
//! sides speak to the network through the codec actor, [`Connection`].

pub mod connection;
pub mod manager;
pub mod worker;

pub use connection::{Connection, Peer};
pub use manager::{ClientSession, Manager, ManagerSettings, WorkerLink};
pub use worker::{ManagerLink, WorkerPool, WorkerSettings, WorkerSlot};
