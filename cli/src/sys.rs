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

extern "C" fn on_signal(sig: libc::c_int) {
    let first = INTERRUPT
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if first && sig != libc::SIGINT {
        // The process pool stops its workers on SIGINT during `get` (its handler runs before
        // this one and chains to it); SIGTERM and SIGHUP are turned into that. kill(2) and
        // getpid(2) are async-signal-safe.
        // SAFETY: plain system calls with valid arguments.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGINT);
        }
    }
}

/// Installs the runner's handlers for SIGINT, SIGTERM and SIGHUP: each records the signal
/// (see [`interrupted`]); SIGTERM and SIGHUP also raise SIGINT, which the process pool turns
/// into stopping its workers and every command below them.
pub fn install_interrupt_handlers() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only does an atomic compare-exchange and kill(2).
        let _ = unsafe { signal::sigaction(s, &action) };
    }
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

/// Sends SIGINT to this process (the process pool's handler stops the run).
pub fn raise_interrupt() {
    let _ = signal::kill(nix::unistd::getpid(), Signal::SIGINT);
}
