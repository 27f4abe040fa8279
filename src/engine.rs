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

use forkgraph_worker::{SpecRef, Value};

use crate::callbacks::{
    value_bytes, Callbacks, Dependencies, RunInfo, TaskEvent, WorkerEvent, WorkerId,
};
use crate::error::{Error, TaskError, TaskErrorKind};
use crate::graph::TaskOptions;
use crate::key::Key;
use crate::plan::{Kind, OutSpec, Plan};
use crate::spill::{Budget, Spilled, MIN_SPILL};

/// A task handed to an executor.
pub(crate) struct Job {
    /// The node id in the plan.
    pub(crate) node: u32,
    pub(crate) spec: SpecRef,
    /// Values of the node's dependencies, in dependency order (up to two without an
    /// allocation: most tasks read one or two).
    pub(crate) inputs: Inputs,
    /// In a chain: which input is the previous job's result (its slot in `inputs` holds a
    /// placeholder).
    pub(crate) prev: Option<u32>,
    /// Whether the engine needs the value back (false only for chain links whose one reader
    /// is the next link).
    pub(crate) send_back: bool,
    /// Per-task options (retries, timeout).
    pub(crate) options: TaskOptions,
    /// Whether someone watches where and when it runs (the sync and thread executors read the
    /// clock around it only then).
    pub(crate) timed: bool,
}

/// A job's inputs.
pub(crate) type Inputs = smallvec::SmallVec<[Arc<Value>; 2]>;

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
    /// The value, or why there is none (boxed: a `Done` is moved for every task).
    pub(crate) result: Result<Arc<Value>, Box<Failure>>,
    /// Where and when it ran.
    pub(crate) ran: Ran,
}

/// Where and when a job ran (times in ns on `callbacks::monotonic_ns`'s clock, 0 when the job
/// was not timed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ran {
    pub(crate) worker: WorkerId,
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// False when the job never started (see `TaskEvent::ran`).
    pub(crate) started: bool,
}

/// Where tasks run.
pub(crate) trait Executor {
    /// How many jobs may be in flight at once.
    fn slots(&self) -> usize;
    /// Accepts a job; it may run now or later.
    fn submit(&mut self, job: Job);
    /// Whether the executor takes chains ([`Executor::submit_chain`]).
    fn chains(&self) -> bool {
        false
    }
    /// Accepts a chain: jobs to run back to back in one place, each link reading the previous
    /// link's result (`Job::prev`). The executor reports a [`Done`] for every link, in order;
    /// links after a failed one are reported failed too.
    fn submit_chain(&mut self, jobs: Vec<Job>) {
        for j in jobs {
            self.submit(j);
        }
    }
    /// How many jobs can run at the same moment (threads, worker processes).
    fn parallelism(&self) -> usize {
        1
    }
    /// Blocks until at least one submitted job has finished and appends the finished ones.
    fn wait(&mut self, out: &mut Vec<Done>) -> Result<(), Error>;
    /// Where jobs may run.
    fn workers(&self) -> Vec<WorkerId>;
    /// The size of a result this executor handed back as a stand-in for a value kept
    /// elsewhere (the MPI cluster's results on other ranks), for the large-result gating;
    /// `None`: `v` is the value itself.
    fn stand_in_bytes(&self, _v: &Arc<Value>) -> Option<usize> {
        None
    }
    /// Appends what happened to workers since the last call (process pools).
    fn worker_events(&mut self, out: &mut Vec<WorkerEvent>) {
        let _ = out;
    }
}

/// The result of `get`, mirroring the nesting of the requested keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The value of one key.
    Value(Value),
    /// Results of a list of requests.
    List(Vec<Output>),
    /// The error that stopped one key (only with
    /// [`GetOptions::keep_going`](crate::GetOptions::keep_going)).
    Failed(Box<TaskError>),
}

impl Output {
    /// The value, when this is the result of one key.
    pub fn as_value(&self) -> Option<&Value> {
        match self {
            Output::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The results, when a list of keys was requested.
    pub fn as_list(&self) -> Option<&[Output]> {
        match self {
            Output::List(l) => Some(l),
            _ => None,
        }
    }

    /// The error that stopped this key, with
    /// [`GetOptions::keep_going`](crate::GetOptions::keep_going).
    pub fn error(&self) -> Option<&TaskError> {
        match self {
            Output::Failed(e) => Some(e),
            _ => None,
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
            Output::Failed(e) => panic!("into_value on a failed key: {e}"),
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
            Output::Failed(e) => Err(forkgraph_worker::Mismatch {
                expected: "the result of one key".into(),
                got: format!("a failed key ({e})"),
            }),
        }
    }
}

/// Runs a plan to completion on an executor.
#[cfg(feature = "mpi")]
pub(crate) fn run(
    plan: &Plan,
    exec: &mut dyn Executor,
    callbacks: &[Arc<dyn Callbacks>],
    keep_going: bool,
) -> Result<Output, Error> {
    run_with(plan, exec, callbacks, keep_going, None)
}

/// [`run`] under a memory budget (see `spill`), when there is one.
pub(crate) fn run_with(
    plan: &Plan,
    exec: &mut dyn Executor,
    callbacks: &[Arc<dyn Callbacks>],
    keep_going: bool,
    budget: Option<Budget>,
) -> Result<Output, Error> {
    let n = plan.len();
    let info = RunInfo {
        nodes: n,
        tasks: plan
            .kinds
            .iter()
            .filter(|k| matches!(k, Kind::Task(_)))
            .count(),
    };
    // `finish` runs for every callback whose `start` ran, also when a callback (or the engine)
    // panics; the panic then continues to the caller (as Dask's `get_async` does).
    let mut started = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for cb in callbacks {
            cb.start(&info);
            started += 1;
        }
        if !callbacks.is_empty() {
            let workers = exec.workers();
            for cb in callbacks {
                cb.workers(&workers);
            }
        }
        drive(plan, exec, callbacks, keep_going, budget)
    }));
    let errored = !matches!(result, Ok(Ok(_)));
    for cb in &callbacks[..started] {
        cb.finish(errored);
    }
    match result {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The engine's mutable state during one run.
struct State<'p> {
    plan: &'p Plan,
    values: Vec<Option<Arc<Value>>>,
    /// Unfinished dependencies per node.
    waiting: Vec<u32>,
    /// Unfinished dependents per node (its value is dropped at 0 unless requested).
    holders: Vec<u32>,
    ready: BinaryHeap<Reverse<u32>>,
    /// Literals and aliases whose value can be set without running anything.
    instant: Vec<u32>,
    /// Tasks already handed out as a later link of a chain (empty when chains are off).
    chained: Vec<bool>,
    /// With `keep_going` (else empty): the error that stopped each node, and for a node whose
    /// dependency failed, that dependency (`NONE` when none did).
    failed: Vec<Option<Arc<TaskError>>>,
    poisoned: Vec<u32>,
    /// With a memory budget (else `None`): what is held, and what was spilled.
    mem: Option<Box<Memory>>,
}

/// The engine's accounting under a memory budget.
struct Memory {
    budget: Budget,
    /// Bytes counted as held for each node (its value's, or its spilled skeleton's).
    bytes: Vec<u64>,
    /// The file holding each node's large arrays, once spilled (kept after a restore, so that
    /// spilling it again writes nothing).
    spilled: Vec<Option<Spilled>>,
    /// Whether each task was handed out.
    started: Vec<bool>,
    /// Nodes whose value in memory may be large enough to spill (checked lazily).
    large: Vec<u32>,
    /// Bytes held now.
    held: u64,
    /// Expected bytes of the large results of units in flight, by their last node.
    expected: Vec<u64>,
    in_flight: u64,
}

impl Memory {
    fn add(&mut self, i: usize, b: u64) {
        self.bytes[i] += b;
        self.held += b;
        self.budget.ledger.add_held(b);
        self.report();
    }

    fn remove(&mut self, i: usize) {
        let b = std::mem::take(&mut self.bytes[i]);
        self.held -= b;
        self.budget.ledger.sub_held(b);
        self.report();
    }

    /// Counts `b` more expected bytes of units in flight.
    fn reserve(&mut self, b: u64) {
        self.in_flight += b;
        self.budget.ledger.add_in_flight(b);
    }

    /// Counts `b` fewer expected bytes of units in flight.
    fn unreserve(&mut self, b: u64) {
        self.in_flight -= b;
        self.budget.ledger.sub_in_flight(b);
    }

    /// Whether `more` bytes fit beside what every run sharing the budget holds and expects.
    fn fits(&self, more: u64) -> bool {
        self.budget.ledger.committed() + more <= self.budget.limit
    }

    fn report(&self) {
        if let Some(s) = &self.budget.stats {
            s.set_held(self.held);
        }
    }
}

impl Drop for Memory {
    /// Everything this run held or expected leaves the shared ledger with it (also on an
    /// error or a panic).
    fn drop(&mut self) {
        self.budget.ledger.sub_held(self.held);
        self.budget.ledger.sub_in_flight(self.in_flight);
        self.held = 0;
        self.in_flight = 0;
        self.report();
    }
}

/// No node.
const NONE: u32 = u32::MAX;

impl State<'_> {
    fn became_ready(&mut self, t: u32) {
        tracing::trace!(target: "forkgraph::engine", key = %self.plan.keys[t as usize], "ready");
        match self.plan.kinds[t as usize] {
            Kind::Task(_) if self.chained.get(t as usize).copied().unwrap_or(false) => {}
            Kind::Task(_) => self.ready.push(Reverse(self.plan.priority[t as usize])),
            _ => self.instant.push(t),
        }
    }

    /// Records a node's value, releases inputs nobody needs any more, and readies dependents.
    fn finish(&mut self, node: u32, value: Arc<Value>) {
        let plan = self.plan;
        tracing::trace!(target: "forkgraph::engine", key = %plan.keys[node as usize], "finished");
        let i = node as usize;
        if let Some(m) = &mut self.mem {
            let b = value_bytes(&value);
            if b as usize >= MIN_SPILL {
                m.large.push(node);
            }
            m.add(i, b);
        }
        self.values[i] = Some(value);
        for &d in plan.deps.get(node) {
            let h = &mut self.holders[d as usize];
            *h -= 1;
            if *h == 0 && !plan.requested[d as usize] {
                self.release(d as usize);
            }
        }
        if self.holders[i] == 0 && !plan.requested[i] {
            self.release(i);
        }
        for &t in plan.dependents.get(node) {
            let w = &mut self.waiting[t as usize];
            *w -= 1;
            if *w == 0 {
                if self.poisoned.get(t as usize).is_some_and(|&p| p != NONE) {
                    let e = self.upstream(t);
                    self.fail(t, e);
                } else {
                    self.became_ready(t);
                }
            }
        }
    }

    /// Drops a node's value (and its spill file).
    #[inline]
    fn release(&mut self, i: usize) {
        self.values[i] = None;
        if let Some(m) = &mut self.mem {
            m.remove(i);
            m.spilled[i] = None;
        }
    }

    /// Makes sure the value of node `d` is in memory (reads it back if it was spilled), first
    /// spilling what is needed after `before` (a priority) if it would not fit.
    fn ensure(&mut self, d: u32, before: u32) -> Result<(), Error> {
        let i = d as usize;
        let Some(m) = &self.mem else { return Ok(()) };
        if self.values[i].is_some() {
            return Ok(());
        }
        let Some(s) = &m.spilled[i] else {
            return Ok(());
        };
        let need = s.bytes();
        self.relieve(need, before)?;
        let m = self.mem.as_mut().expect("a budget");
        let s = m.spilled[i].as_ref().expect("spilled");
        let v = s.restore(m.budget.stats.as_deref()).map_err(|e| {
            Error::system(
                format!("reading back the spilled result of {}", self.plan.keys[i]),
                e,
            )
        })?;
        m.budget.ledger.restored(need);
        let b = value_bytes(&v);
        m.remove(i);
        m.add(i, b);
        m.large.push(d);
        self.values[i] = Some(Arc::new(v));
        Ok(())
    }

    /// Under a budget: spills held results, those needed latest by the static order first
    /// (never one needed at or before priority `before`, nor one a running task reads), until
    /// `need` more bytes fit or nothing more can be spilled.
    fn relieve(&mut self, need: u64, before: u32) -> Result<(), Error> {
        let plan = self.plan;
        let Some(m) = self.mem.as_deref_mut() else {
            return Ok(());
        };
        while !m.fits(need) {
            let mut best: Option<(u32, u32, u64)> = None; // (next use, node, bytes)
            let mut k = 0;
            while k < m.large.len() {
                let i = m.large[k] as usize;
                let Some(v) = &self.values[i] else {
                    m.large.swap_remove(k);
                    continue;
                };
                if (m.bytes[i] as usize) < MIN_SPILL {
                    m.large.swap_remove(k);
                    continue;
                }
                k += 1;
                if Arc::strong_count(v) > 1 {
                    continue; // A running task reads it: spilling frees nothing.
                }
                let next = plan
                    .dependents
                    .get(i as u32)
                    .iter()
                    .filter(|&&t| !m.started[t as usize])
                    .map(|&t| plan.priority[t as usize])
                    .min()
                    .unwrap_or(u32::MAX);
                if next <= before && next != u32::MAX {
                    continue;
                }
                if best.is_none_or(|(n, _, b)| (next, m.bytes[i]) > (n, b)) {
                    best = Some((next, i as u32, m.bytes[i]));
                }
            }
            let Some((_, node, _)) = best else { break };
            let i = node as usize;
            let v = self.values[i].take().expect("a held value");
            if m.spilled[i].is_none() {
                let dir = m
                    .budget
                    .dir
                    .as_deref()
                    .expect("a budget with a limit has a directory");
                match crate::spill::spill(&v, dir, m.budget.stats.as_deref()) {
                    Ok(Some(s)) => {
                        m.budget.ledger.spilled(s.bytes());
                        m.spilled[i] = Some(s);
                    }
                    Ok(None) => {
                        // Large only as a whole (many small parts): it stays.
                        self.values[i] = Some(v);
                        m.large.retain(|&x| x != node);
                        continue;
                    }
                    Err(e) => {
                        self.values[i] = Some(v);
                        return Err(Error::system(
                            format!("spilling the result of {}", plan.keys[i]),
                            e,
                        ));
                    }
                }
            }
            tracing::trace!(target: "forkgraph::engine", key = %plan.keys[i], "spilled");
            let skeleton = m.spilled[i].as_ref().map_or(0, Spilled::skeleton_bytes);
            m.remove(i);
            m.add(i, skeleton);
        }
        Ok(())
    }

    /// A job for `node`, its spilled inputs read back first.
    #[inline]
    fn job(
        &mut self,
        node: u32,
        prev: Option<u32>,
        callbacks: &[Arc<dyn Callbacks>],
    ) -> Result<Job, Error> {
        if self.mem.is_some() {
            self.read_back_inputs(node, prev)?;
        }
        Ok(make_job(self.plan, node, &self.values, prev, callbacks))
    }

    /// Under a budget: reads back the spilled inputs of `node` (but `prev`, a chain's link
    /// before it) and marks it handed out.
    #[cold]
    #[inline(never)]
    fn read_back_inputs(&mut self, node: u32, prev: Option<u32>) -> Result<(), Error> {
        let p = self.plan.priority[node as usize];
        for (k, &d) in self.plan.deps.get(node).iter().enumerate() {
            if prev != Some(k as u32) {
                self.ensure(d, p)?;
            }
        }
        self.mem.as_mut().expect("a budget").started[node as usize] = true;
        Ok(())
    }

    /// With a budget: whether a task that may return a large result can start now (what is
    /// held, what runs and what it is expected to add fit the budget).
    fn fits(&self, expected: u64) -> bool {
        self.mem.as_deref().is_none_or(|m| m.fits(expected))
    }

    /// With `keep_going`: records that `node` failed, releases its inputs, and fails (as
    /// [`TaskErrorKind::Upstream`]) every dependent whose other dependencies are done, without
    /// running it; dependents with dependencies still to come fail when those are done. Chain
    /// links already handed out are left to their executor, which reports them.
    fn fail(&mut self, node: u32, err: Arc<TaskError>) {
        let plan = self.plan;
        let mut stack = vec![(node, err)];
        while let Some((i, e)) = stack.pop() {
            tracing::trace!(target: "forkgraph::engine", key = %plan.keys[i as usize], "failed");
            self.failed[i as usize] = Some(e);
            for &d in plan.deps.get(i) {
                let h = &mut self.holders[d as usize];
                *h -= 1;
                if *h == 0 && !plan.requested[d as usize] {
                    self.release(d as usize);
                }
            }
            for &t in plan.dependents.get(i) {
                let tu = t as usize;
                if self.poisoned[tu] == NONE {
                    self.poisoned[tu] = i;
                }
                if self.chained.get(tu).copied().unwrap_or(false) {
                    continue;
                }
                self.waiting[tu] -= 1;
                if self.waiting[tu] == 0 {
                    stack.push((t, self.upstream(t)));
                }
            }
        }
    }

    /// The error of a node that does not run because a dependency failed: it names the task
    /// whose own failure started it all.
    fn upstream(&self, t: u32) -> Arc<TaskError> {
        let plan = self.plan;
        let dep = self.poisoned[t as usize] as usize;
        let root = match self.failed[dep].as_deref() {
            Some(TaskError {
                kind: TaskErrorKind::Upstream { key },
                ..
            }) => key.clone(),
            _ => plan.keys[dep].clone(),
        };
        Arc::new(TaskError {
            key: plan.keys[t as usize].clone(),
            function: function_of(plan, t).to_owned(),
            kind: TaskErrorKind::Upstream { key: root },
        })
    }

    /// The chain that starts with `node`: extended while the last link is the only unfinished
    /// dependency of a dependent task, which can then run in the same place right after it.
    fn chain(&mut self, node: u32, callbacks: &[Arc<dyn Callbacks>]) -> Result<Vec<Job>, Error> {
        let plan = self.plan;
        let mut jobs = vec![self.job(node, None, callbacks)?];
        let mut last = node;
        // A chain's links all have a timeout of their own or none do: a process pool times a
        // chain from when it started, which needs a time budget for every link.
        let timed = jobs[0].options.timeout.is_some();
        while jobs.len() < MAX_CHAIN {
            let next = plan.dependents.get(last).iter().copied().find(|&t| {
                self.waiting[t as usize] == 1
                    && !self.chained[t as usize]
                    // With `keep_going`, a dependency that failed counts as finished: the
                    // dependent does not run (it fails upstream when its last input is done).
                    && self.poisoned.get(t as usize).is_none_or(|&p| p == NONE)
                    && matches!(plan.kinds[t as usize], Kind::Task(_))
                    && plan.options(t).timeout.is_some() == timed
            });
            let Some(t) = next else { break };
            self.chained[t as usize] = true;
            let prev = plan.deps.get(t).iter().position(|&d| d == last);
            let l = jobs.last_mut().expect("a job");
            // Callbacks see every value, so then every value comes back.
            l.send_back = !callbacks.is_empty()
                || plan.requested[last as usize]
                || plan.dependents.get(last).len() > 1;
            jobs.push(self.job(t, prev.map(|i| i as u32), callbacks)?);
            last = t;
        }
        Ok(jobs)
    }
}

fn drive(
    plan: &Plan,
    exec: &mut dyn Executor,
    callbacks: &[Arc<dyn Callbacks>],
    keep_going: bool,
    budget: Option<Budget>,
) -> Result<Output, Error> {
    let n = plan.len();
    let mut by_priority = vec![0u32; n];
    for (i, &p) in plan.priority.iter().enumerate() {
        by_priority[p as usize] = i as u32;
    }
    let chains = exec.chains();
    let mut st = State {
        plan,
        values: vec![None; n],
        waiting: (0..n as u32)
            .map(|i| plan.deps.get(i).len() as u32)
            .collect(),
        holders: (0..n as u32)
            .map(|i| plan.dependents.get(i).len() as u32)
            .collect(),
        ready: BinaryHeap::new(),
        instant: Vec::new(),
        chained: vec![false; if chains { n } else { 0 }],
        failed: if keep_going {
            vec![None; n]
        } else {
            Vec::new()
        },
        poisoned: if keep_going {
            vec![NONE; n]
        } else {
            Vec::new()
        },
        mem: budget.map(|budget| {
            Box::new(Memory {
                budget,
                bytes: vec![0; n],
                spilled: (0..n).map(|_| None).collect(),
                started: vec![false; n],
                large: Vec::new(),
                held: 0,
                expected: vec![0; n],
                in_flight: 0,
            })
        }),
    };
    // Room for every source at once (pushing them one by one would grow the heap step by step).
    let sources = st.waiting.iter().filter(|&&w| w == 0).count();
    st.ready.reserve(sources);
    for i in 0..n as u32 {
        if st.waiting[i as usize] == 0 {
            st.became_ready(i);
        }
    }
    let slots = exec.slots().max(1);
    let parallelism = exec.parallelism().max(1);
    let mut running = 0usize;
    // A job whose result may be large (its function's results were, or it has not returned
    // one yet) is handed out only when fewer jobs are in flight than can run at once: batching
    // it ahead of the order would run producers before the consumers that free their results.
    // Jobs known to return small results are batched as before.
    let mut sizes = ResultSizes::new();
    // Sizes matter only where jobs can be handed out ahead of free workers, or under a budget
    // (not on the sync scheduler: one slot, one job at a time).
    let gated = slots > parallelism || st.mem.is_some();
    // Under a budget, every result that could be spilled counts as large.
    let large_from = if st.mem.is_some() {
        MIN_SPILL
    } else {
        LARGE_RESULT
    };
    // Units in flight (a chain is one: its links run one after another in one worker), and
    // the last node of each unit handed out.
    let mut units = 0usize;
    let mut unit_end = vec![false; n];
    let mut error: Option<Error> = None;
    let mut done: Vec<Done> = Vec::new();

    loop {
        while let Some(i) = st.instant.pop() {
            let v = match &plan.kinds[i as usize] {
                Kind::Value(v) => v.clone(),
                Kind::Alias => {
                    let d = plan.deps.get(i)[0];
                    if let Err(e) = st.ensure(d, plan.priority[i as usize]) {
                        error.get_or_insert(e);
                        continue;
                    }
                    st.values[d as usize]
                        .clone()
                        .expect("alias target computed")
                }
                Kind::Task(_) => unreachable!("tasks are never instant"),
            };
            st.finish(i, v);
        }
        if error.is_none() {
            while running < slots {
                let Some(&Reverse(p)) = st.ready.peek() else {
                    break;
                };
                let node = by_priority[p as usize];
                // Looked up only when it matters (the sync scheduler never needs it).
                let large = (units >= parallelism || st.mem.is_some())
                    && sizes.large(plan, node, large_from);
                if units >= parallelism && large {
                    break; // Wait, in the order's place, until a worker is free.
                }
                // Under a memory budget, a task that may return a large result starts only
                // when it fits: while others run, wait for them (they may free memory); with
                // nothing running, spill what is needed latest, then start it anyway (the
                // graph must progress).
                let expected = if large && st.mem.is_some() {
                    sizes.expected(plan, node)
                } else {
                    0
                };
                if large && !st.fits(expected) {
                    if units > 0 {
                        break;
                    }
                    if let Err(e) = st.relieve(expected, p) {
                        error = Some(e);
                        break;
                    }
                }
                st.ready.pop();
                tracing::trace!(target: "forkgraph::engine", key = %plan.keys[node as usize], "dispatched");
                units += 1;
                // Counted before its inputs are read back, so that reading them back spills
                // enough for its result too.
                if let Some(m) = &mut st.mem {
                    m.reserve(expected);
                }
                if !chains {
                    let job = match st.job(node, None, callbacks) {
                        Ok(j) => j,
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    };
                    unit_end[node as usize] = true;
                    if let Some(m) = &mut st.mem {
                        m.expected[node as usize] = expected;
                    }
                    exec.submit(job);
                    running += 1;
                    continue;
                }
                let mut jobs = match st.chain(node, callbacks) {
                    Ok(j) => j,
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                };
                running += jobs.len();
                if let Some(last) = jobs.last() {
                    unit_end[last.node as usize] = true;
                    if let Some(m) = &mut st.mem {
                        // Every link whose result comes back adds to what is held, not only
                        // the head the hand-out was decided on.
                        let links: u64 = jobs
                            .iter()
                            .filter(|j| j.send_back)
                            .map(|j| sizes.expected(plan, j.node))
                            .sum();
                        let total = links.max(expected);
                        m.reserve(total - expected);
                        m.expected[last.node as usize] = total;
                    }
                }
                if jobs.len() == 1 {
                    exec.submit(jobs.pop().expect("a job"));
                } else {
                    exec.submit_chain(jobs);
                }
            }
        }
        if running == 0 {
            break;
        }
        let waited = exec.wait(&mut done);
        if !callbacks.is_empty() {
            report_worker_events(exec, callbacks);
        }
        waited?;
        for d in done.drain(..) {
            running -= 1;
            if std::mem::take(&mut unit_end[d.node as usize]) {
                units -= 1;
                if let Some(m) = &mut st.mem {
                    let e = std::mem::take(&mut m.expected[d.node as usize]);
                    m.unreserve(e);
                }
            }
            match d.result {
                Ok(v) => {
                    // A chain link's result that stayed in its worker says nothing of its size.
                    if gated && !Arc::ptr_eq(&v, placeholder()) {
                        let bytes = exec.stand_in_bytes(&v).unwrap_or_else(|| result_bytes(&v));
                        sizes.learn(plan, d.node, bytes);
                    }
                    let key = &plan.keys[d.node as usize];
                    if !callbacks.is_empty() {
                        if st.chained.get(d.node as usize).copied().unwrap_or(false) {
                            for cb in callbacks {
                                cb.pretask(key);
                            }
                        }
                        let event = TaskEvent {
                            key,
                            function: function_of(plan, d.node),
                            worker: d.ran.worker,
                            start: d.ran.start,
                            end: d.ran.end.max(d.ran.start),
                            result_bytes: value_bytes(&v),
                            ran: d.ran.started,
                            dependencies: Dependencies::new(plan, d.node),
                        };
                        for cb in callbacks {
                            cb.posttask(key, &v);
                            cb.task_done(&event, &v);
                        }
                    }
                    if error.is_none() {
                        st.finish(d.node, v);
                    }
                }
                Err(f) => {
                    let key = &plan.keys[d.node as usize];
                    let e = task_error(key, *f);
                    if let (false, Error::Task(t)) = (callbacks.is_empty(), &e) {
                        let event = TaskEvent {
                            key,
                            function: &t.function,
                            worker: d.ran.worker,
                            start: d.ran.start,
                            end: d.ran.end.max(d.ran.start),
                            result_bytes: 0,
                            ran: d.ran.started,
                            dependencies: Dependencies::new(plan, d.node),
                        };
                        for cb in callbacks {
                            cb.task_failed(&event, t);
                        }
                    }
                    match e {
                        Error::Task(t) if keep_going => {
                            // A chain link not run after an earlier link failed: upstream.
                            let e = if st.poisoned[d.node as usize] != NONE {
                                st.upstream(d.node)
                            } else {
                                Arc::from(t)
                            };
                            st.fail(d.node, e);
                        }
                        e => {
                            if error.is_none() {
                                error = Some(e);
                            }
                        }
                    }
                }
            }
        }
    }
    if error.is_none() && st.mem.is_some() {
        for i in 0..n as u32 {
            if plan.requested[i as usize] {
                if let Err(e) = st.ensure(i, 0) {
                    error = Some(e);
                    break;
                }
            }
        }
    }
    let out = match error {
        Some(e) => Err(e),
        None => Ok(collect(&plan.outputs, &st.values, &st.failed)),
    };
    // Everything this run held is dropped on return (`Memory`'s drop settles the ledger).
    drop(st.mem.take());
    out
}

fn report_worker_events(exec: &mut dyn Executor, callbacks: &[Arc<dyn Callbacks>]) {
    let mut events = Vec::new();
    exec.worker_events(&mut events);
    for e in &events {
        for cb in callbacks {
            cb.worker_event(e);
        }
    }
}

/// The name of a task node's (outermost) function.
fn function_of(plan: &Plan, node: u32) -> &'static str {
    plan.function(node)
}

/// Results at least this large are "large" for handing out jobs (see `drive`).
const LARGE_RESULT: usize = 1 << 20;

/// The largest result each function has returned in this run, by function id (`usize::MAX`:
/// none yet, so possibly large), and the largest of all.
struct ResultSizes(Vec<usize>, usize);

impl ResultSizes {
    fn new() -> ResultSizes {
        ResultSizes(Vec::new(), 0)
    }

    fn func(plan: &Plan, node: u32) -> Option<usize> {
        plan.spec(node).map(|s| s.func as usize)
    }

    /// Whether `node`'s result may be at least `from` bytes.
    fn large(&self, plan: &Plan, node: u32, from: usize) -> bool {
        Self::func(plan, node).is_some_and(|f| self.0.get(f).is_none_or(|&b| b >= from))
    }

    /// The largest result `node`'s function has returned so far.
    /// For a function that has not returned yet, the largest result of any function so far.
    fn expected(&self, plan: &Plan, node: u32) -> u64 {
        Self::func(plan, node).map_or(0, |f| match self.0.get(f) {
            Some(&b) if b != usize::MAX => b as u64,
            _ => self.1 as u64,
        })
    }

    /// Records the size of `node`'s result (see [`result_bytes`]).
    fn learn(&mut self, plan: &Plan, node: u32, bytes: usize) {
        let Some(f) = Self::func(plan, node) else {
            return;
        };
        if self.0.len() <= f {
            self.0.resize(f + 1, usize::MAX);
        }
        self.1 = self.1.max(bytes);
        let e = &mut self.0[f];
        *e = if *e == usize::MAX {
            bytes
        } else {
            (*e).max(bytes)
        };
    }
}

/// A result's size for handing out jobs: arrays, encoded values and strings, also inside lists
/// and maps (at most 64 elements of each are looked at; the rest are assumed alike), and a word
/// per other element.
fn result_bytes(v: &Value) -> usize {
    fn sized(v: &Value, depth: u32) -> usize {
        match v {
            Value::Array(_) | Value::Encoded(..) => v.array_bytes(),
            Value::Str(s) => s.len(),
            Value::List(l) if depth < 4 => sample(l.len(), l.iter().map(|x| sized(x, depth + 1))),
            Value::Map(m) if depth < 4 => {
                sample(m.len(), m.values().map(|x| 16 + sized(x, depth + 1)))
            }
            Value::List(l) => l.len() * 8,
            Value::Map(m) => m.len() * 16,
            _ => 8,
        }
    }
    fn sample(n: usize, sizes: impl Iterator<Item = usize>) -> usize {
        let (k, sum) = sizes
            .take(64)
            .fold((0usize, 0usize), |(k, s), b| (k + 1, s + b));
        sum.checked_div(k).map_or(0, |per| per * n)
    }
    sized(v, 0)
}

/// Longest chain handed out at once.
const MAX_CHAIN: usize = 4096;

fn make_job(
    plan: &Plan,
    node: u32,
    values: &[Option<Arc<Value>>],
    prev: Option<u32>,
    callbacks: &[Arc<dyn Callbacks>],
) -> Job {
    let spec = plan.spec_ref(node).expect("only tasks are queued");
    let inputs = plan
        .deps
        .get(node)
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if prev == Some(i as u32) {
                Arc::clone(placeholder())
            } else {
                values[d as usize].clone().expect("dependency computed")
            }
        })
        .collect();
    // A chain link's pretask fires when its result is back: it starts only after the link
    // before it, and never if that one fails.
    if prev.is_none() {
        for cb in callbacks {
            cb.pretask(&plan.keys[node as usize]);
        }
    }
    Job {
        node,
        spec,
        inputs,
        prev,
        send_back: true,
        options: plan.options(node),
        timed: !callbacks.is_empty(),
    }
}

/// A shared `Null` standing for a value that never left its worker.
pub(crate) fn placeholder() -> &'static Arc<Value> {
    static NULL: std::sync::OnceLock<Arc<Value>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| Arc::new(Value::Null))
}

/// A result as the engine holds it: `null` and the booleans (what tasks run for their effect
/// return) share one allocation each, everything else gets its own.
pub(crate) fn shared_value(v: Value) -> Arc<Value> {
    static SMALL: std::sync::OnceLock<[Arc<Value>; 3]> = std::sync::OnceLock::new();
    let small = || {
        SMALL.get_or_init(|| {
            [
                Arc::new(Value::Null),
                Arc::new(Value::Bool(false)),
                Arc::new(Value::Bool(true)),
            ]
        })
    };
    match v {
        Value::Null => Arc::clone(&small()[0]),
        Value::Bool(b) => Arc::clone(&small()[1 + usize::from(b)]),
        v => Arc::new(v),
    }
}

pub(crate) fn task_error(key: &Key, f: Failure) -> Error {
    Error::Task(Box::new(TaskError {
        key: key.clone(),
        function: f.function,
        kind: f.kind,
    }))
}

fn collect(
    out: &OutSpec,
    values: &[Option<Arc<Value>>],
    failed: &[Option<Arc<TaskError>>],
) -> Output {
    match out {
        OutSpec::One(i) => match failed.get(*i as usize).and_then(Option::as_ref) {
            Some(e) => Output::Failed(Box::new(TaskError::clone(e))),
            None => {
                let v = values[*i as usize]
                    .as_ref()
                    .expect("requested values are kept");
                Output::Value(Value::clone(v))
            }
        },
        OutSpec::List(l) => Output::List(l.iter().map(|o| collect(o, values, failed)).collect()),
    }
}
