//! Working arrays kept between calls on one thread.
//!
//! The sync scheduler's straight run (`sync::run_in_order`) fills arrays of `n` entries for a
//! plan of `n` nodes. Freed at the end of the call, that memory may go back to the system (glibc
//! trims the top of its heap once more than about twice its largest recent allocation is free
//! there), and touching it again in the next call costs a page fault per 4 KiB: about 2.5 µs
//! each on the project's 2-core VM (`perf stat` of 100 gets of Dask's shape A in a loop: 568
//! faults and 1.4 ms of system time per get, a third of its time). So arrays are handed back
//! here when a call is done and the next call on the same thread takes them again: at most
//! [`MAX_KEPT_BYTES`] per thread (larger graphs allocate as before), at most [`MAX_KEPT`]
//! arrays of each element type.
//!
//! [`Kept`] is a `Vec` that goes back to its thread's pool when dropped.

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

/// The most bytes of arrays one thread keeps between calls.
pub(crate) const MAX_KEPT_BYTES: usize = 16 << 20;

/// The most arrays of one element type one thread keeps.
pub(crate) const MAX_KEPT: usize = 24;

thread_local! {
    /// Bytes of capacity kept by this thread, over every element type.
    static KEPT_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// An element type whose arrays are kept between calls.
pub(crate) trait Element: Sized + 'static {
    /// The thread's pool of arrays of this type (empty, with capacity).
    fn pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>>;
}

macro_rules! elements {
    ($($t:ty),* $(,)?) => {$(
        impl Element for $t {
            fn pool() -> &'static LocalKey<RefCell<Vec<Vec<$t>>>> {
                thread_local! {
                    static POOL: RefCell<Vec<Vec<$t>>> = const { RefCell::new(Vec::new()) };
                }
                &POOL
            }
        }
    )*};
}

elements!(u32, u8);

/// A vector of at least `capacity`, empty: one kept by this thread if one is large enough (the
/// smallest such), else a new one.
pub(crate) fn take<T: Element>(capacity: usize) -> Kept<T> {
    let kept = T::pool()
        .try_with(|p| {
            let mut p = p.try_borrow_mut().ok()?;
            let best = p
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= capacity)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i)?;
            let v = p.swap_remove(best);
            let _ = KEPT_BYTES.try_with(|b| b.set(b.get().saturating_sub(bytes(&v))));
            Some(v)
        })
        .ok()
        .flatten();
    Kept(kept.unwrap_or_else(|| Vec::with_capacity(capacity)))
}

/// A vector of `len` copies of `value`.
pub(crate) fn filled<T: Element + Clone>(len: usize, value: T) -> Kept<T> {
    let mut v = take(len);
    v.resize(len, value);
    v
}

/// `items` collected into a kept vector sized once.
pub(crate) fn collect<T: Element>(len: usize, items: impl IntoIterator<Item = T>) -> Kept<T> {
    let mut v = take(len);
    v.extend(items);
    v
}

fn bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Gives a vector back to this thread's pool (emptied), unless the pool is full.
pub(crate) fn give<T: Element>(mut v: Vec<T>) {
    if v.capacity() == 0 {
        return;
    }
    v.clear();
    let b = bytes(&v);
    let _ = T::pool().try_with(|p| {
        let Ok(mut p) = p.try_borrow_mut() else {
            return;
        };
        let Ok(total) = KEPT_BYTES.try_with(Cell::get) else {
            return;
        };
        if b > MAX_KEPT_BYTES {
            return;
        }
        // When full, smaller arrays make room for a larger one (a large array serves small
        // calls too; kept small ones would leave a thread whose graphs grew with no reuse).
        let mut total = total;
        while p.len() >= MAX_KEPT || total + b > MAX_KEPT_BYTES {
            let Some((i, _)) = p
                .iter()
                .enumerate()
                .filter(|(_, k)| k.capacity() < v.capacity())
                .min_by_key(|(_, k)| k.capacity())
            else {
                break;
            };
            total -= bytes(&p.swap_remove(i));
        }
        if p.len() < MAX_KEPT && total + b <= MAX_KEPT_BYTES {
            p.push(std::mem::take(&mut v));
            total += b;
        }
        let _ = KEPT_BYTES.try_with(|k| k.set(total));
    });
}

/// A `Vec` that goes back to its thread's pool when dropped (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Kept<T: Element>(Vec<T>);

impl<T: Element> Deref for Kept<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T: Element> DerefMut for Kept<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

impl<T: Element> Drop for Kept<T> {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept_bytes() -> usize {
        KEPT_BYTES.with(Cell::get)
    }

    #[test]
    fn an_array_is_reused_by_the_next_call_on_the_thread() {
        let v = filled(1000, 7u32);
        let p = v.as_ptr();
        drop(v);
        let w = take::<u32>(500);
        assert_eq!(w.as_ptr(), p, "the kept array is taken again");
        assert!(w.is_empty());
        // The smallest one large enough is taken.
        let big = take::<u32>(100_000);
        let small = take::<u32>(10);
        let (pb, ps) = (big.as_ptr(), small.as_ptr());
        drop((big, small));
        assert_eq!(take::<u32>(5).as_ptr(), ps);
        assert_eq!(take::<u32>(50_000).as_ptr(), pb);
    }

    /// A thread whose calls grow (each larger than any kept array) still reuses the arrays of
    /// its latest size once the pool is full, and stays within the bounds.
    #[test]
    fn growing_calls_keep_the_larger_arrays() {
        for size in 1..=3 * MAX_KEPT {
            let a = take::<u32>(size * 100);
            let b = take::<u32>(size * 100);
            drop((a, b));
            assert!(u32::pool().with(|p| p.borrow().len()) <= MAX_KEPT);
            assert!(kept_bytes() <= MAX_KEPT_BYTES);
        }
        let largest = |pool: &'static LocalKey<RefCell<Vec<Vec<u32>>>>| {
            pool.with(|p| p.borrow().iter().map(Vec::capacity).max().unwrap_or(0))
        };
        assert!(
            largest(u32::pool()) >= 3 * MAX_KEPT * 100,
            "the latest size is kept"
        );
        // The byte bound, the same way: arrays of a quarter of it, growing.
        for k in 0..8 {
            drop(take::<u8>(MAX_KEPT_BYTES / 4 + k));
            assert!(kept_bytes() <= MAX_KEPT_BYTES);
        }
        let kept_u8 = u8::pool().with(|p| p.borrow().iter().map(Vec::capacity).max().unwrap_or(0));
        assert!(kept_u8 >= MAX_KEPT_BYTES / 4 + 7, "the latest size is kept");
    }

    #[test]
    fn the_pool_is_bounded() {
        let before = kept_bytes();
        let huge = take::<u8>(MAX_KEPT_BYTES + 1);
        drop(huge);
        assert_eq!(kept_bytes(), before, "an array above the bound is freed");
        let many: Vec<Kept<u8>> = (0..MAX_KEPT + 5).map(|_| take::<u8>(64)).collect();
        drop(many);
        assert!(u8::pool().with(|p| p.borrow().len()) <= MAX_KEPT);
        assert!(kept_bytes() <= MAX_KEPT_BYTES);
        // Taking them back empties the count.
        let mut taken = Vec::new();
        while u8::pool().with(|p| !p.borrow().is_empty()) {
            taken.push(std::mem::take(&mut *take::<u8>(0)));
        }
        let u32_bytes: usize = u32::pool().with(|p| p.borrow().iter().map(bytes).sum());
        assert_eq!(kept_bytes(), u32_bytes);
    }
}
