//! Callbacks that observe a `get`, as Dask's `Callback` (start, pretask, posttask, finish), and
//! what a profiler needs on top: where each task ran and when (measured where it ran), its
//! result size, failures with their error, and worker lifecycle events.
//!
//! Times are nanoseconds on the machine's monotonic clock ([`monotonic_ns`]), which every
//! process of the machine shares: a worker process measures its tasks' start and end itself and
//! sends them with the results, at no extra system call (it reads the clock around each task
//! anyway). On the sync and thread schedulers the clock is read around a task only when the
//! `get` has callbacks.

use std::fmt;

use forkgraph_worker::Value;

use crate::error::TaskError;
use crate::key::Key;
use crate::plan::{Kind, Plan};

/// What a run is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo {
    /// Nodes in the culled graph (tasks, literals and aliases).
    pub nodes: usize,
    /// Tasks to run.
    pub tasks: usize,
}

/// Where a task ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkerId {
    /// The thread that called `get`: every task of the sync scheduler, and the tasks a thread
    /// pool's caller runs itself (a lone ready task while nothing else runs).
    Caller,
    /// Thread `n` of a thread pool.
    Thread(usize),
    /// A worker process: its slot in the pool (`0..workers`; a replacement takes the slot of
    /// the worker it replaces) and its process id.
    Process {
        /// The slot.
        slot: usize,
        /// The process id.
        pid: i32,
    },
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerId::Caller => write!(f, "caller"),
            WorkerId::Thread(n) => write!(f, "thread {n}"),
            WorkerId::Process { slot, pid } => write!(f, "worker {slot} (pid {pid})"),
        }
    }
}

/// A finished (or failed) task, as [`Callbacks::task_done`] and [`Callbacks::task_failed`]
/// see it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct TaskEvent<'a> {
    /// Its key.
    pub key: &'a Key,
    /// Its function (for a failure, the innermost function that failed).
    pub function: &'a str,
    /// Where it ran.
    pub worker: WorkerId,
    /// When it started, in ns on [`monotonic_ns`]'s clock, measured where it ran.
    pub start: u64,
    /// When it ended (`start <= end`).
    pub end: u64,
    /// Size of its result: bytes of arrays, strings and encoded values, 8 per scalar (0 for a
    /// failure, and for a chain link whose result stayed in its worker).
    pub result_bytes: u64,
    /// False when the task never started: a link after a failed link of its chain, or a unit
    /// whose worker died before it (its times are then when the parent learnt it; the times of
    /// a task whose worker died while it ran are from its progress page or its dispatch, to
    /// the death).
    pub ran: bool,
    /// The tasks whose results it took as inputs.
    pub dependencies: Dependencies<'a>,
}

/// The keys of the tasks whose results a task took as inputs ([`TaskEvent::dependencies`]), in
/// the order of its arguments: an alias is resolved to the task it names, literals are left
/// out. Read from the run's plan, without allocating.
#[derive(Clone, Copy)]
pub struct Dependencies<'a> {
    plan: &'a Plan,
    node: u32,
}

impl<'a> Dependencies<'a> {
    pub(crate) fn new(plan: &'a Plan, node: u32) -> Dependencies<'a> {
        Dependencies { plan, node }
    }

    /// The keys.
    pub fn iter(&self) -> impl Iterator<Item = &'a Key> + 'a {
        let plan = self.plan;
        plan.deps.get(self.node).iter().filter_map(move |&d| {
            let mut d = d;
            loop {
                match plan.kinds[d as usize] {
                    Kind::Task(_) => return Some(&plan.keys[d as usize]),
                    Kind::Value(_) => return None,
                    Kind::Alias => d = plan.deps.get(d)[0],
                }
            }
        })
    }
}

impl fmt::Debug for Dependencies<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl TaskEvent<'_> {
    /// `end - start` in nanoseconds.
    pub fn nanos(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// Something that happened to a worker process during a `get` (the process pool only).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// A worker started (a replacement).
    Started {
        /// The new worker.
        worker: WorkerId,
        /// When, on [`monotonic_ns`]'s clock.
        at: u64,
    },
    /// A worker ended: it died, timed out, or the pool retired it.
    Died {
        /// The worker.
        worker: WorkerId,
        /// When it was reaped.
        at: u64,
        /// Why, as a person reads it (`"killed by signal 11 (SIGSEGV)"`, `"retired by the
        /// pool, ..."`).
        cause: String,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        exit_code: Option<i32>,
    },
    /// `new` took the slot of `old`.
    Replaced {
        /// The worker that ended.
        old: WorkerId,
        /// Its replacement.
        new: WorkerId,
        /// When.
        at: u64,
    },
}

/// Hooks called by the engine, in the thread that called `get`.
///
/// Every method has an empty default. `finish` always runs, also after an error.
pub trait Callbacks: Send + Sync {
    /// Before the first task.
    fn start(&self, info: &RunInfo) {
        let _ = info;
    }
    /// Right after `start`: where this run's tasks may run (the caller and the threads of a
    /// thread pool, the worker processes of a process pool).
    fn workers(&self, workers: &[WorkerId]) {
        let _ = workers;
    }
    /// When a task is handed to its executor.
    fn pretask(&self, key: &Key) {
        let _ = key;
    }
    /// When a task's result is back.
    fn posttask(&self, key: &Key, value: &Value) {
        let _ = (key, value);
    }
    /// When a task's result is back (right after `posttask`), with where and when it ran.
    fn task_done(&self, task: &TaskEvent<'_>, value: &Value) {
        let _ = (task, value);
    }
    /// When a task failed: every failed task, also after the first error (whose `get` returns
    /// the first one), and the links of a chain that did not run after a failed link
    /// (`task.ran` false).
    fn task_failed(&self, task: &TaskEvent<'_>, error: &TaskError) {
        let _ = (task, error);
    }
    /// A worker process started, died or was replaced during the run.
    fn worker_event(&self, event: &WorkerEvent) {
        let _ = event;
    }
    /// After the last task, with `errored` true when `get` returns an error.
    fn finish(&self, errored: bool) {
        let _ = errored;
    }
}

/// Nanoseconds on the monotonic clock that task times are measured on (`CLOCK_MONOTONIC`, the
/// same in every process of the machine).
pub fn monotonic_ns() -> u64 {
    forkgraph_worker::host::now()
}

/// [`TaskEvent::result_bytes`] of a value.
pub(crate) fn value_bytes(v: &Value) -> u64 {
    match v {
        Value::Str(s) => s.len() as u64,
        Value::Array(_) | Value::Encoded(..) => v.array_bytes() as u64,
        Value::List(l) => l.iter().map(value_bytes).sum(),
        Value::Map(m) => m.iter().map(|(k, x)| k.len() as u64 + value_bytes(x)).sum(),
        Value::Null => 0,
        _ => 8,
    }
}
