//! What [`ProcessPool::map`](crate::ProcessPool::map) and `submit` call: a function registered
//! under a name (untyped: its result is a [`Value`]), or the typed handle that
//! `#[forkgraph::task]` generates (its result is the function's return type).

use forkgraph_worker::{Mismatch, Value};

use crate::graph::Arg;

/// A function that `map` and `submit` can call with an item of type `A`.
///
/// Implemented by the handles `#[forkgraph::task]` generates (for the tuple of the function's
/// parameters) and by registered names.
pub trait Callable<A> {
    /// What one call returns once converted.
    type Output;

    /// The name the function is registered under.
    fn function(&self) -> &str;

    /// The arguments of one call.
    fn call_args(&self, item: A) -> Vec<Arg>;

    /// Converts one call's result.
    ///
    /// # Errors
    /// When the value is not of the output type.
    fn output(&self, value: Value) -> Result<Self::Output, Mismatch>;
}
