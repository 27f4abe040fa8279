//! The behaviours every scheduler shares, one generic function per behaviour.
//!
//! Each function takes the scheduler under test; `conformance_suite!` turns each into a
//! `#[test]` per scheduler. Effects are observed through results and callbacks only (callbacks
//! run in the calling thread on every scheduler), never through statics, so that schedulers
//! running task functions in other processes pass the same suite.

use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use forkgraph::SchedulerExt;
use forkgraph::{
    graph, key, Arg, CallError, Callbacks, Error, GetOptions, Graph, GraphError, Key, Keys, Output,
    RunInfo, Scheduler, Serde, Task, TaskError, TaskErrorKind, Value,
};

use crate::random::{random_graph, Rng};
use crate::support::{ints, list, one, Event, Recorder};
use crate::Stats;
// The task functions, for `graph!`.
use crate::*;

fn get<S: Scheduler>(s: &S, g: &Graph, keys: impl Into<Keys>) -> Output {
    let keys = keys.into();
    s.get(g, keys.clone())
        .unwrap_or_else(|e| panic!("get {keys:?} failed: {e}"))
}

fn get_with<S: Scheduler>(
    s: &S,
    g: &Graph,
    keys: impl Into<Keys>,
    opts: &GetOptions,
) -> Result<Output, Error> {
    s.get_with(g, &keys.into(), opts)
}

fn recorded(rec: &Arc<Recorder>) -> GetOptions {
    GetOptions::new().callback(rec.clone())
}

/// The four combinations of the plan options, named.
fn option_sets() -> Vec<(&'static str, GetOptions)> {
    vec![
        ("plain", GetOptions::new()),
        ("fuse", GetOptions::new().fuse(true)),
        ("inline", GetOptions::new().inline_literals(true)),
        (
            "fuse+inline",
            GetOptions::new().fuse(true).inline_literals(true),
        ),
    ]
}

fn task_error(r: Result<Output, Error>) -> TaskError {
    match r {
        Err(Error::Task(t)) => *t,
        other => panic!("expected a task error, got {other:?}"),
    }
}

fn graph_error(r: Result<Output, Error>) -> GraphError {
    match r {
        Err(Error::Graph(g)) => g,
        other => panic!("expected a graph error, got {other:?}"),
    }
}

fn k(s: &str) -> Key {
    Key::from(s)
}

fn nest(items: Vec<Keys>) -> Keys {
    Keys::List(items)
}

fn int_list(xs: &[i64]) -> Value {
    Value::List(xs.iter().map(|&x| Value::Int(x)).collect())
}

/// Dask `test_get` (GetFunctionTestMixin), `test_get_without_computation` (test_threaded).
pub(crate) fn get_returns_the_value_of_one_key<S: Scheduler>(s: &S) {
    let g = graph! {
        ":x" => 1,
        ":y" => (inc, key(":x")),
        ":z" => (add, key(":x"), key(":y")),
    };
    assert_eq!(get(s, &g, ":x"), one(1));
    assert_eq!(get(s, &g, ":y"), one(2));
    assert_eq!(get(s, &g, ":z"), one(3));
    assert_eq!(get(s, &g, ":z").to::<i64>().unwrap(), 3);
    assert_eq!(get(s, &graph! { "x" => 1 }, "x"), one(1));
}

/// Dask `test_get_with_list`; test_threaded `test_get`, `test_nested_get`.
pub(crate) fn get_with_a_list_of_keys_returns_a_list<S: Scheduler>(s: &S) {
    let g = graph! {
        "x" => 1,
        "y" => 2,
        "z" => (total, [key("x"), key("y")]),
        "w" => (add, key("z"), key("y")),
    };
    assert_eq!(get(s, &g, ["x", "y"]), ints(&[1, 2]));
    assert_eq!(get(s, &g, "z"), one(3));
    assert_eq!(get(s, &g, ["w", "z"]), ints(&[5, 3]));
    assert_eq!(get(s, &g, vec!["z"]), ints(&[3]));
}

/// Dask `test_get_with_nested_list`: the result mirrors the nesting of the request.
pub(crate) fn get_with_nested_lists_mirrors_the_nesting<S: Scheduler>(s: &S) {
    let g = graph! { "x" => 1, "y" => 2, "z" => (total, [key("x"), key("y")]) };
    let req = nest(vec![Keys::from(["x"]), "y".into()]);
    assert_eq!(get(s, &g, req), list(vec![ints(&[1]), one(2)]));
    // [[["z"]], [], ["y", ["x", ["z"]]]]
    let req = nest(vec![
        nest(vec![Keys::from(["z"])]),
        nest(vec![]),
        nest(vec!["y".into(), nest(vec!["x".into(), Keys::from(["z"])])]),
    ]);
    let want = list(vec![
        list(vec![ints(&[3])]),
        list(vec![]),
        list(vec![one(2), list(vec![one(1), ints(&[3])])]),
    ]);
    assert_eq!(get(s, &g, req), want);
}

/// An empty request gives an empty list, also on an empty graph.
pub(crate) fn an_empty_request_returns_an_empty_list<S: Scheduler>(s: &S) {
    let g = graph! { "x" => (inc, 1) };
    assert_eq!(get(s, &g, nest(vec![])), list(vec![]));
    assert_eq!(get(s, &Graph::new(), nest(vec![])), list(vec![]));
    assert_eq!(
        get(s, &g, nest(vec![nest(vec![]), nest(vec![])])),
        list(vec![list(vec![]), list(vec![])])
    );
}

/// Dask `test_badkey`, `test_nested_badkey`: a requested key not in the graph is an error,
/// however deep in the request, and every missing key is named once.
pub(crate) fn a_missing_requested_key_is_an_error<S: Scheduler>(s: &S) {
    let g = graph! { "x" => 1, "y" => 2, "z" => (total, [key("x"), key("y")]) };
    let missing = |r| match graph_error(r) {
        GraphError::MissingKey { keys } => keys,
        e => panic!("expected MissingKey, got {e:?}"),
    };
    assert_eq!(missing(s.get(&g, "badkey")), vec![k("badkey")]);
    assert_eq!(
        missing(s.get(&g, nest(vec![Keys::from(["badkey"]), "y".into()]))),
        vec![k("badkey")]
    );
    let req = nest(vec![
        "nope".into(),
        nest(vec!["nope".into(), Keys::from(("t", 1))]),
        "x".into(),
    ]);
    assert_eq!(
        missing(s.get(&g, req)),
        vec![k("nope"), Key::from(("t", 1))]
    );
}

/// Dask `test_detect_malformed_graph`: a reference to a key that is not in the graph is an
/// error naming both keys, wherever the reference sits; unneeded tasks are not checked.
pub(crate) fn a_missing_dependency_is_an_error<S: Scheduler>(s: &S) {
    let g = graph! {
        "ok" => 1,
        "plain" => (inc, key("x")),
        "in-list" => (total, [key("ok"), key("x")]),
        "in-map" => (weigh, {"a": key("ok"), "b": key("x"), "c": 1}),
        "in-nested" => (add, key("ok"), (inc, key("x"))),
        "alias" => key("x"),
        "downstream" => (inc, key("plain")),
    };
    for (k_, dep) in [
        ("plain", "x"),
        ("in-list", "x"),
        ("in-map", "x"),
        ("in-nested", "x"),
        ("alias", "x"),
        ("downstream", "x"),
    ] {
        match graph_error(s.get(&g, k_)) {
            GraphError::MissingDependency { key, dependency } => {
                let culprit = if k_ == "downstream" { "plain" } else { k_ };
                assert_eq!((key, dependency), (k(culprit), k(dep)), "requesting {k_}");
            }
            e => panic!("requesting {k_}: expected MissingDependency, got {e:?}"),
        }
    }
    // Culling comes first: the broken tasks do not matter to "ok".
    assert_eq!(get(s, &g, "ok"), one(1));
}

/// Dask `test_data_not_in_dict_is_ok`, `test_get_works_with_unhashables_in_values`: literal
/// arguments pass through as they are; a string that happens to be a key stays a string.
pub(crate) fn literal_arguments_pass_through<S: Scheduler>(s: &S) {
    let mut g = graph! {
        "x" => 1,
        "y" => (add, key("x"), 10),
        "kind" => (kind_of, "x"),
        "upper" => (shout, "x"),
        "lit" => "x",
        "mixed" => (identity, ["x", key("x"), "y", 2.5, true]),
    };
    let nested = Value::List(vec![Value::Str("x".into()), int_list(&[1, 2])]);
    let mut m = BTreeMap::new();
    m.insert("x".to_owned(), Value::Str("y".into()));
    g.insert("list-node", nested.clone());
    g.insert("map-node", Value::Map(m.clone()));
    g.task("list-arg", "identity", vec![Arg::Value(nested.clone())]);
    g.task(
        "map-arg",
        "identity",
        vec![Arg::Value(Value::Map(m.clone()))],
    );
    g.task("none-arg", "identity", vec![Arg::Value(Value::Null)]);

    let out = get(s, &g, ["y", "kind", "upper", "lit", "mixed"]);
    let want = list(vec![
        one(11),
        one("string"),
        one("X"),
        one("x"),
        one(Value::List(vec![
            Value::Str("x".into()),
            Value::Int(1),
            Value::Str("y".into()),
            Value::Float(2.5),
            Value::Bool(true),
        ])),
    ]);
    assert_eq!(out, want);
    let out = get(
        s,
        &g,
        ["list-node", "map-node", "list-arg", "map-arg", "none-arg"],
    );
    let want = list(vec![
        one(nested.clone()),
        one(Value::Map(m.clone())),
        one(nested),
        one(Value::Map(m)),
        one(Value::Null),
    ]);
    assert_eq!(out, want);
}

/// Dask `test_nested_tasks`: a task inside an argument runs in place, to any depth.
pub(crate) fn nested_tasks_run_in_place<S: Scheduler>(s: &S) {
    let g = graph! {
        "x" => 1,
        "y" => (inc, key("x")),
        "z" => (add, (inc, key("x")), key("y")),
        "deep" => (add, (inc, (inc, (inc, key("x")))), (dec, (add, key("y"), 10))),
        "no-deps" => (inc, (inc, 1)),
        "in-list" => (total, [(inc, key("x")), (dec, key("y")), 5]),
    };
    assert_eq!(
        get(s, &g, ["z", "deep", "no-deps", "in-list"]),
        ints(&[4, 15, 3, 8])
    );
}

/// Tasks nested a hundred deep (built programmatically) run; so do deep lists.
pub(crate) fn deeply_nested_tasks_and_lists_run<S: Scheduler>(s: &S) {
    let mut t = Task::new("inc", vec![Arg::Key(k("x"))]);
    let mut l = Arg::List(vec![Arg::Key(k("x"))]);
    for _ in 0..99 {
        t = Task::new("inc", vec![Arg::Task(t)]);
        l = Arg::List(vec![l]);
    }
    let mut g = graph! { "x" => 1 };
    g.insert("deep", t);
    g.task("deep-list", "identity", vec![l]);
    let out = get(s, &g, ["deep", "deep-list"]);
    let items = out.as_list().unwrap();
    assert_eq!(items[0], one(101));
    let mut v = items[1].as_value().unwrap();
    for _ in 0..100 {
        let Value::List(inner) = v else {
            panic!("not a list: {v:?}")
        };
        assert_eq!(inner.len(), 1);
        v = &inner[0];
    }
    assert_eq!(v, &Value::Int(1));
}

/// Dask `test_get_with_list_top_level`, ported: Dask's list-valued nodes become lists given
/// to `identity`, since a node here is a task, a literal or an alias.
pub(crate) fn lists_of_tasks_and_keys_mirror_dask_top_level_lists<S: Scheduler>(s: &S) {
    let a = int_list(&[1, 2, 3]);
    let mut g = graph! {
        "b" => key("a"),
        "c" => (identity, [1, (inc, 1)]),
        "d" => (identity, [(total, key("a"))]),
        "e" => (identity, [key("a"), key("b")]),
        "f" => (identity, [[[(total, key("a")), key("c")], (total, key("b"))], 2]),
    };
    g.insert("a", a.clone());
    assert_eq!(get(s, &g, "a"), one(a.clone()));
    assert_eq!(get(s, &g, "b"), one(a.clone()));
    assert_eq!(get(s, &g, "c"), one(int_list(&[1, 2])));
    assert_eq!(get(s, &g, "d"), one(int_list(&[6])));
    assert_eq!(get(s, &g, "e"), one(Value::List(vec![a.clone(), a])));
    let f = Value::List(vec![
        Value::List(vec![
            Value::List(vec![Value::Int(6), int_list(&[1, 2])]),
            Value::Int(6),
        ]),
        Value::Int(2),
    ]);
    assert_eq!(get(s, &g, "f"), one(f));
}

/// Lists of keys, nested lists of keys, the same key several times in one list.
pub(crate) fn lists_and_nested_lists_of_keys_are_arguments<S: Scheduler>(s: &S) {
    let mut g = Graph::new();
    for i in 0..100 {
        g.insert(("x", i), i);
    }
    let all: Vec<Arg> = (0..100).map(|i| Arg::Key(Key::from(("x", i)))).collect();
    g.task("sum", "total", vec![Arg::List(all)]);
    g.extend(graph! {
        "nested" => (sum_nested, [[key(("x", 1)), key(("x", 2))], [key(("x", 3))], []]),
        "dup" => (total, [key(("x", 7)), key(("x", 7)), key(("x", 7))]),
        "mixed" => (total, [key(("x", 1)), 10, (inc, key(("x", 2)))]),
        "empty" => (total, []),
        "deep" => (sum_nested, [[key("sum")], [key("dup"), key("mixed"), key("sum")]]),
    });
    let out = get(s, &g, ["sum", "nested", "dup", "mixed", "empty", "deep"]);
    assert_eq!(out, ints(&[4950, 6, 21, 14, 0, 4950 + 21 + 14 + 4950]));
}

/// Maps of arguments: keys, literals, nested tasks and lists inside.
pub(crate) fn maps_are_arguments<S: Scheduler>(s: &S) {
    let g = graph! {
        "x" => 1,
        "y" => 2,
        "w" => (weigh, {"a": key("x"), "b": (inc, key("y")), "c": 3}),
        "m" => (identity, {"list": [key("x"), key("y")], "t": (inc, 1), "s": "x"}),
        "in-list" => (identity, [{"k": key("y")}]),
        "in-map" => (identity, {"outer": {"inner": key("x"), "t": (inc, 1)}}),
    };
    assert_eq!(get(s, &g, "w"), one(100 + 30 + 3));
    let mut m = BTreeMap::new();
    m.insert("list".to_owned(), int_list(&[1, 2]));
    m.insert("t".to_owned(), Value::Int(2));
    m.insert("s".to_owned(), Value::Str("x".into()));
    assert_eq!(get(s, &g, "m"), one(Value::Map(m)));
    let mut inner = BTreeMap::new();
    inner.insert("k".to_owned(), Value::Int(2));
    assert_eq!(
        get(s, &g, "in-list"),
        one(Value::List(vec![Value::Map(inner)]))
    );
    let mut inner = BTreeMap::new();
    inner.insert("inner".to_owned(), Value::Int(1));
    inner.insert("t".to_owned(), Value::Int(2));
    let mut outer = BTreeMap::new();
    outer.insert("outer".to_owned(), Value::Map(inner));
    assert_eq!(get(s, &g, "in-map"), one(Value::Map(outer)));
}

/// Aliases: of literals, of tasks, of aliases; requested directly or read by tasks.
pub(crate) fn aliases_resolve_to_their_target<S: Scheduler>(s: &S) {
    let g = graph! {
        "a" => 1,
        "b" => key("a"),
        "c" => key("b"),
        "t" => (inc, key("c")),
        "ta" => key("t"),
        "taa" => key("ta"),
        ("k", 1) => key("taa"),
        "u" => (add, key("taa"), key(("k", 1))),
        "lit" => "a",
    };
    assert_eq!(get(s, &g, "c"), one(1));
    assert_eq!(get(s, &g, "taa"), one(2));
    assert_eq!(
        get(s, &g, ["a", "b", "c", "t", "ta"]),
        ints(&[1, 1, 1, 2, 2])
    );
    assert_eq!(get(s, &g, ["u", "c"]), ints(&[4, 1]));
    assert_eq!(get(s, &g, ("k", 1)), one(2));
    assert_eq!(get(s, &g, "lit"), one("a"));
    for (name, opts) in option_sets() {
        let out = get_with(s, &g, ["u", "taa", "b"], &opts).unwrap();
        assert_eq!(out, ints(&[4, 2, 1]), "with {name}");
    }
}

/// Tuple keys, string keys and tuple keys of other lengths or part types are all distinct.
pub(crate) fn tuple_keys_and_mixed_keys<S: Scheduler>(s: &S) {
    let g = graph! {
        ("x", 0) => 1,
        ("x", 1) => (inc, key(("x", 0))),
        ("x",) => 10,
        ("x", "0") => 100,
        ("x", -1) => key("x"),
        "x" => (add, key(("x", 1)), key(("x",))),
        ("a", "b", 1, 2, 3) => (total, [key("x"), key(("x", 0)), key(("x", "0"))]),
    };
    let out = get(
        s,
        &g,
        vec![
            Keys::from(("x", 1)),
            "x".into(),
            ("x",).into(),
            ("x", "0").into(),
            ("x", -1).into(),
            ("a", "b", 1, 2, 3).into(),
        ],
    );
    assert_eq!(out, ints(&[2, 12, 10, 100, 12, 113]));
}

fn chain(n: usize) -> Graph {
    let mut g = Graph::with_capacity(n + 1);
    g.insert("x0", 0);
    for i in 0..n {
        g.task(
            format!("x{}", i + 1),
            "inc",
            vec![Arg::Key(Key::from(format!("x{i}")))],
        );
    }
    g
}

/// Dask `test_get_stack_limit`: a chain of 10,000 tasks runs without recursion trouble, with
/// and without fusing.
pub(crate) fn a_chain_of_ten_thousand_tasks_runs<S: Scheduler>(s: &S) {
    let g = chain(10_000);
    assert_eq!(get(s, &g, "x10000"), one(10_000));
    for (name, opts) in option_sets() {
        let req: Vec<String> = (0..=10).map(|i| format!("x{}", i * 1000)).collect();
        let out = get_with(s, &g, req, &opts).unwrap();
        let want: Vec<i64> = (0..=10).map(|i| i * 1000).collect();
        assert_eq!(out, ints(&want), "with {name}");
    }
}

/// The cycle half of Dask's old `test_get_stack_limit`: a cycle deep in a long chain is found
/// and named (`x5001 -> x5000 -> x5001` in Dask), and keys below it still compute.
pub(crate) fn a_cycle_in_a_long_chain_is_reported_and_the_rest_still_runs<S: Scheduler>(s: &S) {
    let mut g = chain(10_000);
    g.task("x5000", "inc", vec![Arg::Key(k("x5001"))]);
    match graph_error(s.get(&g, "x10000")) {
        GraphError::Cycle { path } => {
            assert_eq!(path.len(), 3, "{path:?}");
            assert_eq!(path.first(), path.last(), "{path:?}");
            let on: HashSet<&Key> = path.iter().collect();
            let cycle = [k("x5000"), k("x5001")];
            let want: HashSet<&Key> = cycle.iter().collect();
            assert_eq!(on, want, "{path:?}");
        }
        e => panic!("expected a cycle, got {e:?}"),
    }
    assert_eq!(get(s, &g, "x4999"), one(4999));
}

/// Dask `test_ensure_calculate_only_whats_needed`: only the tasks the request needs run.
pub(crate) fn only_needed_tasks_run<S: Scheduler>(s: &S) {
    let g = graph! {
        "x1" => (fail, "x1 is not needed and must not run"),
        "x2" => (inc, 0),
        "y" => (add, 1, key("x2")),
        "z" => (explode, "z is not needed and must not run"),
        "other" => (inc, key("x1")),
    };
    let rec = Recorder::new();
    let out = get_with(s, &g, "y", &recorded(&rec)).unwrap();
    assert_eq!(out, one(2));
    let mut started = rec.started();
    started.sort();
    assert_eq!(started, vec![k("x2"), k("y")]);
    assert_eq!(rec.starts(), vec![RunInfo { nodes: 2, tasks: 2 }]);
}

/// Dask `test_start_state*`: the start callback counts the culled graph's nodes and tasks.
pub(crate) fn run_info_counts_the_culled_graph<S: Scheduler>(s: &S) {
    let g = graph! {
        "x" => 1,
        "y" => key("x"),
        "z" => (inc, key("y")),
        "unused" => (inc, 1),
        "unused-lit" => 5,
    };
    let rec = Recorder::new();
    get_with(s, &g, "z", &recorded(&rec)).unwrap();
    get_with(s, &g, "x", &recorded(&rec)).unwrap();
    get_with(s, &g, ["unused", "z"], &recorded(&rec)).unwrap();
    assert_eq!(
        rec.starts(),
        vec![
            RunInfo { nodes: 3, tasks: 1 },
            RunInfo { nodes: 1, tasks: 0 },
            RunInfo { nodes: 4, tasks: 2 },
        ]
    );
}

/// Dask `test_callback`, `test_start_callback` (test_local, test_callbacks): start, pretask,
/// posttask and finish fire in order, once per task, with the task's value, on the thread that
/// called `get`; every registered callback sees the same events.
pub(crate) fn callbacks_fire_in_order_on_the_calling_thread<S: Scheduler>(s: &S) {
    let g = graph! {
        "a" => (inc, 1),
        "b" => (inc, key("a")),
        "five" => 5,
        "c" => (add, key("b"), key("five")),
        "unused" => (inc, 0),
    };
    let (r1, r2) = (Recorder::new(), Recorder::new());
    let opts = GetOptions::new().callback(r1.clone()).callback(r2.clone());
    let out = get_with(s, &g, ["c", "a"], &opts).unwrap();
    assert_eq!(out, ints(&[8, 2]));
    let ev = r1.events();
    assert_eq!(ev, r2.events());
    assert_eq!(
        ev.first(),
        Some(&Event::Start(RunInfo { nodes: 4, tasks: 3 }))
    );
    assert_eq!(ev.last(), Some(&Event::Finish(false)));
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::Start(_) | Event::Finish(_)))
            .count(),
        2
    );
    let pos = |e: &Event| {
        ev.iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("no {e:?} in {ev:?}"))
    };
    for (name, v) in [("a", 2), ("b", 3), ("c", 8)] {
        let pre = Event::Pre(k(name));
        let post = Event::Post(k(name), Value::Int(v));
        assert_eq!(ev.iter().filter(|e| **e == pre).count(), 1, "{ev:?}");
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::Post(x, _) if *x == k(name)))
                .count(),
            1
        );
        assert!(pos(&pre) < pos(&post), "{ev:?}");
    }
    assert!(
        pos(&Event::Post(k("a"), Value::Int(2))) < pos(&Event::Pre(k("b"))),
        "{ev:?}"
    );
    assert!(
        pos(&Event::Post(k("b"), Value::Int(3))) < pos(&Event::Pre(k("c"))),
        "{ev:?}"
    );
    assert_eq!(r1.threads(), vec![std::thread::current().id()]);

    // A graph with no task at all still starts and finishes.
    let rec = Recorder::new();
    get_with(s, &graph! { "x" => 1 }, "x", &recorded(&rec)).unwrap();
    assert_eq!(
        rec.events(),
        vec![
            Event::Start(RunInfo { nodes: 1, tasks: 0 }),
            Event::Finish(false)
        ]
    );
}

/// Dask `test_finish_always_called`: `finish` runs after a failing task too, with
/// `errored = true`, whether the task returned an error or panicked.
pub(crate) fn finish_always_runs_also_after_a_failure<S: Scheduler>(s: &S) {
    let g = graph! {
        "x" => (fail, "division by zero"),
        "p" => (explode, "boom"),
        "after" => (inc, key("x")),
        "ok" => (inc, 1),
    };
    for (req, culprit) in [("x", "x"), ("p", "p"), ("after", "x")] {
        let rec = Recorder::new();
        let err = task_error(get_with(s, &g, req, &recorded(&rec)));
        assert_eq!(err.key, k(culprit));
        let ev = rec.events();
        assert!(matches!(ev.first(), Some(Event::Start(_))), "{ev:?}");
        assert_eq!(ev.last(), Some(&Event::Finish(true)), "{ev:?}");
        assert_eq!(rec.finishes(), vec![true]);
    }
    let rec = Recorder::new();
    get_with(s, &g, "ok", &recorded(&rec)).unwrap();
    assert_eq!(rec.finishes(), vec![false]);
}

struct PanicIn(&'static str);

impl Callbacks for PanicIn {
    fn start(&self, _: &RunInfo) {
        if self.0 == "start" {
            panic!("my_exception in start");
        }
    }
    fn posttask(&self, _: &Key, _: &Value) {
        if self.0 == "posttask" {
            panic!("my_exception in posttask");
        }
    }
}

/// Dask `test_broken_callback`: a panicking callback reaches the caller with its message, the
/// other callbacks that started still finish (with `errored`), and the scheduler stays usable.
pub(crate) fn a_panicking_callback_propagates_and_the_scheduler_stays_usable<S: Scheduler>(s: &S) {
    let mut g = Graph::new();
    let parts: Vec<Arg> = (0..20i64)
        .map(|i| {
            g.insert(("p", i), Task::new("inc", vec![Arg::Value(Value::Int(i))]));
            Arg::Key(Key::from(("p", i)))
        })
        .collect();
    g.task("out", "total", vec![Arg::List(parts)]);
    for place in ["start", "posttask"] {
        let rec = Recorder::new();
        let opts = GetOptions::new()
            .callback(rec.clone())
            .callback(Arc::new(PanicIn(place)));
        let caught = catch_unwind(AssertUnwindSafe(|| get_with(s, &g, "out", &opts)));
        let payload = caught.expect_err("the callback's panic reaches the caller");
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .map(str::to_owned)
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(msg.contains("my_exception"), "{msg:?}");
        assert_eq!(rec.finishes(), vec![true], "{place}: {:?}", rec.events());
        assert_eq!(get(s, &g, "out"), one((1..=20).sum::<i64>()));
    }
}

/// Dask `test_exceptions_propagate`, `test_exceptions_rise_to_top`: a task's error comes back
/// naming the key, the function (the innermost one for nested tasks) and the message.
pub(crate) fn returned_errors_carry_key_function_and_message<S: Scheduler>(s: &S) {
    let g = graph! {
        "x" => 1,
        "y" => (fail, "My Exception!"),
        ("t", 1) => (fail, "in a tuple key"),
        "z" => (add, 1, (fail, "inner failure")),
        "w" => (add, key("x"), (inc, (fail, "deep failure"))),
        "after" => (inc, key("y")),
    };
    let e = task_error(s.get(&g, "y"));
    assert_eq!(e.key, k("y"));
    assert_eq!(e.function, "fail");
    let returned = e.kind.returned().expect("a returned error");
    assert_eq!(returned.message(), "My Exception!");
    assert_eq!(returned.type_name(), std::any::type_name::<String>());
    assert_eq!(e.to_string(), "task y (fail) failed: My Exception!");

    let e = task_error(s.get(&g, ("t", 1)));
    assert_eq!(e.to_string(), "task ('t', 1) (fail) failed: in a tuple key");
    for (req, msg) in [
        ("z", "inner failure"),
        ("w", "deep failure"),
        ("after", "My Exception!"),
    ] {
        let e = task_error(s.get(&g, req));
        let culprit = if req == "after" { "y" } else { req };
        assert_eq!(
            (e.key.clone(), e.function.as_str()),
            (k(culprit), "fail"),
            "{req}"
        );
        assert_eq!(
            e.kind.returned().map(|r| r.chain().to_vec()),
            Some(vec![msg.to_owned()]),
            "{req}"
        );
        // `Error`'s own message is the task error's.
        let whole = s.get(&g, req).unwrap_err();
        assert_eq!(whole.task(), Some(&e));
        assert_eq!(whole.to_string(), e.to_string());
    }
}

/// A panicking task is an error like a returned one, carrying the panic message.
pub(crate) fn panics_carry_key_function_and_message<S: Scheduler>(s: &S) {
    let g = graph! {
        "x" => 1,
        "p" => (explode, "kaboom"),
        "q" => (unwrap_none, key("x")),
        "n" => (add, key("x"), (explode, "nested kaboom")),
    };
    let e = task_error(s.get(&g, "p"));
    assert_eq!((e.key.clone(), e.function.as_str()), (k("p"), "explode"));
    assert_eq!(
        e.kind,
        TaskErrorKind::Call(CallError::Panicked("kaboom".into()))
    );
    assert_eq!(e.to_string(), "task p (explode) failed: panicked: kaboom");
    let e = task_error(s.get(&g, "q"));
    assert_eq!(e.function, "unwrap_none");
    let TaskErrorKind::Call(CallError::Panicked(msg)) = &e.kind else {
        panic!("expected a panic, got {e:?}")
    };
    assert!(msg.contains("on a `None` value"), "{msg}");
    let e = task_error(s.get(&g, "n"));
    assert_eq!(e.key, k("n"));
    assert_eq!(
        e.kind,
        TaskErrorKind::Call(CallError::Panicked("nested kaboom".into()))
    );
}

/// A panic in a nested task names the nested (innermost) function, as a returned error does.
pub(crate) fn a_nested_panic_names_the_innermost_function<S: Scheduler>(s: &S) {
    let g = graph! { "n" => (add, 1, (inc, (explode, "nested kaboom"))) };
    let e = task_error(s.get(&g, "n"));
    assert_eq!((e.key.clone(), e.function.as_str()), (k("n"), "explode"));
}

/// A value of the wrong kind for a parameter is an error naming the key, the function, the
/// argument's position and type, and what was expected and got.
pub(crate) fn a_type_mismatch_names_key_function_position_and_types<S: Scheduler>(s: &S) {
    // Wrong literals only compile in the string form (`graph!` checks a handle's arguments).
    let g = graph! {
        "x" => 1,
        "z" => ("add", key("x"), "oops"),
        "m" => ("mean", 3),
        "n" => (add, 1, ("inc", "two")),
        "l" => (total, [1, "two"]),
        "o" => (add, key("x"), key("m-ok")),
        "m-ok" => (mean, (ramp, 4)),
    };
    let mut g = g;
    g.task("m8", "mean", vec![Arg::Value(Value::from(vec![1u8, 2]))]);
    let mismatch = |req: &str| {
        let e = task_error(s.get(&g, req));
        match e.kind.clone() {
            TaskErrorKind::Call(CallError::Mismatch {
                position,
                param,
                expected,
                got,
            }) => (e, position, param, expected, got),
            other => panic!("{req}: expected a mismatch, got {other:?}"),
        }
    };
    let (e, position, param, expected, got) = mismatch("z");
    assert_eq!((e.key.clone(), e.function.as_str()), (k("z"), "add"));
    assert_eq!((position, param.as_str()), (1, "i64"));
    assert_eq!(
        (expected.as_str(), got.as_str()),
        ("an integer (i64)", "string")
    );
    let text = e.to_string();
    for part in [
        "z",
        "add",
        "argument 1",
        "i64",
        "expected an integer (i64)",
        "got string",
    ] {
        assert!(text.contains(part), "{part:?} not in {text:?}");
    }
    let (e, position, param, expected, got) = mismatch("m");
    assert_eq!(e.function, "mean");
    assert_eq!((position, param.as_str()), (0, "&[f64]"));
    assert_eq!(
        (expected.as_str(), got.as_str()),
        ("an array of f64", "int")
    );
    let (_, _, _, expected, got) = mismatch("m8");
    assert_eq!(
        (expected.as_str(), got.as_str()),
        ("an array of f64", "array of u8")
    );
    let (e, position, _, _, got) = mismatch("n");
    assert_eq!(
        (e.key.clone(), e.function.as_str(), position),
        (k("n"), "inc", 0)
    );
    assert_eq!(got, "string");
    let (e, position, param, _, got) = mismatch("l");
    assert_eq!(
        (e.function.as_str(), position, param.as_str()),
        ("total", 0, "Vec<i64>")
    );
    assert_eq!(got, "string");
    let (e, position, _, _, got) = mismatch("o");
    assert_eq!(
        (e.key.clone(), position, got.as_str()),
        (k("o"), 1, "float")
    );
}

/// On a failure, nothing that depends on the failed task starts; `get` returns that error.
pub(crate) fn dependents_of_a_failed_task_never_start<S: Scheduler>(s: &S) {
    let g = graph! {
        "x" => 1,
        "bad" => (add, key("x"), (fail, "stop here")),
        "d1" => (inc, key("bad")),
        "d2" => (add, key("d1"), key("x")),
        "ok" => (inc, key("x")),
        "end" => (total, [key("d2"), key("ok")]),
    };
    // Everything downstream of each task of the failing chain.
    let downstream = |key_: &Key| -> Vec<Key> {
        let chain = ["bad", "d1", "d2", "end"];
        let at = chain
            .iter()
            .position(|c| k(c) == *key_)
            .expect("a key of the chain");
        chain[at + 1..].iter().map(|c| k(c)).collect()
    };
    for (name, opts) in option_sets() {
        let rec = Recorder::new();
        let e = task_error(get_with(s, &g, ["end", "ok"], &opts.callback(rec.clone())));
        // Fusing may fold "bad" into its dependents; then the fused task carries the error.
        if name.contains("fuse") {
            assert!([k("bad"), k("d1"), k("d2")].contains(&e.key), "{name}: {e}");
        } else {
            assert_eq!(e.key, k("bad"), "{name}");
        }
        assert_eq!(e.function, "fail");
        let started = rec.started();
        for never in downstream(&e.key) {
            assert!(
                !started.contains(&never),
                "{name}: {never} started: {started:?}"
            );
        }
        assert_eq!(rec.finishes(), vec![true]);
    }
}

/// Dask `test_reuse_pool`: one scheduler serves many gets, failing ones included.
pub(crate) fn the_scheduler_is_reusable_across_gets_and_errors<S: Scheduler>(s: &S) {
    for i in 0..50i64 {
        let g = graph! {
            "x" => i,
            "y" => (inc, key("x")),
            "z" => (add, key("x"), key("y")),
            "bad" => (fail, "no"),
        };
        assert_eq!(get(s, &g, ["z", "y"]), ints(&[2 * i + 1, i + 1]));
        if i % 10 == 0 {
            assert!(s.get(&g, "bad").is_err());
            assert!(s.get(&g, "nope").is_err());
        }
    }
}

/// A requested key is returned even when another requested key depends on it (it must not be
/// released, fused or inlined away).
pub(crate) fn requested_intermediates_are_returned<S: Scheduler>(s: &S) {
    let g = graph! {
        "lit" => 1,
        "y" => (inc, key("lit")),
        "z" => (inc, key("y")),
        "w" => (inc, key("z")),
        "alias" => key("z"),
    };
    for (name, opts) in option_sets() {
        let rec = Recorder::new();
        let out = get_with(
            s,
            &g,
            ["w", "z", "y", "lit", "alias"],
            &opts.callback(rec.clone()),
        );
        assert_eq!(out.unwrap(), ints(&[4, 3, 2, 1, 3]), "with {name}");
        let done: Vec<(Key, Value)> = rec.finished();
        for (key_, v) in [("y", 2), ("z", 3), ("w", 4)] {
            assert!(
                done.contains(&(k(key_), Value::Int(v))),
                "{name}: {key_} not run: {done:?}"
            );
        }
    }
}

/// The same key requested twice (or more, at any depth) comes back each time.
pub(crate) fn the_same_key_requested_twice<S: Scheduler>(s: &S) {
    let g = graph! { "x" => 1, "y" => (inc, key("x")), "z" => (inc, key("y")) };
    for (name, opts) in option_sets() {
        assert_eq!(
            get_with(s, &g, ["x", "x"], &opts).unwrap(),
            ints(&[1, 1]),
            "{name}"
        );
        let req = nest(vec![
            "z".into(),
            nest(vec!["z".into(), "z".into()]),
            "y".into(),
            Keys::from(["z"]),
        ]);
        let want = list(vec![one(3), ints(&[3, 3]), one(2), ints(&[3])]);
        assert_eq!(get_with(s, &g, req, &opts).unwrap(), want, "{name}");
    }
}

/// Fusing chains and inlining literals change how much work the plan has, never the results;
/// requested keys survive both.
pub(crate) fn fuse_and_inline_literals_give_identical_results<S: Scheduler>(s: &S) {
    let mut g = chain(200);
    for i in (0..200).step_by(7) {
        g.insert(format!("c{i}"), i64::from(i));
        g.task(
            format!("s{i}"),
            "add",
            vec![
                Arg::Key(Key::from(format!("x{i}"))),
                Arg::Key(Key::from(format!("c{i}"))),
            ],
        );
    }
    let sums: Vec<Arg> = (0..200)
        .step_by(7)
        .map(|i| Arg::Key(Key::from(format!("s{i}"))))
        .collect();
    g.task("sums", "total", vec![Arg::List(sums)]);
    g.insert("alias", forkgraph::KeyRef(k("x150")));
    let req = vec!["sums", "x200", "x100", "alias", "c14", "s14"];
    let want: i64 = (0..200).step_by(7).map(|i| 2 * i).sum();
    let mut infos = Vec::new();
    for (name, opts) in option_sets() {
        let rec = Recorder::new();
        let out = get_with(s, &g, req.clone(), &opts.callback(rec.clone())).unwrap();
        assert_eq!(out, ints(&[want, 200, 100, 150, 14, 28]), "with {name}");
        infos.push(rec.starts()[0]);
    }
    let [plain, fuse, inline, both] = infos[..] else {
        unreachable!()
    };
    assert!(
        fuse.tasks < plain.tasks,
        "fusing removed no task: {plain:?} vs {fuse:?}"
    );
    assert!(
        inline.nodes < plain.nodes,
        "inlining removed no node: {plain:?} vs {inline:?}"
    );
    assert_eq!(inline.tasks, plain.tasks);
    assert!(
        both.nodes < fuse.nodes && both.tasks == fuse.tasks,
        "{fuse:?} vs {both:?}"
    );
}

/// Random graphs (plain, nested, list, nested-list and map arguments, aliases, literals, string
/// and tuple keys) give what a reference evaluation gives, under every option.
pub(crate) fn random_graphs_match_a_reference_evaluation<S: Scheduler>(s: &S) {
    for seed in 0..25 {
        let rg = random_graph(seed, 60);
        let mut rng = Rng::new(seed + 1000);
        for _ in 0..3 {
            let (req, want) = rg.request(&mut rng);
            for (name, opts) in option_sets() {
                let out = get_with(s, &rg.graph, req.clone(), &opts)
                    .unwrap_or_else(|e| panic!("seed {seed} {name} {req:?}: {e}"));
                assert_eq!(out, want, "seed {seed}, {name}, request {req:?}");
            }
        }
    }
}

/// Large arrays travel between tasks as borrowed `&[f64]` views: the same input read twice by
/// one task is one buffer, and lists of arrays are lists of views.
pub(crate) fn large_arrays_pass_through_as_views<S: Scheduler>(s: &S) {
    const N: usize = 2_000_000;
    let g = graph! {
        "n" => N,
        "big" => (ramp, key("n")),
        "mean" => (mean, key("big")),
        "same" => (same_memory, key("big"), key("big")),
        "lens" => (total_len, [key("big"), key("big"), (ramp, 3)]),
        "head" => (head, key("big"), 3),
    };
    let out = get(s, &g, ["big", "mean", "same", "lens", "head"]);
    let items = out.as_list().expect("a list");
    let Some(Value::Array(big)) = items[0].as_value() else {
        panic!("big is not an array: {:?}", items[0])
    };
    let big = big.as_slice::<f64>().expect("an array of f64");
    assert_eq!(big.len(), N);
    assert_eq!((big[0], big[1], big[N - 1]), (0.0, 1.0, (N - 1) as f64));
    assert_eq!(items[1], one((N - 1) as f64 / 2.0));
    assert_eq!(items[2], one(true));
    assert_eq!(items[3], one(2 * N + 3));
    assert_eq!(items[4], one(vec![0.0f64, 1.0, 2.0]));
}

/// User types cross task boundaries (and come back from `get`) with `Serde<T>`; a mismatched
/// type is an error naming it.
pub(crate) fn serde_user_types_travel_between_tasks<S: Scheduler>(s: &S) {
    let g = graph! {
        "big" => (ramp, 5),
        "stats" => (summarize, key("big"), "ramp"),
        "text" => (describe, key("stats")),
        "again" => (relabel, key("stats"), "again"),
        "wrong" => (inc, key("stats")),
        "wrong2" => ("describe", 5),
    };
    let out = get(s, &g, ["stats", "text", "again"]);
    let items = out.as_list().unwrap();
    let stats: Serde<Stats> = items[0].to().expect("stats decode");
    let want = Stats {
        n: 5,
        mean: 2.0,
        label: "ramp".into(),
    };
    assert_eq!(stats.0, want);
    assert_eq!(items[1], one("ramp: n=5 mean=2"));
    let again: Serde<Stats> = items[2].to().unwrap();
    assert_eq!(again.0.label, "again");
    let e = task_error(s.get(&g, "wrong"));
    let TaskErrorKind::Call(CallError::Mismatch { got, .. }) = &e.kind else {
        panic!("{e:?}")
    };
    assert!(got.contains("Stats"), "{got}");
    let e = task_error(s.get(&g, "wrong2"));
    let TaskErrorKind::Call(CallError::Mismatch { expected, got, .. }) = &e.kind else {
        panic!("{e:?}")
    };
    assert!(expected.contains("Stats") && got == "int", "{e}");
}

/// Dask `test_nested_schedulers`: a task may run a `get` of its own; the outer callbacks see
/// only the outer graph.
pub(crate) fn a_task_may_run_its_own_get<S: Scheduler>(s: &S) {
    let g = graph! { "a" => (nested_get, 1), "b" => (add, key("a"), 2) };
    let rec = Recorder::new();
    assert_eq!(
        get_with(s, &g, "b", &recorded(&rec)).unwrap(),
        one(1 + 2 + 3 + 1 + 2)
    );
    let mut started = rec.started();
    started.sort();
    assert_eq!(started, vec![k("a"), k("b")]);
}
