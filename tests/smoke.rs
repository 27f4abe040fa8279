//! Quick end-to-end checks of the graph macro and both schedulers.
use forkgraph::{graph, key, SyncScheduler, ThreadPool};

#[forkgraph::task]
fn inc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[forkgraph::task]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[forkgraph::task]
fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[forkgraph::task]
fn ramp(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

#[test]
fn pipeline_on_both_schedulers() {
    let g = graph! {
        "x" => 1,
        "y" => (inc, key("x")),
        "z" => (add, key("y"), (inc, 10)),
        "all" => (total, [key("x"), key("y"), key("z")]),
        "w" => key("z"),
        ("t", 0) => (inc, key("x")),
        "r" => (ramp, 5),
        "m" => (mean, key("r")),
    };
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    let a = SyncScheduler.get(&g, vec![key_list()]).unwrap();
    let b = pool.get(&g, vec![key_list()]).unwrap();
    assert_eq!(a, b);
    let out = SyncScheduler.get(&g, "all").unwrap();
    assert_eq!(out.to::<i64>().unwrap(), 1 + 2 + 13);
    assert_eq!(
        SyncScheduler.get(&g, "m").unwrap().to::<f64>().unwrap(),
        2.0
    );
    assert_eq!(pool.get(&g, ("t", 0)).unwrap().to::<i64>().unwrap(), 2);
}

fn key_list() -> Vec<forkgraph::Keys> {
    vec!["w".into(), "all".into()]
}
