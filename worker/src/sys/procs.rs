//! Process control beyond fork itself: pidfds (death seen from the process, not its sockets),
//! confinement of workers and of what their tasks fork, the fork server's inherited state, and
//! the thread that starts fork servers.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::Exit;

/// A pidfd for a process: readable once the process has ended, whoever reaps it, and immune to
/// pid reuse.
///
/// # Errors
/// `ESRCH` when no such process exists (it ended and was reaped).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
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
pub fn pidfd_exited(fd: BorrowedFd<'_>) -> bool {
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
pub fn pidfd_wait(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
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
pub fn pidfd_reap(fd: BorrowedFd<'_>) -> Option<Exit> {
    match waitid(Id::PIDFd(fd), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG) {
        Ok(WaitStatus::Exited(_, code)) => Some(Exit::Code(code)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(Exit::Signal(sig as i32)),
        _ => None,
    }
}

/// Sends SIGKILL through a pidfd: never reaches another process that reused the pid.
pub fn pidfd_kill(fd: BorrowedFd<'_>) {
    pidfd_signal(fd, libc::SIGKILL);
}

/// Sends SIGCONT through a pidfd: a stopped process runs again.
pub fn pidfd_continue(fd: BorrowedFd<'_>) {
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
pub fn child_pids() -> Vec<i32> {
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
pub fn kill_strays(keep: impl Fn(i32) -> bool) {
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
pub fn set_process_name(comm: &std::ffi::CStr, cmdline: &str) {
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
pub fn become_subreaper() {
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// Whether this process is a child subreaper (orphans below it become its children).
pub fn is_subreaper() -> bool {
    nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// In a freshly forked worker: its own process group (a task's `kill(0, ..)` reaches only its
/// worker and what that forked), subreaper of its descendants, not dumpable (no other process
/// of the same user can read or write its memory through `/proc/<pid>/mem` or ptrace), SIGPIPE
/// ignored as Rust's own start-up does for `main` (a write to a closed pipe is an error, not a
/// death), and SIGTTOU/SIGTTIN ignored (terminal I/O from a background group is an error, not a
/// stop).
pub fn confine_worker() {
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

/// In the fork server at start-up: undo what exec carried over from the program that may break
/// forking and reaping. An ignored SIGCHLD would make the kernel reap workers behind our back
/// (then `waitpid` fails), and a blocked signal would stay blocked in every worker.
pub fn reset_inherited_signals() {
    for s in [Signal::SIGCHLD, Signal::SIGPIPE] {
        // SAFETY: installing SIG_DFL runs no handler code.
        let _ = unsafe { nix::sys::signal::signal(s, SigHandler::SigDfl) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
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
