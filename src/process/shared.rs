//! One process pool, many callers: the leader/follower arrangement that lets `get`, `map` and
//! submitted calls from any number of threads share the workers at the same time.
//!
//! The [`Runner`] (the workers and every caller's pending and running units) lives in
//! [`Shared`]. Each `get` runs its engine in its own thread and hands units to the runner.
//! Whichever waiting caller finds the runner free takes it out of the mutex and *leads*: it
//! dispatches everybody's units (round-robin over callers, see `runner::Queues`), polls the
//! workers, and routes finished tasks to their callers (their `done` lists, then a condvar
//! broadcast and their futures' wakers). It leads until a result of its own arrives, then
//! puts the runner back and wakes the others, one of which leads next. A caller alone on a
//! pool therefore drives its workers exactly as before, with no thread hand-off; followers
//! reach a leader blocked in poll through a wake-up pipe in its poll set.
//!
//! Submitted calls whose owner is not waiting (handles, futures) are driven by the pool's
//! driver thread, started on the first such call: it leads while any is unfinished.
//!
//! Invariants:
//! - at most one thread at a time holds the runner (it is either in `State::runner` or led);
//! - a caller's results reach only that caller; results of a caller that is gone are dropped;
//! - a caller that goes away (error, cancel, drop, panic) is cancelled: its pending units
//!   are dropped and a worker running one is replaced (see `Runner::cancel`);
//! - a panic while leading puts the runner back (a `Lead` guard), so others can go on.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;

use forkgraph_worker::host::Wake;

use super::runner::{Finished, PUnit, Runner};
use crate::error::Error;

/// The error of a wait on a pool from code its own leader runs (a waker, a log callback).
const REENTRANT_WAIT: &str = "waiting for a process pool's call from inside a waker or a log \
     callback that the pool itself runs would wait for itself: hand the wait to another \
     thread (or await the call) instead";

/// How long the driver thread leaves free workers to a thread that may be about to wait for
/// its own submitted call, before it drives them itself.
const DRIVER_GRACE: std::time::Duration = std::time::Duration::from_micros(200);

/// A caller's mailbox.
#[derive(Default)]
struct Caller {
    /// Finished tasks not yet taken.
    done: Vec<Finished>,
    /// An error of the pool that stops this caller (Ctrl-C).
    error: Option<Error>,
    /// Set by [`Shared::cancel`] from another thread: the next wait returns
    /// [`Error::Cancelled`].
    cancelled: bool,
    /// Units submitted whose tasks are not all back (for detached callers: the driver leads
    /// while any has some).
    open_tasks: usize,
    /// Driven by the driver thread (a submitted call or a future), not by a waiting thread.
    detached: bool,
    /// Woken when results arrive (futures).
    waker: Option<Waker>,
}

struct State {
    /// The runner, when nobody leads.
    runner: Option<Box<Runner>>,
    callers: HashMap<u64, Caller>,
    next_caller: u64,
    /// Units submitted while a leader held the runner.
    incoming: Vec<PUnit>,
    /// Callers cancelled while a leader held the runner.
    cancelled: Vec<u64>,
    /// Cancellations the leader has taken from `cancelled` and is applying (outside the lock).
    applying: Vec<u64>,
    /// Detached callers with tasks still to come back.
    detached_open: usize,
    /// Whether the driver thread runs.
    driver: bool,
    /// Set when the last `ProcessPool` clone is gone: the driver stops once nothing detached
    /// is left.
    closed: bool,
    /// Whether a caller wants worker lifecycle events recorded.
    record_events: bool,
    /// The workers as of the last time the runner was put back (and how many were started
    /// by then), for callers that start while someone leads.
    workers: (u64, Vec<crate::callbacks::WorkerId>),
    /// How many tasks may be in flight, and run at once.
    slots: (usize, usize),
}

/// The pool's shared state (see the module doc).
pub(crate) struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    wake: Wake,
}

/// Who a lead is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum For {
    /// A caller waiting for its own results.
    Caller(u64),
    /// The driver thread, for detached callers.
    Driver,
}

impl Shared {
    pub(crate) fn new(runner: Runner) -> std::io::Result<Shared> {
        let workers = (runner.pool.started(), runner.workers());
        let slots = (runner.slots(), runner.parallelism());
        Ok(Shared {
            state: Mutex::new(State {
                runner: Some(Box::new(runner)),
                callers: HashMap::new(),
                next_caller: 1,
                incoming: Vec::new(),
                cancelled: Vec::new(),
                applying: Vec::new(),
                detached_open: 0,
                driver: false,
                closed: false,
                record_events: false,
                workers,
                slots,
            }),
            cond: Condvar::new(),
            wake: Wake::new()?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation of the state is complete before anything that can panic runs.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the runner once nobody leads (for pool-wide operations: pids, restarts),
    /// outside the lock (a restart forwards what the new worker logs to the program's logger,
    /// which may call into the pool); `None` when this thread leads the pool itself (from a
    /// waker or a log callback), where waiting for the runner would wait for itself.
    pub(crate) fn with_runner<R>(&self, f: impl FnOnce(&mut Runner) -> R) -> Option<R> {
        if leading(self) {
            return None;
        }
        let mut st = self.lock();
        loop {
            if let Some(r) = st.runner.take() {
                let mut lead = Lead {
                    shared: self,
                    runner: Some(r),
                };
                drop(st);
                let _leading = Leading::enter(self);
                return Some(f(lead.runner.as_mut().expect("the runner")));
            }
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The workers as of the last time the runner was put back (for a thread that cannot
    /// wait for the runner).
    pub(crate) fn last_workers(&self) -> (u64, Vec<crate::callbacks::WorkerId>) {
        self.lock().workers.clone()
    }

    /// Runs `f` on the runner if nobody leads right now.
    pub(crate) fn with_runner_now<R>(&self, f: impl FnOnce(&mut Runner) -> R) -> Option<R> {
        self.lock().runner.as_mut().map(|r| f(r))
    }

    /// What a new caller needs to know: (slots, parallelism, the workers).
    pub(crate) fn layout(
        &self,
        record_events: bool,
    ) -> (usize, usize, Vec<crate::callbacks::WorkerId>) {
        let mut st = self.lock();
        if record_events {
            st.record_events = true;
            if let Some(r) = st.runner.as_mut() {
                r.record_events(true);
            }
        }
        if let Some(r) = st.runner.as_ref() {
            if r.pool.started() != st.workers.0 {
                st.workers = (r.pool.started(), r.workers());
            }
        }
        (st.slots.0, st.slots.1, st.workers.1.clone())
    }

    /// Registers a caller; `detached` when the driver thread drives it.
    pub(crate) fn register(self: &Arc<Self>, detached: bool) -> u64 {
        let mut st = self.lock();
        self.add_caller(&mut st, detached)
    }

    fn add_caller(self: &Arc<Self>, st: &mut State, detached: bool) -> u64 {
        let id = st.next_caller;
        st.next_caller += 1;
        st.callers.insert(
            id,
            Caller {
                detached,
                ..Caller::default()
            },
        );
        if st.callers.len() == 1 {
            if let Some(r) = st.runner.as_mut() {
                r.arm_ctrl_c(true);
            }
        }
        if detached && !st.driver {
            st.driver = true;
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("forkgraph-driver".into())
                .spawn(move || me.drive());
            if spawned.is_err() {
                // Without a driver, detached calls run when someone waits for them.
                st.driver = false;
            }
        }
        id
    }

    /// Registers a caller and hands it `units` (whose caller is set to it), under one lock
    /// (a submitted call's way in).
    pub(crate) fn register_with(self: &Arc<Self>, detached: bool, mut units: Vec<PUnit>) -> u64 {
        let mut st = self.lock();
        let caller = self.add_caller(&mut st, detached);
        for u in &mut units {
            u.caller = caller;
        }
        let wake_driver = self.hand_over(&mut st, caller, units);
        drop(st);
        if wake_driver {
            self.cond.notify_all();
        }
        caller
    }

    /// Hands units to the runner (or to the leader).
    pub(crate) fn submit(&self, caller: u64, units: Vec<PUnit>) {
        if units.is_empty() {
            return;
        }
        let mut st = self.lock();
        let wake_driver = self.hand_over(&mut st, caller, units);
        drop(st);
        if wake_driver {
            self.cond.notify_all();
        }
    }

    /// `submit` under the lock; whether the driver thread must be woken (after it).
    fn hand_over(&self, st: &mut State, caller: u64, units: Vec<PUnit>) -> bool {
        let tasks: usize = units.iter().map(PUnit::tasks).sum();
        let Some(c) = st.callers.get_mut(&caller) else {
            return false;
        };
        c.open_tasks += tasks;
        let detached = c.detached;
        // The driver thread needs waking only when it may be idle: no detached call was open.
        let wake_driver = detached && tasks > 0 && c.open_tasks == tasks && {
            st.detached_open += 1;
            st.detached_open == 1
        };
        match st.runner.as_mut() {
            Some(r) => {
                for u in units {
                    r.submit(u);
                }
            }
            None => {
                // One write of the pipe per take-in: while `incoming` is not empty, the
                // leader has not taken it in since the write that made it non-empty (it
                // clears the pipe before it takes in).
                let was_empty = st.incoming.is_empty();
                st.incoming.extend(units);
                if was_empty {
                    self.wake.wake();
                }
            }
        }
        wake_driver
    }

    /// Asks a waiting caller to stop: its next (or current) wait returns
    /// [`Error::Cancelled`].
    pub(crate) fn cancel(&self, caller: u64) {
        let mut st = self.lock();
        let mut waker = None;
        if let Some(c) = st.callers.get_mut(&caller) {
            c.cancelled = true;
            waker = c.waker.take();
        }
        drop(st);
        self.cond.notify_all();
        self.wake.wake();
        // Woken outside the lock: a waker may call into the pool.
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Unregisters a caller: its units still pending or running are dropped (see
    /// `Runner::cancel`), its results are no longer routed.
    pub(crate) fn leave(&self, caller: u64) {
        // The caller's waker and results are dropped after the lock (declared before the
        // guard): a waker's drop may run code that calls into the pool.
        let mut gone = None;
        let mut st = self.lock();
        let Some(c) = st.callers.remove(&caller) else {
            return;
        };
        let c: &Caller = gone.insert(c);
        if c.detached && c.open_tasks > 0 {
            st.detached_open -= 1;
        }
        let unfinished = c.open_tasks > 0;
        let last = st.callers.is_empty();
        match st.runner.take() {
            Some(mut r) if !unfinished => {
                // Nothing to cancel: no worker is killed, nothing it logged is forwarded.
                // Settling frees segments and forwards workers' stderr, both without
                // callbacks, so it stays under the lock (no hand-off of the runner: this is
                // every call's end on a pool with one caller).
                if last {
                    r.arm_ctrl_c(false);
                    r.settle();
                }
                st.runner = Some(r);
            }
            Some(r) => {
                // Applied outside the lock, with the runner held as by a leader: cancelling
                // kills and replaces workers, and what they logged reaches the program's
                // logger, which may call into the pool.
                let mut lead = Lead {
                    shared: self,
                    runner: Some(r),
                };
                drop(st);
                let _leading = Leading::enter(self);
                let r = lead.runner.as_mut().expect("the runner");
                r.cancel(caller);
                if last {
                    r.arm_ctrl_c(false);
                    r.settle();
                }
                drop(lead);
            }
            None if unfinished => {
                st.incoming.retain(|u| u.caller != caller);
                st.cancelled.push(caller);
                self.wake.wake();
                if leading(self) {
                    // This thread holds the runner: it applies the cancellation when it next
                    // takes in what others handed over.
                    return;
                }
                // Wait until the leader has applied it: a worker that holds one of the
                // caller's units is killed before `cancel` returns, so the unit cannot start
                // after it (the leader is woken through the pipe and takes it in at once).
                while st.cancelled.contains(&caller) || st.applying.contains(&caller) {
                    st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
            None => {}
        }
    }

    /// Polls a detached caller: its finished tasks, or `None` (and `waker` is woken when some
    /// arrive).
    pub(crate) fn poll_caller(
        &self,
        caller: u64,
        waker: Option<&Waker>,
    ) -> Option<Result<Vec<Finished>, Error>> {
        let mut st = self.lock();
        let c = st.callers.get_mut(&caller)?;
        if let Some(r) = Self::take(c) {
            return Some(r);
        }
        let old = crate::handle::replace_waker(&mut c.waker, waker);
        drop(st);
        drop(old);
        None
    }

    fn take(c: &mut Caller) -> Option<Result<Vec<Finished>, Error>> {
        if let Some(e) = c.error.take() {
            return Some(Err(e));
        }
        if c.cancelled {
            return Some(Err(Error::Cancelled));
        }
        if !c.done.is_empty() {
            return Some(Ok(std::mem::take(&mut c.done)));
        }
        None
    }

    /// Blocks until some of `caller`'s tasks have finished (appended to `out`), leading when
    /// nobody else does; `deadline` (monotonic ns) bounds the wait: `Ok(false)` when it passed.
    ///
    /// # Errors
    /// The pool's own failure (Ctrl-C, workers that cannot be started), or
    /// [`Error::Cancelled`].
    pub(crate) fn wait(
        &self,
        caller: u64,
        out: &mut Vec<Finished>,
        deadline: Option<std::time::Instant>,
    ) -> Result<bool, Error> {
        let mut st = self.lock();
        loop {
            let Some(c) = st.callers.get_mut(&caller) else {
                return Err(Error::Cancelled);
            };
            match Self::take(c) {
                Some(Ok(mut d)) => {
                    out.append(&mut d);
                    return Ok(true);
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
            if leading(self) {
                // A waker or log callback of this pool's own leader: the results it would wait
                // for can only come from this thread, once the callback has returned.
                return match deadline {
                    Some(_) => Ok(false),
                    None => Err(Error::Scheduler(REENTRANT_WAIT.into())),
                };
            }
            if deadline.is_none() {
                if let Some(runner) = st.runner.take() {
                    let lead = Lead {
                        shared: self,
                        runner: Some(runner),
                    };
                    drop(st);
                    return lead.run(For::Caller(caller), out).map(|()| true);
                }
            }
            st = match deadline {
                None => self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    self.cond
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Blocks until one of `callers` has something to take (results, an error, a
    /// cancellation, or it is gone), at most `timeout`; its index, or `None` on timeout.
    pub(crate) fn wait_any(
        &self,
        callers: &[u64],
        timeout: Option<std::time::Duration>,
    ) -> Option<usize> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut st = self.lock();
        loop {
            let ready = callers.iter().position(|id| {
                st.callers
                    .get(id)
                    .is_none_or(|c| !c.done.is_empty() || c.error.is_some() || c.cancelled)
            });
            if ready.is_some() {
                return ready;
            }
            st = match deadline {
                None => self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.cond
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// The driver thread: leads while detached callers have tasks out.
    fn drive(self: Arc<Self>) {
        let mut st = self.lock();
        loop {
            if st.detached_open == 0 {
                if st.closed {
                    st.driver = false;
                    return;
                }
                st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            if st.runner.is_none() {
                st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // A thread that submitted a call usually waits for it right after: leave it the
            // runner for a moment (it then leads itself, with no hand-off between threads).
            st = self
                .cond
                .wait_timeout(st, DRIVER_GRACE)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if st.detached_open == 0 {
                continue;
            }
            let Some(runner) = st.runner.take() else {
                continue;
            };
            let lead = Lead {
                shared: &self,
                runner: Some(runner),
            };
            drop(st);
            // Errors were handed to the detached callers.
            let _ = lead.run(For::Driver, &mut Vec::new());
            st = self.lock();
        }
    }

    /// The pool's last handle is gone: the driver stops once nothing detached is left.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }
}

/// A lead in progress: puts the runner back when it ends (also by a panic).
struct Lead<'s> {
    shared: &'s Shared,
    runner: Option<Box<Runner>>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if let Some(mut r) = self.runner.take() {
            let mut st = Lead::take_in(self.shared, &mut r);
            // What `last_workers` tells a thread that cannot wait for the runner.
            if r.pool.started() != st.workers.0 {
                st.workers = (r.pool.started(), r.workers());
            }
            st.runner = Some(r);
            drop(st);
            self.shared.cond.notify_all();
        }
    }
}

impl Lead<'_> {
    /// Moves what other threads handed over while the runner was out into it, and returns
    /// the lock with nothing left to take in. Cancellations are applied outside the lock (they
    /// kill workers, and what those logged reaches the program's logger, which may call into
    /// the pool), so this may take the lock more than once.
    fn take_in<'a>(shared: &'a Shared, r: &mut Runner) -> MutexGuard<'a, State> {
        loop {
            let mut st = shared.lock();
            if st.cancelled.is_empty() {
                for u in st.incoming.drain(..) {
                    r.submit(u);
                }
                if st.record_events {
                    r.record_events(true);
                }
                // Armed while any caller is registered (one may have come while a `leave`
                // that disarmed held the runner).
                r.arm_ctrl_c(!st.callers.is_empty());
                return st;
            }
            let cancels = std::mem::take(&mut st.cancelled);
            st.applying.extend_from_slice(&cancels);
            drop(st);
            {
                let _leading = Leading::enter(shared);
                for &caller in &cancels {
                    r.cancel(caller);
                }
            }
            shared.lock().applying.retain(|c| !cancels.contains(c));
            // `leave` waits for its cancellation to be applied.
            shared.cond.notify_all();
        }
    }

    fn run(mut self, me: For, out: &mut Vec<Finished>) -> Result<(), Error> {
        let _leading = Leading::enter(self.shared);
        let shared = self.shared;
        let runner = self.runner.as_mut().expect("the runner");
        if runner.idle() {
            runner.wake_up();
        }
        shared.wake.clear();
        drop(Lead::take_in(shared, runner));
        loop {
            if let Err(e) = runner.step(Some(&shared.wake)) {
                if matches!(e, Error::Interrupted) {
                    shared.fail_all(me, Error::Interrupted);
                } else if me == For::Driver {
                    shared.fail_all(me, e);
                    return Ok(());
                }
                return Err(e);
            }
            if runner.woken() {
                shared.wake.clear();
                let st = Lead::take_in(shared, runner);
                match me {
                    For::Caller(c) => {
                        if st.callers.get(&c).is_none_or(|c| c.cancelled) {
                            return Err(Error::Cancelled);
                        }
                    }
                    For::Driver if st.detached_open == 0 => return Ok(()),
                    For::Driver => {}
                }
            }
            if runner.done.is_empty() {
                continue;
            }
            if let For::Caller(c) = me {
                if runner.done.iter().all(|f| f.caller == c) {
                    // Alone on the pool (the common case): no lock, no routing.
                    finished(shared, c, runner.done.len());
                    out.append(&mut runner.done);
                    return Ok(());
                }
            }
            let mine = shared.route(me, &mut runner.done, out);
            if mine || (me == For::Driver && shared.lock().detached_open == 0) {
                return Ok(());
            }
        }
    }
}

/// Counts `n` of `caller`'s tasks as back.
fn finished(shared: &Shared, caller: u64, n: usize) {
    let mut st = shared.lock();
    let st = &mut *st;
    if let Some(c) = st.callers.get_mut(&caller) {
        let before = c.open_tasks;
        c.open_tasks = c.open_tasks.saturating_sub(n);
        if c.detached && before > 0 && c.open_tasks == 0 {
            st.detached_open -= 1;
        }
    }
}

impl Shared {
    /// Hands finished tasks to their callers; true when some were `me`'s (in `out`).
    fn route(&self, me: For, done: &mut Vec<Finished>, out: &mut Vec<Finished>) -> bool {
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut mine = false;
        let mut wakers = Vec::new();
        for f in done.drain(..) {
            let Some(c) = st.callers.get_mut(&f.caller) else {
                continue; // Its caller is gone.
            };
            let before = c.open_tasks;
            c.open_tasks = c.open_tasks.saturating_sub(1);
            if c.detached && before > 0 && c.open_tasks == 0 {
                st.detached_open -= 1;
            }
            if me == For::Caller(f.caller) {
                mine = true;
                out.push(f);
            } else {
                c.done.push(f);
                if let Some(w) = c.waker.take() {
                    wakers.push(w);
                }
            }
        }
        drop(guard);
        self.cond.notify_all();
        // Outside the lock: a waker may call into the pool (submit, cancel, poll).
        for w in wakers {
            w.wake();
        }
        mine
    }

    /// Gives every other caller the error `e` (Ctrl-C stops them all, also a `get` between
    /// its start and its first unit).
    fn fail_all(&self, me: For, e: Error) {
        let mut st = self.lock();
        let text = e.to_string();
        let mut wakers = Vec::new();
        for (&id, c) in st.callers.iter_mut() {
            // Every caller but one already finished (a submitted call whose result waits).
            if me == For::Caller(id) || (c.detached && c.open_tasks == 0) || c.error.is_some() {
                continue;
            }
            c.error = Some(match &e {
                Error::Interrupted => Error::Interrupted,
                _ => Error::Scheduler(text.clone()),
            });
            if let Some(w) = c.waker.take() {
                wakers.push(w);
            }
        }
        drop(st);
        self.cond.notify_all();
        for w in wakers {
            w.wake();
        }
    }
}

thread_local!(
    /// The pools whose runner this thread holds, innermost last (a callback of one pool's
    /// leader may lead another pool).
    static LEADING: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) }
);

/// Whether this thread holds `shared`'s runner (it leads, or applies a cancellation), also
/// under a lead of another pool; code it runs meanwhile (wakers, log callbacks) must not wait
/// for the runner.
fn leading(shared: &Shared) -> bool {
    let me = shared as *const Shared as usize;
    LEADING.with(|l| l.borrow().contains(&me))
}

/// Marks the current thread as holding a pool's runner (see `Shared::leave`).
struct Leading;

impl Leading {
    fn enter(shared: &Shared) -> Leading {
        LEADING.with(|l| l.borrow_mut().push(shared as *const Shared as usize));
        Leading
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        LEADING.with(|l| l.borrow_mut().pop());
    }
}

impl crate::handle::Calls for Shared {
    fn poll_caller(
        &self,
        caller: u64,
        waker: Option<&Waker>,
    ) -> Option<Result<Vec<Finished>, Error>> {
        Shared::poll_caller(self, caller, waker)
    }

    fn wait(
        &self,
        caller: u64,
        out: &mut Vec<Finished>,
        deadline: Option<std::time::Instant>,
    ) -> Result<bool, Error> {
        Shared::wait(self, caller, out, deadline)
    }

    fn wait_any(&self, callers: &[u64], timeout: Option<std::time::Duration>) -> Option<usize> {
        Shared::wait_any(self, callers, timeout)
    }

    fn waits_for_itself(&self) -> bool {
        leading(self)
    }

    fn leave(&self, caller: u64) {
        Shared::leave(self, caller)
    }
}
