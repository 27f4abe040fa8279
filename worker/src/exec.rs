//! Running one task: evaluate its argument tree, call the function, catch panics.
//!
//! The same code runs in the calling thread (sync), in pool threads and in worker processes, so
//! a task behaves identically on every scheduler.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::convert::ArgValue;
use crate::registry::{CallError, FnId, Function, Registry};
use crate::value::Value;

/// A task as workers receive it: a function id and an argument tree whose leaves are literals or
/// indices into the task's inputs. The owned form of a task: build one and [`run`] it, or keep
/// many in a [`SpecStore`], which holds their arguments in one allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The function to call.
    pub func: FnId,
    /// Its arguments.
    pub args: Vec<SpecArg>,
}

impl TaskSpec {
    /// The task borrowed, as [`run`] and the wire take it.
    pub fn view(&self) -> TaskView<'_> {
        TaskView {
            func: self.func,
            args: &self.args,
        }
    }
}

/// A task borrowed: a function id and its arguments, wherever they are kept (a [`TaskSpec`],
/// a [`SpecStore`]). Serializes exactly as the [`TaskSpec`] it views, so a worker decodes a
/// view sent as a `TaskSpec`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename = "TaskSpec")]
pub struct TaskView<'a> {
    /// The function to call.
    pub func: FnId,
    /// Its arguments.
    pub args: &'a [SpecArg],
}

impl TaskView<'_> {
    /// An owned copy of the task.
    pub fn to_spec(&self) -> TaskSpec {
        TaskSpec {
            func: self.func,
            args: self.args.to_vec(),
        }
    }
}

impl<'a> From<&'a TaskSpec> for TaskView<'a> {
    fn from(spec: &'a TaskSpec) -> TaskView<'a> {
        spec.view()
    }
}

impl<'a> From<&'a SpecRef> for TaskView<'a> {
    fn from(spec: &'a SpecRef) -> TaskView<'a> {
        spec.view()
    }
}

/// Many tasks in one store: the top-level arguments of all of them in one vector, each task a
/// function id and a range of it. Building a store of `n` tasks whose arguments are literals,
/// inputs and lists of consecutive inputs allocates nothing per task (nested tasks, lists and
/// maps keep allocations of their own). A planned graph keeps its compiled tasks in one store,
/// shared by the jobs that run them through [`SpecRef`].
///
/// ```
/// use forkgraph_worker::{SpecArg, SpecStore, Value};
///
/// let mut store = SpecStore::new();
/// let first = store.push(0, [SpecArg::Input(0), SpecArg::Lit(Value::Int(1))]);
/// let second = store.push(0, []);
/// assert_eq!((first, second), (0, 1));
/// assert_eq!(store.get(first).args.len(), 2);
/// assert!(store.get(second).args.is_empty());
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct SpecStore {
    /// Per task: its function and where its arguments end in `args` (they start where the
    /// previous task's end, or at 0).
    tasks: Vec<(FnId, u32)>,
    /// The arguments of every task, task after task.
    args: Vec<SpecArg>,
}

impl SpecStore {
    /// An empty store.
    pub fn new() -> SpecStore {
        SpecStore::default()
    }

    /// An empty store with room for `tasks` tasks of `args` arguments in all.
    pub fn with_capacity(tasks: usize, args: usize) -> SpecStore {
        SpecStore {
            tasks: Vec::with_capacity(tasks),
            args: Vec::with_capacity(args),
        }
    }

    /// How many tasks the store holds.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the store holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Adds a task calling `func` with `args`; returns its index.
    ///
    /// # Panics
    /// When the store would hold more than `u32::MAX` tasks or arguments.
    pub fn push(&mut self, func: FnId, args: impl IntoIterator<Item = SpecArg>) -> u32 {
        self.try_push(
            func,
            args.into_iter()
                .map(Ok::<SpecArg, std::convert::Infallible>),
        )
        .unwrap_or_else(|never| match never {})
    }

    /// Adds a task calling `func` with the arguments `args` yields, all or nothing: at the first
    /// error the store is left as it was and the error returned; when `args` panics, the store
    /// is left as it was too. Returns the task's index.
    ///
    /// # Errors
    /// The first error `args` yields.
    ///
    /// # Panics
    /// When the store would hold more than `u32::MAX` tasks or arguments.
    pub fn try_push<E>(
        &mut self,
        func: FnId,
        args: impl IntoIterator<Item = Result<SpecArg, E>>,
    ) -> Result<u32, E> {
        // All or nothing, also when `args` panics midway (or the size check below does):
        // the guard takes the arguments pushed so far back out unless disarmed.
        struct Undo<'s> {
            args: &'s mut Vec<SpecArg>,
            start: usize,
        }
        impl Drop for Undo<'_> {
            fn drop(&mut self) {
                self.args.truncate(self.start);
            }
        }
        let undo = Undo {
            start: self.args.len(),
            args: &mut self.args,
        };
        for a in args {
            undo.args.push(a?);
        }
        let index = u32::try_from(self.tasks.len()).expect("at most u32::MAX tasks in a store");
        let end = u32::try_from(undo.args.len()).expect("at most u32::MAX arguments in a store");
        std::mem::forget(undo);
        self.tasks.push((func, end));
        Ok(index)
    }

    /// Task `index`.
    ///
    /// # Panics
    /// When `index` is not the index of a task of the store.
    pub fn get(&self, index: u32) -> TaskView<'_> {
        let (func, range) = self.locate(index);
        TaskView {
            func,
            args: &self.args[range],
        }
    }

    /// The arguments of task `index`, for editing in place (their number is the task's).
    ///
    /// # Panics
    /// When `index` is not the index of a task of the store.
    pub fn args_mut(&mut self, index: u32) -> &mut [SpecArg] {
        let (_, range) = self.locate(index);
        &mut self.args[range]
    }

    /// The tasks, in index order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = TaskView<'_>> + '_ {
        (0..self.tasks.len() as u32).map(|i| self.get(i))
    }

    fn locate(&self, index: u32) -> (FnId, std::ops::Range<usize>) {
        let i = index as usize;
        let Some(&(func, end)) = self.tasks.get(i) else {
            panic!("no task {index} in a store of {} tasks", self.tasks.len());
        };
        let start = if i == 0 { 0 } else { self.tasks[i - 1].1 };
        (func, start as usize..end as usize)
    }
}

impl std::fmt::Debug for SpecStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<TaskSpec> for SpecStore {
    fn from_iter<T: IntoIterator<Item = TaskSpec>>(iter: T) -> SpecStore {
        let mut store = SpecStore::new();
        for spec in iter {
            store.push(spec.func, spec.args);
        }
        store
    }
}

/// A compiled task held by reference count: one task of a [`SpecStore`] that holds every task
/// of a plan (cloning a reference counts, never copies), or a spec of its own. [`view`] borrows
/// the task; on the wire it is a [`TaskSpec`].
///
/// [`view`]: SpecRef::view
#[derive(Clone)]
pub struct SpecRef(SpecIn);

#[derive(Clone)]
enum SpecIn {
    /// A spec of its own (as a worker decodes it).
    Own(Arc<TaskSpec>),
    /// The task at an index of a plan's store.
    Store(Arc<SpecStore>, u32),
}

impl SpecRef {
    /// A reference to a spec of its own.
    pub fn new(spec: TaskSpec) -> SpecRef {
        SpecRef(SpecIn::Own(Arc::new(spec)))
    }

    /// Task `index` of `store`.
    ///
    /// # Panics
    /// When `index` is not the index of a task of `store`.
    pub fn in_store(store: &Arc<SpecStore>, index: u32) -> SpecRef {
        assert!(
            (index as usize) < store.len(),
            "no task {index} in a store of {} tasks",
            store.len()
        );
        SpecRef(SpecIn::Store(Arc::clone(store), index))
    }

    /// The task, borrowed.
    pub fn view(&self) -> TaskView<'_> {
        match &self.0 {
            SpecIn::Own(s) => s.view(),
            SpecIn::Store(store, i) => store.get(*i),
        }
    }

    /// The task's function.
    pub fn func(&self) -> FnId {
        self.view().func
    }

    /// The task's arguments.
    pub fn args(&self) -> &[SpecArg] {
        self.view().args
    }

    /// An owned copy of the task.
    pub fn to_spec(&self) -> TaskSpec {
        self.view().to_spec()
    }
}

/// As the [`TaskSpec`] it refers to.
impl std::fmt::Debug for SpecRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let spec = self.view();
        f.debug_struct("TaskSpec")
            .field("func", &spec.func)
            .field("args", &spec.args)
            .finish()
    }
}

impl PartialEq for SpecRef {
    fn eq(&self, other: &SpecRef) -> bool {
        self.view() == other.view()
    }
}

impl Serialize for SpecRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(s)
    }
}

impl<'de> Deserialize<'de> for SpecRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SpecRef, D::Error> {
        TaskSpec::deserialize(d).map(SpecRef::new)
    }
}

/// One argument of a [`TaskSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SpecArg {
    /// A literal value.
    Lit(Value),
    /// The result of another task: an index into the inputs passed to [`run`].
    Input(u32),
    /// A list of arguments.
    List(Vec<SpecArg>),
    /// A map of arguments.
    Map(Vec<(String, SpecArg)>),
    /// A nested task, evaluated in place.
    Task(Box<TaskSpec>),
    /// A list of consecutive inputs, `[Input(first), Input(first + 1), ..]` (`count` of them):
    /// what a list of distinct keys compiles to, in 8 bytes instead of one argument per key.
    Inputs {
        /// The first input's index.
        first: u32,
        /// How many inputs the list holds.
        count: u32,
    },
}

/// Inputs of a task, by index.
pub trait Inputs {
    /// Input `i`.
    fn input(&self, i: u32) -> &Value;
}

impl Inputs for [Arc<Value>] {
    fn input(&self, i: u32) -> &Value {
        &self[i as usize]
    }
}

impl Inputs for [&Value] {
    fn input(&self, i: u32) -> &Value {
        self[i as usize]
    }
}

impl Inputs for [Value] {
    fn input(&self, i: u32) -> &Value {
        &self[i as usize]
    }
}

/// A task (or one of its nested tasks) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{function}: {error}")]
pub struct TaskFailure {
    /// Name of the function that failed (the innermost one for nested tasks).
    pub function: String,
    /// What went wrong.
    pub error: CallError,
}

/// Runs a task: a [`TaskSpec`], a [`SpecRef`] or a [`TaskView`] (of a [`SpecStore`]), each
/// by reference. Panics in the function are caught and returned as [`CallError::Panicked`].
///
/// # Errors
/// [`TaskFailure`] naming the function and the cause.
pub fn run<'a, I: Inputs + ?Sized>(
    spec: impl Into<TaskView<'a>>,
    inputs: &I,
) -> Result<Value, TaskFailure> {
    let spec = spec.into();
    call(Registry::global(), spec.func, spec.args, inputs)
}

/// Text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

fn name_of(reg: &Registry, id: FnId) -> String {
    reg.get(id)
        .map_or_else(|| format!("#{id}"), |f| f.name.to_owned())
}

// Nested arguments are evaluated recursively: `eval` -> `call` -> `call_1`.. -> `eval` per
// nested task, `eval` -> `eval_list` -> `eval` per list or map. The planner bounds the nesting
// (forkgraph's `MAX_NESTING`); each step of the recursion is its own small function so that an
// unoptimized build needs little stack per level (one function holding every arity's
// temporaries took 6.5 KiB of stack per nested task).
fn call<I: Inputs + ?Sized>(
    reg: &Registry,
    func: FnId,
    args: &[SpecArg],
    inputs: &I,
) -> Result<Value, TaskFailure> {
    let Some(f) = reg.get(func) else {
        return Err(unknown(reg, func));
    };
    // Arguments are evaluated in order (the first error wins), then checked, then passed. Up to
    // four live on the stack, which spares most tasks an allocation.
    match args {
        [] => apply(f, &[]),
        [a] => call_1(reg, f, a, inputs),
        [a, b] => call_2(reg, f, [a, b], inputs),
        [a, b, c] => call_3(reg, f, [a, b, c], inputs),
        [a, b, c, d] => call_4(reg, f, [a, b, c, d], inputs),
        more => call_n(reg, f, more, inputs),
    }
}

#[cold]
#[inline(never)]
fn unknown(reg: &Registry, func: FnId) -> TaskFailure {
    TaskFailure {
        function: name_of(reg, func),
        error: CallError::Unknown(format!("#{func}")),
    }
}

/// `eval` with an early return, written out: `?` keeps more temporaries on the stack of an
/// unoptimized build.
macro_rules! eval_or_return {
    ($reg:expr, $a:expr, $inputs:expr) => {
        match eval($reg, $a, $inputs) {
            Ok(v) => v,
            Err(e) => return Err(e),
        }
    };
}

#[inline(never)]
fn call_1<I: Inputs + ?Sized>(
    reg: &Registry,
    f: &Function,
    a: &SpecArg,
    inputs: &I,
) -> Result<Value, TaskFailure> {
    let a = eval_or_return!(reg, a, inputs);
    apply(f, &[a])
}

#[inline(never)]
fn call_2<I: Inputs + ?Sized>(
    reg: &Registry,
    f: &Function,
    [a, b]: [&SpecArg; 2],
    inputs: &I,
) -> Result<Value, TaskFailure> {
    let a = eval_or_return!(reg, a, inputs);
    let b = eval_or_return!(reg, b, inputs);
    apply(f, &[a, b])
}

#[inline(never)]
fn call_3<I: Inputs + ?Sized>(
    reg: &Registry,
    f: &Function,
    [a, b, c]: [&SpecArg; 3],
    inputs: &I,
) -> Result<Value, TaskFailure> {
    let a = eval_or_return!(reg, a, inputs);
    let b = eval_or_return!(reg, b, inputs);
    let c = eval_or_return!(reg, c, inputs);
    apply(f, &[a, b, c])
}

#[inline(never)]
fn call_4<I: Inputs + ?Sized>(
    reg: &Registry,
    f: &Function,
    [a, b, c, d]: [&SpecArg; 4],
    inputs: &I,
) -> Result<Value, TaskFailure> {
    let a = eval_or_return!(reg, a, inputs);
    let b = eval_or_return!(reg, b, inputs);
    let c = eval_or_return!(reg, c, inputs);
    let d = eval_or_return!(reg, d, inputs);
    apply(f, &[a, b, c, d])
}

#[inline(never)]
fn call_n<I: Inputs + ?Sized>(
    reg: &Registry,
    f: &Function,
    args: &[SpecArg],
    inputs: &I,
) -> Result<Value, TaskFailure> {
    apply(f, &collect_exact(args, |a| eval(reg, a, inputs))?)
}

/// Maps `items` into a vector of exactly their length (collecting into a `Result` would grow it
/// step by step).
#[doc(hidden)]
pub fn collect_exact<'a, T, U, E>(
    items: &'a [T],
    mut f: impl FnMut(&'a T) -> Result<U, E>,
) -> Result<Vec<U>, E> {
    let mut out = Vec::with_capacity(items.len());
    for x in items {
        out.push(f(x)?);
    }
    Ok(out)
}

fn apply(f: &Function, args: &[ArgValue<'_>]) -> Result<Value, TaskFailure> {
    if args.len() != f.params.len() {
        return Err(TaskFailure {
            function: f.name.to_owned(),
            error: CallError::Arity {
                expected: f.params.len(),
                got: args.len(),
            },
        });
    }
    // Catching here (not once around the whole task) names the function that panicked, also
    // inside nested tasks.
    match catch_unwind(AssertUnwindSafe(|| (f.call)(args))) {
        Ok(r) => r.map_err(|error| TaskFailure {
            function: f.name.to_owned(),
            error,
        }),
        Err(payload) => Err(TaskFailure {
            function: f.name.to_owned(),
            error: CallError::Panicked(panic_message(payload.as_ref())),
        }),
    }
}

fn eval<'a, I: Inputs + ?Sized>(
    reg: &Registry,
    arg: &'a SpecArg,
    inputs: &'a I,
) -> Result<ArgValue<'a>, TaskFailure> {
    match arg {
        SpecArg::Lit(v) => Ok(ArgValue::Ref(v)),
        SpecArg::Input(i) => Ok(ArgValue::Ref(inputs.input(*i))),
        SpecArg::List(items) => eval_list(reg, items, inputs),
        SpecArg::Map(items) => eval_map(reg, items, inputs),
        SpecArg::Task(t) => call(reg, t.func, &t.args, inputs).map(ArgValue::Owned),
        SpecArg::Inputs { first, count } => Ok(eval_inputs(*first, *count, inputs)),
    }
}

#[inline(never)]
fn eval_inputs<'a, I: Inputs + ?Sized>(first: u32, count: u32, inputs: &'a I) -> ArgValue<'a> {
    let mut out = Vec::with_capacity(count as usize);
    for i in first..first.saturating_add(count) {
        out.push(ArgValue::Ref(inputs.input(i)));
    }
    ArgValue::List(out)
}

#[inline(never)]
fn eval_list<'a, I: Inputs + ?Sized>(
    reg: &Registry,
    items: &'a [SpecArg],
    inputs: &'a I,
) -> Result<ArgValue<'a>, TaskFailure> {
    let mut out = Vec::with_capacity(items.len());
    for a in items {
        out.push(eval_or_return!(reg, a, inputs));
    }
    Ok(ArgValue::List(out))
}

#[inline(never)]
fn eval_map<'a, I: Inputs + ?Sized>(
    reg: &Registry,
    items: &'a [(String, SpecArg)],
    inputs: &'a I,
) -> Result<ArgValue<'a>, TaskFailure> {
    let mut out = Vec::with_capacity(items.len());
    for (k, a) in items {
        out.push((k.as_str(), eval_or_return!(reg, a, inputs)));
    }
    Ok(ArgValue::Map(out))
}
