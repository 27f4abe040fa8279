//! The process pool's executor for the engine: a thin adapter from engine jobs to the unit
//! runner's units (through the pool's shared state, see `super::shared`), and from finished
//! tasks back to engine results.

use std::sync::Arc;

use crate::callbacks::{WorkerEvent, WorkerId};
use crate::engine::{Done, Executor, Failure, Job};
use crate::error::Error;

use super::runner::{Finished, Labels, PUnit, RunTask};
use super::shared::Shared;

/// The executor of one `get` on a process pool: one caller of the shared pool.
pub(crate) struct ProcExec {
    shared: Arc<Shared>,
    caller: u64,
    labels: Arc<dyn Labels>,
    /// Units not yet handed over (handed over in one go before waiting).
    staged: Vec<PUnit>,
    finished: Vec<Finished>,
    slots: usize,
    parallelism: usize,
    workers: Vec<WorkerId>,
    watched: bool,
}

impl ProcExec {
    /// An executor on the pool; `labels` name the tasks (by node) in what they log;
    /// `watched`: whether callbacks want worker lifecycle events.
    pub(crate) fn new(shared: &Arc<Shared>, labels: Arc<dyn Labels>, watched: bool) -> ProcExec {
        let caller = shared.register(false);
        ProcExec::with_caller(shared, caller, labels, watched)
    }

    /// An executor for a caller already registered (whose drop it then owns).
    pub(crate) fn with_caller(
        shared: &Arc<Shared>,
        caller: u64,
        labels: Arc<dyn Labels>,
        watched: bool,
    ) -> ProcExec {
        let (slots, parallelism, workers) = shared.layout(watched);
        ProcExec {
            shared: Arc::clone(shared),
            caller,
            labels,
            staged: Vec::new(),
            finished: Vec::new(),
            slots,
            parallelism,
            workers,
            watched,
        }
    }

    fn unit(&self, tasks: Vec<RunTask>) -> PUnit {
        PUnit::new(self.caller, Arc::clone(&self.labels), tasks)
    }
}

impl Drop for ProcExec {
    fn drop(&mut self) {
        self.shared.leave(self.caller);
    }
}

fn task(job: Job) -> RunTask {
    RunTask {
        spec: job.spec,
        inputs: job.inputs.into_vec(),
        prev: job.prev,
        send_back: job.send_back,
        options: job.options,
        tag: job.node,
    }
}

/// A finished task as the engine takes it.
pub(crate) fn done(f: Finished) -> Done {
    Done {
        node: f.tag,
        result: f.result.map_err(|e| {
            Box::new(Failure {
                function: e.function,
                kind: e.kind,
            })
        }),
        ran: f.ran,
    }
}

impl Executor for ProcExec {
    fn slots(&self) -> usize {
        self.slots
    }

    fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn chains(&self) -> bool {
        true
    }

    fn submit(&mut self, job: Job) {
        let u = self.unit(vec![task(job)]);
        self.staged.push(u);
    }

    fn submit_chain(&mut self, jobs: Vec<Job>) {
        let u = self.unit(jobs.into_iter().map(task).collect());
        self.staged.push(u);
    }

    fn wait(&mut self, out: &mut Vec<Done>) -> Result<(), Error> {
        self.shared
            .submit(self.caller, std::mem::take(&mut self.staged));
        self.shared.wait(self.caller, &mut self.finished, None)?;
        out.extend(self.finished.drain(..).map(done));
        Ok(())
    }

    fn workers(&self) -> Vec<WorkerId> {
        self.workers.clone()
    }

    fn worker_events(&mut self, out: &mut Vec<WorkerEvent>) {
        if self.watched {
            // Events are the pool's: with several callers, each watched one sees those that
            // happen while it waits.
            out.extend(
                self.shared
                    .with_runner_now(|r| r.take_events())
                    .unwrap_or_default(),
            );
        }
    }
}
