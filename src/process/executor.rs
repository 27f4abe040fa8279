//! The process pool's executor for the engine: a thin adapter from engine jobs to the unit
//! runner's units, and from finished tasks back to engine results.

use crate::callbacks::{WorkerEvent, WorkerId};
use crate::engine::{Done, Executor, Failure, Job};
use crate::error::Error;
use crate::key::Key;

use super::runner::{Finished, Pool, RunTask, Runner};
use super::Config;

/// The executor of one `get` on a process pool.
pub(crate) struct ProcExec<'a> {
    runner: Runner<'a>,
    finished: Vec<Finished>,
}

impl<'a> ProcExec<'a> {
    /// An executor on `pool`; `keys` are the plan's keys by node (to label what tasks log);
    /// `watched`: whether callbacks want worker lifecycle events.
    pub(crate) fn new(
        pool: &'a mut Pool,
        cfg: &'a Config,
        keys: &'a [Key],
        watched: bool,
    ) -> ProcExec<'a> {
        let mut runner = Runner::new(pool, cfg, keys);
        runner.record_events(watched);
        ProcExec {
            runner,
            finished: Vec::new(),
        }
    }
}

fn task(job: Job) -> RunTask {
    RunTask {
        spec: job.spec,
        inputs: job.inputs,
        prev: job.prev,
        send_back: job.send_back,
        options: job.options,
        tag: job.node,
    }
}

impl Executor for ProcExec<'_> {
    fn slots(&self) -> usize {
        self.runner.slots()
    }

    fn parallelism(&self) -> usize {
        self.runner.parallelism()
    }

    fn chains(&self) -> bool {
        true
    }

    fn submit(&mut self, job: Job) {
        self.runner.submit(vec![task(job)]);
    }

    fn submit_chain(&mut self, jobs: Vec<Job>) {
        self.runner.submit(jobs.into_iter().map(task).collect());
    }

    fn wait(&mut self, out: &mut Vec<Done>) -> Result<(), Error> {
        self.runner.wait(&mut self.finished)?;
        out.extend(self.finished.drain(..).map(|f| Done {
            node: f.tag,
            result: f.result.map_err(|e| {
                Box::new(Failure {
                    function: e.function,
                    kind: e.kind,
                })
            }),
            ran: f.ran,
        }));
        Ok(())
    }

    fn workers(&self) -> Vec<WorkerId> {
        self.runner.workers()
    }

    fn worker_events(&mut self, out: &mut Vec<WorkerEvent>) {
        self.runner.take_events(out);
    }
}
