//! The pool's processes: the fork server and the workers, as the parent sees them.
//!
//! Neither is trusted to answer: every request to the fork server has a deadline (a server that
//! misses it is killed and replaced), a worker's death is seen from its pidfd (not from its
//! socket, which a process it forked may keep open), and what a worker sends is read as hostile
//! input in bounded amounts.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Child;
use std::time::Duration;

use forkgraph_worker::frame::{Inbox, Outbox};
use forkgraph_worker::proto::{FromServer, FromWorker, Limits, ToServer};
use forkgraph_worker::segments::{ledger, Side};
use forkgraph_worker::sys::{self, Exit, SharedPage, Slot, Stream};
use forkgraph_worker::{Registry, TaskFailure, TaskSpec};
use std::sync::Arc;

use super::exec::InFlight;
use super::stderr::{self, Tail};
use super::Config;

/// Lines of the tail shown in an error.
pub(crate) const TAIL_LINES: usize = 20;
/// Most bytes read from one worker's socket in one go, so that a worker that floods its socket
/// cannot hold the scheduler.
const READ_BUDGET: usize = 64 << 20;

/// The fork server, seen from the parent.
pub(crate) struct Server {
    child: Child,
    pidfd: OwnedFd,
    /// `None` only while dropping.
    control: Option<Stream>,
    inbox: Inbox,
    timeout: Duration,
}

impl Server {
    fn start(timeout: Duration) -> Result<Server, String> {
        if !forkgraph_worker::forkserver::hook_ran() {
            return Err(
                "forkgraph's start-up hook did not run in this executable, so it cannot \
                        serve as a fork server"
                    .into(),
            );
        }
        let (mine, theirs) = Stream::pair().map_err(|e| format!("socketpair: {e}"))?;
        mine.set_nonblocking(true)
            .map_err(|e| format!("fork server socket: {e}"))?;
        let mut child = sys::spawn_fork_server(theirs.into_fd(), &[])
            .map_err(|e| format!("cannot re-execute /proc/self/exe as a fork server: {e}"))?;
        // Our unreaped child: its pid cannot have been reused.
        let pidfd = match sys::pidfd_open(child.id() as i32) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("pidfd_open of the fork server: {e}"));
            }
        };
        Ok(Server {
            child,
            pidfd,
            control: Some(mine),
            inbox: Inbox::new(),
            timeout,
        })
    }

    /// One request and its reply, within the server's deadline. Any failure to talk to the
    /// server (end-of-file, broken pipe, lost fds, no answer in time) means it is gone or can no
    /// longer be trusted: it is killed, and the caller gets [`Replace::ServerGone`].
    fn request(&mut self, msg: &ToServer) -> Result<(FromServer, Vec<OwnedFd>), Replace> {
        match self.exchange(msg) {
            Ok(reply) => Ok(reply),
            Err(why) => {
                sys::pidfd_kill(self.pidfd.as_fd());
                Err(Replace::ServerGone(why))
            }
        }
    }

    fn exchange(&mut self, msg: &ToServer) -> Result<(FromServer, Vec<OwnedFd>), String> {
        let mut deadline = sys::deadline_after(self.timeout);
        // A server that misses its deadline may just be stopped (a task can SIGSTOP it): it is
        // sent SIGCONT and given the same time again before it is given up.
        let mut woken = false;
        let mut out = Outbox::default();
        out.push(msg, Vec::new()).map_err(|e| e.to_string())?;
        let gone = |e: io::Error| format!("the fork server is gone ({e})");
        loop {
            let control = self.control.as_ref().expect("open until drop");
            if out.is_empty() {
                if let Some(reply) = self.inbox.take_frame(Side::Parent(0)).map_err(gone)? {
                    return Ok(reply);
                }
                match self.inbox.fill(control) {
                    Ok(true) => continue,
                    Ok(false) => return Err("the fork server has exited".into()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(gone(e)),
                }
            } else {
                out.flush(control).map_err(gone)?;
                if out.is_empty() {
                    continue;
                }
            }
            let interests = [
                sys::Interest {
                    fd: control.as_fd(),
                    read: out.is_empty(),
                    write: !out.is_empty(),
                },
                sys::Interest {
                    fd: self.pidfd.as_fd(),
                    read: true,
                    write: false,
                },
            ];
            let ready = sys::poll_until(&interests, deadline).map_err(|e| format!("poll: {e}"))?;
            if ready[1].read {
                return Err("the fork server has exited".into());
            }
            if !ready[0].read && !ready[0].write {
                if woken {
                    return Err(format!(
                        "the fork server (pid {}) did not answer within {} ms, even after \
                         SIGCONT (stuck)",
                        self.child.id(),
                        self.timeout.as_millis()
                    ));
                }
                sys::pidfd_continue(self.pidfd.as_fd());
                woken = true;
                deadline = sys::deadline_after(self.timeout);
            }
        }
    }

    fn spawn(&mut self, limits: Limits, init: Option<&Arc<TaskSpec>>) -> Result<Proc, Replace> {
        let init = init.cloned();
        // Workers forward what tasks log at the levels this process has enabled now.
        let limits = Limits {
            log_level: forkgraph_worker::logs::current_log_level(),
            trace_level: forkgraph_worker::logs::current_trace_level(),
            ..limits
        };
        match self.request(&ToServer::Spawn { limits, init })? {
            (FromServer::Spawned { pid }, fds) => {
                let proc = (fds.len() == 4)
                    .then_some(fds)
                    .ok_or_else(|| "the fork server sent a worker without its fds".to_string())
                    .and_then(|fds| {
                        let mut fds = fds.into_iter();
                        let mut next = || fds.next().expect("4 fds");
                        let (sock, stderr, page_fd, pidfd) = (next(), next(), next(), next());
                        Proc::new(pid, Stream::from_fd(sock), stderr, &page_fd, pidfd)
                            .map_err(|e| format!("worker {pid}: {e}"))
                    });
                proc.map_err(|e| {
                    // Do not leave it running unseen: have the server kill and reap it.
                    let _ = self.request(&ToServer::Reap { pid });
                    Replace::Failed(e)
                })
            }
            (FromServer::Failed(e), _) => Err(Replace::Failed(format!(
                "the fork server could not fork: {e}"
            ))),
            (other, _) => Err(Replace::Failed(format!(
                "unexpected fork server reply {other:?}"
            ))),
        }
    }

    /// Kills (if still alive) and reaps a worker; how it ended.
    pub(crate) fn reap(&mut self, pid: i32) -> Result<Exit, Replace> {
        match self.request(&ToServer::Reap { pid })? {
            (FromServer::Reaped { exit, .. }, _) => Ok(exit),
            (FromServer::Failed(e), _) => Err(Replace::Failed(e)),
            (other, _) => Err(Replace::Failed(format!(
                "unexpected fork server reply {other:?}"
            ))),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // End-of-file on the control socket makes the server kill and reap every worker, then
        // exit; wait for that (within its deadline) so that nothing outlives the pool. A server
        // that does not exit in time (stopped, stuck) is killed; its workers die with it.
        // A stopped server is woken first, so that it can still end what the tasks forked.
        sys::pidfd_continue(self.pidfd.as_fd());
        drop(self.control.take());
        if !sys::pidfd_wait(self.pidfd.as_fd(), self.timeout) {
            sys::pidfd_kill(self.pidfd.as_fd());
        }
        // Fails (ECHILD) when the program ignores SIGCHLD: the kernel reaped it already.
        let _ = self.child.wait();
    }
}

/// A worker, seen from the parent.
pub(crate) struct Proc {
    pub(crate) pid: i32,
    pub(crate) sock: Stream,
    pub(crate) inbox: Inbox,
    pub(crate) outbox: Outbox,
    stderr: OwnedFd,
    stderr_open: bool,
    pub(crate) tail: Tail,
    pub(crate) page: SharedPage,
    /// Readable once the process has ended.
    pidfd: OwnedFd,
    /// Units sent and not yet answered, in the order the worker runs them.
    pub(crate) in_flight: VecDeque<InFlight>,
    /// When the first unit of `in_flight` became the first (it was sent to an idle worker, or
    /// the result before it arrived): the earliest it can have started, as far as the parent
    /// knows without asking the worker.
    pub(crate) head_since: u64,
    /// Set while the message holding the head unit is not yet all written to the socket (the
    /// worker cannot have started it; `head_since` is set once it is).
    pub(crate) head_unsent: bool,
    /// Extra time the worker gets to decode the message holding the head unit (1 ns a byte).
    pub(crate) head_grace: u64,
    pub(crate) hello: bool,
    /// Tasks finished by this worker.
    pub(crate) tasks_done: u64,
    /// Moving average of a unit's run time, in ns (0: unknown).
    pub(crate) avg_unit_ns: f64,
    /// Most fds a unit's results brought along so far (for fd backpressure).
    pub(crate) fds_per_unit: usize,
    /// Set when the worker is known to be gone (exited, end-of-file, write error, killed).
    pub(crate) dead: bool,
    /// Why the parent gave up on it, when it was not simply its death (a malformed message).
    pub(crate) note: Option<String>,
    /// Set when it broke the protocol: messages after that are ignored.
    pub(crate) broken: bool,
    /// Set when the parent killed it for a timeout: (unit seq, task index, timeout).
    pub(crate) timed_out: Option<(u64, u64, std::time::Duration)>,
    /// Segments its tasks kept (pinned against recycling until this worker is gone).
    pub(crate) pins: Vec<u64>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        for ino in self.pins.drain(..) {
            ledger::unpin(ino);
        }
    }
}

impl Proc {
    fn new(
        pid: i32,
        sock: Stream,
        stderr: OwnedFd,
        page_fd: &OwnedFd,
        pidfd: OwnedFd,
    ) -> io::Result<Proc> {
        sock.set_nonblocking(true)?;
        sys::set_nonblocking(stderr.as_fd(), true)?;
        let page = SharedPage::map(page_fd.as_fd())?;
        Ok(Proc {
            pid,
            sock,
            inbox: Inbox::new(),
            outbox: Outbox::default(),
            stderr,
            stderr_open: true,
            tail: Tail::default(),
            page,
            pidfd,
            in_flight: VecDeque::new(),
            head_since: 0,
            head_unsent: false,
            head_grace: 0,
            hello: false,
            tasks_done: 0,
            avg_unit_ns: 0.0,
            fds_per_unit: 0,
            dead: false,
            note: None,
            broken: false,
            timed_out: None,
            pins: Vec::new(),
        })
    }

    /// What its progress page says it runs now: (unit, task index, start). Written by the
    /// worker, so by whatever task code runs there: a hint, checked against what the parent
    /// knows before it is used.
    pub(crate) fn running(&self) -> Option<(u64, u64, u64)> {
        let seq = self.page.get(Slot::Unit);
        (seq != 0).then(|| (seq, self.page.get(Slot::Task), self.page.get(Slot::Started)))
    }

    /// The pidfd (for polling: readable once the worker has ended).
    pub(crate) fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Whether the process has ended (whatever its socket says).
    pub(crate) fn exited(&self) -> bool {
        sys::pidfd_exited(self.pidfd.as_fd())
    }

    /// The stderr fd while it is open (for polling).
    pub(crate) fn stderr_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stderr_open.then(|| self.stderr.as_fd())
    }

    /// Forwards what the worker wrote to stderr to ours (never blocking), keeping a tail.
    pub(crate) fn drain_stderr(&mut self) {
        let mut buf = [0u8; 8192];
        // Bounded, like socket reads: a flood of output cannot hold the scheduler.
        for _ in 0..1024 {
            if !self.stderr_open {
                break;
            }
            match sys::read(self.stderr.as_fd(), &mut buf) {
                Ok(0) => {
                    self.stderr_open = false;
                    stderr::forward(self.tail.finish());
                }
                Ok(n) => stderr::forward(self.tail.take(&buf[..n])),
                Err(_) => break,
            }
        }
    }

    /// Reads what the socket has (at most [`READ_BUDGET`] bytes); returns decoded messages.
    /// Marks the worker dead at end-of-file, on errors, and on anything that is not a
    /// well-formed message (with a note saying what it sent).
    pub(crate) fn read_messages(&mut self) -> Vec<FromWorker> {
        let mut out = Vec::new();
        let mut budget = READ_BUDGET;
        loop {
            let before = self.inbox.buffered();
            match self.inbox.fill(&self.sock) {
                Ok(true) => {
                    budget = budget.saturating_sub(self.inbox.buffered().saturating_sub(before));
                    if budget == 0 {
                        break;
                    }
                }
                Ok(false) => {
                    self.dead = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    // It closed its socket with our messages unread: it is gone.
                    self.dead = true;
                    break;
                }
                Err(e) => {
                    // Lost fds (our fd limit) and the like: what arrived before still counts.
                    self.note
                        .get_or_insert(format!("reading from worker {} failed: {e}", self.pid));
                    self.kill();
                    break;
                }
            }
        }
        let pid = self.pid;
        loop {
            let before = sys::segment_stats().0;
            let frame = self.inbox.take_frame::<FromWorker>(Side::Parent(pid));
            match frame {
                Ok(Some((m, _))) => {
                    if let FromWorker::Done(units) = &m {
                        // Segments now mapped here for these results: each holds an fd.
                        let segs = sys::segment_stats().0.saturating_sub(before) as usize;
                        let per = segs.div_ceil(units.len().max(1));
                        self.fds_per_unit = self.fds_per_unit.max(per);
                    }
                    out.push(m);
                }
                Ok(None) => break,
                Err(e) => {
                    self.give_up(format!(
                        "worker {pid} broke the protocol and was killed: {e} (a task may have \
                         written to the worker's socket)"
                    ));
                    break;
                }
            }
        }
        out
    }

    /// Declares that the worker broke the protocol (`why`), and kills it: nothing more it
    /// says counts.
    pub(crate) fn give_up(&mut self, why: String) {
        if self.note.is_none() {
            self.note = Some(why);
        }
        self.broken = true;
        self.kill();
    }

    /// Kills the process (through its pidfd: never another process that reused the pid) and
    /// marks it dead.
    pub(crate) fn kill(&mut self) {
        sys::pidfd_kill(self.pidfd.as_fd());
        self.dead = true;
    }

    /// Sends what is queued; marks the worker dead if it cannot take it.
    pub(crate) fn flush(&mut self) {
        if self.outbox.flush(&self.sock).is_err() {
            self.dead = true;
        } else if self.head_unsent && self.outbox.is_empty() {
            // The head's message is out: from now on the worker may run it.
            self.head_unsent = false;
            self.head_since = sys::monotonic_ns();
        }
    }

    /// Takes the worker's first message: its function table must be ours, and its
    /// `worker_init` must have succeeded.
    pub(crate) fn check_hello(
        &mut self,
        pid: i32,
        digest: u64,
        init: Option<TaskFailure>,
    ) -> Result<(), String> {
        self.hello = true;
        if digest != Registry::global().digest() || pid != self.pid {
            return Err(format!(
                "worker {pid} has a different function table than this process; the executable \
                 changed on disk after the pool started"
            ));
        }
        if let Some(f) = init {
            return Err(format!(
                "worker_init `{}` failed in worker {pid}: {}",
                f.function, f.error
            ));
        }
        Ok(())
    }

    /// Waits (until `deadline`, monotonic ns) for the worker's first message and checks it.
    fn await_hello(&mut self, deadline: u64) -> Result<(), String> {
        while !self.hello {
            let ready = sys::poll_until(
                &[
                    sys::Interest {
                        fd: self.sock.as_fd(),
                        read: true,
                        write: false,
                    },
                    sys::Interest {
                        fd: self.pidfd.as_fd(),
                        read: true,
                        write: false,
                    },
                ],
                deadline,
            )
            .map_err(|e| e.to_string())?;
            if !ready[0].read && !ready[1].read {
                return Err(format!("new worker {} did not start in time", self.pid));
            }
            if ready[0].read {
                for m in self.read_messages() {
                    match m {
                        FromWorker::Hello { pid, digest, init } => {
                            self.check_hello(pid, digest, init)?
                        }
                        FromWorker::Log(r) => super::logs::emit(self.pid, None, &r),
                        FromWorker::Done(_) => {}
                    }
                }
            }
            if !self.hello && (self.dead || ready[1].read) {
                self.drain_stderr();
                let tail = self.tail.text();
                return Err(format!(
                    "new worker {} died before it was ready (in its worker_init, if the pool has \
                     one){}{}",
                    self.pid,
                    if tail.is_empty() {
                        ""
                    } else {
                        "; its stderr:\n"
                    },
                    tail.trim_end()
                ));
            }
        }
        Ok(())
    }
}

/// Why a worker could not be replaced.
#[derive(Debug)]
pub(crate) enum Replace {
    /// The fork server is gone, or was killed for not answering (so are all workers): why.
    ServerGone(String),
    /// Something else failed.
    Failed(String),
}

impl Replace {
    pub(crate) fn into_message(self) -> String {
        match self {
            Replace::ServerGone(e) | Replace::Failed(e) => e,
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
    server: Server,
    pub(crate) workers: Vec<Proc>,
    pub(crate) next_seq: u64,
    /// Average bytes of shared segments a task of each function returned (for the budget).
    pub(crate) result_bytes: std::collections::HashMap<forkgraph_worker::FnId, f64>,
    started: u64,
    limits: Limits,
    server_timeout: Duration,
    init: Option<Arc<TaskSpec>>,
}

impl Pool {
    pub(crate) fn start(cfg: &Config, init: Option<Arc<TaskSpec>>) -> Result<Pool, String> {
        let mut server = Server::start(cfg.server_timeout)?;
        let mut workers = Vec::with_capacity(cfg.workers);
        for _ in 0..cfg.workers {
            workers.push(
                server
                    .spawn(cfg.limits, init.as_ref())
                    .map_err(Replace::into_message)?,
            );
        }
        if init.is_some() {
            // Its failure is the build's.
            let deadline = sys::deadline_after(cfg.server_timeout);
            for w in &mut workers {
                w.await_hello(deadline)?;
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
        })
    }

    /// Whether workers run a `worker_init` first.
    pub(crate) fn has_init(&self) -> bool {
        self.init.is_some()
    }

    pub(crate) fn pids(&self) -> Vec<i32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    pub(crate) fn server_pid(&self) -> i32 {
        self.server.child.id() as i32
    }

    pub(crate) fn started(&self) -> u64 {
        self.started
    }

    /// Reaps worker `i` (killing it if still alive) and starts a replacement in its slot;
    /// returns how the old one ended, the tail of its stderr and what its progress page said
    /// once it was dead (the unit, task index and start it was running). Its units must have
    /// been taken out of it. If the replacement cannot start, the slot stays empty (dead,
    /// pid 0) and the next call tries again.
    pub(crate) fn replace(&mut self, i: usize) -> Result<Death, Replace> {
        let w = &mut self.workers[i];
        let exit = if w.pid > 0 {
            let exit = self.server.reap(w.pid)?;
            // Reaped: the pid may be reused from now on, never signal it again.
            w.pid = 0;
            w.dead = true;
            w.drain_stderr();
            Some(exit)
        } else {
            None
        };
        let death = Death {
            exit,
            tail: w.tail.text(),
            running: w.running(),
            note: w.note.take(),
        };
        let new = self.server.spawn(self.limits, self.init.as_ref())?;
        self.started += 1;
        self.workers[i] = new;
        Ok(death)
    }

    /// Starts a new fork server and new workers (after the old server died or was killed). The
    /// old workers die with it (PR_SET_PDEATHSIG); when this program is a child subreaper they
    /// become its children, and are reaped here (through their pidfds, so no other child of the
    /// program is touched) rather than left as zombies.
    pub(crate) fn restart_server(&mut self) -> Result<(), String> {
        // The old workers stay in place (dead) until the new ones exist: a pool whose restart
        // failed still has its slots, and the next `get` tries again rather than finding no
        // worker to wait for.
        let mut server = Server::start(self.server_timeout)?;
        if sys::is_subreaper() {
            for w in &self.workers {
                sys::pidfd_kill(w.pidfd());
                if sys::pidfd_wait(w.pidfd(), self.server_timeout) {
                    let _ = sys::pidfd_reap(w.pidfd());
                }
            }
        }
        let mut workers = Vec::with_capacity(self.workers.len());
        for _ in 0..self.workers.len() {
            workers.push(
                server
                    .spawn(self.limits, self.init.as_ref())
                    .map_err(Replace::into_message)?,
            );
        }
        self.started += workers.len() as u64;
        self.server = server;
        self.workers = workers;
        Ok(())
    }

    /// Kills worker `i`, starts a replacement and waits for its hello (within the fork-server
    /// deadline); returns the new pid.
    pub(crate) fn restart(&mut self, i: usize) -> Result<i32, String> {
        if i >= self.workers.len() {
            return Err(format!(
                "no worker {i}: the pool has {}",
                self.workers.len()
            ));
        }
        if !self.workers[i].in_flight.is_empty() {
            return Err("worker is busy".into());
        }
        self.workers[i].kill();
        match self.replace(i) {
            Ok(_) => {}
            Err(Replace::ServerGone(_)) => self.restart_server()?,
            Err(Replace::Failed(e)) => return Err(e),
        }
        let deadline = sys::deadline_after(self.server_timeout);
        let w = &mut self.workers[i];
        w.await_hello(deadline)?;
        Ok(w.pid)
    }
}
