//! `worker_init`: a function every worker runs once before any task (Python's
//! `Pool(initializer=...)`).

mod common;

use std::sync::OnceLock;

use common::{scratch_dir, watchdog};
use forkgraph::{graph, Arg, Error, ProcessPool};

static GREETING: OnceLock<String> = OnceLock::new();

#[forkgraph::task]
fn set_greeting(text: String) {
    GREETING.set(text).unwrap();
}

#[forkgraph::task]
fn greeting(_i: i64) -> String {
    GREETING
        .get()
        .cloned()
        .unwrap_or_else(|| "no init ran".into())
}

#[forkgraph::task]
fn init_fails(_x: i64) -> Result<(), String> {
    Err("the configuration file is missing".into())
}

#[forkgraph::task]
fn init_panics(_x: i64) {
    panic!("init panicked on purpose")
}

#[forkgraph::task]
fn init_aborts(_x: i64) {
    eprintln!("init about to abort");
    std::process::abort()
}

/// Succeeds until the marker file exists.
#[forkgraph::task]
fn init_until(marker: String) -> Result<(), String> {
    if std::path::Path::new(&marker).exists() {
        return Err("refused: the marker exists".into());
    }
    Ok(())
}

#[forkgraph::task]
fn abort_task(_x: i64) -> i64 {
    std::process::abort()
}

fn init_pool(function: &str, arg: Arg) -> Result<ProcessPool, forkgraph::BuildError> {
    ProcessPool::builder()
        .workers(2)
        .worker_init(function, vec![arg])
        .build()
}

#[test]
fn every_worker_runs_the_init_before_any_task_also_after_a_restart() {
    watchdog(60, || {
        let pool = init_pool("set_greeting", Arg::Value("hello from init".into())).unwrap();
        let all = pool.map("greeting", 0..20i64).unwrap();
        assert!(all
            .iter()
            .all(|v| v.to::<String>().unwrap() == "hello from init"));
        pool.restart_worker(0).unwrap();
        pool.restart_worker(1).unwrap();
        let all = pool.map("greeting", 0..20i64).unwrap();
        assert!(all
            .iter()
            .all(|v| v.to::<String>().unwrap() == "hello from init"));
        // Without an init, nothing sets it in the workers.
        let plain = ProcessPool::builder().workers(1).build().unwrap();
        assert_eq!(
            plain.map("greeting", [0i64]).unwrap()[0],
            "no init ran".into()
        );
    });
}

#[test]
fn a_failing_init_is_a_build_error() {
    watchdog(60, || {
        for (f, expected) in [
            ("init_fails", "the configuration file is missing"),
            ("init_panics", "init panicked on purpose"),
            ("init_aborts", "init about to abort"),
        ] {
            let e = init_pool(f, Arg::Value(1.into())).unwrap_err().to_string();
            assert!(e.contains("worker_init") || e.contains(f), "{f}: {e}");
            assert!(e.contains(expected), "{f}: {e}");
        }
        let e = init_pool("no_such_function", Arg::Value(1.into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("worker_init") && e.contains("no_such_function"),
            "{e}"
        );
        let e = init_pool("set_greeting", Arg::Key("elsewhere".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker_init"), "{e}");
    });
}

#[test]
fn an_init_that_fails_in_a_replacement_worker_ends_the_get_with_an_error() {
    let dir = scratch_dir("init-until");
    let marker = dir.join("marker").to_string_lossy().into_owned();
    let e = watchdog(60, move || {
        let pool = ProcessPool::builder()
            .workers(1)
            .retries(3)
            .worker_init("init_until", vec![Arg::Value(marker.as_str().into())])
            .build()
            .unwrap();
        std::fs::write(&marker, b"x").unwrap();
        // The task kills its worker; the replacement's init fails: an error, not a loop.
        let g = graph! { "boom" => (abort_task, 1) };
        match pool.get(&g, "boom") {
            Err(e @ Error::Scheduler(_)) => e.to_string(),
            other => panic!("expected a scheduler error, got {other:?}"),
        }
    });
    assert!(e.contains("worker_init") && e.contains("refused"), "{e}");
}

/// Sleeps `ms`: an init that takes a while.
#[forkgraph::task]
fn slow_init(ms: i64) {
    std::thread::sleep(std::time::Duration::from_millis(ms as u64));
}

#[forkgraph::task]
fn one(_x: i64) -> i64 {
    1
}

#[test]
fn the_init_of_a_replacement_does_not_count_against_a_task_timeout() {
    watchdog(60, || {
        let pool = ProcessPool::builder()
            .workers(1)
            .worker_init("slow_init", vec![Arg::Value(700i64.into())])
            .task_timeout(std::time::Duration::from_millis(500))
            .max_tasks_per_worker(1)
            .build()
            .unwrap();
        // Every get runs on a replacement whose init takes longer than the timeout.
        for i in 0..3i64 {
            let g = graph! { "t" => (one, i) };
            assert_eq!(pool.get(&g, "t").unwrap().to::<i64>().unwrap(), 1);
        }
    });
}

/// Writes `kib` KiB to stderr: more than a pipe holds.
#[forkgraph::task]
fn chatty_init(kib: i64) {
    let line = "x".repeat(1023);
    for _ in 0..kib {
        eprintln!("{line}");
    }
}

#[test]
fn an_init_that_writes_a_lot_to_stderr_does_not_block_the_build() {
    watchdog(60, || {
        let pool = ProcessPool::builder()
            .workers(2)
            .worker_init("chatty_init", vec![Arg::Value(96i64.into())])
            .build()
            .unwrap();
        assert_eq!(pool.map("one", [1i64]).unwrap(), vec![1.into()]);
    });
}

/// Never returns once the marker exists.
#[forkgraph::task]
fn init_hangs_after(marker: String) {
    while std::path::Path::new(&marker).exists() {
        std::thread::park();
    }
}

#[test]
fn a_replacement_whose_init_never_finishes_ends_the_get_with_an_error() {
    let dir = scratch_dir("init-hangs");
    let marker = dir.join("marker").to_string_lossy().into_owned();
    let e = watchdog(60, move || {
        let pool = ProcessPool::builder()
            .workers(1)
            .retries(3)
            .fork_server_timeout(std::time::Duration::from_millis(500))
            .worker_init("init_hangs_after", vec![Arg::Value(marker.as_str().into())])
            .build()
            .unwrap();
        std::fs::write(&marker, b"x").unwrap();
        let g = graph! { "boom" => (abort_task, 1) };
        pool.get(&g, "boom").unwrap_err().to_string()
    });
    assert!(e.contains("worker_init"), "{e}");
}
