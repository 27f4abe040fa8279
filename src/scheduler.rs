//! The `get` every scheduler offers, and its options.

use std::fmt;
use std::sync::Arc;

use forkgraph_worker::FromArg;

use crate::callbacks::Callbacks;
use crate::engine::Output;
use crate::error::Error;
use crate::graph::Graph;
use crate::key::Keys;
use crate::plan::{Plan, PlanOptions};
use crate::typed::TypedKey;

/// Options of one `get`.
#[derive(Clone, Default)]
#[must_use]
pub struct GetOptions {
    pub(crate) callbacks: Vec<Arc<dyn Callbacks>>,
    pub(crate) plan: PlanOptions,
    pub(crate) keep_going: bool,
    pub(crate) memory_budget: Option<u64>,
    pub(crate) spill_dir: Option<std::path::PathBuf>,
    pub(crate) memory_stats: Option<Arc<crate::MemoryStats>>,
}

impl GetOptions {
    /// Default options: no callbacks, no optimizations beyond culling.
    pub fn new() -> GetOptions {
        GetOptions::default()
    }

    /// Adds callbacks.
    pub fn callback(mut self, cb: Arc<dyn Callbacks>) -> GetOptions {
        self.callbacks.push(cb);
        self
    }

    /// Shows a progress bar (a [`ProgressBar`](crate::ProgressBar) on stderr: a bar on a
    /// terminal, a plain line every 2 seconds otherwise).
    pub fn progress(self) -> GetOptions {
        self.callback(Arc::new(crate::ProgressBar::new()))
    }

    /// Fuses linear chains of tasks (a task whose only dependent reads it once) into one task.
    pub fn fuse(mut self, on: bool) -> GetOptions {
        self.plan.fuse = on;
        self
    }

    /// Keeps going after a task fails (`make -k`): branches that do not depend on it still run,
    /// and the output reports each requested key as its value or as the error that stopped it
    /// ([`Output::Failed`]: its own, or [`TaskErrorKind::Upstream`](crate::TaskErrorKind::Upstream)
    /// naming the failed dependency). Without it, `get` stops starting tasks at the first error
    /// and returns it.
    pub fn keep_going(mut self, on: bool) -> GetOptions {
        self.keep_going = on;
        self
    }

    /// Bounds the bytes of results held at once (for this `get` alone, overriding the
    /// scheduler's `memory_budget`, which concurrent `get`s share; the only way on
    /// [`SyncScheduler`](crate::SyncScheduler)). Above it, tasks
    /// that may return large results are held back while others run, and then held results
    /// needed latest are spilled to unnamed files in the spill directory and read back when a
    /// dependent starts. A budget smaller than what one task needs (its inputs and its result)
    /// does not fail: that task runs anyway, the rest spilled. On a process pool, the caches
    /// of each worker set aside by the pool's own
    /// [`memory_budget`](crate::ProcessPoolBuilder::memory_budget) (256 MiB each when the pool
    /// has none) come off this budget.
    pub fn memory_budget(mut self, bytes: u64) -> GetOptions {
        self.memory_budget = Some(bytes);
        self
    }

    /// Where spill files go for this `get` (default: the scheduler's spill directory, else the
    /// system's temporary directory). A directory `forkgraph-spill-<pid>-<n>` is made in it
    /// and removed when the `get` ends; the files in it have no names, so nothing is left
    /// behind even when the process is killed. A directory that cannot be used fails the `get`
    /// before anything runs ([`Error::System`](crate::Error::System), naming it).
    pub fn spill_dir(mut self, dir: impl Into<std::path::PathBuf>) -> GetOptions {
        self.spill_dir = Some(dir.into());
        self
    }

    /// Reports the bytes held, spilled and read back during this `get` into `stats` (also
    /// without a budget: then nothing is spilled, and the peak of held bytes is measured).
    pub fn memory_stats(mut self, stats: Arc<crate::MemoryStats>) -> GetOptions {
        self.memory_stats = Some(stats);
        self
    }

    /// Substitutes literal nodes into the tasks that read them.
    pub fn inline_literals(mut self, on: bool) -> GetOptions {
        self.plan.inline_literals = on;
        self
    }
}

impl fmt::Debug for GetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetOptions")
            .field("callbacks", &self.callbacks.len())
            .field("fuse", &self.plan.fuse)
            .field("inline_literals", &self.plan.inline_literals)
            .field("keep_going", &self.keep_going)
            .field("memory_budget", &self.memory_budget)
            .field("spill_dir", &self.spill_dir)
            .finish()
    }
}

/// A scheduler: computes requested keys of a graph.
///
/// `get` (requested keys as anything that converts [`Into<Keys>`](Keys)) is an inherent
/// method of every scheduler and of `dyn Scheduler` (also `+ Send`, `+ Send + Sync`), so it
/// works on a concrete pool, a `&dyn Scheduler`, a `Box<dyn Scheduler>` and an
/// `Arc<dyn Scheduler + Send + Sync>` alike; generic code (`S: Scheduler`) calls it through
/// [`SchedulerExt`].
///
/// ```
/// use std::sync::Arc;
/// use forkgraph::{graph, Scheduler, SyncScheduler, ThreadPool};
///
/// #[forkgraph::task]
/// fn twice(x: i64) -> i64 {
///     2 * x
/// }
///
/// let g = graph! { "a" => (twice, 21) };
/// let any: &dyn Scheduler = &SyncScheduler;
/// assert_eq!(any.get(&g, "a").unwrap().to::<i64>().unwrap(), 42);
/// let shared: Arc<dyn Scheduler + Send + Sync> = Arc::new(ThreadPool::new().unwrap());
/// assert_eq!(shared.get(&g, "a").unwrap().to::<i64>().unwrap(), 42);
/// ```
pub trait Scheduler {
    /// Computes `keys` (one key, or lists of keys nested up to
    /// [`MAX_NESTING`](crate::MAX_NESTING) levels) with options.
    ///
    /// # Errors
    /// [`Error::Graph`] before anything runs when the graph or request is invalid;
    /// [`Error::Task`] when a task fails.
    fn get_with(&self, graph: &Graph, keys: &Keys, opts: &GetOptions) -> Result<Output, Error>;
}

/// `get` and `get_typed` for generic code (`fn f<S: Scheduler>(s: &S)`, or
/// `S: Scheduler + ?Sized`); concrete schedulers and `dyn Scheduler` have them without this
/// import.
pub trait SchedulerExt: Scheduler {
    /// Computes `keys`; the result mirrors their nesting.
    ///
    /// # Errors
    /// As [`Scheduler::get_with`].
    fn get(&self, graph: &Graph, keys: impl Into<Keys>) -> Result<Output, Error> {
        self.get_with(graph, &keys.into(), &GetOptions::default())
    }

    /// Computes one key and converts its value to the key's type: `T` for a
    /// [`TypedKey<T>`](crate::TypedKey) (from [`Graph::add`], [`Graph::add_value`] or
    /// [`typed_key`](crate::typed_key)).
    ///
    /// # Errors
    /// As [`Scheduler::get_with`]; [`Error::TypeMismatch`] naming the key and both types when
    /// the value does not convert to `T`.
    fn get_typed<T: for<'x> FromArg<'x>>(
        &self,
        graph: &Graph,
        key: &TypedKey<T>,
    ) -> Result<T, Error> {
        let value = SchedulerExt::get(self, graph, key)?.into_value();
        value.to::<T>().map_err(|m| Error::TypeMismatch {
            key: key.key().clone(),
            expected: short_type_name(std::any::type_name::<T>()),
            got: m.to_string(),
        })
    }
}

/// A type name without module paths: `Vec<String>` for `alloc::vec::Vec<alloc::string::String>`.
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment_start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(segment_start);
        } else {
            out.push(c);
            if !(c.is_alphanumeric() || c == '_') {
                segment_start = out.len();
            }
        }
    }
    out
}

impl<S: Scheduler + ?Sized> SchedulerExt for S {}

/// The inherent `get` of schedulers and scheduler trait objects.
macro_rules! inherent_get {
    ($($t:ty),* $(,)?) => {$(
        impl $t {
            /// Computes `keys` (one key, or lists of keys); the result mirrors their nesting.
            ///
            /// # Errors
            /// As [`Scheduler::get_with`].
            pub fn get(&self, graph: &Graph, keys: impl Into<Keys>) -> Result<Output, Error> {
                Scheduler::get_with(self, graph, &keys.into(), &GetOptions::default())
            }

            /// Computes one key and converts its value to the key's type: `T` for a
            /// [`TypedKey<T>`](crate::TypedKey).
            ///
            /// # Errors
            /// As [`SchedulerExt::get_typed`].
            pub fn get_typed<T: for<'x> FromArg<'x>>(
                &self,
                graph: &Graph,
                key: &TypedKey<T>,
            ) -> Result<T, Error> {
                SchedulerExt::get_typed(self, graph, key)
            }
        }
    )*};
}

inherent_get!(
    dyn Scheduler + '_,
    dyn Scheduler + Send + '_,
    dyn Scheduler + Send + Sync + '_,
    crate::SyncScheduler,
    crate::ThreadPool,
    crate::ProcessPool,
);

#[cfg(feature = "mpi")]
inherent_get!(crate::MpiCluster);

pub(crate) fn plan(graph: &Graph, keys: &Keys, opts: &GetOptions) -> Result<Plan, Error> {
    Ok(Plan::build(graph, keys, opts.plan)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_type_names_drop_module_paths() {
        assert_eq!(super::short_type_name("i64"), "i64");
        assert_eq!(
            super::short_type_name(std::any::type_name::<Vec<String>>()),
            "Vec<String>"
        );
        assert_eq!(
            super::short_type_name(std::any::type_name::<(Option<&str>, [u8; 2])>()),
            "(Option<&str>, [u8; 2])"
        );
    }
}
