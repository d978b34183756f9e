//! Chaos: 10,000 tasks with 1 to 3 attempts each, while worker processes are
//! SIGKILLed (and replaced) and SIGSTOPped long enough to be taken for gone,
//! then let go on. Every task gets exactly one answer: its result, or
//! "worker lost before completion" once its attempts are used up; the manager
//! answered exactly as many tasks as were accepted; and once the load stops,
//! every slot is free again.
//!
//! Also: the only worker killed with tasks queued behind it, and replaced
//! half a second later (or not at all): the queue waits for the provider
//! grace instead of failing at once.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use argon::protocol::HandshakeSettings;
use argon::{Client, ClientConfig, ClientError, MasterKey, QueueOptions, Value};
use common::{Manager, ManagerOpts, Proc, TempDir, Worker};

const TASKS: u64 = 10_000;
const WORKERS: usize = 4;
const CAPACITY: u32 = 3;
const IN_FLIGHT: u64 = 300;
const BEAT: &str = "250ms";

/// A tiny seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn start_worker(addr: &str, key: &std::path::Path, cfg: &std::path::Path) -> Worker {
    Worker::start_with(
        addr,
        key,
        CAPACITY,
        &[std::ffi::OsStr::new("--config"), cfg.as_os_str()],
    )
}

#[test]
fn every_task_gets_one_answer_while_workers_die_and_stall() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let cfg = dir.write(
        "argon.toml",
        &format!("[security]\nheartbeat_interval = \"{BEAT}\"\n"),
    );
    let m = Manager::start_with(
        &key,
        ManagerOpts {
            config: Some(cfg.clone()),
            queue_factor: Some(20),
            ..Default::default()
        },
    );
    let addr = m.addr.clone();
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|_| start_worker(&addr, &key, &cfg))
        .collect();
    m.wait_for_workers(WORKERS as u64);

    // The load runs on its own thread; the chaos on this one, which also
    // starts the replacement workers (their parent-death signal is tied to
    // the thread that spawned them). One victim at a time.
    let load = {
        let (addr, key) = (addr.clone(), key.clone());
        std::thread::spawn(move || run_load(&addr, &key))
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut kills, mut stops) = (0, 0);
    while !load.is_finished() {
        std::thread::sleep(Duration::from_millis(150 + rng.below(250)));
        let victim = rng.below(WORKERS as u64) as usize;
        match rng.below(10) {
            0..=4 => {
                workers[victim].proc.kill();
                workers[victim] = start_worker(&addr, &key, &cfg);
                kills += 1;
            }
            5..=7 => {
                workers[victim].proc.signal(libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(900 + rng.below(600)));
                workers[victim].proc.signal(libc::SIGCONT);
                stops += 1;
            }
            _ => {}
        }
    }
    check_outcomes(&load.join().expect("load thread"));
    assert!(kills > 0 && stops > 0, "kills {kills}, stops {stops}");

    // Once the load stops, every slot is free again and nothing is queued.
    let st = m.wait_status("every slot free again", |s| {
        s.workers == WORKERS as u64
            && s.capacity == WORKERS as u64 * u64::from(CAPACITY)
            && s.in_flight == 0
            && s.queued == 0
            && s.worker_list.iter().all(|w| w.in_flight == 0)
    });
    assert_eq!(
        st.completed + st.failed,
        TASKS,
        "the manager answered each accepted task once: {st:#?}"
    );
}

/// Runs the tasks through clients that retry denies, at most `IN_FLIGHT` at
/// once, and returns each task's (sleep argument, answer).
fn run_load(addr: &str, key: &std::path::Path) -> Vec<(u64, Result<Value, ClientError>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut hs = HandshakeSettings::new(MasterKey::load(key).expect("key"));
    hs.heartbeat = humantime::parse_duration(BEAT).expect("beat");
    let mut config = ClientConfig::new(addr, hs);
    config.retry = true;
    config.min_backoff = Duration::from_millis(5);
    config.max_backoff = Duration::from_millis(200);
    rt.block_on(async {
        let client = Client::connect(config).await.expect("connect");
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let loops = (0..IN_FLIGHT).map(|_| {
            let (client, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TASKS {
                        return out;
                    }
                    let millis = i % 4;
                    let opts = QueueOptions {
                        attempts: 1 + (i % 3) as u32,
                        ..QueueOptions::default()
                    };
                    let answer = client.queue_with("sleep", Value::from(millis), &opts).await;
                    out.push((millis, answer));
                }
            })
        });
        let all = tokio::time::timeout(
            Duration::from_secs(240),
            futures_util::future::join_all(loops),
        )
        .await
        .expect("the load finishes within its bound");
        all.into_iter()
            .flat_map(|r| r.expect("load loop"))
            .collect()
    })
}

fn check_outcomes(outcomes: &[(u64, Result<Value, ClientError>)]) {
    assert_eq!(outcomes.len() as u64, TASKS, "one answer per task");
    let mut lost = 0;
    for (millis, answer) in outcomes {
        match answer {
            Ok(v) => assert_eq!(*v, Value::from(*millis), "a task got another's result"),
            // Workers come back within the provider grace: no task fails
            // for want of one.
            Err(ClientError::Failed(e)) if e.starts_with("worker lost before completion") => {
                lost += 1
            }
            Err(e) => panic!("unexpected answer: {e}"),
        }
    }
    assert!(lost < TASKS / 2, "{lost} of {TASKS} tasks lost");
}

/// A manager with one worker of one slot running `sleep 1500` (two
/// attempts), and four `echo` tasks queued behind it, each a running
/// `argon submit`. Returns the submits, the sleep first.
fn one_worker_with_a_queue(
    dir: &TempDir,
    config: Option<std::path::PathBuf>,
) -> (Manager, Worker, Vec<Proc>) {
    let key = dir.keygen("key");
    let m = Manager::start_with(
        &key,
        ManagerOpts {
            queue_factor: Some(10),
            config,
            ..Default::default()
        },
    );
    let w = m.add_worker(1, 1);
    let mut submits = vec![m.submit(["--attempts", "2", "sleep", "1500"]).spawn()];
    m.wait_status("the sleep running", |s| s.in_flight == 1);
    for i in 1..=4 {
        submits.push(m.submit(["echo", &format!("[{i}]")]).spawn());
    }
    m.wait_status("four tasks queued", |s| s.queued == 4 && s.in_flight == 1);
    (m, w, submits)
}

/// The only worker is SIGKILLed with four tasks queued and one running
/// that has an attempt left; a replacement starts 0.5 s later and all five
/// complete there.
#[test]
fn the_queue_of_a_killed_only_worker_runs_on_its_replacement() {
    let dir = TempDir::new();
    let (mut m, mut w, submits) = one_worker_with_a_queue(&dir, None);
    w.proc.kill();
    let killed = std::time::Instant::now();
    m.wait_status("the five tasks waiting for a provider", |s| {
        s.workers == 0 && s.awaiting_provider == 5 && s.queued == 0
    });
    std::thread::sleep(Duration::from_millis(500).saturating_sub(killed.elapsed()));
    let _replacement = Worker::start(&m.addr, &m.key, 1);
    for (i, p) in submits.into_iter().enumerate() {
        let out = p.finish(Duration::from_secs(30));
        let expected = if i == 0 {
            "1500".to_string()
        } else {
            format!("[{i}]")
        };
        assert_eq!(
            (out.code, out.stdout.trim()),
            (Some(0), expected.as_str()),
            "{out}"
        );
    }
    let st = m.status();
    assert_eq!((st.awaiting_provider, st.completed, st.failed), (0, 5, 0));
    m.assert_healthy();
}

/// With no replacement, the queued tasks fail once `manager.provider_grace`
/// is over, saying how long they waited; the one whose worker died fails
/// with them.
#[test]
fn without_a_replacement_the_queue_fails_after_the_configured_grace() {
    let dir = TempDir::new();
    let cfg = dir.write("argon.toml", "[manager]\nprovider_grace = \"1s\"\n");
    let (mut m, mut w, submits) = one_worker_with_a_queue(&dir, Some(cfg));
    w.proc.kill();
    let killed = std::time::Instant::now();
    for p in submits {
        let out = p.finish(Duration::from_secs(15));
        assert_eq!(out.code, Some(1), "{out}");
        assert!(
            out.stderr.contains("no worker provides task ")
                && out.stderr.contains(": waited 1s for one"),
            "{out}"
        );
    }
    assert!(
        killed.elapsed() >= Duration::from_secs(1),
        "{:?}",
        killed.elapsed()
    );
    m.assert_healthy();
}
