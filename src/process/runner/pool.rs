//! The pool's processes as the scheduler keeps them: the fork server and one slot per worker,
//! each slot a worker handle plus what the runner knows about it.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use forkgraph_worker::host::Exit;
use forkgraph_worker::host::{self, ForkServer, SpawnError, StartError, WorkerHandle};
use forkgraph_worker::proto::Limits;
use forkgraph_worker::segments::ledger;
use forkgraph_worker::TaskSpec;

use super::InFlight;
use crate::callbacks::{WorkerEvent, WorkerId};
use crate::process::Config;

/// A worker and what the runner knows about it.
pub(crate) struct Slot {
    pub(crate) handle: WorkerHandle,
    /// Units sent and not yet answered, in the order the worker runs them.
    pub(crate) in_flight: VecDeque<InFlight>,
    /// When the first unit of `in_flight` became the first (its message was all written to an
    /// idle worker, or the result before it arrived): the earliest it can have started, as far
    /// as the parent knows without asking the worker.
    pub(crate) head_since: u64,
    /// Set while the message holding the head unit is not yet all written to the socket (the
    /// worker cannot have started it; `head_since` is set once it is).
    pub(crate) head_unsent: bool,
    /// Extra time the worker gets to decode the message holding the head unit (1 ns a byte).
    pub(crate) head_grace: u64,
    /// Tasks finished by this worker.
    pub(crate) tasks_done: u64,
    /// Moving average of a unit's run time, in ns (0: unknown).
    pub(crate) avg_unit_ns: f64,
    /// Most fds a unit's results brought along so far (for fd backpressure).
    pub(crate) fds_per_unit: usize,
    /// Set when the parent killed it for a timeout: (unit seq, task index, timeout).
    pub(crate) timed_out: Option<(u64, u64, Duration)>,
    /// Set when the parent killed it because the caller of its running unit was cancelled.
    pub(crate) cancel_kill: bool,
    /// Segments its tasks kept (pinned against recycling until this worker is gone).
    pub(crate) pins: Vec<u64>,
    /// When it was started (its `worker_init` must be done by then + the fork-server timeout).
    pub(crate) spawned_at: u64,
    /// A worker whose socket closed while it still runs gets until then to exit on its own.
    pub(crate) exit_grace_until: Option<u64>,
}

impl Slot {
    fn new(handle: WorkerHandle) -> Slot {
        Slot {
            handle,
            in_flight: VecDeque::new(),
            head_since: 0,
            head_unsent: false,
            head_grace: 0,
            tasks_done: 0,
            avg_unit_ns: 0.0,
            fds_per_unit: 0,
            timed_out: None,
            cancel_kill: false,
            pins: Vec::new(),
            spawned_at: host::now(),
            exit_grace_until: None,
        }
    }

    /// Sends what is queued; once the message holding the head unit is all out, the head is
    /// timed from now. (Not `flush`, so that it cannot be confused with the handle's.)
    pub(crate) fn send_queued(&mut self) {
        if self.handle.flush() && self.head_unsent {
            self.head_unsent = false;
            self.head_since = host::now();
        }
    }
}

impl Deref for Slot {
    type Target = WorkerHandle;
    fn deref(&self) -> &WorkerHandle {
        &self.handle
    }
}

impl DerefMut for Slot {
    fn deref_mut(&mut self) -> &mut WorkerHandle {
        &mut self.handle
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        for ino in self.pins.drain(..) {
            ledger::unpin(ino);
        }
    }
}

/// What is known about a worker that was reaped.
pub(crate) struct Death {
    /// How it ended (`None`: it had been reaped before).
    pub(crate) exit: Option<Exit>,
    /// The last 8 KiB of its stderr since it last sent results.
    pub(crate) tail: String,
    /// (unit, task index, start) from its progress page at death: a hint.
    pub(crate) running: Option<(u64, u64, u64)>,
    /// Why the parent gave up on it, if it did (a malformed message).
    pub(crate) note: Option<String>,
}

/// The fork server and the workers.
pub(crate) struct Pool {
    server: ForkServer,
    pub(crate) workers: Vec<Slot>,
    pub(crate) next_seq: u64,
    /// Average bytes of shared segments a task of each function returned (for the budget).
    pub(crate) result_bytes: std::collections::HashMap<forkgraph_worker::FnId, f64>,
    started: u64,
    limits: Limits,
    server_timeout: Duration,
    init: Option<Arc<TaskSpec>>,
    /// Worker lifecycle events, while a run with callbacks records them.
    pub(crate) events: Option<Vec<WorkerEvent>>,
}

impl Pool {
    pub(crate) fn start(cfg: &Config, init: Option<Arc<TaskSpec>>) -> Result<Pool, StartError> {
        let mut server = ForkServer::start_sandboxed(cfg.server_timeout, cfg.sandbox.clone())?;
        let mut workers = Vec::with_capacity(cfg.workers);
        for _ in 0..cfg.workers {
            workers.push(Slot::new(
                server
                    .spawn(cfg.limits, init.as_ref())
                    .map_err(StartError::from)?,
            ));
        }
        if init.is_some() {
            // Its failure is the build's.
            let deadline = host::deadline_after(cfg.server_timeout);
            for w in &mut workers {
                w.await_hello(deadline, &|pid, r| crate::process::logs::emit(pid, None, r))
                    .map_err(StartError::new)?;
            }
        }
        Ok(Pool {
            server,
            started: workers.len() as u64,
            workers,
            next_seq: 1,
            result_bytes: std::collections::HashMap::new(),
            limits: cfg.limits,
            server_timeout: cfg.server_timeout,
            init,
            events: None,
        })
    }

    /// Whether workers run a `worker_init` first.
    pub(crate) fn has_init(&self) -> bool {
        self.init.is_some()
    }

    pub(crate) fn pids(&self) -> Vec<i32> {
        self.workers.iter().map(|w| w.pid()).collect()
    }

    /// Worker `i` as callbacks name it.
    pub(crate) fn worker_id(&self, i: usize) -> WorkerId {
        WorkerId::Process {
            slot: i,
            pid: self.workers[i].pid(),
        }
    }

    /// Records that worker `old` (slot `i`) ended and, if `new_pid` is set, was replaced.
    fn record_death(&mut self, i: usize, old: i32, exit: Option<Exit>, cause: String) {
        let Some(events) = &mut self.events else {
            return;
        };
        let at = host::now();
        let worker = WorkerId::Process { slot: i, pid: old };
        let (signal, exit_code) = match exit {
            Some(Exit::Signal(s)) => (Some(s), None),
            Some(Exit::Code(c)) => (None, Some(c)),
            None => (None, None),
        };
        events.push(WorkerEvent::Died {
            worker,
            at,
            cause,
            signal,
            exit_code,
        });
    }

    fn record_start(&mut self, i: usize, old: Option<i32>) {
        let new = self.worker_id(i);
        let Some(events) = &mut self.events else {
            return;
        };
        let at = host::now();
        events.push(WorkerEvent::Started { worker: new, at });
        if let Some(pid) = old.filter(|&p| p > 0) {
            events.push(WorkerEvent::Replaced {
                old: WorkerId::Process { slot: i, pid },
                new,
                at,
            });
        }
    }

    /// Gives the last recorded death of slot `i` a better cause (the runner knows it killed
    /// the worker for a timeout).
    pub(crate) fn explain_death(&mut self, i: usize, why: String) {
        let Some(events) = &mut self.events else {
            return;
        };
        let last = events.iter_mut().rev().find_map(|e| match e {
            WorkerEvent::Died {
                worker: WorkerId::Process { slot, .. },
                cause,
                ..
            } if *slot == i => Some(cause),
            _ => None,
        });
        if let Some(cause) = last {
            *cause = why;
        }
    }

    pub(crate) fn server_pid(&self) -> i32 {
        self.server.pid()
    }

    pub(crate) fn started(&self) -> u64 {
        self.started
    }

    /// Reaps worker `i` (killing it if still alive) and starts a replacement in its slot;
    /// returns how the old one ended, the tail of its stderr and what its progress page said
    /// once it was dead (the unit, task index and start it was running). Its units must have
    /// been taken out of it. If the replacement cannot start, the slot stays empty (dead,
    /// pid 0) and the next call tries again.
    pub(crate) fn replace(&mut self, i: usize) -> Result<Death, SpawnError> {
        let w = &mut self.workers[i];
        let old = w.pid();
        // Alive until now: the pool retires it (recycling, or a fresh worker for a suspect).
        let retired = !w.is_dead();
        let exit = if w.pid() > 0 {
            Some(self.server.reap_worker(&mut w.handle)?)
        } else {
            None
        };
        let death = Death {
            exit,
            tail: w.tail_text(),
            running: w.running(),
            note: w.take_note(),
        };
        if old > 0 && self.events.is_some() {
            let cause = match (&death.note, exit) {
                _ if retired => "retired by the pool (max_tasks_per_worker, or a fresh worker \
                                 for a task under suspicion)"
                    .to_owned(),
                (Some(note), _) => format!("killed by the pool: {note}"),
                (None, Some(e)) => describe_exit(e),
                (None, None) => "gone".to_owned(),
            };
            self.record_death(i, old, exit, cause);
        }
        let new = self.server.spawn(self.limits, self.init.as_ref())?;
        self.started += 1;
        self.workers[i] = Slot::new(new);
        self.record_start(i, Some(old));
        Ok(death)
    }

    /// Starts a new fork server and new workers (after the old server died or was killed). The
    /// old workers die with it (PR_SET_PDEATHSIG); when this program is a child subreaper they
    /// become its children, and are reaped here (through their pidfds, so no other child of the
    /// program is touched) rather than left as zombies.
    pub(crate) fn restart_server(&mut self) -> Result<(), StartError> {
        // The old workers stay in place (dead) until the new ones exist: a pool whose restart
        // failed still has its slots, and the next `get` tries again rather than finding no
        // worker to wait for.
        let mut server = ForkServer::start_sandboxed(self.server_timeout, self.server.sandbox())?;
        for w in &self.workers {
            w.reap_orphaned(self.server_timeout);
        }
        let mut workers = Vec::with_capacity(self.workers.len());
        for _ in 0..self.workers.len() {
            workers.push(Slot::new(
                server
                    .spawn(self.limits, self.init.as_ref())
                    .map_err(StartError::from)?,
            ));
        }
        self.started += workers.len() as u64;
        self.server = server;
        let old: Vec<i32> = self.workers.iter().map(|w| w.pid()).collect();
        self.workers = workers;
        for (i, pid) in old.into_iter().enumerate() {
            if pid > 0 {
                let cause = "the fork server died or was replaced, and its workers with it";
                self.record_death(i, pid, None, cause.to_owned());
            }
            self.record_start(i, Some(pid));
        }
        Ok(())
    }

    /// Kills worker `i`, starts a replacement and waits for its hello (within the fork-server
    /// deadline); returns the new pid.
    pub(crate) fn restart(&mut self, i: usize) -> Result<i32, StartError> {
        if i >= self.workers.len() {
            return Err(StartError::new(format!(
                "no worker {i}: the pool has {}",
                self.workers.len()
            )));
        }
        if !self.workers[i].in_flight.is_empty() {
            return Err(StartError::new("worker is busy"));
        }
        self.workers[i].kill();
        match self.replace(i) {
            Ok(_) => {}
            Err(SpawnError::ServerGone(_)) => self.restart_server()?,
            Err(SpawnError::Failed(e)) => return Err(StartError::new(e)),
        }
        let deadline = host::deadline_after(self.server_timeout);
        let w = &mut self.workers[i];
        w.await_hello(deadline, &|pid, r| crate::process::logs::emit(pid, None, r))
            .map_err(StartError::new)?;
        Ok(w.pid())
    }
}

/// How a worker ended, as a person reads it.
fn describe_exit(e: Exit) -> String {
    match e {
        Exit::Signal(s) => format!("killed by signal {s} ({})", crate::error::signal_name(s)),
        Exit::Code(c) => format!("exited with code {c}"),
    }
}
