//! A progress bar for `get` (Dask's `ProgressBar`): done/total, rate, ETA, failures and worker
//! deaths (each a retry or a failure), drawn with indicatif on a terminal and as a plain line
//! every few seconds otherwise (a log file should not fill with redraws).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use forkgraph_worker::Value;

use crate::callbacks::{Callbacks, RunInfo, TaskEvent, WorkerEvent};
use crate::error::TaskError;

/// How often the plain line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Shows the progress of the `get`s it watches. One line turns it on:
/// `GetOptions::new().progress()`, or `.callback(Arc::new(ProgressBar::new()))`.
///
/// On a terminal (stderr) it is an indicatif bar; otherwise it writes
/// `[forkgraph] 5000/10000 tasks (50%), 2100/s, ETA 2s, 0 failed, 0 worker deaths` every
/// 2 seconds and once at the end, to stderr or the writer given to [`ProgressBar::plain_to`].
pub struct ProgressBar {
    total: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    deaths: AtomicU64,
    out: Mutex<Out>,
}

enum Out {
    /// Not started yet: which kind to make at `start`.
    Pending(Option<Box<dyn Write + Send>>),
    Bar(indicatif::ProgressBar),
    Plain {
        to: Box<dyn Write + Send>,
        started: Instant,
        last: Instant,
        every: Duration,
    },
}

impl std::fmt::Debug for ProgressBar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressBar")
            .field("total", &self.total)
            .field("done", &self.done)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Default for ProgressBar {
    fn default() -> ProgressBar {
        ProgressBar::new()
    }
}

impl ProgressBar {
    /// A bar on stderr when it is a terminal, plain lines on stderr otherwise.
    pub fn new() -> ProgressBar {
        ProgressBar::with(Out::Pending(None))
    }

    /// Always plain lines, written to `to` (every 2 seconds and at the end).
    pub fn plain_to(to: Box<dyn Write + Send>) -> ProgressBar {
        ProgressBar::with(Out::Pending(Some(to)))
    }

    fn with(out: Out) -> ProgressBar {
        ProgressBar {
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            deaths: AtomicU64::new(0),
            out: Mutex::new(out),
        }
    }

    /// Tasks finished (failed ones included) and to run, over every watched `get`.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    fn message(&self) -> String {
        let f = self.failed.load(Ordering::Relaxed);
        let d = self.deaths.load(Ordering::Relaxed);
        format!("{f} failed, {d} worker deaths")
    }

    fn plain_line(&self, started: Instant) -> String {
        let (done, total) = self.counts();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        let eta = if done == 0 {
            "?".to_owned()
        } else {
            format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
        };
        format!(
            "[forkgraph] {done}/{total} tasks ({:.0}%), {rate:.0}/s, ETA {eta}, {}\n",
            100.0 * done as f64 / total.max(1) as f64,
            self.message()
        )
    }

    fn tick(&self, force: bool) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *out {
            Out::Pending(_) => {}
            Out::Bar(b) => {
                b.set_position(self.done.load(Ordering::Relaxed));
                if force {
                    b.set_message(self.message());
                }
            }
            Out::Plain {
                to,
                started,
                last,
                every,
            } => {
                if force || last.elapsed() >= *every {
                    *last = Instant::now();
                    let _ = to.write_all(self.plain_line(*started).as_bytes());
                    let _ = to.flush();
                }
            }
        }
    }
}

impl Callbacks for ProgressBar {
    fn start(&self, info: &RunInfo) {
        let total = self.total.fetch_add(info.tasks as u64, Ordering::Relaxed) + info.tasks as u64;
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Out::Pending(to) = &mut *out {
            *out = match to.take() {
                Some(to) => Out::Plain {
                    to,
                    started: Instant::now(),
                    last: Instant::now(),
                    every: PLAIN_EVERY,
                },
                None if std::io::stderr().is_terminal() => {
                    let b = indicatif::ProgressBar::new(total);
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{bar:40} {pos}/{len} tasks {per_sec} ETA {eta} {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    Out::Bar(b)
                }
                None => Out::Plain {
                    to: Box::new(std::io::stderr()),
                    started: Instant::now(),
                    last: Instant::now(),
                    every: PLAIN_EVERY,
                },
            };
        } else if let Out::Bar(b) = &*out {
            b.set_length(total);
        }
    }

    fn task_done(&self, _: &TaskEvent<'_>, _: &Value) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.tick(false);
    }

    fn task_failed(&self, _: &TaskEvent<'_>, _: &TaskError) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.tick(true);
    }

    fn worker_event(&self, event: &WorkerEvent) {
        if matches!(event, WorkerEvent::Died { .. }) {
            self.deaths.fetch_add(1, Ordering::Relaxed);
            self.tick(true);
        }
    }

    fn finish(&self, _: bool) {
        self.tick(true);
        if let Out::Bar(b) = &*self.out.lock().unwrap_or_else(|e| e.into_inner()) {
            b.finish_with_message(self.message());
        }
    }
}
