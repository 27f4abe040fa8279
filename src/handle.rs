//! Handles on calls running in the background: [`Submitted`] (from
//! [`ProcessPool::submit`](crate::ProcessPool::submit)), [`as_completed`], and [`GetFuture`]
//! (from [`ProcessPool::get_async`](crate::ProcessPool::get_async)). Both are
//! `std::future::Future`s woken by the thread that drives the pool (its driver thread, or the
//! thread running the `get`), so awaiting them never blocks an async executor's thread and
//! needs no particular runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use forkgraph_worker::{Mismatch, Value};

use crate::callbacks::{value_bytes, Callbacks, Dependencies, RunInfo, TaskEvent, WorkerId};
use crate::engine::Output;
use crate::error::{Error, TaskError};
use crate::key::Key;
use crate::plan::Plan;
use crate::process::calls::{output_error, unshare};
use crate::process::runner::Finished;

/// Where the results of calls running in the background come from: a process pool's shared
/// state (`process::shared`), or the mailboxes of a thread pool or of the sync scheduler
/// (`thread_calls`). Each call is a caller with an id.
pub(crate) trait Calls: Send + Sync {
    /// The caller's finished tasks (or its error), or `None`; `waker` is woken when some
    /// arrive.
    fn poll_caller(
        &self,
        caller: u64,
        waker: Option<&Waker>,
    ) -> Option<Result<Vec<Finished>, Error>>;

    /// Blocks until some of the caller's tasks have finished (appended to `out`), at most
    /// until `deadline` (`Ok(false)` when it passed).
    ///
    /// # Errors
    /// The pool's own failure, or [`Error::Cancelled`].
    fn wait(
        &self,
        caller: u64,
        out: &mut Vec<Finished>,
        deadline: Option<Instant>,
    ) -> Result<bool, Error>;

    /// Blocks until one of `callers` has something to take, at most `timeout`; its index.
    fn wait_any(&self, callers: &[u64], timeout: Option<Duration>) -> Option<usize>;

    /// Unregisters the caller: what it has not started is dropped, its results are no
    /// longer kept.
    fn leave(&self, caller: u64);

    /// Whether a wait by this thread could only be answered by this thread itself (it runs
    /// the pool's waker or log callback): then [`Calls::wait`] returns an error and
    /// [`Calls::wait_any`] must not be called.
    fn waits_for_itself(&self) -> bool {
        false
    }
}

/// Whether two `Calls` are the same pool's.
fn same(a: &Arc<dyn Calls>, b: &Arc<dyn Calls>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// A submitted call still running: its caller in the pool, and what its callbacks need.
pub(crate) struct Call {
    shared: Arc<dyn Calls>,
    caller: u64,
    plan: Arc<Plan>,
    node: u32,
    callbacks: Vec<Arc<dyn Callbacks>>,
}

impl Call {
    /// A call of `caller` on `shared` (its units not yet submitted): fires the callbacks'
    /// `start`, `workers` and `pretask`.
    pub(crate) fn new(
        shared: Arc<dyn Calls>,
        caller: u64,
        plan: Arc<Plan>,
        node: u32,
        callbacks: Vec<Arc<dyn Callbacks>>,
        workers: &[WorkerId],
    ) -> Call {
        for cb in &callbacks {
            cb.start(&RunInfo { nodes: 1, tasks: 1 });
            cb.workers(workers);
            cb.pretask(&plan.keys[node as usize]);
        }
        Call {
            shared,
            caller,
            plan,
            node,
            callbacks,
        }
    }

    /// The call, once registered as `caller` (a call made before its caller id).
    pub(crate) fn with_caller(mut self, caller: u64) -> Call {
        self.caller = caller;
        self
    }

    fn key(&self) -> &Key {
        &self.plan.keys[self.node as usize]
    }

    fn function(&self) -> &'static str {
        self.plan.function(self.node)
    }

    /// The call's result from what the pool returned, reported to the callbacks.
    fn settle<R>(
        &self,
        r: Result<Vec<Finished>, Error>,
        convert: &(dyn Fn(Value) -> Result<R, Mismatch> + Send + Sync),
    ) -> Result<R, Error> {
        let f = match r {
            Ok(mut done) => done.pop(),
            Err(e) => {
                self.finish_callbacks(true);
                return Err(e);
            }
        };
        let Some(f) = f else {
            self.finish_callbacks(true);
            return Err(Error::Scheduler("a submitted call returned nothing".into()));
        };
        let key = self.key().clone();
        let result = match f.result {
            Ok(v) => {
                if !self.callbacks.is_empty() {
                    let e = TaskEvent {
                        key: &key,
                        function: self.function(),
                        worker: f.ran.worker,
                        start: f.ran.start,
                        end: f.ran.end.max(f.ran.start),
                        result_bytes: value_bytes(&v),
                        ran: f.ran.started,
                        dependencies: Dependencies::new(&self.plan, self.node),
                    };
                    for cb in &self.callbacks {
                        cb.posttask(&key, &v);
                        cb.task_done(&e, &v);
                    }
                }
                convert(unshare(v))
                    .map_err(|m| Error::Task(Box::new(output_error(key, self.function(), m))))
            }
            Err(failed) => {
                let t = TaskError {
                    key: key.clone(),
                    function: failed.function,
                    kind: failed.kind,
                };
                if !self.callbacks.is_empty() {
                    let e = TaskEvent {
                        key: &key,
                        function: &t.function,
                        worker: f.ran.worker,
                        start: f.ran.start,
                        end: f.ran.end.max(f.ran.start),
                        result_bytes: 0,
                        ran: f.ran.started,
                        dependencies: Dependencies::new(&self.plan, self.node),
                    };
                    for cb in &self.callbacks {
                        cb.task_failed(&e, &t);
                    }
                }
                Err(Error::Task(Box::new(t)))
            }
        };
        self.finish_callbacks(result.is_err());
        result
    }

    fn finish_callbacks(&self, errored: bool) {
        for cb in &self.callbacks {
            cb.finish(errored);
        }
    }
}

impl Drop for Call {
    /// Leaving the pool cancels the call if it has not finished.
    fn drop(&mut self) {
        self.shared.leave(self.caller);
    }
}

type Convert<R> = Box<dyn Fn(Value) -> Result<R, Mismatch> + Send + Sync>;

/// A call started with [`ProcessPool::submit`](crate::ProcessPool::submit): wait for it,
/// poll it, cancel it, or `.await` it. Dropping it cancels the call if it has not finished.
pub struct Submitted<R = Value> {
    call: Option<Call>,
    convert: Option<Convert<R>>,
    result: Option<Result<R, Error>>,
}

impl<R> std::fmt::Debug for Submitted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitted")
            .field("key", &self.call.as_ref().map(Call::key))
            .field("done", &self.result.is_some())
            .finish()
    }
}

// No field is pinned: the handle only holds boxes and results.
impl<R> Unpin for Submitted<R> {}

impl<R> Submitted<R> {
    pub(crate) fn new(
        call: Call,
        convert: impl Fn(Value) -> Result<R, Mismatch> + Send + Sync + 'static,
    ) -> Submitted<R> {
        Submitted {
            call: Some(call),
            convert: Some(Box::new(convert)),
            result: None,
        }
    }

    /// A call that failed before it started.
    pub(crate) fn failed(e: Error) -> Submitted<R> {
        Submitted {
            call: None,
            convert: None,
            result: Some(Err(e)),
        }
    }

    fn settle(&mut self, r: Result<Vec<Finished>, Error>) {
        if let (Some(call), Some(convert)) = (self.call.take(), self.convert.take()) {
            self.result = Some(call.settle(r, &*convert));
        }
    }

    /// The key the call runs under (`("map", 0)`), while it runs.
    pub fn key(&self) -> Option<&Key> {
        self.call.as_ref().map(Call::key)
    }

    /// Whether the call has finished (or failed, or was cancelled); never blocks.
    pub fn is_done(&mut self) -> bool {
        if self.result.is_none() {
            let polled = self
                .call
                .as_ref()
                .and_then(|c| c.shared.poll_caller(c.caller, None));
            if let Some(r) = polled {
                self.settle(r);
            }
        }
        self.result.is_some()
    }

    /// Waits for the result.
    ///
    /// # Errors
    /// The call's error: the task's failure ([`Error::Task`], naming its key), a result not
    /// of the expected type ([`TaskErrorKind::Output`](crate::TaskErrorKind::Output)),
    /// [`Error::Cancelled`], or a failure of the pool.
    pub fn wait(mut self) -> Result<R, Error> {
        self.block(None);
        self.result
            .take()
            .unwrap_or_else(|| Err(Error::Scheduler("submitted call vanished".into())))
    }

    /// Waits at most `d`; `None` if the call is still running.
    pub fn wait_timeout(&mut self, d: Duration) -> Option<&Result<R, Error>> {
        self.block(Some(Instant::now() + d));
        self.result.as_ref()
    }

    fn block(&mut self, deadline: Option<Instant>) {
        if self.result.is_some() {
            return;
        }
        let Some(call) = self.call.as_ref() else {
            return;
        };
        let mut out = Vec::new();
        match call.shared.wait(call.caller, &mut out, deadline) {
            Ok(true) => self.settle(Ok(out)),
            Ok(false) => {}
            Err(e) => self.settle(Err(e)),
        }
    }

    /// Cancels the call: a queued task is dropped; a running one has its worker killed and
    /// replaced. Returns false (and changes nothing) when the call had already finished; the
    /// handle then reports [`Error::Cancelled`].
    pub fn cancel(&mut self) -> bool {
        if self.is_done() {
            return false;
        }
        if let Some(call) = self.call.take() {
            call.finish_callbacks(true);
            drop(call); // Leaves the pool: its task is dropped, its worker replaced.
        }
        self.result = Some(Err(Error::Cancelled));
        true
    }

    /// The caller id and pool of a running call (for [`as_completed`]).
    fn waiting_on(&self) -> Option<(&Arc<dyn Calls>, u64)> {
        match (&self.result, &self.call) {
            (None, Some(c)) => Some((&c.shared, c.caller)),
            _ => None,
        }
    }
}

impl<R> Future for Submitted<R> {
    type Output = Result<R, Error>;

    /// # Panics
    /// When polled again after it returned `Ready`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.result.is_none() {
            let polled = this
                .call
                .as_ref()
                .and_then(|c| c.shared.poll_caller(c.caller, Some(cx.waker())));
            match polled {
                Some(r) => this.settle(r),
                None if this.call.is_some() => return Poll::Pending,
                None => {}
            }
        }
        Poll::Ready(
            this.result
                .take()
                .expect("a Submitted polled after it returned its result"),
        )
    }
}

/// Yields submitted calls in the order they finish (Python's `concurrent.futures.as_completed`):
/// each handle comes back done, so its `wait` returns at once.
///
/// Called from a waker or a log callback that a process pool runs itself, where waiting for
/// that pool's calls would wait for itself, it does not wait: the unfinished handles of that
/// pool come back in the given order, and their `wait` returns [`Error::Scheduler`] saying so.
pub fn as_completed<R>(handles: impl IntoIterator<Item = Submitted<R>>) -> AsCompleted<R> {
    AsCompleted {
        handles: handles.into_iter().collect(),
    }
}

/// The iterator of [`as_completed`].
pub struct AsCompleted<R> {
    handles: Vec<Submitted<R>>,
}

impl<R> std::fmt::Debug for AsCompleted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.handles.len())
            .finish()
    }
}

impl<R> Iterator for AsCompleted<R> {
    type Item = Submitted<R>;

    fn next(&mut self) -> Option<Submitted<R>> {
        loop {
            if self.handles.is_empty() {
                return None;
            }
            if let Some(i) = self.handles.iter_mut().position(Submitted::is_done) {
                return Some(self.handles.remove(i));
            }
            // Wait on the first running handle's pool for any of its calls; calls on other
            // pools are looked at again every 10 ms.
            let (shared, _) = self.handles[0].waiting_on().expect("not done, so running");
            let shared = Arc::clone(shared);
            if shared.waits_for_itself() {
                // Called from code the pool runs itself (a waker): waiting would never end.
                // The handle comes back unfinished; its `wait` says why.
                return Some(self.handles.remove(0));
            }
            let mine: Vec<u64> = self
                .handles
                .iter()
                .filter_map(Submitted::waiting_on)
                .filter(|(s, _)| same(s, &shared))
                .map(|(_, c)| c)
                .collect();
            let others = mine.len() < self.handles.len();
            shared.wait_any(&mine, others.then(|| Duration::from_millis(10)));
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.handles.len(), Some(self.handles.len()))
    }
}

/// Where a `get_async`'s thread leaves its result.
#[derive(Default)]
struct Slot {
    result: Option<Result<Output, Error>>,
    waker: Option<Waker>,
    taken: bool,
}

/// A `get` running in the background, as a future
/// ([`ProcessPool::get_async`](crate::ProcessPool::get_async)). Dropping it before it is
/// ready cancels the `get`.
pub struct GetFuture {
    slot: Arc<Mutex<Slot>>,
    /// Cancels the running get (when the future is dropped early).
    running: Option<Cancel>,
}

/// What cancels a running `get_async`.
type Cancel = Box<dyn FnOnce() + Send + Sync>;

impl std::fmt::Debug for GetFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetFuture")
            .field("running", &self.running.is_some())
            .finish()
    }
}

/// Completes a [`GetFuture`] from the thread running its `get`.
pub(crate) struct Completer(Arc<Mutex<Slot>>);

impl Completer {
    pub(crate) fn complete(self, r: Result<Output, Error>) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.result = Some(r);
        if let Some(w) = s.waker.take() {
            drop(s);
            w.wake();
        }
    }
}

impl GetFuture {
    /// A future for a get running elsewhere; `cancel` stops it.
    pub(crate) fn new(cancel: impl FnOnce() + Send + Sync + 'static) -> GetFuture {
        GetFuture {
            slot: Arc::new(Mutex::new(Slot::default())),
            running: Some(Box::new(cancel)),
        }
    }

    pub(crate) fn failed(e: Error) -> GetFuture {
        GetFuture::finished(Err(e))
    }

    /// A future that is ready with `r`.
    pub(crate) fn finished(r: Result<Output, Error>) -> GetFuture {
        GetFuture {
            slot: Arc::new(Mutex::new(Slot {
                result: Some(r),
                ..Slot::default()
            })),
            running: None,
        }
    }

    pub(crate) fn completer(&self) -> Completer {
        Completer(Arc::clone(&self.slot))
    }
}

impl Future for GetFuture {
    type Output = Result<Output, Error>;

    /// # Panics
    /// When polled again after it returned `Ready`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut s = this.slot.lock().unwrap_or_else(|e| e.into_inner());
        match s.result.take() {
            Some(r) => {
                s.taken = true;
                drop(s);
                this.running = None;
                Poll::Ready(r)
            }
            None => {
                assert!(!s.taken, "a GetFuture polled after it returned its result");
                match &mut s.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for GetFuture {
    fn drop(&mut self) {
        if let Some(cancel) = self.running.take() {
            let done = self
                .slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .result
                .is_some();
            if !done {
                cancel();
            }
        }
    }
}

/// Stores `waker` in `slot` unless the one there already wakes the same task; returns the
/// waker it replaced, for the caller to drop after releasing its lock (a waker's drop may run
/// user code).
pub(crate) fn replace_waker(slot: &mut Option<Waker>, waker: Option<&Waker>) -> Option<Waker> {
    match (waker, slot.as_ref()) {
        (None, _) => None,
        (Some(w), Some(o)) if o.will_wake(w) => None,
        (Some(w), _) => slot.replace(w.clone()),
    }
}
