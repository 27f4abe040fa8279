//! The distributed scheduler on MPI (cargo feature `mpi`): [`MpiCluster`].
//!
//! One rank per node, launched by `mpirun` or `srun`. Rank 0 runs the user's program, plans
//! and drives the unchanged engine through [`exec::MpiExec`]; every rank, rank 0 included,
//! runs tasks in its own local [`ProcessPool`] ([`node::Node`]), keeps their results, and
//! sends a result to a peer only when a dependent placed there needs it. All MPI calls are in
//! [`comm`].

mod comm;
mod exec;
mod node;
mod proto;

use std::sync::Mutex;
use std::time::Duration;

use crate::engine::{self, Output};
use crate::error::{BuildError, Error};
use crate::graph::Graph;
use crate::key::Keys;
use crate::process::{ProcessPool, ProcessPoolBuilder};
use crate::scheduler::{plan, GetOptions, Scheduler};

use comm::World;
use node::{Event, Node};
use proto::Msg;

/// Sleeps between polls that found nothing: 1 us doubling to 200 us (an idle rank then costs
/// a few percent of a core instead of a whole one).
pub(crate) struct Backoff(u64);

impl Backoff {
    const MAX_US: u64 = 200;

    pub(crate) fn new() -> Backoff {
        Backoff(1)
    }

    pub(crate) fn reset(&mut self) {
        self.0 = 1;
    }

    /// The next pause.
    pub(crate) fn next(&mut self) -> Duration {
        let d = Duration::from_micros(self.0);
        self.0 = (self.0 * 2).min(Self::MAX_US);
        d
    }

    pub(crate) fn sleep(&mut self) {
        std::thread::sleep(self.next());
    }
}

/// Totals of one cluster's traffic, kept on rank 0.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) moved_bytes: u64,
    pub(crate) moves: u64,
    pub(crate) fetched_bytes: u64,
}

/// Builds an [`MpiCluster`]; every rank must call [`MpiClusterBuilder::init`] the same way.
#[derive(Debug, Clone)]
#[must_use]
pub struct MpiClusterBuilder {
    workers: Option<usize>,
    pool: ProcessPoolBuilder,
}

impl MpiClusterBuilder {
    /// Worker processes of each rank's local pool; `None` (the default): the CPUs in the
    /// rank's affinity mask (launch with `--bind-to none`, or mpirun binds each rank to one
    /// core).
    pub fn workers_per_rank(mut self, n: Option<usize>) -> MpiClusterBuilder {
        self.workers = n;
        self
    }

    /// Retries after a task's worker died, per rank (as [`ProcessPoolBuilder::retries`]).
    pub fn retries(mut self, n: u32) -> MpiClusterBuilder {
        self.pool = self.pool.retries(n);
        self
    }

    /// A time limit per task (as [`ProcessPoolBuilder::task_timeout`]).
    pub fn task_timeout(mut self, d: Duration) -> MpiClusterBuilder {
        self.pool = self.pool.task_timeout(d);
        self
    }

    /// Any other setting of each rank's local pool (its worker count is set by
    /// [`MpiClusterBuilder::workers_per_rank`]).
    pub fn pool(mut self, f: impl FnOnce(ProcessPoolBuilder) -> ProcessPoolBuilder) -> Self {
        self.pool = f(self.pool);
        self
    }

    /// Starts this rank's pool, then MPI, and checks that every rank runs the same build.
    /// On rank 0 it returns the cluster; every other rank serves here until rank 0's cluster
    /// is dropped and then exits the process (with status 0), so code after `init` runs on
    /// rank 0 only. Without a launcher (no mpirun or srun) this process is a 1-rank cluster.
    ///
    /// A panic on any rank after `init` ends the whole job (`MPI_Abort`) instead of hanging
    /// it.
    ///
    /// # Errors
    /// [`BuildError`] when the local pool cannot start, MPI cannot initialize (or was
    /// initialized before in this process), or a rank runs an executable with another function
    /// table or build (the message names the rank).
    pub fn init(self) -> Result<MpiCluster, BuildError> {
        let mut pool = self.pool;
        if let Some(n) = self.workers {
            pool = pool.workers(n);
        }
        let pool = pool.build()?;
        let workers = pool.worker_pids().len();
        if !comm::launched() {
            return Ok(MpiCluster {
                inner: Mutex::new(Inner::Local(pool)),
                ranks: 1,
            });
        }
        let world = comm::init().map_err(BuildError::new)?;
        install_panic_hook();
        let mine = [forkgraph_worker::Registry::global().digest(), build_id()];
        let all = world.allgather(mine).map_err(BuildError::new)?;
        let sizes = world
            .allgather([workers as u64, 0])
            .map_err(BuildError::new)?;
        let bad: Vec<usize> = (1..world.size).filter(|&r| all[r] != all[0]).collect();
        if !bad.is_empty() {
            // Every rank saw the same table: all finalize together (no message is in flight,
            // and none is needed: the ranks may not even share a protocol).
            drop(pool);
            world.finalize();
            if world.rank != 0 {
                std::process::exit(0);
            }
            let what = bad
                .iter()
                .map(|&r| {
                    let part = if all[r][0] != all[0][0] {
                        "function table"
                    } else {
                        "build id"
                    };
                    format!("rank {r} ({part})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(BuildError::new(format!(
                "MPI ranks run a different executable than rank 0: {what} differ; launch one \
                 build on every rank"
            )));
        }
        let mut node = Node::new(world, pool);
        if world.rank != 0 {
            let code = serve(&mut node);
            drop(node);
            if code == 0 {
                world.finalize();
                std::process::exit(0);
            }
            comm::abort(code);
        }
        let cluster = MpiCluster {
            ranks: world.size,
            inner: Mutex::new(Inner::Mpi(Box::new(Ranks {
                node,
                workers: sizes.iter().map(|s| s[0] as usize).collect(),
                counters: Counters::default(),
            }))),
        };
        Ok(cluster)
    }
}

/// A rank > 0: handle messages until rank 0 says stop; the exit status.
fn serve(node: &mut Node) -> i32 {
    let mut events = Vec::new();
    let mut idle = Backoff::new();
    loop {
        match node.poll(&mut events) {
            Ok(true) => idle.reset(),
            Ok(false) => {}
            Err(e) => {
                eprintln!("forkgraph: MPI rank {}: {e}", node.world.rank);
                return 1;
            }
        }
        if events.iter().any(|e| matches!(e, Event::Stop)) {
            // Let the last answers leave before finalizing.
            while node.sends_pending() {
                if node.poll(&mut events).is_err() {
                    return 1;
                }
                idle.sleep();
            }
            return 0;
        }
        events.clear();
        if let Err(e) = node.idle(idle.next()) {
            eprintln!("forkgraph: MPI rank {}: {e}", node.world.rank);
            return 1;
        }
    }
}

/// After init, a panic on any rank ends the job: unwinding to `MPI_Finalize` (rsmpi's drop,
/// or ours) would hang every rank.
fn install_panic_hook() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        prev(info);
        eprintln!("forkgraph: a panic on an MPI rank ends the job (MPI_Abort)");
        comm::abort(101);
    }));
}

/// The executable's GNU build id (hashed to 64 bits), or a hash of its bytes when it has none.
fn build_id() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match std::fs::read("/proc/self/exe") {
        Ok(bytes) => match gnu_build_id(&bytes) {
            Some(id) => id.hash(&mut h),
            None => bytes.hash(&mut h),
        },
        Err(_) => 0u8.hash(&mut h),
    }
    h.finish()
}

/// The descriptor of an ELF64 little-endian file's `NT_GNU_BUILD_ID` note.
fn gnu_build_id(elf: &[u8]) -> Option<&[u8]> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = u64_at(0x20)? as usize;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? != 4 {
            continue; // not PT_NOTE
        }
        let off = u64_at(ph + 8)? as usize;
        let size = u64_at(ph + 32)? as usize;
        let mut p = off;
        while p + 12 <= off + size {
            let namesz = u32_at(p)? as usize;
            let descsz = u32_at(p + 4)? as usize;
            let kind = u32_at(p + 8)?;
            let name = p + 12;
            let desc = name + namesz.div_ceil(4) * 4;
            if kind == 3 && elf.get(name..name + namesz)? == b"GNU\0" {
                return elf.get(desc..desc + descsz);
            }
            p = desc + descsz.div_ceil(4) * 4;
        }
    }
    None
}

struct Ranks {
    node: Node,
    workers: Vec<usize>,
    counters: Counters,
}

enum Inner {
    /// No launcher: the local pool is the whole cluster.
    Local(ProcessPool),
    Mpi(Box<Ranks>),
}

/// Runs graphs across the ranks of an MPI job: rank 0 plans and drives the engine, every
/// rank runs tasks in its own process pool, and results stay on the rank that produced them
/// until a dependent elsewhere or the caller needs them.
///
/// Build it with [`MpiCluster::builder`] at the start of `main`; keep it until `main` ends
/// (dropping it stops the other ranks and finalizes MPI).
///
/// ```no_run
/// use forkgraph::{MpiCluster, Scheduler};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = MpiCluster::builder().workers_per_rank(None).retries(1).init()?;
/// let g = forkgraph::Graph::new();
/// # let _ = g;
/// println!("{} ranks", cluster.ranks());
/// # Ok(()) }
/// ```
pub struct MpiCluster {
    inner: Mutex<Inner>,
    ranks: usize,
}

impl std::fmt::Debug for MpiCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCluster")
            .field("ranks", &self.ranks)
            .finish()
    }
}

/// What an [`MpiCluster`] moved and holds (see [`MpiCluster::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiStats {
    /// Bytes of results moved between ranks to reach a dependent placed elsewhere (estimated
    /// from the values: array and string bytes), since the cluster started.
    pub moved_bytes: u64,
    /// How many results moved so.
    pub moves: u64,
    /// Bytes of requested results fetched to rank 0 from other ranks.
    pub fetched_bytes: u64,
    /// Messages rank 0 sent to other ranks.
    pub messages: u64,
    /// Results each rank holds now (by rank).
    pub held: Vec<u64>,
    /// Shared segments each rank's process maps now (by rank).
    pub segments: Vec<u64>,
    /// Bytes of inputs each rank has fetched from other ranks since the cluster started (by
    /// rank; a rank fetches a result once however many of its tasks read it).
    pub received: Vec<u64>,
}

impl MpiCluster {
    /// A builder.
    pub fn builder() -> MpiClusterBuilder {
        MpiClusterBuilder {
            workers: None,
            pool: ProcessPool::builder(),
        }
    }

    /// How many ranks the job has (1 without a launcher).
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// Traffic so far and what every rank holds now (asks every rank).
    ///
    /// # Errors
    /// When MPI fails.
    pub fn stats(&self) -> Result<MpiStats, Error> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let r = match &mut *inner {
            Inner::Local(_) => {
                return Ok(MpiStats {
                    moved_bytes: 0,
                    moves: 0,
                    fetched_bytes: 0,
                    messages: 0,
                    held: vec![0],
                    segments: vec![crate::segment_stats().count],
                    received: vec![0],
                })
            }
            Inner::Mpi(r) => r,
        };
        let n = r.workers.len();
        let mut held = vec![0u64; n];
        let mut segments = vec![0u64; n];
        let mut received = vec![0u64; n];
        let mut events = Vec::new();
        // Handle what rank 0 sent itself (frees of its own results) first.
        r.node.poll(&mut events).map_err(Error::Scheduler)?;
        held[0] = r.node.held() as u64;
        segments[0] = crate::segment_stats().count;
        received[0] = r.node.received;
        for rank in 1..n {
            r.node.send(rank, Msg::Count).map_err(Error::Scheduler)?;
        }
        let mut left = n - 1;
        let mut idle = Backoff::new();
        while left > 0 {
            if r.node.poll(&mut events).map_err(Error::Scheduler)? {
                idle.reset();
            }
            for e in events.drain(..) {
                if let Event::Counts {
                    rank,
                    held: h,
                    segments: s,
                    received: b,
                } = e
                {
                    held[rank] = h;
                    segments[rank] = s;
                    received[rank] = b;
                    left -= 1;
                }
            }
            if left > 0 {
                idle.sleep();
            }
        }
        Ok(MpiStats {
            moved_bytes: r.counters.moved_bytes,
            moves: r.counters.moves,
            fetched_bytes: r.counters.fetched_bytes,
            messages: r.node.messages,
            held,
            segments,
            received,
        })
    }
}

impl Scheduler for MpiCluster {
    fn get_with(&self, graph: &Graph, keys: &Keys, opts: &GetOptions) -> Result<Output, Error> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let r = match &mut *inner {
            Inner::Local(pool) => return pool.get_with(graph, keys, opts),
            Inner::Mpi(r) => r,
        };
        let plan = plan(graph, keys, opts)?;
        let Ranks {
            node,
            workers,
            counters,
        } = &mut **r;
        let mut exec = exec::MpiExec::new(node, &plan, workers.clone(), counters);
        let out = engine::run(&plan, &mut exec, &opts.callbacks, opts.keep_going);
        if let Err(e) = exec.finish() {
            // The ranks no longer agree on what they hold: the job cannot go on.
            eprintln!("forkgraph: MPI: {e}");
            comm::abort(1);
        }
        if let Err(Error::Scheduler(e)) = &out {
            eprintln!("forkgraph: MPI: {e}");
            comm::abort(1);
        }
        out
    }
}

impl Drop for MpiCluster {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let Inner::Mpi(r) = inner else {
            return;
        };
        if std::thread::panicking() {
            return; // The panic hook aborts the job.
        }
        let n = r.workers.len();
        let mut ok = true;
        for rank in 1..n {
            ok &= r.node.send(rank, Msg::Stop).is_ok();
        }
        let mut events = Vec::new();
        let mut idle = Backoff::new();
        while ok && r.node.sends_pending() {
            ok = r.node.poll(&mut events).is_ok();
            idle.sleep();
        }
        r.node.shut_down();
        if !ok {
            comm::abort(1);
        }
        World { rank: 0, size: n }.finalize();
    }
}
