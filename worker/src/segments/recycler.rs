//! A worker's side of recycling: the recyclable segments it produced (published, or free for
//! reuse), its mappings of recycled inputs, and how often it maps each recyclable input now.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::sys::{MapCache, RecyclableWriter};

/// Most bytes of free segments a worker keeps for reuse, and of cached mappings of recycled
/// inputs (each), unless [`set_cache_bytes`] said otherwise.
const DEFAULT_CACHE_BYTES: usize = 256 << 20;

static CACHE_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_CACHE_BYTES);

/// Sets the most bytes of free segments, and of cached input mappings, this worker keeps
/// (`None`: the default, 256 MiB each).
pub(crate) fn set_cache_bytes(bytes: Option<u64>) {
    let b = bytes.map_or(DEFAULT_CACHE_BYTES, |b| {
        usize::try_from(b).unwrap_or(usize::MAX)
    });
    CACHE_BYTES.store(b, Ordering::Relaxed);
}

/// The most bytes of free segments (and of cached input mappings) kept.
pub(crate) fn cache_bytes() -> usize {
    CACHE_BYTES.load(Ordering::Relaxed)
}

/// A worker's recyclable segments: those it sent and not yet freed, and free ones.
#[derive(Default)]
struct Recycler {
    in_use: HashMap<u64, RecyclableWriter>,
    free: Vec<RecyclableWriter>,
    free_bytes: usize,
}

thread_local! {
    static RECYCLER: RefCell<Recycler> = RefCell::new(Recycler::default());
    /// Mappings of recycled inputs kept for reuse.
    static MAPS: RefCell<MapCache> = RefCell::new(MapCache::default());
}

/// Inode -> live `Segment`s of recyclable inputs in this process (any thread).
static LIVE: Mutex<Option<HashMap<u64, u32>>> = Mutex::new(None);

/// A recyclable segment of at least `len` bytes: a free one that is not much larger, or new.
pub(crate) fn writer(len: usize) -> Option<RecyclableWriter> {
    RECYCLER.with(|r| {
        let mut r = r.borrow_mut();
        let fit = r
            .free
            .iter()
            .enumerate()
            .filter(|(_, w)| w.cap() >= len && w.cap() <= len.saturating_mul(2))
            .min_by_key(|(_, w)| w.cap())
            .map(|(i, _)| i);
        let cap = len.div_ceil(4096) * 4096;
        match fit {
            Some(i) => {
                let w = r.free.swap_remove(i);
                r.free_bytes -= w.cap();
                Some(w)
            }
            None => RecyclableWriter::new(cap).ok().or_else(|| {
                // Free segments count against a memory limit: give them back and try again.
                r.free.clear();
                r.free_bytes = 0;
                RecyclableWriter::new(cap).ok()
            }),
        }
    })
}

/// A filled writer was sent: it is in use until the parent frees it.
pub(crate) fn published(w: RecyclableWriter) {
    RECYCLER.with(|r| r.borrow_mut().in_use.insert(w.ino(), w));
}

/// The parent reports these segments free; their memory serves later results.
pub(crate) fn free(inodes: &[u64]) {
    RECYCLER.with(|r| {
        let mut r = r.borrow_mut();
        for ino in inodes {
            if let Some(mut w) = r.in_use.remove(ino) {
                // A segment that cannot be made writable again is dropped, not reused.
                if w.reclaim().is_ok() {
                    r.free_bytes += w.cap();
                    r.free.push(w);
                }
            }
        }
        let max = cache_bytes();
        while r.free_bytes > max && !r.free.is_empty() {
            let w = r.free.remove(0);
            r.free_bytes -= w.cap();
        }
    });
}

/// Runs `f` with this worker's cache of mappings of recycled inputs.
pub(crate) fn with_maps<R>(f: impl FnOnce(&mut MapCache) -> R) -> R {
    MAPS.with(|c| f(&mut c.borrow_mut()))
}

/// A mapping of a recyclable input now exists in this worker.
pub(crate) fn input_mapped(ino: u64) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    *live
        .get_or_insert_with(HashMap::new)
        .entry(ino)
        .or_insert(0) += 1;
}

/// A mapping counted by [`input_mapped`] is gone.
pub(crate) fn input_released(ino: u64) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(map) = live.as_mut() {
        if let Some(n) = map.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ino);
            }
        }
    }
}

/// The inodes among `inodes` that this process still maps more often than `expected` says
/// (e.g. a task kept a clone of an input).
pub(crate) fn retained(inodes: &[u64], expected: &HashMap<u64, u32>) -> Vec<u64> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(live) = live.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<u64> = inodes
        .iter()
        .copied()
        .filter(|ino| live.get(ino).copied().unwrap_or(0) > expected.get(ino).copied().unwrap_or(0))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
