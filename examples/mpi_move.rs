//! MPI figures printed, not asserted (feature `mpi`): the cost of moving a 64 MiB result
//! between ranks inside a `get`, raw MPI's time for the same bytes into a reused buffer, and the
//! CPU an idle rank burns.
//!
//! ```text
//! cargo build --release --features mpi --example mpi_move
//! mpirun --bind-to none --oversubscribe -np 2 target/release/examples/mpi_move          # cluster
//! mpirun --bind-to none --oversubscribe -np 2 target/release/examples/mpi_move raw      # raw MPI
//! ```

use std::time::{Duration, Instant};

use forkgraph::{Arg, Graph, Key, MpiCluster, Task};

const MIB: usize = 1 << 20;
const REPEATS: usize = 5;

#[forkgraph::task]
fn fill64(seed: u64) -> std::io::Result<forkgraph::SharedVec<u8>> {
    let mut v = forkgraph::SharedVec::<u8>::zeroed(64 * MIB)?;
    v.fill(seed as u8);
    Ok(v)
}

#[forkgraph::task]
fn first_bytes(a: &[u8], b: &[u8]) -> u64 {
    u64::from(a[0]) + u64::from(b[b.len() - 1])
}

#[forkgraph::task]
fn first_byte(a: &[u8]) -> u64 {
    u64::from(a[0])
}

fn k(s: &str) -> Arg {
    Arg::Key(Key::from(s))
}

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..REPEATS).map(|_| f()).min().unwrap_or_default()
}

/// CPU seconds (user + system) of process `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The other ranks on this host: siblings of this process running the same executable.
fn sibling_ranks() -> Vec<u32> {
    let me = std::process::id();
    let exe = std::env::current_exe().ok();
    let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap_or_default();
    let ppid: u32 = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{ppid}/task")) {
        for t in tasks.flatten() {
            let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for pid in c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
                let e = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
                if pid != me && e.is_some() && e == exe {
                    out.push(pid);
                }
            }
        }
    }
    out
}

fn raw() {
    use mpi::traits::*;
    let universe = mpi::initialize().expect("MPI initializes once");
    let world = universe.world();
    let mut buf = vec![1u8; 64 * MIB]; // pre-touched and reused
    let t = best(|| {
        world.barrier();
        let t0 = Instant::now();
        if world.rank() == 0 {
            world.process_at_rank(1).send(&buf[..]);
            let _ = world.process_at_rank(1).receive::<u8>();
        } else if world.rank() == 1 {
            world.process_at_rank(0).receive_into(&mut buf[..]);
            world.process_at_rank(0).send(&0u8);
        }
        t0.elapsed()
    });
    if world.rank() == 0 {
        println!(
            "raw MPI: 64 MiB rank 0 -> 1 into a reused buffer: {:.1} ms (best of {REPEATS})",
            t.as_secs_f64() * 1e3
        );
    }
}

fn cluster() {
    let c = MpiCluster::builder()
        .workers_per_rank(Some(1))
        .init()
        .expect("init");
    // p is made on rank 0, q on rank 1 (least loaded); `both` runs where p is and moves q.
    let mut moved = Graph::new();
    moved.insert("p", Task::new("fill64", vec![Arg::Value(1u64.into())]));
    moved.insert("q", Task::new("fill64", vec![Arg::Value(2u64.into())]));
    moved.insert("both", Task::new("first_bytes", vec![k("p"), k("q")]));
    // The same work where each array is read where it was made.
    let mut local = Graph::new();
    local.insert("p", Task::new("fill64", vec![Arg::Value(1u64.into())]));
    local.insert("q", Task::new("fill64", vec![Arg::Value(2u64.into())]));
    local.insert("rp", Task::new("first_byte", vec![k("p")]));
    local.insert("rq", Task::new("first_byte", vec![k("q")]));
    let keys = || {
        forkgraph::Keys::List(vec![
            forkgraph::Keys::One(Key::from("rp")),
            forkgraph::Keys::One(Key::from("rq")),
        ])
    };
    let before = c.stats().expect("stats");
    let t_moved = best(|| {
        let t0 = Instant::now();
        c.get(&moved, "both").expect("get");
        t0.elapsed()
    });
    let after = c.stats().expect("stats");
    let t_local = best(|| {
        let t0 = Instant::now();
        c.get(&local, keys()).expect("get");
        t0.elapsed()
    });
    println!(
        "cluster on {} ranks: two 64 MiB results, one moved: {:.1} ms; both read in place: \
         {:.1} ms; the move costs ~{:.1} ms ({} bytes moved over {REPEATS} gets)",
        c.ranks(),
        t_moved.as_secs_f64() * 1e3,
        t_local.as_secs_f64() * 1e3,
        (t_moved.as_secs_f64() - t_local.as_secs_f64()) * 1e3,
        after.moved_bytes - before.moved_bytes,
    );
    let ranks = sibling_ranks();
    let cpu0: Vec<f64> = ranks.iter().map(|&p| cpu_seconds(p)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let wall = t0.elapsed().as_secs_f64();
    for (p, c0) in ranks.iter().zip(cpu0) {
        println!(
            "idle rank (pid {p}): {:.1}% of a core over {wall:.1} s",
            (cpu_seconds(*p) - c0) / wall * 100.0
        );
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("raw") {
        raw();
    } else {
        cluster();
    }
}
