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

    fn request(&mut self, msg: &ToServer) -> io::Result<(FromServer, Vec<OwnedFd>)> {
        let control = self.control.as_ref().expect("open until drop");
        proto::send(control, msg, &[])?;
        proto::recv(control, &mut self.inbox)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the fork server has exited"))
    }

    fn spawn(&mut self, limits: Limits) -> Result<Proc, String> {
        match self.request(&ToServer::Spawn { limits }) {
            Ok((FromServer::Spawned { pid }, fds)) if fds.len() == 3 => {
                let mut fds = fds.into_iter();
                let sock = Stream::from_fd(fds.next().expect("3 fds"));
                let stderr = fds.next().expect("3 fds");
                let page_fd = fds.next().expect("3 fds");
                Proc::new(pid, sock, stderr, &page_fd).map_err(|e| format!("worker {pid}: {e}"))
            }
            Ok((FromServer::Failed(e), _)) => Err(format!("the fork server could not fork: {e}")),
            Ok((other, _)) => Err(format!("unexpected fork server reply {other:?}")),
            Err(e) => Err(format!("fork server: {e}")),
        }
    }

    /// Kills (if still alive) and reaps a worker; how it ended.
    pub(crate) fn reap(&mut self, pid: i32) -> Result<Exit, String> {
        match self.request(&ToServer::Reap { pid }) {
            Ok((FromServer::Reaped { exit, .. }, _)) => Ok(exit),
            Ok((FromServer::Failed(e), _)) => Err(e),
            Ok((other, _)) => Err(format!("unexpected fork server reply {other:?}")),
            Err(e) => Err(format!("fork server: {e}")),
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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
        loop {
            match self.inbox.take_frame::<FromWorker>() {
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
pub(crate) enum Replace {
    /// The fork server is gone (so are all workers).
    ServerGone,
    /// Something else failed.
    Failed(String),
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
            workers.push(server.spawn(cfg.limits)?);
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
    /// returns how the old one ended and the tail of its stderr (the last 8 KiB). Its units must have been taken
    /// out of it.
    pub(crate) fn replace(&mut self, i: usize) -> Result<(Exit, String), Replace> {
        let pid = self.workers[i].pid;
        let exit = match self.server.reap(pid) {
            Ok(e) => e,
            Err(_) if !self.server.alive() => return Err(Replace::ServerGone),
            Err(e) => return Err(Replace::Failed(e)),
        };
        // It is gone, so its stderr pipe ends: read all of it.
        self.workers[i].drain_stderr();
        let tail = self.workers[i].tail.text();
        let new = match self.server.spawn(self.limits) {
            Ok(w) => w,
            Err(_) if !self.server.alive() => return Err(Replace::ServerGone),
            Err(e) => return Err(Replace::Failed(e)),
        };
        self.started += 1;
        self.workers[i] = new;
        Ok((exit, tail))
    }

    /// Starts a new fork server and new workers (after the old server was killed from outside).
    pub(crate) fn restart_server(&mut self) -> Result<(), String> {
        let n = self.workers.len();
        for w in &self.workers {
            sys::kill_hard(w.pid);
        }
        self.server = Server::start()?;
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            workers.push(self.server.spawn(self.limits)?);
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
