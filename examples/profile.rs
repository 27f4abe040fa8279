//! A pipeline on the process pool with every diagnostic on: a progress bar, the profiler, and
//! the graph drawn.
//!
//! ```text
//! cargo run --release --example profile -- --out DIR     # default DIR: target/profile
//! ```
//!
//! Writes to DIR:
//! - `trace.json`: Chrome trace (open in <https://ui.perfetto.dev> or `chrome://tracing`), one
//!   track per worker process, one slice per task, counter tracks of CPU % and RSS per process
//!   (sampled every 20 ms) and of shared segment bytes;
//! - `profile.svg`: a Gantt chart, a lane per worker, tasks coloured by function, the worker
//!   death (a task crashes its worker once, on purpose) marked in red, and under it CPU % and
//!   memory per process on the same time axis;
//! - `graph.dot`, and `graph.svg` when Graphviz `dot` is installed.
//!
//! The graph: 12 partitions are generated (8 MiB of f64 each, through shared segments), cleaned
//! and summarised; summaries are combined pairwise into a total, then reported. One `clean`
//! crashes its worker the first time it runs (a marker file remembers), so the pool replaces
//! the worker and runs the task again alone on a fresh one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use forkgraph::{
    key, Arg, DotColor, GetOptions, Graph, Key, ProcessPool, Profiler, ResourceProfiler, Scheduler,
    Value,
};

const PARTS: usize = 12;
const ROWS: usize = 1 << 20;
const WORKERS: usize = 3;

/// A partition of synthetic measurements (a few NaNs and outliers).
#[forkgraph::task]
fn generate(seed: u64, rows: usize) -> Vec<f64> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..rows)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x >> 11) as f64 / (1u64 << 53) as f64;
            match i % 9973 {
                0 => f64::NAN,
                1 => 1e9,
                _ => v * 100.0,
            }
        })
        .collect()
}

/// Drops NaNs and outliers; crashes its worker once when `crash_marker` does not exist yet.
#[forkgraph::task]
fn clean(x: &[f64], crash_marker: &str) -> Vec<f64> {
    if !crash_marker.is_empty() && std::fs::File::create_new(crash_marker).is_ok() {
        eprintln!("clean: crashing this worker once, on purpose (see {crash_marker})");
        std::process::abort();
    }
    x.iter()
        .copied()
        .filter(|v| v.is_finite() && v.abs() < 1e6)
        .map(|v| (v * 1.000_001).sqrt().powi(2))
        .collect()
}

/// (count, sum, sum of squares).
#[forkgraph::task]
fn summarise(x: &[f64]) -> Vec<f64> {
    let (n, s, q) = x
        .iter()
        .fold((0.0, 0.0, 0.0), |(n, s, q), v| (n + 1.0, s + v, q + v * v));
    vec![n, s, q]
}

#[forkgraph::task]
fn combine(a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter().zip(&b).map(|(x, y)| x + y).collect()
}

#[forkgraph::task]
fn report(t: Vec<f64>) -> String {
    let (n, s, q) = (t[0], t[1], t[2]);
    let mean = s / n;
    format!(
        "{n} values, mean {mean:.4}, sd {:.4}",
        (q / n - mean * mean).sqrt()
    )
}

fn pipeline(crash_marker: &str) -> Graph {
    let mut g = Graph::new();
    let mut level: Vec<Key> = Vec::new();
    for i in 0..PARTS {
        let marker = if i == PARTS / 2 { crash_marker } else { "" };
        g.task(
            ("generate", i),
            "generate",
            vec![Arg::Value((i as u64).into()), Arg::Value(ROWS.into())],
        );
        g.task(
            ("clean", i),
            "clean",
            vec![Arg::Key(("generate", i).into()), Arg::Value(marker.into())],
        );
        g.task(
            ("summarise", i),
            "summarise",
            vec![Arg::Key(("clean", i).into())],
        );
        level.push(("summarise", i).into());
    }
    let mut round = 0;
    while level.len() > 1 {
        let mut next = Vec::new();
        for (j, pair) in level.chunks(2).enumerate() {
            if let [a, b] = pair {
                let k: Key = ("combine", round, j).into();
                g.task(
                    k.clone(),
                    "combine",
                    vec![Arg::Key(a.clone()), Arg::Key(b.clone())],
                );
                next.push(k);
            } else {
                next.push(pair[0].clone());
            }
        }
        level = next;
        round += 1;
    }
    g.task("report", "report", vec![key(level[0].clone()).into_arg()]);
    g
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("target/profile");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().ok_or("--out needs a directory")?.into(),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: profile [--out DIR]"
                ))
            }
        }
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let marker = out.join("crashed-once");
    let _ = std::fs::remove_file(&marker);
    let g = pipeline(&marker.to_string_lossy());

    let pool = ProcessPool::builder()
        .workers(WORKERS)
        .build()
        .map_err(|e| e.to_string())?;
    let profiler = Arc::new(Profiler::new());
    let resources = Arc::new(ResourceProfiler::new(Duration::from_millis(20)));
    let opts = GetOptions::new()
        .progress()
        .callback(profiler.clone())
        .callback(resources.clone());
    let result = pool
        .get_with(&g, &"report".into(), &opts)
        .map_err(|e| e.to_string())?;
    if let Value::Str(s) = result.into_value() {
        println!("result: {s}");
    }

    let p = profiler.profile().with_resources(&resources.resources());
    println!("{}", p.summary());
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    p.write_chrome_trace(out.join("trace.json"))
        .map_err(|e| format!("trace.json: {e}"))?;
    write("profile.svg", &p.svg())?;
    let dot =
        forkgraph::to_dot(&g, &"report".into(), DotColor::Function).map_err(|e| e.to_string())?;
    write("graph.dot", &dot)?;
    let mut wrote = vec!["trace.json", "profile.svg", "graph.dot"];
    match forkgraph::render_dot(&dot, &out.join("graph.svg")) {
        Ok(()) => wrote.push("graph.svg"),
        Err(e) => eprintln!("graph.svg not written: {e}"),
    }
    println!("wrote {} in {}", wrote.join(", "), out.display());
    Ok(())
}

use forkgraph::IntoArg as _;
