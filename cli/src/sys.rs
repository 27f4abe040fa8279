//! Every signal, prctl, rlimit, pidfd and process-group call of the runner, behind small
//! checked functions (the rest of the crate makes no system call of its own).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// The first of SIGINT/SIGTERM/SIGHUP the runner received (0: none).
static INTERRUPT: AtomicI32 = AtomicI32::new(0);
/// The self-pipe the handler writes to (read end, write end; -1 before installation).
static PIPE_READ: AtomicI32 = AtomicI32::new(-1);
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let _ = INTERRUPT.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = [sig as u8];
        // SAFETY: write(2) is async-signal-safe; the buffer is valid for one byte; the pipe's
        // write end is non-blocking, so a full pipe cannot block the handler.
        unsafe {
            libc::write(fd, b.as_ptr().cast(), 1);
        }
    }
}

/// Installs the runner's handlers for SIGINT, SIGTERM and SIGHUP: each records the signal
/// (see [`interrupted`]) and wakes [`wait_interrupt`]. The process pool's own Ctrl-C handling
/// is off in the runner (`handle_ctrl_c(false)`): the runner stops its commands itself, with
/// SIGTERM first and SIGKILL after the grace period.
pub fn install_interrupt_handlers() {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0 {
        // SAFETY: fcntl on the pipe's write end, which we own.
        unsafe {
            let fl = libc::fcntl(fds[1], libc::F_GETFL);
            libc::fcntl(fds[1], libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        PIPE_READ.store(fds[0], Ordering::SeqCst);
        PIPE_WRITE.store(fds[1], Ordering::SeqCst);
    }
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only does an atomic compare-exchange and write(2).
        let _ = unsafe { signal::sigaction(s, &action) };
    }
}

/// Blocks until an interrupting signal arrives (returns it) or [`wake_interrupt_waiter`] is
/// called (returns 0). Returns 0 at once when the handlers are not installed.
pub fn wait_interrupt() -> i32 {
    let fd = PIPE_READ.load(Ordering::SeqCst);
    if fd < 0 {
        return 0;
    }
    let mut b = [0u8; 1];
    loop {
        // SAFETY: read(2) into a one-byte buffer we own, from the pipe's read end.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
        if n == 1 {
            return i32::from(b[0]);
        }
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return 0;
    }
}

/// Wakes a thread blocked in [`wait_interrupt`] (it returns 0).
pub fn wake_interrupt_waiter() {
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = [0u8];
        // SAFETY: write(2) of one byte from a buffer we own to the pipe's write end.
        unsafe {
            libc::write(fd, b.as_ptr().cast(), 1);
        }
    }
}

/// Whether process `pid` has children now (from `/proc/<pid>/task/*/children`).
pub fn has_children(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("children")).is_ok_and(|s| !s.trim().is_empty())
    })
}

/// The signal that interrupted the run, if one came.
pub fn interrupted() -> Option<i32> {
    match INTERRUPT.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The name of a signal (`SIGSEGV`), or its number.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}

/// Prepares `cmd` to run in its own process group, killed by SIGKILL if the process that
/// spawned it dies (when `death_signal`), with default signal dispositions and, if given, an
/// address-space limit.
pub fn confine_command(cmd: &mut Command, memory_limit: Option<u64>, death_signal: bool) {
    let parent = std::process::id() as i32;
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and makes only
    // async-signal-safe system calls (prctl, getppid, sigaction, setrlimit, _exit); it
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if death_signal {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before the prctl: then nobody would kill us.
                if libc::getppid() != parent {
                    libc::_exit(137);
                }
            }
            // Workers ignore these; exec keeps ignored dispositions, so reset them.
            for s in [
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGPIPE,
                libc::SIGTTIN,
                libc::SIGTTOU,
                libc::SIGTERM,
                libc::SIGHUP,
            ] {
                libc::signal(s, libc::SIG_DFL);
            }
            if let Some(bytes) = memory_limit {
                let lim = libc::rlimit {
                    rlim_cur: bytes as libc::rlim_t,
                    rlim_max: bytes as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Waits for `child` to exit, until `deadline`. Returns whether it exited (it is then
/// ready to be reaped with `Child::wait`).
///
/// # Errors
/// When the pidfd cannot be opened or polled.
pub fn wait_until(child: &Child, deadline: Option<Instant>) -> io::Result<bool> {
    let pid = rustix::process::Pid::from_child(child);
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
    loop {
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                Some(rustix::event::Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                })
            }
        };
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `sig` to the process group `pgid` (no error if it is empty).
pub fn signal_group(pgid: u32, sig: i32) {
    if let Ok(s) = Signal::try_from(sig) {
        let _ = signal::killpg(Pid::from_raw(pgid as i32), s);
    }
}

/// Children of this process, from `/proc/self/task/*/children`.
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// Kills and reaps every remaining descendant of this process. Run in a worker, which is a
/// child subreaper: whatever a command left behind (a background child that left its group
/// with `setsid`, a double fork) has been reparented here once its parent died, so killing
/// every child and reaping until there is none leaves nothing.
pub fn kill_descendants() {
    loop {
        for c in children() {
            let _ = signal::kill(Pid::from_raw(c), Signal::SIGKILL);
        }
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return, // ECHILD: nothing left.
        }
    }
}

/// Takes an exclusive `flock(2)` on `file` without waiting: `Ok(false)` when another open file
/// description (another runner) holds it. The lock goes with the file's last descriptor.
///
/// # Errors
/// When the file system refuses locks.
pub fn try_lock(file: &std::fs::File) -> io::Result<bool> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sends SIGKILL to process `pid` (a test hook's crash).
pub fn kill_hard(pid: u32) {
    if pid > 0 {
        let _ = signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}
