//! The sandbox's costs (README "Running untrusted code"): worker restart (kill, reap, fork,
//! sandbox set-up, first message from the new worker) and per-task overhead on shape A
//! (10,000 independent tasks and a sum, 2 workers), each with the sandbox off and on, in one
//! run. `restart/sandbox+cgroup` also gives each worker its memory cgroup (a memory limit;
//! root or a delegated hierarchy).
//!
//! Run: `cargo bench --bench sandbox`. Throughput is in tasks: 1 / (elem/s) is the time per task.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use forkgraph::{Arg, Graph, Key, ProcessPool, Sandbox, Task};

#[forkgraph::task]
fn sinc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn stotal(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

/// Shape A: `n` independent tasks and one sum over them.
fn flat(n: usize) -> (Graph, Key, usize) {
    let mut g = Graph::with_capacity(n + 1);
    let mut parts = Vec::with_capacity(n);
    for i in 0..n {
        g.insert(
            format!("inc-{i}"),
            Task::new("sinc", vec![Arg::Value((i as i64).into())]),
        );
        parts.push(Arg::Key(Key::from(format!("inc-{i}"))));
    }
    g.insert("sum", Task::new("stotal", vec![Arg::List(parts)]));
    (g, Key::from("sum"), n + 1)
}

fn pools() -> Vec<(&'static str, ProcessPool)> {
    let off = ProcessPool::builder().workers(2).build().expect("pool");
    let on = ProcessPool::builder()
        .workers(2)
        .sandbox(Sandbox::strict())
        .build()
        .expect("sandboxed pool");
    let cgroup = ProcessPool::builder()
        .workers(2)
        .sandbox(Sandbox::strict().memory_limit(1 << 30).best_effort())
        .build()
        .expect("sandboxed pool with a memory limit");
    vec![("off", off), ("sandbox", on), ("sandbox+cgroup", cgroup)]
}

fn overhead(c: &mut Criterion) {
    let (g, k, n) = flat(10_000);
    let mut group = c.benchmark_group("sandbox/A-flat-10k");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(n as u64));
    for (name, pool) in pools().iter().take(2) {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(pool.get(&g, k.clone()).unwrap()))
        });
    }
    group.finish();
}

fn restart(c: &mut Criterion) {
    let mut group = c.benchmark_group("sandbox/worker-restart");
    group.sample_size(50);
    for (name, pool) in pools() {
        group.bench_function(name, |b| {
            b.iter(|| black_box(pool.restart_worker(0).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, overhead, restart);
criterion_main!(benches);
