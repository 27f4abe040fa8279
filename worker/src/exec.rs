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
/// indices into the task's inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The function to call.
    pub func: FnId,
    /// Its arguments.
    pub args: Vec<SpecArg>,
}

/// A compiled task held by reference count: one spec of an arena that holds every spec of a
/// plan (one allocation for all of them; cloning a reference counts, never copies), or a spec
/// of its own. Dereferences to the [`TaskSpec`]; on the wire it is the spec itself.
#[derive(Clone)]
pub struct SpecRef(SpecIn);

#[derive(Clone)]
enum SpecIn {
    /// A spec of its own (as a worker decodes it).
    Own(Arc<TaskSpec>),
    /// The spec at an index of a plan's arena.
    Arena(Arc<Vec<TaskSpec>>, u32),
}

impl SpecRef {
    /// A reference to a spec of its own.
    pub fn new(spec: TaskSpec) -> SpecRef {
        SpecRef(SpecIn::Own(Arc::new(spec)))
    }

    /// The spec at `index` of `arena`.
    ///
    /// # Panics
    /// When `index` is not an index of `arena`.
    pub fn in_arena(arena: &Arc<Vec<TaskSpec>>, index: u32) -> SpecRef {
        assert!(
            (index as usize) < arena.len(),
            "spec {index} of an arena of {}",
            arena.len()
        );
        SpecRef(SpecIn::Arena(Arc::clone(arena), index))
    }
}

impl std::ops::Deref for SpecRef {
    type Target = TaskSpec;
    fn deref(&self) -> &TaskSpec {
        match &self.0 {
            SpecIn::Own(s) => s,
            SpecIn::Arena(a, i) => &a[*i as usize],
        }
    }
}

impl std::fmt::Debug for SpecRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        TaskSpec::fmt(self, f)
    }
}

impl PartialEq for SpecRef {
    fn eq(&self, other: &SpecRef) -> bool {
        **self == **other
    }
}

impl Serialize for SpecRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TaskSpec::serialize(self, s)
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

/// Runs a task. Panics in the function are caught and returned as [`CallError::Panicked`].
///
/// # Errors
/// [`TaskFailure`] naming the function and the cause.
pub fn run<I: Inputs + ?Sized>(spec: &TaskSpec, inputs: &I) -> Result<Value, TaskFailure> {
    call(Registry::global(), spec, inputs)
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
    spec: &TaskSpec,
    inputs: &I,
) -> Result<Value, TaskFailure> {
    let Some(f) = reg.get(spec.func) else {
        return Err(unknown(reg, spec.func));
    };
    // Arguments are evaluated in order (the first error wins), then checked, then passed. Up to
    // four live on the stack, which spares most tasks an allocation.
    match spec.args.as_slice() {
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
        SpecArg::Task(t) => call(reg, t, inputs).map(ArgValue::Owned),
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
