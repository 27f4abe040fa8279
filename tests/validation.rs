//! Validation before anything runs: every problem of a graph or request is a distinct
//! [`GraphError`] carrying the offending keys, found before the first task starts, with a
//! message a person can act on.

use forkgraph::{
    graph, key, Arg, Error, GetOptions, Graph, GraphError, Key, Keys, Scheduler, SyncScheduler,
    ThreadPool,
};

#[allow(dead_code)]
#[path = "conformance/support.rs"]
mod support;

use support::{add, inc, total, watchdog, Recorder};

#[forkgraph::task]
fn nothing() -> i64 {
    0
}

/// Must never run: validation happens before any task.
#[forkgraph::task]
fn loud(msg: &str) -> i64 {
    panic!("validation let a task run: {msg}")
}

mod first {
    #[forkgraph::task(name = "twice")]
    fn twice(x: i64) -> i64 {
        x
    }
}

mod second {
    #[forkgraph::task(name = "twice")]
    fn twice(x: i64) -> i64 {
        -x
    }
}

/// Runs `req` of `g` on both schedulers with a recorder, checks that no task started (and that
/// `start`/`finish` pair up), that both give the same error, and returns it.
fn rejected(g: &Graph, req: impl Into<Keys>) -> GraphError {
    let req = req.into();
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    let mut errors = Vec::new();
    for s in [&SyncScheduler as &dyn GetWith, &pool] {
        let rec = Recorder::new();
        let opts = GetOptions::new().callback(rec.clone());
        match s.run(g, &req, &opts) {
            Err(Error::Graph(e)) => errors.push(e),
            other => panic!("expected a graph error for {req:?}, got {other:?}"),
        }
        assert_eq!(rec.started(), Vec::<Key>::new(), "a task started");
        assert_eq!(rec.starts().len(), rec.finishes().len());
    }
    assert_eq!(errors[0], errors[1], "sync and threads disagree");
    errors.remove(0)
}

/// `Scheduler::get` needs `Sized`; this lets one loop try both schedulers.
trait GetWith {
    fn run(&self, g: &Graph, k: &Keys, o: &GetOptions) -> Result<forkgraph::Output, Error>;
}

impl<S: Scheduler> GetWith for S {
    fn run(&self, g: &Graph, k: &Keys, o: &GetOptions) -> Result<forkgraph::Output, Error> {
        self.get_with(g, k, o)
    }
}

fn k(s: &str) -> Key {
    Key::from(s)
}

#[test]
fn a_requested_key_not_in_the_graph_is_named() {
    watchdog("missing-key", || {
        let g = graph! { "x" => 1, "y" => (loud, "y") };
        let e = rejected(&g, "badkey");
        assert_eq!(
            e,
            GraphError::MissingKey {
                keys: vec![k("badkey")]
            }
        );
        assert_eq!(e.to_string(), "requested key not in the graph: badkey");

        // Every missing key once, in request order, however nested; present keys are not run.
        let req = Keys::List(vec![
            "y".into(),
            Keys::List(vec!["nope".into(), ("t", 1).into()]),
            "nope".into(),
        ]);
        let e = rejected(&g, req);
        assert_eq!(
            e,
            GraphError::MissingKey {
                keys: vec![k("nope"), Key::from(("t", 1))]
            }
        );
        assert_eq!(
            e.to_string(),
            "requested keys not in the graph: nope, ('t', 1)"
        );
    });
}

#[test]
fn a_reference_to_a_key_not_in_the_graph_names_both_keys() {
    watchdog("missing-dependency", || {
        let g = graph! {
            "first" => (loud, "first"),
            "y" => (add, key("first"), key("x")),
            "in-list" => (total, [key("first"), key(("x", 3))]),
            "in-nested" => (inc, (inc, key("ghost"))),
            "alias" => key("gone"),
        };
        let e = rejected(&g, "y");
        assert_eq!(
            e,
            GraphError::MissingDependency {
                key: k("y"),
                dependency: k("x")
            }
        );
        assert_eq!(
            e.to_string(),
            "task y depends on x, which is not in the graph"
        );
        let e = rejected(&g, "in-list");
        assert_eq!(
            e,
            GraphError::MissingDependency {
                key: k("in-list"),
                dependency: Key::from(("x", 3))
            }
        );
        assert_eq!(
            e.to_string(),
            "task in-list depends on ('x', 3), which is not in the graph"
        );
        assert_eq!(
            rejected(&g, "in-nested"),
            GraphError::MissingDependency {
                key: k("in-nested"),
                dependency: k("ghost")
            }
        );
        assert_eq!(
            rejected(&g, "alias"),
            GraphError::MissingDependency {
                key: k("alias"),
                dependency: k("gone")
            }
        );
    });
}

/// Checks that `path` is a closed walk along dependencies of `g` (each key depends on the
/// next) through exactly the keys `on`.
fn assert_cycle(g: &Graph, path: &[Key], on: &[Key]) {
    assert!(path.len() >= 2, "{path:?}");
    assert_eq!(path.first(), path.last(), "not closed: {path:?}");
    let mut inner: Vec<&Key> = path[1..].iter().collect();
    inner.sort();
    let mut want: Vec<&Key> = on.iter().collect();
    want.sort();
    assert_eq!(inner, want, "{path:?}");
    for w in path.windows(2) {
        let node = g.get(&w[0]).expect("a key of the graph");
        let text = format!("{node:?}");
        assert!(
            text.contains(&format!("{:?}", w[1])),
            "{} does not depend on {}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn a_self_loop_is_a_cycle() {
    watchdog("self-loop", || {
        let g = graph! { "a" => (inc, key("a")), "b" => (add, key("a"), (loud, "b")) };
        let e = rejected(&g, "b");
        assert_eq!(
            e,
            GraphError::Cycle {
                path: vec![k("a"), k("a")]
            }
        );
        assert_eq!(e.to_string(), "the graph has a cycle: a -> a");
        // An alias of itself too.
        let g = graph! { "me" => key("me") };
        assert_eq!(
            rejected(&g, "me"),
            GraphError::Cycle {
                path: vec![k("me"), k("me")]
            }
        );
    });
}

#[test]
fn a_longer_cycle_is_shown_as_a_path() {
    watchdog("cycle", || {
        let g = graph! {
            "top" => (inc, key("a")),
            "a" => (inc, key("b")),
            "b" => (total, [key("c"), key("ok")]),
            "c" => (add, key("ok"), (inc, key("a"))),
            "ok" => (loud, "ok"),
        };
        let GraphError::Cycle { path } = rejected(&g, "top") else {
            panic!()
        };
        assert_cycle(&g, &path, &[k("a"), k("b"), k("c")]);
        // The tail leading into the cycle ("top") is not part of it; any key may come first.
        let text = GraphError::Cycle { path }.to_string();
        let rotations = ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"];
        assert!(
            rotations
                .iter()
                .any(|r| text == format!("the graph has a cycle: {r}")),
            "{text}"
        );

        // Tuple keys and an alias on the cycle.
        let g = graph! {
            ("x", 1) => (inc, key(("x", 2))),
            ("x", 2) => key(("x", 3)),
            ("x", 3) => (total, [key(("x", 1))]),
        };
        let GraphError::Cycle { path } = rejected(&g, ("x", 2)) else {
            panic!()
        };
        let on = [
            Key::from(("x", 1)),
            Key::from(("x", 2)),
            Key::from(("x", 3)),
        ];
        assert_cycle(&g, &path, &on);
        let text = GraphError::Cycle { path: path.clone() }.to_string();
        let shown: Vec<String> = path.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            format!("the graph has a cycle: {}", shown.join(" -> "))
        );
        assert!(text.contains("('x', 1) -> ('x', 2)") || text.contains("('x', 2) -> ('x', 3)"));

        // A cycle the request does not reach does not matter.
        let g = graph! { "a" => (inc, key("b")), "b" => (inc, key("a")), "fine" => (inc, 1) };
        assert_eq!(
            SyncScheduler.get(&g, "fine").unwrap().to::<i64>().unwrap(),
            2
        );
    });
}

#[test]
fn an_unknown_function_is_named_with_its_task() {
    watchdog("unknown-function", || {
        let g = graph! {
            "first" => (loud, "first"),
            // Names only: `graph!` checks handles at compile time, so these go through the
            // string form that graphs built from data use.
            "x" => ("nope", key("first")),
            "nested" => (inc, ("not_registered", 1)),
        };
        let e = rejected(&g, "x");
        let GraphError::UnknownFunction {
            key,
            function,
            message,
        } = &e
        else {
            panic!("expected UnknownFunction, got {e:?}")
        };
        assert_eq!((key, function.as_str()), (&k("x"), "nope"));
        assert!(
            message.contains("`nope`") && message.contains("#[forkgraph::task]"),
            "{message}"
        );
        assert_eq!(
            e.to_string(),
            "task x: no task function `nope` is registered in this executable: mark a function \
             #[forkgraph::task]; if it is marked in a library crate, that crate is not linked \
             into this binary (Rust leaves out a library the binary never names): add \
             `forkgraph::link!(that_crate);` to the binary"
        );
        let e = rejected(&g, "nested");
        assert!(
            matches!(&e, GraphError::UnknownFunction { key, function, .. }
                if *key == k("nested") && function == "not_registered"),
            "{e:?}"
        );
    });
}

mod shapes {
    #[forkgraph::task]
    pub(crate) fn square_it(x: i64) -> i64 {
        x * x
    }
}

#[test]
fn an_unknown_function_name_close_to_a_registered_one_is_suggested() {
    watchdog("unknown-function-suggestion", || {
        let g = graph! {
            "typo" => ("nothin", 1),
            "case" => ("Nothing", 1),
            "path-typo" => ("shapes::square_ti", 2),
            "wrong-module" => ("elsewhere::square_it", 2),
            "far" => ("completely_different", 1),
        };
        let msg = |key: &str| rejected(&g, key).to_string();
        assert!(
            msg("typo").starts_with(
                "task typo: no task function `nothin` is registered in this executable; did you \
                 mean `nothing`? Otherwise: mark a function #[forkgraph::task]"
            ),
            "{}",
            msg("typo")
        );
        assert!(
            msg("case").contains("did you mean `nothing`?"),
            "{}",
            msg("case")
        );
        assert!(
            msg("path-typo").contains("did you mean `shapes::square_it`?"),
            "{}",
            msg("path-typo")
        );
        assert!(
            msg("wrong-module").contains("did you mean `square_it`?"),
            "{}",
            msg("wrong-module")
        );
        assert!(!msg("far").contains("did you mean"), "{}", msg("far"));
    });
}

#[test]
fn a_function_registered_twice_under_one_name_is_refused() {
    watchdog("registered-twice", || {
        let g = graph! { "x" => ("twice", 1) };
        let e = rejected(&g, "x");
        let GraphError::UnknownFunction {
            function, message, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(function, "twice");
        assert!(message.contains("more than once"), "{message}");
        assert!(message.contains("validation::first") && message.contains("validation::second"));
        assert!(
            message.contains("name = "),
            "the message should say how to fix it: {message}"
        );
    });
}

#[test]
fn a_wrong_number_of_arguments_names_function_expected_and_got() {
    watchdog("arity", || {
        let g = graph! {
            "first" => (loud, "first"),
            // Wrong arities only compile in the string form (`graph!` checks a handle's).
            "z" => ("add", key("first")),
            "none" => ("nothing", 1),
            "nested" => (inc, ("add", 1, 2, 3)),
        };
        let e = rejected(&g, "z");
        assert_eq!(
            e,
            GraphError::Arity {
                key: k("z"),
                function: "add".into(),
                expected: 2,
                got: 1,
                params: "i64, i64".into(),
            }
        );
        let text = e.to_string();
        assert_eq!(
            text,
            "task z: function `add` takes 2 argument(s) (i64, i64) but the task gives 1"
        );
        let e = rejected(&g, "none");
        assert!(
            matches!(&e, GraphError::Arity { function, expected: 0, got: 1, .. } if function == "nothing"),
            "{e:?}"
        );
        let e = rejected(&g, "nested");
        assert!(
            matches!(&e, GraphError::Arity { key, function, expected: 2, got: 3, .. }
                if *key == k("nested") && function == "add"),
            "{e:?}"
        );
    });
}

/// Validation covers the whole culled graph before the first task: a problem in the last task
/// of a long chain still stops the first one from running.
#[test]
fn validation_covers_the_whole_culled_graph_before_the_first_task() {
    watchdog("whole-graph", || {
        let mut g = graph! { "x0" => (loud, "x0") };
        for i in 1..=2000 {
            g.task(
                format!("x{i}"),
                "inc",
                vec![Arg::Key(Key::from(format!("x{}", i - 1)))],
            );
        }
        let mut broken = g.clone();
        broken.task("x2000", "nope", vec![Arg::Key(k("x1999"))]);
        assert!(matches!(
            rejected(&broken, "x2000"),
            GraphError::UnknownFunction { .. }
        ));
        let mut broken = g.clone();
        broken.task("x2000", "add", vec![Arg::Key(k("x1999"))]);
        assert!(matches!(
            rejected(&broken, "x2000"),
            GraphError::Arity { .. }
        ));
        let mut broken = g.clone();
        broken.task(
            "x2000",
            "add",
            vec![Arg::Key(k("x1999")), Arg::Key(k("x2001"))],
        );
        assert!(matches!(
            rejected(&broken, "x2000"),
            GraphError::MissingDependency { .. }
        ));
        let mut broken = g;
        broken.task("x1", "inc", vec![Arg::Key(k("x2000"))]);
        assert!(matches!(
            rejected(&broken, "x2000"),
            GraphError::Cycle { .. }
        ));
    });
}
