//! From a parsed file to a checked plan: templates expanded, paths resolved, implicit
//! dependencies added, and every problem (unknown placeholder, missing dependency, duplicate
//! key or output, cycle) reported before anything runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{InputError, Location};
use crate::schema::{Parsed, Range, TaskEntry, VarValue};

/// Most tasks one file may expand to (a guard against a typo multiplying lists).
pub const MAX_TASKS: usize = 1_000_000;

/// How a task's command is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandLine {
    /// A shell command line.
    Shell(String),
    /// A program and its arguments.
    Argv(Vec<String>),
}

/// One task of the plan.
#[derive(Debug, Clone)]
pub struct PlannedTask {
    /// Its key.
    pub key: String,
    /// Where it was declared.
    pub at: Location,
    /// The command, with `{in}`/`{out}` placeholders still in it.
    pub command: CommandLine,
    /// Extra environment (values may hold `{in}`/`{out}` placeholders).
    pub env: Vec<(String, String)>,
    /// Working directory (absolute).
    pub cwd: PathBuf,
    /// Input files (absolute, normalized).
    pub inputs: Vec<PathBuf>,
    /// Output files (absolute, normalized).
    pub outputs: Vec<PathBuf>,
    /// Indices of the tasks it depends on (explicit and implicit), sorted.
    pub deps: Vec<usize>,
    /// Time limit of one attempt.
    pub timeout: Option<Duration>,
    /// Re-runs after a failure.
    pub retries: u32,
    /// RLIMIT_AS of the command.
    pub memory_limit: Option<u64>,
    /// Outputs written to temporary paths and renamed on success.
    pub atomic: bool,
    /// Where each field of its entry is (TOML; shared by the tasks of one template).
    pub fields: std::sync::Arc<BTreeMap<String, (usize, usize)>>,
    /// Its sandbox (its own `sandbox` over `[pool.sandbox]`), if any; shared by the tasks of
    /// one template.
    pub sandbox: Option<std::sync::Arc<SandboxSettings>>,
}

impl PlannedTask {
    /// Where `field` of its entry is (the entry itself when unknown, or in JSON).
    pub fn at_field(&self, field: Option<&str>) -> Location {
        Location {
            line_col: field
                .and_then(|f| self.fields.get(f).copied())
                .or(self.at.line_col),
            ..self.at.clone()
        }
    }
}

/// Run-wide settings from `[pool]`, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Commands at once unless `-j` says otherwise.
    pub jobs: Option<usize>,
    /// Folder of per-task logs.
    pub log_dir: PathBuf,
    /// Folder of the resume state and the last run's summary.
    pub state_dir: PathBuf,
    /// Shell for `cmd` strings.
    pub shell: String,
    /// Between SIGTERM and SIGKILL on timeout.
    pub kill_grace: Duration,
    /// `[pool.sandbox]`, paths resolved and sizes checked.
    pub sandbox: Option<SandboxSettings>,
    /// `[pool.sandbox]` as written (a task's `sandbox` is read over it).
    pub sandbox_section: Option<crate::schema::SandboxSection>,
}

/// A checked `[pool.sandbox]` (see `crate::schema::SandboxSection` for the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SandboxSettings {
    /// Extra readable paths.
    pub read_only: Vec<PathBuf>,
    /// Extra writable paths.
    pub read_write: Vec<PathBuf>,
    /// Whether the system folders are readable.
    pub system_paths: bool,
    /// Whether the network is allowed.
    pub network: bool,
    /// Most processes per worker.
    pub max_processes: u32,
    /// Memory per worker, in bytes.
    pub memory_limit: Option<u64>,
    /// Longest file written, in bytes.
    pub file_size_limit: Option<u64>,
    /// Most open files.
    pub max_open_files: Option<u64>,
    /// Environment variables kept.
    pub keep_env: Vec<String>,
    /// Extra system calls.
    pub allow_syscalls: Vec<String>,
    /// Own namespaces.
    pub namespaces: bool,
    /// Leave out what the kernel cannot provide.
    pub best_effort: bool,
}

/// Environment variables a sandboxed command keeps by default.
pub const DEFAULT_KEEP_ENV: &[&str] = &[
    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TERM", "USER", "LOGNAME", "TMPDIR",
];

fn sandbox_settings(
    s: &crate::schema::SandboxSection,
    base: &Path,
) -> Result<SandboxSettings, String> {
    let size = |name: &str, v: &Option<crate::schema::Size>| {
        v.as_ref()
            .map(|v| v.bytes().map_err(|e| format!("sandbox.{name}: {e}")))
            .transpose()
    };
    let max_processes = s.max_processes.unwrap_or(64);
    if max_processes < 2 {
        return Err(format!(
            "sandbox.max_processes must be at least 2 (the worker and the command it spawns), \
             not {max_processes}"
        ));
    }
    if s.max_open_files == Some(0) {
        return Err("sandbox.max_open_files must be at least 1".into());
    }
    let keep_env = match &s.keep_env {
        Some(v) => v.clone(),
        None => DEFAULT_KEEP_ENV.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(n) = keep_env
        .iter()
        .find(|n| n.is_empty() || n.contains('=') || n.contains('\0'))
    {
        return Err(format!(
            "sandbox.keep_env: {n:?} is not an environment variable name"
        ));
    }
    Ok(SandboxSettings {
        read_only: s.read_only.iter().map(|p| resolve(base, p)).collect(),
        read_write: s.read_write.iter().map(|p| resolve(base, p)).collect(),
        system_paths: s.system_paths.unwrap_or(true),
        network: s.network.unwrap_or(false),
        max_processes,
        memory_limit: size("memory_limit", &s.memory_limit)?,
        file_size_limit: size("file_size_limit", &s.file_size_limit)?,
        max_open_files: s.max_open_files,
        keep_env,
        allow_syscalls: s.allow_syscalls.clone(),
        namespaces: s.namespaces.unwrap_or(true),
        best_effort: s.best_effort.unwrap_or(false),
    })
}

/// A checked plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The graph file.
    pub file: PathBuf,
    /// Its directory (relative paths start here).
    pub base: PathBuf,
    /// Settings.
    pub settings: Settings,
    /// Tasks, in file order (templates expanded in place).
    pub tasks: Vec<PlannedTask>,
    /// Key to index.
    pub index: HashMap<String, usize>,
}

/// A piece of a template.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    /// `{name}`
    Var(String),
    /// `{*name}`: one item per element of a list.
    Star(String),
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Splits a template into pieces. `{name}` and `{*name}` (an identifier) are placeholders,
/// `{{` and `}}` are literal braces, and any other brace (`${HOME}`, `awk '{print $1}'`) is
/// kept as it is.
fn pieces(s: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    let mut prev_dollar = false;
    while let Some(ch) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            lit.push(ch);
            rest = &rest[2..];
            prev_dollar = false;
            continue;
        }
        if ch == '{' && !prev_dollar {
            if let Some(end) = rest.find('}') {
                let inner = &rest[1..end];
                let (star, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if is_ident(name) {
                    if !lit.is_empty() {
                        out.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    out.push(if star {
                        Piece::Star(name.to_string())
                    } else {
                        Piece::Var(name.to_string())
                    });
                    rest = &rest[end + 1..];
                    prev_dollar = false;
                    continue;
                }
            }
        }
        lit.push(ch);
        prev_dollar = ch == '$';
        rest = &rest[ch.len_utf8()..];
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    out
}

/// Whether `name` is one of the placeholders filled in when the command runs.
pub fn is_io_placeholder(name: &str) -> bool {
    let num = |p: &str| {
        name.strip_prefix(p)
            .is_some_and(|d| d.parse::<usize>().is_ok())
    };
    matches!(name, "in" | "out") || num("in") || num("out")
}

/// Values visible to a template: scalars, and lists for `{*name}`.
struct Scope<'a> {
    scalars: BTreeMap<&'a str, String>,
    /// Shared: each binding of a template has its own scope, and copying every list into
    /// each made expanding N tasks over a list of N values take O(N^2).
    lists: BTreeMap<&'a str, std::sync::Arc<Vec<String>>>,
}

impl Scope<'_> {
    fn names(&self) -> String {
        let v: Vec<&str> = self.scalars.keys().copied().collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    /// Expands one template. `io`: keep `{in}`/`{out}`-style placeholders for later.
    /// `star`: the value bound to this item's `{*list}` placeholder, if any.
    fn expand(&self, t: &str, io: bool, star: Option<(&str, &str)>) -> Result<String, String> {
        let mut s = String::new();
        for p in pieces(t) {
            match p {
                Piece::Lit(l) => s.push_str(&l.replace('{', "{{").replace('}', "}}")),
                Piece::Var(v) => {
                    if let Some(x) = self.scalars.get(v.as_str()) {
                        s.push_str(&x.replace('{', "{{").replace('}', "}}"));
                    } else if io && is_io_placeholder(&v) {
                        s.push('{');
                        s.push_str(&v);
                        s.push('}');
                    } else if self.lists.contains_key(v.as_str()) {
                        return Err(format!(
                            "`{{{v}}}` is a list: use `{{*{v}}}` in an item of a list field"
                        ));
                    } else if is_io_placeholder(&v) {
                        return Err(format!(
                            "`{{{v}}}` is only filled in inside cmd, argv and env"
                        ));
                    } else {
                        return Err(format!(
                            "unknown placeholder `{{{v}}}` (variables here: {}; write `{{{{` and `}}}}` for literal braces)",
                            self.names()
                        ));
                    }
                }
                Piece::Star(v) => match star {
                    Some((name, value)) if name == v => {
                        s.push_str(&value.replace('{', "{{").replace('}', "}}"))
                    }
                    _ => {
                        return Err(format!(
                            "`{{*{v}}}` may appear once per item of inputs, outputs, deps or argv"
                        ))
                    }
                },
            }
        }
        Ok(s)
    }

    /// Expands an item of a list field: one result per element of its `{*list}`, if any.
    fn expand_item(&self, t: &str, io: bool) -> Result<Vec<String>, String> {
        let stars: Vec<String> = pieces(t)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Star(v) => Some(v),
                _ => None,
            })
            .collect();
        match stars.as_slice() {
            [] => Ok(vec![self.expand(t, io, None)?]),
            [name] => {
                let list = self
                    .lists
                    .get(name.as_str())
                    .ok_or_else(|| format!("`{{*{name}}}`: no list `{name}` in [vars]"))?;
                list.iter()
                    .map(|v| self.expand(t, io, Some((name, v))))
                    .collect()
            }
            _ => Err("only one `{*list}` placeholder per item".into()),
        }
    }
}

/// Replaces the `{{`/`}}` escapes left by expansion with single braces.
pub fn unescape(s: &str) -> String {
    s.replace("{{", "{").replace("}}", "}")
}

/// Lexically normalizes `p` against `base` (no file system access: `.` and `..` folded).
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let joined = base.join(p);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Builds and checks the plan of a parsed file.
///
/// # Errors
/// The first problem found, as an [`InputError`].
pub fn build(parsed: &Parsed) -> Result<Plan, InputError> {
    let file = parsed.path.clone();
    let abs_file = resolve(
        Path::new("/"),
        &std::path::absolute(&file)
            .unwrap_or_else(|_| file.clone())
            .to_string_lossy(),
    );
    let base = abs_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let settings = settings(parsed, &base, &abs_file)?;
    let mut scope = Scope {
        scalars: BTreeMap::new(),
        lists: BTreeMap::new(),
    };
    for (name, v) in &parsed.file.vars {
        if !is_ident(name) || is_io_placeholder(name) {
            return Err(InputError::Pool {
                file: file.clone(),
                message: format!(
                    "[vars]: `{name}` cannot be a variable name (identifiers only; in, out, inN, outN are reserved)"
                ),
            });
        }
        match v {
            VarValue::One(s) => {
                scope.scalars.insert(name, s.render());
            }
            VarValue::Many(l) => {
                scope.lists.insert(
                    name,
                    std::sync::Arc::new(l.iter().map(|s| s.render()).collect()),
                );
            }
        }
    }
    let mut tasks: Vec<PlannedTask> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut dep_names: Vec<Vec<String>> = Vec::new();
    // Per task: where its `deps` and `outputs` fields are (for link's errors).
    let mut field_at: Vec<(Location, Location)> = Vec::new();
    for (i, entry) in parsed.file.tasks.iter().enumerate() {
        let at = Location {
            file: file.clone(),
            line_col: parsed.entry_positions.get(i).copied().flatten(),
            entry: i,
        };
        let fields = parsed.field_positions.get(i);
        let shared_fields = std::sync::Arc::new(fields.cloned().unwrap_or_default());
        // Where the field a message names is (the entry when it names none, or in JSON).
        let at_field = |field: Option<&str>| Location {
            line_col: field
                .and_then(|f| fields.and_then(|fs| fs.get(f)).copied())
                .or(at.line_col),
            ..at.clone()
        };
        let bad = |key: &str, message: String| InputError::Task {
            at: at_field(field_of(&message)),
            key: key.to_string(),
            message,
        };
        let entry_sandbox = match &entry.sandbox {
            None => settings.sandbox.clone().map(std::sync::Arc::new),
            Some(own) => {
                let merged = match &settings.sandbox_section {
                    Some(pool) => own.over(pool),
                    None => own.clone(),
                };
                if merged.enabled == Some(false) {
                    None
                } else {
                    Some(std::sync::Arc::new(
                        sandbox_settings(&merged, &base).map_err(|m| InputError::Task {
                            at: at_field(Some("sandbox")),
                            key: entry.key.clone(),
                            message: m,
                        })?,
                    ))
                }
            }
        };
        for binding in bindings(entry, &scope).map_err(|m| bad(&entry.key, m))? {
            let mut local = Scope {
                scalars: scope.scalars.clone(),
                lists: scope.lists.clone(),
            };
            for (name, value) in &binding {
                local.lists.remove(name.as_str());
                local.scalars.insert(name, value.clone());
            }
            let key = local
                .expand(&entry.key, false, None)
                .map(|k| unescape(&k))
                .map_err(|m| bad(&entry.key, format!("key: {m}")))?;
            let (mut task, deps) = expand_entry(entry, &local, &key, &at, &base, &settings)
                .map_err(|m| bad(&key, m))?;
            task.fields = shared_fields.clone();
            task.sandbox = entry_sandbox.clone();
            if let Some(&first) = index.get(&key) {
                return Err(InputError::DuplicateKey {
                    key,
                    first: Box::new(tasks[first].at.clone()),
                    second: at_field(Some("key")),
                });
            }
            if tasks.len() >= MAX_TASKS {
                return Err(bad(
                    &entry.key,
                    format!("the file expands to more than {MAX_TASKS} tasks"),
                ));
            }
            index.insert(key, tasks.len());
            tasks.push(task);
            dep_names.push(deps);
            field_at.push((at_field(Some("deps")), at_field(Some("outputs"))));
        }
    }
    link(
        &mut tasks, &index, &dep_names, &field_at, &settings, &abs_file,
    )?;
    Ok(Plan {
        file,
        base,
        settings,
        tasks,
        index,
    })
}

fn settings(parsed: &Parsed, base: &Path, abs_file: &Path) -> Result<Settings, InputError> {
    let p = &parsed.file.pool;
    let bad = |message: String| InputError::Pool {
        file: parsed.path.clone(),
        message,
    };
    if p.jobs == Some(0) {
        return Err(bad("jobs must be at least 1".into()));
    }
    let grace = p.kill_grace.unwrap_or(2.0);
    if !(grace.is_finite() && (0.0..=3600.0).contains(&grace)) {
        return Err(bad(format!(
            "kill_grace must be between 0 and 3600 seconds, not {grace}"
        )));
    }
    if let Some(sh) = &p.shell {
        if sh.is_empty() || sh.contains('\0') {
            return Err(bad(format!(
                "shell must name a program (such as /bin/sh), not {sh:?}"
            )));
        }
    }
    let stem = abs_file
        .file_stem()
        .map_or_else(|| "graph".into(), |s| s.to_string_lossy().into_owned());
    let state_dir = match &p.state_dir {
        Some(d) => resolve(base, d),
        None => base.join(".forkgraph").join(&stem),
    };
    let log_dir = match &p.log_dir {
        Some(d) => resolve(base, d),
        None => state_dir.join("logs"),
    };
    Ok(Settings {
        jobs: p.jobs,
        log_dir,
        state_dir,
        shell: p.shell.clone().unwrap_or_else(|| "/bin/sh".into()),
        kill_grace: Duration::from_secs_f64(grace),
        sandbox: p
            .sandbox
            .as_ref()
            .filter(|s| s.enabled != Some(false))
            .map(|s| sandbox_settings(s, base))
            .transpose()
            .map_err(bad)?,
        sandbox_section: p.sandbox.clone(),
    })
}

/// Every binding of an entry's `for_each` variables (one empty binding without it).
fn bindings(entry: &TaskEntry, scope: &Scope<'_>) -> Result<Vec<Vec<(String, String)>>, String> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    let Some(fe) = &entry.for_each else {
        return Ok(out);
    };
    if fe.is_empty() {
        return Err("for_each is empty".into());
    }
    for (name, range) in fe {
        if !is_ident(name) || is_io_placeholder(name) {
            return Err(format!(
                "for_each: `{name}` cannot be a variable name (identifiers only; in, out, inN, outN are reserved)"
            ));
        }
        let values: Vec<String> = match range {
            Range::Var(v) => scope
                .lists
                .get(v.as_str())
                .map(|l| l.to_vec())
                .ok_or_else(|| {
                    format!("for_each: `{name}` ranges over `{v}`, which is not a list in [vars]")
                })?,
            Range::List(l) => l.iter().map(|s| s.render()).collect(),
        };
        let total = out.len().saturating_mul(values.len());
        if total > MAX_TASKS {
            return Err(format!("for_each expands to more than {MAX_TASKS} tasks"));
        }
        let mut next = Vec::with_capacity(total);
        for b in &out {
            for v in &values {
                let mut b2 = b.clone();
                b2.push((name.clone(), v.clone()));
                next.push(b2);
            }
        }
        out = next;
    }
    Ok(out)
}

/// Expands one binding of an entry; returns the task (deps not linked yet) and its dependency
/// names.
fn expand_entry(
    entry: &TaskEntry,
    scope: &Scope<'_>,
    key: &str,
    at: &Location,
    base: &Path,
    settings: &Settings,
) -> Result<(PlannedTask, Vec<String>), String> {
    let _ = settings;
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    no_nul("key", key)?;
    let list = |field: &str, items: &[String], io: bool| -> Result<Vec<String>, String> {
        let mut v = Vec::new();
        for it in items {
            v.extend(
                scope
                    .expand_item(it, io)
                    .map_err(|m| format!("{field}: {m}"))?,
            );
        }
        Ok(v)
    };
    let command = match (&entry.cmd, &entry.argv) {
        (Some(_), Some(_)) => return Err("give either cmd or argv, not both".into()),
        (None, None) => return Err("no command: give cmd (a shell line) or argv".into()),
        (Some(c), None) => {
            if c.trim().is_empty() {
                return Err("cmd is empty".into());
            }
            no_nul("cmd", c)?;
            CommandLine::Shell(
                scope
                    .expand(c, true, None)
                    .map_err(|m| format!("cmd: {m}"))?,
            )
        }
        (None, Some(a)) => {
            let a = list("argv", a, true)?;
            for item in &a {
                no_nul("argv", item)?;
            }
            if a.is_empty() || a[0].is_empty() {
                return Err("argv needs a program as its first item".into());
            }
            CommandLine::Argv(a)
        }
    };
    let mut env = Vec::new();
    for (k, v) in &entry.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("env: `{k}` is not a variable name"));
        }
        no_nul("env", v)?;
        env.push((
            k.clone(),
            scope
                .expand(v, true, None)
                .map_err(|m| format!("env {k}: {m}"))?,
        ));
    }
    let cwd = match &entry.cwd {
        Some(c) => resolve(
            base,
            &unescape(
                &scope
                    .expand(c, false, None)
                    .map_err(|m| format!("cwd: {m}"))?,
            ),
        ),
        None => base.to_path_buf(),
    };
    let paths = |field: &str, items: &[String]| -> Result<Vec<PathBuf>, String> {
        let mut v = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for p in list(field, items, false)? {
            let p = unescape(&p);
            if p.is_empty() {
                return Err(format!("{field}: an empty path"));
            }
            no_nul(field, &p)?;
            let r = resolve(base, &p);
            if seen.insert(r.clone()) {
                v.push(r);
            }
        }
        Ok(v)
    };
    let inputs = paths("inputs", &entry.inputs)?;
    let outputs = paths("outputs", &entry.outputs)?;
    for o in &outputs {
        if o.file_name().is_none() || o == base {
            return Err(format!("outputs: {} is not a file path", o.display()));
        }
    }
    if let Some(c) = &entry.cwd {
        no_nul("cwd", c)?;
    }
    let deps: Vec<String> = list("deps", &entry.deps, false)?
        .into_iter()
        .map(|d| unescape(&d))
        .collect();
    let timeout = match entry.timeout {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 && t < 1e9 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            return Err(format!(
                "timeout must be a positive number of seconds, not {t}"
            ))
        }
    };
    let memory_limit = entry
        .memory_limit
        .as_ref()
        .map(|m| m.bytes())
        .transpose()
        .map_err(|m| format!("memory_limit: {m}"))?;
    Ok((
        PlannedTask {
            key: key.to_string(),
            at: at.clone(),
            command,
            env,
            cwd,
            inputs,
            outputs,
            deps: Vec::new(),
            timeout,
            retries: entry.retries.unwrap_or(0),
            memory_limit,
            atomic: entry.atomic.unwrap_or(true),
            fields: Default::default(),
            sandbox: None,
        },
        deps,
    ))
}

/// Refuses a NUL byte, which no program, argument, environment value or path can hold (the
/// spawn would fail only when the task runs, after others had run).
fn no_nul(field: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!(
            "{field}: {s:?} holds a NUL byte, which no command line, environment value or path can hold"
        ));
    }
    Ok(())
}

/// The field of a task entry that an error message of `expand_entry` or `bindings` is about
/// (messages start with the field's name).
pub fn field_of(message: &str) -> Option<&'static str> {
    const FIELDS: &[&str] = &[
        "key",
        "for_each",
        "cmd",
        "argv",
        "env",
        "cwd",
        "inputs",
        "outputs",
        "deps",
        "timeout",
        "retries",
        "memory_limit",
        "atomic",
        "sandbox",
    ];
    let first = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()?;
    FIELDS.iter().copied().find(|f| *f == first)
}

/// A path as the file system sees it: its folder resolved through symbolic links as far as
/// it exists (the last component is kept: an output that is a symlink is replaced, not written
/// through). `cache` holds the folders resolved so far.
pub fn physical(p: &Path, cache: &mut HashMap<PathBuf, PathBuf>) -> PathBuf {
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return p.to_path_buf();
    };
    if let Some(c) = cache.get(parent) {
        return c.join(name);
    }
    let c = match std::fs::canonicalize(parent) {
        Ok(c) => c,
        Err(_) => physical(parent, cache),
    };
    cache.insert(parent.to_path_buf(), c.clone());
    c.join(name)
}

/// Files of the state folder that no output may be (see `crate::state`).
const STATE_FILES: &[&str] = &[
    "lock",
    "state.json",
    "journal.jsonl",
    "last-run.json",
    "stop",
    "commits",
];

/// Refuses an output that would overwrite the runner's own files: the graph file, the state or
/// log folder (or a folder holding them), a file of the state folder, or a task's log.
fn reserved(
    o: &Path,
    settings: &Settings,
    graph: &Path,
    logs: &HashMap<PathBuf, &str>,
) -> Option<String> {
    if o == graph {
        return Some("is the graph file itself".into());
    }
    for (dir, what) in [
        (&settings.state_dir, "state folder"),
        (&settings.log_dir, "log folder"),
    ] {
        if dir.starts_with(o) {
            return Some(format!(
                "is (or holds) the runner's {what} {}",
                dir.display()
            ));
        }
    }
    if let Some(name) = o
        .strip_prefix(&settings.state_dir)
        .ok()
        .and_then(|r| r.components().next())
    {
        if STATE_FILES.iter().any(|f| name.as_os_str() == *f) {
            return Some(format!(
                "is one of the runner's own files in its state folder {}",
                settings.state_dir.display()
            ));
        }
    }
    logs.get(o)
        .map(|k| format!("is the log file of task `{k}`"))
}

/// Resolves dependencies by key and by file, and refuses duplicate outputs (also through
/// symbolic links), an output inside another, outputs over the runner's own files, and cycles.
fn link(
    tasks: &mut [PlannedTask],
    index: &HashMap<String, usize>,
    dep_names: &[Vec<String>],
    field_at: &[(Location, Location)],
    settings: &Settings,
    graph: &Path,
) -> Result<(), InputError> {
    let mut cache = HashMap::new();
    let mut producer: HashMap<PathBuf, usize> = HashMap::new();
    for (i, t) in tasks.iter().enumerate() {
        for o in &t.outputs {
            let p = physical(o, &mut cache);
            if let Some(&first) = producer.get(o).or_else(|| producer.get(&p)) {
                return Err(InputError::DuplicateOutput {
                    at: field_at[i].1.clone(),
                    output: o.clone(),
                    first: tasks[first].key.clone(),
                    second: t.key.clone(),
                });
            }
            producer.insert(o.clone(), i);
            if p != *o {
                producer.insert(p, i);
            }
        }
    }
    let state = Settings {
        state_dir: physical(&settings.state_dir, &mut cache),
        log_dir: physical(&settings.log_dir, &mut cache),
        ..settings.clone()
    };
    let graph = physical(graph, &mut cache);
    let logs: HashMap<PathBuf, &str> = tasks
        .iter()
        .map(|t| {
            (
                state.log_dir.join(crate::command::log_name(&t.key)),
                t.key.as_str(),
            )
        })
        .collect();
    for (i, t) in tasks.iter().enumerate() {
        for o in &t.outputs {
            let p = physical(o, &mut cache);
            let bad = |message: String| InputError::Task {
                at: field_at[i].1.clone(),
                key: t.key.clone(),
                message,
            };
            if let Some(why) = reserved(&p, &state, &graph, &logs) {
                return Err(bad(format!("outputs: {} {why}", o.display())));
            }
            if let Some(&j) = p.ancestors().skip(1).find_map(|a| producer.get(a)) {
                return Err(bad(format!(
                    "outputs: {} is inside {}, an output of task `{}` (publishing that one \
                     would replace this one)",
                    o.display(),
                    tasks[j]
                        .outputs
                        .iter()
                        .find(|x| p.starts_with(physical(x, &mut HashMap::new())))
                        .unwrap_or(&tasks[j].outputs[0])
                        .display(),
                    tasks[j].key
                )));
            }
        }
    }
    for i in 0..tasks.len() {
        let mut deps = Vec::new();
        for d in &dep_names[i] {
            match index.get(d) {
                Some(&j) => deps.push(j),
                None => {
                    return Err(InputError::MissingDependency {
                        at: field_at[i].0.clone(),
                        key: tasks[i].key.clone(),
                        dependency: d.clone(),
                        suggestion: nearest_key(index.keys().map(String::as_str), d),
                    })
                }
            }
        }
        for inp in &tasks[i].inputs {
            if let Some(&j) = producer
                .get(inp)
                .or_else(|| producer.get(&physical(inp, &mut cache)))
            {
                deps.push(j);
            }
        }
        deps.sort_unstable();
        deps.dedup();
        tasks[i].deps = deps;
    }
    if let Some(path) = find_cycle(tasks) {
        return Err(InputError::Cycle {
            at: tasks[path[0]].at.clone(),
            path: path.into_iter().map(|i| tasks[i].key.clone()).collect(),
        });
    }
    Ok(())
}

/// The key closest to `wanted` (a typo: Damerau-Levenshtein distance at most a third of its
/// length, at least 1), if any.
fn nearest_key<'a>(keys: impl Iterator<Item = &'a str>, wanted: &str) -> Option<String> {
    let limit = (wanted.chars().count() / 3).max(1);
    keys.map(|k| (strsim::damerau_levenshtein(k, wanted), k))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map(|(_, k)| k.to_owned())
}

/// A cycle as a path of task indices (first repeated at the end), if there is one.
fn find_cycle(tasks: &[PlannedTask]) -> Option<Vec<usize>> {
    let n = tasks.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut missing: Vec<usize> = vec![0; n];
    for (i, t) in tasks.iter().enumerate() {
        missing[i] = t.deps.len();
        for &d in &t.deps {
            dependents[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &j in &dependents[i] {
            missing[j] -= 1;
            if missing[j] == 0 {
                ready.push(j);
            }
        }
    }
    if done == n {
        return None;
    }
    // Every node left has an unfinished dependency that is also left: walk those until one
    // repeats.
    let start = (0..n).find(|&i| missing[i] > 0)?;
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut cur = start;
    loop {
        if let Some(&pos) = seen.get(&cur) {
            let mut cyc: Vec<usize> = path[pos..].to_vec();
            cyc.reverse();
            // Show it as "a -> b": a depends on... read as data flow, producer first.
            cyc.push(cyc[0]);
            return Some(cyc);
        }
        seen.insert(cur, path.len());
        path.push(cur);
        cur = *tasks[cur].deps.iter().find(|&&d| missing[d] > 0)?;
    }
}

impl Plan {
    /// The tasks the given keys need (all when empty), with their dependencies, as a mask.
    ///
    /// # Errors
    /// [`InputError::UnknownKey`] for a key no task has.
    pub fn select(&self, keys: &[String]) -> Result<Vec<bool>, InputError> {
        if keys.is_empty() {
            return Ok(vec![true; self.tasks.len()]);
        }
        let mut mask = vec![false; self.tasks.len()];
        let mut stack = Vec::new();
        for k in keys {
            let &i = self.index.get(k).ok_or_else(|| InputError::UnknownKey {
                file: self.file.clone(),
                key: k.clone(),
                suggestion: nearest_key(self.index.keys().map(String::as_str), k),
            })?;
            stack.push(i);
        }
        while let Some(i) = stack.pop() {
            if !mask[i] {
                mask[i] = true;
                stack.extend(self.tasks[i].deps.iter().copied());
            }
        }
        Ok(mask)
    }

    /// The selected tasks in the order the engine runs them (forkgraph's static order).
    pub fn order(&self, mask: &[bool]) -> Vec<usize> {
        let sel: Vec<usize> = (0..self.tasks.len()).filter(|&i| mask[i]).collect();
        let mut pos = vec![u32::MAX; self.tasks.len()];
        for (n, &i) in sel.iter().enumerate() {
            pos[i] = n as u32;
        }
        let deps = forkgraph::Csr::from_lists(
            sel.iter()
                .map(|&i| self.tasks[i].deps.iter().map(|&d| pos[d]).collect()),
        );
        let dependents = deps.transpose();
        let keys: Vec<forkgraph::Key> = sel
            .iter()
            .map(|&i| forkgraph::Key::from(self.tasks[i].key.as_str()))
            .collect();
        let prio = forkgraph::order::order(&deps, &dependents, &keys);
        let mut out = sel.clone();
        out.sort_by_key(|&i| prio[pos[i] as usize]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_shell_braces() {
        assert_eq!(
            pieces("awk '{print $1}' ${HOME} {x}{{y}}"),
            vec![
                Piece::Lit("awk '{print $1}' ${HOME} ".into()),
                Piece::Var("x".into()),
                Piece::Lit("{y}".into()),
            ]
        );
        assert_eq!(
            pieces("{*s}.txt"),
            vec![Piece::Star("s".into()), Piece::Lit(".txt".into())]
        );
    }

    #[test]
    fn io_placeholders() {
        assert!(is_io_placeholder("in"));
        assert!(is_io_placeholder("out12"));
        assert!(!is_io_placeholder("outx"));
        assert!(!is_io_placeholder("input"));
    }

    #[test]
    fn resolve_folds_dots() {
        assert_eq!(
            resolve(Path::new("/a/b"), "./c/../d"),
            PathBuf::from("/a/b/d")
        );
        assert_eq!(resolve(Path::new("/a/b"), "/x/y"), PathBuf::from("/x/y"));
    }
}
