//! Every MPI call of the crate, behind a small safe interface: start-up, rank and size, one
//! collective for the handshake, nonblocking sends of owned buffers, matched probes
//! (`MPI_Improbe` + `MPI_Mrecv`), and abort. Nothing here blocks inside a loop: the callers
//! poll and back off.
//!
//! `MPI_Finalize` runs only on a clean exit ([`World::finalize`]); an error path calls
//! [`abort`] (under OpenMPI 4.x, finalizing after a failure hangs the job).

use std::os::raw::{c_int, c_void};
use std::ptr;

use ::mpi::ffi;

/// Largest message part: MPI counts are C ints, and one message stays well below that.
pub(crate) const MAX_CHUNK: usize = 1 << 30;

/// [`MAX_CHUNK`], or a smaller part size from `FORKGRAPH_MPI_MAX_CHUNK` (bytes; for tests of
/// multi-part messages without gigabytes of memory). Every rank must see the same value.
fn max_chunk() -> usize {
    static CHUNK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CHUNK.get_or_init(|| {
        std::env::var("FORKGRAPH_MPI_MAX_CHUNK")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .map_or(MAX_CHUNK, |n: usize| n.min(MAX_CHUNK))
    })
}

/// This process's place in `MPI_COMM_WORLD`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct World {
    pub(crate) rank: usize,
    pub(crate) size: usize,
}

/// Whether an MPI launcher started this process: mpirun, or srun with an MPI plugin
/// (`--mpi=pmix` or `pmi2`). Slurm's own variables do not count: a batch script or `srun
/// --mpi=none` runs a program that is not an MPI rank.
pub(crate) fn launched() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

fn check(what: &str, rc: c_int) -> Result<(), String> {
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("{what} failed with MPI error code {rc}"))
    }
}

/// Initializes MPI (once per process; the calling thread is the only one that calls MPI).
///
/// # Errors
/// When MPI is already initialized or `MPI_Init_thread` fails.
pub(crate) fn init() -> Result<World, String> {
    let mut flag: c_int = 0;
    // SAFETY: MPI_Initialized may be called at any time; `flag` is a valid out pointer.
    check("MPI_Initialized", unsafe {
        ffi::MPI_Initialized(&mut flag)
    })?;
    if flag != 0 {
        return Err("MPI is already initialized in this process (init runs once)".into());
    }
    let mut provided: c_int = 0;
    // SAFETY: null argc/argv are allowed by MPI-2 and later; `provided` is a valid out
    // pointer; RSMPI_THREAD_FUNNELED is a constant initialized by the shim library.
    check("MPI_Init_thread", unsafe {
        ffi::MPI_Init_thread(
            ptr::null_mut(),
            ptr::null_mut(),
            ffi::RSMPI_THREAD_FUNNELED,
            &mut provided,
        )
    })?;
    let (mut rank, mut size) = (0, 0);
    // SAFETY: MPI is initialized; the out pointers are valid.
    check("MPI_Comm_rank", unsafe {
        ffi::MPI_Comm_rank(ffi::RSMPI_COMM_WORLD, &mut rank)
    })?;
    // SAFETY: as above.
    check("MPI_Comm_size", unsafe {
        ffi::MPI_Comm_size(ffi::RSMPI_COMM_WORLD, &mut size)
    })?;
    Ok(World {
        rank: rank as usize,
        size: size as usize,
    })
}

impl World {
    /// Every rank's `mine`, by rank (a blocking collective: start-up only).
    ///
    /// # Errors
    /// When `MPI_Allgather` fails.
    pub(crate) fn allgather(&self, mine: [u64; 2]) -> Result<Vec<[u64; 2]>, String> {
        let mut all = vec![[0u64; 2]; self.size];
        // SAFETY: `mine` holds 16 bytes and `all` 16 bytes per rank, matching the counts;
        // every rank calls this collective at the same point of start-up.
        check("MPI_Allgather", unsafe {
            ffi::MPI_Allgather(
                mine.as_ptr().cast::<c_void>(),
                16,
                ffi::RSMPI_UINT8_T,
                all.as_mut_ptr().cast::<c_void>(),
                16,
                ffi::RSMPI_UINT8_T,
                ffi::RSMPI_COMM_WORLD,
            )
        })?;
        Ok(all)
    }

    /// Finalizes MPI: only after a clean shutdown, when no message is in flight.
    pub(crate) fn finalize(self) {
        // SAFETY: MPI is initialized and this is the last MPI call of the process.
        unsafe {
            ffi::MPI_Finalize();
        }
    }
}

/// Memory being sent: a message, or an array's buffer (sent from where it lies: the mapped
/// segment or heap allocation, without a copy).
pub(crate) enum Owned {
    Bytes(Vec<u8>),
    Array(forkgraph_worker::Buffer),
}

impl Owned {
    fn bytes(&self) -> &[u8] {
        match self {
            Owned::Bytes(b) => b,
            Owned::Array(b) => b.as_bytes(),
        }
    }
}

/// A message being sent: its memory stays alive (and unmoved: a vector's heap block or a
/// shared buffer) until the send completes.
pub(crate) struct Sending {
    buf: Owned,
    requests: Vec<ffi::MPI_Request>,
}

impl Sending {
    /// Starts sending `buf` to `dest` in parts of at most [`MAX_CHUNK`] bytes: the first part
    /// with `tag`, later ones with `rest` (a receiver asks for them in order, [`recv_parts`]).
    ///
    /// # Errors
    /// When `MPI_Isend` fails.
    pub(crate) fn start(buf: Owned, dest: usize, tag: i32, rest: i32) -> Result<Sending, String> {
        let mut s = Sending {
            buf,
            requests: Vec::new(),
        };
        let mut off = 0;
        let mut first = true;
        let len = s.buf.bytes().len();
        loop {
            let n = (len - off).min(max_chunk());
            // SAFETY: RSMPI_REQUEST_NULL is a constant of the shim library.
            let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
            // SAFETY: the pointer and count describe `n` bytes inside `buf`, which is owned
            // by `s` and neither moved nor freed until every request completed (`test`, or
            // leaked on drop if not); `req` is a valid out pointer.
            check("MPI_Isend", unsafe {
                ffi::MPI_Isend(
                    s.buf.bytes().as_ptr().add(off).cast::<c_void>(),
                    n as c_int,
                    ffi::RSMPI_UINT8_T,
                    dest as c_int,
                    if first { tag } else { rest },
                    ffi::RSMPI_COMM_WORLD,
                    &mut req,
                )
            })?;
            s.requests.push(req);
            off += n;
            first = false;
            if off >= len {
                break;
            }
        }
        Ok(s)
    }

    /// Whether every part has been sent (the buffer may then be dropped).
    ///
    /// # Errors
    /// When `MPI_Test` fails.
    pub(crate) fn test(&mut self) -> Result<bool, String> {
        while let Some(req) = self.requests.last_mut() {
            let mut flag: c_int = 0;
            // SAFETY: `req` is an active request from MPI_Isend (set to REQUEST_NULL by MPI
            // when it completes, then popped); status is ignored.
            check("MPI_Test", unsafe {
                ffi::MPI_Test(req, &mut flag, ffi::RSMPI_STATUS_IGNORE)
            })?;
            if flag == 0 {
                return Ok(false);
            }
            self.requests.pop();
        }
        Ok(true)
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if !self.requests.is_empty() {
            // MPI may still read the buffer: leak it rather than free memory in use (only on
            // an error path, just before the process aborts).
            let b = std::mem::replace(&mut self.buf, Owned::Bytes(Vec::new()));
            std::mem::forget(b);
        }
    }
}

/// Receives the next message with `tag` if one is waiting (`MPI_Improbe` + `MPI_Mrecv`):
/// its source and bytes; a message longer than [`MAX_CHUNK`] arrives in parts, the later ones
/// with `tag + 1`, whose total length `len` the caller knows from the first part.
///
/// # Errors
/// When an MPI call fails.
pub(crate) fn try_recv(tag: i32) -> Result<Option<(usize, Vec<u8>)>, String> {
    let Some((source, msg, count)) = probe(None, tag)? else {
        return Ok(None);
    };
    let mut buf = vec![0u8; count];
    recv_into(msg, &mut buf)?;
    Ok(Some((source, buf)))
}

/// Receives exactly `buf.len()` more bytes from `source` sent as the later parts of a long
/// message (tag `tag`), polling without blocking inside MPI.
///
/// # Errors
/// When an MPI call fails or a part has the wrong length.
pub(crate) fn recv_parts(source: usize, tag: i32, buf: &mut [u8]) -> Result<(), String> {
    let mut off = 0;
    let mut idle = super::Backoff::new();
    while off < buf.len() {
        match probe(Some(source), tag)? {
            Some((_, msg, count)) => {
                if off + count > buf.len() {
                    return Err(format!(
                        "a message part from rank {source} is longer than announced"
                    ));
                }
                recv_into(msg, &mut buf[off..off + count])?;
                off += count;
                idle.reset();
            }
            None => idle.sleep(),
        }
    }
    Ok(())
}

fn probe(
    source: Option<usize>,
    tag: i32,
) -> Result<Option<(usize, ffi::MPI_Message, usize)>, String> {
    let mut flag: c_int = 0;
    // SAFETY: RSMPI_MESSAGE_NULL and the other RSMPI_ values are constants of the shim.
    let mut msg = unsafe { ffi::RSMPI_MESSAGE_NULL };
    // SAFETY: MPI_Status is plain data; zeroed is a valid value.
    let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
    // SAFETY: the out pointers are valid; the source is a rank or MPI_ANY_SOURCE.
    check("MPI_Improbe", unsafe {
        ffi::MPI_Improbe(
            source.map_or(ffi::RSMPI_ANY_SOURCE, |s| s as c_int),
            tag,
            ffi::RSMPI_COMM_WORLD,
            &mut flag,
            &mut msg,
            &mut status,
        )
    })?;
    if flag == 0 {
        return Ok(None);
    }
    let mut count: c_int = 0;
    // SAFETY: `status` was filled by a successful matched probe.
    check("MPI_Get_count", unsafe {
        ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut count)
    })?;
    Ok(Some((status.MPI_SOURCE as usize, msg, count as usize)))
}

fn recv_into(mut msg: ffi::MPI_Message, buf: &mut [u8]) -> Result<(), String> {
    // SAFETY: `msg` is a matched message of exactly `buf.len()` bytes (its count), received
    // once; `buf` is valid for writes of that length.
    check("MPI_Mrecv", unsafe {
        ffi::MPI_Mrecv(
            buf.as_mut_ptr().cast::<c_void>(),
            buf.len() as c_int,
            ffi::RSMPI_UINT8_T,
            &mut msg,
            ffi::RSMPI_STATUS_IGNORE,
        )
    })
}

/// Ends the whole job: every rank, through the launcher. Never returns.
pub(crate) fn abort(code: i32) -> ! {
    // SAFETY: MPI_Abort may be called from any state after init; it does not return.
    unsafe {
        ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code);
    }
    std::process::exit(code)
}
