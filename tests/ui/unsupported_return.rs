struct Report {
    lines: u32,
}

#[forkgraph::task]
fn report(lines: u32) -> Report {
    Report { lines }
}

fn main() {}
