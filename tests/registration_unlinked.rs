//! A binary that names a library crate's tasks only by string, without linking the crate: the
//! error says which crate to link and how, before anything runs.

use forkgraph::{Arg, Error, Graph, GraphError, SyncScheduler};

#[test]
fn a_task_of_an_unlinked_library_crate_is_reported_with_the_fix() {
    let mut g = Graph::new();
    g.task(
        "d",
        "forkgraph_tasklib::tasks::lib_double",
        vec![Arg::Value(21.into())],
    );
    let e = SyncScheduler.get(&g, "d").unwrap_err();
    let Error::Graph(GraphError::UnknownFunction { message, .. }) = &e else {
        panic!("expected UnknownFunction, got {e:?}")
    };
    assert!(
        message.contains("forkgraph_tasklib"),
        "names the crate: {message}"
    );
    assert!(
        message.contains("forkgraph::link!(forkgraph_tasklib)"),
        "and the fix: {message}"
    );
    // By its bare name too: the message explains what to do.
    let mut g = Graph::new();
    g.task("d", "lib_double", vec![Arg::Value(21.into())]);
    let e = SyncScheduler.get(&g, "d").unwrap_err().to_string();
    assert!(e.contains("forkgraph::link!"), "{e}");
}
