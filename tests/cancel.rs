//! Cancellation end to end, with the real binary: a task whose client
//! disconnects, a task its client cancels, and a run a worker still holds
//! when it registers with a restarted manager are all stopped on the worker,
//! and the slot is free again at once (not when the task would have ended).

mod common;

use argon::protocol::HandshakeSettings;
use argon::{Client, ClientConfig, ClientError, MasterKey, QueueOptions, Value};
use common::{Manager, TempDir, COMMAND};

/// Ten minutes: far longer than any bound in these tests.
const FOREVER_MS: u64 = 600_000;

fn all_slots_free(m: &Manager, what: &str) {
    m.wait_status(what, |s| {
        s.workers == 1 && s.in_flight == 0 && s.worker_list.iter().all(|w| w.in_flight == 0)
    });
}

fn echo_runs(m: &Manager) {
    let out = m.submit(["echo", "\"free\""]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.trim(), "\"free\"");
}

#[test]
fn a_client_that_disconnects_has_its_running_task_stopped() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = Manager::start(&key);
    let _w = m.add_worker(1, 1);
    let mut submit = m.submit(["sleep", &FOREVER_MS.to_string()]).spawn();
    m.wait_status("the sleep to run", |s| s.in_flight == 1);
    submit.kill();
    all_slots_free(&m, "the slot to be free after the client left");
    echo_runs(&m);
}

#[test]
fn a_cancelled_task_is_answered_and_its_slot_freed() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = Manager::start(&key);
    let _w = m.add_worker(1, 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let config = ClientConfig::new(
        m.addr.clone(),
        HandshakeSettings::new(MasterKey::load(&key).expect("key")),
    );
    let client = rt.block_on(Client::connect(config)).expect("connect");
    let task = rt
        .block_on(client.submit("sleep", Value::from(FOREVER_MS), &QueueOptions::default()))
        .expect("submitted");
    m.wait_status("the sleep to run", |s| s.in_flight == 1);
    rt.block_on(task.cancel()).expect("cancel sent");
    let got = rt
        .block_on(async { tokio::time::timeout(COMMAND, task.result()).await })
        .expect("the answer comes within the bound");
    match got {
        Err(ClientError::Failed(e)) => assert_eq!(e, "cancelled by the client"),
        other => panic!("expected the cancel, got {other:?}"),
    }
    all_slots_free(&m, "the slot to be free after the cancel");
    echo_runs(&m);
}

#[test]
fn a_run_left_over_from_before_a_manager_restart_is_cancelled() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let mut first = Manager::start(&key);
    let port = first.port();
    let _w = first.add_worker(1, 1);
    let _submit = first.submit(["sleep", &FOREVER_MS.to_string()]).spawn();
    first.wait_status("the sleep to run", |s| s.in_flight == 1);
    first.proc.kill();

    let second = Manager::restart_on(&key, port);
    // The worker comes back holding the old run: the new manager cancels it
    // and counts the slot busy until the worker reports it stopped.
    all_slots_free(&second, "the old run to be cancelled");
    echo_runs(&second);
    assert!(
        second.proc.wait_stderr("1 busy with earlier runs", COMMAND),
        "{}",
        second.proc.stderr()
    );
}
