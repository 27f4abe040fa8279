//! Attacks from inside tasks on a sandboxed pool (`ProcessPoolBuilder::sandbox`): every attempt
//! must fail and the pool must survive and still compute a graph; the same attempt on an
//! unsandboxed pool must succeed, so that each test proves its layer and not a broken task.
//!
//! Each run happens in a helper (a re-run of this test binary, in its own process group, killed
//! by a watchdog if it outlives it): an attack that succeeds may signal or trace the process
//! that owns the pool. Attempts that would harm that process on success are made harmless on
//! the unsandboxed pool without changing the permission they test: `kill(pid, 0)` instead of
//! SIGKILL (the same permission check), `PTRACE_SEIZE` and detach (the same check as
//! `PTRACE_ATTACH`, without stopping the target), `execve` in a forked child.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{is_helper, scratch_dir, watchdog};
use forkgraph::{
    graph, key, Arg, Error, Graph, LayerStatus, Output, ProcessPool, Sandbox, Task, TaskErrorKind,
    Value,
};

const FILE_LIMIT: u64 = 1 << 20;
const MEMORY_LIMIT: u64 = 256 << 20;
const SECRET_ENV: &str = "FORKGRAPH_TEST_SECRET";

// ---------------------------------------------------------------------------------------------
// Tasks (worker side)
// ---------------------------------------------------------------------------------------------

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn verdict(r: Result<String, String>) -> String {
    match r {
        Ok(s) => format!("ALLOWED {s}"),
        Err(e) => format!("DENIED {e}"),
    }
}

fn cstr(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap()
}

/// One attack, named; `pid` is the pool's process, `addr`/`secret` a heap secret there, `path`
/// a path or port the attack needs. Returns `ALLOWED ...` or `DENIED ...`.
#[forkgraph::task]
fn attack(name: String, pid: i64, addr: i64, secret: i64, path: String) -> String {
    let pid = pid as i32;
    verdict(match name.as_str() {
        "read_passwd" => std::fs::read_to_string("/etc/passwd")
            .map(|s| format!("{} bytes", s.len()))
            .map_err(|e| e.to_string()),
        "read_file" | "read_outside" => std::fs::read_to_string(&path)
            .map(|s| format!("read {s:?}"))
            .map_err(|e| e.to_string()),
        "write_file" | "write_outside" | "write_read_only" => std::fs::write(&path, b"pwned")
            .map(|()| "written".into())
            .map_err(|e| e.to_string()),
        "tcp_connect" => std::net::TcpStream::connect(("127.0.0.1", path.parse::<u16>().unwrap()))
            .map(|_| "connected".into())
            .map_err(|e| e.to_string()),
        "netlink_socket" => {
            // SAFETY: socket takes integers and returns an fd or -1; closed right after.
            let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) };
            if fd < 0 {
                Err(errno().to_string())
            } else {
                // SAFETY: our fd.
                unsafe { libc::close(fd) };
                Ok("netlink socket".into())
            }
        }
        // `secret` is the signal: SIGKILL on the sandboxed pool, 0 (permission only) otherwise.
        "kill_fork_server" | "kill_pool" => {
            let target = if name == "kill_pool" {
                pid
            } else {
                // SAFETY: getppid cannot fail.
                unsafe { libc::getppid() }
            };
            // SAFETY: kill takes integers.
            if unsafe { libc::kill(target, secret as i32) } == 0 {
                Ok(format!("signal {secret} sent to {target}"))
            } else {
                Err(errno().to_string())
            }
        }
        "proc_mem" => (|| {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(format!("/proc/{pid}/mem")).map_err(|e| e.to_string())?;
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, addr as u64)
                .map_err(|e| e.to_string())?;
            let got = i64::from_ne_bytes(b);
            if got == secret {
                Ok(format!("read the secret {got:#x}"))
            } else {
                Err(format!("read {got:#x}, not the secret"))
            }
        })(),
        "process_vm_readv" => {
            let mut b = [0u8; 8];
            let local = libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: 8,
            };
            let remote = libc::iovec {
                iov_base: addr as usize as *mut libc::c_void,
                iov_len: 8,
            };
            // SAFETY: reads 8 bytes of another process into our local 8-byte buffer.
            let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
            if n == 8 && i64::from_ne_bytes(b) == secret {
                Ok("read the secret".into())
            } else if n < 0 {
                Err(errno().to_string())
            } else {
                Err(format!("read {n} bytes, not the secret"))
            }
        }
        "ptrace_pool" | "ptrace_fork_server" => {
            let target = if name == "ptrace_pool" {
                pid
            } else {
                // SAFETY: getppid cannot fail.
                unsafe { libc::getppid() }
            };
            // SAFETY: PTRACE_SEIZE takes integers; it does not stop the target. Detached at once.
            let r = unsafe {
                libc::ptrace(
                    libc::PTRACE_SEIZE,
                    target,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
            if r == 0 {
                // SAFETY: detaching the process we just seized (interrupt, wait, detach).
                unsafe {
                    libc::ptrace(libc::PTRACE_INTERRUPT, target, 0, 0);
                    let mut st = 0;
                    libc::waitpid(target, &mut st, libc::__WALL);
                    libc::ptrace(libc::PTRACE_DETACH, target, 0, 0);
                }
                Ok(format!("seized {target}"))
            } else {
                Err(errno().to_string())
            }
        }
        "fork" | "fork_bomb" => {
            let tries = if name == "fork" { 1 } else { 64 };
            let mut made = 0;
            let mut err = String::new();
            for _ in 0..tries {
                // SAFETY: the child only calls _exit.
                match unsafe { libc::fork() } {
                    // SAFETY: in the child: ends it at once.
                    // SAFETY: in the child: ends it at once.
                    0 => unsafe { libc::_exit(0) },
                    -1 => {
                        err = errno().to_string();
                        break;
                    }
                    child => {
                        made += 1;
                        // SAFETY: reaping our own child.
                        unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
                    }
                }
            }
            if made > 0 {
                Ok(format!("{made} processes forked"))
            } else {
                Err(err)
            }
        }
        "exec" => {
            let sh = cstr("/bin/sh");
            let argv = [cstr("sh"), cstr("-c"), cstr("exit 7")];
            let argv: Vec<*const libc::c_char> = argv
                .iter()
                .map(|a| a.as_ptr())
                .chain([std::ptr::null()])
                .collect();
            let envp = [std::ptr::null::<libc::c_char>()];
            // SAFETY: the child only calls execve and _exit.
            match unsafe { libc::fork() } {
                // SAFETY: in the child: exec or end at once.
                0 => unsafe {
                    libc::execve(sh.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    libc::_exit(99)
                },
                -1 => {
                    // No fork: exec here (on success this worker becomes `sh` and dies, which
                    // fails the task: the test sees no DENIED).
                    // SAFETY: as above; returns only on failure.
                    unsafe { libc::execve(sh.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
                    Err(errno().to_string())
                }
                child => {
                    let mut st = 0;
                    // SAFETY: reaping our child.
                    unsafe { libc::waitpid(child, &mut st, 0) };
                    if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 7 {
                        Ok("ran /bin/sh".into())
                    } else {
                        Err(format!("the child ended with status {st:#x}"))
                    }
                }
            }
        }
        "allocate" => {
            // Past the limit (MEMORY_LIMIT), touching every page.
            let n = (secret as usize) * 2;
            let mut v: Vec<u8> = Vec::new();
            match v.try_reserve_exact(n) {
                Ok(()) => {
                    v.resize(n, 1);
                    Ok(format!("{} bytes allocated", v.len()))
                }
                Err(e) => Err(e.to_string()),
            }
        }
        "allocate_shared" => {
            // Shared anonymous memory, which RLIMIT_DATA does not count: only a memory cgroup
            // stops it.
            let n = (secret as usize) * 2;
            // SAFETY: a new anonymous shared mapping, touched page by page, then unmapped.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    n,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    Err(errno().to_string())
                } else {
                    for off in (0..n).step_by(4096) {
                        *(p as *mut u8).add(off) = 1;
                    }
                    libc::munmap(p, n);
                    Ok(format!("{n} bytes of shared memory touched"))
                }
            }
        }
        "fill_disk" => (|| {
            let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
            let chunk = vec![0u8; 64 << 10];
            let mut written = 0u64;
            while written <= secret as u64 {
                f.write_all(&chunk)
                    .map_err(|e| format!("after {written} bytes: {e}"))?;
                written += chunk.len() as u64;
            }
            Ok(format!("{written} bytes written"))
        })(),
        "environment" => {
            let environ = std::fs::read("/proc/self/environ").unwrap_or_default();
            let in_block = environ
                .windows(SECRET_ENV.len())
                .any(|w| w == SECRET_ENV.as_bytes());
            match std::env::var(SECRET_ENV) {
                Ok(v) => Ok(format!("{SECRET_ENV}={v}")),
                Err(_) if in_block => Ok("the secret is in /proc/self/environ".into()),
                Err(_) => Err(format!(
                    "{SECRET_ENV} not set; kept: {:?}",
                    std::env::var("FG_KEPT")
                )),
            }
        }
        "inherited_fd" => {
            let fd = secret as i32;
            // SAFETY: fcntl F_GETFD on a number only reads flags.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
                Ok(format!("fd {fd} is open"))
            } else {
                Err(errno().to_string())
            }
        }
        other => panic!("unknown attack {other}"),
    })
}

#[forkgraph::task]
fn square(x: i64) -> i64 {
    x * x
}

#[forkgraph::task]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

/// Large enough to travel as a shared segment.
#[forkgraph::task]
fn big(n: i64) -> Vec<f64> {
    vec![3.0; n as usize]
}

/// Tries to write into its shared input: through `mprotect`, `/proc/self/mem`,
/// `/proc/self/map_files`, and its fd mapped again writable; returns what it managed. (Published
/// segments are sealed by the kernel with or without a sandbox, see tests/attacks.rs, so this
/// attack has no "succeeds unsandboxed" half: the sandbox's part is that it never recycles.)
#[forkgraph::task]
fn scribble(input: &[f64]) -> String {
    let ptr = input.as_ptr() as usize;
    let page = ptr & !4095;
    let mut done = Vec::new();
    // SAFETY: mprotect on the page of our own mapping; only changes protections.
    if unsafe { libc::mprotect(page as *mut _, 4096, libc::PROT_READ | libc::PROT_WRITE) } == 0 {
        done.push("mprotect");
    }
    if let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")
    {
        use std::os::unix::fs::FileExt;
        if f.write_at(&9.0f64.to_ne_bytes(), ptr as u64).is_ok() {
            done.push("/proc/self/mem");
        }
    }
    let map_files = format!("/proc/self/map_files/{:x}-{:x}", page, page + 4096);
    if std::fs::OpenOptions::new()
        .write(true)
        .open(&map_files)
        .is_ok()
    {
        done.push("map_files");
    }
    // Its fd, mapped again writable and shared.
    for entry in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if !target.to_string_lossy().contains("forkgraph-segment") {
            continue;
        }
        let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap();
        // SAFETY: a new mapping of our own fd; unmapped at once if it succeeds.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            done.push("remapped writable");
            // SAFETY: the mapping just made.
            unsafe { libc::munmap(p, 4096) };
        }
    }
    format!("{done:?} first value {}", input[0])
}

/// The first value of a shared input, read after `scribble` tried to change it.
#[forkgraph::task]
fn first_after(input: &[f64], _after: String) -> f64 {
    input[0]
}

#[forkgraph::task]
fn fork_once(_x: i64) -> i64 {
    // SAFETY: the child only calls _exit.
    match unsafe { libc::fork() } {
        // SAFETY: in the child: ends it at once.
        0 => unsafe { libc::_exit(0) },
        -1 => -1,
        child => {
            // SAFETY: reaping our child.
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            child as i64
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers (the process that owns the pool)
// ---------------------------------------------------------------------------------------------

/// The sandbox of the attack runs: `dir/in` readable, `dir/scratch` writable.
fn sandbox(dir: &Path) -> Sandbox {
    Sandbox::strict()
        .read_only([dir.join("in")])
        .read_write([dir.join("scratch")])
        .allow_network(false)
        .max_processes(1)
        .memory_limit(MEMORY_LIMIT)
        .file_size_limit(FILE_LIMIT)
        .keep_env(["FG_KEPT"])
}

fn layout(dir: &Path) {
    for d in ["in", "scratch", "outside"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("in/data"), "input").unwrap();
    std::fs::write(dir.join("outside/secret"), "outside secret").unwrap();
}

/// Runs every attack on a pool (sandboxed or not) and prints `ATTACK name: verdict` lines.
fn run_attacks(dir: &Path, sandboxed: bool) -> Result<(), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().unwrap().port().to_string();
    // A heap secret of this process, different on every run.
    let secret = Box::new(0x005e_c2e7_0000_0000_i64 ^ (std::process::id() as i64) << 8 ^ 0x5a);
    let addr = &*secret as *const i64 as i64;
    // A leaked fd (not close-on-exec) that workers would inherit.
    // SAFETY: dup of stdin; the new fd has no FD_CLOEXEC and stays open for this helper's life.
    let leaked = unsafe { libc::dup(0) } as i64;
    let mut b = ProcessPool::builder().workers(1);
    if sandboxed {
        let report = sandbox(dir).report();
        println!("REPORT {report}");
        let cgroup = report
            .layers
            .iter()
            .any(|l| l.name == "memory" && l.status.to_string().contains("controller per worker"));
        println!("MEMORY CGROUP {}", if cgroup { "yes" } else { "no" });
        // Without a memory cgroup (not root) the memory layer is unavailable: run with
        // RLIMIT_DATA only, which `allocate` still meets.
        b = b.sandbox(if cgroup {
            sandbox(dir)
        } else {
            sandbox(dir).best_effort()
        });
    }
    let pool = b.build().map_err(|e| format!("build: {e}"))?;
    let me = std::process::id() as i64;
    let s = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let signal = if sandboxed { libc::SIGKILL as i64 } else { 0 };
    let attacks: Vec<(&str, i64, String)> = vec![
        ("read_passwd", 0, String::new()),
        ("read_file", 0, s("in/data")),
        ("read_outside", 0, s("outside/secret")),
        ("write_file", 0, s("scratch/out")),
        ("write_outside", 0, s("outside/new")),
        ("write_read_only", 0, s("in/new")),
        ("tcp_connect", 0, port),
        ("netlink_socket", 0, String::new()),
        ("kill_fork_server", signal, String::new()),
        ("kill_pool", signal, String::new()),
        ("proc_mem", *secret, String::new()),
        ("process_vm_readv", *secret, String::new()),
        ("ptrace_pool", 0, String::new()),
        ("ptrace_fork_server", 0, String::new()),
        ("fork", 0, String::new()),
        ("fork_bomb", 0, String::new()),
        ("exec", 0, String::new()),
        ("allocate", MEMORY_LIMIT as i64, String::new()),
        ("allocate_shared", MEMORY_LIMIT as i64, String::new()),
        ("fill_disk", FILE_LIMIT as i64, s("scratch/big")),
        ("environment", 0, String::new()),
        ("inherited_fd", leaked, String::new()),
    ];
    for (name, secret, path) in attacks {
        let g = graph! { "a" => (attack, name, me, addr, secret, path.as_str()) };
        let verdict = match pool.get(&g, "a") {
            Ok(Output::Value(Value::Str(s))) => s.to_string(),
            Ok(other) => format!("ERROR unexpected {other:?}"),
            Err(Error::Task(e)) if matches!(e.kind, TaskErrorKind::OutOfMemory { .. }) => {
                format!("DENIED out of memory: {e}")
            }
            Err(e) => format!("ERROR {e}"),
        };
        println!("ATTACK {name}: {}", verdict.replace('\n', " | "));
        let _ = std::io::stdout().flush();
    }
    // Shared inputs: the worker that receives one (a segment published earlier, held here)
    // cannot write it.
    let held = pool.get(&graph! { "big" => (big, 1i64 << 17) }, "big");
    let held = match held {
        Ok(Output::Value(v @ Value::Array(_))) => v,
        other => return Err(format!("big: {other:?}")),
    };
    let Value::Array(a) = &held else {
        unreachable!()
    };
    if !a.buffer().is_shared() {
        return Err("1 MiB did not travel as a shared segment".into());
    }
    let g = graph! {
        "scribble" => (scribble, held.clone()),
        "check" => (first_after, held.clone(), key("scribble")),
    };
    let r = pool.get(&g, vec!["scribble", "check"]);
    let parent_sees = a.buffer().as_bytes()[..8].to_vec();
    println!(
        "ATTACK shared_input: {r:?}; the parent reads {}",
        f64::from_ne_bytes(parent_sees.try_into().unwrap())
    );
    // The pool still computes a normal graph.
    let mut g = Graph::new();
    let mut keys = Vec::new();
    for i in 0..20i64 {
        let k = format!("sq-{i}");
        g.insert(
            k.as_str(),
            Task::new("square", vec![Arg::Value(Value::Int(i))]),
        );
        keys.push(Arg::Key(k.as_str().into()));
    }
    g.insert("total", Task::new("total", vec![Arg::List(keys)]));
    match pool.get(&g, "total") {
        Ok(Output::Value(Value::Int(n))) if n == (0..20).map(|i| i * i).sum::<i64>() => {
            println!("GRAPH OK {n}")
        }
        other => println!("GRAPH WRONG {other:?}"),
    }
    drop(pool);
    drop(listener);
    Ok(())
}

/// Runs helper test `name` with `dir`, in its own process group, killed after `secs`; returns
/// its stdout and stderr.
fn run_helper(name: &str, dir: &Path, secs: u64) -> (String, String) {
    let dir = dir.to_path_buf();
    let name = name.to_owned();
    let out = dir.join(format!("{name}.out"));
    let err = dir.join(format!("{name}.err"));
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env("FORKGRAPH_TEST_HELPER", &name)
        .env("FG_DIR", &dir)
        .env(SECRET_ENV, "hunter2")
        .env("FG_KEPT", "kept-value")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0);
    let mut child = c.spawn().unwrap();
    let pid = child.id() as i32;
    let ended = std::thread::spawn(move || child.wait());
    let done = watchdog_wait(pid, secs);
    if !done {
        // SAFETY: SIGKILL to the helper's own process group, which it still leads.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = ended.join();
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        done,
        "helper {name} still running after {secs} s:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// Waits up to `secs` for process `pid` to end (pidfd poll); whether it did.
fn watchdog_wait(pid: i32, secs: u64) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return true;
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; our fd, closed right after.
    let n = unsafe { libc::poll(&mut p, 1, (secs * 1000) as i32) };
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    n == 1
}

fn verdicts(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once("ATTACK ").map(|(_, r)| r))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn helper_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("FG_DIR").expect("FG_DIR"))
}

/// Rewrites the start of the worker's stdout through its fd (Landlock checks paths, not fds
/// already open): "ALLOWED ..." when it could.
#[forkgraph::task]
fn rewrite_stdout() -> String {
    // SAFETY: pwrite of a 9-byte buffer at offset 0 on fd 1; it only writes that file.
    let n = unsafe { libc::pwrite(1, b"HIJACKED\n".as_ptr().cast(), 9, 0) };
    verdict(if n == 9 {
        Ok("stdout rewritten".to_string())
    } else {
        Err(errno().to_string())
    })
}

/// Helper: with its stdout a regular file, runs `rewrite_stdout` on a pool sandboxed or not
/// (`FG_SANDBOXED`), and puts the verdict in `FG_VERDICT`.
#[test]
fn helper_rewrite_stdout() {
    if is_helper("helper_rewrite_stdout") {
        let sandboxed = std::env::var_os("FG_SANDBOXED").is_some();
        let pool = one_worker_pool(sandboxed.then(|| Sandbox::strict().best_effort()));
        let g = graph! { "w" => (rewrite_stdout) };
        let v = match pool.get(&g, "w") {
            Ok(o) => o.to::<String>().unwrap(),
            Err(e) => format!("ERROR {e}"),
        };
        std::fs::write(std::env::var_os("FG_VERDICT").unwrap(), v).unwrap();
    }
}

#[test]
fn a_task_cannot_rewrite_the_programs_stdout_file() {
    if in_helper() {
        return;
    }
    watchdog(120, || {
        let dir = scratch_dir("sandbox-stdout");
        for sandboxed in [false, true] {
            let out = dir.join(format!("stdout-{sandboxed}"));
            let verdict = dir.join(format!("verdict-{sandboxed}"));
            std::fs::write(&out, "ORIGINAL!\n").unwrap();
            // Not O_APPEND (a pwrite would then append): written from its end on.
            let mut file = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
            std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).unwrap();
            let mut c = common::helper("helper_rewrite_stdout");
            c.stdout(file).env("FG_VERDICT", &verdict);
            if sandboxed {
                c.env("FG_SANDBOXED", "1");
            }
            let status = c.status().unwrap();
            assert!(status.success(), "helper failed: {status}");
            let v = std::fs::read_to_string(&verdict).unwrap();
            let start = std::fs::read_to_string(&out).unwrap();
            if sandboxed {
                assert!(v.starts_with("DENIED"), "sandboxed: {v}");
                assert!(
                    start.starts_with("ORIGINAL!"),
                    "sandboxed: stdout is now {start:?}"
                );
            } else {
                // The control: the same attack works without the sandbox.
                assert!(v.starts_with("ALLOWED"), "unsandboxed: {v}");
                assert!(
                    start.starts_with("HIJACKED"),
                    "unsandboxed: stdout is {start:?}"
                );
            }
        }
    });
}

#[test]
fn helper_attacks_sandboxed() {
    if is_helper("helper_attacks_sandboxed") {
        let dir = helper_dir();
        run_attacks(&dir, true).unwrap();
    }
}

/// In a helper run by root: become `nobody` (uid and gid 65534, no groups), dumpable again as
/// an ordinary process is.
fn become_nobody() {
    // SAFETY: setgroups/setgid/setuid/prctl take integers (and a null list of 0 groups); glibc
    // applies the ids to every thread of the process.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setgid(65534), 0, "setgid");
        assert_eq!(libc::setuid(65534), 0, "setuid");
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
}

#[test]
fn helper_attacks_sandboxed_nobody() {
    if is_helper("helper_attacks_sandboxed_nobody") {
        become_nobody();
        let dir = helper_dir();
        run_attacks(&dir, true).unwrap();
    }
}

#[test]
fn helper_attacks_unsandboxed_nobody() {
    if is_helper("helper_attacks_unsandboxed_nobody") {
        become_nobody();
        let dir = helper_dir();
        run_attacks(&dir, false).unwrap();
    }
}

#[test]
fn helper_attacks_unsandboxed() {
    if is_helper("helper_attacks_unsandboxed") {
        let dir = helper_dir();
        run_attacks(&dir, false).unwrap();
    }
}

fn in_helper() -> bool {
    std::env::var_os("FORKGRAPH_TEST_HELPER").is_some()
}

/// Attacks that fail on the sandboxed pool because of the sandbox, and succeed without it.
const BLOCKED: &[&str] = &[
    "read_passwd",
    "read_outside",
    "write_outside",
    "write_read_only",
    "tcp_connect",
    "netlink_socket",
    "kill_fork_server",
    "kill_pool",
    "proc_mem",
    "process_vm_readv",
    "ptrace_pool",
    "ptrace_fork_server",
    "fork",
    "fork_bomb",
    "exec",
    "allocate",
    "allocate_shared",
    "fill_disk",
    "environment",
    "inherited_fd",
];

#[test]
fn every_attack_fails_in_the_sandbox_and_the_pool_survives() {
    if in_helper() {
        return;
    }
    attacks_fail("sandbox-attacks", "helper_attacks_sandboxed");
}

#[test]
fn every_attack_succeeds_without_the_sandbox() {
    if in_helper() {
        return;
    }
    attacks_succeed("sandbox-attacks-off", "helper_attacks_unsandboxed");
}

/// A pool of one worker, sandboxed by `sandbox` if given.
fn one_worker_pool(sandbox: Option<Sandbox>) -> ProcessPool {
    let mut b = ProcessPool::builder().workers(1);
    if let Some(s) = sandbox {
        b = b.sandbox(s);
    }
    b.build().unwrap()
}

/// Whether this test runs as root and so can run helpers as `nobody`.
fn root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The directories of `layout` open to `nobody` (so that the unsandboxed control can write).
fn open_to_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for d in ["", "in", "scratch", "outside"] {
        std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
}

/// The same attacks from a pool whose process runs as `nobody` (when this test runs as root;
/// as another uid the tests above already are unprivileged).
#[test]
fn every_attack_fails_in_the_sandbox_as_an_unprivileged_uid() {
    if in_helper() || !root() {
        return;
    }
    attacks_fail("sandbox-attacks-nobody", "helper_attacks_sandboxed_nobody");
}

#[test]
fn every_attack_succeeds_without_the_sandbox_as_an_unprivileged_uid() {
    if in_helper() || !root() {
        return;
    }
    attacks_succeed(
        "sandbox-attacks-off-nobody",
        "helper_attacks_unsandboxed_nobody",
    );
}

fn attacks_fail(dir: &str, helper: &str) {
    let dir = scratch_dir(dir);
    layout(&dir);
    open_to_all(&dir);
    let (stdout, stderr) = run_helper(helper, &dir, 120);
    let v = verdicts(&stdout);
    let mut wrong = Vec::new();
    // Without a memory cgroup the pool can create (not root, no delegation), shared memory a
    // task maps itself is not counted: the report says so, and so does this test.
    let memory_cgroup = stdout.contains("MEMORY CGROUP yes");
    for name in BLOCKED {
        if *name == "allocate_shared" && !memory_cgroup {
            continue;
        }
        match v.get(*name) {
            Some(s) if s.starts_with("DENIED") => {}
            other => wrong.push(format!("{name}: {other:?}")),
        }
    }
    // What the sandbox allows still works.
    for name in ["read_file", "write_file"] {
        if !v.get(name).is_some_and(|s| s.starts_with("ALLOWED")) {
            wrong.push(format!("{name} (allowed path): {:?}", v.get(name)));
        }
    }
    assert!(
        v.get("environment")
            .is_some_and(|s| s.contains("kept-value")),
        "keep_env: {:?}",
        v.get("environment")
    );
    assert!(
        v.get("shared_input")
            .is_some_and(|s| s.contains("[] first value 3")
                && s.contains("Float(3.0)")
                && s.ends_with("the parent reads 3")),
        "shared input written: {:?}",
        v.get("shared_input")
    );
    assert!(
        wrong.is_empty() && stdout.contains("GRAPH OK"),
        "sandbox broken:\n{}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        wrong.join("\n")
    );
    assert!(!dir.join("outside/new").exists() && !dir.join("in/new").exists());
}

fn attacks_succeed(dir: &str, helper: &str) {
    let dir = scratch_dir(dir);
    layout(&dir);
    open_to_all(&dir);
    let (stdout, stderr) = run_helper(helper, &dir, 120);
    let v = verdicts(&stdout);
    let wrong: Vec<String> = BLOCKED
        .iter()
        .filter(|n| !v.get(**n).is_some_and(|s| s.starts_with("ALLOWED")))
        .map(|n| format!("{n}: {:?}", v.get(*n)))
        .collect();
    assert!(
        wrong.is_empty() && stdout.contains("GRAPH OK"),
        "attacks that should work without a sandbox did not (the test proves nothing):\n{}\n\
         --- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        wrong.join("\n")
    );
}

#[test]
fn a_denied_call_kills_the_worker_with_sigsys_when_asked() {
    if in_helper() {
        return;
    }
    watchdog(60, || {
        let pool = ProcessPool::builder()
            .workers(1)
            .sandbox(Sandbox::strict().kill_on_denied(true))
            .build()
            .unwrap();
        let g = graph! { "f" => (fork_once, 1i64) };
        let e = pool.get(&g, "f").unwrap_err();
        let Error::Task(t) = &e else {
            panic!("expected a task error, got {e}")
        };
        assert!(
            matches!(
                t.kind,
                TaskErrorKind::WorkerDied {
                    signal: Some(31),
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("denied by the pool's sandbox"),
            "{e}"
        );
        // The replacement worker computes.
        let g = graph! { "s" => (square, 7i64) };
        assert_eq!(pool.get(&g, "s").unwrap().as_value(), Some(&Value::Int(49)));
    });
}

#[test]
fn the_report_names_every_layer() {
    let r = Sandbox::strict().report();
    let names: Vec<&str> = r.layers.iter().map(|l| l.name).collect();
    for n in [
        "no_new_privs",
        "landlock",
        "seccomp",
        "namespaces",
        "processes",
        "limits",
    ] {
        assert!(names.contains(&n), "{r}");
    }
    let off = Sandbox::strict().namespaces(false).report();
    assert!(off
        .layers
        .iter()
        .any(|l| l.name == "namespaces" && matches!(l.status, LayerStatus::Off(_))));
}

#[test]
fn bad_settings_fail_the_build_naming_what_is_wrong() {
    if in_helper() {
        return;
    }
    let e = ProcessPool::builder()
        .workers(1)
        .sandbox(Sandbox::strict().read_only(["/no/such/forkgraph/path"]))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("/no/such/forkgraph/path"), "{e}");
    let e = ProcessPool::builder()
        .workers(1)
        .sandbox(Sandbox::strict().allow_syscalls(["no_such_call"]))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("no_such_call"), "{e}");
    let e = ProcessPool::builder()
        .workers(1)
        .sandbox(Sandbox::strict().keep_env(["A=B"]))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("A=B"), "{e}");
}

/// Forks up to `n` children that stay alive (blocked on a pipe) until all are forked; returns
/// how many it could fork, after ending and reaping them.
#[forkgraph::task]
fn fork_holding(n: i64) -> i64 {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two fds into the local array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut kids = Vec::new();
    for _ in 0..n {
        // SAFETY: the child only calls read, close and _exit.
        match unsafe { libc::fork() } {
            0 => unsafe {
                // SAFETY: in the child: wait for end-of-file on the pipe, then end.
                libc::close(fds[1]);
                let mut b = 0u8;
                libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                libc::_exit(0)
            },
            -1 => break,
            child => kids.push(child),
        }
    }
    // SAFETY: closing our pipe ends lets the children see end-of-file; then reap them.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
        for &k in &kids {
            libc::waitpid(k, std::ptr::null_mut(), 0);
        }
    }
    kids.len() as i64
}

/// A process made by a raw `clone` with `CLONE_NEWNET`: "ALLOWED" when the kernel made it.
#[forkgraph::task]
fn clone_new_namespace() -> String {
    // SAFETY: a raw clone with no stack argument forks (the child runs on a copy of this stack)
    // and the child only calls _exit; the parent reaps it.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWNET | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(0) };
    }
    verdict(if pid > 0 {
        // SAFETY: reaps the child just made.
        unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
        Ok("a process in a new network namespace".to_string())
    } else {
        Err(errno().to_string())
    })
}

/// A sandboxed worker that may fork (`max_processes` > 1) still cannot make namespaces with
/// `clone`'s flags; as root without a sandbox it can (the control).
#[test]
fn clone_cannot_make_namespaces_in_the_sandbox() {
    if in_helper() {
        return;
    }
    watchdog(60, || {
        let run = |sandbox: Option<Sandbox>| {
            let pool = one_worker_pool(sandbox);
            let g = graph! { "c" => (clone_new_namespace) };
            pool.get(&g, "c").unwrap().to::<String>().unwrap()
        };
        let on = run(Some(Sandbox::strict().max_processes(4)));
        assert!(on.starts_with("DENIED"), "sandboxed: {on}");
        if root() {
            let off = run(None);
            assert!(off.starts_with("ALLOWED"), "unsandboxed: {off}");
        }
    });
}

/// `max_processes(3)`: the worker and at most two children alive at once (a pids cgroup as
/// root, `RLIMIT_NPROC` in the worker's user namespace otherwise); 10 without a sandbox.
fn max_processes_counts() -> (i64, i64) {
    let count = |sandbox: Option<Sandbox>| {
        let pool = one_worker_pool(sandbox);
        let g = graph! { "f" => (fork_holding, 10i64) };
        match pool.get(&g, "f").unwrap().as_value() {
            Some(Value::Int(n)) => *n,
            other => panic!("{other:?}"),
        }
    };
    (count(Some(Sandbox::strict().max_processes(3))), count(None))
}

#[test]
fn max_processes_caps_a_worker_and_its_children() {
    if in_helper() {
        return;
    }
    let (on, off) = watchdog(60, max_processes_counts);
    assert_eq!((on, off), (2, 10));
}

#[test]
fn helper_max_processes_nobody() {
    if is_helper("helper_max_processes_nobody") {
        become_nobody();
        let (on, off) = max_processes_counts();
        println!("\nCOUNTS {on} {off}");
    }
}

#[test]
fn max_processes_caps_a_worker_and_its_children_as_an_unprivileged_uid() {
    if in_helper() || !root() {
        return;
    }
    let dir = scratch_dir("sandbox-nproc-nobody");
    open_to_all_dir(&dir);
    let (stdout, stderr) = run_helper("helper_max_processes_nobody", &dir, 60);
    assert!(stdout.contains("COUNTS 2 10"), "{stdout}\n{stderr}");
}

fn open_to_all_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// Attaches to the pool's process with ptrace; an `Err` with the OS error when refused.
#[forkgraph::task]
fn trace(pid: i64) -> Result<i64, std::io::Error> {
    // SAFETY: PTRACE_SEIZE takes integers; it is refused here (the test expects so).
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid as i32,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if r == 0 {
        Ok(0)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn a_denied_call_fails_with_eperm_and_the_error_names_it() {
    if in_helper() {
        return;
    }
    watchdog(60, || {
        let pool = ProcessPool::builder()
            .workers(1)
            .sandbox(Sandbox::strict())
            .build()
            .unwrap();
        let g = graph! { "t" => (trace, std::process::id() as i64) };
        let e = pool.get(&g, "t").unwrap_err().to_string();
        println!("{e}");
        assert!(
            e.contains("Operation not permitted")
                && e.contains("sandbox denied system call `ptrace`"),
            "{e}"
        );
        // The next task is not blamed for it.
        let g = graph! { "s" => (square, 3i64) };
        assert_eq!(pool.get(&g, "s").unwrap().as_value(), Some(&Value::Int(9)));
    });
}

/// Sums 0..n on two threads of its own.
#[forkgraph::task]
fn threaded_sum(n: i64) -> i64 {
    let h = std::thread::spawn(move || (0..n / 2).sum::<i64>());
    let rest: i64 = (n / 2..n).sum();
    h.join().unwrap() + rest
}

#[test]
fn tasks_may_start_threads_in_the_sandbox() {
    if in_helper() {
        return;
    }
    watchdog(60, || {
        let pool = ProcessPool::builder()
            .workers(1)
            .sandbox(Sandbox::strict())
            .build()
            .unwrap();
        let g = graph! { "t" => (threaded_sum, 1000i64) };
        assert_eq!(
            pool.get(&g, "t").unwrap().as_value(),
            Some(&Value::Int(499_500))
        );
    });
}

/// This process's cgroup directory in the v1 memory hierarchy, if it may create cgroups there.
fn memory_cgroup_dir() -> Option<PathBuf> {
    let line = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = line.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    })?;
    let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
    (root() && dir.join("cgroup.procs").exists()).then_some(dir)
}

/// The `forkgraph-*` cgroups under `dir`, with the number of worker cgroups in each.
fn forkgraph_cgroups(dir: &Path) -> BTreeMap<String, usize> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("forkgraph-"))
        .map(|e| {
            let workers = std::fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter(|w| w.file_name().to_string_lossy().starts_with('w'))
                .count();
            (e.file_name().to_string_lossy().into_owned(), workers)
        })
        .collect()
}

fn dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointers.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 1 }
}

/// In a helper (it changes process-wide state): the pool's process is not dumpable while a
/// sandboxed pool lives and is again after; each worker has a memory cgroup of its own, which
/// goes with it, and nothing is left when the pool is dropped, even after its fork server was
/// killed.
#[test]
fn helper_cleanup() {
    if !is_helper("helper_cleanup") {
        return;
    }
    let sandboxed = || {
        ProcessPool::builder()
            .workers(2)
            .sandbox(Sandbox::strict().memory_limit(256 << 20))
            .build()
            .unwrap()
    };
    assert!(dumpable(), "dumpable at start");
    let cg = memory_cgroup_dir();
    let pool = sandboxed();
    assert!(!dumpable(), "not dumpable while a sandboxed pool lives");
    if let Some(dir) = &cg {
        let server = format!("forkgraph-{}", pool.fork_server_pid());
        assert_eq!(forkgraph_cgroups(dir).get(&server), Some(&2), "{server}");
        pool.restart_worker(0).unwrap();
        assert_eq!(
            forkgraph_cgroups(dir).get(&server),
            Some(&2),
            "after a restart"
        );
    }
    let first = format!("forkgraph-{}", pool.fork_server_pid());
    drop(pool);
    assert!(dumpable(), "dumpable again once the pool is gone");
    if let Some(dir) = &cg {
        // Only this helper's own servers: tests running meanwhile make theirs.
        let left = |names: &[&String]| {
            let now = forkgraph_cgroups(dir);
            names
                .iter()
                .filter(|n| now.contains_key(n.as_str()))
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert!(left(&[&first]).is_empty(), "{:?}", forkgraph_cgroups(dir));
        let pool = sandboxed();
        let server = pool.fork_server_pid();
        let killed = format!("forkgraph-{server}");
        // SAFETY: SIGKILL to the pool's own fork server.
        unsafe { libc::kill(server, libc::SIGKILL) };
        common::wait_gone(server, 30);
        // The pool notices and starts a new server; the old one's cgroups are removed.
        let g = graph! { "s" => (square, 5i64) };
        let _ = pool.get(&g, "s");
        assert_eq!(pool.get(&g, "s").unwrap().as_value(), Some(&Value::Int(25)));
        let second = format!("forkgraph-{}", pool.fork_server_pid());
        assert!(left(&[&killed]).is_empty(), "{:?}", forkgraph_cgroups(dir));
        drop(pool);
        assert!(left(&[&second]).is_empty(), "{:?}", forkgraph_cgroups(dir));
        println!("\nCGROUPS CHECKED");
    }
    println!("\nCLEANUP OK");
}

#[test]
fn a_sandboxed_pool_leaves_no_cgroup_and_restores_dumpable() {
    if in_helper() {
        return;
    }
    let dir = scratch_dir("sandbox-cleanup");
    let (stdout, stderr) = run_helper("helper_cleanup", &dir, 60);
    assert!(stdout.contains("CLEANUP OK"), "{stdout}\n{stderr}");
    if memory_cgroup_dir().is_some() {
        assert!(stdout.contains("CGROUPS CHECKED"), "{stdout}");
    }
}

/// The worker's network namespace and its interfaces.
#[forkgraph::task]
fn net_namespace(_x: i64) -> Vec<String> {
    let ns = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| e.to_string());
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    let mut out = vec![ns];
    out.extend(
        dev.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|i| i.trim().to_owned()),
    );
    out
}

#[test]
fn a_sandboxed_worker_has_a_network_namespace_with_only_loopback() {
    if in_helper() {
        return;
    }
    let mine = std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string();
    let seen = |sandbox: Option<Sandbox>| {
        watchdog(60, move || {
            let pool = one_worker_pool(sandbox);
            let g = graph! { "n" => (net_namespace, 1i64) };
            match pool.get(&g, "n").unwrap().as_value() {
                Some(Value::List(l)) => l
                    .iter()
                    .map(|v| match v {
                        Value::Str(s) => s.to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<String>>(),
                other => panic!("{other:?}"),
            }
        })
    };
    let off = seen(None);
    assert_eq!(off[0], mine, "without a sandbox: the program's namespace");
    let on = seen(Some(Sandbox::strict()));
    assert_ne!(on[0], mine, "{on:?}");
    assert_eq!(&on[1..], ["lo"], "{on:?}");
}

/// As `nobody` (no memory cgroup it may make): a sandbox with a memory limit fails the build
/// naming the `memory` layer, since RLIMIT_DATA alone does not count the shared memory a task
/// maps; `best_effort` builds (the report says the layer is unavailable); no limit builds.
#[test]
fn helper_memory_limit_without_cgroup_nobody() {
    if !is_helper("helper_memory_limit_without_cgroup_nobody") {
        return;
    }
    become_nobody();
    let build = |s: Sandbox| ProcessPool::builder().workers(1).sandbox(s).build();
    let e = build(Sandbox::strict().memory_limit(MEMORY_LIMIT)).unwrap_err();
    println!("\nERROR {e}");
    let report = Sandbox::strict()
        .memory_limit(MEMORY_LIMIT)
        .best_effort()
        .report();
    println!("\nREPORT {report}");
    let pool = build(Sandbox::strict().memory_limit(MEMORY_LIMIT).best_effort()).unwrap();
    let g = graph! { "s" => (square, 4i64) };
    assert_eq!(pool.get(&g, "s").unwrap().as_value(), Some(&Value::Int(16)));
    drop(pool);
    build(Sandbox::strict()).unwrap();
    println!("\nMEMORY CHECKED");
}

#[test]
fn a_memory_limit_without_a_memory_cgroup_fails_the_build_unless_best_effort() {
    if in_helper() || !root() {
        return;
    }
    let dir = scratch_dir("sandbox-memory-nobody");
    open_to_all_dir(&dir);
    let (stdout, stderr) = run_helper("helper_memory_limit_without_cgroup_nobody", &dir, 60);
    assert!(stdout.contains("MEMORY CHECKED"), "{stdout}\n{stderr}");
    let error = stdout
        .lines()
        .find(|l| l.starts_with("ERROR "))
        .unwrap_or_default();
    assert!(
        error.contains("sandbox layer `memory`")
            && error.contains("memfds")
            && error.contains("best_effort"),
        "{error}"
    );
    assert!(
        stdout.contains("memory: UNAVAILABLE (memory_limit("),
        "{stdout}"
    );
}

/// Connects to the Unix socket at `path` and to TCP port `port` on 127.0.0.1; says which worked.
#[forkgraph::task]
fn connect_both(path: String, port: i64) -> String {
    let unix = std::os::unix::net::UnixStream::connect(&path)
        .map(|_| "ALLOWED".to_owned())
        .unwrap_or_else(|e| format!("DENIED {e}"));
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port as u16))
        .map(|_| "ALLOWED".to_owned())
        .unwrap_or_else(|e| format!("DENIED {e}"));
    format!("unix {unix}; tcp {tcp}")
}

/// `allow_network(true)` opens the network (TCP), not the machine's local daemons: a task cannot
/// connect to a Unix socket outside its paths (a Docker or D-Bus socket would hand it the
/// machine). Landlock does not restrict connecting to a named Unix socket, so the sandbox
/// allows only Internet (and routing netlink) sockets.
#[test]
fn allowing_the_network_does_not_open_local_unix_sockets() {
    if in_helper() {
        return;
    }
    let dir = scratch_dir("sandbox-unix-socket");
    let path = dir.join("daemon.sock");
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = i64::from(tcp.local_addr().unwrap().port());
    let path = path.to_string_lossy().into_owned();
    let seen = |sandbox: Option<Sandbox>| {
        let path = path.clone();
        watchdog(60, move || {
            let pool = one_worker_pool(sandbox);
            let g = graph! { "c" => (connect_both, path.as_str(), port) };
            match pool.get(&g, "c").unwrap().as_value() {
                Some(Value::Str(s)) => s.to_string(),
                other => panic!("{other:?}"),
            }
        })
    };
    assert_eq!(seen(None), "unix ALLOWED; tcp ALLOWED");
    let on = seen(Some(Sandbox::strict().allow_network(true)));
    assert!(
        on.starts_with("unix DENIED") && on.ends_with("tcp ALLOWED"),
        "{on}"
    );
    // Named in `allow_syscalls`, a call is allowed whole (no argument rule narrows it).
    let all = seen(Some(
        Sandbox::strict()
            .allow_network(true)
            .allow_syscalls(["socket"]),
    ));
    assert_eq!(all, "unix ALLOWED; tcp ALLOWED");
    drop((unix, tcp));
}
