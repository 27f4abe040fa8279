//! A second executable for the MPI tests: its function table differs from the test's, so a
//! job that launches both must fail at `MpiCluster::init`, naming this rank.
//!
//! Run: `mpirun -np 2 ./target/debug/deps/mpi-* : -np 1 ./target/debug/examples/mpi_peer`.

#[forkgraph::task]
fn peer_only(x: i64) -> i64 {
    x * 3
}

fn main() {
    match forkgraph::MpiCluster::builder()
        .workers_per_rank(Some(1))
        .init()
    {
        Ok(c) => println!("mpi_peer: rank 0 of {} ranks", c.ranks()),
        Err(e) => {
            eprintln!("mpi_peer: {e}");
            std::process::exit(3);
        }
    }
}
