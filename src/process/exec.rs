//! The executor of one `get` on a process pool: hands units to workers, collects results,
//! enforces timeouts, and turns worker deaths into retries or precise errors.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use forkgraph_worker::proto::{FromWorker, Input, ToWorker, Unit, UnitDone, UnitTask};
use forkgraph_worker::sys::{self, interrupt, Exit};
use forkgraph_worker::{CallError, Registry};

use super::proc::{Replace, TAIL_LINES};
use super::{Config, Pool};
use crate::engine::{Done, Executor, Failure, Job};
use crate::error::{Error, TaskErrorKind};

/// Most units in one message to a worker.
const UNITS_PER_MESSAGE: usize = 64;
/// Units queued per worker before its speed is known.
const START_DEPTH: usize = 4;
/// Most units queued per worker.
const MAX_DEPTH: usize = 64;
/// A worker's queue holds about this much work.
const QUEUE_NANOS: f64 = 2_000_000.0;

/// A unit of work: one job or a chain, and what it has cost so far.
pub(crate) struct PUnit {
    jobs: Vec<Job>,
    /// Workers this unit has killed.
    deaths: u32,
}

/// A unit sent to a worker.
pub(crate) struct InFlight {
    seq: u64,
    unit: PUnit,
}

pub(crate) struct ProcExec<'a> {
    pool: &'a mut Pool,
    cfg: &'a Config,
    pending: VecDeque<PUnit>,
    done: Vec<Done>,
    interrupt: Option<interrupt::Armed>,
    /// Whether any task of this get has a timeout (else no deadline bookkeeping at all).
    timeouts: bool,
}

impl<'a> ProcExec<'a> {
    pub(crate) fn new(pool: &'a mut Pool, cfg: &'a Config) -> ProcExec<'a> {
        let interrupt = if cfg.handle_interrupt {
            interrupt::arm()
        } else {
            None
        };
        for w in &mut pool.workers {
            w.drain_stderr();
        }
        ProcExec {
            pool,
            cfg,
            pending: VecDeque::new(),
            done: Vec::new(),
            interrupt,
            timeouts: cfg.task_timeout.is_some(),
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
        let freed = forkgraph_worker::wire::take_freed(|pid| {
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

    /// Hands pending units to workers with room, least loaded first.
    fn dispatch(&mut self) -> Result<(), Error> {
        self.recycle()?;
        self.send_frees();
        let n = self.pool.workers.len();
        let mut batches: Vec<Vec<Unit>> = (0..n).map(|_| Vec::new()).collect();
        let mut busy = self.pool.workers.iter().any(|w| !w.in_flight.is_empty());
        // Expected bytes of what runs, kept only when there is a budget (off the hot path).
        let budget = self.cfg.segment_budget;
        let mut committed = if budget.is_some() {
            self.in_flight_bytes()
        } else {
            None
        };
        while !self.pending.is_empty() {
            if let Some(budget) = budget {
                // Start a unit only if what is held, what runs and what it will add fit the
                // budget; a unit of unknown size only when nothing else runs. With nothing
                // running, start one anyway: the graph must progress.
                let held = sys::segment_stats().1 as f64;
                let fits = match committed.zip(self.expected_bytes(&self.pending[0])) {
                    Some((c, e)) => held + c + e <= budget as f64,
                    None => false,
                };
                if busy && !fits {
                    break;
                }
            }
            let best = (0..n)
                .filter(|&i| {
                    let w = &self.pool.workers[i];
                    !w.dead
                        && w.in_flight.len() < self.depth(i)
                        && batches[i].len() < UNITS_PER_MESSAGE
                })
                .min_by_key(|&i| self.pool.workers[i].in_flight.len());
            let Some(i) = best else { break };
            let unit = self.pending.pop_front().expect("pending unit");
            if budget.is_some() {
                committed = committed
                    .zip(self.expected_bytes(&unit))
                    .map(|(c, e)| c + e);
            }
            let seq = self.pool.next_seq;
            self.pool.next_seq += 1;
            batches[i].push(wire_unit(seq, &unit));
            self.pool.workers[i]
                .in_flight
                .push_back(InFlight { seq, unit });
            busy = true;
        }
        for (i, units) in batches.into_iter().enumerate() {
            if units.is_empty() {
                continue;
            }
            let w = &mut self.pool.workers[i];
            let threshold = self.cfg.limits.segment_threshold.map(|t| t as usize);
            w.outbox
                .push_shared(&ToWorker::Run(units), threshold)
                .map_err(|e| Error::Scheduler(format!("cannot encode tasks: {e}")))?;
            w.flush();
        }
        self.bury_dead()
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
                    Err(Replace::ServerGone) => {
                        return self.pool.restart_server().map_err(Error::Scheduler)
                    }
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
        // Where each worker's socket and stderr pipe sit in the poll set.
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
                for m in msgs {
                    self.handle(i, m)?;
                }
            }
        }
        self.enforce_timeouts();
        self.bury_dead()
    }

    fn handle(&mut self, i: usize, m: FromWorker) -> Result<(), Error> {
        match m {
            FromWorker::Hello { pid, digest } => self.pool.workers[i]
                .check_hello(pid, digest)
                .map_err(Error::Scheduler),
            FromWorker::Done(units) => {
                for u in units {
                    self.unit_done(i, u)?;
                }
                Ok(())
            }
        }
    }

    fn unit_done(&mut self, i: usize, u: UnitDone) -> Result<(), Error> {
        let w = &mut self.pool.workers[i];
        let Some(f) = w.in_flight.pop_front() else {
            return Err(Error::Scheduler(format!(
                "worker {} answered a unit it was not given",
                w.pid
            )));
        };
        if f.seq != u.seq {
            return Err(Error::Scheduler(format!(
                "worker {} answered unit {} while {} was next",
                w.pid, u.seq, f.seq
            )));
        }
        w.tasks_done += u.results.len() as u64;
        for ino in u.retained {
            // A task kept a clone of this input: never recycle it while that worker lives.
            if forkgraph_worker::wire::pin(ino) {
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
        Ok(())
    }

    /// The earliest moment a task in flight can exceed its timeout: for the running task, its
    /// start plus its timeout; for tasks not started yet, `now + timeout` bounds it (the parent
    /// wakes then and looks again).
    fn next_deadline(&self) -> Option<u64> {
        if !self.timeouts {
            return None;
        }
        let now = sys::monotonic_ns();
        let mut best: Option<u64> = None;
        for w in &self.pool.workers {
            let running = w.running();
            for f in &w.in_flight {
                for task in 0..f.unit.jobs.len() as u64 {
                    let Some(t) = task_timeout(self.cfg, f, task) else {
                        continue;
                    };
                    let d = match running {
                        Some((seq, i, started)) if seq == f.seq && i == task => add(started, t),
                        _ => add(now, t),
                    };
                    best = Some(best.map_or(d, |b| b.min(d)));
                }
            }
        }
        best
    }

    fn enforce_timeouts(&mut self) {
        if !self.timeouts {
            return;
        }
        let now = sys::monotonic_ns();
        for w in &mut self.pool.workers {
            if w.dead {
                continue;
            }
            let Some((seq, task, started)) = w.running() else {
                continue;
            };
            let Some(f) = w.in_flight.iter().find(|f| f.seq == seq) else {
                continue;
            };
            let Some(t) = task_timeout(self.cfg, f, task) else {
                continue;
            };
            if now >= add(started, t) {
                sys::kill_hard(w.pid);
                w.timed_out = Some((seq, task, t));
                w.dead = true;
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
        // Results it sent before dying count.
        let msgs = self.pool.workers[i].read_messages();
        for m in msgs {
            self.handle(i, m)?;
        }
        let w = &mut self.pool.workers[i];
        let timed_out = w.timed_out.take();
        let in_flight: Vec<InFlight> = w.in_flight.drain(..).collect();
        let pid = w.pid;
        let death = match self.pool.replace(i) {
            Ok(d) => d,
            Err(Replace::ServerGone) => {
                // The fork server died (killed from outside) and its workers with it: nobody
                // is to blame; run everything again on a new server.
                for f in in_flight.into_iter().rev() {
                    self.pending.push_front(f.unit);
                }
                for w in &mut self.pool.workers {
                    for f in w.in_flight.drain(..).rev() {
                        self.pending.push_front(f.unit);
                    }
                }
                return self.pool.restart_server().map_err(Error::Scheduler);
            }
            Err(Replace::Failed(e)) => {
                for f in in_flight.into_iter().rev() {
                    self.pending.push_front(f.unit);
                }
                return Err(Error::Scheduler(e));
            }
        };
        if in_flight.is_empty() {
            return Ok(());
        }
        // The page, read after the reap, names the unit and task it was running: that one is
        // the culprit and the others go back to the queue in order. If it names none (it died
        // between units: decoding its input, encoding a result), the oldest unit it had is
        // blamed, so that a unit that kills every worker still ends in an error.
        let blamed = match death.running {
            Some((seq, task, _)) if in_flight.iter().any(|f| f.seq == seq) => (seq, task),
            _ => (in_flight[0].seq, 0),
        };
        let mut culprit = None;
        for f in in_flight.into_iter().rev() {
            if f.seq == blamed.0 {
                culprit = Some(f.unit);
            } else {
                self.pending.push_front(f.unit);
            }
        }
        let Some(mut unit) = culprit else {
            return Ok(());
        };
        let (seq, link) = (blamed.0, (blamed.1 as usize).min(unit.jobs.len() - 1));
        if let Some((s, t, d)) = timed_out {
            if s == seq && t as usize == link {
                let kind = TaskErrorKind::TimedOut {
                    millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                };
                self.fail(unit, link, kind);
            } else {
                // It finished that task before the kill landed: not this unit's fault.
                self.pending.push_front(unit);
            }
            return Ok(());
        }
        unit.deaths += 1;
        let died = self.describe_death(pid, death.exit, death.tail);
        let retries = unit.jobs[link].options.retries.unwrap_or(self.cfg.retries);
        if unit.deaths >= self.cfg.max_worker_deaths {
            let kind = TaskErrorKind::KilledWorkers {
                deaths: unit.deaths,
                last: died.to_string(),
            };
            self.fail(unit, link, kind);
        } else if unit.deaths <= retries {
            self.pending.push_front(unit);
        } else {
            self.fail(unit, link, died);
        }
        Ok(())
    }

    fn describe_death(&self, pid: i32, exit: Option<Exit>, tail: String) -> TaskErrorKind {
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
        TaskErrorKind::WorkerDied {
            pid,
            signal,
            exit_code,
            stderr_tail: lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n"),
        }
    }

    /// Reports a unit as failed: the failing link first (so the engine names it), then the
    /// links that did not produce a result.
    fn fail(&mut self, unit: PUnit, link: usize, kind: TaskErrorKind) {
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
                sys::kill_hard(w.pid);
                w.dead = true;
            }
        }
        Error::Interrupted
    }
}

const SIGABRT: i32 = 6;
const SIGXCPU: i32 = 24;

fn add(t: u64, d: Duration) -> u64 {
    t.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn task_timeout(cfg: &Config, f: &InFlight, task: u64) -> Option<Duration> {
    let job = f.unit.jobs.get(task as usize)?;
    job.options.timeout.or(cfg.task_timeout)
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

fn wire_unit(seq: u64, unit: &PUnit) -> Unit {
    Unit {
        seq,
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
                sys::kill_hard(w.pid);
                w.in_flight.clear();
                if let Err(Replace::ServerGone) = self.pool.replace(i) {
                    let _ = self.pool.restart_server();
                    return;
                }
            }
        }
        // This get's intermediates are released now: let their producers reuse them.
        self.send_frees();
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
        self.pending.push_back(PUnit {
            jobs: vec![job],
            deaths: 0,
        });
    }

    fn submit_chain(&mut self, jobs: Vec<Job>) {
        self.timeouts |= jobs.iter().any(|j| j.options.timeout.is_some());
        self.pending.push_back(PUnit { jobs, deaths: 0 });
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
