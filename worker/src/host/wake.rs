//! A wake-up one thread sends to another that waits in a [`PollSet`](super::PollSet): a
//! non-blocking pipe, so that a scheduler thread blocked in poll over its workers also wakes
//! when another thread hands it work.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys;

/// A wake-up pipe: [`Wake::wake`] from any thread makes the next (or current) poll that
/// watches it return; [`Wake::clear`] empties it. Wakes sent before a `clear` coalesce.
#[derive(Debug)]
pub struct Wake {
    read: OwnedFd,
    write: OwnedFd,
    /// Set while a byte is (or is about to be) in the pipe, so that a burst of wakes writes once.
    pending: AtomicBool,
}

impl Wake {
    /// A new wake-up pipe.
    ///
    /// # Errors
    /// When the kernel refuses a pipe (fd limit).
    pub fn new() -> io::Result<Wake> {
        let (read, write) = sys::pipe()?;
        sys::set_nonblocking(read.as_fd(), true)?;
        sys::set_nonblocking(write.as_fd(), true)?;
        Ok(Wake {
            read,
            write,
            pending: AtomicBool::new(false),
        })
    }

    /// Wakes the poll that watches this pipe (at most one byte is ever in flight).
    pub fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // A full pipe already holds a wake-up; any other error leaves nothing to do.
            let _ = sys::write_fd(self.write.as_fd(), &[1]);
        }
    }

    /// Empties the pipe; wakes sent after this wake the next poll.
    ///
    /// The pipe is drained *before* the flag is lowered: a wake sent in between finds the flag
    /// still up and writes nothing, but what it announced is looked at by the owner after
    /// `clear` returns; a wake sent after finds the flag down and writes. (Lowering it first
    /// would let the drain swallow the byte of a wake that then keeps the flag up, and every
    /// later wake would be lost.)
    pub fn clear(&self) {
        if self.pending.load(Ordering::Acquire) {
            let mut buf = [0u8; 16];
            while matches!(sys::read(self.read.as_fd(), &mut buf), Ok(n) if n > 0) {}
            self.pending.store(false, Ordering::Release);
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}
