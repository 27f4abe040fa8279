//! Per-task scheduling overhead of the sync and threaded schedulers on the trivial-task shapes of
//! the Dask baseline (`../shared/bench/README.md`), with rayon doing the same work as the
//! thread baseline.
//!
//! - A: 10,000 independent `inc` tasks + one sum over all of them (10,001 tasks)
//! - B: a linear chain of 2,000 `inc` tasks
//! - C: a pairwise tree reduction of 4,096 leaves (8,191 tasks)
//!
//! Each `get` includes planning (cull, compile, order), as Dask's `get` does; building the
//! graph is measured separately (`build/*`). Throughput is reported in tasks, so criterion's
//! "elem/s" is tasks per second (1 / that = seconds per task).
//!
//! Run: `cargo bench --bench overhead` (about a minute). The 1,000,000-task order + schedule
//! measurement with allocation counts is `cargo bench --bench million`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use forkgraph::{Arg, Graph, Key, SyncScheduler, Task, ThreadPool};

const FLAT_N: usize = 10_000;
const CHAIN_N: usize = 2_000;
const TREE_LEAVES: usize = 4_096;
const THREADS: usize = 2;

#[forkgraph::task]
fn inc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[forkgraph::task]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

fn lit(i: usize) -> Arg {
    Arg::Value((i as i64).into())
}

/// A shape: the graph, the key to get, its task count and the expected result.
struct Shape {
    name: &'static str,
    graph: Graph,
    target: Key,
    tasks: usize,
    expected: i64,
}

fn flat(n: usize) -> Shape {
    let mut g = Graph::with_capacity(n + 1);
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let k = format!("inc-{i}");
        g.insert(k.as_str(), Task::new("inc", vec![lit(i)]));
        keys.push(Arg::Key(Key::from(k)));
    }
    g.insert("total", Task::new("total", vec![Arg::List(keys)]));
    let n = n as i64;
    Shape {
        name: "A-flat",
        graph: g,
        target: "total".into(),
        tasks: n as usize + 1,
        expected: n * (n + 1) / 2,
    }
}

fn chain(n: usize) -> Shape {
    let mut g = Graph::with_capacity(n);
    g.insert("chain-0", Task::new("inc", vec![lit(0)]));
    for i in 1..n {
        let prev = Arg::Key(format!("chain-{}", i - 1).into());
        g.insert(format!("chain-{i}"), Task::new("inc", vec![prev]));
    }
    Shape {
        name: "B-chain",
        graph: g,
        target: format!("chain-{}", n - 1).into(),
        tasks: n,
        expected: n as i64,
    }
}

fn tree(leaves: usize) -> Shape {
    assert!(leaves.is_power_of_two());
    let mut g = Graph::with_capacity(2 * leaves);
    let mut level: Vec<Key> = (0..leaves)
        .map(|i| Key::from(format!("leaf-{i}")))
        .collect();
    for (i, k) in level.iter().enumerate() {
        g.insert(k, Task::new("inc", vec![lit(i)]));
    }
    let mut depth = 0;
    while level.len() > 1 {
        let next: Vec<Key> = level
            .chunks(2)
            .enumerate()
            .map(|(j, pair)| {
                let k = Key::from(format!("add-{depth}-{j}"));
                let args = vec![Arg::Key(pair[0].clone()), Arg::Key(pair[1].clone())];
                g.insert(&k, Task::new("add", args));
                k
            })
            .collect();
        level = next;
        depth += 1;
    }
    let n = leaves as i64;
    Shape {
        name: "C-tree",
        tasks: g.len(),
        graph: g,
        target: level.pop().expect("a root"),
        expected: n * (n + 1) / 2,
    }
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, tasks: usize) {
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(tasks as u64));
}

fn schedulers(c: &mut Criterion) {
    let pool = ThreadPool::builder()
        .threads(THREADS)
        .build()
        .expect("thread pool");
    for shape in [flat(FLAT_N), chain(CHAIN_N), tree(TREE_LEAVES)] {
        // Check once, outside the timing, that both schedulers compute the right thing.
        for (name, got) in [
            (
                "sync",
                SyncScheduler.get(&shape.graph, shape.target.clone()),
            ),
            ("threads", pool.get(&shape.graph, shape.target.clone())),
        ] {
            let got = got.expect("get").to::<i64>().expect("an integer");
            assert_eq!(got, shape.expected, "{} on {name}", shape.name);
        }
        let mut group = c.benchmark_group(shape.name);
        configure(&mut group, shape.tasks);
        group.bench_function("sync", |b| {
            b.iter(|| SyncScheduler.get(black_box(&shape.graph), shape.target.clone()))
        });
        group.bench_function("threads-2", |b| {
            b.iter(|| pool.get(black_box(&shape.graph), shape.target.clone()))
        });
        group.finish();
    }
}

fn construction(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    configure(&mut group, FLAT_N + 1);
    group.bench_function("A-flat", |b| b.iter(|| flat(black_box(FLAT_N))));
    group.throughput(Throughput::Elements(2 * TREE_LEAVES as u64 - 1));
    group.bench_function("C-tree", |b| b.iter(|| tree(black_box(TREE_LEAVES))));
    group.finish();
}

fn inc_plain(x: i64) -> i64 {
    x + 1
}

/// The tree of shape C with one `rayon::join` per inner node.
fn rayon_tree(lo: i64, hi: i64) -> i64 {
    if hi - lo == 1 {
        return black_box(inc_plain(lo));
    }
    let mid = lo + (hi - lo) / 2;
    let (a, b) = rayon::join(|| rayon_tree(lo, mid), || rayon_tree(mid, hi));
    a + b
}

fn rayon_baseline(c: &mut Criterion) {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .expect("rayon pool");
    let n = FLAT_N as i64;
    let leaves = TREE_LEAVES as i64;

    let mut group = c.benchmark_group("A-flat");
    configure(&mut group, FLAT_N + 1);
    // Idiomatic: par_iter splits adaptively, so most "tasks" are loop iterations.
    group.bench_function("rayon-par_iter", |b| {
        b.iter(|| {
            pool.install(|| {
                let v: Vec<i64> = (0..n)
                    .into_par_iter()
                    .map(|i| black_box(inc_plain(i)))
                    .collect();
                let s: i64 = v.iter().sum();
                assert_eq!(s, n * (n + 1) / 2);
                s
            })
        })
    });
    // One spawned job per task, as a task scheduler does.
    group.bench_function("rayon-spawn", |b| {
        b.iter(|| {
            let mut v = vec![0i64; FLAT_N];
            pool.scope(|s| {
                for (i, slot) in v.iter_mut().enumerate() {
                    s.spawn(move |_| *slot = black_box(inc_plain(i as i64)));
                }
            });
            let s: i64 = v.iter().sum();
            assert_eq!(s, n * (n + 1) / 2);
            s
        })
    });
    group.finish();

    let mut group = c.benchmark_group("C-tree");
    configure(&mut group, 2 * TREE_LEAVES - 1);
    group.bench_function("rayon-join", |b| {
        b.iter(|| {
            let s = pool.install(|| rayon_tree(0, leaves));
            assert_eq!(s, leaves * (leaves + 1) / 2);
            s
        })
    });
    group.finish();
}

criterion_group!(benches, schedulers, rayon_baseline, construction);
criterion_main!(benches);
