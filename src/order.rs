//! Static ordering of a plan: which ready task runs first.
//!
//! The order aims at low memory pressure: finish one branch before starting the next, so few
//! intermediate results are alive at once. [`memory_pressure`] measures that.

use crate::key::Key;
use crate::plan::Csr;

/// Computes a priority for every node: `priority[i]` is node `i`'s position in the order
/// (0 runs first). Every node comes after all of its dependencies.
pub fn order(deps: &Csr, dependents: &Csr, keys: &[Key]) -> Vec<u32> {
    let n = deps.len();
    let mut priority = vec![u32::MAX; n];
    let mut next = 0u32;
    // Roots: nodes nobody depends on, in key order.
    let mut roots: Vec<u32> = (0..n as u32).filter(|&i| dependents.get(i).is_empty()).collect();
    roots.sort_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize]));
    // Iterative post-order depth-first search.
    let mut stack: Vec<(u32, bool)> = Vec::new();
    for r in roots.into_iter().rev() {
        stack.push((r, false));
    }
    while let Some((i, expanded)) = stack.pop() {
        if priority[i as usize] != u32::MAX {
            continue;
        }
        if expanded {
            priority[i as usize] = next;
            next += 1;
            continue;
        }
        stack.push((i, true));
        let mut ds: Vec<u32> = deps
            .get(i)
            .iter()
            .copied()
            .filter(|&d| priority[d as usize] == u32::MAX)
            .collect();
        ds.sort_by(|&a, &b| keys[b as usize].cmp(&keys[a as usize]));
        for d in ds {
            stack.push((d, false));
        }
    }
    // Nodes on cycles never get here (plans are acyclic); anything left goes last.
    for p in priority.iter_mut() {
        if *p == u32::MAX {
            *p = next;
            next += 1;
        }
    }
    priority
}

/// The largest number of results alive at once when the plan runs one task at a time in
/// `priority` order (a result stays alive until its last dependent has run; results nobody
/// depends on count until the end).
pub fn memory_pressure(deps: &Csr, dependents: &Csr, priority: &[u32]) -> usize {
    let n = deps.len();
    let mut by_prio = vec![0u32; n];
    for (i, &p) in priority.iter().enumerate() {
        by_prio[p as usize] = i as u32;
    }
    let mut holders: Vec<u32> = (0..n as u32).map(|i| dependents.get(i).len() as u32).collect();
    let mut alive = 0usize;
    let mut peak = 0usize;
    for &i in &by_prio {
        alive += 1;
        peak = peak.max(alive);
        for &d in deps.get(i) {
            holders[d as usize] -= 1;
            if holders[d as usize] == 0 {
                alive -= 1;
            }
        }
    }
    peak
}
