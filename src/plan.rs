//! Compiling a graph for one `get`: cull to the requested keys, validate, resolve functions,
//! and lay the result out densely (node ids, CSR adjacency, static priorities).
//!
//! Everything that can be wrong with a graph is found here, before any task runs.

use std::collections::HashMap;
use std::sync::Arc;

use forkgraph_worker::{FnId, Registry, SpecArg, SpecRef, SpecStore, TaskSpec, TaskView, Value};

use crate::csr::Csr;
use crate::error::GraphError;
use crate::graph::{Arg, Graph, Node, Task, TaskOptions};
use crate::key::{Key, Keys};
use crate::nesting::{self, Walk, MAX_NESTING};
use crate::order;

/// What a planned node is.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// Run the task at this index of [`Plan::specs`]; `SpecArg::Input(i)` is the value of the
    /// node's `i`-th dependency.
    Task(u32),
    /// A literal value, available at once.
    Value(Arc<Value>),
    /// The value of the node's only dependency.
    Alias,
}

/// The requested keys as node ids, mirroring the request's nesting.
#[derive(Debug, Clone)]
pub(crate) enum OutSpec {
    One(u32),
    List(Vec<OutSpec>),
}

impl OutSpec {
    pub(crate) fn remap(&mut self, new_id: &[u32]) {
        match self {
            OutSpec::One(i) => *i = new_id[*i as usize],
            OutSpec::List(l) => l.iter_mut().for_each(|o| o.remap(new_id)),
        }
    }
}

/// A culled, validated, ordered graph.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) keys: Vec<Key>,
    pub(crate) kinds: Vec<Kind>,
    /// The compiled tasks, their top-level arguments in one allocation ([`SpecStore`]) that
    /// jobs share ([`SpecRef`]); `Kind::Task` indexes it. Unshared until the plan runs (the
    /// optimizations edit it in place).
    pub(crate) specs: Arc<SpecStore>,
    pub(crate) deps: Csr,
    pub(crate) dependents: Csr,
    pub(crate) requested: Vec<bool>,
    /// Position of each node in the static order (0 runs first).
    pub(crate) priority: Vec<u32>,
    pub(crate) outputs: OutSpec,
    /// Per-task options, for the few nodes that have them.
    pub(crate) options: HashMap<u32, TaskOptions>,
}

/// Options of planning.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PlanOptions {
    pub(crate) inline_literals: bool,
    pub(crate) fuse: bool,
}

impl Plan {
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The compiled task of a task node.
    pub(crate) fn spec(&self, node: u32) -> Option<TaskView<'_>> {
        match self.kinds[node as usize] {
            Kind::Task(s) => Some(self.specs.get(s)),
            _ => None,
        }
    }

    /// A shared reference to the compiled task of a task node (no copy, no allocation).
    pub(crate) fn spec_ref(&self, node: u32) -> Option<SpecRef> {
        match self.kinds[node as usize] {
            Kind::Task(s) => Some(SpecRef::in_store(&self.specs, s)),
            _ => None,
        }
    }

    /// The name of a task node's (outermost) function; `""` for literals and aliases.
    pub(crate) fn function(&self, node: u32) -> &'static str {
        self.spec(node).map_or("", |s| {
            Registry::global().get(s.func).map_or("?", |f| f.name)
        })
    }

    /// The specs for editing, while planning.
    pub(crate) fn specs_mut(&mut self) -> &mut SpecStore {
        Arc::get_mut(&mut self.specs).expect("specs are unshared while planning")
    }

    pub(crate) fn options(&self, node: u32) -> TaskOptions {
        self.options.get(&node).copied().unwrap_or_default()
    }

    pub(crate) fn build(
        graph: &Graph,
        request: &Keys,
        opts: PlanOptions,
    ) -> Result<Plan, GraphError> {
        // The request's nesting first, without recursion: building the output recurses once per
        // level. Each node's nesting is checked the same way when the cull reaches it, before
        // anything recursive looks at it.
        if nesting::request_too_deep(request) {
            return Err(GraphError::RequestTooDeep { limit: MAX_NESTING });
        }
        let wanted = request.flatten();
        let missing: Vec<Key> = wanted
            .iter()
            .filter(|k| !graph.contains_key(k))
            .map(|k| (*k).clone())
            .collect();
        if !missing.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let missing = missing
                .into_iter()
                .filter(|k| seen.insert(k.clone()))
                .collect();
            return Err(GraphError::MissingKey { keys: missing });
        }

        // Cull: depth-first from the requested keys, ids in visiting order. Each key reference
        // is looked up in the graph once (hashing the key), which gives the node's index in the
        // graph; `seen` (by that index) holds its id once visited, and the DFS stack and the
        // dependency lists hold graph indices until the end. Tasks are compiled when visited; a
        // compile error is reported only once the whole graph was walked without a missing
        // dependency (which takes precedence, as before any task is compiled).
        //
        // Sized for the whole graph, as a `get` usually needs most of it.
        let cap = graph.len();
        let mut seen: Vec<Seen> = vec![Seen::UNSEEN; cap];
        let mut stack: Vec<u32> = Vec::with_capacity(wanted.len());
        for k in wanted.iter().rev() {
            let (g, _, _) = graph.entry(k).expect("checked above");
            stack.push(g as u32);
        }
        let mut keys: Vec<Key> = Vec::with_capacity(cap);
        let mut kinds: Vec<Kind> = Vec::with_capacity(cap);
        // Sized for the whole graph too: tasks, and top-level arguments of all of them.
        let mut specs = SpecStore::with_capacity(cap, graph.task_args());
        let mut dep_offsets: Vec<u32> = Vec::with_capacity(cap + 1);
        dep_offsets.push(0);
        // Dependencies of every node, by graph index; turned into ids at the end. Most
        // graphs have about one dependency per node.
        let mut dep_items: Vec<u32> = Vec::with_capacity(cap);
        // Scratch: the input index of each key reference of the node, in argument order, once
        // a reference repeats (until then reference `k` is input `k`, and nothing is stored),
        // and an index of the node's inputs for repeated references when it has many.
        let mut locals: Vec<u32> = Vec::new();
        let mut refs: u32;
        let mut repeated: bool;
        let mut levels = Vec::new();
        let mut repeats = Repeats::default();
        let mut functions = Functions::new(Registry::global());
        let mut compile_error: Option<GraphError> = None;
        while let Some(f) = stack.pop() {
            // `f`: the node's index in the graph.
            if seen[f as usize].id != UNSET {
                continue;
            }
            let id = keys.len() as u32;
            seen[f as usize].id = id;
            let (key, node) = graph.entry_at(f as usize);
            keys.push(key.clone());
            let key = &keys[id as usize];
            locals.clear();
            (refs, repeated) = (0, false);
            let first = dep_items.len();
            // Also checks the node's nesting: compiling it (and everything after) recurses.
            let walked = nesting::for_each_dep(node, &mut levels, &mut |r| {
                let (g, _, _) = graph.entry(r).ok_or(())?;
                let d = &mut seen[g];
                if d.parent != id {
                    // The first reference to it from this node: a new input.
                    d.parent = id;
                    if repeated {
                        locals.push((dep_items.len() - first) as u32);
                    }
                    dep_items.push(g as u32);
                } else {
                    if !repeated {
                        repeated = true;
                        locals.extend(0..refs);
                    }
                    locals.push(repeats.local(id, &dep_items[first..], g as u32));
                }
                refs += 1;
                Ok::<(), ()>(())
            });
            match walked {
                Ok(()) => {}
                Err(Walk::Stopped(())) => return Err(missing_dependency(graph, key, node)),
                Err(Walk::TooDeep) => return Err(too_deep(key)),
            }
            dep_offsets.push(dep_items.len() as u32);
            // Unvisited dependencies, last first, so that the first is visited next (room made
            // at once: a node with many inputs would grow the stack step by step).
            stack.reserve(dep_items.len() - first);
            for &d in dep_items[first..].iter().rev() {
                if seen[d as usize].id == UNSET {
                    stack.push(d);
                }
            }
            if compile_error.is_some() {
                continue;
            }
            match node {
                Node::Task(t) => match compile_into(
                    &mut specs,
                    &mut functions,
                    key,
                    t,
                    &mut Locals::new(&locals, repeated, refs),
                ) {
                    Ok(s) => kinds.push(Kind::Task(s)),
                    Err(e) => compile_error = Some(e),
                },
                Node::Value(v) => kinds.push(Kind::Value(Arc::new(v.clone()))),
                Node::Alias(_) => kinds.push(Kind::Alias),
            }
        }
        if let Some(e) = compile_error {
            return Err(e);
        }
        let n = keys.len();
        for d in &mut dep_items {
            *d = seen[*d as usize].id;
        }
        let deps = Csr::from_parts(dep_offsets, dep_items);
        // The id of a key of the graph, if the cull reached it.
        let id_of = |k: &Key| {
            let (g, _, _) = graph.entry(k)?;
            let id = seen[g].id;
            (id != UNSET).then_some(id)
        };
        let mut requested = vec![false; n];
        for k in &wanted {
            requested[id_of(k).expect("checked above") as usize] = true;
        }
        let outputs = out_spec(request, &|k| id_of(k).expect("checked above"));
        let options = graph
            .all_options()
            .filter_map(|(k, o)| Some((id_of(k)?, *o)))
            .collect();
        drop(seen);

        let mut plan = Plan {
            keys,
            kinds,
            specs: Arc::new(specs),
            deps,
            dependents: Csr::default(),
            requested,
            priority: Vec::new(),
            outputs,
            options,
        };
        plan.dependents = plan.deps.transpose();
        // A cycle is found by the order's topological pass (no pass of its own), unless the
        // optimizations, which need an acyclic graph, run first.
        if opts.inline_literals || opts.fuse {
            plan.check_cycles()?;
        }
        if opts.inline_literals {
            plan.inline_literals();
        }
        if opts.fuse {
            plan.fuse_chains();
        }
        plan.priority = match order::order_acyclic(&plan.deps, &plan.dependents, &plan.keys) {
            Some(priority) => priority,
            None => {
                // Names the cycle (the same topological pass finds it).
                plan.check_cycles()?;
                order::order(&plan.deps, &plan.dependents, &plan.keys)
            }
        };
        Ok(plan)
    }

    /// Kahn's algorithm: the nodes in a dependency-respecting order, and per node the
    /// dependencies left unfinished (non-zero only on and behind cycles).
    pub(crate) fn topological(&self) -> (Vec<u32>, Vec<u32>) {
        let mut out = Vec::with_capacity(self.len());
        let waiting = self.kahn(|i| out.push(i));
        (out, waiting)
    }

    /// Kahn's algorithm, calling `visit` on each node in a dependency-respecting order; returns
    /// per node the dependencies left unfinished (non-zero only on and behind cycles).
    fn kahn(&self, mut visit: impl FnMut(u32)) -> Vec<u32> {
        let n = self.len();
        let mut waiting: Vec<u32> = (0..n as u32)
            .map(|i| self.deps.get(i).len() as u32)
            .collect();
        // Sized once: collecting a filter would grow it step by step.
        let mut stack: Vec<u32> = Vec::with_capacity(n);
        stack.extend((0..n as u32).filter(|&i| waiting[i as usize] == 0));
        while let Some(i) = stack.pop() {
            visit(i);
            for &t in self.dependents.get(i) {
                waiting[t as usize] -= 1;
                if waiting[t as usize] == 0 {
                    stack.push(t);
                }
            }
        }
        waiting
    }

    fn check_cycles(&self) -> Result<(), GraphError> {
        let n = self.len();
        // Counted, not listed: the order itself is not needed here.
        let mut done = 0;
        let waiting = self.kahn(|_| done += 1);
        if done == n {
            return Ok(());
        }
        // Every leftover node waits on some leftover dependency; follow the smallest-keyed one.
        let start = (0..n as u32)
            .filter(|&i| waiting[i as usize] > 0)
            .min_by(|&a, &b| self.keys[a as usize].cmp(&self.keys[b as usize]))
            .expect("a leftover node");
        let mut pos: HashMap<u32, usize> = HashMap::new();
        let mut path = vec![start];
        let mut cur = start;
        loop {
            pos.insert(cur, path.len() - 1);
            let next = self
                .deps
                .get(cur)
                .iter()
                .copied()
                .filter(|&d| waiting[d as usize] > 0)
                .min_by(|&a, &b| self.keys[a as usize].cmp(&self.keys[b as usize]))
                .expect("a leftover dependency");
            if let Some(&p) = pos.get(&next) {
                let mut cycle: Vec<Key> = path[p..]
                    .iter()
                    .map(|&i| self.keys[i as usize].clone())
                    .collect();
                cycle.push(self.keys[next as usize].clone());
                return Err(GraphError::Cycle { path: cycle });
            }
            path.push(next);
            cur = next;
        }
    }

    /// Substitutes literal nodes that nobody requested into the tasks that use them.
    fn inline_literals(&mut self) {
        crate::optimize::inline_literals(self);
    }

    /// Fuses linear chains of tasks into nested tasks.
    fn fuse_chains(&mut self) {
        crate::optimize::fuse_chains(self);
    }
}

fn too_deep(key: &Key) -> GraphError {
    GraphError::NestedTooDeep {
        key: key.clone(),
        limit: MAX_NESTING,
    }
}

/// The error of a node with a missing dependency: the last missing one among its distinct
/// dependencies (found the slow way, on the error path only), or its nesting if that is too
/// deep (the walk that found the missing key stopped there).
fn missing_dependency(graph: &Graph, key: &Key, node: &Node) -> GraphError {
    let mut deps = Vec::new();
    let walked = nesting::for_each_dep(node, &mut Vec::new(), &mut |d| {
        deps.push(d);
        Ok::<(), ()>(())
    });
    if walked.is_err() {
        return too_deep(key);
    }
    let mut seen = std::collections::HashSet::with_capacity(deps.len());
    deps.retain(|k| seen.insert(*k));
    let d = deps
        .iter()
        .rev()
        .find(|d| !graph.contains_key(d))
        .expect("a missing dependency");
    GraphError::MissingDependency {
        key: key.clone(),
        dependency: (*d).clone(),
    }
}

/// What the cull knows about a node of the graph.
#[derive(Clone, Copy)]
struct Seen {
    /// Its id, once visited.
    id: u32,
    /// The last node (id) that referred to it.
    parent: u32,
}

const UNSET: u32 = u32::MAX;

impl Seen {
    const UNSEEN: Seen = Seen {
        id: UNSET,
        parent: UNSET,
    };
}

/// Input indices of a node referring to the same dependency more than once (rare): a scan of
/// its inputs, or for nodes with many inputs an index of them, built once per node.
#[derive(Default)]
struct Repeats {
    node: u32,
    indexed: usize,
    index: HashMap<u32, u32>,
}

impl Repeats {
    /// The position of `dep` (a graph index) in `inputs`, the inputs of node `node` so far.
    fn local(&mut self, node: u32, inputs: &[u32], dep: u32) -> u32 {
        const SCAN: usize = 32;
        if inputs.len() <= SCAN {
            let i = inputs.iter().position(|&x| x == dep);
            return i.expect("a repeated reference is an input") as u32;
        }
        if self.node != node || self.index.is_empty() {
            self.node = node;
            self.index.clear();
            self.indexed = 0;
        }
        for (i, &x) in inputs.iter().enumerate().skip(self.indexed) {
            self.index.insert(x, i as u32);
        }
        self.indexed = inputs.len();
        self.index[&dep]
    }
}

/// The input index of each key reference of a node, in argument order: reference `k` is input
/// `k` unless a reference repeated.
enum Locals<'a> {
    Identity(std::ops::Range<u32>),
    Listed(std::slice::Iter<'a, u32>),
}

impl<'a> Locals<'a> {
    fn new(listed: &'a [u32], repeated: bool, refs: u32) -> Locals<'a> {
        if repeated {
            Locals::Listed(listed.iter())
        } else {
            Locals::Identity(0..refs)
        }
    }

    fn next(&mut self) -> Option<u32> {
        match self {
            Locals::Identity(r) => r.next(),
            Locals::Listed(it) => it.next().copied(),
        }
    }
}

/// Function lookups, remembering the last one (graphs call the same function many times).
struct Functions<'g> {
    reg: &'static Registry,
    last: Option<(&'g str, FnId)>,
}

impl<'g> Functions<'g> {
    fn new(reg: &'static Registry) -> Functions<'g> {
        Functions { reg, last: None }
    }

    fn lookup(&mut self, name: &'g str) -> Result<FnId, String> {
        match self.last {
            Some((n, id)) if n == name => Ok(id),
            _ => {
                let id = self.reg.lookup(name)?;
                self.last = Some((name, id));
                Ok(id)
            }
        }
    }
}

/// Compiles a task into `store` (its top-level arguments in the store's one allocation: no
/// allocation of its own for a task without nested tasks, lists or maps); returns its index.
/// `locals` gives the input index of each key reference, in argument order.
fn compile_into<'g>(
    store: &mut SpecStore,
    fns: &mut Functions<'g>,
    key: &Key,
    t: &'g Task,
    locals: &mut Locals<'_>,
) -> Result<u32, GraphError> {
    let func = function(fns, key, t)?;
    store.try_push(
        func,
        t.args.iter().map(|a| match a {
            // The common argument, without the call (`compile_arg` recurses, so is not inlined).
            Arg::Key(_) => Ok(SpecArg::Input(
                locals.next().expect("an index per key reference"),
            )),
            _ => compile_arg(fns, key, a, locals),
        }),
    )
}

/// The function of a task, checked against its arguments.
fn function<'g>(fns: &mut Functions<'g>, key: &Key, t: &'g Task) -> Result<FnId, GraphError> {
    let func = match fns.lookup(&t.func) {
        Ok(func) => func,
        Err(message) => return Err(unknown_function(key, t, message)),
    };
    let f = fns.reg.get(func).expect("looked up");
    if f.params.len() != t.args.len() {
        return Err(arity(key, t, f.params));
    }
    Ok(func)
}

/// Compiles a nested task; `locals` gives the input index of each key reference, in argument
/// order.
///
/// Recursive, once per level of nesting (`compile_arg` -> `compile_list` -> `compile_arg`, or
/// `compile_arg` -> `compile_task` -> `compile_arg`): the cull checked that it is at most
/// [`MAX_NESTING`]. Each step is a small function of its own, so that an unoptimized build needs
/// little stack per level.
fn compile_task<'g>(
    fns: &mut Functions<'g>,
    key: &Key,
    t: &'g Task,
    locals: &mut Locals<'_>,
) -> Result<TaskSpec, GraphError> {
    let func = function(fns, key, t)?;
    let mut args = Vec::with_capacity(t.args.len());
    for a in &t.args {
        args.push(compile_arg(fns, key, a, locals)?);
    }
    Ok(TaskSpec { func, args })
}

#[cold]
fn unknown_function(key: &Key, t: &Task, message: String) -> GraphError {
    GraphError::UnknownFunction {
        key: key.clone(),
        function: t.func.clone(),
        message,
    }
}

#[cold]
fn arity(key: &Key, t: &Task, params: &[&str]) -> GraphError {
    GraphError::Arity {
        key: key.clone(),
        function: t.func.clone(),
        expected: params.len(),
        got: t.args.len(),
        params: params.join(", "),
    }
}

fn compile_arg<'g>(
    fns: &mut Functions<'g>,
    key: &Key,
    a: &'g Arg,
    locals: &mut Locals<'_>,
) -> Result<SpecArg, GraphError> {
    match a {
        Arg::Value(v) => Ok(SpecArg::Lit(v.clone())),
        Arg::Key(_) => Ok(SpecArg::Input(
            locals.next().expect("an index per key reference"),
        )),
        Arg::List(l) => compile_list(fns, key, l, locals),
        Arg::Map(m) => compile_map(fns, key, m, locals),
        Arg::Task(t) => compile_task(fns, key, t, locals).map(|t| SpecArg::Task(Box::new(t))),
    }
}

#[inline(never)]
fn compile_list<'g>(
    fns: &mut Functions<'g>,
    key: &Key,
    l: &'g [Arg],
    locals: &mut Locals<'_>,
) -> Result<SpecArg, GraphError> {
    if let Some(inputs) = consecutive_inputs(l, locals) {
        return Ok(inputs);
    }
    let mut out = Vec::with_capacity(l.len());
    for a in l {
        out.push(compile_arg(fns, key, a, locals)?);
    }
    Ok(SpecArg::List(out))
}

/// A list of at least two key references to consecutive inputs (a list of distinct keys) as
/// [`SpecArg::Inputs`], taking its indices from `locals`; `None` for any other list.
fn consecutive_inputs(l: &[Arg], locals: &mut Locals<'_>) -> Option<SpecArg> {
    if l.len() < 2 || !l.iter().all(|a| matches!(a, Arg::Key(_))) {
        return None;
    }
    let first = match locals {
        Locals::Identity(r) => (r.len() >= l.len()).then_some(r.start)?,
        Locals::Listed(it) => {
            let ids = it.as_slice().get(..l.len())?;
            let first = ids[0];
            ids.iter()
                .zip(first..)
                .all(|(&i, j)| i == j)
                .then_some(first)?
        }
    };
    for _ in l {
        locals.next();
    }
    Some(SpecArg::Inputs {
        first,
        count: l.len() as u32,
    })
}

#[inline(never)]
fn compile_map<'g>(
    fns: &mut Functions<'g>,
    key: &Key,
    m: &'g [(String, Arg)],
    locals: &mut Locals<'_>,
) -> Result<SpecArg, GraphError> {
    let mut out = Vec::with_capacity(m.len());
    for (k, a) in m {
        out.push((k.clone(), compile_arg(fns, key, a, locals)?));
    }
    Ok(SpecArg::Map(out))
}

/// Recursive, once per level of the request: [`MAX_NESTING`] bounds it.
fn out_spec(request: &Keys, id_of: &dyn Fn(&Key) -> u32) -> OutSpec {
    match request {
        Keys::One(k) => OutSpec::One(id_of(k)),
        Keys::List(l) => OutSpec::List(l.iter().map(|r| out_spec(r, id_of)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{key, IntoArg};

    fn plain() -> PlanOptions {
        PlanOptions {
            inline_literals: false,
            fuse: false,
        }
    }

    #[test]
    fn the_cull_keeps_only_what_the_request_needs() {
        let mut g = Graph::new();
        g.insert("a", 1);
        g.insert("b", 2);
        g.insert("unused", 3);
        g.task("c", "f", vec![key("a").into_arg(), key("b").into_arg()]);
        g.task(
            "d",
            "f",
            vec![key("c").into_arg(), key("unused").into_arg()],
        );
        // `f` is not registered: the cull must still stop before reaching `d`'s task.
        let err = Plan::build(&g, &Keys::One("c".into()), plain()).unwrap_err();
        assert!(
            matches!(&err, GraphError::UnknownFunction { key, .. } if *key == Key::from("c")),
            "{err}"
        );
        g.insert("c", 5);
        let p = Plan::build(&g, &Keys::One("c".into()), plain()).unwrap();
        assert_eq!(p.keys, vec![Key::from("c")], "a literal needs nothing else");
    }

    #[test]
    fn a_missing_dependency_is_found_before_any_task_compiles() {
        let mut g = Graph::new();
        g.task("c", "not_registered", vec![key("missing").into_arg()]);
        let err = Plan::build(&g, &Keys::One("c".into()), plain()).unwrap_err();
        assert!(matches!(err, GraphError::MissingDependency { .. }), "{err}");
    }

    /// A cycle is refused with every option: found by the order's topological pass, or before
    /// the optimizations when they run; also a single node that is its own dependency, and a
    /// cycle behind an acyclic part.
    #[test]
    fn a_cycle_is_found_with_every_option() {
        let mut g = Graph::new();
        g.insert("lit", 1);
        g.insert("top", key("a"));
        g.insert("a", key("b"));
        g.insert("b", key("a"));
        g.insert("me", key("me"));
        g.insert("fine", key("lit"));
        for (inline_literals, fuse) in [(false, false), (true, false), (false, true), (true, true)]
        {
            let opts = PlanOptions {
                inline_literals,
                fuse,
            };
            let err = Plan::build(&g, &Keys::One("top".into()), opts).unwrap_err();
            assert!(
                matches!(&err, GraphError::Cycle { path } if path.len() == 3),
                "{err}"
            );
            let err = Plan::build(&g, &Keys::One("me".into()), opts).unwrap_err();
            assert_eq!(
                err,
                GraphError::Cycle {
                    path: vec![Key::from("me"), Key::from("me")]
                }
            );
            let p = Plan::build(&g, &Keys::One("fine".into()), opts).unwrap();
            assert_eq!(p.priority.len(), p.len());
        }
    }
}
