//! Graphs larger than memory: a memory budget, and results spilled to disk above it.
//!
//! The engine counts the bytes of every result it holds (arrays, strings, lists and maps,
//! deeply). Above the budget it first stops starting tasks that may return large results
//! (while others run, they may free memory), then spills the held results needed latest by the
//! static order: their large arrays go to a file in the spill directory and the slot keeps a
//! small skeleton ([`Spilled`]). When a dependent is handed out, the arrays are read back into
//! sealed shared segments, so the value is the same on every scheduler and reaches worker
//! processes without another copy.
//!
//! # Nothing is left on disk
//!
//! Spill files have no name: they are created `O_TMPFILE` (or unlinked right after creation on
//! file systems without it), so the kernel frees them when their fd closes, also when the
//! process is killed. Each scheduler with a budget owns a directory,
//! `forkgraph-spill-<pid>-<n>`, in the spill directory (default: the system's temporary
//! directory), removed on drop; one left by a process that died is removed by the next one that
//! creates its own there (it is empty: its files had no names).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use forkgraph_worker::{Array, Buffer, DType, SharedVec, Value};

use crate::error::{BuildError, Error};
use crate::scheduler::GetOptions;

/// Arrays smaller than this are never spilled (the file costs more than they hold).
pub(crate) const MIN_SPILL: usize = 64 << 10;

/// What a run with a memory budget held and spilled ([`GetOptions::memory_stats`]).
///
/// "Held" counts the results the engine holds in this process: arrays, strings, lists and maps,
/// deeply. On a process pool with a budget, what the workers cache is bounded separately (see
/// [`ProcessPoolBuilder::memory_budget`](crate::ProcessPoolBuilder::memory_budget)).
///
/// [`GetOptions::memory_stats`]: crate::GetOptions::memory_stats
#[derive(Debug, Default)]
pub struct MemoryStats {
    held: AtomicU64,
    peak_held: AtomicU64,
    spilled_bytes: AtomicU64,
    spills: AtomicU64,
    restored_bytes: AtomicU64,
    restores: AtomicU64,
    /// In a pool's ledger: expected bytes of the large results of units in flight.
    in_flight: AtomicU64,
}

impl MemoryStats {
    /// Empty statistics, to pass to [`GetOptions::memory_stats`](crate::GetOptions::memory_stats).
    pub fn new() -> Arc<MemoryStats> {
        Arc::new(MemoryStats::default())
    }

    /// Bytes of results held in memory now (0 once a run is over).
    pub fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The most bytes of results held in memory at once.
    pub fn peak_held_bytes(&self) -> u64 {
        self.peak_held.load(Ordering::Relaxed)
    }

    /// Bytes written to spill files.
    pub fn bytes_spilled(&self) -> u64 {
        self.spilled_bytes.load(Ordering::Relaxed)
    }

    /// Results spilled (a result spilled twice counts twice).
    pub fn spills(&self) -> u64 {
        self.spills.load(Ordering::Relaxed)
    }

    /// Bytes read back from spill files.
    pub fn bytes_restored(&self) -> u64 {
        self.restored_bytes.load(Ordering::Relaxed)
    }

    /// Results read back from spill files.
    pub fn restores(&self) -> u64 {
        self.restores.load(Ordering::Relaxed)
    }

    pub(crate) fn set_held(&self, held: u64) {
        self.held.store(held, Ordering::Relaxed);
        self.peak_held.fetch_max(held, Ordering::Relaxed);
    }

    /// In a ledger: `b` more bytes held (and the peak).
    pub(crate) fn add_held(&self, b: u64) {
        let now = self.held.fetch_add(b, Ordering::Relaxed) + b;
        self.peak_held.fetch_max(now, Ordering::Relaxed);
    }

    /// In a ledger: `b` fewer bytes held.
    pub(crate) fn sub_held(&self, b: u64) {
        self.held.fetch_sub(b, Ordering::Relaxed);
    }

    /// In a ledger: `b` more expected bytes of units in flight.
    pub(crate) fn add_in_flight(&self, b: u64) {
        self.in_flight.fetch_add(b, Ordering::Relaxed);
    }

    /// In a ledger: `b` fewer expected bytes of units in flight.
    pub(crate) fn sub_in_flight(&self, b: u64) {
        self.in_flight.fetch_sub(b, Ordering::Relaxed);
    }

    /// In a ledger: bytes held plus bytes expected from units in flight.
    pub(crate) fn committed(&self) -> u64 {
        self.held.load(Ordering::Relaxed) + self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn spilled(&self, bytes: u64) {
        self.spilled_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.spills.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn restored(&self, bytes: u64) {
        self.restored_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.restores.fetch_add(1, Ordering::Relaxed);
    }
}

/// A directory of spill files owned by one scheduler (or one `get`), removed on drop.
#[derive(Debug)]
pub(crate) struct SpillDir {
    path: PathBuf,
}

/// Prefix of the directories schedulers create for their spill files.
const DIR_PREFIX: &str = "forkgraph-spill-";

impl SpillDir {
    /// Creates `forkgraph-spill-<pid>-<n>` in `base` (default: the system's temporary
    /// directory), after removing such directories of processes that no longer exist, and
    /// checks that a spill file can be created in it.
    ///
    /// # Errors
    /// When `base` does not exist, is not a directory, or is not writable.
    pub(crate) fn create(base: Option<&Path>) -> io::Result<SpillDir> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let meta = std::fs::metadata(&base).map_err(|e| annotate(&base, e))?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("spill directory {}: not a directory", base.display()),
            ));
        }
        sweep(&base);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        let path = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{DIR_PREFIX}{pid}-{n}"));
            let mut b = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            match b.create(&path) {
                Ok(()) => break path,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(annotate(&base, e)),
            }
        };
        let dir = SpillDir { path };
        // A spill file, written and read, or the error now rather than in the middle of a run.
        let mut probe = dir.file()?;
        probe
            .write_all(b"forkgraph")
            .map_err(|e| annotate(&dir.path, e))?;
        Ok(dir)
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A new unnamed spill file in the directory.
    fn file(&self) -> io::Result<File> {
        forkgraph_worker::host::anonymous_file_in(&self.path).map_err(|e| annotate(&self.path, e))
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn annotate(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("spill directory {}: {e}", path.display()))
}

/// Removes the spill directories in `base` of processes that are gone. They hold no files
/// (spill files have no names), so only empty directories are removed; anything else in them
/// stays untouched.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            // Fails, harmlessly, when the directory is not empty or not ours.
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// A memory budget for a run: the bytes of results the engine may hold, where to spill the
/// rest (`None` only without a limit), and where to report.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub(crate) limit: u64,
    pub(crate) dir: Option<Arc<SpillDir>>,
    /// This run's own statistics ([`GetOptions::memory_stats`]).
    pub(crate) stats: Option<Arc<MemoryStats>>,
    /// What every run under this budget holds and expects together: the pool's ledger for a
    /// pool's budget (all its calls share it), else one of the run's own. `limit` bounds it.
    pub(crate) ledger: Arc<MemoryStats>,
}

/// A scheduler's memory budget and spill directory, set up at build.
#[derive(Debug, Clone)]
pub(crate) struct PoolMemory {
    pub(crate) budget: u64,
    pub(crate) dir: Arc<SpillDir>,
    /// What all the pool's calls hold together (the budget is the pool's, not each call's).
    pub(crate) ledger: Arc<MemoryStats>,
}

impl PoolMemory {
    /// Creates the spill directory in `base` (see [`SpillDir::create`]).
    ///
    /// # Errors
    /// When the spill directory cannot be used, naming it.
    pub(crate) fn new(budget: u64, base: Option<&Path>) -> Result<PoolMemory, BuildError> {
        let dir = SpillDir::create(base).map_err(|e| BuildError::io("cannot spill results", e))?;
        Ok(PoolMemory {
            budget,
            dir: Arc::new(dir),
            ledger: MemoryStats::new(),
        })
    }
}

/// The budget of one `get`: its options' budget (bounding this `get` alone), or the
/// scheduler's (shared with every call of the scheduler through its ledger); `reserved` bytes
/// of it are set aside for what worker processes cache. A `spill_dir` in the options gets a
/// directory of its own for this `get`.
///
/// # Errors
/// When the options' spill directory cannot be used.
pub(crate) fn budget_for(
    opts: &GetOptions,
    pool: Option<&PoolMemory>,
    reserved: u64,
) -> Result<Option<Budget>, Error> {
    let (budget, ledger) = match (opts.memory_budget, pool) {
        (Some(b), _) => (b, MemoryStats::new()),
        (None, Some(p)) => (p.budget, p.ledger.clone()),
        (None, None) => {
            return Ok(opts.memory_stats.as_ref().map(|s| Budget {
                limit: u64::MAX,
                dir: None,
                stats: Some(s.clone()),
                ledger: MemoryStats::new(),
            }))
        }
    };
    // The pool's own statistics passed as a call's: the ledger already counts that call.
    let stats = opts
        .memory_stats
        .clone()
        .filter(|s| !Arc::ptr_eq(s, &ledger));
    let dir = match (opts.spill_dir.as_deref(), pool) {
        (None, Some(p)) => p.dir.clone(),
        (base, _) => {
            Arc::new(SpillDir::create(base).map_err(|e| Error::system("cannot spill results", e))?)
        }
    };
    Ok(Some(Budget {
        limit: budget.saturating_sub(reserved),
        dir: Some(dir),
        stats,
        ledger,
    }))
}

/// A held result written to disk: its large arrays are in `file`, the rest in `skeleton`.
#[derive(Debug)]
pub(crate) struct Spilled {
    file: File,
    /// The value with every spilled array replaced by an empty one.
    skeleton: Value,
    parts: Vec<Part>,
}

/// One spilled array.
#[derive(Debug)]
struct Part {
    /// Which array of the value (counting arrays and encoded values depth-first).
    leaf: usize,
    offset: u64,
    len: usize,
    /// The element type, or `None` for an encoded value's bytes.
    dtype: Option<DType>,
}

/// Writes the large arrays of `v` to a new file in `dir`; `None` when it has none of at least
/// [`MIN_SPILL`] bytes.
///
/// # Errors
/// When the file cannot be created or written (disk full).
pub(crate) fn spill(
    v: &Value,
    dir: &SpillDir,
    stats: Option<&MemoryStats>,
) -> io::Result<Option<Spilled>> {
    let mut file: Option<File> = None;
    let mut parts = Vec::new();
    let mut leaf = 0usize;
    let mut offset = 0u64;
    let skeleton = strip(v, &mut |bytes: &[u8], dtype| {
        let i = leaf;
        leaf += 1;
        if bytes.len() < MIN_SPILL {
            return Ok(false);
        }
        let f = match &mut file {
            Some(f) => f,
            None => file.insert(dir.file()?),
        };
        f.write_all(bytes).map_err(|e| annotate(dir.path(), e))?;
        parts.push(Part {
            leaf: i,
            offset,
            len: bytes.len(),
            dtype,
        });
        offset += bytes.len() as u64;
        Ok(true)
    })?;
    let Some(file) = file else { return Ok(None) };
    if let Some(s) = stats {
        s.spilled(offset);
    }
    Ok(Some(Spilled {
        file,
        skeleton,
        parts,
    }))
}

/// Called with the bytes and element type (`None`: an encoded value) of each array; true when
/// it was written out.
type Writer<'a> = dyn FnMut(&[u8], Option<DType>) -> io::Result<bool> + 'a;

/// A copy of `v` in which every array (and encoded value) for which `out(bytes, dtype)` returns
/// true is replaced by an empty one.
fn strip(v: &Value, out: &mut Writer<'_>) -> io::Result<Value> {
    Ok(match v {
        Value::Array(a) => {
            if out(a.as_bytes(), Some(a.dtype()))? {
                Value::Array(empty(a.dtype()))
            } else {
                v.clone()
            }
        }
        Value::Encoded(t, b) => {
            if out(b.as_bytes(), None)? {
                Value::Encoded(t.clone(), Buffer::copy_from_bytes(&[]))
            } else {
                v.clone()
            }
        }
        Value::List(l) => Value::List(l.iter().map(|x| strip(x, out)).collect::<Result<_, _>>()?),
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), strip(x, out)?)))
                .collect::<io::Result<_>>()?,
        ),
        _ => v.clone(),
    })
}

fn empty(dtype: DType) -> Array {
    Array::from_buffer(dtype, Buffer::copy_from_bytes(&[])).expect("an empty array")
}

impl Spilled {
    /// Bytes of the value that stay in memory while it is spilled.
    pub(crate) fn skeleton_bytes(&self) -> u64 {
        crate::callbacks::value_bytes(&self.skeleton)
    }

    /// Bytes of the value once read back.
    pub(crate) fn bytes(&self) -> u64 {
        self.skeleton_bytes() + self.parts.iter().map(|p| p.len as u64).sum::<u64>()
    }

    /// The value, its arrays read back into sealed shared segments.
    ///
    /// # Errors
    /// When the file cannot be read or a segment cannot be made (memory or fd limits).
    pub(crate) fn restore(&self, stats: Option<&MemoryStats>) -> io::Result<Value> {
        let mut leaf = 0usize;
        let mut next = 0usize;
        let mut total = 0u64;
        let v = rebuild(&self.skeleton, &mut |old: &Value| {
            let i = leaf;
            leaf += 1;
            let Some(p) = self.parts.get(next).filter(|p| p.leaf == i) else {
                return Ok(None);
            };
            next += 1;
            let mut seg = SharedVec::<u8>::zeroed(p.len)?;
            self.file.read_exact_at(&mut seg, p.offset)?;
            total += p.len as u64;
            let Value::Array(bytes) = seg.try_into_value()? else {
                unreachable!("a SharedVec is an array")
            };
            Ok(Some(match (p.dtype, old) {
                (Some(dtype), _) => Value::Array(
                    Array::from_buffer(dtype, bytes.buffer().clone())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
                ),
                (None, Value::Encoded(t, _)) => Value::Encoded(t.clone(), bytes.buffer().clone()),
                (None, _) => unreachable!("an untyped part is an encoded value"),
            }))
        })?;
        if let Some(s) = stats {
            s.restored(total);
        }
        Ok(v)
    }
}

/// A copy of `v` in which each array or encoded value (depth-first) is replaced by what
/// `leaf` returns for it, when it returns one.
fn rebuild(
    v: &Value,
    leaf: &mut dyn FnMut(&Value) -> io::Result<Option<Value>>,
) -> io::Result<Value> {
    Ok(match v {
        Value::Array(_) | Value::Encoded(..) => leaf(v)?.unwrap_or_else(|| v.clone()),
        Value::List(l) => Value::List(
            l.iter()
                .map(|x| rebuild(x, leaf))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), rebuild(x, leaf)?)))
                .collect::<io::Result<_>>()?,
        ),
        _ => v.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spilled_value_comes_back_intact() {
        let dir = SpillDir::create(None).unwrap();
        let big: Vec<f64> = (0..20_000).map(|i| i as f64 * 0.5).collect();
        let bytes: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
        let v = Value::List(vec![
            Value::Array(Array::from_vec(big.clone())),
            Value::Array(Array::from_vec(vec![1i32, 2, 3])),
            Value::Map(
                [
                    (
                        "e".to_string(),
                        Value::Encoded("T".into(), Buffer::from_vec(bytes)),
                    ),
                    ("s".to_string(), Value::Str("x".into())),
                ]
                .into_iter()
                .collect(),
            ),
        ]);
        let stats = MemoryStats::new();
        let s = spill(&v, &dir, Some(&stats)).unwrap().expect("large parts");
        assert_eq!(s.parts.len(), 2);
        assert!(s.skeleton_bytes() < 100);
        assert_eq!(stats.bytes_spilled(), 160_000 + 100_000);
        let back = s.restore(Some(&stats)).unwrap();
        assert_eq!(back, v);
        let Value::List(l) = &back else { panic!() };
        let Value::Array(a) = &l[0] else { panic!() };
        assert!(a.buffer().is_shared());
        assert_eq!(stats.bytes_restored(), 260_000);
    }

    #[test]
    fn small_values_are_not_spilled() {
        let dir = SpillDir::create(None).unwrap();
        let v = Value::Array(Array::from_vec(vec![1u8; 100]));
        assert!(spill(&v, &dir, None).unwrap().is_none());
    }

    #[test]
    fn the_directory_is_removed_on_drop_and_stale_ones_are_swept() {
        let base = std::env::temp_dir().join(format!("fg-spill-unit-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        // A directory of a process that cannot exist (pid above the kernel's maximum).
        let stale = base.join(format!("{DIR_PREFIX}4294967295-0"));
        std::fs::create_dir_all(&stale).unwrap();
        let dir = SpillDir::create(Some(&base)).unwrap();
        assert!(!stale.exists(), "a dead process's directory is swept");
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
        std::fs::remove_dir(&base).unwrap();
    }
}
