//! The executor calls (`map`, `map_results`, `imap_unordered`, `submit`, `get_async`) on a
//! thread pool and on the sync scheduler, with the process pool's types: the same code runs
//! on all three by changing the line that makes the scheduler. Mirrors tests/futures.rs and
//! tests/concurrent.rs; order is forced with files that tasks wait for, never with sleeps, and
//! each test has a watchdog.

mod common;

use std::path::Path;

use common::{scratch_dir, watchdog};
use forkgraph::{
    as_completed, graph, Args, Error, GetOptions, IntoArg, ProcessPool, Submitted, SyncScheduler,
    TaskErrorKind, ThreadPool, Value,
};

#[path = "common/call_tasks.rs"]
mod call_tasks;
use call_tasks::*;

/// Waits (polling, under the test's watchdog) until a task has left `path`.
fn await_file(path: &Path) {
    while !path.exists() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The same lines on every scheduler: only the line that makes `$pool` differs.
macro_rules! executor_calls {
    ($pool:expr) => {{
        let pool = $pool;
        let v: Vec<i64> = pool.map(square, [1, 2, 3]).unwrap();
        assert_eq!(v, vec![1, 4, 9]);
        let v: Vec<i64> = pool.map(add, [(1, 2), (3, 4)]).unwrap();
        assert_eq!(v, vec![3, 7]);
        let v = pool
            .map("add", [Args::new([1, 2]), Args::new([3, 4])])
            .unwrap();
        assert_eq!(v, vec![Value::from(3), Value::from(7)]);
        let r = pool.map_results(positive, [4, -1]).unwrap();
        assert_eq!(r[0].as_ref().unwrap(), &4);
        assert_eq!(r[1].as_ref().unwrap_err().key, ("map", 1).into());
        let mut got: Vec<(usize, i64)> = pool
            .imap_unordered(square, [5, 6])
            .unwrap()
            .map(Result::unwrap)
            .collect();
        got.sort();
        assert_eq!(got, vec![(0, 25), (1, 36)]);
        let h: Submitted<i64> = pool.submit(add, (40, 2));
        assert_eq!(h.wait().unwrap(), 42);
        let handles: Vec<Submitted<i64>> = (0..4).map(|i| pool.submit(square, i)).collect();
        let mut done: Vec<i64> = as_completed(handles).map(|h| h.wait().unwrap()).collect();
        done.sort();
        assert_eq!(done, vec![0, 1, 4, 9]);
        let g = graph! { "x" => (square, 3), "y" => (add, forkgraph::key("x"), 1) };
        let y = futures_executor::block_on(pool.get_async(&g, "y")).unwrap();
        assert_eq!(y.to::<i64>().unwrap(), 10);
        let x = futures_executor::block_on(pool.submit(square, 7)).unwrap();
        assert_eq!(x, 49);
    }};
}

#[test]
fn the_same_code_runs_on_every_scheduler() {
    watchdog(120, || {
        executor_calls!(SyncScheduler);
        executor_calls!(ThreadPool::builder().threads(2).build().unwrap());
        executor_calls!(ProcessPool::builder().workers(2).build().unwrap());
    });
}

#[test]
fn a_result_of_the_wrong_type_names_the_key_and_the_types() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        struct SquareAsText;
        impl forkgraph::Callable<i64> for SquareAsText {
            type Output = String;
            fn function(&self) -> &str {
                "square"
            }
            fn call_args(&self, item: i64) -> Vec<forkgraph::Arg> {
                vec![item.into_arg()]
            }
            fn output(&self, value: Value) -> Result<String, forkgraph::Mismatch> {
                value.to()
            }
        }
        match pool.submit(SquareAsText, 3).wait() {
            Err(Error::Task(t)) => {
                assert_eq!(t.key, "submit".into());
                assert!(matches!(t.kind, TaskErrorKind::Output { .. }), "{t}");
            }
            other => panic!("expected an output error, got {other:?}"),
        }
        match pool.map("no_such_function", [1]) {
            Err(Error::Graph(e)) => assert!(e.to_string().contains("no_such_function"), "{e}"),
            other => panic!("expected an unknown function, got {other:?}"),
        }
    });
}

#[test]
fn submitted_calls_run_at_the_same_time() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(3).build().unwrap();
        let dir = scratch_dir("threads-submits-at-once");
        let d = s(&dir);
        // A submitted call, an unordered map and a map from another thread: their tasks meet
        // only if they run at the same time.
        let h = pool.submit(
            "rendezvous",
            Args::new([d.clone().into_arg(), 3.into_arg()]),
        );
        let it = pool
            .imap_unordered(
                "rendezvous",
                [Args::new([d.clone().into_arg(), 3.into_arg()])],
            )
            .unwrap();
        let p2 = pool.clone();
        let d2 = d.clone();
        let t = std::thread::spawn(move || {
            p2.map("rendezvous", [Args::new([d2.into_arg(), 3.into_arg()])])
        });
        assert_eq!(h.wait().unwrap(), Value::from(3));
        for r in it {
            assert_eq!(r.unwrap(), (0, Value::from(3)));
        }
        assert_eq!(t.join().unwrap().unwrap(), vec![Value::from(3)]);
    });
}

#[test]
fn submitted_calls_run_without_anyone_waiting() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(1).build().unwrap();
        let dir = scratch_dir("threads-submit-unwaited");
        let marker = dir.join("ran");
        let _h = pool.submit("touch", s(&marker));
        await_file(&marker);
    });
}

#[test]
fn as_completed_and_imap_unordered_yield_in_completion_order() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        let dir = scratch_dir("threads-completion-order");
        let (started, go) = (dir.join("started"), dir.join("go"));
        let slow = pool.submit("after", Args::new([s(&started), s(&go)]).with(1));
        let fast = pool.submit("square", 2);
        let mut order = as_completed([slow, fast]);
        assert_eq!(order.next().unwrap().wait().unwrap(), Value::from(4));
        std::fs::write(&go, b"").unwrap();
        assert_eq!(order.next().unwrap().wait().unwrap(), Value::from(1));

        let (started, go) = (dir.join("started2"), dir.join("go2"));
        let mut it = pool
            .imap_unordered(
                "after",
                [
                    Args::new([s(&started), s(&go)]).with(0),
                    Args::new([s(&dir.join("s3")), s(&dir)]).with(1),
                ],
            )
            .unwrap();
        assert_eq!(it.next().unwrap().unwrap(), (1, Value::from(1)));
        std::fs::write(&go, b"").unwrap();
        assert_eq!(it.next().unwrap().unwrap(), (0, Value::from(0)));
        assert!(it.next().is_none());
    });
}

#[test]
fn cancelling_a_queued_call_drops_it() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(1).build().unwrap();
        let dir = scratch_dir("threads-cancel-queued");
        let (started, go) = (dir.join("started"), dir.join("go"));
        let first = pool.submit("after", Args::new([s(&started), s(&go)]).with(1));
        let ran = dir.join("queued-ran");
        let mut queued = pool.submit("touch", s(&ran));
        await_file(&started);
        assert!(queued.cancel());
        assert!(!queued.cancel(), "a second cancel changes nothing");
        assert!(matches!(queued.wait(), Err(Error::Cancelled)));
        std::fs::write(&go, b"").unwrap();
        assert_eq!(first.wait().unwrap(), Value::from(1));
        // The one thread has run everything handed to it before this.
        assert_eq!(pool.map("square", [2]).unwrap(), vec![Value::from(4)]);
        assert!(!ran.exists(), "a cancelled call ran");
    });
}

#[test]
fn cancelling_a_running_call_returns_at_once_and_drops_its_result() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(1).build().unwrap();
        let dir = scratch_dir("threads-cancel-running");
        let (started, go) = (dir.join("started"), dir.join("go"));
        let mut h = pool.submit("after", Args::new([s(&started), s(&go)]).with(1));
        await_file(&started);
        // A thread cannot be stopped: the task finishes, and its result is dropped.
        assert!(h.cancel());
        assert!(matches!(h.wait(), Err(Error::Cancelled)));
        std::fs::write(&go, b"").unwrap();
        assert_eq!(pool.map("square", [5]).unwrap(), vec![Value::from(25)]);
    });
}

/// Leaves a file once its dependency is done.
#[forkgraph::task]
fn touch_after(path: String, _dep: i64) -> i64 {
    std::fs::write(&path, b"").unwrap();
    1
}

#[test]
fn dropping_a_get_future_cancels_the_get() {
    watchdog(60, || {
        use std::sync::{mpsc, Arc, Mutex};
        struct Finished(Mutex<mpsc::Sender<bool>>);
        impl forkgraph::Callbacks for Finished {
            fn finish(&self, errored: bool) {
                let _ = self.0.lock().unwrap().send(errored);
            }
        }
        let pool = ThreadPool::builder().threads(1).build().unwrap();
        let dir = scratch_dir("threads-drop-get");
        let (started, go, marker) = (dir.join("started"), dir.join("go"), dir.join("b-ran"));
        let g = graph! {
            "a" => (after, s(&started), s(&go), 1),
            "b" => (touch_after, s(&marker), forkgraph::key("a")),
        };
        let (tx, rx) = mpsc::channel();
        let opts = GetOptions::new().callback(Arc::new(Finished(Mutex::new(tx))));
        let fut = pool.get_async_with(&g, &"b".into(), &opts);
        await_file(&started);
        drop(fut);
        std::fs::write(&go, b"").unwrap();
        // The get stops at its next wait, with an error: `b` never starts.
        assert!(rx.recv().unwrap(), "the get finished without an error");
        assert!(!marker.exists(), "a task of a dropped get_async ran");
    });
}

async fn async_work(pool: ThreadPool) -> (Value, i64, i64) {
    let a = pool.submit("square", 6).await.unwrap();
    let b = pool.submit(add, (1, 2)).await.unwrap();
    let g = graph! { "x" => (square, 3), "y" => (add, forkgraph::key("x"), 1) };
    let y = pool.get_async(&g, "y").await.unwrap().to::<i64>().unwrap();
    (a, b, y)
}

#[test]
fn futures_under_tokio_and_block_on() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(async_work(pool.clone())),
            (Value::from(36), 3, 10)
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(async {
            // Two calls awaited together on one thread: neither blocks the other.
            let dir = scratch_dir("threads-tokio-ct");
            let a = pool.submit("rendezvous", Args::new([s(&dir).into_arg(), 2.into_arg()]));
            let b = pool.submit("rendezvous", Args::new([s(&dir).into_arg(), 2.into_arg()]));
            let (a, b) = tokio::join!(a, b);
            (a.unwrap(), b.unwrap(), async_work(pool.clone()).await)
        });
        assert_eq!(r.0, Value::from(2));
        assert_eq!(r.2, (Value::from(36), 3, 10));
        let r = futures_executor::block_on(async_work(pool));
        assert_eq!(r, (Value::from(36), 3, 10));
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
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        let c = Arc::new(Count::default());
        let opts = GetOptions::new().callback(c.clone());
        assert_eq!(
            pool.submit_with("square", 4, &opts).wait().unwrap(),
            Value::from(16)
        );
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert_eq!(c.1.load(Ordering::SeqCst), 1);
        pool.map_with("square", [1, 2], &opts).unwrap();
        assert_eq!(c.0.load(Ordering::SeqCst), 3);
    });
}

/// Submits to its own pool and waits: runs the call in this thread (the pool's threads could
/// all be waiting the same way).
#[forkgraph::task]
fn submit_inside(x: i64) -> i64 {
    let pool = POOL.get().expect("set by the test").clone();
    pool.submit(square, x).wait().unwrap()
}

static POOL: std::sync::OnceLock<ThreadPool> = std::sync::OnceLock::new();

#[test]
fn a_task_that_submits_to_its_own_pool_does_not_deadlock() {
    watchdog(60, || {
        let pool = POOL
            .get_or_init(|| ThreadPool::builder().threads(1).build().unwrap())
            .clone();
        assert_eq!(pool.map(submit_inside, [3, 4]).unwrap(), vec![9, 16]);
    });
}

#[test]
fn many_threads_submit_and_wait_on_one_pool() {
    watchdog(120, || {
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        std::thread::scope(|sc| {
            for t in 0..8i64 {
                let pool = &pool;
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
    });
}

#[test]
fn on_the_sync_scheduler_a_submitted_call_is_done_when_submit_returns() {
    let mut h = SyncScheduler.submit("square", 5);
    assert!(h.is_done());
    assert_eq!(h.wait().unwrap(), Value::from(25));
    let g = graph! { "x" => (square, 2) };
    let f = SyncScheduler.get_async(&g, "x");
    assert_eq!(
        futures_executor::block_on(f).unwrap().to::<i64>().unwrap(),
        4
    );
}
