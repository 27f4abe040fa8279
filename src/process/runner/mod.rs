//! The unit runner: units (a task, or a chain of tasks run back to back in one worker, with
//! their inputs) in, finished tasks out, on a pool of worker processes, with all the crash
//! handling: dispatch with backpressure, timeouts, blame, retries, quarantine, worker
//! replacement and Ctrl-C. It knows nothing of graphs or of the engine: a task carries a `tag`
//! (the engine's node id) that comes back with its result. The process pool's executor is a thin
//! adapter from engine jobs to units (`super::executor`); the distributed scheduler drives the
//! same runner on each rank.
//!
//! # Contract
//! - [`Runner::submit`] takes a unit; units run in the order they were submitted, as far as
//!   workers and backpressure allow, and the tasks of a unit run in order in one worker, each
//!   reading the previous one's result where its `prev` says so.
//! - [`Runner::wait`] returns at least one finished task (a value, or a failure naming the
//!   function and why), or an error of the pool itself (it could not start workers, Ctrl-C, a
//!   fork server that keeps failing). A task whose worker died is retried up to its `retries`
//!   (alone on a fresh worker) or fails with the death; after a failure in a unit, the links
//!   after it fail as not run.
//! - Dropping the runner leaves the pool ready for the next run: workers still running its
//!   units are replaced, so no stale result reaches a later run.
//!
//! **What the parent trusts.** Task code runs inside workers and may be hostile, so every
//! decision here rests on what the parent itself knows: which units it sent to which worker and
//! when, which results came back, and whether a process has ended (its pidfd). What a worker
//! writes (its progress page, its messages) is a hint, checked against that knowledge:
//! - *Timeouts.* A worker runs its units in order, and sends every finished result before and
//!   after a unit with a timeout, so the unit at the head of its queue started no earlier than
//!   when it became the head (sent to an idle worker, or the result before it arrived). The
//!   head's deadline is that moment plus the unit's whole time budget (and a grace); the page's
//!   start time, when it is plausible, only brings the deadline forward to the exact task.
//! - *Blame.* A death is charged to a unit only when it ran alone on a fresh worker (one that
//!   had run nothing before it, so no thread an earlier task left behind can be the cause; for
//!   a death of the fork server, alone in a pool of fresh workers) and the page named it, or it
//!   was already a suspect. Otherwise nobody is charged: the unit the page names (or the oldest)
//!   becomes a suspect, and suspects run that way until they finish or die, so their next
//!   death, if any, is surely theirs. A lying page or a left-behind thread therefore costs at
//!   most a re-run, never an innocent task's failure. (A task that signals *another* worker is
//!   beyond this: workers run as the same user.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use forkgraph_worker::host::{self, CtrlC, PollSet, SpawnError};
use forkgraph_worker::{CallError, Registry, TaskSpec, Value};

use super::Config;
use crate::callbacks::{WorkerEvent, WorkerId};
use crate::engine::Ran;
use crate::error::{Error, TaskErrorKind};
use crate::graph::TaskOptions;
use crate::key::Key;
pub(crate) use pool::Pool;
use pool::Slot;

mod deaths;
mod dispatch;
mod pool;
mod receive;
mod timeouts;

/// Most units in one message to a worker.
const UNITS_PER_MESSAGE: usize = 64;
/// Units queued per worker before its speed is known.
const START_DEPTH: usize = 4;
/// Most units queued per worker.
const MAX_DEPTH: usize = 64;
/// A worker's queue holds about this much work.
const QUEUE_NANOS: f64 = 2_000_000.0;
/// Added to a unit's time budget when the parent times it from its own clock (the worker starts
/// a unit a little after the parent sees the result before it).
const TIMEOUT_GRACE: Duration = Duration::from_millis(100);
/// Fds kept free for sockets, pipes and pages, beyond those of each worker.
const FD_RESERVE: usize = 64;
/// Fds each worker holds in the parent (socket, stderr, page, pidfd and slack).
const FDS_PER_WORKER: usize = 8;

/// Whether a unit runs alone, after a death that could not be pinned on one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suspect {
    /// Runs with others.
    No,
    /// Runs alone on its worker.
    Worker,
    /// Runs alone in the pool (it may have killed the fork server).
    Pool,
}

/// One task of a unit, as the runner takes it.
pub(crate) struct RunTask {
    /// What to run.
    pub(crate) spec: Arc<TaskSpec>,
    /// Its inputs, in dependency order.
    pub(crate) inputs: Vec<Arc<Value>>,
    /// In a chain: which input is the previous task's result (its slot holds a placeholder).
    pub(crate) prev: Option<u32>,
    /// Whether its value must come back (false only for links whose one reader is the next).
    pub(crate) send_back: bool,
    /// Retries and timeout of its own (else the pool's).
    pub(crate) options: TaskOptions,
    /// The caller's name for it; comes back with its result, and labels what it logs.
    pub(crate) tag: u32,
}

/// A finished task.
pub(crate) struct Finished {
    /// The task's tag.
    pub(crate) tag: u32,
    /// Its value, or why it has none.
    pub(crate) result: Result<Arc<Value>, TaskFailed>,
    /// Where and when it ran (diagnostics: the worker's own clock reads).
    pub(crate) ran: Ran,
}

/// Why a task has no value.
pub(crate) struct TaskFailed {
    /// The function that failed (innermost for nested tasks).
    pub(crate) function: String,
    /// What happened.
    pub(crate) kind: TaskErrorKind,
}

/// A unit of work: one task or a chain, and what it has cost so far.
pub(crate) struct PUnit {
    jobs: Vec<RunTask>,
    /// Workers this unit has killed.
    deaths: u32,
    suspect: Suspect,
}

/// A unit sent to a worker.
pub(crate) struct InFlight {
    seq: u64,
    unit: PUnit,
    /// When it was handed to the worker (the earliest it can have started).
    sent: u64,
    /// Whether it was sent alone to a worker that had run nothing before (for a pool suspect:
    /// with every worker in that state). Only such a unit can surely be blamed for a death: a
    /// thread an earlier task left behind in the worker could otherwise have caused it.
    fresh: bool,
}

/// A run of units on a pool (see the module doc).
pub(crate) struct Runner<'a> {
    pool: &'a mut Pool,
    cfg: &'a Config,
    /// What to call a task in its log records, by tag.
    labels: &'a [Key],
    pending: VecDeque<PUnit>,
    done: Vec<Finished>,
    interrupt: Option<CtrlC>,
    poll: PollSet,
    /// Whether any task of this get has a timeout (else no deadline bookkeeping at all).
    timeouts: bool,
    /// Suspect units pending or in flight (0: no isolation bookkeeping at all).
    suspects: usize,
    /// This process's open-file limit (segments held here are fds).
    fd_limit: usize,
}

impl<'a> Runner<'a> {
    pub(crate) fn new(pool: &'a mut Pool, cfg: &'a Config, labels: &'a [Key]) -> Runner<'a> {
        let interrupt = if cfg.handle_interrupt {
            host::ctrl_c()
        } else {
            None
        };
        for w in &mut pool.workers {
            w.drain_stderr();
            // Killed while idle: replaced before anything is sent to it, so no task is blamed.
            if w.exited() {
                w.mark_dead();
            }
        }
        Runner {
            pool,
            cfg,
            labels,
            pending: VecDeque::new(),
            done: Vec::new(),
            interrupt,
            poll: PollSet::default(),
            timeouts: cfg.task_timeout.is_some(),
            suspects: 0,
            fd_limit: usize::try_from(host::open_file_limit()).unwrap_or(usize::MAX),
        }
    }

    /// Takes a unit: a task, or a chain whose tasks run back to back in one worker.
    pub(crate) fn submit(&mut self, tasks: Vec<RunTask>) {
        self.timeouts |= tasks.iter().any(|j| j.options.timeout.is_some());
        self.pending.push_back(PUnit {
            jobs: tasks,
            deaths: 0,
            suspect: Suspect::No,
        });
    }

    /// The pool's workers now.
    pub(crate) fn workers(&self) -> Vec<WorkerId> {
        (0..self.pool.workers.len())
            .map(|i| self.pool.worker_id(i))
            .collect()
    }

    /// Starts or stops recording worker lifecycle events (off: nothing is recorded).
    pub(crate) fn record_events(&mut self, on: bool) {
        self.pool.events = on.then(Vec::new);
    }

    /// Appends the worker lifecycle events recorded since the last call.
    pub(crate) fn take_events(&mut self, out: &mut Vec<WorkerEvent>) {
        if let Some(e) = &mut self.pool.events {
            out.append(e);
        }
    }

    /// How many tasks may be in flight at once.
    pub(crate) fn slots(&self) -> usize {
        self.pool.workers.len() * MAX_DEPTH * 2
    }

    /// How many tasks can run at the same moment (the workers).
    pub(crate) fn parallelism(&self) -> usize {
        self.pool.workers.len()
    }

    /// Waits until at least one task has finished; appends them to `out`.
    ///
    /// # Errors
    /// When the pool itself fails (see the module doc).
    pub(crate) fn wait(&mut self, out: &mut Vec<Finished>) -> Result<(), Error> {
        loop {
            self.dispatch()?;
            if !self.done.is_empty() {
                out.append(&mut self.done);
                return Ok(());
            }
            self.pump()?;
        }
    }
}

const SIGABRT: i32 = 6;
const SIGXCPU: i32 = 24;

fn add(t: u64, d: Duration) -> u64 {
    t.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn function_name(job: &RunTask) -> String {
    Registry::global()
        .get(job.spec.func)
        .map_or_else(|| format!("#{}", job.spec.func), |f| f.name.to_owned())
}

fn not_run(job: &RunTask, after_failure: bool) -> TaskFailed {
    TaskFailed {
        function: function_name(job),
        kind: TaskErrorKind::Call(CallError::Failed(if after_failure {
            "not run: an earlier task of its chain failed".into()
        } else {
            "not run: its worker returned no result".into()
        })),
    }
}

impl Drop for Runner<'_> {
    /// Leaves the pool ready for the next `get`, however this one ended (an error, or a panic
    /// in a callback unwinding through the engine): workers that still run its units are
    /// replaced, so no stale result can reach a later `get`.
    fn drop(&mut self) {
        self.pending.clear();
        for i in 0..self.pool.workers.len() {
            let w = &mut self.pool.workers[i];
            w.drain_stderr();
            if !w.in_flight.is_empty() || w.is_dead() {
                w.kill();
                w.in_flight.clear();
                if let Err(SpawnError::ServerGone(_)) = self.pool.replace(i) {
                    let _ = self.pool.restart_server();
                    break;
                }
            }
        }
        // This get's intermediates are released now: let their producers reuse them.
        self.send_frees();
        // Its workers' output reaches stderr before `get` returns (unless stderr is stuck).
        host::stderr::flush();
    }
}
