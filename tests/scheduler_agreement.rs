//! Every in-process scheduler gives a user the same answer on the same graph: the sync
//! scheduler's straight run, the sync scheduler on the engine (a callback), a thread pool, and a
//! thread pool asked from inside one of its own tasks (which runs the plan inline). Random
//! Dask-style graphs (string and tuple keys, literals, aliases of aliases, lists of keys with
//! repeats, nested tasks, a failing task), requests with repeats, nesting, requested literals
//! and aliases; cycles of every shape; `Key` hashing against its equality.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use forkgraph::{
    Arg, Callbacks, GetOptions, Graph, Key, KeyPart, Keys, Output, Scheduler, SyncScheduler, Task,
    ThreadPool, Value,
};
use proptest::prelude::*;

/// A result that shows what the task read: its name and its inputs.
#[forkgraph::task]
fn show(name: String, inputs: Vec<Value>) -> Value {
    Value::Str(format!("{name}{inputs:?}"))
}

/// A `show` task: its name, then one argument (its inputs).
fn show_task(name: &str, inputs: Arg) -> Task {
    Task::new("show", vec![Arg::Value(Value::Str(name.into())), inputs])
}

/// Fails, naming itself.
#[forkgraph::task]
fn fail(name: String, inputs: Vec<Value>) -> Result<Value, String> {
    let _ = inputs;
    Err(format!("{name} refuses"))
}

/// A callback that does nothing: its presence sends the sync scheduler through the engine.
struct Nothing;
impl Callbacks for Nothing {}

fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        ThreadPool::builder()
            .threads(2)
            .build()
            .expect("a thread pool")
    })
}

type Job = (Graph, Keys, GetOptions);
type Answer = Result<Output, String>;

/// The get the task `get_inside` runs on the pool that runs it, and its answer.
static INSIDE: Mutex<Option<Job>> = Mutex::new(None);
static INSIDE_ANSWER: Mutex<Option<(Answer, std::thread::ThreadId)>> = Mutex::new(None);

/// Runs the get left in `INSIDE` on the pool, from inside a task of that pool.
#[forkgraph::task]
fn get_inside() -> i64 {
    let (g, k, o) = INSIDE.lock().unwrap().take().expect("a job");
    let answer = pool().get_with(&g, &k, &o).map_err(|e| e.to_string());
    *INSIDE_ANSWER.lock().unwrap() = Some((answer, std::thread::current().id()));
    0
}

/// The answer of `job` run on the pool from inside one of its tasks (checked to run on a pool
/// thread). The caller holds `serial()`.
fn get_from_inside(job: Job) -> Answer {
    *INSIDE.lock().unwrap() = Some(job);
    let mut outer = Graph::new();
    // Two tasks ready at once: both go to the pool's threads (one alone would run in the
    // calling thread).
    outer.insert("outer", Task::new("get_inside", vec![]));
    outer.insert("other", show_task("o", Arg::List(vec![])));
    pool()
        .get(&outer, vec![Key::from("outer"), Key::from("other")])
        .expect("the outer tasks run");
    let (answer, thread) = INSIDE_ANSWER.lock().unwrap().take().expect("an answer");
    assert_ne!(
        thread,
        std::thread::current().id(),
        "the get ran on a pool thread"
    );
    answer
}

/// What each scheduler answers, named.
fn answers(g: &Graph, keys: &Keys, opts: &GetOptions) -> Vec<(&'static str, Answer)> {
    let _serial = serial();
    let sync = SyncScheduler::new()
        .get_with(g, keys, opts)
        .map_err(|e| e.to_string());
    let engine = SyncScheduler::new()
        .get_with(g, keys, &opts.clone().callback(Arc::new(Nothing)))
        .map_err(|e| e.to_string());
    let threads = pool().get_with(g, keys, opts).map_err(|e| e.to_string());
    let inside = get_from_inside((g.clone(), keys.clone(), opts.clone()));
    vec![
        ("sync", sync),
        ("sync with a callback", engine),
        ("threads", threads),
        ("threads, from inside a task", inside),
    ]
}

/// The statics above serve one get at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn assert_all_agree(all: &[(&str, Answer)]) -> Result<(), TestCaseError> {
    for (name, a) in &all[1..] {
        prop_assert_eq!(a, &all[0].1, "{} against {}", name, all[0].0);
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum NodeSpec {
    Literal(i64),
    Alias(usize),
    /// `(dependencies, nested in an inner task)`.
    Task(Vec<usize>, bool),
}

fn key(tuple: bool, i: usize) -> Key {
    if tuple {
        Key::from(("n", i as i64))
    } else {
        Key::from(format!("n-{i}"))
    }
}

fn graph_strategy() -> impl Strategy<Value = (Vec<NodeSpec>, Option<usize>, Vec<Vec<usize>>)> {
    (1usize..20).prop_flat_map(|n| {
        let nodes = (0..n)
            .map(|i| {
                if i == 0 {
                    any::<i64>().prop_map(NodeSpec::Literal).boxed()
                } else {
                    prop_oneof![
                        1 => any::<i64>().prop_map(NodeSpec::Literal),
                        2 => (0..i).prop_map(NodeSpec::Alias),
                        5 => (prop::collection::vec(0..i, 0..5), any::<bool>())
                            .prop_map(|(d, t)| NodeSpec::Task(d, t)),
                    ]
                    .boxed()
                }
            })
            .collect::<Vec<_>>();
        let failing = prop::option::weighted(0.2, 0..n);
        let request = prop::collection::vec(prop::collection::vec(0..n, 0..3), 1..4);
        (nodes, failing, request)
    })
}

fn build(nodes: &[NodeSpec], failing: Option<usize>, tuple: &dyn Fn(usize) -> bool) -> Graph {
    let k = |i: usize| key(tuple(i), i);
    let mut g = Graph::new();
    for (i, n) in nodes.iter().enumerate() {
        match n {
            NodeSpec::Literal(v) => {
                g.insert(k(i), Value::Int(*v));
            }
            NodeSpec::Alias(d) => {
                g.insert(k(i), forkgraph::key(k(*d)));
            }
            NodeSpec::Task(deps, nested) => {
                let func = if failing == Some(i) { "fail" } else { "show" };
                let list = Arg::List(deps.iter().map(|&d| Arg::Key(k(d))).collect());
                let inputs = if *nested {
                    Arg::List(vec![Arg::Task(show_task(&format!("inner-{i}"), list))])
                } else {
                    list
                };
                g.insert(
                    k(i),
                    Task::new(func, vec![Arg::Value(Value::Str(format!("n-{i}"))), inputs]),
                );
            }
        }
    }
    g
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn every_scheduler_gives_the_same_answer(
        (nodes, failing, request) in graph_strategy(),
        tuples in any::<u32>(),
        fuse in any::<bool>(),
        inline in any::<bool>(),
        keep_going in any::<bool>(),
    ) {
        common::watchdog(120, move || -> Result<(), TestCaseError> {
        let tuple = |i: usize| tuples >> (i % 32) & 1 == 1;
        let g = build(&nodes, failing, &tuple);
        let keys = Keys::List(
            request
                .iter()
                .map(|r| Keys::List(r.iter().map(|&i| Keys::One(key(tuple(i), i))).collect()))
                .collect(),
        );
        let opts = GetOptions::new().fuse(fuse).inline_literals(inline).keep_going(keep_going);
        assert_all_agree(&answers(&g, &keys, &opts))?;
        // One key, not in a list.
        let one = Keys::One(key(tuple(request[0].first().copied().unwrap_or(0)), request[0].first().copied().unwrap_or(0)));
        assert_all_agree(&answers(&g, &one, &opts))
        })?;
    }
}

/// Every way of making a cycle, reached from the requested key: the same error on every
/// scheduler, with and without the optimizations, naming the keys around the cycle.
#[test]
fn cycles_are_the_same_error_everywhere() {
    common::watchdog(120, cycles);
}

fn cycles() {
    let t = |name: &str, args: Vec<Arg>| show_task(name, Arg::List(args));
    let k = |s: &str| Arg::Key(Key::from(s));
    type Shape = (&'static str, Graph, &'static [&'static str]);
    let mut shapes: Vec<Shape> = Vec::new();
    {
        let mut g = Graph::new();
        g.insert("a", t("a", vec![k("a")]));
        shapes.push(("self", g, &["a"]));
    }
    {
        let mut g = Graph::new();
        g.insert("a", forkgraph::key("a"));
        shapes.push(("alias of itself", g, &["a"]));
    }
    {
        let mut g = Graph::new();
        g.insert("a", forkgraph::key("b"));
        g.insert("b", forkgraph::key("a"));
        g.insert("c", t("c", vec![k("a")]));
        shapes.push(("two aliases", g, &["a", "b"]));
    }
    {
        let mut g = Graph::new();
        g.insert("a", t("a", vec![k("b")]));
        g.insert("b", forkgraph::key("a"));
        shapes.push(("through an alias", g, &["a", "b"]));
    }
    {
        let mut g = Graph::new();
        g.insert("a", show_task("a", Arg::Task(t("in", vec![k("b")]))));
        g.insert("b", t("b", vec![k("a")]));
        shapes.push(("through a nested task", g, &["a", "b"]));
    }
    {
        let mut g = Graph::new();
        g.insert("lit", Value::Int(3));
        g.insert("a", t("a", vec![k("lit"), k("b"), k("lit")]));
        g.insert("b", t("b", vec![k("c")]));
        g.insert("c", t("c", vec![k("a"), k("lit")]));
        shapes.push((
            "a chain through a list, with a literal",
            g,
            &["a", "b", "c"],
        ));
    }
    {
        // A linear chain (each has one dependent: fusion candidates) closed into a loop, fed
        // from outside.
        let mut g = Graph::new();
        g.insert("x", t("x", vec![]));
        g.insert("a", t("a", vec![k("x"), k("c")]));
        g.insert("b", t("b", vec![k("a")]));
        g.insert("c", t("c", vec![k("b")]));
        g.insert("top", t("top", vec![k("c")]));
        shapes.push(("a fusable chain", g, &["a", "b", "c"]));
    }
    for (shape, g, ring) in &shapes {
        let request = if g.contains_key(&Key::from("top")) {
            "top"
        } else if g.contains_key(&Key::from("c")) {
            "c"
        } else {
            "a"
        };
        let mut first: Option<String> = None;
        for fuse in [false, true] {
            for inline in [false, true] {
                let opts = GetOptions::new().fuse(fuse).inline_literals(inline);
                for (name, answer) in answers(g, &Keys::One(Key::from(request)), &opts) {
                    let err = answer.expect_err(&format!("{shape}: {name} finds the cycle"));
                    assert!(err.contains("cycle"), "{shape}: {name}: {err}");
                    // The keys around the cycle, the first repeated at the end.
                    let path: Vec<&str> = err
                        .rsplit("cycle: ")
                        .next()
                        .unwrap_or("")
                        .split(" -> ")
                        .collect();
                    assert_eq!(path.first(), path.last(), "{shape}: {name}: {err}");
                    let mut around: Vec<&str> = path[1..].to_vec();
                    around.sort_unstable();
                    assert_eq!(around, *ring, "{shape}: {name}: {err}");
                    match &first {
                        None => first = Some(err),
                        Some(f) => {
                            assert_eq!(&err, f, "{shape}: {name}, fuse {fuse}, inline {inline}")
                        }
                    }
                }
            }
        }
    }
}

fn hash_of<T: Hash>(t: &T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

fn part_strategy() -> impl Strategy<Value = KeyPart> {
    prop_oneof![
        prop_oneof![Just(0i64), Just(-1), Just(i64::MAX), any::<i64>()].prop_map(KeyPart::Int),
        prop_oneof![
            Just(0u64),
            Just(i64::MAX as u64 + 1),
            Just(u64::MAX),
            any::<u64>()
        ]
        .prop_map(KeyPart::UInt),
        string_strategy().prop_map(|s| KeyPart::Str(s.into())),
    ]
}

/// Strings of every length around the 4-, 8- and 16-byte boundaries of the comparison, equal
/// prefixes, differences in one byte only, non-ASCII.
fn string_strategy() -> impl Strategy<Value = String> {
    (
        0usize..34,
        prop::sample::select(vec!['a', 'b', 'é', '\0', '€']),
        0usize..34,
    )
        .prop_map(|(len, c, at)| {
            let mut s: Vec<char> = std::iter::repeat_n('x', len).collect();
            if len > 0 {
                s[at % len] = c;
            }
            s.into_iter().collect()
        })
}

fn key_strategy() -> impl Strategy<Value = Key> {
    prop_oneof![
        string_strategy().prop_map(Key::from),
        prop::collection::vec(part_strategy(), 0..4).prop_map(Key::tuple),
    ]
}

/// A copy that shares no allocation with `k`.
fn rebuilt(k: &Key) -> Key {
    match k {
        Key::Str(s) => Key::from(s.to_string()),
        Key::Tuple(t) => Key::tuple(t.iter().map(|p| match p {
            KeyPart::Str(s) => KeyPart::Str(s.to_string().into()),
            other => other.clone(),
        })),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// `Hash` agrees with `Eq`, which agrees with `Ord`; equal keys built apart are found in a
    /// map.
    #[test]
    fn key_hash_agrees_with_equality(a in key_strategy(), b in key_strategy()) {
        for (x, y) in [(&a, &b), (&a, &rebuilt(&a)), (&b, &rebuilt(&b))] {
            let eq = x == y;
            prop_assert_eq!(eq, x.cmp(y) == std::cmp::Ordering::Equal, "{:?} {:?}", x, y);
            prop_assert_eq!(eq, y == x);
            if eq {
                prop_assert_eq!(hash_of(x), hash_of(y), "{:?} {:?}", x, y);
            }
        }
        let mut map = HashMap::new();
        map.insert(a.clone(), 1);
        map.insert(b.clone(), 2);
        prop_assert_eq!(map.len(), if a == b { 1 } else { 2 });
        prop_assert_eq!(map.get(&rebuilt(&b)), Some(&2));
        if a != b {
            prop_assert_eq!(map.get(&rebuilt(&a)), Some(&1));
        }
    }
}

/// Keys that look alike but are not equal: each is its own entry.
#[test]
fn lookalike_keys_are_distinct() {
    let keys = vec![
        Key::from(""),
        Key::tuple([]),
        Key::from("a"),
        Key::tuple([KeyPart::from("a")]),
        Key::tuple([KeyPart::from("a"), KeyPart::from("")]),
        Key::tuple([KeyPart::from(""), KeyPart::from("a")]),
        Key::tuple([KeyPart::Int(1)]),
        Key::tuple([KeyPart::UInt(1)]),
        Key::tuple([KeyPart::Int(-1)]),
        Key::tuple([KeyPart::UInt(u64::MAX)]),
        Key::from("0123456789abcdef"),
        Key::from("0123456789abcdeF"),
        Key::from("0123456789abcdef0"),
        Key::from("é"),
        Key::from("e\u{301}"),
    ];
    let map: HashMap<Key, usize> = keys
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, k)| (k, i))
        .collect();
    assert_eq!(map.len(), keys.len());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(map.get(&rebuilt(k)), Some(&i), "{k:?}");
    }
}

/// `keep_going` is kept by a get from inside a task of the pool (which runs the plan inline):
/// the failed key's error in its place, the other key's value.
#[test]
fn keep_going_from_inside_a_pool_task() {
    common::watchdog(120, || {
        let mut g = Graph::new();
        g.insert(
            "a",
            Task::new(
                "fail",
                vec![Arg::Value(Value::Str("a".into())), Arg::List(vec![])],
            ),
        );
        g.insert("b", show_task("b", Arg::List(vec![Arg::Key("a".into())])));
        g.insert("c", show_task("c", Arg::List(vec![])));
        let keys = Keys::List(vec![Keys::One("b".into()), Keys::One("c".into())]);
        let all = answers(&g, &keys, &GetOptions::new().keep_going(true));
        let Ok(Output::List(l)) = &all[0].1 else {
            panic!("keep_going returns a list: {:?}", all[0].1)
        };
        assert!(matches!(l[0], Output::Failed(_)), "{l:?}");
        assert_all_agree(&all).unwrap();
    });
}

/// A process pool of two workers.
fn process_pool() -> forkgraph::ProcessPool {
    forkgraph::ProcessPool::builder()
        .workers(2)
        .build()
        .expect("a process pool")
}

/// The request `request` (lists of node numbers) as keys.
fn request_keys(request: &[Vec<usize>], tuple: &dyn Fn(usize) -> bool) -> Keys {
    Keys::List(
        request
            .iter()
            .map(|r| Keys::List(r.iter().map(|&i| Keys::One(key(tuple(i), i))).collect()))
            .collect(),
    )
}

/// Found by `the_process_pool_gives_the_same_answer` on CI: with `keep_going`, a task whose other input had failed was
/// chained behind its last input on the process pool and its job was made without the failed
/// input's value ("dependency computed" panic in the engine). It must fail upstream instead.
#[test]
fn keep_going_does_not_chain_a_task_behind_a_failed_input() {
    use NodeSpec::{Alias, Literal, Task as T};
    common::watchdog(120, || {
        let procs = process_pool();
        let nodes = vec![
            Literal(24685043713258079),
            T(vec![], false),
            Alias(1),
            T(vec![], false),
            T(vec![2, 0, 0], false),
            Literal(3289615950885596988),
            Alias(2),
            Literal(-6608547332116824236),
            T(vec![7, 7, 0, 1], true),
            T(vec![3, 0], true),
            T(vec![4, 3], true),
            T(vec![3], true),
            Alias(10),
            Alias(6),
            T(vec![11], false),
        ];
        let tuples: u32 = 15090164;
        let tuple = |i: usize| tuples >> (i % 32) & 1 == 1;
        let g = build(&nodes, Some(3), &tuple);
        let keys = request_keys(&[vec![13, 3], vec![0, 12]], &tuple);
        for (fuse, inline) in [(true, true), (false, false)] {
            let opts = GetOptions::new()
                .fuse(fuse)
                .inline_literals(inline)
                .keep_going(true);
            for _ in 0..20 {
                let sync = SyncScheduler::new()
                    .get_with(&g, &keys, &opts)
                    .map_err(|e| e.to_string());
                let procs = procs.get_with(&g, &keys, &opts).map_err(|e| e.to_string());
                assert_eq!(procs, sync);
            }
        }
    });
}

/// The process pool gives the answer the sync scheduler gives, on the graphs above.
#[test]
fn the_process_pool_gives_the_same_answer() {
    common::watchdog(300, || {
        let procs = process_pool();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 40,
            ..ProptestConfig::default()
        });
        let strategy = (
            graph_strategy(),
            any::<u32>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        );
        let result = runner.run(
            &strategy,
            |((nodes, failing, request), tuples, fuse, inline, keep_going)| {
                let tuple = |i: usize| tuples >> (i % 32) & 1 == 1;
                let g = build(&nodes, failing, &tuple);
                let keys = request_keys(&request, &tuple);
                let opts = GetOptions::new()
                    .fuse(fuse)
                    .inline_literals(inline)
                    .keep_going(keep_going);
                let sync = SyncScheduler::new()
                    .get_with(&g, &keys, &opts)
                    .map_err(|e| e.to_string());
                let procs = procs.get_with(&g, &keys, &opts).map_err(|e| e.to_string());
                prop_assert_eq!(procs, sync);
                Ok(())
            },
        );
        if let Err(e) = result {
            panic!("{e}");
        }
    });
}

/// A get from inside a pool task keeps its memory options: its statistics see what it held.
#[test]
fn memory_stats_from_inside_a_pool_task() {
    common::watchdog(120, || {
        let mut g = Graph::new();
        g.insert("big", Value::Str("x".repeat(1 << 20)));
        g.insert("a", show_task("a", Arg::List(vec![Arg::Key("big".into())])));
        let stats = forkgraph::MemoryStats::new();
        let opts = GetOptions::new().memory_stats(Arc::clone(&stats));
        let all = answers(&g, &Keys::One("a".into()), &opts);
        assert_all_agree(&all).unwrap();
        // Four gets reported into the same statistics: sync, sync with a callback, threads
        // and the one from inside; each held the 1 MiB literal's result.
        let outside = forkgraph::MemoryStats::new();
        SyncScheduler::new()
            .get_with(
                &g,
                &Keys::One("a".into()),
                &GetOptions::new().memory_stats(Arc::clone(&outside)),
            )
            .unwrap();
        assert!(
            outside.peak_held_bytes() >= 1 << 20,
            "{}",
            outside.peak_held_bytes()
        );
        let inside = forkgraph::MemoryStats::new();
        let _serial = serial();
        get_from_inside((
            g.clone(),
            Keys::One("a".into()),
            GetOptions::new().memory_stats(Arc::clone(&inside)),
        ))
        .unwrap();
        assert_eq!(inside.peak_held_bytes(), outside.peak_held_bytes());
    });
}

/// Bytes whose drop panics (once armed), and a count of those alive.
struct Bomb {
    _alive: Arc<()>,
}
static BOMB_TEMPLATE: OnceLock<Arc<()>> = OnceLock::new();
static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl forkgraph_worker::Storage for Bomb {
    fn bytes(&self) -> &[u8] {
        b"bomb"
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if ARMED.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("a value's drop panics");
        }
    }
}

fn bombs_alive() -> usize {
    Arc::strong_count(BOMB_TEMPLATE.get_or_init(|| Arc::new(()))) - 1
}

/// A result whose drop panics once armed.
#[forkgraph::task]
fn bomb(i: i64) -> Value {
    let _ = i;
    let shared = Arc::clone(BOMB_TEMPLATE.get_or_init(|| Arc::new(())));
    Value::Encoded(
        "bomb".into(),
        forkgraph::Buffer::from_storage(Arc::new(Bomb { _alive: shared })),
    )
}

/// A value whose drop panics midway through a get: the get panics (on both sync paths), no
/// other result is kept alive, and the next get on the same thread is right.
#[test]
fn a_value_whose_drop_panics() {
    common::watchdog(120, || {
        let _serial = serial();
        let mut g = Graph::new();
        for i in 0..4 {
            g.insert(
                format!("b{i}"),
                Task::new("bomb", vec![Arg::Value(Value::Int(i))]),
            );
        }
        g.insert(
            "u",
            show_task(
                "u",
                Arg::List((0..2).map(|i| Arg::Key(format!("b{i}").into())).collect()),
            ),
        );
        g.insert(
            "top",
            show_task(
                "top",
                Arg::List(
                    ["u", "b2", "b3"]
                        .iter()
                        .map(|k| Arg::Key((*k).into()))
                        .collect(),
                ),
            ),
        );
        let expected = SyncScheduler::new()
            .get(&g, "top")
            .expect("unarmed, the get runs");
        assert_eq!(bombs_alive(), 0);
        for opts in [
            GetOptions::new(),
            GetOptions::new().callback(Arc::new(Nothing)),
        ] {
            ARMED.store(true, std::sync::atomic::Ordering::SeqCst);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                SyncScheduler::new().get_with(&g, &Keys::One("top".into()), &opts)
            }));
            assert!(r.is_err(), "the drop's panic reaches the caller");
            assert_eq!(bombs_alive(), 0, "nothing is kept alive");
            let again = SyncScheduler::new()
                .get(&g, "top")
                .expect("the next get runs");
            assert_eq!(again, expected);
            assert_eq!(bombs_alive(), 0);
        }
    });
}

/// Sums `1..=n` by asking the sync scheduler, from inside this task, for the sum to `n - 1`
/// beside `n` (each level a get of its own on the same thread, over the same kept arrays).
#[forkgraph::task]
fn sum_to(n: i64) -> Result<i64, String> {
    if n == 0 {
        return Ok(0);
    }
    let mut g = Graph::new();
    g.insert(("n", n), Value::Int(n));
    g.insert("alias", forkgraph::key(Key::from(("n", n))));
    g.insert(
        "rest",
        Task::new("sum_to", vec![Arg::Value(Value::Int(n - 1))]),
    );
    let out = SyncScheduler::new()
        .get(
            &g,
            vec![Key::from("alias"), Key::from("rest"), Key::from(("n", n))],
        )
        .map_err(|e| e.to_string())?;
    let Output::List(l) = out else {
        return Err(format!("not a list: {out:?}"));
    };
    let int = |o: &Output| {
        o.as_value()
            .and_then(|v| v.to::<i64>().ok())
            .ok_or("not an int")
    };
    Ok(int(&l[0])? + int(&l[1])?)
}

/// Gets nested in tasks on the same thread (the straight sync run inside a straight sync run).
#[test]
fn nested_sync_gets() {
    common::watchdog(120, || {
        let mut g = Graph::new();
        g.insert("s", Task::new("sum_to", vec![Arg::Value(Value::Int(40))]));
        for _ in 0..3 {
            let out = SyncScheduler::new().get(&g, "s").unwrap();
            assert_eq!(out.as_value(), Some(&Value::Int(820)));
            let threads = pool().get(&g, "s").unwrap();
            assert_eq!(threads.as_value(), Some(&Value::Int(820)));
        }
    });
}
