//! Several callers on one process pool at the same time: `get`s from different threads
//! interleave on the workers (proved without timing: tasks that wait until all of them have
//! started would deadlock if calls took turns), a worker's death touches only the calls it was
//! running, and a cancelled call frees its worker.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{scratch_dir, wait_gone, watchdog};
use forkgraph::{graph, Error, Graph, IntoArg, Keys, ProcessPool, Scheduler, TaskErrorKind};

/// Waits until `n` tasks have started (see `common::rendezvous_in`): a pool that takes turns
/// fails the test rather than hanging it.
#[forkgraph::task]
fn rendezvous(dir: String, n: i64) -> Result<i64, String> {
    common::rendezvous_in(&dir, n)
}

/// As `rendezvous`, then aborts its worker.
#[forkgraph::task]
fn rendezvous_then_abort(dir: String, n: i64) -> i64 {
    let _ = common::rendezvous_in(&dir, n);
    std::process::abort()
}

#[forkgraph::task]
fn double(x: i64) -> i64 {
    2 * x
}

fn dir_arg(d: &Path) -> String {
    d.to_string_lossy().into_owned()
}

fn rendezvous_graph(dir: &Path, n: i64) -> Graph {
    graph! { "r" => (rendezvous, dir_arg(dir), n) }
}

#[test]
fn concurrent_gets_interleave_on_the_workers() {
    watchdog(120, || {
        let pool = ProcessPool::builder().workers(3).build().unwrap();
        let dir = scratch_dir("concurrent-gets");
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                let g = rendezvous_graph(&dir, 3);
                std::thread::spawn(move || pool.get(&g, "r").map(|o| o.to::<i64>().unwrap()))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap(), 3);
        }
    });
}

/// The thread pool too: `get`s from several threads share its threads at once.
#[test]
fn concurrent_gets_interleave_on_a_thread_pool() {
    watchdog(120, || {
        let pool = Arc::new(forkgraph::ThreadPool::builder().threads(3).build().unwrap());
        let dir = scratch_dir("concurrent-thread-gets");
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let pool = Arc::clone(&pool);
                let g = rendezvous_graph(&dir, 3);
                std::thread::spawn(move || pool.get(&g, "r").map(|o| o.to::<i64>().unwrap()))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap(), 3);
        }
    });
}

#[test]
fn concurrent_maps_and_gets_share_the_pool() {
    watchdog(120, || {
        let pool = ProcessPool::builder().workers(4).build().unwrap();
        let dir = scratch_dir("concurrent-mixed");
        let d = dir_arg(&dir);
        let g = rendezvous_graph(&dir, 4);
        let p1 = pool.clone();
        let a = std::thread::spawn(move || p1.get(&g, "r").unwrap().to::<i64>().unwrap());
        let p2 = pool.clone();
        let d2 = d.clone();
        let b = std::thread::spawn(move || {
            let mut g = Graph::new();
            for i in 0..2 {
                g.insert(
                    ("m", i),
                    forkgraph::Task::new("rendezvous", vec![d2.clone().into_arg(), 4.into_arg()]),
                );
            }
            let keys = Keys::List((0..2).map(|i| Keys::One(("m", i).into())).collect());
            p2.get(&g, keys).unwrap()
        });
        let p3 = pool.clone();
        let c = std::thread::spawn(move || {
            let g = graph! { "x" => (rendezvous, d, 4) };
            p3.get(&g, "x").unwrap().to::<i64>().unwrap()
        });
        assert_eq!(a.join().unwrap(), 4);
        assert_eq!(c.join().unwrap(), 4);
        let out = b.join().unwrap();
        assert_eq!(out.as_list().unwrap().len(), 2);
    });
}

#[test]
fn many_threads_get_their_own_results() {
    watchdog(120, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let threads: Vec<_> = (0..8i64)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for round in 0..20i64 {
                        let mut g = Graph::new();
                        for i in 0..10i64 {
                            g.insert(
                                ("d", i),
                                forkgraph::Task::new(
                                    "double",
                                    vec![(t * 1000 + round * 10 + i).into_arg()],
                                ),
                            );
                        }
                        let keys =
                            Keys::List((0..10i64).map(|i| Keys::One(("d", i).into())).collect());
                        let out = pool.get(&g, keys).unwrap();
                        for (i, o) in out.as_list().unwrap().iter().enumerate() {
                            assert_eq!(
                                o.to::<i64>().unwrap(),
                                2 * (t * 1000 + round * 10 + i as i64)
                            );
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn a_worker_death_fails_only_the_call_it_was_running() {
    watchdog(120, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let dir = scratch_dir("concurrent-death");
        let g = rendezvous_graph(&dir, 2);
        let p = pool.clone();
        let ok = std::thread::spawn(move || p.get(&g, "r"));
        let bad = graph! { "boom" => (rendezvous_then_abort, dir_arg(&dir), 2) };
        let e = pool.get(&bad, "boom").unwrap_err();
        let t = e.task().expect("a task error");
        assert_eq!(t.key, "boom".into());
        assert!(matches!(t.kind, TaskErrorKind::WorkerDied { .. }), "{e}");
        assert_eq!(ok.join().unwrap().unwrap().to::<i64>().unwrap(), 2);
        // The pool goes on.
        let g = graph! { "d" => (double, 21) };
        assert_eq!(pool.get(&g, "d").unwrap().to::<i64>().unwrap(), 42);
    });
}

#[test]
fn get_from_a_pool_shared_through_an_arc() {
    watchdog(60, || {
        let pool = Arc::new(ProcessPool::builder().workers(2).build().unwrap());
        let g = graph! { "d" => (double, 4) };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pool = Arc::clone(&pool);
                let g = g.clone();
                std::thread::spawn(move || pool.get(&g, "d").unwrap().to::<i64>().unwrap())
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 8);
        }
        let _ = wait_gone;
        let _: Option<Error> = None;
    });
}

/// `get` through every way of holding a scheduler, on every scheduler.
#[test]
fn get_works_through_dyn_box_arc_and_generics() {
    use forkgraph::{Scheduler, SchedulerExt, SyncScheduler, ThreadPool};
    fn generic<S: Scheduler + ?Sized>(s: &S, g: &Graph) -> i64 {
        s.get(g, "d").unwrap().to::<i64>().unwrap()
    }
    watchdog(60, || {
        let g = graph! { "d" => (double, 5) };
        let pool = ProcessPool::builder().workers(1).build().unwrap();
        let threads = ThreadPool::builder().threads(2).build().unwrap();
        assert_eq!(pool.get(&g, "d").unwrap().to::<i64>().unwrap(), 10);
        assert_eq!(threads.get(&g, "d").unwrap().to::<i64>().unwrap(), 10);
        assert_eq!(SyncScheduler.get(&g, "d").unwrap().to::<i64>().unwrap(), 10);
        let by_ref: [&dyn Scheduler; 3] = [&pool, &threads, &SyncScheduler];
        for s in by_ref {
            assert_eq!(s.get(&g, "d").unwrap().to::<i64>().unwrap(), 10);
            assert_eq!(generic(s, &g), 10);
        }
        let boxed: Vec<Box<dyn Scheduler>> = vec![
            Box::new(pool.clone()),
            Box::new(threads.clone()),
            Box::new(SyncScheduler),
        ];
        for s in &boxed {
            assert_eq!(s.get(&g, "d").unwrap().to::<i64>().unwrap(), 10);
        }
        let sendable: Box<dyn Scheduler + Send> = Box::new(pool.clone());
        assert_eq!(sendable.get(&g, "d").unwrap().to::<i64>().unwrap(), 10);
        let shared: Arc<dyn Scheduler + Send + Sync> = Arc::new(pool.clone());
        let s2 = Arc::clone(&shared);
        let g2 = g.clone();
        let t = std::thread::spawn(move || s2.get(&g2, "d").unwrap().to::<i64>().unwrap());
        assert_eq!(shared.get(&g, "d").unwrap().to::<i64>().unwrap(), 10);
        assert_eq!(t.join().unwrap(), 10);
        assert_eq!(generic(&pool, &g), 10);
        assert_eq!(generic(&*shared, &g), 10);
    });
}

#[forkgraph::task]
fn spin_forever(_x: i64) -> i64 {
    let mut i = 0u64;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

/// The helper: a `get` in one thread and a submitted call, both running forever, stopped by
/// SIGINT from the test: both report `Interrupted`, and the pool works afterwards.
#[test]
fn helper_ctrl_c_two_callers() {
    use std::io::Write;
    if !common::is_helper("helper_ctrl_c_two_callers") {
        return;
    }
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let g = graph! { "x" => (spin_forever, 0) };
    struct Started(std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>);
    impl forkgraph::Callbacks for Started {
        fn pretask(&self, _key: &forkgraph::Key) {
            if let Some(tx) = self.0.lock().unwrap().take() {
                tx.send(()).unwrap();
            }
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let opts = forkgraph::GetOptions::new().callback(Arc::new(Started(Some(tx).into())));
    let p = pool.clone();
    let getter = std::thread::spawn(move || Scheduler::get_with(&p, &g, &"x".into(), &opts));
    rx.recv().unwrap();
    let handle = pool.submit("spin_forever", 1);
    println!("STARTED");
    std::io::stdout().flush().unwrap();
    let r = getter.join().unwrap();
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    let r = handle.wait();
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    println!("INTERRUPTED");
    let g = graph! { "y" => (double, 4) };
    assert_eq!(pool.get(&g, "y").unwrap().to::<i64>().unwrap(), 8);
    println!("USABLE");
    std::io::stdout().flush().unwrap();
}

#[test]
fn ctrl_c_stops_every_caller() {
    use std::io::{BufRead, BufReader, Read};
    watchdog(60, || {
        let mut child = common::helper("helper_ctrl_c_two_callers").spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("STARTED") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "helper ended early");
        }
        // SAFETY: sending SIGINT to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let status = child.wait().unwrap();
        assert!(rest.contains("INTERRUPTED"), "{rest}");
        assert!(rest.contains("USABLE"), "{rest}");
        assert!(status.success(), "{status:?}");
    });
}
