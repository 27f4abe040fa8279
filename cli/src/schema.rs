//! The graph file: its schema (TOML, or JSON with the same fields) and parsing it with errors
//! that name the file, line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::InputError;

/// A whole graph file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFile {
    /// Settings for the whole run (`[pool]`).
    #[serde(default)]
    pub pool: PoolSection,
    /// Named values and lists for templates (`[vars]`).
    #[serde(default)]
    pub vars: BTreeMap<String, VarValue>,
    /// The tasks (`[[task]]`).
    #[serde(default, rename = "task", deserialize_with = "task_array")]
    pub tasks: Vec<TaskEntry>,
}

/// `task`: an array of tables (`[[task]]`); a single table (`[task]`) is refused with a message
/// that says so instead of serde's "expected a sequence".
fn task_array<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TaskEntry>, D::Error> {
    struct Tasks;
    impl<'de> serde::de::Visitor<'de> for Tasks {
        type Value = Vec<TaskEntry>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of tasks ([[task]] tables)")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(t) = seq.next_element()? {
                v.push(t);
            }
            Ok(v)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(
                "`task` is one table here: write [[task]] (an array of tables, one per task), \
                 not [task]; in JSON, \"task\": [ {...}, ... ]",
            ))
        }
    }
    d.deserialize_seq(Tasks)
}

/// `[pool]`: how the run is carried out (across machines, the launcher and `-j` say how; see
/// the README's "Across machines").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Commands at once when `-j` is not given (default: available parallelism).
    pub jobs: Option<usize>,
    /// Where per-task logs go (default `.forkgraph/<file stem>/logs`, beside the file).
    pub log_dir: Option<String>,
    /// Where the resume state goes (default `.forkgraph/<file stem>`, beside the file).
    pub state_dir: Option<String>,
    /// The shell that runs `cmd` strings (default `/bin/sh`).
    pub shell: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when a command times out (default 2).
    pub kill_grace: Option<f64>,
    /// Run every command in a sandboxed worker (`[pool.sandbox]`).
    pub sandbox: Option<SandboxSection>,
}

/// `[pool.sandbox]`: the workers that spawn the commands are sandboxed (`forkgraph::Sandbox`),
/// and so are the commands, which inherit every layer.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// In a task's `sandbox`: `false` runs it unsandboxed even under `[pool.sandbox]`
    /// (default true).
    pub enabled: Option<bool>,
    /// Paths commands may read, beyond the defaults and each task's inputs.
    #[serde(default)]
    pub read_only: Vec<String>,
    /// Paths commands may read and write, beyond each task's output folders and the log and
    /// state folders.
    #[serde(default)]
    pub read_write: Vec<String>,
    /// Whether the system folders (`/usr`, `/bin`, `/lib`...) are readable (default true).
    pub system_paths: Option<bool>,
    /// Whether commands may use the network (default false).
    pub network: Option<bool>,
    /// Most processes per worker, itself and its command's included (default 64).
    pub max_processes: Option<u32>,
    /// Most memory per worker and what it runs.
    pub memory_limit: Option<Size>,
    /// Longest file a command may write (default 1 GiB).
    pub file_size_limit: Option<Size>,
    /// Most open files per process (default 1024).
    pub max_open_files: Option<u64>,
    /// Environment variables commands keep from the runner's (default: `PATH`, `HOME`,
    /// `LANG`, `LC_ALL`, `TZ`, `TERM`, `USER`, `LOGNAME`, `TMPDIR`).
    pub keep_env: Option<Vec<String>>,
    /// System calls allowed beyond the default allow-list.
    #[serde(default)]
    pub allow_syscalls: Vec<String>,
    /// Whether workers get their own user, IPC and network namespaces (default true).
    pub namespaces: Option<bool>,
    /// Leave out the layers this kernel cannot provide instead of refusing to start.
    pub best_effort: Option<bool>,
}

/// A scalar in `[vars]` and `for_each` lists.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string, integer or boolean")]
pub enum Scalar {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// As it is substituted into templates.
    pub fn render(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// A `[vars]` entry: one value or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a [vars] value is a string, integer or boolean, or a list of those"
)]
pub enum VarValue {
    /// One value: `ref = "genome.fa"`.
    One(Scalar),
    /// A list: `samples = ["a", "b"]`.
    Many(Vec<Scalar>),
}

/// What a `for_each` variable ranges over: a list, or the name of a `[vars]` list.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a for_each variable ranges over the name of a [vars] list or a list of values"
)]
pub enum Range {
    /// The name of a list in `[vars]`.
    Var(String),
    /// The values themselves.
    List(Vec<Scalar>),
}

/// A memory size: bytes, or a string with a unit (`"512M"`, `"2G"`, `"1.5GiB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a size in bytes or a string with a unit (1048576, \"512M\", \"2G\")"
)]
pub enum Size {
    /// Bytes.
    Bytes(u64),
    /// With a unit.
    Text(String),
}

impl Size {
    /// The size in bytes.
    ///
    /// # Errors
    /// When the text is not a number with an optional unit K, M, G, T (powers of 1024; `B`
    /// and `iB` accepted).
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(b) => Ok(*b),
            Size::Text(t) => parse_size(t),
        }
    }
}

fn parse_size(t: &str) -> Result<u64, String> {
    let s = t.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a size (examples: 1048576, \"512M\", \"2G\")"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        u => return Err(format!("`{t}`: unknown unit `{u}` (use K, M, G or T)")),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 1.0 || v > u64::MAX as f64 {
        return Err(format!("`{t}` is not a usable size"));
    }
    Ok(v as u64)
}

/// One `[[task]]` entry (a template when it has `for_each`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    /// The task's key (with `{var}` placeholders under `for_each`).
    pub key: String,
    /// Variables this entry ranges over (the cartesian product when several).
    pub for_each: Option<BTreeMap<String, Range>>,
    /// A shell command line, run with `shell -c`.
    pub cmd: Option<String>,
    /// A program and its arguments, run directly.
    pub argv: Option<Vec<String>>,
    /// Environment variables added to the runner's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the graph file's directory).
    pub cwd: Option<String>,
    /// Files the command reads.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Files the command writes.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Keys of tasks that must finish first.
    #[serde(default)]
    pub deps: Vec<String>,
    /// Seconds before the command's process group is killed.
    pub timeout: Option<f64>,
    /// Re-runs after a failure.
    pub retries: Option<u32>,
    /// Address-space limit of the command (RLIMIT_AS).
    pub memory_limit: Option<Size>,
    /// Whether outputs go through temporary paths (default true).
    pub atomic: Option<bool>,
    /// This task's sandbox: its values replace `[pool.sandbox]`'s, its lists add to them
    /// (`enabled = false`: no sandbox).
    pub sandbox: Option<SandboxSection>,
}

impl SandboxSection {
    /// A task's settings over the pool's: values given here replace the pool's, lists add.
    pub fn over(&self, pool: &SandboxSection) -> SandboxSection {
        let cat = |a: &Vec<String>, b: &Vec<String>| a.iter().chain(b).cloned().collect();
        SandboxSection {
            enabled: self.enabled.or(pool.enabled),
            read_only: cat(&pool.read_only, &self.read_only),
            read_write: cat(&pool.read_write, &self.read_write),
            system_paths: self.system_paths.or(pool.system_paths),
            network: self.network.or(pool.network),
            max_processes: self.max_processes.or(pool.max_processes),
            memory_limit: self.memory_limit.clone().or(pool.memory_limit.clone()),
            file_size_limit: self
                .file_size_limit
                .clone()
                .or(pool.file_size_limit.clone()),
            max_open_files: self.max_open_files.or(pool.max_open_files),
            keep_env: match (&self.keep_env, &pool.keep_env) {
                (Some(a), Some(b)) => Some(cat(b, a)),
                (a, b) => a.clone().or(b.clone()),
            },
            allow_syscalls: cat(&pool.allow_syscalls, &self.allow_syscalls),
            namespaces: self.namespaces.or(pool.namespaces),
            best_effort: self.best_effort.or(pool.best_effort),
        }
    }
}

/// A parsed file and where its task entries are in the text (for later errors).
#[derive(Debug)]
pub struct Parsed {
    /// The file.
    pub path: PathBuf,
    /// Its contents.
    pub file: GraphFile,
    /// Per task entry: its 1-based line and column, where known (TOML).
    pub entry_positions: Vec<Option<(usize, usize)>>,
    /// Per task entry: the line and column of each of its fields (TOML; empty for JSON).
    pub field_positions: Vec<BTreeMap<String, (usize, usize)>>,
}

/// The 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, col)
}

/// Whether the file is JSON (by extension; anything else is TOML).
fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Parses a graph file's text.
///
/// # Errors
/// [`InputError::Syntax`] with the line and column for malformed text, unknown fields and
/// wrong types.
pub fn parse_str(path: &Path, text: &str) -> Result<Parsed, InputError> {
    let syntax = |line, column, message: String| InputError::Syntax {
        file: path.to_path_buf(),
        line,
        column,
        message,
    };
    if is_json(path) {
        // serde reads a struct from an array too (its fields in order): `[{}, {}, [...]]`
        // would be a graph. The file is one object.
        if let Some(at) = text.find(|c: char| !c.is_ascii_whitespace()) {
            if !text[at..].starts_with('{') {
                let (line, column) = line_col(text, at);
                return Err(syntax(
                    line,
                    column,
                    "a graph file in JSON is one object: {\"pool\": {...}, \"vars\": {...}, \"task\": [...]}"
                        .into(),
                ));
            }
        }
        let file: GraphFile = serde_json::from_str(text).map_err(|e| {
            // serde_json counts the column of a position at a line's start as 0.
            syntax(e.line(), e.column().max(1), strip_position(&e.to_string()))
        })?;
        let n = file.tasks.len();
        return Ok(Parsed {
            path: path.to_path_buf(),
            file,
            entry_positions: vec![None; n],
            field_positions: vec![BTreeMap::new(); n],
        });
    }
    let file: GraphFile = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        syntax(line, column, e.message().trim().to_string())
    })?;
    let mut entry_positions = vec![None; file.tasks.len()];
    let mut field_positions = vec![BTreeMap::new(); file.tasks.len()];
    if let Ok(table) = toml::de::DeTable::parse(text) {
        if let Some(v) = table.get_ref().get("task") {
            if let toml::de::DeValue::Array(items) = v.get_ref() {
                for (i, item) in items.iter().enumerate() {
                    if let Some(slot) = entry_positions.get_mut(i) {
                        *slot = Some(line_col(text, item.span().start));
                    }
                    if let (Some(fields), toml::de::DeValue::Table(t)) =
                        (field_positions.get_mut(i), item.get_ref())
                    {
                        for (k, _) in t.iter() {
                            fields.insert(k.get_ref().to_string(), line_col(text, k.span().start));
                        }
                    }
                }
            }
        }
    }
    Ok(Parsed {
        path: path.to_path_buf(),
        file,
        entry_positions,
        field_positions,
    })
}

/// serde_json appends " at line L column C" to its messages; we print the position first.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(p) => msg[..p].to_string(),
        None => msg.to_string(),
    }
}

/// Reads and parses a graph file.
///
/// # Errors
/// [`InputError::Read`] when it cannot be read, or as [`parse_str`].
pub fn parse_file(path: &Path) -> Result<Parsed, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_col(
            &String::from_utf8_lossy(&e.as_bytes()[..e.utf8_error().valid_up_to()]),
            usize::MAX,
        );
        InputError::Syntax {
            file: path.to_path_buf(),
            line,
            column,
            message: "the file is not valid UTF-8".into(),
        }
    })?;
    parse_str(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 99), (2, 2));
    }
}
