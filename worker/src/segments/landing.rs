//! Landing buffers: memory a parent process receives bytes into (from the network, e.g. an
//! MPI rank receiving an array from another rank) that then becomes a recyclable segment its
//! pool's workers map, and is reused for a later receive once nobody maps it.
//!
//! The parent is the segment's producer, under the same rules as a worker's recyclable
//! results (see the [module doc](super)): the writable mapping is made inaccessible before the
//! segment is handed out; the parent's [`ledger`] counts its read-only mappings of it (with
//! this process's pid as the producer, so no pool takes it for one of its workers); a worker
//! that keeps an input pins it there; once the count drops to zero the buffer is made writable
//! again and kept (at most `recycler::cache_bytes()` of free buffers) for the next receive,
//! whose pages are then already faulted in.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use super::{ledger, recycler};
use crate::sys::{RecyclableWriter, Segment};

/// This process's landing buffers handed out, and free ones.
#[derive(Default)]
struct Landings {
    in_use: HashMap<u64, RecyclableWriter>,
    free: Vec<RecyclableWriter>,
    free_bytes: usize,
}

static LANDINGS: Mutex<Option<Landings>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Landings) -> R) -> R {
    let mut l = LANDINGS.lock().unwrap_or_else(|e| e.into_inner());
    f(l.get_or_insert_with(Landings::default))
}

/// Pid under which this process's landing buffers are in the ledger.
fn me() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(i32::MAX)
}

/// Buffers nobody maps any more become free (made writable again); free ones beyond the cache
/// size are dropped.
fn reclaim(l: &mut Landings) {
    let me = me();
    for (_, ino) in ledger::take_freed(|pid| pid == me) {
        if let Some(mut w) = l.in_use.remove(&ino) {
            // One that cannot be made writable again is dropped, not reused.
            if w.reclaim().is_ok() {
                l.free_bytes += w.cap();
                l.free.push(w);
            }
        }
    }
    let max = recycler::cache_bytes();
    while l.free_bytes > max && !l.free.is_empty() {
        let w = l.free.remove(0);
        l.free_bytes -= w.cap();
    }
}

/// A buffer of `len` bytes to receive into (its bytes are whatever the last use left).
#[derive(Debug)]
pub struct Landing {
    w: RecyclableWriter,
    len: usize,
}

impl Landing {
    /// A free buffer of at least `len` bytes and not much more, or a new one.
    ///
    /// # Errors
    /// When a new memory file cannot be made (memory limit, fd limit).
    pub fn new(len: usize) -> io::Result<Landing> {
        let reused = with(|l| {
            reclaim(l);
            let fit = l
                .free
                .iter()
                .enumerate()
                .filter(|(_, w)| w.cap() >= len && w.cap() <= len.saturating_mul(2))
                .min_by_key(|(_, w)| w.cap())
                .map(|(i, _)| i)?;
            let w = l.free.swap_remove(fit);
            l.free_bytes -= w.cap();
            Some(w)
        });
        let w = match reused {
            Some(w) => w,
            None => {
                let cap = len.max(1).div_ceil(4096) * 4096;
                RecyclableWriter::new(cap).or_else(|_| {
                    // Free buffers count against a memory limit: give them back, try again.
                    with(|l| {
                        l.free.clear();
                        l.free_bytes = 0;
                    });
                    RecyclableWriter::new(cap)
                })?
            }
        };
        Ok(Landing { w, len })
    }

    /// The bytes to fill.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.w.bytes_mut()[..len]
    }

    /// The filled buffer as a read-only recyclable segment (passed to workers as it is); the
    /// buffer is reused once every mapping of it is gone.
    ///
    /// # Errors
    /// When the fd cannot be duplicated or mapped, or the buffer cannot be protected.
    pub fn finish(mut self) -> io::Result<Segment> {
        let fd = self.w.fd().try_clone_to_owned()?;
        let mut seg = Segment::from_recyclable_fd(fd, self.len)?;
        // Until every mapping is gone, nothing in this process may write it.
        self.w.publish()?;
        ledger::track(seg.ino(), me());
        seg.on_drop(ledger::untrack);
        with(|l| l.in_use.insert(self.w.ino(), self.w));
        Ok(seg)
    }
}

/// Free landing buffers kept for reuse: (count, bytes).
pub fn free() -> (usize, usize) {
    with(|l| {
        reclaim(l);
        (l.free.len(), l.free_bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_landing_is_reused_once_its_segment_is_gone() {
        let mut a = Landing::new(3 * 4096).unwrap();
        a.bytes_mut().fill(7);
        let seg = a.finish().unwrap();
        assert_eq!(seg.bytes(), &[7u8; 3 * 4096][..]);
        let ino = seg.ino();
        // Still mapped: a new landing is another memory file.
        let b = Landing::new(3 * 4096).unwrap();
        assert_ne!(b.w.ino(), ino);
        drop(b);
        let held = seg;
        let mut c = Landing::new(3 * 4096).unwrap();
        assert_ne!(c.w.ino(), ino, "reused while mapped");
        c.bytes_mut().fill(1);
        drop(c);
        drop(held);
        // Gone: the next landing of about that size is the same memory, writable again.
        let mut d = Landing::new(3 * 4096 - 100).unwrap();
        assert_eq!(d.w.ino(), ino);
        d.bytes_mut().fill(9);
        let seg = d.finish().unwrap();
        assert_eq!(seg.len(), 3 * 4096 - 100);
        assert!(seg.bytes().iter().all(|&b| b == 9));
    }
}
