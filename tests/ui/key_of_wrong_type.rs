use forkgraph::{graph, typed_key, Graph};

#[forkgraph::task]
fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[forkgraph::task]
fn shout(s: &str) -> String {
    s.to_uppercase()
}

fn main() {
    let _g = graph! { "m" => (mean, typed_key::<String>("text")) };
    let mut g = Graph::new();
    let loud = g.add("loud", shout.task("x"));
    g.add("m", mean.task(loud));
}
