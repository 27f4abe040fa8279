//! The sync scheduler: every task in the calling thread, one at a time, in priority order.

use std::sync::Arc;

use forkgraph_worker::Value;

use crate::callbacks::WorkerId;
use crate::engine::{self, Done, Executor, Failure, Job, Output, Ran};
use crate::error::{Error, TaskErrorKind};
use crate::graph::Graph;
use crate::key::Keys;
use crate::plan::{Kind, OutSpec, Plan};
use crate::scheduler::{plan, GetOptions, Scheduler};
use crate::scratch;

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

/// Runs a plan in the calling thread, with the get's callbacks and `keep_going` and `budget`
/// (a memory budget, if any), as the sync scheduler does.
pub(crate) fn run_inline(
    plan: &Plan,
    opts: &GetOptions,
    budget: Option<crate::spill::Budget>,
) -> Result<Output, Error> {
    if opts.callbacks.is_empty() && budget.is_none() && !opts.keep_going {
        return run_in_order(plan);
    }
    engine::run_with(
        plan,
        &mut Inline { done: Vec::new() },
        &opts.callbacks,
        opts.keep_going,
        budget,
    )
}

/// A node's value while a plan runs in order: a task's result where it was computed (no
/// allocation of its own), or a value shared with the plan (literals) or another node (aliases).
enum Slot {
    Empty,
    Own(Value),
    Shared(Arc<Value>),
}

impl Slot {
    fn get(&self) -> &Value {
        match self {
            Slot::Own(v) => v,
            Slot::Shared(v) => v,
            Slot::Empty => panic!("a dependency is computed before its dependents"),
        }
    }

    /// The value as a shared one (an alias reads it): moved into an `Arc` once.
    fn share(&mut self) -> Arc<Value> {
        if let Slot::Own(_) = self {
            let Slot::Own(v) = std::mem::replace(self, Slot::Empty) else {
                unreachable!("matched above")
            };
            *self = Slot::Shared(Arc::new(v));
        }
        match self {
            Slot::Shared(v) => Arc::clone(v),
            _ => panic!("an alias's target is computed before the alias"),
        }
    }
}

impl scratch::Element for Slot {
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<Slot>>>> {
        thread_local! {
            static POOL: std::cell::RefCell<Vec<Vec<Slot>>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        &POOL
    }
}

/// The inputs of one node: its dependencies' slots, read in place.
struct InPlace<'a> {
    deps: &'a [u32],
    slots: &'a [Slot],
}

impl forkgraph_worker::Inputs for InPlace<'_> {
    fn input(&self, i: u32) -> &Value {
        self.slots[self.deps[i as usize] as usize].get()
    }
}

/// What the sync scheduler does without callbacks, a memory budget or `keep_going`: the nodes
/// one after another in the static order, each task's inputs read where they are held.
///
/// This is what the engine does with one slot, without its bookkeeping: with one task at a
/// time, the ready task of lowest priority is always the next node in the order (the order is
/// topological, so everything before it has run), so results, the order tasks run in, the
/// release of each result after its last dependent, and the first error are the same. Results
/// stay where they were computed instead of in a shared allocation each.
fn run_in_order(plan: &Plan) -> Result<Output, Error> {
    let n = plan.len();
    let mut order = scratch::filled(n, 0u32);
    for (i, &p) in plan.priority.iter().enumerate() {
        order[p as usize] = i as u32;
    }
    let mut holders = scratch::collect(
        n,
        (0..n as u32).map(|i| plan.dependents.get(i).len() as u32),
    );
    let mut slots = scratch::take::<Slot>(n);
    slots.resize_with(n, || Slot::Empty);
    for &node in order.iter() {
        let i = node as usize;
        let deps = plan.deps.get(node);
        let value = match &plan.kinds[i] {
            Kind::Task(s) => {
                tracing::trace!(target: "forkgraph::engine", key = %plan.keys[i], "ready");
                tracing::trace!(target: "forkgraph::engine", key = %plan.keys[i], "dispatched");
                let inputs = InPlace {
                    deps,
                    slots: &slots,
                };
                match forkgraph_worker::run(plan.specs.get(*s), &inputs) {
                    Ok(v) => Slot::Own(v),
                    Err(f) => {
                        let failure = Failure {
                            function: f.function,
                            kind: TaskErrorKind::Call(f.error),
                        };
                        return Err(engine::task_error(&plan.keys[i], failure));
                    }
                }
            }
            Kind::Value(v) => Slot::Shared(Arc::clone(v)),
            Kind::Alias => Slot::Shared(slots[deps[0] as usize].share()),
        };
        tracing::trace!(target: "forkgraph::engine", key = %plan.keys[i], "finished");
        slots[i] = value;
        for &d in deps {
            let h = &mut holders[d as usize];
            *h -= 1;
            if *h == 0 && !plan.requested[d as usize] {
                slots[d as usize] = Slot::Empty;
            }
        }
    }
    Ok(collect(&plan.outputs, &slots))
}

fn collect(out: &OutSpec, slots: &[Slot]) -> Output {
    match out {
        OutSpec::One(i) => Output::Value(slots[*i as usize].get().clone()),
        OutSpec::List(l) => Output::List(l.iter().map(|o| collect(o, slots)).collect()),
    }
}

impl Scheduler for SyncScheduler {
    fn get_with(&self, graph: &Graph, keys: &Keys, opts: &GetOptions) -> Result<Output, Error> {
        let plan = plan(graph, keys, opts)?;
        let budget = crate::spill::budget_for(opts, None, 0)?;
        run_inline(&plan, opts, budget)
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
