//! Static ordering of a plan: which ready task runs first.
//!
//! The engine runs ready tasks lowest priority first, so the order decides which intermediate
//! results are alive at the same time. [`order`] aims at low memory pressure in the spirit of
//! Dask's `dask/order.py` (whose tests it is checked against); [`memory_pressure`] measures it.
//!
//! # Algorithm
//!
//! 1. **Static metrics**, one pass in topological order (Kahn's algorithm, no recursion) and
//!    one in reverse:
//!    - `need`, a Sethi–Ullman number: the results held at once by the best depth-first
//!      evaluation of the node if the graph below it were a tree. With the dependencies' needs
//!      sorted descending it is `max(need[c_i] + i, dependencies + 1)`;
//!    - `total`, 1 + the sum over dependencies (Dask's `ndependencies`, saturating): the amount
//!      of work below a node;
//!    - `height` and `near`, the longest and the shortest path to an output, and `small`, the
//!      smallest `total` among the outputs a node leads to.
//!
//!    Between two nodes to compute, the one with the larger need goes first (a ready node needs
//!    1), then the larger total, then the smaller key (Dask breaks ties the other way: it runs
//!    `("x", 9)` before `("x", 0)`). The key breaks every tie and every list the walk acts on is
//!    sorted, so the order depends only on the graph's shape and keys, never on node numbering
//!    or on the order of adjacency lists.
//! 2. **Demand-driven depth-first walk.** A stack holds nodes to compute. The top runs when all
//!    its dependencies have run; otherwise its missing dependencies are pushed, the preferred
//!    one on top. Computing the dependency with the larger need first is what bounds a tree
//!    reduction of `n` leaves to `log2(n) + 2` live results (Sethi–Ullman), and finishing one
//!    branch before starting the next is what keeps independent branches from piling up.
//! 3. **Eager completion.** Running a node makes some ready nodes worth running at once:
//!    - an output (nobody depends on it): holding an output back never frees anything sooner;
//!    - a node that frees more results than it adds: it is the last unscheduled dependent of
//!      two of its inputs, or of one input and is itself an output;
//!    - a node whose dependents are all outputs that it alone makes ready (it completes a
//!      branch), and a node that frees nothing but lets its only dependent free it and another
//!      result (the two are memory-neutral together);
//!    - a node that frees one result and adds one (memory-neutral) when it is a dependent of
//!      the node just run (the next link of a chain: the walk stays local), or when one of its
//!      dependents could run right after it. Other memory-neutral nodes are postponed until
//!      the walk is about to load new data (expand a node) or runs dry: that keeps the current
//!      branch together, yet makes progress on every consumer of a shared result before more
//!      data is loaded, which is what keeps interleaved reductions (Dask's
//!      `test_eager_to_compute_dependent_to_free_parent`) low. They are postponed too when the
//!      walk does not need them and they head a long chain (`height > near`): swaps along a
//!      running total across row chunks would otherwise carry the walk to the last row and
//!      leave every row's other work behind (gh-3055);
//!    - a consumer that lacks only ready inputs, when finishing it releases at least what it
//!      adds (`settles`: it is the last consumer of a held result or reads the node just run,
//!      and the inputs it loads are not kept for others): it is pushed on the stack and
//!      computed before postponed swaps, so held results are released before new work starts.
//!
//!    Among the dependents a node makes ready, one whose outputs it alone completes runs
//!    first, then outputs, then the longest path: on a parallel scheduler the longest chain
//!    starts first (Dask's `test_favor_longest_critical_path`), at the cost of holding its
//!    short branch while the outputs run.
//! 4. **Targets.** When the stack is empty, the walk goes on from the most recently run node
//!    whose result is still held: from one of its unscheduled dependents it climbs to an
//!    output, each step to the dependent nearest an output (then the one leading to the
//!    smallest output, then the one missing the fewest inputs), and computes that. Only when
//!    nothing is held does it start at the next output in the given order.
//! 5. **Up to three walks.** With one output there is one walk. With several, the walk runs
//!    twice: outputs largest first (by need, then total: the longest paths start first) and
//!    smallest first (by total). Outputs nested in each other, each needing the rows before it
//!    as in gh-3055, want the second; independent ones the first. When the better of the two
//!    holds more than the widest task needs, a third walk goes smallest first without climbing
//!    to new targets (step 4): each output is finished before the next starts. Climbing can
//!    carry the walk from one row into later rows and leave rows unfinished behind it, more of
//!    them the more rows there are (a template of the gh-3055 family found by the long
//!    property test held 58 results at 39 rows against 7 row by row); finishing outputs one
//!    by one does not. The order with the lowest [`memory_pressure`] is kept, earlier walks on
//!    a tie.
//!
//! Each node is expanded once, pushed on the stack at most once per edge, climbed through at
//! most once and checked for eagerness a bounded number of times per edge (each check looks
//! at most at 32 neighbours), so with the sorting of adjacency lists each walk is
//! `O((nodes + edges) log(nodes))`. The metrics take five `u32` per node; besides the returned
//! priorities each walk keeps five `u32` and one byte per node, plus lists of node ids (the
//! stack holds at most one entry per edge and target).

use crate::csr::Csr;
use crate::key::{bytes_eq, Key};

const UNSET: u32 = u32::MAX;
/// The node's dependencies were pushed on the stack.
const EXPANDED: u8 = 1;
/// The node's dependents were queued to climb from to new targets.
const FORWARD: u8 = 2;
/// The node was put on the stack: the walk means to compute it.
const ONSTACK: u8 = 4;

/// Computes a priority for every node: `priority[i]` is node `i`'s position in the order
/// (0 runs first). The result is a permutation of `0..n` in which every node comes after all of
/// its dependencies. Ties break by key, so relabelling the nodes does not change the order of
/// the keys; see the module documentation for the algorithm.
///
/// The graph must be acyclic (plans are checked before ordering); on a cycle this neither
/// panics nor hangs, it places the nodes on or behind the cycle last, in id order.
///
/// # Panics
/// When `dependents` or `keys` do not have one entry per node.
pub fn order(deps: &Csr, dependents: &Csr, keys: &[Key]) -> Vec<u32> {
    check_sizes(deps, dependents, keys);
    if deps.len() <= 1 {
        // The only order (a submitted call plans one task: no metrics, no walk).
        return (0..deps.len() as u32).collect();
    }
    order_with(deps, dependents, keys, &Metrics::new(deps, dependents))
}

/// [`order`] of a graph that may have a cycle: `None` when it has one (found by the same
/// topological pass that computes the metrics, so planning needs no pass of its own to check).
pub(crate) fn order_acyclic(deps: &Csr, dependents: &Csr, keys: &[Key]) -> Option<Vec<u32>> {
    check_sizes(deps, dependents, keys);
    match deps.len() {
        0 => Some(Vec::new()),
        // One node: a cycle only if it depends on itself.
        1 => deps.get(0).is_empty().then(|| vec![0]),
        _ => {
            let metrics = Metrics::new(deps, dependents);
            metrics
                .acyclic
                .then(|| order_with(deps, dependents, keys, &metrics))
        }
    }
}

fn check_sizes(deps: &Csr, dependents: &Csr, keys: &[Key]) {
    let n = deps.len();
    assert_eq!(
        dependents.len(),
        n,
        "dependents must be the transpose of deps"
    );
    assert_eq!(keys.len(), n, "one key per node");
}

/// [`order`] of a graph of at least two nodes, given its metrics.
fn order_with(deps: &Csr, dependents: &Csr, keys: &[Key], metrics: &Metrics) -> Vec<u32> {
    let n = deps.len();
    let mut w = Walk::new(deps, dependents, keys, metrics);
    let mut sinks: Vec<u32> = (0..n as u32)
        .zip(dependents.lists())
        .filter_map(|(i, ups)| ups.is_empty().then_some(i))
        .collect();
    w.sort_preferred(&mut sinks);
    let largest_first = w.walk(&sinks);
    if sinks.len() < 2 {
        return largest_first;
    }
    // Outputs nested in each other (gh-3055: each row's output needs the rows before it) are
    // best computed smallest first; independent ones largest first, which starts the longest
    // paths first. Walk both ways and keep the lower pressure, largest first on a tie.
    // Smallest is least work below (`total`), then the smaller need. No order holds fewer
    // results than the widest task reads plus its output: at that, the second walk is skipped.
    let largest = memory_pressure(deps, dependents, &largest_first);
    let widest = widest_task(deps);
    if largest <= widest {
        return largest_first;
    }
    sinks.sort_unstable_by(|&a, &b| {
        let m = metrics;
        (m.total[a as usize], m.need[a as usize], &keys[a as usize]).cmp(&(
            m.total[b as usize],
            m.need[b as usize],
            &keys[b as usize],
        ))
    });
    let smallest_first = Walk::new(deps, dependents, keys, metrics).walk(&sinks);
    let smallest = memory_pressure(deps, dependents, &smallest_first);
    let (best, best_order) = if smallest < largest {
        (smallest, smallest_first)
    } else {
        (largest, largest_first)
    };
    // Climbing from held results to new targets can carry the walk from one nested output into
    // the rows of later ones and leave rows unfinished behind it, more of them the more rows
    // there are; finishing each output, smallest first, before starting the next never does
    // (each row holds at most what later rows read). Kept when it holds strictly less.
    if best > widest {
        let mut w = Walk::new(deps, dependents, keys, metrics);
        w.climb = false;
        let one_by_one = w.walk(&sinks);
        if memory_pressure(deps, dependents, &one_by_one) < best {
            return one_by_one;
        }
    }
    best_order
}

/// The results a task holds while it runs, inputs (each once) and output, for the widest task:
/// a lower bound of any order's [`memory_pressure`].
fn widest_task(deps: &Csr) -> usize {
    let mut buf: Vec<u32> = Vec::new();
    (0..deps.len() as u32)
        .map(|i| {
            let ds = deps.get(i);
            if ds.len() < 2 {
                return ds.len() + 1;
            }
            buf.clear();
            buf.extend_from_slice(ds);
            buf.sort_unstable();
            buf.dedup();
            buf.len() + 1
        })
        .max()
        .unwrap_or(0)
}

impl Walk<'_> {
    /// Schedules every node, taking the outputs in `sinks` order as targets when nothing else
    /// is left to do; returns the priorities.
    fn walk(mut self, sinks: &[u32]) -> Vec<u32> {
        let n = self.prio.len();
        let w = &mut self;
        let mut sinks = sinks.iter().copied();
        loop {
            w.drain_stack();
            if w.next as usize == n {
                break;
            }
            if w.flush_deferred() || (w.climb && w.resume_forward()) {
                continue;
            }
            match sinks.by_ref().find(|&s| w.prio[s as usize] == UNSET) {
                Some(s) => {
                    w.flags[s as usize] |= ONSTACK;
                    w.stack.push(s);
                }
                None => break,
            }
        }
        // Only nodes on a cycle can be left; plans are acyclic, but never loop or panic here.
        if (w.next as usize) < n {
            for (next, p) in (w.next..).zip(w.prio.iter_mut().filter(|p| **p == UNSET)) {
                *p = next;
            }
        }
        self.prio
    }
}

impl<'a> Walk<'a> {
    /// The walk's state before any node is scheduled.
    fn new(deps: &'a Csr, dependents: &'a Csr, keys: &'a [Key], m: &'a Metrics) -> Walk<'a> {
        let n = deps.len();
        let needed = deps.lens();
        let holders = dependents.lens();
        let blocked = deps
            .lists()
            .map(|ds| ds.iter().filter(|&&d| needed[d as usize] > 0).count() as u32)
            .collect();
        let mut sole = vec![0; n];
        for ups in dependents.lists() {
            if let [only] = *ups {
                sole[only as usize] += 1;
            }
        }
        Walk {
            deps,
            dependents,
            keys,
            need: &m.need,
            total: &m.total,
            height: &m.height,
            near: &m.near,
            small: &m.small,
            prio: vec![UNSET; n],
            next: 0,
            needed,
            holders,
            blocked,
            sole,
            flags: vec![0; n],
            stack: Vec::new(),
            resume: Vec::new(),
            seeds: Vec::new(),
            work: Vec::new(),
            last_one: Vec::new(),
            freeing: Vec::new(),
            rising: Vec::new(),
            wanted: Vec::new(),
            postponed: Vec::new(),
            deferred: Vec::new(),
            buf: Vec::new(),
            decorated: Vec::new(),
            climb: true,
            radix_tmp: Vec::new(),
        }
    }
}

/// The static metrics of every node, shared by the walks.
struct Metrics {
    /// Sethi–Ullman number.
    need: Vec<u32>,
    /// Dask's `ndependencies`: 1 + the sum over dependencies (saturating).
    total: Vec<u32>,
    /// The longest path to an output, in edges (0 for an output).
    height: Vec<u32>,
    /// The shortest path to an output, in edges (0 for an output).
    near: Vec<u32>,
    /// The smallest `total` of the outputs the node leads to.
    small: Vec<u32>,
    /// Whether the topological pass reached every node (no cycle).
    acyclic: bool,
}

impl Metrics {
    fn new(deps: &Csr, dependents: &Csr) -> Metrics {
        let n = deps.len();
        let mut need = vec![1u32; n];
        let mut total = vec![1u32; n];
        let mut waiting = deps.lens();
        // Kahn's algorithm with the topological order as its queue (any topological order
        // gives the same metrics); nodes on or behind a cycle are left out.
        let mut topo: Vec<u32> = Vec::with_capacity(n);
        topo.extend((0..n as u32).filter(|&i| waiting[i as usize] == 0));
        let mut child: Vec<u32> = Vec::new();
        let mut next = 0;
        while let Some(&i) = topo.get(next) {
            next += 1;
            let ds = deps.get(i);
            let i = i as usize;
            match *ds {
                [] => {}
                [d] => {
                    let d = d as usize;
                    need[i] = need[d].max(2);
                    total[i] = total[d].saturating_add(1);
                }
                [a, b] => {
                    // The general case below for two: the larger need, or the smaller + 1.
                    let (a, b) = (a as usize, b as usize);
                    let (hi, lo) = (need[a].max(need[b]), need[a].min(need[b]));
                    need[i] = hi.max(lo.saturating_add(1)).max(3);
                    total[i] = total[a].saturating_add(total[b]).saturating_add(1);
                }
                _ => {
                    child.clear();
                    child.extend(ds.iter().map(|&d| need[d as usize]));
                    child.sort_unstable_by(|a, b| b.cmp(a));
                    let deepest = child
                        .iter()
                        .enumerate()
                        .map(|(k, &c)| c.saturating_add(k as u32));
                    need[i] = deepest
                        .max()
                        .unwrap_or(1)
                        .max((ds.len() as u32).saturating_add(1));
                    total[i] = ds
                        .iter()
                        .fold(1u32, |t, &d| t.saturating_add(total[d as usize]));
                }
            }
            for &t in dependents.get(i as u32) {
                let w = &mut waiting[t as usize];
                *w -= 1;
                if *w == 0 {
                    topo.push(t);
                }
            }
        }
        let mut height = vec![0u32; n];
        let mut near = vec![0u32; n];
        let mut small = total.clone();
        for &i in topo.iter().rev() {
            let ups = dependents.get(i);
            let Some((&first, rest)) = ups.split_first() else {
                continue;
            };
            let f = first as usize;
            let (mut h, mut d, mut s) = (height[f], near[f], small[f]);
            for &u in rest {
                let u = u as usize;
                h = h.max(height[u]);
                d = d.min(near[u]);
                s = s.min(small[u]);
            }
            let i = i as usize;
            height[i] = h.saturating_add(1);
            near[i] = d.saturating_add(1);
            small[i] = s;
        }
        Metrics {
            acyclic: topo.len() == n,
            need,
            total,
            height,
            near,
            small,
        }
    }
}

/// The state of the walk.
struct Walk<'a> {
    deps: &'a Csr,
    dependents: &'a Csr,
    keys: &'a [Key],
    need: &'a [u32],
    total: &'a [u32],
    height: &'a [u32],
    near: &'a [u32],
    small: &'a [u32],
    /// The result: position in the order, `UNSET` until scheduled.
    prio: Vec<u32>,
    next: u32,
    /// Unscheduled dependencies (0: ready).
    needed: Vec<u32>,
    /// Unscheduled dependents (0: the result is released).
    holders: Vec<u32>,
    /// Dependencies that are neither scheduled nor ready.
    blocked: Vec<u32>,
    /// Dependencies whose only unscheduled dependent is this node (running it frees them).
    sole: Vec<u32>,
    flags: Vec<u8>,
    /// The depth-first walk's stack of nodes to compute.
    stack: Vec<u32>,
    /// Scheduled nodes that had unscheduled dependents, most recent last.
    resume: Vec<u32>,
    /// Unscheduled dependents of a held result, to climb from to the next target.
    seeds: Vec<u32>,
    /// Eager work of one `run`, and its scratch lists.
    work: Vec<u32>,
    last_one: Vec<u32>,
    freeing: Vec<u32>,
    rising: Vec<u32>,
    wanted: Vec<u32>,
    postponed: Vec<u32>,
    /// Ready memory-neutral nodes (each frees one result and adds one), oldest first.
    deferred: Vec<u32>,
    buf: Vec<u32>,
    /// Scratch of [`Walk::sort_preferred`].
    decorated: Vec<[u64; 2]>,
    /// Whether the walk climbs from held results to new targets when its stack runs dry (else
    /// it goes on with the next output).
    climb: bool,
    /// Scratch of [`radix_sort`].
    radix_tmp: Vec<[u64; 2]>,
}

/// Lists at least this long are sorted with precomputed sort keys.
const DECORATE: usize = 32;
/// Decorated lists at least this long are sorted by radix.
const RADIX: usize = 128;

/// Sorts `v` ascending (by the first word, then the second), where the entries differ only in
/// the bits of `varying` (the bits in which some entry differs from the first; entries equal in
/// them keep their order): a least significant digit radix sort with one pass per byte in which
/// some entries differ. `tmp` is scratch.
fn radix_sort(v: &mut Vec<[u64; 2]>, tmp: &mut Vec<[u64; 2]>, varying: [u64; 2]) {
    // (word, shift) of each byte that varies, least significant first.
    let digits: Vec<(usize, u32)> = (0..16u32)
        .map(|b| (1 - (b / 8) as usize, (b % 8) * 8))
        .filter(|&(w, s)| (varying[w] >> s) as u8 != 0)
        .collect();
    if digits.is_empty() {
        return;
    }
    let mut counts = [0u32; 256];
    tmp.clear();
    tmp.resize(v.len(), [0; 2]);
    for &(w, s) in &digits {
        counts.fill(0);
        for x in v.iter() {
            counts[usize::from((x[w] >> s) as u8)] += 1;
        }
        let mut at = 0u32;
        for slot in counts.iter_mut() {
            (*slot, at) = (at, at + *slot);
        }
        for x in v.iter() {
            let slot = &mut counts[usize::from((x[w] >> s) as u8)];
            tmp[*slot as usize] = *x;
            *slot += 1;
        }
        std::mem::swap(v, tmp);
    }
}

/// The length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Up to 12 bytes of `rest` as a big-endian number (zero-padded on the right): the top 8 and
/// the last 4.
fn window(rest: &[u8]) -> (u64, u32) {
    if let Some(w) = rest.get(..12) {
        let hi = u64::from_be_bytes(w[..8].try_into().expect("8 bytes"));
        return (hi, u32::from_be_bytes(w[8..].try_into().expect("4 bytes")));
    }
    let (hi, lo) = rest.split_at(rest.len().min(8));
    let mut h = 0u64;
    for &b in hi {
        h = (h << 8) | u64::from(b);
    }
    if hi.len() < 8 {
        // A shift by 64 would overflow: an empty rest is 0.
        return (h.checked_shl(8 * (8 - hi.len() as u32)).unwrap_or(0), 0);
    }
    let mut l = 0u32;
    for &b in lo {
        l = (l << 8) | u32::from(b);
    }
    // `lo` has fewer than 4 bytes here, maybe none (a shift by 32 would overflow).
    (h, l.checked_shl(8 * (4 - lo.len() as u32)).unwrap_or(0))
}

impl<'a> Walk<'a> {
    /// The tie-break between otherwise equal nodes: `Less` when `a` goes first, which is when
    /// its key is the smaller (`("x", 0)` before `("x", 9)`; Dask goes the other way).
    fn tie(&self, a: u32, b: u32) -> std::cmp::Ordering {
        self.keys[a as usize].cmp(&self.keys[b as usize])
    }

    /// Which of two nodes to compute first: larger need, larger total, smaller key. A ready
    /// node needs one slot whatever its static need.
    fn prefer(&self, a: u32, b: u32) -> std::cmp::Ordering {
        let need = |i: u32| {
            if self.needed[i as usize] == 0 {
                1
            } else {
                self.need[i as usize]
            }
        };
        need(b)
            .cmp(&need(a))
            .then_with(|| self.total[b as usize].cmp(&self.total[a as usize]))
            .then_with(|| self.tie(a, b))
    }

    /// The `(need, total)` word of a node: ascending in it is descending in need (a ready node
    /// needs one slot), then in total.
    fn head(&self, i: u32) -> u64 {
        let n = i as usize;
        let need = if self.needed[n] == 0 { 1 } else { self.need[n] };
        (u64::from(!need) << 32) | u64::from(!self.total[n])
    }

    /// Sorts `ids` by [`Walk::prefer`]. Long lists (a node with many inputs) are sorted on
    /// precomputed 12-byte words: the `(need, total)` word and 4 bytes of the string key just
    /// past the prefix all their string keys share, or 12 bytes of it when all have the same
    /// `(need, total)`. Runs of equal words are then sorted by comparing the keys: the same
    /// total order as [`Walk::prefer`], with far fewer key comparisons. An entry is two
    /// `u64`, the word above the node id, sorted as one number: by a radix sort on the bytes
    /// in which entries differ when the list is long.
    fn sort_preferred(&mut self, ids: &mut [u32]) {
        if ids.len() < DECORATE {
            ids.sort_unstable_by(|&a, &b| self.prefer(a, b));
            return;
        }
        // One pass over the keys decorates them, with two guesses checked on the way: the
        // prefix all string keys share (that of the first and last entries; any shorter one
        // is also right, only less telling) and whether all have the same `(need, total)`.
        // A wrong guess (the prefix is longer, or the heads differ) costs a second pass.
        let keys = self.keys;
        let bytes = |i: u32| match &keys[i as usize] {
            Key::Str(s) => Some(s.as_bytes()),
            Key::Tuple(_) => None,
        };
        let (first, last) = (ids[0], ids[ids.len() - 1]);
        let mut prefix: &[u8] = match (bytes(first), bytes(last)) {
            (Some(a), Some(b)) => &a[..common_prefix(a, b)],
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => &[],
        };
        let mut uniform = self.head(first) == self.head(last);
        let mut dec = std::mem::take(&mut self.decorated);
        let varying = loop {
            dec.clear();
            dec.reserve(ids.len());
            // Each entry: the 96-bit word in the first word and the top of the second, the
            // node id at the bottom of the second. `varying`: the bits in which some entry
            // differs from the first.
            let mut varying = [0u64; 2];
            let (skip, first_head) = (prefix.len(), self.head(first));
            let mut same_heads = true;
            for &i in ids.iter() {
                // Strings sort before tuples; a tie (also between two tuples) compares keys.
                let (hi, lo) = match bytes(i) {
                    Some(s) => {
                        if s.len() < prefix.len() || !bytes_eq(&s[..prefix.len()], prefix) {
                            prefix = &prefix[..common_prefix(prefix, s)];
                        }
                        window(s.get(skip..).unwrap_or_default())
                    }
                    None => (u64::MAX, u32::MAX),
                };
                let head = self.head(i);
                same_heads &= head == first_head;
                let e = if uniform {
                    [hi, (u64::from(lo) << 32) | u64::from(i)]
                } else {
                    [head, ((hi >> 32) << 32) | u64::from(i)]
                };
                let f = dec.first().copied().unwrap_or(e);
                varying[0] |= e[0] ^ f[0];
                varying[1] |= (e[1] ^ f[1]) & !u64::from(u32::MAX);
                dec.push(e);
            }
            if prefix.len() == skip && (same_heads || !uniform) {
                break varying;
            }
            uniform = same_heads;
        };
        if dec.len() >= RADIX {
            let mut tmp = std::mem::take(&mut self.radix_tmp);
            radix_sort(&mut dec, &mut tmp, varying);
            self.radix_tmp = tmp;
        } else {
            dec.sort_unstable_by_key(|e| (e[0], e[1]));
        }
        // Each run of equal words, if any, by the keys.
        let mut start = 0;
        for k in 1..=dec.len() {
            let word = |e: [u64; 2]| (e[0], e[1] >> 32);
            if k == dec.len() || word(dec[k]) != word(dec[start]) {
                if k - start > 1 {
                    dec[start..k].sort_unstable_by(|a, b| self.tie(a[1] as u32, b[1] as u32));
                }
                start = k;
            }
        }
        for (slot, d) in ids.iter_mut().zip(&dec) {
            *slot = d[1] as u32;
        }
        self.decorated = dec;
    }

    /// Runs the depth-first walk until the stack is empty.
    fn drain_stack(&mut self) {
        while let Some(&top) = self.stack.last() {
            let t = top as usize;
            if self.prio[t] != UNSET {
                self.stack.pop();
            } else if self.needed[t] == 0 {
                self.stack.pop();
                self.run(top);
            } else if self.flags[t] & EXPANDED != 0 {
                // Its dependencies were all computed before it surfaced again, unless on a cycle.
                self.stack.pop();
            } else if !self.settles(top) && self.flush_deferred() {
                // Before walking back for new data, make the postponed swaps (which may have
                // changed what the top needs); unless the top needs only ready inputs and
                // finishing it releases what it adds.
            } else {
                self.flags[t] |= EXPANDED;
                let mut buf = std::mem::take(&mut self.buf);
                buf.clear();
                buf.reserve(self.deps.get(top).len());
                buf.extend(
                    self.deps
                        .get(top)
                        .iter()
                        .filter(|&&d| self.prio[d as usize] == UNSET),
                );
                self.sort_preferred(&mut buf);
                buf.dedup();
                for &d in &buf {
                    self.flags[d as usize] |= ONSTACK;
                }
                self.stack.extend(buf.iter().rev());
                self.buf = buf;
            }
        }
    }

    /// Runs the postponed memory-neutral nodes (oldest first) that are still unscheduled. False
    /// when there were none.
    fn flush_deferred(&mut self) -> bool {
        let mut any = false;
        let mut k = 0;
        while k < self.deferred.len() {
            let h = self.deferred[k];
            k += 1;
            if self.prio[h as usize] == UNSET {
                any = true;
                self.run(h);
            }
        }
        self.deferred.clear();
        any
    }

    /// Continues from the most recently run node whose result is still held: climbs from one of
    /// its unscheduled dependents to an output and makes that the target. False when no result
    /// is held.
    fn resume_forward(&mut self) -> bool {
        loop {
            while let Some(s) = self.seeds.pop() {
                if self.prio[s as usize] != UNSET {
                    continue;
                }
                // Every dependent of an unscheduled node is unscheduled: climb to an output
                // (at most `n` steps, which only a cycle could exceed).
                let mut top = s;
                for _ in 0..self.prio.len() {
                    let ups = self.dependents.get(top).iter().copied();
                    match ups.min_by(|&a, &b| self.closer(a, b)) {
                        Some(up) => top = up,
                        None => break,
                    }
                }
                self.flags[top as usize] |= ONSTACK;
                self.stack.push(top);
                return true;
            }
            let Some(x) = self.resume.pop() else {
                return false;
            };
            let i = x as usize;
            if self.holders[i] == 0 || self.flags[i] & FORWARD != 0 {
                continue;
            }
            self.flags[i] |= FORWARD;
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            buf.extend(
                self.dependents
                    .get(x)
                    .iter()
                    .filter(|&&d| self.prio[d as usize] == UNSET),
            );
            buf.sort_unstable_by(|&a, &b| self.closer(b, a));
            buf.dedup();
            self.seeds.extend_from_slice(&buf);
            self.buf = buf;
        }
    }

    /// Which of two dependents to climb through to the next target: the one nearer an output,
    /// then the one leading to the smaller output (less work to finish it), then fewer missing
    /// dependencies, then the tie-break.
    fn closer(&self, a: u32, b: u32) -> std::cmp::Ordering {
        let (a, b) = (a as usize, b as usize);
        (self.near[a], self.small[a], self.needed[a])
            .cmp(&(self.near[b], self.small[b], self.needed[b]))
            .then_with(|| self.tie(a as u32, b as u32))
    }

    /// Which of two nodes heads the longer path to an output, then the tie-break.
    fn longer(&self, a: u32, b: u32) -> std::cmp::Ordering {
        self.height[b as usize]
            .cmp(&self.height[a as usize])
            .then_with(|| self.tie(a, b))
    }

    /// Whether running the ready node `h` now keeps memory down: it is an output, or it frees
    /// more results than it adds. A node that frees one result and adds one is worth it if it
    /// is a dependent of the node just run (`rising`: the walk stays local), or if it lets one
    /// of its dependents run right after it.
    fn worth_running(&self, h: u32, rising: bool) -> bool {
        let outs = self.dependents.get(h);
        if outs.is_empty() {
            return true;
        }
        let freed = self.sole[h as usize];
        // The look-ahead is capped so that a node with a huge fan-out costs O(1) here.
        // A node that frees nothing, whose only dependent it makes ready and which then frees
        // it and another result: together memory-neutral, like a node that frees one result.
        let pair = || match outs {
            [g] => self.needed[*g as usize] == 1 && self.sole[*g as usize] >= 2,
            _ => false,
        };
        freed >= 2
            || freed == 1 && (rising || outs.iter().take(32).any(|&g| self.needed[g as usize] == 1))
            || self.completes(h)
            || freed == 0 && rising && pair()
    }

    /// Whether the unscheduled node `h`, which lacks only ready inputs, is worth walking to now:
    /// computing it and those inputs releases at least as many results as it leaves behind
    /// (its own, unless it is an output, and the inputs that another task will still need
    /// once it has run). At most 32 inputs and consumers are looked at, so that a huge fan-in
    /// or fan-out costs O(1) here.
    #[inline(always)]
    fn settles(&self, h: u32) -> bool {
        let i = h as usize;
        self.blocked[i] == 0 && self.flags[i] & EXPANDED == 0 && self.settles_ready(h)
    }

    /// [`Walk::settles`] for a node with no blocked dependency, not expanded.
    fn settles_ready(&self, h: u32) -> bool {
        let ds = self.deps.get(h);
        if ds.len() > 32 {
            return false;
        }
        let (mut freed, mut staying) = (0, 0);
        for &d in ds {
            let d = d as usize;
            if self.prio[d] != UNSET {
                freed += u32::from(self.holders[d] == 1);
            } else {
                // It stays if another of its consumers will still lack more than it.
                let gs = self.dependents.get(d as u32);
                let stays =
                    gs.len() > 32 || gs.iter().any(|&g| g != h && self.needed[g as usize] > 1);
                staying += u32::from(stays);
            }
        }
        let own = u32::from(!self.dependents.get(h).is_empty());
        freed >= own + staying
    }

    /// Whether running the memory-neutral node `h` (it frees one result and adds one) now would
    /// drift away from what the walk is computing: the walk does not need it (it is not on the
    /// stack) and it heads a long chain (its longest path to an output is longer than its
    /// shortest), along which such swaps would carry the walk off, leaving each link's other
    /// consumers behind (a running total across row chunks).
    fn drifts(&self, h: u32) -> bool {
        let i = h as usize;
        self.sole[i] == 1
            && !self.dependents.get(h).is_empty()
            && self.flags[i] & ONSTACK == 0
            && self.height[i] != self.near[i]
            && !self.completes(h)
    }

    /// Whether `h` is one step below outputs that all become ready when it runs (at most 32 of
    /// them, so that a huge fan-out costs O(1) here): running it completes a branch.
    fn completes(&self, h: u32) -> bool {
        let outs = self.dependents.get(h);
        !outs.is_empty()
            && outs.len() <= 32
            && outs
                .iter()
                .all(|&g| self.needed[g as usize] == 1 && self.dependents.get(g).is_empty())
    }

    /// Gives the ready node `x` the next position and updates the counters: inputs left with one
    /// consumer go to `last_one`, dependents made ready to `rising`. All counters are updated
    /// before any decision, so that the decisions do not depend on the order of adjacency
    /// lists (and so on node numbering).
    #[inline(always)]
    fn schedule(&mut self, x: u32) -> &'a [u32] {
        let (deps, dependents) = (self.deps, self.dependents);
        self.prio[x as usize] = self.next;
        self.next += 1;
        for &e in deps.get(x) {
            let held = &mut self.holders[e as usize];
            *held -= 1;
            if *held == 1 {
                self.last_one.push(e);
            }
        }
        let ups = dependents.get(x);
        for &d in ups {
            let needed = &mut self.needed[d as usize];
            *needed -= 1;
            if *needed == 0 {
                for &g in dependents.get(d) {
                    self.blocked[g as usize] -= 1;
                }
                self.rising.push(d);
            }
        }
        ups
    }

    /// Schedules the ready node `x`, then everything that is worth running right after it.
    fn run(&mut self, x: u32) {
        let i = x as usize;
        if self.prio[i] != UNSET {
            return;
        }
        let ups = self.schedule(x);
        if !self.last_one.is_empty() || !self.rising.is_empty() {
            self.run_eager(x);
            return;
        }
        // The common case, taken without the eager machinery (same decisions): running `x`
        // made nothing ready and left no input with one consumer, so nothing runs eagerly;
        // only consumers of `x` (none of them ready: `rising` is empty) may be worth walking
        // to. They are all unscheduled and hold `x`.
        for &h in ups {
            if self.settles(h) {
                self.wanted.push(h);
            }
        }
        if !ups.is_empty() {
            self.resume.push(x);
        }
        if !self.wanted.is_empty() {
            let mut wanted = std::mem::take(&mut self.wanted);
            self.push_wanted(&mut wanted);
            self.wanted = wanted;
        }
    }

    /// Puts the consumers worth walking to soon on the stack, preferred on top.
    fn push_wanted(&mut self, wanted: &mut Vec<u32>) {
        wanted.retain(|&h| self.prio[h as usize] == UNSET);
        wanted.sort_unstable_by(|&a, &b| self.prefer(b, a));
        wanted.dedup();
        for &h in wanted.iter() {
            self.flags[h as usize] |= ONSTACK;
        }
        self.stack.append(wanted);
    }

    /// [`Walk::run`] once `x` was scheduled and made some node ready or left an input with one
    /// consumer (in `rising` and `last_one`): runs what is worth running right after it.
    fn run_eager(&mut self, x: u32) {
        let mut work = std::mem::take(&mut self.work);
        let mut freeing = std::mem::take(&mut self.freeing);
        let mut wanted = std::mem::take(&mut self.wanted);
        let mut postponed = std::mem::take(&mut self.postponed);
        // `x` is scheduled already; every other node is scheduled when popped.
        let mut first = Some(x);
        loop {
            let x = match first.take() {
                Some(x) => x,
                None => {
                    let Some(x) = work.pop() else {
                        break;
                    };
                    if self.prio[x as usize] != UNSET {
                        continue;
                    }
                    self.schedule(x);
                    x
                }
            };
            let i = x as usize;
            // Empty again at the end of this round (drained, appended to `work`).
            let mut last_one = std::mem::take(&mut self.last_one);
            let mut rising = std::mem::take(&mut self.rising);
            // Each `e` has one consumer `h` left, which would now free it.
            last_one.retain_mut(|e| {
                let mut hs = self.dependents.get(*e).iter();
                let Some(&h) = hs.find(|&&h| self.prio[h as usize] == UNSET) else {
                    return false;
                };
                self.sole[h as usize] += 1;
                *e = h;
                true
            });
            // Favour the longest critical path, as far as it costs nothing lasting: when
            // outputs are about to run, a dependent of `x` one step below outputs (which all
            // become ready with it) runs before them, so that on a parallel scheduler the chain
            // starts first (Dask's `test_favor_longest_critical_path`). Longer chains would
            // hold `x` and their own results while the walk climbs them.
            let lead = if rising.len() > 1 {
                rising
                    .iter()
                    .copied()
                    .filter(|&d| self.completes(d))
                    .min_by(|&a, &b| self.tie(a, b))
            } else {
                None
            };
            rising.retain(|&d| self.worth_running(d, true));
            let lead = lead.filter(|l| {
                !rising.contains(l) && rising.iter().any(|&d| self.dependents.get(d).is_empty())
            });
            // Walk soon to a consumer of `x` that lacks only ready inputs, when finishing it
            // releases at least what it adds.
            for &h in self.dependents.get(x) {
                if self.needed[h as usize] > 0 && self.settles(h) {
                    wanted.push(h);
                }
            }
            // Run each `h` if that is worth it, or walk to it soon if it only lacks ready inputs.
            for h in last_one.drain(..) {
                if self.needed[h as usize] == 0 {
                    if self.worth_running(h, false) && !self.drifts(h) {
                        freeing.push(h);
                    } else {
                        // Memory-neutral: postponed until the walk is about to load new data,
                        // so the current branch stays together.
                        postponed.push(h);
                    }
                } else if self.settles(h) {
                    wanted.push(h);
                }
            }
            if self.holders[i] > 0 {
                self.resume.push(x);
            }
            postponed.sort_unstable_by(|&a, &b| self.tie(a, b));
            self.deferred.append(&mut postponed);
            // Dependents of `x` first (popped first), the longest path first among them; then
            // the other consumers it unlocked, in tie-break order.
            freeing.sort_unstable_by(|&a, &b| self.tie(b, a));
            work.append(&mut freeing);
            // Among those: a node one step below outputs first (the chain to an output starts
            // before its sibling outputs), then outputs (they free at once), then the longest
            // path first.
            rising.sort_unstable_by(|&a, &b| {
                let rank = |x: u32| match self.height[x as usize] {
                    1 => 0,
                    0 => 1,
                    _ => 2,
                };
                rank(b).cmp(&rank(a)).then_with(|| self.longer(b, a))
            });
            work.append(&mut rising);
            work.extend(lead);
            (self.last_one, self.rising) = (last_one, rising);
        }
        self.push_wanted(&mut wanted);
        (self.work, self.freeing, self.wanted, self.postponed) = (work, freeing, wanted, postponed);
    }
}

/// The largest number of results alive at once when the plan runs one task at a time in
/// `priority` order.
///
/// A result is alive from the moment its task runs until its last dependent has run; while a
/// task runs, its inputs and its output are alive together. Results nobody depends on (the
/// graph's outputs) count only while their task runs: they are handed to the caller, and no
/// order can avoid holding them at the end, so counting them until the end would only add the
/// number of outputs finished so far. This is Dask's `diagnostics` pressure plus one (Dask
/// counts the results held just before a task runs, without its output).
///
/// # Panics
/// When `priority` is not a permutation of `0..n`.
pub fn memory_pressure(deps: &Csr, dependents: &Csr, priority: &[u32]) -> usize {
    let n = deps.len();
    assert_eq!(priority.len(), n, "one priority per node");
    let mut by_prio = vec![UNSET; n];
    for (i, &p) in priority.iter().enumerate() {
        assert!(
            by_prio[p as usize] == UNSET,
            "priority is not a permutation"
        );
        by_prio[p as usize] = i as u32;
    }
    let mut holders: Vec<u32> = (0..n as u32)
        .map(|i| dependents.get(i).len() as u32)
        .collect();
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
        if dependents.get(i).is_empty() {
            alive -= 1;
        }
    }
    peak
}

#[cfg(test)]
mod tests {

    /// Random dependencies of `n` nodes on lower-numbered ones (up to three each), so need
    /// and total vary; none when `uniform`, so that all nodes have the same need and total.
    fn random_deps(n: usize, uniform: bool, rand: &mut impl FnMut(u64) -> u64) -> Csr {
        let lists: Vec<Vec<u32>> = (0..n)
            .map(|i| {
                let mut l: Vec<u32> = (0..rand(4))
                    .filter(|_| i > 0 && !uniform)
                    .map(|_| rand(i as u64) as u32)
                    .collect();
                l.sort_unstable();
                l.dedup();
                l
            })
            .collect();
        Csr::from_lists(lists)
    }
    use super::*;
    use crate::key::KeyPart;

    /// The decorated sort of long lists is the same order as sorting with `prefer`.
    #[test]
    fn decorated_sort_matches_prefer() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let pieces = [
            "", "a", "ab", "\0", "\0\0", "inc-", "x", "\u{ff}", "zzzzzzzz", "12345678",
        ];
        for round in 0..300 {
            // Both the comparison sort of decorated lists and the radix sort of long ones.
            let n = 40 + rand(if round % 2 == 0 { 200 } else { 700 }) as usize;
            let prefix = ["", "chunk-", "inc-abcdef0123-"][round % 3];
            let keys: Vec<Key> = (0..n)
                .map(|i| {
                    if rand(10) == 0 {
                        let parts: Vec<KeyPart> = (0..1 + rand(3))
                            .map(|_| match rand(2) {
                                0 => KeyPart::Int(rand(5) as i64),
                                _ => KeyPart::from(pieces[rand(10) as usize]),
                            })
                            .collect();
                        // Unique: the node number as the last part.
                        let mut parts = parts;
                        parts.push(KeyPart::Int(i as i64));
                        Key::tuple(parts)
                    } else {
                        let mut s = String::from(prefix);
                        for _ in 0..rand(4) {
                            s.push_str(pieces[rand(10) as usize]);
                        }
                        if rand(3) > 0 {
                            s.push_str(&i.to_string());
                        } else {
                            s.push_str(&format!("{i}{}", "\0".repeat(rand(3) as usize)));
                        }
                        Key::from(s)
                    }
                })
                .collect();
            // Random dependencies on lower-numbered nodes, so need and total vary; every other
            // round none, so that all nodes have the same need and total (the sort's words are
            // then 12 bytes of the keys).
            let deps = random_deps(n, round % 2 == 1, &mut rand);
            let dependents = deps.transpose();
            let m = Metrics::new(&deps, &dependents);
            let mut w = Walk::new(&deps, &dependents, &keys, &m);
            for i in 0..n {
                if rand(3) == 0 {
                    w.needed[i] = 0;
                }
            }
            let mut ids: Vec<u32> = (0..n as u32).filter(|_| rand(4) > 0).collect();
            let mut expected = ids.clone();
            expected.sort_unstable_by(|&a, &b| w.prefer(a, b));
            w.sort_preferred(&mut ids);
            assert_eq!(ids, expected, "round {round}");
        }
    }

    /// `sort_preferred` on adversarial lists at the sizes around its thresholds: every key
    /// shares a prefix longer than the 12-byte window and differs only in its last byte (any
    /// byte value, also zero and above ASCII), or only in its length; tuple keys mixed in
    /// (first, last, or in between); all heads equal or not; ids in both directions.
    #[test]
    fn sort_preferred_on_adversarial_keys() {
        let prefix = "shared-prefix-longer-than-the-window-";
        for n in [31, 32, 33, 127, 128, 129, 255, 256, 257] {
            for shape in 0..6 {
                let keys: Vec<Key> = (0..n)
                    .map(|i| match shape {
                        // Only the last byte differs (distinct bytes, also 0 and 0xff).
                        0 => Key::from(last_byte_key(prefix, i)),
                        // Only the length differs (a run of one byte, then zero bytes).
                        1 => Key::from(format!("{prefix}{}", "a".repeat(i))),
                        2 => Key::from(format!("{prefix}{}", "\0".repeat(i))),
                        // Tuples first and last, strings between.
                        3 if i == 0 || i == n - 1 => Key::tuple([KeyPart::Int(i as i64)]),
                        // Every third a tuple sharing the string part.
                        4 if i % 3 == 0 => {
                            Key::tuple([KeyPart::from(prefix), KeyPart::Int(i as i64)])
                        }
                        // A 1-tuple of the same string beside the string.
                        5 if i % 2 == 1 => {
                            Key::tuple([KeyPart::from(last_byte_key(prefix, i - 1).as_str())])
                        }
                        _ => Key::from(last_byte_key(prefix, i)),
                    })
                    .collect();
                for uniform in [true, false] {
                    let lists: Vec<Vec<u32>> = (0..n)
                        .map(|i| {
                            if uniform || i == 0 {
                                vec![]
                            } else {
                                vec![(i as u32 * 7) % i as u32]
                            }
                        })
                        .collect();
                    let deps = Csr::from_lists(lists);
                    let dependents = deps.transpose();
                    let m = Metrics::new(&deps, &dependents);
                    let w = Walk::new(&deps, &dependents, &keys, &m);
                    let mut w = w;
                    for ids in [
                        (0..n as u32).collect::<Vec<_>>(),
                        (0..n as u32).rev().collect::<Vec<_>>(),
                    ] {
                        let mut got = ids.clone();
                        let mut expected = ids;
                        expected.sort_unstable_by(|&a, &b| w.prefer(a, b));
                        w.sort_preferred(&mut got);
                        assert_eq!(got, expected, "{n} keys, shape {shape}, uniform {uniform}");
                    }
                }
            }
        }
    }

    /// `prefix` then a character whose UTF-8 ends in a byte that differs for each `i` (0..=257).
    fn last_byte_key(prefix: &str, i: usize) -> String {
        // Characters U+0000..U+00FF: one byte below 0x80, two bytes above (last byte varies).
        let c = char::from_u32((i % 256) as u32).expect("a char");
        format!("{prefix}{}{c}", if i >= 256 { "~" } else { "" })
    }

    /// A key of the proptest below: a string (a shared prefix, then pieces chosen to collide
    /// within the sort's 12-byte window, zero bytes and bytes above ASCII), or a tuple.
    fn key_strategy() -> impl proptest::strategy::Strategy<Value = Key> {
        use proptest::prelude::*;
        let piece = prop::sample::select(vec![
            "",
            "a",
            "ab",
            "\0",
            "\0\0",
            "0",
            "9",
            "10",
            "x-",
            "\u{ff}",
            "\u{7f}",
            "zzzzzzzz",
            "12345678",
            "123456789abc",
        ]);
        let string = (
            prop::sample::select(vec!["", "inc-", "inc-abcdef0123456789-", "x"]),
            prop::collection::vec(piece.clone(), 0..5),
        )
            .prop_map(|(prefix, pieces)| Key::from(format!("{prefix}{}", pieces.concat())));
        let part = prop_oneof![
            (-3i64..3).prop_map(KeyPart::Int),
            Just(KeyPart::UInt(u64::MAX)),
            piece.prop_map(KeyPart::from),
        ];
        let tuple = prop::collection::vec(part, 0..4).prop_map(Key::tuple);
        prop_oneof![4 => string, 1 => tuple]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// `sort_preferred` (decorated words, radix sorted when long) orders any list of
        /// nodes as sorting with the comparator `prefer` does: random distinct keys (strings
        /// with shared prefixes, tuples, both), random needs and totals or all equal, some
        /// nodes ready.
        #[test]
        fn sort_preferred_is_prefer(
            keys in proptest::collection::btree_set(key_strategy(), 1..400),
            uniform in proptest::prelude::any::<bool>(),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut seed = seed | 1;
            let mut rand = move |m: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % m
            };
            // Shuffled: the set iterates in key order.
            let mut keys: Vec<Key> = keys.into_iter().collect();
            for i in (1..keys.len()).rev() {
                keys.swap(i, rand(i as u64 + 1) as usize);
            }
            let n = keys.len();
            let deps = random_deps(n, uniform, &mut rand);
            let dependents = deps.transpose();
            let m = Metrics::new(&deps, &dependents);
            let mut w = Walk::new(&deps, &dependents, &keys, &m);
            for i in 0..n {
                if !uniform && rand(3) == 0 {
                    w.needed[i] = 0;
                }
            }
            let mut ids: Vec<u32> = (0..n as u32).filter(|_| rand(8) > 0).collect();
            let mut expected = ids.clone();
            expected.sort_unstable_by(|&a, &b| w.prefer(a, b));
            w.sort_preferred(&mut ids);
            proptest::prop_assert_eq!(ids, expected);
        }
    }
}
