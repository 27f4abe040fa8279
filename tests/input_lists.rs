//! Lists of keys as task arguments: a list of distinct keys compiles to one compact argument
//! (a range of the task's inputs); lists that repeat a key, share keys with other lists, start
//! after other inputs or hold literals inlined into the task must still arrive in order, on every
//! scheduler, with and without the plan's optimizations.

mod common;

use forkgraph::{
    key, Arg, GetOptions, Graph, IntoArg, ProcessPool, Scheduler, SyncScheduler, ThreadPool,
};

/// Position-sensitive: any reordering or loss of items changes the result.
#[forkgraph::task]
fn weigh(xs: Vec<i64>) -> i64 {
    xs.iter().enumerate().map(|(i, x)| (i as i64 + 1) * x).sum()
}

#[forkgraph::task]
fn weigh_two(a: Vec<i64>, b: Vec<i64>) -> i64 {
    weigh(a) * 1000 + weigh(b)
}

#[forkgraph::task]
fn after(x: i64, xs: Vec<i64>) -> i64 {
    x * 1000 + weigh(xs)
}

#[forkgraph::task]
fn plus(x: i64, y: i64) -> i64 {
    x + y
}

fn keys(ks: &[&str]) -> Arg {
    Arg::List(ks.iter().map(|k| key(*k).into_arg()).collect())
}

/// The graph and the expected value of each of its outputs.
fn graph() -> (Graph, Vec<(&'static str, i64)>) {
    let mut g = Graph::new();
    g.insert("a", 1);
    g.insert("b", 2);
    g.task("c", "plus", vec![key("a").into_arg(), 1.into_arg()]); // 2
    g.task("d", "plus", vec![key("b").into_arg(), 2.into_arg()]); // 4
    let mut want = Vec::new();
    // Distinct keys: one compact argument.
    g.task("distinct", "weigh", vec![keys(&["a", "b", "c", "d"])]);
    want.push(("distinct", 1 + 2 * 2 + 3 * 2 + 4 * 4));
    // A repeated key in the list.
    g.task("repeat", "weigh", vec![keys(&["c", "d", "c", "a"])]);
    want.push(("repeat", 2 + 2 * 4 + 3 * 2 + 4));
    // Two lists sharing a key: the second list's inputs start at 1.
    g.task(
        "shared",
        "weigh_two",
        vec![keys(&["a", "c"]), keys(&["c", "d"])],
    );
    want.push(("shared", (1 + 2 * 2) * 1000 + (2 + 2 * 4)));
    // A key before the list: the list's inputs start at 1.
    g.task(
        "offset",
        "after",
        vec![key("d").into_arg(), keys(&["c", "a"])],
    );
    want.push(("offset", 4 * 1000 + (2 + 2)));
    // One item (no range), and a list in another order than the inputs'.
    g.task("single", "weigh", vec![keys(&["d"])]);
    want.push(("single", 4));
    g.task(
        "reversed",
        "weigh_two",
        vec![keys(&["d", "c"]), keys(&["c", "d"])],
    );
    want.push(("reversed", (4 + 2 * 2) * 1000 + (2 + 2 * 4)));
    (g, want)
}

fn check(s: &dyn Scheduler, opts: &GetOptions) {
    let (g, want) = graph();
    let request: Vec<forkgraph::Key> = want.iter().map(|(k, _)| forkgraph::Key::from(*k)).collect();
    let out = s.get_with(&g, &request.into(), opts).unwrap();
    let got: Vec<i64> = out
        .as_list()
        .expect("a list of outputs")
        .iter()
        .map(|o| o.to::<i64>().unwrap())
        .collect();
    let expected: Vec<i64> = want.iter().map(|(_, v)| *v).collect();
    assert_eq!(got, expected, "{opts:?}");
}

fn all_options() -> Vec<GetOptions> {
    vec![
        GetOptions::new(),
        GetOptions::new().inline_literals(true),
        GetOptions::new().fuse(true),
        GetOptions::new().inline_literals(true).fuse(true),
    ]
}

#[test]
fn lists_of_keys_arrive_in_order_on_sync() {
    for opts in all_options() {
        check(&SyncScheduler, &opts);
    }
}

#[test]
fn lists_of_keys_arrive_in_order_on_threads() {
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    for opts in all_options() {
        check(&pool, &opts);
    }
}

#[test]
fn lists_of_keys_arrive_in_order_on_processes() {
    common::watchdog(120, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        for opts in all_options() {
            check(&pool, &opts);
        }
    });
}
