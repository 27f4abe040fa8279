//! Values that arrive exactly, and errors that keep what they know, on every scheduler (sync,
//! threads, processes):
//!
//! - every integer type over its whole range, as literal nodes, literal arguments, parameters,
//!   results and (on the process pool) `map` items; numbers a parameter type cannot hold are
//!   refused with both numbers named, never saturated or wrapped;
//! - serde's whole data model through `Serde<T>` (flatten, the three enum taggings,
//!   `serde_json::Value`, `skip_serializing_if`, `Option`, maps with non-string keys, 128-bit
//!   integers, nested vectors of structs, borrowed `&str` fields), and `Serde<T>` inside `Vec`
//!   and `Option` parameters;
//! - a result that cannot be encoded fails in the task that made it; an argument that cannot be
//!   decoded names its position and the decoder's message;
//! - returned errors keep their type name and `source()` chain everywhere, and their value
//!   (for downcasting) where the task ran in this process.
//!
//! `values_suite!` instantiates every case per scheduler, as `tests/conformance.rs` does.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use anyhow::Context;
use forkgraph::SchedulerExt;
use forkgraph::{
    graph, key, Arg, CallError, Error, FromArg, Graph, IntoValue, Key, Output, Scheduler, Serde,
    TaskError, TaskErrorKind, Value,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[allow(dead_code)]
#[path = "conformance/support.rs"]
mod support;

use support::inc;

// ---- Integers ----

macro_rules! echo_ints {
    ($($f:ident: $t:ty),* $(,)?) => {$(
        #[forkgraph::task]
        fn $f(x: $t) -> $t {
            x
        }
    )*};
}

echo_ints!(
    echo_u8: u8,
    echo_u16: u16,
    echo_u32: u32,
    echo_u64: u64,
    echo_u128: u128,
    echo_usize: usize,
    echo_i8: i8,
    echo_i16: i16,
    echo_i32: i32,
    echo_i64: i64,
    echo_i128: i128,
    echo_isize: isize,
);

#[forkgraph::task]
fn echo_f64(x: f64) -> f64 {
    x
}

#[forkgraph::task]
fn echo_f32(x: f32) -> f32 {
    x
}

#[forkgraph::task]
fn u64_list(xs: Vec<u64>) -> Vec<u64> {
    xs
}

#[forkgraph::task]
fn u128_list(xs: Vec<u128>) -> Vec<u128> {
    xs
}

/// An integer type under test and the task that echoes it.
trait Int: Copy + PartialEq + Debug + Into<Value> + for<'x> FromArg<'x> + 'static {
    const ECHO: &'static str;
}

macro_rules! ints {
    ($($t:ty => $f:literal),*) => {$(
        impl Int for $t {
            const ECHO: &'static str = $f;
        }
    )*};
}

ints!(
    u8 => "echo_u8", u16 => "echo_u16", u32 => "echo_u32", u64 => "echo_u64",
    u128 => "echo_u128", usize => "echo_usize", i8 => "echo_i8", i16 => "echo_i16",
    i32 => "echo_i32", i64 => "echo_i64", i128 => "echo_i128", isize => "echo_isize"
);

/// Adds the ways `x` enters a graph, under keys `(T::ECHO, what, i)`: a literal node, a literal
/// argument whose result is the parameter of a second task, and the literal node as an input.
fn add_int<T: Int>(g: &mut Graph, keys: &mut Vec<(Key, Value)>, i: usize, x: T) {
    let k = |what: &str| Key::from((T::ECHO, what, i));
    g.insert(k("lit"), x);
    g.task(k("arg"), T::ECHO, vec![Arg::Value(x.into())]);
    g.task(k("result"), T::ECHO, vec![Arg::Key(k("arg"))]);
    g.task(k("input"), T::ECHO, vec![Arg::Key(k("lit"))]);
    for what in ["lit", "arg", "result", "input"] {
        keys.push((k(what), x.into()));
    }
}

/// Runs the graph and checks every key's value and its conversion back to `T`.
fn check_ints<S: Scheduler>(s: &S, g: &Graph, keys: &[(Key, Value)]) -> Result<(), String> {
    let req: Vec<Key> = keys.iter().map(|(k, _)| k.clone()).collect();
    let out = s.get(g, req).map_err(|e| e.to_string())?;
    for (o, (k, want)) in out.as_list().unwrap().iter().zip(keys) {
        if o.as_value() != Some(want) {
            return Err(format!("{k}: got {o:?}, want {want:?}"));
        }
    }
    Ok(())
}

/// `x` and `T`'s decoding of the result, checked for one value.
fn one_int<S: Scheduler, T: Int>(s: &S, x: T) {
    let mut g = Graph::new();
    let mut keys = Vec::new();
    add_int(&mut g, &mut keys, 0, x);
    check_ints(s, &g, &keys).unwrap();
    let out = s.get(&g, (T::ECHO, "result", 0)).unwrap();
    assert_eq!(out.to::<T>().unwrap(), x);
}

/// Boundaries of `T`, and the numbers around `i64` and `u64`'s limits that `T` holds.
fn boundaries<T: Int + TryFrom<i128> + TryFrom<u128>>() -> Vec<T> {
    let signed = [
        i128::MIN,
        i128::MIN + 1,
        i128::from(i64::MIN) - 1,
        i64::MIN.into(),
        -1,
        0,
        1,
        i64::MAX.into(),
        i128::from(i64::MAX) + 1,
        u64::MAX.into(),
        i128::from(u64::MAX) + 1,
        i128::MAX,
    ];
    let unsigned = [u128::MAX - 1, u128::MAX];
    let mut out: Vec<T> = signed.iter().filter_map(|&i| T::try_from(i).ok()).collect();
    out.extend(unsigned.iter().filter_map(|&u| T::try_from(u).ok()));
    out
}

fn every_integer_type_round_trips_at_its_boundaries<S: Scheduler>(s: &S) {
    macro_rules! each {
        ($($t:ty),*) => {$(
            for x in boundaries::<$t>() {
                one_int(s, x);
            }
        )*};
    }
    each!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
    // The value itself is exact, whichever variant holds it.
    assert_eq!(Value::from(u64::MAX), Value::UInt(u64::MAX));
    assert_eq!(Value::from(u128::MAX), Value::U128(u128::MAX));
    assert_eq!(Value::from(i128::MIN), Value::I128(i128::MIN));
    assert_eq!(Value::from(7u128), Value::Int(7));
}

/// The property: any value of any integer type comes back equal, however it entered the graph.
fn integers_round_trip_over_their_whole_range<S: Scheduler>(s: &S, cases: u32) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let unsigned = (
        any::<u8>(),
        any::<u16>(),
        any::<u32>(),
        any::<u64>(),
        any::<u128>(),
        any::<usize>(),
    );
    let signed = (
        any::<i8>(),
        any::<i16>(),
        any::<i32>(),
        any::<i64>(),
        any::<i128>(),
        any::<isize>(),
    );
    runner
        .run(
            &(unsigned, signed),
            |((a, b, c, d, e, f), (g_, h, i, j, k, l))| {
                let mut g = Graph::new();
                let mut keys = Vec::new();
                add_int(&mut g, &mut keys, 0, a);
                add_int(&mut g, &mut keys, 0, b);
                add_int(&mut g, &mut keys, 0, c);
                add_int(&mut g, &mut keys, 0, d);
                add_int(&mut g, &mut keys, 0, e);
                add_int(&mut g, &mut keys, 0, f);
                add_int(&mut g, &mut keys, 0, g_);
                add_int(&mut g, &mut keys, 0, h);
                add_int(&mut g, &mut keys, 0, i);
                add_int(&mut g, &mut keys, 0, j);
                add_int(&mut g, &mut keys, 0, k);
                add_int(&mut g, &mut keys, 0, l);
                // Lists of wide integers are exact too (u64 as an array, u128 as a list).
                g.task(
                    "u64s",
                    "u64_list",
                    vec![Arg::Value(vec![d, u64::MAX].into())],
                );
                g.task("u128s", "u128_list", vec![Arg::Value(vec![e, 0].into())]);
                keys.push(("u64s".into(), vec![d, u64::MAX].into()));
                keys.push(("u128s".into(), vec![e, 0].into()));
                check_ints(s, &g, &keys).map_err(TestCaseError::fail)
            },
        )
        .unwrap();
}

fn task_error(r: Result<Output, Error>) -> TaskError {
    match r {
        Err(Error::Task(t)) => *t,
        other => panic!("expected a task error, got {other:?}"),
    }
}

fn mismatch(e: &TaskError) -> (usize, &str, &str) {
    let TaskErrorKind::Call(CallError::Mismatch {
        position,
        expected,
        got,
        ..
    }) = &e.kind
    else {
        panic!("expected a mismatch, got {e}")
    };
    (*position, expected, got)
}

fn out_of_range_integers_are_refused_with_both_numbers<S: Scheduler>(s: &S) {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "echo_i64",
            u64::MAX.into(),
            "an integer that fits i64 (-9223372036854775808..=9223372036854775807)",
        ),
        ("echo_u8", 256.into(), "an integer that fits u8 (0..=255)"),
        (
            "echo_u64",
            (-1).into(),
            "an integer that fits u64 (0..=18446744073709551615)",
        ),
        (
            "echo_usize",
            u128::MAX.into(),
            "an integer that fits usize (0..=18446744073709551615)",
        ),
        (
            "echo_i128",
            u128::MAX.into(),
            "an integer that fits i128 (-170141183460469231731687303715884105728..=170141183460469231731687303715884105727)",
        ),
    ];
    for (f, v, expected) in cases {
        let mut g = Graph::new();
        g.task("t", f, vec![Arg::Value(v.clone())]);
        let e = task_error(s.get(&g, "t"));
        let Some(n) = v.as_integer() else {
            unreachable!()
        };
        assert_eq!(mismatch(&e), (0, expected, n.to_string().as_str()), "{f}");
    }
    // Floats take integers they hold exactly, and refuse the others rather than round them.
    let exact = 1u64 << 53;
    // (Integers for float parameters: the run-time conversion, so the string form; `graph!`
    // refuses them for a handle at compile time.)
    let g = graph! {
        "ok" => ("echo_f64", exact),
        "rounds" => ("echo_f64", exact + 1),
        "ok32" => ("echo_f32", 1u64 << 24),
        "rounds32" => ("echo_f32", (1u64 << 24) + 1),
    };
    assert_eq!(s.get(&g, "ok").unwrap().to::<f64>().unwrap(), exact as f64);
    assert_eq!(
        s.get(&g, "ok32").unwrap().to::<f32>().unwrap(),
        (1u64 << 24) as f32
    );
    let e = task_error(s.get(&g, "rounds"));
    assert_eq!(
        mismatch(&e),
        (
            0,
            "a number that f64 holds exactly",
            "the integer 9007199254740993"
        )
    );
    let e = task_error(s.get(&g, "rounds32"));
    assert_eq!(mismatch(&e).1, "a number that f32 holds exactly");
    // A result converted by the caller is refused the same way.
    let g = graph! { "big" => (echo_u64, u64::MAX) };
    let out = s.get(&g, "big").unwrap();
    assert!(out.to::<i64>().is_err());
    assert_eq!(out.to::<u64>().unwrap(), u64::MAX);
    assert_eq!(out.to::<u128>().unwrap(), u128::from(u64::MAX));
}

// ---- Serde<T>: serde's data model ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    a: u32,
    b: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Flat {
    id: u64,
    #[serde(flatten)]
    inner: Inner,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Internally {
    Circle { r: f64 },
    Square { side: u32, label: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "c")]
enum Adjacently {
    Number(i64),
    Text(String),
    Pair(u8, Vec<u16>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Number(i64),
    Text(String),
    Point { x: f64, y: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sparse {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    nickname: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    tags: Vec<String>,
    maybe: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Wide {
    u: u128,
    i: i128,
    big: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Keyed {
    by_pair: BTreeMap<(u32, i64), String>,
    by_number: HashMap<u64, Vec<u8>>,
    by_flag: BTreeMap<bool, Inner>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: &'a str,
    #[serde(borrow)]
    tags: Vec<&'a str>,
    n: u32,
}

macro_rules! echo_serde {
    ($($f:ident: $t:ty),* $(,)?) => {$(
        #[forkgraph::task]
        fn $f(x: Serde<$t>) -> Serde<$t> {
            x
        }
    )*};
}

echo_serde!(
    echo_flat: Flat,
    echo_internally: Vec<Internally>,
    echo_adjacently: Vec<Adjacently>,
    echo_untagged: Vec<Untagged>,
    echo_json: serde_json::Value,
    echo_sparse: Vec<Sparse>,
    echo_options: (Option<u8>, Option<String>, Option<Inner>),
    echo_keyed: Keyed,
    echo_wide: Wide,
    echo_nested: Vec<Vec<Inner>>,
);

#[forkgraph::task]
fn flat_sum(f: Serde<Flat>) -> u64 {
    f.0.id + u64::from(f.0.inner.a) + f.0.rest.len() as u64
}

#[forkgraph::task]
fn make_named(name: &str, n: u32) -> Serde<Named<'_>> {
    Serde(Named {
        name,
        tags: name.split('-').collect(),
        n,
    })
}

#[forkgraph::task]
fn describe_named(v: Serde<Named<'_>>) -> String {
    format!("{}/{}/{}", v.0.name, v.0.tags.join("+"), v.0.n)
}

/// `x` as a literal, through its echo task twice (decoded and encoded in the task each time,
/// in two tasks that may run in different workers), and back to the caller.
fn serde_round_trip<S, T>(s: &S, echo: &str, x: T)
where
    S: Scheduler,
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let mut g = Graph::new();
    g.insert("lit", Serde(x.clone()).into_value());
    g.task("once", echo, vec![Arg::Key("lit".into())]);
    g.task("twice", echo, vec![Arg::Key("once".into())]);
    let out = s.get(&g, "twice").unwrap_or_else(|e| panic!("{echo}: {e}"));
    assert_eq!(out.to::<Serde<T>>().unwrap().0, x, "{echo}");
}

fn inner(a: u32, b: &str) -> Inner {
    Inner { a, b: b.into() }
}

fn serde_data_model_round_trips<S: Scheduler>(s: &S) {
    let flat = Flat {
        id: u64::MAX,
        inner: inner(7, "seven"),
        rest: [
            ("extra".to_string(), serde_json::json!({"deep": [1, 2]})),
            ("note".to_string(), serde_json::json!("hi")),
        ]
        .into(),
    };
    serde_round_trip(s, "echo_flat", flat.clone());
    let g = graph! { "sum" => (flat_sum, Serde(Flat { id: 1000, ..flat }).into_value()) };
    assert_eq!(s.get(&g, "sum").unwrap().to::<u64>(), Ok(1000 + 7 + 2));
    serde_round_trip(
        s,
        "echo_internally",
        vec![
            Internally::Circle { r: 1.5 },
            Internally::Square {
                side: 3,
                label: "sq".into(),
            },
        ],
    );
    serde_round_trip(
        s,
        "echo_adjacently",
        vec![
            Adjacently::Number(i64::MIN),
            Adjacently::Text("t".into()),
            Adjacently::Pair(9, vec![1, 65535]),
        ],
    );
    serde_round_trip(
        s,
        "echo_untagged",
        vec![
            Untagged::Number(-5),
            Untagged::Text("five".into()),
            Untagged::Point { x: 0.5, y: -2.0 },
        ],
    );
    serde_round_trip(
        s,
        "echo_json",
        serde_json::json!({
            "big": u64::MAX, "neg": i64::MIN, "float": 0.25, "null": null,
            "list": [1, "two", [3.5], {"four": true}], "empty": {}
        }),
    );
    serde_round_trip(
        s,
        "echo_sparse",
        vec![
            Sparse {
                name: "a".into(),
                nickname: None,
                tags: vec![],
                maybe: None,
            },
            Sparse {
                name: "b".into(),
                nickname: Some("bee".into()),
                tags: vec!["x".into()],
                maybe: Some(-1),
            },
        ],
    );
    type Options = (Option<u8>, Option<String>, Option<Inner>);
    let options: [Options; 2] = [
        (Some(0), None, Some(inner(1, ""))),
        (None, Some("s".into()), None),
    ];
    for o in options {
        serde_round_trip(s, "echo_options", o);
    }
    serde_round_trip(
        s,
        "echo_keyed",
        Keyed {
            by_pair: [((1, -1), "a".into()), ((u32::MAX, i64::MIN), "b".into())].into(),
            by_number: [(u64::MAX, vec![1, 2]), (0, vec![])].into(),
            by_flag: [(true, inner(1, "t")), (false, inner(0, "f"))].into(),
        },
    );
    serde_round_trip(
        s,
        "echo_wide",
        Wide {
            u: u128::MAX,
            i: i128::MIN,
            big: u64::MAX,
        },
    );
    serde_round_trip(
        s,
        "echo_nested",
        vec![
            vec![inner(1, "a"), inner(2, "b")],
            vec![],
            vec![inner(3, "c")],
        ],
    );
    // Borrowed fields: the producer borrows from its argument, the consumer from the encoded
    // value.
    let g = graph! {
        "named" => (make_named, "alpha-beta", 2),
        "described" => (describe_named, key("named")),
    };
    assert_eq!(
        s.get(&g, "described").unwrap().to::<String>().unwrap(),
        "alpha-beta/alpha+beta/2"
    );
}

/// 128-bit fields over their whole range, as a property.
fn serde_wide_integers_round_trip<S: Scheduler>(s: &S, cases: u32) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(any::<u128>(), any::<i128>(), any::<u64>()),
            |(u, i, big)| {
                let w = Wide { u, i, big };
                let g = graph! { "w" => (echo_wide, Serde(w.clone()).into_value()) };
                let back = s
                    .get(&g, "w")
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back.to::<Serde<Wide>>().unwrap().0, w);
                Ok(())
            },
        )
        .unwrap();
}

// ---- Serde<T> wherever a plain type works ----

#[forkgraph::task]
fn make_inner(a: u32) -> Serde<Inner> {
    Serde(inner(a, &format!("#{a}")))
}

#[forkgraph::task]
fn make_inners(n: u32) -> Vec<Serde<Inner>> {
    (0..n).map(|a| Serde(inner(a, "x"))).collect()
}

#[forkgraph::task]
fn sum_inners(items: Vec<Serde<Inner>>, extra: Option<Serde<Inner>>) -> u32 {
    items.iter().map(|i| i.0.a).sum::<u32>() + extra.map_or(1000, |e| e.0.a * 100)
}

#[forkgraph::task]
fn label_inners(items: BTreeMap<String, Serde<Inner>>) -> String {
    items
        .iter()
        .map(|(k, v)| format!("{k}={}", v.0.b))
        .collect::<Vec<_>>()
        .join(",")
}

fn serde_values_work_inside_vec_option_and_maps<S: Scheduler>(s: &S) {
    let g = graph! {
        "a" => (make_inner, 1),
        "b" => (make_inner, 2),
        "c" => (make_inner, 3),
        "many" => (make_inners, 4),
        "listed" => (sum_inners, [key("a"), key("b")], key("c")),
        "none" => (sum_inners, [key("a")], Value::Null),
        "made" => (sum_inners, key("many"), (make_inner, 5)),
        "mapped" => (label_inners, {"x": key("a"), "y": key("c")}),
    };
    let out = s.get(&g, ["listed", "none", "made", "mapped"]).unwrap();
    let l = out.as_list().unwrap();
    assert_eq!(l[0].to::<u32>(), Ok(1 + 2 + 300));
    assert_eq!(l[1].to::<u32>(), Ok(1 + 1000));
    assert_eq!(l[2].to::<u32>(), Ok(6 + 500));
    assert_eq!(l[3].to::<String>().unwrap(), "x=#1,y=#3");
    // A list of serde results reaches the caller decodable as a whole.
    let many = s.get(&g, "many").unwrap();
    assert_eq!(many.to::<Vec<Serde<Inner>>>().unwrap()[3].0, inner(3, "x"));
}

// ---- Encoding and decoding failures ----

/// A value whose `Serialize` fails.
#[derive(Debug)]
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "Refuses refuses to be serialized",
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WideFlat {
    #[serde(flatten)]
    wide: Wide,
}

/// A percentage: decoding checks the range, so a value made directly can fail to decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "u32")]
struct Percent(u32);

impl TryFrom<u32> for Percent {
    type Error = String;
    fn try_from(v: u32) -> Result<Percent, String> {
        if v <= 100 {
            Ok(Percent(v))
        } else {
            Err(format!("{v} is not a percentage"))
        }
    }
}

#[forkgraph::task]
fn make_refuses(_x: i64) -> Option<Serde<Refuses>> {
    Some(Serde(Refuses))
}

#[forkgraph::task]
fn make_wide_flat(_x: i64) -> Serde<WideFlat> {
    Serde(WideFlat {
        wide: Wide {
            u: 1,
            i: -1,
            big: 1,
        },
    })
}

#[forkgraph::task]
fn echo_wide_flat(v: Serde<WideFlat>) -> Serde<WideFlat> {
    v
}

#[forkgraph::task]
fn make_percent(v: u32) -> Serde<Percent> {
    Serde(Percent(v))
}

#[forkgraph::task]
fn use_percent(label: &str, p: Serde<Percent>) -> String {
    format!("{label}: {}%", p.0 .0)
}

fn encoding_failures_are_errors_of_the_producing_task<S: Scheduler>(s: &S) {
    let g = graph! {
        "bad" => (make_refuses, 1),
        "after" => (inc, 1),
    };
    let e = task_error(s.get(&g, ["after", "bad"]));
    assert_eq!(
        (e.key.clone(), e.function.as_str()),
        ("bad".into(), "make_refuses")
    );
    let TaskErrorKind::Call(CallError::Unencodable(enc)) = &e.kind else {
        panic!("{e}")
    };
    assert_eq!(enc.type_name, std::any::type_name::<Refuses>());
    assert_eq!(enc.message, "Refuses refuses to be serialized");
    assert!(e.to_string().contains("cannot encode its result"), "{e}");
}

fn decoding_failures_name_the_position_and_the_decoders_message<S: Scheduler>(s: &S) {
    let g = graph! {
        "ok" => (use_percent, "fine", (make_percent, 50)),
        "bad" => (use_percent, "over", (make_percent, 150)),
        "garbage" => (use_percent, "bytes", Value::Encoded(
            std::any::type_name::<Percent>().into(),
            forkgraph::Buffer::copy_from_bytes(&[0xc1]),
        )),
    };
    assert_eq!(
        s.get(&g, "ok").unwrap().to::<String>().unwrap(),
        "fine: 50%"
    );
    let e = task_error(s.get(&g, "bad"));
    assert_eq!(e.function, "use_percent");
    let TaskErrorKind::Call(CallError::Mismatch {
        position,
        param,
        expected,
        got,
    }) = &e.kind
    else {
        panic!("{e}")
    };
    assert_eq!((*position, param.as_str()), (1, "Serde<Percent>"));
    assert_eq!(expected, std::any::type_name::<Percent>());
    assert!(got.ends_with(": 150 is not a percentage"), "{got}");
    let e = task_error(s.get(&g, "garbage"));
    let (position, _, got) = mismatch(&e);
    assert_eq!(position, 1);
    assert!(got.contains("does not decode as"), "{got}");
    // serde cannot buffer a 128-bit integer for a flattened struct: the consumer says so.
    let g = graph! { "wide" => (echo_wide_flat, (make_wide_flat, 1)) };
    let e = task_error(s.get(&g, "wide"));
    let (position, _, got) = mismatch(&e);
    assert_eq!(position, 0);
    assert!(got.ends_with("u128 is not supported"), "{got}");
}

// ---- Returned errors ----

#[forkgraph::task]
fn read_config(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn read_settings(path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

#[forkgraph::task]
fn load_job(path: &str) -> anyhow::Result<i64> {
    let text = read_settings(path).context("loading the job settings")?;
    Ok(text.trim().parse()?)
}

#[derive(Debug, thiserror::Error)]
enum StoreError {
    #[error("shard {shard} is full")]
    Full { shard: u32 },
    #[error("cannot write shard {shard}")]
    Write {
        shard: u32,
        #[source]
        source: std::io::Error,
    },
}

#[forkgraph::task]
fn store_shard(shard: u32) -> Result<u64, StoreError> {
    if shard == 0 {
        return Err(StoreError::Full { shard });
    }
    Err(StoreError::Write {
        shard,
        source: std::io::Error::from_raw_os_error(libc::ENOSPC),
    })
}

#[forkgraph::task]
fn parse_boxed(s: &str) -> Result<i64, Box<dyn std::error::Error>> {
    Ok(s.parse::<i64>()?)
}

/// Errors that borrow from the arguments: reported by message and type, the value not kept.
#[forkgraph::task]
fn first_word(s: &str) -> Result<i64, &str> {
    Err(s.split(' ').next().unwrap_or(""))
}

#[derive(Debug)]
struct Borrowing<'a>(&'a str);

impl std::fmt::Display for Borrowing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot use {:?}", self.0)
    }
}

impl std::error::Error for Borrowing<'_> {}

#[forkgraph::task]
fn borrowing_error(s: &str) -> Result<i64, Borrowing<'_>> {
    Err(Borrowing(s))
}

const MISSING: &str = "/nonexistent/forkgraph-values-test/settings.toml";

fn returned(e: &TaskError) -> &forkgraph::ReturnedError {
    e.kind
        .returned()
        .unwrap_or_else(|| panic!("expected a returned error, got {e}"))
}

fn returned_errors_keep_type_chain_and_value<S: Scheduler>(s: &S, local: bool) {
    let enoent = std::io::Error::from_raw_os_error(libc::ENOENT).to_string();
    let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC).to_string();
    let g = graph! {
        "cfg" => (read_config, MISSING),
        "job" => (load_job, MISSING),
        "full" => (store_shard, 0),
        "write" => (store_shard, 3),
        "boxed" => (parse_boxed, "x1"),
        "word" => (first_word, "hello world"),
        "borrowing" => (borrowing_error, "it"),
    };

    // io::Error: the OS error survives, with its type.
    let whole = s.get(&g, "cfg").unwrap_err();
    assert!(whole.is_task_error() && !whole.is_crash() && !whole.is_timeout());
    assert_eq!(whole.key(), Some(&Key::from("cfg")));
    let e = whole.task().unwrap();
    let r = returned(e);
    let io_type = std::any::type_name::<std::io::Error>();
    assert_eq!(r.type_name(), io_type);
    assert_eq!(r.chain(), std::slice::from_ref(&enoent));
    assert_eq!(
        e.to_string(),
        format!("task cfg (read_config) failed: {io_type}: {enoent}")
    );
    let io = whole.downcast_ref::<std::io::Error>();
    assert_eq!(
        io.map(std::io::Error::kind),
        local.then_some(std::io::ErrorKind::NotFound)
    );
    assert_eq!(std::error::Error::source(&whole).is_some(), local);

    // anyhow: every context, down to the OS error.
    let e = task_error(s.get(&g, "job"));
    let r = returned(&e);
    let anyhow_type = std::any::type_name::<anyhow::Error>();
    assert_eq!(r.type_name(), anyhow_type);
    assert_eq!(
        r.chain(),
        [
            "loading the job settings".to_string(),
            format!("reading {MISSING}"),
            enoent.clone()
        ]
    );
    assert_eq!(
        e.to_string(),
        format!(
            "task job (load_job) failed: {anyhow_type}: loading the job settings: reading \
             {MISSING}: {enoent}"
        )
    );
    assert_eq!(r.value_ref::<anyhow::Error>().is_some(), local);
    assert_eq!(
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error()),
        local.then_some(libc::ENOENT)
    );

    // A thiserror enum: its variant is there to match on, and its source under it.
    let e = task_error(s.get(&g, "write"));
    let r = returned(&e);
    assert_eq!(r.type_name(), std::any::type_name::<StoreError>());
    assert_eq!(r.chain(), ["cannot write shard 3".to_string(), enospc]);
    match e.downcast_ref::<StoreError>() {
        Some(StoreError::Write { shard, source }) => {
            assert!(local);
            assert_eq!((*shard, source.raw_os_error()), (3, Some(libc::ENOSPC)));
        }
        Some(other) => panic!("{other:?}"),
        None => assert!(!local),
    }
    let e = task_error(s.get(&g, "full"));
    assert_eq!(returned(&e).chain(), ["shard 0 is full"]);
    assert_eq!(
        matches!(
            e.downcast_ref::<StoreError>(),
            Some(StoreError::Full { shard: 0 })
        ),
        local
    );

    // Box<dyn Error>: not Send, so its value stays behind, but its type and chain travel.
    let e = task_error(s.get(&g, "boxed"));
    let r = returned(&e);
    assert_eq!(
        r.type_name(),
        std::any::type_name::<Box<dyn std::error::Error>>()
    );
    assert_eq!(r.chain(), ["invalid digit found in string"]);

    // Errors that borrow from the arguments.
    let e = task_error(s.get(&g, "word"));
    assert_eq!(e.to_string(), "task word (first_word) failed: hello");
    let e = task_error(s.get(&g, "borrowing"));
    assert_eq!(returned(&e).chain(), ["cannot use \"it\""]);
    assert!(returned(&e).type_name().contains("Borrowing"));
    assert!(e.downcast_ref::<Borrowing<'static>>().is_none());
}

// ---- The suite ----

macro_rules! values_suite {
    ($modname:ident, $make:expr, local = $local:expr, cases = $cases:expr) => {
        mod $modname {
            use super::*;

            values_suite!(@case $make; every_integer_type_round_trips_at_its_boundaries);
            values_suite!(@case $make; out_of_range_integers_are_refused_with_both_numbers);
            values_suite!(@case $make; serde_data_model_round_trips);
            values_suite!(@case $make; serde_values_work_inside_vec_option_and_maps);
            values_suite!(@case $make; encoding_failures_are_errors_of_the_producing_task);
            values_suite!(@case $make; decoding_failures_name_the_position_and_the_decoders_message);

            #[test]
            fn integers_round_trip_over_their_whole_range() {
                support::watchdog("integers", || {
                    super::integers_round_trip_over_their_whole_range(&$make, $cases);
                });
            }

            #[test]
            fn serde_wide_integers_round_trip() {
                support::watchdog("serde-wide", || {
                    super::serde_wide_integers_round_trip(&$make, $cases);
                });
            }

            #[test]
            fn returned_errors_keep_type_chain_and_value() {
                support::watchdog("returned-errors", || {
                    super::returned_errors_keep_type_chain_and_value(&$make, $local);
                });
            }
        }
    };
    (@case $make:expr; $case:ident) => {
        #[test]
        fn $case() {
            support::watchdog(stringify!($case), || super::$case(&$make));
        }
    };
}

values_suite!(sync, forkgraph::SyncScheduler, local = true, cases = 256);
values_suite!(
    threads,
    forkgraph::ThreadPool::builder().threads(2).build().unwrap(),
    local = true,
    cases = 256
);
values_suite!(
    procs,
    forkgraph::ProcessPool::builder()
        .workers(2)
        .build()
        .unwrap(),
    local = false,
    cases = 32
);

/// `map` items on the process pool: every integer type at its boundaries, in one call each.
#[test]
fn process_pool_map_items_are_exact() {
    support::watchdog("map", || {
        let pool = forkgraph::ProcessPool::builder()
            .workers(2)
            .build()
            .unwrap();
        macro_rules! each {
            ($($t:ty),*) => {$(
                let xs = boundaries::<$t>();
                let out = pool.map(<$t as Int>::ECHO, xs.clone()).unwrap();
                let back: Vec<$t> = out.iter().map(|v| v.to::<$t>().unwrap()).collect();
                assert_eq!(back, xs, "{}", stringify!($t));
            )*};
        }
        each!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
    });
}

/// The error helpers on worker deaths and timeouts.
#[forkgraph::task]
fn abort_now(_x: i64) -> i64 {
    std::process::abort()
}

#[forkgraph::task]
fn park_forever(_x: i64) -> i64 {
    loop {
        std::thread::park();
    }
}

#[test]
fn crash_and_timeout_helpers_classify_process_failures() {
    support::watchdog("helpers", || {
        let pool = forkgraph::ProcessPool::builder()
            .workers(1)
            .build()
            .unwrap();
        let mut g = graph! {
            "abort" => (abort_now, 1),
            "hang" => (park_forever, 1),
        };
        let e = pool.get(&g, "abort").unwrap_err();
        assert!(e.is_crash() && e.is_task_error() && !e.is_timeout(), "{e}");
        assert_eq!(e.key(), Some(&Key::from("abort")));
        assert!(e.downcast_ref::<std::io::Error>().is_none());
        g.set_options(
            "hang",
            forkgraph::TaskOptions::new().timeout(std::time::Duration::from_millis(50)),
        );
        let e = pool.get(&g, "hang").unwrap_err();
        assert!(e.is_timeout() && !e.is_crash(), "{e}");
        assert_eq!(e.key(), Some(&Key::from("hang")));
    });
}

#[derive(Debug)]
struct Loading(std::io::Error);

impl std::fmt::Display for Loading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("loading the table")
    }
}

impl std::error::Error for Loading {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// `'static` in the error type borrows nothing: the chain and the value are kept.
#[forkgraph::task]
fn static_boxed(_x: i64) -> Result<i64, Box<dyn std::error::Error + Send + Sync + 'static>> {
    Err(Box::new(Loading(std::io::Error::from_raw_os_error(
        libc::ENOENT,
    ))))
}

#[test]
fn a_static_bound_in_the_error_type_keeps_chain_and_value() {
    let g = graph! { "load" => (static_boxed, 1) };
    let e = task_error(forkgraph::SyncScheduler.get(&g, "load"));
    assert_eq!(returned(&e).chain().len(), 2, "{e}");
    assert!(e.downcast_ref::<std::io::Error>().is_some(), "{e}");
}
