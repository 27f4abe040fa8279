//! The crash matrix: every way a task can take its worker down, with retries off and on.
//! Crashes happen only in worker processes, never in the test process.

mod common;

use std::time::Duration;

use common::{scratch_dir, watchdog};
use forkgraph::{graph, key, Error, Graph, ProcessPool, TaskErrorKind, TaskOptions};

#[forkgraph::task]
fn ok(x: i64) -> i64 {
    x * 10
}

#[forkgraph::task]
fn segfault(_x: i64) -> i64 {
    eprintln!("segfault: about to write through a null pointer");
    // SAFETY: none — this task exists to crash its worker.
    unsafe { std::ptr::null_mut::<i64>().write_volatile(1) };
    0
}

#[forkgraph::task]
fn abort(_x: i64) -> i64 {
    eprintln!("abort: calling std::process::abort");
    std::process::abort()
}

#[forkgraph::task]
fn exit3(_x: i64) -> i64 {
    std::process::exit(3)
}

#[forkgraph::task]
fn sigkill_self(_x: i64) -> i64 {
    // SAFETY: kill(2) on our own pid; the worker dies here.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    0
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64, pad: &mut [u8; 4096]) -> u64 {
    pad[0] = n as u8;
    let mut local = [0u8; 4096];
    let r = recurse(n + 1, &mut local);
    std::hint::black_box(&local);
    r + pad[1] as u64
}

#[forkgraph::task]
fn overflow(_x: i64) -> i64 {
    let mut pad = [0u8; 4096];
    recurse(0, &mut pad) as i64
}

#[forkgraph::task]
fn hog(mib: usize) -> usize {
    let v: Vec<u8> = vec![1u8; mib << 20];
    std::hint::black_box(&v).len()
}

#[forkgraph::task]
fn spin(_x: i64) -> i64 {
    let mut i = 0u64;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

#[forkgraph::task]
fn panics(_x: i64) -> i64 {
    panic!("deliberate panic in a task")
}

#[forkgraph::task]
fn my_pid(_x: i64) -> i64 {
    std::process::id() as i64
}

/// Crashes (segfault) the first time it runs for `marker`, succeeds afterwards.
#[forkgraph::task]
fn crash_once(marker: &str) -> i64 {
    if std::fs::metadata(marker).is_err() {
        std::fs::write(marker, b"crashed").unwrap();
        // SAFETY: none — crashing is the point.
        unsafe { std::ptr::null_mut::<i64>().write_volatile(1) };
    }
    7
}

fn pool(retries: u32) -> ProcessPool {
    ProcessPool::builder()
        .workers(2)
        .retries(retries)
        .build()
        .unwrap()
}

fn one(f: &str) -> Graph {
    let mut g = Graph::new();
    g.insert("x", 1);
    g.task("boom", f, vec![forkgraph::Arg::Key("x".into())]);
    g
}

fn task_error(r: Result<forkgraph::Output, Error>) -> forkgraph::TaskError {
    match r {
        Err(Error::Task(t)) => *t,
        other => panic!("expected a task error, got {other:?}"),
    }
}

/// The pool still computes after whatever happened.
fn still_works(p: &ProcessPool) {
    let g = graph! { "a" => 4, "b" => (ok, key("a")) };
    assert_eq!(p.get(&g, "b").unwrap().to::<i64>().unwrap(), 40);
}

fn died_from(f: &str, signal: Option<i32>, exit_code: Option<i32>) {
    let f = f.to_owned();
    watchdog(60, move || {
        let p = pool(0);
        let pids = p.worker_pids();
        let e = task_error(p.get(&one(&f), "boom"));
        assert_eq!(e.key, "boom".into());
        assert_eq!(e.function, f);
        match &e.kind {
            TaskErrorKind::WorkerDied {
                pid,
                signal: s,
                exit_code: c,
                ..
            } => {
                assert!(pids.contains(pid), "pid {pid} not one of {pids:?}");
                assert_eq!((*s, *c), (signal, exit_code), "{e}");
            }
            k => panic!("expected WorkerDied, got {k:?}"),
        }
        still_works(&p);
        e
    });
}

#[test]
fn segfault_is_reported_with_its_signal_and_stderr_tail() {
    let e = watchdog(60, || {
        let p = pool(0);
        let e = task_error(p.get(&one("segfault"), "boom"));
        still_works(&p);
        e
    });
    let TaskErrorKind::WorkerDied {
        signal,
        stderr_tail,
        ..
    } = &e.kind
    else {
        panic!("{e:?}")
    };
    assert_eq!(*signal, Some(libc::SIGSEGV));
    assert!(
        stderr_tail.contains("about to write through a null pointer"),
        "{stderr_tail}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("SIGSEGV") && msg.contains("boom") && msg.contains("segfault"),
        "{msg}"
    );
}

#[test]
fn abort_is_reported_as_sigabrt() {
    died_from("abort", Some(libc::SIGABRT), None);
}

#[test]
fn exit_is_reported_with_its_code() {
    died_from("exit3", None, Some(3));
}

#[test]
fn sigkill_is_reported() {
    died_from("sigkill_self", Some(libc::SIGKILL), None);
}

#[test]
fn stack_overflow_kills_only_the_worker() {
    let e = watchdog(60, || {
        let p = pool(0);
        let e = task_error(p.get(&one("overflow"), "boom"));
        still_works(&p);
        e
    });
    assert!(
        matches!(e.kind, TaskErrorKind::WorkerDied { signal: Some(s), .. } if s == libc::SIGSEGV || s == libc::SIGABRT || s == libc::SIGBUS),
        "{e}"
    );
}

#[test]
fn panic_returns_an_error_and_the_worker_survives() {
    watchdog(60, || {
        let p = pool(0);
        let before = p.worker_pids();
        let e = task_error(p.get(&one("panics"), "boom"));
        assert!(e.to_string().contains("deliberate panic in a task"), "{e}");
        assert!(matches!(e.kind, TaskErrorKind::Call(_)));
        assert_eq!(p.worker_pids(), before, "no worker was replaced");
        still_works(&p);
    });
}

#[test]
fn a_crashed_task_is_retried_on_a_fresh_worker() {
    let dir = scratch_dir("crash-once");
    let marker = dir.join("marker").to_string_lossy().into_owned();
    let r = watchdog(60, move || {
        let p = pool(1);
        let started = p.workers_started();
        let g = graph! { "r" => (crash_once, marker.as_str()) };
        let v = p.get(&g, "r").unwrap().to::<i64>().unwrap();
        (v, p.workers_started() - started)
    });
    assert_eq!(r, (7, 1), "result 7 after one replacement");
}

#[test]
fn per_task_retries_override_the_pool() {
    let dir = scratch_dir("crash-once-opt");
    let marker = dir.join("marker").to_string_lossy().into_owned();
    let v = watchdog(60, move || {
        let p = pool(0);
        let mut g = graph! { "r" => (crash_once, marker.as_str()) };
        g.set_options("r", TaskOptions::new().retries(1));
        p.get(&g, "r").unwrap().to::<i64>().unwrap()
    });
    assert_eq!(v, 7);
}

#[test]
fn a_task_that_keeps_killing_workers_is_quarantined() {
    let e = watchdog(60, || {
        let p = ProcessPool::builder()
            .workers(2)
            .retries(10)
            .max_worker_deaths(3)
            .build()
            .unwrap();
        let e = task_error(p.get(&one("abort"), "boom"));
        still_works(&p);
        e
    });
    match &e.kind {
        TaskErrorKind::KilledWorkers { deaths, last } => {
            assert_eq!(*deaths, 3);
            assert!(last.contains("SIGABRT"), "{last}");
        }
        k => panic!("expected KilledWorkers, got {k:?}"),
    }
}

#[test]
fn tasks_in_flight_on_other_workers_are_not_lost() {
    let dir = scratch_dir("crash-among-others");
    let marker = dir.join("marker").to_string_lossy().into_owned();
    watchdog(60, move || {
        let p = pool(1);
        let mut g = Graph::new();
        let mut keys = Vec::new();
        for i in 0..200i64 {
            g.task(("ok", i), "ok", vec![forkgraph::Arg::Value(i.into())]);
            keys.push(forkgraph::Keys::from(("ok", i)));
        }
        g.task(
            "crash",
            "crash_once",
            vec![forkgraph::Arg::Value(marker.as_str().into())],
        );
        keys.push("crash".into());
        let out = p.get(&g, forkgraph::Keys::List(keys)).unwrap();
        let l = out.as_list().unwrap();
        for (i, v) in l[..200].iter().enumerate() {
            assert_eq!(v.to::<i64>().unwrap(), i as i64 * 10);
        }
        assert_eq!(l[200].to::<i64>().unwrap(), 7);
    });
}

#[test]
fn a_task_over_its_timeout_is_killed_and_reported() {
    let e = watchdog(60, || {
        let p = ProcessPool::builder()
            .workers(2)
            .task_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let e = task_error(p.get(&one("spin"), "boom"));
        still_works(&p);
        e
    });
    assert_eq!(e.kind, TaskErrorKind::TimedOut { millis: 300 }, "{e}");
}

#[test]
fn per_task_timeout_overrides_the_pool() {
    let e = watchdog(60, || {
        let p = pool(0);
        let mut g = one("spin");
        g.set_options(
            "boom",
            TaskOptions::new().timeout(Duration::from_millis(200)),
        );
        task_error(p.get(&g, "boom"))
    });
    assert_eq!(e.kind, TaskErrorKind::TimedOut { millis: 200 });
}

#[test]
fn memory_limit_gives_a_clear_error() {
    let e = watchdog(60, || {
        let p = ProcessPool::builder()
            .workers(1)
            .memory_limit(256 << 20)
            .build()
            .unwrap();
        let g = graph! { "boom" => (hog, 1024) };
        let e = task_error(p.get(&g, "boom"));
        // The same pool still runs tasks that fit.
        let small = graph! { "fits" => (hog, 16) };
        assert_eq!(
            p.get(&small, "fits").unwrap().to::<usize>().unwrap(),
            16 << 20
        );
        e
    });
    match &e.kind {
        TaskErrorKind::OutOfMemory { limit, detail } => {
            assert_eq!(*limit, 256 << 20);
            assert!(detail.contains("memory allocation of"), "{detail}");
        }
        k => panic!("expected OutOfMemory, got {k:?}"),
    }
}

#[test]
fn cpu_limit_stops_a_runaway_task() {
    let e = watchdog(60, || {
        let p = ProcessPool::builder()
            .workers(1)
            .cpu_limit(Duration::from_secs(1))
            .build()
            .unwrap();
        let e = task_error(p.get(&one("spin"), "boom"));
        still_works(&p);
        e
    });
    assert_eq!(e.kind, TaskErrorKind::CpuTimeExceeded { seconds: 1 }, "{e}");
}

#[test]
fn workers_are_recycled_after_max_tasks() {
    watchdog(60, || {
        let p = ProcessPool::builder()
            .workers(1)
            .max_tasks_per_worker(3)
            .build()
            .unwrap();
        let mut pids = std::collections::BTreeSet::new();
        for i in 0..9 {
            let g = graph! { "p" => (my_pid, i) };
            pids.insert(p.get(&g, "p").unwrap().to::<i64>().unwrap());
        }
        assert!(
            pids.len() >= 3,
            "9 tasks with at most 3 per worker used {pids:?}"
        );
    });
}

/// A result too large to encode under the memory limit: the worker dies after the task ran,
/// while sending. It must still end in an error (not re-run forever).
#[forkgraph::task]
fn huge_text(mib: usize) -> String {
    "x".repeat(mib << 20)
}

#[test]
fn a_worker_that_dies_sending_its_result_is_blamed_and_the_get_ends() {
    let e = watchdog(120, || {
        let p = ProcessPool::builder()
            .workers(1)
            .memory_limit(256 << 20)
            .segment_threshold(None)
            .build()
            .unwrap();
        let g = graph! { "big" => (huge_text, 150) };
        let e = task_error(p.get(&g, "big"));
        still_works(&p);
        e
    });
    assert_eq!(e.key, "big".into());
    assert!(
        matches!(
            e.kind,
            TaskErrorKind::OutOfMemory { .. } | TaskErrorKind::WorkerDied { .. }
        ),
        "{e}"
    );
}
