//! Deadlines, by the parent's own clock (see the module doc of [`super`]).

use std::time::Duration;

use forkgraph_worker::host;

use super::*;

impl Runner<'_> {
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

    /// The earliest deadline of any worker's head unit.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        if !self.timeouts {
            return None;
        }
        (0..self.pool.workers.len())
            .filter(|&i| !self.pool.workers[i].is_dead())
            .filter_map(|i| self.deadline_of(i).map(|d| d.0))
            .min()
    }

    pub(super) fn enforce_timeouts(&mut self) {
        if !self.timeouts {
            return;
        }
        let now = host::now();
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
