//! Errors of `get`: graph errors found before anything runs, and task errors found while running.

use forkgraph_worker::CallError;

use crate::key::Key;

/// Something wrong with the graph or the request, found before any task runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
pub enum TaskErrorKind {
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
}

impl std::fmt::Display for TaskErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
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
        }
    }
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {key} ({function}) failed: {kind}")]
pub struct TaskError {
    /// The key of the task.
    pub key: Key,
    /// The function it called (for nested tasks, the one that failed).
    pub function: String,
    /// What happened.
    pub kind: TaskErrorKind,
}

/// Every error `get` can return.
#[derive(Debug, thiserror::Error)]
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
    /// The scheduler itself could not work (starting workers, talking to them).
    #[error("scheduler failure: {0}")]
    Scheduler(String),
}

impl Error {
    /// The task error, if this is one.
    pub fn task(&self) -> Option<&TaskError> {
        match self {
            Error::Task(t) => Some(t),
            _ => None,
        }
    }
}

/// Errors building a scheduler.
#[derive(Debug, thiserror::Error)]
#[error("cannot build scheduler: {0}")]
pub struct BuildError(pub String);
