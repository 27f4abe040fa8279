//! Attacks on the process pool from inside tasks: what hostile or buggy native task code can do
//! to its worker, its fork server, its progress page, its socket, its stderr, its segments and
//! its process group, and what the pool promises anyway.
//!
//! Everything that can hang or crash the process that uses the pool runs in a *helper*: a re-run
//! of this test binary (`common::helper`) in its own process group, with stdout and stderr in
//! files, killed (the whole group) and reaped if it outlives its watchdog. Processes a helper or a
//! task announces (fork servers, grandchildren) are SIGKILLed when the test ends, whatever its
//! outcome, if they still run this executable. No sleeps, no wall-clock assertions: waits are
//! `poll` on pidfds or channels with generous watchdogs.

mod common;

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{children, helper, is_helper, scratch_dir, wait_gone, watchdog};
use forkgraph::{
    graph, key, Arg, ArgValue, Error, GetOptions, Graph, Keys, Output, ProcessPool, Scheduler,
    SharedVec, SyncScheduler, Task, TaskError, TaskErrorKind, TaskOptions, Value,
};

/// A test that runs helper `$helper` (a `helper_main` test of this file) in a child process,
/// with the scratch directory `$dir`, and asserts that it reported success.
macro_rules! helper_test {
    ($test:ident, $helper:literal, $dir:literal) => {
        #[test]
        fn $test() {
            if in_helper() {
                return;
            }
            let dir = scratch_dir($dir);
            run_helper($helper, &dir).assert_ok();
        }
    };
}

const MIB: usize = 1 << 20;
/// Watchdog of a helper process (seconds).
const HELPER_SECS: u64 = 60;

// ---------------------------------------------------------------------------------------------
// Tasks: ordinary ones
// ---------------------------------------------------------------------------------------------

#[forkgraph::task]
fn plain(x: i64) -> i64 {
    x * 10
}

#[forkgraph::task]
fn innocent(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn abort_after(_x: i64) -> i64 {
    eprintln!("abort_after: aborting");
    std::process::abort()
}

#[forkgraph::task]
fn sevens(n: i64) -> Vec<u8> {
    vec![7u8; n as usize]
}

#[forkgraph::task]
fn small_bytes(i: i64) -> Vec<u8> {
    vec![i as u8; 64]
}

/// How deep a nested list argument is (iteratively: the task itself must not overflow).
#[forkgraph::task]
fn nesting_depth(v: &ArgValue<'_>) -> i64 {
    let mut depth = 0;
    let mut cur = v;
    while let ArgValue::List(l) = cur {
        depth += 1;
        match l.first() {
            Some(x) => cur = x,
            None => break,
        }
    }
    depth
}

// ---------------------------------------------------------------------------------------------
// Tools used inside tasks (worker side)
// ---------------------------------------------------------------------------------------------

/// The fds of this process that are sockets. A worker has exactly one: its line to the parent.
fn socket_fds() -> Vec<i32> {
    (0..1024)
        .filter(|&fd| {
            // SAFETY: all-zero bytes are a valid `libc::stat` (plain integers).
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat only writes into the local struct; an unused fd gives EBADF.
            let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
            ok && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
        })
        .collect()
}

/// Writes all of `bytes` to a socket; false on error.
fn send_raw(fd: i32, bytes: &[u8]) -> bool {
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: sends from a live slice; MSG_NOSIGNAL turns a closed peer into EPIPE.
        let n = unsafe {
            libc::send(
                fd,
                bytes[off..].as_ptr().cast(),
                bytes.len() - off,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        off += n as usize;
    }
    true
}

/// Writes all of `bytes` to fd 2 with raw write(2) calls; false on error.
fn write_stderr_raw(bytes: &[u8]) -> bool {
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: writes from a live slice to fd 2.
        let n = unsafe { libc::write(2, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        off += n as usize;
    }
    true
}

/// One line of /proc/self/maps.
#[derive(Debug)]
struct Mapping {
    start: usize,
    len: usize,
    perms: String,
}

/// The mappings of this process whose path contains `name`.
fn mappings(name: &str) -> Vec<Mapping> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter(|l| l.contains(name))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (a, b) = f.next()?.split_once('-')?;
            let perms = f.next()?.to_owned();
            let a = usize::from_str_radix(a, 16).ok()?;
            let b = usize::from_str_radix(b, 16).ok()?;
            Some(Mapping {
                start: a,
                len: b - a,
                perms,
            })
        })
        .collect()
}

/// The worker's progress page: the 4 KiB shared read-write memfd mapping it publishes its
/// current unit in.
fn progress_page() -> Option<Mapping> {
    mappings("memfd:forkgraph-progress")
        .into_iter()
        .find(|m| m.len == 4096 && m.perms.starts_with("rw") && m.perms.ends_with('s'))
}

/// Whether `pid` runs this very executable (so that signalling it cannot hit a stranger, e.g.
/// init or a process that reused a pid).
fn runs_this_exe(pid: i32) -> bool {
    if pid <= 1 {
        return false;
    }
    match (
        std::fs::read_link(format!("/proc/{pid}/exe")),
        std::fs::read_link("/proc/self/exe"),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Appends one byte to `counter`; returns how many runs it has counted (this one included).
fn count_run(counter: &str) -> u64 {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(counter)
        .unwrap();
    f.write_all(b"x").unwrap();
    drop(f);
    std::fs::metadata(counter).map_or(0, |m| m.len())
}

/// Forks a child that pauses forever (optionally in a new session); returns its pid.
fn fork_pausing_child(new_session: bool) -> i32 {
    // SAFETY: the child calls only async-signal-safe functions (setsid, pause) and never returns
    // into Rust code, so forking a possibly multithreaded process is sound.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        if new_session {
            // SAFETY: async-signal-safe; makes the child a session leader.
            unsafe { libc::setsid() };
        }
        loop {
            // SAFETY: async-signal-safe; waits for a signal.
            unsafe { libc::pause() };
        }
    }
    pid
}

// ---------------------------------------------------------------------------------------------
// Tasks: attacks
// ---------------------------------------------------------------------------------------------

/// 1. Writes a forged frame to its own worker socket and returns normally. `kind`: 0 = eight
/// 0xff bytes; 1 = a well-formed header (4-byte length, 2-byte fd count) announcing a 1.5 GiB
/// frame that never comes; 2 = a 1-byte frame announcing one attached fd that never comes.
/// Records how many sockets it found in `note` (the attack is valid only with exactly one).
#[forkgraph::task]
fn forge_frame(kind: i64, note: &str) -> i64 {
    let socks = socket_fds();
    std::fs::write(note, socks.len().to_string()).unwrap();
    if socks.len() != 1 {
        return -1;
    }
    let bytes: Vec<u8> = match kind {
        0 => vec![0xff; 8],
        1 => {
            let mut b = 0x6000_0000u32.to_le_bytes().to_vec();
            b.extend(0u16.to_le_bytes());
            b
        }
        _ => {
            let mut b = 1u32.to_le_bytes().to_vec();
            b.extend(1u16.to_le_bytes());
            b.push(0);
            b
        }
    };
    if !send_raw(socks[0], &bytes) {
        return -2;
    }
    1
}

/// 2. Kills its fork server (a worker's parent) with SIGKILL, then waits for its own death
/// (PR_SET_PDEATHSIG). Counts its runs in `counter`; stops attacking after 10 runs so that a
/// pool that re-runs it forever still ends.
#[forkgraph::task]
fn kill_server(counter: &str) -> i64 {
    if count_run(counter) > 10 {
        return 0;
    }
    // SAFETY: getppid has no preconditions.
    let server = unsafe { libc::getppid() };
    if !runs_this_exe(server) {
        return -1;
    }
    // SAFETY: SIGKILL to our own fork server (checked to run this executable).
    unsafe { libc::kill(server, libc::SIGKILL) };
    loop {
        // SAFETY: waits for a signal (the parent-death SIGKILL).
        unsafe { libc::pause() };
    }
}

/// 3. Stops its fork server (SIGSTOP) and returns.
#[forkgraph::task]
fn stop_server(_x: i64) -> i64 {
    // SAFETY: getppid has no preconditions.
    let server = unsafe { libc::getppid() };
    if !runs_this_exe(server) {
        return -1;
    }
    // SAFETY: SIGSTOP to our own fork server (checked to run this executable).
    unsafe { libc::kill(server, libc::SIGSTOP) };
    1
}

/// 4. Forks a grandchild that keeps every fd of the worker (socket, stderr pipe) and pauses
/// forever; writes its pid to `pidfile`; then the worker aborts.
#[forkgraph::task]
fn keeper_then_abort(pidfile: &str) -> i64 {
    let pid = fork_pausing_child(false);
    std::fs::write(pidfile, pid.to_string()).unwrap();
    eprintln!("keeper_then_abort: grandchild {pid} holds our fds; aborting");
    std::process::abort()
}

/// 5a. Zeroes the first 64 bytes of the worker's progress page, then spins forever.
#[forkgraph::task]
fn blank_page_and_spin(_x: i64) -> i64 {
    let Some(page) = progress_page() else {
        return -1;
    };
    for i in 0..8 {
        // SAFETY: the page is 4096 bytes, page-aligned, mapped shared read-write; 8 u64 slots
        // are its first 64 bytes.
        unsafe { (page.start as *mut u64).add(i).write_volatile(0) };
    }
    let mut i = 0u64;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

/// 5b. Rewrites slot 0 of the progress page (the unit sequence number) to name the next unit,
/// then aborts: the worker's death is blamed on whatever the page says.
#[forkgraph::task]
fn shift_blame_then_abort(_x: i64) -> i64 {
    let Some(page) = progress_page() else {
        return -1;
    };
    // SAFETY: the page is page-aligned and lives as long as the worker; the parent accesses the
    // slot only through atomics.
    let slot = unsafe { &*(page.start as *const AtomicU64) };
    let seq = slot.load(Ordering::SeqCst);
    slot.store(seq + 1, Ordering::SeqCst);
    std::process::abort()
}

/// 5c. Lists the next 64 units in the skip list of its progress page (slot 3: how many,
/// slots 8..72: their sequence numbers), as if the parent had cancelled them, and returns.
#[forkgraph::task]
fn forge_skips(_x: i64) -> i64 {
    let Some(page) = progress_page() else {
        return -1;
    };
    // SAFETY: the page is page-aligned, 4096 bytes, and lives as long as the worker; the
    // parent accesses its slots only through atomics.
    let slot = |i: usize| unsafe { &*((page.start as *const AtomicU64).add(i)) };
    let seq = slot(0).load(Ordering::SeqCst);
    for k in 0..64u64 {
        slot(8 + k as usize).store(seq + 1 + k, Ordering::SeqCst);
    }
    slot(3).store(64, Ordering::SeqCst);
    0
}

/// 6. Writes `bytes` bytes to stderr in small writes; returns how many were written.
#[forkgraph::task]
fn shout(bytes: i64) -> i64 {
    let line = [b'!'; 511]
        .iter()
        .copied()
        .chain(std::iter::once(b'\n'))
        .collect::<Vec<u8>>();
    let mut done = 0i64;
    while done < bytes {
        if !write_stderr_raw(&line) {
            return -1;
        }
        done += line.len() as i64;
    }
    done
}

/// 9. Closes its own worker socket and returns normally.
#[forkgraph::task]
fn cut_own_line(_x: i64) -> i64 {
    let socks = socket_fds();
    if socks.len() != 1 {
        return -(socks.len() as i64) - 1;
    }
    // SAFETY: closes an fd of this process; the worker loses its line, which is the attack.
    unsafe { libc::close(socks[0]) };
    0
}

/// 10. Forks a grandchild in a new session that pauses forever; writes its pid to `pidfile`
/// and returns it.
#[forkgraph::task]
fn detach_sleeper(pidfile: &str) -> i64 {
    let pid = fork_pausing_child(true);
    std::fs::write(pidfile, pid.to_string()).unwrap();
    pid as i64
}

/// 11. SIGTERM to its own process group. Refuses (-1) when that group is `outer_pgid` (the test
/// runner's), so that a mistake cannot kill the test run.
#[forkgraph::task]
fn term_group(outer_pgid: i64) -> i64 {
    // SAFETY: getpgrp has no preconditions.
    let pgrp = unsafe { libc::getpgrp() };
    if pgrp as i64 == outer_pgid {
        return -1;
    }
    // SAFETY: SIGTERM to our own process group (not the test runner's: checked above).
    unsafe { libc::kill(0, libc::SIGTERM) };
    0
}

/// 16a. Writes 0xEE over every mapping named `memfd:forkgraph-segment` of at least `min_len`
/// bytes in this worker, writable ones first (a write to a read-only one faults). Returns how
/// many it wrote.
#[forkgraph::task]
fn scribble_segments(min_len: i64) -> i64 {
    let mut maps: Vec<Mapping> = mappings("memfd:forkgraph-segment")
        .into_iter()
        .filter(|m| m.len >= min_len as usize)
        .collect();
    maps.sort_by_key(|m| !m.perms.starts_with("rw"));
    let mut n = 0;
    for m in &maps {
        eprintln!("scribble_segments: writing {m:?}");
        // SAFETY: none intended: this task attacks shared memory it was given. The range is a
        // live mapping of this process; a read-only one faults, which the pool must survive.
        unsafe { std::ptr::write_bytes(m.start as *mut u8, 0xEE, m.len) };
        n += 1;
    }
    n
}

/// 16b. A child of the worker opens `/proc/<worker>/mem` read-write and writes 0xEE over every
/// `memfd:forkgraph-segment` mapping of at least `min_len` bytes of the worker. Returns the
/// number of mappings fully written (100: the file could not be opened; negative: no mapping,
/// or the child could not be waited for).
#[forkgraph::task]
fn poke_via_proc_mem(min_len: i64) -> i64 {
    let targets: Vec<(usize, usize)> = mappings("memfd:forkgraph-segment")
        .into_iter()
        .filter(|m| m.len >= min_len as usize)
        .map(|m| (m.start, m.len))
        .collect();
    if targets.is_empty() {
        return -1;
    }
    let path = CString::new(format!("/proc/{}/mem", std::process::id())).unwrap();
    let junk = vec![0xEEu8; 4096];
    // SAFETY: the child calls only async-signal-safe functions (open, pwrite, _exit) on data
    // prepared before the fork, and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: open with a NUL-terminated path made before the fork.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
        if fd < 0 {
            // SAFETY: ends the child without running anything of the parent's.
            unsafe { libc::_exit(100) };
        }
        let mut ok = 0;
        for &(addr, len) in &targets {
            let mut off = 0;
            let mut all = true;
            while off < len {
                let chunk = junk.len().min(len - off);
                // SAFETY: pwrite from a live buffer into the (parent's) memory file.
                let n = unsafe {
                    libc::pwrite(fd, junk.as_ptr().cast(), chunk, (addr + off) as libc::off_t)
                };
                if n <= 0 {
                    all = false;
                    break;
                }
                off += n as usize;
            }
            if all {
                ok += 1;
            }
        }
        // SAFETY: ends the child without running anything of the parent's.
        unsafe { libc::_exit(ok.min(99)) };
    }
    if pid < 0 {
        return -2;
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a local.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return -3;
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as i64
    } else {
        -4
    }
}

/// 17. A large shared vector, every page touched.
#[forkgraph::task]
fn big_shared(mib: i64) -> Result<SharedVec<u8>, String> {
    let mut v = SharedVec::<u8>::zeroed(mib as usize * MIB).map_err(|e| e.to_string())?;
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    Ok(v)
}

/// 18. Floods stderr with `n` lines and returns.
#[forkgraph::task]
fn flood_stderr(n: i64) -> i64 {
    for i in 0..n {
        eprintln!("flood {i}");
    }
    n
}

#[forkgraph::task]
fn last_words_then_abort(_x: i64) -> i64 {
    eprintln!("last words");
    std::process::abort()
}

// ---------------------------------------------------------------------------------------------
// Test-side tools
// ---------------------------------------------------------------------------------------------

/// Whether this process is a helper (of any test): then the ordinary tests do nothing, so that
/// a helper (or a re-executed binary that wrongly ran `main`) never starts more helpers.
fn in_helper() -> bool {
    std::env::var_os("FORKGRAPH_TEST_HELPER").is_some()
}

/// The scratch directory a helper was given.
fn attack_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("ATTACK_DIR").expect("ATTACK_DIR is set for helpers"))
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Waits (pidfd + poll, no sleep) until `pid` has ended; false if it still runs after `secs`.
fn gone_within(pid: i32, secs: u64) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return true; // ESRCH: gone and reaped
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let n = loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, (secs * 1000) as i32) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    n == 1
}

/// SIGKILLs `pid` (after SIGCONT, in case it was stopped) if it still runs this executable.
fn kill_if_ours(pid: i32) {
    if runs_this_exe(pid) {
        // SAFETY: signals to a process running this executable that a test started.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Kills the given pids (see [`kill_if_ours`]) when dropped: no process outlives its test.
#[derive(Default)]
struct Reaper(Vec<i32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for &p in &self.0 {
            kill_if_ours(p);
        }
    }
}

/// Reads a pid a task wrote to `file`.
fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Numbers following `tag` in the text (`"CLEANUP 123"` lines).
fn tagged_pids(text: &str, tag: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.find(tag).map(|at| &l[at + tag.len()..]))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The finished run of a helper.
struct HelperRun {
    name: String,
    /// `None`: it outlived its watchdog and was killed.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    /// Processes to kill when the test ends (announced by the helper or added by the test).
    reaper: Reaper,
}

impl HelperRun {
    fn describe(&self) -> String {
        let tail = |s: &str| {
            let start = s.len().saturating_sub(4000);
            let start = (start..s.len())
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(s.len());
            s[start..].to_owned()
        };
        format!(
            "helper {} {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.name,
            match self.status {
                Some(s) => format!("ended: {s:?}"),
                None => format!("still running after {HELPER_SECS} s: killed (watchdog)"),
            },
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }

    /// Asserts that the helper exited 0 after printing `HELPER OK`.
    fn assert_ok(&self) {
        assert!(
            self.status.is_some_and(|s| s.success()) && self.stdout.contains("HELPER OK"),
            "{}",
            self.describe()
        );
    }
}

fn outer_pgid() -> i32 {
    // SAFETY: getpgrp has no preconditions.
    unsafe { libc::getpgrp() }
}

/// The helper command for `name`: in its own process group, with the scratch dir and the test
/// runner's process group in its environment.
fn helper_command(name: &str, dir: &Path) -> Command {
    let mut cmd = helper(name);
    cmd.env("ATTACK_DIR", dir)
        .env("ATTACK_OUTER_PGID", outer_pgid().to_string())
        .stdin(Stdio::null())
        .process_group(0);
    cmd
}

/// Waits for a child with a pidfd; false if it still runs after `secs`.
fn wait_child_for(child: &std::process::Child, secs: u64) -> bool {
    gone_within(child.id() as i32, secs)
}

/// Runs helper `name` to its end with stdout and stderr in files under `dir`; a helper that
/// outlives `secs` is killed with its whole process group and reaped. Pids it prints after
/// `CLEANUP ` are killed when the returned run is dropped.
fn run_helper_with(
    name: &str,
    dir: &Path,
    secs: u64,
    configure: impl FnOnce(&mut Command),
) -> HelperRun {
    let out_path = dir.join(format!("{name}.stdout"));
    let err_path = dir.join(format!("{name}.stderr"));
    let mut cmd = helper_command(name, dir);
    cmd.stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    configure(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let ended = wait_child_for(&child, secs);
    if !ended {
        // SAFETY: SIGKILL to the process group this test created for the helper (it is still
        // alive, so the group id is still its own).
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    }
    let status = child.wait().unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let reaper = Reaper(tagged_pids(&stdout, "CLEANUP "));
    HelperRun {
        name: name.to_owned(),
        status: ended.then_some(status),
        stdout,
        stderr,
        reaper,
    }
}

fn run_helper(name: &str, dir: &Path) -> HelperRun {
    run_helper_with(name, dir, HELPER_SECS, |_| {})
}

/// The body of a helper test: runs only in the helper process; prints `HELPER OK` or
/// `HELPER FAILED: ...` on stdout and exits at once (no harness output on stderr, which some
/// helpers block on purpose).
fn helper_main(name: &str, body: impl FnOnce() -> Result<(), String>) {
    if !is_helper(name) {
        return;
    }
    let r = body();
    let mut out = std::io::stdout().lock();
    let code = match r {
        Ok(()) => {
            let _ = writeln!(out, "\nHELPER OK");
            0
        }
        Err(e) => {
            let _ = writeln!(out, "\nHELPER FAILED: {e}");
            1
        }
    };
    let _ = out.flush();
    std::process::exit(code)
}

/// Prints a line on stdout at once (helpers report through it).
fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn task_error(r: Result<Output, Error>) -> Result<TaskError, String> {
    match r {
        Err(Error::Task(t)) => Ok(*t),
        Err(e) => Err(format!("expected a task error, got {e}")),
        Ok(o) => Err(format!("expected a task error, got a result {o:?}")),
    }
}

/// The pool still computes a normal graph.
fn still_works(p: &ProcessPool) -> Result<(), String> {
    let g = graph! { "a" => 4, "b" => (plain, key("a")) };
    match p.get(&g, "b") {
        Ok(o) => match o.to::<i64>() {
            Ok(40) => Ok(()),
            other => Err(format!("the pool no longer computes: {other:?}")),
        },
        Err(e) => Err(format!("the pool no longer computes: {e}")),
    }
}

fn build(b: forkgraph::ProcessPoolBuilder) -> Result<ProcessPool, String> {
    b.build().map_err(|e| e.to_string())
}

/// VmHWM of this process in KiB.
fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> Result<(), String> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads a local struct.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn bytes_of(o: &Output) -> Option<&[u8]> {
    match o.as_value()? {
        Value::Array(a) => Some(a.as_bytes()),
        _ => None,
    }
}

fn died_from(kind: &TaskErrorKind, sig: i32) -> bool {
    matches!(kind, TaskErrorKind::WorkerDied { signal: Some(s), .. } if *s == sig)
}

// ---------------------------------------------------------------------------------------------
// 1. Forged frames on the worker socket
// ---------------------------------------------------------------------------------------------

/// Helper body of item 1: forged frame `kind` on a pool with or without a 500 ms timeout.
fn forged_frame_case(kind: i64, timeout: bool) -> Result<(), String> {
    // A ceiling on this process's heap, so that a parent that believes the forged length fails
    // fast here (allocation failure) instead of faulting in gigabytes.
    set_rlimit(libc::RLIMIT_DATA, 1280 << 20, libc::RLIM_INFINITY)?;
    let note = attack_dir().join(format!("sockets-{kind}-{timeout}"));
    let mut b = ProcessPool::builder().workers(1);
    if timeout {
        b = b.task_timeout(Duration::from_millis(500));
    }
    let p = build(b)?;
    let g = graph! { "forged" => (forge_frame, kind, path_str(&note).as_str()) };
    let r = p.get(&g, "forged");
    say(format!("GET {r:?}"));
    let socks = std::fs::read_to_string(&note).unwrap_or_default();
    if socks.trim() != "1" {
        return Err(format!(
            "the task found {socks:?} sockets, not exactly 1: attack not made"
        ));
    }
    if r.is_ok() {
        return Err("a forged frame went unnoticed: the get returned a result".into());
    }
    still_works(&p)?;
    drop(p);
    let hwm = vm_hwm_kib();
    say(format!("VmHWM {hwm} kB"));
    if hwm >= 1 << 20 {
        return Err(format!("the pool's process peaked at {hwm} kB (>= 1 GiB)"));
    }
    Ok(())
}

#[test]
fn helper_forged_ff_frame() {
    helper_main("helper_forged_ff_frame", || forged_frame_case(0, true));
}

#[test]
fn helper_forged_huge_frame() {
    helper_main("helper_forged_huge_frame", || forged_frame_case(1, true));
}

#[test]
fn helper_forged_missing_fd_frame() {
    helper_main("helper_forged_missing_fd_frame", || {
        forged_frame_case(2, true)
    });
}

#[test]
fn helper_forged_ff_frame_no_timeout() {
    helper_main("helper_forged_ff_frame_no_timeout", || {
        forged_frame_case(0, false)
    });
}

helper_test!(
    forged_ff_frame_on_worker_socket_is_an_error,
    "helper_forged_ff_frame",
    "forged-ff"
);

helper_test!(
    forged_huge_frame_header_is_an_error_without_huge_allocation,
    "helper_forged_huge_frame",
    "forged-huge"
);

helper_test!(
    forged_frame_with_missing_fd_is_an_error,
    "helper_forged_missing_fd_frame",
    "forged-missing-fd"
);

helper_test!(
    forged_ff_frame_without_timeout_is_an_error,
    "helper_forged_ff_frame_no_timeout",
    "forged-ff-nt"
);

// ---------------------------------------------------------------------------------------------
// 2. A task kills the fork server
// ---------------------------------------------------------------------------------------------

fn runs(counter: &Path) -> u64 {
    std::fs::metadata(counter).map_or(0, |m| m.len())
}

#[test]
fn helper_task_kills_fork_server() {
    helper_main("helper_task_kills_fork_server", || {
        let dir = attack_dir();
        // retries(0): one task error for that key, not a re-run forever.
        let counter = dir.join("runs-r0");
        let p = build(ProcessPool::builder().workers(2).retries(0))?;
        say(format!("CLEANUP {}", p.fork_server_pid()));
        let g = graph! { "boom" => (kill_server, path_str(&counter).as_str()) };
        let r = p.get(&g, "boom");
        say(format!("retries(0): {r:?}; runs {}", runs(&counter)));
        let e = task_error(r)?;
        if e.key != "boom".into() {
            return Err(format!("error for the wrong key: {e}"));
        }
        if e.to_string().contains("worker process 0 ") {
            return Err(format!("the error names no real worker: {e}"));
        }
        if runs(&counter) > 4 {
            return Err(format!("retries(0) ran the task {} times", runs(&counter)));
        }
        still_works(&p)?;
        drop(p);
        // retries(2), max_worker_deaths(2): quarantined or died, and the pool works after.
        let counter = dir.join("runs-r2");
        let p = build(
            ProcessPool::builder()
                .workers(2)
                .retries(2)
                .max_worker_deaths(2),
        )?;
        say(format!("CLEANUP {}", p.fork_server_pid()));
        let g = graph! { "boom" => (kill_server, path_str(&counter).as_str()) };
        let r = p.get(&g, "boom");
        say(format!("retries(2): {r:?}; runs {}", runs(&counter)));
        let e = task_error(r)?;
        if e.key != "boom".into()
            || !matches!(
                e.kind,
                TaskErrorKind::KilledWorkers { .. } | TaskErrorKind::WorkerDied { .. }
            )
        {
            return Err(format!(
                "expected KilledWorkers or WorkerDied for boom: {e}"
            ));
        }
        if runs(&counter) > 4 {
            return Err(format!(
                "retries(2)/max_worker_deaths(2) ran the task {} times",
                runs(&counter)
            ));
        }
        still_works(&p)
    });
}

helper_test!(
    a_task_that_kills_its_fork_server_fails_instead_of_rerunning_forever,
    "helper_task_kills_fork_server",
    "kill-server"
);

// ---------------------------------------------------------------------------------------------
// 3. A task stops the fork server
// ---------------------------------------------------------------------------------------------

#[test]
fn helper_task_stops_fork_server() {
    helper_main("helper_task_stops_fork_server", || {
        let p = build(ProcessPool::builder().workers(1).retries(0))?;
        let server = p.fork_server_pid();
        say(format!("CLEANUP {server}"));
        say(format!("SERVER {server}"));
        // The second task kills its worker: the pool must get a replacement from a fork
        // server that is stopped.
        let g = graph! {
            "stopper" => (stop_server, 0),
            "crasher" => (abort_after, key("stopper")),
        };
        let r = p.get(&g, "crasher");
        say(format!("GET ENDED {r:?}"));
        drop(p);
        say("DROPPED");
        if !gone_within(server, 30) {
            return Err(format!(
                "the stopped fork server {server} survived the pool"
            ));
        }
        Ok(())
    });
}

#[test]
fn a_stopped_fork_server_does_not_hang_get_or_drop() {
    if in_helper() {
        return;
    }
    let dir = scratch_dir("stop-server");
    let run = run_helper("helper_task_stops_fork_server", &dir);
    run.assert_ok();
    for server in tagged_pids(&run.stdout, "SERVER ") {
        wait_gone(server, 30);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A grandchild keeps the worker's fds, then the worker aborts
// ---------------------------------------------------------------------------------------------

fn keeper_case(timeout: Option<Duration>) -> Result<(), String> {
    let pidfile = attack_dir().join("grandchild.pid");
    let mut b = ProcessPool::builder().workers(1).retries(0);
    if let Some(t) = timeout {
        b = b.task_timeout(t);
    }
    let p = build(b)?;
    let g = graph! { "keeper" => (keeper_then_abort, path_str(&pidfile).as_str()) };
    let r = p.get(&g, "keeper");
    say(format!("GET {r:?}"));
    let e = task_error(r)?;
    if e.key != "keeper".into() || !died_from(&e.kind, libc::SIGABRT) {
        return Err(format!(
            "expected WorkerDied with SIGABRT for keeper, got {e}"
        ));
    }
    still_works(&p)?;
    drop(p);
    Ok(())
}

#[test]
fn helper_grandchild_keeps_fds_no_timeout() {
    helper_main("helper_grandchild_keeps_fds_no_timeout", || {
        keeper_case(None)
    });
}

#[test]
fn helper_grandchild_keeps_fds_with_timeout() {
    helper_main("helper_grandchild_keeps_fds_with_timeout", || {
        keeper_case(Some(Duration::from_secs(5)))
    });
}

fn grandchild_keeps_fds(name: &str) {
    let dir = scratch_dir(name);
    let mut run = run_helper(name, &dir);
    let gc = read_pid(&dir.join("grandchild.pid"));
    if let Some(gc) = gc {
        run.reaper.0.push(gc);
    }
    run.assert_ok();
    let gc = gc.filter(|&p| p > 0).expect("the task forked a grandchild");
    assert!(
        gone_within(gc, 30),
        "grandchild {gc} of a dead worker still runs 30 s after the pool was dropped"
    );
}

#[test]
fn a_worker_that_aborts_while_a_grandchild_holds_its_fds_is_reported_as_died() {
    if in_helper() {
        return;
    }
    grandchild_keeps_fds("helper_grandchild_keeps_fds_no_timeout");
}

#[test]
fn a_grandchild_holding_fds_is_not_a_timeout() {
    if in_helper() {
        return;
    }
    grandchild_keeps_fds("helper_grandchild_keeps_fds_with_timeout");
}

// ---------------------------------------------------------------------------------------------
// 5. Progress page forgery
// ---------------------------------------------------------------------------------------------

#[test]
fn helper_blank_progress_page() {
    helper_main("helper_blank_progress_page", || {
        let p = build(
            ProcessPool::builder()
                .workers(1)
                .task_timeout(Duration::from_millis(300)),
        )?;
        let g = graph! { "blank" => (blank_page_and_spin, 0) };
        let r = p.get(&g, "blank");
        say(format!("GET {r:?}"));
        let e = task_error(r)?;
        if e.key != "blank".into() || e.kind != (TaskErrorKind::TimedOut { millis: 300 }) {
            return Err(format!(
                "expected TimedOut {{ millis: 300 }} for blank, got {e}"
            ));
        }
        still_works(&p)
    });
}

helper_test!(
    a_task_that_blanks_its_progress_page_still_times_out,
    "helper_blank_progress_page",
    "blank-page"
);

#[test]
fn a_task_that_forges_its_unit_number_cannot_shift_the_blame() {
    if in_helper() {
        return;
    }
    watchdog(120, || {
        // One worker runs the culprit first and the innocents queued behind it. The culprit
        // names the next unit in the page and aborts. The pool retries a death once (retries(1));
        // each innocent is given retries(0), so that one wrongly blamed death fails it: any error
        // that names an innocent is shifted blame.
        let p = ProcessPool::builder()
            .workers(1)
            .retries(1)
            .build()
            .unwrap();
        let mut g = Graph::new();
        g.task(
            "a-culprit",
            "shift_blame_then_abort",
            vec![Arg::Value(0i64.into())],
        );
        let mut innocents: Vec<Keys> = Vec::new();
        for i in 0..20i64 {
            g.task(("b-innocent", i), "innocent", vec![Arg::Value(i.into())]);
            g.set_options(("b-innocent", i), TaskOptions::new().retries(0));
            innocents.push(("b-innocent", i).into());
        }
        let mut all: Vec<Keys> = vec!["a-culprit".into()];
        all.extend(innocents.iter().cloned());
        let e = match p.get(&g, Keys::List(all)) {
            Err(Error::Task(t)) => *t,
            other => panic!("expected a task error, got {other:?}"),
        };
        assert_eq!(
            e.key,
            "a-culprit".into(),
            "blame shifted to an innocent: {e}"
        );
        assert!(
            died_from(&e.kind, libc::SIGABRT)
                || matches!(e.kind, TaskErrorKind::KilledWorkers { .. }),
            "{e}"
        );
        // The innocents alone all succeed.
        let out = p.get(&g, Keys::List(innocents)).unwrap();
        for (i, o) in out.as_list().unwrap().iter().enumerate() {
            assert_eq!(o.to::<i64>().unwrap(), i as i64 + 1);
        }
    });
}

#[test]
fn a_task_that_forges_its_skip_list_cannot_drop_other_tasks() {
    if in_helper() {
        return;
    }
    watchdog(120, || {
        // One worker runs the forger first and the innocents queued behind it; the forger
        // lists them in its page's skip list, which only the parent may do for units it
        // cancelled. The worker is killed as a protocol breaker and the innocents run again.
        let p = ProcessPool::builder().workers(1).build().unwrap();
        let mut g = Graph::new();
        g.task("a-forger", "forge_skips", vec![Arg::Value(0i64.into())]);
        let mut all: Vec<Keys> = vec!["a-forger".into()];
        for i in 0..20i64 {
            g.task(("b-innocent", i), "innocent", vec![Arg::Value(i.into())]);
            all.push(("b-innocent", i).into());
        }
        let out = p.get(&g, Keys::List(all)).unwrap();
        let out = out.as_list().unwrap();
        assert_eq!(out[0].to::<i64>().unwrap(), 0);
        for (i, o) in out[1..].iter().enumerate() {
            assert_eq!(o.to::<i64>().unwrap(), i as i64 + 1);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 6. The program's stderr is a pipe nobody reads
// ---------------------------------------------------------------------------------------------

/// Replaces fd 2 with the write end of a pipe whose read end stays open and is never read.
fn block_own_stderr() -> Result<(), String> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two new fds into the local array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: dup2 makes fd 2 the pipe's write end; closing the original write end; the read
    // end fds[0] is deliberately kept open (and never read) until the process exits.
    unsafe {
        libc::dup2(fds[1], 2);
        libc::close(fds[1]);
    }
    Ok(())
}

#[test]
fn helper_stderr_nobody_reads_with_timeout() {
    helper_main("helper_stderr_nobody_reads_with_timeout", || {
        block_own_stderr()?;
        let p = build(
            ProcessPool::builder()
                .workers(1)
                .task_timeout(Duration::from_secs(2)),
        )?;
        let g = graph! { "loud" => (shout, 8 * MIB as i64) };
        let r = p.get(&g, "loud");
        say(format!("GET {r:?}"));
        match r {
            Ok(_) => {}
            Err(Error::Task(t)) if matches!(t.kind, TaskErrorKind::TimedOut { .. }) => {}
            Err(e) => return Err(format!("expected a result or TimedOut, got {e}")),
        }
        drop(p);
        Ok(())
    });
}

#[test]
fn helper_stderr_nobody_reads_no_timeout() {
    helper_main("helper_stderr_nobody_reads_no_timeout", || {
        block_own_stderr()?;
        let p = build(ProcessPool::builder().workers(1))?;
        let g = graph! { "loud" => (shout, 4 * MIB as i64) };
        let r = p.get(&g, "loud");
        say(format!("GET {r:?}"));
        match r.map(|o| o.to::<i64>()) {
            Ok(Ok(n)) if n >= 4 * MIB as i64 => {}
            other => return Err(format!("expected the task's result, got {other:?}")),
        }
        drop(p);
        Ok(())
    });
}

helper_test!(
    a_task_flooding_an_unread_stderr_cannot_hang_get_with_timeout,
    "helper_stderr_nobody_reads_with_timeout",
    "stderr-unread-t"
);

helper_test!(
    a_task_writing_megabytes_to_an_unread_stderr_still_returns,
    "helper_stderr_nobody_reads_no_timeout",
    "stderr-unread"
);

// ---------------------------------------------------------------------------------------------
// 7. A low open-file limit
// ---------------------------------------------------------------------------------------------

#[test]
fn helper_low_fd_limit() {
    helper_main("helper_low_fd_limit", || {
        set_rlimit(libc::RLIMIT_NOFILE, 512, 512)?;
        let p = build(
            ProcessPool::builder()
                .workers(2)
                .segment_threshold(Some(16)),
        )?;
        let mut g = Graph::new();
        let mut keys = Vec::new();
        for i in 0..1000i64 {
            g.task(("small", i), "small_bytes", vec![Arg::Value(i.into())]);
            keys.push(Keys::from(("small", i)));
        }
        let r = p.get(&g, Keys::List(keys));
        match &r {
            Ok(out) => {
                let l = out.as_list().ok_or("a list")?;
                if l.len() != 1000 {
                    return Err(format!("{} results", l.len()));
                }
                for (i, o) in l.iter().enumerate() {
                    if bytes_of(o) != Some(&[i as u8; 64][..]) {
                        return Err(format!("result {i} is wrong: {o:?}"));
                    }
                }
                say("GET OK");
            }
            Err(e) => {
                let text = e.to_string();
                say(format!("GET ERR {text}"));
                let lower = text.to_lowercase();
                if !(lower.contains("limit") && (lower.contains("512") || lower.contains("file"))) {
                    return Err(format!(
                        "the error does not name the open-file limit: {text}"
                    ));
                }
            }
        }
        drop(r);
        drop(p);
        say("DROPPED");
        Ok(())
    });
}

helper_test!(
    a_thousand_segments_under_a_512_fd_limit_succeed_or_name_the_limit,
    "helper_low_fd_limit",
    "fd-limit"
);

// ---------------------------------------------------------------------------------------------
// 8. A worker killed from outside while idle
// ---------------------------------------------------------------------------------------------

#[test]
fn a_worker_killed_while_idle_is_not_blamed_for_the_next_task() {
    if in_helper() {
        return;
    }
    watchdog(60, || {
        let p = ProcessPool::builder()
            .workers(1)
            .retries(0)
            .build()
            .unwrap();
        let pid = p.worker_pids()[0];
        // SAFETY: SIGKILL to a worker of our own pool.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_gone(pid, 30);
        still_works(&p).unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// 9. A task closes its worker socket
// ---------------------------------------------------------------------------------------------

#[test]
fn a_task_that_closes_its_socket_gets_an_explained_error() {
    if in_helper() {
        return;
    }
    let e = watchdog(60, || {
        let p = ProcessPool::builder()
            .workers(1)
            .retries(0)
            .build()
            .unwrap();
        let g = graph! { "cut" => (cut_own_line, 0) };
        let e = task_error(p.get(&g, "cut")).unwrap();
        still_works(&p).unwrap();
        e
    });
    assert_eq!(e.key, "cut".into(), "{e}");
    let text = e.kind.to_string().to_lowercase();
    assert!(
        ["socket", "parent", "protocol"]
            .iter()
            .any(|w| text.contains(w)),
        "the error does not say what the worker saw: {e}"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. A grandchild in its own session
// ---------------------------------------------------------------------------------------------

#[test]
fn helper_setsid_grandchild_drop() {
    helper_main("helper_setsid_grandchild_drop", || {
        let pidfile = attack_dir().join("grandchild.pid");
        let p = build(ProcessPool::builder().workers(1))?;
        let g = graph! { "detach" => (detach_sleeper, path_str(&pidfile).as_str()) };
        let r = p.get(&g, "detach");
        say(format!("GET {r:?}"));
        let gc = r
            .map_err(|e| e.to_string())?
            .to::<i64>()
            .map_err(|e| e.to_string())? as i32;
        say(format!("CLEANUP {gc}"));
        if gc <= 0 {
            return Err("fork failed in the task".into());
        }
        drop(p);
        if !gone_within(gc, 30) {
            return Err(format!(
                "grandchild {gc} still runs 30 s after the pool was dropped"
            ));
        }
        Ok(())
    });
}

#[test]
fn a_setsid_grandchild_is_gone_after_the_pool_is_dropped() {
    if in_helper() {
        return;
    }
    let dir = scratch_dir("setsid-drop");
    let mut run = run_helper("helper_setsid_grandchild_drop", &dir);
    if let Some(gc) = read_pid(&dir.join("grandchild.pid")) {
        run.reaper.0.push(gc);
    }
    run.assert_ok();
}

#[test]
fn helper_setsid_grandchild_parent_killed() {
    helper_main("helper_setsid_grandchild_parent_killed", || {
        let pidfile = attack_dir().join("grandchild.pid");
        let p = build(ProcessPool::builder().workers(1))?;
        let g = graph! { "detach" => (detach_sleeper, path_str(&pidfile).as_str()) };
        let gc = p
            .get(&g, "detach")
            .map_err(|e| e.to_string())?
            .to::<i64>()
            .map_err(|e| e.to_string())?;
        say(format!("GRANDCHILD {gc}"));
        // Block until the test kills us (or goes away: our stdin closes).
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        Ok(())
    });
}

#[test]
fn a_setsid_grandchild_is_gone_after_the_program_is_sigkilled() {
    if in_helper() {
        return;
    }
    let name = "helper_setsid_grandchild_parent_killed";
    let dir = scratch_dir("setsid-killed");
    let mut reaper = Reaper::default();
    let mut child = helper_command(name, &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let helper_pid = child.id() as i32;
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(&pid) = tagged_pids(&line, "GRANDCHILD ").first() {
                let _ = tx.send(Ok(pid));
                return;
            }
        }
        let _ = tx.send(Err(seen));
    });
    let got = rx.recv_timeout(Duration::from_secs(HELPER_SECS));
    let gc = match got {
        Ok(Ok(pid)) => pid,
        other => {
            // SAFETY: SIGKILL to the helper's own process group, which this test created.
            unsafe { libc::kill(-helper_pid, libc::SIGKILL) };
            let _ = child.wait();
            if let Some(gc) = read_pid(&dir.join("grandchild.pid")) {
                kill_if_ours(gc);
            }
            panic!(
                "the helper did not report its grandchild: {other:?}; stderr: {}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
        }
    };
    reaper.0.push(gc);
    let was_running = common::running(gc);
    child.kill().unwrap(); // SIGKILL to the helper only (not its group)
    child.wait().unwrap();
    assert!(gc > 0, "fork failed in the task");
    assert!(was_running, "grandchild {gc} ran before the kill");
    assert!(
        gone_within(gc, 30),
        "grandchild {gc} still runs 30 s after the program was SIGKILLed"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. A task signals its process group
// ---------------------------------------------------------------------------------------------

#[test]
fn helper_task_terms_its_group() {
    helper_main("helper_task_terms_its_group", || {
        let outer: i64 = std::env::var("ATTACK_OUTER_PGID")
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or("ATTACK_OUTER_PGID")?;
        let p = build(ProcessPool::builder().workers(1))?;
        say(format!("CLEANUP {}", p.fork_server_pid()));
        let g = graph! { "term" => (term_group, outer) };
        let r = p.get(&g, "term");
        say(format!("GET {r:?}"));
        if let Ok(o) = &r {
            if o.to::<i64>() == Ok(-1) {
                return Err("the task ran in the test runner's process group: not attacked".into());
            }
        }
        say(format!("SURVIVED; pool after: {:?}", still_works(&p)));
        drop(p);
        Ok(())
    });
}

helper_test!(
    a_task_that_signals_its_process_group_does_not_kill_the_program,
    "helper_task_terms_its_group",
    "term-group"
);

// ---------------------------------------------------------------------------------------------
// 12. The fork-server start never runs the program's main twice
// ---------------------------------------------------------------------------------------------

// A re-executed fork server that fell through to `main` would run this test binary again with
// no arguments, i.e. every test, with FORKGRAPH_TEST_HELPER still set: only this helper would do
// anything (every other test returns at once in a helper process), and it appends a line to the
// marker file. No deterministic way to make the start-up hook fall through is known (a malformed
// variable in the program's own environment is the closest): this is a best-effort regression
// test that passes on correct code.
#[test]
fn helper_main_runs_once() {
    helper_main("helper_main_runs_once", || {
        let marker = attack_dir().join("main-runs");
        let before = std::fs::read_to_string(&marker).unwrap_or_default();
        {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&marker)
                .map_err(|e| e.to_string())?;
            writeln!(f, "main ran in {}", std::process::id()).map_err(|e| e.to_string())?;
        }
        if !before.is_empty() {
            return Ok(()); // a second run: report it through the marker only
        }
        // Pools from several threads at once, restarts, and a fork server killed from outside.
        let threads: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| -> Result<(), String> {
                    let p = build(ProcessPool::builder().workers(2))?;
                    still_works(&p)?;
                    p.restart_worker(0).map_err(|e| e.to_string())?;
                    let server = p.fork_server_pid();
                    // SAFETY: SIGKILL to our own pool's fork server.
                    unsafe { libc::kill(server, libc::SIGKILL) };
                    wait_gone(server, 30);
                    still_works(&p)
                })
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| "a thread panicked")??;
        }
        let runs = std::fs::read_to_string(&marker).unwrap_or_default();
        if runs.lines().count() != 1 {
            return Err(format!("main ran more than once:\n{runs}"));
        }
        Ok(())
    });
}

fn main_runs_once(env: Option<&str>) {
    let dir = scratch_dir(if env.is_some() {
        "main-once-env"
    } else {
        "main-once"
    });
    let run = run_helper_with("helper_main_runs_once", &dir, HELPER_SECS, |c| {
        if let Some(v) = env {
            c.env("FORKGRAPH_FORK_SERVER", v);
        }
    });
    run.assert_ok();
    let runs = std::fs::read_to_string(dir.join("main-runs")).unwrap_or_default();
    assert_eq!(runs.lines().count(), 1, "main ran more than once:\n{runs}");
}

#[test]
fn starting_fork_servers_never_runs_main_twice() {
    if in_helper() {
        return;
    }
    main_runs_once(None);
}

#[test]
fn a_stray_fork_server_variable_does_not_run_main_twice() {
    if in_helper() {
        return;
    }
    main_runs_once(Some("not-a-fork-server"));
}

// ---------------------------------------------------------------------------------------------
// 13. SIGCHLD ignored by the program
// ---------------------------------------------------------------------------------------------

#[test]
fn helper_sigchld_ignored() {
    helper_main("helper_sigchld_ignored", || {
        // SAFETY: SIG_IGN has no handler code.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
        let p = build(ProcessPool::builder().workers(1).retries(0))?;
        say(format!("CLEANUP {}", p.fork_server_pid()));
        for round in 0..3 {
            let g = graph! { "boom" => (abort_after, round) };
            let r = p.get(&g, "boom");
            say(format!("round {round}: {r:?}"));
            let e = task_error(r)?;
            if e.key != "boom".into() || !died_from(&e.kind, libc::SIGABRT) {
                return Err(format!(
                    "round {round}: expected WorkerDied SIGABRT, got {e}"
                ));
            }
            still_works(&p).map_err(|e| format!("round {round}: {e}"))?;
        }
        drop(p);
        Ok(())
    });
}

helper_test!(
    crashes_are_reported_when_the_program_ignores_sigchld,
    "helper_sigchld_ignored",
    "sigchld-ign"
);

// ---------------------------------------------------------------------------------------------
// 14. The program is a child subreaper
// ---------------------------------------------------------------------------------------------

/// State letter and parent pid of a process, from /proc/PID/stat.
fn state_and_ppid(pid: i32) -> Option<(String, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = s.rsplit(')').next()?.split_whitespace();
    let state = f.next()?.to_owned();
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

#[test]
fn helper_subreaper() {
    helper_main("helper_subreaper", || {
        // SAFETY: prctl with an integer argument.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(format!("prctl: {}", std::io::Error::last_os_error()));
        }
        let me = std::process::id() as i32;
        let p = build(ProcessPool::builder().workers(2))?;
        let old = p.worker_pids();
        let server = p.fork_server_pid();
        // SAFETY: SIGKILL to our own pool's fork server.
        unsafe { libc::kill(server, libc::SIGKILL) };
        for &pid in old.iter().chain([&server]) {
            if !gone_within(pid, 30) {
                return Err(format!("{pid} still runs after its fork server was killed"));
            }
        }
        still_works(&p)?;
        drop(p);
        let mut zombies = Vec::new();
        for &pid in old.iter().chain([&server]) {
            if let Some((state, ppid)) = state_and_ppid(pid) {
                if state == "Z" && ppid == me {
                    zombies.push(pid);
                }
            }
        }
        let mut other = Vec::new();
        for c in children(me) {
            if let Some((state, _)) = state_and_ppid(c) {
                if state == "Z" {
                    other.push(c);
                }
            }
        }
        if !zombies.is_empty() || !other.is_empty() {
            return Err(format!(
                "zombies left in a subreaper: old workers/server {zombies:?}, children {other:?}"
            ));
        }
        Ok(())
    });
}

helper_test!(
    a_subreaper_program_is_left_without_zombies,
    "helper_subreaper",
    "subreaper"
);

// ---------------------------------------------------------------------------------------------
// 15. Deep nesting
// ---------------------------------------------------------------------------------------------

fn nested_arg(depth: usize) -> Arg {
    let mut a = Arg::Value(1i64.into());
    for _ in 0..depth {
        a = Arg::List(vec![a]);
    }
    a
}

fn nested_keys(depth: usize) -> Keys {
    let mut k = Keys::One("leaf".into());
    for _ in 0..depth {
        k = Keys::List(vec![k]);
    }
    k
}

fn output_depth(o: &Output) -> usize {
    let mut d = 0;
    let mut cur = o;
    while let Some(l) = cur.as_list() {
        d += 1;
        match l.first() {
            Some(x) => cur = x,
            None => break,
        }
    }
    d
}

/// Runs a get on a graph whose task argument is `depth` lists deep. Deep structures are leaked
/// (`mem::forget`) rather than dropped: their destructors recurse once per level and would
/// overflow this thread's stack themselves.
fn deep_arg_get(s: &dyn Fn(&Graph) -> Result<Output, Error>, depth: usize) -> String {
    let mut g = Graph::new();
    g.insert("top", Task::new("nesting_depth", vec![nested_arg(depth)]));
    let r = s(&g);
    std::mem::forget(g);
    match r {
        Err(Error::Graph(e)) => format!("graph error: {e}"),
        Err(e) => format!("other error: {e}"),
        Ok(o) => {
            let v = o.to::<i64>();
            format!("result {v:?}")
        }
    }
}

/// As [`deep_arg_get`] for a request `depth` lists deep.
fn deep_keys_get<S: Scheduler>(s: &S, depth: usize) -> String {
    let g = graph! { "leaf" => 1 };
    let keys = nested_keys(depth);
    let r = s.get_with(&g, &keys, &GetOptions::default());
    std::mem::forget(keys);
    match r {
        Err(Error::Graph(e)) => format!("graph error: {e}"),
        Err(e) => format!("other error: {e}"),
        Ok(o) => {
            let d = output_depth(&o);
            std::mem::forget(o);
            format!("result nested {d} deep")
        }
    }
}

#[test]
fn helper_deep_nesting() {
    helper_main("helper_deep_nesting", || {
        let sync = |g: &Graph| SyncScheduler.get(g, "top");
        let deep = deep_arg_get(&sync, 100_000);
        say(format!("ARG 100000 sync: {deep}"));
        if !deep.starts_with("graph error") {
            return Err(format!("a 100,000-deep argument: {deep}"));
        }
        let deep = deep_keys_get(&SyncScheduler, 100_000);
        say(format!("KEYS 100000 sync: {deep}"));
        if !deep.starts_with("graph error") {
            return Err(format!("a 100,000-deep request: {deep}"));
        }
        let p = build(ProcessPool::builder().workers(1))?;
        let procs = |g: &Graph| p.get(g, "top");
        let deep = deep_arg_get(&procs, 100_000);
        say(format!("ARG 100000 processes: {deep}"));
        if !deep.starts_with("graph error") {
            return Err(format!("a 100,000-deep argument on a process pool: {deep}"));
        }
        // 2,000 levels (a debug build): a result or a clear graph error, never a crash.
        let mid = deep_arg_get(&sync, 2_000);
        say(format!("ARG 2000 sync: {mid}"));
        if !(mid == "result Ok(2000)" || mid.starts_with("graph error")) {
            return Err(format!("a 2,000-deep argument: {mid}"));
        }
        let mid = deep_arg_get(&procs, 2_000);
        say(format!("ARG 2000 processes: {mid}"));
        if !(mid == "result Ok(2000)" || mid.starts_with("graph error")) {
            return Err(format!("a 2,000-deep argument on a process pool: {mid}"));
        }
        let mid = deep_keys_get(&SyncScheduler, 2_000);
        say(format!("KEYS 2000 sync: {mid}"));
        if !(mid == "result nested 2000 deep" || mid.starts_with("graph error")) {
            return Err(format!("a 2,000-deep request: {mid}"));
        }
        Ok(())
    });
}

#[test]
fn deep_nesting_is_a_graph_error_not_a_crash() {
    if in_helper() {
        return;
    }
    let dir = scratch_dir("deep-nesting");
    let run = run_helper_with("helper_deep_nesting", &dir, 120, |_| {});
    run.assert_ok();
}

// ---------------------------------------------------------------------------------------------
// 16. Recycled segments cannot be rewritten while published
// ---------------------------------------------------------------------------------------------

fn all_sevens(o: &Output) -> Result<(), String> {
    let b = bytes_of(o).ok_or("not an array")?;
    if b.len() != MIB {
        return Err(format!("{} bytes", b.len()));
    }
    match b.iter().position(|&x| x != 7) {
        None => Ok(()),
        Some(i) => Err(format!(
            "the published result was modified: byte {i} is {:#x}",
            b[i]
        )),
    }
}

fn published_sevens(p: &ProcessPool) -> Output {
    let g = graph! { "data" => (sevens, MIB as i64) };
    let out = p.get(&g, "data").unwrap();
    match out.as_value() {
        Some(Value::Array(a)) => assert!(a.buffer().is_shared(), "1 MiB travels as a segment"),
        other => panic!("{other:?}"),
    }
    all_sevens(&out).unwrap();
    out
}

#[test]
fn a_producer_cannot_rewrite_its_published_segment() {
    if in_helper() {
        return;
    }
    watchdog(60, || {
        let p = ProcessPool::builder().workers(1).build().unwrap();
        let held = published_sevens(&p);
        let g = graph! { "poke" => (scribble_segments, MIB as i64) };
        let r = p.get(&g, "poke");
        match &r {
            Ok(_) => {}
            Err(Error::Task(t))
                if died_from(&t.kind, libc::SIGSEGV) || died_from(&t.kind, libc::SIGBUS) => {}
            Err(e) => panic!("expected a result or a SIGSEGV/SIGBUS death, got {e}"),
        }
        if let Err(e) = all_sevens(&held) {
            panic!("{e} (the scribbling task returned {r:?})");
        }
        still_works(&p).unwrap();
    });
}

#[test]
fn proc_mem_cannot_rewrite_a_published_segment() {
    if in_helper() {
        return;
    }
    watchdog(60, || {
        let p = ProcessPool::builder().workers(1).build().unwrap();
        let held = published_sevens(&p);
        let g = graph! { "poke" => (poke_via_proc_mem, MIB as i64) };
        let r = p.get(&g, "poke");
        if let Err(e) = all_sevens(&held) {
            panic!("{e} (writes through /proc/PID/mem: {r:?})");
        }
        still_works(&p).unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// 17. Memory limit and SharedVec
// ---------------------------------------------------------------------------------------------

#[test]
fn a_shared_vec_over_the_memory_limit_fails() {
    if in_helper() {
        return;
    }
    let r = watchdog(60, || {
        let p = ProcessPool::builder()
            .workers(1)
            .memory_limit(128 << 20)
            .build()
            .unwrap();
        let g = graph! { "big" => (big_shared, 1024) };
        let r = p.get(&g, "big").map(|o| bytes_of(&o).map(<[u8]>::len));
        still_works(&p).unwrap();
        r
    });
    let e = match r {
        Err(Error::Task(t)) => *t,
        other => panic!("a 1 GiB SharedVec under a 128 MiB limit gave {other:?}"),
    };
    assert_eq!(e.key, "big".into(), "{e}");
    let text = e.kind.to_string().to_lowercase();
    assert!(
        matches!(e.kind, TaskErrorKind::OutOfMemory { .. })
            || text.contains("memory")
            || text.contains("limit"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// 18. The stderr tail belongs to the task that died
// ---------------------------------------------------------------------------------------------

#[test]
fn the_stderr_tail_of_a_death_holds_only_the_culprits_lines() {
    if in_helper() {
        return;
    }
    let e = watchdog(60, || {
        let p = ProcessPool::builder()
            .workers(1)
            .retries(0)
            .build()
            .unwrap();
        let g = graph! { "noisy" => (flood_stderr, 100) };
        assert_eq!(p.get(&g, "noisy").unwrap().to::<i64>().unwrap(), 100);
        let g = graph! { "dying" => (last_words_then_abort, 0) };
        task_error(p.get(&g, "dying")).unwrap()
    });
    let TaskErrorKind::WorkerDied { stderr_tail, .. } = &e.kind else {
        panic!("expected WorkerDied, got {e}")
    };
    assert!(stderr_tail.contains("last words"), "{stderr_tail}");
    assert!(
        !stderr_tail.contains("flood"),
        "another task's lines in the tail: {stderr_tail}"
    );
}

// ---------------------------------------------------------------------------------------------
// Found in review: each of these failed (hang, wrong blame, leak) before its fix.
// ---------------------------------------------------------------------------------------------

fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn set_nofile_soft(soft: u64) -> Result<(), String> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = soft.min(r.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
            return Err("setrlimit failed".into());
        }
    }
    Ok(())
}

/// A fork-server restart that fails (here: no fds left) leaves a pool that still answers: the
/// next `get` returns (an error while the limit holds), and the pool works once it is lifted.
#[test]
fn helper_failed_server_restart() {
    helper_main("helper_failed_server_restart", || {
        let p = build(ProcessPool::builder().workers(1))?;
        say(format!("CLEANUP {}", p.fork_server_pid()));
        still_works(&p)?;
        let counter = path_str(&attack_dir().join("kills"));
        set_nofile_soft(open_fd_count() as u64 + 1)?;
        let g = graph! { "k" => (kill_server, counter.as_str()) };
        say(format!("kill: {:?}", p.get(&g, "k").map(|o| o.to::<i64>())));
        say(format!("after: {:?}", still_works(&p)));
        set_nofile_soft(65536)?;
        still_works(&p)
    });
}

helper_test!(
    a_failed_fork_server_restart_does_not_hang_the_next_get,
    "helper_failed_server_restart",
    "failed-restart"
);

/// A task with a timeout whose dependency has none: the engine does not chain them, so the
/// timed task is timed from what the parent knows even if it blanks its page.
#[test]
fn helper_timed_task_after_untimed_one() {
    helper_main("helper_timed_task_after_untimed_one", || {
        let p = build(ProcessPool::builder().workers(1))?;
        let mut g = Graph::new();
        g.task("a", "plain", vec![Arg::Value(1i64.into())]);
        g.task("b", "blank_page_and_spin", vec![Arg::Key("a".into())]);
        g.set_options("b", TaskOptions::new().timeout(Duration::from_millis(300)));
        let e = task_error(p.get(&g, "b"))?;
        if e.key != "b".into() || e.kind != (TaskErrorKind::TimedOut { millis: 300 }) {
            return Err(format!("expected b TimedOut(300): {e}"));
        }
        still_works(&p)
    });
}

helper_test!(
    a_timed_task_behind_an_untimed_one_still_times_out,
    "helper_timed_task_after_untimed_one",
    "mixed-chain"
);

#[forkgraph::task]
fn len_then_sleep(v: &[u8], ms: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms as u64));
    v.len() as i64
}

/// Copying and sending a large input does not count against the task's timeout.
#[test]
fn helper_large_input_within_timeout() {
    helper_main("helper_large_input_within_timeout", || {
        let p = build(ProcessPool::builder().workers(1))?;
        still_works(&p)?;
        let mut g = Graph::new();
        let big: Value = vec![7u8; 512 * MIB].into();
        g.task(
            "t",
            "len_then_sleep",
            vec![Arg::Value(big), Arg::Value(300i64.into())],
        );
        g.set_options("t", TaskOptions::new().timeout(Duration::from_millis(600)));
        match p.get(&g, "t").map(|o| o.to::<i64>()) {
            Ok(Ok(n)) if n == (512 * MIB) as i64 => Ok(()),
            other => Err(format!("a 300 ms task with a 600 ms timeout: {other:?}")),
        }
    });
}

helper_test!(
    a_large_input_does_not_count_against_the_timeout,
    "helper_large_input_within_timeout",
    "large-input-timeout"
);

/// Leaves a thread behind that aborts the worker 300 ms later.
#[forkgraph::task]
fn abort_later(_x: i64) -> i64 {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(300));
        std::process::abort();
    });
    1
}

#[forkgraph::task]
fn sleep_ms(ms: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms as u64));
    ms
}

/// A thread an earlier task left behind kills the worker while an innocent task runs there
/// alone: the innocent task is re-run on a fresh worker, not failed.
#[test]
fn helper_lingering_thread() {
    helper_main("helper_lingering_thread", || {
        let p = build(ProcessPool::builder().workers(1).retries(0))?;
        say(format!("CLEANUP {}", p.fork_server_pid()));
        let g = graph! { "k" => (abort_later, 0) };
        p.get(&g, "k").map_err(|e| e.to_string())?;
        let g = graph! { "victim" => (sleep_ms, 1000) };
        match p.get(&g, "victim").map(|o| o.to::<i64>()) {
            Ok(Ok(1000)) => Ok(()),
            other => Err(format!("the innocent task: {other:?}")),
        }
    });
}

helper_test!(
    a_thread_left_behind_cannot_get_an_innocent_task_failed,
    "helper_lingering_thread",
    "lingering-thread"
);

/// Sends `frames` well-formed empty result frames whose first byte carries 250 fds each.
#[forkgraph::task]
fn fd_flood(frames: i64) -> i64 {
    let socks = socket_fds();
    if socks.len() != 1 {
        return -1;
    }
    let devnull = std::fs::File::open("/dev/null").unwrap();
    use std::os::fd::AsRawFd;
    let fds: Vec<i32> = vec![devnull.as_raw_fd(); 250];
    // Magic, length 2, no fds announced, then `Done([])`.
    let frame: [u8; 10] = [0x7a, 0xf6, 2, 0, 0, 0, 0, 0, 1, 0];
    for _ in 0..frames {
        // SAFETY: a msghdr of one iovec over a live buffer and a control buffer sized with
        // CMSG_SPACE for 250 fds, filled through the CMSG_* accessors.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: frame.as_ptr() as *mut _,
                iov_len: 1,
            };
            let space = libc::CMSG_SPACE((250 * 4) as u32) as usize;
            let mut cbuf = vec![0u8; space];
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((250 * 4) as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut i32, 250);
            if libc::sendmsg(socks[0], &msg, libc::MSG_NOSIGNAL) != 1 {
                return -2;
            }
        }
        if !send_raw(socks[0], &frame[1..]) {
            return -3;
        }
    }
    frames
}

/// Fds a worker sends that no frame announced are a protocol error, not fds kept forever.
#[test]
fn helper_fd_flood() {
    helper_main("helper_fd_flood", || {
        let p = build(ProcessPool::builder().workers(2))?;
        say(format!("CLEANUP {}", p.fork_server_pid()));
        still_works(&p)?;
        let before = open_fd_count();
        let g = graph! { "f" => (fd_flood, 60) };
        say(format!(
            "flood: {:?}",
            p.get(&g, "f").map(|o| o.to::<i64>())
        ));
        still_works(&p)?;
        let after = open_fd_count();
        if after > before + 100 {
            return Err(format!(
                "the parent holds {after} fds, {before} before the flood"
            ));
        }
        Ok(())
    });
}

helper_test!(
    fds_no_frame_announced_are_not_kept,
    "helper_fd_flood",
    "fd-flood"
);

#[forkgraph::task]
fn setsid_child_to(pidfile: &str) -> i64 {
    let pid = fork_pausing_child(true);
    std::fs::write(pidfile, pid.to_string()).unwrap();
    pid as i64
}

/// Dropping a pool whose fork server a task stopped still ends what the tasks forked.
#[test]
fn helper_stopped_server_drop() {
    helper_main("helper_stopped_server_drop", || {
        let p = build(
            ProcessPool::builder()
                .workers(1)
                .fork_server_timeout(Duration::from_millis(500)),
        )?;
        say(format!("CLEANUP {}", p.fork_server_pid()));
        let pidfile = path_str(&attack_dir().join("grandchild"));
        let g = graph! { "c" => (setsid_child_to, pidfile.as_str()) };
        p.get(&g, "c").map_err(|e| e.to_string())?;
        let gc: i32 = std::fs::read_to_string(&pidfile)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("{e}"))?;
        say(format!("CLEANUP {gc}"));
        let g = graph! { "s" => (stop_server, 1) };
        say(format!("stop: {:?}", p.get(&g, "s").map(|o| o.to::<i64>())));
        drop(p);
        wait_gone(gc, 30);
        Ok(())
    });
}

helper_test!(
    a_stopped_fork_server_still_ends_what_tasks_forked_when_the_pool_drops,
    "helper_stopped_server_drop",
    "stopped-server-drop"
);

#[forkgraph::task]
fn heap_then_shared(mib: i64) -> Result<i64, String> {
    let heap = std::hint::black_box(vec![1u8; mib as usize * MIB]);
    let v = SharedVec::<u8>::zeroed(mib as usize * MIB).map_err(|e| format!("refused: {e}"))?;
    Ok(heap.len() as i64 + v.len() as i64)
}

/// `memory_limit` counts the heap in use and shared segments together.
#[test]
fn heap_and_shared_segments_count_against_one_memory_limit() {
    if in_helper() {
        return;
    }
    watchdog(60, || {
        let p = ProcessPool::builder()
            .workers(1)
            .memory_limit(256 << 20)
            .build()
            .unwrap();
        let g = graph! { "c" => (heap_then_shared, 200) };
        let e = task_error(p.get(&g, "c")).unwrap();
        assert!(e.to_string().contains("memory limit"), "{e}");
        let g = graph! { "c" => (heap_then_shared, 50) };
        assert_eq!(
            p.get(&g, "c").unwrap().to::<i64>().unwrap(),
            (100 * MIB) as i64
        );
    });
}
