//! A graph whose intermediates are larger than its memory budget: 16 chunks of 256 MiB
//! (4 GiB) standardised in two passes under a 1 GiB budget. Every chunk is made and summed,
//! the mean of all of them is taken, then every chunk is centred (another 256 MiB result) and
//! its squares summed: each chunk is needed again only once the last one is made, so without
//! spilling all 4 GiB are held at once. With `memory_budget`, the chunks needed latest go to
//! unnamed files in the spill directory and come back when their centring task starts.
//!
//! Each scheduler runs in a fresh child process (so that peak RSS, the kernel's high-water mark
//! `VmHWM`, is its own); for the process pool the workers' high-water marks are added, so a
//! shared page counts once per process that touched it. Prints a table: time, peak RSS, bytes
//! spilled and read back, and the most bytes of results the engine held at once
//! (`MemoryStats::peak_held_bytes`).
//!
//! Run: `cargo run --release --example larger_than_memory` (about a minute per scheduler on 2
//! cores; `-- --chunks 8 --chunk-mib 64 --budget-mib 128` for a quick one; `--schedulers
//! sync,threads,procs,none` where `none` is threads without a budget, for comparison).

use std::time::Instant;

use forkgraph::{
    Arg, GetOptions, Graph, Key, Keys, MemoryStats, ProcessPool, Scheduler, SharedVec,
    SyncScheduler, ThreadPool,
};

/// Chunk `i`: `n` samples of a deterministic signal, written straight into shared memory.
#[forkgraph::task]
fn chunk(i: i64, n: usize) -> std::io::Result<SharedVec<f64>> {
    let mut v = SharedVec::<f64>::zeroed(n)?;
    for (k, x) in v.iter_mut().enumerate() {
        *x = ((k as i64 * 7 + i * 13) % 1000) as f64;
    }
    Ok(v)
}

#[forkgraph::task]
fn total(x: &[f64]) -> f64 {
    // Four accumulators: the sum runs at memory speed, not at the adder's latency.
    let mut acc = [0.0; 4];
    let mut it = x.chunks_exact(4);
    for c in &mut it {
        for k in 0..4 {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f64>() + it.remainder().iter().sum::<f64>()
}

#[forkgraph::task]
fn mean(totals: Vec<f64>, n: usize) -> f64 {
    totals.iter().sum::<f64>() / n as f64
}

#[forkgraph::task]
fn center(x: &[f64], m: f64) -> std::io::Result<SharedVec<f64>> {
    let mut z = SharedVec::<f64>::zeroed(x.len())?;
    for (o, v) in z.iter_mut().zip(x) {
        *o = v - m;
    }
    Ok(z)
}

#[forkgraph::task]
fn sum_sq(z: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let mut it = z.chunks_exact(4);
    for c in &mut it {
        for k in 0..4 {
            acc[k] += c[k] * c[k];
        }
    }
    acc.iter().sum::<f64>() + it.remainder().iter().map(|v| v * v).sum::<f64>()
}

#[forkgraph::task]
fn add_all(parts: Vec<f64>) -> f64 {
    parts.iter().sum()
}

fn standardize(chunks: i64, elements: usize) -> Graph {
    let mut g = Graph::new();
    for i in 0..chunks {
        g.task(
            ("x", i),
            "chunk",
            vec![Arg::Value(i.into()), Arg::Value((elements as i64).into())],
        );
        g.task(("total", i), "total", vec![Arg::Key(("x", i).into())]);
        g.task(
            ("z", i),
            "center",
            vec![Arg::Key(("x", i).into()), Arg::Key("mean".into())],
        );
        g.task(("ss", i), "sum_sq", vec![Arg::Key(("z", i).into())]);
    }
    let totals = (0..chunks).map(|i| Arg::Key(("total", i).into())).collect();
    let n = chunks * elements as i64;
    g.task(
        "mean",
        "mean",
        vec![Arg::List(totals), Arg::Value(n.into())],
    );
    let ss = (0..chunks).map(|i| Arg::Key(("ss", i).into())).collect();
    g.task("var", "add_all", vec![Arg::List(ss)]);
    g
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Args {
    chunks: i64,
    chunk_mib: u64,
    budget_mib: u64,
    schedulers: Vec<String>,
    child: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        chunks: 16,
        chunk_mib: 256,
        budget_mib: 1024,
        schedulers: vec!["sync".into(), "threads".into(), "procs".into()],
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--chunks" => a.chunks = v().parse().expect("--chunks N"),
            "--chunk-mib" => a.chunk_mib = v().parse().expect("--chunk-mib MIB"),
            "--budget-mib" => a.budget_mib = v().parse().expect("--budget-mib MIB"),
            "--schedulers" => a.schedulers = v().split(',').map(str::to_owned).collect(),
            "--child" => a.child = Some(v()),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// Runs one scheduler in this process; prints one result line for the parent.
fn child(a: &Args, which: &str) -> Result<(), Box<dyn std::error::Error>> {
    let elements = (a.chunk_mib << 20) as usize / 8;
    let budget = a.budget_mib << 20;
    let g = standardize(a.chunks, elements);
    let keys = Keys::One(Key::from("var"));
    let stats = MemoryStats::new();
    let opts = GetOptions::new().memory_stats(stats.clone());
    let start_kib = vm_hwm_kib(std::process::id());
    let t = Instant::now();
    let (out, workers_kib) = match which {
        "sync" => (
            SyncScheduler.get_with(&g, &keys, &opts.memory_budget(budget))?,
            0,
        ),
        "threads" => {
            let pool = ThreadPool::builder()
                .threads(2)
                .memory_budget(budget)
                .build()?;
            (pool.get_with(&g, &keys, &opts)?, 0)
        }
        "none" => {
            let pool = ThreadPool::builder().threads(2).build()?;
            (pool.get_with(&g, &keys, &opts)?, 0)
        }
        "procs" => {
            let pool = ProcessPool::builder()
                .workers(2)
                .memory_budget(budget)
                .build()?;
            let out = pool.get_with(&g, &keys, &opts)?;
            let w: u64 = pool
                .worker_pids()
                .iter()
                .map(|&p| vm_hwm_kib(p as u32))
                .sum();
            (out, w)
        }
        other => return Err(format!("unknown scheduler {other}").into()),
    };
    let secs = t.elapsed().as_secs_f64();
    let var: f64 = out.to()?;
    let peak = vm_hwm_kib(std::process::id()) + workers_kib;
    println!(
        "RESULT {which} {secs:.2} {} {} {} {} {} {var}",
        peak >> 10,
        start_kib >> 10,
        stats.bytes_spilled() >> 20,
        stats.bytes_restored() >> 20,
        stats.peak_held_bytes() >> 20,
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args();
    if let Some(which) = &a.child {
        return child(&a, which);
    }
    println!(
        "{} chunks x {} MiB = {} MiB of intermediates, memory budget {} MiB, 2 threads/workers",
        a.chunks,
        a.chunk_mib,
        a.chunks as u64 * a.chunk_mib,
        a.budget_mib
    );
    println!();
    println!(
        "| scheduler | time | peak RSS (at start) | spilled | read back | peak held | result |"
    );
    println!("|---|---|---|---|---|---|---|");
    for s in &a.schedulers {
        let out = std::process::Command::new(std::env::current_exe()?)
            .args([
                "--chunks",
                &a.chunks.to_string(),
                "--chunk-mib",
                &a.chunk_mib.to_string(),
                "--budget-mib",
                &a.budget_mib.to_string(),
                "--child",
                s,
            ])
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
            println!(
                "| {s} | failed: {} {} |",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            continue;
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        let name = if s == "none" {
            "threads, no budget"
        } else {
            s.as_str()
        };
        println!(
            "| {name} | {} s | {} MiB ({}) | {} MiB | {} MiB | {} MiB | {} |",
            f[1], f[2], f[3], f[4], f[5], f[6], f[7]
        );
    }
    Ok(())
}
