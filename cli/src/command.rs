//! One command: deciding whether it is up to date, rendering its command line, and running it
//! inside a pool worker (the registered task `forkgraph.command`).
//!
//! # Atomic outputs
//! A command writes each output `dir/name` to `dir/.forkgraph-tmp-<runner pid>.name` (what
//! `{out}`, `{outN}` and `$FORKGRAPH_OUT_N` stand for); after it exits with status 0 the
//! worker renames each temporary into place. A command killed, failed or interrupted leaves only
//! temporaries, which the runner removes at the end of its run (and a later run removes those a
//! killed runner left, before the task runs again). An output that a successful command wrote in
//! place (and not its temporary) fails the task: it could have been left half-written; such an
//! output, and one a failing command changed in place, is removed, or the next run would take it
//! as up to date.
//! With `atomic = false`, the command writes its outputs in place; the worker creates a marker
//! `dir/.forkgraph-partial.name` before it starts and removes it after success, and an output
//! with a marker never counts as done.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::plan::{CommandLine, PlannedTask};
use crate::state::{self, Record};
use crate::sys;

/// The registered name of the command task.
pub const FUNCTION: &str = "forkgraph.command";

/// Everything a worker needs to run one task (sent as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The key.
    pub key: String,
    /// Program and arguments (a shell line is `[shell, "-c", line]`).
    pub program: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Inputs.
    pub inputs: Vec<PathBuf>,
    /// Outputs.
    pub outputs: Vec<PathBuf>,
    /// Whether outputs go through temporaries.
    pub atomic: bool,
    /// The temporary of each output (when atomic).
    pub temps: Vec<PathBuf>,
    /// The log file.
    pub log: PathBuf,
    /// Time limit per attempt, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Between SIGTERM and SIGKILL, in milliseconds.
    pub kill_grace_ms: u64,
    /// Re-runs after a failure.
    pub retries: u32,
    /// RLIMIT_AS.
    pub memory_limit: Option<u64>,
    /// Resume by checksums (else by modification times).
    pub checksum: bool,
    /// The last success's record, for `--checksum`.
    pub previous: Option<Record>,
    /// Hash of the command line, environment and working directory.
    pub command_hash: String,
    /// The runner's journal (the worker does not write it: it returns the record, which the
    /// runner appends on rank 0).
    pub journal: PathBuf,
    /// Run even when up to date.
    pub force: bool,
    /// The worker is sandboxed: its seccomp filter refuses `prctl(PR_SET_PDEATHSIG)`, so the
    /// command relies on the worker and the fork server (child subreapers) to be killed.
    #[serde(default)]
    pub sandboxed: bool,
    /// The interrupt marker (see [`crate::state::stop_path`]): while it exists no command
    /// starts, and a running one gets SIGTERM, then SIGKILL after `kill_grace_ms`.
    #[serde(default)]
    pub stop: Option<PathBuf>,
    /// Where the commit journal of a task with several outputs goes
    /// ([`crate::state::commits_dir`]).
    #[serde(default)]
    pub commits: Option<PathBuf>,
    /// The runner's process id (for the test hook `FORKGRAPH_TEST_CRASH_MID_COMMIT`).
    #[serde(default)]
    pub runner_pid: u32,
}

/// How often a waiting worker looks at the interrupt marker.
const STOP_POLL: Duration = Duration::from_millis(50);

/// The prefix of the error of a task stopped by an interrupt (the runner reports it as
/// interrupted, not failed).
pub const INTERRUPTED: &str = "interrupted: ";

fn stopping(spec: &Spec) -> bool {
    spec.stop
        .as_ref()
        .is_some_and(|p| fs::symlink_metadata(p).is_ok())
}

/// Why a task must run, or that it need not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Its outputs are complete and up to date: skipped.
    UpToDate,
    /// It must run, and why.
    Stale(String),
}

/// The temporary path of an output for a runner with process id `pid`.
pub fn temp_path(output: &Path, pid: u32) -> PathBuf {
    let name = output
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    output.with_file_name(format!(".forkgraph-tmp-{pid}.{name}"))
}

/// The marker of an output being written in place (`atomic = false`).
pub fn partial_marker(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    output.with_file_name(format!(".forkgraph-partial.{name}"))
}

/// Removes the temporaries that any runner left (a killed one leaves them) for the outputs
/// given, reading each of their folders once.
pub fn remove_all_stale_temps<'a>(outputs: impl IntoIterator<Item = &'a PathBuf>) {
    let mut by_dir: std::collections::HashMap<&Path, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    for o in outputs {
        if let (Some(d), Some(n)) = (o.parent(), o.file_name()) {
            by_dir
                .entry(d)
                .or_default()
                .insert(n.to_string_lossy().into_owned());
        }
    }
    for (dir, names) in by_dir {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            let Some(rest) = n.strip_prefix(".forkgraph-tmp-") else {
                continue;
            };
            let Some((pid, name)) = rest.split_once('.') else {
                continue;
            };
            if pid.chars().all(|c| c.is_ascii_digit()) && names.contains(name) {
                remove_any(&e.path());
            }
        }
    }
}

/// Removes temporaries of `output` left by any runner (a killed one leaves them).
pub fn remove_stale_temps(output: &Path) {
    let (Some(dir), Some(name)) = (output.parent(), output.file_name()) else {
        return;
    };
    let suffix = format!(".{}", name.to_string_lossy());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if let Some(rest) = n.strip_prefix(".forkgraph-tmp-") {
                if let Some(pid) = rest.strip_suffix(suffix.as_str()) {
                    if pid.chars().all(|c| c.is_ascii_digit()) {
                        remove_any(&e.path());
                    }
                }
            }
        }
    }
}

/// Removes a file or a folder, whichever it is (no error if absent).
pub fn remove_any(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

fn mtime(p: &Path) -> io::Result<SystemTime> {
    fs::metadata(p)?.modified()
}

/// Whether a task is up to date. `dependency_ran`: a task it depends on ran (or will run).
///
/// # Errors
/// When an input does not exist (and `missing_input_ok` is false) or cannot be read.
#[allow(clippy::too_many_arguments)]
pub fn freshness(
    inputs: &[PathBuf],
    outputs: &[PathBuf],
    atomic: bool,
    checksum: Option<(&str, Option<&Record>)>,
    force: bool,
    dependency_ran: bool,
    missing_input_ok: bool,
) -> Result<Freshness, String> {
    let stale = |s: String| Ok(Freshness::Stale(s));
    for i in inputs {
        if fs::metadata(i).is_err() {
            if missing_input_ok {
                return stale(format!("input {} does not exist yet", i.display()));
            }
            return Err(format!(
                "input {} does not exist (and no task declares it as an output)",
                i.display()
            ));
        }
    }
    if force {
        return stale("--force".into());
    }
    if outputs.is_empty() {
        return stale("it declares no outputs".into());
    }
    if dependency_ran {
        return stale("a task it depends on runs".into());
    }
    for o in outputs {
        if fs::symlink_metadata(o).is_err() {
            return stale(format!("output {} is missing", o.display()));
        }
        if !atomic && fs::symlink_metadata(partial_marker(o)).is_ok() {
            return stale(format!("output {} was left incomplete", o.display()));
        }
    }
    match checksum {
        Some((command, previous)) => {
            let Some(prev) = previous else {
                return stale("no checksum record of an earlier success".into());
            };
            if prev.command != command {
                return stale("its command line changed".into());
            }
            let now = hash_inputs(inputs).map_err(|e| e.to_string())?;
            if prev.inputs != now {
                return stale("an input's contents changed".into());
            }
            Ok(Freshness::UpToDate)
        }
        None => {
            let newest_in = inputs
                .iter()
                .map(|i| mtime(i).map_err(|e| format!("{}: {e}", i.display())))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .max();
            for o in outputs {
                let t = mtime(o).map_err(|e| format!("{}: {e}", o.display()))?;
                if newest_in.is_some_and(|n| n > t) {
                    return stale(format!("output {} is older than an input", o.display()));
                }
            }
            Ok(Freshness::UpToDate)
        }
    }
}

fn hash_inputs(inputs: &[PathBuf]) -> io::Result<Vec<(PathBuf, String)>> {
    inputs
        .iter()
        .map(|i| {
            state::hash_file(i)
                .map(|h| (i.clone(), h))
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", i.display())))
        })
        .collect()
}

/// A path as the command sees it: relative to its working directory when inside it.
fn shown(p: &Path, cwd: &Path) -> String {
    match p.strip_prefix(cwd) {
        Ok(r) if !r.as_os_str().is_empty() => r.display().to_string(),
        _ => p.display().to_string(),
    }
}

/// Quotes a word for `sh` when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./@%+=:,-".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Fills `{in}`, `{out}`, `{inN}`, `{outN}` in one template. `quote`: shell-quote paths.
fn fill(t: &str, ins: &[String], outs: &[String], quote: bool) -> Result<String, String> {
    let q = |s: &String| if quote { shell_quote(s) } else { s.clone() };
    let mut out = String::new();
    let mut rest = t;
    while !rest.is_empty() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            out.push_str(&rest[..1]);
            rest = &rest[2..];
            continue;
        }
        if rest.starts_with('{') {
            if let Some(end) = rest.find('}') {
                let name = &rest[1..end];
                if crate::plan::is_io_placeholder(name) {
                    let (list, idx, which) = if let Some(n) = name.strip_prefix("out") {
                        (outs, n, "output")
                    } else {
                        (ins, &name[2..], "input")
                    };
                    if idx.is_empty() {
                        out.push_str(&list.iter().map(q).collect::<Vec<_>>().join(" "));
                    } else {
                        let k: usize = idx
                            .parse()
                            .map_err(|_| format!("bad placeholder {{{name}}}"))?;
                        let v = list.get(k).ok_or_else(|| {
                            let n = list.len();
                            let s = if n == 1 { "" } else { "s" };
                            format!("`{{{name}}}`: the task declares {n} {which}{s}")
                        })?;
                        out.push_str(&q(v));
                    }
                    rest = &rest[end + 1..];
                    continue;
                }
            }
        }
        let ch = rest.chars().next().unwrap_or(' ');
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    Ok(out)
}

/// The program, arguments and environment of a task, with `{in}`/`{out}` filled: outputs as
/// `outs` says (their temporaries when running, their paths for display).
///
/// # Errors
/// A placeholder that names an input or output the task does not declare.
pub fn render(task: &PlannedTask, shell: &str, outs: &[PathBuf]) -> Result<Rendered, String> {
    let ins: Vec<String> = task.inputs.iter().map(|p| shown(p, &task.cwd)).collect();
    let outs: Vec<String> = outs.iter().map(|p| shown(p, &task.cwd)).collect();
    let program = match &task.command {
        CommandLine::Shell(line) => vec![
            shell.to_string(),
            "-c".to_string(),
            fill(line, &ins, &outs, true).map_err(|m| format!("cmd: {m}"))?,
        ],
        CommandLine::Argv(argv) => {
            let mut v = Vec::new();
            for a in argv {
                match a.as_str() {
                    "{in}" => v.extend(ins.iter().cloned()),
                    "{out}" => v.extend(outs.iter().cloned()),
                    _ => v.push(fill(a, &ins, &outs, false).map_err(|m| format!("argv: {m}"))?),
                }
            }
            v
        }
    };
    let mut env = Vec::new();
    for (k, v) in &task.env {
        env.push((
            k.clone(),
            fill(v, &ins, &outs, false).map_err(|m| format!("env {k}: {m}"))?,
        ));
    }
    for (n, p) in ins.iter().enumerate() {
        env.push((format!("FORKGRAPH_IN_{n}"), p.clone()));
    }
    for (n, p) in outs.iter().enumerate() {
        env.push((format!("FORKGRAPH_OUT_{n}"), p.clone()));
    }
    if let Some(first) = outs.first() {
        env.push(("FORKGRAPH_OUT".into(), first.clone()));
    }
    env.push(("FORKGRAPH_KEY".into(), task.key.clone()));
    Ok((program, env))
}

/// A rendered command: program and arguments, and environment.
pub type Rendered = (Vec<String>, Vec<(String, String)>);

/// How the command line reads in listings.
pub fn display(program: &[String]) -> String {
    if program.len() == 3 && program[1] == "-c" {
        return program[2].clone();
    }
    program
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A log file name for a key: the key with unusual characters replaced, and a hash of the
/// key when anything was replaced (so two keys never share a log).
pub fn log_name(key: &str) -> String {
    let clean: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    if clean == key && !key.starts_with('.') {
        format!("{clean}.log")
    } else {
        format!("{clean}-{}.log", &state::hash_strings([key])[..8])
    }
}

/// The last `lines` lines of a file (at most 8 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(8192);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| printable(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Longest line of a log's tail as shown in a failure message (characters).
const TAIL_LINE_MAX: usize = 400;

/// A log line as it may be printed on a terminal: control characters (escape sequences, bells,
/// carriage returns) escaped, and cut at [`TAIL_LINE_MAX`] characters.
fn printable(line: &str) -> String {
    let mut out = String::new();
    for (n, c) in line.chars().enumerate() {
        if n == TAIL_LINE_MAX {
            out.push_str(" [...]");
            break;
        }
        if c == '\t' || !c.is_control() {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// How one attempt ended.
enum Ended {
    Exited(i32),
    Signaled(i32),
    TimedOut(Duration),
    /// Stopped by an interrupt: whether it ended within the grace period after SIGTERM.
    Interrupted(bool),
    NotStarted(String),
}

impl Ended {
    fn describe(&self) -> String {
        match self {
            Ended::Exited(c) => format!("exit code {c}"),
            Ended::Signaled(s) => format!("killed by signal {s} ({})", sys::signal_name(*s)),
            Ended::TimedOut(d) => format!(
                "timed out after {:.3}s (its process group was killed)",
                d.as_secs_f64()
            ),
            Ended::Interrupted(true) => {
                "its process group got SIGTERM and it ended within the grace period".into()
            }
            Ended::Interrupted(false) => {
                "its process group got SIGTERM, then SIGKILL after the grace period".into()
            }
            Ended::NotStarted(e) => format!("could not start: {e}"),
        }
    }
}

fn run_once(spec: &Spec, log: &fs::File) -> Ended {
    let (Ok(out), Ok(err)) = (log.try_clone(), log.try_clone()) else {
        return Ended::NotStarted("cannot share the log file".into());
    };
    let mut cmd = Command::new(&spec.program[0]);
    cmd.args(&spec.program[1..])
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    sys::confine_command(&mut cmd, spec.memory_limit, !spec.sandboxed);
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        // A missing working directory fails the spawn with ENOENT too, which would otherwise
        // read as if the program (often /bin/sh) were missing.
        Err(_) if !spec.cwd.is_dir() => {
            return Ended::NotStarted(format!(
                "its working directory {} does not exist or is not a directory (cwd)",
                spec.cwd.display()
            ))
        }
        Err(e) => return Ended::NotStarted(format!("{}: {e}", spec.program[0])),
    };
    let pgid = child.id();
    let deadline = spec.timeout_ms.map(|t| started + Duration::from_millis(t));
    // Wait for the exit, the deadline, or the interrupt marker (looked at every STOP_POLL).
    let mut timed_out = None;
    let mut interrupted = None;
    loop {
        let tick = Instant::now() + STOP_POLL;
        let until = match (deadline, spec.stop.is_some()) {
            (Some(d), true) => Some(d.min(tick)),
            (Some(d), false) => Some(d),
            (None, true) => Some(tick),
            (None, false) => None,
        };
        if sys::wait_until(&child, until).unwrap_or(true) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = Some(started.elapsed());
            break;
        }
        if stopping(spec) {
            interrupted = Some(());
            break;
        }
    }
    let mut graceful = true;
    if timed_out.is_some() || interrupted.is_some() {
        sys::signal_group(pgid, libc::SIGTERM);
        let grace = Instant::now() + Duration::from_millis(spec.kill_grace_ms);
        if !sys::wait_until(&child, Some(grace)).unwrap_or(false) {
            graceful = false;
            sys::signal_group(pgid, libc::SIGKILL);
        }
    }
    let status = child.wait();
    // Whatever the command left running in its group, or outside it, goes with it.
    sys::signal_group(pgid, libc::SIGKILL);
    sys::kill_descendants();
    if let Some(d) = timed_out {
        return Ended::TimedOut(d);
    }
    if interrupted.is_some() {
        return Ended::Interrupted(graceful);
    }
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Ended::Exited(c),
            (None, Some(sig)) => Ended::Signaled(sig),
            _ => Ended::Exited(-1),
        },
        Err(e) => Ended::NotStarted(e.to_string()),
    }
}

/// What identifies a file's version: inode, size, modification and change times. A write in
/// place changes the change time (at least), whatever the clocks' granularity.
type Identity = Option<(u64, u64, i64, i64, i64, i64)>;

fn identity(p: &Path) -> Identity {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).ok().map(|m| {
        (
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    })
}

/// After a failed attempt: removes each (atomic) output the command changed in place instead
/// of writing its temporary. It is a failed command's, possibly partial, and newer than its
/// inputs: kept, the next run would skip the task as up to date. Returns a note for the
/// failure message (empty when there was none).
fn discard_in_place(spec: &Spec, before: &[Identity]) -> String {
    if !spec.atomic {
        return String::new();
    }
    let mut removed = Vec::new();
    for (o, was) in spec.outputs.iter().zip(before) {
        let now = identity(o);
        if now.is_some() && now != *was {
            remove_any(o);
            removed.push(o.display().to_string());
        }
    }
    if removed.is_empty() {
        String::new()
    } else {
        format!(
            " (it had written {} in place, not to its temporary path: removed)",
            removed.join(", ")
        )
    }
}

/// Moves each temporary into place after a successful attempt. `before`: each output's
/// identity before the attempt.
fn publish(spec: &Spec, before: &[Identity], record: Option<&Record>) -> Result<(), String> {
    if !spec.atomic {
        for o in &spec.outputs {
            if fs::symlink_metadata(o).is_err() {
                return Err(format!(
                    "it succeeded but did not write its output {}",
                    o.display()
                ));
            }
        }
        for o in &spec.outputs {
            let _ = fs::remove_file(partial_marker(o));
        }
        return Ok(());
    }
    for ((o, t), was) in spec.outputs.iter().zip(&spec.temps).zip(before) {
        if fs::symlink_metadata(t).is_err() {
            let now = identity(o);
            let in_place = now.is_some() && now != *was;
            return Err(if in_place {
                // Possibly half-written, and newer than its inputs: kept, it would be skipped
                // as up to date by the next run.
                remove_any(o);
                format!(
                    "it wrote its output {} in place, not to its temporary path (removed): write to {{out}} / $FORKGRAPH_OUT_N (renamed on success), or set atomic = false",
                    o.display()
                )
            } else {
                format!(
                    "it succeeded but did not write its output {} (to {{out}} / $FORKGRAPH_OUT_N)",
                    o.display()
                )
            });
        }
    }
    // Several outputs: journal the renames first, so that a crash between two of them is
    // finished by the next runner (resume never sees one new output beside an old one). With
    // a record (`--checksum`), journal it too and leave the journal for the runner, which
    // removes it once it has appended the record.
    let commit_of = |record| state::Commit {
        key: spec.key.clone(),
        renames: spec
            .temps
            .iter()
            .cloned()
            .zip(spec.outputs.clone())
            .collect(),
        record,
    };
    let journal = match &spec.commits {
        Some(dir) if spec.outputs.len() > 1 || (record.is_some() && !spec.outputs.is_empty()) => {
            Some(
                state::begin_commit(dir, &commit_of(record.cloned()))
                    .map_err(|e| format!("writing its commit journal in {}: {e}", dir.display()))?,
            )
        }
        _ => None,
    };
    let crash_hook = std::env::var_os("FORKGRAPH_TEST_CRASH_MID_COMMIT")
        .is_some_and(|k| k.to_string_lossy() == spec.key);
    for (n, (o, t)) in spec.outputs.iter().zip(&spec.temps).enumerate() {
        if n == 1 && crash_hook {
            // Test hook: the runner and this worker die between two renames.
            sys::kill_hard(spec.runner_pid);
            sys::kill_hard(std::process::id());
        }
        if fs::symlink_metadata(o).is_ok_and(|m| m.is_dir()) {
            let _ = fs::remove_dir_all(o);
        }
        if let Err(e) = fs::rename(t, o) {
            // The task fails: its journal must not carry its record, or the teardown (or the
            // next run) would finish the renames and record it as done for `--checksum`.
            if let (Some(dir), Some(_)) = (&spec.commits, record) {
                let _ = state::begin_commit(dir, &commit_of(None));
            }
            return Err(format!("renaming {} to {}: {e}", t.display(), o.display()));
        }
    }
    if std::env::var_os("FORKGRAPH_TEST_CRASH_AFTER_COMMIT")
        .is_some_and(|k| k.to_string_lossy() == spec.key)
    {
        // Test hook: the runner and this worker die after the renames, before the runner
        // has the record.
        sys::kill_hard(spec.runner_pid);
        sys::kill_hard(std::process::id());
    }
    if let (Some(j), None) = (journal, record) {
        let _ = fs::remove_file(j);
    }
    Ok(())
}

/// Runs a task in this (worker) process: checks whether it is up to date, runs its command
/// with retries, publishes its outputs. `Ok(Ran(None))`: it ran; `Ok(UpToDate)`: it was up
/// to date; with `--checksum`, `Ok(Ran(Some(record)))` carries what the runner records.
///
/// # Errors
/// A message with how the command ended, the log's path and its last lines.
pub fn execute(spec: &Spec, dependency_ran: bool) -> Result<Outcome, String> {
    let checksum = spec
        .checksum
        .then_some((spec.command_hash.as_str(), spec.previous.as_ref()));
    let fresh = freshness(
        &spec.inputs,
        &spec.outputs,
        spec.atomic,
        checksum,
        spec.force,
        dependency_ran,
        false,
    )?;
    if fresh == Freshness::UpToDate {
        return Ok(Outcome::UpToDate);
    }
    if stopping(spec) {
        return Err(format!("{INTERRUPTED}not started"));
    }
    let hashes = if spec.checksum {
        Some(hash_inputs(&spec.inputs).map_err(|e| e.to_string())?)
    } else {
        None
    };
    for p in spec.outputs.iter().chain(&spec.temps) {
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
    }
    if let Some(d) = spec.log.parent() {
        let _ = fs::create_dir_all(d);
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&spec.log)
        .and_then(|f| {
            drop(f);
            fs::OpenOptions::new().append(true).open(&spec.log)
        })
        .map_err(|e| format!("opening its log {}: {e}", spec.log.display()))?;
    if !spec.atomic {
        for o in &spec.outputs {
            fs::File::create(partial_marker(o))
                .map_err(|e| format!("creating {}: {e}", partial_marker(o).display()))?;
        }
    }
    let record = hashes.map(|inputs| Record {
        key: spec.key.clone(),
        command: spec.command_hash.clone(),
        inputs,
    });
    let mut last = String::new();
    for attempt in 0..=spec.retries {
        if attempt > 0 {
            use std::io::Write;
            let _ = writeln!(
                &log,
                "[forkgraph] attempt {} of {} after: {last}",
                attempt + 1,
                spec.retries + 1
            );
        }
        for t in &spec.temps {
            remove_any(t);
        }
        let before: Vec<Identity> = spec.outputs.iter().map(|o| identity(o)).collect();
        let ended = run_once(spec, &log);
        if let Ended::Interrupted(_) = ended {
            for t in &spec.temps {
                remove_any(t);
            }
            let note = discard_in_place(spec, &before);
            return Err(format!(
                "{INTERRUPTED}{}{note}; log {}",
                ended.describe(),
                spec.log.display()
            ));
        }
        if matches!(ended, Ended::Exited(0)) {
            match publish(spec, &before, record.as_ref()) {
                Ok(()) => return Ok(Outcome::Ran(record)),
                Err(m) => {
                    last = m;
                    for t in &spec.temps {
                        remove_any(t);
                    }
                    continue;
                }
            }
        }
        last = ended.describe();
        for t in &spec.temps {
            remove_any(t);
        }
        last.push_str(&discard_in_place(spec, &before));
    }
    let attempts = if spec.retries > 0 {
        format!(" (after {} attempts)", spec.retries + 1)
    } else {
        String::new()
    };
    let t = tail(&spec.log, 10);
    let t = if t.trim().is_empty() {
        "(empty)".to_string()
    } else {
        t
    };
    Err(format!(
        "{last}{attempts}; log {}, last lines:\n{t}",
        spec.log.display()
    ))
}

/// What [`execute`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task was up to date.
    UpToDate,
    /// Its command ran (and, with `--checksum`, what to record).
    Ran(Option<Record>),
}

impl Outcome {
    /// As the task's result: `false` (up to date), `true` (ran), or the record's JSON.
    pub fn to_value(&self) -> forkgraph::Value {
        match self {
            Outcome::UpToDate => forkgraph::Value::Bool(false),
            Outcome::Ran(None) => forkgraph::Value::Bool(true),
            Outcome::Ran(Some(r)) => {
                forkgraph::Value::Str(serde_json::to_string(r).expect("a record serializes"))
            }
        }
    }
}

/// Whether a dependency's result (see [`Outcome::to_value`]) says it ran.
pub fn ran(v: &forkgraph::Value) -> bool {
    !matches!(v, forkgraph::Value::Bool(false))
}

/// The registered task: decodes the spec and runs it. Its result: `false` (up to date),
/// `true` (ran), or the checksum record's JSON (ran, with `--checksum`), which the runner
/// appends to its journal on rank 0.
#[forkgraph::task(name = "forkgraph.command")]
fn run_command(spec: &str, deps: Vec<forkgraph::Value>) -> Result<forkgraph::Value, String> {
    let spec: Spec = serde_json::from_str(spec).map_err(|e| format!("bad task spec: {e}"))?;
    execute(&spec, deps.iter().any(ran)).map(|o| o.to_value())
}
