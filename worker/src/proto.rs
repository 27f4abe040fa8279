//! Messages between the parent, the fork server and workers (their framing is in
//! `frame.rs`).
//!
//! Protocol (who sends what):
//! - parent -> fork server: [`ToServer::Spawn`] (reply [`FromServer::Spawned`] with the worker's
//!   socket, its stderr pipe, its progress page and its pidfd as fds), [`ToServer::Reap`] (reply
//!   [`FromServer::Reaped`]). The server's end-of-file means the parent is gone: it kills every
//!   worker and what they left, and exits.
//! - parent -> worker: [`ToWorker::Run`] with units of work, [`ToWorker::Free`] with segments
//!   to recycle; worker -> parent: [`FromWorker::Hello`] once, then [`FromWorker::Done`] with
//!   results, in the order of the units, and [`FromWorker::Log`] records.
//! - a worker writes the unit it is running into its progress page
//!   (a shared memory page): a hint for the parent, which trusts only what it sent and
//!   received.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::exec::{SpecRef, TaskFailure, TaskSpec};
use crate::sys::Exit;
use crate::value::Value;

/// What a worker writes to its stderr each time it has sent results: the parent cuts the stderr
/// tail it keeps for error reports there (so a crash shows the output of the tasks that had not
/// reported yet, not an earlier task's) and does not forward these bytes. A task that writes
/// them itself only shortens its own tail.
pub const STDERR_MARK: &[u8] = b"\x00\x1fforkgraph:results-sent\x1f\x00";

/// Resource limits of a worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// RLIMIT_DATA in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU seconds per task (RLIMIT_CPU, re-armed before each task).
    pub cpu_seconds: Option<u64>,
    /// Results with arrays of at least this many bytes go back in shared segments.
    pub segment_threshold: Option<u64>,
    /// Whether those segments are recycled (see [`crate::segments`]).
    pub recycle_segments: bool,
    /// Most bytes of free recyclable segments, and most bytes of cached mappings of recycled
    /// inputs, the worker keeps (each; `None`: 256 MiB each). A pool with a memory budget sets
    /// it so that what workers cache is part of the budget.
    pub cache_bytes: Option<u64>,
    /// `log` records forwarded to the parent, up to this level (0 off, 1 error .. 5 trace).
    pub log_level: u8,
    /// `tracing` events forwarded to the parent, up to this level (as `log_level`).
    pub trace_level: u8,
    /// Whether the worker runs in a sandbox (set by the fork server; its tasks' failures then
    /// name a system call the sandbox denied).
    pub sandboxed: bool,
}

/// Parent to fork server.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToServer {
    /// Start a worker.
    Spawn {
        /// Its limits.
        limits: Limits,
        /// What it runs once before anything else (the pool's `worker_init`).
        init: Option<Arc<TaskSpec>>,
        /// Its sandbox, if any (see [`crate::sandbox`]).
        sandbox: Option<Arc<crate::sandbox::Sandbox>>,
    },
    /// Kill (SIGKILL) a worker and wait for it to end.
    Reap {
        /// Its pid.
        pid: i32,
    },
}

/// Fork server to parent.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromServer {
    /// A worker started; fds: socket, stderr read end, progress page, pidfd.
    Spawned {
        /// Its pid.
        pid: i32,
    },
    /// A worker ended.
    Reaped {
        /// Its pid.
        pid: i32,
        /// How.
        exit: Exit,
    },
    /// The request failed.
    Failed(String),
}

/// An input of a task in a unit.
#[derive(Debug, Serialize, Deserialize)]
pub enum Input {
    /// A value sent along.
    Value(Arc<Value>),
    /// The result of the previous task of the same unit (computed in the worker).
    Prev,
}

/// One task of a unit.
#[derive(Debug, Serialize, Deserialize)]
pub struct UnitTask {
    /// What to run.
    pub spec: SpecRef,
    /// Its inputs, in dependency order.
    pub inputs: Vec<Input>,
    /// Whether the parent needs the result back.
    pub send_back: bool,
}

/// A chain of tasks run back to back in one worker; each may read the previous one's result.
#[derive(Debug, Serialize, Deserialize)]
pub struct Unit {
    /// Sequence number (never 0), unique per pool.
    pub seq: u64,
    /// Whether a task of it has a timeout. The worker then sends every finished result before
    /// it starts this unit and right after it ends, so the parent, which times units from what
    /// it has received, knows when this one started without trusting the worker's page.
    pub timed: bool,
    /// The tasks.
    pub tasks: Vec<UnitTask>,
}

/// Parent to worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run these units in order.
    Run(Vec<Unit>),
    /// These recyclable segments (by inode) are no longer mapped for use anywhere: reuse them.
    Free(Vec<u64>),
}

/// The outcome of one unit.
#[derive(Debug, Serialize, Deserialize)]
pub struct UnitDone {
    /// The unit's sequence number.
    pub seq: u64,
    /// Results of its tasks in order, up to and including the first failure. `Ok(None)` is a
    /// result that stayed in the worker (`send_back` false).
    pub results: Vec<Result<Option<Value>, TaskFailure>>,
    /// Wall time the unit took, in nanoseconds.
    pub nanos: u64,
    /// When the unit started in the worker, in nanoseconds on the monotonic clock (the clock
    /// of `host::now`, the same in every process of the machine).
    pub start: u64,
    /// When each task of `results` but the last ended, in nanoseconds after `start` (the last
    /// ends at `start + nanos`); a task starts when the one before it ended (the first at
    /// `start`). Measured with the clock reads the worker makes anyway for its progress page:
    /// no system call of its own, and no allocation for a unit of one task. Diagnostics only:
    /// the parent decides nothing from it.
    pub ends: Vec<u64>,
    /// Recyclable input segments the worker still maps after the unit (kept by its tasks).
    pub retained: Vec<u64>,
}

/// Worker to parent.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// First message: who the worker is, which function table it has, and how its
    /// `worker_init` went (a worker whose init failed exits after saying so).
    Hello {
        /// Its pid.
        pid: i32,
        /// [`crate::Registry::digest`] of its executable.
        digest: u64,
        /// The init's failure, if it failed.
        init: Option<TaskFailure>,
    },
    /// Finished units.
    Done(Vec<UnitDone>),
    /// A `log` record or `tracing` event a task emitted.
    Log(crate::logs::LogRecord),
}
