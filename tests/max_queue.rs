//! `ProcessPoolBuilder::max_queue`: with 1, no task waits on a busy worker while another is
//! idle.

mod common;

use common::{scratch_dir, watchdog};
use forkgraph::{Arg, Graph, ProcessPool, Task, Value};

/// Runs until `path` exists (made by the last `tick`).
#[forkgraph::task]
fn mq_block(path: &str) -> i64 {
    while !std::path::Path::new(path).exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    0
}

/// Marks itself done in `dir`; the `n`th to finish releases `mq_block`.
#[forkgraph::task]
fn mq_tick(dir: &str, i: i64, n: i64) -> i64 {
    let d = std::path::Path::new(dir);
    std::fs::write(d.join(format!("done-{i}")), b"").unwrap();
    let done = std::fs::read_dir(d)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("done-"))
        })
        .count();
    if done as i64 == n {
        std::fs::write(d.join("release"), b"").unwrap();
    }
    i
}

#[test]
fn max_queue_one_never_queues_a_task_behind_a_busy_worker() {
    let dir = scratch_dir("max_queue");
    let d = dir.to_string_lossy().into_owned();
    watchdog(60, move || {
        let n = 8;
        let mut g = Graph::new();
        let release = format!("{d}/release");
        g.insert(
            "a-block",
            Task::new("mq_block", vec![Arg::Value(Value::from(release.as_str()))]),
        );
        let mut keys = vec![forkgraph::Key::from("a-block")];
        for i in 0..n {
            let k = format!("tick-{i}");
            g.insert(
                k.as_str(),
                Task::new(
                    "mq_tick",
                    vec![
                        Arg::Value(Value::from(d.as_str())),
                        Arg::Value(Value::from(i)),
                        Arg::Value(Value::from(n)),
                    ],
                ),
            );
            keys.push(forkgraph::Key::from(k.as_str()));
        }
        let pool = ProcessPool::builder()
            .workers(2)
            .max_queue(1)
            .build()
            .unwrap();
        pool.get(&g, keys).unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
