//! Every system call forkgraph makes that can break a process — fork, socket and fd passing,
//! mmap of shared pages, signals, rlimits — lives here, behind checked wrappers. The rest of the
//! code sees only these wrappers and std types (`OwnedFd`, `BorrowedFd`).
//!
//! Every `unsafe` block says why it holds. After `fork` the child of the fork server runs Rust
//! code freely: the fork server is single-threaded (it was exec'd, not forked from a threaded
//! parent), so no lock can be held by a thread that does not exist in the child.

use std::ffi::OsStr;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::cmsg_space;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, SigHandler, Signal};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

mod procs;
pub use procs::*;

/// The fd number at which a re-executed fork server finds its control socket.
pub const FORK_SERVER_FD: RawFd = 3;

/// The fork server's command line (`ps`); its workers show as [`WORKER_NAME`].
pub const FORK_SERVER_NAME: &str = "forkgraph-forkserver";

/// A worker's command line (`ps`).
pub const WORKER_NAME: &str = "forkgraph-worker";

/// Environment variable that turns a re-executed binary into a fork server.
pub const FORK_SERVER_ENV: &str = "FORKGRAPH_FORK_SERVER";

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// One end of a connected Unix stream socket that can carry file descriptors.
#[derive(Debug)]
pub struct Stream(OwnedFd);

impl Stream {
    /// A connected pair (close-on-exec).
    ///
    /// # Errors
    /// When the kernel refuses (fd limit).
    pub fn pair() -> io::Result<(Stream, Stream)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(errno)?;
        Ok((Stream(a), Stream(b)))
    }

    /// The fd, to pass to another process.
    pub fn into_fd(self) -> OwnedFd {
        self.0
    }

    /// Wraps an fd known to be such a socket.
    pub fn from_fd(fd: OwnedFd) -> Stream {
        Stream(fd)
    }

    /// Switches non-blocking mode.
    ///
    /// # Errors
    /// When fcntl fails.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        set_nonblocking(self.0.as_fd(), on)
    }

    /// Sends bytes, with `fds` attached to the first byte. Returns how many bytes went out
    /// (0 when a non-blocking socket is full).
    ///
    /// # Errors
    /// When the peer is gone (`EPIPE`, `ECONNRESET`) or the call fails otherwise.
    pub fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
        loop {
            match sendmsg::<()>(
                self.0.as_raw_fd(),
                &[IoSlice::new(data)],
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(0),
                Err(e) => return Err(errno(e)),
            }
        }
    }

    /// Receives bytes into `buf`, appending any passed fds to `fds`. `Ok(0)` is end-of-file:
    /// the peer is gone. A non-blocking socket with nothing to read gives `WouldBlock`.
    ///
    /// # Errors
    /// As recvmsg.
    pub fn recv(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
        let mut space = cmsg_space!([RawFd; FDS_PER_SEND + 3]);
        loop {
            let mut iov = [IoSliceMut::new(buf)];
            match recvmsg::<()>(
                self.0.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    for c in msg.cmsgs().map_err(errno)? {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            for fd in raw {
                                // SAFETY: SCM_RIGHTS just installed `fd` in this process; nothing
                                // else owns it.
                                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                            }
                        }
                    }
                    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                        // Fds were lost (this process is at its fd limit): the stream can no
                        // longer be trusted; the caller drops this peer.
                        return Err(io::Error::other(format!(
                            "file descriptors passed by another process were lost: this \
                             process reached its open-file limit (RLIMIT_NOFILE {}); raise \
                             it (ulimit -n) or hold fewer results in shared segments",
                            open_file_limit()
                        )));
                    }
                    return Ok(msg.bytes);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(errno(e)),
            }
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Sets or clears `O_NONBLOCK`.
///
/// # Errors
/// When fcntl fails.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(errno)?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(errno)?;
    Ok(())
}

/// A close-on-exec pipe: (read end, write end).
///
/// # Errors
/// When the kernel refuses (fd limit).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(errno)
}

/// Reads what is available from an fd (`Ok(0)` at end-of-file).
///
/// # Errors
/// `WouldBlock` on an empty non-blocking fd, or the read error.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Writes `data` to fd 2 with raw writes (no lock, no buffering); errors are ignored.
pub fn write_stderr(mut data: &[u8]) {
    // SAFETY: fd 2 is this process's stderr for its whole life (a worker's is its pipe).
    let fd = unsafe { BorrowedFd::borrow_raw(2) };
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) if n > 0 => data = &data[n..],
            Err(Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// What to wait for on one fd.
#[derive(Debug, Clone, Copy)]
pub struct Interest<'a> {
    /// The fd.
    pub fd: BorrowedFd<'a>,
    /// Wake when readable (or at end-of-file / error).
    pub read: bool,
    /// Wake when writable.
    pub write: bool,
}

/// What [`poll`] saw on one fd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// Readable, end-of-file, or error: a read will not block.
    pub read: bool,
    /// Writable.
    pub write: bool,
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no timeout).
///
/// # Errors
/// The poll error (EINTR is reported as no fd ready).
pub fn poll(fds: &[Interest<'_>], timeout: Option<Duration>) -> io::Result<Vec<Ready>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|i| {
            let mut f = PollFlags::empty();
            if i.read {
                f |= PollFlags::POLLIN;
            }
            if i.write {
                f |= PollFlags::POLLOUT;
            }
            PollFd::new(i.fd, f)
        })
        .collect();
    let t = match timeout {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    };
    match nix::poll::poll(&mut pfds, t) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(errno(e)),
    }
    Ok(pfds
        .iter()
        .map(|p| {
            let r = p.revents().unwrap_or(PollFlags::empty());
            Ready {
                read: r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR),
                write: r.intersects(PollFlags::POLLOUT | PollFlags::POLLERR),
            }
        })
        .collect())
}

/// The monotonic time ([`monotonic_ns`]) `d` from now.
pub fn deadline_after(d: Duration) -> u64 {
    monotonic_ns().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Waits until one of `fds` is ready or the monotonic clock reaches `deadline` (ns); as
/// [`poll`], whose interruptions it resumes. All not ready: the deadline passed.
///
/// # Errors
/// The poll error.
pub fn poll_until(fds: &[Interest<'_>], deadline: u64) -> io::Result<Vec<Ready>> {
    loop {
        let left = deadline.saturating_sub(monotonic_ns());
        let r = poll(fds, Some(Duration::from_nanos(left)))?;
        if left == 0 || r.iter().any(|x| x.read || x.write) {
            return Ok(r);
        }
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// Sends SIGKILL to a process; a process that is already gone is not an error.
pub fn kill_hard(pid: i32) {
    // kill(0 or -n) would signal a whole process group: never.
    if pid > 0 {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Waits for a child to end.
///
/// # Errors
/// When `pid` is not a child of this process.
pub fn wait_child(pid: i32) -> io::Result<Exit> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Exit::Signal(sig as i32)),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// This process's id.
pub fn getpid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// Ends this process at once, without running destructors or atexit handlers (what a forked
/// child must do instead of returning).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// Starts a fork server: re-executes this program's own executable with `control` at fd
/// [`FORK_SERVER_FD`] and [`FORK_SERVER_ENV`] set, so the start-up hook serves forks instead
/// of running `main`. stdin is null; stdout and stderr are inherited.
///
/// When this process ends, the server sees its control socket close, kills its workers and what
/// their tasks left behind, and exits. So that a server that was stopped (SIGSTOP) sees it too,
/// its parent-death signal is SIGCONT (PR_SET_PDEATHSIG, set before exec and checked against a
/// parent that died before it was set): SIGKILL would end a stopped server as well, but before
/// it could end the processes the tasks forked.
///
/// # Errors
/// When the executable cannot be started.
pub fn spawn_fork_server(control: OwnedFd, args: &[&OsStr]) -> io::Result<Child> {
    let raw = control.as_raw_fd();
    let parent = getpid();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(FORK_SERVER_NAME)
        .args(args)
        .env(FORK_SERVER_ENV, format!("{FORK_SERVER_FD}:{parent}"))
        .stdin(Stdio::null());
    // SAFETY: the closure runs between fork and exec in the child and calls only prctl,
    // getppid, dup2 and fcntl, which are async-signal-safe; it touches no locks or heap.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGCONT as libc::c_ulong) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The program died before the signal was armed: never run as an orphan.
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if raw == FORK_SERVER_FD {
                let flags = libc::fcntl(raw, libc::F_GETFD);
                if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, FORK_SERVER_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = spawn_from_lasting_thread(cmd);
    drop(control);
    child
}

/// What the start-up hook makes of [`FORK_SERVER_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkServerVar {
    /// Not ours (malformed): ignore it and run `main` as usual.
    Foreign,
    /// Started by [`spawn_fork_server`] from a live parent: serve.
    Serve,
    /// Started as a fork server, but the parent is gone or the control socket is not there:
    /// exit at once, never run `main`.
    Orphaned,
}

/// Reads the variable set by [`spawn_fork_server`]: it names fd [`FORK_SERVER_FD`] and our
/// parent's pid; we serve only if that parent is still ours and the fd is a socket.
pub fn fork_server_var(var: &OsStr) -> ForkServerVar {
    let Some((fd, parent)) = var.to_str().and_then(|v| v.split_once(':')) else {
        return ForkServerVar::Foreign;
    };
    let (Ok(fd), Ok(parent)) = (fd.parse::<RawFd>(), parent.parse::<i32>()) else {
        return ForkServerVar::Foreign;
    };
    if fd != FORK_SERVER_FD {
        return ForkServerVar::Foreign;
    }
    let ok_parent = parent == nix::unistd::getppid().as_raw();
    // SAFETY: fstat only reads the fd's metadata into a local struct; an invalid fd is EBADF.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(FORK_SERVER_FD, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if ok_parent && is_socket {
        ForkServerVar::Serve
    } else {
        ForkServerVar::Orphaned
    }
}

/// Takes ownership of the fork server's control socket (in the re-executed process).
///
/// # Safety
/// Call once, only in a process for which [`fork_server_var`] says [`ForkServerVar::Serve`], where fd
/// [`FORK_SERVER_FD`] is the control socket and nothing else owns it.
pub unsafe fn take_fork_server_fd() -> Stream {
    // Make it close-on-exec again so that nothing the server starts inherits it.
    // SAFETY: the caller guarantees the fd is open and ours.
    unsafe {
        let flags = libc::fcntl(FORK_SERVER_FD, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(FORK_SERVER_FD, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
    // SAFETY: as above, the fd is open and owned by nobody else.
    Stream(unsafe { OwnedFd::from_raw_fd(FORK_SERVER_FD) })
}

/// Result of [`fork`].
#[derive(Debug)]
pub enum Forked {
    /// In the parent, with the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// Forks this process.
///
/// # Safety
/// The calling process must be single-threaded (the fork server is), so that the child can run
/// arbitrary code; the child must end with [`exit_now`] and never return into the caller's frames
/// that expect to run once.
///
/// # Errors
/// When the kernel refuses (process limit, memory).
pub unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees a single-threaded process.
    match unsafe { nix::unistd::fork() }.map_err(errno)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// In a worker: die with SIGKILL when the parent (the fork server) dies, and exit at once if
/// it already has (`expected_parent` is the pid it had before the fork).
pub fn die_with_parent(expected_parent: i32) {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != expected_parent {
        exit_now(1);
    }
}

/// Ignores SIGINT in this process (workers leave Ctrl-C to the parent, which stops them).
pub fn ignore_sigint() {
    // SAFETY: installing SIG_IGN has no handler code that could be unsafe.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGINT, SigHandler::SigIgn) };
}

/// Restores the default disposition of the signals a task can die from, so that a crash ends
/// the worker with that signal (and the parent reports it) rather than in some handler.
pub fn default_crash_signals() {
    for s in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
        Signal::SIGABRT,
    ] {
        // SAFETY: installing SIG_DFL runs no handler code.
        let _ = unsafe { nix::sys::signal::signal(s, SigHandler::SigDfl) };
    }
}

/// Limits this process's data segment (heap) to `bytes`.
///
/// # Errors
/// When setrlimit fails.
pub fn limit_memory(bytes: u64) -> io::Result<()> {
    setrlimit(Resource::RLIMIT_DATA, bytes, bytes).map_err(errno)?;
    MEMORY_LIMIT.store(bytes, Ordering::SeqCst);
    Ok(())
}

/// The memory limit of this process ([`limit_memory`]; `u64::MAX`: none).
static MEMORY_LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);
/// Bytes of shared segments this process created and still holds.
static SHARED_HELD: AtomicU64 = AtomicU64::new(0);

/// Shared memory this process created, counted against its memory limit: RLIMIT_DATA does not
/// count shared mappings, so under a limit every new segment lowers the heap's soft limit by its
/// size (heap and shared segments together stay under the limit), and a segment that would not
/// fit is refused. Released (and the heap limit raised again) on drop.
#[derive(Debug)]
struct Charge(u64);

impl Charge {
    fn new(bytes: u64) -> io::Result<Charge> {
        let limit = MEMORY_LIMIT.load(Ordering::SeqCst);
        if limit == u64::MAX {
            return Ok(Charge(0));
        }
        // Check and add as one step: tasks may create segments from several threads.
        static CHARGING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = CHARGING.lock().unwrap_or_else(|e| e.into_inner());
        let held = SHARED_HELD.load(Ordering::SeqCst);
        let heap = data_bytes();
        if heap.saturating_add(held).saturating_add(bytes) > limit {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "a shared segment of {bytes} bytes does not fit the worker's memory limit \
                     of {limit} bytes ({heap} bytes of heap and {held} bytes of shared segments \
                     in use)"
                ),
            ));
        }
        SHARED_HELD.fetch_add(bytes, Ordering::SeqCst);
        Charge::apply(limit);
        Ok(Charge(bytes))
    }

    /// Sets the heap's soft limit to what the shared segments leave of `limit`.
    fn apply(limit: u64) {
        let held = SHARED_HELD.load(Ordering::SeqCst);
        let _ = setrlimit(
            Resource::RLIMIT_DATA,
            limit.saturating_sub(held).max(1),
            limit,
        );
    }
}

/// Bytes of this process's data segment (what RLIMIT_DATA counts: heap and other private
/// writable memory), from `/proc/self/statm`.
fn data_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(5)
                .and_then(|d| d.parse::<u64>().ok())
        })
        .unwrap_or(0);
    pages.saturating_mul(4096)
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.0 > 0 {
            SHARED_HELD.fetch_sub(self.0, Ordering::SeqCst);
            Charge::apply(MEMORY_LIMIT.load(Ordering::SeqCst));
        }
    }
}

/// Limits this process's CPU time to `seconds` from now (SIGXCPU when exceeded).
///
/// # Errors
/// When setrlimit fails.
pub fn limit_cpu_from_now(seconds: u64) -> io::Result<()> {
    // Round the time already used up, so that each task gets at least `seconds`.
    let used = cpu_time().as_secs_f64().ceil() as u64;
    let soft = used.saturating_add(seconds.max(1));
    setrlimit(Resource::RLIMIT_CPU, soft, libc::RLIM_INFINITY).map_err(errno)
}

/// CPU time (user + system) this process has used.
pub fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::new(t.tv_sec() as u64, (t.tv_usec() as u32) * 1000)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Raises this process's soft limit on open files towards `need` (at least doubling it, at most
/// to the hard limit; never lowering it); returns the soft limit now in force.
pub fn raise_fd_limit_for(need: u64) -> u64 {
    let Ok((soft, hard)) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE) else {
        return open_file_limit();
    };
    if soft >= need || soft >= hard {
        return soft;
    }
    let want = need.max(soft.saturating_mul(2)).min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
        Ok(()) => want,
        Err(_) => soft,
    }
}

/// Raises this process's soft limit on open files to its hard limit (in the fork server and
/// workers, which are forkgraph's own processes: segments and sockets are fds, and running out
/// of them would lose fds passed by peers).
pub fn raise_fd_limit() {
    if let Ok((_, hard)) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Turns off core dumps (crash tests and crashing workers should not write cores).
pub fn no_core_dumps() {
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
}

/// Nanoseconds on the monotonic clock, comparable between processes.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC);
    t.map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// This process's soft limit on open files.
pub fn open_file_limit() -> u64 {
    nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// A page of memory shared between a worker and the parent: the worker publishes which unit
/// it runs and since when, so that the parent can blame the right task when the worker dies
/// and enforce timeouts without a message per task.
#[derive(Debug)]
pub struct SharedPage {
    map: memmap2::MmapRaw,
}

/// Slots of a [`SharedPage`].
#[derive(Debug, Clone, Copy)]
pub enum Slot {
    /// Sequence number of the unit the worker runs now (0: none).
    Unit = 0,
    /// When the current task started ([`monotonic_ns`]).
    Started = 1,
    /// Index of the current task within the unit.
    Task = 2,
}

const PAGE: u64 = 4096;

impl SharedPage {
    /// A new page in an anonymous memory file; returns the page and the file (to pass on).
    ///
    /// # Errors
    /// When memfd_create, ftruncate or mmap fail.
    pub fn create() -> io::Result<(SharedPage, OwnedFd)> {
        let fd = nix::sys::memfd::memfd_create(
            c"forkgraph-progress",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(errno)?;
        let file = std::fs::File::from(fd);
        file.set_len(PAGE)?;
        let page = SharedPage::map(file.as_fd())?;
        Ok((page, OwnedFd::from(file)))
    }

    /// Maps the page of a memory file made by [`SharedPage::create`].
    ///
    /// # Errors
    /// When the fd is not such a file or mmap fails.
    pub fn map(fd: BorrowedFd<'_>) -> io::Result<SharedPage> {
        let file = std::fs::File::from(fd.try_clone_to_owned()?);
        if file.metadata()?.len() < PAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "progress page too small",
            ));
        }
        let map = memmap2::MmapOptions::new()
            .len(PAGE as usize)
            .map_raw(&file)?;
        Ok(SharedPage { map })
    }

    fn slot(&self, s: Slot) -> &AtomicU64 {
        // SAFETY: the mapping is PAGE bytes long, page-aligned and lives as long as `self`;
        // slots are at 8-byte offsets within it, and every process accesses them only through
        // atomics.
        unsafe { &*(self.map.as_mut_ptr().add(s as usize * 8) as *const AtomicU64) }
    }

    /// Reads a slot.
    pub fn get(&self, s: Slot) -> u64 {
        self.slot(s).load(Ordering::Acquire)
    }

    /// Writes a slot.
    pub fn set(&self, s: Slot, v: u64) {
        self.slot(s).store(v, Ordering::Release);
    }
}

/// Ctrl-C during `get`. While at least one guard is armed, SIGINT runs a handler that counts the
/// signal, wakes every armed `get` through its own pipe, and then calls whatever handler was
/// installed before (so a program's own Ctrl-C handling still runs). When the last guard drops,
/// the previous disposition is restored exactly: outside `get`, forkgraph changes nothing. A
/// handler the program installs while a `get` runs is kept when the `get` ends.
pub mod interrupt {
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
    use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

    /// Write ends of the armed guards' pipes (-1: free slot).
    const SLOTS: usize = 64;
    static WAKE: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
    static COUNT: AtomicU64 = AtomicU64::new(0);
    /// The handler that was installed before ours (0: default or ignore): function pointer and
    /// whether it takes siginfo.
    static PREV_FN: AtomicUsize = AtomicUsize::new(0);
    static PREV_SIGINFO: AtomicUsize = AtomicUsize::new(0);
    /// Armed guards, and the disposition to restore when the last one drops.
    static STATE: Mutex<(usize, Option<SigAction>)> = Mutex::new((0, None));

    /// Set while `on_sigint` runs: a handler that the program installed over ours and that
    /// calls ours as the one it replaced, while ours calls it as ours replaced, would otherwise
    /// recurse forever.
    static IN_HANDLER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    extern "C" fn on_sigint(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        if IN_HANDLER.swap(true, Ordering::SeqCst) {
            return;
        }
        on_sigint_once(sig, info, ctx);
        IN_HANDLER.store(false, Ordering::SeqCst);
    }

    fn on_sigint_once(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        COUNT.fetch_add(1, Ordering::SeqCst);
        for w in &WAKE {
            let fd = w.load(Ordering::SeqCst);
            if fd >= 0 {
                // SAFETY: write(2) on a non-blocking pipe is async-signal-safe; a full pipe
                // already wakes its reader.
                unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
            }
        }
        let prev = PREV_FN.load(Ordering::SeqCst);
        if prev != 0 {
            if PREV_SIGINFO.load(Ordering::SeqCst) != 0 {
                // SAFETY: `prev` was read from the sigaction we replaced and is a handler of
                // this signature (SA_SIGINFO was set); calling it is what the kernel would do.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev) };
                f(sig, info, ctx);
            } else {
                // SAFETY: as above, for a plain handler.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev) };
                f(sig);
            }
        }
    }

    /// Whether SIGINT's handler is `on_sigint` now.
    fn ours_installed() -> bool {
        // SAFETY: sigaction with a null new action only reads the current one into `cur`.
        unsafe {
            let mut cur: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGINT, std::ptr::null(), &mut cur) == 0
                && cur.sa_sigaction == on_sigint as *const () as libc::sighandler_t
        }
    }

    /// While alive, SIGINT makes [`Armed::fd`] readable and [`Armed::fired`] true.
    #[derive(Debug)]
    pub struct Armed {
        read: OwnedFd,
        slot: usize,
        _write: OwnedFd,
        seen: u64,
    }

    /// Arms the handler for the life of the guard. `None` when it cannot (no free slot, no
    /// pipe); then Ctrl-C keeps whatever action it had.
    pub fn arm() -> Option<Armed> {
        let (read, write) = super::pipe().ok()?;
        super::set_nonblocking(read.as_fd(), true).ok()?;
        super::set_nonblocking(write.as_fd(), true).ok()?;
        let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
        let slot = WAKE.iter().position(|w| {
            w.compare_exchange(-1, write.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })?;
        if st.0 == 0 {
            let ours = SigAction::new(
                SigHandler::SigAction(on_sigint),
                SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
                SigSet::empty(),
            );
            // SAFETY: the handler only does atomic operations, write(2) and a call of the
            // handler it replaced: async-signal-safe as the previous handler was.
            match unsafe { sigaction(Signal::SIGINT, &ours) } {
                Ok(prev) => {
                    let (f, info) = match prev.handler() {
                        SigHandler::Handler(f) => (f as usize, 0),
                        SigHandler::SigAction(f) => (f as usize, 1),
                        _ => (0, 0),
                    };
                    PREV_SIGINFO.store(info, Ordering::SeqCst);
                    PREV_FN.store(f, Ordering::SeqCst);
                    st.1 = Some(prev);
                }
                Err(_) => {
                    WAKE[slot].store(-1, Ordering::SeqCst);
                    return None;
                }
            }
        }
        st.0 += 1;
        Some(Armed {
            read,
            slot,
            _write: write,
            seen: COUNT.load(Ordering::SeqCst),
        })
    }

    impl Armed {
        /// The fd to poll.
        pub fn fd(&self) -> BorrowedFd<'_> {
            self.read.as_fd()
        }

        /// Whether SIGINT arrived since this guard was armed.
        pub fn fired(&self) -> bool {
            let mut buf = [0u8; 64];
            while matches!(super::read(self.read.as_fd(), &mut buf), Ok(n) if n > 0) {}
            COUNT.load(Ordering::SeqCst) != self.seen
        }
    }

    impl Drop for Armed {
        fn drop(&mut self) {
            let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
            WAKE[self.slot].store(-1, Ordering::SeqCst);
            st.0 -= 1;
            if st.0 == 0 {
                if let Some(prev) = st.1.take() {
                    if ours_installed() {
                        // SAFETY: restores exactly the disposition that was installed before
                        // arm.
                        let _ = unsafe { sigaction(Signal::SIGINT, &prev) };
                        PREV_FN.store(0, Ordering::SeqCst);
                    }
                    // Otherwise the program installed its own handler while `get` ran (say,
                    // tokio's ctrl_c from another thread): it stays. If it calls ours as the
                    // handler it replaced, ours still passes the signal on to the one before.
                }
            }
        }
    }
}

/// Closes an fd in a freshly forked child that will never return to code owning it.
pub fn close_in_child(fd: BorrowedFd<'_>) {
    // SAFETY: the child ends in exit_now without unwinding, so the owner of this fd never runs
    // its destructor in this process and the fd is not closed twice.
    unsafe { libc::close(fd.as_raw_fd()) };
}

/// Makes `fd` this process's stderr.
pub fn redirect_stderr(fd: BorrowedFd<'_>) {
    // SAFETY: dup2 onto fd 2 replaces stderr atomically; std's stderr handle refers to fd 2 by
    // number, so it writes to the new file.
    unsafe { libc::dup2(fd.as_raw_fd(), 2) };
}

/// Most fds passed with one sendmsg (the kernel's SCM_MAX_FD is 253).
pub const FDS_PER_SEND: usize = 250;

static LIVE_SEGMENTS: AtomicU64 = AtomicU64::new(0);
static LIVE_SEGMENT_BYTES: AtomicU64 = AtomicU64::new(0);
static PEAK_SEGMENT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Shared segments mapped in this process right now: (count, bytes, peak bytes since start).
pub fn segment_stats() -> (u64, u64, u64) {
    (
        LIVE_SEGMENTS.load(Ordering::Relaxed),
        LIVE_SEGMENT_BYTES.load(Ordering::Relaxed),
        PEAK_SEGMENT_BYTES.load(Ordering::Relaxed),
    )
}

/// Resets the peak of [`segment_stats`] to the current value.
pub fn reset_segment_peak() {
    PEAK_SEGMENT_BYTES.store(
        LIVE_SEGMENT_BYTES.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
}

fn count_segment(bytes: u64) {
    LIVE_SEGMENTS.fetch_add(1, Ordering::Relaxed);
    let now = LIVE_SEGMENT_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK_SEGMENT_BYTES.fetch_max(now, Ordering::Relaxed);
}

/// A new sealable memory file of `len` bytes (at least 1), zero-filled and mapped read-write in
/// this process only.
fn writable_memfd(len: usize) -> io::Result<(memmap2::MmapMut, OwnedFd, Charge)> {
    let charge = Charge::new(len.max(1).next_multiple_of(4096) as u64)?;
    let fd = nix::sys::memfd::memfd_create(
        c"forkgraph-segment",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(errno)?;
    let file = std::fs::File::from(fd);
    file.set_len(len.max(1) as u64)?;
    // SAFETY: the memfd was just created and is known only to this process: nothing else can
    // truncate or write it while this mapping lives (its producer is its only writer).
    let map = unsafe { memmap2::MmapOptions::new().len(len.max(1)).map_mut(&file)? };
    Ok((map, OwnedFd::from(file), charge))
}

/// A shared segment being written: an anonymous memory file (memfd) mapped read-write in its
/// producer only. Nobody else has it until [`SegmentWriter::seal`].
#[derive(Debug)]
pub struct SegmentWriter {
    map: memmap2::MmapMut,
    fd: OwnedFd,
    charge: Charge,
}

impl SegmentWriter {
    /// A zero-filled segment of `len` bytes (at least 1).
    ///
    /// # Errors
    /// When memfd_create, ftruncate or mmap fail (fd or memory limits).
    pub fn new(len: usize) -> io::Result<SegmentWriter> {
        let (map, fd, charge) = writable_memfd(len)?;
        Ok(SegmentWriter { map, fd, charge })
    }

    /// The bytes to fill.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Unmaps the writable view and seals the file against every write, resize and further
    /// sealing (F_SEAL_WRITE | SHRINK | GROW | SEAL): from now on no process, this one included,
    /// can change it, whatever fds or /proc paths it holds. Returns the read-only segment.
    ///
    /// # Errors
    /// When sealing or mapping fails.
    pub fn seal(self) -> io::Result<Segment> {
        let SegmentWriter { map, fd, charge } = self;
        drop(map); // F_SEAL_WRITE fails while a writable shared mapping exists.
        use nix::fcntl::SealFlag;
        fcntl(
            fd.as_fd(),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(errno)?;
        let mut seg = Segment::from_fd(fd)?;
        seg._charge = Some(charge);
        Ok(seg)
    }
}

/// A sealed shared segment mapped read-only. Every process that has it sees the same bytes and
/// none can change them (the kernel refuses writes, writable mappings and resizing).
#[derive(Debug)]
pub struct Segment {
    map: std::sync::Arc<memmap2::Mmap>,
    fd: OwnedFd,
    /// Bytes in use (a recycled segment may be larger than its content).
    len: usize,
    /// Whether its producer may rewrite it once every mapping handed out is gone (sealed
    /// FUTURE_WRITE rather than WRITE): see [`RecyclableWriter`].
    recyclable: bool,
    /// Inode of the memory file: identifies the segment across processes and fds.
    ino: u64,
    /// Called with the inode when a tracked segment is dropped (see `wire`).
    on_drop: Option<fn(u64)>,
    /// Held by the process that created it, against its memory limit.
    _charge: Option<Charge>,
}

impl Segment {
    /// Maps a segment received from another process, after checking that it is sealed
    /// (memmap2's `map_if_safe` refuses a file that could still change).
    ///
    /// # Errors
    /// When the fd is not a sealed memory file, or mmap fails.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Segment> {
        let map = memmap2::MmapOptions::new().map_if_safe(&fd).map_err(|e| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "unsealed or unmappable segment refused: {}",
                    io::Error::from(e)
                ),
            )
        })?;
        count_segment(map.len() as u64);
        let len = map.len();
        let ino = inode(fd.as_fd())?;
        Ok(Segment {
            map: std::sync::Arc::new(map),
            fd,
            len,
            recyclable: false,
            ino,
            on_drop: None,
            _charge: None,
        })
    }

    /// Maps a recyclable segment received from another process: sealed against resizing and
    /// against every new write or writable mapping (F_SEAL_FUTURE_WRITE); only its producer's
    /// own mapping, made before the seal, can still write.
    ///
    /// # Errors
    /// When the fd is not such a memory file, is shorter than `len`, or mmap fails.
    pub fn from_recyclable_fd(fd: OwnedFd, len: usize) -> io::Result<Segment> {
        Segment::from_recyclable_fd_cached(fd, len, &mut MapCache::default())
    }

    /// As [`Segment::from_recyclable_fd`], reusing a mapping of the same memory file from
    /// `cache` when there is one: a recycled segment's pages are then already in this process's
    /// page tables, and reading it costs no faults.
    ///
    /// # Errors
    /// As [`Segment::from_recyclable_fd`].
    pub fn from_recyclable_fd_cached(
        fd: OwnedFd,
        len: usize,
        cache: &mut MapCache,
    ) -> io::Result<Segment> {
        use nix::fcntl::SealFlag;
        let seals = SealFlag::from_bits_truncate(
            fcntl(fd.as_fd(), FcntlArg::F_GET_SEALS).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("not a sealable memory file: {e}"),
                )
            })?,
        );
        let write = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_FUTURE_WRITE;
        if !seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW)
            || !seals.intersects(write)
        {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("unsealed segment refused (seals {seals:?})"),
            ));
        }
        let size = std::fs::File::from(fd.try_clone()?).metadata()?.len() as usize;
        if size < len || len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment of {size} bytes cannot hold {len}"),
            ));
        }
        let ino = inode(fd.as_fd())?;
        let map = match cache.get(ino, size) {
            Some(m) => m,
            None => {
                // SAFETY: the file cannot shrink (F_SEAL_SHRINK), so the mapping never faults
                // past its end; no process can write it through a new fd or mapping
                // (F_SEAL_FUTURE_WRITE or F_SEAL_WRITE). Its producer's own writable mapping
                // rewrites it only after the parent, through which every copy of this segment
                // passes, has seen every mapping it handed out dropped (the recycling protocol
                // in `wire`), so the bytes do not change while a `&[u8]` of it is in use.
                let m =
                    std::sync::Arc::new(unsafe { memmap2::MmapOptions::new().len(size).map(&fd)? });
                cache.put(ino, m.clone());
                m
            }
        };
        count_segment(size as u64);
        Ok(Segment {
            map,
            fd,
            len,
            recyclable: true,
            ino,
            on_drop: None,
            _charge: None,
        })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map[..self.len]
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes (never, for a mapped segment).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether its producer recycles it (see [`Segment::from_recyclable_fd`]).
    pub fn recyclable(&self) -> bool {
        self.recyclable
    }

    /// Inode of the memory file.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Calls `f(inode)` when this mapping is dropped.
    pub fn on_drop(&mut self, f: fn(u64)) {
        self.on_drop = Some(f);
    }

    /// The fd, to pass the segment on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Unmaps the segment and keeps only (a duplicate of) its fd, to send it away.
    ///
    /// # Errors
    /// When the fd cannot be duplicated (fd limit).
    pub fn into_fd(self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        LIVE_SEGMENTS.fetch_sub(1, Ordering::Relaxed);
        LIVE_SEGMENT_BYTES.fetch_sub(self.map.len() as u64, Ordering::Relaxed);
        if let Some(f) = self.on_drop {
            f(self.ino);
        }
    }
}

/// Read-only mappings of recyclable segments kept between uses, by inode (at most
/// [`MapCache::MAX_BYTES`]; mappings no segment uses are dropped first).
#[derive(Debug, Default)]
pub struct MapCache {
    maps: Vec<(u64, std::sync::Arc<memmap2::Mmap>)>,
}

impl MapCache {
    /// Most bytes of mappings kept.
    pub const MAX_BYTES: usize = 256 << 20;

    fn get(&mut self, ino: u64, size: usize) -> Option<std::sync::Arc<memmap2::Mmap>> {
        let i = self
            .maps
            .iter()
            .position(|(n, m)| *n == ino && m.len() == size)?;
        // Most recently used last.
        let e = self.maps.remove(i);
        let m = e.1.clone();
        self.maps.push(e);
        Some(m)
    }

    fn put(&mut self, ino: u64, m: std::sync::Arc<memmap2::Mmap>) {
        self.maps.retain(|(n, _)| *n != ino);
        self.maps.push((ino, m));
        let mut total: usize = self.maps.iter().map(|(_, m)| m.len()).sum();
        let mut i = 0;
        while total > Self::MAX_BYTES && i < self.maps.len() {
            if std::sync::Arc::strong_count(&self.maps[i].1) == 1 {
                total -= self.maps[i].1.len();
                self.maps.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    nix::sys::stat::fstat(fd).map(|st| st.st_ino).map_err(errno)
}

/// A segment its producer fills, sends, and fills again once it is free: a memory file mapped
/// writable here only, sealed against resizing and against every *new* write or writable
/// mapping (F_SEAL_FUTURE_WRITE). Readers elsewhere map it read-only; rewriting memory that
/// stays mapped runs at memory speed, where a fresh file costs a page fault per 4 KiB.
///
/// While it is published ([`RecyclableWriter::publish`] until [`RecyclableWriter::reclaim`]),
/// the producer's own mapping is inaccessible (`PROT_NONE`): a wild write by a later task in
/// the producer faults instead of changing bytes that readers hold, and `/proc/<pid>/mem` cannot
/// write through it either (the kernel refuses forced writes to shared mappings without write
/// permission). Code in the producer that calls `mprotect` itself can still undo that: this is
/// what recycling trusts; pools for untrusted tasks turn recycling off.
#[derive(Debug)]
pub struct RecyclableWriter {
    map: memmap2::MmapMut,
    fd: OwnedFd,
    ino: u64,
    published: bool,
    _charge: Charge,
}

impl RecyclableWriter {
    /// A new segment of `cap` bytes (at least 1).
    ///
    /// # Errors
    /// When memfd_create, ftruncate, mmap or sealing fail.
    pub fn new(cap: usize) -> io::Result<RecyclableWriter> {
        use nix::fcntl::SealFlag;
        let (map, fd, charge) = writable_memfd(cap)?;
        // A process a task forks (without exec) must not inherit a writable view.
        let _ = map.advise(memmap2::Advice::DontFork);
        // From here on this mapping is the only way to write it.
        fcntl(
            fd.as_fd(),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_FUTURE_WRITE,
            ),
        )
        .map_err(errno)?;
        let ino = inode(fd.as_fd())?;
        Ok(RecyclableWriter {
            map,
            fd,
            ino,
            published: false,
            _charge: charge,
        })
    }

    /// Makes the mapping inaccessible while readers hold the segment.
    ///
    /// # Errors
    /// When mprotect fails; the segment must then not be published.
    pub fn publish(&mut self) -> io::Result<()> {
        self.protect(nix::sys::mman::ProtFlags::PROT_NONE)?;
        self.published = true;
        Ok(())
    }

    /// Makes the mapping writable again, once no reader holds the segment.
    ///
    /// # Errors
    /// When mprotect fails; the segment must then not be reused.
    pub fn reclaim(&mut self) -> io::Result<()> {
        use nix::sys::mman::ProtFlags;
        self.protect(ProtFlags::PROT_READ | ProtFlags::PROT_WRITE)?;
        self.published = false;
        Ok(())
    }

    fn protect(&mut self, prot: nix::sys::mman::ProtFlags) -> io::Result<()> {
        let ptr = std::ptr::NonNull::new(self.map.as_mut_ptr().cast::<libc::c_void>())
            .ok_or_else(|| io::Error::other("null mapping"))?;
        // SAFETY: the range is exactly this writer's own mapping, which lives as long as
        // `self`; no reference into it is alive while it is PROT_NONE (`bytes_mut` asserts the
        // writer is not published, and it takes `&mut self`).
        unsafe { nix::sys::mman::mprotect(ptr, self.map.len(), prot) }.map_err(errno)
    }

    /// Capacity in bytes.
    pub fn cap(&self) -> usize {
        self.map.len()
    }

    /// The bytes to fill.
    ///
    /// # Panics
    /// While published (the memory is inaccessible then).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        assert!(!self.published, "a published segment is not writable");
        &mut self.map
    }

    /// The fd, to send the segment.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Inode of the memory file.
    pub fn ino(&self) -> u64 {
        self.ino
    }
}
