//! The sandbox of a worker that runs untrusted native code: what it may touch, and which kernel
//! layers enforce it.
//!
//! A [`Sandbox`] travels with every spawn request to the fork server. The server compiles its
//! seccomp programs once (and checks the whole sandbox once, in a throw-away child, so that a
//! layer the kernel refuses is a build error, not a dying worker); each worker applies the
//! layers after the fork and before it greets the parent, in this order:
//!
//! 1. environment scrubbed to the allow-list (the strings the worker started with are zeroed);
//! 2. every fd closed but stdin, stdout, stderr and the worker's own socket;
//! 3. a new user namespace, and new IPC and (unless the network is allowed) network namespaces
//!    (as root, made once by the fork server and shared by its workers);
//! 4. rlimits: open files, file size, processes, memory (RLIMIT_DATA);
//! 5. `PR_SET_NO_NEW_PRIVS`, not dumpable;
//! 6. Landlock: files only beneath the declared paths (and `/proc/self`, read-only), no TCP
//!    bind or connect, no signals or abstract Unix sockets outside the worker's own domain;
//! 7. seccomp: an allow-list of system calls; the rest fail with `EPERM` (or kill the worker).
//!
//! The parent and the fork server are not dumpable while a sandboxed pool lives.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a sandboxed worker may do. Start from [`Sandbox::strict`] and open what tasks need.
///
/// ```
/// use forkgraph_worker::sandbox::Sandbox;
///
/// let sandbox = Sandbox::strict()
///     .read_only(["/usr/share"])
///     .read_write(["/tmp"])
///     .allow_network(false)
///     .max_processes(1)
///     .memory_limit(2 << 30);
/// assert!(!sandbox.network_allowed());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    read_only: Vec<PathBuf>,
    read_write: Vec<PathBuf>,
    network: bool,
    max_processes: u32,
    memory_limit: Option<u64>,
    file_size_limit: u64,
    max_open_files: u64,
    exec: bool,
    env: Vec<String>,
    syscalls: Vec<String>,
    kill_on_denied: bool,
    namespaces: bool,
    best_effort: bool,
}

/// Default of [`Sandbox::file_size_limit`]: 1 GiB.
pub const DEFAULT_FILE_SIZE_LIMIT: u64 = 1 << 30;
/// Default of [`Sandbox::max_open_files`].
pub const DEFAULT_MAX_OPEN_FILES: u64 = 1024;

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox::strict()
    }
}

impl Sandbox {
    /// The strictest sandbox: no file readable or writable (but the worker's own `/proc/self`),
    /// no network, no new process (threads are allowed), no `execve`, an empty environment,
    /// files written at most [`DEFAULT_FILE_SIZE_LIMIT`] long, at most
    /// [`DEFAULT_MAX_OPEN_FILES`] open files, and every layer required.
    pub fn strict() -> Sandbox {
        Sandbox {
            read_only: Vec::new(),
            read_write: Vec::new(),
            network: false,
            max_processes: 1,
            memory_limit: None,
            file_size_limit: DEFAULT_FILE_SIZE_LIMIT,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            exec: false,
            env: Vec::new(),
            syscalls: Vec::new(),
            kill_on_denied: false,
            namespaces: true,
            best_effort: false,
        }
    }

    /// Paths (files or directories, with everything beneath) a task may read (Landlock).
    /// They must exist when the pool is built.
    #[must_use]
    pub fn read_only<I, P>(mut self, paths: I) -> Sandbox
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        self.read_only
            .extend(paths.into_iter().map(|p| p.as_ref().to_path_buf()));
        self
    }

    /// Paths a task may read, write, create files in and remove files from (Landlock).
    #[must_use]
    pub fn read_write<I, P>(mut self, paths: I) -> Sandbox
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        self.read_write
            .extend(paths.into_iter().map(|p| p.as_ref().to_path_buf()));
        self
    }

    /// Whether tasks may use the network (default no: a network namespace with only a loopback
    /// interface, down; Landlock denying TCP bind and connect; and no `socket` system call).
    /// Allowed, tasks may make Internet (IPv4, IPv6) and routing netlink sockets, not Unix
    /// sockets: connecting to a named one (a Docker or D-Bus daemon's) is not restricted by
    /// Landlock. `allow_syscalls(["socket"])` allows every socket family.
    #[must_use]
    pub fn allow_network(mut self, on: bool) -> Sandbox {
        self.network = on;
        self
    }

    /// Most processes a worker may be (itself included). `1` (the default): no fork at all,
    /// enforced by seccomp (threads are still allowed). More: `RLIMIT_NPROC` in the worker's
    /// own user namespace, which the kernel does not enforce for root (an error when the pool
    /// runs as root, unless [`best_effort`](Sandbox::best_effort)).
    ///
    /// # Panics
    /// When `n` is 0.
    #[must_use]
    pub fn max_processes(mut self, n: u32) -> Sandbox {
        assert!(n >= 1, "max_processes(0): a worker is itself a process");
        self.max_processes = n;
        self
    }

    /// Most memory a worker may use: its heap (`RLIMIT_DATA`) and the shared segments it
    /// creates, as `ProcessPoolBuilder::memory_limit` (which, when also set, wins), and a
    /// memory cgroup per worker, which counts every page a task maps. Where this process cannot
    /// make cgroups (not root, no delegated cgroup v1 memory hierarchy) that layer is
    /// unavailable: the pool's build fails unless [`best_effort`](Sandbox::best_effort), which
    /// keeps `RLIMIT_DATA` only (a task's own shared mappings and memfds are then not counted).
    #[must_use]
    pub fn memory_limit(mut self, bytes: u64) -> Sandbox {
        self.memory_limit = Some(bytes);
        self
    }

    /// Longest file a task may write (`RLIMIT_FSIZE`; a write past it fails with `EFBIG`).
    #[must_use]
    pub fn file_size_limit(mut self, bytes: u64) -> Sandbox {
        self.file_size_limit = bytes;
        self
    }

    /// Most open files of a worker (`RLIMIT_NOFILE`; its runtime needs a few, and one per
    /// shared input segment of a task).
    #[must_use]
    pub fn max_open_files(mut self, n: u64) -> Sandbox {
        self.max_open_files = n;
        self
    }

    /// Whether tasks may `execve` programs (default no; read-only and read-write paths must
    /// then also hold what they run).
    #[must_use]
    pub fn allow_exec(mut self, on: bool) -> Sandbox {
        self.exec = on;
        self
    }

    /// Environment variables a worker keeps (default none).
    #[must_use]
    pub fn keep_env<I, S>(mut self, names: I) -> Sandbox
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.env.extend(names.into_iter().map(Into::into));
        self
    }

    /// System calls, by name (`"socket"`, `"pipe2"`), allowed beyond the default allow-list,
    /// with any arguments (a call the allow-list limits by argument, such as `ioctl`, `prctl`
    /// or `socket`, is then allowed whole). An unknown name is an error when the pool is built.
    #[must_use]
    pub fn allow_syscalls<I, S>(mut self, names: I) -> Sandbox
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.syscalls.extend(names.into_iter().map(Into::into));
        self
    }

    /// A denied system call kills the worker (SIGSYS; its task fails naming the signal)
    /// instead of failing with `EPERM` (the default).
    #[must_use]
    pub fn kill_on_denied(mut self, on: bool) -> Sandbox {
        self.kill_on_denied = on;
        self
    }

    /// Whether workers get their own user, IPC and network namespaces (default yes).
    #[must_use]
    pub fn namespaces(mut self, on: bool) -> Sandbox {
        self.namespaces = on;
        self
    }

    /// Layers the kernel cannot provide are left out (and said so in [`Sandbox::report`])
    /// instead of failing the pool's build.
    #[must_use]
    pub fn best_effort(mut self) -> Sandbox {
        self.best_effort = true;
        self
    }

    /// Whether tasks may use the network.
    pub fn network_allowed(&self) -> bool {
        self.network
    }

    /// The memory limit asked, if any.
    pub fn memory(&self) -> Option<u64> {
        self.memory_limit
    }

    /// Which layers are active on this kernel for this sandbox, and why the others are not.
    pub fn report(&self) -> SandboxReport {
        use crate::sys::cgroup::{v1_dir, Controller};
        let memory_cgroup = v1_dir(Controller::Memory).is_some();
        let pids_cgroup = self.max_processes > 1 && v1_dir(Controller::Pids).is_some();
        let mut layers = Vec::new();
        let mut add = |name: &'static str, status: LayerStatus| layers.push(Layer { name, status });
        add(
            "no_new_privs",
            LayerStatus::Active(
                "PR_SET_NO_NEW_PRIVS; workers, fork server and parent not \
                             dumpable"
                    .into(),
            ),
        );
        add("landlock", {
            let abi = crate::sys::landlock_abi();
            if abi >= 6 {
                LayerStatus::Active(format!(
                    "ABI {abi}: files beneath {} path(s), {}, signals and abstract sockets \
                     scoped",
                    self.read_only.len() + self.read_write.len(),
                    if self.network {
                        "network allowed"
                    } else {
                        "TCP bind/connect denied"
                    }
                ))
            } else if abi > 0 {
                LayerStatus::Unavailable(format!(
                    "the kernel's Landlock ABI is {abi}; network rules need 4 and signal \
                     scoping 6"
                ))
            } else {
                LayerStatus::Unavailable("the kernel has no Landlock (Linux >= 5.13)".into())
            }
        });
        add(
            "seccomp",
            if crate::sys::seccomp_available() {
                LayerStatus::Active(format!(
                    "allow-list; denied calls {}",
                    if self.kill_on_denied {
                        "kill the worker (SIGSYS)"
                    } else {
                        "fail with EPERM, named in the task's error"
                    }
                ))
            } else {
                LayerStatus::Unavailable("the kernel has no seccomp filters".into())
            },
        );
        add(
            "namespaces",
            if !self.namespaces {
                LayerStatus::Off("namespaces(false)".into())
            } else if crate::sys::user_namespaces_available() {
                LayerStatus::Active(format!(
                    "user, IPC{}",
                    if self.network { "" } else { ", network" }
                ))
            } else {
                LayerStatus::Unavailable(
                    "user namespaces are disabled (user.max_user_namespaces is 0 or \
                     kernel.unprivileged_userns_clone is 0)"
                        .into(),
                )
            },
        );
        add(
            "processes",
            if self.max_processes == 1 {
                LayerStatus::Active("no fork (seccomp: clone only with CLONE_THREAD)".into())
            } else if pids_cgroup {
                LayerStatus::Active(format!(
                    "a cgroup v1 pids controller per worker, pids.max {}",
                    self.max_processes
                ))
            } else if crate::sys::is_root() {
                LayerStatus::Unavailable(format!(
                    "max_processes({}): RLIMIT_NPROC is not enforced for root; use \
                     max_processes(1) or run as another user",
                    self.max_processes
                ))
            } else {
                LayerStatus::Active(format!("RLIMIT_NPROC {}", self.max_processes))
            },
        );
        add(
            "limits",
            LayerStatus::Active(format!(
                "RLIMIT_FSIZE {} bytes, RLIMIT_NOFILE {}",
                self.file_size_limit, self.max_open_files,
            )),
        );
        add(
            "memory",
            match self.memory_limit {
                None => LayerStatus::Off("no memory_limit".into()),
                Some(m) if memory_cgroup => LayerStatus::Active(format!(
                    "RLIMIT_DATA {m} bytes, and a cgroup v1 memory controller per worker at {m} \
                     bytes + {} MiB (counts every page: shared mappings, memfds, caches)",
                    crate::sys::cgroup::CGROUP_MEMORY_SLACK >> 20
                )),
                // RLIMIT_DATA alone is no limit on untrusted code: a task maps shared anonymous
                // memory or memfds (both allowed) past it at will.
                Some(m) => LayerStatus::Unavailable(format!(
                    "memory_limit({m}) needs a cgroup v1 memory hierarchy this process may \
                     write (root, or a delegated one): RLIMIT_DATA alone does not count the \
                     shared anonymous mappings and memfds a task makes, so a task could use \
                     any amount of memory"
                )),
            },
        );
        add(
            "inheritance",
            LayerStatus::Active(format!(
                "environment scrubbed ({} kept), fds closed, shared results sealed (no recycling)",
                self.env.len()
            )),
        );
        SandboxReport { layers }
    }

    /// Checks the sandbox against this kernel and its own settings.
    ///
    /// # Errors
    /// A path that does not exist, an unknown system call name, an environment variable name
    /// with `=` in it, or a layer the kernel cannot provide (unless
    /// [`best_effort`](Sandbox::best_effort)).
    pub fn check(&self) -> Result<SandboxReport, SandboxError> {
        for p in self.read_only.iter().chain(&self.read_write) {
            if let Err(e) = std::fs::metadata(p) {
                return Err(SandboxError::new(
                    "landlock",
                    format!("path {} cannot be opened: {e}", p.display()),
                ));
            }
        }
        for name in &self.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(SandboxError::new(
                    "inheritance",
                    format!("keep_env: {name:?} is not an environment variable name"),
                ));
            }
        }
        crate::sys::compile_seccomp(self).map_err(|e| SandboxError::new("seccomp", e))?;
        let report = self.report();
        if !self.best_effort {
            if let Some(l) = report
                .layers
                .iter()
                .find(|l| matches!(l.status, LayerStatus::Unavailable(_)))
            {
                let LayerStatus::Unavailable(why) = &l.status else {
                    unreachable!()
                };
                return Err(SandboxError::new(
                    l.name,
                    format!("{why} (Sandbox::best_effort() runs without it)"),
                ));
            }
        }
        Ok(report)
    }

    pub(crate) fn read_only_paths(&self) -> &[PathBuf] {
        &self.read_only
    }
    pub(crate) fn read_write_paths(&self) -> &[PathBuf] {
        &self.read_write
    }
    pub(crate) fn processes(&self) -> u32 {
        self.max_processes
    }
    pub(crate) fn file_size(&self) -> u64 {
        self.file_size_limit
    }
    pub(crate) fn open_files(&self) -> u64 {
        self.max_open_files
    }
    pub(crate) fn exec_allowed(&self) -> bool {
        self.exec
    }
    pub(crate) fn kept_env(&self) -> &[String] {
        &self.env
    }
    pub(crate) fn extra_syscalls(&self) -> &[String] {
        &self.syscalls
    }
    pub(crate) fn kills(&self) -> bool {
        self.kill_on_denied
    }
    pub(crate) fn wants_namespaces(&self) -> bool {
        self.namespaces
    }
    pub(crate) fn is_best_effort(&self) -> bool {
        self.best_effort
    }
}

/// Which sandbox layers are active ([`Sandbox::report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxReport {
    /// One entry per layer.
    pub layers: Vec<Layer>,
}

impl SandboxReport {
    /// Whether every layer is active (none unavailable or off).
    pub fn all_active(&self) -> bool {
        self.layers
            .iter()
            .all(|l| matches!(l.status, LayerStatus::Active(_)))
    }
}

impl std::fmt::Display for SandboxReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, l) in self.layers.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", l.name, l.status)?;
        }
        Ok(())
    }
}

/// One layer of a sandbox and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `no_new_privs`, `landlock`, `seccomp`, `namespaces`, `processes`, `limits`, `memory` or
    /// `inheritance`.
    pub name: &'static str,
    /// Whether it is active.
    pub status: LayerStatus,
}

/// State of a sandbox layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerStatus {
    /// Enforced, with what it enforces.
    Active(String),
    /// The kernel (or the uid) cannot provide it: why.
    Unavailable(String),
    /// Switched off by the sandbox's settings.
    Off(String),
}

impl std::fmt::Display for LayerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerStatus::Active(s) => write!(f, "active ({s})"),
            LayerStatus::Unavailable(s) => write!(f, "UNAVAILABLE ({s})"),
            LayerStatus::Off(s) => write!(f, "off ({s})"),
        }
    }
}

/// A sandbox that cannot be set up: which layer, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sandbox layer `{layer}`: {reason}")]
pub struct SandboxError {
    /// The layer ([`Layer::name`]).
    pub layer: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl SandboxError {
    pub(crate) fn new(layer: &'static str, reason: impl Into<String>) -> SandboxError {
        SandboxError {
            layer,
            reason: reason.into(),
        }
    }
}
