//! `argon bench --detach`: the load of gearmand's background jobs. Every
//! task is submitted detached, so the manager answers with its task id as
//! soon as it accepted it (with `manager --persist`, once the accept is
//! stored) and the task runs on without the client. A fixed number of
//! submissions is left unacknowledged at once, denials are retried after the
//! client's backoff and counted. Once every task is accepted, each result is
//! read by id (waiting for it), and echo results are checked.
//!
//! Two rates come out: accepts per second (first submission until the last
//! acknowledgement) and completions per second (first submission until the
//! last result was read). The ids wait between the two phases in a list of
//! at most `--tasks` entries; with more detached tasks than the manager's
//! `result_max`, the oldest results are evicted before they are read and
//! count as failed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::join_all;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;

use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::launch::Failure;
use argon::protocol::Value;

use super::load::{check_outcomes, latency_histogram, percentile, BenchPlan, KEPT_ERRORS};

/// The result of `argon bench --detach`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct DetachReport {
    /// Always `"detach"`, to tell this report from an attached run's.
    pub mode: &'static str,
    /// Tasks accepted.
    pub accepted: usize,
    /// Accepts per second; the same figure as `accept_rate`, under the name
    /// `bench/compare.sh` sorts attached and detached runs by.
    pub throughput: f64,
    /// Accepts per second, first submission until the last acknowledgement.
    pub accept_rate: f64,
    /// Results read (the task finished and its outcome was collected).
    pub completed: usize,
    /// Completed tasks per second, first submission until the last result read.
    pub complete_rate: f64,
    /// Submission until acknowledgement, microseconds: median.
    pub accept_p50_us: u64,
    /// 99th percentile.
    pub accept_p99_us: u64,
    /// Slowest.
    pub accept_max_us: u64,
    /// Denials that were retried.
    pub denied: u64,
    /// Tasks not accepted, failed, or whose result could not be read.
    pub failed: usize,
    /// Seconds until the last acknowledgement.
    pub accept_s: f64,
    /// Seconds until the last result was read.
    pub elapsed_s: f64,
    /// Submissions left unacknowledged at once (and results waited for at once).
    pub concurrency: u32,
    /// Connections.
    pub clients: u32,
    /// Task name.
    pub task: String,
    /// Payload bytes per task.
    pub payload: usize,
}

/// What the loops of both phases share, under one lock never held across
/// an await.
struct Tally {
    accept_us: Histogram<u64>,
    /// The task id of every accepted task, at most `--tasks`.
    ids: Vec<u64>,
    denied: u64,
    completed: usize,
    failed: usize,
    wrong: usize,
    errors: Vec<String>,
}

impl Tally {
    fn fail(&mut self, error: String) {
        self.failed += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(error);
        }
    }
}

/// Runs `plan` detached against the manager `config` points at.
pub async fn measure(
    config: ClientConfig,
    plan: &BenchPlan,
    show_progress: bool,
) -> Result<DetachReport, Failure> {
    let clients = plan.connections();
    let conns = plan.connect(config).await?;
    let args = plan.task_args();
    let windows = plan.windows();
    let tally = Arc::new(Mutex::new(Tally {
        accept_us: latency_histogram(),
        ids: Vec::with_capacity(plan.tasks as usize),
        denied: 0,
        completed: 0,
        failed: 0,
        wrong: 0,
        errors: Vec::new(),
    }));
    let bar = || plan.progress_bar(show_progress);

    let started = Instant::now();
    let next = Arc::new(AtomicU32::new(0));
    let pb = bar();
    let mut loops = Vec::new();
    for (client, &window) in conns.iter().zip(&windows) {
        for _ in 0..window {
            loops.push(submit_loop(
                client.clone(),
                next.clone(),
                plan.tasks,
                &plan.task,
                &args,
                tally.clone(),
                pb.clone(),
            ));
        }
    }
    join_all(loops).await;
    pb.finish_and_clear();
    let accept_s = started.elapsed().as_secs_f64();

    let ids = Arc::new(Mutex::new(std::mem::take(
        &mut tally.lock().expect("tally lock").ids,
    )));
    let expected = (plan.task == "echo").then_some(&args);
    let pb = bar();
    let mut loops = Vec::new();
    for (client, &window) in conns.iter().zip(&windows) {
        for _ in 0..window {
            loops.push(collect_loop(
                client.clone(),
                ids.clone(),
                expected,
                tally.clone(),
                pb.clone(),
            ));
        }
    }
    join_all(loops).await;
    pb.finish_and_clear();
    let elapsed_s = started.elapsed().as_secs_f64();

    let t = tally.lock().expect("tally lock");
    check_outcomes(t.wrong as u64, t.failed as u64, &t.errors)?;
    let accepted = t.accept_us.len() as usize;
    Ok(DetachReport {
        mode: "detach",
        accepted,
        throughput: accepted as f64 / accept_s.max(1e-9),
        accept_rate: accepted as f64 / accept_s.max(1e-9),
        completed: t.completed,
        complete_rate: t.completed as f64 / elapsed_s.max(1e-9),
        accept_p50_us: percentile(&t.accept_us, 50.0),
        accept_p99_us: percentile(&t.accept_us, 99.0),
        accept_max_us: percentile(&t.accept_us, 100.0),
        denied: t.denied,
        failed: t.failed,
        accept_s,
        elapsed_s,
        concurrency: plan.concurrency,
        clients,
        task: plan.task.clone(),
        payload: plan.payload,
    })
}

/// Submits tasks detached, one at a time, until `total` were taken;
/// a denial is retried after the client's backoff.
async fn submit_loop(
    client: Client,
    next: Arc<AtomicU32>,
    total: u32,
    task: &str,
    args: &Value,
    tally: Arc<Mutex<Tally>>,
    pb: ProgressBar,
) {
    let opts = QueueOptions {
        retry: Some(false),
        ..QueueOptions::default()
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return;
        }
        let start = Instant::now();
        let mut denials = 0u32;
        let result = loop {
            match client.submit_detached(task, args.clone(), &opts).await {
                Err(ClientError::Denied { retry_after, .. }) => {
                    denials += 1;
                    let pause = client.config().retry_delay(denials, retry_after);
                    tokio::time::sleep(pause).await;
                }
                other => break other,
            }
        };
        let took = start.elapsed().as_micros() as u64;
        let mut t = tally.lock().expect("tally lock");
        t.denied += u64::from(denials);
        match result {
            Ok(id) => {
                t.accept_us.saturating_record(took.max(1));
                t.ids.push(id);
            }
            Err(e) => t.fail(e.to_string()),
        }
        drop(t);
        pb.inc(1);
    }
}

/// Reads results by id, waiting for each, until none is left; with
/// `expected`, a result must equal it.
async fn collect_loop(
    client: Client,
    ids: Arc<Mutex<Vec<u64>>>,
    expected: Option<&Value>,
    tally: Arc<Mutex<Tally>>,
    pb: ProgressBar,
) {
    loop {
        let Some(id) = ids.lock().expect("ids lock").pop() else {
            return;
        };
        let result = client.result(id, true).await;
        let mut t = tally.lock().expect("tally lock");
        match result {
            Ok(value) => {
                t.completed += 1;
                if expected.is_some_and(|e| *e != value) {
                    t.wrong += 1;
                }
            }
            Err(e) => t.fail(format!("task {id}: {e}")),
        }
        drop(t);
        pb.inc(1);
    }
}

/// The human-readable summary.
pub fn describe(r: &DetachReport) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "{} {} tasks detached ({} B payload, {} unacknowledged at most over {} connection(s))\n\
         accepted in {:.2} s: {:.0} accepts/s   all {} results read after {:.2} s: {:.0} tasks/s\n\
         acknowledgement  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n\
         denied {} (retried)  failed {}",
        r.accepted,
        r.task,
        r.payload,
        r.concurrency,
        r.clients,
        r.accept_s,
        r.accept_rate,
        r.completed,
        r.elapsed_s,
        r.complete_rate,
        ms(r.accept_p50_us),
        ms(r.accept_p99_us),
        ms(r.accept_max_us),
        r.denied,
        r.failed
    )
}
