//! Overhead per command of `forkgraph run` against `make -j2` and GNU parallel, on 1,000
//! commands of `true` at 2 at once, and the cost of planning and skipping 1,000 up-to-date
//! tasks. One run of each, side by side; prints a Markdown table for the README.
//!
//! ```sh
//! cargo build --release -p forkgraph-cli && cargo run --release -p forkgraph-cli --example cli_overhead
//! ```
//!
//! make and GNU parallel are optional (a row says when one is missing).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const N: usize = 1000;

fn forkgraph_bin() -> PathBuf {
    // target/<profile>/examples/cli_overhead -> target/<profile>/forkgraph
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("forkgraph"))
        .expect("target folder");
    if !bin.exists() {
        eprintln!(
            "{} is missing: build it first with `cargo build --release -p forkgraph-cli`",
            bin.display()
        );
        std::process::exit(2);
    }
    bin
}

fn time(mut cmd: Command) -> Option<Duration> {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let t = Instant::now();
    let s = cmd.status().ok()?;
    let d = t.elapsed();
    s.success().then_some(d)
}

/// fork+exec+wait of `true`, N times, from 2 threads (the floor every runner pays).
fn baseline() -> Duration {
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..N / 2 {
                    Command::new("true").status().expect("true");
                }
            });
        }
    });
    t.elapsed()
}

fn main() {
    let fg = forkgraph_bin();
    let dir = std::env::temp_dir().join(format!("fg-cli-overhead-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let list: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    // Commands of `true` with no outputs: they always run.
    std::fs::write(
        dir.join("true.toml"),
        format!(
            "[vars]\nn = [{}]\n\n[[task]]\nkey = \"t{{i}}\"\nfor_each = {{ i = \"n\" }}\nargv = [\"true\"]\n",
            list.join(", ")
        ),
    )
    .expect("write");
    // Tasks with an output each, for the resume measurement.
    std::fs::write(
        dir.join("outputs.toml"),
        format!(
            "[vars]\nn = [{}]\n\n[[task]]\nkey = \"t{{i}}\"\nfor_each = {{ i = \"n\" }}\noutputs = [\"out/{{i}}\"]\nargv = [\"touch\", \"{{out}}\"]\n",
            list.join(", ")
        ),
    )
    .expect("write");
    let mut mk = String::from("all:");
    for i in 0..N {
        mk.push_str(&format!(" t{i}"));
    }
    mk.push_str("\n.PHONY: all");
    for i in 0..N {
        mk.push_str(&format!(" t{i}"));
    }
    mk.push('\n');
    for i in 0..N {
        mk.push_str(&format!("t{i}:\n\t@true\n"));
    }
    std::fs::write(dir.join("Makefile"), mk).expect("write");

    let base = baseline();
    let mut rows: Vec<(String, Option<Duration>)> = Vec::new();
    rows.push((
        "fork+exec+wait of `true` from 2 threads (floor)".into(),
        Some(base),
    ));
    let mut c = Command::new(&fg);
    c.args(["run", "-j", "2"]).arg(dir.join("true.toml"));
    rows.push(("`forkgraph run -j 2` (argv = [\"true\"])".into(), time(c)));
    let mut c = Command::new("make");
    c.args(["-j2", "-s", "-C"]).arg(&dir);
    rows.push(("`make -j2` (recipe `@true`)".into(), time(c)));
    let mut c = Command::new("parallel");
    c.args(["-j2", "true", ":::"]).args(&list);
    rows.push(("`parallel -j2 true ::: 0..999`".into(), time(c)));

    let mut c = Command::new(&fg);
    c.args(["run", "-j", "2"]).arg(dir.join("outputs.toml"));
    let first = time(c);
    let mut c = Command::new(&fg);
    c.args(["run", "-j", "2"]).arg(dir.join("outputs.toml"));
    let resume = time(c);
    let mut c = Command::new(&fg);
    c.arg("check").arg(dir.join("outputs.toml"));
    let check = time(c);

    println!("{N} commands at 2 at once, one run each (2026 VM, 2 cores):\n");
    println!("| runner | total | per command | over the floor |");
    println!("|---|---|---|---|");
    for (name, d) in &rows {
        match d {
            Some(d) => println!(
                "| {name} | {:.3} s | {:.0} us | {:+.0} us |",
                d.as_secs_f64(),
                d.as_secs_f64() * 1e6 / N as f64,
                (d.as_secs_f64() - base.as_secs_f64()) * 1e6 / N as f64
            ),
            None => println!("| {name} | not available (missing or failed) | | |"),
        }
    }
    println!();
    let show = |d: Option<Duration>| {
        d.map_or("failed".to_string(), |d| {
            format!("{:.3} s", d.as_secs_f64())
        })
    };
    println!("| {N} tasks with an output each | time |");
    println!("|---|---|");
    println!("| first run (`touch {{out}}`) | {} |", show(first));
    println!("| resume: all planned and skipped | {} |", show(resume));
    println!(
        "| `forkgraph check` (plan, order, freshness) | {} |",
        show(check)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
