//! How large arrays cross process boundaries: as sealed shared segments passed by fd.
//!
//! While a message is encoded inside [`encode_with_fds`], every array whose buffer is already
//! a [`Segment`] is written as a reference (its fd is duplicated and attached to the message),
//! and every heap array of at least `threshold` bytes is first copied into a new sealed segment.
//! While a message is decoded inside [`decode_with_fds`], references are mapped read-only.
//! Outside these two, arrays serialize inline.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::sys::{Segment, SegmentWriter};
use crate::value::{Buffer, Storage};

struct Out {
    fds: Vec<OwnedFd>,
    threshold: Option<usize>,
}

thread_local! {
    static OUT: RefCell<Option<Out>> = const { RefCell::new(None) };
    static IN: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

impl Storage for Segment {
    fn bytes(&self) -> &[u8] {
        Segment::bytes(self)
    }
    fn segment(&self) -> Option<&Segment> {
        Some(self)
    }
}

/// Runs `f` (which encodes a message) collecting the fds of the segments it references.
pub fn encode_with_fds<R>(threshold: Option<usize>, f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let prev = OUT.with(|o| {
        o.borrow_mut().replace(Out {
            fds: Vec::new(),
            threshold,
        })
    });
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

/// Called by `Array`'s serializer: the index of the fd that carries `buf`, or `None` to send
/// the bytes inline.
pub(crate) fn export(buf: &Buffer) -> Option<u32> {
    OUT.with(|o| {
        let mut o = o.borrow_mut();
        let out = o.as_mut()?;
        let fd = match buf.segment() {
            Some(seg) => seg.fd().try_clone_to_owned().ok()?,
            None => {
                let t = out.threshold?;
                if buf.len() < t || buf.is_empty() {
                    return None;
                }
                let mut w = SegmentWriter::new(buf.len()).ok()?;
                w.bytes_mut().copy_from_slice(buf.as_bytes());
                w.seal().ok()?.into_fd().ok()?
            }
        };
        out.fds.push(fd);
        Some(out.fds.len() as u32 - 1)
    })
}

/// Called by `Array`'s deserializer for a segment reference.
pub(crate) fn import(index: u32) -> Result<Buffer, String> {
    let fd = IN.with(|i| {
        let mut i = i.borrow_mut();
        let fds = i
            .as_mut()
            .ok_or("a segment reference outside a framed message")?;
        fds.get_mut(index as usize)
            .and_then(Option::take)
            .ok_or_else(|| format!("segment reference {index} has no fd"))
    })?;
    let seg = Segment::from_fd(fd).map_err(|e| e.to_string())?;
    Ok(Buffer::from_storage(Arc::new(seg)))
}
