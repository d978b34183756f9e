//! Helpers around a `Manager` shared by the actor-level tests: a stub
//! worker registered, a submit sent and answered, a run reported, and the
//! runs a stub worker was assigned.

use actix::prelude::*;
use argon::actors::Manager;
use argon::messages::*;
use argon::protocol::ClusterStatus;

use super::{within, Stub};

/// A stub client session: the replies it got.
pub type Session = Stub<TaskReply>;

/// A stub worker link: the orders it got.
pub type Link = Stub<WorkerOrder>;

/// Registers a stub worker at `address` with `capacity` slots providing
/// `tasks`; its orders go to the returned link, which the caller holds for
/// as long as the worker should live.
pub async fn register_stub(
    mgr: &Addr<Manager>,
    address: &str,
    capacity: u32,
    tasks: &[&str],
) -> (WorkerId, Link) {
    let link = Link::start();
    let id = within(
        "registration",
        mgr.send(RegisterWorker {
            address: address.into(),
            capacity,
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            eval: false,
            running: vec![],
            link: link.recipient(),
            load: None,
            finished: vec![],
            finished_dropped: 0,
        }),
    )
    .await
    .expect("manager alive")
    .expect("worker accepted");
    (id, link)
}

/// Sends `msg` and returns the manager's answer: the task's id, or why
/// not.
pub async fn send_submit(mgr: &Addr<Manager>, msg: SubmitTask) -> Result<TaskId, Rejection> {
    within("a submit to be answered", mgr.send(msg))
        .await
        .expect("manager alive")
        .map(|a| a.task)
}

/// Reports run `run` of `worker` ended with `outcome`.
pub async fn report_run(mgr: &Addr<Manager>, worker: WorkerId, run: RunId, outcome: TaskOutcome) {
    within(
        "RunFinished to be handled",
        mgr.send(RunFinished {
            worker,
            run,
            outcome,
        }),
    )
    .await
    .expect("manager alive");
}

/// The status once the manager has handled what the paused clock made due:
/// a timer's turn may come after one message already waiting, so it asks
/// twice.
pub async fn settled_status(mgr: &Addr<Manager>) -> ClusterStatus {
    within("status", mgr.send(GetStatus))
        .await
        .expect("manager alive");
    within("status", mgr.send(GetStatus))
        .await
        .expect("manager alive")
}

/// The run ids of the assigns among `orders` (cancels are left out).
pub fn assign_runs(orders: Vec<WorkerOrder>) -> Vec<RunId> {
    orders
        .into_iter()
        .filter_map(|o| match o {
            WorkerOrder::Assign { run, .. } => Some(run),
            WorkerOrder::Cancel { .. } => None,
        })
        .collect()
}
