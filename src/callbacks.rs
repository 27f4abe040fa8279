//! Callbacks that observe a `get`, as Dask's `Callback` (start, pretask, posttask, finish).

use forkgraph_worker::Value;

use crate::key::Key;

/// What a run is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo {
    /// Nodes in the culled graph (tasks, literals and aliases).
    pub nodes: usize,
    /// Tasks to run.
    pub tasks: usize,
}

/// Hooks called by the engine, in the thread that called `get`.
///
/// Every method has an empty default. `finish` always runs, also after an error.
pub trait Callbacks: Send + Sync {
    /// Before the first task.
    fn start(&self, info: &RunInfo) {
        let _ = info;
    }
    /// When a task is handed to its executor.
    fn pretask(&self, key: &Key) {
        let _ = key;
    }
    /// When a task's result is back.
    fn posttask(&self, key: &Key, value: &Value) {
        let _ = (key, value);
    }
    /// After the last task, with `errored` true when `get` returns an error.
    fn finish(&self, errored: bool) {
        let _ = errored;
    }
}
