//! Lifecycle of a process pool: parent death, Ctrl-C, multithreaded parents, chaos.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{assert_helper_prints, children, helper, is_helper, running, wait_gone, watchdog};
use forkgraph::{
    graph, Arg, Callbacks, Error, GetOptions, Graph, Key, Keys, ProcessPool, Scheduler,
    SyncScheduler, Task, Value,
};

#[forkgraph::task]
fn busy_forever(_x: i64) -> i64 {
    let mut i = 0u64;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

#[forkgraph::task]
fn chatty(x: i64) -> i64 {
    println!("chatty task {x} prints");
    eprintln!("chatty task {x} writes to stderr");
    let v: Vec<u64> = (0..10_000).map(|i| i * x as u64).collect();
    v.iter().sum::<u64>() as i64
}

#[forkgraph::task]
fn mix(a: i64, b: i64) -> i64 {
    (a.wrapping_mul(31) ^ b).rem_euclid(1_000_003)
}

#[forkgraph::task]
fn leaf(i: i64) -> i64 {
    i * 7 + 1
}

/// The helper: builds a pool, prints its pids, then blocks until killed.
#[test]
fn helper_parent_death() {
    if !is_helper("helper_parent_death") {
        return;
    }
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let mut pids = vec![pool.fork_server_pid()];
    pids.extend(pool.worker_pids());
    // Keep a task running too: a busy worker must die as well.
    let p2 = pool.clone();
    std::thread::spawn(move || {
        let g = graph! { "x" => (busy_forever, 0) };
        let _ = p2.get(&g, "x");
    });
    println!(
        "PIDS {}",
        pids.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    unreachable!("the test kills this process first");
}

/// Kills the helper if the test fails before it ends, so that no helper (and so no pool)
/// outlives a failed test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

fn read_pids(out: &mut impl BufRead) -> Vec<i32> {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "helper ended early");
        // The harness prints "test NAME ... " before the helper's first line.
        if let Some(at) = line.find("PIDS ") {
            return line[at + 5..]
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
        }
    }
}

#[test]
fn workers_exit_when_the_parent_is_killed() {
    watchdog(60, || {
        let mut child = KillOnDrop(helper("helper_parent_death").spawn().unwrap());
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let pids = read_pids(&mut out);
        assert_eq!(pids.len(), 3, "fork server and two workers");
        for &p in &pids {
            assert!(running(p), "{p} should be running before the kill");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for &p in &pids {
            wait_gone(p, 10);
        }
    });
}

/// The helper: a get with a task that never ends, interrupted by SIGINT from the test.
#[test]
fn helper_ctrl_c() {
    if !is_helper("helper_ctrl_c") {
        return;
    }
    struct Announce;
    impl Callbacks for Announce {
        fn pretask(&self, _key: &Key) {
            println!("STARTED");
            std::io::stdout().flush().unwrap();
        }
    }
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let before = pool.worker_pids();
    println!(
        "PIDS {}",
        before
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let g = graph! { "x" => (busy_forever, 0) };
    let r = pool.get_with(
        &g,
        &"x".into(),
        &GetOptions::new().callback(Arc::new(Announce)),
    );
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    println!("INTERRUPTED");
    // The pool works again with fresh workers.
    let g = graph! { "y" => (leaf, 1) };
    assert_eq!(pool.get(&g, "y").unwrap().to::<i64>().unwrap(), 8);
    println!("USABLE");
    std::io::stdout().flush().unwrap();
}

#[test]
fn ctrl_c_stops_workers_and_get_returns_interrupted() {
    watchdog(60, || {
        let mut child = KillOnDrop(helper("helper_ctrl_c").spawn().unwrap());
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let pids = read_pids(&mut out);
        let mut line = String::new();
        while !line.contains("STARTED") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "helper ended early");
        }
        // SAFETY: sending SIGINT to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        let status = child.wait().unwrap();
        assert!(rest.contains("INTERRUPTED"), "{rest}");
        assert!(rest.contains("USABLE"), "{rest}");
        assert!(status.success(), "{status:?}");
        for p in pids {
            wait_gone(p, 10);
        }
    });
}

#[test]
fn pools_work_while_other_threads_hold_stdout_and_allocate() {
    watchdog(120, || {
        let stop = Arc::new(AtomicBool::new(false));
        let mut noisy = Vec::new();
        for _ in 0..2 {
            let stop = stop.clone();
            noisy.push(std::thread::spawn(move || {
                let mut keep: Vec<Vec<u8>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let _lock = std::io::stdout().lock();
                    for i in 0..64 {
                        keep.push(vec![i as u8; 4096 + i]);
                    }
                    keep.truncate(16);
                }
            }));
        }
        for round in 0..3 {
            let pool = ProcessPool::builder().workers(2).build().unwrap();
            let mut g = Graph::new();
            for i in 0..50i64 {
                g.task(("c", i), "chatty", vec![Arg::Value(i.into())]);
            }
            let keys: Vec<Keys> = (0..50i64).map(|i| ("c", i).into()).collect();
            let out = pool.get(&g, keys.clone()).unwrap();
            assert_eq!(out, SyncScheduler.get(&g, keys).unwrap(), "round {round}");
            for w in 0..2 {
                pool.restart_worker(w).unwrap();
            }
            let g2 = graph! { "k" => (chatty, 3) };
            pool.get(&g2, "k").unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for t in noisy {
            t.join().unwrap();
        }
    });
}

/// Kills a random worker every `every` finished tasks (from the engine's own thread: pacing
/// without sleeps).
struct Chaos {
    server: i32,
    every: usize,
    done: AtomicUsize,
    kills: AtomicUsize,
    seed: AtomicUsize,
}

impl Callbacks for Chaos {
    fn posttask(&self, _key: &Key, _value: &Value) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if n % self.every != 0 {
            return;
        }
        let workers = children(self.server);
        if workers.is_empty() {
            return;
        }
        let s = self
            .seed
            .fetch_add(0x9E37_79B9, Ordering::Relaxed)
            .wrapping_mul(2_654_435_761);
        let victim = workers[s % workers.len()];
        // SAFETY: SIGKILL to a worker process of our own pool.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        self.kills.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn chaos_random_worker_kills_do_not_change_the_result() {
    watchdog(240, || {
        // 10,000 tasks: 5,000 leaves, then layers mixing neighbours down to one key.
        let mut g = Graph::new();
        let mut layer: Vec<Key> = Vec::new();
        for i in 0..5000i64 {
            let k = Key::from(("leaf", i));
            g.insert(k.clone(), Task::new("leaf", vec![Arg::Value(i.into())]));
            layer.push(k);
        }
        let mut depth = 0i64;
        let mut count = 5000;
        while layer.len() > 1 {
            depth += 1;
            let mut next = Vec::new();
            for (j, pair) in layer.chunks(2).enumerate() {
                let k = Key::from(("mix", depth, j as i64));
                let b = pair.get(1).unwrap_or(&pair[0]);
                g.insert(
                    k.clone(),
                    Task::new("mix", vec![Arg::Key(pair[0].clone()), Arg::Key(b.clone())]),
                );
                next.push(k);
                count += 1;
            }
            layer = next;
        }
        assert!(count >= 9999, "{count} tasks");
        let root = layer[0].clone();
        let expected = SyncScheduler.get(&g, root.clone()).unwrap();
        let pool = ProcessPool::builder()
            .workers(2)
            .retries(1000)
            .max_worker_deaths(1000)
            .build()
            .unwrap();
        let chaos = Arc::new(Chaos {
            server: pool.fork_server_pid(),
            every: 400,
            done: AtomicUsize::new(0),
            kills: AtomicUsize::new(0),
            seed: AtomicUsize::new(12345),
        });
        let got = pool
            .get_with(&g, &root.into(), &GetOptions::new().callback(chaos.clone()))
            .unwrap();
        assert_eq!(got, expected);
        assert!(
            chaos.kills.load(Ordering::Relaxed) >= 10,
            "the chaos really happened"
        );
        assert!(pool.workers_started() > 2 + 10 - 1);
    });
}

static OWN_HANDLER_RAN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn own_handler(_sig: libc::c_int) {
    OWN_HANDLER_RAN.store(true, Ordering::SeqCst);
}

/// The helper: a program with its own Ctrl-C handler uses a pool; afterwards SIGINT still
/// reaches its handler (forkgraph restored it) instead of killing it.
#[test]
fn helper_own_sigint_handler() {
    if !is_helper("helper_own_sigint_handler") {
        return;
    }
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, own_handler as *const () as libc::sighandler_t) };
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let g = graph! { "y" => (leaf, 2) };
    assert_eq!(pool.get(&g, "y").unwrap().to::<i64>().unwrap(), 15);
    // SAFETY: raising a signal in our own process.
    unsafe { libc::raise(libc::SIGINT) };
    assert!(
        OWN_HANDLER_RAN.load(Ordering::SeqCst),
        "our own handler ran"
    );
    println!("SURVIVED");
}

#[test]
fn a_programs_own_ctrl_c_handler_is_restored_after_get() {
    watchdog(60, || {
        assert_helper_prints("helper_own_sigint_handler", "SURVIVED");
    });
}

static LATE_HANDLER_RAN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn late_handler(_sig: libc::c_int) {
    LATE_HANDLER_RAN.fetch_add(1, Ordering::SeqCst);
}

/// Installs the program's SIGINT handler while a `get` runs, from another thread (as tokio's
/// `signal::ctrl_c()` would).
struct InstallDuringGet;

impl Callbacks for InstallDuringGet {
    fn start(&self, _info: &forkgraph::RunInfo) {
        std::thread::spawn(|| {
            // SAFETY: installs a handler that only adds to an atomic.
            unsafe {
                libc::signal(
                    libc::SIGINT,
                    late_handler as *const () as libc::sighandler_t,
                )
            };
        })
        .join()
        .unwrap();
    }
}

/// The helper: the program installs a SIGINT handler while a `get` runs; when the `get` ends
/// the handler is still there (forkgraph does not put back what it saw before), also after a
/// second `get` that chains to it.
#[test]
fn helper_handler_installed_during_get() {
    if !is_helper("helper_handler_installed_during_get") {
        return;
    }
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let g = graph! { "y" => (leaf, 2) };
    let opts = GetOptions::new().callback(Arc::new(InstallDuringGet));
    let got = pool.get_with(&g, &"y".into(), &opts).unwrap();
    assert_eq!(got.to::<i64>().unwrap(), 15);
    // SAFETY: raising a signal in our own process.
    unsafe { libc::raise(libc::SIGINT) };
    assert_eq!(
        LATE_HANDLER_RAN.load(Ordering::SeqCst),
        1,
        "the late handler ran"
    );
    // A second get arms forkgraph's handler over it and chains to it; afterwards it is back.
    assert_eq!(pool.get(&g, "y").unwrap().to::<i64>().unwrap(), 15);
    // SAFETY: as above.
    unsafe { libc::raise(libc::SIGINT) };
    assert_eq!(LATE_HANDLER_RAN.load(Ordering::SeqCst), 2, "still there");
    println!("SURVIVED");
}

#[test]
fn a_handler_installed_during_get_is_kept_after_it() {
    watchdog(60, || {
        assert_helper_prints("helper_handler_installed_during_get", "SURVIVED");
    });
}
