//! Parallel schedulers keep the static order's memory benefit: producers of large results are
//! not run ahead of the consumers that free them (Dask shape E: producers of big arrays, each
//! summed by one dependent).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::watchdog;
use forkgraph::{
    Arg, Callbacks, GetOptions, Graph, Key, Keys, ProcessPool, Scheduler, ThreadPool, Value,
};

#[forkgraph::task]
fn produce(i: i64) -> Vec<u8> {
    vec![i as u8; 2 << 20]
}

#[forkgraph::task]
fn consume(v: &[u8]) -> u64 {
    v.iter().map(|&b| b as u64).sum()
}

/// Counts producer results made and not yet consumed, and the most at once.
#[derive(Default)]
struct Alive {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Callbacks for Alive {
    fn posttask(&self, key: &Key, _value: &Value) {
        if key.to_string().contains("produce") {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
        } else {
            self.now.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn shape_e(n: i64) -> (Graph, Keys) {
    let mut g = Graph::new();
    let mut keys = Vec::new();
    for i in 0..n {
        g.task(("produce", i), "produce", vec![Arg::Value(i.into())]);
        g.task(
            ("consume", i),
            "consume",
            vec![Arg::Key(("produce", i).into())],
        );
        keys.push(Keys::from(("consume", i)));
    }
    (g, Keys::List(keys))
}

fn peak_on(s: &dyn Fn(&Graph, &Keys, &GetOptions) -> usize) -> usize {
    let (g, keys) = shape_e(12);
    let alive = Arc::new(Alive::default());
    let opts = GetOptions::new().callback(alive.clone());
    assert_eq!(s(&g, &keys, &opts), 12);
    alive.peak.load(Ordering::SeqCst)
}

#[test]
fn threads_hold_at_most_as_many_large_results_as_they_run() {
    let peak = watchdog(60, || {
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        peak_on(&|g, k, o| pool.get_with(g, k, o).unwrap().as_list().unwrap().len())
    });
    assert!(
        peak <= 2,
        "{peak} producer results alive at once on 2 threads"
    );
}

#[test]
fn processes_hold_at_most_as_many_large_results_as_they_run() {
    let peak = watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        peak_on(&|g, k, o| pool.get_with(g, k, o).unwrap().as_list().unwrap().len())
    });
    assert!(
        peak <= 2,
        "{peak} producer results alive at once on 2 workers"
    );
}
