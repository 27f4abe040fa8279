//! The task profiler: a callback that records every task (key, function, worker, start, end,
//! result size, outcome) and every worker event, and exports them as a Chrome trace or an SVG
//! Gantt chart (`super::gantt`).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use forkgraph_worker::Value;

use super::resources::ResourceSample;
use crate::callbacks::{monotonic_ns, Callbacks, RunInfo, TaskEvent, WorkerEvent, WorkerId};
use crate::error::TaskError;
use crate::key::Key;

/// How a recorded task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned a value.
    Ok,
    /// It failed; the error as `Display` shows it.
    Failed(String),
    /// It never started (a link after a failed link of its chain).
    NotRun,
}

/// One task as the [`Profiler`] recorded it.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Its key.
    pub key: Key,
    /// Its function.
    pub function: Arc<str>,
    /// Where it ran.
    pub worker: WorkerId,
    /// When it started, in ns on [`monotonic_ns`]'s clock.
    pub start: u64,
    /// When it ended.
    pub end: u64,
    /// [`TaskEvent::result_bytes`].
    pub result_bytes: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The tasks whose results it took as inputs ([`TaskEvent::dependencies`]).
    pub dependencies: Vec<Key>,
}

/// What a [`Profiler`] recorded, over every `get` it watched.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// When the first watched `get` started (ns on [`monotonic_ns`]'s clock): time 0 of the
    /// exports.
    pub origin: u64,
    /// When the last watched `get` finished (0 while one runs).
    pub end: u64,
    /// Every worker seen: at the start of a run, started during it, or running a task; in that
    /// order (worker processes by slot).
    pub workers: Vec<WorkerId>,
    /// The tasks, in the order their results arrived.
    pub tasks: Vec<TaskRecord>,
    /// Worker processes that started, died or were replaced.
    pub worker_events: Vec<WorkerEvent>,
    /// CPU and memory samples, when a [`ResourceProfiler`](crate::ResourceProfiler)'s were
    /// added ([`Profile::with_resources`]); empty otherwise.
    pub resources: Vec<ResourceSample>,
}

impl Profile {
    /// The time span the exports cover: from `origin` to the last thing recorded.
    pub fn span(&self) -> (u64, u64) {
        let last_task = self.tasks.iter().map(|t| t.end).max().unwrap_or(0);
        let last_event = self.worker_events.iter().map(event_time).max().unwrap_or(0);
        let last_sample = self.resources.iter().map(|r| r.at).max().unwrap_or(0);
        (
            self.origin,
            self.end
                .max(last_task)
                .max(last_event)
                .max(last_sample)
                .max(self.origin),
        )
    }

    /// Index of `w` in [`Profile::workers`] (its track in the exports).
    pub fn lane(&self, w: WorkerId) -> Option<usize> {
        self.workers.iter().position(|&x| x == w)
    }

    /// Busy nanoseconds per worker (by lane).
    pub fn busy(&self) -> Vec<u64> {
        let mut busy = vec![0u64; self.workers.len()];
        for t in &self.tasks {
            if let Some(l) = self.lane(t.worker) {
                busy[l] += t.end.saturating_sub(t.start);
            }
        }
        busy
    }

    /// The Chrome trace event format (JSON), which Perfetto and `chrome://tracing` open: one
    /// track per worker (named after it), one complete event (`"ph": "X"`) per task on its
    /// worker's track, with key, outcome, result size and error in `args`; worker events as
    /// instant events on the worker's track; a flow arrow (`"ph": "s"` at the end of the
    /// producer, `"ph": "f"` with `"bp": "e"` at the start of the consumer) for each input a
    /// task took from a task that ran in another process; resource samples as counter tracks (`"ph": "C"`:
    /// `CPU %` and `RSS MiB` per process and in total, `shared segments MiB`). Times are
    /// microseconds since `origin`.
    pub fn chrome_trace(&self) -> serde_json::Value {
        use serde_json::json;
        let us = |t: u64| t.saturating_sub(self.origin) as f64 / 1000.0;
        let mut events = vec![json!({
            "ph": "M", "pid": 1, "name": "process_name", "args": { "name": "forkgraph" }
        })];
        for (lane, w) in self.workers.iter().enumerate() {
            events.push(json!({
                "ph": "M", "pid": 1, "tid": lane, "name": "thread_name",
                "args": { "name": w.to_string() }
            }));
            events.push(json!({
                "ph": "M", "pid": 1, "tid": lane, "name": "thread_sort_index",
                "args": { "sort_index": lane }
            }));
        }
        for t in &self.tasks {
            let Some(lane) = self.lane(t.worker) else {
                continue;
            };
            let (cat, error) = match &t.outcome {
                Outcome::Ok => ("ok", None),
                Outcome::Failed(e) => ("failed", Some(e.as_str())),
                Outcome::NotRun => ("not-run", None),
            };
            let mut args = json!({
                "key": t.key.to_string(),
                "outcome": cat,
                "result_bytes": t.result_bytes,
            });
            if let Some(e) = error {
                args["error"] = json!(e);
            }
            events.push(json!({
                "ph": "X", "pid": 1, "tid": lane, "name": &*t.function, "cat": cat,
                "ts": us(t.start), "dur": us(t.end) - us(t.start), "args": args,
            }));
        }
        for e in &self.worker_events {
            let (w, name, args) = match e {
                WorkerEvent::Started { worker, .. } => (*worker, "worker started", json!({})),
                WorkerEvent::Died { worker, cause, .. } => {
                    (*worker, "worker died", json!({ "cause": cause }))
                }
                WorkerEvent::Replaced { old, new, .. } => (
                    *new,
                    "worker replaced",
                    json!({ "old": old.to_string(), "new": new.to_string() }),
                ),
            };
            let Some(lane) = self.lane(w) else { continue };
            events.push(json!({
                "ph": "i", "s": "t", "pid": 1, "tid": lane, "name": name, "cat": "worker",
                "ts": us(event_time(e)), "args": args,
            }));
        }
        for (id, (from, to)) in self.cross_process_inputs().into_iter().enumerate() {
            let (p, c) = (&self.tasks[from], &self.tasks[to]);
            let (Some(pl), Some(cl)) = (self.lane(p.worker), self.lane(c.worker)) else {
                continue;
            };
            // Just inside the producer's slice, so that viewers bind the arrow to it.
            let end = us(p.start).max(us(p.end) - 0.001);
            events.push(json!({
                "ph": "s", "pid": 1, "tid": pl, "id": id, "name": "input", "cat": "dependency",
                "ts": end,
            }));
            events.push(json!({
                "ph": "f", "bp": "e", "pid": 1, "tid": cl, "id": id, "name": "input",
                "cat": "dependency", "ts": us(c.start),
            }));
        }
        for r in &self.resources {
            let ts = us(r.at);
            let mut cpu = serde_json::Map::new();
            let mut rss = serde_json::Map::new();
            for p in &r.processes {
                if let Some(c) = p.cpu_percent {
                    cpu.insert(p.label(), json!(c));
                }
                rss.insert(p.label(), json!(mib(p.rss_bytes)));
            }
            cpu.insert("total".into(), json!(r.cpu_percent));
            rss.insert("total".into(), json!(mib(r.rss_bytes)));
            events.push(json!({ "ph": "C", "pid": 1, "name": "CPU %", "ts": ts, "args": cpu }));
            events.push(json!({ "ph": "C", "pid": 1, "name": "RSS MiB", "ts": ts, "args": rss }));
            events.push(json!({
                "ph": "C", "pid": 1, "name": "shared segments MiB", "ts": ts,
                "args": { "held": mib(r.segment_bytes) }
            }));
        }
        json!({ "traceEvents": events, "displayTimeUnit": "ms" })
    }

    /// The inputs that crossed processes, as (producer, consumer) indices into
    /// [`Profile::tasks`]: a task that ran took the result of a task that ran in another process
    /// (the latest record of its key before the consumer's). Threads of a thread pool and the
    /// caller share the parent process.
    pub fn cross_process_inputs(&self) -> Vec<(usize, usize)> {
        let process = |w: WorkerId| match w {
            WorkerId::Process { pid, .. } => Some(pid),
            WorkerId::Caller | WorkerId::Thread(_) => None,
        };
        let mut latest: std::collections::HashMap<&Key, usize> = Default::default();
        let mut pairs = Vec::new();
        for (i, t) in self.tasks.iter().enumerate() {
            if t.outcome != Outcome::NotRun {
                for d in &t.dependencies {
                    if let Some(&j) = latest.get(d) {
                        if process(self.tasks[j].worker) != process(t.worker) {
                            pairs.push((j, i));
                        }
                    }
                }
            }
            if t.outcome == Outcome::Ok {
                latest.insert(&t.key, i);
            }
        }
        pairs
    }

    /// [`Profile::chrome_trace`] written to a file.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_chrome_trace(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        let text = serde_json::to_string(&self.chrome_trace()).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    /// A self-contained SVG Gantt chart: a lane per worker, bars coloured by function, failures
    /// and worker deaths in red.
    pub fn svg(&self) -> String {
        super::gantt::render(self)
    }

    /// [`Profile::svg`] written to a file.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_svg(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.svg())
    }

    /// A one-paragraph text summary: tasks, failures, wall time, busy share per worker.
    pub fn summary(&self) -> String {
        let (a, b) = self.span();
        let wall = b.saturating_sub(a).max(1);
        let failed = self
            .tasks
            .iter()
            .filter(|t| matches!(t.outcome, Outcome::Failed(_)))
            .count();
        let mut s = format!(
            "{} tasks ({failed} failed) in {:.3} ms on {} workers",
            self.tasks.len(),
            wall as f64 / 1e6,
            self.workers.len()
        );
        for (w, busy) in self.workers.iter().zip(self.busy()) {
            let _ = write!(s, "; {w} busy {:.0}%", 100.0 * busy as f64 / wall as f64);
        }
        s
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn event_time(e: &WorkerEvent) -> u64 {
    match e {
        WorkerEvent::Started { at, .. }
        | WorkerEvent::Died { at, .. }
        | WorkerEvent::Replaced { at, .. } => *at,
    }
}

/// Records every task of the `get`s it watches (Dask's `Profiler`). Add it with
/// [`GetOptions::callback`](crate::GetOptions::callback) and read [`Profiler::profile`] after.
///
/// ```
/// use std::sync::Arc;
/// use forkgraph::{graph, key, GetOptions, Profiler, Scheduler, SyncScheduler};
///
/// #[forkgraph::task]
/// fn double(x: i64) -> i64 {
///     2 * x
/// }
///
/// let g = graph! { "a" => 1, "b" => (double, key("a")) };
/// let prof = Arc::new(Profiler::new());
/// SyncScheduler.get_with(&g, &"b".into(), &GetOptions::new().callback(prof.clone())).unwrap();
/// let p = prof.profile();
/// assert_eq!(p.tasks.len(), 1);
/// assert!(p.chrome_trace()["traceEvents"].is_array());
/// ```
#[derive(Debug, Default)]
pub struct Profiler {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    profile: Profile,
    /// The last function name seen and its shared copy (tasks come in runs of one function).
    last_fn: Option<(usize, usize, Arc<str>)>,
    names: std::collections::HashMap<String, Arc<str>>,
}

impl State {
    fn function(&mut self, name: &str) -> Arc<str> {
        let id = (name.as_ptr() as usize, name.len());
        if let Some((p, l, f)) = &self.last_fn {
            if (*p, *l) == id {
                return f.clone();
            }
        }
        let f = self
            .names
            .entry(name.to_owned())
            .or_insert_with(|| Arc::from(name))
            .clone();
        self.last_fn = Some((id.0, id.1, f.clone()));
        f
    }

    fn see(&mut self, w: WorkerId) {
        if self.profile.workers.last() == Some(&w) || self.profile.workers.contains(&w) {
            return;
        }
        self.profile.workers.push(w);
        // Worker processes by slot, then by when they were first seen.
        self.profile.workers.sort_by_key(|w| match w {
            WorkerId::Caller => (0, 0),
            WorkerId::Thread(n) => (1, *n),
            WorkerId::Process { slot, .. } => (2, *slot),
        });
    }

    fn record(&mut self, t: &TaskEvent<'_>, outcome: Outcome) {
        let function = self.function(t.function);
        self.see(t.worker);
        self.profile.tasks.push(TaskRecord {
            key: t.key.clone(),
            function,
            worker: t.worker,
            start: t.start,
            end: t.end,
            result_bytes: t.result_bytes,
            outcome,
            dependencies: t.dependencies.iter().cloned().collect(),
        });
    }
}

impl Profiler {
    /// An empty profiler.
    pub fn new() -> Profiler {
        Profiler::default()
    }

    /// A copy of what was recorded so far.
    pub fn profile(&self) -> Profile {
        self.lock().profile.clone()
    }

    /// Forgets everything recorded.
    pub fn clear(&self) {
        *self.lock() = State::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Callbacks for Profiler {
    fn start(&self, info: &RunInfo) {
        let mut s = self.lock();
        // Room for this run's records up front: no reallocation while tasks finish.
        s.profile.tasks.reserve(info.tasks);
        if s.profile.origin == 0 {
            s.profile.origin = monotonic_ns();
        }
        s.profile.end = 0;
    }

    fn workers(&self, workers: &[WorkerId]) {
        let mut s = self.lock();
        for &w in workers {
            s.see(w);
        }
    }

    fn task_done(&self, task: &TaskEvent<'_>, _: &Value) {
        self.lock().record(task, Outcome::Ok);
    }

    fn task_failed(&self, task: &TaskEvent<'_>, error: &TaskError) {
        let outcome = if task.ran {
            Outcome::Failed(error.to_string())
        } else {
            Outcome::NotRun
        };
        self.lock().record(task, outcome);
    }

    fn worker_event(&self, event: &WorkerEvent) {
        let mut s = self.lock();
        if let WorkerEvent::Started { worker, .. } | WorkerEvent::Died { worker, .. } = event {
            s.see(*worker);
        }
        s.profile.worker_events.push(event.clone());
    }

    fn finish(&self, _: bool) {
        self.lock().profile.end = monotonic_ns();
    }
}
