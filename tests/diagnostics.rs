//! Diagnostics (issue 11): callbacks with where and when tasks ran on every scheduler, with
//! `get`, `map` and `submit`; the failure hook; worker lifecycle events; the profiler's Chrome
//! trace and SVG; the progress bar's plain lines; DOT through graphviz.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::watchdog;
use forkgraph::{
    graph, key, monotonic_ns, Arg, Callbacks, DotColor, Error, GetOptions, Graph, Key, Outcome,
    ProcessPool, Profile, Profiler, ProgressBar, ResourceProfiler, Scheduler, SyncScheduler,
    TaskError, TaskErrorKind, TaskEvent, TaskRecord, ThreadPool, Value, WorkerEvent, WorkerId,
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
    let inc_record = seen.iter().find(|t| t.function == "inc").unwrap();
    assert_eq!(inc_record.bytes, 8, "{name}: an i64 result is 8 bytes");
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
        let h = pool.submit_with("inc", 41, &GetOptions::new().callback(rec.clone()));
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
    for color in [DotColor::Function, DotColor::Order, DotColor::Pressure] {
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

#[test]
fn dot_shows_memory_pressure_and_the_state_of_a_profiled_run() {
    // A fan-out: `a` is held while its three consumers run, then freed.
    let g = graph! {
        "a" => (inc, 1),
        "b" => (inc, key("a")),
        "c" => (inc, key("a")),
        "d" => (inc, key("a")),
        "s" => (total, [key("b"), key("c"), key("d")]),
    };
    let dot = forkgraph::to_dot(&g, &"s".into(), DotColor::Pressure).unwrap();
    assert!(
        dot.contains(r"\n1 held"),
        "the first task holds only itself: {dot}"
    );
    assert!(
        dot.contains(r"\n4 held"),
        "a and three consumers at the peak: {dot}"
    );

    let prof = Arc::new(Profiler::new());
    let mut bad = g.clone();
    bad.task("c", "refuse", vec![Arg::Key("a".into())]);
    let opts = GetOptions::new().callback(prof.clone());
    assert!(SyncScheduler.get_with(&bad, &"s".into(), &opts).is_err());
    let dot = forkgraph::to_dot_state(&bad, &"s".into(), &prof.profile()).unwrap();
    assert!(dot.contains("label=\"a\\ninc\\ndone\""), "{dot}");
    assert!(dot.contains("\\nfailed\""), "{dot}");
    assert!(
        dot.contains("never started"),
        "s never starts after c failed: {dot}"
    );
}

/// Counter events of a Chrome trace by name, in file order: (name, ts, args).
fn counters(trace: &serde_json::Value) -> Vec<(String, f64, serde_json::Value)> {
    trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "C")
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["ts"].as_f64().unwrap(),
                e["args"].clone(),
            )
        })
        .collect()
}

/// Threads of this process named after the resource profiler's sampler (names are cut to 15
/// bytes in /proc).
fn sampler_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|n| n.starts_with("forkgraph-resou"))
        .count()
}

#[test]
fn resource_profiler_samples_every_process_into_counters_and_a_panel() {
    watchdog(120, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let pids = pool.worker_pids();
        let prof = Arc::new(Profiler::new());
        let res = Arc::new(ResourceProfiler::new(Duration::from_millis(5)));
        let opts = GetOptions::new()
            .callback(prof.clone())
            .callback(res.clone());
        assert_eq!(
            pool.get_with(&flat(), &"sum".into(), &opts)
                .unwrap()
                .to::<i64>()
                .unwrap(),
            210
        );
        assert_eq!(sampler_threads(), 0, "finish stops the sampler thread");
        let r = res.resources();
        // One sample at the start and one at the finish, whatever the timing.
        assert!(r.samples.len() >= 2, "{r:?}");
        assert!(r.samples.windows(2).all(|w| w[0].at <= w[1].at));
        let parent = std::process::id() as i32;
        for s in &r.samples {
            assert_eq!(s.processes[0].pid, parent);
            assert_eq!(s.processes[0].worker, None);
            assert!(s.rss_bytes >= s.processes[0].rss_bytes && s.rss_bytes > 0);
        }
        // The workers are watched before the run finishes: the last sample reads them, after
        // a first reading (so with a CPU %).
        let last = r.samples.last().unwrap();
        for pid in &pids {
            let p = last
                .processes
                .iter()
                .find(|p| p.pid == *pid)
                .expect("worker sampled");
            assert!(p.cpu_percent.is_some_and(|c| c >= 0.0), "{p:?}");
            assert!(matches!(p.worker, Some(WorkerId::Process { pid: q, .. }) if q == *pid));
        }

        let p = prof.profile().with_resources(&r);
        let text = serde_json::to_string(&p.chrome_trace()).unwrap();
        let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
        let counters = counters(&trace);
        for name in ["CPU %", "RSS MiB", "shared segments MiB"] {
            let ts: Vec<f64> = counters
                .iter()
                .filter(|c| c.0 == name)
                .map(|c| c.1)
                .collect();
            assert_eq!(ts.len(), r.samples.len(), "{name}");
            assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{name}: {ts:?}");
            assert!(ts.iter().all(|&t| t >= 0.0), "{name}: {ts:?}");
        }
        for (name, _, args) in &counters {
            let args = args.as_object().unwrap();
            assert!(!args.is_empty());
            assert!(
                args.values().all(|v| v.as_f64().is_some_and(|v| v >= 0.0)),
                "{name}"
            );
            if name == "RSS MiB" {
                assert!(args.contains_key("parent") && args.contains_key("total"));
            }
        }

        let svg = p.svg();
        let doc = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
        let panel = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("resources"))
            .expect("a resource panel");
        for chart in ["cpu", "memory"] {
            let g = panel
                .descendants()
                .find(|n| n.attribute("class") == Some(chart))
                .unwrap_or_else(|| panic!("a {chart} chart"));
            assert!(
                g.descendants().any(|n| n.has_tag_name("polyline")),
                "{chart}"
            );
        }
        // Under the lanes.
        let lane_bottom = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("lane"))
            .filter_map(|n| n.first_element_child()?.attribute("y")?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        let panel_top: f64 = panel
            .descendants()
            .find(|n| n.has_tag_name("rect"))
            .and_then(|n| n.attribute("y")?.parse().ok())
            .unwrap();
        assert!(panel_top > lane_bottom);
        // Without samples there is no panel.
        assert!(!prof.profile().svg().contains(r#"class="resources""#));
    });
}

/// A task record for a made-up profile.
fn record(key: &str, worker: WorkerId, start: u64, end: u64, deps: &[&str]) -> TaskRecord {
    TaskRecord {
        key: key.into(),
        function: "f".into(),
        worker,
        start,
        end,
        result_bytes: 8,
        outcome: Outcome::Ok,
        dependencies: deps.iter().map(|&d| d.into()).collect(),
    }
}

/// Flow events of a trace: id -> (the "s" events, the "f" events).
fn flows(
    trace: &serde_json::Value,
) -> HashMap<u64, (Vec<serde_json::Value>, Vec<serde_json::Value>)> {
    let mut m: HashMap<u64, (Vec<_>, Vec<_>)> = HashMap::new();
    for e in trace["traceEvents"].as_array().unwrap() {
        match e["ph"].as_str() {
            Some("s") => m
                .entry(e["id"].as_u64().unwrap())
                .or_default()
                .0
                .push(e.clone()),
            Some("f") => m
                .entry(e["id"].as_u64().unwrap())
                .or_default()
                .1
                .push(e.clone()),
            _ => {}
        }
    }
    m
}

#[test]
fn flow_arrows_only_for_inputs_from_another_process() {
    let a = WorkerId::Process { slot: 0, pid: 100 };
    let b = WorkerId::Process { slot: 1, pid: 101 };
    let us = 1000;
    let p = Profile {
        origin: 0,
        end: 100 * us,
        workers: vec![a, b],
        tasks: vec![
            record("x", a, 0, 10 * us, &[]),
            record("y", b, 0, 12 * us, &[]),
            // Takes x (same worker: no arrow) and y (from b: an arrow).
            record("z", a, 20 * us, 30 * us, &["x", "y"]),
            // Takes z from a: an arrow.
            record("w", b, 40 * us, 50 * us, &["z"]),
        ],
        ..Profile::default()
    };
    assert_eq!(p.cross_process_inputs(), vec![(1, 2), (2, 3)]);
    let flows = flows(&p.chrome_trace());
    assert_eq!(flows.len(), 2);
    let mut ends: Vec<(u64, f64, u64, f64)> = flows
        .values()
        .map(|(s, f)| {
            assert_eq!((s.len(), f.len()), (1, 1), "{s:?} {f:?}");
            assert_eq!(f[0]["bp"], "e");
            (
                s[0]["tid"].as_u64().unwrap(),
                s[0]["ts"].as_f64().unwrap(),
                f[0]["tid"].as_u64().unwrap(),
                f[0]["ts"].as_f64().unwrap(),
            )
        })
        .collect();
    ends.sort_by(|x, y| x.1.total_cmp(&y.1));
    // From y's end (inside its slice) on lane 1 to z's start on lane 0; from z to w.
    assert_eq!((ends[0].0, ends[0].2, ends[0].3), (1, 0, 20.0));
    assert!(ends[0].1 > 11.9 && ends[0].1 <= 12.0, "{ends:?}");
    assert_eq!((ends[1].0, ends[1].2, ends[1].3), (0, 1, 40.0));

    // Threads share a process: no arrows.
    let mut t = p.clone();
    for (r, w) in t.tasks.iter_mut().zip([0, 1, 0, 1]) {
        r.worker = WorkerId::Thread(w);
    }
    t.workers = vec![WorkerId::Thread(0), WorkerId::Thread(1)];
    assert!(t.cross_process_inputs().is_empty());
    assert!(flows_of(&t).is_empty());
}

fn flows_of(p: &Profile) -> HashMap<u64, (Vec<serde_json::Value>, Vec<serde_json::Value>)> {
    flows(&p.chrome_trace())
}

#[test]
fn flow_arrows_pair_up_on_a_process_pool() {
    watchdog(120, || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let prof = Arc::new(Profiler::new());
        let rec = Arc::new(Recorder::default());
        let opts = GetOptions::new()
            .callback(prof.clone())
            .callback(rec.clone());
        pool.get_with(&flat(), &"sum".into(), &opts).unwrap();
        let p = prof.profile();
        let sum = p.tasks.iter().find(|t| t.key == "sum".into()).unwrap();
        assert_eq!(sum.dependencies.len(), 20, "{:?}", sum.dependencies);
        // The expected arrows, from the records: inputs of `sum` from the other worker.
        let other = sum
            .dependencies
            .iter()
            .filter(|d| p.tasks.iter().find(|t| &t.key == *d).unwrap().worker != sum.worker)
            .count();
        let flows = flows_of(&p);
        assert_eq!(flows.len(), other);
        let sum_lane = p.lane(sum.worker).unwrap() as u64;
        for (s, f) in flows.values() {
            assert_eq!((s.len(), f.len()), (1, 1));
            assert_ne!(s[0]["tid"], f[0]["tid"]);
            assert_eq!(f[0]["tid"].as_u64().unwrap(), sum_lane);
            assert!(s[0]["ts"].as_f64().unwrap() <= f[0]["ts"].as_f64().unwrap());
        }
    });
}
