//! The seed pipeline — load, clean, analyze, store — over real files, on every scheduler.
//!
//! ```text
//! cargo run --release --example pipeline              # data in target/pipeline-data/
//! cargo run --release --example pipeline -- DIR       # data and output in DIR
//! ```
//!
//! It writes three data files of little-endian `f64` (with some NaNs and outliers), then runs
//! the graph Dask's documentation uses as its custom-graph example:
//!
//! ```python
//! dsk = {'load-1': (load, 'myfile.a.data'), 'load-2': (load, 'myfile.b.data'),
//!        'load-3': (load, 'myfile.c.data'), 'clean-1': (clean, 'load-1'),
//!        'clean-2': (clean, 'load-2'), 'clean-3': (clean, 'load-3'),
//!        'analyze': (analyze, ['clean-%d' % i for i in [1, 2, 3]]),
//!        'store': (store, 'analyze')}
//! ```
//!
//! Every task gets what it needs as arguments (paths included), never through globals, so the
//! same graph runs unchanged in worker processes. `store` writes atomically: a temporary file in
//! the output directory, flushed, then renamed over the result, so a reader never sees a
//! partial file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use forkgraph::{
    graph, key, Callbacks, GetOptions, Key, Keys, ProcessPool, Scheduler, Serde, SyncScheduler,
    ThreadPool, Value,
};
use serde::{Deserialize, Serialize};

/// Values per data file (4 MiB of f64).
const ROWS_PER_FILE: usize = 512 * 1024;
const FILES: [&str; 3] = ["a", "b", "c"];
/// A value further than this many robust standard deviations from the median is an outlier.
const OUTLIER_SIGMAS: f64 = 6.0;
/// Threads or processes of the parallel schedulers.
const WORKERS: usize = 2;
/// Runs per scheduler (the best time is reported).
const RUNS: usize = 3;

// ---------------------------------------------------------------------------------------------
// The task functions: ordinary Rust functions.
// ---------------------------------------------------------------------------------------------

/// Reads a file of little-endian f64 values.
#[forkgraph::task]
fn load(path: &str) -> Result<Vec<f64>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if bytes.len() % 8 != 0 {
        return Err(format!(
            "{path}: {} bytes is not a whole number of f64 values",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

/// Drops NaNs, infinities and outliers (further than [`OUTLIER_SIGMAS`] robust standard
/// deviations, estimated from the median absolute deviation, from the median).
#[forkgraph::task]
fn clean(x: &[f64]) -> Vec<f64> {
    let finite: Vec<f64> = x.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return finite;
    }
    let mid = median(&mut finite.clone());
    let mad = median(&mut finite.iter().map(|v| (v - mid).abs()).collect::<Vec<_>>());
    let limit = OUTLIER_SIGMAS * 1.4826 * mad;
    finite
        .into_iter()
        .filter(|v| (v - mid).abs() <= limit)
        .collect()
}

/// Summary statistics of the cleaned parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stats {
    rows_per_part: Vec<usize>,
    rows: usize,
    mean: f64,
    std: f64,
    min: f64,
    median: f64,
    max: f64,
}

impl Stats {
    /// Equal, up to the last bit a decimal text round trip may change.
    fn same_as(&self, other: &Stats) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
        self.rows_per_part == other.rows_per_part
            && self.rows == other.rows
            && close(self.mean, other.mean)
            && close(self.std, other.std)
            && close(self.min, other.min)
            && close(self.median, other.median)
            && close(self.max, other.max)
    }
}

#[forkgraph::task]
fn analyze(parts: Vec<&[f64]>) -> Result<Serde<Stats>, String> {
    let rows: usize = parts.iter().map(|p| p.len()).sum();
    if rows == 0 {
        return Err("no rows left to analyze".into());
    }
    let all = || parts.iter().flat_map(|p| p.iter().copied());
    let mean = all().sum::<f64>() / rows as f64;
    let var = all().map(|v| (v - mean) * (v - mean)).sum::<f64>() / rows as f64;
    Ok(Serde(Stats {
        rows_per_part: parts.iter().map(|p| p.len()).collect(),
        rows,
        mean,
        std: var.sqrt(),
        min: all().fold(f64::INFINITY, f64::min),
        median: median(&mut all().collect::<Vec<_>>()),
        max: all().fold(f64::NEG_INFINITY, f64::max),
    }))
}

/// Writes the statistics as JSON to `path`, atomically; returns the path.
#[forkgraph::task]
fn store(stats: Serde<Stats>, path: &str) -> Result<String, String> {
    let json = serde_json::to_string_pretty(&stats.0).map_err(|e| e.to_string())?;
    write_atomically(Path::new(path), json.as_bytes())?;
    Ok(path.to_owned())
}

/// Writes `bytes` to a temporary file next to `path`, flushes it to disk, then renames it over
/// `path` (atomic within one file system): `path` is either the old file or the complete new
/// one, never a partial write.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

fn threads() -> Result<Box<dyn Scheduler>, String> {
    let pool = ThreadPool::builder().threads(WORKERS).build();
    Ok(Box::new(pool.map_err(|e| e.to_string())?))
}

fn processes() -> Result<Box<dyn Scheduler>, String> {
    let pool = ProcessPool::builder().workers(WORKERS).build();
    Ok(Box::new(pool.map_err(|e| e.to_string())?))
}

/// The values of `["analyze", "store"]`.
fn stats_and_path(out: forkgraph::Output) -> Result<(Stats, String), forkgraph::Mismatch> {
    let l = out.as_list().unwrap_or_default();
    let value = |i: usize| {
        l.get(i)
            .and_then(|o| o.as_value())
            .ok_or(forkgraph::Mismatch {
                expected: "two values".into(),
                got: format!("{} results", l.len()),
            })
    };
    Ok((value(0)?.to::<Serde<Stats>>()?.0, value(1)?.to()?))
}

fn median(v: &mut [f64]) -> f64 {
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

// ---------------------------------------------------------------------------------------------
// Input data: generated, deterministic.
// ---------------------------------------------------------------------------------------------

/// Writes `myfile.{a,b,c}.data`: normally distributed readings around 100 (sd 15), with about
/// 0.3% NaNs and 0.2% wild outliers. Returns the paths.
fn generate(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for (i, name) in FILES.iter().enumerate() {
        let mut rng = SplitMix(0x5eed + i as u64);
        let mut bytes = Vec::with_capacity(ROWS_PER_FILE * 8);
        for _ in 0..ROWS_PER_FILE {
            let u = rng.unit();
            let v = if u < 0.003 {
                f64::NAN
            } else if u < 0.005 {
                (rng.unit() - 0.5) * 1e6
            } else {
                100.0 + 15.0 * rng.normal()
            };
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let path = dir.join(format!("myfile.{name}.data"));
        write_atomically(&path, &bytes)?;
        paths.push(path);
    }
    Ok(paths)
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (1.0 - self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting what happened, through the callbacks every scheduler calls on this thread.
// ---------------------------------------------------------------------------------------------

/// Remembers, per finished task, a one-line summary of its value (not the value).
#[derive(Default)]
struct Report(Mutex<Vec<(String, Summary)>>);

#[derive(Debug, Clone, PartialEq)]
enum Summary {
    Rows(usize),
    Stats(Stats),
    Stored(String),
    Other(String),
}

impl Callbacks for Report {
    fn posttask(&self, key: &Key, value: &Value) {
        let summary = match value {
            Value::Array(a) => Summary::Rows(a.len()),
            Value::Str(s) => Summary::Stored(s.clone()),
            v => match v.to::<Serde<Stats>>() {
                Ok(s) => Summary::Stats(s.0),
                Err(_) => Summary::Other(v.kind()),
            },
        };
        self.0
            .lock()
            .expect("not poisoned")
            .push((key.to_string(), summary));
    }
}

impl Report {
    fn take(&self) -> Vec<(String, Summary)> {
        let mut v = std::mem::take(&mut *self.0.lock().expect("not poisoned"));
        v.sort_by(|a, b| stage(&a.0).cmp(&stage(&b.0)).then(a.0.cmp(&b.0)));
        v
    }
}

/// Pipeline order of a key, for printing.
fn stage(key: &str) -> usize {
    ["load", "clean", "analyze", "store"]
        .iter()
        .position(|s| key.starts_with(s))
        .unwrap_or(4)
}

fn print_steps(steps: &[(String, Summary)], files: &[PathBuf]) {
    let rows_of = |k: &str| {
        steps.iter().find_map(|(key, s)| match s {
            Summary::Rows(n) if key == k => Some(*n),
            _ => None,
        })
    };
    for (key, summary) in steps {
        let line = match summary {
            Summary::Rows(n) if key.starts_with("load-") => {
                let i: usize = key[5..].parse().unwrap_or(1);
                let file = files
                    .get(i - 1)
                    .and_then(|f| f.file_name())
                    .unwrap_or_default();
                format!(
                    "read {} rows from {}",
                    thousands(*n),
                    file.to_string_lossy()
                )
            }
            Summary::Rows(n) => {
                let loaded = rows_of(&key.replacen("clean", "load", 1)).unwrap_or(*n);
                format!(
                    "kept {} rows, dropped {} (NaN or outlier)",
                    thousands(*n),
                    thousands(loaded - n)
                )
            }
            Summary::Stats(s) => format!(
                "{} rows: mean {:.3}, std {:.3}, min {:.3}, median {:.3}, max {:.3}",
                thousands(s.rows),
                s.mean,
                s.std,
                s.min,
                s.median,
                s.max
            ),
            Summary::Stored(p) => format!("wrote {p}"),
            Summary::Other(kind) => format!("produced a {kind}"),
        };
        println!("    {key:<9} {line}");
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Main.
// ---------------------------------------------------------------------------------------------

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/pipeline-data"), PathBuf::from);
    let files = generate(&dir)?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let files: Vec<PathBuf> = files
        .iter()
        .map(|f| dir.join(f.file_name().unwrap_or_default()))
        .collect();
    let out = dir.join("analysis.json");
    let mib = files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum::<u64>() as f64
        / (1 << 20) as f64;
    println!("forkgraph pipeline: load -> clean -> analyze -> store\n");
    println!(
        "input: {} files in {} ({mib:.1} MiB of little-endian f64, with NaNs and outliers)",
        files.len(),
        dir.display()
    );

    let path = |f: &PathBuf| f.to_string_lossy().into_owned();
    let dsk = graph! {
        "load-1" => (load, path(&files[0])),
        "load-2" => (load, path(&files[1])),
        "load-3" => (load, path(&files[2])),
        "clean-1" => (clean, key("load-1")),
        "clean-2" => (clean, key("load-2")),
        "clean-3" => (clean, key("load-3")),
        "analyze" => (analyze, [key("clean-1"), key("clean-2"), key("clean-3")]),
        "store" => (store, key("analyze"), path(&out)),
    };

    // One line per scheduler.
    let schedulers: Vec<(&str, Box<dyn Scheduler>)> = vec![
        ("sync", Box::new(SyncScheduler)),
        ("threads", threads()?),
        ("processes", processes()?),
    ];

    let report = Arc::new(Report::default());
    let opts = GetOptions::new().callback(report.clone());
    // The statistics and where they were stored.
    let target = Keys::from(vec!["analyze", "store"]);
    let mut expected: Option<Stats> = None;
    for (name, sched) in &schedulers {
        let mut times = Vec::new();
        let mut result = None;
        let mut steps = Vec::new();
        for _ in 0..RUNS {
            let t0 = Instant::now();
            let r = sched
                .get_with(&dsk, &target, &opts)
                .map_err(|e| format!("{name}: {e}"))?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            result = Some(r);
            steps = report.take();
        }
        let (stats, stored) = stats_and_path(result.expect("RUNS > 0"))
            .map_err(|e| format!("{name}: unexpected result: {e}"))?;
        if stored != path(&out) {
            return Err(format!(
                "{name}: store wrote {stored}, expected {}",
                out.display()
            ));
        }
        let on_disk: Stats = std::fs::read_to_string(&out)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
            .map_err(|e| format!("{}: {e}", out.display()))?;
        if !on_disk.same_as(&stats) {
            return Err(format!(
                "{name}: {} does not hold the analysis",
                out.display()
            ));
        }
        let timing = format!(
            "{:.1} ms (best of {RUNS}; first {:.1} ms)",
            times.iter().copied().fold(f64::INFINITY, f64::min),
            times[0]
        );
        match &expected {
            None => {
                println!("\n{name}: {timing}");
                print_steps(&steps, &files);
                expected = Some(stats);
            }
            Some(e) if *e == stats => println!("{name}: {timing}, same result"),
            Some(e) => {
                return Err(format!(
                    "{name} computed {stats:?}, the first scheduler {e:?}"
                ));
            }
        }
    }
    println!("\noutput: {}", out.display());

    // What a bad input looks like: the error names the task, the function and the file.
    let missing = dir.join("myfile.missing.data");
    let bad = graph! {
        "load-1" => (load, path(&missing)),
        "clean-1" => (clean, key("load-1")),
    };
    match SyncScheduler.get(&bad, "clean-1") {
        Err(e) => println!("\na missing input file is reported as:\n    {e}"),
        Ok(_) => return Err(format!("{} should not exist", missing.display())),
    }
    Ok(())
}
