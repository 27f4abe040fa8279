//! Anonymous files in a directory (for spilling results to disk): no name from the start
//! (`O_TMPFILE`), or, on file systems without it, a name removed right after creation. Either
//! way nothing is left on disk when the process dies, even by SIGKILL.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::errno;

/// A new, empty, unnamed file in `dir`, open for reading and writing (mode 0600, close-on-exec).
///
/// # Errors
/// When `dir` is not a writable directory, or the file system is full.
pub(crate) fn anonymous_file_in(dir: &Path) -> io::Result<File> {
    let mode = Mode::from_bits_truncate(0o600);
    match nix::fcntl::open(
        dir,
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        mode,
    ) {
        Ok(fd) => return Ok(File::from(fd)),
        // No O_TMPFILE on this file system (or kernel): a named file, unlinked at once.
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {}
        Err(e) => return Err(errno(e)),
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".spill-{}-{n}", std::process::id()));
        match nix::fcntl::open(
            &path,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            mode,
        ) {
            Ok(fd) => {
                let file = File::from(fd);
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}
