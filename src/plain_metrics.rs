//! What the manager's metrics are made of in a build without the cargo
//! feature `http`, which brings `prometheus-client`: the same names with
//! the parts of its API the manager calls. Counters count, since status
//! and the overview read them; gauges and histograms take values and keep
//! none, and nothing encodes any of them.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A count that only goes up.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one; returns the count before.
    pub fn inc(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds `n`; returns the count before.
    pub fn inc_by(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::Relaxed)
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value set from time to time; kept by nobody here.
#[derive(Debug)]
pub struct Gauge<N = i64, A = ()>(PhantomData<fn() -> (N, A)>);

impl<N, A> Gauge<N, A> {
    /// Takes a value.
    pub fn set(&self, _: N) {}
}

impl<N, A> Default for Gauge<N, A> {
    fn default() -> Self {
        Gauge(PhantomData)
    }
}

impl<N, A> Clone for Gauge<N, A> {
    fn clone(&self) -> Self {
        Gauge(PhantomData)
    }
}

/// Observations; kept by nobody here.
#[derive(Debug, Clone)]
pub struct Histogram;

impl Histogram {
    /// A histogram with these bucket bounds.
    pub fn new(_buckets: impl IntoIterator<Item = f64>) -> Histogram {
        Histogram
    }

    /// Takes an observation.
    pub fn observe(&self, _: f64) {}
}

/// `length` bucket bounds from `start`, each `factor` times the one before.
pub fn exponential_buckets(start: f64, factor: f64, length: u16) -> impl Iterator<Item = f64> {
    std::iter::successors(Some(start), move |b| Some(b * factor)).take(usize::from(length))
}

/// Metrics by label set; every label set gets a metric of its own.
#[derive(Debug)]
pub struct Family<L, M>(PhantomData<fn() -> (L, M)>);

impl<L, M: Default> Family<L, M> {
    /// A new metric for `labels`.
    pub fn get_or_create(&self, _labels: &L) -> M {
        M::default()
    }
}

impl<L, M> Default for Family<L, M> {
    fn default() -> Self {
        Family(PhantomData)
    }
}

impl<L, M> Clone for Family<L, M> {
    fn clone(&self) -> Self {
        Family(PhantomData)
    }
}

/// Where metrics are registered; keeps nothing here.
#[derive(Debug, Default)]
pub struct Registry {
    _nothing: (),
}

impl Registry {
    /// Takes a metric with its name and help text.
    pub fn register<M>(&mut self, _name: &str, _help: &str, _metric: M) {}
}
