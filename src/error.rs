//! Errors of `get`: graph errors found before anything runs, and task errors found while running.

use std::error::Error as StdError;
use std::fmt;

use forkgraph_worker::{CallError, ReturnedError};

use crate::key::Key;

/// Something wrong with the graph or the request, found before any task runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// A requested key is not in the graph.
    #[error("requested key{} not in the graph: {}", plural(.keys.len()), list(.keys))]
    MissingKey {
        /// The requested keys that are missing.
        keys: Vec<Key>,
    },
    /// A task refers to a key that is not in the graph.
    #[error("task {key} depends on {dependency}, which is not in the graph")]
    MissingDependency {
        /// The task with the dangling reference.
        key: Key,
        /// The missing key it refers to.
        dependency: Key,
    },
    /// The graph has a cycle.
    #[error("the graph has a cycle: {}", join_path(.path))]
    Cycle {
        /// The keys around the cycle; the first is repeated at the end (`a -> b -> a`).
        path: Vec<Key>,
    },
    /// A task names a function that is not registered (or registered twice).
    #[error("task {key}: {message}")]
    UnknownFunction {
        /// The task.
        key: Key,
        /// The function name it uses.
        function: String,
        /// Why it cannot be used.
        message: String,
    },
    /// A task gives a function the wrong number of arguments.
    #[error("task {key}: function `{function}` takes {expected} argument(s) ({params}) but the task gives {got}")]
    Arity {
        /// The task.
        key: Key,
        /// The function.
        function: String,
        /// Parameters of the function.
        expected: usize,
        /// Arguments the task gives.
        got: usize,
        /// The parameter types, for the message.
        params: String,
    },
    /// A task's arguments, or a literal node's value, nest deeper than
    /// [`MAX_NESTING`](crate::MAX_NESTING) levels: every list, map and nested task of the
    /// arguments and every list or map inside a literal value counts one level.
    #[error("{key}: lists, maps or nested tasks nested deeper than {limit} levels (the limit)")]
    NestedTooDeep {
        /// The task (or literal node).
        key: Key,
        /// The most levels allowed, [`MAX_NESTING`](crate::MAX_NESTING).
        limit: usize,
    },
    /// The requested keys are lists nested deeper than [`MAX_NESTING`](crate::MAX_NESTING)
    /// levels.
    #[error("requested keys nested deeper than {limit} levels of lists (the limit)")]
    RequestTooDeep {
        /// The most levels allowed, [`MAX_NESTING`](crate::MAX_NESTING).
        limit: usize,
    },
}

impl GraphError {
    /// The one key the error is about (the task, or the literal node), if there is one.
    pub fn key(&self) -> Option<&Key> {
        match self {
            GraphError::MissingKey { keys } if keys.len() == 1 => keys.first(),
            GraphError::MissingDependency { key, .. }
            | GraphError::UnknownFunction { key, .. }
            | GraphError::Arity { key, .. }
            | GraphError::NestedTooDeep { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn list(keys: &[Key]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_path(keys: &[Key]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// How a task failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// It did not run because a task it depends on failed (with
    /// [`GetOptions::keep_going`](crate::GetOptions::keep_going)).
    Upstream {
        /// The failed dependency (the first one found).
        key: Key,
    },
    /// The function (or a nested task's) returned an error, panicked, or got a mismatched
    /// argument.
    Call(CallError),
    /// The worker process running the task died.
    WorkerDied {
        /// Its process id.
        pid: i32,
        /// The signal that killed it, if any (e.g. 11 for SIGSEGV).
        signal: Option<i32>,
        /// Its exit code, if it exited.
        exit_code: Option<i32>,
        /// The last lines it wrote to stderr.
        stderr_tail: String,
    },
    /// The task has killed `max_worker_deaths` workers and will not be retried (quarantine, as
    /// Dask distributed's KilledWorker).
    KilledWorkers {
        /// How many workers it killed.
        deaths: u32,
        /// The last death, as [`TaskErrorKind::WorkerDied`] would describe it.
        last: String,
    },
    /// The task ran longer than its timeout; its worker was killed.
    TimedOut {
        /// The timeout in milliseconds.
        millis: u64,
    },
    /// The task used more CPU time than the pool's CPU limit (SIGXCPU).
    CpuTimeExceeded {
        /// The limit in seconds.
        seconds: u64,
    },
    /// The task ran out of its worker's memory limit.
    OutOfMemory {
        /// The limit in bytes.
        limit: u64,
        /// Details (what the worker reported, or how it died).
        detail: String,
    },
    /// The task ran, but its result is not of the type the caller asked for (a typed `map` or
    /// `submit` whose function returned another kind of value).
    Output {
        /// The type the caller expected.
        expected: String,
        /// What the result was.
        got: String,
    },
}

impl TaskErrorKind {
    /// The task ran longer than its timeout ([`TaskErrorKind::TimedOut`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, TaskErrorKind::TimedOut { .. })
    }

    /// The worker process running the task died: a signal, an exit, its memory or CPU-time
    /// limit, or quarantine after repeated deaths. (A timeout kills the worker too, but is
    /// [`is_timeout`](Self::is_timeout).)
    pub fn is_crash(&self) -> bool {
        matches!(
            self,
            TaskErrorKind::WorkerDied { .. }
                | TaskErrorKind::KilledWorkers { .. }
                | TaskErrorKind::OutOfMemory { .. }
                | TaskErrorKind::CpuTimeExceeded { .. }
        )
    }

    /// The error the task function returned, if that is how it failed.
    pub fn returned(&self) -> Option<&ReturnedError> {
        match self {
            TaskErrorKind::Call(CallError::Returned(r)) => Some(r),
            _ => None,
        }
    }
}

impl std::fmt::Display for TaskErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskErrorKind::Upstream { key } => write!(f, "not run: its dependency {key} failed"),
            TaskErrorKind::Call(e) => write!(f, "{e}"),
            TaskErrorKind::WorkerDied {
                pid,
                signal,
                exit_code,
                stderr_tail,
            } => {
                write!(f, "worker process {pid} died")?;
                if let Some(s) = signal {
                    write!(f, " from signal {s} ({})", signal_name(*s))?;
                    if *s == libc_sigsys() {
                        f.write_str(": a system call denied by the pool's sandbox")?;
                    }
                }
                if let Some(c) = exit_code {
                    write!(f, " with exit code {c}")?;
                }
                if !stderr_tail.is_empty() {
                    write!(f, "; its last stderr lines:\n{stderr_tail}")?;
                }
                Ok(())
            }
            TaskErrorKind::KilledWorkers { deaths, last } => write!(
                f,
                "quarantined after killing {deaths} worker(s); last: {last}"
            ),
            TaskErrorKind::TimedOut { millis } => {
                write!(f, "timed out after {millis} ms; its worker was killed")
            }
            TaskErrorKind::CpuTimeExceeded { seconds } => {
                write!(
                    f,
                    "exceeded the CPU time limit of {seconds} s; its worker was killed"
                )
            }
            TaskErrorKind::OutOfMemory { limit, detail } => {
                write!(
                    f,
                    "ran out of its worker's memory limit ({limit} bytes): {detail}"
                )
            }
            TaskErrorKind::Output { expected, got } => {
                write!(
                    f,
                    "its result is not of the expected type: expected {expected}, got {got}"
                )
            }
        }
    }
}

/// SIGSYS, which seccomp's kill action sends (a sandboxed worker made a denied system call).
const fn libc_sigsys() -> i32 {
    31
}

/// Conventional name of a signal number.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "signal",
    }
}

/// A task failed.
///
/// When the task function returned an error, the message holds its type name and whole
/// `source()` chain; on the sync and thread schedulers the error value itself is kept:
/// [`downcast_ref`](Self::downcast_ref) finds it (or an error of its chain) by type, and
/// `source()` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// The key of the task.
    pub key: Key,
    /// The function it called (for nested tasks, the one that failed).
    pub function: String,
    /// What happened.
    pub kind: TaskErrorKind,
}

impl TaskError {
    /// The error the task function returned, or the first error of its `source()` chain, if it
    /// is a `T` and the task ran in this process (sync and thread schedulers).
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.kind.returned()?.downcast_ref()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} ({}) failed: {}",
            self.key, self.function, self.kind
        )
    }
}

impl StdError for TaskError {
    /// The error value the task function returned, when it ran in this process.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.kind.returned()?.error()
    }
}

/// Every error `get` can return.
///
/// ```
/// # use forkgraph::{graph, Scheduler, SyncScheduler};
/// #[forkgraph::task]
/// fn open(path: &str) -> std::io::Result<String> {
///     std::fs::read_to_string(path)
/// }
///
/// let g = graph! { "cfg" => (open, "/no/such/file") };
/// let e = SyncScheduler.get(&g, "cfg").unwrap_err();
/// assert!(e.is_task_error() && !e.is_crash() && !e.is_timeout());
/// assert_eq!(e.key(), Some(&"cfg".into()));
/// let io = e.downcast_ref::<std::io::Error>().unwrap(); // the task's own error (sync, threads)
/// assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
/// let type_name = std::any::type_name::<std::io::Error>(); // "std::io::error::Error"
/// assert!(e.to_string().contains(&format!("{type_name}: No such file or directory")));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The graph or request is invalid; nothing ran.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A task failed; no new task started after it.
    #[error(transparent)]
    Task(#[from] Box<TaskError>),
    /// `get` was interrupted (Ctrl-C); running workers were stopped.
    #[error("interrupted: workers were stopped")]
    Interrupted,
    /// The scheduler itself could not work (starting workers, talking to them), for a reason
    /// given as text.
    #[error("scheduler failure: {0}")]
    Scheduler(String),
    /// The scheduler itself could not work because a system call failed; the `io::Error` is
    /// kept as the `source()`.
    #[error("scheduler failure: {context}: {source}")]
    System {
        /// What the scheduler was doing.
        context: String,
        /// The system error.
        source: std::io::Error,
    },
    /// The call was cancelled (its handle's `cancel`, or a dropped future) before it finished.
    #[error("cancelled before it finished")]
    Cancelled,
    /// The value of a key fetched typed (`get_typed`) is not of the key's type.
    #[error("key {key}: its value is not a `{expected}` (the typed key's type): {got}")]
    TypeMismatch {
        /// The key.
        key: Key,
        /// The key's type.
        expected: String,
        /// What the value was instead.
        got: String,
    },
}

impl Error {
    /// A [`Error::System`] error: `context` says what failed.
    pub fn system(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::System {
            context: context.into(),
            source,
        }
    }

    /// The task error, if this is one.
    pub fn task(&self) -> Option<&TaskError> {
        match self {
            Error::Task(t) => Some(t),
            _ => None,
        }
    }

    /// Whether a task failed ([`Error::Task`]), however.
    pub fn is_task_error(&self) -> bool {
        matches!(self, Error::Task(_))
    }

    /// Whether a task ran longer than its timeout (see [`TaskErrorKind::is_timeout`]).
    pub fn is_timeout(&self) -> bool {
        self.task().is_some_and(|t| t.kind.is_timeout())
    }

    /// Whether the worker process running a task died: a signal, an exit, its memory or CPU
    /// limit (see [`TaskErrorKind::is_crash`]).
    pub fn is_crash(&self) -> bool {
        self.task().is_some_and(|t| t.kind.is_crash())
    }

    /// The key of the task that failed, or the one key a graph error is about.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Error::Task(t) => Some(&t.key),
            Error::Graph(g) => g.key(),
            _ => None,
        }
    }

    /// The error a failed task returned, or an error of its `source()` chain, if it is a `T`
    /// and the task ran in this process (see [`TaskError::downcast_ref`]).
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.task()?.downcast_ref()
    }
}

/// Errors building a scheduler; `source()` is the system error behind it, if any.
#[derive(Debug)]
pub struct BuildError {
    message: String,
    source: Option<std::io::Error>,
}

impl BuildError {
    /// An error for a reason given as text.
    pub fn new(message: impl Into<String>) -> BuildError {
        BuildError {
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by a failed system call: `context` says what failed.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> BuildError {
        BuildError {
            message: context.into(),
            source: Some(source),
        }
    }

    /// What failed, without the system error.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot build scheduler: {}", self.message)?;
        if let Some(e) = &self.source {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl StdError for BuildError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> std::io::Error {
        std::io::Error::from_raw_os_error(13)
    }

    #[test]
    fn build_errors_keep_their_io_cause() {
        let e = BuildError::io("cannot start the fork server", denied());
        let cause = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(cause.and_then(std::io::Error::raw_os_error), Some(13));
        assert_eq!(e.message(), "cannot start the fork server");
        assert!(e
            .to_string()
            .starts_with("cannot build scheduler: cannot start the fork server: "));
        let plain = BuildError::new("no workers");
        assert!(plain.source().is_none());
        assert_eq!(plain.to_string(), "cannot build scheduler: no workers");
    }

    #[test]
    fn scheduler_errors_keep_their_io_cause() {
        let e = Error::system("poll", denied());
        let cause = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(cause.and_then(std::io::Error::raw_os_error), Some(13));
        assert!(e.to_string().starts_with("scheduler failure: poll: "));
        assert!(!e.is_task_error() && !e.is_crash() && !e.is_timeout() && e.key().is_none());
    }

    #[test]
    fn helpers_classify_task_errors() {
        let task = |kind| {
            Error::Task(Box::new(TaskError {
                key: "k".into(),
                function: "f".into(),
                kind,
            }))
        };
        let died = task(TaskErrorKind::WorkerDied {
            pid: 1,
            signal: Some(9),
            exit_code: None,
            stderr_tail: String::new(),
        });
        assert!(died.is_crash() && !died.is_timeout() && died.is_task_error());
        let oom = task(TaskErrorKind::OutOfMemory {
            limit: 1,
            detail: String::new(),
        });
        assert!(oom.is_crash());
        let late = task(TaskErrorKind::TimedOut { millis: 5 });
        assert!(late.is_timeout() && !late.is_crash());
        assert_eq!(late.key(), Some(&Key::from("k")));
        let graph = Error::Graph(GraphError::MissingDependency {
            key: "a".into(),
            dependency: "b".into(),
        });
        assert_eq!(graph.key(), Some(&Key::from("a")));
        assert!(!graph.is_task_error());
    }
}
