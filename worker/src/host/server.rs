//! The fork server, seen from the parent: start it, ask it for workers and to reap them, each
//! request within a deadline.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use super::WorkerHandle;
use crate::exec::TaskSpec;
use crate::frame::{Inbox, Outbox};
use crate::proto::{FromServer, Limits, ToServer};
use crate::sandbox::Sandbox;
use crate::segments::Side;
use crate::sys::{self, Exit, Stream};

/// The fork server, seen from the parent.
pub struct ForkServer {
    child: Child,
    pidfd: OwnedFd,
    /// `None` only while dropping.
    control: Option<Stream>,
    inbox: Inbox,
    timeout: Duration,
    /// The sandbox of its workers, and (while it lives) this process kept not dumpable.
    sandbox: Option<(Arc<Sandbox>, Undumpable)>,
}

/// While one lives, this process is not dumpable (a sandboxed worker cannot read its memory
/// or ptrace it even where it escapes the other layers); the last one to go restores what it
/// was before the first.
#[derive(Debug)]
struct Undumpable;

/// (live guards, whether the process was dumpable before the first).
static UNDUMPABLE: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, true));

impl Undumpable {
    fn new() -> Undumpable {
        let mut g = UNDUMPABLE.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            g.1 = sys::is_dumpable();
        }
        g.0 += 1;
        sys::set_dumpable(false);
        Undumpable
    }
}

impl Drop for Undumpable {
    fn drop(&mut self) {
        let mut g = UNDUMPABLE.lock().unwrap_or_else(|e| e.into_inner());
        g.0 -= 1;
        if g.0 == 0 && g.1 {
            sys::set_dumpable(true);
        }
    }
}

impl ForkServer {
    /// Starts a fork server (re-executing this program) whose requests must be answered
    /// within `timeout`.
    ///
    /// # Errors
    /// When the start-up hook did not run in this executable, or the process cannot start.
    pub fn start(timeout: Duration) -> Result<ForkServer, StartError> {
        ForkServer::start_sandboxed(timeout, None)
    }

    /// As [`ForkServer::start`], for a server whose workers enter `sandbox` (checked here
    /// against the kernel; see [`crate::sandbox`]). While it lives, this process is not
    /// dumpable.
    ///
    /// # Errors
    /// As [`ForkServer::start`], and a sandbox this kernel cannot provide.
    pub fn start_sandboxed(
        timeout: Duration,
        sandbox: Option<Arc<Sandbox>>,
    ) -> Result<ForkServer, StartError> {
        if let Some(s) = &sandbox {
            s.check().map_err(|e| StartError::new(e.to_string()))?;
        }
        let sandbox = sandbox.map(|s| (s, Undumpable::new()));
        if !crate::forkserver::hook_ran() {
            return Err(StartError::new(
                "forkgraph's start-up hook did not run in this executable, so it cannot serve as \
                 a fork server",
            ));
        }
        let (mine, theirs) = Stream::pair().map_err(|e| StartError::io("socketpair", e))?;
        mine.set_nonblocking(true)
            .map_err(|e| StartError::io("fork server socket", e))?;
        let mut child = sys::spawn_fork_server(theirs.into_fd(), &[])
            .map_err(|e| StartError::io("cannot re-execute /proc/self/exe as a fork server", e))?;
        // Our unreaped child: its pid cannot have been reused.
        let pidfd = match sys::pidfd_open(child.id() as i32) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::io("pidfd_open of the fork server", e));
            }
        };
        Ok(ForkServer {
            child,
            pidfd,
            control: Some(mine),
            inbox: Inbox::new(),
            timeout,
            sandbox,
        })
    }

    /// One request and its reply, within the server's deadline. Any failure to talk to the
    /// server (end-of-file, broken pipe, lost fds, no answer in time) means it is gone or can no
    /// longer be trusted: it is killed, and the caller gets [`SpawnError::ServerGone`].
    fn request(&mut self, msg: &ToServer) -> Result<(FromServer, Vec<OwnedFd>), SpawnError> {
        match self.exchange(msg) {
            Ok(reply) => Ok(reply),
            Err(why) => {
                sys::pidfd_kill(self.pidfd.as_fd());
                Err(SpawnError::ServerGone(why))
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
                if let Some(reply) = self
                    .inbox
                    .take_frame(Side::Parent(0, false))
                    .map_err(gone)?
                {
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

    /// Starts a worker with these limits and `worker_init`.
    ///
    /// # Errors
    /// [`SpawnError::ServerGone`] when the server is gone or did not answer in time (it is
    /// killed then), [`SpawnError::Failed`] when it could not fork.
    pub fn spawn(
        &mut self,
        limits: Limits,
        init: Option<&Arc<TaskSpec>>,
    ) -> Result<WorkerHandle, SpawnError> {
        let init = init.cloned();
        // Workers forward what tasks log at the levels this process has enabled now.
        let limits = Limits {
            log_level: crate::logs::current_log_level(),
            trace_level: crate::logs::current_trace_level(),
            ..limits
        };
        let sandbox = self.sandbox.as_ref().map(|(s, _)| s.clone());
        let recycle = limits.recycle_segments;
        match self.request(&ToServer::Spawn {
            limits,
            init,
            sandbox,
        })? {
            (FromServer::Spawned { pid }, fds) => {
                let proc = (fds.len() == 4)
                    .then_some(fds)
                    .ok_or_else(|| "the fork server sent a worker without its fds".to_string())
                    .and_then(|fds| {
                        let mut fds = fds.into_iter();
                        let mut next = || fds.next().expect("4 fds");
                        let (sock, stderr, page_fd, pidfd) = (next(), next(), next(), next());
                        WorkerHandle::new(
                            pid,
                            Stream::from_fd(sock),
                            stderr,
                            &page_fd,
                            pidfd,
                            recycle,
                        )
                        .map_err(|e| format!("worker {pid}: {e}"))
                    });
                proc.map_err(|e| {
                    // Do not leave it running unseen: have the server kill and reap it.
                    let _ = self.request(&ToServer::Reap { pid });
                    SpawnError::Failed(e)
                })
            }
            (FromServer::Failed(e), _) => Err(SpawnError::Failed(format!(
                "the fork server could not fork: {e}"
            ))),
            (other, _) => Err(SpawnError::Failed(format!(
                "unexpected fork server reply {other:?}"
            ))),
        }
    }

    /// The sandbox of its workers, if any.
    pub fn sandbox(&self) -> Option<Arc<Sandbox>> {
        self.sandbox.as_ref().map(|(s, _)| s.clone())
    }

    /// Kills (if still alive) and reaps a worker, and what its tasks left behind; how it ended.
    ///
    /// # Errors
    /// As [`ForkServer::spawn`].
    fn reap(&mut self, pid: i32) -> Result<Exit, SpawnError> {
        match self.request(&ToServer::Reap { pid })? {
            (FromServer::Reaped { exit, .. }, _) => Ok(exit),
            (FromServer::Failed(e), _) => Err(SpawnError::Failed(e)),
            (other, _) => Err(SpawnError::Failed(format!(
                "unexpected fork server reply {other:?}"
            ))),
        }
    }
}

impl Drop for ForkServer {
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
        if self.sandbox.is_some() {
            // A server that was killed could not remove its workers' cgroups.
            sys::cgroup::remove_server_cgroups(self.child.id() as i32, self.timeout);
        }
    }
}

impl ForkServer {
    /// Kills (if still alive) and reaps a worker and what its tasks left behind; from then on
    /// the handle never signals that pid again (it may be reused). How it ended.
    ///
    /// # Errors
    /// As [`ForkServer::spawn`].
    pub fn reap_worker(&mut self, w: &mut WorkerHandle) -> Result<Exit, SpawnError> {
        let exit = self.reap(w.pid())?;
        w.reaped();
        Ok(exit)
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// Why a worker could not be started or reaped.
#[derive(Debug)]
pub enum SpawnError {
    /// The fork server is gone, or was killed for not answering (so are all its workers): why.
    ServerGone(String),
    /// Something else failed.
    Failed(String),
}

impl SpawnError {
    /// The reason, as text.
    pub fn into_message(self) -> String {
        match self {
            SpawnError::ServerGone(e) | SpawnError::Failed(e) => e,
        }
    }
}

/// Why a fork server, a pool or a worker could not be started: what failed, and the system
/// error behind it if there is one.
#[derive(Debug)]
pub struct StartError {
    message: String,
    source: Option<io::Error>,
}

impl StartError {
    /// An error for a reason given as text.
    pub fn new(message: impl Into<String>) -> StartError {
        StartError {
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by a failed system call: `context` says what failed.
    pub fn io(context: impl Into<String>, source: io::Error) -> StartError {
        StartError {
            message: context.into(),
            source: Some(source),
        }
    }

    /// What failed, and the system error if any.
    pub fn into_parts(self) -> (String, Option<io::Error>) {
        (self.message, self.source)
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {e}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl From<SpawnError> for StartError {
    fn from(e: SpawnError) -> StartError {
        StartError::new(e.into_message())
    }
}
