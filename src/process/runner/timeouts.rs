//! Deadlines, by the parent's own clock (see the module doc of [`super`]).

use std::time::Duration;

use forkgraph_worker::host;

use super::*;

impl Runner {
    /// When worker `i` must have answered its head unit, by the parent's clock: (deadline,
    /// unit seq, task index to blame, that task's timeout). See the module doc.
    pub(super) fn deadline_of(&self, i: usize) -> Option<(u64, u64, u64, Duration)> {
        let w = &self.pool.workers[i];
        let head = w.in_flight.front()?;
        let timeout_of = |task: usize| {
            head.unit
                .jobs
                .get(task)
                .and_then(|j| j.options.timeout.or(self.cfg.task_timeout))
        };
        let now = host::now();
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

    /// The earliest moment the poll loop must wake: a head unit's deadline, a new worker's
    /// `worker_init` deadline, or the end of a closing worker's grace.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let heads = (0..self.pool.workers.len())
            .filter(|&i| self.timeouts && !self.pool.workers[i].is_dead())
            .filter_map(|i| self.deadline_of(i).map(|d| d.0));
        let others = self.pool.workers.iter().filter_map(|w| {
            if w.is_dead() {
                w.exit_grace_until
            } else {
                self.init_deadline(w)
            }
        });
        heads.chain(others).min()
    }

    /// When a worker still in its `worker_init` must have finished it.
    fn init_deadline(&self, w: &Slot) -> Option<u64> {
        (self.pool.has_init() && !w.greeted()).then(|| add(w.spawned_at, self.cfg.server_timeout))
    }

    pub(super) fn enforce_timeouts(&mut self) {
        let now = host::now();
        for i in 0..self.pool.workers.len() {
            let w = &self.pool.workers[i];
            if !w.is_dead() && self.init_deadline(w).is_some_and(|d| now >= d) {
                // A worker_init that does not finish is the pool's failure (see `bury`).
                self.pool.workers[i].kill();
            }
        }
        if !self.timeouts {
            return;
        }
        for i in 0..self.pool.workers.len() {
            if self.pool.workers[i].is_dead() {
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
}
