//! The progress page a worker shares with the parent.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// A page of memory shared between a worker and the parent: the worker publishes which unit
/// it runs and since when, so that the parent can blame the right task when the worker dies
/// and enforce timeouts without a message per task.
#[derive(Debug)]
pub(crate) struct SharedPage {
    map: memmap2::MmapRaw,
}

/// Slots of a [`SharedPage`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    /// Sequence number of the unit the worker runs now (0: none).
    Unit = 0,
    /// When the current task started ([`monotonic_ns`]).
    Started = 1,
    /// Index of the current task within the unit.
    Task = 2,
}

const PAGE: u64 = 4096;

impl SharedPage {
    /// A new page in an anonymous memory file; returns the page and the file (to pass on).
    ///
    /// # Errors
    /// When memfd_create, ftruncate or mmap fail.
    pub(crate) fn create() -> io::Result<(SharedPage, OwnedFd)> {
        let fd = nix::sys::memfd::memfd_create(
            c"forkgraph-progress",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(errno)?;
        let file = std::fs::File::from(fd);
        file.set_len(PAGE)?;
        let page = SharedPage::map(file.as_fd())?;
        Ok((page, OwnedFd::from(file)))
    }

    /// Maps the page of a memory file made by [`SharedPage::create`].
    ///
    /// # Errors
    /// When the fd is not such a file or mmap fails.
    pub(crate) fn map(fd: BorrowedFd<'_>) -> io::Result<SharedPage> {
        let file = std::fs::File::from(fd.try_clone_to_owned()?);
        if file.metadata()?.len() < PAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "progress page too small",
            ));
        }
        let map = memmap2::MmapOptions::new()
            .len(PAGE as usize)
            .map_raw(&file)?;
        Ok(SharedPage { map })
    }

    fn slot(&self, s: Slot) -> &AtomicU64 {
        // SAFETY: the mapping is PAGE bytes long, page-aligned and lives as long as `self`;
        // slots are at 8-byte offsets within it, and every process accesses them only through
        // atomics.
        unsafe { &*(self.map.as_mut_ptr().add(s as usize * 8) as *const AtomicU64) }
    }

    /// Reads a slot.
    pub(crate) fn get(&self, s: Slot) -> u64 {
        self.slot(s).load(Ordering::Acquire)
    }

    /// Writes a slot.
    pub(crate) fn set(&self, s: Slot, v: u64) {
        self.slot(s).store(v, Ordering::Release);
    }
}
