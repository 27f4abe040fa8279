//! Building a graph from Rust code with typed task handles, and fetching typed results.
//!
//! ```text
//! cargo run --example typed_graph
//! ```
//!
//! `#[forkgraph::task]` gives each function a handle of the same name: `clean(&data)` still calls
//! the function, while `clean.task(raw)` is a task calling it, checked by the compiler — the
//! number of arguments, and each argument's type against its parameter (a literal, a
//! `TypedKey<T>` returned by an earlier `add`, or a nested task). `get_typed` then returns the
//! key's type instead of a `Value`. The same graph written with `graph!` is checked the same way,
//! and the string form (`Task::new("clean", ..)`) remains for graphs built from data.

use forkgraph::{graph, key, Graph, ProcessPool, Serde, SyncScheduler, ThreadPool, TypedKey};
use serde::{Deserialize, Serialize};

/// Sensor readings: a ramp with a spike and a gap (NaN) every `period` values.
#[forkgraph::task]
fn readings(sensor: u32, n: usize, period: usize) -> Vec<f64> {
    (0..n)
        .map(|i| match i % period {
            0 => f64::NAN,
            1 => 1e6,
            _ => f64::from(sensor) + i as f64 / n as f64,
        })
        .collect()
}

/// Drops gaps and values further than `limit` from zero.
#[forkgraph::task]
fn clean(xs: &[f64], limit: f64) -> Vec<f64> {
    xs.iter()
        .copied()
        .filter(|x| x.is_finite() && x.abs() <= limit)
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    count: usize,
    mean: f64,
    max: f64,
}

/// Summarizes every sensor's cleaned readings (read in place, never copied).
#[forkgraph::task]
fn summarize(parts: Vec<&[f64]>) -> Serde<Summary> {
    let count = parts.iter().map(|p| p.len()).sum();
    let sum: f64 = parts.iter().flat_map(|p| p.iter()).sum();
    let max = parts
        .iter()
        .flat_map(|p| p.iter())
        .fold(f64::MIN, |m, x| m.max(*x));
    Serde(Summary {
        count,
        mean: sum / count as f64,
        max,
    })
}

#[forkgraph::task]
fn describe(s: Serde<Summary>, unit: &str) -> String {
    let s = s.0;
    format!(
        "{} readings, mean {:.3} {unit}, max {:.3} {unit}",
        s.count, s.mean, s.max
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The handle still calls the function.
    assert_eq!(clean(&[1.0, f64::NAN, 5.0], 2.0), vec![1.0]);

    // The builder: each `add` returns a typed key for the task's result.
    let mut g = Graph::new();
    let cleaned: Vec<TypedKey<Vec<f64>>> = (0..3_u32)
        .map(|sensor| {
            let raw = g.add(
                ("raw", sensor),
                readings.task(sensor, 10_000_usize, 100_usize),
            );
            g.add(("clean", sensor), clean.task(raw, 100.0))
        })
        .collect();
    // `Vec<TypedKey<Vec<f64>>>` for a `Vec<&[f64]>` parameter: checked at compile time.
    let summary: TypedKey<Serde<Summary>> = g.add("summary", summarize.task(cleaned));
    let report: TypedKey<String> = g.add("report", describe.task(&summary, "°C"));

    let text: String = SyncScheduler.get_typed(&g, &report)?;
    println!("sync:      {text}");
    let s: Summary = ThreadPool::new()?.get_typed(&g, &summary)?.0;
    println!("threads:   {} readings, max {:.3}", s.count, s.max);
    let pool = ProcessPool::builder().workers(2).build()?;
    let text_p = pool.get_typed(&g, &report)?;
    println!("processes: {text_p}");
    assert_eq!(text, text_p);

    // The same graph with `graph!`: the handles are checked the same way (try `(clean, "x")`).
    let g2 = graph! {
        ("raw", 0) => (readings, 0_u32, 10_000_usize, 100_usize),
        ("clean", 0) => (clean, key(("raw", 0)), 100.0),
        "summary" => (summarize, [key(("clean", 0))]),
        "report" => (describe, key("summary"), "°C"),
    };
    let one = SyncScheduler.get(&g2, "report")?.to::<String>()?;
    println!("graph!:    {one}");
    Ok(())
}
