//! `map`, `map_results`, `imap_unordered`, `submit` and `get_async` on a thread pool and on the
//! sync scheduler, with the process pool's types ([`Submitted`], [`Unordered`], [`GetFuture`]),
//! so code moves between schedulers by changing the line that makes the scheduler.
//!
//! A submitted call (or an `imap_unordered` item) is a caller with a mailbox (`Mailboxes`):
//! its task goes to the pool's threads with the other work (or runs at once in the calling
//! thread, on the sync scheduler, or when a task of the pool submits to its own pool), and
//! the thread that ran it leaves the result in the mailbox, then wakes the waiting thread or
//! the future (outside the lock). A task that has not started when its call is cancelled is
//! dropped; a thread cannot be stopped, so a running one finishes and its result is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use forkgraph_worker::exec::SpecRef;
use forkgraph_worker::Value;

use super::{ThreadPool, Work, POOL_OF_THREAD};
use crate::call::Callable;
use crate::callbacks::WorkerId;
use crate::engine::{Output, Ran};
use crate::error::TaskError;
use crate::error::{Error, TaskErrorKind};
use crate::graph::Graph;
use crate::handle::{Call, Calls, GetFuture, Submitted};
use crate::key::{Key, Keys};
use crate::plan::{Kind, Plan};
use crate::process::calls::{keyed_graph, output_nodes, values_not_keys, Unordered};
use crate::process::runner::{Finished, TaskFailed};
use crate::scheduler::{plan, GetOptions, Scheduler};
use crate::sync::SyncScheduler;

/// One call's task, as a pool thread runs it.
pub(crate) struct CallTask {
    caller: u64,
    tag: u32,
    spec: SpecRef,
    /// Set when its call is cancelled or dropped: the task is not started.
    gone: Arc<AtomicBool>,
}

impl CallTask {
    /// Runs the task on `worker` (its caller still there), timing it.
    fn run(&self, worker: WorkerId) -> Finished {
        let start = forkgraph_worker::host::now();
        let result = forkgraph_worker::run(&self.spec, &[] as &[Value])
            .map(Arc::new)
            .map_err(|f| TaskFailed {
                function: f.function,
                kind: TaskErrorKind::Call(f.error),
            });
        Finished {
            caller: self.caller,
            tag: self.tag,
            result,
            ran: Ran {
                worker,
                start,
                end: forkgraph_worker::host::now(),
                started: true,
            },
        }
    }
}

/// Call tasks that several pool threads take from (see `Mailboxes::run_queue`).
pub(crate) struct TaskQueue {
    tasks: Mutex<std::collections::VecDeque<CallTask>>,
    /// The threads taking from it.
    takers: usize,
    /// Time per task of the last share run, in ns (0: none has run yet).
    per_task_ns: AtomicU64,
}

/// A share's results are delivered when the whole share has run: shares of tasks this slow
/// or slower are one task, so each result arrives as it finishes.
const SHARE_NS: u64 = 1_000_000;

impl TaskQueue {
    /// The next share: half of what is left divided among the takers (at least one), so
    /// shares shrink towards the end and no thread holds long tasks that others could run;
    /// and no more than `SHARE_NS` of work by the last share's pace (one task until one has
    /// run), so results of slow tasks are not held back behind others.
    fn take(&self) -> Vec<CallTask> {
        let pace = self.per_task_ns.load(Ordering::Relaxed);
        let cap = match pace {
            0 => 1,
            ns => (SHARE_NS / ns).clamp(1, super::BATCH as u64) as usize,
        };
        let mut q = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len().div_ceil(2 * self.takers).min(super::BATCH).min(cap);
        q.drain(..n).collect()
    }
}

/// A call's mailbox.
#[derive(Default)]
struct Mailbox {
    done: Vec<Finished>,
    cancelled: bool,
    waker: Option<Waker>,
    /// Shared with its tasks (see `CallTask::gone`).
    gone: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    callers: HashMap<u64, Mailbox>,
    next: u64,
    /// Threads blocked in `wait` or `wait_any` (the condvar is notified only when some are).
    waiters: usize,
}

/// The mailboxes of a thread pool's (or the sync scheduler's) background calls.
#[derive(Default)]
pub(crate) struct Mailboxes {
    state: Mutex<State>,
    cond: Condvar,
}

impl Mailboxes {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new caller, and the flag its tasks check before they start.
    fn register(&self) -> (u64, Arc<AtomicBool>) {
        let mut st = self.lock();
        st.next += 1;
        let id = st.next;
        let mailbox = Mailbox::default();
        let gone = Arc::clone(&mailbox.gone);
        st.callers.insert(id, mailbox);
        (id, gone)
    }

    /// Runs `tasks` on `worker` (skipping those whose call is gone) and delivers the results.
    pub(crate) fn run(&self, tasks: &[CallTask], worker: WorkerId) {
        let mut done = Vec::with_capacity(tasks.len());
        for t in tasks {
            if !t.gone.load(Ordering::Acquire) {
                done.push(t.run(worker));
            }
        }
        self.deliver(done);
    }

    /// Runs shares of `queue` on `worker` until it is empty, delivering each share's results.
    pub(crate) fn run_queue(&self, queue: &TaskQueue, worker: WorkerId) {
        loop {
            let share = queue.take();
            if share.is_empty() {
                return;
            }
            let start = Instant::now();
            self.run(&share, worker);
            let ns = start.elapsed().as_nanos() as u64 / share.len() as u64;
            queue.per_task_ns.store(ns.max(1), Ordering::Relaxed);
        }
    }

    /// Leaves finished tasks in their callers' mailboxes; wakes them outside the lock (a
    /// waker may call into the pool).
    fn deliver(&self, done: Vec<Finished>) {
        if done.is_empty() {
            return;
        }
        let mut st = self.lock();
        let mut wakers = Vec::new();
        for f in done {
            if let Some(c) = st.callers.get_mut(&f.caller) {
                c.done.push(f);
                wakers.extend(c.waker.take());
            }
        }
        let waiters = st.waiters > 0;
        drop(st);
        if waiters {
            self.cond.notify_all();
        }
        for w in wakers {
            w.wake();
        }
    }

    /// Waits on the condvar, counted in `waiters` (for at most `timeout`).
    fn block<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        st.waiters += 1;
        let mut st = match timeout {
            None => self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
            Some(t) => {
                self.cond
                    .wait_timeout(st, t)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
        st.waiters -= 1;
        st
    }

    fn take(c: &mut Mailbox) -> Option<Result<Vec<Finished>, Error>> {
        if c.cancelled {
            return Some(Err(Error::Cancelled));
        }
        (!c.done.is_empty()).then(|| Ok(std::mem::take(&mut c.done)))
    }
}

impl Calls for Mailboxes {
    fn poll_caller(
        &self,
        caller: u64,
        waker: Option<&Waker>,
    ) -> Option<Result<Vec<Finished>, Error>> {
        let mut st = self.lock();
        let c = st.callers.get_mut(&caller)?;
        if let Some(r) = Mailboxes::take(c) {
            return Some(r);
        }
        let old = crate::handle::replace_waker(&mut c.waker, waker);
        drop(st);
        drop(old);
        None
    }

    fn wait(
        &self,
        caller: u64,
        out: &mut Vec<Finished>,
        deadline: Option<Instant>,
    ) -> Result<bool, Error> {
        let mut st = self.lock();
        loop {
            let Some(c) = st.callers.get_mut(&caller) else {
                return Err(Error::Cancelled);
            };
            match Mailboxes::take(c) {
                Some(Ok(mut d)) => {
                    out.append(&mut d);
                    return Ok(true);
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
            st = match deadline {
                None => self.block(st, None),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    self.block(st, Some(d - now))
                }
            };
        }
    }

    fn wait_any(&self, callers: &[u64], timeout: Option<Duration>) -> Option<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            let ready = callers.iter().position(|id| {
                st.callers
                    .get(id)
                    .is_none_or(|c| !c.done.is_empty() || c.cancelled)
            });
            if ready.is_some() {
                return ready;
            }
            st = match deadline {
                None => self.block(st, None),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.block(st, Some(d - now))
                }
            };
        }
    }

    fn leave(&self, caller: u64) {
        // Dropped after the lock: a waker's drop may call into the pool.
        let gone = self.lock().callers.remove(&caller);
        if let Some(c) = &gone {
            c.gone.store(true, Ordering::Release);
        }
        drop(gone);
    }
}

/// The task of each requested node, tagged with its node.
fn item_tasks(
    plan: &Plan,
    (caller, gone): &(u64, Arc<AtomicBool>),
    nodes: &[u32],
) -> Result<Vec<CallTask>, Error> {
    nodes
        .iter()
        .map(|&node| match &plan.kinds[node as usize] {
            Kind::Task(_) if plan.deps.get(node).is_empty() => Ok(CallTask {
                caller: *caller,
                tag: node,
                spec: plan.spec_ref(node).expect("a task"),
                gone: Arc::clone(gone),
            }),
            _ => Err(Error::Scheduler(format!(
                "{}: the arguments of a submitted or mapped call must be values, not keys",
                plan.keys[node as usize]
            ))),
        })
        .collect()
}

/// Where background calls of a scheduler run.
#[derive(Clone, Copy)]
enum Runs<'a> {
    /// On this thread pool's threads (or at once, from one of its own threads).
    Threads(&'a ThreadPool),
    /// At once, in the calling thread.
    Here,
}

impl Runs<'_> {
    fn mailboxes(&self) -> Arc<Mailboxes> {
        match self {
            Runs::Threads(p) => Arc::clone(&p.inner.calls),
            Runs::Here => {
                static SYNC: OnceLock<Arc<Mailboxes>> = OnceLock::new();
                Arc::clone(SYNC.get_or_init(Default::default))
            }
        }
    }

    fn workers(&self) -> Vec<WorkerId> {
        match self {
            Runs::Threads(p) => (0..p.inner.threads).map(WorkerId::Thread).collect(),
            Runs::Here => vec![WorkerId::Caller],
        }
    }

    /// Hands `tasks` over (in batches, to the threads) or runs them now.
    fn start(&self, calls: &Arc<Mailboxes>, tasks: Vec<CallTask>) {
        let pool = match self {
            Runs::Threads(p) if POOL_OF_THREAD.with(|t| t.get()) != p.inner.id => p,
            // A task of the pool submitting to it: its threads may all be waiting the same way.
            _ => return calls.run(&tasks, WorkerId::Caller),
        };
        let Some(tx) = pool.inner.tx.as_ref() else {
            return calls.run(&tasks, WorkerId::Caller);
        };
        if tasks.len() > 1 {
            // One queue the threads share: with fixed batches, a thread idles while
            // another's batch still holds tasks (4 naps of 300, 300, 10, 10 ms on 2 threads
            // took 600 ms, not 310).
            let takers = pool.inner.threads.min(tasks.len());
            let queue = Arc::new(TaskQueue {
                tasks: Mutex::new(tasks.into()),
                takers,
                per_task_ns: AtomicU64::new(0),
            });
            for _ in 0..takers {
                let work = Work::Queue {
                    calls: Arc::clone(calls),
                    queue: Arc::clone(&queue),
                };
                if tx.send(work).is_err() {
                    // The pool is stopping (it cannot while `pool` is borrowed, but be safe).
                    calls.run_queue(&queue, WorkerId::Caller);
                }
            }
            return;
        }
        if tasks.is_empty() {
            return;
        }
        let work = Work::Calls {
            calls: Arc::clone(calls),
            tasks,
        };
        if let Err(e) = tx.send(work) {
            // The pool is stopping (it cannot while `pool` is borrowed, but be safe).
            if let Work::Calls { tasks, .. } = e.into_inner() {
                calls.run(&tasks, WorkerId::Caller);
            }
        }
    }

    fn imap_unordered<F, A, I>(&self, f: F, items: I) -> Result<Unordered<F, A>, Error>
    where
        F: Callable<A>,
        I: IntoIterator<Item = A>,
    {
        let (g, keys, _) = keyed_graph(&f, items, |i| Key::from(("map", i)));
        let plan = Arc::new(plan(&g, &keys, &GetOptions::default()).map_err(values_not_keys)?);
        let nodes = output_nodes(&plan);
        let calls = self.mailboxes();
        let registered = calls.register();
        let caller = registered.0;
        let mut item_of = vec![0usize; plan.len()];
        for (i, &n) in nodes.iter().enumerate() {
            item_of[n as usize] = i;
        }
        let tasks = match item_tasks(&plan, &registered, &nodes) {
            Ok(t) => t,
            Err(e) => {
                calls.leave(caller);
                return Err(e);
            }
        };
        let remaining = tasks.len();
        self.start(&calls, tasks);
        Ok(Unordered::new(
            calls as Arc<dyn Calls>,
            caller,
            f,
            plan,
            item_of,
            remaining,
        ))
    }

    fn submit_with<F, A>(&self, f: F, item: A, opts: &GetOptions) -> Submitted<F::Output>
    where
        F: Callable<A> + Send + Sync + 'static,
    {
        let (g, keys, _) = keyed_graph(&f, [item], |_| Key::from("submit"));
        let plan = match plan(&g, &keys, opts).map_err(values_not_keys) {
            Ok(p) => Arc::new(p),
            Err(e) => return Submitted::failed(e),
        };
        let node = output_nodes(&plan)[0];
        let calls = self.mailboxes();
        let registered = calls.register();
        let caller = registered.0;
        let tasks = match item_tasks(&plan, &registered, &[node]) {
            Ok(t) => t,
            Err(e) => {
                calls.leave(caller);
                return Submitted::failed(e);
            }
        };
        let call = Call::new(
            Arc::clone(&calls) as Arc<dyn Calls>,
            caller,
            plan,
            node,
            opts.callbacks.clone(),
            &self.workers(),
        );
        self.start(&calls, tasks);
        Submitted::new(call, move |v| f.output(v))
    }
}

/// Runs `get` on `pool` as a future, in a thread of its own; dropping the future stops it.
fn get_async_on(pool: ThreadPool, graph: &Graph, keys: &Keys, opts: &GetOptions) -> GetFuture {
    let cancel = Arc::new(super::GetCancel::new());
    let canceller = Arc::clone(&cancel);
    let fut = GetFuture::new(move || canceller.cancel());
    let done = fut.completer();
    let (graph, keys, opts) = (graph.clone(), keys.clone(), opts.clone());
    let spawned = std::thread::Builder::new()
        .name("forkgraph-get".into())
        .spawn(move || done.complete(pool.get_cancellable(&graph, &keys, &opts, Some(cancel))));
    match spawned {
        Ok(_) => fut,
        Err(e) => GetFuture::failed(Error::system("cannot start the get's thread", e)),
    }
}

macro_rules! executor_api {
    ($ty:ty, $doc:literal) => {
        impl $ty {
            #[doc = concat!("Calls `f` on every item, in parallel; results in item order (",
                $doc, "). As [`ProcessPool::map`](crate::ProcessPool::map): `f` is a \
                registered name (results are [`Value`]s; several arguments per item with \
                [`Args`](crate::Args)) or a typed task handle (results of its return type).")]
            ///
            /// # Errors
            /// As `get`: the first failing item's error names its key (`("map", index)`); a
            /// result not of `f`'s output type is [`TaskErrorKind::Output`].
            pub fn map<F, A, I>(&self, f: F, items: I) -> Result<Vec<F::Output>, Error>
            where
                F: Callable<A>,
                I: IntoIterator<Item = A>,
            {
                crate::process::calls::map_with_on(self, f, items, &GetOptions::default())
            }

            /// `map` with options (callbacks see the map as a `get` of one task per item).
            ///
            /// # Errors
            /// As `map`.
            pub fn map_with<F, A, I>(
                &self,
                f: F,
                items: I,
                opts: &GetOptions,
            ) -> Result<Vec<F::Output>, Error>
            where
                F: Callable<A>,
                I: IntoIterator<Item = A>,
            {
                crate::process::calls::map_with_on(self, f, items, opts)
            }

            /// `map` that keeps going past failures: one result per item, its value or the
            /// error that stopped it.
            ///
            /// # Errors
            /// Only when the call cannot run at all (an unknown function, wrong arguments).
            #[allow(clippy::result_large_err)] // A `TaskError` per item, to match on as it is.
            pub fn map_results<F, A, I>(
                &self,
                f: F,
                items: I,
            ) -> Result<Vec<Result<F::Output, TaskError>>, Error>
            where
                F: Callable<A>,
                I: IntoIterator<Item = A>,
            {
                let opts = GetOptions::default().keep_going(true);
                crate::process::calls::map_results_with_on(self, f, items, &opts)
            }

            /// `map_results` with options.
            ///
            /// # Errors
            /// As `map_results`; without [`GetOptions::keep_going`] the first failure is the
            /// error.
            #[allow(clippy::result_large_err)] // A `TaskError` per item, to match on as it is.
            pub fn map_results_with<F, A, I>(
                &self,
                f: F,
                items: I,
                opts: &GetOptions,
            ) -> Result<Vec<Result<F::Output, TaskError>>, Error>
            where
                F: Callable<A>,
                I: IntoIterator<Item = A>,
            {
                crate::process::calls::map_results_with_on(self, f, items, opts)
            }

            /// Calls `f` on every item and yields `(index, result)` as each finishes, as
            /// [`ProcessPool::imap_unordered`](crate::ProcessPool::imap_unordered); dropping
            /// the iterator cancels the calls not yet started.
            ///
            /// # Errors
            /// Before anything runs, when a function is unknown or arguments are wrong; a
            /// failed item is an `Err` item naming its key (`("map", index)`).
            pub fn imap_unordered<F, A, I>(
                &self,
                f: F,
                items: I,
            ) -> Result<Unordered<F, A>, Error>
            where
                F: Callable<A>,
                I: IntoIterator<Item = A>,
            {
                self.runs().imap_unordered(f, items)
            }

            /// Runs one call of `f` (keyed `"submit"`) in the background, as
            /// [`ProcessPool::submit`](crate::ProcessPool::submit): the handle waits for it,
            /// polls it, cancels it (a call not yet started is dropped; a running task
            /// finishes and its result is dropped), or is awaited as a future.
            pub fn submit<F, A>(&self, f: F, item: A) -> Submitted<F::Output>
            where
                F: Callable<A> + Send + Sync + 'static,
            {
                self.runs().submit_with(f, item, &GetOptions::default())
            }

            /// `submit` with options: callbacks see the call as a `get` of one task.
            pub fn submit_with<F, A>(&self, f: F, item: A, opts: &GetOptions) -> Submitted<F::Output>
            where
                F: Callable<A> + Send + Sync + 'static,
            {
                self.runs().submit_with(f, item, opts)
            }
        }
    };
}

executor_api!(ThreadPool, "on the pool's threads");
executor_api!(SyncScheduler, "one after the other, in the calling thread");

impl ThreadPool {
    fn runs(&self) -> Runs<'_> {
        Runs::Threads(self)
    }
}

impl SyncScheduler {
    fn runs(&self) -> Runs<'static> {
        Runs::Here
    }
}

impl ThreadPool {
    /// `get` as a future, as [`ProcessPool::get_async`](crate::ProcessPool::get_async): the
    /// graph runs from a thread of its own, which wakes the future; dropping the future
    /// cancels the `get` (no new task starts; running ones finish).
    pub fn get_async(&self, graph: &Graph, keys: impl Into<Keys>) -> GetFuture {
        self.get_async_with(graph, &keys.into(), &GetOptions::default())
    }

    /// `get_async` with options (callbacks run in the get's thread).
    pub fn get_async_with(&self, graph: &Graph, keys: &Keys, opts: &GetOptions) -> GetFuture {
        get_async_on(self.clone(), graph, keys, opts)
    }
}

impl SyncScheduler {
    /// `get` as a future: runs the graph now, in the calling thread (the sync scheduler
    /// never runs anything elsewhere), and returns a future that is ready.
    pub fn get_async(&self, graph: &Graph, keys: impl Into<Keys>) -> GetFuture {
        self.get_async_with(graph, &keys.into(), &GetOptions::default())
    }

    /// `get_async` with options.
    pub fn get_async_with(&self, graph: &Graph, keys: &Keys, opts: &GetOptions) -> GetFuture {
        let r: Result<Output, Error> = self.get_with(graph, keys, opts);
        GetFuture::finished(r)
    }
}
