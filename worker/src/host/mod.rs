//! The parent's side of the process boundary: typed handles on the fork server
//! ([`ForkServer`]) and on each worker ([`WorkerHandle`]), what workers write to stderr
//! ([`stderr`]), a poll set over them ([`PollSet`]), Ctrl-C during a run ([`CtrlC`]), the
//! clock and limits a scheduler reads, and a process's CPU time and RSS ([`process_usage`]).
//! A scheduler built on this (forkgraph's process pool, and the distributed scheduler's local
//! pools) decides *what* runs where; everything that talks to processes is here.

mod poll;
mod server;
pub mod stderr;
mod usage;
mod wake;
mod worker;

pub use poll::{PollSet, Readiness};
pub use server::{ForkServer, SpawnError, StartError};
pub use usage::{process_usage, ProcessUsage};
pub use wake::Wake;
pub use worker::{Received, WorkerHandle};

pub use crate::sys::process::Exit;
/// Ctrl-C while a run is in progress: while a guard lives, SIGINT wakes the poll set and
/// [`CtrlC::fired`] says so; the program's own handler still runs, and when the last guard is
/// gone the previous disposition is back (unless the program installed its own meanwhile).
pub use crate::sys::signals::interrupt::Armed as CtrlC;

/// Arms Ctrl-C handling for a run; `None` when it cannot (then Ctrl-C keeps its action).
pub fn ctrl_c() -> Option<CtrlC> {
    crate::sys::interrupt::arm()
}

/// Nanoseconds on the monotonic clock (the clock workers write in their progress pages).
pub fn now() -> u64 {
    crate::sys::monotonic_ns()
}

/// The monotonic time `d` from now.
pub fn deadline_after(d: std::time::Duration) -> u64 {
    crate::sys::deadline_after(d)
}

/// This process's soft limit on open files.
pub fn open_file_limit() -> u64 {
    crate::sys::open_file_limit()
}

/// Raises this process's soft limit on open files towards `need` (never lowering it); the soft
/// limit now in force.
pub fn raise_open_file_limit(need: u64) -> u64 {
    crate::sys::raise_fd_limit_for(need)
}

/// A new, empty file in `dir` that has no name (`O_TMPFILE`, or a name removed right after
/// creation where the file system lacks it): nothing is left on disk once it is closed, even
/// when the process is killed. For spilling results to disk.
///
/// # Errors
/// When `dir` is not a writable directory, or the file system is full.
pub fn anonymous_file_in(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    crate::sys::anonymous_file_in(dir)
}
