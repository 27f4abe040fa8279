//! Per-worker cgroups (v1 `memory` and `pids` controllers) for sandboxed workers, where this
//! process may create them (root, or a delegated hierarchy).
//!
//! Layout: the fork server makes `<its cgroup>/forkgraph-<server pid>` in each controller's
//! hierarchy, and one `w<worker pid>` below it per worker, with the worker's limit written
//! before the worker is moved in (the worker runs no task before the parent hears of it, which
//! is after the move). When the worker is reaped its directory is removed (its out-of-memory
//! kills read first); when the server ends, its own; and when the parent drops the server
//! (even one that was killed), whatever is left of `forkgraph-<server pid>`.
//!
//! cgroup v2 is not used yet: creating a child with the memory controller needs the controller
//! delegated to this process's cgroup, which this machine's v2 hierarchy has not; the sandbox
//! falls back to `RLIMIT_DATA` there (and says so in its report).

use std::io;
use std::path::{Path, PathBuf};

/// A cgroup v1 controller forkgraph limits workers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Controller {
    /// `memory.limit_in_bytes`.
    Memory,
    /// `pids.max`.
    Pids,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// The directory of this process's cgroup in `controller`'s v1 hierarchy, if this process may
/// create cgroups there (the directory is writable).
pub(crate) fn v1_dir(controller: Controller) -> Option<PathBuf> {
    let name = controller.name();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Fields: id parent dev root mountpoint opts [optional...] - fstype source superopts
    let (root, mount) = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split_whitespace();
        let (fstype, _src, superopts) = (post.next()?, post.next()?, post.next()?);
        if fstype != "cgroup" || !superopts.split(',').any(|o| o == name) {
            return None;
        }
        let pre: Vec<&str> = pre.split_whitespace().collect();
        Some((pre.get(3)?.to_string(), pre.get(4)?.to_string()))
    })?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls.split(',').any(|c| c == name).then(|| path.to_owned())
    })?;
    let rel = path.strip_prefix(root.as_str()).unwrap_or(&path);
    let dir = Path::new(&mount).join(rel.trim_start_matches('/'));
    nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK)
        .ok()
        .map(|()| dir)
}

/// A fork server's cgroups: one directory per controller in use.
#[derive(Debug)]
pub(crate) struct Cgroups {
    dirs: Vec<(Controller, PathBuf)>,
}

/// A worker's cgroups; removed by [`WorkerCgroups::remove`] once it is reaped.
#[derive(Debug)]
pub(crate) struct WorkerCgroups {
    dirs: Vec<(Controller, PathBuf)>,
}

/// Extra room of a worker's memory cgroup over its memory limit: the cgroup also counts its
/// code, page cache and kernel memory, which `RLIMIT_DATA` (the limit tasks see first) does not.
pub(crate) const CGROUP_MEMORY_SLACK: u64 = 64 << 20;

fn server_dir_name(server: i32) -> String {
    format!("forkgraph-{server}")
}

impl Cgroups {
    /// Makes the server's directories for `controllers` (each must be available).
    pub(crate) fn new(server: i32, controllers: &[Controller]) -> io::Result<Cgroups> {
        let mut dirs = Vec::new();
        for &c in controllers {
            let base = v1_dir(c).ok_or_else(|| {
                io::Error::other(format!("no writable cgroup v1 {} hierarchy", c.name()))
            })?;
            let d = base.join(server_dir_name(server));
            match std::fs::create_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", d.display()))),
            }
            dirs.push((c, d));
        }
        Ok(Cgroups { dirs })
    }

    /// Puts worker `pid` in cgroups of its own: memory limited to `memory` bytes (plus
    /// [`CGROUP_MEMORY_SLACK`]), at most `pids` processes.
    pub(crate) fn place(&self, pid: i32, memory: u64, pids: u32) -> io::Result<WorkerCgroups> {
        let mut made = WorkerCgroups { dirs: Vec::new() };
        for (c, base) in &self.dirs {
            let d = base.join(format!("w{pid}"));
            std::fs::create_dir(&d)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
            made.dirs.push((*c, d.clone()));
            let (file, value) = match c {
                Controller::Memory => (
                    "memory.limit_in_bytes",
                    memory.saturating_add(CGROUP_MEMORY_SLACK).to_string(),
                ),
                Controller::Pids => ("pids.max", pids.to_string()),
            };
            let write = |f: &str, v: &str| {
                std::fs::write(d.join(f), v)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}/{f}: {e}", d.display())))
            };
            write(file, &value)?;
            if *c == Controller::Memory && d.join("memory.memsw.limit_in_bytes").exists() {
                // No escape into swap: memory + swap limited alike (ignored where the kernel
                // does not account swap).
                let _ = write("memory.memsw.limit_in_bytes", &value);
            }
            write("cgroup.procs", &pid.to_string())?;
        }
        Ok(made)
    }
}

impl WorkerCgroups {
    /// Whether the kernel killed a process of this cgroup for want of memory.
    pub(crate) fn oom_killed(&self) -> bool {
        self.dirs
            .iter()
            .filter(|(c, _)| *c == Controller::Memory)
            .any(|(_, d)| {
                std::fs::read_to_string(d.join("memory.oom_control"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("oom_kill "))
                            .and_then(|n| n.trim().parse::<u64>().ok())
                    })
                    .is_some_and(|n| n > 0)
            })
    }

    /// Removes worker `pid`'s cgroups of `server` (after a failed [`Cgroups::place`]).
    pub(crate) fn remove_for(server: &Cgroups, pid: i32) {
        for (_, base) in &server.dirs {
            let _ = std::fs::remove_dir(base.join(format!("w{pid}")));
        }
    }

    /// Removes the cgroups (their processes must be gone).
    pub(crate) fn remove(self) {
        for (_, d) in self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Removes what is left of a fork server's cgroups (after it ended, or at its end). A server
/// that was killed leaves workers that die with it (their parent-death signal) but may not
/// have yet: what is still in a worker's cgroup is killed and waited for (each up to
/// `timeout`, through a pidfd) before the cgroup is removed.
pub(crate) fn remove_server_cgroups(server: i32, timeout: std::time::Duration) {
    for c in [Controller::Memory, Controller::Pids] {
        let Some(base) = v1_dir(c) else { continue };
        let d = base.join(server_dir_name(server));
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    end_members(&e.path(), timeout);
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&d);
    }
}

/// The processes in cgroup `dir`.
fn members(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in cgroup `dir` (a dead pool's worker and what it forked) and waits for
/// each to end, at most `timeout` each.
fn end_members(dir: &Path, timeout: std::time::Duration) {
    for pid in members(dir) {
        let Ok(fd) = super::pidfd_open(pid) else {
            continue; // gone already
        };
        // The pidfd holds the process that had `pid` when it was opened; if the cgroup still
        // lists that pid, it is that process (a pid is not reused while it is listed).
        if members(dir).contains(&pid) {
            super::pidfd_kill(std::os::fd::AsFd::as_fd(&fd));
            let _ = super::pidfd_wait(std::os::fd::AsFd::as_fd(&fd), timeout);
        }
    }
}
