//! Tasks shared by the executor-call tests (tests/futures.rs on the process pool,
//! tests/thread_calls.rs on threads and sync): each test binary includes this file with
//! `#[path]`, so both register the same tasks under the same names.

use std::path::Path;

#[forkgraph::task]
pub(crate) fn square(x: i64) -> i64 {
    x * x
}

#[forkgraph::task]
pub(crate) fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[forkgraph::task]
pub(crate) fn positive(x: i64) -> Result<i64, String> {
    if x < 0 {
        Err(format!("{x} is negative"))
    } else {
        Ok(x)
    }
}

/// Waits until file `go` exists (at most 60 s), leaving `started` first; returns `x`.
#[forkgraph::task]
pub(crate) fn after(started: String, go: String, x: i64) -> Result<i64, String> {
    std::fs::write(&started, std::process::id().to_string()).map_err(|e| e.to_string())?;
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !Path::new(&go).exists() {
        if std::time::Instant::now() > give_up {
            return Err(format!("{go} never appeared"));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(x)
}

/// Leaves a file and returns.
#[forkgraph::task]
pub(crate) fn touch(path: String) -> i64 {
    std::fs::write(&path, b"").unwrap();
    1
}

/// Waits until `n` calls have started (see `common::rendezvous_in`).
#[forkgraph::task]
pub(crate) fn rendezvous(dir: String, n: i64) -> Result<i64, String> {
    crate::common::rendezvous_in(&dir, n)
}

pub(crate) fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
