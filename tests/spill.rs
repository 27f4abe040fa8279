//! Graphs larger than the memory budget: results spilled to disk and read back, on every
//! scheduler; spill files and directories never left behind.
//!
//! The graph is a two-pass standardisation: every chunk is produced and summed, the mean of
//! all chunks is taken, then every chunk is centred (a large result) and its squares summed.
//! Every chunk is held until the mean is known, so without spilling the held bytes grow with
//! the number of chunks.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

use common::{helper, is_helper, scratch_dir, watchdog};
use forkgraph::{
    Arg, GetOptions, Graph, Key, Keys, MemoryStats, ProcessPool, Scheduler, SyncScheduler,
    ThreadPool, Value,
};

/// Elements of one chunk (1 MiB of f64).
const CHUNK: usize = 1 << 17;
const CHUNK_BYTES: u64 = (CHUNK * 8) as u64;
const CHUNKS: i64 = 12;

#[forkgraph::task]
fn chunk(i: i64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|k| ((k as i64 * 7 + i * 13) % 1000) as f64)
        .collect()
}

#[forkgraph::task]
fn total(x: &[f64]) -> f64 {
    x.iter().sum()
}

#[forkgraph::task]
fn mean(totals: Vec<f64>, n: usize) -> f64 {
    totals.iter().sum::<f64>() / n as f64
}

#[forkgraph::task]
fn center(x: &[f64], m: f64) -> Vec<f64> {
    x.iter().map(|v| v - m).collect()
}

#[forkgraph::task]
fn sum_sq(z: &[f64]) -> f64 {
    z.iter().map(|v| v * v).sum()
}

#[forkgraph::task]
fn add_all(parts: Vec<f64>) -> f64 {
    parts.iter().sum()
}

/// Lists the spill files this process has open (links of /proc/self/fd into a spill
/// directory), then blocks until the test kills it.
#[forkgraph::task]
fn announce_and_block(base: &str, _after: f64) -> f64 {
    let open = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with(base))
        .count();
    println!("OPEN {open}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    unreachable!("the test kills this process first")
}

fn standardize(n: i64) -> (Graph, Keys) {
    let mut g = Graph::new();
    let elements = (n as usize * CHUNK) as i64;
    for i in 0..n {
        g.task(
            ("x", i),
            "chunk",
            vec![Arg::Value(i.into()), Arg::Value((CHUNK as i64).into())],
        );
        g.task(("total", i), "total", vec![Arg::Key(("x", i).into())]);
        g.task(
            ("z", i),
            "center",
            vec![Arg::Key(("x", i).into()), Arg::Key("mean".into())],
        );
        g.task(("ss", i), "sum_sq", vec![Arg::Key(("z", i).into())]);
    }
    let totals = (0..n).map(|i| Arg::Key(("total", i).into())).collect();
    g.task(
        "mean",
        "mean",
        vec![Arg::List(totals), Arg::Value(elements.into())],
    );
    let ss = (0..n).map(|i| Arg::Key(("ss", i).into())).collect();
    g.task("var", "add_all", vec![Arg::List(ss)]);
    (g, Keys::One(Key::from("var")))
}

fn reference() -> Value {
    let (g, keys) = standardize(CHUNKS);
    SyncScheduler
        .get_with(&g, &keys, &GetOptions::new())
        .unwrap()
        .into_value()
}

/// Runs the graph with `opts` and checks the result against the sync run without a budget.
fn run_checked(s: &dyn Scheduler2, opts: GetOptions) -> Arc<MemoryStats> {
    let stats = MemoryStats::new();
    let (g, keys) = standardize(CHUNKS);
    let out = s.run(&g, &keys, &opts.memory_stats(stats.clone()));
    assert_eq!(out, reference(), "results intact after spilling");
    stats
}

/// `Scheduler` is not object safe (its `get` is generic); this is its `get_with`.
trait Scheduler2 {
    fn run(&self, g: &Graph, k: &Keys, o: &GetOptions) -> Value;
}

impl<S: Scheduler> Scheduler2 for S {
    fn run(&self, g: &Graph, k: &Keys, o: &GetOptions) -> Value {
        self.get_with(g, k, o).unwrap().into_value()
    }
}

fn assert_spilled_within(stats: &MemoryStats, limit: u64, slack_chunks: u64, what: &str) {
    eprintln!(
        "{what}: peak held {} KiB (limit {} KiB), spilled {} KiB in {} files, restored {} KiB",
        stats.peak_held_bytes() >> 10,
        limit >> 10,
        stats.bytes_spilled() >> 10,
        stats.spills(),
        stats.bytes_restored() >> 10
    );
    assert!(stats.bytes_spilled() > 0, "{what}: nothing spilled");
    assert!(stats.restores() > 0, "{what}: nothing read back");
    assert!(
        stats.peak_held_bytes() <= limit + slack_chunks * CHUNK_BYTES,
        "{what}: {} bytes held at once, limit {limit} + {slack_chunks} chunks",
        stats.peak_held_bytes()
    );
    assert_eq!(stats.held_bytes(), 0, "{what}: nothing held after the run");
}

#[test]
fn without_a_budget_every_chunk_is_held_until_the_mean() {
    let stats = run_checked(&SyncScheduler, GetOptions::new());
    assert_eq!(stats.bytes_spilled(), 0);
    assert!(
        stats.peak_held_bytes() >= CHUNKS as u64 * CHUNK_BYTES,
        "{} bytes held at most",
        stats.peak_held_bytes()
    );
}

#[test]
fn sync_spills_under_a_small_budget() {
    let budget = 3 * CHUNK_BYTES;
    let stats = watchdog(120, move || {
        run_checked(&SyncScheduler, GetOptions::new().memory_budget(budget))
    });
    // One task's inputs and result may go over: a centred chunk is made while its input is
    // read back.
    assert_spilled_within(&stats, budget, 1, "sync");
}

#[test]
fn threads_spill_under_a_small_budget() {
    let budget = 3 * CHUNK_BYTES;
    let stats = watchdog(120, move || {
        let pool = ThreadPool::builder()
            .threads(2)
            .memory_budget(budget)
            .build()
            .unwrap();
        run_checked(&pool, GetOptions::new())
    });
    // A function's first result has no size known beforehand: one may go over.
    assert_spilled_within(&stats, budget, 1, "threads");
}

#[test]
fn processes_spill_under_a_small_budget() {
    let budget = 4 * CHUNK_BYTES;
    let stats = watchdog(120, move || {
        let pool = ProcessPool::builder()
            .workers(2)
            .memory_budget(budget)
            .build()
            .unwrap();
        run_checked(&pool, GetOptions::new())
    });
    // A quarter of the budget is set aside for the workers' caches.
    assert_spilled_within(&stats, budget / 4 * 3, 1, "processes");
}

#[test]
fn a_budget_smaller_than_one_result_still_completes() {
    let stats = watchdog(120, || {
        run_checked(
            &SyncScheduler,
            GetOptions::new().memory_budget(CHUNK_BYTES / 4),
        )
    });
    assert!(stats.bytes_spilled() > 0);
    // A centre task holds its input and its result at once; nothing else is held.
    assert!(
        stats.peak_held_bytes() <= 2 * CHUNK_BYTES + 4096,
        "{} bytes held at once",
        stats.peak_held_bytes()
    );
}

fn spill_dirs(base: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(base)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("forkgraph-spill-"))
        })
        .collect()
}

/// Every regular file under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_spill_directory_is_removed_on_drop() {
    let base = scratch_dir("spill-drop");
    let pool = ThreadPool::builder()
        .threads(2)
        .memory_budget(3 * CHUNK_BYTES)
        .spill_dir(&base)
        .build()
        .unwrap();
    assert_eq!(
        spill_dirs(&base).len(),
        1,
        "build makes the pool's directory"
    );
    run_checked(&pool, GetOptions::new());
    assert!(files_under(&base).is_empty(), "spill files have no names");
    drop(pool);
    assert!(spill_dirs(&base).is_empty(), "dropping the pool removes it");

    // A get's own spill directory lives as long as the get.
    let stats = run_checked(
        &SyncScheduler,
        GetOptions::new()
            .memory_budget(3 * CHUNK_BYTES)
            .spill_dir(&base),
    );
    assert!(stats.bytes_spilled() > 0);
    assert!(spill_dirs(&base).is_empty());
    std::fs::remove_dir(&base).unwrap();
}

#[test]
fn a_bad_spill_dir_is_a_clear_error_at_build() {
    let base = scratch_dir("spill-bad");
    let missing = base.join("missing");
    let e = ThreadPool::builder()
        .memory_budget(1 << 20)
        .spill_dir(&missing)
        .build()
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains("No such file"),
        "{msg}"
    );
    let file = base.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let e = ProcessPool::builder()
        .workers(1)
        .memory_budget(1 << 20)
        .spill_dir(&file)
        .build()
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("a-file") && msg.contains("not a directory"),
        "{msg}"
    );
    // Not writable, even by root: nothing can be created in /proc.
    let e = ThreadPool::builder()
        .memory_budget(1 << 20)
        .spill_dir("/proc")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("spill directory /proc"), "{e}");
    // The same checks for a get's own spill directory, before anything runs.
    let (g, keys) = standardize(2);
    let e = SyncScheduler
        .get_with(
            &g,
            &keys,
            &GetOptions::new().memory_budget(1).spill_dir(&missing),
        )
        .unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    std::fs::remove_dir_all(&base).unwrap();
}

/// The helper: spills, then blocks inside a task until it is killed.
#[test]
fn helper_spill_then_block() {
    if !is_helper("helper_spill_then_block") {
        return;
    }
    let base = std::env::var("FORKGRAPH_SPILL_BASE").unwrap();
    let (mut g, _) = standardize(CHUNKS);
    let totals = (0..CHUNKS).map(|i| Arg::Key(("total", i).into())).collect();
    g.task("sum", "add_all", vec![Arg::List(totals)]);
    // Runs once every chunk was made, i.e. with most of them spilled.
    g.task(
        "block",
        "announce_and_block",
        vec![Arg::Value(base.as_str().into()), Arg::Key("sum".into())],
    );
    let keys = Keys::List(vec![Keys::One("block".into()), Keys::One("var".into())]);
    let opts = GetOptions::new()
        .memory_budget(3 * CHUNK_BYTES)
        .spill_dir(&base);
    let _ = SyncScheduler.get_with(&g, &keys, &opts);
    unreachable!("the test kills this process first");
}

#[test]
fn a_sigkilled_parent_leaves_no_spill_file() {
    let base = scratch_dir("spill-sigkill");
    let b = base.clone();
    watchdog(120, move || {
        let mut child = helper("helper_spill_then_block")
            .env("FORKGRAPH_SPILL_BASE", &b)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let open = loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("the helper ended without spilling");
            }
            // The test harness may have written the test's name on the same line.
            if let Some(at) = line.find("OPEN ") {
                break line[at + 5..].trim().parse::<usize>().unwrap();
            }
        };
        let dirs = spill_dirs(&b);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(open > 0, "the helper had spill files open");
        assert_eq!(dirs.len(), 1);
        assert!(
            files_under(&b).is_empty(),
            "spill files left after SIGKILL: {:?}",
            files_under(&b)
        );
        // The next scheduler that spills there removes the dead process's directory.
        let pool = ThreadPool::builder()
            .memory_budget(1 << 20)
            .spill_dir(&b)
            .build()
            .unwrap();
        let left = spill_dirs(&b);
        assert_eq!(left.len(), 1);
        assert!(!dirs.contains(&left[0]), "the stale directory was swept");
        drop(pool);
        assert!(spill_dirs(&b).is_empty());
    });
    std::fs::remove_dir(&base).unwrap();
}

/// The mean, once `calls` such tasks (one per concurrent `get`) are running at the same time:
/// every call then holds what its budget lets it hold.
#[forkgraph::task]
fn mean_when_all_meet(totals: Vec<f64>, n: usize, dir: &str, calls: i64) -> Result<f64, String> {
    common::rendezvous_in(dir, calls)?;
    Ok(totals.iter().sum::<f64>() / n as f64)
}

/// `standardize` whose mean waits for the means of `calls` concurrent gets (they meet in `dir`).
fn standardize_meeting(dir: &str, calls: i64) -> (Graph, Keys) {
    let (mut g, keys) = standardize(CHUNKS);
    let totals = (0..CHUNKS).map(|i| Arg::Key(("total", i).into())).collect();
    let elements = (CHUNKS as usize * CHUNK) as i64;
    g.task(
        "mean",
        "mean_when_all_meet",
        vec![
            Arg::List(totals),
            Arg::Value(elements.into()),
            Arg::Value(dir.into()),
            Arg::Value(calls.into()),
        ],
    );
    (g, keys)
}

/// Runs `calls` gets of the meeting graph at once on `pool`; each result is checked.
fn concurrent_gets(pool: &(dyn Scheduler2 + Sync), calls: i64, what: &str) {
    let dir = scratch_dir(&format!("spill-meet-{what}"));
    let expected = reference();
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..calls)
            .map(|_| {
                let dir = dir.to_str().unwrap();
                s.spawn(move || {
                    let (g, keys) = standardize_meeting(dir, calls);
                    pool.run(&g, &keys, &GetOptions::new())
                })
            })
            .collect();
        for r in runs {
            assert_eq!(r.join().unwrap(), expected, "{what}: results intact");
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Concurrent gets on one pool share its budget: what they hold together stays within it,
/// plus one task's input and result (two chunks) per call: a call with nothing running starts
/// one task anyway, after spilling what it can of its own. Each call alone would hold up to
/// the whole budget (8 chunks of its 12) while the three meet: 24 chunks.
#[test]
fn concurrent_gets_share_the_pools_budget() {
    const CALLS: i64 = 3;
    watchdog(240, || {
        let budget = 8 * CHUNK_BYTES;
        let threads = ThreadPool::builder()
            .threads(CALLS as usize)
            .memory_budget(budget)
            .build()
            .unwrap();
        concurrent_gets(&threads, CALLS, "threads");
        let stats = threads.memory_stats().expect("a budget");
        assert_spilled_within(&stats, budget, 2 * CALLS as u64, "threads, 3 gets at once");

        let procs = ProcessPool::builder()
            .workers(CALLS as usize)
            .memory_budget(budget)
            .build()
            .unwrap();
        concurrent_gets(&procs, CALLS, "processes");
        let stats = procs.memory_stats().expect("a budget");
        // A quarter of the budget is set aside for the workers' caches.
        assert_spilled_within(
            &stats,
            budget / 4 * 3,
            2 * CALLS as u64,
            "processes, 3 gets at once",
        );
        assert!(ThreadPool::builder()
            .build()
            .unwrap()
            .memory_stats()
            .is_none());
    });
}
