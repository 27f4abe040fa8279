//! 1,000 successive `get` calls leave fds, processes and memory where they started, and
//! dropping the pool leaves nothing behind. (Its own test binary: fd counts are per process.)

mod common;

use common::{children, wait_gone, watchdog};
use forkgraph::{graph, key, ProcessPool};

#[forkgraph::task]
fn twice(x: i64) -> i64 {
    x * 2
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_thousand_gets_leak_nothing_and_drop_cleans_up() {
    watchdog(300, || {
        // Count from after a first pool has come and gone (lazily made statics).
        {
            let first = ProcessPool::builder().workers(1).build().unwrap();
            first.get(&graph! { "x" => (twice, 1) }, "x").unwrap();
        }
        let fds_before_pool = open_fds();
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let server = pool.fork_server_pid();
        let g = graph! {
            "a" => 1,
            "b" => (twice, key("a")),
            "c" => (twice, key("b")),
            "d" => (twice, [key("c")].len() as i64),
        };
        // Warm up (lazy statics, buffers), then measure.
        for _ in 0..20 {
            pool.get(&g, vec!["c", "d"]).unwrap();
        }
        let fds = open_fds();
        let procs = children(server).len();
        let rss = rss_kib();
        for i in 0..1000 {
            let out = pool.get(&g, vec!["c", "d"]).unwrap();
            assert_eq!(out.as_list().unwrap()[0].to::<i64>().unwrap(), 4, "get {i}");
        }
        assert_eq!(open_fds(), fds, "fd count after 1000 gets");
        assert_eq!(
            children(server).len(),
            procs,
            "worker count after 1000 gets"
        );
        let grown = rss_kib().saturating_sub(rss);
        assert!(grown < 8 * 1024, "RSS grew by {grown} KiB over 1000 gets");
        let mut pids = pool.worker_pids();
        pids.push(server);
        drop(pool);
        for p in pids {
            wait_gone(p, 10);
        }
        assert_eq!(open_fds(), fds_before_pool, "fds after drop");
    });
}
