//! Routing benchmark: the manager's scheduling decision with 1, 100 and 1,000
//! registered workers. One iteration is what a task costs the scheduler:
//! pick the least-loaded worker with an idle slot, assign the task to it,
//! and release the slot when the result comes back (which re-sorts the
//! worker by its new average task time).
//!
//! Workers are kept in a per-task ordered set, so the time per cycle should
//! grow with log n, not n: compare the three figures.
//!
//! Run: `cargo bench --bench scheduler`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use argon::actors::manager::scheduler::Scheduler;

/// A registry of `n` workers with 4 slots each, providing the stock tasks,
/// with spread-out average task times and about half of them busy, so the
/// routing index holds many distinct loads.
fn registry(n: usize) -> Scheduler {
    let mut s = Scheduler::new();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let tasks = vec!["echo".to_string(), "sleep".to_string()];
        ids.push(s.add(
            format!("127.0.0.1:{}", 10_000 + i),
            4,
            tasks,
            i % 2 == 0,
            &[],
        ));
    }
    for (i, &id) in ids.iter().enumerate() {
        let slot = s.assign(id).expect("a free slot");
        s.release(
            id,
            slot,
            Some(Duration::from_micros(50 + (i as u64 * 7919) % 500)),
        );
        if i % 2 == 0 {
            s.assign(id);
        }
    }
    s
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_assign_release");
    for n in [1usize, 100, 1000] {
        group.bench_with_input(BenchmarkId::new("workers", n), &n, |b, &n| {
            let mut s = registry(n);
            let mut round = 0u64;
            b.iter(|| {
                round += 1;
                let id = s.pick(black_box("echo")).expect("an idle worker");
                let slot = s.assign(id).expect("a free slot");
                s.release(id, slot, Some(Duration::from_micros(50 + round % 97)));
                black_box(id)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
