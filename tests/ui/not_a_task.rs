use forkgraph::graph;

fn square(x: i64) -> i64 {
    x * x
}

fn main() {
    let _g = graph! { "b" => (square, 3) };
}
