//! The fork server: a small single-threaded process that forks workers on request.
//!
//! A pool starts it by re-executing its own executable (`sys::spawn_fork_server`); the
//! start-up hook below runs before `main` and, seeing `FORKGRAPH_FORK_SERVER`, serves
//! forks instead of returning into `main`. Because it was exec'd, it has one thread, a small
//! heap and every registered function (they are in the executable's link-time table), so its
//! children can run arbitrary Rust code safely even when the pool's own process is
//! multithreaded, and a fork costs ~0.1 ms whatever the size of the parent's heap.
//!
//! Workers are the server's children. When the parent goes away (its control socket reaches
//! end-of-file, or the kernel's parent-death signal) the server kills every worker and exits;
//! workers also die with the server (PR_SET_PDEATHSIG). The server and each worker are child
//! subreapers: whatever a task forks and abandons is reparented to its worker, and when the
//! worker is reaped, to the server, which kills and reaps it. Each worker has its own process
//! group, so a task signalling its group reaches neither the program nor other workers.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::frame::{self, Inbox};
use crate::proto::{FromServer, Limits, ToServer};
use crate::sys::{self, Forked, SharedPage, Stream};

static HOOK_RAN: AtomicBool = AtomicBool::new(false);

/// Whether the start-up hook ran in this process: a pool needs it to start workers. It can only
/// fail to run if the linker dropped it, which [`hook_ran`]'s use of the same object prevents.
pub fn hook_ran() -> bool {
    HOOK_RAN.load(Ordering::SeqCst)
}

#[ctor::ctor(unsafe)]
fn forkgraph_startup_hook() {
    HOOK_RAN.store(true, Ordering::SeqCst);
    let Some(var) = std::env::var_os(sys::FORK_SERVER_ENV) else {
        return;
    };
    // Single-threaded and before main: nothing else reads the environment now.
    std::env::remove_var(sys::FORK_SERVER_ENV);
    match sys::fork_server_var(&var) {
        sys::ForkServerVar::Foreign => (),
        // Started as a fork server by a program that died meanwhile: running `main` here
        // would run the user's program a second time, as an orphan.
        sys::ForkServerVar::Orphaned => sys::exit_now(1),
        sys::ForkServerVar::Serve => {
            // SAFETY: fork_server_var checked that our parent started us with its control
            // socket at FORK_SERVER_FD; nothing in this fresh process owns that fd yet.
            let control = unsafe { sys::take_fork_server_fd() };
            sys::exit_now(serve(&control));
        }
    }
}

fn serve(control: &Stream) -> i32 {
    sys::set_process_name(c"forkgraph-srv", sys::FORK_SERVER_NAME);
    sys::ignore_sigint();
    sys::reset_inherited_signals();
    sys::become_subreaper();
    sys::raise_fd_limit();
    let me = sys::getpid();
    let mut inbox = Inbox::new();
    let mut live: BTreeSet<i32> = BTreeSet::new();
    // The sandbox of the last sandboxed spawn, compiled and tried once.
    let mut prepared: Option<sys::sandbox::Prepared> = None;
    // Sandboxed workers' cgroups, and a write end of their stderr to report an OOM kill on.
    let mut groups: HashMap<i32, WorkerGroups> = HashMap::new();
    loop {
        match frame::recv::<ToServer>(control, &mut inbox) {
            Ok(Some((
                ToServer::Spawn {
                    limits,
                    init,
                    sandbox,
                },
                _,
            ))) => {
                let ready = match sandbox {
                    Some(s) => {
                        prepare(&mut prepared, &s, limits.memory_bytes, me, control).map(Some)
                    }
                    None => Ok(None),
                };
                let reply =
                    ready.and_then(|p| spawn_worker(me, control, limits, init.as_deref(), p));
                let sent = match reply {
                    Ok((pid, fds, cgroups)) => {
                        live.insert(pid);
                        if let Some(g) = cgroups {
                            groups.insert(pid, g);
                        }
                        frame::send(
                            control,
                            &FromServer::Spawned { pid },
                            &[&fds.0, &fds.1, &fds.2, &fds.3],
                        )
                    }
                    Err(e) => frame::send(control, &FromServer::Failed(e.to_string()), &[]),
                };
                if sent.is_err() {
                    break;
                }
            }
            Ok(Some((ToServer::Reap { pid }, _))) => {
                let reply = if live.remove(&pid) {
                    sys::kill_hard(pid);
                    let exit = sys::wait_child(pid);
                    // What its tasks forked was reparented here when it died: end it too.
                    sys::kill_strays(|p| live.contains(&p));
                    if let Some(g) = groups.remove(&pid) {
                        g.close();
                    }
                    match exit {
                        Ok(exit) => FromServer::Reaped { pid, exit },
                        Err(e) => FromServer::Failed(format!("waitpid {pid}: {e}")),
                    }
                } else {
                    FromServer::Failed(format!("{pid} is not a worker of this server"))
                };
                if frame::send(control, &reply, &[]).is_err() {
                    break;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    // The parent is gone (or talks nonsense): no worker may outlive it.
    for &pid in &live {
        sys::kill_hard(pid);
    }
    for &pid in &live {
        let _ = sys::wait_child(pid);
    }
    sys::kill_strays(|_| false);
    for (_, g) in groups.drain() {
        g.close();
    }
    sys::cgroup::remove_server_cgroups(me, std::time::Duration::from_secs(1));
    0
}

/// A sandboxed worker's cgroups, its memory limit, and a write end of its stderr pipe.
struct WorkerGroups {
    cgroups: sys::cgroup::WorkerCgroups,
    memory: Option<u64>,
    stderr: std::os::fd::OwnedFd,
}

impl WorkerGroups {
    /// Once the worker and what it forked are reaped: says on its stderr (which the parent
    /// drains after the reap) when the kernel killed it for its memory cgroup, in the words the
    /// parent recognises as an out-of-memory death, and removes the cgroups.
    fn close(self) {
        if self.cgroups.oom_killed() {
            let limit = self.memory.unwrap_or(0);
            let line = format!(
                "\nforkgraph: memory allocation of more than the limit failed: the worker's \
                 memory cgroup (memory limit {limit} bytes + {} MiB for code and caches) was \
                 full and the kernel killed it (OOM kill)\n",
                sys::cgroup::CGROUP_MEMORY_SLACK >> 20
            );
            let _ =
                std::io::Write::write_all(&mut std::fs::File::from(self.stderr), line.as_bytes());
        }
        self.cgroups.remove();
    }
}

/// A new worker's socket, the read end of its stderr pipe, its progress page and its pidfd.
type WorkerFds = (
    std::os::fd::OwnedFd,
    std::os::fd::OwnedFd,
    std::os::fd::OwnedFd,
    std::os::fd::OwnedFd,
);

/// Compiles `sandbox` (unless it is the one already prepared) and tries it once in a child that
/// exits at once, so that a layer the kernel refuses is an error of this request, not a worker
/// that dies before it greets the parent. While a sandboxed pool uses this server, the server
/// is not dumpable and cannot gain privileges.
fn prepare<'p>(
    prepared: &'p mut Option<sys::sandbox::Prepared>,
    sandbox: &crate::sandbox::Sandbox,
    memory: Option<u64>,
    me: i32,
    control: &Stream,
) -> std::io::Result<&'p sys::sandbox::Prepared> {
    if prepared
        .as_ref()
        .is_some_and(|p| p.sandbox == *sandbox && p.memory == memory)
    {
        return Ok(prepared.as_ref().expect("checked"));
    }
    let p =
        sys::sandbox::Prepared::new(sandbox.clone(), memory, me).map_err(std::io::Error::other)?;
    sys::set_dumpable(false);
    sys::sandbox::no_new_privs()?;
    let (err_r, err_w) = sys::pipe()?;
    // SAFETY: the fork server is single-threaded; the child ends in exit_now.
    match unsafe { sys::fork() }? {
        Forked::Child => {
            // SAFETY: this child ends in exit_now and never touches `control` again.
            unsafe { sys::close_in_child(control.as_fd()) };
            sys::die_with_parent(me);
            // The pipe is the one fd the sandbox keeps: it carries the reason of a failure.
            let code = match sys::sandbox::enter(&p, err_w.as_fd()) {
                Ok(()) => 0,
                Err(e) => {
                    let _ =
                        std::io::Write::write_all(&mut std::fs::File::from(err_w), e.as_bytes());
                    1
                }
            };
            sys::exit_now(code)
        }
        Forked::Parent(pid) => {
            drop(err_w);
            let mut why = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::fs::File::from(err_r), &mut why);
            let exit = sys::wait_child(pid)?;
            if exit != sys::Exit::Code(0) {
                let why = String::from_utf8_lossy(&why);
                return Err(std::io::Error::other(format!(
                    "the sandbox cannot be entered: {} ({exit:?})",
                    if why.is_empty() {
                        "no reason given"
                    } else {
                        &why
                    }
                )));
            }
        }
    }
    Ok(prepared.insert(p))
}

fn spawn_worker(
    me: i32,
    control: &Stream,
    limits: Limits,
    init: Option<&crate::exec::TaskSpec>,
    sandbox: Option<&sys::sandbox::Prepared>,
) -> std::io::Result<(i32, WorkerFds, Option<WorkerGroups>)> {
    let (parent_end, child_end) = Stream::pair()?;
    let (err_r, err_w) = sys::pipe()?;
    let (page, page_fd) = SharedPage::create()?;
    // SAFETY: the fork server is single-threaded (see the module doc); the child never returns
    // from this function (it ends in exit_now).
    match unsafe { sys::fork() }? {
        Forked::Child => {
            // SAFETY: this child ends in exit_now and never touches `control` again.
            unsafe { sys::close_in_child(control.as_fd()) };
            drop(parent_end);
            drop(err_r);
            drop(page_fd);
            // The program's stdout may be a file that a task could truncate or rewrite through
            // the fd (Landlock checks paths, not open fds): a sandboxed worker's stdout joins
            // its stderr pipe, which the parent reads and forwards.
            sys::redirect_output(err_w.as_fd(), sandbox.is_some());
            drop(err_w);
            sys::die_with_parent(me);
            sys::confine_worker();
            sys::set_process_name(c"forkgraph-work", sys::WORKER_NAME);
            sys::default_crash_signals();
            sys::no_core_dumps();
            if let Some(bytes) = limits.memory_bytes {
                let _ = sys::limit_memory(bytes);
            }
            let mut limits = limits;
            if let Some(p) = sandbox {
                if let Err(e) = sys::sandbox::enter(p, child_end.as_fd()) {
                    eprintln!("forkgraph worker: cannot enter the sandbox: {e}");
                    sys::exit_now(4);
                }
                limits.sandboxed = true;
            }
            // A panic in the serve loop must not unwind into the server's own loop, which
            // this child would then run as a second fork server.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::serve::serve(&child_end, &page, limits, init)
            }))
            .unwrap_or(101);
            sys::exit_now(code)
        }
        Forked::Parent(pid) => {
            // Our unreaped child: the pid cannot have been reused yet.
            let pidfd = match sys::pidfd_open(pid) {
                Ok(fd) => fd,
                Err(e) => {
                    sys::kill_hard(pid);
                    let _ = sys::wait_child(pid);
                    return Err(e);
                }
            };
            let groups = match sandbox.and_then(|p| p.cgroups.as_ref().map(|c| (p, c))) {
                None => None,
                Some((p, c)) => {
                    let placed = c
                        .place(
                            pid,
                            p.memory.unwrap_or(u64::MAX >> 1),
                            p.sandbox.processes(),
                        )
                        .and_then(|cgroups| {
                            Ok(WorkerGroups {
                                cgroups,
                                memory: p.memory,
                                stderr: err_w.try_clone()?,
                            })
                        });
                    match placed {
                        Ok(g) => Some(g),
                        Err(e) => {
                            sys::kill_hard(pid);
                            let _ = sys::wait_child(pid);
                            sys::cgroup::WorkerCgroups::remove_for(c, pid);
                            return Err(e);
                        }
                    }
                }
            };
            Ok((pid, (parent_end.into_fd(), err_r, page_fd, pidfd), groups))
        }
    }
}
