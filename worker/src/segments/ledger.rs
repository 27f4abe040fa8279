//! The parent's ledger of recyclable segments: how many mappings of each it holds (plus pins),
//! who produced it, and which it has found free. Process-wide, because a segment's mapping may
//! be dropped in any thread (a result the caller holds).
//!
//! For the pool's runner only: a wrong [`unpin`] makes a producer rewrite a segment that is
//! still read. Hidden from the docs for that reason.

use std::collections::HashMap;
use std::sync::Mutex;

/// The ledger.
#[derive(Debug, Default)]
struct Ledger {
    /// Inode -> (mappings alive here plus pins, producing worker's pid).
    tracked: HashMap<u64, (u32, i32)>,
    /// (Producer pid, inode) of segments nobody uses any more.
    freed: Vec<(i32, u64)>,
}

impl Ledger {
    fn untrack(&mut self, ino: u64) {
        if let Some(e) = self.tracked.get_mut(&ino) {
            e.0 -= 1;
            if e.0 == 0 {
                let producer = e.1;
                self.tracked.remove(&ino);
                self.freed.push((producer, ino));
            }
        }
    }
}

static LEDGER: Mutex<Option<Ledger>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Ledger) -> R) -> R {
    let mut l = LEDGER.lock().unwrap_or_else(|e| e.into_inner());
    f(l.get_or_insert_with(Ledger::default))
}

/// A mapping of a recyclable segment made by worker `peer` now exists here.
pub(crate) fn track(ino: u64, peer: i32) {
    with(|l| l.tracked.entry(ino).or_insert((0, peer)).0 += 1);
}

/// A mapping counted by [`track`] (or a [`pin`]) is gone.
pub(crate) fn untrack(ino: u64) {
    with(|l| l.untrack(ino));
}

/// Segments that are no longer mapped here, as (producer pid, inode), for the producers `mine`
/// accepts (other pools' entries stay for them).
#[doc(hidden)]
pub fn take_freed(mine: impl Fn(i32) -> bool) -> Vec<(i32, u64)> {
    with(|l| {
        if l.freed.is_empty() {
            return Vec::new();
        }
        let (taken, rest): (Vec<_>, Vec<_>) = l.freed.drain(..).partition(|(p, _)| mine(*p));
        l.freed = rest;
        taken
    })
}

/// A worker still maps this segment after its unit (its task kept a clone of the input): keep
/// it from being recycled until [`unpin`] (when that worker is gone). Returns whether it was
/// pinned (false: not a segment this process tracks; do not unpin it).
#[doc(hidden)]
pub fn pin(ino: u64) -> bool {
    with(|l| match l.tracked.get_mut(&ino) {
        Some(e) => {
            e.0 += 1;
            true
        }
        None => false,
    })
}

/// Undoes a [`pin`].
#[doc(hidden)]
pub fn unpin(ino: u64) {
    untrack(ino);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_is_free_once_every_mapping_and_pin_is_gone() {
        let (a, b) = (u64::MAX - 1, u64::MAX - 2);
        track(a, 7);
        track(a, 7);
        track(b, 8);
        assert!(pin(a));
        assert!(!pin(u64::MAX - 3), "untracked segments are not pinned");
        untrack(a);
        untrack(a);
        assert!(take_freed(|p| p == 7).is_empty(), "still pinned");
        unpin(a);
        untrack(b);
        // Each pool takes only its own producers' segments.
        assert_eq!(take_freed(|p| p == 7), vec![(7, a)]);
        assert_eq!(take_freed(|p| p == 8), vec![(8, b)]);
        // (Only these producers: other tests of this process have entries of their own.)
        assert!(take_freed(|p| p == 7 || p == 8).is_empty());
    }
}
