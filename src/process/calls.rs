//! `map`, `submit`, `imap_unordered` and `get_async` on a process pool: calls of a
//! [`Callable`] (a registered name, or a typed task handle) per item.
//!
//! `map` runs through the engine (as a `get` of one task per item, so callbacks see it as
//! they see a `get`); `submit` and `imap_unordered` hand their units straight to the shared
//! runner as callers of their own (see `super::shared`), without an engine.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;

use forkgraph_worker::{Mismatch, Value};

use super::executor::ProcExec;
use super::runner::{Finished, PUnit, RunTask};
use super::{InGet, ProcessPool};
use crate::call::Callable;
use crate::engine::{self, Output};
use crate::error::{Error, GraphError, TaskError, TaskErrorKind};
use crate::graph::{Graph, Task};
use crate::handle::{Call, Calls, GetFuture, Submitted};
use crate::key::{Key, Keys};
use crate::plan::{Kind, OutSpec, Plan};
use crate::scheduler::{plan, GetOptions, Scheduler};

/// A call's graph holds only its own items, so a task of it that depends on a missing key was
/// given a key as an argument: say that, rather than that the key is not in the graph.
pub(crate) fn values_not_keys(e: Error) -> Error {
    match e {
        Error::Graph(GraphError::MissingDependency { key, dependency }) => {
            Error::Scheduler(format!(
                "{key}: the arguments of a submitted or mapped call must be values, not keys \
             (got key {dependency}; pass its value, or `get` a graph that has it)"
            ))
        }
        e => e,
    }
}

/// The key of item `i` of a map: `("map", i)`.
fn item_key(i: usize) -> Key {
    Key::from(("map", i))
}

/// The graph of one task per item, keyed `("map", i)`, and the list of its keys.
fn item_graph<F, A>(f: &F, items: impl IntoIterator<Item = A>) -> (Graph, Keys, usize)
where
    F: Callable<A> + ?Sized,
{
    keyed_graph(f, items, item_key)
}

/// The graph of one task per item, keyed by `key`, and the list of its keys.
pub(crate) fn keyed_graph<F, A>(
    f: &F,
    items: impl IntoIterator<Item = A>,
    key: impl Fn(usize) -> Key,
) -> (Graph, Keys, usize)
where
    F: Callable<A> + ?Sized,
{
    let mut g = Graph::new();
    let mut keys = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let k = key(i);
        g.insert(k.clone(), Task::new(f.function(), f.call_args(item)));
        keys.push(Keys::One(k));
    }
    let n = keys.len();
    (g, Keys::List(keys), n)
}

/// A result that is not of the type `F` returns, as a task error naming the key.
pub(crate) fn output_error(key: Key, function: &str, m: Mismatch) -> TaskError {
    TaskError {
        key,
        function: function.to_owned(),
        kind: TaskErrorKind::Output {
            expected: m.expected,
            got: m.got,
        },
    }
}

/// The value of a finished task (cloned only when someone else still holds it).
pub(crate) fn unshare(v: Arc<Value>) -> Value {
    Arc::try_unwrap(v).unwrap_or_else(|v| Value::clone(&v))
}

/// The plan nodes of a list request, in request order.
pub(crate) fn output_nodes(plan: &Plan) -> Vec<u32> {
    match &plan.outputs {
        OutSpec::List(l) => l
            .iter()
            .map(|o| match o {
                OutSpec::One(n) => *n,
                OutSpec::List(_) => unreachable!("items are single keys"),
            })
            .collect(),
        OutSpec::One(n) => vec![*n],
    }
}

/// One unit per requested node: the task with its literal arguments, tagged with its node.
fn item_units(plan: &Arc<Plan>, caller: u64, nodes: &[u32]) -> Result<Vec<PUnit>, Error> {
    let labels: Arc<dyn super::runner::Labels> = plan.clone();
    nodes
        .iter()
        .map(|&node| match &plan.kinds[node as usize] {
            Kind::Task(_) if plan.deps.get(node).is_empty() => Ok(PUnit::new(
                caller,
                Arc::clone(&labels),
                vec![RunTask {
                    spec: plan.spec_ref(node).expect("a task"),
                    inputs: Vec::new(),
                    prev: None,
                    send_back: true,
                    options: plan.options(node),
                    tag: node,
                }],
            )),
            _ => Err(Error::Scheduler(format!(
                "{}: the arguments of a submitted or mapped call must be values, not keys",
                plan.keys[node as usize]
            ))),
        })
        .collect()
}

/// `map_with` on any scheduler: a `get` of one task per item.
pub(crate) fn map_with_on<S, F, A, I>(
    s: &S,
    f: F,
    items: I,
    opts: &GetOptions,
) -> Result<Vec<F::Output>, Error>
where
    S: Scheduler + ?Sized,
    F: Callable<A>,
    I: IntoIterator<Item = A>,
{
    let opts = opts.clone().keep_going(false);
    map_results_with_on(s, f, items, &opts)?
        .into_iter()
        .map(|r| r.map_err(|e| Error::Task(Box::new(e))))
        .collect()
}

/// `map_results_with` on any scheduler: a `get` of one task per item.
#[allow(clippy::result_large_err)] // A `TaskError` per item, to match on as it is.
pub(crate) fn map_results_with_on<S, F, A, I>(
    s: &S,
    f: F,
    items: I,
    opts: &GetOptions,
) -> Result<Vec<Result<F::Output, TaskError>>, Error>
where
    S: Scheduler + ?Sized,
    F: Callable<A>,
    I: IntoIterator<Item = A>,
{
    let (g, keys, n) = item_graph(&f, items);
    if n == 0 {
        return Ok(Vec::new());
    }
    let out = s.get_with(&g, &keys, opts).map_err(values_not_keys)?;
    let list = match out {
        Output::List(l) => l,
        o => vec![o],
    };
    Ok(list
        .into_iter()
        .enumerate()
        .map(|(i, o)| match o {
            Output::Value(v) => f
                .output(v)
                .map_err(|m| output_error(item_key(i), f.function(), m)),
            Output::Failed(e) => Err(*e),
            Output::List(_) => unreachable!("items are single keys"),
        })
        .collect())
}

/// A finished task as the caller's result, converted by `f`.
#[allow(clippy::result_large_err)] // One per item, as `map_results` returns them.
fn convert<F, A>(f: &F, key: &Key, r: Finished) -> Result<F::Output, TaskError>
where
    F: Callable<A> + ?Sized,
{
    match r.result {
        Ok(v) => f
            .output(unshare(v))
            .map_err(|m| output_error(key.clone(), f.function(), m)),
        Err(e) => Err(TaskError {
            key: key.clone(),
            function: e.function,
            kind: e.kind,
        }),
    }
}

impl ProcessPool {
    /// Calls `f` on every item, in parallel; results in item order. `f` is a registered name
    /// (`pool.map("square", [1, 2, 3])`, results are [`Value`]s; several arguments per item
    /// with [`Args`](crate::Args)) or a typed task handle (results of its return type).
    ///
    /// # Errors
    /// As `get`: the first failing item's error names its key (`("map", index)`); a result
    /// not of `f`'s output type is [`TaskErrorKind::Output`].
    pub fn map<F, A, I>(&self, f: F, items: I) -> Result<Vec<F::Output>, Error>
    where
        F: Callable<A>,
        I: IntoIterator<Item = A>,
    {
        self.map_with(f, items, &GetOptions::default())
    }

    /// [`ProcessPool::map`] with options (callbacks: a progress bar, a profiler; they see the
    /// map as a `get` of one task per item).
    ///
    /// # Errors
    /// As [`ProcessPool::map`].
    pub fn map_with<F, A, I>(
        &self,
        f: F,
        items: I,
        opts: &GetOptions,
    ) -> Result<Vec<F::Output>, Error>
    where
        F: Callable<A>,
        I: IntoIterator<Item = A>,
    {
        map_with_on(self, f, items, opts)
    }

    /// [`ProcessPool::map`] that keeps going past failures: one result per item, its value or
    /// the error that stopped it (as `asyncio.gather(..., return_exceptions=True)`).
    ///
    /// # Errors
    /// Only when the call cannot run at all: an unknown function or wrong arguments (before
    /// anything runs), or a failure of the pool itself (Ctrl-C).
    pub fn map_results<F, A, I>(
        &self,
        f: F,
        items: I,
    ) -> Result<Vec<Result<F::Output, TaskError>>, Error>
    where
        F: Callable<A>,
        I: IntoIterator<Item = A>,
    {
        self.map_results_with(f, items, &GetOptions::default().keep_going(true))
    }

    /// [`ProcessPool::map_results`] with options.
    ///
    /// # Errors
    /// As [`ProcessPool::map_results`]; without [`GetOptions::keep_going`] the first failure
    /// is the error.
    #[allow(clippy::result_large_err)] // A `TaskError` per item, to match on as it is.
    pub fn map_results_with<F, A, I>(
        &self,
        f: F,
        items: I,
        opts: &GetOptions,
    ) -> Result<Vec<Result<F::Output, TaskError>>, Error>
    where
        F: Callable<A>,
        I: IntoIterator<Item = A>,
    {
        map_results_with_on(self, f, items, opts)
    }

    /// Calls `f` on every item, in parallel, and yields `(index, result)` as each finishes
    /// (Python's `imap_unordered`). The calls are handed to the pool at once and run as
    /// workers free up (while the iterator is read, or while another call drives the pool);
    /// dropping the iterator cancels those not yet finished.
    ///
    /// # Errors
    /// Before anything runs, when a function is unknown or arguments are wrong; a failed item
    /// is an `Err` item naming its key (`("map", index)`), and iteration goes on.
    pub fn imap_unordered<F, A, I>(&self, f: F, items: I) -> Result<Unordered<F, A>, Error>
    where
        F: Callable<A>,
        I: IntoIterator<Item = A>,
    {
        let (g, keys, _) = item_graph(&f, items);
        let plan = Arc::new(plan(&g, &keys, &GetOptions::default()).map_err(values_not_keys)?);
        let nodes = output_nodes(&plan);
        let shared = Arc::clone(self.shared());
        let caller = shared.register(false);
        let mut item_of = vec![0usize; plan.len()];
        for (i, &n) in nodes.iter().enumerate() {
            item_of[n as usize] = i;
        }
        let units = match item_units(&plan, caller, &nodes) {
            Ok(u) => u,
            Err(e) => {
                shared.leave(caller);
                return Err(e);
            }
        };
        let remaining = units.len();
        shared.submit(caller, units);
        Ok(Unordered::new(
            shared as Arc<dyn Calls>,
            caller,
            f,
            plan,
            item_of,
            remaining,
        ))
    }

    /// Runs one call of `f` (keyed `"submit"`) in the background (on the pool's driver thread when nobody else
    /// drives the workers); the handle waits for it, polls it, cancels it, or is awaited as a
    /// future. `item` is `f`'s argument (for a registered name: one [`IntoArg`](crate::IntoArg)
    /// value, or [`Args`](crate::Args)). Dropping the handle cancels the call.
    pub fn submit<F, A>(&self, f: F, item: A) -> Submitted<F::Output>
    where
        F: Callable<A> + Send + Sync + 'static,
    {
        self.submit_with(f, item, &GetOptions::default())
    }

    /// [`ProcessPool::submit`] with options: callbacks see the call as a `get` of one task
    /// (its `start` and `pretask` now, its end in the thread that takes the result).
    pub fn submit_with<F, A>(&self, f: F, item: A, opts: &GetOptions) -> Submitted<F::Output>
    where
        F: Callable<A> + Send + Sync + 'static,
    {
        let (g, keys, _) = keyed_graph(&f, [item], |_| Key::from("submit"));
        let plan = match plan(&g, &keys, opts).map_err(values_not_keys) {
            Ok(p) => Arc::new(p),
            Err(e) => return Submitted::failed(e),
        };
        let node = output_nodes(&plan)[0];
        let shared = Arc::clone(self.shared());
        // Its caller id is set when it is registered, together with its unit.
        let units = match item_units(&plan, 0, &[node]) {
            Ok(u) => u,
            Err(e) => return Submitted::failed(e),
        };
        let workers = match opts.callbacks.is_empty() {
            true => Vec::new(), // Only callbacks are told the workers.
            false => shared.layout(false).2,
        };
        // The callbacks' `start` and `pretask` come before the call can start.
        let call = Call::new(
            Arc::clone(&shared) as Arc<dyn Calls>,
            0,
            plan,
            node,
            opts.callbacks.clone(),
            &workers,
        );
        let caller = shared.register_with(true, units);
        Submitted::new(call.with_caller(caller), move |v| f.output(v))
    }

    /// `get` as a future, for async code: the graph runs in a thread of the pool's own (the
    /// engine of one `get`), and the future is woken from there; awaiting it never blocks the
    /// executor's thread. No async runtime is needed (any executor will do). Dropping the
    /// future cancels the `get`.
    pub fn get_async(&self, graph: &Graph, keys: impl Into<Keys>) -> GetFuture {
        self.get_async_with(graph, &keys.into(), &GetOptions::default())
    }

    /// [`ProcessPool::get_async`] with options (callbacks run in the pool's thread).
    pub fn get_async_with(&self, graph: &Graph, keys: &Keys, opts: &GetOptions) -> GetFuture {
        let plan = match plan(graph, keys, opts) {
            Ok(p) => Arc::new(p),
            Err(e) => return GetFuture::failed(e),
        };
        let budget = match self.budget(opts) {
            Ok(b) => b,
            Err(e) => return GetFuture::failed(e),
        };
        let shared = Arc::clone(self.shared());
        let caller = shared.register(false);
        let canceller = Arc::clone(&shared);
        let fut = GetFuture::new(move || canceller.cancel(caller));
        let done = fut.completer();
        let opts = opts.clone();
        let me = Arc::as_ptr(&self.inner) as usize;
        let spawned = std::thread::Builder::new()
            .name("forkgraph-get".into())
            .spawn(move || {
                let _inside = InGet::enter(me);
                let labels: Arc<dyn super::runner::Labels> = plan.clone();
                let watched = !opts.callbacks.is_empty();
                let mut exec = ProcExec::with_caller(&shared, caller, labels, watched);
                let r =
                    engine::run_with(&plan, &mut exec, &opts.callbacks, opts.keep_going, budget);
                drop(exec);
                done.complete(r);
            });
        match spawned {
            Ok(_) => fut,
            Err(e) => GetFuture::failed(Error::system("cannot start the get's thread", e)),
        }
    }
}

/// The iterator [`ProcessPool::imap_unordered`] returns: `(index, result)` in completion
/// order.
pub struct Unordered<F, A>
where
    F: Callable<A>,
{
    shared: Arc<dyn Calls>,
    caller: u64,
    f: F,
    plan: Arc<Plan>,
    item_of: Vec<usize>,
    remaining: usize,
    buf: VecDeque<Finished>,
    _item: PhantomData<fn(A)>,
}

impl<F: Callable<A>, A> Unordered<F, A> {
    /// The iterator over `caller`'s `remaining` results; `item_of` maps a plan node to its
    /// item's index.
    pub(crate) fn new(
        shared: Arc<dyn Calls>,
        caller: u64,
        f: F,
        plan: Arc<Plan>,
        item_of: Vec<usize>,
        remaining: usize,
    ) -> Unordered<F, A> {
        Unordered {
            shared,
            caller,
            f,
            plan,
            item_of,
            remaining,
            buf: VecDeque::new(),
            _item: PhantomData,
        }
    }
}

impl<F: Callable<A>, A> std::fmt::Debug for Unordered<F, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unordered")
            .field("function", &self.f.function())
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<F: Callable<A>, A> Iterator for Unordered<F, A> {
    type Item = Result<(usize, F::Output), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            if self.remaining == 0 {
                return None;
            }
            let mut out = Vec::new();
            if let Err(e) = self.shared.wait(self.caller, &mut out, None) {
                self.remaining = 0;
                return Some(Err(e));
            }
            self.buf.extend(out);
        }
        let r = self.buf.pop_front()?;
        self.remaining -= 1;
        let key = &self.plan.keys[r.tag as usize];
        let i = self.item_of[r.tag as usize];
        Some(
            convert(&self.f, key, r)
                .map(|v| (i, v))
                .map_err(|e| Error::Task(Box::new(e))),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<F: Callable<A>, A> Drop for Unordered<F, A> {
    fn drop(&mut self) {
        self.shared.leave(self.caller);
    }
}
