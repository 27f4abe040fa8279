//! The resource profiler (Dask's `ResourceProfiler`): a callback that samples, at an interval
//! while a `get` runs, the CPU use and resident memory of the calling process and of every
//! worker process, and the bytes held in shared segments. [`Profile::with_resources`]
//! adds the samples to a [`Profile`], whose exports then draw them (counter tracks in the
//! Chrome trace, a panel under the Gantt chart).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use forkgraph_worker::host::process_usage;

use super::profiler::Profile;
use crate::callbacks::{monotonic_ns, Callbacks, RunInfo, WorkerEvent, WorkerId};

/// One process in one [`ResourceSample`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSample {
    /// The worker process, or `None` for the process that called `get` (which also runs the
    /// tasks of the sync and thread schedulers).
    pub worker: Option<WorkerId>,
    /// Its process id.
    pub pid: i32,
    /// CPU use since the previous sample of this process, in percent of one core (above 100
    /// when it used several); `None` in its first sample.
    pub cpu_percent: Option<f64>,
    /// Its resident set size in bytes (shared pages it touched count in full).
    pub rss_bytes: u64,
}

impl ProcessSample {
    /// How the exports name it: `"parent"` or the worker (`"worker 0 (pid 123)"`).
    pub fn label(&self) -> String {
        match self.worker {
            None => "parent".into(),
            Some(w) => w.to_string(),
        }
    }
}

/// What the [`ResourceProfiler`] read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSample {
    /// When, in ns on [`monotonic_ns`]'s clock.
    pub at: u64,
    /// The parent first, then each worker process alive then.
    pub processes: Vec<ProcessSample>,
    /// Sum of the processes' `cpu_percent`.
    pub cpu_percent: f64,
    /// Sum of the processes' RSS (pages shared between processes count once per process).
    pub rss_bytes: u64,
    /// Bytes of shared segments the parent holds mapped
    /// ([`segments::stats`](forkgraph_worker::segments::stats)).
    pub segment_bytes: u64,
}

/// What a [`ResourceProfiler`] sampled, over every `get` it watched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceProfile {
    /// The samples, in time order.
    pub samples: Vec<ResourceSample>,
}

/// Samples CPU % and RSS of the parent and of every worker process, and the bytes held in
/// shared segments, every `interval` while a `get` it watches runs (Dask's
/// `ResourceProfiler`). A thread (`forkgraph-resources`) reads `/proc` from the run's `start`
/// to its `finish`, with one sample at each end, so every run has at least two.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use forkgraph::{graph, key, GetOptions, Profiler, ResourceProfiler, Scheduler, SyncScheduler};
///
/// #[forkgraph::task]
/// fn double(x: i64) -> i64 {
///     2 * x
/// }
///
/// let g = graph! { "a" => 1, "b" => (double, key("a")) };
/// let prof = Arc::new(Profiler::new());
/// let res = Arc::new(ResourceProfiler::new(Duration::from_millis(50)));
/// let opts = GetOptions::new().callback(prof.clone()).callback(res.clone());
/// SyncScheduler.get_with(&g, &"b".into(), &opts).unwrap();
/// let p = prof.profile().with_resources(&res.resources());
/// assert!(p.resources.len() >= 2);
/// assert!(p.svg().contains(r#"class="resources""#));
/// ```
#[derive(Debug)]
pub struct ResourceProfiler {
    interval: Duration,
    shared: Arc<Mutex<Sampling>>,
    sampler: Mutex<Sampler>,
}

#[derive(Debug, Default)]
struct Sampler {
    /// `get`s running now (the thread runs while one does).
    runs: usize,
    thread: Option<(Sender<Wake>, JoinHandle<()>)>,
}

/// What wakes the sampler thread before its interval is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// New workers to watch: read them now, so that their CPU % starts with the next sample.
    Sample,
    /// The last run finished: a last sample, then exit.
    Stop,
}

#[derive(Debug, Default)]
struct Sampling {
    /// Worker processes to sample.
    workers: Vec<(WorkerId, i32)>,
    /// The previous reading per pid: (when, CPU ns).
    previous: HashMap<i32, (u64, u64)>,
    profile: ResourceProfile,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ResourceProfiler {
    /// A profiler that samples every `interval` (at least 1 ms; the kernel counts CPU time in
    /// ticks of usually 10 ms, so CPU % over intervals below ~50 ms is coarse).
    pub fn new(interval: Duration) -> ResourceProfiler {
        ResourceProfiler {
            interval: interval.max(Duration::from_millis(1)),
            shared: Arc::default(),
            sampler: Mutex::default(),
        }
    }

    /// A copy of what was sampled so far.
    pub fn resources(&self) -> ResourceProfile {
        lock(&self.shared).profile.clone()
    }

    /// Forgets every sample.
    pub fn clear(&self) {
        let mut s = lock(&self.shared);
        s.profile.samples.clear();
        s.previous.clear();
    }

    /// Starts watching the worker processes among `workers`, and has them read at once.
    fn watch(&self, workers: &[WorkerId]) {
        let mut added = false;
        {
            let mut s = lock(&self.shared);
            for &w in workers {
                if let WorkerId::Process { pid, .. } = w {
                    if !s.workers.iter().any(|&(_, p)| p == pid) {
                        s.workers.push((w, pid));
                        added = true;
                    }
                }
            }
        }
        if added {
            if let Some((tx, _)) = &lock(&self.sampler).thread {
                // A full channel means a wake-up is pending already.
                let _ = tx.try_send(Wake::Sample);
            }
        }
    }
}

/// Reads every watched process once and records the sample.
fn sample(shared: &Mutex<Sampling>) {
    let mut pids = vec![(None, std::process::id() as i32)];
    pids.extend(lock(shared).workers.iter().map(|&(w, p)| (Some(w), p)));
    let at = monotonic_ns();
    let read: Vec<_> = pids
        .into_iter()
        .filter_map(|(w, pid)| process_usage(pid).map(|u| (w, pid, u)))
        .collect();
    let segment_bytes = forkgraph_worker::segments::stats().1;
    let mut s = lock(shared);
    let mut processes = Vec::with_capacity(read.len());
    for (worker, pid, u) in read {
        let cpu_percent = s
            .previous
            .insert(pid, (at, u.cpu_ns))
            .filter(|&(t, _)| at > t)
            .map(|(t, cpu)| 100.0 * u.cpu_ns.saturating_sub(cpu) as f64 / (at - t) as f64);
        processes.push(ProcessSample {
            worker,
            pid,
            cpu_percent,
            rss_bytes: u.rss_bytes,
        });
    }
    s.profile.samples.push(ResourceSample {
        at,
        cpu_percent: processes.iter().filter_map(|p| p.cpu_percent).sum(),
        rss_bytes: processes.iter().map(|p| p.rss_bytes).sum(),
        segment_bytes,
        processes,
    });
}

/// The sampler thread: a sample now, one every `interval`, and one when told to stop.
fn run_sampler(shared: Arc<Mutex<Sampling>>, wake: Receiver<Wake>, interval: Duration) {
    sample(&shared);
    // Until told to stop (or every run's sender is gone).
    while let Err(RecvTimeoutError::Timeout) | Ok(Wake::Sample) = wake.recv_timeout(interval) {
        sample(&shared);
    }
    sample(&shared);
}

impl Callbacks for ResourceProfiler {
    fn start(&self, _: &RunInfo) {
        let mut sampler = lock(&self.sampler);
        sampler.runs += 1;
        if sampler.thread.is_some() {
            return;
        }
        let (tx, rx) = crossbeam_channel::bounded(4);
        let shared = self.shared.clone();
        let interval = self.interval;
        match std::thread::Builder::new()
            .name("forkgraph-resources".into())
            .spawn(move || run_sampler(shared, rx, interval))
        {
            Ok(handle) => sampler.thread = Some((tx, handle)),
            Err(e) => log::warn!("resource profiler: cannot start its thread: {e}"),
        }
    }

    fn workers(&self, workers: &[WorkerId]) {
        if lock(&self.sampler).runs <= 1 {
            // The only run: processes of earlier runs (a dropped pool's workers, whose pids may
            // be reused by now) are no longer watched.
            let pids: Vec<i32> = workers
                .iter()
                .filter_map(|w| match w {
                    WorkerId::Process { pid, .. } => Some(*pid),
                    _ => None,
                })
                .collect();
            let mut s = lock(&self.shared);
            s.workers.retain(|(_, p)| pids.contains(p));
            s.previous
                .retain(|p, _| pids.contains(p) || *p == std::process::id() as i32);
        }
        self.watch(workers);
    }

    fn worker_event(&self, event: &WorkerEvent) {
        match event {
            WorkerEvent::Started { worker, .. } | WorkerEvent::Replaced { new: worker, .. } => {
                self.watch(&[*worker])
            }
            WorkerEvent::Died {
                worker: WorkerId::Process { pid, .. },
                ..
            } => {
                let mut s = lock(&self.shared);
                s.workers.retain(|&(_, p)| p != *pid);
                s.previous.remove(pid);
            }
            _ => {}
        }
    }

    fn finish(&self, _: bool) {
        let thread = {
            let mut sampler = lock(&self.sampler);
            sampler.runs = sampler.runs.saturating_sub(1);
            if sampler.runs > 0 {
                return;
            }
            sampler.thread.take()
        };
        if let Some((tx, handle)) = thread {
            let _ = tx.send(Wake::Stop);
            if handle.join().is_err() {
                log::warn!("resource profiler: its thread panicked");
            }
        }
    }
}

impl Profile {
    /// This profile with `resources`' samples (replacing any it had), drawn by
    /// [`Profile::svg`] under the Gantt chart and by [`Profile::chrome_trace`] as counter
    /// tracks.
    pub fn with_resources(mut self, resources: &ResourceProfile) -> Profile {
        self.resources = resources.samples.clone();
        self
    }
}
