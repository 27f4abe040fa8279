//! A binary that names a library crate's tasks only by string links the crate with one line,
//! and then finds them by bare name and by module path, on every scheduler.

use forkgraph::{Arg, Graph, ProcessPool, SyncScheduler, ThreadPool};

forkgraph::link!(forkgraph_tasklib);

#[test]
fn tasks_of_a_linked_library_crate_are_found_by_name_and_by_path() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let threads = ThreadPool::new().unwrap();
    let scheds: [&dyn Fn(&Graph) -> i64; 3] = [
        &|g| SyncScheduler.get(g, "d").unwrap().to::<i64>().unwrap(),
        &|g| threads.get(g, "d").unwrap().to::<i64>().unwrap(),
        &|g| pool.get(g, "d").unwrap().to::<i64>().unwrap(),
    ];
    for name in [
        "lib_double",
        "tasks::lib_double",
        "forkgraph_tasklib::tasks::lib_double",
    ] {
        let mut g = Graph::new();
        g.task("d", name, vec![Arg::Value(21.into())]);
        for run in scheds {
            assert_eq!(run(&g), 42, "{name}");
        }
    }
}
