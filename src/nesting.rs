//! The nesting bound: how deep task arguments, literal values and requests may nest, checked
//! without recursion before anything recursive looks at them.
//!
//! Planning, evaluation in the worker (`forkgraph_worker::exec`), the wire format (postcard),
//! cloning and dropping of values and the output of `get` all recurse once per level of
//! nesting. Checking the depth first, with an explicit stack, turns "the parent's stack
//! overflowed and the program aborted" into a [`GraphError`](crate::GraphError) naming the key.

use std::collections::btree_map;

use forkgraph_worker::{SpecArg, Value};

use crate::graph::{Arg, Node};
use crate::key::{Key, Keys};

/// How many levels task arguments, literal values and requested keys may nest.
///
/// Every list `[...]`, map `{...}` and nested task `(f, ...)` in a task's arguments counts one
/// level, and so does every list or map inside a literal [`Value`] (in an argument or as a
/// literal node); a list of requested keys counts one level of the request. Anything nested
/// deeper is refused by `get` before any task runs, with
/// [`GraphError::NestedTooDeep`](crate::GraphError::NestedTooDeep) naming the key, or
/// [`GraphError::RequestTooDeep`](crate::GraphError::RequestTooDeep).
///
/// The limit keeps every recursive step downstream (compiling the task, evaluating its arguments
/// in a worker, encoding it for a worker process, cloning and dropping values, building the
/// output) within a fraction of a 2 MiB thread stack, even in an unoptimized build: there the
/// tightest step (four-argument tasks nested in each other, evaluated on a thread) overflows
/// such a stack past about 870 levels, lists past about 1,450, maps past about 1,100.
/// `tests/nesting.rs` runs graphs nested exactly this deep on every scheduler from such a
/// thread.
///
/// [`Keys`] and [`Arg`] drop without recursion, however deep; a [`Value`] nested very deep (far
/// beyond this limit) still drops recursively, as Rust's own nested types do.
pub const MAX_NESTING: usize = 256;

/// What went wrong walking a node's key references.
pub(crate) enum Walk<E> {
    /// The callback failed.
    Stopped(E),
    /// The node nests deeper than [`MAX_NESTING`].
    TooDeep,
}

/// One level of an argument tree being walked: the children not yet visited.
pub(crate) enum Level<'g> {
    Args(std::slice::Iter<'g, Arg>),
    Pairs(std::slice::Iter<'g, (String, Arg)>),
    Values(std::slice::Iter<'g, Value>),
    ValueMap(btree_map::Values<'g, String, Value>),
}

/// A child of an argument tree.
enum Child<'g> {
    Arg(&'g Arg),
    Value(&'g Value),
}

impl<'g> Level<'g> {
    fn next(&mut self) -> Option<Child<'g>> {
        match self {
            Level::Args(it) => it.next().map(Child::Arg),
            Level::Pairs(it) => it.next().map(|(_, a)| Child::Arg(a)),
            Level::Values(it) => it.next().map(Child::Value),
            Level::ValueMap(it) => it.next().map(Child::Value),
        }
    }
}

/// The children of a container, or `None` for a leaf.
fn level_of_value(v: &Value) -> Option<Level<'_>> {
    match v {
        Value::List(l) => Some(Level::Values(l.iter())),
        Value::Map(m) => Some(Level::ValueMap(m.values())),
        _ => None,
    }
}

fn level_of(c: Child<'_>) -> Result<Option<Level<'_>>, &Key> {
    match c {
        Child::Arg(Arg::Key(k)) => Err(k),
        Child::Arg(Arg::Value(v)) | Child::Value(v) => Ok(level_of_value(v)),
        Child::Arg(Arg::List(l)) => Ok(Some(Level::Args(l.iter()))),
        Child::Arg(Arg::Map(m)) => Ok(Some(Level::Pairs(m.iter()))),
        Child::Arg(Arg::Task(t)) => Ok(Some(Level::Args(t.args.iter()))),
    }
}

/// Calls `f` on every key reference of `node`, in argument order, and checks that the node
/// nests at most [`MAX_NESTING`] levels deep; stops at the first failure of either. Iterative:
/// `stack` is scratch space (one entry per level), reused across nodes.
pub(crate) fn for_each_dep<'g, E>(
    node: &'g Node,
    stack: &mut Vec<Level<'g>>,
    f: &mut impl FnMut(&'g Key) -> Result<(), E>,
) -> Result<(), Walk<E>> {
    let args = match node {
        Node::Task(t) => &t.args,
        Node::Alias(k) => return f(k).map_err(Walk::Stopped),
        Node::Value(v) => {
            stack.clear();
            return match level_of_value(v) {
                Some(l) => walk(stack, l, f),
                None => Ok(()),
            };
        }
    };
    for a in args {
        // Most arguments are key references or plain literals: no walk.
        match level_of(Child::Arg(a)) {
            Err(k) => f(k).map_err(Walk::Stopped)?,
            Ok(None) => {}
            Ok(Some(l)) => {
                stack.clear();
                walk(stack, l, f)?;
            }
        }
    }
    Ok(())
}

/// Walks the tree below a top-level container (depth 1).
fn walk<'g, E>(
    stack: &mut Vec<Level<'g>>,
    top: Level<'g>,
    f: &mut impl FnMut(&'g Key) -> Result<(), E>,
) -> Result<(), Walk<E>> {
    stack.push(top);
    while let Some(level) = stack.last_mut() {
        // A run of key references (a list of inputs, the usual fan-in) without the general step.
        if let Level::Args(it) = level {
            while let Some(Arg::Key(k)) = it.as_slice().first() {
                it.next();
                f(k).map_err(Walk::Stopped)?;
            }
        }
        let Some(child) = level.next() else {
            stack.pop();
            continue;
        };
        match level_of(child) {
            Err(k) => f(k).map_err(Walk::Stopped)?,
            Ok(None) => {}
            Ok(Some(l)) => {
                if stack.len() >= MAX_NESTING {
                    return Err(Walk::TooDeep);
                }
                stack.push(l);
            }
        }
    }
    Ok(())
}

/// Whether a request nests lists of keys deeper than [`MAX_NESTING`].
pub(crate) fn request_too_deep(request: &Keys) -> bool {
    let Keys::List(top) = request else {
        return false;
    };
    let mut stack = vec![top.iter()];
    while let Some(level) = stack.last_mut() {
        match level.next() {
            None => {
                stack.pop();
            }
            Some(Keys::One(_)) => {}
            Some(Keys::List(l)) => {
                if stack.len() >= MAX_NESTING {
                    return true;
                }
                stack.push(l.iter());
            }
        }
    }
    false
}

/// How deep a compiled task's arguments nest (lists, maps, nested tasks and the lists and maps
/// of literals each count one level, as for [`for_each_dep`]). Used by the optimizations, which
/// nest specs into specs.
pub(crate) fn spec_depth(args: &[SpecArg]) -> usize {
    enum L<'a> {
        Args(std::slice::Iter<'a, SpecArg>),
        Pairs(std::slice::Iter<'a, (String, SpecArg)>),
        Values(std::slice::Iter<'a, Value>),
        ValueMap(btree_map::Values<'a, String, Value>),
    }
    fn value(v: &Value) -> Option<L<'_>> {
        match v {
            Value::List(l) => Some(L::Values(l.iter())),
            Value::Map(m) => Some(L::ValueMap(m.values())),
            _ => None,
        }
    }
    fn arg(a: &SpecArg) -> Option<L<'_>> {
        match a {
            SpecArg::Input(_) => None,
            SpecArg::Lit(v) => value(v),
            SpecArg::List(l) => Some(L::Args(l.iter())),
            SpecArg::Map(m) => Some(L::Pairs(m.iter())),
            SpecArg::Task(t) => Some(L::Args(t.args.iter())),
            // A list (one level) of inputs.
            SpecArg::Inputs { .. } => Some(L::Args([].iter())),
        }
    }
    let mut deepest = 0;
    let mut stack = vec![L::Args(args.iter())];
    while let Some(level) = stack.last_mut() {
        let child = match level {
            L::Args(it) => it.next().map(arg),
            L::Pairs(it) => it.next().map(|(_, a)| arg(a)),
            L::Values(it) => it.next().map(value),
            L::ValueMap(it) => it.next().map(value),
        };
        match child {
            None => {
                stack.pop();
            }
            Some(None) => {}
            Some(Some(l)) => {
                stack.push(l);
                deepest = deepest.max(stack.len() - 1);
            }
        }
    }
    deepest
}
