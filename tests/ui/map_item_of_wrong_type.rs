use forkgraph::Callable;

#[forkgraph::task]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// What `pool.map` asks of its function and items.
fn map<F: Callable<A>, A>(_f: F, _items: Vec<A>) {}

fn main() {
    map(add, vec![(1, 2), (3, 4)]);
    map(add, vec![(1, "two")]);
}
