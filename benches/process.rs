//! Process-pool benchmarks: per-task dispatch overhead on the trivial-task shapes of the Dask
//! baseline (A: 10,000 independent tasks + a sum; B: a 2,000-task chain; C: a tree reduction of
//! 4,096 leaves), on 2 worker processes, and the time to replace a killed worker (kill, reap,
//! fork, first message from the new worker).
//!
//! The `calls` group measures the pool as an executor for concurrent callers, per task:
//! `submit` + `wait` one call at a time, `map` of 10,000 items, 8 threads each submitting 1,000
//! calls (then waiting for them) to one pool, and 8 threads each running a `get` of 1,000
//! independent tasks at once, against one `get` of the same 10,000 tasks as a graph.
//!
//! Run: `cargo bench --bench process`. Throughput is in tasks: 1 / (elem/s) is the time per task.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use forkgraph::{Arg, Graph, Key, ProcessPool, Task};

#[forkgraph::task]
fn pinc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn padd(x: i64, y: i64) -> i64 {
    x + y
}

#[forkgraph::task]
fn ptotal(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

fn key(s: String) -> Arg {
    Arg::Key(Key::from(s))
}

/// Shape A: `n` independent `pinc` tasks and one sum over them.
fn flat(n: usize) -> (Graph, Key, usize) {
    let mut g = Graph::with_capacity(n + 1);
    let mut parts = Vec::with_capacity(n);
    for i in 0..n {
        g.insert(
            format!("inc-{i}"),
            Task::new("pinc", vec![Arg::Value((i as i64).into())]),
        );
        parts.push(key(format!("inc-{i}")));
    }
    g.insert("sum", Task::new("ptotal", vec![Arg::List(parts)]));
    (g, Key::from("sum"), n + 1)
}

/// Shape B: a chain of `n` `pinc` tasks.
fn chain(n: usize) -> (Graph, Key, usize) {
    let mut g = Graph::with_capacity(n + 1);
    g.insert("c-0", Task::new("pinc", vec![Arg::Value(0i64.into())]));
    for i in 1..n {
        g.insert(
            format!("c-{i}"),
            Task::new("pinc", vec![key(format!("c-{}", i - 1))]),
        );
    }
    (g, Key::from(format!("c-{}", n - 1)), n)
}

/// Shape C: a pairwise tree reduction of `leaves` leaves.
fn tree(leaves: usize) -> (Graph, Key, usize) {
    let mut g = Graph::with_capacity(2 * leaves);
    let mut layer: Vec<String> = (0..leaves)
        .map(|i| {
            let k = format!("t-0-{i}");
            g.insert(
                k.as_str(),
                Task::new("pinc", vec![Arg::Value((i as i64).into())]),
            );
            k
        })
        .collect();
    let mut level = 0;
    let mut tasks = leaves;
    while layer.len() > 1 {
        level += 1;
        layer = layer
            .chunks(2)
            .enumerate()
            .map(|(j, p)| {
                let k = format!("t-{level}-{j}");
                g.insert(
                    k.as_str(),
                    Task::new("padd", vec![key(p[0].clone()), key(p[1].clone())]),
                );
                tasks += 1;
                k
            })
            .collect();
    }
    (g, Key::from(layer[0].as_str()), tasks)
}

fn shapes(c: &mut Criterion) {
    let pool = ProcessPool::builder().workers(2).build().expect("pool");
    let mut group = c.benchmark_group("process");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for (name, (g, k, n)) in [
        ("A-flat-10k", flat(10_000)),
        ("B-chain-2k", chain(2_000)),
        ("C-tree-4096", tree(4_096)),
    ] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(pool.get(&g, k.clone()).unwrap()))
        });
    }
    group.finish();
}

fn restart(c: &mut Criterion) {
    let pool = ProcessPool::builder().workers(2).build().expect("pool");
    let mut group = c.benchmark_group("process");
    group.sample_size(50);
    group.bench_function("worker-restart", |b| {
        b.iter(|| black_box(pool.restart_worker(0).unwrap()))
    });
    group.finish();
}

/// `n` independent `pinc` tasks, all requested.
fn independent(n: usize, prefix: &str) -> (Graph, forkgraph::Keys) {
    let mut g = Graph::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let k = Key::from(format!("{prefix}-{i}"));
        g.insert(
            k.clone(),
            Task::new("pinc", vec![Arg::Value((i as i64).into())]),
        );
        keys.push(forkgraph::Keys::One(k));
    }
    (g, forkgraph::Keys::List(keys))
}

fn calls(c: &mut Criterion) {
    let pool = ProcessPool::builder().workers(2).build().expect("pool");
    let mut group = c.benchmark_group("calls");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let (g, keys) = independent(10_000, "i");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("get-graph-10k", |b| {
        b.iter(|| black_box(pool.get(&g, keys.clone()).unwrap()))
    });
    group.bench_function("map-10k", |b| {
        b.iter(|| black_box(pool.map("pinc", 0..10_000i64).unwrap()))
    });
    group.throughput(Throughput::Elements(8_000));
    group.bench_function("8-threads-submit-1k-each", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for t in 0..8i64 {
                    let pool = &pool;
                    s.spawn(move || {
                        let hs: Vec<_> = (0..1_000i64)
                            .map(|i| pool.submit("pinc", t * 1_000 + i))
                            .collect();
                        for h in hs {
                            black_box(h.wait().unwrap());
                        }
                    });
                }
            })
        })
    });
    let graphs: Vec<_> = (0..8)
        .map(|t| independent(1_000, &format!("t{t}")))
        .collect();
    group.bench_function("8-threads-get-1k-each", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for (g, k) in &graphs {
                    let pool = &pool;
                    s.spawn(move || black_box(pool.get(g, k.clone()).unwrap()));
                }
            })
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("submit-wait-one", |b| {
        b.iter(|| black_box(pool.submit("pinc", 1i64).wait().unwrap()))
    });
    group.finish();
}

criterion_group!(benches, shapes, restart, calls);
criterion_main!(benches);
