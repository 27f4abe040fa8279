//! Processes: fork, the fork server's start, exit and reaping, pidfds (a death seen from the
//! process, not its sockets), confinement of workers and of what their tasks fork, names, and
//! the thread that starts fork servers.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, SigHandler, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::*;

/// The fd number at which a re-executed fork server finds its control socket.
pub(crate) const FORK_SERVER_FD: RawFd = 3;

/// The fork server's command line (`ps`); its workers show as [`WORKER_NAME`].
pub(crate) const FORK_SERVER_NAME: &str = "forkgraph-forkserver";

/// A worker's command line (`ps`).
pub(crate) const WORKER_NAME: &str = "forkgraph-worker";

/// Environment variable that turns a re-executed binary into a fork server.
pub(crate) const FORK_SERVER_ENV: &str = "FORKGRAPH_FORK_SERVER";

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// Sends SIGKILL to a process; a process that is already gone is not an error.
pub(crate) fn kill_hard(pid: i32) {
    // kill(0 or -n) would signal a whole process group: never.
    if pid > 0 {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Waits for a child to end.
///
/// # Errors
/// When `pid` is not a child of this process.
pub(crate) fn wait_child(pid: i32) -> io::Result<Exit> {
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
pub(crate) fn getpid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// Ends this process at once, without running destructors or atexit handlers (what a forked
/// child must do instead of returning).
pub(crate) fn exit_now(code: i32) -> ! {
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
pub(crate) fn spawn_fork_server(control: OwnedFd, args: &[&OsStr]) -> io::Result<Child> {
    let raw = control.as_raw_fd();
    let parent = getpid();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(FORK_SERVER_NAME)
        .args(args)
        .env(FORK_SERVER_ENV, format!("{FORK_SERVER_FD}:{parent}"))
        .stdin(Stdio::null());
    // Its own process group: a signal to the program's group (a launcher such as mpirun or a
    // batch system ending a job with killpg) must not kill the server together with the
    // program, or nobody would be left to end what the workers' tasks forked; the server
    // notices the program's death (parent-death signal, end-of-file) and cleans up.
    cmd.process_group(0);
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
pub(crate) enum ForkServerVar {
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
pub(crate) fn fork_server_var(var: &OsStr) -> ForkServerVar {
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
pub(crate) unsafe fn take_fork_server_fd() -> Stream {
    // Make it close-on-exec again so that nothing the server starts inherits it.
    // SAFETY: the caller guarantees the fd is open and ours.
    unsafe {
        let flags = libc::fcntl(FORK_SERVER_FD, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(FORK_SERVER_FD, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
    // SAFETY: as above, the fd is open and owned by nobody else.
    Stream::from_fd(unsafe { OwnedFd::from_raw_fd(FORK_SERVER_FD) })
}

/// Result of [`fork`].
#[derive(Debug)]
pub(crate) enum Forked {
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
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees a single-threaded process.
    match unsafe { nix::unistd::fork() }.map_err(errno)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// In a worker: die with SIGKILL when the parent (the fork server) dies, and exit at once if
/// it already has (`expected_parent` is the pid it had before the fork).
pub(crate) fn die_with_parent(expected_parent: i32) {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != expected_parent {
        exit_now(1);
    }
}

/// Closes an fd in a freshly forked child that will never return to code owning it.
///
/// # Safety
/// The caller must never use `fd` again in this process, and its owner must never be dropped
/// here (the child ends in [`exit_now`] without unwinding): otherwise the fd number, which may
/// be reused, would be used or closed twice.
pub(crate) unsafe fn close_in_child(fd: BorrowedFd<'_>) {
    // SAFETY: closing a number we own per the caller's contract.
    unsafe { libc::close(fd.as_raw_fd()) };
}

/// Makes `fd` this process's stderr, and its stdout too when `stdout`.
pub(crate) fn redirect_output(fd: BorrowedFd<'_>, stdout: bool) {
    for target in if stdout { &[2, 1][..] } else { &[2][..] } {
        // SAFETY: dup2 onto fd 1 or 2 replaces stdout/stderr atomically; std's handles refer
        // to those fds by number, so they write to the new file.
        unsafe { libc::dup2(fd.as_raw_fd(), *target) };
    }
}

/// A pidfd for a process: readable once the process has ended, whoever reaps it, and immune to
/// pid reuse.
///
/// # Errors
/// `ESRCH` when no such process exists (it ended and was reaped).
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    if pid <= 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd (close-on-exec) or -1; it
    // touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just installed this fd in our table; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process behind a pidfd has ended (without waiting).
pub(crate) fn pidfd_exited(fd: BorrowedFd<'_>) -> bool {
    super::poll(
        &[super::Interest {
            fd,
            read: true,
            write: false,
        }],
        Some(Duration::ZERO),
    )
    .is_ok_and(|r| r[0].read)
}

/// Waits up to `timeout` for the process behind a pidfd to end; whether it has.
pub(crate) fn pidfd_wait(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let deadline = super::deadline_after(timeout);
    let r = super::poll_until(
        &[super::Interest {
            fd,
            read: true,
            write: false,
        }],
        deadline,
    );
    r.is_ok_and(|r| r[0].read)
}

/// Reaps the process behind a pidfd if it is a child of this process and has ended; `None`
/// when it still runs or is not our child (then its real parent reaps it).
pub(crate) fn pidfd_reap(fd: BorrowedFd<'_>) -> Option<Exit> {
    match waitid(Id::PIDFd(fd), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG) {
        Ok(WaitStatus::Exited(_, code)) => Some(Exit::Code(code)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(Exit::Signal(sig as i32)),
        _ => None,
    }
}

/// Sends SIGKILL through a pidfd: never reaches another process that reused the pid.
pub(crate) fn pidfd_kill(fd: BorrowedFd<'_>) {
    pidfd_signal(fd, libc::SIGKILL);
}

/// Sends SIGCONT through a pidfd: a stopped process runs again.
pub(crate) fn pidfd_continue(fd: BorrowedFd<'_>) {
    pidfd_signal(fd, libc::SIGCONT);
}

/// Sends a signal through a pidfd (errors, such as a process already gone, are ignored).
fn pidfd_signal(fd: BorrowedFd<'_>, sig: libc::c_int) {
    // SAFETY: pidfd_send_signal takes an fd, a signal number, a null siginfo and flags; it
    // touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// The children of this (single-threaded) process, zombies included.
pub(crate) fn child_pids() -> Vec<i32> {
    let me = super::getpid();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills (SIGKILL) and reaps every child of this process that `keep` does not accept, until
/// none is left: killing one reparents its own children here (this process is a child
/// subreaper), and they go the same way. Used by the fork server to end what the tasks of a
/// dead worker left behind.
pub(crate) fn kill_strays(keep: impl Fn(i32) -> bool) {
    // Each round kills what is there; their children come up for the next. Bounded all the
    // same (SIGKILL stops a stray from forking again, so rounds only shrink the tree).
    for _ in 0..4096 {
        let strays: Vec<i32> = child_pids().into_iter().filter(|&p| !keep(p)).collect();
        if strays.is_empty() {
            return;
        }
        for &p in &strays {
            super::kill_hard(p);
        }
        for &p in &strays {
            let _ = super::wait_child(p);
        }
    }
}

/// Names this process in `ps` and `top`: `comm` (at most 15 bytes, what `top` and `pgrep`
/// show) and, when `cmdline` fits in the memory of its original arguments, the command line
/// (what `ps aux` shows).
pub(crate) fn set_process_name(comm: &std::ffi::CStr, cmdline: &str) {
    let _ = nix::sys::prctl::set_name(comm);
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may contain anything.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // arg_start and arg_end are fields 48 and 49 of the line; `rest` starts at field 3.
    let (Some(Ok(start)), Some(Ok(end))) = (
        fields.get(45).map(|f| f.parse::<usize>()),
        fields.get(46).map(|f| f.parse::<usize>()),
    ) else {
        return;
    };
    let room = end.saturating_sub(start);
    if start == 0 || cmdline.len() >= room {
        return;
    }
    // SAFETY: [arg_start, arg_end) is this process's own argument area, which the kernel set up
    // on its stack at exec and which stays mapped and writable for its whole life; we write
    // inside it and end with NUL bytes, so it stays a valid sequence of C strings for anything
    // that still reads argv.
    unsafe {
        let p = start as *mut u8;
        std::ptr::write_bytes(p, 0, room);
        std::ptr::copy_nonoverlapping(cmdline.as_ptr(), p, cmdline.len());
    }
}

/// Makes this process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER): what a
/// task forks and abandons is reparented here, not to init, so it can be found and ended.
pub(crate) fn become_subreaper() {
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// Whether this process is a child subreaper (orphans below it become its children).
pub(crate) fn is_subreaper() -> bool {
    nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// In a freshly forked worker: its own process group (a task's `kill(0, ..)` reaches only its
/// worker and what that forked), subreaper of its descendants, not dumpable (no other process
/// of the same user can read or write its memory through `/proc/<pid>/mem` or ptrace), SIGPIPE
/// ignored as Rust's own start-up does for `main` (a write to a closed pipe is an error, not a
/// death), and SIGTTOU/SIGTTIN ignored (terminal I/O from a background group is an error, not a
/// stop).
pub(crate) fn confine_worker() {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    become_subreaper();
    let _ = nix::sys::prctl::set_dumpable(false);
    // Out of the terminal's foreground group, a worker that writes to the terminal (with
    // `stty tostop`) or reads from it would be stopped: it gets an error instead.
    for s in [Signal::SIGPIPE, Signal::SIGTTOU, Signal::SIGTTIN] {
        // SAFETY: installing SIG_IGN runs no handler code.
        let _ = unsafe { nix::sys::signal::signal(s, SigHandler::SigIgn) };
    }
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as this process. A child's parent-death
/// signal (PR_SET_PDEATHSIG) fires when the *thread* that forked it ends, not the process: a
/// fork server started from a short-lived thread would be killed with that thread. Starting it
/// here ties its life to the process.
pub(crate) fn spawn_from_lasting_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let started = std::thread::Builder::new()
            .name("forkgraph-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = started {
            // Without the thread every spawn below reports this.
            eprintln!("forkgraph: cannot start the spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| io::Error::other("forkgraph's spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("forkgraph's spawner thread is gone"))?
}
