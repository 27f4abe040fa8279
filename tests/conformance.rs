//! One conformance suite, run against every scheduler: the behaviours of Dask's
//! `GetFunctionTestMixin` (dask/utils_test.py), `test_local.py`, `test_threaded.py` and
//! `test_callbacks.py`, ported to forkgraph.
//!
//! A scheduler joins with one line:
//!
//! ```ignore
//! conformance_suite!(procs, forkgraph::ProcessPool::builder().workers(2).build().unwrap());
//! ```
//!
//! The cases live in `conformance/cases.rs` as generic functions of the scheduler; they observe
//! effects only through results and callbacks, so schedulers that run tasks in other processes
//! pass them too. Behaviours that only hold in one process (execution order of the sync
//! scheduler, pointer identity of shared arrays) are in `mod in_process` below.

use std::collections::BTreeMap;

use forkgraph::{Serde, Value};
use serde::{Deserialize, Serialize};

#[path = "conformance/cases.rs"]
mod cases;
#[allow(dead_code)]
#[path = "conformance/random.rs"]
mod random;
#[allow(dead_code)]
#[path = "conformance/support.rs"]
mod support;

// The task functions of `support` by name, for `graph!` here and (through `crate::*`) in the
// submodules.
use support::{add, explode, fail, inc, total};

// ---- Task functions (registered by name for the whole test binary) ----

#[forkgraph::task]
fn dec(x: i64) -> i64 {
    x - 1
}

#[forkgraph::task]
fn sum_nested(xss: Vec<Vec<i64>>) -> i64 {
    xss.iter().flatten().sum()
}

#[forkgraph::task]
fn identity(v: Value) -> Value {
    v
}

#[forkgraph::task]
fn kind_of(v: &Value) -> String {
    v.kind()
}

#[forkgraph::task]
fn shout(s: &str) -> String {
    s.to_uppercase()
}

#[forkgraph::task]
fn weigh(m: BTreeMap<String, i64>) -> i64 {
    m["a"] * 100 + m["b"] * 10 + m["c"]
}

#[forkgraph::task]
fn unwrap_none(x: i64) -> i64 {
    let nothing: Option<i64> = if x > i64::MIN { None } else { Some(x) };
    nothing.unwrap()
}

#[forkgraph::task]
fn ramp(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

#[forkgraph::task]
fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[forkgraph::task]
fn head(xs: &[f64], n: usize) -> Vec<f64> {
    xs[..n].to_vec()
}

#[forkgraph::task]
fn same_memory(a: &[f64], b: &[f64]) -> bool {
    std::ptr::eq(a, b)
}

#[forkgraph::task]
fn total_len(xs: Vec<&[f64]>) -> usize {
    xs.iter().map(|x| x.len()).sum()
}

#[forkgraph::task]
fn address(xs: &[f64]) -> u64 {
    xs.as_ptr() as u64
}

#[forkgraph::task]
fn thread_name(_x: i64) -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

/// A user type carried with serde.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stats {
    n: u64,
    mean: f64,
    label: String,
}

#[forkgraph::task]
fn summarize(xs: &[f64], label: String) -> Serde<Stats> {
    Serde(Stats {
        n: xs.len() as u64,
        mean: xs.iter().sum::<f64>() / xs.len() as f64,
        label,
    })
}

#[forkgraph::task]
fn describe(s: Serde<Stats>) -> String {
    format!("{}: n={} mean={}", s.0.label, s.0.n, s.0.mean)
}

#[forkgraph::task]
fn relabel(s: Serde<Stats>, label: &str) -> Serde<Stats> {
    Serde(Stats {
        label: label.to_owned(),
        ..s.0
    })
}

#[forkgraph::task]
fn nested_get(x: i64) -> Result<i64, String> {
    let inner = forkgraph::graph! {
        "ix" => (add, 1, 2),
        "iy" => (add, forkgraph::key("ix"), 3),
    };
    let out = forkgraph::get(&inner, "iy").map_err(|e| e.to_string())?;
    Ok(out.to::<i64>().map_err(|e| e.to_string())? + x)
}

// ---- The suite ----

/// `conformance_suite!(module_name, scheduler_expression)` adds one `#[test]` per case, each
/// building its own scheduler with the expression and running under a watchdog.
macro_rules! conformance_suite {
    ($modname:ident, $make:expr) => {
        mod $modname {
            conformance_suite!(@cases $make;
                get_returns_the_value_of_one_key,
                get_with_a_list_of_keys_returns_a_list,
                get_with_nested_lists_mirrors_the_nesting,
                an_empty_request_returns_an_empty_list,
                a_missing_requested_key_is_an_error,
                a_missing_dependency_is_an_error,
                literal_arguments_pass_through,
                nested_tasks_run_in_place,
                deeply_nested_tasks_and_lists_run,
                lists_of_tasks_and_keys_mirror_dask_top_level_lists,
                lists_and_nested_lists_of_keys_are_arguments,
                maps_are_arguments,
                aliases_resolve_to_their_target,
                tuple_keys_and_mixed_keys,
                a_chain_of_ten_thousand_tasks_runs,
                a_cycle_in_a_long_chain_is_reported_and_the_rest_still_runs,
                only_needed_tasks_run,
                run_info_counts_the_culled_graph,
                callbacks_fire_in_order_on_the_calling_thread,
                finish_always_runs_also_after_a_failure,
                a_panicking_callback_propagates_and_the_scheduler_stays_usable,
                returned_errors_carry_key_function_and_message,
                panics_carry_key_function_and_message,
                a_type_mismatch_names_key_function_position_and_types,
                dependents_of_a_failed_task_never_start,
                the_scheduler_is_reusable_across_gets_and_errors,
                requested_intermediates_are_returned,
                the_same_key_requested_twice,
                fuse_and_inline_literals_give_identical_results,
                random_graphs_match_a_reference_evaluation,
                large_arrays_pass_through_as_views,
                serde_user_types_travel_between_tasks,
                a_task_may_run_its_own_get,
                a_nested_panic_names_the_innermost_function,
            );
        }
    };
    (@cases $make:expr; $($(#[$meta:meta])* $case:ident),* $(,)?) => {
        $(
            #[test]
            $(#[$meta])*
            fn $case() {
                crate::support::watchdog(stringify!($case), || {
                    let scheduler = $make;
                    crate::cases::$case(&scheduler);
                });
            }
        )*
    };
}

conformance_suite!(sync, forkgraph::SyncScheduler);
conformance_suite!(
    threads,
    forkgraph::ThreadPool::builder().threads(2).build().unwrap()
);

/// Behaviours that only hold when tasks run in this process.
mod in_process {
    use forkgraph::{graph, key, Arg, Graph, Key, Scheduler, SyncScheduler, ThreadPool, Value};

    use crate::random::random_graph;
    use crate::support::{watchdog, Recorder};
    use crate::*;

    fn run_sync_recorded(
        g: &Graph,
        req: &str,
    ) -> (Result<forkgraph::Output, forkgraph::Error>, Vec<Key>) {
        let rec = Recorder::new();
        let out = SyncScheduler.get_with(
            g,
            &req.into(),
            &forkgraph::GetOptions::new().callback(rec.clone()),
        );
        (out, rec.started())
    }

    fn positions(order: &[Key], keys: &[Key]) -> Vec<usize> {
        keys.iter()
            .map(|k| {
                order
                    .iter()
                    .position(|x| x == k)
                    .unwrap_or_else(|| panic!("{k} never ran"))
            })
            .collect()
    }

    /// Sync runs depth-first: a branch (a chain, or a subtree of a reduction) finishes before
    /// the next one starts, so few intermediates are alive at once.
    #[test]
    fn sync_finishes_one_branch_before_starting_the_next() {
        watchdog("branches", || {
            let mut g = Graph::new();
            let mut tops = Vec::new();
            for b in ["a", "b", "c"] {
                g.task(format!("{b}0"), "inc", vec![Arg::Value(Value::Int(0))]);
                for i in 1..10 {
                    g.task(
                        format!("{b}{i}"),
                        "inc",
                        vec![Arg::Key(Key::from(format!("{b}{}", i - 1)))],
                    );
                }
                tops.push(Arg::Key(Key::from(format!("{b}9"))));
                // A small reduction subtree per branch too.
                let leaves: Vec<Arg> = (0..5)
                    .map(|j| {
                        let k = Key::from((b, j));
                        g.task(k.clone(), "inc", vec![Arg::Value(Value::Int(j))]);
                        Arg::Key(k)
                    })
                    .collect();
                g.task(format!("{b}-sum"), "total", vec![Arg::List(leaves)]);
                tops.push(Arg::Key(Key::from(format!("{b}-sum"))));
            }
            g.task("root", "total", vec![Arg::List(tops)]);
            let (out, order) = run_sync_recorded(&g, "root");
            assert_eq!(out.unwrap().to::<i64>().unwrap(), 3 * 10 + 3 * 15);
            assert_eq!(order.len(), 3 * 10 + 3 * 6 + 1);
            assert_eq!(order.last(), Some(&Key::from("root")));
            for b in ["a", "b", "c"] {
                for group in [
                    (0..10)
                        .map(|i| Key::from(format!("{b}{i}")))
                        .collect::<Vec<_>>(),
                    (0..5i64)
                        .map(|j| Key::from((b, j)))
                        .chain([Key::from(format!("{b}-sum"))])
                        .collect(),
                ] {
                    let pos = positions(&order, &group);
                    let (lo, hi) = (pos.iter().min().unwrap(), pos.iter().max().unwrap());
                    assert_eq!(
                        hi - lo + 1,
                        group.len(),
                        "branch {group:?} interleaved: {order:?}"
                    );
                }
            }
        });
    }

    /// Dask `test_ordering`: independent tasks feeding one reduction run in key order (Dask
    /// runs them in reverse key order; either is a tie broken by key), and the order does not
    /// depend on how the graph was built or on the run.
    #[test]
    fn sync_breaks_ties_by_key_and_is_deterministic() {
        watchdog("ties", || {
            let build = |rev: bool| {
                let mut g = Graph::new();
                let mut idx: Vec<i64> = (0..10).collect();
                if rev {
                    idx.reverse();
                }
                for &i in &idx {
                    g.task(("x", i), "inc", vec![Arg::Value(Value::Int(i))]);
                }
                let xs = (0..10i64).map(|i| Arg::Key(Key::from(("x", i)))).collect();
                g.task("y", "total", vec![Arg::List(xs)]);
                g
            };
            let (_, order) = run_sync_recorded(&build(false), "y");
            let xs: Vec<Key> = (0..10i64).map(|i| Key::from(("x", i))).collect();
            let pos = positions(&order, &xs);
            let ascending = pos.windows(2).all(|w| w[0] < w[1]);
            let descending = pos.windows(2).all(|w| w[0] > w[1]);
            assert!(ascending || descending, "ties not broken by key: {order:?}");
            assert_eq!(run_sync_recorded(&build(true), "y").1, order);

            let rg = random_graph(7, 400);
            let last = rg.keys.last().unwrap().to_string();
            let mut shuffled = Graph::new();
            let mut nodes: Vec<_> = rg.graph.iter().collect();
            nodes.sort_by(|a, b| b.0.cmp(a.0));
            for (k, n) in nodes {
                shuffled.insert(k.clone(), n.clone());
            }
            let req: forkgraph::Keys = rg.keys.last().unwrap().clone().into();
            let rec1 = Recorder::new();
            let rec2 = Recorder::new();
            let o1 = forkgraph::GetOptions::new().callback(rec1.clone());
            let o2 = forkgraph::GetOptions::new().callback(rec2.clone());
            SyncScheduler.get_with(&rg.graph, &req, &o1).unwrap();
            SyncScheduler.get_with(&shuffled, &req, &o2).unwrap();
            assert_eq!(
                rec1.started(),
                rec2.started(),
                "order of {last} depends on the build"
            );
        });
    }

    /// In sync, once a task fails nothing else starts: the failing task is the last one begun.
    #[test]
    fn sync_starts_nothing_after_the_first_failure() {
        watchdog("first-failure", || {
            let mut g = graph! {
                "bad" => (fail, "stop"),
                "after-bad" => (inc, key("bad")),
            };
            let mut tops = vec![Arg::Key(Key::from("after-bad"))];
            for i in 0..20i64 {
                g.task(("ok", i), "inc", vec![Arg::Value(Value::Int(i))]);
                tops.push(Arg::Key(Key::from(("ok", i))));
            }
            g.task("root", "total", vec![Arg::List(tops)]);
            let (out, order) = run_sync_recorded(&g, "root");
            let err = out.unwrap_err();
            assert_eq!(err.task().map(|t| t.key.clone()), Some(Key::from("bad")));
            assert_eq!(order.last(), Some(&Key::from("bad")), "{order:?}");
        });
    }

    /// Sync runs tasks (and callbacks) in the calling thread.
    #[test]
    fn sync_runs_tasks_on_the_calling_thread() {
        watchdog("sync-calling-thread", || {
            let g = graph! { "t" => (thread_name, 1) };
            let out = SyncScheduler.get(&g, "t").unwrap();
            assert_eq!(out.to::<String>().unwrap(), "sync-calling-thread");
        });
    }

    /// An array made by one task reaches the next one, and `get`'s caller, without a copy.
    #[test]
    fn arrays_reach_consumers_without_copies_in_process() {
        watchdog("zero-copy", || {
            let g = graph! {
                "big" => (ramp, 1_000_000usize),
                "addr" => (address, key("big")),
                "addr-list" => (address, (head, key("big"), 10)),
            };
            let check = |s: &dyn Fn() -> forkgraph::Output| {
                let out = s();
                let items = out.as_list().unwrap();
                let Some(Value::Array(a)) = items[0].as_value() else {
                    panic!()
                };
                let ptr = a.as_bytes().as_ptr() as u64;
                assert_eq!(items[1], crate::support::one(ptr));
            };
            let pool = ThreadPool::builder().threads(2).build().unwrap();
            check(&|| SyncScheduler.get(&g, ["big", "addr"]).unwrap());
            check(&|| pool.get(&g, ["big", "addr"]).unwrap());
        });
    }
}
conformance_suite!(
    procs,
    forkgraph::ProcessPool::builder()
        .workers(2)
        .build()
        .unwrap()
);
