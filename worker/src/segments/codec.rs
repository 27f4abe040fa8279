//! The hooks `Buffer`'s serde implementation calls to write an array as a segment reference
//! and to map one back (see the [module doc](super)).

use std::cell::RefCell;
use std::os::fd::OwnedFd;

use super::{ledger, recycler};
use crate::sys::{Segment, SegmentWriter};

/// Which process decodes a message: what it does with recyclable segments differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The parent, reading a message of the worker with this pid: it counts its mappings of
    /// that worker's recyclable segments in the [`ledger`].
    /// The flag: whether the pool recycles segments; when it does not, a worker's segment
    /// that is not sealed against every write (a recyclable one, which its worker may still
    /// map writable) is refused.
    Parent(i32, bool),
    /// A worker (or the fork server), reading the parent's messages: it keeps its mappings of
    /// recycled inputs for reuse, and counts the inputs it still maps.
    Worker,
}

struct Out {
    fds: Vec<OwnedFd>,
    threshold: Option<usize>,
    recycle: bool,
    /// Whether existing recyclable segments may travel as they are (the receiving side's pool
    /// recycles); else their bytes are copied into sealed segments.
    pass_on: bool,
}

struct In {
    fds: Vec<Option<OwnedFd>>,
    side: Side,
}

thread_local! {
    static OUT: RefCell<Option<Out>> = const { RefCell::new(None) };
    static IN: RefCell<Option<In>> = const { RefCell::new(None) };
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
/// arrays of at least `threshold` bytes become segments, recyclable ones when `recycle`;
/// recyclable segments already made travel as they are only when `pass_on`.
pub(crate) fn encode_with_fds<R>(
    threshold: Option<usize>,
    recycle: bool,
    pass_on: bool,
    f: impl FnOnce() -> R,
) -> (R, Vec<OwnedFd>) {
    let out = Out {
        fds: Vec::new(),
        threshold,
        recycle,
        pass_on,
    };
    let prev = OUT.with(|o| o.borrow_mut().replace(out));
    let r = f();
    let out = OUT.with(|o| std::mem::replace(&mut *o.borrow_mut(), prev));
    (r, out.map(|o| o.fds).unwrap_or_default())
}

/// Runs `f` (which decodes a message received by `side`) with the fds that came with it;
/// returns the fds `f` did not use (they close when dropped).
pub(crate) fn decode_with_fds<R>(
    side: Side,
    fds: Vec<OwnedFd>,
    f: impl FnOnce() -> R,
) -> (R, Vec<OwnedFd>) {
    let input = In {
        fds: fds.into_iter().map(Some).collect(),
        side,
    };
    let prev = IN.with(|i| i.borrow_mut().replace(input));
    let r = f();
    let left = IN.with(|i| std::mem::replace(&mut *i.borrow_mut(), prev));
    (
        r,
        left.map(|l| l.fds)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect(),
    )
}

/// Called by `Buffer`'s serializer: how to write an array whose storage is `segment` (if it is
/// one) holding `bytes`.
pub(crate) fn export(segment: Option<&Segment>, bytes: &[u8]) -> Exported {
    OUT.with(|o| {
        let mut o = o.borrow_mut();
        let Some(out) = o.as_mut() else {
            return Exported::Inline;
        };
        // A recyclable segment (another pool's result, passed on) never goes to or from a pool
        // that does not recycle: that side refuses it (its producer may still write it), so
        // its bytes are copied into a sealed segment (or inlined) below.
        if let Some(seg) = segment.filter(|s| out.pass_on || !s.recyclable()) {
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
        let len = bytes.len();
        if len < t || len == 0 {
            return Exported::Inline;
        }
        if out.recycle {
            let Some(mut w) = recycler::writer(len) else {
                return Exported::Inline;
            };
            w.bytes_mut()[..len].copy_from_slice(bytes);
            let Ok(fd) = w.fd().try_clone_to_owned() else {
                return Exported::Inline;
            };
            // Until the parent frees it, nothing in this process may write it.
            if w.publish().is_err() {
                return Exported::Inline;
            }
            recycler::published(w);
            out.fds.push(fd);
            return Exported::Recyclable(out.fds.len() as u32 - 1, len as u64);
        }
        let sealed = SegmentWriter::new(len).and_then(|mut w| {
            w.bytes_mut().copy_from_slice(bytes);
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
pub(crate) fn import(index: u32, len: Option<u64>) -> Result<Segment, String> {
    let (fd, side) = IN.with(|i| {
        let mut i = i.borrow_mut();
        let input = i
            .as_mut()
            .ok_or("a segment reference outside a framed message")?;
        let fd = input
            .fds
            .get_mut(index as usize)
            .and_then(Option::take)
            .ok_or_else(|| format!("segment reference {index} has no fd"))?;
        Ok::<_, String>((fd, input.side))
    })?;
    let mut seg = match (len, side) {
        // A worker reads its inputs: keep the mapping for when the segment comes back recycled.
        (Some(len), Side::Worker) => {
            recycler::with_maps(|maps| Segment::from_recyclable_fd_cached(fd, len as usize, maps))
        }
        (Some(len), Side::Parent(_, true)) => Segment::from_recyclable_fd(fd, len as usize),
        (Some(_), Side::Parent(_, false)) => {
            return Err(
                "a recyclable segment from a worker of a pool that does not recycle \
                        segments (it could still write to it)"
                    .to_string(),
            )
        }
        (None, _) => Segment::from_fd(fd),
    }
    .map_err(|e| e.to_string())?;
    tracing::trace!(
        target: "forkgraph::segments",
        bytes = seg.len(),
        recyclable = seg.recyclable(),
        "segment mapped"
    );
    if seg.recyclable() {
        match side {
            Side::Parent(peer, _) => {
                ledger::track(seg.ino(), peer);
                seg.on_drop(ledger::untrack);
            }
            Side::Worker => {
                recycler::input_mapped(seg.ino());
                seg.on_drop(recycler::input_released);
            }
        }
    }
    Ok(seg)
}
