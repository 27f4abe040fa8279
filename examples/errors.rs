//! Matching on errors: what each failure looks like as data (`Error`, `TaskError`,
//! `TaskErrorKind`) and as text, for a graph error, a returned error, a crash, a timeout, a
//! result of the wrong type, and a cancelled call.
//!
//! Run: `cargo run --release --example errors`

use std::time::Duration;

use forkgraph::{
    graph, key, Arg, Callable, Error, GraphError, IntoArg, Mismatch, ProcessPool, TaskErrorKind,
    TaskOptions, Value,
};

#[forkgraph::task]
fn parse(s: String) -> Result<i64, std::num::ParseIntError> {
    s.trim().parse()
}

#[forkgraph::task]
fn crash(_x: i64) -> i64 {
    std::process::abort()
}

#[forkgraph::task]
fn spin(_x: i64) -> i64 {
    loop {
        std::hint::spin_loop();
    }
}

/// Asks `parse` for a `String` result, though it returns an integer.
struct ParseAsText;

impl Callable<&str> for ParseAsText {
    type Output = String;
    fn function(&self) -> &str {
        "parse"
    }
    fn call_args(&self, item: &str) -> Vec<Arg> {
        vec![item.into_arg()]
    }
    fn output(&self, value: Value) -> Result<String, Mismatch> {
        value.to()
    }
}

fn explain(what: &str, e: &Error) {
    println!("--- {what}\n{e}");
    match e {
        Error::Graph(GraphError::MissingDependency { key, dependency }) => {
            println!("  -> graph error: {key} needs {dependency}, which is not in the graph")
        }
        Error::Graph(g) => println!("  -> graph error: {g:?}"),
        Error::Task(t) => match &t.kind {
            TaskErrorKind::Call(_) => println!(
                "  -> {} failed in `{}`; returned error: {:?}",
                t.key,
                t.function,
                t.kind.returned().map(|r| r.type_name().to_owned())
            ),
            k if k.is_timeout() => println!("  -> {} timed out", t.key),
            k if k.is_crash() => println!("  -> {} crashed its worker: {k}", t.key),
            TaskErrorKind::Output { expected, got } => {
                println!("  -> {} returned {got}, not {expected}", t.key)
            }
            k => println!("  -> {}: {k}", t.key),
        },
        Error::Cancelled => println!("  -> cancelled"),
        Error::Interrupted => println!("  -> Ctrl-C"),
        other => println!("  -> the pool itself failed: {other}"),
    }
}

fn main() {
    let pool = ProcessPool::builder().workers(2).build().expect("pool");

    let g = graph! { "n" => (parse, key("missing")) };
    explain("a missing dependency", &pool.get(&g, "n").unwrap_err());

    let g = graph! { "n" => (parse, "forty-two") };
    explain("a returned error", &pool.get(&g, "n").unwrap_err());

    let g = graph! { "c" => (crash, 1) };
    explain("a crash", &pool.get(&g, "c").unwrap_err());

    let mut g = graph! { "s" => (spin, 1) };
    g.set_options("s", TaskOptions::new().timeout(Duration::from_millis(200)));
    explain("a timeout", &pool.get(&g, "s").unwrap_err());

    explain(
        "a result of the wrong type",
        &pool.map(ParseAsText, ["7"]).unwrap_err(),
    );

    let mut h = pool.submit("spin", 1);
    h.cancel();
    explain("a cancelled call", &h.wait().unwrap_err());
}
