//! A status report always fits in a frame: with 1,000 registered workers,
//! some providing long lists of long task names (far more than a frame
//! holds), the asking client gets a cut report with exact counts, keeps its
//! connection and its pending task, and `argon status` shows the cut.
//!
//! The manager and one real worker run in the test's actix system; the
//! other 999 workers are registered straight with the `Manager` actor
//! behind one stub link, as in tests/manager.rs.

mod common;
mod support;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use argon::actors::{ManagerSettings, WorkerSettings};
use argon::client::{Client, ClientConfig, QueueOptions};
use argon::messages::{GetStatus, RegisterWorker, WorkerOrder};
use argon::protocol::{
    codec, ClusterStatus, HandshakeSettings, MasterKey, Value, STATUS_MAX_TASK_NAMES,
    STATUS_MAX_WORKERS,
};
use argon::runtime::{start_manager, start_worker};
use argon::task::TaskRegistry;
use common::TempDir;
use support::{within, Stub};
use tokio::sync::Notify;

/// The frame limit of the manager and the client: small, so a few MB of
/// task names are far beyond it.
const MAX_FRAME: usize = 1 << 20;
const WORKERS: u64 = 1000;
/// Fake workers with 60 task names of 300 bytes each: 2.7 MB in all.
const LONG_LISTS: usize = 150;
const LONG_LIST_NAMES: usize = 60;
const LONG_NAME: usize = 300;

fn settings(key: &std::path::Path) -> HandshakeSettings {
    let mut hs = HandshakeSettings::new(MasterKey::load(key).expect("key"));
    hs.max_frame = MAX_FRAME;
    hs
}

fn long_names(worker: usize) -> Vec<String> {
    (0..LONG_LIST_NAMES)
        .map(|j| {
            let mut n = format!("w{worker}-task{j}-");
            n.extend(std::iter::repeat_n('x', LONG_NAME - n.len()));
            n
        })
        .collect()
}

async fn wait_status(
    mgr: &Addr<argon::actors::Manager>,
    what: &str,
    cond: impl Fn(&ClusterStatus) -> bool,
) {
    within(what, async {
        loop {
            let s = mgr.send(GetStatus).await.expect("manager alive");
            if cond(&s) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[actix::test]
async fn a_status_of_a_thousand_workers_fits_and_the_client_lives_on() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let m = start_manager("127.0.0.1:0", ManagerSettings::default(), settings(&key))
        .await
        .expect("manager starts");

    // One real worker: it runs `hold`, which waits until the test lets go.
    let release = Arc::new(Notify::new());
    let mut registry = TaskRegistry::with_builtins();
    let gate = release.clone();
    registry.register_fn("hold", move |v| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Ok(v)
        }
    });
    let _pool = start_worker(
        WorkerSettings {
            mgr: m.addr.to_string(),
            capacity: 1,
            allow_eval: false,
            handshake: settings(&key),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(50),
            keep: argon::actors::worker::KeepBounds::default(),
        },
        registry,
    );
    wait_status(&m.manager, "the real worker", |s| s.workers == 1).await;

    // 999 more, the first of them with long lists of long names.
    let link: Stub<WorkerOrder> = Stub::start();
    for i in 0..(WORKERS as usize - 1) {
        let tasks = if i < LONG_LISTS {
            long_names(i)
        } else {
            vec![format!("w{i}-a"), format!("w{i}-b")]
        };
        within(
            "a registration",
            m.manager.send(RegisterWorker {
                address: format!("10.0.{}.{}:7000", i / 256, i % 256),
                capacity: 1,
                tasks,
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
    }
    let names_bytes = LONG_LISTS * LONG_LIST_NAMES * LONG_NAME;
    assert!(names_bytes > 2 * MAX_FRAME, "the whole list cannot fit");

    let client = within(
        "the client to connect",
        Client::connect(ClientConfig::new(m.addr.to_string(), settings(&key))),
    )
    .await
    .expect("client connects");
    let held = client
        .submit("hold", Value::from("still here"), &QueueOptions::default())
        .await
        .expect("submitted");
    wait_status(&m.manager, "the held task to run", |s| s.in_flight == 1).await;

    let s = within("the status", client.status())
        .await
        .expect("the status arrives");
    assert_eq!(s.workers, WORKERS);
    assert_eq!(s.capacity, WORKERS);
    assert_eq!(s.in_flight, 1);
    assert_eq!(s.worker_list_total, WORKERS);
    assert!(s.worker_list_truncated);
    assert!(
        s.worker_list.len() <= STATUS_MAX_WORKERS,
        "{}",
        s.worker_list.len()
    );
    assert_eq!(s.workers_not_listed(), WORKERS - s.worker_list.len() as u64);
    assert!(codec::encoded_len(&s) <= ClusterStatus::max_len_for_frame(MAX_FRAME));
    let busiest = &s.worker_list[0];
    assert_eq!(busiest.in_flight, 1, "the busiest comes first: {busiest:?}");
    assert!(busiest.tasks.iter().any(|t| t == "hold"), "{busiest:?}");
    let long: Vec<_> = s
        .worker_list
        .iter()
        .filter(|w| w.tasks_total() == LONG_LIST_NAMES)
        .collect();
    assert!(!long.is_empty(), "long-list workers are among the listed");
    for w in &long {
        assert!(w.tasks.len() <= STATUS_MAX_TASK_NAMES, "{}", w.tasks.len());
    }
    // 100 workers with 50 such names each would not fit either: the
    // report is cut further by size.
    let listed_names: usize = long.iter().map(|w| w.tasks.len()).sum();
    assert!(
        listed_names < long.len() * STATUS_MAX_TASK_NAMES,
        "{listed_names}"
    );

    // The connection lived on: the pending task is answered on it, and the
    // client runs another.
    release.notify_one();
    let v = within("the held task's answer", held.result())
        .await
        .expect("the pending task survived the status");
    assert_eq!(v, Value::from("still here"));
    let v = within("an echo", client.queue("echo", Value::from(7)))
        .await
        .expect("echo runs");
    assert_eq!(v, Value::from(7));

    // `argon status` shows the cut, as a table and as JSON.
    let addr = m.addr.to_string();
    let (table, json) = actix_rt::task::spawn_blocking(move || {
        let run = |extra: &[&str]| {
            let out = common::argon(["status", "--mgr", &addr, "--key"])
                .arg(&key)
                .args(extra)
                .run();
            assert_eq!(out.code, Some(0), "{out}");
            out.stdout
        };
        (run(&[]), run(&["--json"]))
    })
    .await
    .expect("the CLI runs");
    assert!(table.starts_with("workers 1000 "), "{table}");
    assert!(
        table.contains(&format!(
            "… and {} more workers",
            WORKERS as usize - s.worker_list.len()
        )),
        "{table}"
    );
    let first_long = table
        .lines()
        .find(|l| l.contains("w0-task0-"))
        .unwrap_or_else(|| panic!("the first long-list worker is listed: {table}"));
    assert!(
        first_long.contains(" … and "),
        "its cut list says so: {first_long}"
    );
    let json: serde_json::Value = serde_json::from_str(json.trim()).expect("JSON");
    assert_eq!(json["workers"], WORKERS);
    assert_eq!(json["worker_list_total"], WORKERS);
    assert_eq!(json["worker_list_truncated"], true);
    assert!(json["worker_list"][0]["tasks_total"].is_u64(), "{json}");
}
