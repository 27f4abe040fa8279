//! The Dask baseline's workloads (`../shared/bench/README.md`) on forkgraph's schedulers,
//! printed as a table like `dask_baseline.py`'s, so the two can be run side by side.
//!
//! ```text
//! cargo run --release --example bench_suite                      # full run, about a minute
//! cargo run --release --example bench_suite -- --quick           # small sizes, a few seconds
//! cargo run --release --example bench_suite -- --only A,E --json out.json
//! cargo run --release --example bench_suite -- --schedulers sync,threads,procs
//! cargo run --release --example bench_suite -- --no-hugepages    # no MADV_HUGEPAGE advice
//! mpirun --bind-to none --oversubscribe -np 3 target/release/examples/bench_suite --schedulers procs,mpi
//!     # the MPI cluster (build with `--features mpi`): one worker per rank
//! cargo run --release --example bench_suite -- --profile         # with a Profiler on each get
//! cargo run --release --example bench_suite -- --compare dask.json # markdown table vs Dask
//! cargo run --release --example bench_suite -- --only P          # the pool as an executor
//! ```
//!
//! `--only P` (never part of the default run) measures a 2-worker process pool as an executor
//! for concurrent callers, per task: one `get` of 10,000 independent `inc` tasks as a graph;
//! `map` of the same 10,000 items; `submit` + `wait` one call at a time; 8 threads each
//! submitting 10,000 calls (then waiting for them); and 8 threads each running a `get` of
//! 10,000 tasks at the same time (1,000 each with `--quick`).
//!
//! Shapes and sizes mirror `dask_baseline.py`: 0 one task; A 10,000 independent `inc` + a sum;
//! B a chain of 2,000 `inc`; C a pairwise tree over 4,096 leaves; D load/clean/analyze/store over
//! 8 arrays of 8 MiB; E 4 producers of 256 MiB arrays, each summed by a dependent; F 16 tasks of
//! ~50 ms CPU each (burn loop calibrated here) + a sum. Each cell is the best of N wall-clock
//! runs of `get` (planning included, graph construction not), and every scheduler's result is
//! checked against the sync scheduler's.
//!
//! Large arrays are allocated the way NumPy allocates them in the Dask baseline, with
//! transparent huge pages advised (see [`HugePageAdvice`]); `--no-hugepages` measures with the
//! plain system allocator instead.
//!
//! Peak RSS is the kernel's high-water mark (`VmHWM`) of this process plus its descendants
//! (worker processes of a process pool), each reset before every run by writing `5` to
//! `/proc/PID/clear_refs`. Resetting in place, rather than running each case in a fresh child
//! process, keeps the measured run identical to the timed one (same warm pools, same heap),
//! and the "before" figure shows what the process already held. A sum over processes counts
//! shared pages more than once, as the Dask baseline's does.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use forkgraph::{
    Arg, BuildError, Graph, Key, ProcessPool, Scheduler, SyncScheduler, Task, ThreadPool, Value,
};

/// Workers per parallel scheduler, as `NUM_WORKERS` in the Dask baseline.
const NUM_WORKERS: usize = 2;
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Task functions (the Dask baseline's, in Rust).
// ---------------------------------------------------------------------------------------------

#[forkgraph::task]
fn inc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Python's `sum` over integers.
#[forkgraph::task]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

/// Python's `sum` over floats.
#[forkgraph::task]
fn fsum(xs: Vec<f64>) -> f64 {
    xs.iter().sum()
}

/// A CPU loop that the optimizer cannot shorten; `n` is calibrated to ~50 ms.
#[forkgraph::task]
fn burn(n: u64) -> i64 {
    let mut acc = 0i64;
    for i in 0..n {
        acc += (black_box(i) & 7) as i64;
    }
    acc
}

/// "Reads" `filename`: `n` values in [0, 1) from a generator seeded by the name.
#[forkgraph::task]
fn load(filename: &str, n: usize) -> Vec<f64> {
    let mut state = fnv1a(filename.as_bytes());
    (0..n)
        .map(|_| (splitmix64(&mut state) >> 11) as f64 * (1.0 / (1u64 << 53) as f64))
        .collect()
}

#[forkgraph::task]
fn clean(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v.sqrt() * 2.0 + 1.0).collect()
}

/// Element-wise sum of the arrays (`functools.reduce(np.add, seq)`).
#[forkgraph::task]
fn analyze(seq: Vec<&[f64]>) -> Result<Vec<f64>, String> {
    let mut out = seq.first().ok_or("analyze: no arrays")?.to_vec();
    for a in &seq[1..] {
        if a.len() != out.len() {
            return Err(format!(
                "analyze: lengths differ ({} and {})",
                out.len(),
                a.len()
            ));
        }
        out.iter_mut().zip(a.iter()).for_each(|(o, v)| *o += v);
    }
    Ok(out)
}

/// Writes the sum of `result` to `path` and returns it.
#[forkgraph::task]
fn store(result: &[f64], path: &str) -> Result<f64, String> {
    let value = pairwise_sum(result);
    std::fs::write(path, format!("{value:?}\n")).map_err(|e| format!("{path}: {e}"))?;
    Ok(value)
}

/// `np.arange(i, i + n, dtype=float64)`.
#[forkgraph::task]
fn make_big(n: usize, i: i64) -> Vec<f64> {
    (0..n).map(|k| (i + k as i64) as f64).collect()
}

#[forkgraph::task]
fn big_sum(a: &[f64]) -> f64 {
    pairwise_sum(a)
}

/// The sum of `a` as NumPy's `np.sum` computes it (pairwise summation): halves down to blocks
/// of 128 values, each summed with eight independent accumulators. `a.iter().sum()` adds one
/// value at a time into one accumulator, so each addition waits for the previous one (about 4
/// cycles each); independent accumulators let the CPU overlap them, so the bench compares the
/// schedulers rather than the summing loops (and rounding errors grow as log n, not n).
fn pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    if a.len() <= BLOCK {
        let mut acc = [0.0f64; 8];
        let chunks = a.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (s, x) in acc.iter_mut().zip(c) {
                *s += x;
            }
        }
        let mut sum =
            ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for x in rest {
            sum += x;
        }
        return sum;
    }
    // Split at a multiple of 8, so that every block but the last is whole chunks.
    let half = (a.len() / 2) & !7;
    pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// Graphs.
// ---------------------------------------------------------------------------------------------

/// Sizes, as `params_for` in the Dask baseline.
#[derive(Debug, Clone)]
struct Params {
    flat_n: usize,
    chain_n: usize,
    tree_leaves: usize,
    pipe_files: usize,
    pipe_elems: usize,
    big_tasks: usize,
    big_elems: usize,
    cpu_tasks: usize,
    cpu_target_s: f64,
    repeats: usize,
    heavy_repeats: usize,
    burn_n: u64,
    tmpdir: PathBuf,
}

impl Params {
    fn new(quick: bool, tmpdir: PathBuf) -> Params {
        if quick {
            Params {
                flat_n: 1000,
                chain_n: 200,
                tree_leaves: 512,
                pipe_files: 8,
                pipe_elems: 128 * 1024,
                big_tasks: 4,
                big_elems: 2 * MIB,
                cpu_tasks: 16,
                cpu_target_s: 0.005,
                repeats: 2,
                heavy_repeats: 1,
                burn_n: 0,
                tmpdir,
            }
        } else {
            Params {
                flat_n: 10_000,
                chain_n: 2_000,
                tree_leaves: 4096,
                pipe_files: 8,
                pipe_elems: MIB,
                big_tasks: 4,
                big_elems: 32 * MIB,
                cpu_tasks: 16,
                cpu_target_s: 0.050,
                repeats: 5,
                heavy_repeats: 3,
                burn_n: 0,
                tmpdir,
            }
        }
    }
}

/// A graph to run, with what it is measured by.
struct Shape {
    graph: Graph,
    target: Key,
    ntasks: usize,
    /// Bytes produced by the tasks whose output must travel (for GB/s).
    payload_bytes: u64,
}

fn task(func: &str, args: Vec<Arg>) -> Task {
    Task::new(func, args)
}

fn lit(v: impl Into<Value>) -> Arg {
    Arg::Value(v.into())
}

fn key(k: impl Into<Key>) -> Arg {
    Arg::Key(k.into())
}

fn keys(ks: impl IntoIterator<Item = String>) -> Arg {
    Arg::List(ks.into_iter().map(key).collect())
}

fn graph_startup(_: &Params) -> Shape {
    let mut g = Graph::new();
    g.insert("x", task("inc", vec![lit(1)]));
    Shape {
        graph: g,
        target: "x".into(),
        ntasks: 1,
        payload_bytes: 0,
    }
}

fn graph_flat(p: &Params) -> Shape {
    let n = p.flat_n;
    let mut g = Graph::with_capacity(n + 1);
    for i in 0..n {
        g.insert(format!("inc-{i}"), task("inc", vec![lit(i)]));
    }
    g.insert(
        "total",
        task("total", vec![keys((0..n).map(|i| format!("inc-{i}")))]),
    );
    Shape {
        graph: g,
        target: "total".into(),
        ntasks: n + 1,
        payload_bytes: 0,
    }
}

fn graph_chain(p: &Params) -> Shape {
    let n = p.chain_n;
    let mut g = Graph::with_capacity(n);
    g.insert("chain-0", task("inc", vec![lit(0)]));
    for i in 1..n {
        g.insert(
            format!("chain-{i}"),
            task("inc", vec![key(format!("chain-{}", i - 1))]),
        );
    }
    Shape {
        graph: g,
        target: format!("chain-{}", n - 1).into(),
        ntasks: n,
        payload_bytes: 0,
    }
}

fn graph_tree(p: &Params) -> Shape {
    let n = p.tree_leaves;
    assert!(n.is_power_of_two(), "tree_leaves must be a power of two");
    let mut g = Graph::with_capacity(2 * n);
    let mut level: Vec<String> = (0..n).map(|i| format!("leaf-{i}")).collect();
    for (i, k) in level.iter().enumerate() {
        g.insert(k, task("inc", vec![lit(i)]));
    }
    let mut depth = 0;
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len() / 2);
        for (j, pair) in level.chunks(2).enumerate() {
            let k = format!("add-{depth}-{j}");
            g.insert(&k, task("add", vec![key(&pair[0]), key(&pair[1])]));
            next.push(k);
        }
        level = next;
        depth += 1;
    }
    Shape {
        ntasks: g.len(),
        graph: g,
        target: level.pop().expect("a root").into(),
        payload_bytes: 0,
    }
}

fn graph_pipeline(p: &Params) -> Shape {
    let (files, n) = (p.pipe_files, p.pipe_elems);
    let out = p.tmpdir.join("pipeline-result.txt");
    let mut g = Graph::new();
    for i in 0..files {
        g.insert(
            format!("load-{i}"),
            task("load", vec![lit(format!("myfile.{i}.data")), lit(n)]),
        );
        g.insert(
            format!("clean-{i}"),
            task("clean", vec![key(format!("load-{i}"))]),
        );
    }
    g.insert(
        "analyze",
        task(
            "analyze",
            vec![keys((0..files).map(|i| format!("clean-{i}")))],
        ),
    );
    let path = out.to_str().expect("a UTF-8 temporary path").to_owned();
    g.insert("store", task("store", vec![key("analyze"), lit(path)]));
    Shape {
        ntasks: g.len(),
        graph: g,
        target: "store".into(),
        payload_bytes: (files * n * 8) as u64,
    }
}

fn graph_large(p: &Params) -> Shape {
    let (k, n) = (p.big_tasks, p.big_elems);
    let mut g = Graph::new();
    for i in 0..k {
        g.insert(format!("big-{i}"), task("make_big", vec![lit(n), lit(i)]));
        g.insert(
            format!("sum-{i}"),
            task("big_sum", vec![key(format!("big-{i}"))]),
        );
    }
    g.insert(
        "total",
        task("fsum", vec![keys((0..k).map(|i| format!("sum-{i}")))]),
    );
    Shape {
        ntasks: g.len(),
        graph: g,
        target: "total".into(),
        payload_bytes: (k * n * 8) as u64,
    }
}

fn graph_cpu(p: &Params) -> Shape {
    let k = p.cpu_tasks;
    let mut g = Graph::new();
    for i in 0..k {
        g.insert(format!("burn-{i}"), task("burn", vec![lit(p.burn_n)]));
    }
    g.insert(
        "total",
        task("total", vec![keys((0..k).map(|i| format!("burn-{i}")))]),
    );
    Shape {
        graph: g,
        target: "total".into(),
        ntasks: k + 1,
        payload_bytes: 0,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Metric {
    None,
    PerTask,
    Gbps,
    Speedup,
}

struct Bench {
    code: &'static str,
    name: &'static str,
    build: fn(&Params) -> Shape,
    metric: Metric,
    /// Fewer repeats.
    heavy: bool,
    track_rss: bool,
}

const BENCHES: &[Bench] = &[
    Bench {
        code: "0",
        name: "startup (1 task)",
        build: graph_startup,
        metric: Metric::None,
        heavy: false,
        track_rss: false,
    },
    Bench {
        code: "A",
        name: "overhead-flat",
        build: graph_flat,
        metric: Metric::PerTask,
        heavy: false,
        track_rss: false,
    },
    Bench {
        code: "B",
        name: "overhead-chain",
        build: graph_chain,
        metric: Metric::PerTask,
        heavy: false,
        track_rss: false,
    },
    Bench {
        code: "C",
        name: "tree-reduction",
        build: graph_tree,
        metric: Metric::PerTask,
        heavy: false,
        track_rss: false,
    },
    Bench {
        code: "D",
        name: "pipeline",
        build: graph_pipeline,
        metric: Metric::Gbps,
        heavy: false,
        track_rss: true,
    },
    Bench {
        code: "E",
        name: "large-intermediate",
        build: graph_large,
        metric: Metric::Gbps,
        heavy: true,
        track_rss: true,
    },
    Bench {
        code: "F",
        name: "cpu-bound",
        build: graph_cpu,
        metric: Metric::Speedup,
        heavy: true,
        track_rss: false,
    },
];

// ---------------------------------------------------------------------------------------------
// Schedulers: one line each. A column is built only when selected.
// ---------------------------------------------------------------------------------------------

type MakeScheduler = fn() -> Result<Box<dyn Scheduler>, BuildError>;

/// Every scheduler the suite knows, in column order.
fn schedulers() -> Vec<(&'static str, MakeScheduler)> {
    #[allow(unused_mut)]
    let mut all: Vec<(&'static str, MakeScheduler)> =
        vec![("sync", sync), ("threads", threads), ("procs", procs)];
    #[cfg(feature = "mpi")]
    all.push(("mpi", mpi));
    all
}

/// The MPI cluster (feature `mpi`; run under `mpirun --bind-to none -np 3`): one worker per
/// rank. Ranks other than 0 serve inside `init` and exit there.
#[cfg(feature = "mpi")]
fn mpi() -> Result<Box<dyn Scheduler>, BuildError> {
    Ok(Box::new(
        forkgraph::MpiCluster::builder()
            .workers_per_rank(Some(1))
            .init()?,
    ))
}

fn sync() -> Result<Box<dyn Scheduler>, BuildError> {
    Ok(Box::new(SyncScheduler))
}

fn threads() -> Result<Box<dyn Scheduler>, BuildError> {
    Ok(Box::new(
        ThreadPool::builder().threads(NUM_WORKERS).build()?,
    ))
}

fn procs() -> Result<Box<dyn Scheduler>, BuildError> {
    Ok(Box::new(
        ProcessPool::builder().workers(NUM_WORKERS).build()?,
    ))
}

/// Columns run when `--schedulers` is not given.
const DEFAULT_SCHEDULERS: &str = "sync,threads";

// ---------------------------------------------------------------------------------------------
// Measurement.
// ---------------------------------------------------------------------------------------------

/// Peak resident memory of this process and its descendants, from `/proc`.
mod rss {
    use std::fs;

    /// This process and all its descendants (found through the parent ids in `/proc/*/stat`).
    fn family() -> Vec<u32> {
        let me = std::process::id();
        let mut parents: Vec<(u32, u32)> = Vec::new();
        if let Ok(dir) = fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|s| s.parse().ok());
                if let Some(ppid) = ppid {
                    parents.push((pid, ppid));
                }
            }
        }
        let mut out = vec![me];
        let mut i = 0;
        while i < out.len() {
            let p = out[i];
            out.extend(parents.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
            i += 1;
        }
        out
    }

    fn status_kib(pid: u32, field: &str) -> u64 {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Resets the high-water marks to the current RSS; false when the kernel refused.
    pub(crate) fn reset() -> bool {
        family()
            .iter()
            .all(|pid| fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
    }

    /// Summed current RSS, MiB.
    pub(crate) fn current_mib() -> f64 {
        family()
            .iter()
            .map(|&p| status_kib(p, "VmRSS:"))
            .sum::<u64>() as f64
            / 1024.0
    }

    /// Summed high-water marks since the last reset, MiB.
    pub(crate) fn peak_mib() -> f64 {
        family()
            .iter()
            .map(|&p| status_kib(p, "VmHWM:"))
            .sum::<u64>() as f64
            / 1024.0
    }
}

/// One scheduler's results on one benchmark.
#[derive(Default)]
struct Cell {
    times_s: Vec<f64>,
    error: Option<String>,
    result: Option<Value>,
    peak_rss_mib: Option<f64>,
    rss_baseline_mib: Option<f64>,
}

impl Cell {
    fn best(&self) -> Option<f64> {
        self.times_s.iter().copied().reduce(f64::min)
    }
}

fn same_result(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) || x == y
        }
        _ => a == b,
    }
}

fn run_cell(
    bench: &Bench,
    shape: &Shape,
    sched: &dyn Scheduler,
    repeats: usize,
    expected: Option<&Value>,
) -> Cell {
    let mut cell = Cell::default();
    let keys = forkgraph::Keys::One(shape.target.clone());
    let opts = if PROFILE.load(Ordering::Relaxed) {
        // A fresh profiler per cell, so a cell's runs do not grow one ever larger record.
        let p = std::sync::Arc::new(forkgraph::Profiler::new());
        forkgraph::GetOptions::default().callback(p)
    } else {
        forkgraph::GetOptions::default()
    };
    for _ in 0..repeats {
        let reset_ok = bench.track_rss && rss::reset();
        let before = bench.track_rss.then(rss::current_mib);
        let t0 = Instant::now();
        let out = sched.get_with(&shape.graph, &keys, &opts);
        let dt = t0.elapsed().as_secs_f64();
        let value = match out {
            Ok(o) => o.into_value(),
            Err(e) => {
                cell.error = Some(e.to_string());
                break;
            }
        };
        if bench.track_rss {
            let peak = rss::peak_mib();
            cell.peak_rss_mib = Some(cell.peak_rss_mib.map_or(peak, |p: f64| p.max(peak)));
            cell.rss_baseline_mib = before;
            if !reset_ok {
                cell.error = Some("cannot reset VmHWM (/proc/self/clear_refs)".into());
            }
        }
        if let Some(e) = expected.filter(|e| !same_result(e, &value)) {
            cell.error = Some(format!("wrong result {value:?} != {e:?}"));
            break;
        }
        cell.times_s.push(dt);
        cell.result = Some(value);
    }
    cell
}

fn calibrate_burn(target_s: f64) -> u64 {
    let timed = |n: u64| {
        (0..3)
            .map(|_| {
                let t0 = Instant::now();
                black_box(burn(black_box(n)));
                t0.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let mut n = 100_000u64;
    while timed(n) < 0.01 {
        n *= 4;
    }
    for _ in 0..2 {
        n = ((n as f64 * target_s / timed(n)) as u64).max(1);
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Reporting.
// ---------------------------------------------------------------------------------------------

struct Row {
    code: &'static str,
    name: &'static str,
    metric: Metric,
    ntasks: usize,
    payload_bytes: u64,
    repeats: usize,
    build_s: f64,
    cells: Vec<(&'static str, Cell)>,
}

fn fmt_time(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0} us", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// Formats one extra line's cell.
type CellText = Box<dyn Fn(&Cell) -> String>;

fn print_table(rows: &[Row], names: &[&str]) {
    let (w0, w) = (30, 15);
    let mut out = String::new();
    let _ = write!(out, "\n{:<w0$}{:>7}", "benchmark", "tasks");
    for n in names {
        let _ = write!(out, "{n:>w$}");
    }
    let _ = writeln!(out, "\n{}", "-".repeat(w0 + 7 + w * names.len()));
    for r in rows {
        let _ = write!(
            out,
            "{:<w0$}{:>7}",
            format!("{} {}", r.code, r.name),
            r.ntasks
        );
        for (_, c) in &r.cells {
            let s = match (c.best(), &c.error) {
                (Some(b), None) => fmt_time(b),
                (_, Some(_)) => "ERROR".into(),
                _ => "-".into(),
            };
            let _ = write!(out, "{s:>w$}");
        }
        out.push('\n');
        let base = r
            .cells
            .iter()
            .find(|(n, _)| *n == "sync")
            .and_then(|(_, c)| c.best());
        let mut extra: Vec<(&str, CellText)> = Vec::new();
        let ntasks = r.ntasks as f64;
        let payload = r.payload_bytes as f64;
        match r.metric {
            Metric::PerTask => extra.push((
                "  us/task",
                Box::new(move |c| {
                    c.best()
                        .map_or(String::new(), |b| format!("{:.2}", b / ntasks * 1e6))
                }),
            )),
            Metric::Gbps => extra.push((
                "  GB/s (payload/time)",
                Box::new(move |c| {
                    c.best()
                        .map_or(String::new(), |b| format!("{:.2}", payload / b / 1e9))
                }),
            )),
            Metric::Speedup => extra.push((
                "  speedup vs sync",
                Box::new(move |c| match (base, c.best()) {
                    (Some(s), Some(b)) => format!("x{:.2}", s / b),
                    _ => String::new(),
                }),
            )),
            Metric::None => {}
        }
        if r.cells.iter().any(|(_, c)| c.peak_rss_mib.is_some()) {
            extra.push((
                "  peak RSS MiB (before run)",
                Box::new(|c| match (c.peak_rss_mib, c.rss_baseline_mib) {
                    (Some(p), Some(b)) => format!("{p:.0} ({b:.0})"),
                    _ => String::new(),
                }),
            ));
        }
        for (label, f) in &extra {
            let _ = write!(out, "{label:<width$}", width = w0 + 7);
            for (_, c) in &r.cells {
                let _ = write!(out, "{:>w$}", f(c));
            }
            out.push('\n');
        }
        for (n, c) in &r.cells {
            if let Some(e) = &c.error {
                let _ = writeln!(out, "  ! {n}: {}", e.chars().take(150).collect::<String>());
            }
        }
    }
    println!("{out}");
}

/// Prints a markdown table of this run next to a `dask_baseline.py --json` result: the metric
/// of each shape per scheduler, and how many times faster forkgraph is than Dask with the same
/// kind of scheduler.
fn print_comparison(rows: &[Row], dask: &serde_json::Value, quick: bool) {
    let dask_cols = ["sync", "threads", "procs-warm"];
    let ours: Vec<&str> = rows
        .first()
        .map(|r| r.cells.iter().map(|(n, _)| *n).collect())
        .unwrap_or_default();
    let pairs = [
        ("sync", "sync"),
        ("threads", "threads"),
        ("procs", "procs-warm"),
    ];
    let pairs: Vec<_> = pairs.iter().filter(|(o, _)| ours.contains(o)).collect();
    let mut out = String::from("| shape | metric |");
    for c in dask_cols {
        let _ = write!(out, " Dask {c} |");
    }
    for o in &ours {
        let _ = write!(out, " forkgraph {o} |");
    }
    for (o, d) in &pairs {
        let _ = write!(out, " {o} vs Dask {d} |");
    }
    let ncols = 2 + dask_cols.len() + ours.len() + pairs.len();
    let mut mismatched: Vec<&str> = Vec::new();
    let _ = writeln!(out, "\n|{}", "---|".repeat(ncols));
    for r in rows {
        let Some(d) = dask["benchmarks"].get(r.code) else {
            continue;
        };
        let dask_best = |c: &str| d["cells"][c]["best_s"].as_f64();
        let our_best = |c: &str| {
            r.cells
                .iter()
                .find(|(n, _)| *n == c)
                .and_then(|(_, cell)| cell.best())
        };
        // The shape's metric from a best time and the run's sizes; higher is better for GB/s.
        let metric = match r.metric {
            Metric::PerTask => "us/task",
            Metric::Gbps => "GB/s",
            Metric::Speedup | Metric::None => "time",
        };
        let value = |b: f64, ntasks: f64, payload: f64| match r.metric {
            Metric::PerTask => b / ntasks * 1e6,
            Metric::Gbps => payload / b / 1e9,
            Metric::Speedup | Metric::None => b,
        };
        let (our_n, our_p) = (r.ntasks as f64, r.payload_bytes as f64);
        let dask_n = d["ntasks"].as_f64().unwrap_or(our_n);
        let dask_p = d["payload_bytes"].as_f64().unwrap_or(our_p);
        if dask_n != our_n || dask_p != our_p {
            mismatched.push(r.code);
        }
        let ours_v = |c: &str| our_best(c).map(|b| value(b, our_n, our_p));
        let dask_v = |c: &str| dask_best(c).map(|b| value(b, dask_n, dask_p));
        let show = |v: Option<f64>| match (v, r.metric) {
            (None, _) => "error".to_owned(),
            (Some(v), Metric::PerTask | Metric::Gbps) => format!("{v:.2}"),
            (Some(v), _) => fmt_time(v),
        };
        let _ = write!(out, "| {} {} | {metric} |", r.code, r.name);
        for c in dask_cols {
            let _ = write!(out, " {} |", show(dask_v(c)));
        }
        for o in &ours {
            let _ = write!(out, " {} |", show(ours_v(o)));
        }
        for (o, dc) in &pairs {
            let ratio = match (ours_v(o), dask_v(dc)) {
                (Some(a), Some(b)) if r.metric == Metric::Gbps => format!("x{:.1}", a / b),
                (Some(a), Some(b)) => format!("x{:.1}", b / a),
                _ => "-".into(),
            };
            let _ = write!(out, " {ratio} |");
        }
        out.push('\n');
        if r.metric == Metric::Speedup {
            let speedup =
                |best: &dyn Fn(&str) -> Option<f64>, c: &str| match (best("sync"), best(c)) {
                    (Some(s), Some(b)) => format!("x{:.2}", s / b),
                    _ => "-".into(),
                };
            let _ = write!(out, "| {} speed-up vs own sync | |", r.code);
            for c in dask_cols {
                let _ = write!(out, " {} |", speedup(&dask_best, c));
            }
            for o in &ours {
                let _ = write!(out, " {} |", speedup(&our_best, o));
            }
            let _ = writeln!(out, "{}", " |".repeat(pairs.len()));
        }
        let rss = |cell: &serde_json::Value| match (
            cell["peak_rss_mib"].as_f64(),
            cell["rss_baseline_mib"].as_f64(),
        ) {
            (Some(p), Some(b)) => format!("{p:.0} ({b:.0})"),
            _ => "-".into(),
        };
        if r.cells.iter().any(|(_, c)| c.peak_rss_mib.is_some())
            && dask_cols
                .iter()
                .any(|c| d["cells"][c]["peak_rss_mib"].is_f64())
        {
            let _ = write!(out, "| {} peak RSS MiB (before) | MiB |", r.code);
            for c in dask_cols {
                let _ = write!(out, " {} |", rss(&d["cells"][c]));
            }
            for o in &ours {
                let cell = r.cells.iter().find(|(n, _)| n == o).map(|(_, c)| c);
                let v = match cell.and_then(|c| c.peak_rss_mib.zip(c.rss_baseline_mib)) {
                    Some((p, b)) => format!("{p:.0} ({b:.0})"),
                    None => "-".into(),
                };
                let _ = write!(out, " {v} |");
            }
            let _ = writeln!(out, "{}", " |".repeat(pairs.len()));
        }
    }
    if dask["quick"].as_bool() != Some(quick) {
        let _ = writeln!(
            out,
            "\nThe Dask run was {}a --quick run and this one {}: sizes differ.",
            if dask["quick"].as_bool() == Some(true) {
                ""
            } else {
                "not "
            },
            if quick { "is" } else { "is not" }
        );
    } else if !mismatched.is_empty() {
        let _ = writeln!(
            out,
            "\nSizes differ from the Dask run for {} (a --quick run?): compare those with care.",
            mismatched.join(", ")
        );
    }
    println!("{out}");
}

fn json_report(
    rows: &[Row],
    p: &Params,
    burn_s: f64,
    names: &[&str],
    malloc: &str,
) -> serde_json::Value {
    use serde_json::json;
    let mut benchmarks = serde_json::Map::new();
    for r in rows {
        let mut cells = serde_json::Map::new();
        for (n, c) in &r.cells {
            let mut cell = json!({ "times_s": c.times_s });
            if let Some(b) = c.best() {
                cell["best_s"] = json!(b);
                match r.metric {
                    Metric::PerTask => cell["us_per_task"] = json!(b / r.ntasks as f64 * 1e6),
                    Metric::Gbps => cell["gb_per_s"] = json!(r.payload_bytes as f64 / b / 1e9),
                    _ => {}
                }
            }
            if let Some(v) = &c.result {
                cell["result"] = match v {
                    Value::Int(i) => json!(i),
                    Value::Float(f) => json!(f),
                    other => json!(format!("{other:?}")),
                };
            }
            if let Some(e) = &c.error {
                cell["error"] = json!(e);
            }
            if let (Some(pk), Some(b)) = (c.peak_rss_mib, c.rss_baseline_mib) {
                cell["peak_rss_mib"] = json!((pk * 10.0).round() / 10.0);
                cell["rss_baseline_mib"] = json!((b * 10.0).round() / 10.0);
            }
            cells.insert((*n).into(), cell);
        }
        let metric = match r.metric {
            Metric::None => "none",
            Metric::PerTask => "per_task",
            Metric::Gbps => "gbps",
            Metric::Speedup => "speedup",
        };
        benchmarks.insert(
            r.code.into(),
            json!({
                "name": r.name, "metric": metric, "ntasks": r.ntasks,
                "payload_bytes": r.payload_bytes, "repeats": r.repeats,
                "build_graph_s": r.build_s, "cells": cells,
            }),
        );
    }
    json!({
        "script": "examples/bench_suite.rs",
        "num_workers": NUM_WORKERS,
        "schedulers": names,
        "malloc": malloc,
        "logical_cpus": std::thread::available_parallelism().map_or(1, usize::from),
        "params": {
            "flat_n": p.flat_n, "chain_n": p.chain_n, "tree_leaves": p.tree_leaves,
            "pipe_files": p.pipe_files, "pipe_elems": p.pipe_elems, "big_tasks": p.big_tasks,
            "big_elems": p.big_elems, "cpu_tasks": p.cpu_tasks, "cpu_target_s": p.cpu_target_s,
            "burn_n": p.burn_n, "burn_s": burn_s, "repeats": p.repeats,
            "heavy_repeats": p.heavy_repeats,
        },
        "benchmarks": benchmarks,
    })
}

fn write_json(path: &Path, v: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(v).expect("serializable"))?;
    std::fs::rename(&tmp, path)
}

// ---------------------------------------------------------------------------------------------
// Main.
// ---------------------------------------------------------------------------------------------

struct Cli {
    quick: bool,
    compare: Option<PathBuf>,
    hugepages: bool,
    json: Option<PathBuf>,
    only: Option<Vec<String>>,
    schedulers: Vec<String>,
}

/// Whether each `get` runs with a `Profiler` (`--profile`: measures its overhead).
static PROFILE: AtomicBool = AtomicBool::new(false);

const USAGE: &str = "usage: bench_suite [--quick] [--json FILE] [--only A,E] \
                     [--schedulers sync,threads,procs] [--no-hugepages] [--profile] \
                     [--compare DASK_JSON]";

fn parse_args() -> Result<Cli, String> {
    let mut cli = Cli {
        quick: false,
        compare: None,
        hugepages: true,
        json: None,
        only: None,
        schedulers: DEFAULT_SCHEDULERS.split(',').map(String::from).collect(),
    };
    let list = |s: String| {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .collect::<Vec<_>>()
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--quick" => cli.quick = true,
            "--no-hugepages" => cli.hugepages = false,
            "--profile" => PROFILE.store(true, Ordering::Relaxed),
            "--json" => cli.json = Some(value("--json")?.into()),
            "--compare" => cli.compare = Some(value("--compare")?.into()),
            "--only" => cli.only = Some(list(value("--only")?.to_uppercase())),
            "--schedulers" => cli.schedulers = list(value("--schedulers")?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(cli)
}

/// Allocations of at least this size are advised to use transparent huge pages.
const HUGE_MIN: usize = 4 << 20;

/// Whether large allocations get huge-page advice (`--no-hugepages` turns it off).
static HUGE: AtomicBool = AtomicBool::new(true);

/// The system allocator, plus `madvise(MADV_HUGEPAGE)` on every block of 4 MiB or more, as
/// NumPy's allocator does for its arrays in the Dask baseline. On this kind of machine the
/// first touch of a fresh 4 KiB page costs 1.5-1.9 us, so without it a task that fills a new
/// 256 MiB array can spend ~0.1 s in page faults, and shapes D and E would measure the kernel
/// rather than the scheduler. Worker processes run the same executable, so they allocate the
/// same way.
struct HugePageAdvice;

// SAFETY: every method forwards to `System` with the caller's arguments; the advice only
// changes how the kernel backs memory the caller now owns, never its contents or validity.
unsafe impl GlobalAlloc for HugePageAdvice {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        advise(unsafe { System.alloc(layout) }, layout.size())
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        advise(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        advise(unsafe { System.realloc(ptr, layout, new_size) }, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: HugePageAdvice = HugePageAdvice;

/// Advises huge pages for the whole pages inside `[p, p + size)`; returns `p`.
fn advise(p: *mut u8, size: usize) -> *mut u8 {
    const PAGE: usize = 4096;
    if !p.is_null() && size >= HUGE_MIN && HUGE.load(Ordering::Relaxed) {
        let start = (p as usize).next_multiple_of(PAGE);
        let end = (p as usize + size) / PAGE * PAGE;
        // SAFETY: the range lies inside the block just allocated, which the caller owns;
        // MADV_HUGEPAGE does not change its contents. A failure only means no advice.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
    p
}

fn malloc_setup(hugepages: bool) -> String {
    HUGE.store(hugepages, Ordering::Relaxed);
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    if hugepages {
        format!(
            "blocks >= 4 MiB advised MADV_HUGEPAGE, as NumPy does (transparent_hugepage: {thp}; \
             --no-hugepages to measure without)"
        )
    } else {
        "system allocator, no huge-page advice".into()
    }
}

/// `--only P`: per-task cost of the ways to run `n` independent `inc` tasks on one 2-worker
/// process pool (best of 3 runs each).
fn pool_calls(quick: bool) {
    let n: i64 = if quick { 1_000 } else { 10_000 };
    let pool = ProcessPool::builder()
        .workers(NUM_WORKERS)
        .build()
        .expect("process pool");
    let graph_of = |n: i64, prefix: &str| {
        let mut g = Graph::new();
        let keys: Vec<forkgraph::Keys> = (0..n)
            .map(|i| {
                let k = Key::from(format!("{prefix}-{i}"));
                g.insert(k.clone(), task("inc", vec![lit(i)]));
                forkgraph::Keys::One(k)
            })
            .collect();
        (g, forkgraph::Keys::List(keys))
    };
    let best = |tasks: i64, f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
            * 1e6
            / tasks as f64
    };
    println!("P: the process pool as an executor ({NUM_WORKERS} workers), us per task");
    println!("| how | tasks | us/task |");
    println!("|---|---:|---:|");
    let row = |how: String, tasks: i64, us: f64| println!("| {how} | {tasks} | {us:.2} |");
    let (g, keys) = graph_of(n, "inc");
    let us = best(n, &|| {
        black_box(pool.get(&g, keys.clone()).unwrap());
    });
    row(format!("one `get` of {n} tasks (graph)"), n, us);
    let us = best(n, &|| {
        black_box(pool.map("inc", 0..n).unwrap());
    });
    row(format!("`map` of {n} items"), n, us);
    let one_at_a_time = n.min(2_000);
    let us = best(one_at_a_time, &|| {
        for i in 0..one_at_a_time {
            black_box(pool.submit("inc", i).wait().unwrap());
        }
    });
    row("`submit` + `wait`, one at a time".into(), one_at_a_time, us);
    let threads = 8;
    let us = best(threads * n, &|| {
        std::thread::scope(|s| {
            for t in 0..threads {
                let pool = &pool;
                s.spawn(move || {
                    let hs: Vec<_> = (0..n).map(|i| pool.submit("inc", t * n + i)).collect();
                    for h in hs {
                        black_box(h.wait().unwrap());
                    }
                });
            }
        })
    });
    row(
        format!("{threads} threads x {n} `submit`s, then `wait`s"),
        threads * n,
        us,
    );
    let graphs: Vec<_> = (0..threads)
        .map(|t| graph_of(n, &format!("t{t}")))
        .collect();
    let us = best(threads * n, &|| {
        std::thread::scope(|s| {
            for (g, k) in &graphs {
                let pool = &pool;
                s.spawn(move || black_box(pool.get(g, k.clone()).unwrap()));
            }
        })
    });
    row(
        format!("{threads} threads x `get` of {n} tasks, at once"),
        threads * n,
        us,
    );
    // The same calls on a thread pool of as many threads (the executor API is the same).
    let tp = forkgraph::ThreadPool::builder()
        .threads(NUM_WORKERS)
        .build()
        .expect("thread pool");
    let us = best(n, &|| {
        black_box(tp.get(&g, keys.clone()).unwrap());
    });
    row(format!("threads: one `get` of {n} tasks (graph)"), n, us);
    let us = best(n, &|| {
        black_box(tp.map("inc", 0..n).unwrap());
    });
    row(format!("threads: `map` of {n} items"), n, us);
    let us = best(one_at_a_time, &|| {
        for i in 0..one_at_a_time {
            black_box(tp.submit("inc", i).wait().unwrap());
        }
    });
    row(
        "threads: `submit` + `wait`, one at a time".into(),
        one_at_a_time,
        us,
    );
    let us = best(threads * n, &|| {
        std::thread::scope(|s| {
            for t in 0..threads {
                let tp = &tp;
                s.spawn(move || {
                    let hs: Vec<_> = (0..n).map(|i| tp.submit("inc", t * n + i)).collect();
                    for h in hs {
                        black_box(h.wait().unwrap());
                    }
                });
            }
        })
    });
    row(
        format!("threads: {threads} threads x {n} `submit`s, then `wait`s"),
        threads * n,
        us,
    );
}

fn main() {
    let cli = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let malloc = malloc_setup(cli.hugepages);
    let all = schedulers();
    let mut columns: Vec<(&'static str, Box<dyn Scheduler>)> = Vec::new();
    for want in &cli.schedulers {
        let Some((name, make)) = all.iter().find(|(n, _)| n == want) else {
            let known: Vec<_> = all.iter().map(|(n, _)| *n).collect();
            eprintln!("unknown scheduler {want:?}; known: {}", known.join(", "));
            std::process::exit(2);
        };
        match make() {
            Ok(s) => columns.push((name, s)),
            Err(e) => {
                eprintln!("{name}: {e}");
                std::process::exit(1);
            }
        }
    }
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();

    let tmpdir = std::env::temp_dir().join(format!("forkgraph-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmpdir).expect("temporary directory");
    let mut p = Params::new(cli.quick, tmpdir.clone());
    let wanted = |code: &str| {
        cli.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|c| c == code))
    };

    println!(
        "forkgraph {}, {} workers, {} cpus{}",
        env!("CARGO_PKG_VERSION"),
        NUM_WORKERS,
        forkgraph::default_parallelism(),
        if cli.quick { " [quick]" } else { "" }
    );
    println!("malloc: {malloc}");
    let mut burn_s = 0.0;
    if wanted("F") {
        p.burn_n = calibrate_burn(p.cpu_target_s);
        let t0 = Instant::now();
        black_box(burn(black_box(p.burn_n)));
        burn_s = t0.elapsed().as_secs_f64();
        println!(
            "calibrated burn(n): n={} ~ {:.1} ms",
            p.burn_n,
            burn_s * 1e3
        );
    }

    if cli
        .only
        .as_ref()
        .is_some_and(|o| o.iter().any(|c| c == "P"))
    {
        pool_calls(cli.quick);
    }
    let mut rows: Vec<Row> = Vec::new();
    for bench in BENCHES.iter().filter(|b| wanted(b.code)) {
        let t0 = Instant::now();
        let shape = (bench.build)(&p);
        let build_s = t0.elapsed().as_secs_f64();
        let repeats = if bench.heavy {
            p.heavy_repeats
        } else {
            p.repeats
        };
        let mut row = Row {
            code: bench.code,
            name: bench.name,
            metric: bench.metric,
            ntasks: shape.ntasks,
            payload_bytes: shape.payload_bytes,
            repeats,
            build_s,
            cells: Vec::new(),
        };
        let mut expected: Option<Value> = None;
        for (name, sched) in &columns {
            print!("  {} {:<20} {:<11}", bench.code, bench.name, name);
            let cell = run_cell(bench, &shape, sched.as_ref(), repeats, expected.as_ref());
            match (cell.best(), &cell.error) {
                (Some(b), None) => println!("{}", fmt_time(b)),
                (_, e) => println!("ERROR {}", e.as_deref().unwrap_or("no run")),
            }
            if expected.is_none() && cell.error.is_none() {
                expected = cell.result.clone();
            }
            row.cells.push((name, cell));
        }
        rows.push(row);
        drop(shape);
        if let Some(path) = &cli.json {
            let report = json_report(&rows, &p, burn_s, &names, &malloc);
            if let Err(e) = write_json(path, &report) {
                eprintln!("cannot write {}: {e}", path.display());
            }
        }
    }
    print_table(&rows, &names);
    if let Some(path) = &cli.compare {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
        {
            Ok(dask) => print_comparison(&rows, &dask, cli.quick),
            Err(e) => eprintln!("cannot read {}: {e}", path.display()),
        }
    }
    let _ = std::fs::remove_dir_all(&tmpdir);
    let errors: BTreeMap<_, _> = rows
        .iter()
        .flat_map(|r| r.cells.iter().map(move |(n, c)| ((r.code, *n), c)))
        .filter(|(_, c)| c.error.is_some())
        .collect();
    if let Some(path) = &cli.json {
        println!("JSON written to {}", path.display());
    }
    if !errors.is_empty() {
        std::process::exit(1);
    }
}
