//! Re-emits what tasks logged in workers through this process's `log` logger or `tracing`
//! subscriber, tagged with the worker's pid and the task's key (see `forkgraph_worker::logs`).

use forkgraph_worker::logs::LogRecord;

use crate::key::Key;

/// Emits a record a worker sent. `key` is the task that emitted it, when known.
pub(crate) fn emit(pid: i32, key: Option<&Key>, r: &LogRecord) {
    let task = key.map_or_else(|| "-".to_owned(), ToString::to_string);
    if r.tracing {
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: "forkgraph::worker",
                    $level,
                    worker = pid,
                    key = %task,
                    origin = %r.target,
                    "{}",
                    r.message
                )
            };
        }
        match r.level {
            1 => event!(tracing::Level::ERROR),
            2 => event!(tracing::Level::WARN),
            3 => event!(tracing::Level::INFO),
            4 => event!(tracing::Level::DEBUG),
            _ => event!(tracing::Level::TRACE),
        }
    } else {
        let level = match r.level {
            1 => log::Level::Error,
            2 => log::Level::Warn,
            3 => log::Level::Info,
            4 => log::Level::Debug,
            _ => log::Level::Trace,
        };
        if level <= log::max_level() {
            log::logger().log(
                &log::Record::builder()
                    .level(level)
                    .target(&r.target)
                    .args(format_args!("[worker {pid}, task {task}] {}", r.message))
                    .build(),
            );
        }
    }
}
