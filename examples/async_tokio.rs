//! The process pool from async code under tokio: `submit(..).await` and `get_async(..).await`
//! are plain `std::future::Future`s woken by the pool's own threads, so awaiting them never
//! blocks tokio's threads (forkgraph depends on no async runtime).
//!
//! Run: `cargo run --release --example async_tokio`

use std::time::{Duration, Instant};

use forkgraph::{graph, key, ProcessPool};

#[forkgraph::task]
fn nap(ms: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms as u64));
    ms
}

#[forkgraph::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), forkgraph::Error> {
    let pool = ProcessPool::builder().workers(3).build().expect("pool");

    // Three 300 ms calls awaited together on one thread: about 0.3 s in all.
    let t0 = Instant::now();
    let (a, b, c) = tokio::join!(
        pool.submit("nap", 300),
        pool.submit("nap", 300),
        pool.submit("nap", 300)
    );
    println!("3 naps: {:?} {:?} {:?} in {:?}", a?, b?, c?, t0.elapsed());

    // A graph, awaited; a timer keeps ticking on the same thread meanwhile.
    let g = graph! {
        "x" => (nap, 200),
        "y" => (nap, 200),
        "sum" => (add, key("x"), key("y")),
    };
    let ticker = tokio::spawn(async {
        let mut ticks = 0;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ticks += 1;
        }
        ticks
    });
    let sum = pool
        .get_async(&g, "sum")
        .await?
        .to::<i64>()
        .expect("an int");
    println!(
        "sum = {sum}; the timer ticked {} times meanwhile",
        ticker.await.unwrap()
    );
    Ok(())
}
