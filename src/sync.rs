//! The sync scheduler: every task in the calling thread, one at a time, in priority order.

use std::sync::Arc;

use forkgraph_worker::Value;

use crate::callbacks::WorkerId;
use crate::engine::{self, Done, Executor, Failure, Job, Output, Ran};
use crate::error::{Error, TaskErrorKind};
use crate::graph::Graph;
use crate::key::Keys;
use crate::scheduler::{plan, GetOptions, Scheduler};

/// Runs everything in the calling thread, deterministically. Best for debugging: a panic's
/// message and backtrace print where it happens, and callbacks see tasks in priority order.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncScheduler;

impl SyncScheduler {
    /// The sync scheduler.
    pub fn new() -> SyncScheduler {
        SyncScheduler
    }
}

/// Runs one job on `worker` (the calling thread or a pool thread) and turns its outcome into a
/// completion; reads the clock around it only when the job is timed.
pub(crate) fn run_job(job: &Job, worker: WorkerId) -> Done {
    let clock = || {
        if job.timed {
            forkgraph_worker::host::now()
        } else {
            0
        }
    };
    let start = clock();
    let result = forkgraph_worker::run(&job.spec, job.inputs.as_slice())
        .map(engine::shared_value)
        .map_err(|f| {
            Box::new(Failure {
                function: f.function,
                kind: TaskErrorKind::Call(f.error),
            })
        });
    Done {
        node: job.node,
        result,
        ran: Ran {
            worker,
            start,
            end: clock(),
            started: true,
        },
    }
}

struct Inline {
    done: Vec<Done>,
}

impl Executor for Inline {
    fn slots(&self) -> usize {
        1
    }
    fn submit(&mut self, job: Job) {
        self.done.push(run_job(&job, WorkerId::Caller));
    }
    fn wait(&mut self, out: &mut Vec<Done>) -> Result<(), Error> {
        out.append(&mut self.done);
        Ok(())
    }
    fn workers(&self) -> Vec<WorkerId> {
        vec![WorkerId::Caller]
    }
}

/// Runs a plan in the calling thread.
pub(crate) fn run_inline(
    plan: &crate::plan::Plan,
    callbacks: &[Arc<dyn crate::Callbacks>],
) -> Result<Output, Error> {
    engine::run(plan, &mut Inline { done: Vec::new() }, callbacks, false)
}

impl Scheduler for SyncScheduler {
    fn get_with(&self, graph: &Graph, keys: &Keys, opts: &GetOptions) -> Result<Output, Error> {
        let plan = plan(graph, keys, opts)?;
        let budget = crate::spill::budget_for(opts, None, 0)?;
        engine::run_with(
            &plan,
            &mut Inline { done: Vec::new() },
            &opts.callbacks,
            opts.keep_going,
            budget,
        )
    }
}

/// Computes `keys` of `graph` with the sync scheduler.
///
/// # Errors
/// As [`Scheduler::get_with`].
pub fn get(graph: &Graph, keys: impl Into<Keys>) -> Result<Output, Error> {
    SyncScheduler.get(graph, keys)
}

/// Computes one key and returns its value.
///
/// # Errors
/// As [`Scheduler::get_with`].
pub fn get_value(graph: &Graph, key: impl Into<crate::Key>) -> Result<Value, Error> {
    SyncScheduler.get(graph, key.into()).map(Output::into_value)
}
