//! Helpers shared by the conformance, validation and threaded test binaries: the common task
//! functions, a watchdog that fails a hung test, a callback recorder, and small builders of
//! expected outputs.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use forkgraph::{Callbacks, Key, Output, RunInfo, Value};

// ---- Task functions every binary that includes this file registers ----

#[forkgraph::task]
pub(crate) fn inc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
pub(crate) fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[forkgraph::task]
pub(crate) fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[forkgraph::task]
pub(crate) fn fail(msg: &str) -> Result<i64, String> {
    Err(msg.to_owned())
}

#[forkgraph::task]
pub(crate) fn explode(msg: &str) -> i64 {
    panic!("{msg}")
}

/// How long a test body may run before the watchdog declares it hung. Generous: a debug build
/// on a loaded two-core machine must never trip it.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(60);

/// Runs `body` on its own thread and fails the test if it has not finished within
/// [`WATCHDOG`]; a panic in `body` is re-raised with its own message.
pub(crate) fn watchdog<F: FnOnce() + Send + 'static>(name: &str, body: F) {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            body();
            let _ = tx.send(());
        })
        .expect("spawn the test body");
    match rx.recv_timeout(WATCHDOG) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            if let Err(payload) = handle.join() {
                std::panic::resume_unwind(payload);
            }
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("{name}: still running after {WATCHDOG:?}; the scheduler seems to hang")
        }
    }
}

/// One observed callback.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    Start(RunInfo),
    Pre(Key),
    Post(Key, Value),
    Finish(bool),
}

/// Records every callback with the thread it ran on.
#[derive(Default)]
pub(crate) struct Recorder {
    events: Mutex<Vec<(Event, ThreadId)>>,
}

impl Recorder {
    pub(crate) fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    fn push(&self, e: Event) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((e, std::thread::current().id()));
    }

    /// Every event, in order.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.lock().iter().map(|(e, _)| e.clone()).collect()
    }

    /// The threads the callbacks ran on.
    pub(crate) fn threads(&self) -> Vec<ThreadId> {
        let mut t: Vec<ThreadId> = self.lock().iter().map(|(_, t)| *t).collect();
        t.dedup();
        t
    }

    /// Keys given to `pretask`, in order.
    pub(crate) fn started(&self) -> Vec<Key> {
        self.lock()
            .iter()
            .filter_map(|(e, _)| match e {
                Event::Pre(k) => Some(k.clone()),
                _ => None,
            })
            .collect()
    }

    /// Keys and values given to `posttask`, in order.
    pub(crate) fn finished(&self) -> Vec<(Key, Value)> {
        self.lock()
            .iter()
            .filter_map(|(e, _)| match e {
                Event::Post(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// The `RunInfo`s given to `start`.
    pub(crate) fn starts(&self) -> Vec<RunInfo> {
        self.lock()
            .iter()
            .filter_map(|(e, _)| match e {
                Event::Start(i) => Some(*i),
                _ => None,
            })
            .collect()
    }

    /// The `errored` flags given to `finish`.
    pub(crate) fn finishes(&self) -> Vec<bool> {
        self.lock()
            .iter()
            .filter_map(|(e, _)| match e {
                Event::Finish(b) => Some(*b),
                _ => None,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Event, ThreadId)>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Callbacks for Recorder {
    fn start(&self, info: &RunInfo) {
        self.push(Event::Start(*info));
    }
    fn pretask(&self, key: &Key) {
        self.push(Event::Pre(key.clone()));
    }
    fn posttask(&self, key: &Key, value: &Value) {
        self.push(Event::Post(key.clone(), value.clone()));
    }
    fn finish(&self, errored: bool) {
        self.push(Event::Finish(errored));
    }
}

/// The output of one key.
pub(crate) fn one(v: impl Into<Value>) -> Output {
    Output::Value(v.into())
}

/// The output of a list of requests.
pub(crate) fn list(items: Vec<Output>) -> Output {
    Output::List(items)
}

/// The output of a list of integer keys.
pub(crate) fn ints(items: &[i64]) -> Output {
    Output::List(items.iter().map(|&i| one(i)).collect())
}
