//! Optional graph optimizations applied to a plan: inlining literal nodes and fusing linear
//! chains. Requested keys are never inlined or fused away.

use forkgraph_worker::SpecArg;

use crate::csr::Csr;
use crate::nesting::{spec_depth, MAX_NESTING};
use crate::plan::{Kind, Plan};

/// Longest chain fused into one task; bounds the nesting (and so the recursion) of a fused spec.
pub(crate) const MAX_FUSED: u32 = 64;

/// Substitutes literal nodes that are not requested into the tasks that read them, and drops them.
/// A task that would nest deeper than [`MAX_NESTING`] with its literals inlined keeps reading
/// them as inputs.
pub(crate) fn inline_literals(plan: &mut Plan) {
    let n = plan.len();
    let mut keep = vec![true; n];
    let mut deps: Vec<Vec<u32>> = (0..n as u32).map(|i| plan.deps.get(i).to_vec()).collect();
    for (i, ds) in deps.iter_mut().enumerate() {
        let Kind::Task(s) = plan.kinds[i] else {
            continue;
        };
        let literal = |d: u32| {
            !plan.requested[d as usize] && matches!(plan.kinds[d as usize], Kind::Value(_))
        };
        if !ds.iter().any(|&d| literal(d)) {
            continue;
        }
        // New input numbering: literals become `Lit`, the rest keep their order.
        let mut map = Vec::with_capacity(ds.len());
        let mut kept = Vec::new();
        for &d in ds.iter() {
            if literal(d) {
                let Kind::Value(v) = &plan.kinds[d as usize] else {
                    unreachable!()
                };
                map.push(Err(v.clone()));
            } else {
                map.push(Ok(kept.len() as u32));
                kept.push(d);
            }
        }
        let mut args = plan.specs.get(s).args.to_vec();
        for a in &mut args {
            renumber(a, &|j| match &map[j as usize] {
                Ok(k) => SpecArg::Input(*k),
                Err(v) => SpecArg::Lit(forkgraph_worker::Value::clone(v)),
            });
        }
        if spec_depth(&args) > MAX_NESTING {
            continue;
        }
        replace_args(plan, s, args);
        *ds = kept;
    }
    for (i, k) in keep.iter_mut().enumerate() {
        if matches!(plan.kinds[i], Kind::Value(_)) && !plan.requested[i] {
            *k = false;
        }
    }
    // A literal still read (by an alias, or by a task it was not inlined into) stays.
    for ds in &deps {
        for &d in ds {
            keep[d as usize] = true;
        }
    }
    compact(plan, deps, &keep);
}

fn renumber(a: &mut SpecArg, f: &dyn Fn(u32) -> SpecArg) {
    match a {
        SpecArg::Input(j) => *a = f(*j),
        SpecArg::Lit(_) => {}
        SpecArg::List(l) => l.iter_mut().for_each(|a| renumber(a, f)),
        SpecArg::Map(m) => m.iter_mut().for_each(|(_, a)| renumber(a, f)),
        SpecArg::Task(t) => t.args.iter_mut().for_each(|a| renumber(a, f)),
        SpecArg::Inputs { first, count } => {
            *a = SpecArg::List((*first..*first + *count).map(f).collect());
        }
    }
}

fn count_inputs(a: &SpecArg, j: u32) -> usize {
    match a {
        SpecArg::Input(i) => usize::from(*i == j),
        SpecArg::Lit(_) => 0,
        SpecArg::List(l) => l.iter().map(|a| count_inputs(a, j)).sum(),
        SpecArg::Map(m) => m.iter().map(|(_, a)| count_inputs(a, j)).sum(),
        SpecArg::Task(t) => t.args.iter().map(|a| count_inputs(a, j)).sum(),
        SpecArg::Inputs { first, count } => usize::from((*first..*first + *count).contains(&j)),
    }
}

/// Fuses `a -> b` when `b` is `a`'s only dependent, `a` is `b`'s only dependency, `b` reads `a`
/// once, and `a` is not requested: `b` becomes `b(..., a(...), ...)` with `a`'s dependencies,
/// unless that would nest deeper than [`MAX_NESTING`].
pub(crate) fn fuse_chains(plan: &mut Plan) {
    let n = plan.len();
    let mut deps: Vec<Vec<u32>> = (0..n as u32).map(|i| plan.deps.get(i).to_vec()).collect();
    let mut depth = vec![1u32; n];
    let mut keep = vec![true; n];
    for b in plan.topological().0 {
        let b = b as usize;
        if deps[b].len() != 1 {
            continue;
        }
        let a = deps[b][0] as usize;
        let (&Kind::Task(ia), &Kind::Task(ib)) = (&plan.kinds[a], &plan.kinds[b]) else {
            continue;
        };
        let (sa, sb) = (plan.specs.get(ia), plan.specs.get(ib));
        if plan.requested[a]
            || plan.dependents.get(a as u32).len() != 1
            || depth[a] + depth[b] > MAX_FUSED
            || sb.args.iter().map(|x| count_inputs(x, 0)).sum::<usize>() != 1
        {
            continue;
        }
        let inner = SpecArg::Task(Box::new(sa.to_spec()));
        let mut args = sb.args.to_vec();
        for x in &mut args {
            renumber(x, &|_| inner.clone());
        }
        if spec_depth(&args) > MAX_NESTING {
            continue;
        }
        replace_args(plan, ib, args);
        depth[b] += depth[a];
        deps[b] = std::mem::take(&mut deps[a]);
        keep[a] = false;
    }
    compact(plan, deps, &keep);
}

/// Replaces the arguments of task `s` of the plan's store by `args`, as many as it had (the
/// optimizations rewrite arguments in place, never add or drop one).
fn replace_args(plan: &mut Plan, s: u32, args: Vec<SpecArg>) {
    let slots = plan.specs_mut().args_mut(s);
    debug_assert_eq!(
        slots.len(),
        args.len(),
        "a rewrite keeps the number of arguments"
    );
    for (slot, a) in slots.iter_mut().zip(args) {
        *slot = a;
    }
}

/// Drops nodes not kept and renumbers the rest (dependency lists given per old node).
fn compact(plan: &mut Plan, deps: Vec<Vec<u32>>, keep: &[bool]) {
    let n = plan.len();
    let mut new_id = vec![u32::MAX; n];
    let mut next = 0u32;
    for i in 0..n {
        if keep[i] {
            new_id[i] = next;
            next += 1;
        }
    }
    retain_kept(&mut plan.keys, keep);
    retain_kept(&mut plan.kinds, keep);
    retain_kept(&mut plan.requested, keep);
    let lists = deps
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep[*i])
        .map(|(_, l)| {
            l.into_iter()
                .map(|d| new_id[d as usize])
                .collect::<Vec<_>>()
        });
    plan.deps = Csr::from_lists(lists);
    plan.dependents = plan.deps.transpose();
    plan.outputs.remap(&new_id);
    plan.options = std::mem::take(&mut plan.options)
        .into_iter()
        .filter(|(i, _)| keep[*i as usize])
        .map(|(i, o)| (new_id[i as usize], o))
        .collect();
}

fn retain_kept<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}
