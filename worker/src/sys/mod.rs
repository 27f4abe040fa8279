//! Every system call forkgraph makes that can break a process — fork, socket and fd passing,
//! mmap of shared pages, signals, rlimits — lives here, behind checked wrappers. The rest of the
//! code sees only these wrappers and std types (`OwnedFd`, `BorrowedFd`).
//!
//! Every `unsafe` block says why it holds. After `fork` the child of the fork server runs Rust
//! code freely: the fork server is single-threaded (it was exec'd, not forked from a threaded
//! parent), so no lock can be held by a thread that does not exist in the child.

use std::io;

use nix::errno::Errno;

mod limits;
mod memfd;
mod page;
mod poll;
mod process;
mod signals;
mod socket;

pub use limits::*;
pub use memfd::*;
pub use page::*;
pub use poll::*;
pub use process::*;
pub use signals::*;
pub use socket::*;

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}
