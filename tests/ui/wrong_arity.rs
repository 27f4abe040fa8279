use forkgraph::{graph, key};

#[forkgraph::task]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

fn main() {
    let _too_few = graph! { "b" => (add, key("a")) };
    let _too_many = graph! { "b" => (add, 1, 2, 3) };
}
