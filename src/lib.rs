//! forkgraph runs task graphs the way Dask's custom graphs do — a map from key to task — on
//! schedulers that share one API: [`SyncScheduler`] (one thread, deterministic), [`ThreadPool`]
//! (threads) and [`ProcessPool`] (forked worker processes that survive crashing tasks, with large
//! results in sealed shared-memory segments). See README.md for a tour and ARCHITECTURE.md for
//! the design.
//!
//! Values arrive exactly on every scheduler: integers of every type ([`Value`]), any serde type
//! through [`Serde`], arrays as views. A failed task's [`Error`] names its key and function and,
//! for a returned error, its type name and whole `source()` chain ([`ReturnedError`]; the value
//! itself on the sync and thread schedulers, see [`Error::downcast_ref`]).
//!
//! ```
//! use forkgraph::{graph, key, Scheduler, SyncScheduler, ThreadPool};
//!
//! #[forkgraph::task]
//! fn inc(x: i64) -> i64 {
//!     x + 1
//! }
//!
//! #[forkgraph::task]
//! fn total(xs: Vec<i64>) -> i64 {
//!     xs.iter().sum()
//! }
//!
//! let g = graph! {
//!     "a" => 1,
//!     "b" => (inc, key("a")),
//!     "c" => (inc, key("b")),
//!     "sum" => (total, [key("a"), key("b"), key("c")]),
//! };
//! let sync = SyncScheduler.get(&g, "sum").unwrap();
//! let threads = ThreadPool::new().unwrap().get(&g, "sum").unwrap();
//! assert_eq!(sync.to::<i64>().unwrap(), 6);
//! assert_eq!(sync, threads);
//! ```

mod call;
mod callbacks;
mod csr;
mod diagnostics;
mod engine;
mod error;
mod graph;
mod handle;
mod key;
#[cfg(feature = "mpi")]
mod mpi;
mod names;
mod nesting;
mod optimize;
pub mod order;
mod plan;
mod process;
mod scheduler;
mod scratch;
mod spill;
mod sync;
mod threaded;
mod typed;

pub use call::Callable;
pub use callbacks::{
    monotonic_ns, Callbacks, Dependencies, RunInfo, TaskEvent, WorkerEvent, WorkerId,
};
#[doc(hidden)]
pub use csr::Csr;
pub use diagnostics::dot::{render_dot, to_dot, to_dot_state, DotColor};
pub use diagnostics::profiler::{Outcome, Profile, Profiler, TaskRecord};
pub use diagnostics::progress::ProgressBar;
pub use diagnostics::resources::{
    ProcessSample, ResourceProfile, ResourceProfiler, ResourceSample,
};
pub use engine::Output;
pub use error::{signal_name, BuildError, Error, GraphError, TaskError, TaskErrorKind};
pub use forkgraph_macros::task;
pub use forkgraph_worker::{
    rkyv, Archived, ArgValue, Array, Buffer, CallError, DType, Element, EncodeError, FromArg,
    Integer, IntoOutput, IntoValue, Mismatch, ReturnedError, Rkyv, Serde, SharedVec, Value,
};
pub use graph::{key, Arg, Graph, IntoArg, IntoNode, KeyRef, Node, Task, TaskOptions};
pub use handle::{as_completed, AsCompleted, GetFuture, Submitted};
pub use key::{Key, KeyPart, Keys};
#[cfg(feature = "mpi")]
pub use mpi::{MpiCluster, MpiClusterBuilder, MpiStats};
pub use names::Args;
pub use nesting::MAX_NESTING;
pub use process::{
    Layer, LayerStatus, ProcessPool, ProcessPoolBuilder, Sandbox, SandboxError, SandboxReport,
    Unordered, DEFAULT_FORK_SERVER_TIMEOUT, DEFAULT_SEGMENT_THRESHOLD,
};
pub use scheduler::{GetOptions, Scheduler, SchedulerExt};
pub use spill::MemoryStats;
pub use sync::{get, get_value, SyncScheduler};
pub use threaded::{ThreadPool, ThreadPoolBuilder};
pub use typed::{typed_key, ArgFor, ItemFor, TaskHandle, TaskReturn, TypedKey, TypedTask};

/// Shared segments mapped in this process now, as (count, bytes), and the peak bytes since the
/// last [`reset_segment_peak`]. Segments hold the large results of process-pool tasks (see
/// [`ProcessPoolBuilder::segment_threshold`]) and [`SharedVec`]s.
pub fn segment_stats() -> SegmentStats {
    let (count, bytes, peak_bytes) = forkgraph_worker::segments::stats();
    SegmentStats {
        count,
        bytes,
        peak_bytes,
    }
}

/// Resets [`SegmentStats::peak_bytes`] to the current bytes.
pub fn reset_segment_peak() {
    forkgraph_worker::segments::reset_peak();
}

/// See [`segment_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStats {
    /// Segments mapped now.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Most bytes mapped at once since the last reset.
    pub peak_bytes: u64,
}

/// Default number of workers: the available parallelism (CPU affinity and cgroup quotas
/// respected), at least 1.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Links library crates whose `#[forkgraph::task]` functions this binary names only by string
/// (in graphs built from data): Rust leaves out a library the binary never names, and its tasks
/// with it. `forkgraph::link!(my_tasks, other_tasks);` at the top level of the binary is enough.
///
/// ```
/// forkgraph::link!(forkgraph_worker);
/// ```
#[macro_export]
macro_rules! link {
    ($($krate:ident),+ $(,)?) => {
        $(
            #[allow(unused_imports)]
            use $krate as _;
        )+
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::typed::{__handle, Bare};
    pub use forkgraph_worker::failure::{
        Output, ViaDisplay, ViaDynError, ViaError, ViaErrorRef, ViaIntoOutput, ViaLocalDynError,
    };
    pub use forkgraph_worker::linkme;
    pub use forkgraph_worker::registry::{arg, output};
    pub use forkgraph_worker::{ArgValue, CallError, Function, Value, FUNCTIONS};
}
