//! Unix stream sockets that carry fds, pipes, and raw reads and writes.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use super::*;

/// One end of a connected Unix stream socket that can carry file descriptors.
#[derive(Debug)]
pub(crate) struct Stream(OwnedFd);

impl Stream {
    /// A connected pair (close-on-exec).
    ///
    /// # Errors
    /// When the kernel refuses (fd limit).
    pub(crate) fn pair() -> io::Result<(Stream, Stream)> {
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
    pub(crate) fn into_fd(self) -> OwnedFd {
        self.0
    }

    /// Wraps an fd known to be such a socket.
    pub(crate) fn from_fd(fd: OwnedFd) -> Stream {
        Stream(fd)
    }

    /// Switches non-blocking mode.
    ///
    /// # Errors
    /// When fcntl fails.
    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        set_nonblocking(self.0.as_fd(), on)
    }

    /// Sends bytes, with `fds` attached to the first byte. Returns how many bytes went out
    /// (0 when a non-blocking socket is full).
    ///
    /// # Errors
    /// When the peer is gone (`EPIPE`, `ECONNRESET`) or the call fails otherwise.
    pub(crate) fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
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
    pub(crate) fn recv(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
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
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
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
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(errno)
}

/// Reads what is available from an fd (`Ok(0)` at end-of-file).
///
/// # Errors
/// `WouldBlock` on an empty non-blocking fd, or the read error.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// One write of `data` to an fd (a short write is not retried).
///
/// # Errors
/// `WouldBlock` on a full non-blocking fd, or the write error.
pub(crate) fn write_fd(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::write(fd, data) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Writes `data` to fd 2 with raw writes (no lock, no buffering); errors are ignored.
pub(crate) fn write_stderr(mut data: &[u8]) {
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

/// Most fds passed with one sendmsg (the kernel's SCM_MAX_FD is 253).
pub(crate) const FDS_PER_SEND: usize = 250;
