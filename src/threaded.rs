//! The threaded scheduler: a reusable pool of threads; the engine runs in the calling thread.
//!
//! Jobs travel to the pool in batches over one crossbeam channel (which spins briefly before it
//! parks, so a busy pool hands over work without the ~44 us cost of waking a sleeping thread),
//! and each `get` has its own reply channel, so any number of `get` calls can share a pool.
//! When exactly one task is ready and nothing is running, the calling thread runs it itself: a
//! chain of tasks never pays a thread hand-off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::callbacks::WorkerId;
use crate::engine::{self, Done, Executor, Job, Output};
use crate::error::{BuildError, Error};
use crate::graph::Graph;
use crate::key::Keys;
use crate::scheduler::{plan, GetOptions, Scheduler};
use crate::spill::PoolMemory;
use crate::sync::run_job;

/// Most jobs in one message to the pool.
const BATCH: usize = 64;
/// Jobs in flight per thread.
const IN_FLIGHT_PER_THREAD: usize = 64;

mod calls;

/// What the pool's threads are sent.
enum Work {
    /// Jobs of a `get`, with where their completions go.
    Batch {
        jobs: Vec<Job>,
        reply: Sender<Vec<Done>>,
        /// A `get_async`'s stop flag: once its future is dropped, no job of the batch starts.
        cancel: Option<Arc<GetCancel>>,
    },
    /// Tasks of submitted calls (or `imap_unordered` items): results go to their mailboxes.
    Calls {
        calls: Arc<calls::Mailboxes>,
        tasks: Vec<calls::CallTask>,
    },
    /// Many call tasks shared by the threads that get this: each takes a share of what is
    /// left at a time, so uneven tasks keep every thread busy (`imap_unordered`).
    Queue {
        calls: Arc<calls::Mailboxes>,
        queue: Arc<calls::TaskQueue>,
    },
}

/// Stops a running `get_async` on a thread pool: its next wait returns [`Error::Cancelled`].
pub(crate) struct GetCancel {
    flag: AtomicBool,
    /// The get's reply channel, once its executor exists (to wake it).
    wake: Mutex<Option<Sender<Vec<Done>>>>,
}

impl GetCancel {
    fn new() -> GetCancel {
        GetCancel {
            flag: AtomicBool::new(false),
            wake: Mutex::new(None),
        }
    }

    fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = wake {
            let _ = tx.send(Vec::new());
        }
    }

    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

// Id of the pool whose thread this is (0: not a pool thread).
thread_local!(static POOL_OF_THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });

struct Inner {
    /// Unique per pool, so that a pool thread knows which pool it belongs to.
    id: usize,
    tx: Option<Sender<Work>>,
    threads: usize,
    /// Mailboxes of submitted calls.
    calls: Arc<calls::Mailboxes>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    memory: Option<PoolMemory>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.tx.take());
        let handles = std::mem::take(self.handles.get_mut().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

/// A pool of threads running tasks. Cloning shares the pool; it stops when the last clone drops.
#[derive(Clone)]
pub struct ThreadPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.inner.threads)
            .field(
                "memory_budget",
                &self.inner.memory.as_ref().map(|m| m.budget),
            )
            .finish()
    }
}

/// Builds a [`ThreadPool`].
#[derive(Debug, Clone, Default)]
pub struct ThreadPoolBuilder {
    threads: Option<usize>,
    memory_budget: Option<u64>,
    spill_dir: Option<std::path::PathBuf>,
}

impl ThreadPoolBuilder {
    /// Number of threads (default: the available parallelism, which respects CPU affinity and
    /// cgroup quotas).
    #[must_use]
    pub fn threads(mut self, n: usize) -> ThreadPoolBuilder {
        self.threads = Some(n);
        self
    }

    /// Bounds the bytes of results the pool's `get`s hold at once, together (concurrent
    /// `get`s share it; each also may start one task when it has nothing running); above it,
    /// results needed latest are spilled to disk (see [`GetOptions::memory_budget`], which
    /// overrides it per `get`, bounding that `get` on its own). [`ThreadPool::memory_stats`]
    /// reports the pool-wide figures.
    #[must_use]
    pub fn memory_budget(mut self, bytes: u64) -> ThreadPoolBuilder {
        self.memory_budget = Some(bytes);
        self
    }

    /// Where spilled results go (default: the system's temporary directory): `build` makes a
    /// directory `forkgraph-spill-<pid>-<n>` in it, removed when the pool is dropped (see
    /// [`GetOptions::spill_dir`]). Used only with a [`memory_budget`](Self::memory_budget).
    #[must_use]
    pub fn spill_dir(mut self, dir: impl Into<std::path::PathBuf>) -> ThreadPoolBuilder {
        self.spill_dir = Some(dir.into());
        self
    }

    /// Starts the threads.
    ///
    /// # Errors
    /// When `threads(0)` was asked, a thread cannot be spawned, or (with a memory budget) the
    /// spill directory is missing or not writable.
    pub fn build(self) -> Result<ThreadPool, BuildError> {
        let threads = match self.threads {
            Some(0) => return Err(BuildError::new("a thread pool needs at least one thread")),
            Some(n) => n,
            None => crate::default_parallelism(),
        };
        let memory = match self.memory_budget {
            Some(b) => Some(PoolMemory::new(b, self.spill_dir.as_deref())?),
            None => None,
        };
        static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::unbounded::<Work>();
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx: Receiver<Work> = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("forkgraph-{i}"))
                .spawn(move || {
                    POOL_OF_THREAD.with(|p| p.set(id));
                    while let Ok(work) = rx.recv() {
                        match work {
                            Work::Batch {
                                jobs,
                                reply,
                                cancel,
                            } => {
                                // A cancelled get no longer waits for its jobs: the rest of
                                // the batch is dropped unstarted.
                                let done: Vec<Done> = jobs
                                    .iter()
                                    .take_while(|_| !cancel.as_ref().is_some_and(|c| c.cancelled()))
                                    .map(|j| run_job(j, WorkerId::Thread(i)))
                                    .collect();
                                let _ = reply.send(done);
                            }
                            Work::Calls { calls, tasks } => {
                                calls.run(&tasks, WorkerId::Thread(i));
                            }
                            Work::Queue { calls, queue } => {
                                calls.run_queue(&queue, WorkerId::Thread(i));
                            }
                        }
                    }
                })
                .map_err(|e| BuildError::io("cannot spawn a pool thread", e))?;
            handles.push(h);
        }
        Ok(ThreadPool {
            inner: Arc::new(Inner {
                id,
                tx: Some(tx),
                threads,
                calls: Arc::default(),
                handles: Mutex::new(handles),
                memory,
            }),
        })
    }
}

impl ThreadPool {
    /// A builder.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    /// What the `get`s under the pool's [`memory_budget`](ThreadPoolBuilder::memory_budget)
    /// hold together (held now, the peak, spilled and read back, over all calls since the
    /// pool was built); `None` without a budget.
    pub fn memory_stats(&self) -> Option<Arc<crate::MemoryStats>> {
        self.inner.memory.as_ref().map(|m| m.ledger.clone())
    }

    /// A pool with the default number of threads.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn new() -> Result<ThreadPool, BuildError> {
        ThreadPool::builder().build()
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }
}

struct Threaded<'a> {
    pool: &'a Inner,
    pending: Vec<Job>,
    in_flight: usize,
    reply_tx: Sender<Vec<Done>>,
    reply_rx: Receiver<Vec<Done>>,
    /// Set for a `get_async`: stops the get when its future is dropped.
    cancel: Option<Arc<GetCancel>>,
}

impl Executor for Threaded<'_> {
    fn slots(&self) -> usize {
        self.pool.threads * IN_FLIGHT_PER_THREAD
    }

    fn parallelism(&self) -> usize {
        self.pool.threads
    }

    fn workers(&self) -> Vec<WorkerId> {
        std::iter::once(WorkerId::Caller)
            .chain((0..self.pool.threads).map(WorkerId::Thread))
            .collect()
    }

    fn submit(&mut self, job: Job) {
        self.pending.push(job);
    }

    fn wait(&mut self, out: &mut Vec<Done>) -> Result<(), Error> {
        let cancelled = |c: &Option<Arc<GetCancel>>| c.as_ref().is_some_and(|c| c.cancelled());
        if cancelled(&self.cancel) {
            return Err(Error::Cancelled);
        }
        if self.in_flight == 0 && self.pending.len() == 1 {
            let job = self.pending.pop().expect("one pending job");
            out.push(run_job(&job, WorkerId::Caller));
            return Ok(());
        }
        if !self.pending.is_empty() {
            let tx = self.pool.tx.as_ref().expect("pool is running");
            let per = self
                .pending
                .len()
                .div_ceil(self.pool.threads)
                .clamp(1, BATCH);
            let mut jobs = std::mem::take(&mut self.pending);
            while !jobs.is_empty() {
                let rest = jobs.split_off(per.min(jobs.len()));
                self.in_flight += jobs.len();
                tx.send(Work::Batch {
                    jobs,
                    reply: self.reply_tx.clone(),
                    cancel: self.cancel.clone(),
                })
                .map_err(|_| Error::Scheduler("thread pool stopped".into()))?;
                jobs = rest;
            }
        }
        let first = self
            .reply_rx
            .recv()
            .map_err(|_| Error::Scheduler("thread pool stopped".into()))?;
        if cancelled(&self.cancel) {
            return Err(Error::Cancelled);
        }
        self.in_flight -= first.len();
        out.extend(first);
        while let Ok(more) = self.reply_rx.try_recv() {
            self.in_flight -= more.len();
            out.extend(more);
        }
        Ok(())
    }
}

impl Scheduler for ThreadPool {
    fn get_with(&self, graph: &Graph, keys: &Keys, opts: &GetOptions) -> Result<Output, Error> {
        self.get_cancellable(graph, keys, opts, None)
    }
}

impl ThreadPool {
    /// `get`; with `cancel`, a `get_async` that its future's drop stops.
    fn get_cancellable(
        &self,
        graph: &Graph,
        keys: &Keys,
        opts: &GetOptions,
        cancel: Option<Arc<GetCancel>>,
    ) -> Result<Output, Error> {
        let plan = plan(graph, keys, opts)?;
        let budget = crate::spill::budget_for(opts, self.inner.memory.as_ref(), 0)?;
        if POOL_OF_THREAD.with(|p| p.get()) == self.inner.id {
            // A task of this pool asks it for more work: waiting for other pool threads could
            // deadlock (all of them may be waiting the same way), so run it right here (with
            // the get's options: keep_going, the memory budget, callbacks).
            return crate::sync::run_inline(&plan, opts, budget);
        }
        let (reply_tx, reply_rx) = crossbeam_channel::unbounded();
        if let Some(c) = &cancel {
            *c.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply_tx.clone());
            if c.cancelled() {
                return Err(Error::Cancelled);
            }
        }
        let mut exec = Threaded {
            pool: &self.inner,
            pending: Vec::new(),
            in_flight: 0,
            reply_tx,
            reply_rx,
            cancel,
        };
        engine::run_with(&plan, &mut exec, &opts.callbacks, opts.keep_going, budget)
    }
}
