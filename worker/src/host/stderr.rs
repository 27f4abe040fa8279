//! What workers write to stderr: forwarded to the program's stderr without ever blocking the
//! scheduler, and a tail kept per worker for error reports.
//!
//! Forwarding goes through one thread per program with a bounded queue: when the program's
//! stderr is a pipe nobody reads, that thread blocks, the queue fills, and further output is
//! dropped and counted (the count is written once stderr moves again) while `get` goes on.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::proto::STDERR_MARK;

/// Bytes of each worker's stderr kept for error reports.
const TAIL_BYTES: usize = 8 * 1024;
/// Chunks waiting to be written to the program's stderr, at most.
const QUEUE_CHUNKS: usize = 512;

/// The tail of a worker's stderr since it last sent results (see [`STDERR_MARK`]).
#[derive(Debug, Default)]
pub(crate) struct Tail {
    kept: VecDeque<u8>,
    /// Bytes at the end of the last read that may be the start of a mark.
    carry: Vec<u8>,
}

impl Tail {
    /// Takes bytes read from the worker's stderr; returns what to forward (marks removed).
    pub(crate) fn take(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(bytes);
        let mut out = Vec::with_capacity(data.len());
        let mut rest = &data[..];
        while let Some(at) = find(rest, STDERR_MARK) {
            out.extend_from_slice(&rest[..at]);
            // Output before the mark belongs to tasks that reported: not this tail's.
            self.kept.clear();
            rest = &rest[at + STDERR_MARK.len()..];
        }
        // Keep back a suffix that could be the beginning of a mark split across reads.
        let keep = (1..STDERR_MARK.len().min(rest.len() + 1))
            .rev()
            .find(|&k| rest.ends_with(&STDERR_MARK[..k]))
            .unwrap_or(0);
        let (now, later) = rest.split_at(rest.len() - keep);
        self.push(now);
        out.extend_from_slice(now);
        self.carry = later.to_vec();
        out
    }

    /// At end-of-file: what was held back as a possible mark is plain output after all.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.carry);
        self.push(&rest);
        rest
    }

    fn push(&mut self, bytes: &[u8]) {
        self.kept.extend(bytes);
        let over = self.kept.len().saturating_sub(TAIL_BYTES);
        self.kept.drain(..over);
    }

    /// Everything kept, as text.
    pub(crate) fn text(&self) -> String {
        let (a, b) = self.kept.as_slices();
        let mut t = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        t.push_str(&String::from_utf8_lossy(&self.carry));
        t
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Forwarder {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    dropped: AtomicU64,
    /// Chunks queued and not yet written, and chunks written since the start.
    pending: Mutex<(usize, u64)>,
    progress: Condvar,
}

fn forwarder() -> &'static Forwarder {
    static F: OnceLock<&'static Forwarder> = OnceLock::new();
    F.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE_CHUNKS);
        let f: &'static Forwarder = Box::leak(Box::new(Forwarder {
            tx,
            dropped: AtomicU64::new(0),
            pending: Mutex::new((0, 0)),
            progress: Condvar::new(),
        }));
        let started = std::thread::Builder::new()
            .name("forkgraph-stderr".into())
            .spawn(move || {
                for chunk in rx {
                    let mut err = std::io::stderr().lock();
                    let lost = f.dropped.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        let _ = writeln!(
                            err,
                            "[forkgraph: {lost} bytes of worker stderr dropped: this \
                             program's stderr was not being read]"
                        );
                    }
                    let _ = err.write_all(&chunk);
                    drop(err);
                    let mut p = f.pending.lock().unwrap_or_else(|e| e.into_inner());
                    p.0 -= 1;
                    p.1 += 1;
                    f.progress.notify_all();
                }
            });
        // Without the thread the queue is disconnected: every chunk is dropped and counted.
        drop(started);
        f
    })
}

/// Queues worker output for the program's stderr; drops it (counted) when the queue is full.
pub fn forward(bytes: Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let f = forwarder();
    let n = bytes.len() as u64;
    let mut p = f.pending.lock().unwrap_or_else(|e| e.into_inner());
    match f.tx.try_send(bytes) {
        Ok(()) => p.0 += 1,
        Err(_) => {
            f.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Waits until forwarded output is written, as long as writing makes progress (a `get` ends
/// with its workers' output on stderr; a stderr that nobody reads costs it 100 ms at most).
pub fn flush() {
    let f = forwarder();
    let mut p = f.pending.lock().unwrap_or_else(|e| e.into_inner());
    while p.0 > 0 {
        let seen = p.1;
        let (q, _) = f
            .progress
            .wait_timeout_while(p, STALL, |p| p.0 > 0 && p.1 == seen)
            .unwrap_or_else(|e| e.into_inner());
        p = q;
        if p.0 > 0 && p.1 == seen {
            return; // Stuck: the rest is written when stderr moves, or dropped.
        }
    }
}

/// How long [`flush`] waits for stderr to take one more chunk.
const STALL: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_cut_the_tail_and_are_not_forwarded() {
        let mut t = Tail::default();
        let mut input = b"old output\n".to_vec();
        input.extend_from_slice(STDERR_MARK);
        input.extend_from_slice(b"new output\n");
        // Split the stream at every position, so marks cross reads.
        for cut in 0..input.len() {
            let mut t2 = Tail::default();
            let mut out = t2.take(&input[..cut]);
            out.extend(t2.take(&input[cut..]));
            assert_eq!(out, b"old output\nnew output\n", "cut at {cut}");
            assert_eq!(t2.text(), "new output\n", "cut at {cut}");
        }
        assert_eq!(t.take(b"abc"), b"abc");
        assert_eq!(t.text(), "abc");
    }

    #[test]
    fn the_tail_is_bounded() {
        let mut t = Tail::default();
        for _ in 0..100 {
            t.take(&[b'x'; 1000]);
        }
        assert_eq!(t.text().len(), TAIL_BYTES);
    }
}
