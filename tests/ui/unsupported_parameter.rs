struct Config {
    retries: u32,
}

#[forkgraph::task]
fn run(cfg: Config) -> u32 {
    cfg.retries
}

fn main() {}
