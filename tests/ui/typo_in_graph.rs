use forkgraph::{graph, key};

#[forkgraph::task]
fn inc(x: i64) -> i64 {
    x + 1
}

mod stats {
    #[forkgraph::task]
    pub fn mean(xs: &[f64]) -> f64 {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

fn main() {
    let _g = graph! {
        "a" => 1,
        "b" => (inc, kye("a")),
        "c" => (stats::maen, [1.0, 2.0]),
    };
}
