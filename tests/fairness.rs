//! Fair admission: when the queue is full, a freed place goes to the
//! clients that were denied, in turn, so clients that resubmit as fast as
//! they can (ignoring `retry_after`) cannot starve one that backs off as
//! asked. Runs the real binary on 127.0.0.1.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argon::client::{Client, ClientConfig, ClientError};
use argon::protocol::{HandshakeSettings, MasterKey};
use common::{Manager, ManagerOpts, TempDir};
use rmpv::Value;

/// How long each task runs, in milliseconds.
const TASK_MS: u64 = 30;
/// Tasks the polite client must get done.
const POLITE_TASKS: usize = 5;

async fn connect(m: &Manager, retry: bool) -> Client {
    let key = MasterKey::load(&m.key).expect("key");
    let mut config = ClientConfig::new(m.addr.clone(), HandshakeSettings::new(key));
    config.retry = retry;
    Client::connect(config).await.expect("connect")
}

/// Resubmits at once after every deny until `stop`; counts tasks done.
async fn greedy(client: Arc<Client>, done: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match client.queue("sleep", Value::from(TASK_MS)).await {
            Ok(_) => {
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(ClientError::Denied { .. }) => {}
            Err(e) => panic!("greedy client: {e}"),
        }
    }
}

#[test]
fn two_greedy_clients_and_a_polite_one_all_get_served() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    // One slot and three places in the queue: every freed place is contested.
    let m = Manager::start_with(
        &key,
        ManagerOpts {
            queue_factor: Some(3),
            ..Default::default()
        },
    );
    let _w = m.add_worker(1, 1);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let mut loops = Vec::new();
        for done in &counts {
            let client = Arc::new(connect(&m, false).await);
            // Several submits always in flight per greedy connection.
            for _ in 0..4 {
                loops.push(tokio::spawn(greedy(
                    client.clone(),
                    done.clone(),
                    stop.clone(),
                )));
            }
        }
        // Let the greedy clients take the queue first.
        while counts.iter().all(|c| c.load(Ordering::Relaxed) == 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let polite = connect(&m, true).await;
        let served = tokio::time::timeout(Duration::from_secs(30), async {
            for _ in 0..POLITE_TASKS {
                polite
                    .queue("sleep", Value::from(TASK_MS))
                    .await
                    .expect("the polite client's task runs");
            }
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        for l in loops {
            let _ = tokio::time::timeout(Duration::from_secs(5), l).await;
        }
        let greedy_done: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert!(
            served.is_ok(),
            "the polite client was starved: its {POLITE_TASKS} tasks did not all run within \
             30 s while the greedy clients ran {greedy_done:?}"
        );
        assert!(
            greedy_done.iter().all(|&n| n > 0),
            "both greedy clients are served too: {greedy_done:?}"
        );
    });
}
