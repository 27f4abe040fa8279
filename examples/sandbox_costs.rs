//! What the sandbox costs, measured round-robin so that every variant sees the same machine
//! load (criterion's `benches/sandbox.rs` runs one variant after the other, which a loaded
//! machine turns into noise): worker restart (kill, reap, fork, sandbox set-up, first message)
//! and shape A (10,000 independent tasks and a sum, 2 workers), sandbox off and on.
//!
//! Run: `cargo run --release --example sandbox_costs`

use std::time::Instant;

use forkgraph::{Arg, Graph, Key, ProcessPool, Sandbox, Task};

#[forkgraph::task]
fn inc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

/// (median, best) in ms.
fn summary(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(|a, b| a.total_cmp(b));
    (t[t.len() / 2], t[0])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let variants: Vec<(&str, Option<Sandbox>)> = vec![
        ("off", None),
        ("strict", Some(Sandbox::strict())),
        (
            "strict, no namespaces",
            Some(Sandbox::strict().namespaces(false)),
        ),
        (
            "strict + memory limit",
            Some(Sandbox::strict().memory_limit(1 << 30)),
        ),
    ];
    let mut pools = Vec::new();
    for (name, sandbox) in variants {
        let mut b = ProcessPool::builder().workers(2);
        if let Some(s) = sandbox {
            b = b.sandbox(s);
        }
        pools.push((name, b.build()?));
    }
    let mut restarts = vec![Vec::new(); pools.len()];
    for _ in 0..100 {
        for (i, (_, p)) in pools.iter().enumerate() {
            let t = Instant::now();
            p.restart_worker(0)?;
            restarts[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let n = 10_000;
    let mut g = Graph::new();
    let mut parts = Vec::new();
    for i in 0..n {
        g.insert(
            format!("inc-{i}"),
            Task::new("inc", vec![Arg::Value((i as i64).into())]),
        );
        parts.push(Arg::Key(Key::from(format!("inc-{i}"))));
    }
    g.insert("sum", Task::new("total", vec![Arg::List(parts)]));
    let mut shape_a = vec![Vec::new(); pools.len()];
    for _ in 0..15 {
        for (i, (_, p)) in pools.iter().enumerate() {
            let t = Instant::now();
            p.get(&g, "sum")?;
            shape_a[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!("| sandbox | restart median (best) | shape A median (best) |");
    println!("|---|---|---|");
    for (i, (name, _)) in pools.iter().enumerate() {
        let (rm, rb) = summary(restarts[i].clone());
        let (am, ab) = summary(shape_a[i].clone());
        println!("| {name} | {rm:.2} ms ({rb:.2}) | {am:.1} ms ({ab:.1}) |");
    }
    Ok(())
}
