//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on another thread and fails the test if it does not finish within `secs`
/// (a watchdog for anything that could hang; never a timing assertion).
pub(crate) fn watchdog<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            let _ = h.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("sender dropped without sending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: test still running after {secs} s")
        }
    }
}

/// A fresh, empty directory under the target directory for one test.
pub(crate) fn scratch_dir(name: &str) -> std::path::PathBuf {
    // Cargo sets CARGO_TARGET_TMPDIR when it compiles integration tests, not when it runs them.
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Waits until process `pid` has ended (zombies count as ended), using a pidfd: no polling
/// loop, no sleep. Fails the test after `secs`.
pub(crate) fn wait_gone(pid: i32, secs: u64) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        // ESRCH: already gone and reaped.
        return;
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; fd is ours and closed right after.
    let n = unsafe { libc::poll(&mut p, 1, (secs * 1000) as i32) };
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    assert!(n == 1, "process {pid} still running after {secs} s");
}

/// Whether a process exists and has not ended (a zombie counts as ended).
pub(crate) fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Children of a process (from /proc/PID/task/*/children).
pub(crate) fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// Re-runs this test binary with only `test` selected and `FORKGRAPH_TEST_HELPER` set, so the
/// helper test does its real work (and crashes or blocks) in a child, never in this process.
pub(crate) fn helper(test: &str) -> std::process::Command {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("FORKGRAPH_TEST_HELPER", test)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    c
}

/// Runs the helper `test` to its end and asserts that it exited successfully and printed
/// `marker` on stdout.
pub(crate) fn assert_helper_prints(test: &str, marker: &str) {
    let out = helper(test).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(marker),
        "helper {test} ({}), expected {marker:?}:\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether this process is running as the helper `test`.
pub(crate) fn is_helper(test: &str) -> bool {
    std::env::var("FORKGRAPH_TEST_HELPER").is_ok_and(|v| v == test)
}

/// Leaves a file in `dir`, then waits until `n` files are there: tasks calling it meet only if
/// they run at the same time. Gives up after 60 s, so a pool that takes turns fails the test
/// (with this error) rather than hanging it. Returns how many it saw.
pub(crate) fn rendezvous_in(dir: &str, n: i64) -> Result<i64, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static UNIQUE: AtomicU64 = AtomicU64::new(0);
    let dir = std::path::Path::new(dir);
    let me = dir.join(format!(
        "{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&me, b"").map_err(|e| e.to_string())?;
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = std::fs::read_dir(dir).map_err(|e| e.to_string())?.count() as i64;
        if seen >= n {
            return Ok(seen);
        }
        if std::time::Instant::now() > give_up {
            return Err(format!(
                "only {seen} of {n} tasks started: calls took turns"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
