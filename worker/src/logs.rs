//! `log` records and `tracing` events that tasks emit inside a worker, sent to the parent.
//!
//! A worker never runs the program's `main`, so the logger or subscriber installed there does
//! not exist in it. Each worker installs a `log` logger and a `tracing` subscriber of its own (at
//! the levels the parent had enabled when it started the worker) that send every record to the
//! parent as a [`FromWorker::Log`] message, tagged with the unit and task running when it was
//! emitted (a thread a task leaves running after it returns is tagged with whatever task runs
//! then); the parent re-emits it through its own logger or subscriber with the worker's pid and
//! the task's key.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::frame;
use crate::proto::FromWorker;
use crate::sys::Stream;

/// A log record or tracing event from a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The unit running when it was emitted (0: none, e.g. in `worker_init`).
    pub seq: u64,
    /// The task's index within that unit.
    pub task: u64,
    /// 1 (error) to 5 (trace), as `log::Level`.
    pub level: u8,
    /// Its target (usually the module path).
    pub target: String,
    /// The message, with a tracing event's other fields after it as `name=value`.
    pub message: String,
    /// Whether it came from `tracing` (else from `log`).
    pub tracing: bool,
}

/// The socket to the parent, shared by the worker loop and loggers in any thread of the worker.
static SINK: OnceLock<Mutex<Stream>> = OnceLock::new();
/// The unit (high 48 bits) and task index (low 16 bits) running now, in one word so that a
/// record never pairs one unit with another's task index.
static CURRENT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set while this thread sends: a record emitted meanwhile (from a `Drop` during encoding,
    /// say) is dropped rather than deadlocking on the socket.
    static SENDING: Cell<bool> = const { Cell::new(false) };
}

/// Sends a message on the worker's socket, serialized with log records from other threads.
///
/// # Errors
/// As `f`.
pub(crate) fn with_socket<R>(
    sock: &Stream,
    f: impl FnOnce(&Stream) -> std::io::Result<R>,
) -> std::io::Result<R> {
    let Some(sink) = SINK.get() else {
        return f(sock);
    };
    let _lock = sink.lock().unwrap_or_else(|e| e.into_inner());
    SENDING.with(|s| s.set(true));
    let r = f(sock);
    SENDING.with(|s| s.set(false));
    r
}

/// Records which unit and task run now (the worker loop calls it with its progress page).
pub(crate) fn set_current(seq: u64, task: u64) {
    CURRENT.store((seq << 16) | (task & 0xffff), Ordering::Relaxed);
}

/// Installs the forwarding logger and subscriber in this worker (levels 0 = off .. 5 = trace).
pub(crate) fn install(sock: &Stream, log_level: u8, trace_level: u8) {
    if log_level == 0 && trace_level == 0 {
        return;
    }
    let Ok(fd) = std::os::fd::AsFd::as_fd(sock).try_clone_to_owned() else {
        return;
    };
    if SINK.set(Mutex::new(Stream::from_fd(fd))).is_err() {
        return;
    }
    if log_level > 0 && log::set_boxed_logger(Box::new(Forward)).is_ok() {
        log::set_max_level(level_filter(log_level));
    }
    if trace_level > 0 {
        let _ = tracing::subscriber::set_global_default(ForwardEvents { max: trace_level });
    }
}

fn level_filter(level: u8) -> log::LevelFilter {
    match level {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// The parent's `log` level, as a number (0 = off .. 5 = trace).
pub fn current_log_level() -> u8 {
    log::max_level() as u8
}

/// The parent's `tracing` level, as a number (0 = off .. 5 = trace).
pub fn current_trace_level() -> u8 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}

fn trace_level_number(l: &tracing::Level) -> u8 {
    match *l {
        tracing::Level::ERROR => 1,
        tracing::Level::WARN => 2,
        tracing::Level::INFO => 3,
        tracing::Level::DEBUG => 4,
        _ => 5,
    }
}

fn send(level: u8, target: &str, message: String, tracing: bool) {
    if SENDING.with(Cell::get) {
        return;
    }
    let Some(sink) = SINK.get() else { return };
    let current = CURRENT.load(Ordering::Relaxed);
    let record = LogRecord {
        seq: current >> 16,
        task: current & 0xffff,
        level,
        target: target.to_owned(),
        message,
        tracing,
    };
    let sock = sink.lock().unwrap_or_else(|e| e.into_inner());
    SENDING.with(|s| s.set(true));
    // A record that cannot be sent is lost, like a log line written to a closed stderr.
    let _ = frame::send(&sock, &FromWorker::Log(record), &[]);
    SENDING.with(|s| s.set(false));
}

struct Forward;

impl log::Log for Forward {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            send(
                record.level() as u8,
                record.target(),
                record.args().to_string(),
                false,
            );
        }
    }

    fn flush(&self) {}
}

struct ForwardEvents {
    max: u8,
}

/// Collects an event's fields: `message` first, the others as `name=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

impl tracing::Subscriber for ForwardEvents {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        trace_level_number(metadata.level()) <= self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(match self.max {
            0 => tracing::level_filters::LevelFilter::OFF,
            1 => tracing::level_filters::LevelFilter::ERROR,
            2 => tracing::level_filters::LevelFilter::WARN,
            3 => tracing::level_filters::LevelFilter::INFO,
            4 => tracing::level_filters::LevelFilter::DEBUG,
            _ => tracing::level_filters::LevelFilter::TRACE,
        })
    }

    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        // Spans are not forwarded; events inside them are.
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields.message.push_str(&fields.rest);
        let meta = event.metadata();
        send(
            trace_level_number(meta.level()),
            meta.target(),
            fields.message,
            true,
        );
    }

    fn enter(&self, _span: &tracing::span::Id) {}

    fn exit(&self, _span: &tracing::span::Id) {}
}
