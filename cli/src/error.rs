//! Errors of the command-line runner: bad input (reported before anything runs) and failures
//! of the run itself.

use std::fmt;
use std::path::PathBuf;

/// Where a task entry is in its file: `file:line:column`, or `file: task entry N` for JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The graph file.
    pub file: PathBuf,
    /// 1-based line and column of the entry, where known (TOML).
    pub line_col: Option<(usize, usize)>,
    /// 0-based index of the `[[task]]` entry.
    pub entry: usize,
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map_or_else(String::new, |k| format!("; did you mean `{k}`?"))
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line_col {
            Some((l, c)) => write!(f, "{}:{l}:{c}", self.file.display()),
            None => write!(f, "{}: task entry {}", self.file.display(), self.entry + 1),
        }
    }
}

/// A graph file that cannot run, found before any command starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The file cannot be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Malformed TOML or JSON, an unknown field, or a value of the wrong type.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A task entry is invalid (bad template, no command, bad limit...).
    #[error("{at}: task `{key}`: {message}")]
    Task {
        /// Where the entry is.
        at: Location,
        /// The task's key (expanded, or the template when expansion failed).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Two tasks have the same key.
    #[error("{second}: task `{key}` is declared twice (first at {first})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// The first declaration.
        first: Box<Location>,
        /// The second.
        second: Location,
    },
    /// A task depends on a key no task has.
    #[error("{at}: task `{key}` depends on `{dependency}`, which no task declares{}", did_you_mean(.suggestion))]
    MissingDependency {
        /// Where the dependent is.
        at: Location,
        /// The dependent.
        key: String,
        /// The missing key.
        dependency: String,
        /// A declared key close to it (a typo), if any.
        suggestion: Option<String>,
    },
    /// Two tasks declare the same output file.
    #[error("{at}: tasks `{first}` and `{second}` both declare the output {}", output.display())]
    DuplicateOutput {
        /// Where the second is.
        at: Location,
        /// The file.
        output: PathBuf,
        /// The first task.
        first: String,
        /// The second task.
        second: String,
    },
    /// The dependencies form a cycle.
    #[error("{at}: dependency cycle: {}", path.join(" -> "))]
    Cycle {
        /// Where the cycle's first task is.
        at: Location,
        /// The keys around the cycle, the first repeated at the end.
        path: Vec<String>,
    },
    /// A setting in `[pool]` is invalid.
    #[error("{}: [pool]: {message}", file.display())]
    Pool {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `--keys` names a key the file does not have.
    #[error("{}: no task has the key `{key}` (given with --keys){}", file.display(), did_you_mean(.suggestion))]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
        /// A declared key close to it (a typo), if any.
        suggestion: Option<String>,
    },
}
