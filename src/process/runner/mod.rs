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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use forkgraph_worker::host::{self, CtrlC, PollSet};
use forkgraph_worker::{CallError, Registry, SpecRef, Value};

use super::Config;
use crate::callbacks::{WorkerEvent, WorkerId};
use crate::engine::Ran;
use crate::error::{Error, TaskErrorKind};
use crate::graph::TaskOptions;
use crate::key::Key;
pub(crate) use pool::Pool;
use pool::Slot;
pub(crate) use queues::Queues;

mod deaths;
mod dispatch;
mod pool;
mod queues;
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
    pub(crate) spec: SpecRef,
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

/// What names a caller's tasks in their log records, by tag.
pub(crate) trait Labels: Send + Sync {
    /// The key of the task tagged `tag`.
    fn label(&self, tag: u32) -> Option<&Key>;
}

impl Labels for Vec<Key> {
    fn label(&self, tag: u32) -> Option<&Key> {
        self.get(tag as usize)
    }
}

impl Labels for crate::plan::Plan {
    fn label(&self, tag: u32) -> Option<&Key> {
        self.keys.get(tag as usize)
    }
}

/// A finished task.
pub(crate) struct Finished {
    /// The caller whose unit it was.
    pub(crate) caller: u64,
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

/// A unit of work: one task or a chain, whose caller it is, and what it has cost so far.
pub(crate) struct PUnit {
    /// The caller (one `get`, `map` or submitted call) it belongs to.
    pub(crate) caller: u64,
    /// Names its tasks in log records.
    labels: Arc<dyn Labels>,
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

/// The units of every caller on a pool (see the module doc).
pub(crate) struct Runner {
    pub(crate) pool: Pool,
    cfg: Arc<Config>,
    pending: Queues,
    pub(crate) done: Vec<Finished>,
    interrupt: Option<CtrlC>,
    /// Callers whose units are dropped: a worker whose running unit is theirs is replaced.
    cancelled: HashSet<u64>,
    poll: PollSet,
    /// Whether any task of this get has a timeout (else no deadline bookkeeping at all).
    timeouts: bool,
    /// Suspect units pending or in flight (0: no isolation bookkeeping at all).
    suspects: usize,
    /// This process's open-file limit (segments held here are fds).
    fd_limit: usize,
}

impl PUnit {
    /// A unit of `caller`: a task, or a chain whose tasks run back to back in one worker.
    pub(crate) fn new(caller: u64, labels: Arc<dyn Labels>, jobs: Vec<RunTask>) -> PUnit {
        PUnit {
            caller,
            labels,
            jobs,
            deaths: 0,
            suspect: Suspect::No,
        }
    }
}

impl PUnit {
    /// How many tasks it has.
    pub(crate) fn tasks(&self) -> usize {
        self.jobs.len()
    }
}

impl Runner {
    pub(crate) fn new(pool: Pool, cfg: Arc<Config>) -> Runner {
        Runner {
            timeouts: cfg.task_timeout.is_some(),
            pool,
            cfg,
            pending: Queues::default(),
            done: Vec::new(),
            interrupt: None,
            cancelled: HashSet::new(),
            poll: PollSet::default(),
            suspects: 0,
            fd_limit: usize::try_from(host::open_file_limit()).unwrap_or(usize::MAX),
        }
    }

    /// Whether no unit is pending or in flight.
    pub(crate) fn idle(&self) -> bool {
        self.pending.is_empty() && self.pool.workers.iter().all(|w| w.in_flight.is_empty())
    }

    /// Before the first unit after a pause: takes what workers wrote meanwhile, and marks
    /// workers killed while idle dead, so that they are replaced before anything is sent to
    /// them and no task is blamed. Resets the timeout bookkeeping.
    pub(crate) fn wake_up(&mut self) {
        self.timeouts = self.cfg.task_timeout.is_some();
        for w in &mut self.pool.workers {
            w.drain_stderr();
            if w.exited() {
                w.mark_dead();
            }
        }
    }

    /// Arms (or disarms) Ctrl-C handling: armed while any caller is active.
    pub(crate) fn arm_ctrl_c(&mut self, on: bool) {
        if !on {
            self.interrupt = None;
        } else if self.interrupt.is_none() && self.cfg.handle_interrupt {
            self.interrupt = host::ctrl_c();
        }
    }

    /// Takes a unit.
    pub(crate) fn submit(&mut self, unit: PUnit) {
        self.timeouts |= unit.jobs.iter().any(|j| j.options.timeout.is_some());
        self.pending.push_back(unit);
    }

    /// Drops `caller`'s units: pending ones at once. Units already sent to a worker are
    /// listed in its progress page, so the worker skips those it has not started (their
    /// results come back empty and are dropped). A worker is killed and replaced only when a
    /// unit of the caller runs there and every unit ahead of it has reported (or is a
    /// cancelled caller's too): the units of other callers queued behind it have not started,
    /// and run once, elsewhere, blaming nobody. When another caller's unit ahead of it has
    /// not reported yet (its result may sit unsent in the worker), the cancelled unit runs to
    /// its end instead and its result is dropped, so other callers' tasks run exactly once.
    pub(crate) fn cancel(&mut self, caller: u64) {
        for u in self.pending.remove_caller(caller) {
            if u.suspect != Suspect::No {
                self.suspects -= 1;
            }
        }
        let mut killed = false;
        for i in 0..self.pool.workers.len() {
            let w = &self.pool.workers[i];
            if !w.in_flight.iter().any(|f| f.unit.caller == caller) {
                continue;
            }
            self.cancelled.insert(caller);
            if w.is_dead() {
                continue; // Buried at the next dispatch; its units of the caller are dropped.
            }
            let cancelled = &self.cancelled;
            let skip: Vec<u64> = w
                .in_flight
                .iter()
                .filter(|f| cancelled.contains(&f.unit.caller))
                .map(|f| f.seq)
                .collect();
            let running = w.skip(&skip);
            // Results the worker sent before it started the unit it runs now are in its
            // socket: take them, so that `in_flight` starts with what is really unreported.
            let msgs = self.pool.workers[i].read_messages();
            if self.handle_all(i, msgs).is_err() {
                continue; // It broke the protocol: it is dead, and buried below.
            }
            let w = &mut self.pool.workers[i];
            let cancelled = &self.cancelled;
            let mut ahead_cancelled = true;
            let mut kill = false;
            for f in &w.in_flight {
                let theirs = cancelled.contains(&f.unit.caller);
                if f.seq == running {
                    kill = theirs && ahead_cancelled;
                    break;
                }
                ahead_cancelled &= theirs;
            }
            if kill && !w.is_dead() {
                w.kill();
                w.cancel_kill = true;
                killed = true;
            }
        }
        if killed {
            // Replaced now, not at the next dispatch: nobody may be about to dispatch.
            let _ = self.bury_dead();
        }
        self.forget_cancelled();
    }

    /// Forgets cancelled callers with nothing left in flight.
    pub(super) fn forget_cancelled(&mut self) {
        if self.cancelled.is_empty() {
            return;
        }
        let workers = &self.pool.workers;
        self.cancelled.retain(|c| {
            workers
                .iter()
                .any(|w| w.in_flight.iter().any(|f| f.unit.caller == *c))
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
        match (on, &self.pool.events) {
            (true, None) => self.pool.events = Some(Vec::new()),
            (false, Some(_)) => self.pool.events = None,
            _ => {}
        }
    }

    /// Takes the worker lifecycle events recorded since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<WorkerEvent> {
        self.pool
            .events
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// How many tasks may be in flight at once.
    pub(crate) fn slots(&self) -> usize {
        self.pool.workers.len() * MAX_DEPTH * 2
    }

    /// How many tasks can run at the same moment (the workers).
    pub(crate) fn parallelism(&self) -> usize {
        self.pool.workers.len()
    }

    /// Hands out pending units, then, unless some tasks have finished (in `done`), waits for
    /// something to happen (results, deaths, timeouts, Ctrl-C, or `wake`) and handles it.
    ///
    /// # Errors
    /// When the pool itself fails (see the module doc).
    pub(crate) fn step(&mut self, wake: Option<&host::Wake>) -> Result<(), Error> {
        self.dispatch()?;
        if self.done.is_empty() {
            self.pump(wake)?;
        }
        Ok(())
    }

    /// Whether the last wait was woken through the wake-up pipe.
    pub(crate) fn woken(&self) -> bool {
        self.poll.woken()
    }

    /// Leaves the pool ready for a pause: idle workers' segments nobody maps are freed, and
    /// their output reaches stderr.
    pub(crate) fn settle(&mut self) {
        for w in &mut self.pool.workers {
            w.drain_stderr();
        }
        self.send_frees();
        host::stderr::flush();
    }
}

const SIGABRT: i32 = 6;
const SIGXCPU: i32 = 24;

fn add(t: u64, d: Duration) -> u64 {
    t.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn function_name(job: &RunTask) -> String {
    Registry::global()
        .get(job.spec.func())
        .map_or_else(|| format!("#{}", job.spec.func()), |f| f.name.to_owned())
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
