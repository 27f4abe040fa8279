//! Waiting for workers and taking what they send: results, log records, deaths.

use std::time::Duration;

use forkgraph_worker::host::{self, Received, WorkerHandle};
use forkgraph_worker::proto::{FromWorker, UnitDone};

use super::*;

impl Runner {
    /// Waits for something to happen (results, deaths, timeouts, Ctrl-C) and handles it.
    pub(super) fn pump(&mut self, wake: Option<&host::Wake>) -> Result<(), Error> {
        let deadline = self.next_deadline();
        let now = host::now();
        let timeout = deadline.map(|d| Duration::from_nanos(d.saturating_sub(now)));
        let handles: Vec<&WorkerHandle> = self.pool.workers.iter().map(|w| &w.handle).collect();
        self.poll
            .wait_woken(&handles, self.interrupt.as_ref(), wake, timeout)
            .map_err(|e| Error::system("poll", e))?;
        if self.poll.ctrl_c() {
            return Err(self.interrupted());
        }
        for i in 0..self.pool.workers.len() {
            let ready = self.poll.worker(i);
            if ready.stderr {
                self.pool.workers[i].drain_stderr();
            }
            if ready.writable {
                self.pool.workers[i].send_queued();
            }
            if ready.readable {
                let msgs = self.pool.workers[i].read_messages();
                self.handle_all(i, msgs)?;
            }
            if ready.exited {
                // The process ended (whatever holds its socket open).
                self.pool.workers[i].mark_dead();
            }
        }
        self.enforce_timeouts();
        self.bury_dead()
    }

    pub(super) fn handle_all(&mut self, i: usize, msgs: Vec<Received>) -> Result<(), Error> {
        for r in msgs {
            let w = &mut self.pool.workers[i];
            if w.broken() {
                break; // It broke the protocol: nothing more it says counts.
            }
            if let FromWorker::Done(units) = &r.msg {
                // Each segment the results brought is an fd held here.
                let per = r.segments.div_ceil(units.len().max(1));
                w.fds_per_unit = w.fds_per_unit.max(per);
            }
            self.handle(i, r.msg)?;
        }
        Ok(())
    }

    pub(super) fn handle(&mut self, i: usize, m: FromWorker) -> Result<(), Error> {
        let w = &mut self.pool.workers[i];
        match m {
            FromWorker::Hello { .. } if w.greeted() => {
                let why = format!("worker {} greeted twice", w.pid());
                w.give_up(why);
                Ok(())
            }
            FromWorker::Hello { pid, digest, init } => {
                w.check_hello(pid, digest, init).map_err(Error::Scheduler)
            }
            FromWorker::Log(r) => {
                let key = w.in_flight.iter().find(|f| f.seq == r.seq).and_then(|f| {
                    let j = f.unit.jobs.get(r.task as usize)?;
                    f.unit.labels.label(j.tag)
                });
                crate::process::logs::emit(w.pid(), key, &r);
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
    pub(super) fn unit_done(&mut self, i: usize, u: UnitDone) -> bool {
        let w = &mut self.pool.workers[i];
        if w.in_flight.front().is_none_or(|f| f.seq != u.seq) {
            let next = w.in_flight.front().map(|f| f.seq);
            let why = format!(
                "worker {} answered unit {} while {next:?} was next",
                w.pid(),
                u.seq
            );
            w.give_up(why);
            return false;
        }
        let skipped = u.results.is_empty();
        if skipped && !self.cancelled.contains(&w.in_flight[0].unit.caller) {
            // Only the parent cancels: the skip list in the page was written by task code.
            let why = format!(
                "worker {} skipped unit {} that was not cancelled (a task wrote its progress \
                 page)",
                w.pid(),
                u.seq
            );
            w.give_up(why);
            return false;
        }
        let f = w.in_flight.pop_front().expect("checked above");
        let caller = f.unit.caller;
        tracing::trace!(
            target: "forkgraph::pool",
            worker = w.pid(),
            unit = u.seq,
            nanos = u.nanos,
            "unit done"
        );
        // The next unit starts now at the earliest, once its message is all out.
        w.head_since = host::now();
        w.head_unsent = w.has_unsent();
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
        w.avg_unit_ns = if skipped {
            w.avg_unit_ns // Skipped (cancelled): says nothing of its speed.
        } else if w.avg_unit_ns <= 0.0 {
            ns.max(1.0)
        } else {
            0.8 * w.avg_unit_ns + 0.2 * ns.max(1.0)
        };
        let worker = WorkerId::Process {
            slot: i,
            pid: w.pid(),
        };
        // Task k ran from the end of task k-1 (or the unit's start) to its own end, as the
        // worker measured them; diagnostics only, so a lying worker only lies to a profiler.
        let (start, ends, nanos) = (u.start, u.ends, u.nanos);
        let at = |k: usize| start.saturating_add(ends.get(k).copied().unwrap_or(nanos));
        let mut results = u.results.into_iter();
        let mut failed = false;
        for (k, job) in f.unit.jobs.into_iter().enumerate() {
            let mut ran = Ran {
                worker,
                start: if k == 0 { start } else { at(k - 1) },
                end: at(k),
                started: true,
            };
            let result = match results.next() {
                Some(Ok(Some(v))) => {
                    if self.cfg.segment_budget.is_some() {
                        let bytes = v.array_bytes() as f64;
                        let avg = self
                            .pool
                            .result_bytes
                            .entry(job.spec.func())
                            .or_insert(bytes);
                        *avg = 0.5 * *avg + 0.5 * bytes;
                    }
                    Ok(Arc::new(v))
                }
                // Stayed in the worker; only the next link of its chain reads it.
                Some(Ok(None)) => Ok(Arc::clone(crate::engine::placeholder())),
                Some(Err(e)) => {
                    failed = true;
                    Err(TaskFailed {
                        function: e.function,
                        kind: TaskErrorKind::Call(e.error),
                    })
                }
                None => {
                    let last = at(usize::MAX);
                    (ran.start, ran.end, ran.started) = (last, last, false);
                    Err(not_run(&job, failed))
                }
            };
            self.done.push(Finished {
                caller,
                tag: job.tag,
                result,
                ran,
            });
        }
        true
    }
}
