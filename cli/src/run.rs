//! `forkgraph run`: the plan becomes a forkgraph graph of `forkgraph.command` tasks, run by a
//! process pool of `-j` workers; a callback records what happened to each task for the summary.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use forkgraph::{
    Arg, Callbacks, GetOptions, Graph, Key, Keys, ProcessPool, Profiler, Scheduler, TaskError,
    TaskErrorKind, TaskEvent, Value,
};
use serde::{Deserialize, Serialize};

use crate::command::{self, Freshness, Spec};
use crate::error::InputError;
use crate::plan::Plan;
use crate::state::{self, Record};
use crate::sys;

/// Options of `forkgraph run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Commands at once (default: `[pool] jobs`, else available parallelism).
    pub jobs: Option<usize>,
    /// Run only these keys and what they need (all when empty).
    pub keys: Vec<String>,
    /// Go on with what does not depend on a failed task.
    pub keep_going: bool,
    /// Print what would run and stop.
    pub dry_run: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Write a trace, a Gantt chart and a coloured graph here.
    pub profile: Option<PathBuf>,
    /// Resume by checksums.
    pub checksum: bool,
    /// Run every selected task even when up to date.
    pub force: bool,
    /// Between SIGTERM and SIGKILL of a command's group, on timeout and on interrupt
    /// (default: `[pool] kill_grace`).
    pub kill_grace: Option<std::time::Duration>,
}

/// What happened to a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Its command ran and succeeded.
    Ran {
        /// Seconds.
        secs: f64,
    },
    /// It was up to date.
    Skipped,
    /// Its command failed.
    Failed {
        /// Seconds.
        secs: f64,
        /// How, with the log's tail.
        message: String,
    },
    /// A task it depends on failed.
    UpstreamFailed {
        /// That task.
        failed: String,
    },
    /// It was running or handed to a worker when the run was interrupted.
    Interrupted,
    /// It never started (the run stopped first).
    NotRun,
}

impl Status {
    fn word(&self) -> &'static str {
        match self {
            Status::Ran { .. } => "ran",
            Status::Skipped => "skipped",
            Status::Failed { .. } => "FAILED",
            Status::UpstreamFailed { .. } => "not run",
            Status::Interrupted => "interrupted",
            Status::NotRun => "not run",
        }
    }
}

/// The outcome of a run, also written to `last-run.json` in the state folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The graph file.
    pub file: PathBuf,
    /// Seconds the run took.
    pub secs: f64,
    /// The signal that interrupted it, if any.
    pub interrupted: Option<i32>,
    /// Each selected task in run order, with its status.
    pub tasks: Vec<(String, Status)>,
}

impl Report {
    /// Whether some task failed.
    pub fn failed(&self) -> bool {
        self.tasks
            .iter()
            .any(|(_, s)| matches!(s, Status::Failed { .. }))
    }

    /// Reads the last run's report of a plan, if there is one.
    pub fn load(plan: &Plan) -> Option<Report> {
        let bytes = std::fs::read(last_run_path(plan)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Where the last run's report goes.
pub fn last_run_path(plan: &Plan) -> PathBuf {
    plan.settings.state_dir.join("last-run.json")
}

/// Errors of the run itself (not of its tasks).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The file is bad.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A folder or file of the runner could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The process pool could not start or failed.
    #[error("the process pool: {0}")]
    Pool(String),
    /// Another runner holds the state folder's lock.
    #[error("{}: another forkgraph run{} is using this state folder (its lock file is {}); wait for it or stop it", state_dir.display(), pid.map_or_else(String::new, |p| format!(" (pid {p})")), state::lock_path(state_dir).display())]
    Locked {
        /// The state folder.
        state_dir: PathBuf,
        /// The holder's process id, as it wrote it in the lock file.
        pid: Option<u32>,
    },
    /// The `[pool.sandbox]` asked cannot be provided here.
    #[error("[pool.sandbox]: {0} (best_effort = true runs without what this kernel lacks)")]
    Sandbox(String),
}

/// System calls the worker needs to spawn and wait for a command, beyond the library's
/// allow-list: `socketpair` (the standard library's spawn), `setpgid` (the command's own
/// process group) and `pidfd_open` (waiting with a deadline). None reaches outside the worker's
/// own processes.
pub const RUNNER_SYSCALLS: &[&str] = &["socketpair", "setpgid", "pidfd_open"];

/// System paths a sandboxed command may read (those that exist): programs, libraries, and the
/// few files of `/etc` that the dynamic loader and the C library read.
pub const SYSTEM_READ_ONLY: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/dev/urandom",
    "/dev/zero",
];

/// The sandbox of a run: what `[pool.sandbox]` says, plus what the selected tasks and the
/// runner's own work need: `/dev/null` (stdin), each existing input and the programs' folders
/// read-only; each output's folder (created now: Landlock rules need existing paths; the
/// temporaries, renames and `atomic = false` markers are there), the log and the state
/// folders read-write.
fn sandbox(
    plan: &Plan,
    tasks: &[usize],
    sb: &crate::plan::SandboxSettings,
) -> Result<forkgraph::Sandbox, RunError> {
    use std::collections::BTreeSet;
    let st = &plan.settings;
    let mut ro: BTreeSet<PathBuf> = BTreeSet::new();
    let mut rw: BTreeSet<PathBuf> = BTreeSet::new();
    if sb.system_paths {
        ro.extend(SYSTEM_READ_ONLY.iter().map(PathBuf::from));
        let shell = Path::new(&st.shell);
        if let Some(d) = shell.parent().filter(|_| shell.is_absolute()) {
            ro.insert(d.to_path_buf());
        }
    }
    ro.retain(|p| p.exists());
    if Path::new("/dev/null").exists() {
        rw.insert(PathBuf::from("/dev/null"));
    }
    // Landlock rules need existing paths: the folders are made now (on every rank of an MPI
    // run too; making them is idempotent).
    for d in [&st.log_dir, &st.state_dir] {
        std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
    }
    rw.insert(st.log_dir.clone());
    rw.insert(st.state_dir.clone());
    for &i in tasks {
        let t = &plan.tasks[i];
        for inp in t.inputs.iter().filter(|p| p.exists()) {
            ro.insert(inp.clone());
        }
        for o in &t.outputs {
            if let Some(d) = o.parent() {
                std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
                rw.insert(d.to_path_buf());
            }
        }
    }
    for p in sb.read_only.iter().chain(&sb.read_write) {
        if let Err(e) = std::fs::metadata(p) {
            return Err(RunError::Input(InputError::Pool {
                file: plan.file.clone(),
                message: format!("sandbox: {}: {e}", p.display()),
            }));
        }
    }
    ro.extend(sb.read_only.iter().cloned());
    rw.extend(sb.read_write.iter().cloned());
    let mut s = forkgraph::Sandbox::strict()
        .read_only(ro)
        .read_write(rw)
        .allow_network(sb.network)
        .max_processes(sb.max_processes)
        .allow_exec(true)
        .keep_env(sb.keep_env.iter().cloned())
        .allow_syscalls(RUNNER_SYSCALLS.iter().copied())
        .allow_syscalls(sb.allow_syscalls.iter().cloned())
        .namespaces(sb.namespaces);
    if let Some(m) = sb.memory_limit {
        s = s.memory_limit(m);
    }
    if let Some(f) = sb.file_size_limit {
        s = s.file_size_limit(f);
    }
    if let Some(n) = sb.max_open_files {
        s = s.max_open_files(n);
    }
    if sb.best_effort {
        s = s.best_effort();
    }
    Ok(s)
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// The temporary output paths of this runner.
fn temps(plan: &Plan, i: usize) -> Vec<PathBuf> {
    let t = &plan.tasks[i];
    if t.atomic {
        let pid = std::process::id();
        t.outputs
            .iter()
            .map(|o| command::temp_path(o, pid))
            .collect()
    } else {
        Vec::new()
    }
}

/// Renders every selected task's command (placeholders checked) before anything runs.
///
/// # Errors
/// [`InputError::Task`] for a placeholder naming an input or output the task lacks.
pub fn render_all(
    plan: &Plan,
    mask: &[bool],
    for_display: bool,
) -> Result<Vec<Option<command::Rendered>>, InputError> {
    let mut out = Vec::with_capacity(plan.tasks.len());
    for (i, t) in plan.tasks.iter().enumerate() {
        if !mask[i] {
            out.push(None);
            continue;
        }
        let outs = if for_display || !t.atomic {
            t.outputs.clone()
        } else {
            temps(plan, i)
        };
        let r = command::render(t, &plan.settings.shell, &outs).map_err(|message| {
            InputError::Task {
                at: t.at_field(crate::plan::field_of(&message)),
                key: t.key.clone(),
                message,
            }
        })?;
        out.push(Some(r));
    }
    Ok(out)
}

fn command_hash(program: &[String], env: &[(String, String)], cwd: &Path) -> String {
    // Temporary paths carry the runner's pid: hash the displayed form instead.
    let mut parts: Vec<&str> = program.iter().map(String::as_str).collect();
    for (k, v) in env {
        parts.push(k);
        parts.push(v);
    }
    let cwd = cwd.to_string_lossy();
    parts.push(&cwd);
    state::hash_strings(parts)
}

/// What `check` and `--dry-run` print: each selected task in run order and whether it would
/// run (and why) or be skipped.
///
/// # Errors
/// An input that does not exist and that no task makes.
pub fn preview(
    plan: &Plan,
    mask: &[bool],
    checksum: bool,
    force: bool,
) -> Result<Vec<(usize, Freshness)>, InputError> {
    let order = plan.order(mask);
    let display = render_all(plan, mask, true)?;
    let records = if checksum {
        state::load(&plan.settings.state_dir)
    } else {
        BTreeMap::new()
    };
    check_inputs(plan, mask)?;
    let mut runs = vec![false; plan.tasks.len()];
    let mut out = Vec::new();
    for i in order {
        let t = &plan.tasks[i];
        let (program, env) = display[i].as_ref().expect("selected");
        let hash = command_hash(program, env, &t.cwd);
        let f = command::freshness(
            &t.inputs,
            &t.outputs,
            t.atomic,
            checksum.then_some((hash.as_str(), records.get(&t.key))),
            force,
            t.deps.iter().any(|&d| runs[d]),
            true,
        )
        .unwrap_or_else(Freshness::Stale);
        runs[i] = f != Freshness::UpToDate;
        out.push((i, f));
    }
    Ok(out)
}

/// Refuses an input that does not exist and that no task makes, and a shell given by its
/// absolute path that does not exist when a selected task has a `cmd`.
///
/// # Errors
/// [`InputError::Pool`] for the shell; [`InputError::Task`] naming the first such input.
pub fn check_inputs(plan: &Plan, mask: &[bool]) -> Result<(), InputError> {
    let shell = Path::new(&plan.settings.shell);
    let uses_shell = plan
        .tasks
        .iter()
        .enumerate()
        .any(|(i, t)| mask[i] && matches!(t.command, crate::plan::CommandLine::Shell(_)));
    if uses_shell && shell.is_absolute() && !shell.is_file() {
        return Err(InputError::Pool {
            file: plan.file.clone(),
            message: format!(
                "shell {} does not exist (it runs every `cmd`)",
                shell.display()
            ),
        });
    }
    let mut cache = HashMap::new();
    let produced: std::collections::HashSet<PathBuf> = plan
        .tasks
        .iter()
        .flat_map(|t| t.outputs.iter())
        .flat_map(|o| [o.clone(), crate::plan::physical(o, &mut cache)])
        .collect();
    for (i, t) in plan.tasks.iter().enumerate() {
        if !mask[i] {
            continue;
        }
        for inp in &t.inputs {
            if !produced.contains(inp)
                && std::fs::metadata(inp).is_err()
                && !produced.contains(&crate::plan::physical(inp, &mut cache))
            {
                return Err(InputError::Task {
                    at: t.at_field(Some("inputs")),
                    key: t.key.clone(),
                    message: format!(
                        "input {} does not exist and no task declares it as an output",
                        inp.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Records each task's fate as results arrive (in the engine's thread).
struct Recorder {
    index: HashMap<Key, usize>,
    state: Mutex<RecorderState>,
    print_failures: bool,
    /// The `--checksum` journal, appended to here (rank 0) with each record a task returns.
    journal: Mutex<Option<std::fs::File>>,
    /// The commit journals' folder: a task's journal, which carries its record, is removed
    /// once the record is appended.
    commits: PathBuf,
}

struct RecorderState {
    status: Vec<Option<Status>>,
    dispatched: Vec<bool>,
}

impl Recorder {
    fn set(&self, key: &Key, s: Status) {
        if let Some(&i) = self.index.get(key) {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.status[i] = Some(s);
        }
    }
}

fn secs(ev: &TaskEvent<'_>) -> f64 {
    ev.end.saturating_sub(ev.start) as f64 / 1e9
}

impl Callbacks for Recorder {
    fn pretask(&self, key: &Key) {
        if let Some(&i) = self.index.get(key) {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.dispatched[i] = true;
        }
    }

    fn task_done(&self, task: &TaskEvent<'_>, value: &Value) {
        let s = match value {
            Value::Bool(false) => Status::Skipped,
            _ => Status::Ran { secs: secs(task) },
        };
        if let Value::Str(record) = value {
            // One write per line (O_APPEND); synced at the end of the run. A line lost or
            // torn by a crash only makes its task run again.
            let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = j.as_mut() {
                let mut line = record.clone().into_bytes();
                line.push(b'\n');
                match f.write_all(&line) {
                    Ok(()) => {
                        let key = task.key.to_string();
                        let _ = std::fs::remove_file(state::commit_path(&self.commits, &key));
                    }
                    Err(e) => {
                        eprintln!("forkgraph: recording the checksums of `{}`: {e}", task.key)
                    }
                }
            }
        }
        self.set(task.key, s);
    }

    fn task_failed(&self, task: &TaskEvent<'_>, error: &TaskError) {
        let s = match &error.kind {
            TaskErrorKind::Upstream { key } => Status::UpstreamFailed {
                failed: key.to_string(),
            },
            // The process pool reports a chained task whose predecessor failed this way
            // rather than as `Upstream`.
            TaskErrorKind::Call(forkgraph::CallError::Failed(m)) if m.starts_with("not run:") => {
                let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let failed = task
                    .dependencies
                    .iter()
                    .find(|d| {
                        self.index.get(*d).is_some_and(|&i| {
                            matches!(
                                st.status[i],
                                Some(Status::Failed { .. } | Status::UpstreamFailed { .. })
                            )
                        })
                    })
                    .map_or_else(|| "a dependency".to_string(), |k| k.to_string());
                Status::UpstreamFailed { failed }
            }
            TaskErrorKind::Call(forkgraph::CallError::Returned(r))
                if r.message().starts_with(command::INTERRUPTED) =>
            {
                Status::Interrupted
            }
            TaskErrorKind::Call(forkgraph::CallError::Returned(r)) => Status::Failed {
                secs: secs(task),
                message: r.message().to_string(),
            },
            other => Status::Failed {
                secs: secs(task),
                message: other.to_string(),
            },
        };
        if let (true, Status::Failed { message, .. }) = (self.print_failures, &s) {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "forkgraph: task `{}` failed: {message}", task.key);
        }
        self.set(task.key, s);
    }
}

/// The scheduler of a run: this machine's process pool or, built with the `mpi` feature and
/// launched by `mpirun`/`srun`, the MPI cluster (every rank runs commands in its own pool);
/// or, when the selected tasks have several sandbox settings, one process pool per setting
/// fed by a thread pool of `-j` threads (so `-j` bounds the commands of all of them).
enum Runner {
    Local(ProcessPool),
    Split(forkgraph::ThreadPool),
    #[cfg(feature = "mpi")]
    Mpi(forkgraph::MpiCluster),
}

/// The pools of a split run (one per sandbox setting), for [`dispatch`].
static POOLS: Mutex<Option<Arc<Vec<ProcessPool>>>> = Mutex::new(None);

/// Clears [`POOLS`] when the run ends, whatever way (their workers stop when the last
/// reference goes).
struct PoolsGuard;

impl Drop for PoolsGuard {
    fn drop(&mut self) {
        POOLS.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

fn split_pools() -> Option<Arc<Vec<ProcessPool>>> {
    POOLS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A task of a split run, on a thread of the thread pool: runs `forkgraph.command` on the
/// process pool of its sandbox setting and passes its outcome on unchanged.
#[forkgraph::task(name = "forkgraph.dispatch")]
fn dispatch(group: i64, spec: &str, deps: Vec<Value>) -> Result<Value, String> {
    let pools = split_pools().ok_or("the run's process pools are gone")?;
    let pool = pools
        .get(usize::try_from(group).unwrap_or(usize::MAX))
        .ok_or_else(|| format!("no process pool {group}"))?;
    let mut g = Graph::with_capacity(1);
    g.task(
        "command",
        command::FUNCTION,
        vec![
            Arg::Value(Value::Str(spec.to_string())),
            Arg::List(deps.into_iter().map(Arg::Value).collect()),
        ],
    );
    match pool.get(&g, "command") {
        Ok(forkgraph::Output::Value(v)) => Ok(v),
        Ok(other) => Err(format!("the command task returned {other:?}")),
        Err(forkgraph::Error::Task(t)) => Err(match &t.kind {
            TaskErrorKind::Call(forkgraph::CallError::Returned(r)) => r.message().to_string(),
            other => other.to_string(),
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether this process was started by an MPI launcher (the variables OpenMPI, PMIx and
/// Slurm's PMI set on every rank).
pub fn mpi_launched() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// The distinct sandbox settings of the selected tasks (`None`: no sandbox), in order of
/// first use, and each plan task's group (index into them).
type Groups = (Vec<Option<Arc<crate::plan::SandboxSettings>>>, Vec<usize>);

fn sandbox_groups(plan: &Plan, order: &[usize]) -> Groups {
    let mut groups: Vec<Option<Arc<crate::plan::SandboxSettings>>> = Vec::new();
    let mut seen: HashMap<Option<Arc<crate::plan::SandboxSettings>>, usize> = HashMap::new();
    let mut of = vec![0; plan.tasks.len()];
    for &i in order {
        let sb = plan.tasks[i].sandbox.clone();
        let g = *seen.entry(sb.clone()).or_insert_with(|| {
            groups.push(sb);
            groups.len() - 1
        });
        of[i] = g;
    }
    (groups, of)
}

/// Starts the scheduler. Under an MPI launcher (feature `mpi`) every rank comes here with the
/// same plan; ranks other than 0 serve tasks inside this call until rank 0 is done, then
/// exit: what follows it runs on rank 0 only.
fn start(plan: &Plan, order: &[usize], jobs: usize, groups: &Groups) -> Result<Runner, RunError> {
    let builder = |sb: Option<&crate::plan::SandboxSettings>,
                   tasks: &[usize],
                   workers: usize|
     -> Result<forkgraph::ProcessPoolBuilder, RunError> {
        let mut b = ProcessPool::builder()
            .workers(workers)
            .retries(0)
            .max_queue(1)
            .handle_ctrl_c(false);
        if let Some(sb) = sb {
            b = b.sandbox(sandbox(plan, tasks, sb)?);
        }
        Ok(b)
    };
    let build_error = |sandboxed: bool| {
        move |e: forkgraph::BuildError| {
            if sandboxed {
                RunError::Sandbox(e.to_string())
            } else {
                RunError::Pool(e.to_string())
            }
        }
    };
    let (sets, of) = groups;
    if sets.len() > 1 {
        if mpi_launched() {
            return Err(RunError::Sandbox(
                "the selected tasks have several sandbox settings, which an MPI run cannot \
                 give (one pool per rank): use one setting ([pool.sandbox]) under mpirun"
                    .into(),
            ));
        }
        let mut pools = Vec::with_capacity(sets.len());
        for (g, sb) in sets.iter().enumerate() {
            let tasks: Vec<usize> = order.iter().copied().filter(|&i| of[i] == g).collect();
            let b = builder(sb.as_deref(), &tasks, jobs.min(tasks.len()).max(1))?;
            pools.push(b.build().map_err(build_error(sb.is_some()))?);
        }
        *POOLS.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(pools));
        let threads = forkgraph::ThreadPool::builder()
            .threads(jobs)
            .build()
            .map_err(build_error(false))?;
        return Ok(Runner::Split(threads));
    }
    let sb = sets.first().cloned().flatten();
    let b = builder(sb.as_deref(), order, jobs)?;
    #[cfg(feature = "mpi")]
    if mpi_launched() {
        let cluster = forkgraph::MpiCluster::builder()
            .workers_per_rank(Some(jobs))
            .pool(move |_| b)
            .init()
            .map_err(build_error(sb.is_some()))?;
        return Ok(Runner::Mpi(cluster));
    }
    b.build()
        .map(Runner::Local)
        .map_err(build_error(sb.is_some()))
}

/// Runs the selected tasks of a plan. Returns the report (also written to `last-run.json`
/// and summarized on stderr).
///
/// # Errors
/// Bad input found before the run, or a failure of the runner itself (not of a task).
pub fn run(plan: &Plan, opts: &RunOptions) -> Result<Report, RunError> {
    let started = Instant::now();
    let mask = plan.select(&opts.keys)?;
    if opts.dry_run {
        let p = preview(plan, &mask, opts.checksum, opts.force)?;
        print_preview(plan, &p);
        return Ok(Report {
            file: plan.file.clone(),
            secs: 0.0,
            interrupted: None,
            tasks: Vec::new(),
        });
    }
    let display = render_all(plan, &mask, true)?;
    check_inputs(plan, &mask)?;
    let rendered = render_all(plan, &mask, false)?;
    let st = &plan.settings;
    let order = plan.order(&mask);
    let jobs = opts
        .jobs
        .or(st.jobs)
        .unwrap_or_else(forkgraph::default_parallelism)
        .clamp(1, order.len().max(1));
    // Under MPI every rank starts its pool here (and only rank 0 returns); without it, no
    // pool for an empty selection or a run interrupted before it started.
    let groups = sandbox_groups(plan, &order);
    let _pools = PoolsGuard;
    let runner = if (cfg!(feature = "mpi") && mpi_launched())
        || (!order.is_empty() && sys::interrupted().is_none())
    {
        Some(start(plan, &order, jobs, &groups)?)
    } else {
        None
    };
    let split = matches!(runner, Some(Runner::Split(_)));
    // From here on: rank 0 (or the only process).
    let _lock = state::lock(&st.state_dir).map_err(|e| match e {
        state::LockError::Held { pid } => RunError::Locked {
            state_dir: st.state_dir.clone(),
            pid,
        },
        state::LockError::Io(source) => RunError::Io {
            what: format!("locking {}", state::lock_path(&st.state_dir).display()),
            source,
        },
    })?;
    std::fs::create_dir_all(&st.log_dir)
        .map_err(io_err(format!("creating {}", st.log_dir.display())))?;
    let stop = state::stop_path(&st.state_dir);
    command::remove_any(&stop);
    let commits = state::commits_dir(&st.state_dir);
    // Commits a crashed run left half done are finished before anything looks at outputs,
    // and the records they carry (a runner killed before it appended them) are kept.
    let outputs_of = |key: &str| {
        plan.tasks
            .iter()
            .find(|t| t.key == key && !t.outputs.is_empty())
            .map(|t| t.outputs.as_slice())
    };
    append_records(
        &state::journal_path(&st.state_dir),
        state::finish_commits(&commits, outputs_of),
    )?;
    let records: BTreeMap<String, Record> = if opts.checksum {
        state::load_and_compact(&st.state_dir)
            .map_err(io_err(format!("the state in {}", st.state_dir.display())))?
    } else {
        BTreeMap::new()
    };
    command::remove_all_stale_temps(order.iter().flat_map(|&i| plan.tasks[i].outputs.iter()));
    let mut graph = Graph::with_capacity(order.len());
    let mut index = HashMap::new();
    for &i in &order {
        let t = &plan.tasks[i];
        let (program, env) = rendered[i].clone().expect("selected");
        let (dprog, denv) = display[i].as_ref().expect("selected");
        let command_hash = command_hash(dprog, denv, &t.cwd);
        let spec = Spec {
            key: t.key.clone(),
            program,
            env,
            cwd: t.cwd.clone(),
            inputs: t.inputs.clone(),
            outputs: t.outputs.clone(),
            atomic: t.atomic,
            temps: temps(plan, i),
            log: st.log_dir.join(command::log_name(&t.key)),
            timeout_ms: t.timeout.map(|d| d.as_millis().max(1) as u64),
            kill_grace_ms: opts.kill_grace.unwrap_or(st.kill_grace).as_millis() as u64,
            retries: t.retries,
            memory_limit: t.memory_limit,
            checksum: opts.checksum,
            previous: records.get(&t.key).cloned(),
            command_hash,
            journal: state::journal_path(&st.state_dir),
            force: opts.force,
            sandboxed: t.sandbox.is_some(),
            stop: Some(stop.clone()),
            commits: Some(commits.clone()),
            runner_pid: std::process::id(),
        };
        let json = serde_json::to_string(&spec).expect("a spec serializes");
        let deps = t
            .deps
            .iter()
            .map(|&d| Arg::Key(Key::from(plan.tasks[d].key.as_str())))
            .collect();
        if split {
            graph.task(
                t.key.as_str(),
                "forkgraph.dispatch",
                vec![
                    Arg::Value(Value::Int(groups.1[i] as i64)),
                    Arg::Value(Value::Str(json)),
                    Arg::List(deps),
                ],
            );
        } else {
            graph.task(
                t.key.as_str(),
                command::FUNCTION,
                vec![Arg::Value(Value::Str(json)), Arg::List(deps)],
            );
        }
        index.insert(Key::from(t.key.as_str()), i);
    }
    let recorder = Arc::new(Recorder {
        index,
        state: Mutex::new(RecorderState {
            status: vec![None; plan.tasks.len()],
            dispatched: vec![false; plan.tasks.len()],
        }),
        print_failures: true,
        commits: commits.clone(),
        journal: Mutex::new(if opts.checksum {
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(state::journal_path(&st.state_dir))
                    .map_err(io_err(format!(
                        "opening {}",
                        state::journal_path(&st.state_dir).display()
                    )))?,
            )
        } else {
            None
        }),
    });
    let profiler = opts.profile.as_ref().map(|_| Arc::new(Profiler::new()));
    let mut gopts = GetOptions::new()
        .callback(recorder.clone())
        .keep_going(opts.keep_going);
    if let Some(p) = &profiler {
        gopts = gopts.callback(p.clone());
    }
    if opts.progress {
        gopts = gopts.progress();
    }
    let keys: Vec<Key> = order
        .iter()
        .map(|&i| Key::from(plan.tasks[i].key.as_str()))
        .collect();
    let keys = Keys::from(keys);
    let mut pool_error = None;
    // An interrupt creates the stop marker: workers on every rank then start no command and
    // stop the running ones (SIGTERM, grace, SIGKILL), which end their tasks as interrupted.
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            if sys::wait_interrupt() != 0 {
                let _ = std::fs::write(&stop, b"");
            }
        })
    };
    if sys::interrupted().is_some() {
        let _ = std::fs::write(&stop, b"");
    }
    if let Some(runner) = &runner {
        if !order.is_empty() && sys::interrupted().is_none() {
            let res = match runner {
                Runner::Local(pool) => pool.get_with(&graph, &keys, &gopts),
                Runner::Split(threads) => threads.get_with(&graph, &keys, &gopts),
                #[cfg(feature = "mpi")]
                Runner::Mpi(c) => c.get_with(&graph, &keys, &gopts),
            };
            match res {
                Ok(_) => {}
                Err(e) if e.is_task_error() => {}
                Err(e) => pool_error = Some(e.to_string()),
            }
        }
    }
    if sys::interrupted().is_some() {
        // `get` returned at the first interrupted task; let the others' commands end within
        // their grace period before the pool's teardown kills them.
        let workers: Vec<i32> = match &runner {
            Some(Runner::Local(pool)) => pool.worker_pids(),
            Some(Runner::Split(_)) => split_pools()
                .map(|p| p.iter().flat_map(|p| p.worker_pids()).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let grace = opts.kill_grace.unwrap_or(st.kill_grace);
        let until = Instant::now() + grace + std::time::Duration::from_secs(2);
        while Instant::now() < until && workers.iter().copied().any(sys::has_children) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    // Dropping the pool (or the cluster) stops its workers and whatever they started.
    drop(runner);
    drop(_pools);
    sys::wake_interrupt_waiter();
    let _ = watcher.join();
    command::remove_any(&stop);
    // A worker killed between two renames left its commit journal: finish it now, before the
    // temporaries of commands that did not finish are removed.
    let _ = append_records(
        &state::journal_path(&st.state_dir),
        state::finish_commits(&commits, outputs_of),
    );
    for &i in &order {
        for t in temps(plan, i) {
            command::remove_any(&t);
        }
    }
    if let Some(f) = recorder
        .journal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        let _ = f.sync_data();
    }
    let interrupted = sys::interrupted();
    let st_rec = recorder.state.lock().unwrap_or_else(|e| e.into_inner());
    let tasks: Vec<(String, Status)> = order
        .iter()
        .map(|&i| {
            let s = match (st_rec.status[i].clone(), interrupted) {
                (Some(Status::UpstreamFailed { .. }), Some(_)) => Status::NotRun,
                (Some(s), _) => s,
                (None, Some(_)) if st_rec.dispatched[i] => Status::Interrupted,
                (None, _) => Status::NotRun,
            };
            (plan.tasks[i].key.clone(), s)
        })
        .collect();
    drop(st_rec);
    let report = Report {
        file: plan.file.clone(),
        secs: started.elapsed().as_secs_f64(),
        interrupted,
        tasks,
    };
    let json = serde_json::to_vec_pretty(&report).expect("a report serializes");
    state::write_atomic(&last_run_path(plan), &json)
        .map_err(io_err(format!("writing {}", last_run_path(plan).display())))?;
    if let (Some(dir), Some(p)) = (&opts.profile, &profiler) {
        write_profile(plan, &mask, dir, &p.profile(), &report)?;
    }
    eprint!("{}", summary(&report));
    if let Some(e) = pool_error {
        return Err(RunError::Pool(e));
    }
    Ok(report)
}

/// Appends the records of finished commit journals to the state's journal.
fn append_records(journal: &Path, records: Vec<Record>) -> Result<(), RunError> {
    for r in records {
        state::append(journal, &r)
            .map_err(io_err(format!("appending to {}", journal.display())))?;
    }
    Ok(())
}

fn write_profile(
    plan: &Plan,
    mask: &[bool],
    dir: &Path,
    profile: &forkgraph::Profile,
    report: &Report,
) -> Result<(), RunError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    profile
        .write_chrome_trace(dir.join("trace.json"))
        .map_err(io_err("writing trace.json"))?;
    profile
        .write_svg(dir.join("profile.svg"))
        .map_err(io_err("writing profile.svg"))?;
    let dot = crate::dot::dot(plan, mask, Some(report), None);
    std::fs::write(dir.join("graph.dot"), dot).map_err(io_err("writing graph.dot"))?;
    Ok(())
}

/// At most this many tasks are listed per status in the summary.
const LIST_MAX: usize = 50;

/// The summary printed at the end of a run.
pub fn summary(r: &Report) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, s) in &r.tasks {
        *counts.entry(s.word()).or_default() += 1;
    }
    let mut out = String::new();
    let head = if let Some(sig) = r.interrupted {
        format!("interrupted by {}", sys::signal_name(sig))
    } else if r.failed() {
        "failed".to_string()
    } else {
        "done".to_string()
    };
    let _ = writeln!(
        out,
        "forkgraph: {head}: {} tasks in {:.3}s: {}",
        r.tasks.len(),
        r.secs,
        ["ran", "skipped", "FAILED", "not run", "interrupted"]
            .iter()
            .map(|w| format!("{} {w}", counts.get(w).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let width = r
        .tasks
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    for word in ["ran", "FAILED", "interrupted", "not run"] {
        let items: Vec<&(String, Status)> =
            r.tasks.iter().filter(|(_, s)| s.word() == word).collect();
        for (k, s) in items.iter().take(LIST_MAX) {
            let detail = match s {
                Status::Ran { secs } => format!("{secs:.3}s"),
                Status::Failed { secs, message } => format!(
                    "{secs:.3}s  {}",
                    message
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .split("; log ")
                        .next()
                        .unwrap_or_default()
                ),
                Status::UpstreamFailed { failed } => format!("(depends on failed {failed})"),
                Status::Interrupted => "(stopped: SIGTERM, then SIGKILL after the grace)".into(),
                Status::NotRun if r.interrupted.is_some() => {
                    "(interrupted before it started)".into()
                }
                Status::NotRun if r.failed() => {
                    "(the run stopped at the first failure; -k runs what does not depend on it)"
                        .into()
                }
                _ => String::new(),
            };
            let _ = writeln!(out, "  {word:<11} {k:<width$}  {detail}");
        }
        if items.len() > LIST_MAX {
            let _ = writeln!(
                out,
                "  {word:<11} ... and {} more (see last-run.json)",
                items.len() - LIST_MAX
            );
        }
    }
    let skipped: Vec<&str> = r
        .tasks
        .iter()
        .filter(|(_, s)| *s == Status::Skipped)
        .map(|(k, _)| k.as_str())
        .collect();
    if !skipped.is_empty() {
        let shown: Vec<&str> = skipped.iter().take(10).copied().collect();
        let more = if skipped.len() > 10 {
            format!(", ... ({} in all)", skipped.len())
        } else {
            String::new()
        };
        let _ = writeln!(out, "  {:<11} {}{more}", "skipped", shown.join(", "));
    }
    out
}

/// Prints the output of `check` and `--dry-run`.
pub fn print_preview(plan: &Plan, p: &[(usize, Freshness)]) {
    let mut out = std::io::stdout().lock();
    let runs = p.iter().filter(|(_, f)| *f != Freshness::UpToDate).count();
    let _ = writeln!(
        out,
        "{} tasks in run order: {} would run, {} would be skipped",
        p.len(),
        runs,
        p.len() - runs
    );
    let display = render_all(plan, &vec![true; plan.tasks.len()], true).ok();
    let base = format!("{}/", plan.base.display());
    for (n, (i, f)) in p.iter().enumerate() {
        let t = &plan.tasks[*i];
        let what = match f {
            Freshness::UpToDate => "skip (up to date)".to_string(),
            Freshness::Stale(why) => format!("run  ({})", why.replace(&base, "")),
        };
        let _ = writeln!(out, "{:>5}. {}  {what}", n + 1, t.key);
        if let Some(Some((prog, _))) = display.as_ref().map(|d| &d[*i]) {
            let _ = writeln!(out, "         $ {}", command::display(prog));
        }
    }
}
