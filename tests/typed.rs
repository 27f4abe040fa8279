//! Typed tasks: the handle `#[forkgraph::task]` generates (still callable as the function),
//! graphs built from handles (checked at compile time; the mistakes are in tests/ui), typed
//! results, and the `Callable` side that `map`/`submit` use.

use std::collections::BTreeMap;

use forkgraph::{
    graph, key, typed_key, Arg, Callable, Error, Graph, Node, ProcessPool, Serde, SyncScheduler,
    Task, TaskReturn, ThreadPool, TypedKey, Value,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// Squares a number.
#[forkgraph::task]
#[inline]
pub fn square(x: i64) -> i64 {
    x * x
}

#[forkgraph::task]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[forkgraph::task]
fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[forkgraph::task]
fn ramp(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

#[forkgraph::task]
fn shout(s: &str) -> String {
    s.to_uppercase()
}

#[forkgraph::task]
fn first_word(s: &str) -> &str {
    s.split(' ').next().unwrap_or("")
}

#[forkgraph::task]
fn parse(s: &str) -> Result<i64, std::num::ParseIntError> {
    s.parse()
}

#[forkgraph::task]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[forkgraph::task]
fn or_zero(x: Option<i64>) -> i64 {
    x.unwrap_or(0)
}

#[forkgraph::task]
fn nothing() -> i64 {
    42
}

#[forkgraph::task]
fn unit(_x: i64) {}

#[forkgraph::task]
fn min_max(xs: Vec<i64>) -> (i64, i64) {
    (*xs.iter().min().unwrap(), *xs.iter().max().unwrap())
}

#[forkgraph::task]
fn span(bounds: Value) -> i64 {
    let (lo, hi): (i64, i64) = bounds.to().unwrap();
    hi - lo
}

/// Recursion goes through the handle (the body names `countdown`, now the constant).
#[forkgraph::task]
fn countdown(n: u32) -> u32 {
    if n == 0 {
        0
    } else {
        1 + countdown(n - 1)
    }
}

#[forkgraph::task]
fn weights(m: BTreeMap<String, i64>) -> i64 {
    m.values().sum()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: f64,
    label: String,
}

#[forkgraph::task]
fn mirror(p: Serde<Point>) -> Serde<Point> {
    Serde(Point {
        x: -p.0.x,
        label: p.0.label.clone(),
    })
}

mod stats {
    /// Registered under a name that is not the function's.
    #[forkgraph::task(name = "stats.median")]
    pub(crate) fn median(xs: Vec<i64>) -> i64 {
        let mut xs = xs;
        xs.sort_unstable();
        xs[xs.len() / 2]
    }

    pub(crate) mod deep {
        #[forkgraph::task]
        pub(crate) fn negate(x: i64) -> i64 {
            -x
        }
    }
}

#[test]
fn a_handle_still_calls_the_function() {
    assert_eq!(square(3), 9);
    assert_eq!(add(2, 3), 5);
    assert_eq!(mean(&[1.0, 2.0, 3.0]), 2.0);
    assert_eq!(first_word("hello world"), "hello");
    assert_eq!(countdown(5), 5);
    assert_eq!(stats::median(vec![3, 1, 2]), 2);
    assert_eq!(stats::deep::negate(4), -4);
    // As a function value, through the pointer it dereferences to.
    let squares: Vec<i64> = [1, 2, 3].into_iter().map(*square).collect();
    assert_eq!(squares, [1, 4, 9]);
    let f: fn(&[f64]) -> f64 = *mean;
    assert_eq!(f(&[4.0]), 4.0);
    assert_eq!(format!("{square:?}"), "task function square");
}

#[test]
fn a_handle_carries_the_registered_name() {
    assert_eq!(Callable::<(i64,)>::function(&square), "square");
    assert_eq!(
        Callable::<(Vec<i64>,)>::function(&stats::median),
        "stats.median"
    );
    let g = graph! { "m" => (stats::median, [3, 1, 2]) };
    assert_eq!(
        g.get(&"m".into()),
        Some(&Node::Task(Task::new(
            "stats.median",
            vec![Arg::List(vec![
                Arg::Value(3.into()),
                Arg::Value(1.into()),
                Arg::Value(2.into())
            ])]
        )))
    );
    assert_eq!(SyncScheduler.get(&g, "m").unwrap().to::<i64>().unwrap(), 2);
}

#[test]
fn graph_with_handles_builds_the_graph_the_string_form_builds() {
    let typed = graph! {
        "a" => 3,
        "b" => (square, key("a")),
        "c" => (add, key("b"), (square, 2)),
        "d" => (stats::deep::negate, key("c")),
        "n" => (nothing),
        "l" => (total, [key("a"), (square, 4), 5]),
        "w" => (weights, {"x": key("a"), "y": 2}),
    };
    let untyped = graph! {
        "a" => 3,
        "b" => ("square", key("a")),
        "c" => ("add", key("b"), ("square", 2)),
        "d" => ("negate", key("c")),
        "n" => ("nothing"),
        "l" => ("total", [key("a"), ("square", 4), 5]),
        "w" => ("weights", {"x": key("a"), "y": 2}),
    };
    assert_eq!(typed, untyped);
    let out = SyncScheduler.get(&typed, vec!["d", "n", "l", "w"]).unwrap();
    assert_eq!(
        out,
        SyncScheduler
            .get(&untyped, vec!["d", "n", "l", "w"])
            .unwrap()
    );
    assert_eq!(
        SyncScheduler.get(&typed, "d").unwrap().to::<i64>().unwrap(),
        -13
    );
}

#[test]
fn the_builder_returns_typed_keys_and_get_typed_returns_the_type() {
    let mut g = Graph::new();
    let a: TypedKey<i64> = g.add_value("a", 3_i64);
    let b: TypedKey<i64> = g.add("b", square.task(&a));
    let c = g.add("c", add.task(&b, square.task(2)));
    let text = g.add_value("text", "typed graphs");
    let word: TypedKey<String> = g.add("word", first_word.task(&text));
    let loud = g.add("loud", shout.task(word.clone()));
    let r = g.add("r", ramp.task(4_usize));
    let m: TypedKey<f64> = g.add("m", mean.task(r));
    let p = g.add("p", parse.task("12"));
    let o = g.add("o", or_zero.task(5));
    let none = g.add("none", or_zero.task(None::<i64>));
    let u: TypedKey<()> = g.add("u", unit.task(1));
    let mm: TypedKey<(i64, i64)> = g.add("mm", min_max.task(vec![3_i64, -1, 7]));
    let sp = g.add("sp", span.task(&mm));
    let pt = g.add(
        "pt",
        mirror.task(Serde(Point {
            x: 1.5,
            label: "p".into(),
        })),
    );
    // A `Vec` of typed keys for a `Vec<i64>` parameter: a list of references.
    let keys = g.add("keys", total.task(vec![a.clone(), b.clone(), c.clone()]));
    let s = SyncScheduler;
    assert_eq!(s.get_typed(&g, &keys).unwrap(), 3 + 9 + 13);
    let c_value: i64 = s.get_typed(&g, &c).unwrap();
    assert_eq!(c_value, 9 + 4);
    assert_eq!(s.get_typed(&g, &loud).unwrap(), "TYPED");
    assert_eq!(s.get_typed(&g, &m).unwrap(), 1.5);
    assert_eq!(s.get_typed(&g, &p).unwrap(), 12);
    assert_eq!(s.get_typed(&g, &o).unwrap(), 5);
    assert_eq!(s.get_typed(&g, &none).unwrap(), 0);
    s.get_typed(&g, &u).unwrap();
    assert_eq!(s.get_typed(&g, &mm).unwrap(), (-1, 7));
    assert_eq!(s.get_typed(&g, &sp).unwrap(), 8);
    assert_eq!(
        s.get_typed(&g, &pt).unwrap().0,
        Point {
            x: -1.5,
            label: "p".into()
        }
    );
    // The same on threads.
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    assert_eq!(pool.get_typed(&g, &c).unwrap(), c_value);
}

#[forkgraph::task]
fn counts(text: &str) -> std::collections::HashMap<String, i64> {
    let mut m = std::collections::HashMap::new();
    for w in text.split_whitespace() {
        *m.entry(w.to_owned()).or_insert(0) += 1;
    }
    m
}

#[forkgraph::task]
fn hash_weights(m: std::collections::HashMap<String, i64>) -> i64 {
    m.values().sum()
}

#[test]
fn a_btree_map_and_a_hash_map_feed_each_other() {
    // Both are a map at run time (the untyped form accepts either); the typed form agrees.
    let mut g = Graph::new();
    let h = g.add("h", counts.task("a b a"));
    let from_hash = g.add("from-hash", weights.task(&h));
    let b = g.add_value(
        "b",
        BTreeMap::from([("x".to_owned(), 2_i64), ("y".to_owned(), 5)]),
    );
    let from_btree = g.add("from-btree", hash_weights.task(&b));
    let literal = g.add(
        "literal",
        hash_weights.task(BTreeMap::from([("z".to_owned(), 7_i64)])),
    );
    let literal_hash = g.add(
        "literal-hash",
        weights.task(std::collections::HashMap::from([("z".to_owned(), 8_i64)])),
    );
    let s = SyncScheduler;
    assert_eq!(s.get_typed(&g, &from_hash).unwrap(), 3);
    assert_eq!(s.get_typed(&g, &from_btree).unwrap(), 7);
    assert_eq!(s.get_typed(&g, &literal).unwrap(), 7);
    assert_eq!(s.get_typed(&g, &literal_hash).unwrap(), 8);
}

#[test]
fn a_typed_key_of_the_wrong_type_is_an_error_naming_the_key_and_both_types() {
    let mut g = Graph::new();
    g.insert("a", "not a number");
    let a = typed_key::<i64>("a");
    let e = SyncScheduler.get_typed(&g, &a).unwrap_err();
    let Error::TypeMismatch { key, expected, got } = &e else {
        panic!("expected TypeMismatch, got {e:?}")
    };
    assert_eq!(key, &"a".into());
    assert_eq!(expected, "i64");
    assert!(got.contains("string"), "{got}");
    assert_eq!(
        e.to_string(),
        format!("key a: its value is not a `i64` (the typed key's type): {got}")
    );
    // Through a task: the parameter's run-time check still names the mismatch.
    let b = g.add("b", square.task(typed_key::<i64>("a")));
    let e = SyncScheduler.get_typed(&g, &b).unwrap_err();
    assert!(e.to_string().contains("expected an integer (i64)"), "{e}");
}

#[test]
fn untyped_keys_and_values_are_accepted_and_checked_when_the_graph_runs() {
    let mut g = Graph::new();
    g.insert("a", 2_i64);
    g.insert("s", "x");
    let ok = g.add("ok", square.task(key("a")));
    let bad = g.add("bad", square.task(key("s")));
    let v = g.add("v", square.task(Value::from(7_i64)));
    assert_eq!(SyncScheduler.get_typed(&g, &ok).unwrap(), 4);
    assert_eq!(SyncScheduler.get_typed(&g, &v).unwrap(), 49);
    let e = SyncScheduler.get_typed(&g, &bad).unwrap_err();
    assert!(e.is_task_error(), "{e}");
}

#[test]
fn callable_gives_the_call_and_converts_the_result() {
    // Tuples of arguments, and for one parameter the bare argument.
    assert_eq!(square.call_args((3_i64,)), vec![Arg::Value(3.into())]);
    assert_eq!(square.call_args(3_i64), vec![Arg::Value(3.into())]);
    assert_eq!(
        add.call_args((1, typed_key::<i64>("k"))),
        vec![Arg::Value(1.into()), Arg::Key("k".into())]
    );
    assert_eq!(Callable::<(i64,)>::output(&square, Value::from(9)), Ok(9));
    assert!(Callable::<(i64,)>::output(&square, Value::from("x")).is_err());
    // Borrowed parameters take their owned counterparts (and the borrowed forms).
    let owned = vec![1.0, 2.0];
    let array = Arg::Value(Value::Array(forkgraph::Array::from_vec(owned.clone())));
    assert_eq!(mean.call_args(owned.clone()), vec![array.clone()]);
    assert_eq!(mean.call_args((&owned[..],)), vec![array.clone()]);
    assert_eq!(mean.call_args([1.0, 2.0]), vec![array]);
    assert_eq!(
        shout.call_args(String::from("a")),
        vec![Arg::Value("a".into())]
    );
    assert_eq!(shout.call_args("a"), vec![Arg::Value("a".into())]);
    assert_eq!(
        Callable::<&str>::output(&first_word, Value::from("w")),
        Ok(String::from("w"))
    );
    // A `Result` return type converts to its `Ok` type.
    assert_eq!(Callable::<&str>::output(&parse, Value::from(3)), Ok(3));
    assert_eq!(nothing.call_args(()), Vec::<Arg>::new());
    assert_eq!(Callable::<()>::function(&nothing), "nothing");
}

/// What `pool.map(f, items)` asks of `f` and its items (the pool's side is tested with the
/// pool): item types are inferred from the parameters, so integer literals need no suffix.
fn map_calls<F: Callable<A>, A>(f: F, items: impl IntoIterator<Item = A>) -> Vec<Vec<Arg>> {
    items.into_iter().map(|i| f.call_args(i)).collect()
}

#[test]
fn map_items_are_inferred_from_the_parameters() {
    let v = |i: i64| Arg::Value(i.into());
    assert_eq!(map_calls(square, [1, 2]), vec![vec![v(1)], vec![v(2)]]);
    assert_eq!(
        map_calls(square, [(1,), (2,)]),
        vec![vec![v(1)], vec![v(2)]]
    );
    assert_eq!(map_calls(add, [(1, 2)]), vec![vec![v(1), v(2)]]);
    assert_eq!(
        map_calls(shout, ["a", "b"]),
        vec![vec![Arg::Value("a".into())], vec![Arg::Value("b".into())]]
    );
    assert_eq!(map_calls(nothing, [(), ()]).len(), 2);
    // A tuple parameter: the item is a one-element tuple of the tuple.
    assert_eq!(
        map_calls(echo_pair, [((1, "a"),)]),
        vec![vec![Arg::List(vec![v(1), Arg::Value("a".into())])]]
    );
}

/// A `cfg` on the function applies to everything the attribute generates.
#[forkgraph::task]
#[cfg(any())]
fn compiled_out(x: i64) -> i64 {
    x
}

#[forkgraph::task]
#[cfg(target_os = "linux")]
#[allow(unused_mut)]
fn compiled_in(mut x: Vec<i64>) -> usize {
    x.len()
}

#[test]
fn attributes_on_the_function_are_kept() {
    assert_eq!(compiled_in(vec![1, 2]), 2);
    let mut g = Graph::new();
    let n = g.add("n", compiled_in.task(vec![1_i64, 2, 3]));
    assert_eq!(SyncScheduler.get_typed(&g, &n).unwrap(), 3);
}

/// The same calls `map` makes, through the process pool's `get`: handles resolve by name in the
/// workers.
#[test]
fn typed_graphs_run_on_the_process_pool() {
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let mut g = Graph::new();
    let a = g.add_value("a", 5_i64);
    let b = g.add("b", square.task(&a));
    let c = g.add("c", add.task(&b, stats::deep::negate.task(&a)));
    let r = g.add("r", ramp.task(1000_usize));
    let m = g.add("m", mean.task(&r));
    assert_eq!(pool.get_typed(&g, &c).unwrap(), 20);
    assert_eq!(pool.get_typed(&g, &m).unwrap(), 499.5);
    assert_eq!(pool.get_typed(&g, &r).unwrap().len(), 1000);
}

// ---- Typed literals round-trip through the typed call path ----

macro_rules! echo_tasks {
    ($($f:ident: $t:ty;)*) => {$(
        #[forkgraph::task]
        fn $f(x: $t) -> $t {
            x
        }
    )*};
}
echo_tasks! {
    echo_i8: i8;
    echo_i16: i16;
    echo_i32: i32;
    echo_i64: i64;
    echo_i128: i128;
    echo_isize: isize;
    echo_u8: u8;
    echo_u16: u16;
    echo_u32: u32;
    echo_u64: u64;
    echo_u128: u128;
    echo_usize: usize;
    echo_f32: f32;
    echo_f64: f64;
    echo_bool: bool;
    echo_string: String;
    echo_bytes: Vec<u8>;
    echo_nested: Vec<Vec<i64>>;
    echo_strings: Vec<String>;
    echo_point: Serde<Point>;
    echo_points: Vec<Serde<Point>>;
    echo_map: BTreeMap<String, i64>;
    echo_opt: Option<u32>;
    echo_pair: (i64, String);
    echo_triple: (u8, Vec<f64>, Option<bool>);
}

#[forkgraph::task]
fn echo_str(s: &str) -> &str {
    s
}

#[forkgraph::task]
fn echo_slice(xs: &[u8]) -> Vec<u8> {
    xs.to_vec()
}

/// One value through a typed task (a literal argument, then a typed key to its result, then
/// `get_typed`) and through `Callable` (`call_args` run as a task, then `output`).
fn round_trip<H, T>(h: H, v: T) -> T::Output
where
    H: Callable<(T,), Output = T::Output> + Copy,
    T: TaskReturn + Clone,
{
    let mut g = Graph::new();
    g.task("via-callable", h.function(), h.call_args((v,)));
    let value = SyncScheduler.get(&g, "via-callable").unwrap().into_value();
    h.output(value).unwrap()
}

fn point() -> impl Strategy<Value = Point> {
    (
        any::<f64>().prop_filter("NaN never equals itself", |x| !x.is_nan()),
        ".*",
    )
        .prop_map(|(x, label)| Point { x, label })
}

macro_rules! typed_round_trips {
    ($($name:ident: $f:ident, $strategy:expr;)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn $name(v in $strategy) {
                let mut g = Graph::new();
                let k = g.add("x", $f.task(v.clone()));
                let again = g.add("again", $f.task(&k));
                prop_assert_eq!(SyncScheduler.get_typed(&g, &again).unwrap(), v.clone());
                prop_assert_eq!(round_trip($f, v.clone()), v);
            }
        }
    )*};
}
typed_round_trips! {
    round_trip_i8: echo_i8, any::<i8>();
    round_trip_i16: echo_i16, any::<i16>();
    round_trip_i32: echo_i32, any::<i32>();
    round_trip_i64: echo_i64, prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()];
    round_trip_i128: echo_i128, prop_oneof![Just(i128::MIN), Just(i128::MAX), any::<i128>()];
    round_trip_isize: echo_isize, any::<isize>();
    round_trip_u8: echo_u8, any::<u8>();
    round_trip_u16: echo_u16, any::<u16>();
    round_trip_u32: echo_u32, any::<u32>();
    round_trip_u64: echo_u64, prop_oneof![Just(u64::MAX), any::<u64>()];
    round_trip_u128: echo_u128, prop_oneof![Just(u128::MAX), any::<u128>()];
    round_trip_usize: echo_usize, any::<usize>();
    round_trip_f32: echo_f32, any::<f32>().prop_filter("NaN", |x| !x.is_nan());
    round_trip_f64: echo_f64, any::<f64>().prop_filter("NaN", |x| !x.is_nan());
    round_trip_bool: echo_bool, any::<bool>();
    round_trip_string: echo_string, ".*";
    round_trip_bytes: echo_bytes, proptest::collection::vec(any::<u8>(), 0..300);
    round_trip_nested: echo_nested,
        proptest::collection::vec(proptest::collection::vec(any::<i64>(), 0..8), 0..8);
    round_trip_strings: echo_strings, proptest::collection::vec(".*", 0..8);
    round_trip_serde: echo_point, point().prop_map(Serde);
    round_trip_serde_vec: echo_points,
        proptest::collection::vec(point().prop_map(Serde), 0..6);
    round_trip_map: echo_map, proptest::collection::btree_map(".*", any::<i64>(), 0..6);
    round_trip_option: echo_opt, proptest::option::of(any::<u32>());
    round_trip_pair: echo_pair, (any::<i64>(), ".*");
    round_trip_triple: echo_triple, (
        any::<u8>(),
        proptest::collection::vec(any::<f64>().prop_filter("NaN", |x| !x.is_nan()), 0..8),
        proptest::option::of(any::<bool>()),
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Borrowed parameters: the owned literal goes in, the owned result comes back.
    #[test]
    fn borrowed_parameters_round_trip(s in ".*", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut g = Graph::new();
        let a = g.add("a", echo_str.task(s.as_str()));
        let b = g.add("b", echo_str.task(&a));
        let c = g.add("c", echo_slice.task(bytes.clone()));
        let d = g.add("d", echo_slice.task(&c));
        let e = g.add("e", echo_slice.task(&bytes[..]));
        prop_assert_eq!(SyncScheduler.get_typed(&g, &b).unwrap(), s.clone());
        prop_assert_eq!(SyncScheduler.get_typed(&g, &d).unwrap(), bytes.clone());
        prop_assert_eq!(SyncScheduler.get_typed(&g, &e).unwrap(), bytes.clone());
        prop_assert_eq!(round_trip(echo_slice, bytes.clone()), bytes);
    }
}

/// The compile-time checks: each file of tests/ui is a common mistake and the error it gets.
#[test]
fn compile_errors_point_at_the_mistake() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
