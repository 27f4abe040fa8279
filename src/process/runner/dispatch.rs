//! Handing pending units to workers: depth, backpressure (segment budget, open files),
//! suspects on fresh workers, recycling workers, and telling producers which segments are free.

use forkgraph_worker::host::{self, SpawnError};
use forkgraph_worker::proto::{Input, ToWorker, Unit, UnitTask};
use forkgraph_worker::segments;

use super::*;

impl Runner {
    pub(super) fn depth(&self, i: usize) -> usize {
        let w = &self.pool.workers[i];
        let adaptive = if w.avg_unit_ns <= 0.0 {
            START_DEPTH
        } else {
            ((QUEUE_NANOS / w.avg_unit_ns) as usize).clamp(2, MAX_DEPTH)
        };
        self.cfg.max_queue.map_or(adaptive, |m| adaptive.min(m))
    }

    /// Tells producers which of their segments nobody maps any more.
    pub(super) fn send_frees(&mut self) {
        let workers = &self.pool.workers;
        let freed = forkgraph_worker::segments::ledger::take_freed(|pid| {
            pid > 0 && workers.iter().any(|w| w.pid() == pid)
        });
        if freed.is_empty() {
            return;
        }
        tracing::trace!(target: "forkgraph::pool", segments = freed.len(), "segments freed");
        for w in &mut self.pool.workers {
            let inodes: Vec<u64> = freed
                .iter()
                .filter(|(pid, _)| *pid == w.pid() && w.pid() > 0)
                .map(|(_, ino)| *ino)
                .collect();
            if !inodes.is_empty() && !w.is_dead() {
                let _ = w.queue(&ToWorker::Free(inodes), None);
                w.send_queued();
            }
        }
    }

    /// Whether worker `i` can take another unit now (suspects aside).
    pub(super) fn has_room(&self, i: usize, queued: usize) -> bool {
        let w = &self.pool.workers[i];
        self.ready(w)
            && w.in_flight.len() < self.depth(i)
            && queued < UNITS_PER_MESSAGE
            && (self.suspects == 0
                || w.in_flight
                    .front()
                    .is_none_or(|f| f.unit.suspect == Suspect::No))
    }

    /// Whether a worker can be given units: alive and, when the pool has a `worker_init`, done
    /// with it (its time must not count against a task's timeout).
    pub(super) fn ready(&self, w: &Slot) -> bool {
        !w.is_dead() && (w.greeted() || !self.pool.has_init())
    }

    /// Hands pending units to workers with room, least loaded first; suspects only to a worker
    /// (or a pool) with nothing else to do.
    pub(super) fn dispatch(&mut self) -> Result<(), Error> {
        self.bury_dead()?;
        self.forget_cancelled();
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
            let front = self.pending.front().expect("pending unit");
            if let Some(budget) = budget {
                // Start a unit only if what is held, what runs and what it will add fit the
                // budget; a unit of unknown size only when nothing else runs. With nothing
                // running, start one anyway: the graph must progress.
                let held = segments::stats().1 as f64;
                let fits = match committed.zip(self.expected_bytes(front)) {
                    Some((c, e)) => held + c + e <= budget as f64,
                    None => false,
                };
                if busy && !fits {
                    break;
                }
            }
            let suspect = front.suspect;
            let fresh_idle =
                |w: &Slot| self.ready(w) && w.in_flight.is_empty() && w.tasks_done == 0;
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
            let now = host::now();
            let all_fresh =
                suspect != Suspect::Pool || self.pool.workers.iter().all(|w| w.tasks_done == 0);
            let w = &mut self.pool.workers[i];
            let fresh = all_fresh && w.tasks_done == 0 && w.in_flight.is_empty();
            if w.in_flight.is_empty() {
                // Timed from when its message is all written (see `Slot::send_queued`).
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
            tracing::trace!(
                target: "forkgraph::pool",
                worker = w.pid(),
                units = units.len(),
                "units sent"
            );
            let bytes = w
                .queue(&ToWorker::Run(units), threshold)
                .map_err(|e| Error::Scheduler(format!("cannot encode tasks: {e}")))?;
            if head_here {
                // Time for the worker to decode the message: 1 ns a byte (1 GB/s).
                w.head_grace = bytes as u64;
            }
            w.send_queued();
        }
        self.bury_dead()
    }

    /// A suspect runs on a worker that has run nothing before (for a pool suspect, with every
    /// worker so): when the next unit is one and no idle worker is fresh, idle workers are
    /// replaced.
    pub(super) fn refresh_for_suspect(&mut self) -> Result<(), Error> {
        if self.suspects == 0 {
            return Ok(());
        }
        let Some(front) = self.pending.front() else {
            return Ok(());
        };
        let workers = &self.pool.workers;
        let idle = |w: &Slot| !w.is_dead() && w.in_flight.is_empty();
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
                Err(SpawnError::ServerGone(why)) => return self.server_gone(Vec::new(), why, 0),
                Err(SpawnError::Failed(e)) => return Err(Error::Scheduler(e)),
            }
        }
        Ok(())
    }

    /// Whether `units` units in flight, each bringing up to `per_unit` segments, still leave
    /// this process below its open-file limit. When they would not, the soft limit is raised
    /// towards the hard limit first: only then, and never lowered.
    pub(super) fn fds_fit(&mut self, units: usize, per_unit: usize) -> bool {
        let held = segments::stats().0 as usize;
        let reserve = FD_RESERVE + FDS_PER_WORKER * self.pool.workers.len();
        let need = held
            .saturating_add(units.saturating_mul(per_unit))
            .saturating_add(reserve);
        if need > self.fd_limit {
            let raised = host::raise_open_file_limit(need as u64);
            self.fd_limit = usize::try_from(raised).unwrap_or(usize::MAX);
        }
        need <= self.fd_limit
    }

    pub(super) fn fd_exhausted(&self) -> Error {
        Error::Scheduler(format!(
            "results held in shared segments need more open files than this process may have: \
             {} segments are held and the open-file limit (RLIMIT_NOFILE) is {}; raise it \
             (ulimit -n) or the pool's segment_threshold, so that fewer results travel as \
             segments",
            segments::stats().0,
            self.fd_limit
        ))
    }

    /// Bytes of shared segments a unit is expected to return (`None`: not known yet).
    pub(super) fn expected_bytes(&self, unit: &PUnit) -> Option<f64> {
        // Only results that come back to the parent occupy its segments.
        unit.jobs
            .iter()
            .filter(|j| j.send_back)
            .map(|j| self.pool.result_bytes.get(&j.spec.func()).copied())
            .sum()
    }

    /// Bytes the units in flight are expected to return (`None`: some are unknown).
    pub(super) fn in_flight_bytes(&self) -> Option<f64> {
        self.pool
            .workers
            .iter()
            .flat_map(|w| w.in_flight.iter())
            .map(|f| self.expected_bytes(&f.unit))
            .sum()
    }

    /// Replaces idle workers that have run `max_tasks_per_worker` tasks.
    pub(super) fn recycle(&mut self) -> Result<(), Error> {
        let Some(max) = self.cfg.max_tasks_per_worker else {
            return Ok(());
        };
        for i in 0..self.pool.workers.len() {
            let w = &self.pool.workers[i];
            if w.tasks_done >= max && w.in_flight.is_empty() && !w.is_dead() {
                match self.pool.replace(i) {
                    Ok(_) => {}
                    Err(SpawnError::ServerGone(why)) => {
                        return self.server_gone(Vec::new(), why, 0)
                    }
                    Err(SpawnError::Failed(e)) => return Err(Error::Scheduler(e)),
                }
            }
        }
        Ok(())
    }

    pub(super) fn wire_unit(&self, seq: u64, unit: &PUnit) -> Unit {
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
