//! The pool's processes: the fork server and the workers, as the parent sees them.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Child;

use forkgraph_worker::proto::{self, FromServer, FromWorker, Inbox, Limits, Outbox, ToServer};
use forkgraph_worker::sys::{self, Exit, SharedPage, Slot, Stream};
use forkgraph_worker::Registry;

use super::exec::InFlight;
use super::Config;

/// Bytes of each worker's stderr kept for error reports.
const TAIL_BYTES: usize = 8 * 1024;
/// Lines of the tail shown in an error.
pub(crate) const TAIL_LINES: usize = 20;

/// The fork server, seen from the parent.
pub(crate) struct Server {
    child: Child,
    /// `None` only while dropping.
    control: Option<Stream>,
    inbox: Inbox,
}

impl Server {
    fn start() -> Result<Server, String> {
        sys::raise_fd_limit();
        if !forkgraph_worker::forkserver::hook_ran() {
            return Err(
                "forkgraph's start-up hook did not run in this executable, so it cannot \
                        serve as a fork server"
                    .into(),
            );
        }
        let (mine, theirs) = Stream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let child = sys::spawn_fork_server(theirs.into_fd(), &[])
            .map_err(|e| format!("cannot re-execute /proc/self/exe as a fork server: {e}"))?;
        Ok(Server {
            child,
            control: Some(mine),
            inbox: Inbox::new(),
        })
    }

    /// One request and its reply. Any failure to talk to the server (end-of-file, broken pipe,
    /// lost fds) means it is gone or can no longer be trusted: [`Replace::ServerGone`].
    fn request(&mut self, msg: &ToServer) -> Result<(FromServer, Vec<OwnedFd>), Replace> {
        let control = self.control.as_ref().expect("open until drop");
        proto::send(control, msg, &[]).map_err(|_| Replace::ServerGone)?;
        match proto::recv(control, &mut self.inbox) {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) | Err(_) => Err(Replace::ServerGone),
        }
    }

    fn spawn(&mut self, limits: Limits) -> Result<Proc, Replace> {
        match self.request(&ToServer::Spawn { limits })? {
            (FromServer::Spawned { pid }, fds) => {
                let proc = (fds.len() == 3)
                    .then_some(fds)
                    .ok_or_else(|| "the fork server sent a worker without its fds".to_string())
                    .and_then(|fds| {
                        let mut fds = fds.into_iter();
                        let sock = Stream::from_fd(fds.next().expect("3 fds"));
                        let stderr = fds.next().expect("3 fds");
                        let page_fd = fds.next().expect("3 fds");
                        Proc::new(pid, sock, stderr, &page_fd)
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
        // exit; wait for that so that nothing outlives the pool.
        drop(self.control.take());
        let _ = self.child.wait();
    }
}

/// The tail of a worker's stderr.
#[derive(Default)]
pub(crate) struct Tail(VecDeque<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend(bytes);
        let over = self.0.len().saturating_sub(TAIL_BYTES);
        self.0.drain(..over);
    }

    /// Everything kept, as text.
    pub(crate) fn text(&self) -> String {
        let (a, b) = self.0.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
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
    /// Units sent and not yet answered, in the order the worker runs them.
    pub(crate) in_flight: VecDeque<InFlight>,
    pub(crate) hello: bool,
    /// Tasks finished by this worker.
    pub(crate) tasks_done: u64,
    /// Moving average of a unit's run time, in ns (0: unknown).
    pub(crate) avg_unit_ns: f64,
    /// Set when the worker is known to be gone (end-of-file, write error, killed).
    pub(crate) dead: bool,
    /// Set when the parent killed it for a timeout: (unit seq, task index, timeout).
    pub(crate) timed_out: Option<(u64, u64, std::time::Duration)>,
    /// Segments its tasks kept (pinned against recycling until this worker is gone).
    pub(crate) pins: Vec<u64>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        for ino in self.pins.drain(..) {
            forkgraph_worker::wire::unpin(ino);
        }
    }
}

impl Proc {
    fn new(pid: i32, sock: Stream, stderr: OwnedFd, page_fd: &OwnedFd) -> io::Result<Proc> {
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
            in_flight: VecDeque::new(),
            hello: false,
            tasks_done: 0,
            avg_unit_ns: 0.0,
            dead: false,
            timed_out: None,
            pins: Vec::new(),
        })
    }

    /// The unit and task index the worker is running now, if any.
    pub(crate) fn running(&self) -> Option<(u64, u64, u64)> {
        let seq = self.page.get(Slot::Unit);
        (seq != 0).then(|| (seq, self.page.get(Slot::Task), self.page.get(Slot::Started)))
    }

    /// The stderr fd while it is open (for polling).
    pub(crate) fn stderr_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.stderr_open.then(|| self.stderr.as_fd())
    }

    /// Copies what the worker wrote to stderr to ours, keeping a tail.
    pub(crate) fn drain_stderr(&mut self) {
        let mut buf = [0u8; 8192];
        while self.stderr_open {
            match sys::read(self.stderr.as_fd(), &mut buf) {
                Ok(0) => self.stderr_open = false,
                Ok(n) => {
                    let _ = io::stderr().write_all(&buf[..n]);
                    self.tail.push(&buf[..n]);
                }
                Err(_) => break,
            }
        }
    }

    /// Reads what the socket has; returns decoded messages. Marks the worker dead at
    /// end-of-file or on errors.
    pub(crate) fn read_messages(&mut self) -> Vec<FromWorker> {
        let mut out = Vec::new();
        loop {
            match self.inbox.fill(&self.sock) {
                Ok(true) => {}
                Ok(false) => {
                    self.dead = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = true;
                    break;
                }
            }
        }
        let pid = self.pid;
        loop {
            let frame =
                forkgraph_worker::wire::with_peer(pid, || self.inbox.take_frame::<FromWorker>());
            match frame {
                Ok(Some((m, _))) => out.push(m),
                Ok(None) => break,
                Err(_) => {
                    self.dead = true;
                    break;
                }
            }
        }
        out
    }

    /// Sends what is queued; marks the worker dead if it cannot take it.
    pub(crate) fn flush(&mut self) {
        if self.outbox.flush(&self.sock).is_err() {
            self.dead = true;
        }
    }

    pub(crate) fn check_hello(&mut self, pid: i32, digest: u64) -> Result<(), String> {
        self.hello = true;
        if digest != Registry::global().digest() || pid != self.pid {
            return Err(format!(
                "worker {pid} has a different function table than this process; the executable \
                 changed on disk after the pool started"
            ));
        }
        Ok(())
    }
}

/// Why a worker could not be replaced.
#[derive(Debug)]
pub(crate) enum Replace {
    /// The fork server is gone (so are all workers).
    ServerGone,
    /// Something else failed.
    Failed(String),
}

impl Replace {
    pub(crate) fn into_message(self) -> String {
        match self {
            Replace::ServerGone => "the fork server has exited".into(),
            Replace::Failed(e) => e,
        }
    }
}

/// What is known about a worker that was reaped.
pub(crate) struct Death {
    /// How it ended (`None`: it had been reaped before).
    pub(crate) exit: Option<Exit>,
    /// The last 8 KiB of its stderr.
    pub(crate) tail: String,
    /// (unit, task index, start) from its progress page at death.
    pub(crate) running: Option<(u64, u64, u64)>,
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
}

impl Pool {
    pub(crate) fn start(cfg: &Config) -> Result<Pool, String> {
        let mut server = Server::start()?;
        let mut workers = Vec::with_capacity(cfg.workers);
        for _ in 0..cfg.workers {
            workers.push(server.spawn(cfg.limits).map_err(Replace::into_message)?);
        }
        Ok(Pool {
            server,
            started: workers.len() as u64,
            workers,
            next_seq: 1,
            result_bytes: std::collections::HashMap::new(),
            limits: cfg.limits,
        })
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
    /// returns how the old one ended, the tail of its stderr (the last 8 KiB) and what its
    /// progress page said once it was dead (the unit, task index and start it was running).
    /// Its units must have been taken out of it. If the replacement cannot start, the slot
    /// stays empty (dead, pid 0) and the next call tries again.
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
        };
        let new = self.server.spawn(self.limits)?;
        self.started += 1;
        self.workers[i] = new;
        Ok(death)
    }

    /// Starts a new fork server and new workers (after the old server died). The old workers
    /// died with it (PR_SET_PDEATHSIG) and were reaped by init: their pids are not ours to
    /// signal any more.
    pub(crate) fn restart_server(&mut self) -> Result<(), String> {
        let n = self.workers.len();
        self.server = Server::start()?;
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            workers.push(
                self.server
                    .spawn(self.limits)
                    .map_err(Replace::into_message)?,
            );
        }
        self.started += n as u64;
        self.workers = workers;
        Ok(())
    }

    /// Kills worker `i`, starts a replacement and waits for its hello; returns the new pid.
    pub(crate) fn restart(&mut self, i: usize, _cfg: &Config) -> Result<i32, String> {
        if i >= self.workers.len() {
            return Err(format!(
                "no worker {i}: the pool has {}",
                self.workers.len()
            ));
        }
        if !self.workers[i].in_flight.is_empty() {
            return Err("worker is busy".into());
        }
        sys::kill_hard(self.workers[i].pid);
        match self.replace(i) {
            Ok(_) => {}
            Err(Replace::ServerGone) => self.restart_server()?,
            Err(Replace::Failed(e)) => return Err(e),
        }
        let w = &mut self.workers[i];
        while !w.hello {
            let ready = sys::poll(
                &[sys::Interest {
                    fd: w.sock.as_fd(),
                    read: true,
                    write: false,
                }],
                None,
            )
            .map_err(|e| e.to_string())?;
            if ready[0].read {
                for m in w.read_messages() {
                    if let FromWorker::Hello { pid, digest } = m {
                        w.check_hello(pid, digest)?;
                    }
                }
                if w.dead && !w.hello {
                    return Err(format!("new worker {} died at start", w.pid));
                }
            }
        }
        Ok(w.pid)
    }
}
