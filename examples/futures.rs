//! The process pool as an executor: `map` (typed results, several arguments per item, a
//! per-item form that keeps going past failures), `submit` handles, `as_completed`,
//! `imap_unordered`, cancelling a call, and several threads sharing one pool at once.
//!
//! Run: `cargo run --release --example futures`

use std::time::{Duration, Instant};

use forkgraph::{as_completed, Args, Error, ProcessPool, Value};

#[forkgraph::task]
fn square(x: i64) -> i64 {
    x * x
}

#[forkgraph::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Sleeps `ms` milliseconds, then returns them (a stand-in for real work).
#[forkgraph::task]
fn nap(ms: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms as u64));
    ms
}

#[forkgraph::task]
fn checked_sqrt(x: f64) -> Result<f64, String> {
    if x < 0.0 {
        Err(format!("sqrt of negative {x}"))
    } else {
        Ok(x.sqrt())
    }
}

fn main() -> Result<(), Error> {
    let pool = ProcessPool::builder().workers(4).build().expect("pool");

    // map: one call per item, results in item order.
    let squares = pool.map("square", 1..=5)?;
    println!("map square 1..=5      -> {squares:?}");
    let sums = pool.map("add", [Args::new([1, 2]), Args::new([30, 40])])?;
    println!("map add (pairs)       -> {sums:?}");

    // map_results: keeps going past failures, one Result per item.
    for (i, r) in pool
        .map_results("checked_sqrt", [4.0, -1.0, 9.0])?
        .into_iter()
        .enumerate()
    {
        match r {
            Ok(v) => println!("checked_sqrt item {i}  -> {v:?}"),
            Err(e) => println!("checked_sqrt item {i}  -> error: {e}"),
        }
    }

    // submit: four 300 ms calls on four workers run at the same time (~0.3 s, not 1.2 s).
    let t0 = Instant::now();
    let handles: Vec<_> = (0..4).map(|_| pool.submit("nap", 300)).collect();
    let naps: Vec<Value> = handles
        .into_iter()
        .map(|h| h.wait())
        .collect::<Result<_, _>>()?;
    println!("4 x submit(nap 300)   -> {naps:?} in {:?}", t0.elapsed());

    // as_completed: handles come back in the order their calls finish.
    let handles: Vec<_> = [400, 100, 250]
        .into_iter()
        .map(|ms| pool.submit("nap", ms))
        .collect();
    let order: Vec<Value> = as_completed(handles)
        .map(|h| h.wait())
        .collect::<Result<_, _>>()?;
    println!("as_completed          -> {order:?}");

    // imap_unordered: (index, result) as each item finishes.
    let firsts: Vec<(usize, Value)> = pool
        .imap_unordered("nap", [300, 10, 150])?
        .collect::<Result<_, _>>()?;
    println!("imap_unordered        -> {firsts:?}");

    // cancel: a running call has its worker killed and replaced.
    let mut long = pool.submit("nap", 60_000);
    let _ = long.wait_timeout(Duration::from_millis(100));
    println!("cancel a running call -> {}", long.cancel());
    println!("its result            -> {:?}", long.wait().unwrap_err());

    // Several threads share the pool at once; their calls interleave on the workers.
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let pool = &pool;
            s.spawn(move || pool.map("nap", [200]).map(|v| (t, v)));
        }
    });
    println!("4 threads x map(nap 200) at once in {:?}", t0.elapsed());
    Ok(())
}
