//! Tasks defined in a library crate, for forkgraph's registration tests: a binary that names
//! them only by string must link this crate (`forkgraph::link!(forkgraph_tasklib)`).

/// Tasks of this library.
pub mod tasks {
    /// Doubles `x`.
    #[forkgraph::task]
    pub fn lib_double(x: i64) -> i64 {
        2 * x
    }
}
