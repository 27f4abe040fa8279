//! The process-pool scheduler: tasks run in worker processes forked by a fork server.
//!
//! See ARCHITECTURE.md ("Process pool") for the design. In short: building a pool re-executes
//! the current executable as a single-threaded fork server, which forks the workers; workers
//! talk to the pool over Unix stream sockets (postcard frames) and publish the task they run in a
//! shared page. A worker that dies is seen at once (end-of-file on its socket), reaped by the
//! fork server (which reports the signal or exit code), blamed precisely through its page, and
//! replaced. Any number of `get`, `map` and submitted calls share one pool at the same time (see
//! `shared`: whichever waiting caller finds the workers free drives them for everybody).

pub(crate) mod calls;
mod executor;
mod logs;
pub(crate) mod runner;
pub(crate) mod shared;

use std::sync::Arc;
use std::time::Duration;

use forkgraph_worker::proto::Limits;
pub use forkgraph_worker::sandbox::{Layer, LayerStatus, Sandbox, SandboxError, SandboxReport};

use crate::engine::{self, Output};
use crate::error::{BuildError, Error};
use crate::graph::{Arg, Graph, Task};
use crate::key::{Key, Keys};
use crate::scheduler::{plan, GetOptions, Scheduler};
use crate::spill::PoolMemory;

pub use calls::Unordered;
pub(crate) use runner::Pool;

/// Settings of a pool.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) retries: u32,
    pub(crate) max_worker_deaths: u32,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) limits: Limits,
    pub(crate) max_tasks_per_worker: Option<u64>,
    pub(crate) handle_interrupt: bool,
    /// Most bytes of shared segments the parent holds before it stops starting new tasks.
    pub(crate) segment_budget: Option<u64>,
    /// How long the fork server may take to answer a request.
    pub(crate) server_timeout: Duration,
    /// The function every worker runs once after it starts, with its arguments.
    pub(crate) init: Option<(String, Vec<Arg>)>,
    /// What workers may do (see [`Sandbox`]); `None`: everything their uid may.
    pub(crate) sandbox: Option<Arc<Sandbox>>,
    /// The memory budget and where spill files go (see `spill`).
    pub(crate) memory_budget: Option<u64>,
    pub(crate) spill_dir: Option<std::path::PathBuf>,
    /// Set up by `build` from the two above.
    pub(crate) memory: Option<PoolMemory>,
    /// Most units handed to one worker at once (`None`: adaptive).
    pub(crate) max_queue: Option<usize>,
}

/// Default of [`ProcessPoolBuilder::fork_server_timeout`].
pub const DEFAULT_FORK_SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default size from which arrays travel as shared segments instead of inside messages.
pub const DEFAULT_SEGMENT_THRESHOLD: u64 = 64 * 1024;

/// Builds a [`ProcessPool`].
#[derive(Debug, Clone)]
pub struct ProcessPoolBuilder {
    cfg: Config,
}

impl Default for ProcessPoolBuilder {
    fn default() -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            cfg: Config {
                workers: crate::default_parallelism(),
                retries: 0,
                max_worker_deaths: 3,
                task_timeout: None,
                limits: Limits {
                    segment_threshold: Some(DEFAULT_SEGMENT_THRESHOLD),
                    recycle_segments: true,
                    ..Limits::default()
                },
                max_tasks_per_worker: None,
                handle_interrupt: true,
                segment_budget: None,
                server_timeout: DEFAULT_FORK_SERVER_TIMEOUT,
                init: None,
                sandbox: None,
                memory_budget: None,
                spill_dir: None,
                memory: None,
                max_queue: None,
            },
        }
    }
}

impl ProcessPoolBuilder {
    /// Number of worker processes (default: the available parallelism).
    #[must_use]
    pub fn workers(mut self, n: usize) -> ProcessPoolBuilder {
        self.cfg.workers = n;
        self
    }

    /// How many times a task is re-run on a fresh worker after its worker died (default 0).
    /// [`Graph::set_options`] overrides it per task.
    ///
    /// Only deaths the task surely caused count: it ran alone on a worker that had run nothing
    /// before. A worker that dies after running other tasks, or with other tasks queued, could
    /// have been killed by any of them (or by a thread one left behind), so the task it was
    /// running is first run once more that way, whatever `retries` says; if it kills that worker
    /// too, the death counts. A task with side effects may therefore run twice before it fails.
    #[must_use]
    pub fn retries(mut self, n: u32) -> ProcessPoolBuilder {
        self.cfg.retries = n;
        self
    }

    /// A task that has killed this many workers fails with
    /// [`TaskErrorKind::KilledWorkers`](crate::TaskErrorKind::KilledWorkers), whatever its
    /// retries (default 3).
    #[must_use]
    pub fn max_worker_deaths(mut self, n: u32) -> ProcessPoolBuilder {
        self.cfg.max_worker_deaths = n.max(1);
        self
    }

    /// Time limit of every task: its worker is killed and the task fails with
    /// [`TaskErrorKind::TimedOut`](crate::TaskErrorKind::TimedOut). [`Graph::set_options`]
    /// overrides it per task.
    #[must_use]
    pub fn task_timeout(mut self, d: Duration) -> ProcessPoolBuilder {
        self.cfg.task_timeout = Some(d);
        self
    }

    /// Limits each worker's memory: its heap (RLIMIT_DATA) and the shared segments it creates
    /// (results it sends, `SharedVec`s), together: each live segment lowers the heap's limit by
    /// its size. A task whose allocation fails dies and fails with
    /// [`TaskErrorKind::OutOfMemory`](crate::TaskErrorKind::OutOfMemory); a `SharedVec` that
    /// does not fit is an `Err` the task can return. Segments a worker maps as inputs are not
    /// counted (their producer's are).
    #[must_use]
    pub fn memory_limit(mut self, bytes: u64) -> ProcessPoolBuilder {
        self.cfg.limits.memory_bytes = Some(bytes);
        self
    }

    /// Limits the CPU time of each task (RLIMIT_CPU, re-armed per task; whole seconds, at
    /// least 1). A task over it fails with
    /// [`TaskErrorKind::CpuTimeExceeded`](crate::TaskErrorKind::CpuTimeExceeded).
    #[must_use]
    pub fn cpu_limit(mut self, d: Duration) -> ProcessPoolBuilder {
        self.cfg.limits.cpu_seconds = Some(d.as_secs().max(1));
        self
    }

    /// Replaces a worker after it has run this many tasks (against leaks in task code).
    #[must_use]
    pub fn max_tasks_per_worker(mut self, n: u64) -> ProcessPoolBuilder {
        self.cfg.max_tasks_per_worker = Some(n.max(1));
        self
    }

    /// At most `n` units (a task, or a chain of tasks) handed to one worker at once (default:
    /// adaptive, about 2 ms of work, 2 to 64). With 1 a worker gets its next task only when it
    /// is free, so no task waits behind a long one while another worker is idle: for tasks that
    /// are long and uneven (the `forkgraph` command runner uses it). Costs one round trip
    /// (~50 us) between tasks.
    #[must_use]
    pub fn max_queue(mut self, n: usize) -> ProcessPoolBuilder {
        self.cfg.max_queue = Some(n.max(1));
        self
    }

    /// Whether Ctrl-C (SIGINT) during `get` stops the workers and makes `get` return
    /// [`Error::Interrupted`] (default true). Outside `get`, SIGINT keeps its default action.
    #[must_use]
    pub fn handle_ctrl_c(mut self, on: bool) -> ProcessPoolBuilder {
        self.cfg.handle_interrupt = on;
        self
    }

    /// Arrays of at least this many bytes travel between processes as sealed shared segments
    /// (passed by fd, mapped read-only, never copied) rather than inside messages (default
    /// [`DEFAULT_SEGMENT_THRESHOLD`], 64 KiB). `None` sends every array inline.
    #[must_use]
    pub fn segment_threshold(mut self, bytes: Option<u64>) -> ProcessPoolBuilder {
        self.cfg.limits.segment_threshold = bytes;
        self
    }

    /// Whether workers reuse the segments of results nobody maps any more (default true). Fresh
    /// shared memory costs a page fault per 4 KiB on first write; reused memory is written at
    /// memory speed. Each worker keeps at most 256 MiB of free segments (and of cached mappings).
    ///
    /// While others read a recycled segment, its producer's mapping is inaccessible, so a wild
    /// write faults; but task code that calls `mprotect` on purpose could make it writable
    /// again. For untrusted tasks turn recycling off: every segment is then sealed against all
    /// writes by the kernel.
    #[must_use]
    pub fn recycle_segments(mut self, on: bool) -> ProcessPoolBuilder {
        self.cfg.limits.recycle_segments = on;
        self
    }

    /// Backpressure on shared memory: while the results the pool holds in shared segments add
    /// up to more than `bytes` (this process's mappings; the free segments and cached mappings
    /// workers keep for recycling, at most 512 MiB per worker, are not counted), no new task starts unless nothing else is running (so a graph
    /// always makes progress, one task at a time at worst). Default: no budget.
    #[must_use]
    pub fn segment_budget(mut self, bytes: u64) -> ProcessPoolBuilder {
        self.cfg.segment_budget = Some(bytes);
        self
    }

    /// How long the parent waits for the fork server to start or reap a worker before it kills
    /// the server and starts a new one (default [`DEFAULT_FORK_SERVER_TIMEOUT`], 10 s): a task
    /// that stops or freezes the server cannot hang the pool.
    #[must_use]
    pub fn fork_server_timeout(mut self, d: Duration) -> ProcessPoolBuilder {
        self.cfg.server_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// A registered function every worker runs once, with these arguments (values, not keys),
    /// right after it starts and before any task: after every restart too, as Python's
    /// `Pool(initializer=...)`. Workers never run `main`, so state that tasks need in every
    /// worker (a configuration in a `OnceLock`, a thread pool, a connection) is made here.
    /// `build` waits for every worker's init; its failure (an error, a panic or a crash) is a
    /// build error, and in a replacement worker the error of the `get` that needed it. An init
    /// must finish within [`fork_server_timeout`](ProcessPoolBuilder::fork_server_timeout); a
    /// worker gets tasks only once its init is done, so init time never counts against a task's
    /// timeout.
    #[must_use]
    pub fn worker_init(mut self, function: &str, args: Vec<Arg>) -> ProcessPoolBuilder {
        self.cfg.init = Some((function.to_owned(), args));
        self
    }

    /// Runs every worker in `sandbox` (see [`Sandbox`] and README "Running untrusted code"):
    /// Landlock, seccomp, namespaces and rlimits, applied in each worker after the fork and
    /// before any task. Shared results are then never recycled (each is sealed against every
    /// write), the sandbox's memory limit applies unless
    /// [`memory_limit`](ProcessPoolBuilder::memory_limit) is set, and `build` fails when the
    /// kernel cannot provide a layer (unless [`Sandbox::best_effort`]).
    #[must_use]
    pub fn sandbox(mut self, sandbox: Sandbox) -> ProcessPoolBuilder {
        self.cfg.sandbox = Some(Arc::new(sandbox));
        self
    }

    /// Bounds the memory results take, in this process and in the workers together. Each
    /// worker's caches (free recyclable segments, and mappings of recycled inputs) are capped
    /// at `bytes / (8 * workers)` each (at most 256 MiB, the default), and those caps come off
    /// the budget; the rest bounds the results the pool holds for all its `get`s together. Above it, tasks
    /// that may return large results are held back while others run, then held results needed
    /// latest are spilled to disk and read back into shared segments when a dependent starts
    /// (see [`GetOptions::memory_budget`], which overrides it per `get`). The budget is the
    /// pool's: `get`s and `get_async`s running at the same time share it (one ledger of held
    /// and expected bytes; each call spills its own results when the total is over, and a
    /// call with nothing running still starts one task, so together they stay within the
    /// budget plus about one task's inputs and result per call). A `get` with a budget of its
    /// own is bounded on its own. `map` and `submit` results go straight to their caller and
    /// are not counted. [`ProcessPool::memory_stats`] reports the pool-wide figures.
    #[must_use]
    pub fn memory_budget(mut self, bytes: u64) -> ProcessPoolBuilder {
        self.cfg.memory_budget = Some(bytes);
        self
    }

    /// Where spilled results go (default: the system's temporary directory): `build` makes a
    /// directory `forkgraph-spill-<pid>-<n>` in it, removed when the pool is dropped (see
    /// [`GetOptions::spill_dir`]). Used only with a [`memory_budget`](Self::memory_budget).
    #[must_use]
    pub fn spill_dir(mut self, dir: impl Into<std::path::PathBuf>) -> ProcessPoolBuilder {
        self.cfg.spill_dir = Some(dir.into());
        self
    }

    /// Starts the fork server and the workers.
    ///
    /// Open files: every result the pool holds in a shared segment is an fd in this process.
    /// The pool raises this process's soft `RLIMIT_NOFILE` towards its hard limit only when the
    /// segments it holds need it, never lowers it, and holds back new tasks before the limit is
    /// reached (a `get` whose requested results cannot all be held fails with an error naming
    /// the limit).
    ///
    /// # Errors
    /// When `workers(0)` was asked, the executable cannot be re-executed, a worker does not
    /// start, or (with a memory budget) the spill directory is missing or not writable.
    pub fn build(mut self) -> Result<ProcessPool, BuildError> {
        if self.cfg.workers == 0 {
            return Err(BuildError::new("a process pool needs at least one worker"));
        }
        if let Some(b) = self.cfg.memory_budget {
            self.cfg.memory = Some(PoolMemory::new(b, self.cfg.spill_dir.as_deref())?);
            let per = (b / (8 * self.cfg.workers as u64)).min(DEFAULT_CACHE_BYTES);
            self.cfg.limits.cache_bytes = Some(per);
        }
        let init = match &self.cfg.init {
            Some((function, args)) => Some(compile_init(function, args)?),
            None => None,
        };
        let mut cfg = self.cfg;
        if let Some(s) = &cfg.sandbox {
            cfg.limits.recycle_segments = false;
            cfg.limits.memory_bytes = cfg.limits.memory_bytes.or(s.memory());
            // The pool's memory limit, when set, is the one the sandbox enforces.
            let s = match cfg.limits.memory_bytes {
                Some(m) => (**s).clone().memory_limit(m),
                None => (**s).clone(),
            };
            let report = s.check().map_err(|e| BuildError::new(e.to_string()))?;
            log::debug!("forkgraph sandbox: {report}");
        }
        let pool = Pool::start(&cfg, init).map_err(build_error)?;
        let cfg = Arc::new(cfg);
        let runner = runner::Runner::new(pool, Arc::clone(&cfg));
        let shared = shared::Shared::new(runner)
            .map_err(|e| BuildError::io("cannot make the pool's wake-up pipe", e))?;
        Ok(ProcessPool {
            inner: Arc::new(Inner {
                shared: Arc::new(shared),
            }),
            cfg,
        })
    }
}

/// A start failure as a build error, keeping the system error as its `source()`.
fn build_error(e: forkgraph_worker::host::StartError) -> BuildError {
    match e.into_parts() {
        (message, Some(io)) => BuildError::io(message, io),
        (message, None) => BuildError::new(message),
    }
}

/// A start failure while running, keeping the system error as its `source()`.
pub(crate) fn scheduler_error(e: forkgraph_worker::host::StartError) -> Error {
    match e.into_parts() {
        (message, Some(io)) => Error::system(message, io),
        (message, None) => Error::Scheduler(message),
    }
}

/// Checks and compiles the `worker_init` call, as a graph task would be.
fn compile_init(
    function: &str,
    args: &[Arg],
) -> Result<Arc<forkgraph_worker::TaskSpec>, BuildError> {
    let mut g = Graph::new();
    g.insert("worker_init", Task::new(function, args.to_vec()));
    let plan = plan(&g, &Keys::One("worker_init".into()), &GetOptions::default())
        .map_err(|e| BuildError::new(format!("worker_init: {e}")))?;
    let node = plan
        .keys
        .iter()
        .position(|k| *k == Key::from("worker_init"))
        .expect("the requested key is planned");
    match &plan.kinds[node] {
        crate::plan::Kind::Task(s) if plan.deps.get(node as u32).is_empty() => {
            Ok(Arc::new(plan.specs.get(*s).to_spec()))
        }
        _ => Err(BuildError::new(format!(
            "worker_init `{function}`: its arguments must be values, not keys"
        ))),
    }
}

/// A pool of worker processes running tasks. Cloning shares the pool; the workers stop when the
/// last clone drops.
///
/// # What a worker is
///
/// Workers are forked from a fork server (this executable, re-executed when the pool is built)
/// and never run `main`: state made there (a `OnceLock` configuration, a logger, a rayon pool)
/// does not exist in them. They inherit the environment and working directory this process had
/// at [`build`](ProcessPoolBuilder::build), every registered function, and stdout and stderr.
/// [`worker_init`](ProcessPoolBuilder::worker_init) runs a function once in each worker (also
/// after restarts) before any task. `log` records and `tracing` events that tasks emit are
/// re-emitted in this process, tagged with the worker's pid and the task's key, at the levels
/// enabled here when the worker started. SIGPIPE is ignored in workers, as in a Rust `main`.
///
/// ```
/// use forkgraph::{graph, key, ProcessPool, Scheduler};
///
/// #[forkgraph::task]
/// fn square(x: i64) -> i64 {
///     x * x
/// }
///
/// let pool = ProcessPool::builder().workers(2).build().unwrap();
/// let g = graph! { "a" => 7, "b" => (square, key("a")) };
/// assert_eq!(pool.get(&g, "b").unwrap().to::<i64>().unwrap(), 49);
/// let squares = pool.map("square", [1, 2, 3]).unwrap();
/// assert_eq!(squares, vec![1.into(), 4.into(), 9.into()]);
/// ```
#[derive(Clone)]
pub struct ProcessPool {
    inner: Arc<Inner>,
    cfg: Arc<Config>,
}

/// What the clones of one pool share; when the last is gone, the driver thread stops (once
/// no submitted call is left) and the workers with the shared state.
struct Inner {
    shared: Arc<shared::Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.cfg.workers)
            .field("retries", &self.cfg.retries)
            .field("max_worker_deaths", &self.cfg.max_worker_deaths)
            .field("task_timeout", &self.cfg.task_timeout)
            .field("memory_budget", &self.cfg.memory_budget)
            .finish()
    }
}

impl ProcessPool {
    /// A builder.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::default()
    }

    /// A pool with default settings.
    ///
    /// # Errors
    /// As [`ProcessPoolBuilder::build`].
    pub fn new() -> Result<ProcessPool, BuildError> {
        ProcessPool::builder().build()
    }

    pub(crate) fn shared(&self) -> &Arc<shared::Shared> {
        &self.inner.shared
    }

    /// Whether the pool recycles shared segments (its workers then map recyclable ones).
    #[cfg(feature = "mpi")]
    pub(crate) fn recycles_segments(&self) -> bool {
        self.cfg.limits.recycle_segments
    }

    /// Process ids of the current workers (waits while a call drives the workers).
    pub fn worker_pids(&self) -> Vec<i32> {
        let shared = self.shared();
        shared.with_runner(|r| r.pool.pids()).unwrap_or_else(|| {
            // Asked from a waker or log callback of this pool's own leader: the workers as
            // of the last time the pool was free.
            shared
                .last_workers()
                .1
                .iter()
                .filter_map(|w| match w {
                    crate::callbacks::WorkerId::Process { pid, .. } => Some(*pid),
                    _ => None,
                })
                .collect()
        })
    }

    /// Process id of the fork server.
    #[doc(hidden)]
    pub fn fork_server_pid(&self) -> i32 {
        self.shared()
            .with_runner(|r| r.pool.server_pid())
            .unwrap_or(0)
    }

    /// How many workers were started since the pool was built (initial ones included).
    #[doc(hidden)]
    pub fn workers_started(&self) -> u64 {
        let shared = self.shared();
        shared
            .with_runner(|r| r.pool.started())
            .unwrap_or_else(|| shared.last_workers().0)
    }

    /// Kills one worker (SIGKILL) and waits until its replacement is ready; returns the new
    /// worker's pid. For benchmarks and tests of restarts.
    ///
    /// # Errors
    /// When the replacement cannot be started.
    #[doc(hidden)]
    pub fn restart_worker(&self, index: usize) -> Result<i32, Error> {
        self.shared()
            .with_runner(|r| r.pool.restart(index))
            .ok_or_else(|| {
                Error::Scheduler("restart_worker from a waker or log callback of the pool".into())
            })?
            .map_err(scheduler_error)
    }
}

thread_local!(static IN_GET: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });

/// Marks the current thread as running a `get` on one pool (callbacks run in this thread).
struct InGet(usize);

impl InGet {
    fn enter(pool: usize) -> InGet {
        InGet(IN_GET.with(|g| g.replace(pool)))
    }
}

impl Drop for InGet {
    fn drop(&mut self) {
        IN_GET.with(|g| g.set(self.0));
    }
}

impl ProcessPool {
    /// What the `get`s under the pool's [`memory_budget`](ProcessPoolBuilder::memory_budget)
    /// hold together (held now, the peak, spilled and read back, over all calls since the
    /// pool was built); `None` without a budget. A `get` with a budget of its own
    /// ([`GetOptions::memory_budget`]) is not counted here.
    pub fn memory_stats(&self) -> Option<Arc<crate::MemoryStats>> {
        self.cfg.memory.as_ref().map(|m| m.ledger.clone())
    }

    /// The memory budget of one `get`: its own or the pool's, less what the workers' caches
    /// may hold.
    pub(crate) fn budget(&self, opts: &GetOptions) -> Result<Option<crate::spill::Budget>, Error> {
        // Without recycling (also in a sandbox) workers cache nothing.
        let caches = match self.cfg.limits.recycle_segments {
            true => self.cfg.limits.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES),
            false => 0,
        };
        let reserved = 2 * caches * self.cfg.workers as u64;
        crate::spill::budget_for(opts, self.cfg.memory.as_ref(), reserved)
    }
}

impl Scheduler for ProcessPool {
    fn get_with(&self, graph: &Graph, keys: &Keys, opts: &GetOptions) -> Result<Output, Error> {
        let plan = Arc::new(plan(graph, keys, opts)?);
        let budget = self.budget(opts)?;
        let me = Arc::as_ptr(&self.inner) as usize;
        if IN_GET.with(|g| g.get()) == me {
            return Err(Error::Scheduler(
                "get on a process pool from inside one of its own callbacks would wait for \
                 itself; use another scheduler there"
                    .into(),
            ));
        }
        let _inside = InGet::enter(me);
        let watched = !opts.callbacks.is_empty();
        let labels: Arc<dyn runner::Labels> = plan.clone();
        let mut exec = executor::ProcExec::new(self.shared(), labels, watched);
        engine::run_with(&plan, &mut exec, &opts.callbacks, opts.keep_going, budget)
    }
}

/// What each worker caches at most by default: free segments, and mappings of recycled inputs
/// (each).
const DEFAULT_CACHE_BYTES: u64 = 256 << 20;
