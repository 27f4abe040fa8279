//! What happens when a worker dies: read what it sent, reap it, blame (or not), retry, fail,
//! or restart the fork server.

use forkgraph_worker::host::{self, Exit, SpawnError};

use super::*;

/// Lines of the stderr tail shown in an error.
const TAIL_LINES: usize = 20;
/// How long a worker whose socket closed gets to exit on its own before it is reaped: it
/// usually does a moment later, after saying why on stderr, and then its exit status and last
/// words are its own rather than those of the parent's SIGKILL.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

impl Runner {
    /// Handles every worker found dead: blame, retry or fail, replace.
    pub(super) fn bury_dead(&mut self) -> Result<(), Error> {
        let now = host::now();
        for i in 0..self.pool.workers.len() {
            let w = &mut self.pool.workers[i];
            if !w.is_dead() {
                continue;
            }
            if !w.killed() && w.pid() > 0 && !w.exited() {
                // Its socket closed but it still runs: give it the grace (the poll loop wakes
                // on its pidfd or at the grace's end), without holding anything else up.
                let until = *w
                    .exit_grace_until
                    .get_or_insert_with(|| host::deadline_after(EXIT_GRACE));
                if now < until {
                    continue;
                }
            }
            self.bury(i)?;
        }
        Ok(())
    }

    pub(super) fn bury(&mut self, i: usize) -> Result<(), Error> {
        // Results it sent before dying count (read within a bound: a process it forked may
        // still hold its socket and write).
        let msgs = self.pool.workers[i].read_messages();
        self.handle_all(i, msgs)?;
        let w = &mut self.pool.workers[i];
        let timed_out = w.timed_out.take();
        let cancel_kill = std::mem::take(&mut w.cancel_kill);
        let in_flight: Vec<InFlight> = w.in_flight.drain(..).collect();
        let pid = w.pid();
        // A new worker that dies in its worker_init would die again in every replacement.
        let in_init = !w.greeted() && pid > 0 && self.pool.has_init();
        // Units of cancelled callers are dropped, whatever happened.
        let in_flight = self.drop_cancelled(in_flight);
        let death = match self.pool.replace(i) {
            Ok(d) => {
                tracing::debug!(
                    target: "forkgraph::pool",
                    worker = pid,
                    exit = ?d.exit,
                    units = in_flight.len(),
                    "worker died and was replaced"
                );
                d
            }
            Err(SpawnError::ServerGone(why)) => return self.server_gone(in_flight, why, pid),
            Err(SpawnError::Failed(e)) => {
                self.requeue(in_flight);
                return Err(Error::Scheduler(e));
            }
        };
        if in_init {
            self.requeue(in_flight);
            let died = self.describe_death(pid, death.exit, death.tail, death.note);
            return Err(Error::Scheduler(format!(
                "a new worker died in its worker_init, or did not finish it within the \
                 fork-server timeout ({} ms): {died}",
                self.cfg.server_timeout.as_millis()
            )));
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        if cancel_kill {
            // Killed because its running unit's caller was cancelled: the others run again,
            // and nobody is blamed.
            self.pool
                .explain_death(i, "killed by the pool: its task was cancelled".to_owned());
            self.requeue(in_flight);
            return Ok(());
        }
        // Where and when the unit that may be charged ran: from its progress page's start
        // (or its dispatch) to now.
        let ran_from = |since: u64| Ran {
            worker: WorkerId::Process { slot: i, pid },
            start: since,
            end: host::now(),
            started: true,
        };
        if let Some((seq, task, t)) = timed_out {
            self.pool.explain_death(
                i,
                format!("killed by the pool: a task ran past its timeout of {t:?}"),
            );
            // The parent killed it, by its own clock: that unit ran out of time. (If its result
            // arrived meanwhile, it is no longer in flight, and everything runs again.)
            let mut culprit = None;
            let rest: Vec<InFlight> = in_flight
                .into_iter()
                .filter_map(|f| {
                    if f.seq == seq {
                        culprit = Some((f.unit, f.sent));
                        None
                    } else {
                        Some(f)
                    }
                })
                .collect();
            self.requeue(rest);
            if let Some((unit, sent)) = culprit {
                let link = (task as usize).min(unit.jobs.len() - 1);
                let millis = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
                let since = page_start(death.running, seq).unwrap_or(sent);
                self.fail(
                    unit,
                    link,
                    TaskErrorKind::TimedOut { millis },
                    ran_from(since),
                );
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
            let f = in_flight.into_iter().next().expect("one unit");
            let since = page_start(hint, f.seq).unwrap_or(f.sent);
            let unit = f.unit;
            let link = hint.map_or(0, |h| (h.1 as usize).min(unit.jobs.len() - 1));
            let died = self.describe_death(pid, death.exit, death.tail, death.note);
            self.charge(unit, link, died, ran_from(since));
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
    pub(super) fn server_gone(
        &mut self,
        mut lost: Vec<InFlight>,
        why: String,
        mut pid: i32,
    ) -> Result<(), Error> {
        for w in &mut self.pool.workers {
            if !w.in_flight.is_empty() {
                pid = w.pid();
            }
            lost.extend(w.in_flight.drain(..));
        }
        let mut lost = self.drop_cancelled(lost);
        lost.sort_by_key(|f| f.seq);
        tracing::debug!(target: "forkgraph::pool", units = lost.len(), %why, "fork server gone");
        if lost.len() == 1 && lost[0].unit.suspect == Suspect::Pool && lost[0].fresh {
            let f = lost.pop().expect("one unit");
            let slot = self.pool.workers.iter().position(|w| w.pid() == pid);
            let ran = Ran {
                worker: WorkerId::Process {
                    slot: slot.unwrap_or(0),
                    pid,
                },
                start: f.sent,
                end: host::now(),
                started: true,
            };
            let note = format!("the pool's fork server died while this task ran: {why}");
            let died = self.describe_death(pid, None, String::new(), Some(note));
            self.charge(f.unit, 0, died, ran);
        } else {
            self.suspect(lost, |_| true, Suspect::Pool);
        }
        self.pool
            .restart_server()
            .map_err(crate::process::scheduler_error)
    }

    /// Drops the units of cancelled callers.
    fn drop_cancelled(&mut self, units: Vec<InFlight>) -> Vec<InFlight> {
        if self.cancelled.is_empty() {
            return units;
        }
        let (gone, kept): (Vec<InFlight>, Vec<InFlight>) = units
            .into_iter()
            .partition(|f| self.cancelled.contains(&f.unit.caller));
        for f in gone {
            if f.unit.suspect != Suspect::No {
                self.suspects -= 1;
            }
        }
        kept
    }

    /// Puts units back in front of their callers' queues, in their order.
    pub(super) fn requeue(&mut self, units: Vec<InFlight>) {
        let units = self.drop_cancelled(units);
        for f in units.into_iter().rev() {
            self.pending.push_front(f.unit);
        }
    }

    /// Requeues `units`, making those `which` picks suspects of `kind` (or stricter).
    pub(super) fn suspect(
        &mut self,
        units: Vec<InFlight>,
        which: impl Fn(&InFlight) -> bool,
        kind: Suspect,
    ) {
        let units = self.drop_cancelled(units);
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
    pub(super) fn charge(&mut self, mut unit: PUnit, link: usize, died: TaskErrorKind, ran: Ran) {
        unit.deaths += 1;
        let retries = unit.jobs[link].options.retries.unwrap_or(self.cfg.retries);
        if unit.deaths >= self.cfg.max_worker_deaths {
            let kind = TaskErrorKind::KilledWorkers {
                deaths: unit.deaths,
                last: died.to_string(),
            };
            self.fail(unit, link, kind, ran);
        } else if unit.deaths <= retries {
            // It has killed a worker: it runs alone from now on, so its next death is sure.
            if unit.suspect == Suspect::No {
                unit.suspect = Suspect::Worker;
                self.suspects += 1;
            }
            self.pending.push_front(unit);
        } else {
            self.fail(unit, link, died, ran);
        }
    }

    pub(super) fn describe_death(
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
            // 9, SIGKILL: a sandboxed worker's memory cgroup was full (the fork server wrote the
            // line after the kernel's OOM kill).
            if let (Some(SIGABRT | 9), Some(line)) = (signal, oom) {
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
    /// links that did not produce a result. `ran` is where and when the failing link ran.
    pub(super) fn fail(&mut self, unit: PUnit, link: usize, kind: TaskErrorKind, ran: Ran) {
        if unit.suspect != Suspect::No {
            self.suspects -= 1;
        }
        let func = function_name(&unit.jobs[link]);
        self.done.push(Finished {
            caller: unit.caller,
            tag: unit.jobs[link].tag,
            result: Err(TaskFailed {
                function: func,
                kind,
            }),
            ran,
        });
        let not_started = Ran {
            start: ran.end,
            started: false,
            ..ran
        };
        for (j, job) in unit.jobs.iter().enumerate() {
            if j != link {
                self.done.push(Finished {
                    caller: unit.caller,
                    tag: job.tag,
                    result: Err(not_run(job, true)),
                    ran: not_started,
                });
            }
        }
    }

    pub(super) fn interrupted(&mut self) -> Error {
        for w in &mut self.pool.workers {
            if !w.in_flight.is_empty() {
                w.kill();
            }
        }
        Error::Interrupted
    }
}

/// The start of unit `seq`'s running task by its progress page, when the page names it.
fn page_start(running: Option<(u64, u64, u64)>, seq: u64) -> Option<u64> {
    running.filter(|r| r.0 == seq && r.2 > 0).map(|r| r.2)
}
