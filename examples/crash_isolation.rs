//! Crash isolation: native code that segfaults or aborts costs one worker process, never the
//! program. Shows the error a user sees (naming the key, the function, the signal and the
//! worker's last stderr lines) and a crash that is retried on a fresh worker.
//!
//! Run: `cargo run --release --example crash_isolation`

use std::path::PathBuf;

use forkgraph::{graph, key, Error, ProcessPool, TaskOptions};

/// Sums the squares of `0..n`.
#[forkgraph::task]
fn squares(n: i64) -> i64 {
    (0..n).map(|i| i * i).sum()
}

/// Pretends to be a buggy native library: dereferences a null pointer.
#[forkgraph::task]
fn buggy_native(x: i64) -> i64 {
    eprintln!("buggy_native: parsing record {x}");
    // SAFETY: none; this is the bug being demonstrated. The write faults and the kernel kills
    // the worker process with SIGSEGV.
    unsafe { std::ptr::null_mut::<i64>().write_volatile(x) };
    x
}

/// Pretends to be a library that hits an internal assertion and calls abort().
#[forkgraph::task]
fn assertive_native(x: i64) -> i64 {
    eprintln!("assertive_native: invariant broken for {x}, aborting");
    std::process::abort()
}

/// Crashes the first time it is called for `marker` (a file), succeeds after: a flaky native
/// dependency.
#[forkgraph::task]
fn flaky_native(marker: &str) -> Result<i64, String> {
    if std::fs::metadata(marker).is_err() {
        std::fs::write(marker, b"crashed once").map_err(|e| format!("{marker}: {e}"))?;
        eprintln!("flaky_native: first call, crashing");
        // SAFETY: none; a deliberate crash.
        unsafe { std::ptr::null_mut::<i64>().write_volatile(1) };
    }
    Ok(42)
}

fn show(what: &str, r: Result<forkgraph::Output, Error>) {
    match r {
        Ok(v) => println!("{what}: ok -> {:?}\n", v.into_value()),
        Err(e) => println!(
            "{what}: error ->\n  {}\n",
            e.to_string().replace('\n', "\n    | ")
        ),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ProcessPool::builder().workers(2).build()?;
    println!("pool of 2 worker processes: {:?}\n", pool.worker_pids());

    let g = graph! {
        "n" => 1000,
        "fine" => (squares, key("n")),
        "segv" => (buggy_native, 7),
        "abrt" => (assertive_native, 8),
    };
    show("a healthy task", pool.get(&g, "fine"));
    show("a task that segfaults", pool.get(&g, "segv"));
    show("a task that aborts", pool.get(&g, "abrt"));
    println!(
        "workers now: {:?} (the crashed ones were replaced)\n",
        pool.worker_pids()
    );

    let dir: PathBuf = std::env::temp_dir().join(format!("forkgraph-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let marker = dir.join("flaky-marker");
    let _ = std::fs::remove_file(&marker);
    let marker = marker.to_string_lossy().into_owned();
    let mut g2 = graph! { "flaky" => (flaky_native, marker.as_str()) };
    g2.set_options("flaky", TaskOptions::new().retries(2));
    show("a flaky task with retries(2)", pool.get(&g2, "flaky"));
    show("the pool still works", pool.get(&g, "fine"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
