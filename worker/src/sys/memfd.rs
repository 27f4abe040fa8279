//! Shared segments: memory files (memfd), sealed or recyclable, and their mappings.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{fcntl, FcntlArg};

use super::limits::Charge;
use super::*;

static LIVE_SEGMENTS: AtomicU64 = AtomicU64::new(0);
static LIVE_SEGMENT_BYTES: AtomicU64 = AtomicU64::new(0);
static PEAK_SEGMENT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Shared segments mapped in this process right now: (count, bytes, peak bytes since start).
pub(crate) fn segment_stats() -> (u64, u64, u64) {
    (
        LIVE_SEGMENTS.load(Ordering::Relaxed),
        LIVE_SEGMENT_BYTES.load(Ordering::Relaxed),
        PEAK_SEGMENT_BYTES.load(Ordering::Relaxed),
    )
}

/// Resets the peak of [`segment_stats`] to the current value.
pub(crate) fn reset_segment_peak() {
    PEAK_SEGMENT_BYTES.store(
        LIVE_SEGMENT_BYTES.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
}

fn count_segment(bytes: u64) {
    LIVE_SEGMENTS.fetch_add(1, Ordering::Relaxed);
    let now = LIVE_SEGMENT_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK_SEGMENT_BYTES.fetch_max(now, Ordering::Relaxed);
}

/// A new sealable memory file of `len` bytes (at least 1), zero-filled and mapped read-write in
/// this process only.
fn writable_memfd(len: usize) -> io::Result<(memmap2::MmapMut, OwnedFd, Charge)> {
    let charge = Charge::new(len.max(1).next_multiple_of(4096) as u64)?;
    let fd = nix::sys::memfd::memfd_create(
        c"forkgraph-segment",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(errno)?;
    let file = std::fs::File::from(fd);
    file.set_len(len.max(1) as u64)?;
    // SAFETY: the memfd was just created and is known only to this process: nothing else can
    // truncate or write it while this mapping lives (its producer is its only writer).
    let map = unsafe { memmap2::MmapOptions::new().len(len.max(1)).map_mut(&file)? };
    // A process forked meanwhile (by a task, or by a parent that starts processes from another
    // thread) must not inherit a writable view: sealing (F_SEAL_WRITE) fails with EBUSY while
    // any writable mapping exists, and a recycled segment must have no writer but this one.
    let _ = map.advise(memmap2::Advice::DontFork);
    Ok((map, OwnedFd::from(file), charge))
}

/// How many times sealing is tried again after EBUSY (waiting 20, 40, 80, 160 ms between).
const SEAL_RETRIES: u32 = 4;

/// A shared segment being written: an anonymous memory file (memfd) mapped read-write in its
/// producer only. Nobody else has it until [`SegmentWriter::seal`].
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    map: memmap2::MmapMut,
    fd: OwnedFd,
    charge: Charge,
}

impl SegmentWriter {
    /// A zero-filled segment of `len` bytes (at least 1).
    ///
    /// # Errors
    /// When memfd_create, ftruncate or mmap fail (fd or memory limits).
    pub(crate) fn new(len: usize) -> io::Result<SegmentWriter> {
        let (map, fd, charge) = writable_memfd(len)?;
        Ok(SegmentWriter { map, fd, charge })
    }

    /// The bytes to fill.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// The bytes written so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Unmaps the writable view and seals the file against every write, resize and further
    /// sealing (F_SEAL_WRITE | SHRINK | GROW | SEAL): from now on no process, this one included,
    /// can change it, whatever fds or /proc paths it holds. Returns the read-only segment.
    ///
    /// # Errors
    /// When sealing or mapping fails.
    pub(crate) fn seal(self) -> io::Result<Segment> {
        let SegmentWriter { map, fd, charge } = self;
        drop(map); // F_SEAL_WRITE fails while a writable shared mapping exists.
        use nix::fcntl::SealFlag;
        let seals = SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_SEAL;
        // EBUSY: a writable mapping or a page reference the kernel still counts as pending I/O
        // (it waits ~150 ms for those itself). Seen once in a few runs of the spill example,
        // with no other mapping of the file: tried again a few times, then reported.
        let mut attempt = 0;
        loop {
            match fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)) {
                Ok(_) => break,
                Err(nix::errno::Errno::EBUSY) if attempt < SEAL_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10 << attempt));
                }
                Err(e) => return Err(errno(e)),
            }
        }
        let mut seg = Segment::from_fd(fd)?;
        seg._charge = Some(charge);
        Ok(seg)
    }
}

/// A sealed shared segment mapped read-only. Every process that has it sees the same bytes and
/// none can change them (the kernel refuses writes, writable mappings and resizing).
#[derive(Debug)]
pub struct Segment {
    map: std::sync::Arc<memmap2::Mmap>,
    fd: OwnedFd,
    /// Bytes in use (a recycled segment may be larger than its content).
    len: usize,
    /// Whether its producer may rewrite it once every mapping handed out is gone (sealed
    /// FUTURE_WRITE rather than WRITE): see [`RecyclableWriter`].
    recyclable: bool,
    /// Inode of the memory file: identifies the segment across processes and fds.
    ino: u64,
    /// Called with the inode when a tracked segment is dropped (see `segments::ledger`).
    on_drop: Option<fn(u64)>,
    /// Held by the process that created it, against its memory limit.
    _charge: Option<Charge>,
}

impl Segment {
    /// Maps a segment received from another process, after checking that it is sealed
    /// (memmap2's `map_if_safe` refuses a file that could still change).
    ///
    /// # Errors
    /// When the fd is not a sealed memory file, or mmap fails.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Segment> {
        let map = memmap2::MmapOptions::new().map_if_safe(&fd).map_err(|e| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "unsealed or unmappable segment refused: {}",
                    io::Error::from(e)
                ),
            )
        })?;
        count_segment(map.len() as u64);
        let len = map.len();
        let ino = inode(fd.as_fd())?;
        Ok(Segment {
            map: std::sync::Arc::new(map),
            fd,
            len,
            recyclable: false,
            ino,
            on_drop: None,
            _charge: None,
        })
    }

    /// Maps a recyclable segment received from another process: sealed against resizing and
    /// against every new write or writable mapping (F_SEAL_FUTURE_WRITE); only its producer's
    /// own mapping, made before the seal, can still write.
    ///
    /// # Errors
    /// When the fd is not such a memory file, is shorter than `len`, or mmap fails.
    pub(crate) fn from_recyclable_fd(fd: OwnedFd, len: usize) -> io::Result<Segment> {
        Segment::from_recyclable_fd_cached(fd, len, &mut MapCache::default())
    }

    /// As [`Segment::from_recyclable_fd`], reusing a mapping of the same memory file from
    /// `cache` when there is one: a recycled segment's pages are then already in this process's
    /// page tables, and reading it costs no faults.
    ///
    /// # Errors
    /// As [`Segment::from_recyclable_fd`].
    pub(crate) fn from_recyclable_fd_cached(
        fd: OwnedFd,
        len: usize,
        cache: &mut MapCache,
    ) -> io::Result<Segment> {
        use nix::fcntl::SealFlag;
        let seals = SealFlag::from_bits_truncate(
            fcntl(fd.as_fd(), FcntlArg::F_GET_SEALS).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("not a sealable memory file: {e}"),
                )
            })?,
        );
        let write = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_FUTURE_WRITE;
        if !seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW)
            || !seals.intersects(write)
        {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("unsealed segment refused (seals {seals:?})"),
            ));
        }
        let size = std::fs::File::from(fd.try_clone()?).metadata()?.len() as usize;
        if size < len || len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment of {size} bytes cannot hold {len}"),
            ));
        }
        let ino = inode(fd.as_fd())?;
        let map = match cache.get(ino, size) {
            Some(m) => m,
            None => {
                // SAFETY: the file cannot shrink (F_SEAL_SHRINK), so the mapping never faults
                // past its end; no process can write it through a new fd or mapping
                // (F_SEAL_FUTURE_WRITE or F_SEAL_WRITE). Its producer's own writable mapping
                // rewrites it only after the parent, through which every copy of this segment
                // passes, has seen every mapping it handed out dropped (the recycling protocol
                // in `segments`), so the bytes do not change while a `&[u8]` of it is in use.
                let m =
                    std::sync::Arc::new(unsafe { memmap2::MmapOptions::new().len(size).map(&fd)? });
                cache.put(ino, m.clone());
                m
            }
        };
        count_segment(size as u64);
        Ok(Segment {
            map,
            fd,
            len,
            recyclable: true,
            ino,
            on_drop: None,
            _charge: None,
        })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map[..self.len]
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes (never, for a mapped segment).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether its producer recycles it (reuses its memory once nobody maps it any more).
    pub fn recyclable(&self) -> bool {
        self.recyclable
    }

    /// Inode of the memory file.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Calls `f(inode)` when this mapping is dropped.
    pub(crate) fn on_drop(&mut self, f: fn(u64)) {
        self.on_drop = Some(f);
    }

    /// The fd, to pass the segment on.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Unmaps the segment and keeps only (a duplicate of) its fd, to send it away.
    ///
    /// # Errors
    /// When the fd cannot be duplicated (fd limit).
    pub(crate) fn into_fd(self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        LIVE_SEGMENTS.fetch_sub(1, Ordering::Relaxed);
        LIVE_SEGMENT_BYTES.fetch_sub(self.map.len() as u64, Ordering::Relaxed);
        if let Some(f) = self.on_drop {
            f(self.ino);
        }
    }
}

/// Read-only mappings of recyclable segments kept between uses, by inode (at most
/// `recycler::cache_bytes()`; mappings no segment uses are dropped first).
#[derive(Debug, Default)]
pub(crate) struct MapCache {
    maps: Vec<(u64, std::sync::Arc<memmap2::Mmap>)>,
}

impl MapCache {
    fn get(&mut self, ino: u64, size: usize) -> Option<std::sync::Arc<memmap2::Mmap>> {
        let i = self
            .maps
            .iter()
            .position(|(n, m)| *n == ino && m.len() == size)?;
        // Most recently used last.
        let e = self.maps.remove(i);
        let m = e.1.clone();
        self.maps.push(e);
        Some(m)
    }

    fn put(&mut self, ino: u64, m: std::sync::Arc<memmap2::Mmap>) {
        self.maps.retain(|(n, _)| *n != ino);
        self.maps.push((ino, m));
        let mut total: usize = self.maps.iter().map(|(_, m)| m.len()).sum();
        let mut i = 0;
        let max = crate::segments::recycler::cache_bytes();
        while total > max && i < self.maps.len() {
            if std::sync::Arc::strong_count(&self.maps[i].1) == 1 {
                total -= self.maps[i].1.len();
                self.maps.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    nix::sys::stat::fstat(fd).map(|st| st.st_ino).map_err(errno)
}

/// A segment its producer fills, sends, and fills again once it is free: a memory file mapped
/// writable here only, sealed against resizing and against every *new* write or writable
/// mapping (F_SEAL_FUTURE_WRITE). Readers elsewhere map it read-only; rewriting memory that
/// stays mapped runs at memory speed, where a fresh file costs a page fault per 4 KiB.
///
/// While it is published ([`RecyclableWriter::publish`] until [`RecyclableWriter::reclaim`]),
/// the producer's own mapping is inaccessible (`PROT_NONE`): a wild write by a later task in
/// the producer faults instead of changing bytes that readers hold, and `/proc/<pid>/mem` cannot
/// write through it either (the kernel refuses forced writes to shared mappings without write
/// permission). Code in the producer that calls `mprotect` itself can still undo that: this is
/// what recycling trusts; pools for untrusted tasks turn recycling off.
#[derive(Debug)]
pub(crate) struct RecyclableWriter {
    map: memmap2::MmapMut,
    fd: OwnedFd,
    ino: u64,
    published: bool,
    _charge: Charge,
}

impl RecyclableWriter {
    /// A new segment of `cap` bytes (at least 1).
    ///
    /// # Errors
    /// When memfd_create, ftruncate, mmap or sealing fail.
    pub(crate) fn new(cap: usize) -> io::Result<RecyclableWriter> {
        use nix::fcntl::SealFlag;
        let (map, fd, charge) = writable_memfd(cap)?;
        // From here on this mapping is the only way to write it.
        fcntl(
            fd.as_fd(),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_FUTURE_WRITE,
            ),
        )
        .map_err(errno)?;
        let ino = inode(fd.as_fd())?;
        Ok(RecyclableWriter {
            map,
            fd,
            ino,
            published: false,
            _charge: charge,
        })
    }

    /// Makes the mapping inaccessible while readers hold the segment.
    ///
    /// # Errors
    /// When mprotect fails; the segment must then not be published.
    pub(crate) fn publish(&mut self) -> io::Result<()> {
        self.protect(nix::sys::mman::ProtFlags::PROT_NONE)?;
        self.published = true;
        Ok(())
    }

    /// Makes the mapping writable again, once no reader holds the segment.
    ///
    /// # Errors
    /// When mprotect fails; the segment must then not be reused.
    pub(crate) fn reclaim(&mut self) -> io::Result<()> {
        use nix::sys::mman::ProtFlags;
        self.protect(ProtFlags::PROT_READ | ProtFlags::PROT_WRITE)?;
        self.published = false;
        Ok(())
    }

    fn protect(&mut self, prot: nix::sys::mman::ProtFlags) -> io::Result<()> {
        let ptr = std::ptr::NonNull::new(self.map.as_mut_ptr().cast::<libc::c_void>())
            .ok_or_else(|| io::Error::other("null mapping"))?;
        // SAFETY: the range is exactly this writer's own mapping, which lives as long as
        // `self`; no reference into it is alive while it is PROT_NONE (`bytes_mut` asserts the
        // writer is not published, and it takes `&mut self`).
        unsafe { nix::sys::mman::mprotect(ptr, self.map.len(), prot) }.map_err(errno)
    }

    /// Capacity in bytes.
    pub(crate) fn cap(&self) -> usize {
        self.map.len()
    }

    /// The bytes to fill.
    ///
    /// # Panics
    /// While published (the memory is inaccessible then).
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        assert!(!self.published, "a published segment is not writable");
        &mut self.map
    }

    /// The fd, to send the segment.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Inode of the memory file.
    pub(crate) fn ino(&self) -> u64 {
        self.ino
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second writable mapping of the file makes sealing fail for as long as it lives: after
    /// the retries the error comes back (EBUSY); it neither panics nor waits forever.
    #[test]
    fn sealing_while_another_writer_maps_the_file_is_an_error() {
        let w = SegmentWriter::new(4096).unwrap();
        let file = std::fs::File::from(w.fd.try_clone().unwrap());
        // SAFETY: this test's own memfd; nothing writes it through either mapping.
        let other = unsafe { memmap2::MmapOptions::new().len(4096).map_mut(&file) }.unwrap();
        let err = w.seal().unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(nix::errno::Errno::EBUSY as i32),
            "{err}"
        );
        drop(other);
        // Without one it seals.
        let w = SegmentWriter::new(4096).unwrap();
        assert!(w.seal().is_ok());
    }
}
