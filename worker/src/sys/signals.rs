//! Signal dispositions of workers and the fork server, and Ctrl-C during `get`.

use nix::sys::signal::{SigHandler, Signal};

use nix::sys::signal::{SigSet, SigmaskHow};

use super::*;

/// Ignores SIGINT in this process (workers leave Ctrl-C to the parent, which stops them).
pub(crate) fn ignore_sigint() {
    // SAFETY: installing SIG_IGN has no handler code that could be unsafe.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGINT, SigHandler::SigIgn) };
}

/// Restores the default disposition of the signals a task can die from, so that a crash ends
/// the worker with that signal (and the parent reports it) rather than in some handler.
pub(crate) fn default_crash_signals() {
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

/// Ctrl-C during `get`. While at least one guard is armed, SIGINT runs a handler that counts the
/// signal, wakes every armed `get` through its own pipe, and then calls whatever handler was
/// installed before (so a program's own Ctrl-C handling still runs). When the last guard drops,
/// the previous disposition is restored exactly: outside `get`, forkgraph changes nothing. A
/// handler the program installs while a `get` runs is kept when the `get` ends.
pub(crate) mod interrupt {
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
    pub(crate) fn arm() -> Option<Armed> {
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

/// In the fork server at start-up: undo what exec carried over from the program that may break
/// forking and reaping. An ignored SIGCHLD would make the kernel reap workers behind our back
/// (then `waitpid` fails), and a blocked signal would stay blocked in every worker.
pub(crate) fn reset_inherited_signals() {
    for s in [Signal::SIGCHLD, Signal::SIGPIPE] {
        // SAFETY: installing SIG_DFL runs no handler code.
        let _ = unsafe { nix::sys::signal::signal(s, SigHandler::SigDfl) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
