//! A worker, seen from the parent.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::stderr::{self, Tail};
use crate::exec::TaskFailure;
use crate::frame::{Inbox, Outbox};
use crate::logs::LogRecord;
use crate::proto::{FromWorker, ToWorker};
use crate::registry::Registry;
use crate::segments::Side;
use crate::sys::{self, SharedPage, Slot, Stream};

/// Most bytes read from one worker's socket in one go, so that a worker that floods its socket
/// cannot hold the scheduler.
const READ_BUDGET: usize = 64 << 20;

/// A message from a worker, and how many shared segments it brought (each an fd held here).
#[derive(Debug)]
pub struct Received {
    /// The message.
    pub msg: FromWorker,
    /// Segments mapped while decoding it.
    pub segments: usize,
}

/// A worker, seen from the parent: its socket (with what is queued to send and what arrived),
/// its stderr pipe and the tail kept of it, its progress page, and its pidfd.
#[derive(Debug)]
pub struct WorkerHandle {
    pid: i32,
    sock: Stream,
    inbox: Inbox,
    outbox: Outbox,
    stderr: OwnedFd,
    stderr_open: bool,
    tail: Tail,
    page: SharedPage,
    /// Readable once the process has ended.
    pidfd: OwnedFd,
    hello: bool,
    /// Set when the worker is known to be gone (exited, end-of-file, write error, killed).
    dead: bool,
    /// Why the parent gave up on it, when it was not simply its death (a malformed message).
    note: Option<String>,
    /// Set when it broke the protocol: messages after that are ignored.
    broken: bool,
    /// Set when the parent killed it.
    killed: bool,
    /// Whether its pool recycles segments (else it may send none that it could still write).
    recycle: bool,
}

impl WorkerHandle {
    pub(super) fn new(
        pid: i32,
        sock: Stream,
        stderr: OwnedFd,
        page_fd: &OwnedFd,
        pidfd: OwnedFd,
        recycle: bool,
    ) -> io::Result<WorkerHandle> {
        sock.set_nonblocking(true)?;
        sys::set_nonblocking(stderr.as_fd(), true)?;
        let page = SharedPage::map(page_fd.as_fd())?;
        Ok(WorkerHandle {
            pid,
            sock,
            inbox: Inbox::new(),
            outbox: Outbox::default(),
            stderr,
            stderr_open: true,
            tail: Tail::default(),
            page,
            pidfd,
            hello: false,
            dead: false,
            note: None,
            broken: false,
            killed: false,
            recycle,
        })
    }

    /// What its progress page says it runs now: (unit, task index, start). Written by the
    /// worker, so by whatever task code runs there: a hint, checked against what the parent
    /// knows before it is used.
    pub fn running(&self) -> Option<(u64, u64, u64)> {
        let seq = self.page.get(Slot::Unit);
        (seq != 0).then(|| (seq, self.page.get(Slot::Task), self.page.get(Slot::Started)))
    }

    /// Tells the worker not to start the units `seqs` (cancelled after they were sent; at
    /// most 64, the most a worker holds), through its progress page; returns the unit the page
    /// names as running after the list was written (0: none). A unit the page does not name
    /// then (nor a later one) is surely skipped: its result comes back empty. The worker's task
    /// code can rewrite the list, so an empty result is believed only for units the parent
    /// cancelled.
    pub fn skip(&self, seqs: &[u64]) -> u64 {
        self.page.skip(seqs)
    }

    /// The pidfd (for polling: readable once the worker has ended).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Whether the process has ended (whatever its socket says).
    pub fn exited(&self) -> bool {
        sys::pidfd_exited(self.pidfd.as_fd())
    }

    /// The stderr fd while it is open (for polling).
    pub fn stderr_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stderr_open.then(|| self.stderr.as_fd())
    }

    /// Forwards what the worker wrote to stderr to ours (never blocking), keeping a tail.
    pub fn drain_stderr(&mut self) {
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

    /// Reads what the socket has (at most 64 MiB); returns decoded messages.
    /// Marks the worker dead at end-of-file, on errors, and on anything that is not a
    /// well-formed message (with a note saying what it sent).
    pub fn read_messages(&mut self) -> Vec<Received> {
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
            let frame = self
                .inbox
                .take_frame::<FromWorker>(Side::Parent(pid, self.recycle));
            match frame {
                Ok(Some((msg, _))) => {
                    // Segments now mapped here for it: each holds an fd.
                    let segments = sys::segment_stats().0.saturating_sub(before) as usize;
                    out.push(Received { msg, segments });
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
    pub fn give_up(&mut self, why: String) {
        if self.note.is_none() {
            self.note = Some(why);
        }
        self.broken = true;
        self.kill();
    }

    /// Kills the process (through its pidfd: never another process that reused the pid) and
    /// marks it dead.
    pub fn kill(&mut self) {
        sys::pidfd_kill(self.pidfd.as_fd());
        self.dead = true;
        self.killed = true;
    }

    /// Whether the parent killed it.
    pub fn killed(&self) -> bool {
        self.killed
    }

    /// Sends what is queued; marks the worker dead if it cannot take it. Returns whether
    /// everything queued is now written.
    pub fn flush(&mut self) -> bool {
        if self.outbox.flush(&self.sock).is_err() {
            self.dead = true;
        }
        self.outbox.is_empty()
    }

    /// Takes the worker's first message: its function table must be ours, and its
    /// `worker_init` must have succeeded.
    pub fn check_hello(
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
    pub fn await_hello(
        &mut self,
        deadline: u64,
        on_log: &dyn Fn(i32, &LogRecord),
    ) -> Result<(), String> {
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
                    sys::Interest {
                        fd: self.stderr.as_fd(),
                        read: self.stderr_open,
                        write: false,
                    },
                ],
                deadline,
            )
            .map_err(|e| e.to_string())?;
            if ready[2].read {
                // What its worker_init writes is forwarded, and never fills the pipe.
                self.drain_stderr();
            }
            if !ready[0].read && !ready[1].read && !ready[2].read {
                return Err(format!(
                    "new worker {} was not ready in time: its worker_init (if any) did not \
                     finish within the fork-server timeout",
                    self.pid
                ));
            }
            if ready[0].read {
                for r in self.read_messages() {
                    match r.msg {
                        FromWorker::Hello { pid, digest, init } => {
                            self.check_hello(pid, digest, init)?
                        }
                        FromWorker::Log(r) => on_log(self.pid, &r),
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

impl WorkerHandle {
    /// Its process id (0 once reaped).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether it is known to be gone.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Records that it is gone (its pidfd was readable, say).
    pub fn mark_dead(&mut self) {
        self.dead = true;
    }

    /// After the fork server reaped it: the pid may be reused from now on, never signal it.
    pub(super) fn reaped(&mut self) {
        self.pid = 0;
        self.dead = true;
        self.drain_stderr();
    }

    /// Whether its first message has arrived.
    pub fn greeted(&self) -> bool {
        self.hello
    }

    /// Whether it broke the protocol (nothing more it says counts).
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Why the parent gave up on it, once.
    pub fn take_note(&mut self) -> Option<String> {
        self.note.take()
    }

    /// The tail of its stderr since it last reported results.
    pub fn tail_text(&self) -> String {
        self.tail.text()
    }

    /// Queues a message whose large arrays travel as shared segments; returns its size in
    /// bytes.
    ///
    /// # Errors
    /// When it cannot be encoded.
    pub fn queue(&mut self, msg: &ToWorker, threshold: Option<usize>) -> io::Result<usize> {
        self.outbox.push_shared(msg, threshold, self.recycle)?;
        Ok(self.outbox.last_len())
    }

    /// Whether anything queued is not yet written.
    pub fn has_unsent(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Its socket (for polling).
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// When the program is a child subreaper, a worker whose fork server died becomes its
    /// child: kill it and reap it (through its pidfd, so no other child is touched), waiting at
    /// most `timeout`.
    pub fn reap_orphaned(&self, timeout: std::time::Duration) {
        if sys::is_subreaper() {
            sys::pidfd_kill(self.pidfd.as_fd());
            if sys::pidfd_wait(self.pidfd.as_fd(), timeout) {
                let _ = sys::pidfd_reap(self.pidfd.as_fd());
            }
        }
    }
}
