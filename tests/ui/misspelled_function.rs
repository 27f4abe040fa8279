use forkgraph::{graph, key};

#[forkgraph::task]
fn square(x: i64) -> i64 {
    x * x
}

fn main() {
    let _g = graph! {
        "a" => 3,
        "b" => (sqaure, key("a")),
    };
}
