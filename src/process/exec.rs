//! The executor of one `get` on a process pool: hands units to workers, collects results,
//! enforces timeouts, and turns worker deaths into retries or precise errors.
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
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use forkgraph_worker::proto::{FromWorker, Input, ToWorker, Unit, UnitDone, UnitTask};
use forkgraph_worker::sys::{self, interrupt, Exit};
use forkgraph_worker::{CallError, Registry};

use super::proc::{Proc, Replace, TAIL_LINES};
use super::{Config, Pool};
use crate::engine::{Done, Executor, Failure, Job};
use crate::error::{Error, TaskErrorKind};
use crate::key::Key;

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

/// A unit of work: one job or a chain, and what it has cost so far.
pub(crate) struct PUnit {
    jobs: Vec<Job>,
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

pub(crate) struct ProcExec<'a> {
    pool: &'a mut Pool,
    cfg: &'a Config,
    /// The plan's keys, by node (to tag what tasks log).
    keys: &'a [Key],
    pending: VecDeque<PUnit>,
    done: Vec<Done>,
    interrupt: Option<interrupt::Armed>,
    /// Whether any task of this get has a timeout (else no deadline bookkeeping at all).
    timeouts: bool,
    /// Suspect units pending or in flight (0: no isolation bookkeeping at all).
    suspects: usize,
    /// This process's open-file limit (segments held here are fds).
    fd_limit: usize,
}

impl<'a> ProcExec<'a> {
    pub(crate) fn new(pool: &'a mut Pool, cfg: &'a Config, keys: &'a [Key]) -> ProcExec<'a> {
        let interrupt = if cfg.handle_interrupt {
            interrupt::arm()
        } else {
            None
        };
        for w in &mut pool.workers {
            w.drain_stderr();
            // Killed while idle: replaced before anything is sent to it, so no task is blamed.
            if w.exited() {
                w.dead = true;
            }
        }
        ProcExec {
            pool,
            cfg,
            keys,
            pending: VecDeque::new(),
            done: Vec::new(),
            interrupt,
            timeouts: cfg.task_timeout.is_some(),
            suspects: 0,
            fd_limit: usize::try_from(sys::open_file_limit()).unwrap_or(usize::MAX),
        }
    }

    fn depth(&self, i: usize) -> usize {
        let w = &self.pool.workers[i];
        if w.avg_unit_ns <= 0.0 {
            START_DEPTH
        } else {
            ((QUEUE_NANOS / w.avg_unit_ns) as usize).clamp(2, MAX_DEPTH)
        }
    }

    /// Tells producers which of their segments nobody maps any more.
    fn send_frees(&mut self) {
        let workers = &self.pool.workers;
        let freed = forkgraph_worker::segments::ledger::take_freed(|pid| {
            pid > 0 && workers.iter().any(|w| w.pid == pid)
        });
        if freed.is_empty() {
            return;
        }
        for w in &mut self.pool.workers {
            let inodes: Vec<u64> = freed
                .iter()
                .filter(|(pid, _)| *pid == w.pid && w.pid > 0)
                .map(|(_, ino)| *ino)
                .collect();
            if !inodes.is_empty() && !w.dead {
                let _ = w.outbox.push(&ToWorker::Free(inodes), Vec::new());
                w.flush();
            }
        }
    }

    /// Whether worker `i` can take another unit now (suspects aside).
    fn has_room(&self, i: usize, queued: usize) -> bool {
        let w = &self.pool.workers[i];
        !w.dead
            && w.in_flight.len() < self.depth(i)
            && queued < UNITS_PER_MESSAGE
            && (self.suspects == 0
                || w.in_flight
                    .front()
                    .is_none_or(|f| f.unit.suspect == Suspect::No))
    }

    /// Hands pending units to workers with room, least loaded first; suspects only to a worker
    /// (or a pool) with nothing else to do.
    fn dispatch(&mut self) -> Result<(), Error> {
        self.bury_dead()?;
        self.recycle()?;
        self.refresh_for_suspect()?;
        self.send_frees();
        let n = self.pool.workers.len();
        let mut batches: Vec<Vec<Unit>> = (0..n).map(|_| Vec::new()).collect();
        let mut busy = self.pool.workers.iter().any(|w| !w.in_flight.is_empty());
        if self.suspects > 0
            && self.pool.workers.iter().any(|w| {
                w.in_flight
                    .front()
                    .is_some_and(|f| f.unit.suspect == Suspect::Pool)
            })
        {
            return Ok(()); // A pool suspect runs alone.
        }
        // Expected bytes of what runs, kept only when there is a budget (off the hot path).
        let budget = self.cfg.segment_budget;
        let mut committed = if budget.is_some() {
            self.in_flight_bytes()
        } else {
            None
        };
        let fds_per_unit = self.pool.workers.iter().map(|w| w.fds_per_unit).max();
        let fds_per_unit = fds_per_unit.unwrap_or(0);
        let mut units_in_flight = if fds_per_unit > 0 {
            self.pool.workers.iter().map(|w| w.in_flight.len()).sum()
        } else {
            0
        };
        while !self.pending.is_empty() {
            if fds_per_unit > 0 && !self.fds_fit(units_in_flight + 1, fds_per_unit) {
                if busy {
                    break;
                }
                return Err(self.fd_exhausted());
            }
            let front = &self.pending[0];
            if let Some(budget) = budget {
                // Start a unit only if what is held, what runs and what it will add fit the
                // budget; a unit of unknown size only when nothing else runs. With nothing
                // running, start one anyway: the graph must progress.
                let held = sys::segment_stats().1 as f64;
                let fits = match committed.zip(self.expected_bytes(front)) {
                    Some((c, e)) => held + c + e <= budget as f64,
                    None => false,
                };
                if busy && !fits {
                    break;
                }
            }
            let suspect = front.suspect;
            let fresh_idle = |w: &Proc| !w.dead && w.in_flight.is_empty() && w.tasks_done == 0;
            let best = match suspect {
                Suspect::No => (0..n)
                    .filter(|&i| self.has_room(i, batches[i].len()))
                    .min_by_key(|&i| self.pool.workers[i].in_flight.len()),
                Suspect::Worker => {
                    (0..n).find(|&i| fresh_idle(&self.pool.workers[i]) && batches[i].is_empty())
                }
                Suspect::Pool if busy => None,
                Suspect::Pool => (0..n).find(|&i| fresh_idle(&self.pool.workers[i])),
            };
            let Some(i) = best else { break };
            let unit = self.pending.pop_front().expect("pending unit");
            if budget.is_some() {
                committed = committed
                    .zip(self.expected_bytes(&unit))
                    .map(|(c, e)| c + e);
            }
            units_in_flight += 1;
            let seq = self.pool.next_seq;
            self.pool.next_seq += 1;
            batches[i].push(self.wire_unit(seq, &unit));
            let now = sys::monotonic_ns();
            let all_fresh =
                suspect != Suspect::Pool || self.pool.workers.iter().all(|w| w.tasks_done == 0);
            let w = &mut self.pool.workers[i];
            let fresh = all_fresh && w.tasks_done == 0 && w.in_flight.is_empty();
            if w.in_flight.is_empty() {
                // Timed from when its message is all written (see `Proc::flush`).
                w.head_unsent = true;
                w.head_grace = 0;
            }
            w.in_flight.push_back(InFlight {
                seq,
                unit,
                sent: now,
                fresh,
            });
            busy = true;
            if suspect == Suspect::Pool {
                break;
            }
        }
        for (i, units) in batches.into_iter().enumerate() {
            if units.is_empty() {
                continue;
            }
            let w = &mut self.pool.workers[i];
            let threshold = self.cfg.limits.segment_threshold.map(|t| t as usize);
            let head_here = w.head_unsent && w.in_flight.len() == units.len();
            w.outbox
                .push_shared(&ToWorker::Run(units), threshold)
                .map_err(|e| Error::Scheduler(format!("cannot encode tasks: {e}")))?;
            if head_here {
                // Time for the worker to decode the message: 1 ns a byte (1 GB/s).
                w.head_grace = w.outbox.last_len() as u64;
            }
            w.flush();
        }
        self.bury_dead()
    }

    /// A suspect runs on a worker that has run nothing before (for a pool suspect, with every
    /// worker so): when the next unit is one and no idle worker is fresh, idle workers are
    /// replaced.
    fn refresh_for_suspect(&mut self) -> Result<(), Error> {
        if self.suspects == 0 {
            return Ok(());
        }
        let Some(front) = self.pending.front() else {
            return Ok(());
        };
        let workers = &self.pool.workers;
        let idle = |w: &Proc| !w.dead && w.in_flight.is_empty();
        let stale: Vec<usize> = match front.suspect {
            Suspect::No => return Ok(()),
            Suspect::Worker if workers.iter().any(|w| idle(w) && w.tasks_done == 0) => {
                return Ok(())
            }
            Suspect::Worker => workers.iter().position(idle).into_iter().collect(),
            Suspect::Pool if !workers.iter().all(idle) => return Ok(()),
            Suspect::Pool => (0..workers.len())
                .filter(|&i| workers[i].tasks_done > 0)
                .collect(),
        };
        for i in stale {
            match self.pool.replace(i) {
                Ok(_) => {}
                Err(Replace::ServerGone(why)) => return self.server_gone(Vec::new(), why, 0),
                Err(Replace::Failed(e)) => return Err(Error::Scheduler(e)),
            }
        }
        Ok(())
    }

    /// Whether `units` units in flight, each bringing up to `per_unit` segments, still leave
    /// this process below its open-file limit. When they would not, the soft limit is raised
    /// towards the hard limit first: only then, and never lowered.
    fn fds_fit(&mut self, units: usize, per_unit: usize) -> bool {
        let held = sys::segment_stats().0 as usize;
        let reserve = FD_RESERVE + FDS_PER_WORKER * self.pool.workers.len();
        let need = held
            .saturating_add(units.saturating_mul(per_unit))
            .saturating_add(reserve);
        if need > self.fd_limit {
            let raised = sys::raise_fd_limit_for(need as u64);
            self.fd_limit = usize::try_from(raised).unwrap_or(usize::MAX);
        }
        need <= self.fd_limit
    }

    fn fd_exhausted(&self) -> Error {
        Error::Scheduler(format!(
            "results held in shared segments need more open files than this process may have: \
             {} segments are held and the open-file limit (RLIMIT_NOFILE) is {}; raise it \
             (ulimit -n) or the pool's segment_threshold, so that fewer results travel as \
             segments",
            sys::segment_stats().0,
            self.fd_limit
        ))
    }

    /// Bytes of shared segments a unit is expected to return (`None`: not known yet).
    fn expected_bytes(&self, unit: &PUnit) -> Option<f64> {
        // Only results that come back to the parent occupy its segments.
        unit.jobs
            .iter()
            .filter(|j| j.send_back)
            .map(|j| self.pool.result_bytes.get(&j.spec.func).copied())
            .sum()
    }

    /// Bytes the units in flight are expected to return (`None`: some are unknown).
    fn in_flight_bytes(&self) -> Option<f64> {
        self.pool
            .workers
            .iter()
            .flat_map(|w| w.in_flight.iter())
            .map(|f| self.expected_bytes(&f.unit))
            .sum()
    }

    /// Replaces idle workers that have run `max_tasks_per_worker` tasks.
    fn recycle(&mut self) -> Result<(), Error> {
        let Some(max) = self.cfg.max_tasks_per_worker else {
            return Ok(());
        };
        for i in 0..self.pool.workers.len() {
            let w = &self.pool.workers[i];
            if w.tasks_done >= max && w.in_flight.is_empty() && !w.dead {
                match self.pool.replace(i) {
                    Ok(_) => {}
                    Err(Replace::ServerGone(why)) => return self.server_gone(Vec::new(), why, 0),
                    Err(Replace::Failed(e)) => return Err(Error::Scheduler(e)),
                }
            }
        }
        Ok(())
    }

    /// Waits for something to happen (results, deaths, timeouts, Ctrl-C) and handles it.
    fn pump(&mut self) -> Result<(), Error> {
        let deadline = self.next_deadline();
        let now = sys::monotonic_ns();
        let timeout = deadline.map(|d| Duration::from_nanos(d.saturating_sub(now)));
        // Where each worker's socket, pidfd and stderr pipe sit in the poll set.
        let mut slots: Vec<(usize, Option<usize>)> = Vec::with_capacity(self.pool.workers.len());
        let ready = {
            let mut interests = Vec::new();
            for w in &self.pool.workers {
                let sock = interests.len();
                interests.push(sys::Interest {
                    fd: w.sock.as_fd(),
                    read: true,
                    write: !w.outbox.is_empty(),
                });
                interests.push(sys::Interest {
                    fd: w.pidfd(),
                    read: true,
                    write: false,
                });
                let err = w.stderr_fd().map(|fd| {
                    interests.push(sys::Interest {
                        fd,
                        read: true,
                        write: false,
                    });
                    interests.len() - 1
                });
                slots.push((sock, err));
            }
            if let Some(i) = &self.interrupt {
                interests.push(sys::Interest {
                    fd: i.fd(),
                    read: true,
                    write: false,
                });
            }
            sys::poll(&interests, timeout).map_err(|e| Error::Scheduler(format!("poll: {e}")))?
        };
        if let Some(i) = &self.interrupt {
            if ready.last().is_some_and(|r| r.read) && i.fired() {
                return Err(self.interrupted());
            }
        }
        for (i, (sock, err)) in slots.into_iter().enumerate() {
            if err.is_some_and(|e| ready[e].read) {
                self.pool.workers[i].drain_stderr();
            }
            if ready[sock].write {
                self.pool.workers[i].flush();
            }
            if ready[sock].read {
                let msgs = self.pool.workers[i].read_messages();
                self.handle_all(i, msgs)?;
            }
            if ready[sock + 1].read {
                // The process ended (whatever holds its socket open).
                self.pool.workers[i].dead = true;
            }
        }
        self.enforce_timeouts();
        self.bury_dead()
    }

    fn handle_all(&mut self, i: usize, msgs: Vec<FromWorker>) -> Result<(), Error> {
        for m in msgs {
            if self.pool.workers[i].broken {
                break; // It broke the protocol: nothing more it says counts.
            }
            self.handle(i, m)?;
        }
        Ok(())
    }

    fn handle(&mut self, i: usize, m: FromWorker) -> Result<(), Error> {
        let w = &mut self.pool.workers[i];
        match m {
            FromWorker::Hello { .. } if w.hello => {
                w.give_up(format!("worker {} greeted twice", w.pid));
                Ok(())
            }
            FromWorker::Hello { pid, digest, init } => {
                w.check_hello(pid, digest, init).map_err(Error::Scheduler)
            }
            FromWorker::Log(r) => {
                let key = w
                    .in_flight
                    .iter()
                    .find(|f| f.seq == r.seq)
                    .and_then(|f| f.unit.jobs.get(r.task as usize))
                    .and_then(|j| self.keys.get(j.node as usize));
                super::logs::emit(w.pid, key, &r);
                Ok(())
            }
            FromWorker::Done(units) => {
                // Output before this message belongs to the units it reports; the worker marks
                // the spot in its stderr, so drain it before anything is blamed.
                w.drain_stderr();
                for u in units {
                    if !self.unit_done(i, u) {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Takes a unit's results; false (and the worker killed) when the worker answered a unit
    /// it was not running.
    fn unit_done(&mut self, i: usize, u: UnitDone) -> bool {
        let w = &mut self.pool.workers[i];
        if w.in_flight.front().is_none_or(|f| f.seq != u.seq) {
            let next = w.in_flight.front().map(|f| f.seq);
            w.give_up(format!(
                "worker {} answered unit {} while {next:?} was next",
                w.pid, u.seq
            ));
            return false;
        }
        let f = w.in_flight.pop_front().expect("checked above");
        // The next unit starts now at the earliest, once its message is all out.
        w.head_since = sys::monotonic_ns();
        w.head_unsent = !w.outbox.is_empty();
        w.head_grace = 0;
        if f.unit.suspect != Suspect::No {
            self.suspects -= 1;
        }
        w.tasks_done += u.results.len() as u64;
        for ino in u.retained {
            // A task kept a clone of this input: never recycle it while that worker lives.
            if forkgraph_worker::segments::ledger::pin(ino) {
                w.pins.push(ino);
            }
        }
        let ns = u.nanos as f64;
        w.avg_unit_ns = if w.avg_unit_ns <= 0.0 {
            ns.max(1.0)
        } else {
            0.8 * w.avg_unit_ns + 0.2 * ns.max(1.0)
        };
        let mut results = u.results.into_iter();
        let mut failed = false;
        for job in f.unit.jobs {
            let result = match results.next() {
                Some(Ok(Some(v))) => {
                    if self.cfg.segment_budget.is_some() {
                        let bytes = v.array_bytes() as f64;
                        let avg = self.pool.result_bytes.entry(job.spec.func).or_insert(bytes);
                        *avg = 0.5 * *avg + 0.5 * bytes;
                    }
                    Ok(Arc::new(v))
                }
                // Stayed in the worker; only the next link of its chain reads it.
                Some(Ok(None)) => Ok(Arc::clone(crate::engine::placeholder())),
                Some(Err(e)) => {
                    failed = true;
                    Err(Failure {
                        function: e.function,
                        kind: TaskErrorKind::Call(e.error),
                    })
                }
                None => Err(not_run(&job, failed)),
            };
            self.done.push(Done {
                node: job.node,
                result,
            });
        }
        true
    }

    /// When worker `i` must have answered its head unit, by the parent's clock: (deadline,
    /// unit seq, task index to blame, that task's timeout). See the module doc.
    fn deadline_of(&self, i: usize) -> Option<(u64, u64, u64, Duration)> {
        let w = &self.pool.workers[i];
        let head = w.in_flight.front()?;
        let timeout_of = |task: usize| {
            head.unit
                .jobs
                .get(task)
                .and_then(|j| j.options.timeout.or(self.cfg.task_timeout))
        };
        let now = sys::monotonic_ns();
        let hint = w.running().and_then(|(seq, task, started)| {
            let t = timeout_of(usize::try_from(task).ok()?)?;
            (seq == head.seq && started >= head.sent && started <= now)
                .then(|| (add(started, t), task, t))
        });
        let budget: Option<Duration> = (0..head.unit.jobs.len()).map(timeout_of).sum();
        let backstop = budget
            .filter(|_| !w.head_unsent)
            .map(|b| add(w.head_since, b + TIMEOUT_GRACE).saturating_add(w.head_grace));
        match (hint, backstop) {
            (Some((d, task, t)), Some(b)) => Some((d.min(b), head.seq, task, t)),
            (Some((d, task, t)), None) => Some((d, head.seq, task, t)),
            (None, Some(b)) => {
                let first = (0..head.unit.jobs.len()).find_map(|k| timeout_of(k).map(|t| (k, t)));
                first.map(|(k, t)| (b, head.seq, k as u64, t))
            }
            (None, None) => None,
        }
    }

    /// The earliest deadline of any worker's head unit.
    fn next_deadline(&self) -> Option<u64> {
        if !self.timeouts {
            return None;
        }
        (0..self.pool.workers.len())
            .filter(|&i| !self.pool.workers[i].dead)
            .filter_map(|i| self.deadline_of(i).map(|d| d.0))
            .min()
    }

    fn enforce_timeouts(&mut self) {
        if !self.timeouts {
            return;
        }
        let now = sys::monotonic_ns();
        for i in 0..self.pool.workers.len() {
            if self.pool.workers[i].dead {
                continue;
            }
            let Some((deadline, seq, task, t)) = self.deadline_of(i) else {
                continue;
            };
            if now >= deadline {
                let w = &mut self.pool.workers[i];
                w.kill();
                w.timed_out = Some((seq, task, t));
            }
        }
    }

    /// Handles every worker found dead: blame, retry or fail, replace.
    fn bury_dead(&mut self) -> Result<(), Error> {
        for i in 0..self.pool.workers.len() {
            if self.pool.workers[i].dead {
                self.bury(i)?;
            }
        }
        Ok(())
    }

    fn bury(&mut self, i: usize) -> Result<(), Error> {
        // Results it sent before dying count (read within a bound: a process it forked may
        // still hold its socket and write).
        let msgs = self.pool.workers[i].read_messages();
        self.handle_all(i, msgs)?;
        let w = &mut self.pool.workers[i];
        let timed_out = w.timed_out.take();
        let in_flight: Vec<InFlight> = w.in_flight.drain(..).collect();
        let pid = w.pid;
        // A new worker that dies in its worker_init would die again in every replacement.
        let in_init = !w.hello && pid > 0 && self.pool.has_init();
        let death = match self.pool.replace(i) {
            Ok(d) => d,
            Err(Replace::ServerGone(why)) => return self.server_gone(in_flight, why, pid),
            Err(Replace::Failed(e)) => {
                self.requeue(in_flight);
                return Err(Error::Scheduler(e));
            }
        };
        if in_init {
            self.requeue(in_flight);
            let died = self.describe_death(pid, death.exit, death.tail, death.note);
            return Err(Error::Scheduler(format!(
                "a new worker died in its worker_init: {died}"
            )));
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        if let Some((seq, task, t)) = timed_out {
            // The parent killed it, by its own clock: that unit ran out of time. (If its result
            // arrived meanwhile, it is no longer in flight, and everything runs again.)
            let mut culprit = None;
            let rest: Vec<InFlight> = in_flight
                .into_iter()
                .filter_map(|f| {
                    if f.seq == seq {
                        culprit = Some(f.unit);
                        None
                    } else {
                        Some(f)
                    }
                })
                .collect();
            self.requeue(rest);
            if let Some(unit) = culprit {
                let link = (task as usize).min(unit.jobs.len() - 1);
                let millis = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
                self.fail(unit, link, TaskErrorKind::TimedOut { millis });
            }
            return Ok(());
        }
        let hint = death
            .running
            .filter(|(seq, _, _)| in_flight.iter().any(|f| f.seq == *seq));
        let sure = in_flight.len() == 1
            && in_flight[0].fresh
            && (in_flight[0].unit.suspect != Suspect::No || hint.is_some());
        if sure {
            let unit = in_flight.into_iter().next().expect("one unit").unit;
            let link = hint.map_or(0, |h| (h.1 as usize).min(unit.jobs.len() - 1));
            let died = self.describe_death(pid, death.exit, death.tail, death.note);
            self.charge(unit, link, died);
            return Ok(());
        }
        // Not surely one unit's death: nobody is charged; the one the page names (or the
        // oldest) runs again alone.
        let named = hint.map_or(in_flight[0].seq, |h| h.0);
        self.suspect(in_flight, |f| f.seq == named, Suspect::Worker);
        Ok(())
    }

    /// The fork server died, or was killed for not answering, and every worker with it
    /// (`lost` are the units of the worker being buried). A unit is charged only if it was the
    /// only one in the pool and already a pool suspect; otherwise all of them become pool
    /// suspects and run one at a time.
    fn server_gone(
        &mut self,
        mut lost: Vec<InFlight>,
        why: String,
        mut pid: i32,
    ) -> Result<(), Error> {
        for w in &mut self.pool.workers {
            if !w.in_flight.is_empty() {
                pid = w.pid;
            }
            lost.extend(w.in_flight.drain(..));
        }
        lost.sort_by_key(|f| f.seq);
        if lost.len() == 1 && lost[0].unit.suspect == Suspect::Pool && lost[0].fresh {
            let unit = lost.pop().expect("one unit").unit;
            let note = format!("the pool's fork server died while this task ran: {why}");
            let died = self.describe_death(pid, None, String::new(), Some(note));
            self.charge(unit, 0, died);
        } else {
            self.suspect(lost, |_| true, Suspect::Pool);
        }
        self.pool.restart_server().map_err(Error::Scheduler)
    }

    /// Puts units back in front of the queue, in their order.
    fn requeue(&mut self, units: Vec<InFlight>) {
        for f in units.into_iter().rev() {
            self.pending.push_front(f.unit);
        }
    }

    /// Requeues `units`, making those `which` picks suspects of `kind` (or stricter).
    fn suspect(&mut self, units: Vec<InFlight>, which: impl Fn(&InFlight) -> bool, kind: Suspect) {
        for f in units.into_iter().rev() {
            let picked = which(&f);
            let mut unit = f.unit;
            if picked {
                if unit.suspect == Suspect::No {
                    self.suspects += 1;
                }
                if unit.suspect != Suspect::Pool {
                    unit.suspect = kind;
                }
            }
            self.pending.push_front(unit);
        }
    }

    /// A death surely caused by `unit` (at `link`): retry it (alone) or fail it.
    fn charge(&mut self, mut unit: PUnit, link: usize, died: TaskErrorKind) {
        unit.deaths += 1;
        let retries = unit.jobs[link].options.retries.unwrap_or(self.cfg.retries);
        if unit.deaths >= self.cfg.max_worker_deaths {
            let kind = TaskErrorKind::KilledWorkers {
                deaths: unit.deaths,
                last: died.to_string(),
            };
            self.fail(unit, link, kind);
        } else if unit.deaths <= retries {
            // It has killed a worker: it runs alone from now on, so its next death is sure.
            if unit.suspect == Suspect::No {
                unit.suspect = Suspect::Worker;
                self.suspects += 1;
            }
            self.pending.push_front(unit);
        } else {
            self.fail(unit, link, died);
        }
    }

    fn describe_death(
        &self,
        pid: i32,
        exit: Option<Exit>,
        tail: String,
        note: Option<String>,
    ) -> TaskErrorKind {
        let (signal, exit_code) = match exit {
            Some(Exit::Signal(s)) => (Some(s), None),
            Some(Exit::Code(c)) => (None, Some(c)),
            None => (None, None),
        };
        if let Some(limit) = self.cfg.limits.memory_bytes {
            let oom = tail
                .lines()
                .rev()
                .find(|l| l.contains("memory allocation of"));
            if let (Some(SIGABRT), Some(line)) = (signal, oom) {
                return TaskErrorKind::OutOfMemory {
                    limit,
                    detail: line.trim().to_owned(),
                };
            }
        }
        if let (Some(seconds), Some(SIGXCPU)) = (self.cfg.limits.cpu_seconds, signal) {
            return TaskErrorKind::CpuTimeExceeded { seconds };
        }
        let lines: Vec<&str> = tail.lines().collect();
        let mut stderr_tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        if let Some(note) = note {
            if !stderr_tail.is_empty() {
                stderr_tail.push('\n');
            }
            stderr_tail.push_str("[forkgraph] ");
            stderr_tail.push_str(&note);
        }
        TaskErrorKind::WorkerDied {
            pid,
            signal,
            exit_code,
            stderr_tail,
        }
    }

    /// Reports a unit as failed: the failing link first (so the engine names it), then the
    /// links that did not produce a result.
    fn fail(&mut self, unit: PUnit, link: usize, kind: TaskErrorKind) {
        if unit.suspect != Suspect::No {
            self.suspects -= 1;
        }
        let func = function_name(&unit.jobs[link]);
        self.done.push(Done {
            node: unit.jobs[link].node,
            result: Err(Failure {
                function: func,
                kind,
            }),
        });
        for (j, job) in unit.jobs.iter().enumerate() {
            if j != link {
                self.done.push(Done {
                    node: job.node,
                    result: Err(not_run(job, true)),
                });
            }
        }
    }

    fn interrupted(&mut self) -> Error {
        for w in &mut self.pool.workers {
            if !w.in_flight.is_empty() {
                w.kill();
            }
        }
        Error::Interrupted
    }

    fn wire_unit(&self, seq: u64, unit: &PUnit) -> Unit {
        Unit {
            seq,
            timed: self.timeouts
                && unit
                    .jobs
                    .iter()
                    .any(|j| j.options.timeout.or(self.cfg.task_timeout).is_some()),
            tasks: unit
                .jobs
                .iter()
                .map(|j| UnitTask {
                    spec: j.spec.clone(),
                    inputs: j
                        .inputs
                        .iter()
                        .enumerate()
                        .map(|(k, v)| {
                            if j.prev == Some(k as u32) {
                                Input::Prev
                            } else {
                                Input::Value(v.clone())
                            }
                        })
                        .collect(),
                    send_back: j.send_back,
                })
                .collect(),
        }
    }
}

const SIGABRT: i32 = 6;
const SIGXCPU: i32 = 24;

fn add(t: u64, d: Duration) -> u64 {
    t.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn function_name(job: &Job) -> String {
    Registry::global()
        .get(job.spec.func)
        .map_or_else(|| format!("#{}", job.spec.func), |f| f.name.to_owned())
}

fn not_run(job: &Job, after_failure: bool) -> Failure {
    Failure {
        function: function_name(job),
        kind: TaskErrorKind::Call(CallError::Failed(if after_failure {
            "not run: an earlier task of its chain failed".into()
        } else {
            "not run: its worker returned no result".into()
        })),
    }
}

impl Drop for ProcExec<'_> {
    /// Leaves the pool ready for the next `get`, however this one ended (an error, or a panic
    /// in a callback unwinding through the engine): workers that still run its units are
    /// replaced, so no stale result can reach a later `get`.
    fn drop(&mut self) {
        self.pending.clear();
        for i in 0..self.pool.workers.len() {
            let w = &mut self.pool.workers[i];
            w.drain_stderr();
            if !w.in_flight.is_empty() || w.dead {
                w.kill();
                w.in_flight.clear();
                if let Err(Replace::ServerGone(_)) = self.pool.replace(i) {
                    let _ = self.pool.restart_server();
                    break;
                }
            }
        }
        // This get's intermediates are released now: let their producers reuse them.
        self.send_frees();
        // Its workers' output reaches stderr before `get` returns (unless stderr is stuck).
        super::stderr::flush();
    }
}

impl Executor for ProcExec<'_> {
    fn slots(&self) -> usize {
        self.pool.workers.len() * MAX_DEPTH * 2
    }

    fn chains(&self) -> bool {
        true
    }

    fn submit(&mut self, job: Job) {
        self.timeouts |= job.options.timeout.is_some();
        self.submit_chain(vec![job]);
    }

    fn submit_chain(&mut self, jobs: Vec<Job>) {
        self.timeouts |= jobs.iter().any(|j| j.options.timeout.is_some());
        self.pending.push_back(PUnit {
            jobs,
            deaths: 0,
            suspect: Suspect::No,
        });
    }

    fn wait(&mut self, out: &mut Vec<Done>) -> Result<(), Error> {
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
