//! Every system call forkgraph makes that can break a process — fork, socket and fd passing,
//! mmap of shared pages, signals, rlimits — lives here, behind checked wrappers. The rest of the
//! code sees only these wrappers and std types (`OwnedFd`, `BorrowedFd`).
//!
//! Every `unsafe` block says why it holds. After `fork` the child of the fork server runs Rust
//! code freely: the fork server is single-threaded (it was exec'd, not forked from a threaded
//! parent), so no lock can be held by a thread that does not exist in the child.

use std::io;

use nix::errno::Errno;

pub(crate) mod cgroup;
pub(crate) mod limits;
pub(crate) mod memfd;
pub(crate) mod page;
pub(crate) mod poll;
pub(crate) mod process;
pub(crate) mod sandbox;
pub(crate) mod signals;
pub(crate) mod socket;

pub(crate) use limits::*;
pub(crate) use memfd::*;
pub(crate) use page::*;
pub(crate) use poll::*;
pub(crate) use process::*;
pub(crate) use sandbox::{
    compile_seccomp, is_dumpable, is_root, landlock_abi, seccomp_available, set_dumpable,
    user_namespaces_available,
};
pub(crate) use signals::*;
pub(crate) use socket::*;

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}
