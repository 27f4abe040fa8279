//! Ordering + scheduling 1,000,000 no-op tasks on the sync scheduler: wall time and heap bytes
//! per task, counted by a global allocator that wraps the system one.
//!
//! Shapes (all about 1,000,000 tasks):
//! - flat: 999,999 independent no-op tasks + one task reading all of them (shape A, scaled up);
//! - chain: 1,000,000 no-op tasks, each reading the previous one (shape B);
//! - tree: a pairwise reduction of 2^19 leaves (1,048,575 tasks, shape C).
//!
//! `get` = plan (cull, compile, order) + run; the split is taken with the `start` callback, which
//! the engine calls after planning. "alloc" sums every allocation made during `get` (bytes
//! requested; a `realloc` counts as a new allocation), "peak" is the largest live heap above what
//! was live before `get`. Times come from runs with counting off; bytes from one counted run.
//! Graph construction (time, and heap bytes the graph keeps) is reported separately.
//!
//! Run: `cargo bench --bench million` (about 20 s). Options after `--`: `--quick` (100,000
//! tasks), `--n TASKS`, `--only flat,chain`, `--repeats N`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forkgraph::{
    Arg, ArgValue, Callbacks, GetOptions, Graph, Key, Keys, RunInfo, Scheduler, SyncScheduler, Task,
};

/// Counts allocations while [`COUNTING`] is on; the figures are process-wide (the benchmark is
/// single-threaded). Timed runs switch counting off, so the atomics do not inflate the times.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
// Signed: memory allocated before counting started may be freed while it runs.
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

impl Counting {
    fn add(size: usize) {
        if !COUNTING.load(Relaxed) {
            return;
        }
        ALLOCATED.fetch_add(size, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        let size = size as isize;
        let live = LIVE.fetch_add(size, Relaxed) + size;
        PEAK.fetch_max(live, Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Counting::add(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Counting::add(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            // Counted as a new allocation of `new_size` and the release of the old block (as
            // DHAT counts it): a moving realloc holds both for a moment.
            LIVE.fetch_sub(layout.size() as isize, Relaxed);
            Counting::add(new_size);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[forkgraph::task]
fn noop() {}

#[forkgraph::task]
fn after(prev: &ArgValue<'_>) {
    black_box(prev);
}

#[forkgraph::task]
fn both(a: &ArgValue<'_>, b: &ArgValue<'_>) {
    black_box((a, b));
}

#[forkgraph::task]
fn count(xs: &ArgValue<'_>) -> usize {
    match xs {
        ArgValue::List(l) => l.len(),
        _ => 0,
    }
}

/// Allocation counters at one moment.
#[derive(Clone, Copy)]
struct Snap {
    allocated: usize,
    allocations: usize,
    live: isize,
}

impl Snap {
    fn now() -> Snap {
        Snap {
            allocated: ALLOCATED.load(Relaxed),
            allocations: ALLOCATIONS.load(Relaxed),
            live: LIVE.load(Relaxed),
        }
    }
}

/// Records when planning ended (the engine calls `start` right after it).
#[derive(Default)]
struct PlanDone(Mutex<Option<(Instant, Snap)>>);

impl Callbacks for PlanDone {
    fn start(&self, _info: &RunInfo) {
        *self.0.lock().expect("not poisoned") = Some((Instant::now(), Snap::now()));
    }
}

fn flat(n: usize) -> (Graph, Key) {
    let mut g = Graph::with_capacity(n);
    let mut keys = Vec::with_capacity(n - 1);
    for i in 0..n - 1 {
        let k = Key::from(format!("noop-{i}"));
        g.insert(&k, Task::new("noop", vec![]));
        keys.push(Arg::Key(k));
    }
    g.insert("count", Task::new("count", vec![Arg::List(keys)]));
    (g, "count".into())
}

fn chain(n: usize) -> (Graph, Key) {
    let mut g = Graph::with_capacity(n);
    g.insert("chain-0", Task::new("noop", vec![]));
    for i in 1..n {
        let prev = Arg::Key(format!("chain-{}", i - 1).into());
        g.insert(format!("chain-{i}"), Task::new("after", vec![prev]));
    }
    (g, format!("chain-{}", n - 1).into())
}

fn tree(leaves: usize) -> (Graph, Key) {
    let mut g = Graph::with_capacity(2 * leaves);
    let mut level: Vec<Key> = (0..leaves).map(|i| Key::from(("leaf", i))).collect();
    for k in &level {
        g.insert(k, Task::new("noop", vec![]));
    }
    let mut depth = 0usize;
    while level.len() > 1 {
        level = level
            .chunks(2)
            .enumerate()
            .map(|(j, p)| {
                let k = Key::from(("node", depth, j));
                let args = vec![Arg::Key(p[0].clone()), Arg::Key(p[1].clone())];
                g.insert(&k, Task::new("both", args));
                k
            })
            .collect();
        depth += 1;
    }
    (g, level.pop().expect("a root"))
}

struct Run {
    plan: Duration,
    total: Duration,
    allocated: usize,
    allocations: usize,
    peak: usize,
}

/// One `get`; with `count`, allocations are counted (timed runs do not count).
fn run_once(g: &Graph, target: &Keys, counting: bool) -> Run {
    let marker = Arc::new(PlanDone::default());
    let opts = GetOptions::new().callback(marker.clone());
    let before = Snap::now();
    PEAK.store(before.live, Relaxed);
    COUNTING.store(counting, Relaxed);
    let t0 = Instant::now();
    let out = SyncScheduler.get_with(g, target, &opts).expect("get");
    drop(black_box(out));
    let total = t0.elapsed();
    COUNTING.store(false, Relaxed);
    let end = Snap::now();
    let (t_plan, _) = marker
        .0
        .lock()
        .expect("not poisoned")
        .expect("start was called");
    Run {
        plan: t_plan - t0,
        total,
        allocated: end.allocated - before.allocated,
        allocations: end.allocations - before.allocations,
        peak: (PEAK.load(Relaxed) - before.live).max(0) as usize,
    }
}

/// Builds a shape of about `n` tasks: the graph and the key to get.
type Build = fn(usize) -> (Graph, Key);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: run one tiny round then.
    let smoke = !args.iter().any(|a| a == "--bench");
    let n = match args.iter().position(|a| a == "--n") {
        Some(i) => args[i + 1].parse().expect("--n TASKS"),
        None if smoke => 1_000,
        None if quick => 100_000,
        None => 1_000_000,
    };
    let repeats = match args.iter().position(|a| a == "--repeats") {
        Some(i) => args[i + 1].parse().expect("--repeats N"),
        None if smoke => 1,
        None => 5,
    };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].clone());
    println!(
        "{:<6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8}",
        "shape",
        "tasks",
        "build us",
        "build B",
        "plan us",
        "run us",
        "get us",
        "get s",
        "alloc B",
        "peak B",
        "allocs"
    );
    let shapes: [(&str, Build); 3] = [
        ("flat", flat),
        ("chain", chain),
        ("tree", |n| tree((n / 2).next_power_of_two())),
    ];
    for (name, build) in shapes {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == name))
        {
            continue;
        }
        let b0 = Snap::now();
        COUNTING.store(true, Relaxed);
        let t0 = Instant::now();
        let (g, target) = build(n);
        let build_s = t0.elapsed().as_secs_f64();
        COUNTING.store(false, Relaxed);
        let build_bytes = (Snap::now().live - b0.live) as usize;
        let tasks = g.len();
        let target = Keys::One(target);
        let counted = run_once(&g, &target, true);
        let runs: Vec<Run> = (0..repeats).map(|_| run_once(&g, &target, false)).collect();
        let per = |x: usize| x as f64 / tasks as f64;
        let us = |v: Vec<f64>| median(v) / tasks as f64 * 1e6;
        let total = median(runs.iter().map(|r| r.total.as_secs_f64()).collect());
        println!(
            "{:<6} {:>8} {:>9.3} {:>9.0} {:>9.3} {:>9.3} {:>9.3} {:>8.3} {:>9.0} {:>9.0} {:>8.2}",
            name,
            tasks,
            build_s / tasks as f64 * 1e6,
            per(build_bytes),
            us(runs.iter().map(|r| r.plan.as_secs_f64()).collect()),
            us(runs
                .iter()
                .map(|r| (r.total - r.plan).as_secs_f64())
                .collect()),
            total / tasks as f64 * 1e6,
            total,
            per(counted.allocated),
            per(counted.peak),
            per(counted.allocations),
        );
    }
    println!(
        "(per task; times: medians of {repeats} runs without counting, get = plan + run; \
         bytes: one counted run)"
    );
}
