//! First checks of the process pool.
use forkgraph::{graph, key, ProcessPool, SyncScheduler};

#[forkgraph::task]
fn pinc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn psum(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[forkgraph::task]
fn pid_of(_x: i64) -> i64 {
    std::process::id() as i64
}

#[test]
fn process_pool_runs_a_graph() {
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let g = graph! {
        "a" => 1,
        "b" => (pinc, key("a")),
        "c" => (pinc, key("b")),
        "s" => (psum, [key("a"), key("b"), key("c")]),
        "p" => (pid_of, 0),
    };
    let out = pool.get(&g, vec!["s", "c"]).unwrap();
    assert_eq!(out, SyncScheduler.get(&g, vec!["s", "c"]).unwrap());
    let p = pool.get(&g, "p").unwrap().to::<i64>().unwrap();
    assert!(pool.worker_pids().contains(&(p as i32)));
    assert_ne!(p, std::process::id() as i64);
    let mut chain = forkgraph::Graph::new();
    chain.insert(("c", 0), 0);
    for i in 1..2000 {
        chain.insert(
            ("c", i),
            forkgraph::Task::new("pinc", vec![forkgraph::Arg::Key(("c", i - 1).into())]),
        );
    }
    assert_eq!(
        pool.get(&chain, ("c", 1999)).unwrap().to::<i64>().unwrap(),
        1999
    );
    assert_eq!(
        pool.map("pinc", [1, 2, 3]).unwrap(),
        vec![2.into(), 3.into(), 4.into()]
    );
}

#[test]
fn map_and_submit_run_on_the_pool() {
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let squares = pool.map("pinc", (0..100i64).collect::<Vec<_>>()).unwrap();
    assert_eq!(squares.len(), 100);
    assert_eq!(squares[99], forkgraph::Value::Int(100));
    let mut a = pool.submit("pinc", 41);
    let b = pool.submit(
        "psum",
        forkgraph::Args(vec![forkgraph::Arg::Value(vec![1i64, 2, 3].into())]),
    );
    let first = a
        .wait_timeout(std::time::Duration::from_secs(60))
        .expect("done within 60 s");
    assert_eq!(first.as_ref().unwrap(), &forkgraph::Value::Int(42));
    assert_eq!(b.wait().unwrap(), forkgraph::Value::Int(6));
    assert!(a.is_done());
    // An unknown function is an error naming it, before anything runs.
    let e = pool.map("no_such_function", [1]).unwrap_err();
    assert!(e.to_string().contains("no_such_function"), "{e}");
}

#[test]
fn workers_and_the_fork_server_have_readable_names() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    // A worker names itself right after the fork: once it has answered, it has.
    pool.map("pinc", [1]).unwrap();
    let read = |pid: i32, what: &str| std::fs::read(format!("/proc/{pid}/{what}")).unwrap();
    let worker = pool.worker_pids()[0];
    let server = pool.fork_server_pid();
    assert_eq!(read(worker, "comm"), b"forkgraph-work\n");
    assert!(read(worker, "cmdline").starts_with(b"forkgraph-worker\0"));
    assert_eq!(read(server, "comm"), b"forkgraph-srv\n");
    assert!(read(server, "cmdline").starts_with(b"forkgraph-forkserver\0"));
}
