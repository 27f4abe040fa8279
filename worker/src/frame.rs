//! Framing: every message is a frame on a Unix stream socket: a 2-byte magic number, a 4-byte
//! little-endian length, a 2-byte little-endian count of attached fds, then the postcard-encoded
//! message. Fds travel with SCM_RIGHTS on the first bytes of their frame, at most
//! [`crate::sys::FDS_PER_SEND`] per byte. End-of-file on a socket means the process at the
//! other end is gone.
//!
//! **A worker is untrusted.** Task code runs in it and can write anything to its socket. The
//! parent reads frames from workers as hostile input: a wrong magic number, a frame whose fds
//! did not come with its bytes, or a message that does not decode is an error (the worker is
//! then killed and the error says why), fds that no frame announced are an error too, and a
//! frame is never allocated ahead of the bytes that actually arrived (the buffer is at most
//! twice what arrived plus [`READ_AHEAD`]), so a header announcing 4 GiB costs nothing.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::segments::{self, Side};
use crate::sys::Stream;

/// Encodes a frame.
///
/// # Errors
/// When the message cannot be encoded.
pub(crate) fn encode<T: Serialize>(msg: &T, nfds: usize) -> io::Result<Vec<u8>> {
    let mut out =
        postcard::serialize_with_flavor(msg, Framed(vec![0u8; HEADER])).map_err(invalid)?;
    write_header(&mut out, nfds)?;
    Ok(out)
}

fn write_header(out: &mut [u8], nfds: usize) -> io::Result<()> {
    let len = u32::try_from(out.len() - HEADER)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
    if nfds > out.len() * crate::sys::FDS_PER_SEND {
        return Err(invalid("too many fds for one message"));
    }
    out[..2].copy_from_slice(&MAGIC.to_le_bytes());
    out[2..6].copy_from_slice(&len.to_le_bytes());
    out[6..8].copy_from_slice(
        &u16::try_from(nfds)
            .map_err(|_| invalid(format!("{nfds} fds in one message (at most 65535)")))?
            .to_le_bytes(),
    );
    Ok(())
}

/// Encodes a frame whose arrays travel as shared segments: those already in segments by
/// reference, heap arrays of at least `threshold` bytes copied into new sealed segments.
///
/// # Errors
/// When the message cannot be encoded.
pub(crate) fn encode_shared<T: Serialize>(
    msg: &T,
    threshold: Option<usize>,
    recycle: bool,
    pass_on: bool,
) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let (body, fds) = segments::encode_with_fds(threshold, recycle, pass_on, || {
        postcard::serialize_with_flavor(msg, Framed(vec![0u8; HEADER])).map_err(invalid)
    });
    let mut out = body?;
    write_header(&mut out, fds.len())?;
    Ok((out, fds))
}

/// Bytes before a frame's message: magic (2), length (4) and fd count (2).
const HEADER: usize = 8;
/// First two bytes of every frame.
const MAGIC: u16 = 0xF67A;
/// Most bytes an [`Inbox`] allocates beyond what it has received, whatever a header announces.
pub(crate) const READ_AHEAD: usize = 16 << 20;
/// Read size when no frame is pending.
const MIN_READ: usize = 64 * 1024;

/// A postcard output that leaves room for the frame header and appends slices in bulk.
struct Framed(Vec<u8>);

impl postcard::ser_flavors::Flavor for Framed {
    type Output = Vec<u8>;
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.push(b);
        Ok(())
    }
    fn try_extend(&mut self, d: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(d);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

fn invalid<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Bytes and fds received, split into frames.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Zero-initialised storage; received bytes are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
}

impl Inbox {
    /// An empty inbox.
    pub(crate) fn new() -> Inbox {
        Inbox::default()
    }

    /// Reads once from `s`. Returns false at end-of-file.
    ///
    /// # Errors
    /// `WouldBlock` on an empty non-blocking socket, or the read error.
    pub(crate) fn fill(&mut self, s: &Stream) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 4 * MIN_READ {
                // Do not keep a large frame's memory once it is consumed.
                self.buf = Vec::new();
            }
        }
        let have = self.end - self.start;
        // Room for the rest of the pending frame, but never more than READ_AHEAD beyond what
        // arrived: the length in a header is a claim, not a fact.
        let want = self
            .pending_frame_len()
            .saturating_sub(have)
            .clamp(MIN_READ, READ_AHEAD);
        if self.buf.len() - self.end < want {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = have;
            }
            if self.buf.len() - self.end < want {
                let grown = (self.buf.len() * 2).max(self.end + want);
                self.buf.resize(grown, 0);
            }
        }
        let mut fds = Vec::new();
        let r = s.recv(&mut self.buf[self.end..], &mut fds);
        self.fds.extend(fds);
        match r {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Bytes received and not yet taken as frames.
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    fn pending_frame_len(&self) -> usize {
        let b = &self.buf[self.start..self.end];
        if b.len() < HEADER {
            return HEADER;
        }
        HEADER + u32::from_le_bytes([b[2], b[3], b[4], b[5]]) as usize
    }

    /// The next complete frame, if any.
    ///
    /// # Errors
    /// When the bytes are not a frame (wrong magic number), the frame's fds did not come with
    /// it, or the message does not decode. The stream is then out of step for good.
    pub(crate) fn take_frame<T: DeserializeOwned>(
        &mut self,
        side: Side,
    ) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        let b = &self.buf[self.start..self.end];
        if b.len() >= 2 && u16::from_le_bytes([b[0], b[1]]) != MAGIC {
            return Err(invalid(format!(
                "malformed frame: it starts with {:02x} {:02x}, not the frame marker",
                b[0], b[1]
            )));
        }
        if b.is_empty() && !self.fds.is_empty() {
            // Fds come with the first bytes of their frame; all frames received are taken.
            return Err(invalid(format!(
                "{} file descriptor(s) came with no frame that announced them",
                self.fds.len()
            )));
        }
        if b.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_le_bytes([b[2], b[3], b[4], b[5]]) as usize;
        let nfds = u16::from_le_bytes([b[6], b[7]]) as usize;
        if b.len() < HEADER + len {
            return Ok(None);
        }
        if self.fds.len() < nfds {
            // Fds arrive with the first bytes of their frame, all of which are here.
            return Err(invalid(format!(
                "malformed frame: it announces {nfds} file descriptor(s), {} came with it",
                self.fds.len()
            )));
        }
        let fds: Vec<OwnedFd> = self.fds.drain(..nfds).collect();
        // Segment references in the message take their fds; the others are returned.
        let (msg, unused) = segments::decode_with_fds(side, fds, || {
            postcard::from_bytes(&b[HEADER..HEADER + len])
                .map_err(|e| invalid(format!("a message of {len} bytes does not decode: {e}")))
        });
        let msg = msg?;
        self.start += HEADER + len;
        Ok(Some((msg, unused)))
    }
}

/// Blocking receive of one message, in a worker or the fork server ([`Side::Worker`]); `None` at
/// end-of-file.
///
/// # Errors
/// Read or decode errors.
pub(crate) fn recv<T: DeserializeOwned>(
    s: &Stream,
    inbox: &mut Inbox,
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    loop {
        if let Some(m) = inbox.take_frame(Side::Worker)? {
            return Ok(Some(m));
        }
        if !inbox.fill(s)? {
            return Ok(None);
        }
    }
}

/// Blocking send of one message with fds.
///
/// # Errors
/// Encode or write errors (`EPIPE` when the peer is gone).
pub(crate) fn send<T: Serialize>(s: &Stream, msg: &T, fds: &[&OwnedFd]) -> io::Result<()> {
    let frame = encode(msg, fds.len())?;
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    send_frame(s, &frame, &borrowed)
}

/// Blocking send of a message whose large arrays travel as shared segments (see
/// [`encode_shared`]).
///
/// # Errors
/// Encode or write errors.
pub(crate) fn send_shared<T: Serialize>(
    s: &Stream,
    msg: &T,
    threshold: Option<usize>,
    recycle: bool,
) -> io::Result<()> {
    let (frame, fds) = encode_shared(msg, threshold, recycle, recycle)?;
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    send_frame(s, &frame, &borrowed)
}

fn send_frame(s: &Stream, frame: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut sent = 0;
    for chunk in fds.chunks(crate::sys::FDS_PER_SEND) {
        // One byte per chunk of fds, so that each sendmsg carries at most FDS_PER_SEND.
        loop {
            let n = s.send(&frame[sent..sent + 1], chunk)?;
            if n == 1 {
                break;
            }
            wait_writable(s)?;
        }
        sent += 1;
    }
    while sent < frame.len() {
        let n = s.send(&frame[sent..], &[])?;
        if n == 0 {
            wait_writable(s)?;
        }
        sent += n;
    }
    Ok(())
}

/// A blocking socket never returns 0 from send; a non-blocking one that is full does: wait
/// until it is writable.
fn wait_writable(s: &Stream) -> io::Result<()> {
    crate::sys::poll(
        &[crate::sys::Interest {
            fd: s.as_fd(),
            read: false,
            write: true,
        }],
        None,
    )?;
    Ok(())
}

/// Frames queued for a non-blocking socket.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    frames: VecDeque<(Vec<u8>, Vec<OwnedFd>)>,
    sent: usize,
}

impl Outbox {
    /// Queues a message.
    ///
    /// # Errors
    /// When it cannot be encoded.
    pub(crate) fn push<T: Serialize>(&mut self, msg: &T, fds: Vec<OwnedFd>) -> io::Result<()> {
        let frame = encode(msg, fds.len())?;
        self.frames.push_back((frame, fds));
        Ok(())
    }

    /// Queues a message whose large arrays travel as shared segments (see [`encode_shared`]).
    ///
    /// # Errors
    /// When it cannot be encoded.
    pub(crate) fn push_shared<T: Serialize>(
        &mut self,
        msg: &T,
        threshold: Option<usize>,
        pass_on: bool,
    ) -> io::Result<()> {
        let (frame, fds) = encode_shared(msg, threshold, false, pass_on)?;
        self.frames.push_back((frame, fds));
        Ok(())
    }

    /// Whether anything is waiting to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes of the message queued last (0: none).
    pub(crate) fn last_len(&self) -> usize {
        self.frames.back().map_or(0, |(f, _)| f.len())
    }

    /// Sends as much as the socket takes now.
    ///
    /// # Errors
    /// Write errors (`EPIPE`/`ECONNRESET` when the peer is gone).
    pub(crate) fn flush(&mut self, s: &Stream) -> io::Result<()> {
        while let Some((frame, fds)) = self.frames.front() {
            // The first bytes carry the fds, FDS_PER_SEND per byte.
            let chunks = fds.len().div_ceil(crate::sys::FDS_PER_SEND);
            let n = if self.sent < chunks {
                let lo = self.sent * crate::sys::FDS_PER_SEND;
                let hi = fds.len().min(lo + crate::sys::FDS_PER_SEND);
                let b: Vec<_> = fds[lo..hi].iter().map(|f| f.as_fd()).collect();
                s.send(&frame[self.sent..self.sent + 1], &b)?
            } else {
                s.send(&frame[self.sent..], &[])?
            };
            if n == 0 {
                return Ok(());
            }
            self.sent += n;
            if self.sent == frame.len() {
                self.frames.pop_front();
                self.sent = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::set_nonblocking;

    fn pair() -> (Stream, Stream) {
        let (a, b) = Stream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Reads everything available, then takes frames.
    fn drain(inbox: &mut Inbox, s: &Stream) -> io::Result<Vec<(String, Vec<OwnedFd>)>> {
        loop {
            match inbox.fill(s) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::new();
        while let Some(m) = inbox.take_frame::<String>(Side::Worker)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn a_frame_sent_a_byte_at_a_time_comes_out_whole_once() {
        let (a, b) = pair();
        let frame = encode(&"hello".to_string(), 0).unwrap();
        let mut inbox = Inbox::new();
        for (i, byte) in frame.iter().enumerate() {
            assert_eq!(a.send(std::slice::from_ref(byte), &[]).unwrap(), 1);
            let got = drain(&mut inbox, &b).unwrap();
            if i + 1 < frame.len() {
                assert!(
                    got.is_empty(),
                    "a frame after {} of {} bytes",
                    i + 1,
                    frame.len()
                );
            } else {
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].0, "hello");
            }
        }
    }

    /// A worker of a pool that does not recycle segments may send none that it could still
    /// write (a recyclable one is sealed against new mappings only): the parent refuses it.
    #[test]
    fn a_recyclable_segment_is_refused_unless_the_pool_recycles() {
        let value = crate::value::Value::from(vec![7.0f64; 4096]);
        for recycle in [false, true] {
            let (a, b) = pair();
            let (frame, fds) = encode_shared(&value, Some(1024), true, true).unwrap();
            assert_eq!(fds.len(), 1, "the array did not go into a segment");
            let refs: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            a.send(&frame, &refs).unwrap();
            let mut inbox = Inbox::new();
            while let Ok(true) = inbox.fill(&b) {}
            let got = inbox.take_frame::<crate::value::Value>(Side::Parent(1, recycle));
            match (recycle, got) {
                (true, Ok(Some((v, _)))) => assert_eq!(v, value),
                // (postcard keeps no message of a custom error: the same frame decodes when
                // the pool recycles, so the refusal is the seal check's.)
                (false, Err(_)) => {}
                (_, other) => panic!("recycle {recycle}: {other:?}"),
            }
        }
    }

    #[test]
    fn many_fds_travel_with_one_frame_across_several_sends() {
        let (a, b) = pair();
        let (r, _w) = crate::sys::pipe().unwrap();
        let fds: Vec<OwnedFd> = (0..600).map(|_| r.try_clone().unwrap()).collect();
        let refs: Vec<&OwnedFd> = fds.iter().collect();
        send(&a, &"fds".to_string(), &refs).unwrap();
        send(&a, &"next".to_string(), &[]).unwrap();
        let mut inbox = Inbox::new();
        let got = drain(&mut inbox, &b).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.as_str(), got[0].1.len()), ("fds", 600));
        assert_eq!((got[1].0.as_str(), got[1].1.len()), ("next", 0));
    }

    #[test]
    fn bytes_that_are_not_a_frame_are_an_error() {
        let (a, b) = pair();
        a.send(&[0xff; 8], &[]).unwrap();
        let err = drain(&mut Inbox::new(), &b).unwrap_err();
        assert!(err.to_string().contains("frame marker"), "{err}");
    }

    #[test]
    fn a_frame_whose_fds_did_not_come_is_an_error() {
        let (a, b) = pair();
        let mut frame = encode(&"x".to_string(), 0).unwrap();
        frame[6] = 3; // announces 3 fds; none are attached
        a.send(&frame, &[]).unwrap();
        let err = drain(&mut Inbox::new(), &b).unwrap_err();
        assert!(err.to_string().contains("announces 3"), "{err}");
    }

    #[test]
    fn fds_that_no_frame_announced_are_an_error() {
        let (a, b) = pair();
        let (r, _w) = crate::sys::pipe().unwrap();
        let frame = encode(&"x".to_string(), 0).unwrap();
        a.send(&frame[..1], &[r.as_fd()]).unwrap();
        a.send(&frame[1..], &[]).unwrap();
        let mut inbox = Inbox::new();
        let err = drain(&mut inbox, &b).unwrap_err();
        assert!(err.to_string().contains("no frame that announced"), "{err}");
    }

    #[test]
    fn a_huge_announced_length_allocates_only_what_arrives() {
        let (a, b) = pair();
        let mut frame = encode(&"x".to_string(), 0).unwrap();
        frame[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        a.send(&frame, &[]).unwrap();
        let mut inbox = Inbox::new();
        assert!(drain(&mut inbox, &b).unwrap().is_empty());
        assert!(
            inbox.buf.len() <= frame.len() * 2 + READ_AHEAD,
            "{} bytes held",
            inbox.buf.len()
        );
        drop(a);
        set_nonblocking(b.as_fd(), false).unwrap();
        assert!(!inbox.fill(&b).unwrap(), "end-of-file, not a frame");
    }
}
