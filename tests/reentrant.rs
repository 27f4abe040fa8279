//! Code the pool runs on its own threads calls back into the same pool: a future's waker that
//! submits or waits, a `log` logger that cancels another call and submits a new one while the
//! pool is cancelling a call. None of them may deadlock (each test has a watchdog); a wait
//! that could only be answered by the thread making it is refused with an error.

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll, Wake, Waker};

use common::{scratch_dir, wait_gone, watchdog};
use forkgraph::{Args, Error, ProcessPool, Submitted, Unordered, Value};

/// Waits until file `go` exists (at most 60 s), leaving `started` first; returns `x`.
#[forkgraph::task]
fn after(started: String, go: String, x: i64) -> Result<i64, String> {
    std::fs::write(&started, std::process::id().to_string()).map_err(|e| e.to_string())?;
    wait_for(&go)?;
    Ok(x)
}

/// Waits until `go_log` exists, logs `msg` (info), leaves `logged`, then waits for `go`.
#[forkgraph::task]
fn log_then_wait(msg: String, go_log: String, logged: String, go: String) -> Result<i64, String> {
    wait_for(&go_log)?;
    log::info!("{msg}");
    std::fs::write(&logged, std::process::id().to_string()).map_err(|e| e.to_string())?;
    wait_for(&go)?;
    Ok(1)
}

#[forkgraph::task]
fn square(x: i64) -> i64 {
    x * x
}

fn wait_for(path: &str) -> Result<(), String> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !Path::new(path).exists() {
        if std::time::Instant::now() > give_up {
            return Err(format!("{path} never appeared"));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(())
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Waits (polling, under the test's watchdog) until a task has left `path`; its content.
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

/// A waker that runs a function when woken.
struct OnWake(Box<dyn Fn() + Send + Sync>);

impl Wake for OnWake {
    fn wake(self: Arc<Self>) {
        (self.0)();
    }
}

/// Submits a call that waits for `go`, polls it once with `waker` (it is pending: its task
/// waits), then lets it finish; returns the handle.
fn pending_call(pool: &ProcessPool, name: &str, waker: &Waker) -> (Submitted, std::path::PathBuf) {
    let dir = scratch_dir(name);
    let (started, go) = (dir.join("started"), dir.join("go"));
    let mut h = pool.submit("after", Args::new([s(&started), s(&go)]).with(1));
    await_file(&started);
    let mut cx = Context::from_waker(waker);
    assert!(Pin::new(&mut h).poll(&mut cx).is_pending());
    (h, go)
}

#[test]
fn a_waker_that_submits_to_the_same_pool() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let (tx, rx) = mpsc::channel();
        let (p, tx) = (pool.clone(), Mutex::new(tx));
        let waker = Waker::from(Arc::new(OnWake(Box::new(move || {
            let _ = tx.lock().unwrap().send(p.submit("square", 7));
        }))));
        let (mut h, go) = pending_call(&pool, "reentrant-waker-submits", &waker);
        std::fs::write(&go, b"").unwrap();
        // Woken by the pool's driver thread when the result arrives; its submit must not
        // wait for the pool's lock that thread holds.
        let second = rx.recv().unwrap();
        assert_eq!(second.wait().unwrap(), Value::from(49));
        let mut cx = Context::from_waker(&waker);
        match Pin::new(&mut h).poll(&mut cx) {
            Poll::Ready(r) => assert_eq!(r.unwrap(), Value::from(1)),
            Poll::Pending => panic!("woken, but still pending"),
        }
    });
}

#[test]
fn a_waker_that_waits_on_the_same_pool_gets_an_error() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let (tx, rx) = mpsc::channel();
        let (p, tx) = (pool.clone(), Mutex::new(tx));
        let waker = Waker::from(Arc::new(OnWake(Box::new(move || {
            // Runs on the thread that drives the pool: a wait here could never end.
            let _ = tx.lock().unwrap().send(p.map("square", [3]));
        }))));
        let (h, go) = pending_call(&pool, "reentrant-waker-waits", &waker);
        std::fs::write(&go, b"").unwrap();
        let r = rx.recv().unwrap();
        match r {
            Err(Error::Scheduler(m)) => assert!(m.contains("would wait for itself"), "{m}"),
            other => panic!("expected a scheduler error, got {other:?}"),
        }
        assert_eq!(h.wait().unwrap(), Value::from(1));
        // The pool goes on as before.
        assert_eq!(pool.map("square", [4]).unwrap(), vec![Value::from(16)]);
    });
}

#[test]
fn as_completed_in_a_waker_on_the_same_pool_does_not_wait_for_itself() {
    watchdog(60, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let (tx, rx) = mpsc::channel();
        let (p, tx) = (pool.clone(), Mutex::new(tx));
        let waker = Waker::from(Arc::new(OnWake(Box::new(move || {
            // Runs on the thread that drives the pool: waiting for a call here could never
            // end, so the handle comes back unfinished and its wait says why.
            let dir = scratch_dir("reentrant-waker-as-completed-inner");
            let held = p.submit(
                "after",
                Args::new([s(&dir.join("started")), s(&dir.join("never"))]).with(2),
            );
            let results: Vec<_> = forkgraph::as_completed([held]).map(|h| h.wait()).collect();
            let _ = tx.lock().unwrap().send(results);
        }))));
        let (h, go) = pending_call(&pool, "reentrant-waker-as-completed", &waker);
        std::fs::write(&go, b"").unwrap();
        let results = rx.recv().unwrap();
        assert_eq!(results.len(), 1);
        match &results[0] {
            Err(Error::Scheduler(m)) => assert!(m.contains("would wait for itself"), "{m}"),
            other => panic!("expected a scheduler error, got {other:?}"),
        }
        assert_eq!(h.wait().unwrap(), Value::from(1));
        assert_eq!(pool.map("square", [4]).unwrap(), vec![Value::from(16)]);
    });
}

/// What the logger does when a task logs "reenter" (set by the test).
type Action = Box<dyn FnOnce() + Send>;
static ON_REENTER: Mutex<Option<Action>> = Mutex::new(None);

/// What the logger does when a task logs "nested" (set by the nested-pools test).
static ON_NESTED: Mutex<Option<Action>> = Mutex::new(None);

struct Reenter;

impl log::Log for Reenter {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record<'_>) {
        if r.args().to_string().ends_with("nested") {
            let action = ON_NESTED.lock().unwrap().take();
            if let Some(a) = action {
                a();
            }
        }
        if r.args().to_string().ends_with("reenter") {
            let action = ON_REENTER.lock().unwrap().take();
            if let Some(a) = action {
                a();
            }
        }
    }
    fn flush(&self) {}
}

fn install_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Reenter).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    });
}

type Other = Unordered<&'static str, Args>;

#[test]
fn a_logger_that_cancels_another_call_while_the_pool_cancels_one() {
    watchdog(60, || {
        install_logger();
        let pool = ProcessPool::builder().workers(3).build().unwrap();
        let dir = scratch_dir("reentrant-logger");
        let p = |n: &str| s(&dir.join(n));
        // Another call, running on a worker of its own until the logger cancels it.
        let other: Other = pool
            .imap_unordered(
                "after",
                [Args::new([p("other-started"), p("never")]).with(0)],
            )
            .unwrap();
        let other = Arc::new(Mutex::new(Some(other)));
        std::fs::write(dir.join("go-fast"), b"").unwrap();
        let fast = Args::new(["fast", &p("go-fast"), &p("fast-logged"), &p("go-fast")]);
        let slow = Args::new(["reenter", &p("go-log"), &p("logged"), &p("never")]);
        let mut it = pool.imap_unordered("log_then_wait", [fast, slow]).unwrap();
        // Leads until the fast item is back: every unit is on a worker by then.
        assert_eq!(it.next().unwrap().unwrap(), (0, Value::from(1)));
        let other_pid: i32 = await_file(&dir.join("other-started")).parse().unwrap();
        let (tx, rx) = mpsc::channel();
        let (pool2, other2) = (pool.clone(), Arc::clone(&other));
        *ON_REENTER.lock().unwrap() = Some(Box::new(move || {
            drop(other2.lock().unwrap().take()); // cancels the other call
            let _ = tx.send(pool2.submit("square", 5));
        }));
        // The slow task logs while nobody drives the pool: its record is read when the
        // cancellation below kills its worker, and the logger runs then.
        std::fs::write(dir.join("go-log"), b"").unwrap();
        await_file(&dir.join("logged"));
        drop(it);
        let h = rx.recv().unwrap();
        assert_eq!(h.wait().unwrap(), Value::from(25));
        assert!(other.lock().unwrap().is_none());
        wait_gone(other_pid, 30);
    });
}

/// A thread that leads pool A (its waker runs on A's driver thread) and, from there, leads
/// pool B, whose logger then waits on A: the wait is refused as one that would wait for
/// itself (before, the thread knew only of the innermost pool it led, and the wait hung).
#[test]
fn a_wait_on_a_pool_from_a_lead_of_another_pool_inside_its_lead_gets_an_error() {
    watchdog(60, || {
        install_logger();
        let a = ProcessPool::builder().workers(1).build().unwrap();
        let b = ProcessPool::builder().workers(1).build().unwrap();
        let dir = scratch_dir("reentrant-nested");
        let p = |n: &str| s(&dir.join(n));
        std::fs::write(dir.join("go"), b"").unwrap();
        let (tx, rx) = mpsc::channel();
        let (a2, tx) = (a.clone(), Mutex::new(tx));
        *ON_NESTED.lock().unwrap() = Some(Box::new(move || {
            let _ = tx.lock().unwrap().send(a2.map("square", [3]));
        }));
        let (b_done, b_rx) = mpsc::channel();
        let b_done = Mutex::new(b_done);
        let args = Args::new(["nested", &p("go"), &p("logged"), &p("go")]);
        let waker = Waker::from(Arc::new(OnWake(Box::new(move || {
            // On A's driver thread, leading A: this map leads B.
            let r = b.map("log_then_wait", [args.clone()]);
            let _ = b_done.lock().unwrap().send(r);
        }))));
        let (h, go) = pending_call(&a, "reentrant-nested-a", &waker);
        std::fs::write(&go, b"").unwrap();
        match rx.recv().unwrap() {
            Err(Error::Scheduler(m)) => assert!(m.contains("would wait for itself"), "{m}"),
            other => panic!("expected a scheduler error, got {other:?}"),
        }
        assert_eq!(b_rx.recv().unwrap().unwrap(), vec![Value::from(1)]);
        assert_eq!(h.wait().unwrap(), Value::from(1));
    });
}
