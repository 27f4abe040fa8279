use forkgraph::{Graph, SyncScheduler, TypedKey};

#[forkgraph::task]
fn shout(s: &str) -> String {
    s.to_uppercase()
}

fn main() {
    let mut g = Graph::new();
    let loud = g.add("loud", shout.task("x"));
    let _m: i64 = SyncScheduler.get_typed(&g, &loud).unwrap();
    let _n: TypedKey<i64> = loud;
}
