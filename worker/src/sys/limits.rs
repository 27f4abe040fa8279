//! Resource limits (memory, CPU, open files, core dumps) and CPU time.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::resource::{setrlimit, Resource};

use super::*;

/// Limits this process's data segment (heap) to `bytes`.
///
/// # Errors
/// When setrlimit fails.
pub(crate) fn limit_memory(bytes: u64) -> io::Result<()> {
    setrlimit(Resource::RLIMIT_DATA, bytes, bytes).map_err(errno)?;
    MEMORY_LIMIT.store(bytes, Ordering::SeqCst);
    Ok(())
}

/// The memory limit of this process ([`limit_memory`]; `u64::MAX`: none).
static MEMORY_LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);
/// Bytes of shared segments this process created and still holds.
static SHARED_HELD: AtomicU64 = AtomicU64::new(0);

/// Shared memory this process created, counted against its memory limit: RLIMIT_DATA does not
/// count shared mappings, so under a limit every new segment lowers the heap's soft limit by its
/// size (heap and shared segments together stay under the limit), and a segment that would not
/// fit is refused. Released (and the heap limit raised again) on drop.
#[derive(Debug)]
pub(super) struct Charge(u64);

impl Charge {
    pub(super) fn new(bytes: u64) -> io::Result<Charge> {
        let limit = MEMORY_LIMIT.load(Ordering::SeqCst);
        if limit == u64::MAX {
            return Ok(Charge(0));
        }
        // Check and add as one step: tasks may create segments from several threads.
        static CHARGING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = CHARGING.lock().unwrap_or_else(|e| e.into_inner());
        let held = SHARED_HELD.load(Ordering::SeqCst);
        let heap = data_bytes();
        if heap.saturating_add(held).saturating_add(bytes) > limit {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "a shared segment of {bytes} bytes does not fit the worker's memory limit \
                     of {limit} bytes ({heap} bytes of heap and {held} bytes of shared segments \
                     in use)"
                ),
            ));
        }
        SHARED_HELD.fetch_add(bytes, Ordering::SeqCst);
        Charge::apply(limit);
        Ok(Charge(bytes))
    }

    /// Sets the heap's soft limit to what the shared segments leave of `limit`.
    fn apply(limit: u64) {
        let held = SHARED_HELD.load(Ordering::SeqCst);
        let _ = setrlimit(
            Resource::RLIMIT_DATA,
            limit.saturating_sub(held).max(1),
            limit,
        );
    }
}

/// Bytes of this process's data segment (what RLIMIT_DATA counts: heap and other private
/// writable memory), from `/proc/self/statm`.
fn data_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(5)
                .and_then(|d| d.parse::<u64>().ok())
        })
        .unwrap_or(0);
    pages.saturating_mul(4096)
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.0 > 0 {
            SHARED_HELD.fetch_sub(self.0, Ordering::SeqCst);
            Charge::apply(MEMORY_LIMIT.load(Ordering::SeqCst));
        }
    }
}

/// Limits this process's CPU time to `seconds` from now (SIGXCPU when exceeded).
///
/// # Errors
/// When setrlimit fails.
pub(crate) fn limit_cpu_from_now(seconds: u64) -> io::Result<()> {
    // Round the time already used up, so that each task gets at least `seconds`.
    let used = cpu_time().as_secs_f64().ceil() as u64;
    let soft = used.saturating_add(seconds.max(1));
    setrlimit(Resource::RLIMIT_CPU, soft, libc::RLIM_INFINITY).map_err(errno)
}

/// CPU time (user + system) this process has used.
pub(crate) fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::new(t.tv_sec() as u64, (t.tv_usec() as u32) * 1000)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Raises this process's soft limit on open files towards `need` (at least doubling it, at most
/// to the hard limit; never lowering it); returns the soft limit now in force.
pub(crate) fn raise_fd_limit_for(need: u64) -> u64 {
    let Ok((soft, hard)) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE) else {
        return open_file_limit();
    };
    if soft >= need || soft >= hard {
        return soft;
    }
    let want = need.max(soft.saturating_mul(2)).min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
        Ok(()) => want,
        Err(_) => soft,
    }
}

/// Raises this process's soft limit on open files to its hard limit (in the fork server and
/// workers, which are forkgraph's own processes: segments and sockets are fds, and running out
/// of them would lose fds passed by peers).
pub(crate) fn raise_fd_limit() {
    if let Ok((_, hard)) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Turns off core dumps (crash tests and crashing workers should not write cores).
pub(crate) fn no_core_dumps() {
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
}

/// This process's soft limit on open files.
pub(crate) fn open_file_limit() -> u64 {
    nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}
