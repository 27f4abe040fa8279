//! Diagnostics (Dask's `ProgressBar`, `Profiler`, `ResourceProfiler` and `visualize`), built on
//! the callbacks: `progress` (a progress bar), `profiler` (what ran where and when, exported as a
//! Chrome trace and an SVG Gantt chart by `gantt`), `resources` (CPU and memory sampled from
//! `/proc`), `dot` (a graph as Graphviz DOT, rendered by `dot`).

pub(crate) mod dot;
mod gantt;
pub(crate) mod profiler;
pub(crate) mod progress;
pub(crate) mod resources;
