//! The `forkgraph` command-line runner: graphs of shell commands in a TOML or JSON file, run by
//! forkgraph's engine on a process pool, with resume, atomic outputs, per-task logs and a
//! summary. See the "Command-line runner" section of the workspace README for the file schema,
//! exit codes and resume semantics.
//!
//! The library side is exposed so that tests (and the parser fuzzing) can call it; the binary
//! is `src/main.rs`.

// Input errors carry locations and keys; one is returned at most once per run, before
// anything runs, so their size costs nothing that matters.
#![allow(clippy::result_large_err)]

pub mod clean;
pub mod command;
pub mod dot;
pub mod error;
pub mod plan;
pub mod run;
pub mod schema;
pub mod state;
pub mod sys;

pub use error::{InputError, Location};
pub use plan::{build, Plan};
pub use run::{run, Report, RunError, RunOptions, Status};
pub use schema::{parse_file, parse_str};

/// Exit code: every selected task is done (ran or up to date).
pub const EXIT_OK: i32 = 0;
/// Exit code: a task failed.
pub const EXIT_TASK_FAILED: i32 = 1;
/// Exit code: bad input (the file, or the command line), found before anything ran.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code: the runner itself failed (its state folder, the process pool).
pub const EXIT_RUNNER_ERROR: i32 = 3;
/// Exit code base for an interrupted run: 128 + the signal (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
pub const EXIT_INTERRUPTED_BASE: i32 = 128;
