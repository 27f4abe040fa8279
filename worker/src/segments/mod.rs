//! How large arrays cross process boundaries: as sealed shared segments passed by fd.
//!
//! Three parts:
//! - `codec`: the hooks `Buffer`'s serde implementation calls. While a message is encoded
//!   inside `codec::encode_with_fds`, every array whose buffer is already a segment is written
//!   as a reference (its fd is duplicated and attached to the message), and every heap array of
//!   at least `threshold` bytes is first copied into a segment. While a message is decoded
//!   inside `codec::decode_with_fds`, references are mapped read-only. Which side decodes (the
//!   parent, from which worker, or a worker) is said explicitly (`Side`). Outside these two,
//!   arrays serialize inline.
//! - [`ledger`]: the parent's count of the recyclable segments it maps, the pins, and the
//!   segments it has found free.
//! - `recycler`: a worker's recyclable segments, free and in use, its mappings of recycled
//!   inputs, and its count of the recyclable inputs it still maps.
//! - [`landing`]: buffers a parent receives bytes into (an MPI rank), handed to its workers as
//!   recyclable segments it produced, and reused once nobody maps them.
//!
//! # Who may write a recyclable segment, and when
//!
//! A worker copies its heap results into recyclable segments (sealed SHRINK | GROW |
//! FUTURE_WRITE: no new fd, `/proc` path or mapping can write them) that it keeps. Only the
//! producer's own mapping, made before the seal, can write, and it does so only while the
//! segment is free:
//! 1. *Writing*: the producer fills the segment, then makes its mapping `PROT_NONE` and sends it
//!    (published). From here until step 4 nothing in the producer can read or write it.
//! 2. *Held*: every copy of the segment goes to the parent first, and the parent hands it on to
//!    consumers only as inputs of units it keeps until they are done. The parent counts its
//!    mappings of each segment by inode, across fds and pass-through results ([`ledger`]).
//! 3. *Kept*: a worker drops a unit's inputs before reporting the unit done; if a task kept a
//!    clone of an input (a static, another thread), the worker still maps it and says so in the
//!    unit's result (`recycler::retained`); the parent then pins that segment until that
//!    worker is gone, so it is never freed while someone reads it.
//! 4. *Free*: when the parent's count drops to zero (and no pin holds it), nothing maps it for
//!    use anywhere: the parent tells the producer (a `Free` message, [`ledger::take_freed`]),
//!    which makes its mapping writable again and reuses it for a later result
//!    (`recycler::free`).
//!
//! Rewriting memory that stays mapped runs at memory speed; a fresh memory file costs a page
//! fault per 4 KiB.

pub(crate) mod codec;
pub mod landing;
pub mod ledger;
pub(crate) mod recycler;

pub use crate::sys::memfd::Segment;
pub(crate) use codec::{decode_with_fds, encode_with_fds, Side};

use crate::sys;

/// Shared segments mapped in this process right now: (count, bytes, peak bytes since start or
/// the last [`reset_peak`]). Each holds an fd.
pub fn stats() -> (u64, u64, u64) {
    sys::segment_stats()
}

/// Resets the peak of [`stats`] to the current value.
pub fn reset_peak() {
    sys::reset_segment_peak()
}
