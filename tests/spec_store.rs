//! A plan's compiled tasks live in one `SpecStore` (their top-level arguments in one
//! allocation); a task of a store must behave, compare, print and travel exactly as the
//! `TaskSpec` it was built from.

use std::sync::Arc;

use forkgraph::Value;
use forkgraph_worker::{Registry, SpecArg, SpecRef, SpecStore, TaskSpec};
use proptest::prelude::*;

#[forkgraph::task]
fn spec_store_add(a: i64, b: i64) -> i64 {
    a + b
}

#[forkgraph::task]
fn spec_store_sum(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

fn id(name: &str) -> u32 {
    Registry::global().lookup(name).expect("registered")
}

fn leaf() -> impl Strategy<Value = SpecArg> {
    prop_oneof![
        any::<i64>().prop_map(|i| SpecArg::Lit(Value::Int(i))),
        "[a-z]{0,6}".prop_map(|s| SpecArg::Lit(Value::Str(s))),
        (0u32..50).prop_map(SpecArg::Input),
        (0u32..50, 0u32..8).prop_map(|(first, count)| SpecArg::Inputs { first, count }),
    ]
}

fn arg() -> impl Strategy<Value = SpecArg> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(SpecArg::List),
            proptest::collection::vec(("[a-z]{1,3}", inner.clone()), 0..3).prop_map(SpecArg::Map),
            (0u32..9, proptest::collection::vec(inner, 0..3))
                .prop_map(|(func, args)| SpecArg::Task(Box::new(TaskSpec { func, args }))),
        ]
    })
}

fn spec() -> impl Strategy<Value = TaskSpec> {
    (any::<u32>(), proptest::collection::vec(arg(), 0..6))
        .prop_map(|(func, args)| TaskSpec { func, args })
}

proptest! {
    #[test]
    fn a_store_gives_back_every_task_as_built(specs in proptest::collection::vec(spec(), 0..40)) {
        let mut store = SpecStore::new();
        for (i, s) in specs.iter().enumerate() {
            prop_assert_eq!(store.push(s.func, s.args.iter().cloned()), i as u32);
        }
        prop_assert_eq!(store.len(), specs.len());
        prop_assert_eq!(store.is_empty(), specs.is_empty());
        let store = Arc::new(store);
        prop_assert!(store.iter().eq(specs.iter().map(TaskSpec::view)));
        prop_assert_eq!(&*store, &specs.iter().cloned().collect::<SpecStore>());
        for (i, s) in specs.iter().enumerate() {
            let i = i as u32;
            prop_assert_eq!(store.get(i), s.view());
            prop_assert_eq!(store.get(i).to_spec(), s.clone());
            let r = SpecRef::in_store(&store, i);
            let own = SpecRef::new(s.clone());
            prop_assert_eq!((r.func(), r.args()), (s.func, s.args.as_slice()));
            prop_assert_eq!(&r, &own);
            prop_assert_eq!(r.to_spec(), s.clone());
            prop_assert_eq!(format!("{r:?}"), format!("{s:?}"));
            prop_assert_eq!(format!("{own:?}"), format!("{s:?}"));
            // The wire: a task of a store is sent exactly as its spec, and decodes as it.
            let bytes = postcard::to_stdvec(s).expect("encodable");
            prop_assert_eq!(&postcard::to_stdvec(&r).expect("encodable"), &bytes);
            prop_assert_eq!(&postcard::to_stdvec(&store.get(i)).expect("encodable"), &bytes);
            let back: SpecRef = postcard::from_bytes(&bytes).expect("decodable");
            prop_assert_eq!(&back, &r);
        }
    }
}

#[test]
fn a_failed_push_leaves_the_store_as_it_was() {
    let mut store = SpecStore::with_capacity(2, 2);
    store.push(1, [SpecArg::Input(0)]);
    let before = store.clone();
    let pushed = store.try_push(
        2,
        [
            Ok(SpecArg::Input(1)),
            Ok(SpecArg::Input(2)),
            Err("bad argument"),
            Ok(SpecArg::Input(3)),
        ],
    );
    assert_eq!(pushed, Err("bad argument"));
    assert_eq!(store, before);
    assert_eq!(store.push(3, []), 1, "the next task takes the next index");
    assert_eq!(store.get(0).args, [SpecArg::Input(0)]);
    assert!(store.get(1).args.is_empty());
}

#[test]
fn arguments_of_a_stored_task_edit_in_place() {
    let mut store = SpecStore::new();
    store.push(1, [SpecArg::Input(0), SpecArg::Input(1)]);
    store.push(2, [SpecArg::Input(0)]);
    store.args_mut(0)[1] = SpecArg::Lit(Value::Int(5));
    assert_eq!(
        store.get(0).args,
        [SpecArg::Input(0), SpecArg::Lit(Value::Int(5))]
    );
    assert_eq!(
        store.get(1).args,
        [SpecArg::Input(0)],
        "its neighbour untouched"
    );
}

#[test]
#[should_panic(expected = "no task 2 in a store of 2 tasks")]
fn a_task_outside_the_store_is_refused() {
    let mut store = SpecStore::new();
    store.push(1, []);
    store.push(1, []);
    let _ = store.get(2);
}

#[test]
fn a_stored_task_runs_as_its_spec() {
    let (add, sum) = (id("spec_store_add"), id("spec_store_sum"));
    let specs = [
        TaskSpec {
            func: add,
            args: vec![SpecArg::Input(0), SpecArg::Lit(Value::Int(2))],
        },
        TaskSpec {
            func: sum,
            args: vec![SpecArg::Inputs { first: 0, count: 3 }],
        },
        TaskSpec {
            func: add,
            args: vec![
                SpecArg::Task(Box::new(TaskSpec {
                    func: sum,
                    args: vec![SpecArg::List(vec![
                        SpecArg::Input(2),
                        SpecArg::Lit(Value::Int(10)),
                    ])],
                })),
                SpecArg::Input(1),
            ],
        },
        // Wrong arity: the same failure either way.
        TaskSpec {
            func: add,
            args: vec![SpecArg::Input(0)],
        },
    ];
    let store: Arc<SpecStore> = Arc::new(specs.iter().cloned().collect());
    let inputs = [Value::Int(1), Value::Int(20), Value::Int(300)];
    let want = [3, 321, 330];
    for (i, s) in specs.iter().enumerate() {
        let by_spec = forkgraph_worker::run(s, &inputs[..]);
        let by_view = forkgraph_worker::run(store.get(i as u32), &inputs[..]);
        let by_ref = forkgraph_worker::run(&SpecRef::in_store(&store, i as u32), &inputs[..]);
        assert_eq!(by_view, by_spec);
        assert_eq!(by_ref, by_spec);
        match want.get(i) {
            Some(v) => assert_eq!(by_spec, Ok(Value::Int(*v))),
            None => assert!(by_spec.is_err(), "{by_spec:?}"),
        }
    }
}

#[test]
#[should_panic(expected = "no task 1 in a store of 1 tasks")]
fn a_reference_outside_the_store_is_refused() {
    let mut store = SpecStore::new();
    store.push(1, []);
    let _ = SpecRef::in_store(&Arc::new(store), 1);
}

/// A task whose arguments' iterator panics midway is not added, and leaves nothing behind: the
/// next task added has its own arguments only (and an error midway, the same).
#[test]
fn a_push_that_panics_midway_leaves_the_store_as_it_was() {
    let f = id("spec_store_add");
    let mut store = SpecStore::new();
    store.push(f, [SpecArg::Input(0)]);
    let before = store.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.push(
            f,
            (0..3).map(|i| {
                assert!(i < 2, "the iterator panics");
                SpecArg::Input(i)
            }),
        )
    }));
    assert!(r.is_err());
    assert_eq!(store, before, "nothing of the failed push is left");
    let next = store.push(f, [SpecArg::Lit(Value::Int(7))]);
    assert_eq!(store.get(next).args, &[SpecArg::Lit(Value::Int(7))][..]);
    assert_eq!(store.len(), 2);
    let e = store.try_push(
        f,
        [Ok(SpecArg::Input(1)), Err("bad argument")]
            .into_iter()
            .chain(std::iter::once(Ok(SpecArg::Input(2)))),
    );
    assert_eq!(e, Err("bad argument"));
    let last = store.push(f, []);
    assert!(store.get(last).args.is_empty());
}
