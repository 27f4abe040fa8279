//! One wait over every worker (socket, pidfd, stderr pipe) and the Ctrl-C guard.

use std::time::Duration;

use super::{CtrlC, Wake, WorkerHandle};
use crate::sys::{self, Interest};

/// What became ready for one worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readiness {
    /// Its socket has bytes (or end-of-file).
    pub readable: bool,
    /// Its socket takes more bytes.
    pub writable: bool,
    /// Its process ended.
    pub exited: bool,
    /// Its stderr pipe has bytes.
    pub stderr: bool,
}

/// A poll set over workers and a Ctrl-C guard.
#[derive(Debug, Default)]
pub struct PollSet {
    ready: Vec<Readiness>,
    ctrl_c: bool,
    woken: bool,
}

impl PollSet {
    /// Waits until something happens to one of `workers` or Ctrl-C arrives, at most `timeout`
    /// (`None`: no limit). Interest in writing is taken where a worker has unsent bytes.
    ///
    /// # Errors
    /// The poll error.
    pub fn wait(
        &mut self,
        workers: &[&WorkerHandle],
        ctrl_c: Option<&CtrlC>,
        timeout: Option<Duration>,
    ) -> std::io::Result<()> {
        self.wait_woken(workers, ctrl_c, None, timeout)
    }

    /// [`PollSet::wait`] that also returns when `wake` is woken ([`PollSet::woken`] says so;
    /// the pipe is left for its owner to [`clear`](Wake::clear)).
    ///
    /// # Errors
    /// The poll error.
    pub fn wait_woken(
        &mut self,
        workers: &[&WorkerHandle],
        ctrl_c: Option<&CtrlC>,
        wake: Option<&Wake>,
        timeout: Option<Duration>,
    ) -> std::io::Result<()> {
        let mut interests = Vec::with_capacity(workers.len() * 3 + 1);
        let mut slots = Vec::with_capacity(workers.len());
        for w in workers {
            let sock = interests.len();
            // A dead worker waiting to exit is watched through its pidfd only (its socket is at
            // end-of-file and would wake the wait at once).
            let alive = !w.is_dead();
            interests.push(Interest {
                fd: w.socket(),
                read: alive,
                write: alive && w.has_unsent(),
            });
            interests.push(Interest {
                fd: w.pidfd(),
                read: true,
                write: false,
            });
            let err = w.stderr_fd().filter(|_| alive).map(|fd| {
                interests.push(Interest {
                    fd,
                    read: true,
                    write: false,
                });
                interests.len() - 1
            });
            slots.push((sock, err));
        }
        let wake_at = wake.map(|w| {
            interests.push(Interest {
                fd: w.fd(),
                read: true,
                write: false,
            });
            interests.len() - 1
        });
        if let Some(c) = ctrl_c {
            interests.push(Interest {
                fd: c.fd(),
                read: true,
                write: false,
            });
        }
        let r = sys::poll(&interests, timeout)?;
        self.woken = wake_at.is_some_and(|i| r[i].read);
        self.ready = slots
            .iter()
            .map(|&(sock, err)| Readiness {
                readable: r[sock].read,
                writable: r[sock].write,
                exited: r[sock + 1].read,
                stderr: err.is_some_and(|e| r[e].read),
            })
            .collect();
        self.ctrl_c = ctrl_c.is_some_and(|c| r.last().is_some_and(|x| x.read) && c.fired());
        Ok(())
    }

    /// What the last wait saw for worker `i` (in the order given).
    pub fn worker(&self, i: usize) -> Readiness {
        self.ready.get(i).copied().unwrap_or_default()
    }

    /// Whether the wake-up pipe was woken during the last wait.
    pub fn woken(&self) -> bool {
        self.woken
    }

    /// Whether Ctrl-C arrived during the last wait.
    pub fn ctrl_c(&self) -> bool {
        self.ctrl_c
    }
}
