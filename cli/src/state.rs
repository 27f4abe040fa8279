//! Resume state for `--checksum`: per task, the hash of its command line and of each input
//! file when it last succeeded.
//!
//! Two files in the state folder: `state.json`, the records at the start of the last run,
//! always replaced whole (written to a temporary file, synced, renamed), and `journal.jsonl`,
//! to which the runner (rank 0 of an MPI run) appends one line per task that succeeded, once
//! the worker that ran it has renamed its outputs into place and returned the record. A run starts by folding the journal into `state.json` (atomically) and
//! emptying the journal. A line torn by a crash does not parse and is ignored: that task is
//! redone, never wrongly skipped.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a task's last success depended on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The task's key.
    pub key: String,
    /// SHA-256 of the command line, environment and working directory (hex).
    pub command: String,
    /// Each input file and the SHA-256 of its contents (hex).
    pub inputs: Vec<(PathBuf, String)>,
}

/// The state file of a state folder.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// The journal of a state folder.
pub fn journal_path(dir: &Path) -> PathBuf {
    dir.join("journal.jsonl")
}

/// SHA-256 of a file's contents, in hex.
///
/// # Errors
/// When the file cannot be read.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// SHA-256 of some strings (each length-prefixed), in hex.
pub fn hash_strings<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Loads the records (state file, then journal), folds the journal into a new state file
/// written atomically, and empties the journal. Returns the records by key.
///
/// # Errors
/// When the folder cannot be created or the new state file cannot be written.
pub fn load_and_compact(dir: &Path) -> io::Result<BTreeMap<String, Record>> {
    fs::create_dir_all(dir)?;
    let records = load(dir);
    write_atomic(
        &state_path(dir),
        serde_json::to_vec(&records.values().collect::<Vec<_>>())
            .map_err(io::Error::other)?
            .as_slice(),
    )?;
    File::create(journal_path(dir))?;
    Ok(records)
}

/// Reads the records without changing anything (for `check` and `--dry-run`).
pub fn load(dir: &Path) -> BTreeMap<String, Record> {
    let mut records = BTreeMap::new();
    if let Ok(text) = fs::read(state_path(dir)) {
        if let Ok(list) = serde_json::from_slice::<Vec<Record>>(&text) {
            for r in list {
                records.insert(r.key.clone(), r);
            }
        }
    }
    if let Ok(text) = fs::read_to_string(journal_path(dir)) {
        for line in text.lines() {
            if let Ok(r) = serde_json::from_str::<Record>(line) {
                records.insert(r.key.clone(), r);
            }
        }
    }
    records
}

/// Appends a record to the journal with one `write` (O_APPEND), then syncs it.
///
/// # Errors
/// When the journal cannot be opened or written.
pub fn append(journal: &Path, record: &Record) -> io::Result<()> {
    let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut f = OpenOptions::new().create(true).append(true).open(journal)?;
    f.write_all(&line)?;
    f.sync_data()
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced and renamed,
/// so that `path` is always either the old or the new contents.
///
/// # Errors
/// When writing or renaming fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// The interrupt marker of a state folder: while it exists, workers (on every rank) start no
/// command and stop the running ones (SIGTERM to the group, SIGKILL after the grace period).
pub fn stop_path(dir: &Path) -> PathBuf {
    dir.join("stop")
}

/// The folder of commit journals (tasks with several outputs being renamed into place).
pub fn commits_dir(dir: &Path) -> PathBuf {
    dir.join("commits")
}

/// The lock file of a state folder.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join("lock")
}

/// An exclusive lock on a state folder, held while a runner uses it (released when dropped or
/// when the runner dies: it is an `flock(2)`).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Why a state folder could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another runner holds it.
    Held {
        /// The process id it wrote in the lock file, if readable.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    Io(io::Error),
}

/// Locks the state folder `dir` for this runner and writes its pid into the lock file.
///
/// # Errors
/// [`LockError::Held`] when another runner holds it, with its pid.
pub fn lock(dir: &Path) -> Result<Lock, LockError> {
    fs::create_dir_all(dir).map_err(LockError::Io)?;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(lock_path(dir))
        .map_err(LockError::Io)?;
    if !crate::sys::try_lock(&file).map_err(LockError::Io)? {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(LockError::Held {
            pid: text.trim().parse().ok(),
        });
    }
    file.set_len(0).map_err(LockError::Io)?;
    let _ = std::io::Seek::rewind(&mut file);
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(LockError::Io)?;
    Ok(Lock { _file: file })
}

/// The renames that publish a task's outputs, recorded before the first one (a commit
/// journal): a crash between two renames is finished by the next start of a runner, so
/// resume never sees one new output beside an old one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Commit {
    /// The task.
    pub key: String,
    /// Each (temporary, output), in the order they are renamed.
    pub renames: Vec<(PathBuf, PathBuf)>,
    /// With `--checksum`, the task's record: the journal then stays after the renames until
    /// the runner has appended the record, so a crash in between does not lose it (the next
    /// runner appends it) and a finished task is not redone.
    #[serde(default)]
    pub record: Option<Record>,
}

/// The commit journal of task `key` in the folder `dir`.
pub fn commit_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{}.json", &hash_strings([key])[..16]))
}

/// Writes the commit journal of `c` into `dir` (atomically, synced); returns its path.
///
/// # Errors
/// When it cannot be written.
pub fn begin_commit(dir: &Path, c: &Commit) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = commit_path(dir, &c.key);
    write_atomic(&path, &serde_json::to_vec(c).map_err(io::Error::other)?)?;
    Ok(path)
}

/// Finishes the commits a crash interrupted: each journal's remaining temporaries are
/// renamed into place (the command had succeeded, every temporary was complete when the
/// journal was written), then the journal is removed. Returns the records the journals
/// carried (`--checksum`), which the caller appends to the state's journal.
///
/// A journal is a claim read from disk, so it is carried out only when it is one this graph's
/// runner could have written: its file is `commit_path` of its key, the key is a task whose
/// declared outputs (`outputs_of`) include every output it names, and each temporary is that
/// output's runner temporary. Any other journal (a forged or foreign one, or one of a task no
/// longer in the file) is left alone with a warning naming it: nothing is renamed or deleted.
pub fn finish_commits<'p>(
    dir: &Path,
    outputs_of: impl Fn(&str) -> Option<&'p [PathBuf]>,
) -> Vec<Record> {
    let mut done = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return done;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            // A journal's own temporary (torn before its rename): nothing was renamed yet.
            let _ = fs::remove_file(&path);
            continue;
        }
        let Some(c) = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Commit>(&b).ok())
        else {
            let _ = fs::remove_file(&path);
            continue;
        };
        if let Err(why) = commit_is_ours(&path, &c, &outputs_of) {
            eprintln!(
                "forkgraph: warning: left the commit journal {} alone: {why}",
                path.display()
            );
            continue;
        }
        for (tmp, out) in &c.renames {
            if let Ok(t) = fs::symlink_metadata(tmp) {
                if t.is_dir() && fs::symlink_metadata(out).is_ok_and(|m| m.is_dir()) {
                    let _ = fs::remove_dir_all(out);
                }
                let _ = fs::rename(tmp, out);
            }
        }
        let _ = fs::remove_file(&path);
        done.extend(c.record);
    }
    done
}

/// Why the journal at `path` is not one this graph's runner wrote, if it is not.
fn commit_is_ours<'p>(
    path: &Path,
    c: &Commit,
    outputs_of: &impl Fn(&str) -> Option<&'p [PathBuf]>,
) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new(""));
    if commit_path(dir, &c.key) != path {
        return Err(format!(
            "its name is not that of task {:?}'s journal",
            c.key
        ));
    }
    let Some(outputs) = outputs_of(&c.key) else {
        return Err(format!("no task {:?} with outputs in this graph", c.key));
    };
    if let Some(r) = &c.record {
        if r.key != c.key {
            return Err(format!("it carries a record of another task, {:?}", r.key));
        }
    }
    for (tmp, out) in &c.renames {
        if !outputs.contains(out) {
            return Err(format!(
                "{} is not an output of task {:?}",
                out.display(),
                c.key
            ));
        }
        let runner_temp = tmp.parent() == out.parent()
            && tmp
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(".forkgraph-tmp-"))
                .and_then(|rest| rest.split_once('.'))
                .is_some_and(|(pid, name)| {
                    !pid.is_empty()
                        && pid.bytes().all(|b| b.is_ascii_digit())
                        && out.file_name().and_then(|n| n.to_str()) == Some(name)
                });
        if !runner_temp {
            return Err(format!(
                "{} is not a runner temporary of {}",
                tmp.display(),
                out.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_journal_line_is_ignored_and_compaction_keeps_the_rest() {
        let dir = std::env::temp_dir().join(format!("fg-state-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let r = |k: &str| Record {
            key: k.into(),
            command: hash_strings(["x"]),
            inputs: vec![],
        };
        append(&journal_path(&dir), &r("a")).unwrap();
        append(&journal_path(&dir), &r("b")).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(journal_path(&dir))
            .unwrap();
        f.write_all(b"{\"key\":\"c\",\"comm").unwrap();
        let got = load_and_compact(&dir).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(fs::read(journal_path(&dir)).unwrap().len(), 0);
        assert_eq!(load(&dir).len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}
