//! The kernel side of [`crate::sandbox::Sandbox`]: probes (Landlock ABI, seccomp, user
//! namespaces), the seccomp programs (compiled once in the fork server), and `enter`, which a
//! freshly forked worker calls to confine itself before it runs anything. The fork server is
//! single-threaded, so the child may allocate and open files here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use landlock::{
    make_bitflags, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};
use seccompiler::BpfProgram;

use crate::sandbox::Sandbox;

/// The Landlock ABI of the running kernel (0: none).
pub(crate) fn landlock_abi() -> i32 {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag only
    // returns the ABI version (or -1); it reads no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    v.max(0) as i32
}

/// Whether the kernel has seccomp filters (`Seccomp:` in `/proc/self/status`).
pub(crate) fn seccomp_available() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("\nSeccomp:"))
}

/// Whether this process can create user namespaces, from the kernel's switches (the fork
/// server also tries it for real before the first sandboxed worker).
pub(crate) fn user_namespaces_available() -> bool {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    if read("/proc/sys/user/max_user_namespaces").is_some_and(|n| n == 0) {
        return false;
    }
    is_root() || read("/proc/sys/kernel/unprivileged_userns_clone") != Some(0)
}

/// Whether this process runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Makes this process (not) dumpable: when not, no process of the same uid without
/// CAP_SYS_PTRACE in this process's user namespace can read its memory (`/proc/<pid>/mem`,
/// `process_vm_readv`), ptrace it or read its environment.
pub(crate) fn set_dumpable(on: bool) {
    let _ = nix::sys::prctl::set_dumpable(on);
}

/// Whether this process is dumpable.
pub(crate) fn is_dumpable() -> bool {
    nix::sys::prctl::get_dumpable().unwrap_or(true)
}

/// Sets `PR_SET_NO_NEW_PRIVS`: no exec can grant privileges (setuid bits, file capabilities).
pub(crate) fn no_new_privs() -> io::Result<()> {
    nix::sys::prctl::set_no_new_privs().map_err(super::errno)
}

/// System calls a worker needs for computation and for its protocol. Names as the kernel's
/// (x86_64 or aarch64 tables of seccompiler; a name not on this architecture is skipped).
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    // I/O on fds it has: its socket, stdout/stderr, segments, files Landlock lets it open.
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "lseek",
    "close",
    "fstat",
    "newfstatat",
    "statx",
    "stat",
    "lstat",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "openat",
    "open",
    "getdents64",
    "readlink",
    "readlinkat",
    "access",
    "faccessat",
    "faccessat2",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fallocate",
    "mkdir",
    "mkdirat",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "getcwd",
    "chdir",
    "fchdir",
    "poll",
    "ppoll",
    "pipe2",
    "eventfd2",
    "sendmsg",
    "recvmsg",
    "sendto",
    "recvfrom",
    "shutdown",
    "memfd_create",
    // Memory.
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "brk",
    "msync",
    "mincore",
    "mlock",
    "munlock",
    // Threads, time, signals to itself (Landlock scopes them to its own domain).
    "futex",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "set_tid_address",
    "sched_yield",
    "sched_getaffinity",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "clock_nanosleep",
    "nanosleep",
    "getrandom",
    "exit",
    "exit_group",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "getpid",
    "gettid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "kill",
    "tgkill",
    "tkill",
    "wait4",
    "waitid",
    "getrusage",
    "uname",
    "sysinfo",
    "getrlimit",
    "restart_syscall",
    "arch_prctl",
    "membarrier",
    "getpgrp",
    "getpgid",
    "times",
    "timerfd_create",
    "timerfd_settime",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "select",
    "pselect6",
    "clone3",
    // Harmless helpers std and C libraries use (copies, file system info, timers, waits).
    "copy_file_range", "sendfile", "fstatfs", "statfs", "fadvise64", "flock", "getpriority",
    "sched_getparam", "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "getsid", "getitimer", "setitimer", "alarm", "pause", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigpending",
];

/// `CLONE_THREAD`: a `clone` that makes a thread, not a process.
const CLONE_THREAD: u64 = 0x0001_0000;

/// The `clone` flags that make new namespaces (`CLONE_NEWTIME`, `NEWNS`, `NEWCGROUP`, `NEWUTS`,
/// `NEWIPC`, `NEWUSER`, `NEWPID`, `NEWNET`): refused on every `clone` of a sandboxed worker.
const CLONE_NEW_NAMESPACES: u64 = 0x80
    | 0x0002_0000
    | 0x0200_0000
    | 0x0400_0000
    | 0x0800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000;

/// The target architecture of seccompiler.
fn arch() -> Result<seccompiler::TargetArch, String> {
    std::env::consts::ARCH.try_into().map_err(|_| {
        format!(
            "seccomp filters are not built for {}",
            std::env::consts::ARCH
        )
    })
}

/// The sandbox's seccomp programs, in the order to install them: one that makes `clone3` fail
/// with ENOSYS (then the allow-list, which denies installing filters) (its arguments are in memory, which a filter cannot read,
/// so libc falls back to `clone`, whose flags it can).
///
/// # Errors
/// An unknown system call among the sandbox's extra ones (named), or a compile failure.
pub(crate) fn compile_seccomp(sandbox: &Sandbox) -> Result<Vec<BpfProgram>, String> {
    let arch = arch()?;
    let probe = |name: &str| {
        let one = serde_json::json!({"p": {"mismatch_action": {"errno": 1}, "match_action": "allow",
            "filter": [{"syscall": name}]}});
        seccompiler::compile_from_json(one.to_string().as_bytes(), arch).is_ok()
    };
    for name in sandbox.extra_syscalls() {
        if !probe(name) {
            return Err(format!(
                "allow_syscalls: `{name}` is not a system call on {}",
                std::env::consts::ARCH
            ));
        }
    }
    let mut rules = Vec::new();
    let mut names: Vec<&str> = ALLOWED.to_vec();
    names.extend(sandbox.extra_syscalls().iter().map(String::as_str));
    if sandbox.exec_allowed() {
        names.extend(["execve", "execveat"]);
    }
    if sandbox.network_allowed() {
        names.extend([
            "connect",
            "bind",
            "listen",
            "accept",
            "accept4",
            "getsockname",
            "getpeername",
            "setsockopt",
            "getsockopt",
            "sendmmsg",
            "recvmmsg",
        ]);
    }
    let processes = sandbox.processes() > 1;
    if processes {
        names.extend(["fork", "vfork"]);
    }
    names.sort_unstable();
    names.dedup();
    for &name in &names {
        if !probe(name) {
            continue; // not on this architecture (say, `open` on aarch64)
        }
        rules.push(serde_json::json!({"syscall": name}));
    }
    // seccompiler merges the rules of one call, and a call with any argument rule matches only
    // those: a call allowed whole (`allow_syscalls(["ioctl"])`) must get no argument rule.
    let mut limited = |rule: serde_json::Value| {
        if !names.contains(&rule["syscall"].as_str().unwrap_or_default()) {
            rules.push(rule);
        }
    };
    if sandbox.network_allowed() {
        // Internet sockets, and routing netlink (getaddrinfo asks it for the interfaces' address
        // families): not Unix sockets, whose named form Landlock does not restrict, so a task
        // would reach the machine's local daemons (Docker's or D-Bus's socket) as "network".
        // `allow_syscalls(["socket"])` allows every family.
        for family in [libc::AF_INET, libc::AF_INET6] {
            limited(serde_json::json!({"syscall": "socket",
                "args": [{"index": 0, "type": "dword", "op": "eq", "val": family}]}));
        }
        limited(serde_json::json!({"syscall": "socket", "args": [
            {"index": 0, "type": "dword", "op": "eq", "val": libc::AF_NETLINK},
            {"index": 2, "type": "dword", "op": "eq", "val": libc::NETLINK_ROUTE}]}));
    }
    // prlimit64 on itself only (pid 0): the worker re-arms its CPU limit per task; another
    // process's limits are not its business.
    limited(serde_json::json!({"syscall": "prlimit64",
        "args": [{"index": 0, "type": "qword", "op": "eq", "val": 0}]}));
    // No new namespaces from clone either (unshare and setns are not on the list).
    limited(if processes {
        serde_json::json!({"syscall": "clone", "args": [{"index": 0, "type": "qword",
            "op": {"masked_eq": CLONE_NEW_NAMESPACES}, "val": 0}]})
    } else {
        serde_json::json!({"syscall": "clone", "args": [{"index": 0, "type": "qword",
            "op": {"masked_eq": CLONE_THREAD | CLONE_NEW_NAMESPACES}, "val": CLONE_THREAD}]})
    });
    // ioctl: terminal queries and fd flags only (no TIOCSTI into the parent's terminal).
    for op in [
        libc::TCGETS,
        libc::TIOCGWINSZ,
        libc::FIONBIO,
        libc::FIOCLEX,
        libc::FIONCLEX,
        libc::FIONREAD,
    ] {
        limited(serde_json::json!({"syscall": "ioctl",
            "args": [{"index": 1, "type": "dword", "op": "eq", "val": op}]}));
    }
    // prctl: naming threads only.
    for op in [libc::PR_SET_NAME, libc::PR_GET_NAME, libc::PR_GET_DUMPABLE] {
        limited(serde_json::json!({"syscall": "prctl",
            "args": [{"index": 0, "type": "dword", "op": "eq", "val": op}]}));
    }
    let denied = if sandbox.kills() {
        serde_json::json!("kill_process")
    } else if TRAPS {
        // SIGSYS to our handler, which records the call and makes it return EPERM.
        serde_json::json!("trap")
    } else {
        serde_json::json!({"errno": libc::EPERM})
    };
    let json = serde_json::json!({
        "allow": {"mismatch_action": denied, "match_action": "allow", "filter": rules},
        "clone3": {"mismatch_action": "allow", "match_action": {"errno": libc::ENOSYS},
            "filter": [{"syscall": "clone3"}]},
    });
    let mut map = seccompiler::compile_from_json(json.to_string().as_bytes(), arch)
        .map_err(|e| format!("cannot compile the filter: {e}"))?;
    let take = |map: &mut seccompiler::BpfMap, k: &str| {
        map.remove(k)
            .ok_or_else(|| format!("seccompiler lost filter {k}"))
    };
    Ok(vec![take(&mut map, "clone3")?, take(&mut map, "allow")?])
}

/// A sandbox ready to enter: the settings, their compiled seccomp programs, and the fork
/// server's cgroups for its workers (where this process may make them).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) sandbox: Sandbox,
    /// The workers' memory limit (the pool's, or the sandbox's).
    pub(crate) memory: Option<u64>,
    filters: Vec<BpfProgram>,
    pub(crate) cgroups: Option<super::cgroup::Cgroups>,
    /// Whether the fork server moved itself into a new network and IPC namespace, which its
    /// workers then share (making a network namespace costs ~0.5 ms, a user namespace ~0).
    shared_namespaces: bool,
}

impl Prepared {
    /// Compiles the sandbox's seccomp programs and makes the server's cgroups (once per
    /// sandbox, in the fork server `server`).
    pub(crate) fn new(
        sandbox: Sandbox,
        memory: Option<u64>,
        server: i32,
    ) -> Result<Prepared, String> {
        use super::cgroup::{v1_dir, Cgroups, Controller};
        let filters = compile_seccomp(&sandbox)?;
        let mut controllers = Vec::new();
        if memory.is_some() && v1_dir(Controller::Memory).is_some() {
            controllers.push(Controller::Memory);
        }
        if sandbox.processes() > 1 && v1_dir(Controller::Pids).is_some() {
            controllers.push(Controller::Pids);
        }
        let cgroups = if controllers.is_empty() {
            None
        } else {
            Some(Cgroups::new(server, &controllers).map_err(|e| format!("cgroups: {e}"))?)
        };
        // As root the server can enter new network and IPC namespaces itself: it needs neither
        // (its sockets exist already), and workers, which cannot make sockets or SysV IPC
        // objects (seccomp), share them at no cost. Otherwise each worker makes its own.
        let mut flags = libc::CLONE_NEWIPC;
        if !sandbox.network_allowed() {
            flags |= libc::CLONE_NEWNET;
        }
        // SAFETY: unshare takes flags only; the fork server is single-threaded.
        let shared_namespaces =
            sandbox.wants_namespaces() && is_root() && unsafe { libc::unshare(flags) } == 0;
        Ok(Prepared {
            sandbox,
            memory,
            filters,
            cgroups,
            shared_namespaces,
        })
    }
}

/// Confines this freshly forked worker (see [`crate::sandbox`] for the layers and their order);
/// `sock` is the one fd above stderr it keeps. Nothing of the sandbox can be undone after.
///
/// # Errors
/// The layer that failed and why; the worker must then exit without running anything.
pub(crate) fn enter(p: &Prepared, sock: BorrowedFd<'_>) -> Result<(), String> {
    let s = &p.sandbox;
    let best = s.is_best_effort();
    scrub_environment(s.kept_env());
    close_fds_but(sock.as_raw_fd()).map_err(|e| format!("inheritance: close_range: {e}"))?;
    if s.wants_namespaces() {
        let mut flags = libc::CLONE_NEWUSER;
        if !p.shared_namespaces {
            flags |= libc::CLONE_NEWIPC;
            if !s.network_allowed() {
                flags |= libc::CLONE_NEWNET;
            }
        }
        // SAFETY: unshare takes flags only; this process is single-threaded (a user namespace
        // needs it), freshly forked from the single-threaded fork server.
        if unsafe { libc::unshare(flags) } != 0 {
            let e = io::Error::last_os_error();
            if !best {
                return Err(format!("namespaces: unshare: {e}"));
            }
            // Best effort runs without the layer, but never silently: the parent forwards
            // this line (and logs it with the worker's pid).
            eprintln!("forkgraph worker: sandbox namespaces not applied (best effort): {e}");
        }
    }
    use nix::sys::resource::{setrlimit, Resource};
    let lim = |r: Resource, v: u64, what: &str| {
        setrlimit(r, v, v).map_err(|e| format!("limits: {what}: {e}"))
    };
    lim(Resource::RLIMIT_NOFILE, s.open_files(), "RLIMIT_NOFILE")?;
    lim(Resource::RLIMIT_FSIZE, s.file_size(), "RLIMIT_FSIZE")?;
    if s.processes() > 1 {
        lim(
            Resource::RLIMIT_NPROC,
            u64::from(s.processes()),
            "RLIMIT_NPROC",
        )?;
    }
    // A write past RLIMIT_FSIZE fails with EFBIG instead of killing the worker.
    // SAFETY: installing SIG_IGN runs no handler code.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
    set_dumpable(false);
    no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    landlock(s).map_err(|e| format!("landlock: {e}"))?;
    if TRAPS && !s.kills() {
        install_sigsys_handler().map_err(|e| format!("seccomp: SIGSYS handler: {e}"))?;
    }
    for f in &p.filters {
        match seccompiler::apply_filter(f) {
            Ok(()) => {}
            // A kernel without seccomp filters: reported as unavailable by `Sandbox::report`.
            Err(_) if best => break,
            Err(e) => return Err(format!("seccomp: {e}")),
        }
    }
    Ok(())
}

/// Applies the Landlock ruleset: files beneath the sandbox's paths and `/proc/self` (read),
/// TCP denied unless the network is allowed, signals and abstract sockets scoped.
fn landlock(s: &Sandbox) -> Result<(), String> {
    let abi = ABI::V6;
    let level = if s.is_best_effort() {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let mut read = AccessFs::from_read(abi);
    let mut all = AccessFs::from_all(abi);
    if !s.exec_allowed() {
        read.remove(AccessFs::Execute);
        all.remove(AccessFs::Execute);
    }
    let rule = |path: &std::path::Path, access: landlock::BitFlags<AccessFs>| {
        // Landlock refuses directory-only rights on a file: a file path gets the file rights.
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(abi)
        };
        PathFd::new(path)
            .map(|fd| PathBeneath::new(fd, access))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| e.to_string())?;
    if !s.network_allowed() {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(|e| e.to_string())?;
    }
    let mut created = ruleset
        .scope(make_bitflags!(Scope::{AbstractUnixSocket | Signal}))
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| e.to_string())?;
    // This worker's own /proc/<pid> (opened now, after the fork): the runtime reads its statm.
    created = created
        .add_rule(rule(
            std::path::Path::new("/proc/self"),
            AccessFs::ReadFile | AccessFs::ReadDir,
        )?)
        .map_err(|e| e.to_string())?;
    for p in s.read_only_paths() {
        created = created
            .add_rule(rule(p, read)?)
            .map_err(|e| e.to_string())?;
    }
    for p in s.read_write_paths() {
        created = created.add_rule(rule(p, all)?).map_err(|e| e.to_string())?;
    }
    let status = created.restrict_self().map_err(|e| e.to_string())?;
    if !s.is_best_effort() && status.ruleset != landlock::RulesetStatus::FullyEnforced {
        return Err(format!("not fully enforced ({:?})", status.ruleset));
    }
    Ok(())
}

/// Empties the environment but the `keep` variables, and zeroes the strings the process
/// started with (a task could read them from memory, or from `/proc/self/environ`).
fn scrub_environment(keep: &[String]) {
    let kept: Vec<(String, std::ffi::OsString)> = keep
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k.clone(), v)))
        .collect();
    let names: Vec<std::ffi::OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in names {
        // Single-threaded (a fresh child of the single-threaded fork server).
        std::env::remove_var(k);
    }
    if let Some((start, end)) = env_area() {
        // SAFETY: [env_start, env_end) is this process's own environment block, set up by the
        // kernel at exec on its stack, mapped and writable for its whole life; nothing points
        // into it any more (every variable was removed above, so `environ` is empty).
        unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
    }
    for (k, v) in kept {
        std::env::set_var(k, v);
    }
}

/// `env_start` and `env_end` of this process (fields 50 and 51 of `/proc/self/stat`).
fn env_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start = fields.get(47)?.parse::<usize>().ok()?;
    let end = fields.get(48)?.parse::<usize>().ok()?;
    (start > 0 && end > start).then_some((start, end))
}

/// Closes every fd above 2 but `keep`.
fn close_fds_but(keep: i32) -> io::Result<()> {
    let range = |lo: u32, hi: u32| {
        if lo > hi {
            return Ok(());
        }
        // SAFETY: close_range takes numbers and flags; the fds it closes are owned by objects
        // this child never uses again (it runs only the worker loop on `keep` from here).
        let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let keep = keep as u32;
    range(3, keep.saturating_sub(1))?;
    range(keep + 1, u32::MAX)
}

/// Whether denied calls trap to [`on_sigsys`] (which names them) rather than fail with a plain
/// `EPERM`: on the architectures whose signal context this file knows.
const TRAPS: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// The last system call the sandbox denied in this process (-1: none since the last
/// [`take_denied`]).
static DENIED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);

/// SIGSYS from the seccomp filter (`SECCOMP_RET_TRAP`): records the call's number and makes it
/// return `-EPERM`, as `SECCOMP_RET_ERRNO` would. Async-signal-safe: an atomic store and a
/// register write.
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if info.is_null() || ctx.is_null() {
        return;
    }
    // SAFETY: for SIGSYS the kernel fills `_sigsys` { void *call_addr; int syscall; unsigned
    // arch; } in siginfo's union, which starts at byte 16 on 64-bit Linux: `syscall` is at 24.
    let nr = unsafe { std::ptr::read_unaligned((info as *const u8).add(24).cast::<i32>()) };
    DENIED.store(i64::from(nr), std::sync::atomic::Ordering::Relaxed);
    // SAFETY: `ctx` is the ucontext_t the kernel passed to this SA_SIGINFO handler; the
    // register written is the one the interrupted system call returns in, which the kernel
    // restores on return from the handler.
    unsafe {
        let uc = ctx.cast::<libc::ucontext_t>();
        #[cfg(target_arch = "x86_64")]
        {
            (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = -i64::from(libc::EPERM);
        }
        #[cfg(target_arch = "aarch64")]
        {
            (*uc).uc_mcontext.regs[0] = (-i64::from(libc::EPERM)) as u64;
        }
    }
}

/// Installs [`on_sigsys`].
fn install_sigsys_handler() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler only stores an atomic and writes the
    // interrupted context (see on_sigsys).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The system call the sandbox denied since the last call (its name, or its number), and
/// resets it.
pub(crate) fn take_denied() -> Option<String> {
    let nr = DENIED.swap(-1, std::sync::atomic::Ordering::Relaxed);
    (nr >= 0).then(|| match syscall_name(nr) {
        Some(name) => format!("`{name}`"),
        None => format!("number {nr}"),
    })
}

/// Names of the system calls a task is most likely to be denied.
fn syscall_name(nr: i64) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    let arch: &[(i64, &str)] = &[
        (libc::SYS_fork, "fork"),
        (libc::SYS_vfork, "vfork"),
        (libc::SYS_open, "open"),
        (libc::SYS_iopl, "iopl"),
        (libc::SYS_ioperm, "ioperm"),
        (libc::SYS_chmod, "chmod"),
        (libc::SYS_chown, "chown"),
        (libc::SYS_symlink, "symlink"),
        (libc::SYS_link, "link"),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let arch: &[(i64, &str)] = &[];
    let common: &[(i64, &str)] = &[
        (libc::SYS_ptrace, "ptrace"),
        (libc::SYS_process_vm_readv, "process_vm_readv"),
        (libc::SYS_process_vm_writev, "process_vm_writev"),
        (libc::SYS_socket, "socket"),
        (libc::SYS_socketpair, "socketpair"),
        (libc::SYS_connect, "connect"),
        (libc::SYS_bind, "bind"),
        (libc::SYS_listen, "listen"),
        (libc::SYS_accept4, "accept4"),
        (libc::SYS_execve, "execve"),
        (libc::SYS_execveat, "execveat"),
        (libc::SYS_clone, "clone"),
        (libc::SYS_unshare, "unshare"),
        (libc::SYS_setns, "setns"),
        (libc::SYS_mount, "mount"),
        (libc::SYS_umount2, "umount2"),
        (libc::SYS_pivot_root, "pivot_root"),
        (libc::SYS_chroot, "chroot"),
        (libc::SYS_pidfd_open, "pidfd_open"),
        (libc::SYS_pidfd_send_signal, "pidfd_send_signal"),
        (libc::SYS_pidfd_getfd, "pidfd_getfd"),
        (libc::SYS_bpf, "bpf"),
        (libc::SYS_perf_event_open, "perf_event_open"),
        (libc::SYS_keyctl, "keyctl"),
        (libc::SYS_add_key, "add_key"),
        (libc::SYS_init_module, "init_module"),
        (libc::SYS_finit_module, "finit_module"),
        (libc::SYS_delete_module, "delete_module"),
        (libc::SYS_kexec_load, "kexec_load"),
        (libc::SYS_reboot, "reboot"),
        (libc::SYS_setuid, "setuid"),
        (libc::SYS_setgid, "setgid"),
        (libc::SYS_setresuid, "setresuid"),
        (libc::SYS_setgroups, "setgroups"),
        (libc::SYS_capset, "capset"),
        (libc::SYS_personality, "personality"),
        (libc::SYS_userfaultfd, "userfaultfd"),
        (libc::SYS_io_uring_setup, "io_uring_setup"),
        (libc::SYS_seccomp, "seccomp"),
        (libc::SYS_prctl, "prctl"),
        (libc::SYS_ioctl, "ioctl"),
        (libc::SYS_prlimit64, "prlimit64"),
        (libc::SYS_setrlimit, "setrlimit"),
        (libc::SYS_fchmod, "fchmod"),
        (libc::SYS_fchmodat, "fchmodat"),
        (libc::SYS_fchown, "fchown"),
        (libc::SYS_fchownat, "fchownat"),
        (libc::SYS_symlinkat, "symlinkat"),
        (libc::SYS_linkat, "linkat"),
        (libc::SYS_mknodat, "mknodat"),
        (libc::SYS_sched_setaffinity, "sched_setaffinity"),
        (libc::SYS_sched_setscheduler, "sched_setscheduler"),
        (libc::SYS_setpriority, "setpriority"),
        (libc::SYS_kcmp, "kcmp"),
        (libc::SYS_name_to_handle_at, "name_to_handle_at"),
        (libc::SYS_open_by_handle_at, "open_by_handle_at"),
        (libc::SYS_inotify_init1, "inotify_init1"),
        (libc::SYS_fanotify_init, "fanotify_init"),
        (libc::SYS_syslog, "syslog"),
        (libc::SYS_clock_settime, "clock_settime"),
        (libc::SYS_settimeofday, "settimeofday"),
        (libc::SYS_sethostname, "sethostname"),
        (libc::SYS_mbind, "mbind"),
        (libc::SYS_migrate_pages, "migrate_pages"),
        (libc::SYS_move_pages, "move_pages"),
        (libc::SYS_process_madvise, "process_madvise"),
        (libc::SYS_mlockall, "mlockall"),
        (libc::SYS_memfd_secret, "memfd_secret"),
    ];
    arch.iter()
        .chain(common)
        .find(|(n, _)| *n == nr)
        .map(|(_, name)| *name)
}
