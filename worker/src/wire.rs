//! How large arrays cross process boundaries: as sealed shared segments passed by fd.
//!
//! While a message is encoded inside [`encode_with_fds`], every array whose buffer is already
//! a [`Segment`] is written as a reference (its fd is duplicated and attached to the message),
//! and every heap array of at least `threshold` bytes is first copied into a segment. While a
//! message is decoded inside [`decode_with_fds`], references are mapped read-only. Outside
//! these two, arrays serialize inline.
//!
//! **Recycling.** A worker copies its heap results into [`RecyclableWriter`]s (sealed
//! SHRINK | GROW | FUTURE_WRITE: nobody can write them but through the worker's own mapping)
//! and keeps them. Every segment a worker sends goes to the parent first, and the parent hands
//! it on to consumers only as inputs of units it keeps until they are done. So the parent
//! counts its mappings of each segment (by inode, across fds and pass-through results): when
//! the count drops to zero nothing maps it for use anywhere, and the parent tells the producer
//! ([`take_freed`], then a `Free` message), which reuses the memory for a later result
//! ([`free_segments`]). A worker drops a unit's inputs before it reports the unit done; if a
//! task kept a clone of an input (in a static, another thread), the worker still maps it and
//! says so in the unit's result ([`retained`]); the parent then pins that segment ([`pin`])
//! until the worker is gone, so it is never rewritten under a reader. Rewriting memory that stays mapped runs at memory speed; a fresh memory
//! file costs a page fault per 4 KiB.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use crate::sys::{MapCache, RecyclableWriter, Segment, SegmentWriter};
use crate::value::{Buffer, Storage};

struct Out {
    fds: Vec<OwnedFd>,
    threshold: Option<usize>,
    recycle: bool,
}

/// A worker's recyclable segments: those it sent and not yet freed, and free ones.
#[derive(Default)]
struct Recycler {
    in_use: HashMap<u64, RecyclableWriter>,
    free: Vec<RecyclableWriter>,
    free_bytes: usize,
}

/// Most bytes of free segments a worker keeps for reuse.
const MAX_FREE_BYTES: usize = 256 << 20;

thread_local! {
    static OUT: RefCell<Option<Out>> = const { RefCell::new(None) };
    static IN: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// While the parent decodes a worker's message: that worker's pid.
    static PEER: Cell<i32> = const { Cell::new(0) };
    static RECYCLER: RefCell<Recycler> = RefCell::new(Recycler::default());
    /// Worker side: mappings of recycled segments kept for reuse.
    static MAPS: RefCell<MapCache> = RefCell::new(MapCache::default());
}

/// Parent side: inode -> (mappings alive here plus pins, producing worker's pid).
static TRACKED: Mutex<Option<HashMap<u64, (u32, i32)>>> = Mutex::new(None);
/// Worker side: inode -> live `Segment`s of recyclable inputs in this process (any thread).
static WORKER_LIVE: Mutex<Option<HashMap<u64, u32>>> = Mutex::new(None);
/// Parent side: (producer pid, inode) of segments nobody uses any more.
static FREED: Mutex<Vec<(i32, u64)>> = Mutex::new(Vec::new());

impl Storage for Segment {
    fn bytes(&self) -> &[u8] {
        Segment::bytes(self)
    }
    fn segment(&self) -> Option<&Segment> {
        Some(self)
    }
}

/// How a buffer is written in a message.
pub(crate) enum Exported {
    /// Its bytes follow.
    Inline,
    /// A sealed segment: the fd at this index.
    Sealed(u32),
    /// A recyclable segment: the fd at this index, and the bytes in use.
    Recyclable(u32, u64),
}

/// Runs `f` (which encodes a message) collecting the fds of the segments it references; heap
/// arrays of at least `threshold` bytes become segments, recyclable ones when `recycle`.
pub fn encode_with_fds<R>(
    threshold: Option<usize>,
    recycle: bool,
    f: impl FnOnce() -> R,
) -> (R, Vec<OwnedFd>) {
    let out = Out {
        fds: Vec::new(),
        threshold,
        recycle,
    };
    let prev = OUT.with(|o| o.borrow_mut().replace(out));
    let r = f();
    let out = OUT.with(|o| std::mem::replace(&mut *o.borrow_mut(), prev));
    (r, out.map(|o| o.fds).unwrap_or_default())
}

/// Runs `f` (which decodes a message) with the fds that came with it; returns the fds `f` did
/// not use (they close when dropped).
pub fn decode_with_fds<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let prev = IN.with(|i| i.borrow_mut().replace(fds.into_iter().map(Some).collect()));
    let r = f();
    let left = IN.with(|i| std::mem::replace(&mut *i.borrow_mut(), prev));
    (r, left.unwrap_or_default().into_iter().flatten().collect())
}

/// Parent side: runs `f` (which decodes messages from worker `pid`) so that the recyclable
/// segments in them are counted and reported free to that worker when no longer mapped here.
pub fn with_peer<R>(pid: i32, f: impl FnOnce() -> R) -> R {
    let prev = PEER.with(|p| p.replace(pid));
    let r = f();
    PEER.with(|p| p.set(prev));
    r
}

/// Parent side: segments that are no longer mapped here, as (producer pid, inode), for the
/// producers `mine` accepts (other pools' entries stay for them).
pub fn take_freed(mine: impl Fn(i32) -> bool) -> Vec<(i32, u64)> {
    let mut all = FREED.lock().unwrap_or_else(|e| e.into_inner());
    if all.is_empty() {
        return Vec::new();
    }
    let (taken, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|(pid, _)| mine(*pid));
    *all = rest;
    taken
}

/// Parent side: a worker still maps this segment after its unit (its task kept a clone of the
/// input): keep it from being recycled until [`unpin`] (when that worker is gone). Returns
/// whether it was pinned (false: not a segment this process tracks; do not unpin it).
pub fn pin(ino: u64) -> bool {
    let mut t = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    match t.as_mut().and_then(|m| m.get_mut(&ino)) {
        Some(e) => {
            e.0 += 1;
            true
        }
        None => false,
    }
}

/// Parent side: undoes a [`pin`].
pub fn unpin(ino: u64) {
    untrack(ino);
}

/// Worker side: the inodes among `inodes` that this process still maps more often than
/// `expected` says (e.g. a task kept a clone of an input).
pub fn retained(inodes: &[u64], expected: &HashMap<u64, u32>) -> Vec<u64> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let live = WORKER_LIVE.lock().unwrap_or_else(|e| e.into_inner());
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

/// The recyclable segments a value refers to, once per reference (arrays, encoded values,
/// inside lists and maps).
pub fn recyclable_inodes(v: &crate::value::Value, out: &mut Vec<u64>) {
    use crate::value::Value;
    let mut push = |b: &Buffer| {
        if let Some(seg) = b.segment() {
            if seg.recyclable() {
                out.push(seg.ino());
            }
        }
    };
    match v {
        Value::Array(a) => push(a.buffer()),
        Value::Encoded(_, b) => push(b),
        Value::List(l) => l.iter().for_each(|x| recyclable_inodes(x, out)),
        Value::Map(m) => m.values().for_each(|x| recyclable_inodes(x, out)),
        _ => {}
    }
}

fn worker_release(ino: u64) {
    let mut live = WORKER_LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(map) = live.as_mut() {
        if let Some(n) = map.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ino);
            }
        }
    }
}

/// Worker side: the parent reports these segments free; their memory serves later results.
pub fn free_segments(inodes: &[u64]) {
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
        while r.free_bytes > MAX_FREE_BYTES && !r.free.is_empty() {
            let w = r.free.remove(0);
            r.free_bytes -= w.cap();
        }
    });
}

fn track(ino: u64, peer: i32) {
    let mut t = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    let e = t
        .get_or_insert_with(HashMap::new)
        .entry(ino)
        .or_insert((0, peer));
    e.0 += 1;
}

fn untrack(ino: u64) {
    let mut t = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(map) = t.as_mut() else { return };
    if let Some(e) = map.get_mut(&ino) {
        e.0 -= 1;
        if e.0 == 0 {
            let producer = e.1;
            map.remove(&ino);
            FREED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((producer, ino));
        }
    }
}

/// A recyclable segment of at least `len` bytes: a free one that is not much larger, or new.
fn recyclable(len: usize) -> Option<RecyclableWriter> {
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

/// Called by `Buffer`'s serializer: how to write `buf`.
pub(crate) fn export(buf: &Buffer) -> Exported {
    OUT.with(|o| {
        let mut o = o.borrow_mut();
        let Some(out) = o.as_mut() else {
            return Exported::Inline;
        };
        if let Some(seg) = buf.segment() {
            let Ok(fd) = seg.fd().try_clone_to_owned() else {
                return Exported::Inline;
            };
            out.fds.push(fd);
            let i = out.fds.len() as u32 - 1;
            return if seg.recyclable() {
                Exported::Recyclable(i, seg.len() as u64)
            } else {
                Exported::Sealed(i)
            };
        }
        let Some(t) = out.threshold else {
            return Exported::Inline;
        };
        let len = buf.len();
        if len < t || len == 0 {
            return Exported::Inline;
        }
        if out.recycle {
            let Some(mut w) = recyclable(len) else {
                return Exported::Inline;
            };
            w.bytes_mut()[..len].copy_from_slice(buf.as_bytes());
            let Ok(fd) = w.fd().try_clone_to_owned() else {
                return Exported::Inline;
            };
            // Until the parent frees it, nothing in this process may write it.
            if w.publish().is_err() {
                return Exported::Inline;
            }
            RECYCLER.with(|r| r.borrow_mut().in_use.insert(w.ino(), w));
            out.fds.push(fd);
            return Exported::Recyclable(out.fds.len() as u32 - 1, len as u64);
        }
        let sealed = SegmentWriter::new(len).and_then(|mut w| {
            w.bytes_mut().copy_from_slice(buf.as_bytes());
            w.seal()?.into_fd()
        });
        match sealed {
            Ok(fd) => {
                out.fds.push(fd);
                Exported::Sealed(out.fds.len() as u32 - 1)
            }
            Err(_) => Exported::Inline,
        }
    })
}

/// Called by `Buffer`'s deserializer for a segment reference (`len` for recyclable ones).
pub(crate) fn import(index: u32, len: Option<u64>) -> Result<Buffer, String> {
    let fd = IN.with(|i| {
        let mut i = i.borrow_mut();
        let fds = i
            .as_mut()
            .ok_or("a segment reference outside a framed message")?;
        fds.get_mut(index as usize)
            .and_then(Option::take)
            .ok_or_else(|| format!("segment reference {index} has no fd"))
    })?;
    let peer = PEER.with(Cell::get);
    let mut seg = match len {
        // A worker reads its inputs: keep the mapping for when the segment comes back recycled.
        Some(len) if peer == 0 => {
            MAPS.with(|c| Segment::from_recyclable_fd_cached(fd, len as usize, &mut c.borrow_mut()))
        }
        Some(len) => Segment::from_recyclable_fd(fd, len as usize),
        None => Segment::from_fd(fd),
    }
    .map_err(|e| e.to_string())?;
    if seg.recyclable() {
        if peer > 0 {
            track(seg.ino(), peer);
            seg.on_drop(untrack);
        } else {
            let mut live = WORKER_LIVE.lock().unwrap_or_else(|e| e.into_inner());
            *live
                .get_or_insert_with(HashMap::new)
                .entry(seg.ino())
                .or_insert(0) += 1;
            seg.on_drop(worker_release);
        }
    }
    Ok(Buffer::from_storage(Arc::new(seg)))
}
