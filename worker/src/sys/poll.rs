//! Waiting on fds, with deadlines on the monotonic clock.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::*;

/// What to wait for on one fd.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interest<'a> {
    /// The fd.
    pub fd: BorrowedFd<'a>,
    /// Wake when readable (or at end-of-file / error).
    pub read: bool,
    /// Wake when writable.
    pub write: bool,
}

/// What [`poll`] saw on one fd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    /// Readable, end-of-file, or error: a read will not block.
    pub read: bool,
    /// Writable.
    pub write: bool,
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no timeout).
///
/// # Errors
/// The poll error (EINTR is reported as no fd ready).
pub(crate) fn poll(fds: &[Interest<'_>], timeout: Option<Duration>) -> io::Result<Vec<Ready>> {
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
pub(crate) fn deadline_after(d: Duration) -> u64 {
    monotonic_ns().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Waits until one of `fds` is ready or the monotonic clock reaches `deadline` (ns); as
/// [`poll`], whose interruptions it resumes. All not ready: the deadline passed.
///
/// # Errors
/// The poll error.
pub(crate) fn poll_until(fds: &[Interest<'_>], deadline: u64) -> io::Result<Vec<Ready>> {
    loop {
        let left = deadline.saturating_sub(monotonic_ns());
        let r = poll(fds, Some(Duration::from_nanos(left)))?;
        if left == 0 || r.iter().any(|x| x.read || x.write) {
            return Ok(r);
        }
    }
}

/// Nanoseconds on the monotonic clock, comparable between processes.
pub(crate) fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC);
    t.map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}
