//! Diagnostics (issue 11): callbacks with where and when tasks ran on every scheduler, with
//! `get`, `map` and `submit`; the failure hook; worker lifecycle events; the profiler's Chrome
//! trace and SVG; the progress bar's plain lines; DOT through graphviz.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::watchdog;
use forkgraph::{
    graph, key, monotonic_ns, Arg, Callbacks, DotColor, Error, GetOptions, Graph, Key, Outcome,
    ProcessPool, Profile, Profiler, ProgressBar, Scheduler, SyncScheduler, TaskError,
    TaskErrorKind, TaskEvent, ThreadPool, Value, WorkerEvent, WorkerId,
};

#[forkgraph::task]
fn inc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[forkgraph::task]
fn refuse(x: i64) -> Result<i64, String> {
    Err(format!("refused {x}"))
}

#[forkgraph::task]
fn segfault(_x: i64) -> i64 {
    // SAFETY: none — this task exists to crash its worker.
    unsafe { std::ptr::null_mut::<i64>().write_volatile(1) };
    0
}

/// 20 `inc` tasks and their sum.
fn flat() -> Graph {
    let mut g = Graph::new();
    let mut parts = Vec::new();
    for i in 0..20 {
        let k = Key::from(("inc", i));
        g.task(k.clone(), "inc", vec![Arg::Value((i as i64).into())]);
        parts.push(Arg::Key(k));
    }
    g.task("sum", "total", vec![Arg::List(parts)]);
    g
}

#[derive(Debug, Clone)]
struct Seen {
    key: Key,
    function: String,
    worker: WorkerId,
    start: u64,
    end: u64,
    bytes: u64,
    ran: bool,
    error: Option<String>,
}

#[derive(Default)]
struct Recorder {
    workers: Mutex<Vec<WorkerId>>,
    tasks: Mutex<Vec<Seen>>,
    events: Mutex<Vec<WorkerEvent>>,
}

impl Recorder {
    fn seen(t: &TaskEvent<'_>, error: Option<String>) -> Seen {
        Seen {
            key: t.key.clone(),
            function: t.function.to_owned(),
            worker: t.worker,
            start: t.start,
            end: t.end,
            bytes: t.result_bytes,
            ran: t.ran,
            error,
        }
    }
    fn tasks(&self) -> Vec<Seen> {
        self.tasks.lock().unwrap().clone()
    }
}

impl Callbacks for Recorder {
    fn workers(&self, workers: &[WorkerId]) {
        self.workers.lock().unwrap().extend_from_slice(workers);
    }
    fn task_done(&self, t: &TaskEvent<'_>, _: &Value) {
        self.tasks.lock().unwrap().push(Recorder::seen(t, None));
    }
    fn task_failed(&self, t: &TaskEvent<'_>, e: &TaskError) {
        self.tasks
            .lock()
            .unwrap()
            .push(Recorder::seen(t, Some(e.to_string())));
    }
    fn worker_event(&self, e: &WorkerEvent) {
        self.events.lock().unwrap().push(e.clone());
    }
}

fn schedulers() -> Vec<(&'static str, Box<dyn Scheduler + Send>)> {
    vec![
        ("sync", Box::new(SyncScheduler)),
        (
            "threads",
            Box::new(ThreadPool::builder().threads(2).build().unwrap()),
        ),
        (
            "procs",
            Box::new(ProcessPool::builder().workers(2).build().unwrap()),
        ),
    ]
}

/// Every task's event names a worker the run announced, and times on the shared monotonic
/// clock within the `get` (start <= end).
fn check_events(name: &str, rec: &Recorder, before: u64, after: u64, tasks: usize) {
    let seen = rec.tasks();
    assert_eq!(seen.len(), tasks, "{name}: one event per task");
    let workers = rec.workers.lock().unwrap().clone();
    assert!(!workers.is_empty(), "{name}: workers announced");
    for t in &seen {
        assert!(
            workers.contains(&t.worker),
            "{name}: {t:?} on an announced worker"
        );
        assert!(
            before <= t.start && t.start <= t.end && t.end <= after,
            "{name}: {t:?} within [{before}, {after}]"
        );
        assert!(t.ran);
        match name {
            "sync" => assert_eq!(t.worker, WorkerId::Caller),
            "threads" => assert!(matches!(
                t.worker,
                WorkerId::Caller | WorkerId::Thread(0..=1)
            )),
            _ => assert!(matches!(t.worker, WorkerId::Process { slot: 0..=1, pid } if pid > 0)),
        }
    }
    let inc = seen.iter().find(|t| t.function == "inc").unwrap();
    assert_eq!(inc.bytes, 8, "{name}: an i64 result is 8 bytes");
}

#[test]
fn callbacks_see_worker_and_times_on_every_scheduler() {
    watchdog(120, || {
        for (name, s) in schedulers() {
            let rec = Arc::new(Recorder::default());
            let opts = GetOptions::new().callback(rec.clone());
            let before = monotonic_ns();
            let out = s.get_with(&flat(), &"sum".into(), &opts).unwrap();
            let after = monotonic_ns();
            assert_eq!(out.to::<i64>().unwrap(), (1..=20).sum::<i64>());
            check_events(name, &rec, before, after, 21);
        }
    });
}

#[test]
fn process_workers_are_the_pool_s_and_chains_report_each_link() {
    watchdog(120, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let pids = pool.worker_pids();
        // A chain: a -> b -> c -> d runs as one unit in one worker.
        let g = graph! {
            "a" => (inc, 0),
            "b" => (inc, key("a")),
            "c" => (inc, key("b")),
            "d" => (inc, key("c")),
        };
        let rec = Arc::new(Recorder::default());
        let before = monotonic_ns();
        let out = pool
            .get_with(&g, &"d".into(), &GetOptions::new().callback(rec.clone()))
            .unwrap();
        let after = monotonic_ns();
        assert_eq!(out.to::<i64>().unwrap(), 4);
        check_events("procs", &rec, before, after, 4);
        let seen = rec.tasks();
        for t in &seen {
            let WorkerId::Process { pid, .. } = t.worker else {
                panic!("{t:?}")
            };
            assert!(pids.contains(&pid));
        }
        // Links follow each other: each starts when the one before ended.
        let by_key = |k: &str| seen.iter().find(|t| t.key == Key::from(k)).unwrap().clone();
        let (a, b, c, d) = (by_key("a"), by_key("b"), by_key("c"), by_key("d"));
        assert!(a.end <= b.start && b.end <= c.start && c.end <= d.start);
    });
}

#[test]
fn map_and_submit_take_callbacks() {
    watchdog(120, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let rec = Arc::new(Recorder::default());
        let opts = GetOptions::new().callback(rec.clone());
        let out = pool.map_with("inc", [1, 2, 3], &opts).unwrap();
        assert_eq!(out, vec![2.into(), 3.into(), 4.into()]);
        assert_eq!(rec.tasks().len(), 3);

        let rec = Arc::new(Recorder::default());
        let h = pool.submit_with(
            "inc",
            vec![Arg::Value(41.into())],
            GetOptions::new().callback(rec.clone()),
        );
        assert_eq!(h.wait().unwrap(), Value::from(42));
        let seen = rec.tasks();
        assert_eq!(seen.len(), 1);
        assert!(matches!(seen[0].worker, WorkerId::Process { .. }));
        assert_eq!(seen[0].key, Key::from("submit"));
    });
}

#[test]
fn failure_hook_gets_the_error_on_every_scheduler() {
    watchdog(120, || {
        let g =
            graph! { "a" => (inc, 1), "bad" => (refuse, key("a")), "after" => (inc, key("bad")) };
        for (name, s) in schedulers() {
            let rec = Arc::new(Recorder::default());
            let err = s
                .get_with(
                    &g,
                    &"after".into(),
                    &GetOptions::new().callback(rec.clone()),
                )
                .unwrap_err();
            assert!(err.is_task_error(), "{name}: {err}");
            let seen = rec.tasks();
            let bad = seen
                .iter()
                .find(|t| t.key == Key::from("bad"))
                .unwrap_or_else(|| panic!("{name}: no event for the failure: {seen:?}"));
            assert!(bad.ran, "{name}");
            assert_eq!(bad.function, "refuse");
            assert!(
                bad.error.as_deref().unwrap().contains("refused 2"),
                "{name}: {bad:?}"
            );
            assert!(bad.start <= bad.end);
            // The dependent never ran: on processes it may be a chain link reported not run.
            for t in seen.iter().filter(|t| t.key == Key::from("after")) {
                assert!(!t.ran && t.error.is_some(), "{name}: {t:?}");
            }
        }
    });
}

/// A worker death, a task failure and normal tasks, profiled on a process pool.
fn profile_with_death_and_failure() -> (Profile, Vec<WorkerEvent>, Vec<i32>) {
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let before = pool.worker_pids();
    let prof = Arc::new(Profiler::new());
    let rec = Arc::new(Recorder::default());
    let opts = GetOptions::new()
        .callback(prof.clone())
        .callback(rec.clone());
    assert_eq!(pool.map_with("inc", 0..10, &opts).unwrap().len(), 10);
    let err = pool
        .get_with(&graph! { "crash" => (segfault, 1) }, &"crash".into(), &opts)
        .unwrap_err();
    match &err {
        Error::Task(t) => assert!(
            matches!(
                t.kind,
                TaskErrorKind::WorkerDied {
                    signal: Some(11),
                    ..
                }
            ),
            "{err}"
        ),
        other => panic!("{other}"),
    }
    let err = pool
        .get_with(&graph! { "bad" => (refuse, 7) }, &"bad".into(), &opts)
        .unwrap_err();
    assert!(err.is_task_error());
    let events = rec.events.lock().unwrap().clone();
    (prof.profile(), events, before)
}

#[test]
fn worker_death_is_reported_as_died_started_and_replaced() {
    watchdog(120, || {
        let (_, events, before) = profile_with_death_and_failure();
        let died = events
            .iter()
            .find_map(|e| match e {
                WorkerEvent::Died {
                    worker,
                    signal,
                    cause,
                    ..
                } => Some((*worker, *signal, cause.clone())),
                _ => None,
            })
            .expect("a Died event");
        let WorkerId::Process { slot, pid } = died.0 else {
            panic!("{died:?}")
        };
        assert!(before.contains(&pid), "{died:?}");
        assert_eq!(died.1, Some(11), "{died:?}");
        assert!(died.2.contains("SIGSEGV"), "{died:?}");
        assert!(events.iter().any(|e| matches!(e,
            WorkerEvent::Replaced { old, new: WorkerId::Process { slot: s, pid: p }, .. }
                if *old == died.0 && *s == slot && *p != pid)));
        assert!(events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Started { worker: WorkerId::Process { slot: s, .. }, .. } if *s == slot)));
    });
}

#[test]
fn chrome_trace_has_one_complete_event_per_task_on_existing_tracks() {
    watchdog(120, || {
        let (p, _, _) = profile_with_death_and_failure();
        assert_eq!(p.tasks.len(), 12);
        let text = serde_json::to_string(&p.chrome_trace()).unwrap();
        let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
        let events = trace["traceEvents"].as_array().unwrap();
        let tracks: Vec<u64> = events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
            .map(|e| e["tid"].as_u64().unwrap())
            .collect();
        assert!(
            tracks.len() >= 3,
            "two workers and a replacement: {tracks:?}"
        );
        let complete: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(complete.len(), p.tasks.len());
        for e in &complete {
            assert!(e["dur"].as_f64().unwrap() >= 0.0, "{e}");
            assert!(e["ts"].as_f64().unwrap() >= 0.0, "{e}");
            assert!(tracks.contains(&e["tid"].as_u64().unwrap()), "{e}");
        }
        let mut keys: Vec<&str> = complete
            .iter()
            .map(|e| e["args"]["key"].as_str().unwrap())
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 12, "one event per task");
        let failed: Vec<&&serde_json::Value> =
            complete.iter().filter(|e| e["cat"] == "failed").collect();
        assert_eq!(failed.len(), 2, "the crash and the refusal");
        assert!(failed
            .iter()
            .any(|e| e["args"]["error"].as_str().unwrap().contains("SIGSEGV")));
        assert!(failed
            .iter()
            .any(|e| e["args"]["error"].as_str().unwrap().contains("refused 7")));
        assert!(events.iter().any(|e| e["ph"] == "i"
            && e["name"] == "worker died"
            && e["args"]["cause"].as_str().unwrap().contains("SIGSEGV")));
    });
}

#[test]
fn svg_is_xml_with_a_lane_per_worker_and_marks_failures_and_deaths() {
    watchdog(120, || {
        let (p, _, _) = profile_with_death_and_failure();
        let svg = p.svg();
        let doc = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
        let has_class = |n: &roxmltree::Node, c: &str| n.attribute("class") == Some(c);
        let lanes: Vec<String> = doc
            .descendants()
            .filter(|n| has_class(n, "lane"))
            .map(|n| n.attribute("data-worker").unwrap().to_owned())
            .collect();
        let expected: Vec<String> = p.workers.iter().map(|w| w.to_string()).collect();
        assert_eq!(lanes, expected);
        assert!(lanes.len() >= 3, "{lanes:?}");
        let tasks = doc.descendants().filter(|n| has_class(n, "task")).count();
        assert_eq!(tasks, 12);
        assert_eq!(
            doc.descendants()
                .filter(|n| has_class(n, "failure"))
                .count(),
            2
        );
        let deaths: Vec<_> = doc
            .descendants()
            .filter(|n| has_class(n, "death"))
            .collect();
        // The crash runs first on a worker that ran other tasks, so it is not blamed until it
        // crashes again alone on a fresh one: one or two deaths, at least one a SIGSEGV.
        assert!(!deaths.is_empty());
        assert!(deaths.iter().any(|d| d
            .descendants()
            .any(|n| n.text().is_some_and(|t| t.contains("SIGSEGV")))));
        assert!(
            p.summary().contains("12 tasks (2 failed)"),
            "{}",
            p.summary()
        );
    });
}

#[test]
fn profiler_outcomes_on_threads() {
    watchdog(60, || {
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        let prof = Arc::new(Profiler::new());
        let g = graph! { "a" => (inc, 1), "bad" => (refuse, key("a")) };
        let _ = pool.get_with(&g, &"bad".into(), &GetOptions::new().callback(prof.clone()));
        let p = prof.profile();
        assert_eq!(p.tasks.len(), 2);
        assert!(p
            .tasks
            .iter()
            .any(|t| matches!(&t.outcome, Outcome::Failed(e) if e.contains("refused"))));
        assert_eq!(p.workers[0], WorkerId::Caller);
        assert_eq!(
            p.workers.len(),
            3,
            "caller and two threads: {:?}",
            p.workers
        );
        roxmltree::Document::parse(&p.svg()).unwrap();
    });
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn progress_writes_a_plain_line_when_not_on_a_terminal() {
    watchdog(60, || {
        let buf = Shared::default();
        let bar = Arc::new(ProgressBar::plain_to(Box::new(buf.clone())));
        let pool = ThreadPool::builder().threads(2).build().unwrap();
        pool.get_with(
            &flat(),
            &"sum".into(),
            &GetOptions::new().callback(bar.clone()),
        )
        .unwrap();
        assert_eq!(bar.counts(), (21, 21));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("[forkgraph] 21/21 tasks (100%)"), "{text}");
        assert!(last.contains("0 failed, 0 worker deaths"), "{text}");
        // GetOptions::progress() is the one-line spelling (stderr here is not a terminal).
        SyncScheduler
            .get_with(&flat(), &"sum".into(), &GetOptions::new().progress())
            .unwrap();
    });
}

#[test]
fn dot_names_every_node_and_graphviz_accepts_it() {
    let g = graph! {
        "a" => 1,
        "b" => (inc, key("a")),
        "c" => (inc, key("b")),
        "d" => key("c"),
        "sum" => (total, [key("b"), key("d")]),
    };
    for color in [DotColor::Function, DotColor::Order] {
        let dot = forkgraph::to_dot(&g, &"sum".into(), color).unwrap();
        for k in ["a", "b", "c", "d", "sum"] {
            assert!(dot.contains(&format!("label=\"{k}")), "{dot}");
        }
        assert_eq!(dot.matches(" -> ").count(), 5, "{dot}");
        let dir = common::scratch_dir("dot");
        let out = dir.join("g.svg");
        match forkgraph::render_dot(&dot, &out) {
            Ok(()) => {
                let svg = std::fs::read_to_string(&out).unwrap();
                let opts = roxmltree::ParsingOptions {
                    allow_dtd: true,
                    ..Default::default()
                };
                roxmltree::Document::parse_with_options(&svg, opts).unwrap();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(e.to_string().contains("install graphviz"), "{e}");
            }
            Err(e) => panic!("dot refused our DOT: {e}\n{dot}"),
        }
    }
    assert!(forkgraph::to_dot(&g, &"nope".into(), DotColor::Function).is_err());
}
