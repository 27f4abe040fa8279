use forkgraph::graph;

#[forkgraph::task]
fn square(x: i64) -> i64 {
    x * x
}

fn main() {
    let _g = graph! { "b" => (square, "three") };
    let _t = square.task(1.5);
}
