//! The one engine every scheduler shares (Dask's `get_async` is the model).
//!
//! The engine owns all graph state and runs in the calling thread: dependency counts, the ready
//! set ordered by static priority, releasing each intermediate as soon as its last dependent has
//! finished, callbacks, and stopping at the first error. Schedulers differ only in their
//! [`Executor`]: where a task's function runs.
//!
//! Invariants:
//! - only the engine mutates graph state; executors see jobs and return completions;
//! - a result is dropped as soon as its last dependent finished, unless it was requested;
//! - after the first task error no job is submitted; running ones are awaited, then the error
//!   is returned;
//! - no recursion over the graph (a chain of any length is a loop).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use forkgraph_worker::{TaskSpec, Value};

use crate::callbacks::{Callbacks, RunInfo};
use crate::error::{Error, TaskError, TaskErrorKind};
use crate::key::Key;
use crate::plan::{Kind, OutSpec, Plan};

/// A task handed to an executor.
pub(crate) struct Job {
    /// The node id in the plan.
    pub(crate) node: u32,
    pub(crate) spec: Arc<TaskSpec>,
    /// Values of the node's dependencies, in dependency order.
    pub(crate) inputs: Vec<Arc<Value>>,
}

/// Why an executor could not produce a job's value.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The function that failed (innermost for nested tasks).
    pub(crate) function: String,
    pub(crate) kind: TaskErrorKind,
}

/// A finished job.
pub(crate) struct Done {
    pub(crate) node: u32,
    pub(crate) result: Result<Arc<Value>, Failure>,
}

/// Where tasks run.
pub(crate) trait Executor {
    /// How many jobs may be in flight at once.
    fn slots(&self) -> usize;
    /// Accepts a job; it may run now or later.
    fn submit(&mut self, job: Job);
    /// Blocks until at least one submitted job has finished and appends the finished ones.
    fn wait(&mut self, out: &mut Vec<Done>) -> Result<(), Error>;
}

/// The result of `get`, mirroring the nesting of the requested keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The value of one key.
    Value(Value),
    /// Results of a list of requests.
    List(Vec<Output>),
}

impl Output {
    /// The value, when this is the result of one key.
    pub fn as_value(&self) -> Option<&Value> {
        match self {
            Output::Value(v) => Some(v),
            Output::List(_) => None,
        }
    }

    /// The results, when a list of keys was requested.
    pub fn as_list(&self) -> Option<&[Output]> {
        match self {
            Output::Value(_) => None,
            Output::List(l) => Some(l),
        }
    }

    /// The value of one key.
    ///
    /// # Panics
    /// When a list of keys was requested.
    pub fn into_value(self) -> Value {
        match self {
            Output::Value(v) => v,
            Output::List(_) => panic!("into_value on the result of a list of keys"),
        }
    }

    /// Converts the value of one key into a Rust type.
    ///
    /// # Errors
    /// When a list was requested or the value is of another kind.
    pub fn to<T: for<'x> forkgraph_worker::FromArg<'x>>(
        &self,
    ) -> Result<T, forkgraph_worker::Mismatch> {
        match self {
            Output::Value(v) => v.to(),
            Output::List(_) => Err(forkgraph_worker::Mismatch {
                expected: "the result of one key".into(),
                got: "a list of results".into(),
            }),
        }
    }
}

/// Runs a plan to completion on an executor.
pub(crate) fn run(
    plan: &Plan,
    exec: &mut dyn Executor,
    callbacks: &[Arc<dyn Callbacks>],
) -> Result<Output, Error> {
    let n = plan.len();
    let info = RunInfo {
        nodes: n,
        tasks: plan.kinds.iter().filter(|k| matches!(k, Kind::Task(_))).count(),
    };
    for cb in callbacks {
        cb.start(&info);
    }
    let result = drive(plan, exec, callbacks);
    for cb in callbacks {
        cb.finish(result.is_err());
    }
    result
}

fn drive(
    plan: &Plan,
    exec: &mut dyn Executor,
    callbacks: &[Arc<dyn Callbacks>],
) -> Result<Output, Error> {
    let n = plan.len();
    let mut by_priority = vec![0u32; n];
    for (i, &p) in plan.priority.iter().enumerate() {
        by_priority[p as usize] = i as u32;
    }
    let mut values: Vec<Option<Arc<Value>>> = vec![None; n];
    let mut waiting: Vec<u32> = (0..n as u32).map(|i| plan.deps.get(i).len() as u32).collect();
    let mut holders: Vec<u32> = (0..n as u32)
        .map(|i| plan.dependents.get(i).len() as u32)
        .collect();
    let mut ready: BinaryHeap<Reverse<u32>> = BinaryHeap::new();
    let mut instant: Vec<u32> = Vec::new();
    for i in 0..n as u32 {
        if waiting[i as usize] == 0 {
            match plan.kinds[i as usize] {
                Kind::Task(_) => ready.push(Reverse(plan.priority[i as usize])),
                _ => instant.push(i),
            }
        }
    }
    let slots = exec.slots().max(1);
    let mut running = 0usize;
    let mut error: Option<Error> = None;
    let mut done: Vec<Done> = Vec::new();

    let mut finish = |node: u32,
                      value: Arc<Value>,
                      values: &mut Vec<Option<Arc<Value>>>,
                      ready: &mut BinaryHeap<Reverse<u32>>,
                      instant: &mut Vec<u32>| {
        let i = node as usize;
        values[i] = Some(value);
        for &d in plan.deps.get(node) {
            let h = &mut holders[d as usize];
            *h -= 1;
            if *h == 0 && !plan.requested[d as usize] {
                values[d as usize] = None;
            }
        }
        if holders[i] == 0 && !plan.requested[i] {
            values[i] = None;
        }
        for &t in plan.dependents.get(node) {
            let w = &mut waiting[t as usize];
            *w -= 1;
            if *w == 0 {
                match plan.kinds[t as usize] {
                    Kind::Task(_) => ready.push(Reverse(plan.priority[t as usize])),
                    _ => instant.push(t),
                }
            }
        }
    };

    loop {
        while let Some(i) = instant.pop() {
            let v = match &plan.kinds[i as usize] {
                Kind::Value(v) => v.clone(),
                Kind::Alias => {
                    let d = plan.deps.get(i)[0];
                    values[d as usize].clone().expect("alias target computed")
                }
                Kind::Task(_) => unreachable!("tasks are never instant"),
            };
            finish(i, v, &mut values, &mut ready, &mut instant);
        }
        if error.is_none() {
            while running < slots {
                let Some(Reverse(p)) = ready.pop() else { break };
                let node = by_priority[p as usize];
                let Kind::Task(spec) = &plan.kinds[node as usize] else {
                    unreachable!("only tasks are queued")
                };
                let inputs = plan
                    .deps
                    .get(node)
                    .iter()
                    .map(|&d| values[d as usize].clone().expect("dependency computed"))
                    .collect();
                for cb in callbacks {
                    cb.pretask(&plan.keys[node as usize]);
                }
                exec.submit(Job {
                    node,
                    spec: spec.clone(),
                    inputs,
                });
                running += 1;
            }
        }
        if running == 0 {
            break;
        }
        exec.wait(&mut done)?;
        for d in done.drain(..) {
            running -= 1;
            match d.result {
                Ok(v) => {
                    for cb in callbacks {
                        cb.posttask(&plan.keys[d.node as usize], &v);
                    }
                    if error.is_none() {
                        finish(d.node, v, &mut values, &mut ready, &mut instant);
                    }
                }
                Err(f) => {
                    if error.is_none() {
                        error = Some(task_error(&plan.keys[d.node as usize], f));
                    }
                }
            }
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    Ok(collect(&plan.outputs, &values))
}

fn task_error(key: &Key, f: Failure) -> Error {
    Error::Task(Box::new(TaskError {
        key: key.clone(),
        function: f.function,
        kind: f.kind,
    }))
}

fn collect(out: &OutSpec, values: &[Option<Arc<Value>>]) -> Output {
    match out {
        OutSpec::One(i) => {
            let v = values[*i as usize].as_ref().expect("requested values are kept");
            Output::Value(Value::clone(v))
        }
        OutSpec::List(l) => Output::List(l.iter().map(|o| collect(o, values)).collect()),
    }
}
