//! Compiling a graph for one `get`: cull to the requested keys, validate, resolve functions,
//! and lay the result out densely (node ids, CSR adjacency, static priorities).
//!
//! Everything that can be wrong with a graph is found here, before any task runs.

use std::collections::HashMap;
use std::sync::Arc;

use forkgraph_worker::{Registry, SpecArg, TaskSpec, Value};

use crate::error::GraphError;
use crate::graph::{Arg, Graph, Node, Task};
use crate::key::{Key, Keys};
use crate::order;

/// Compressed adjacency lists: `items[offsets[i]..offsets[i + 1]]` belong to node `i`.
#[derive(Debug, Clone, Default)]
pub struct Csr {
    offsets: Vec<u32>,
    items: Vec<u32>,
}

impl Csr {
    /// Builds from per-node lists.
    pub fn from_lists<I: IntoIterator<Item = Vec<u32>>>(lists: I) -> Csr {
        let mut offsets = vec![0u32];
        let mut items = Vec::new();
        for l in lists {
            items.extend_from_slice(&l);
            offsets.push(items.len() as u32);
        }
        Csr { offsets, items }
    }

    /// The transpose: for every `j` in list `i`, `i` in list `j`, in ascending order of `i`.
    pub fn transpose(&self) -> Csr {
        let n = self.len();
        let mut counts = vec![0u32; n + 1];
        for &j in &self.items {
            counts[j as usize + 1] += 1;
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let offsets = counts.clone();
        let mut fill = counts;
        let mut items = vec![0u32; self.items.len()];
        for i in 0..n {
            for &j in self.get(i as u32) {
                items[fill[j as usize] as usize] = i as u32;
                fill[j as usize] += 1;
            }
        }
        Csr { offsets, items }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The list of node `i`.
    pub fn get(&self, i: u32) -> &[u32] {
        let i = i as usize;
        &self.items[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// What a planned node is.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// Run this spec; `SpecArg::Input(i)` is the value of the node's `i`-th dependency.
    Task(Arc<TaskSpec>),
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
    /// Function name per node (tasks only), for errors and callbacks.
    pub(crate) funcs: Vec<&'static str>,
    pub(crate) deps: Csr,
    pub(crate) dependents: Csr,
    pub(crate) requested: Vec<bool>,
    /// Position of each node in the static order (0 runs first).
    pub(crate) priority: Vec<u32>,
    pub(crate) outputs: OutSpec,
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

    pub(crate) fn build(graph: &Graph, request: &Keys, opts: PlanOptions) -> Result<Plan, GraphError> {
        let wanted = request.flatten();
        let missing: Vec<Key> = wanted
            .iter()
            .filter(|k| !graph.contains_key(k))
            .map(|k| (*k).clone())
            .collect();
        if !missing.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let missing = missing.into_iter().filter(|k| seen.insert(k.clone())).collect();
            return Err(GraphError::MissingKey { keys: missing });
        }

        // Cull: depth-first from the requested keys, ids in discovery order.
        let mut ids: HashMap<&Key, u32> = HashMap::new();
        let mut order: Vec<(&Key, &Node)> = Vec::new();
        let mut stack: Vec<&Key> = wanted.iter().rev().copied().collect();
        let mut dep_keys: Vec<Vec<&Key>> = Vec::new();
        while let Some(k) = stack.pop() {
            if ids.contains_key(k) {
                continue;
            }
            let (key, node) = graph.entry(k).expect("checked above or below");
            ids.insert(key, order.len() as u32);
            order.push((key, node));
            let mut deps = Vec::new();
            node_deps(node, &mut deps);
            dedup_in_order(&mut deps);
            for d in deps.iter().rev() {
                if !graph.contains_key(d) {
                    return Err(GraphError::MissingDependency {
                        key: key.clone(),
                        dependency: (*d).clone(),
                    });
                }
                if !ids.contains_key(d) {
                    stack.push(d);
                }
            }
            dep_keys.push(deps);
        }

        let reg = Registry::global();
        let n = order.len();
        let mut kinds = Vec::with_capacity(n);
        let mut funcs = Vec::with_capacity(n);
        let mut dep_lists = Vec::with_capacity(n);
        for (i, (key, node)) in order.iter().enumerate() {
            let deps: Vec<u32> = dep_keys[i].iter().map(|d| ids[d]).collect();
            let local: HashMap<&Key, u32> = dep_keys[i]
                .iter()
                .enumerate()
                .map(|(j, d)| (*d, j as u32))
                .collect();
            match node {
                Node::Task(t) => {
                    let spec = compile_task(reg, key, t, &local)?;
                    funcs.push(reg.get(spec.func).map_or("?", |f| f.name));
                    kinds.push(Kind::Task(Arc::new(spec)));
                }
                Node::Value(v) => {
                    funcs.push("");
                    kinds.push(Kind::Value(Arc::new(v.clone())));
                }
                Node::Alias(_) => {
                    funcs.push("");
                    kinds.push(Kind::Alias);
                }
            }
            dep_lists.push(deps);
        }
        let keys: Vec<Key> = order.iter().map(|(k, _)| (*k).clone()).collect();
        let mut requested = vec![false; n];
        for k in &wanted {
            requested[ids[k] as usize] = true;
        }
        let outputs = out_spec(request, &ids);
        drop(ids);

        let mut plan = Plan {
            keys,
            kinds,
            funcs,
            deps: Csr::from_lists(dep_lists),
            dependents: Csr::default(),
            requested,
            priority: Vec::new(),
            outputs,
        };
        plan.dependents = plan.deps.transpose();
        plan.check_cycles()?;
        if opts.inline_literals {
            plan.inline_literals();
        }
        if opts.fuse {
            plan.fuse_chains();
        }
        plan.priority = order::order(&plan.deps, &plan.dependents, &plan.keys);
        Ok(plan)
    }

    /// Kahn's algorithm; on leftovers, walk dependencies until a node repeats.
    fn check_cycles(&self) -> Result<(), GraphError> {
        let n = self.len();
        let mut waiting: Vec<u32> = (0..n as u32).map(|i| self.deps.get(i).len() as u32).collect();
        let mut stack: Vec<u32> = (0..n as u32).filter(|&i| waiting[i as usize] == 0).collect();
        let mut done = 0usize;
        while let Some(i) = stack.pop() {
            done += 1;
            for &t in self.dependents.get(i) {
                waiting[t as usize] -= 1;
                if waiting[t as usize] == 0 {
                    stack.push(t);
                }
            }
        }
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
                let mut cycle: Vec<Key> =
                    path[p..].iter().map(|&i| self.keys[i as usize].clone()).collect();
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

fn dedup_in_order(v: &mut Vec<&Key>) {
    if v.len() < 2 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    v.retain(|k| seen.insert(*k));
}

fn node_deps<'g>(node: &'g Node, out: &mut Vec<&'g Key>) {
    match node {
        Node::Task(t) => task_deps(t, out),
        Node::Value(_) => {}
        Node::Alias(k) => out.push(k),
    }
}

fn task_deps<'g>(t: &'g Task, out: &mut Vec<&'g Key>) {
    for a in &t.args {
        arg_deps(a, out);
    }
}

fn arg_deps<'g>(a: &'g Arg, out: &mut Vec<&'g Key>) {
    match a {
        Arg::Value(_) => {}
        Arg::Key(k) => out.push(k),
        Arg::List(l) => l.iter().for_each(|a| arg_deps(a, out)),
        Arg::Map(m) => m.iter().for_each(|(_, a)| arg_deps(a, out)),
        Arg::Task(t) => task_deps(t, out),
    }
}

fn compile_task(
    reg: &Registry,
    key: &Key,
    t: &Task,
    local: &HashMap<&Key, u32>,
) -> Result<TaskSpec, GraphError> {
    let func = reg.lookup(&t.func).map_err(|message| GraphError::UnknownFunction {
        key: key.clone(),
        function: t.func.clone(),
        message,
    })?;
    let f = reg.get(func).expect("looked up");
    if f.params.len() != t.args.len() {
        return Err(GraphError::Arity {
            key: key.clone(),
            function: t.func.clone(),
            expected: f.params.len(),
            got: t.args.len(),
            params: f.params.join(", "),
        });
    }
    let args = t
        .args
        .iter()
        .map(|a| compile_arg(reg, key, a, local))
        .collect::<Result<_, _>>()?;
    Ok(TaskSpec { func, args })
}

fn compile_arg(
    reg: &Registry,
    key: &Key,
    a: &Arg,
    local: &HashMap<&Key, u32>,
) -> Result<SpecArg, GraphError> {
    Ok(match a {
        Arg::Value(v) => SpecArg::Lit(v.clone()),
        Arg::Key(k) => SpecArg::Input(local[k]),
        Arg::List(l) => SpecArg::List(
            l.iter()
                .map(|a| compile_arg(reg, key, a, local))
                .collect::<Result<_, _>>()?,
        ),
        Arg::Map(m) => SpecArg::Map(
            m.iter()
                .map(|(k, a)| Ok((k.clone(), compile_arg(reg, key, a, local)?)))
                .collect::<Result<_, _>>()?,
        ),
        Arg::Task(t) => SpecArg::Task(Box::new(compile_task(reg, key, t, local)?)),
    })
}

fn out_spec(request: &Keys, ids: &HashMap<&Key, u32>) -> OutSpec {
    match request {
        Keys::One(k) => OutSpec::One(ids[k]),
        Keys::List(l) => OutSpec::List(l.iter().map(|r| out_spec(r, ids)).collect()),
    }
}
