//! Large arrays through a process pool: four producers each write a 256 MiB array straight
//! into a shared segment; dependents in other worker processes read it in place (sealed,
//! read-only, never copied); the caller gets the small summaries. Prints time and peak memory
//! (proportional set size summed over the parent and every worker, so shared pages count once)
//! for threads and for processes.
//!
//! Run: `cargo run --release --example large_arrays` (`-- --mib 64` for smaller arrays).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use forkgraph::{key, Arg, Graph, Keys, ProcessPool, SharedVec, ThreadPool};

/// `n` samples of a deterministic signal, written in place into shared memory.
#[forkgraph::task]
fn generate(n: usize, seed: i64) -> std::io::Result<SharedVec<f64>> {
    let mut v = SharedVec::<f64>::zeroed(n)?;
    let s = seed as f64;
    for (i, x) in v.iter_mut().enumerate() {
        *x = ((i as f64) * 1e-6 + s).sin() * 100.0 + s;
    }
    Ok(v)
}

/// Mean, minimum and maximum of an array (read in place).
#[forkgraph::task]
fn stats(x: &[f64]) -> Vec<f64> {
    let (mut sum, mut lo, mut hi) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
    for &v in x {
        sum += v;
        lo = lo.min(v);
        hi = hi.max(v);
    }
    vec![sum / x.len() as f64, lo, hi]
}

/// How far each sample is above the array's own mean, counted (a second pass over the data).
#[forkgraph::task]
fn above_mean(x: &[f64], s: Vec<f64>) -> i64 {
    x.iter().filter(|&&v| v > s[0]).count() as i64
}

fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// Samples the summed PSS of this process and the fork server's children until stopped.
fn sample_peak(server: Option<i32>) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let me = std::process::id() as i32;
    let h = std::thread::spawn(move || {
        let peak = AtomicU64::new(0);
        while !flag.load(Ordering::Relaxed) {
            let mut total = pss_kib(me);
            if let Some(s) = server {
                total += pss_kib(s) + children(s).into_iter().map(pss_kib).sum::<u64>();
            }
            peak.fetch_max(total, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        peak.load(Ordering::Relaxed)
    });
    (stop, h)
}

/// A scheduler's name, how to run the graph on it, and its fork server (for memory sampling).
type Run<'a> = (
    &'a str,
    &'a dyn Fn() -> Result<forkgraph::Output, forkgraph::Error>,
    Option<i32>,
);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = match args.iter().position(|a| a == "--mib") {
        Some(i) => args.get(i + 1).ok_or("--mib needs a number")?.parse()?,
        None => 256,
    };
    let arrays = 4;
    let n = mib * (1 << 20) / 8;
    let mut g = Graph::new();
    let mut keys: Vec<Keys> = Vec::new();
    for i in 0..arrays {
        let seed = Arg::Value((i as i64).into());
        g.task(("data", i), "generate", vec![Arg::Value(n.into()), seed]);
        g.task(("stats", i), "stats", vec![key(("data", i)).into()]);
        g.task(
            ("above", i),
            "above_mean",
            vec![key(("data", i)).into(), key(("stats", i)).into()],
        );
        keys.push(vec![Keys::from(("stats", i)), Keys::from(("above", i))].into());
    }
    let keys = Keys::List(keys);
    let payload = (arrays * mib) as f64;
    println!("{arrays} arrays of {mib} MiB ({payload} MiB of payload), 2 workers\n");
    println!(
        "{:<10} {:>9} {:>10} {:>14} {:>10}",
        "scheduler", "time", "GB/s", "peak memory", "/ payload"
    );

    let threads = ThreadPool::builder().threads(2).build()?;
    let procs = ProcessPool::builder().workers(2).build()?;
    let mut results = Vec::new();
    let runs: [Run<'_>; 2] = [
        ("threads", &|| threads.get(&g, keys.clone()), None),
        (
            "processes",
            &|| procs.get(&g, keys.clone()),
            Some(procs.fork_server_pid()),
        ),
    ];
    for (name, run, server) in runs {
        let (stop, sampler) = sample_peak(server);
        let t = Instant::now();
        let out = run()?;
        let secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let peak_mib = sampler.join().map_err(|_| "sampler panicked")? as f64 / 1024.0;
        println!(
            "{name:<10} {:>8.3}s {:>10.2} {:>10.0} MiB {:>9.2}x",
            secs,
            payload * 1.048_576e-3 / secs,
            peak_mib,
            peak_mib / payload
        );
        results.push(out);
    }
    assert_eq!(results[0], results[1], "threads and processes agree");
    println!("\nper array (mean, min, max; samples above the mean):");
    for (i, r) in results[1].as_list().unwrap_or(&[]).iter().enumerate() {
        let l = r.as_list().unwrap_or(&[]);
        let s: Vec<f64> = l[0].to()?;
        println!(
            "  array {i}: mean {:>8.3}  min {:>8.3}  max {:>8.3}; {} above the mean",
            s[0],
            s[1],
            s[2],
            l[1].to::<i64>()?
        );
    }
    Ok(())
}
