//! `submit` handles, `as_completed`, `imap_unordered`, typed `map` through a `Callable`,
//! cancellation, and the futures under tokio and `futures_executor::block_on`. Order is forced
//! with files that tasks wait for (never with sleeps); each test has a watchdog.

mod common;

use std::path::{Path, PathBuf};

use common::{scratch_dir, wait_gone, watchdog};
use forkgraph::{
    as_completed, graph, Arg, Args, Callable, Error, GetOptions, IntoArg, Mismatch, ProcessPool,
    TaskErrorKind, Value,
};

#[path = "common/call_tasks.rs"]
mod call_tasks;
use call_tasks::*;

/// Waits (polling, under the test's watchdog) until a task has left `path`.
fn await_file(path: &Path) -> String {
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if !t.is_empty() {
                return t;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// A stand-in for a typed task handle: `square` on `i64`, results as `i64`.
#[derive(Clone, Copy)]
struct Square;

impl Callable<i64> for Square {
    type Output = i64;
    fn function(&self) -> &str {
        "square"
    }
    fn call_args(&self, item: i64) -> Vec<Arg> {
        vec![item.into_arg()]
    }
    fn output(&self, value: Value) -> Result<i64, Mismatch> {
        value.to()
    }
}

/// `add` on pairs.
#[derive(Clone, Copy)]
struct Add;

impl Callable<(i64, i64)> for Add {
    type Output = i64;
    fn function(&self) -> &str {
        "add"
    }
    fn call_args(&self, (a, b): (i64, i64)) -> Vec<Arg> {
        vec![a.into_arg(), b.into_arg()]
    }
    fn output(&self, value: Value) -> Result<i64, Mismatch> {
        value.to()
    }
}

/// Claims `square` returns a string: every result is a mismatch.
struct SquareAsText;

impl Callable<i64> for SquareAsText {
    type Output = String;
    fn function(&self) -> &str {
        "square"
    }
    fn call_args(&self, item: i64) -> Vec<Arg> {
        vec![item.into_arg()]
    }
    fn output(&self, value: Value) -> Result<String, Mismatch> {
        value.to()
    }
}

#[test]
fn map_by_name_keeps_returning_values() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let v: Vec<Value> = pool.map("square", [1, 2, 3]).unwrap();
        assert_eq!(v, vec![1.into(), 4.into(), 9.into()]);
        let sums = pool
            .map("add", [Args::new([1, 2]), Args::new([3, 4])])
            .unwrap();
        assert_eq!(sums, vec![3.into(), 7.into()]);
        assert!(pool.map("square", Vec::<i64>::new()).unwrap().is_empty());
    });
}

#[test]
fn typed_map_and_submit_return_the_output_type() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let v: Vec<i64> = pool.map(Square, 0..5).unwrap();
        assert_eq!(v, vec![0, 1, 4, 9, 16]);
        let sums: Vec<i64> = pool.map(Add, [(1, 2), (10, 20)]).unwrap();
        assert_eq!(sums, vec![3, 30]);
        let h = pool.submit(Add, (20, 22));
        assert_eq!(h.wait().unwrap(), 42);
    });
}

/// The handles `#[forkgraph::task]` generates are `Callable`: `map`, `map_results`,
/// `imap_unordered` and `submit` take them and return the function's own output type.
#[test]
fn task_handles_map_and_submit_with_typed_results() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let v: Vec<i64> = pool.map(square, [1, 2, 3]).unwrap();
        assert_eq!(v, vec![1, 4, 9]);
        let v: Vec<i64> = pool.map(square, [(4,), (5,)]).unwrap();
        assert_eq!(v, vec![16, 25]);
        let sums: Vec<i64> = pool.map(add, [(1, 2), (i64::MIN, i64::MAX)]).unwrap();
        assert_eq!(sums, vec![3, -1]);
        assert_eq!(pool.submit(add, (40, 2)).wait().unwrap(), 42);
        let r = pool.map_results(positive, [5, -6]).unwrap();
        assert_eq!(r[0].as_ref().unwrap(), &5);
        assert!(r[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("-6 is negative"));
        let mut got: Vec<(usize, i64)> = pool
            .imap_unordered(square, [3, 4])
            .unwrap()
            .map(Result::unwrap)
            .collect();
        got.sort();
        assert_eq!(got, vec![(0, 9), (1, 16)]);
        // Still an ordinary function where it is defined.
        assert_eq!(square(12), 144);
    });
}

#[test]
fn a_result_of_the_wrong_type_names_the_key_and_the_types() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let e = pool.map(SquareAsText, [3]).unwrap_err();
        let t = e.task().expect("a task error");
        assert_eq!(t.key, ("map", 0).into());
        assert_eq!(t.function, "square");
        match &t.kind {
            TaskErrorKind::Output { expected, got } => {
                assert!(!expected.is_empty() && !got.is_empty(), "{e}");
            }
            k => panic!("expected an output mismatch, got {k:?}"),
        }
        let text = e.to_string();
        assert!(text.contains("map") && text.contains("expected"), "{text}");
    });
}

#[test]
fn map_results_keeps_going_past_failures() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let r = pool.map_results("positive", [1, -2, 3, -4]).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].as_ref().unwrap(), &Value::from(1));
        assert_eq!(r[2].as_ref().unwrap(), &Value::from(3));
        for i in [1, 3] {
            let e = r[i].as_ref().unwrap_err();
            assert_eq!(e.key, ("map", i).into());
            assert!(e.to_string().contains("negative"), "{e}");
        }
        // Without keep-going, the first failure is the error.
        let e = pool.map("positive", [1, -2]).unwrap_err();
        assert_eq!(e.task().unwrap().key, ("map", 1).into());
    });
}

#[test]
fn submitted_calls_run_at_the_same_time() {
    watchdog(120, || {
        let pool = ProcessPool::builder().workers(4).build().unwrap();
        let dir = scratch_dir("futures-submit-rendezvous");
        let handles: Vec<_> = (0..4)
            .map(|_| pool.submit("rendezvous", Args::new([s(&dir).into_arg(), 4.into_arg()])))
            .collect();
        for h in handles {
            assert_eq!(h.wait().unwrap(), Value::from(4));
        }
    });
}

#[test]
fn submitted_calls_run_without_anyone_waiting() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let dir = scratch_dir("futures-background");
        let flag = dir.join("ran");
        let mut h = pool.submit("touch", s(&flag));
        // Nobody waits: the pool's driver thread runs it.
        while !flag.exists() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(
            h.wait_timeout(std::time::Duration::from_secs(30))
                .unwrap()
                .as_ref()
                .unwrap(),
            &Value::from(1)
        );
        assert!(h.is_done());
    });
}

#[test]
fn as_completed_yields_calls_in_the_order_they_finish() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let dir = scratch_dir("futures-as-completed");
        let (started, go) = (dir.join("started"), dir.join("go"));
        let slow = pool.submit("after", Args::new([s(&started), s(&go)]).with(7));
        let fast = pool.submit("square", 3);
        let mut order = as_completed([slow, fast]);
        let first = order.next().unwrap();
        assert_eq!(first.wait().unwrap(), Value::from(9));
        std::fs::write(&go, b"").unwrap();
        assert_eq!(order.next().unwrap().wait().unwrap(), Value::from(7));
        assert!(order.next().is_none());
    });
}

#[test]
fn imap_unordered_yields_results_as_they_finish() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let dir = scratch_dir("futures-imap");
        let (started, go) = (dir.join("started"), dir.join("go"));
        let items = vec![
            Args::new([s(&started), s(&go)]).with(100),
            Args::new([s(&dir.join("s2")), s(&dir)]).with(200),
        ];
        let mut it = pool.imap_unordered("after", items).unwrap();
        assert_eq!(it.next().unwrap().unwrap(), (1, Value::from(200)));
        std::fs::write(&go, b"").unwrap();
        assert_eq!(it.next().unwrap().unwrap(), (0, Value::from(100)));
        assert!(it.next().is_none());
    });
}

#[test]
fn cancelling_a_running_call_replaces_its_worker() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let dir = scratch_dir("futures-cancel-running");
        let (started, go) = (dir.join("started"), dir.join("go"));
        let mut h = pool.submit("after", Args::new([s(&started), s(&go)]).with(1));
        let pid: i32 = await_file(&started).parse().unwrap();
        assert!(h.cancel());
        assert!(!h.cancel(), "a second cancel changes nothing");
        assert!(matches!(h.wait(), Err(Error::Cancelled)));
        wait_gone(pid, 30);
        assert!(!pool.worker_pids().contains(&pid));
        assert_eq!(pool.map("square", [5]).unwrap(), vec![Value::from(25)]);
    });
}

#[test]
fn cancelling_a_queued_call_drops_it() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(1).build().unwrap();
        let dir = scratch_dir("futures-cancel-queued");
        let (started, go) = (dir.join("started"), dir.join("go"));
        let first = pool.submit("after", Args::new([s(&started), s(&go)]).with(1));
        let ran = dir.join("queued-ran");
        let mut queued = pool.submit("touch", s(&ran));
        await_file(&started);
        assert!(queued.cancel());
        std::fs::write(&go, b"").unwrap();
        assert_eq!(first.wait().unwrap(), Value::from(1));
        assert_eq!(pool.map("square", [2]).unwrap(), vec![Value::from(4)]);
        assert!(!ran.exists(), "a cancelled call ran");
    });
}

#[test]
fn dropping_a_handle_cancels_its_call() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(1).build().unwrap();
        let dir = scratch_dir("futures-drop");
        let (started, go) = (dir.join("started"), dir.join("go"));
        let h = pool.submit("after", Args::new([s(&started), s(&go)]).with(1));
        let pid: i32 = await_file(&started).parse().unwrap();
        drop(h);
        wait_gone(pid, 30);
        assert_eq!(pool.map("square", [3]).unwrap(), vec![Value::from(9)]);
    });
}

#[test]
fn progress_callbacks_see_submitted_calls() {
    watchdog(60, || {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        #[derive(Default)]
        struct Count(AtomicUsize, AtomicUsize);
        impl forkgraph::Callbacks for Count {
            fn task_done(&self, _: &forkgraph::TaskEvent<'_>, _: &Value) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            fn finish(&self, _: bool) {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let c = Arc::new(Count::default());
        let opts = GetOptions::new().callback(c.clone());
        let h = pool.submit_with("square", 4, &opts);
        assert_eq!(h.wait().unwrap(), Value::from(16));
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert_eq!(c.1.load(Ordering::SeqCst), 1);
        pool.map_with("square", [1, 2], &opts).unwrap();
        assert_eq!(c.0.load(Ordering::SeqCst), 3);
    });
}

async fn async_work(pool: ProcessPool) -> (Value, i64, i64) {
    let a = pool.submit("square", 6).await.unwrap();
    let b = pool.submit(Add, (1, 2)).await.unwrap();
    let g = graph! { "x" => (square, 3), "y" => (add, forkgraph::key("x"), 1) };
    let y = pool.get_async(&g, "y").await.unwrap().to::<i64>().unwrap();
    (a, b, y)
}

#[test]
fn futures_under_tokio_multi_thread() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let r = rt.block_on(async_work(pool));
        assert_eq!(r, (Value::from(36), 3, 10));
    });
}

#[test]
fn futures_under_tokio_current_thread() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(async {
            // Two calls awaited together on one thread: neither blocks the other.
            let dir = scratch_dir("futures-tokio-ct");
            let a = pool.submit("rendezvous", Args::new([s(&dir).into_arg(), 2.into_arg()]));
            let b = pool.submit("rendezvous", Args::new([s(&dir).into_arg(), 2.into_arg()]));
            let (a, b) = tokio::join!(a, b);
            (a.unwrap(), b.unwrap(), async_work(pool.clone()).await)
        });
        assert_eq!(r.0, Value::from(2));
        assert_eq!(r.1, Value::from(2));
        assert_eq!(r.2, (Value::from(36), 3, 10));
    });
}

#[test]
fn futures_under_block_on() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let r = futures_executor::block_on(async_work(pool));
        assert_eq!(r, (Value::from(36), 3, 10));
    });
}

#[test]
fn dropping_a_get_future_cancels_the_get() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(1).build().unwrap();
        let dir = scratch_dir("futures-drop-get");
        let (started, go) = (dir.join("started"), dir.join("go"));
        let g = graph! { "x" => (after, s(&started), s(&go), 1) };
        let fut = pool.get_async(&g, "x");
        let pid: i32 = await_file(&started).parse().unwrap();
        drop(fut);
        wait_gone(pid, 30);
        assert_eq!(pool.map("square", [3]).unwrap(), vec![Value::from(9)]);
    });
}

#[allow(dead_code)]
fn unused(_: PathBuf) {}

#[test]
fn many_threads_submit_and_wait_on_one_pool() {
    watchdog(120, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        for i in 0..50i64 {
            assert_eq!(pool.submit("square", i).wait().unwrap(), Value::from(i * i));
        }
        // Several rounds: a wake-up of the leader lost in a race shows as a hang (watchdog).
        for _round in 0..4 {
            many_submits(&pool);
        }
        assert_eq!(pool.worker_pids().len(), 2);
    });
}

fn many_submits(pool: &ProcessPool) {
    {
        std::thread::scope(|sc| {
            for t in 0..8i64 {
                sc.spawn(move || {
                    let hs: Vec<_> = (0..1000i64)
                        .map(|i| pool.submit("square", t * 1000 + i))
                        .collect();
                    for (i, h) in hs.into_iter().enumerate() {
                        let x = t * 1000 + i as i64;
                        assert_eq!(h.wait().unwrap(), Value::from(x * x));
                    }
                });
            }
        });
    }
}

/// Appends a byte to `counter` (one per run), leaves `started`, then waits for `go` (at most
/// 60 s).
#[forkgraph::task]
fn count_after(counter: String, started: String, go: String) -> Result<i64, String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&counter)
        .map_err(|e| e.to_string())?;
    f.write_all(b"x").map_err(|e| e.to_string())?;
    drop(f);
    after(started, go, 1)
}

/// How many times a `count_after` with this counter ran.
fn runs(counter: &Path) -> usize {
    std::fs::read(counter).map_or(0, |b| b.len())
}

type ByName = forkgraph::Unordered<&'static str, Args>;

/// On a one-worker pool: the call `first` (registered first) and the call `second` are both
/// handed to the worker in one message, ahead of a `map` that a thread of its own drives.
/// Returns the two iterators and that thread.
fn two_calls_on_one_worker<'p>(
    pool: &'p ProcessPool,
    first: Args,
    second: Args,
    sc: &'p std::thread::Scope<'p, '_>,
) -> (
    ByName,
    ByName,
    std::thread::ScopedJoinHandle<'p, Vec<Value>>,
) {
    let a = pool.imap_unordered("count_after", [first]).unwrap();
    let b = pool.imap_unordered("count_after", [second]).unwrap();
    // Nobody drives the pool until this map does: it hands out every pending unit at once
    // (round-robin: `first`, `second`, then its own), to the only worker.
    let map = sc.spawn(move || pool.map("square", [3]).unwrap());
    (a, b, map)
}

#[test]
fn cancelling_a_call_queued_behind_another_spares_the_other() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(1).build().unwrap();
        let dir = scratch_dir("futures-cancel-spares-ahead");
        let p = |n: &str| s(&dir.join(n));
        std::thread::scope(|sc| {
            let (mut running, queued, map) = two_calls_on_one_worker(
                &pool,
                Args::new([p("a-count"), p("a-started"), p("go")]),
                Args::new([p("b-count"), p("b-started"), p("go")]),
                sc,
            );
            let pid: i32 = await_file(&dir.join("a-started")).parse().unwrap();
            // The queued call's unit is in the worker, behind the running one: it is skipped
            // there, and the running call goes on (before, its worker was killed and its task
            // ran again).
            drop(queued);
            std::fs::write(dir.join("go"), b"").unwrap();
            assert_eq!(running.next().unwrap().unwrap(), (0, Value::from(1)));
            assert_eq!(map.join().unwrap(), vec![Value::from(9)]);
            assert_eq!(runs(&dir.join("a-count")), 1, "the running call ran again");
            assert_eq!(runs(&dir.join("b-count")), 0, "the cancelled call ran");
            assert_eq!(pool.worker_pids(), vec![pid], "the worker was replaced");
        });
    });
}

#[test]
fn cancelling_a_running_call_runs_the_calls_behind_it_once() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(1).build().unwrap();
        let dir = scratch_dir("futures-cancel-spares-behind");
        let p = |n: &str| s(&dir.join(n));
        std::fs::write(dir.join("go"), b"").unwrap();
        std::thread::scope(|sc| {
            let (running, mut behind, map) = two_calls_on_one_worker(
                &pool,
                Args::new([p("a-count"), p("a-started"), p("never")]),
                Args::new([p("b-count"), p("b-started"), p("go")]),
                sc,
            );
            let pid: i32 = await_file(&dir.join("a-started")).parse().unwrap();
            // Its worker is killed; the units behind it had not started, and run once on the
            // replacement.
            drop(running);
            wait_gone(pid, 30);
            assert_eq!(behind.next().unwrap().unwrap(), (0, Value::from(1)));
            assert_eq!(map.join().unwrap(), vec![Value::from(9)]);
            assert_eq!(runs(&dir.join("a-count")), 1);
            assert_eq!(
                runs(&dir.join("b-count")),
                1,
                "a call behind the cancelled one ran again"
            );
        });
    });
}
