//! The thread pool: shared by concurrent `get`s, reusable, agreeing with the sync scheduler on
//! large random graphs; and the sync scheduler's engine on a graph of a million tasks.

use std::collections::HashSet;
use std::sync::{Arc, Barrier, OnceLock};

use forkgraph::{
    graph, key, Arg, GetOptions, Graph, Key, KeyPart, Keys, Output, Scheduler, SyncScheduler,
    ThreadPool, Value,
};

#[allow(dead_code)]
#[path = "conformance/random.rs"]
mod random;
#[allow(dead_code)]
#[path = "conformance/support.rs"]
mod support;

use random::{random_graph, Rng};
use support::{add, explode, fail, inc, ints, one, watchdog, Recorder};

#[forkgraph::task]
fn one_() -> i64 {
    1
}

/// Which thread ran the task (as a small number unique in this process).
#[forkgraph::task]
fn thread_tag(_i: i64) -> u64 {
    thread_number()
}

fn thread_number() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish() >> 1
}

static RENDEZVOUS: OnceLock<Barrier> = OnceLock::new();
const RENDEZVOUS_THREADS: usize = 3;

/// Waits until `RENDEZVOUS_THREADS` tasks are running at once, then says which thread it is.
#[forkgraph::task]
fn rendezvous(_i: i64) -> u64 {
    RENDEZVOUS
        .get_or_init(|| Barrier::new(RENDEZVOUS_THREADS))
        .wait();
    thread_number()
}

/// A small graph whose results depend on `seed`: a chain, a fan-out and a reduction.
fn seeded_graph(seed: i64) -> (Graph, Keys, Output) {
    let mut g = graph! { "x0" => seed };
    for i in 1..=50 {
        g.task(
            format!("x{i}"),
            "inc",
            vec![Arg::Key(Key::from(format!("x{}", i - 1)))],
        );
    }
    let leaves: Vec<Arg> = (0..30)
        .map(|j| {
            g.task(
                ("leaf", j),
                "add",
                vec![Arg::Key(Key::from("x50")), Arg::Value(Value::Int(j))],
            );
            Arg::Key(Key::from(("leaf", j)))
        })
        .collect();
    g.task("sum", "total", vec![Arg::List(leaves)]);
    let sum: i64 = (0..30).map(|j| seed + 50 + j).sum();
    let keys = Keys::from(vec![Keys::from("sum"), "x50".into(), ("leaf", 29).into()]);
    (g, keys, ints(&[sum, seed + 50, seed + 79]))
}

/// Dask `test_thread_safety`, `test_threaded_within_thread`: 20 threads call `get` on one pool
/// at once, each with its own graph, and each gets its own results (and its own callbacks, on
/// its own thread).
#[test]
fn twenty_concurrent_gets_on_one_pool_return_their_own_results() {
    watchdog("twenty", || {
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..20i64)
                .map(|t| {
                    let pool = &pool;
                    scope.spawn(move || {
                        for round in 0..5 {
                            let seed = t * 1000 + round;
                            let (g, keys, want) = seeded_graph(seed);
                            let rec = Recorder::new();
                            let opts = GetOptions::new().callback(rec.clone());
                            let out = pool.get_with(&g, &keys, &opts).unwrap();
                            assert_eq!(out, want, "thread {t} round {round}");
                            assert_eq!(rec.started().len(), 50 + 30 + 1);
                            assert_eq!(rec.threads(), vec![std::thread::current().id()]);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
    });
}

/// Dask `test_reuse_pool`: one pool serves many gets in a row, through errors and panics, and
/// its clones share it.
#[test]
fn one_pool_serves_many_gets_through_errors_and_panics() {
    watchdog("reuse", || {
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        let clone = pool.clone();
        for i in 0..200i64 {
            let g = graph! {
                "x" => i,
                "y" => (inc, key("x")),
                "z" => (add, key("x"), key("y")),
                "bad" => (fail, "no"),
                "boom" => (explode, "boom"),
            };
            let s: &ThreadPool = if i % 2 == 0 { &pool } else { &clone };
            assert_eq!(s.get(&g, ["z", "y"]).unwrap(), ints(&[2 * i + 1, i + 1]));
            if i % 20 == 0 {
                assert!(s.get(&g, "bad").is_err());
                assert!(s.get(&g, "boom").is_err());
            }
        }
        assert_eq!(pool.threads(), 2);
        drop(pool);
        // The clone keeps the pool alive.
        assert_eq!(clone.get(&graph! { "a" => (inc, 1) }, "a").unwrap(), one(2));
    });
}

/// A pool of zero threads cannot be built; the error says why.
#[test]
fn zero_threads_is_a_build_error() {
    let err = ThreadPool::builder().threads(0).build().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("at least one thread"), "{msg}");
    assert_eq!(
        ThreadPool::builder().threads(1).build().unwrap().threads(),
        1
    );
}

/// Dask `test_pool_kwarg`: a pool of N threads runs N tasks at once (they meet at a barrier
/// that only N concurrent tasks pass; a pool that serialised them would hang, and the
/// watchdog would fail the test) on N distinct threads.
#[test]
fn a_pool_runs_as_many_tasks_at_once_as_it_has_threads() {
    watchdog("rendezvous", || {
        let pool = ThreadPool::builder()
            .threads(RENDEZVOUS_THREADS)
            .build()
            .unwrap();
        let mut g = Graph::new();
        for i in 0..RENDEZVOUS_THREADS as i64 {
            g.task(("meet", i), "rendezvous", vec![Arg::Value(Value::Int(i))]);
        }
        let req: Vec<Key> = (0..RENDEZVOUS_THREADS as i64)
            .map(|i| Key::from(("meet", i)))
            .collect();
        let out = pool.get(&g, req).unwrap();
        let tags: HashSet<u64> = out
            .as_list()
            .unwrap()
            .iter()
            .map(|o| o.to::<u64>().unwrap())
            .collect();
        assert_eq!(tags.len(), RENDEZVOUS_THREADS);
    });
}

/// Sync and threads give identical results on a random graph of a few thousand tasks, every
/// key requested, with and without the plan options; both match the reference evaluation.
#[test]
fn sync_and_threads_agree_on_a_random_graph_of_thousands_of_tasks() {
    watchdog("agree", || {
        let rg = random_graph(2024, 4000);
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        let all: Vec<Key> = rg.keys.clone();
        let want = ints(&rg.values);
        for opts in [
            GetOptions::new(),
            GetOptions::new().fuse(true).inline_literals(true),
        ] {
            let keys = Keys::from(all.clone());
            let a = SyncScheduler.get_with(&rg.graph, &keys, &opts).unwrap();
            let b = pool.get_with(&rg.graph, &keys, &opts).unwrap();
            assert!(a == b, "sync and threads differ ({opts:?})");
            assert!(a == want, "results differ from the reference ({opts:?})");
        }
        let mut rng = Rng::new(5);
        for _ in 0..20 {
            let (req, want) = rg.request(&mut rng);
            assert_eq!(SyncScheduler.get(&rg.graph, req.clone()).unwrap(), want);
            assert_eq!(pool.get(&rg.graph, req).unwrap(), want);
        }
    });
}

/// Independent tasks in [`a_million_task_graph_schedules_on_sync`]: a million in release
/// builds; 200,000 in debug builds, where a million takes about 6 s on two cores.
const MILLION: usize = if cfg!(debug_assertions) {
    200_000
} else {
    1_000_000
};
const GROUP: usize = 1000;

/// A graph of a million independent trivial tasks (200,000 in debug builds) feeding sums in
/// groups of a thousand, and a total of the sums, schedules and runs on the sync scheduler.
#[test]
fn a_million_task_graph_schedules_on_sync() {
    watchdog("million", || {
        let mut g = Graph::with_capacity(MILLION + MILLION / GROUP + 1);
        let x: Arc<str> = Arc::from("x");
        let s: Arc<str> = Arc::from("s");
        let mut sums = Vec::with_capacity(MILLION / GROUP);
        for grp in 0..MILLION / GROUP {
            let mut members = Vec::with_capacity(GROUP);
            for j in 0..GROUP {
                let k = Key::tuple([
                    KeyPart::Str(x.clone()),
                    KeyPart::Int((grp * GROUP + j) as i64),
                ]);
                g.task(k.clone(), "one_", Vec::new());
                members.push(Arg::Key(k));
            }
            let sk = Key::tuple([KeyPart::Str(s.clone()), KeyPart::Int(grp as i64)]);
            g.task(sk.clone(), "total", vec![Arg::List(members)]);
            sums.push(Arg::Key(sk));
        }
        g.task("all", "total", vec![Arg::List(sums)]);
        let rec = Recorder::new();
        let out = SyncScheduler
            .get_with(&g, &"all".into(), &GetOptions::new().callback(rec.clone()))
            .unwrap();
        assert_eq!(out, one(MILLION as i64));
        let info = rec.starts()[0];
        assert_eq!(info.tasks, MILLION + MILLION / GROUP + 1);
    });
}

static SHARED: OnceLock<ThreadPool> = OnceLock::new();

/// Runs a `get` on the [`SHARED`] pool from inside a task of that same pool.
#[forkgraph::task]
fn get_on_shared_pool(x: i64) -> Result<i64, String> {
    let mut g = Graph::new();
    let parts: Vec<Arg> = (0..4i64)
        .map(|i| {
            g.task(
                ("inner", i),
                "add",
                vec![Arg::Value(Value::Int(x)), Arg::Value(Value::Int(i))],
            );
            Arg::Key(Key::from(("inner", i)))
        })
        .collect();
    g.task("sum", "total", vec![Arg::List(parts)]);
    let pool = SHARED.get().ok_or("no shared pool")?;
    let out = pool.get(&g, "sum").map_err(|e| e.to_string())?;
    out.to::<i64>().map_err(|e| e.to_string())
}

/// Dask runs a nested threaded `get` from a pool thread on a pool of its own; here a task may
/// call `get` on the very pool that runs it, even when that pool has a single thread.
#[test]
fn a_task_may_call_get_on_its_own_pool() {
    watchdog("nested-same-pool", || {
        let pool = SHARED.get_or_init(|| ThreadPool::builder().threads(1).build().unwrap());
        let g = graph! {
            "a" => (get_on_shared_pool, 10),
            "b" => (get_on_shared_pool, 20),
            "c" => (add, key("a"), key("b")),
        };
        assert_eq!(pool.get(&g, "c").unwrap(), one(4 * 10 + 6 + 4 * 20 + 6));
    });
}
