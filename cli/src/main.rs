//! `forkgraph`: run a graph of commands (see the workspace README, "Command-line runner").

// As in the library: input errors are cold (once per run, before anything runs).
#![allow(clippy::result_large_err)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use forkgraph_cli::{
    clean, dot, run, InputError, Plan, RunError, RunOptions, EXIT_BAD_INPUT, EXIT_INTERRUPTED_BASE,
    EXIT_OK, EXIT_RUNNER_ERROR, EXIT_TASK_FAILED,
};

// The command task lives in the library: make sure the linker keeps it (the fork server and
// the workers find it in the link-time table).
forkgraph::link!(forkgraph_cli);

#[derive(Debug, Parser)]
#[command(
    name = "forkgraph",
    version,
    about = "Run a graph of commands (TOML or JSON) with resume, atomic outputs and per-task logs",
    after_help = "Exit codes: 0 all done, 1 a task failed, 2 bad input, 3 runner error, \
                  128+N interrupted by signal N (130 SIGINT, 143 SIGTERM)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the graph (only what is not up to date).
    Run {
        /// The graph file (.toml, or .json).
        file: PathBuf,
        /// Commands at once (default: [pool] jobs, else the number of CPUs).
        #[arg(short = 'j', long)]
        jobs: Option<usize>,
        /// Run only these tasks and what they need.
        #[arg(long, num_args = 1..)]
        keys: Vec<String>,
        /// Go on with tasks that do not depend on a failed one (make -k).
        #[arg(short = 'k', long)]
        keep_going: bool,
        /// Print what would run, and why, without running anything.
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Show a progress bar.
        #[arg(long)]
        progress: bool,
        /// Write trace.json, profile.svg and graph.dot to this folder.
        #[arg(long, value_name = "DIR")]
        profile: Option<PathBuf>,
        /// Skip by recorded checksums of inputs and command line instead of times.
        #[arg(long)]
        checksum: bool,
        /// Run every selected task, up to date or not.
        #[arg(long)]
        force: bool,
        /// Seconds between SIGTERM and SIGKILL of a command's process group, on timeout and
        /// on interrupt (default: [pool] kill_grace, else 2).
        #[arg(long, value_name = "SECS")]
        kill_grace: Option<f64>,
    },
    /// Validate the file and print the run order and what would be skipped.
    Check {
        /// The graph file.
        file: PathBuf,
        /// Only these tasks and what they need.
        #[arg(long, num_args = 1..)]
        keys: Vec<String>,
        /// Judge up-to-date by checksums, as `run --checksum` would.
        #[arg(long)]
        checksum: bool,
    },
    /// Print the graph in Graphviz DOT, coloured by the last run's outcome.
    Dot {
        /// The graph file.
        file: PathBuf,
        /// Only these tasks and what they need.
        #[arg(long, num_args = 1..)]
        keys: Vec<String>,
    },
    /// Remove the declared outputs.
    Clean {
        /// The graph file.
        file: PathBuf,
        /// Only these tasks and what they need.
        #[arg(long, num_args = 1..)]
        keys: Vec<String>,
    },
}

fn load(file: &std::path::Path) -> Result<Plan, InputError> {
    let parsed = forkgraph_cli::parse_file(file)?;
    forkgraph_cli::build(&parsed)
}

fn bad(e: &dyn std::fmt::Display) -> i32 {
    eprintln!("forkgraph: error: {e}");
    EXIT_BAD_INPUT
}

fn main_code(cli: Cli) -> i32 {
    match cli.command {
        Cmd::Run {
            file,
            jobs,
            keys,
            keep_going,
            dry_run,
            progress,
            profile,
            checksum,
            force,
            kill_grace,
        } => {
            forkgraph_cli::sys::install_interrupt_handlers();
            if jobs == Some(0) {
                return bad(&"-j must be at least 1");
            }
            let kill_grace = match kill_grace {
                None => None,
                Some(g) if g.is_finite() && (0.0..=3600.0).contains(&g) => {
                    Some(std::time::Duration::from_secs_f64(g))
                }
                Some(g) => {
                    return bad(&format!(
                        "--kill-grace must be between 0 and 3600 seconds, not {g}"
                    ))
                }
            };
            let plan = match load(&file) {
                Ok(p) => p,
                Err(e) => return bad(&e),
            };
            let opts = RunOptions {
                jobs,
                keys,
                keep_going,
                dry_run,
                progress,
                profile,
                checksum,
                force,
                kill_grace,
            };
            match run(&plan, &opts) {
                Ok(r) => match r.interrupted {
                    Some(sig) => EXIT_INTERRUPTED_BASE + sig,
                    None if r.failed() => EXIT_TASK_FAILED,
                    None => EXIT_OK,
                },
                Err(RunError::Input(e)) => bad(&e),
                Err(e) => {
                    eprintln!("forkgraph: error: {e}");
                    EXIT_RUNNER_ERROR
                }
            }
        }
        Cmd::Check {
            file,
            keys,
            checksum,
        } => {
            let res = load(&file).and_then(|plan| {
                let mask = plan.select(&keys)?;
                let p = run::preview(&plan, &mask, checksum, false)?;
                run::print_preview(&plan, &p);
                Ok(())
            });
            match res {
                Ok(()) => EXIT_OK,
                Err(e) => bad(&e),
            }
        }
        Cmd::Dot { file, keys } => {
            let res = load(&file).and_then(|plan| {
                let mask = plan.select(&keys)?;
                let report = forkgraph_cli::Report::load(&plan);
                let preview = match &report {
                    Some(_) => None,
                    None => run::preview(&plan, &mask, false, false).ok(),
                };
                print!(
                    "{}",
                    dot::dot(&plan, &mask, report.as_ref(), preview.as_deref())
                );
                Ok(())
            });
            match res {
                Ok(()) => EXIT_OK,
                Err(e) => bad(&e),
            }
        }
        Cmd::Clean { file, keys } => {
            let (plan, mask) = match load(&file).and_then(|plan| {
                let mask = plan.select(&keys)?;
                Ok((plan, mask))
            }) {
                Ok(x) => x,
                Err(e) => return bad(&e),
            };
            // A run in progress writes temporaries that clean would remove under it: clean
            // takes the state folder's lock too (when there is a state folder: none, no run).
            let st = &plan.settings.state_dir;
            let _lock = if st.is_dir() {
                match forkgraph_cli::state::lock(st) {
                    Ok(l) => Some(l),
                    Err(forkgraph_cli::state::LockError::Held { pid }) => {
                        eprintln!(
                            "forkgraph: error: {}",
                            RunError::Locked {
                                state_dir: st.clone(),
                                pid
                            }
                        );
                        return EXIT_RUNNER_ERROR;
                    }
                    Err(forkgraph_cli::state::LockError::Io(e)) => {
                        eprintln!(
                            "forkgraph: error: locking {}: {e}",
                            forkgraph_cli::state::lock_path(st).display()
                        );
                        return EXIT_RUNNER_ERROR;
                    }
                }
            } else {
                None
            };
            for p in clean::clean(&plan, &mask) {
                println!("removed {}", p.display());
            }
            EXIT_OK
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let hint = (e.kind() == clap::error::ErrorKind::MissingRequiredArgument)
            .then(|| file_after_keys(std::env::args_os().skip(1)))
            .flatten();
        if let Some((command, file)) = hint {
            // clap's message first, then the likely cause: `--keys` took the file as a key.
            let _ = e.print();
            eprintln!(
                "hint: `--keys` takes every word after it, so {file:?} was read as a key; put \
                 the file first (`forkgraph {command} {file} --keys ...`)"
            );
            std::process::exit(2);
        }
        e.exit()
    });
    let code = main_code(cli);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The subcommand and the last word after `--keys` on the command line, when that word names
/// an existing file: the graph file given after the keys.
fn file_after_keys(args: impl Iterator<Item = std::ffi::OsString>) -> Option<(String, String)> {
    let args: Vec<String> = args.filter_map(|a| a.into_string().ok()).collect();
    let command = args.first().filter(|c| !c.starts_with('-'))?;
    let at = args.iter().position(|a| a == "--keys")?;
    let last = args[at + 1..]
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .last()?;
    std::path::Path::new(last)
        .is_file()
        .then(|| (command.clone(), last.clone()))
}
