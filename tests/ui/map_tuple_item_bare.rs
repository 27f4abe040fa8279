use forkgraph::Callable;

#[forkgraph::task]
fn span(bounds: (i64, i64)) -> i64 {
    bounds.1 - bounds.0
}

/// What `pool.map` asks of its function and items.
fn map<F: Callable<A>, A>(_f: F, _items: Vec<A>) {}

fn main() {
    map(span, vec![((1, 5),)]);
    map(span, vec![(1, 5)]);
}
