//! Acceptance checks of the executor calls on every scheduler (session 4 review): what a new
//! user writes from README, and Dask's scheduler tests' expectations. Order is forced with
//! files that tasks wait for, never with sleeps; each test has a watchdog.

mod common;

use std::path::Path;

use common::{scratch_dir, watchdog};
use forkgraph::{Graph, ThreadPool};

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Waits (polling, under the test's watchdog) until a task has left `path`.
fn await_file(path: &Path) {
    while !path.exists() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Leaves `dir/started-i`; task 0 returns at once, the others wait for `dir/go`.
#[forkgraph::task]
fn gate(dir: String, i: i64) -> Result<i64, String> {
    let dir = Path::new(&dir);
    std::fs::write(dir.join(format!("started-{i}")), b"").map_err(|e| e.to_string())?;
    if i == 0 {
        return Ok(0);
    }
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dir.join("go").exists() {
        if std::time::Instant::now() > give_up {
            return Err("go never appeared".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(i)
}

#[forkgraph::task]
fn one() -> i64 {
    1
}

fn started(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("started-")
        })
        .count()
}

/// README: "a dropped `get_async` starts no new task". Tasks the get had already handed to a
/// pool thread in a batch (after `gate` returned once, its small results are batched ahead)
/// must not start once the future is gone.
#[test]
fn a_dropped_get_async_on_threads_starts_no_task_already_batched() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(1).build().unwrap();
        let dir = scratch_dir("accept4-drop-batched");
        let mut g = Graph::new();
        let keys: Vec<forkgraph::Key> = (0..10)
            .map(|i| g.add(("g", i), gate.task(s(&dir), i)).key().clone())
            .collect();
        let fut = pool.get_async(&g, keys);
        // ("g", 0) ran alone; ("g", 1) is running, the rest wait in its thread's batch.
        await_file(&dir.join("started-1"));
        drop(fut);
        std::fs::write(dir.join("go"), b"").unwrap();
        // One thread, one queue: once a later call is done, that batch is done too.
        assert_eq!(pool.submit(one, ()).wait().unwrap(), 1);
        assert_eq!(started(&dir), 2, "tasks of a dropped get_async started");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Leaves `dir/started-i`; task 0 then waits for `dir/go`, the others return at once.
#[forkgraph::task]
fn hold_first(dir: String, i: i64) -> Result<i64, String> {
    let dir = Path::new(&dir);
    std::fs::write(dir.join(format!("started-{i}")), b"").map_err(|e| e.to_string())?;
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while i == 0 && !dir.join("go").exists() {
        if std::time::Instant::now() > give_up {
            return Err("go never appeared".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(i)
}

/// `imap_unordered` is for uneven items: while one thread runs a long item, the other
/// threads run every other item (they were stuck behind it in its thread's fixed batch:
/// 4 naps of 300, 300, 10, 10 ms on 2 threads took 600 ms instead of 310).
#[test]
fn imap_unordered_on_threads_runs_other_items_beside_a_long_one() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        let dir = scratch_dir("accept4-imap-uneven");
        let items: Vec<(String, i64)> = (0..4).map(|i| (s(&dir), i)).collect();
        let mut it = pool.imap_unordered(hold_first, items).unwrap();
        // Items 1..3 finish while item 0 holds its thread.
        let mut early: Vec<usize> = (0..3).map(|_| it.next().unwrap().unwrap().0).collect();
        early.sort_unstable();
        assert_eq!(early, vec![1, 2, 3]);
        std::fs::write(dir.join("go"), b"").unwrap();
        assert_eq!(it.next().unwrap().unwrap(), (0, 0));
        assert!(it.next().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[forkgraph::task]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

/// Dask's `{"a": [1, 2, 3], "b": "a"}` (`test_get_with_list_top_level`) written as a porter
/// writes it: an array literal is a literal node, on every scheduler.
#[test]
fn an_array_literal_is_a_literal_node() {
    watchdog(60, || {
        let g = forkgraph::graph! {
            "a" => [1i64, 2, 3],
            "b" => forkgraph::key("a"),
            "s" => (total, forkgraph::key("b")),
            "names" => [String::from("x"), String::from("y")],
        };
        let want = forkgraph::Value::from(vec![1i64, 2, 3]);
        let threads = ThreadPool::builder().threads(2).build().unwrap();
        for out in [
            forkgraph::SyncScheduler.get(&g, vec!["a", "b", "s", "names"]),
            threads.get(&g, vec!["a", "b", "s", "names"]),
        ] {
            let forkgraph::Output::List(l) = out.unwrap() else {
                panic!("a list")
            };
            assert_eq!(l[0].clone().into_value(), want);
            assert_eq!(l[1].clone().into_value(), want);
            assert_eq!(l[2].clone().into_value().to::<i64>().unwrap(), 6);
            assert_eq!(
                l[3].clone().into_value().to::<Vec<String>>().unwrap(),
                vec!["x".to_string(), "y".to_string()]
            );
        }
    });
}

/// `imap_unordered` yields each result as it finishes: a quick item's result is not held
/// back until a slow item run after it in the same thread has finished too (it was: results
/// went out per batch of up to 64 items).
#[test]
fn imap_unordered_on_threads_yields_a_result_before_the_next_item_finishes() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(1).build().unwrap();
        let dir = scratch_dir("accept4-imap-yield");
        let items: Vec<(String, i64)> = (0..4).map(|i| (s(&dir), i)).collect();
        let mut it = pool.imap_unordered(gate, items).unwrap();
        // Item 0 returns at once; items 1..3 wait for `go`, which only comes after.
        assert_eq!(it.next().unwrap().unwrap(), (0, 0));
        std::fs::write(dir.join("go"), b"").unwrap();
        let mut rest: Vec<usize> = it.map(|r| r.unwrap().0).collect();
        rest.sort_unstable();
        assert_eq!(rest, vec![1, 2, 3]);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[forkgraph::task]
fn sum_i64(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[forkgraph::task]
fn sum_usize(xs: Vec<usize>) -> usize {
    xs.iter().sum()
}

#[forkgraph::task]
fn sum_f64(xs: Vec<f64>) -> f64 {
    xs.iter().sum()
}

#[forkgraph::task]
fn sum_u8(xs: Vec<u8>) -> u64 {
    xs.iter().map(|&x| u64::from(x)).sum()
}

/// `vec![1, 2, 3]` is an array of i32 (Rust's default); a `Vec<i64>`, `Vec<usize>` or
/// `Vec<f64>` parameter takes it element by element, as it takes an `i32` literal for an `i64`,
/// and an element that does not fit is an error naming it, not a wrap.
#[test]
fn a_vec_parameter_takes_an_array_of_another_number_type() {
    watchdog(60, || {
        let g = forkgraph::graph! {
            "xs" => vec![1, 2, 3],
            "big" => vec![1i64, 300],
            "neg" => vec![-1i32],
            "a" => (sum_i64, forkgraph::key("xs")),
            "b" => (sum_usize, forkgraph::key("xs")),
            "c" => (sum_f64, forkgraph::key("xs")),
            "d" => (sum_u8, forkgraph::key("xs")),
            "e" => (sum_u8, forkgraph::key("big")),
            "f" => (sum_usize, forkgraph::key("neg")),
        };
        let threads = ThreadPool::builder().threads(2).build().unwrap();
        let schedulers: [&dyn forkgraph::Scheduler; 2] = [&forkgraph::SyncScheduler, &threads];
        for sched in schedulers {
            assert_eq!(
                sched
                    .get_typed(&g, &forkgraph::typed_key::<i64>("a"))
                    .unwrap(),
                6
            );
            assert_eq!(
                sched
                    .get_typed(&g, &forkgraph::typed_key::<usize>("b"))
                    .unwrap(),
                6
            );
            assert_eq!(
                sched
                    .get_typed(&g, &forkgraph::typed_key::<f64>("c"))
                    .unwrap(),
                6.0
            );
            assert_eq!(
                sched
                    .get_typed(&g, &forkgraph::typed_key::<u64>("d"))
                    .unwrap(),
                6
            );
            let e = sched.get(&g, "e").unwrap_err().to_string();
            assert!(e.contains("u8") && e.contains("300"), "{e}");
            let f = sched.get(&g, "f").unwrap_err().to_string();
            assert!(f.contains("usize") && f.contains("-1"), "{f}");
        }
    });
}

/// A key given to `submit`, `map` or `imap_unordered` is refused naming the call's rule (values,
/// not keys) and the key, not as a key missing from a graph the user never made.
#[test]
fn a_key_passed_to_a_call_is_refused_as_a_key() {
    watchdog(120, || {
        let threads = ThreadPool::builder().threads(2).build().unwrap();
        let procs = forkgraph::ProcessPool::builder()
            .workers(1)
            .build()
            .unwrap();
        let check = |e: forkgraph::Error| {
            let t = e.to_string();
            assert!(
                t.contains("must be values, not keys") && t.contains("got key a"),
                "{t}"
            );
        };
        let a = || forkgraph::key("a");
        check(threads.submit("sum_i64", a()).wait().unwrap_err());
        check(procs.submit("sum_i64", a()).wait().unwrap_err());
        check(
            forkgraph::SyncScheduler
                .submit("sum_i64", a())
                .wait()
                .unwrap_err(),
        );
        check(threads.map("sum_i64", [a()]).unwrap_err());
        check(procs.map("sum_i64", [a()]).unwrap_err());
        check(threads.imap_unordered("sum_i64", [a()]).err().unwrap());
        check(procs.imap_unordered("sum_i64", [a()]).err().unwrap());
    });
}
