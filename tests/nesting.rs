//! The nesting bound ([`forkgraph::MAX_NESTING`]): task arguments, literal values and requests
//! nested exactly that deep run on every scheduler from a thread with a 2 MiB stack (in a debug
//! build too); one level more is refused with a `GraphError` naming the key before any task
//! runs; and 100,000 levels are refused without overflowing the stack (checked in a helper
//! process, as an overflow would abort the whole test binary).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{is_helper, scratch_dir, watchdog};
use forkgraph::{
    key, Arg, ArgValue, Callbacks, Error, GetOptions, Graph, GraphError, Key, Keys, Node,
    ProcessPool, Scheduler, SyncScheduler, Task, ThreadPool, Value, MAX_NESTING,
};

/// The stack of the threads the tests run `get` on: Rust's default for spawned threads.
const STACK: usize = 2 << 20;

/// Levels a helper process builds: far beyond anything a recursive walk survives.
const HUGE: usize = 100_000;

#[forkgraph::task]
fn echo(v: Value) -> Value {
    v
}

#[forkgraph::task]
fn inc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn add4(a: i64, b: i64, c: i64, d: i64) -> i64 {
    a + b + c + d
}

/// The one value at the bottom of lists (of arguments, then of values) nested inside each other
/// (iteratively).
#[forkgraph::task]
fn innermost(a: &ArgValue<'_>) -> Result<Value, String> {
    let mut a = a;
    let mut v = loop {
        match a {
            ArgValue::List(l) if l.len() == 1 => a = &l[0],
            ArgValue::Ref(v) => break *v,
            ArgValue::Owned(v) => break v,
            other => return Err(format!("not a single nested value: {}", other.kind())),
        }
    };
    while let Value::List(l) = v {
        match l.as_slice() {
            [one] => v = one,
            _ => return Err(format!("a list of {} values", l.len())),
        }
    }
    Ok(v.clone())
}

/// Counts its runs in a file, so that runs in worker processes count too.
#[forkgraph::task]
fn touch(path: &str) -> std::io::Result<i64> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(b"x")?;
    Ok(1)
}

// ---- Builders (iterative: the values built here are as deep as the tests need) ----

fn nested_list(depth: usize, leaf: Arg) -> Arg {
    (0..depth).fold(leaf, |a, _| Arg::List(vec![a]))
}

fn nested_map(depth: usize, leaf: Arg) -> Arg {
    (0..depth).fold(leaf, |a, _| Arg::Map(vec![("k".into(), a)]))
}

fn nested_incs(depth: usize) -> Arg {
    (0..depth).fold(Arg::Value(0.into()), |a, _| {
        Arg::Task(Task::new("inc", vec![a]))
    })
}

fn nested_add4s(depth: usize) -> Arg {
    (0..depth).fold(Arg::Value(0.into()), |a, _| {
        Arg::Task(Task::new(
            "add4",
            vec![
                Arg::Value(1.into()),
                Arg::Value(1.into()),
                Arg::Value(1.into()),
                a,
            ],
        ))
    })
}

/// Lists, maps, nested tasks and a literal's lists and maps, in turn, `depth` levels in all.
fn mixed(depth: usize) -> Arg {
    let value_levels = depth / 4;
    let mut v = Value::Int(7);
    for i in 0..value_levels {
        v = if i % 2 == 0 {
            Value::List(vec![v])
        } else {
            Value::Map(BTreeMap::from([("v".to_owned(), v)]))
        };
    }
    let mut a = Arg::Value(v);
    for i in value_levels..depth {
        a = match i % 3 {
            0 => Arg::List(vec![a]),
            1 => Arg::Map(vec![("m".into(), a)]),
            _ => Arg::Task(Task::new("echo", vec![a])),
        };
    }
    a
}

fn nested_value(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |v, _| Value::List(vec![v]))
}

fn nested_value_map(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |v, _| {
        Value::Map(BTreeMap::from([("k".to_owned(), v)]))
    })
}

fn nested_request(depth: usize, k: &str) -> Keys {
    (0..depth).fold(Keys::from(k), |r, _| Keys::List(vec![r]))
}

/// The three schedulers, by name.
const SCHEDULERS: [&str; 3] = ["sync", "threads", "processes"];

/// Runs `body` with each scheduler on a thread with a [`STACK`] stack (under a watchdog).
fn on_each_scheduler(
    body: impl Fn(&str, &dyn Fn(&Graph, &Keys, &GetOptions) -> Result<forkgraph::Output, Error>)
        + Send
        + Sync
        + 'static,
) {
    let body = Arc::new(body);
    watchdog(120, move || {
        std::thread::Builder::new()
            .name("small-stack".into())
            .stack_size(STACK)
            .spawn(move || {
                let threads = ThreadPool::builder().threads(2).build().unwrap();
                let procs = ProcessPool::builder().workers(2).build().unwrap();
                for name in SCHEDULERS {
                    let get = |g: &Graph, k: &Keys, o: &GetOptions| match name {
                        "sync" => SyncScheduler.get_with(g, k, o),
                        "threads" => threads.get_with(g, k, o),
                        _ => procs.get_with(g, k, o),
                    };
                    body(name, &get);
                }
            })
            .unwrap()
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
}

/// Counts `pretask` callbacks: how many tasks started.
#[derive(Default)]
struct Started(AtomicUsize);

impl Callbacks for Started {
    fn pretask(&self, _key: &Key) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

// ---- Exactly at the limit ----

#[test]
fn arguments_and_requests_nested_exactly_to_the_limit_run_on_every_scheduler() {
    let deep = MAX_NESTING;
    let mut g = Graph::new();
    g.task(
        "list",
        "echo",
        vec![nested_list(deep, Arg::Value(1.into()))],
    );
    g.task("map", "echo", vec![nested_map(deep, Arg::Value(2.into()))]);
    g.task("incs", "inc", vec![nested_incs(deep)]);
    g.task("add4s", "inc", vec![nested_add4s(deep)]);
    g.task("mixed", "echo", vec![mixed(deep)]);
    g.task(
        "value",
        "echo",
        vec![Arg::Value(nested_value(deep, 3.into()))],
    );
    g.insert("literal", nested_value_map(deep, 4.into()));
    g.task("reads-literal", "echo", vec![Arg::Key("literal".into())]);
    // A key reference at the bottom: its value is an input of the deepest level.
    g.insert("five", 5);
    g.task(
        "list-of-key",
        "innermost",
        vec![nested_list(deep, key("five").into())],
    );
    let keys = Keys::List(vec![
        "list".into(),
        "map".into(),
        "incs".into(),
        "add4s".into(),
        "mixed".into(),
        "value".into(),
        "reads-literal".into(),
        "list-of-key".into(),
        // The request itself nests to the limit (this list is its first level).
        nested_request(deep - 1, "incs"),
    ]);
    let expected = move |out: &forkgraph::Output| {
        let l = out.as_list().expect("a list of results");
        assert_eq!(l.len(), 9);
        let deep_i = deep as i64;
        assert_eq!(*l[0].as_value().unwrap(), nested_value(deep, 1.into()));
        assert_eq!(*l[1].as_value().unwrap(), nested_value_map(deep, 2.into()));
        assert_eq!(l[2].to::<i64>().unwrap(), deep_i + 1);
        assert_eq!(l[3].to::<i64>().unwrap(), 3 * deep_i + 1);
        assert!(l[4].as_value().is_some());
        assert_eq!(*l[5].as_value().unwrap(), nested_value(deep, 3.into()));
        assert_eq!(*l[6].as_value().unwrap(), nested_value_map(deep, 4.into()));
        assert_eq!(l[7].to::<i64>().unwrap(), 5);
        let mut r = &l[8];
        for _ in 0..deep - 1 {
            let inner = r.as_list().expect("the nesting of the request");
            assert_eq!(inner.len(), 1);
            r = &inner[0];
        }
        assert_eq!(r.to::<i64>().unwrap(), deep_i + 1);
    };
    on_each_scheduler(move |name, get| {
        for opts in [
            GetOptions::new(),
            GetOptions::new().fuse(true).inline_literals(true),
        ] {
            let out = get(&g, &keys, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
            expected(&out);
        }
    });
}

/// Fusing a chain, or inlining a literal, nests one spec inside another; neither may take a
/// task past the limit (ten links each `MAX_NESTING - 1` deep would nest ten times that).
#[test]
fn fusing_and_inlining_never_nest_past_the_limit() {
    let deep = MAX_NESTING - 1;
    let mut g = Graph::new();
    g.insert("lit", nested_value(deep, 1.into()));
    g.task(
        "c0",
        "innermost",
        vec![nested_list(deep, key("lit").into())],
    );
    for i in 1..10 {
        g.task(
            format!("c{i}"),
            "innermost",
            vec![nested_list(deep, key(format!("c{}", i - 1)).into())],
        );
    }
    on_each_scheduler(move |name, get| {
        let opts = GetOptions::new().fuse(true).inline_literals(true);
        let out = get(&g, &"c9".into(), &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.to::<i64>().unwrap(), 1, "{name}");
    });
}

// ---- One level past the limit ----

/// A graph whose requested task `deep` (built by `arg`, one level past the limit) depends on
/// `ran`, a task that counts its runs in `marker`.
fn too_deep_graph(marker: &Path, func: &str, arg: Arg) -> Graph {
    let mut g = Graph::new();
    g.task(
        "ran",
        "touch",
        vec![Arg::Value(marker.to_str().unwrap().into())],
    );
    g.task("deep", func, vec![Arg::List(vec![key("ran").into(), arg])]);
    g
}

fn assert_nothing_ran(marker: &Path, started: &Started, what: &str) {
    assert!(!marker.exists(), "{what}: a task ran");
    assert_eq!(
        started.0.load(Ordering::SeqCst),
        0,
        "{what}: a task started"
    );
}

#[test]
fn one_level_past_the_limit_is_refused_before_any_task_runs() {
    let dir = scratch_dir("nesting-refused");
    // `deep`'s own argument list is its first level, so these add up to MAX_NESTING + 1.
    let over = MAX_NESTING;
    let cases: Vec<(&str, Graph)> = vec![
        (
            "list",
            too_deep_graph(
                &dir.join("list"),
                "echo",
                nested_list(over, Arg::Value(1.into())),
            ),
        ),
        (
            "map",
            too_deep_graph(
                &dir.join("map"),
                "echo",
                nested_map(over, Arg::Value(1.into())),
            ),
        ),
        (
            "tasks",
            too_deep_graph(&dir.join("tasks"), "echo", nested_incs(over)),
        ),
        (
            "mixed",
            too_deep_graph(&dir.join("mixed"), "echo", mixed(over)),
        ),
        (
            "literal value",
            too_deep_graph(
                &dir.join("literal value"),
                "echo",
                Arg::Value(nested_value(over, 1.into())),
            ),
        ),
    ];
    let markers: Vec<PathBuf> = cases.iter().map(|(n, _)| dir.join(n)).collect();
    // A literal node nested one level too deep, read by a task that depends on `ran` too.
    let literal_marker = dir.join("literal node");
    let mut literal = Graph::new();
    literal.task(
        "ran",
        "touch",
        vec![Arg::Value(literal_marker.to_str().unwrap().into())],
    );
    literal.insert("deep", nested_value_map(MAX_NESTING + 1, 1.into()));
    literal.task(
        "reader",
        "echo",
        vec![Arg::List(vec![key("ran").into(), key("deep").into()])],
    );
    on_each_scheduler(move |name, get| {
        for ((what, g), marker) in cases.iter().zip(&markers) {
            let started = Arc::new(Started::default());
            let opts = GetOptions::new().callback(started.clone());
            let e = get(g, &Keys::from(vec!["ran", "deep"]), &opts).unwrap_err();
            let Error::Graph(GraphError::NestedTooDeep { key, limit }) = &e else {
                panic!("{name}, {what}: expected NestedTooDeep, got {e}");
            };
            assert_eq!(
                (key, *limit),
                (&Key::from("deep"), MAX_NESTING),
                "{name}, {what}"
            );
            assert_eq!(
                e.to_string(),
                format!("deep: lists, maps or nested tasks nested deeper than {MAX_NESTING} levels (the limit)")
            );
            assert_nothing_ran(marker, &started, &format!("{name}, {what}"));
        }
        let started = Arc::new(Started::default());
        let opts = GetOptions::new().callback(started.clone());
        let e = get(&literal, &"reader".into(), &opts).unwrap_err();
        assert!(
            matches!(&e, Error::Graph(GraphError::NestedTooDeep { key, limit })
                if *key == Key::from("deep") && *limit == MAX_NESTING),
            "{name}, literal node: {e}"
        );
        assert_nothing_ran(&literal_marker, &started, &format!("{name}, literal node"));

        let request_marker = dir.join(format!("request-{name}"));
        let mut g = Graph::new();
        g.task(
            "ran",
            "touch",
            vec![Arg::Value(request_marker.to_str().unwrap().into())],
        );
        let started = Arc::new(Started::default());
        let opts = GetOptions::new().callback(started.clone());
        let request = Keys::List(vec!["ran".into(), nested_request(MAX_NESTING, "ran")]);
        let e = get(&g, &request, &opts).unwrap_err();
        assert!(
            matches!(&e, Error::Graph(GraphError::RequestTooDeep { limit }) if *limit == MAX_NESTING),
            "{name}, request: {e}"
        );
        assert_eq!(
            e.to_string(),
            format!("requested keys nested deeper than {MAX_NESTING} levels of lists (the limit)")
        );
        assert_nothing_ran(&request_marker, &started, &format!("{name}, request"));
        // Exactly at the limit, the same request runs `ran` once.
        let request = Keys::List(vec!["ran".into(), nested_request(MAX_NESTING - 1, "ran")]);
        get(&g, &request, &GetOptions::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(std::fs::read(&request_marker).unwrap(), b"x", "{name}");
    });
}

// ---- 100,000 levels, in a helper process ----

/// Runs the helper test `name` in a child process and checks that it finished cleanly.
fn run_helper(name: &str) {
    common::assert_helper_prints(name, "HELPER DONE");
}

/// In the helper: `get` of each graph on every scheduler, from a 2 MiB stack, must fail with
/// `NestedTooDeep` naming `deep`; then the graphs are dropped there too (without recursion),
/// except the ones holding a deep literal `Value`, whose drop recurses (see `Arg`).
fn refuse_huge_arguments() {
    let cases: Vec<(&str, Graph, bool)> = vec![
        (
            "list",
            too_deep_graph(
                Path::new("/nonexistent/list"),
                "echo",
                nested_list(HUGE, Arg::Value(1.into())),
            ),
            false,
        ),
        (
            "map",
            too_deep_graph(
                Path::new("/nonexistent/map"),
                "echo",
                nested_map(HUGE, Arg::Value(1.into())),
            ),
            false,
        ),
        (
            "tasks",
            too_deep_graph(Path::new("/nonexistent/tasks"), "echo", nested_incs(HUGE)),
            false,
        ),
        (
            "mixed",
            too_deep_graph(Path::new("/nonexistent/mixed"), "echo", mixed(HUGE)),
            true,
        ),
        // A missing key first: the error path that looks for it must not recurse either.
        (
            "missing key first",
            too_deep_graph(
                Path::new("/nonexistent/missing"),
                "echo",
                Arg::List(vec![
                    key("nope").into(),
                    nested_list(HUGE, Arg::Value(1.into())),
                ]),
            ),
            false,
        ),
        (
            "literal value",
            too_deep_graph(
                Path::new("/nonexistent/value"),
                "echo",
                Arg::Value(nested_value(HUGE, 1.into())),
            ),
            true,
        ),
        (
            "literal node",
            {
                let mut g = Graph::new();
                g.insert("deep", nested_value(HUGE, 1.into()));
                g.task("reader", "echo", vec![key("deep").into()]);
                g
            },
            true,
        ),
    ];
    let cases = std::sync::Mutex::new(Some(cases));
    on_each_scheduler(move |name, get| {
        let mut guard = cases.lock().unwrap();
        let all = guard.as_ref().unwrap();
        for (what, g, _) in all {
            let request: Keys = if *what == "literal node" {
                "reader".into()
            } else {
                "deep".into()
            };
            let e = get(g, &request, &GetOptions::new()).unwrap_err();
            assert!(
                matches!(&e, Error::Graph(GraphError::NestedTooDeep { key, limit })
                    if *key == Key::from("deep") && *limit == MAX_NESTING),
                "{name}, {what}: {e}"
            );
            println!("{name}, {what}: {e}");
        }
        if name == SCHEDULERS[2] {
            // The last scheduler: drop the graphs on this small stack.
            for (_, g, holds_deep_value) in guard.take().unwrap() {
                if holds_deep_value {
                    std::mem::forget(g);
                } else {
                    drop(g);
                }
            }
        }
    });
}

#[test]
fn helper_huge_arguments() {
    if !is_helper("helper_huge_arguments") {
        return;
    }
    refuse_huge_arguments();
    println!("HELPER DONE");
}

#[test]
fn arguments_nested_100_000_deep_are_refused_without_overflowing_the_stack() {
    run_helper("helper_huge_arguments");
}

#[test]
fn helper_huge_request() {
    if !is_helper("helper_huge_request") {
        return;
    }
    let mut g = Graph::new();
    g.insert("x", 1);
    let request = std::sync::Mutex::new(Some(nested_request(HUGE, "x")));
    on_each_scheduler(move |name, get| {
        let mut guard = request.lock().unwrap();
        let e = get(&g, guard.as_ref().unwrap(), &GetOptions::new()).unwrap_err();
        assert!(
            matches!(&e, Error::Graph(GraphError::RequestTooDeep { limit }) if *limit == MAX_NESTING),
            "{name}: {e}"
        );
        println!("{name}: {e}");
        if name == SCHEDULERS[2] {
            drop(guard.take()); // 100,000 levels, dropped on a 2 MiB stack
        }
    });
    println!("HELPER DONE");
}

#[test]
fn requests_nested_100_000_deep_are_refused_without_overflowing_the_stack() {
    run_helper("helper_huge_request");
}

/// A requested literal node counts the lists of its value too.
#[test]
fn literal_nodes_count_their_value_lists() {
    let mut g = Graph::new();
    g.insert("v", nested_value(MAX_NESTING + 1, 0.into()));
    assert!(matches!(g.get(&"v".into()), Some(Node::Value(_))));
    let e = SyncScheduler.get(&g, "v").unwrap_err();
    assert!(
        matches!(e, Error::Graph(GraphError::NestedTooDeep { .. })),
        "{e}"
    );
    let mut g = Graph::new();
    g.insert("v", nested_value(MAX_NESTING, 0.into()));
    assert_eq!(
        SyncScheduler.get(&g, "v").unwrap().into_value(),
        nested_value(MAX_NESTING, 0.into())
    );
}
