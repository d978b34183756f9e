//! Big legal tasks against the real binaries: the manager does not push a
//! worker more than its link can hold (the rest wait in the queue), and
//! neither a worker nor a client that reads is dropped for the volume of
//! what it is sent. The bounds are scaled down from the defaults (a 4 MiB
//! outgoing bound, 2 MiB frames) so that a debug build moves the bytes in
//! seconds; the tasks are sized against them as the defaults' 64 MiB and
//! 14 MB tasks are (docs/OPERATIONS.md has that run on a release build).

mod common;

use std::time::Duration;

use argon::protocol::{HandshakeSettings, MasterKey, Value};
use argon::{Client, ClientConfig};
use common::{Manager, ManagerOpts, TempDir};
use futures_util::future::join_all;

/// Runs `count` concurrent `echo` tasks of `bytes` bytes each, from one
/// client, on one worker with `count` slots; every result must come back
/// whole, and the worker must keep its id.
fn echo_big(count: usize, bytes: usize) {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let config = dir.write(
        "argon.toml",
        &format!("[security]\nmax_frame_bytes = {FRAME}\nmax_outgoing_bytes = {BOUND}\n"),
    );
    let mut mgr = Manager::start_with(
        &key,
        ManagerOpts {
            config: Some(config.clone()),
            ..Default::default()
        },
    );
    let worker = common::Worker::start_with(
        &mgr.addr,
        &key,
        count as u32,
        &["--config".as_ref(), config.as_os_str()],
    );
    mgr.wait_for_workers(1);
    let id_before: Vec<u64> = mgr.status().worker_list.iter().map(|w| w.id).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut hs = HandshakeSettings::new(MasterKey::load(&key).expect("key"));
    hs.max_frame = FRAME;
    rt.block_on(async {
        let client = Client::connect(ClientConfig::new(mgr.addr.clone(), hs))
            .await
            .expect("connect");
        let calls = (0..count).map(|i| {
            let c = client.clone();
            let args = Value::Binary(vec![i as u8; bytes]);
            async move { (i, c.queue("echo", args).await) }
        });
        let all = tokio::time::timeout(Duration::from_secs(120), join_all(calls))
            .await
            .expect("every task within the bound");
        for (i, r) in all {
            match r {
                Ok(Value::Binary(b)) => {
                    assert!(
                        b.len() == bytes && b.iter().all(|&x| x == i as u8),
                        "task {i}"
                    )
                }
                other => panic!(
                    "task {i}: {:?}\n--- manager stderr\n{}\n--- worker stderr\n{}",
                    other.map(|v| format!("{:.40}", format!("{v:?}"))),
                    mgr.proc.stderr(),
                    worker.proc.stderr()
                ),
            }
        }
    });
    let id_after: Vec<u64> = mgr.status().worker_list.iter().map(|w| w.id).collect();
    assert_eq!(
        id_before,
        id_after,
        "the worker kept its id\n--- manager stderr\n{}\n--- worker stderr\n{}",
        mgr.proc.stderr(),
        worker.proc.stderr()
    );
    let err = mgr.proc.stderr();
    assert!(!err.contains("not reading"), "nobody was dropped:\n{err}");
    mgr.assert_healthy();
}

/// The outgoing bound of every process here.
const BOUND: usize = 4 << 20;
/// Their frame limit.
const FRAME: usize = 2 << 20;

/// 8 tasks of 1.75 MB on 8 slots: 14 MB, over three times what a link
/// holds (as 8 × 14 MB is against the default 64 MiB).
#[test]
fn eight_big_echoes_on_eight_slots_all_complete() {
    echo_big(8, 1_750_000);
}

/// 64 tasks of 128 KB on 64 slots: twice what a link holds.
#[test]
fn sixty_four_echoes_on_sixty_four_slots_all_complete() {
    echo_big(64, 128_000);
}
