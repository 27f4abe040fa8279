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
    /// How many entries of the skip list (from [`SKIP_FIRST`]) the parent has written.
    Skips = 3,
    /// The skip list's generation: odd while the parent rewrites the list, so that the worker
    /// never reads a list half old and half new (a seqlock; the parent is its only writer).
    SkipGen = 4,
}

/// The first slot of the skip list: sequence numbers of units the parent cancelled after
/// sending them, which the worker must not start (see `skip` and `skipped`).
const SKIP_FIRST: usize = 8;
/// Most entries of the skip list (a worker never holds more units than this).
pub(crate) const SKIP_SLOTS: usize = 64;

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
        self.at(s as usize)
    }

    fn at(&self, index: usize) -> &AtomicU64 {
        assert!(index < (PAGE as usize) / 8);
        // SAFETY: the mapping is PAGE bytes long, page-aligned and lives as long as `self`;
        // slot `index` (checked above) is at an 8-byte offset within it, and every process
        // accesses slots only through atomics.
        unsafe { &*(self.map.as_mut_ptr().add(index * 8) as *const AtomicU64) }
    }

    /// The parent: replaces the skip list with `seqs` (at most [`SKIP_SLOTS`]), then returns
    /// the unit the worker says it runs. With [`SharedPage::start_unit`] this is a
    /// store-then-load handshake on both sides (sequentially consistent): either the worker
    /// sees a unit in the list before it starts it, or the value returned names that unit (or
    /// a later one).
    ///
    /// The list is rewritten whole (entries move between calls), so it is guarded by a
    /// generation count: odd while it is written. A worker that read a list while it changed
    /// reads it again; one that read the old list whole did so before this call began, so its
    /// store of the unit it starts comes before the load here, which then names that unit.
    pub(crate) fn skip(&self, seqs: &[u64]) -> u64 {
        let n = seqs.len().min(SKIP_SLOTS);
        let generation = self.slot(Slot::SkipGen);
        // Even, whatever a worker may have written there (it only harms its own reads).
        let g = generation.load(Ordering::SeqCst) & !1;
        generation.store(g.wrapping_add(1), Ordering::SeqCst);
        for (i, &seq) in seqs[..n].iter().enumerate() {
            self.at(SKIP_FIRST + i).store(seq, Ordering::SeqCst);
        }
        self.slot(Slot::Skips).store(n as u64, Ordering::SeqCst);
        generation.store(g.wrapping_add(2), Ordering::SeqCst);
        self.slot(Slot::Unit).load(Ordering::SeqCst)
    }

    /// The worker: says it starts unit `seq`, then whether the parent listed it to be skipped
    /// (reading the list again while the parent rewrites it).
    pub(crate) fn start_unit(&self, seq: u64) -> bool {
        self.slot(Slot::Unit).store(seq, Ordering::SeqCst);
        let generation = self.slot(Slot::SkipGen);
        let mut tries = 0u32;
        loop {
            let g = generation.load(Ordering::SeqCst);
            if g % 2 == 0 {
                let n = self.slot(Slot::Skips).load(Ordering::SeqCst) as usize;
                let listed = (0..n.min(SKIP_SLOTS))
                    .any(|i| self.at(SKIP_FIRST + i).load(Ordering::SeqCst) == seq);
                if generation.load(Ordering::SeqCst) == g {
                    return listed;
                }
            }
            // The parent is writing (at most SKIP_SLOTS stores): spin briefly, then yield.
            tries += 1;
            if tries < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit that stays cancelled while the list is rewritten around it (its entry moving
    /// between the first and the last of 60 slots) is always seen listed: a reader never mixes slots of
    /// two lists (before the generation count, a reader that the writer overtook missed the
    /// unit).
    #[test]
    fn a_listed_unit_stays_listed_while_the_list_is_rewritten() {
        let (page, _fd) = SharedPage::create().unwrap();
        let page = std::sync::Arc::new(page);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rewrites = std::sync::Arc::new(AtomicU64::new(0));
        let writer = {
            let (page, stop, rewrites) = (page.clone(), stop.clone(), rewrites.clone());
            std::thread::spawn(move || {
                // Unit 7 first, then last, in lists of 60.
                let first: Vec<u64> = std::iter::once(7).chain(100..159).collect();
                let last: Vec<u64> = (100..159).chain(std::iter::once(7)).collect();
                let mut flip = false;
                while !stop.load(Ordering::Relaxed) {
                    page.skip(if flip { &first } else { &last });
                    rewrites.fetch_add(1, Ordering::Relaxed);
                    flip = !flip;
                }
            })
        };
        page.skip(&[7]);
        // Read while the writer rewrites the list 100,000 times (a count, not a time).
        while rewrites.load(Ordering::Relaxed) < 100_000 {
            assert!(page.start_unit(7), "unit 7 was missed");
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }
}
