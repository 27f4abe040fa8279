//! The sync scheduler without callbacks, a memory budget or `keep_going` runs a plan straight
//! through in its static order (`sync::run_in_order`); with any of them it runs on the engine
//! with one slot. Both must be the same to a user: on random graphs (literals, aliases, lists
//! of keys with repeats, nested tasks, failing tasks, nested requests with repeats, with and
//! without fusion and literal inlining) the results, the error, the order in which tasks run
//! and how many results are held while each task runs are compared.

use std::cell::RefCell;
use std::sync::Arc;

use forkgraph::{
    Arg, Buffer, Callbacks, GetOptions, Graph, Key, Keys, Scheduler, SyncScheduler, Task, Value,
};
use proptest::prelude::*;

thread_local! {
    /// Every result of `probe` shares this allocation: its count less one is the number of
    /// results alive.
    static TEMPLATE: Arc<Vec<u8>> = Arc::new(vec![7u8; 8]);
    /// `(task name, results alive when it ran)`, in the order tasks ran.
    static LOG: RefCell<Vec<(String, usize)>> = const { RefCell::new(Vec::new()) };
}

fn alive() -> usize {
    TEMPLATE.with(|t| Arc::strong_count(t) - 1)
}

/// A result that can be counted while it is held.
fn probe_value() -> Value {
    let shared = TEMPLATE.with(Arc::clone);
    Value::Encoded("probe".into(), Buffer::from_storage(shared))
}

/// Logs its run and returns a counted result.
#[forkgraph::task]
fn probe(name: String, inputs: Vec<Value>) -> Value {
    LOG.with(|l| l.borrow_mut().push((name, alive())));
    let _ = inputs;
    probe_value()
}

/// Logs its run and fails.
#[forkgraph::task]
fn refuse(name: String, inputs: Vec<Value>) -> Result<Value, String> {
    LOG.with(|l| l.borrow_mut().push((name.clone(), alive())));
    let _ = inputs;
    Err(format!("{name} refuses"))
}

/// A callback that does nothing: its presence sends the sync scheduler through the engine.
struct Nothing;
impl Callbacks for Nothing {}

#[derive(Debug, Clone)]
enum NodeSpec {
    Literal(i64),
    Alias(usize),
    /// `(failing, dependencies as (index, nested in a list of its own), nested task)`.
    Task(bool, Vec<usize>, bool),
}

fn graph_strategy() -> impl Strategy<Value = (Vec<NodeSpec>, Vec<Vec<usize>>, bool, bool)> {
    (2usize..24)
        .prop_flat_map(|n| {
            let nodes = (0..n)
                .map(|i| {
                    if i == 0 {
                        prop_oneof![
                            any::<i64>().prop_map(NodeSpec::Literal),
                            Just(NodeSpec::Task(false, vec![], false)),
                        ]
                        .boxed()
                    } else {
                        prop_oneof![
                            1 => any::<i64>().prop_map(NodeSpec::Literal),
                            1 => (0..i).prop_map(NodeSpec::Alias),
                            6 => (
                                prop::bool::weighted(0.05),
                                prop::collection::vec(0..i, 0..5),
                                prop::bool::weighted(0.2),
                            )
                                .prop_map(|(f, d, t)| NodeSpec::Task(f, d, t)),
                        ]
                        .boxed()
                    }
                })
                .collect::<Vec<_>>();
            let request = prop::collection::vec(prop::collection::vec(0..n, 1..3), 1..4);
            (nodes, request, any::<bool>(), any::<bool>())
        })
        .prop_map(|(nodes, request, fuse, inline)| (nodes, request, fuse, inline))
}

fn key(i: usize) -> Key {
    Key::from(format!("n-{i}"))
}

fn build(nodes: &[NodeSpec]) -> Graph {
    let mut g = Graph::new();
    for (i, n) in nodes.iter().enumerate() {
        match n {
            NodeSpec::Literal(v) => {
                g.insert(key(i), Value::Int(*v));
            }
            NodeSpec::Alias(d) => {
                g.insert(key(i), forkgraph::key(key(*d)));
            }
            NodeSpec::Task(fails, deps, nested) => {
                let func = if *fails { "refuse" } else { "probe" };
                let list = Arg::List(deps.iter().map(|&d| Arg::Key(key(d))).collect());
                let inputs = if *nested {
                    // The keys read by a nested task (evaluated in place).
                    Arg::List(vec![Arg::Task(Task::new(
                        "probe",
                        vec![Arg::Value(Value::Str(format!("inner-{i}"))), list],
                    ))])
                } else {
                    list
                };
                g.insert(
                    key(i),
                    Task::new(func, vec![Arg::Value(Value::Str(format!("n-{i}"))), inputs]),
                );
            }
        }
    }
    g
}

/// What a run shows a user, and what the tasks saw.
type Seen = (Result<forkgraph::Output, String>, Vec<(String, usize)>);

fn run(g: &Graph, keys: &Keys, opts: &GetOptions) -> Seen {
    LOG.with(|l| l.borrow_mut().clear());
    let before = alive();
    let out = SyncScheduler::new()
        .get_with(g, keys, opts)
        .map_err(|e| e.to_string());
    let log = LOG.with(|l| std::mem::take(&mut *l.borrow_mut()));
    let log = log.into_iter().map(|(k, n)| (k, n - before)).collect();
    (out, log)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn straight_run_is_the_engine_with_one_slot(
        (nodes, request, fuse, inline) in graph_strategy()
    ) {
        let g = build(&nodes);
        let keys = Keys::List(
            request
                .iter()
                .map(|r| Keys::List(r.iter().map(|&i| Keys::One(key(i))).collect()))
                .collect(),
        );
        let opts = GetOptions::new().fuse(fuse).inline_literals(inline);
        let straight = run(&g, &keys, &opts);
        let engine = run(&g, &keys, &opts.clone().callback(Arc::new(Nothing)));
        prop_assert_eq!(&straight.0, &engine.0);
        prop_assert_eq!(&straight.1, &engine.1);
        // keep_going also goes through the engine; without a failure it is the same run.
        if straight.0.is_ok() {
            let kept = run(&g, &keys, &opts.clone().keep_going(true));
            prop_assert_eq!(&straight.0, &kept.0);
            prop_assert_eq!(&straight.1, &kept.1);
        }
        // Nothing is left held after the runs but what their callers hold.
        drop((straight, engine));
        prop_assert_eq!(alive(), 0);
    }
}

/// The test itself can fail: a run that holds one more result is seen.
#[test]
fn a_held_result_is_seen() {
    let before = alive();
    let extra = probe_value();
    assert_eq!(alive(), before + 1);
    drop(extra);
    assert_eq!(alive(), before);
}
