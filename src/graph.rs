//! The graph a user writes: a map from [`Key`] to [`Node`], as in Dask's custom graphs.

use std::fmt;

use indexmap::IndexMap;
use rustc_hash::{FxBuildHasher, FxHashMap};

use forkgraph_worker::Value;

use crate::key::Key;

/// A task: a registered function (by name) and its arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Name of the registered function.
    pub func: String,
    /// Its arguments.
    pub args: Vec<Arg>,
}

impl Task {
    /// A task calling `func` with `args`.
    pub fn new(func: impl Into<String>, args: Vec<Arg>) -> Task {
        Task {
            func: func.into(),
            args,
        }
    }
}

/// An argument of a task.
///
/// Lists, maps and nested tasks nest up to [`MAX_NESTING`](crate::MAX_NESTING) levels deep
/// (lists and maps inside a literal [`Value`] count too); a task nested deeper is refused with
/// [`GraphError::NestedTooDeep`](crate::GraphError::NestedTooDeep) before any task runs.
///
/// Dropping an `Arg` does not recurse through its lists, maps and nested tasks, however deep
/// they are (a literal [`Value`] inside it drops as values do, recursively). `Arg` implements
/// `Drop`, so it cannot be destructured by moving its fields out; match on a reference instead.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A literal value, passed as it is.
    Value(Value),
    /// The result of another key (an explicit reference: strings are never taken for keys).
    Key(Key),
    /// A list of arguments.
    List(Vec<Arg>),
    /// A map of arguments.
    Map(Vec<(String, Arg)>),
    /// A nested task, evaluated in place when its parent runs.
    Task(Task),
}

impl Arg {
    /// Whether dropping this argument drops further lists, maps or nested tasks.
    fn has_nested(&self) -> bool {
        match self {
            Arg::Value(_) | Arg::Key(_) => false,
            Arg::List(l) => !l.is_empty(),
            Arg::Map(m) => !m.is_empty(),
            Arg::Task(t) => !t.args.is_empty(),
        }
    }
}

impl Drop for Arg {
    fn drop(&mut self) {
        // The derived drop would recurse once per level: arguments nested 100,000 deep would
        // overflow the stack. Arguments whose children are leaves (the usual case) take the
        // fast path.
        let nested = match self {
            Arg::Value(_) | Arg::Key(_) => return,
            Arg::List(l) => l.iter().any(Arg::has_nested),
            Arg::Map(m) => m.iter().any(|(_, a)| a.has_nested()),
            Arg::Task(t) => t.args.iter().any(Arg::has_nested),
        };
        if !nested {
            return;
        }
        fn take(a: &mut Arg, stack: &mut Vec<Arg>) {
            match a {
                Arg::Value(_) | Arg::Key(_) => {}
                Arg::List(l) => stack.append(l),
                Arg::Map(m) => stack.extend(m.drain(..).map(|(_, a)| a)),
                Arg::Task(t) => stack.append(&mut t.args),
            }
        }
        let mut stack = Vec::new();
        take(self, &mut stack);
        while let Some(mut a) = stack.pop() {
            take(&mut a, &mut stack);
            // `a` is now a leaf or empty: dropping it does not recurse.
        }
    }
}

/// What a key of the graph stands for.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A task to run.
    Task(Task),
    /// A literal value.
    Value(Value),
    /// Another key's value under this key too.
    Alias(Key),
}

/// A reference to a key, for use as an argument or an alias: `key("load-1")`, `key(("x", 0))`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyRef(pub Key);

/// Refers to a key of the graph (see [`KeyRef`]).
pub fn key(k: impl Into<Key>) -> KeyRef {
    KeyRef(k.into())
}

impl From<KeyRef> for Arg {
    fn from(k: KeyRef) -> Arg {
        Arg::Key(k.0)
    }
}

/// Conversion into an [`Arg`], used by [`graph!`](crate::graph!).
pub trait IntoArg {
    /// Converts.
    fn into_arg(self) -> Arg;
}

impl IntoArg for KeyRef {
    fn into_arg(self) -> Arg {
        Arg::Key(self.0)
    }
}

impl IntoArg for Arg {
    fn into_arg(self) -> Arg {
        self
    }
}

impl IntoArg for Task {
    fn into_arg(self) -> Arg {
        Arg::Task(self)
    }
}

impl<T: Into<Value>> IntoArg for T {
    fn into_arg(self) -> Arg {
        Arg::Value(self.into())
    }
}

/// Conversion into a [`Node`], used by [`graph!`](crate::graph!).
pub trait IntoNode {
    /// Converts.
    fn into_node(self) -> Node;
}

impl IntoNode for KeyRef {
    fn into_node(self) -> Node {
        Node::Alias(self.0)
    }
}

impl IntoNode for Task {
    fn into_node(self) -> Node {
        Node::Task(self)
    }
}

impl IntoNode for Node {
    fn into_node(self) -> Node {
        self
    }
}

impl<T: Into<Value>> IntoNode for T {
    fn into_node(self) -> Node {
        Node::Value(self.into())
    }
}

/// Per-task options honoured by the process pool (sync and threads run every task once and
/// have no timeouts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOptions {
    /// Retries after the task's worker died (overrides the pool's `retries`).
    pub retries: Option<u32>,
    /// Time limit (overrides the pool's `task_timeout`).
    pub timeout: Option<std::time::Duration>,
}

impl TaskOptions {
    /// No overrides.
    pub fn new() -> TaskOptions {
        TaskOptions::default()
    }

    /// Sets the retries.
    pub fn retries(mut self, n: u32) -> TaskOptions {
        self.retries = Some(n);
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, d: std::time::Duration) -> TaskOptions {
        self.timeout = Some(d);
        self
    }
}

/// A task graph: a map from key to node.
#[derive(Clone, Default, PartialEq)]
pub struct Graph {
    // Fx hashing: keys are hashed once per reference while planning, and SipHash was a
    // noticeable share of the per-task overhead.
    // Indexed: planning finds a node's index with the lookup and keeps what it knows of the
    // node in a vector by that index instead of a second hash map.
    nodes: IndexMap<Key, Node, FxBuildHasher>,
    options: FxHashMap<Key, TaskOptions>,
    /// The top-level arguments of all task nodes, counted: a plan's store of compiled tasks
    /// is sized by it (a function of `nodes`, so equal graphs have equal counts).
    task_args: usize,
}

/// The number of top-level arguments of a node (none unless a task).
fn task_args(node: &Node) -> usize {
    match node {
        Node::Task(t) => t.args.len(),
        _ => 0,
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// An empty graph with room for `n` nodes.
    pub fn with_capacity(n: usize) -> Graph {
        Graph {
            nodes: IndexMap::with_capacity_and_hasher(n, Default::default()),
            options: FxHashMap::default(),
            task_args: 0,
        }
    }

    /// Sets `key` to `node`, returning the node it replaces.
    pub fn insert(&mut self, key: impl Into<Key>, node: impl IntoNode) -> Option<Node> {
        let node = node.into_node();
        self.task_args += task_args(&node);
        let old = self.nodes.insert(key.into(), node);
        self.task_args -= old.as_ref().map_or(0, task_args);
        old
    }

    /// Adds a task node `key = func(args...)`.
    pub fn task(&mut self, key: impl Into<Key>, func: &str, args: Vec<Arg>) -> &mut Graph {
        self.insert(key, Node::Task(Task::new(func, args)));
        self
    }

    /// Sets per-task options of `key` (retries, timeout) for the process pool.
    pub fn set_options(&mut self, key: impl Into<Key>, options: TaskOptions) -> &mut Graph {
        self.options.insert(key.into(), options);
        self
    }

    /// The per-task options of `key`, if any were set.
    pub fn options(&self, key: &Key) -> Option<&TaskOptions> {
        self.options.get(key)
    }

    pub(crate) fn all_options(&self) -> impl Iterator<Item = (&Key, &TaskOptions)> {
        self.options.iter()
    }

    /// The node of `key`.
    pub fn get(&self, key: &Key) -> Option<&Node> {
        self.nodes.get(key)
    }

    /// The index (in `0..len()`), stored key and node of `key`.
    pub(crate) fn entry(&self, key: &Key) -> Option<(usize, &Key, &Node)> {
        self.nodes.get_full(key)
    }

    /// The key and node at index `i` of the node table (an index [`Graph::entry`] gave).
    pub(crate) fn entry_at(&self, i: usize) -> (&Key, &Node) {
        self.nodes.get_index(i).expect("an index of the node table")
    }

    /// The top-level arguments of all task nodes, counted.
    pub(crate) fn task_args(&self) -> usize {
        self.task_args
    }

    /// Whether the graph has `key`.
    pub fn contains_key(&self, key: &Key) -> bool {
        self.nodes.contains_key(key)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// All keys and nodes, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Node)> {
        self.nodes.iter()
    }

    /// Adds every node of `other`, replacing nodes with the same key.
    pub fn extend(&mut self, other: Graph) {
        self.nodes.reserve(other.nodes.len());
        for (k, n) in other.nodes {
            self.insert(k, n);
        }
        self.options.extend(other.options);
    }
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.nodes.keys().collect();
        keys.sort();
        f.debug_map()
            .entries(keys.into_iter().map(|k| (k, &self.nodes[k])))
            .finish()
    }
}

impl<K: Into<Key>, N: IntoNode> FromIterator<(K, N)> for Graph {
    fn from_iter<I: IntoIterator<Item = (K, N)>>(iter: I) -> Graph {
        let nodes: IndexMap<Key, Node, FxBuildHasher> = iter
            .into_iter()
            .map(|(k, n)| (k.into(), n.into_node()))
            .collect();
        Graph {
            task_args: nodes.values().map(task_args).sum(),
            nodes,
            options: FxHashMap::default(),
        }
    }
}

/// Writes a graph almost like a Dask dict.
///
/// ```
/// use forkgraph::{graph, key};
///
/// #[forkgraph::task]
/// fn inc(x: i64) -> i64 {
///     x + 1
/// }
///
/// #[forkgraph::task]
/// fn add(x: i64, y: i64) -> i64 {
///     x + y
/// }
///
/// #[forkgraph::task]
/// fn sum(xs: Vec<i64>) -> i64 {
///     xs.iter().sum()
/// }
///
/// let g = graph! {
///     "x" => 1,                                   // a literal
///     "y" => (inc, key("x")),                     // a task: function, then arguments
///     "z" => (add, key("y"), (inc, 10)),          // a nested task runs in place
///     "all" => (sum, [key("x"), key("y"), key("z")]), // a list of keys
///     "w" => key("z"),                            // an alias
///     ("t", 0) => (inc, key("x")),                // tuple keys
///     "s" => ("inc", 41),                         // a function named by string: unchecked
/// };
/// assert_eq!(g.len(), 7);
/// ```
///
/// A parenthesised group `(f, args...)` is a task (as a tuple is in Dask), `[...]` a list and
/// `{ "k": arg, ... }` a map of arguments; anything else is an expression converted with
/// [`IntoArg`] (literals) — keys are referenced only through [`key`].
///
/// `f` is a `#[forkgraph::task]` handle, by name or path (`inc`, `tasks::clean`): the compiler
/// checks the number of arguments and each argument's type against its parameter (see
/// [`ArgFor`](crate::ArgFor); a misspelled name is an unknown value, with rustc's suggestion).
/// Untyped keys (`key("x")`), lists and maps are accepted for any parameter and checked when
/// the graph runs. `f` as a string literal (`("inc", 41)`) names a registered function without
/// any compile-time check, as graphs built from data do; both are validated before anything
/// runs.
#[macro_export]
macro_rules! graph {
    ($($body:tt)*) => {{
        #[allow(unused_mut)]
        let mut g = $crate::Graph::new();
        $crate::__graph_entries!(g; $($body)*);
        g
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __graph_entries {
    ($g:ident;) => {};
    ($g:ident; $k:expr => ($($t:tt)*) $(, $($rest:tt)*)?) => {
        $g.insert($k, $crate::IntoNode::into_node($crate::__task!($($t)*)));
        $crate::__graph_entries!($g; $($($rest)*)?);
    };
    ($g:ident; $k:expr => $v:expr $(, $($rest:tt)*)?) => {
        $g.insert($k, $crate::IntoNode::into_node($v));
        $crate::__graph_entries!($g; $($($rest)*)?);
    };
}

/// A task: `"name", args...` (untyped: a [`Task`]) or `handle, args...` (typed: a
/// [`TypedTask`](crate::TypedTask), checked by the compiler).
#[doc(hidden)]
#[macro_export]
macro_rules! __task {
    ($f:literal $(, $($args:tt)*)?) => {
        $crate::Task::new($f, $crate::__args!([] $($($args)*)?))
    };
    ($f:path $(, $($args:tt)*)?) => {
        $crate::__typed_args!($f; [] $($($args)*)?)
    };
}

/// Munches the arguments of a typed call, then calls the handle's `task` method with them (so
/// that rustc checks each against its parameter and points at it): `f; [done...] rest...`.
#[doc(hidden)]
#[macro_export]
macro_rules! __typed_args {
    ($f:path; [$($done:expr,)*]) => {
        $crate::__private::__handle(&$f).task($($done),*)
    };
    ($f:path; [$($done:expr,)*] ($($t:tt)*) $(, $($rest:tt)*)?) => {
        $crate::__typed_args!($f; [$($done,)* $crate::__task!($($t)*),] $($($rest)*)?)
    };
    ($f:path; [$($done:expr,)*] [$($l:tt)*] $(, $($rest:tt)*)?) => {
        $crate::__typed_args!($f; [$($done,)* $crate::Arg::List($crate::__args!([] $($l)*)),] $($($rest)*)?)
    };
    ($f:path; [$($done:expr,)*] {$($m:tt)*} $(, $($rest:tt)*)?) => {
        $crate::__typed_args!($f; [$($done,)* $crate::Arg::Map($crate::__map!([] $($m)*)),] $($($rest)*)?)
    };
    ($f:path; [$($done:expr,)*] $e:expr $(, $($rest:tt)*)?) => {
        $crate::__typed_args!($f; [$($done,)* $e,] $($($rest)*)?)
    };
}

/// Munches comma-separated arguments: `[done...] rest...`.
#[doc(hidden)]
#[macro_export]
macro_rules! __args {
    ([$($done:expr,)*]) => { ::std::vec![$($done),*] };
    ([$($done:expr,)*] ($($t:tt)*) $(, $($rest:tt)*)?) => {
        $crate::__args!([$($done,)* $crate::IntoArg::into_arg($crate::__task!($($t)*)),] $($($rest)*)?)
    };
    ([$($done:expr,)*] [$($l:tt)*] $(, $($rest:tt)*)?) => {
        $crate::__args!([$($done,)* $crate::Arg::List($crate::__args!([] $($l)*)),] $($($rest)*)?)
    };
    ([$($done:expr,)*] {$($m:tt)*} $(, $($rest:tt)*)?) => {
        $crate::__args!([$($done,)* $crate::Arg::Map($crate::__map!([] $($m)*)),] $($($rest)*)?)
    };
    ([$($done:expr,)*] $e:expr $(, $($rest:tt)*)?) => {
        $crate::__args!([$($done,)* $crate::IntoArg::into_arg($e),] $($($rest)*)?)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __map {
    ([$($done:expr,)*]) => { ::std::vec![$($done),*] };
    ([$($done:expr,)*] $k:literal : $($rest:tt)*) => {
        $crate::__map!(@val [$($done,)*] $k; [] $($rest)*)
    };
    (@val [$($done:expr,)*] $k:literal; [] ($($t:tt)*) $(, $($rest:tt)*)?) => {
        $crate::__map!([$($done,)* (::std::string::String::from($k), $crate::IntoArg::into_arg($crate::__task!($($t)*))),] $($($rest)*)?)
    };
    (@val [$($done:expr,)*] $k:literal; [] [$($l:tt)*] $(, $($rest:tt)*)?) => {
        $crate::__map!([$($done,)* (::std::string::String::from($k), $crate::Arg::List($crate::__args!([] $($l)*))),] $($($rest)*)?)
    };
    (@val [$($done:expr,)*] $k:literal; [] {$($m:tt)*} $(, $($rest:tt)*)?) => {
        $crate::__map!([$($done,)* (::std::string::String::from($k), $crate::Arg::Map($crate::__map!([] $($m)*))),] $($($rest)*)?)
    };
    (@val [$($done:expr,)*] $k:literal; [] $e:expr $(, $($rest:tt)*)?) => {
        $crate::__map!([$($done,)* (::std::string::String::from($k), $crate::IntoArg::into_arg($e)),] $($($rest)*)?)
    };
}
