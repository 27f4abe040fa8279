//! The MPI cluster on one machine: this test re-runs its own executable under
//! `mpirun --oversubscribe -np 3` once per case (the case name in `FORKGRAPH_MPI_CASE`) and
//! checks the job's exit status and output. Without `mpirun` it prints "skipped" and passes,
//! unless `FORKGRAPH_REQUIRE_MPI=1`. Every run has a watchdog that kills the job and fails.
//!
//! Run: `cargo test --features mpi --test mpi`.

#[path = "support/proc_tree.rs"]
mod proc_tree;

use proc_tree::{alive, descendants};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use forkgraph::{
    Arg, Error, Graph, Key, Keys, MpiCluster, Output, Scheduler, SyncScheduler, Task,
    TaskErrorKind, TaskOptions,
};

const MIB: usize = 1 << 20;

#[forkgraph::task]
fn inc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[forkgraph::task]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[forkgraph::task]
fn fail_at(x: i64, bad: i64) -> Result<i64, String> {
    if x == bad {
        Err(format!("{x} is the bad input"))
    } else {
        Ok(x)
    }
}

/// Bytes `(i * 7 + seed) % 251`: a 64 MiB result with a known checksum.
#[forkgraph::task]
fn pattern(mib: usize, seed: u64) -> Vec<u8> {
    (0..mib * MIB)
        .map(|i| ((i as u64 * 7 + seed) % 251) as u8)
        .collect()
}

#[forkgraph::task]
fn sum_bytes(data: &[u8]) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

#[forkgraph::task]
fn sum_two(a: &[u8], b: &[u8]) -> u64 {
    a.iter().chain(b).map(|&b| u64::from(b)).sum()
}

/// A 2 MiB result that marks itself alive (a file in `dir`) and records how many are alive
/// now (a line in `dir/peaks`).
#[forkgraph::task]
fn produce_marked(i: i64, dir: String) -> Vec<u8> {
    use std::io::Write;
    std::fs::write(format!("{dir}/alive-{i}"), b"").unwrap();
    let alive = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("alive-"))
        })
        .count();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(format!("{dir}/peaks"))
        .unwrap();
    // One write of the whole line: tasks on several ranks append at once, and `writeln!` on a
    // `File` writes the number and the newline separately (lines interleaved as "34\n\n").
    f.write_all(format!("{alive}\n").as_bytes()).unwrap();
    vec![i as u8; 2 * MIB]
}

/// Consumes two marked results (their marks go).
#[forkgraph::task]
fn consume_pair(a: &[u8], b: &[u8], i: i64, j: i64, dir: String) -> u64 {
    for x in [i, j] {
        std::fs::remove_file(format!("{dir}/alive-{x}")).unwrap();
    }
    a.iter().chain(b).map(|&b| u64::from(b)).sum()
}

/// Aborts its worker when it runs on MPI rank `rank` (workers inherit the rank's environment).
#[forkgraph::task]
fn abort_on_rank(x: i64, rank: i64) -> i64 {
    if my_rank() == Some(rank as usize) {
        std::process::abort();
    }
    x
}

/// Writes through a null pointer when it runs on rank `rank`.
#[forkgraph::task]
fn segfault_on_rank(x: i64, rank: i64) -> i64 {
    if my_rank() == Some(rank as usize) {
        // SAFETY: none: this task exists to crash its worker.
        unsafe { std::ptr::null_mut::<i64>().write_volatile(1) };
    }
    x
}

/// Dies the first time it runs (a marker file records the attempt), then succeeds.
#[forkgraph::task]
fn die_once(marker: String) -> i64 {
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok()
    {
        std::process::abort();
    }
    42
}

#[forkgraph::task]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn my_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

fn k(s: impl Into<String>) -> Arg {
    Arg::Key(Key::from(s.into()))
}

fn lit(i: i64) -> Arg {
    Arg::Value(i.into())
}

/// Shapes A-D of the Dask baseline at small sizes, in one graph with prefixes.
fn shapes() -> Graph {
    let mut g = Graph::new();
    // A: independent tasks and a sum.
    let parts: Vec<Arg> = (0..200)
        .map(|i| {
            g.insert(format!("a-{i}"), Task::new("inc", vec![lit(i)]));
            k(format!("a-{i}"))
        })
        .collect();
    g.insert("a-sum", Task::new("total", vec![Arg::List(parts)]));
    // B: a chain.
    g.insert("b-0", Task::new("inc", vec![lit(0)]));
    for i in 1..100 {
        g.insert(
            format!("b-{i}"),
            Task::new("inc", vec![k(format!("b-{}", i - 1))]),
        );
    }
    // C: a tree reduction.
    let mut layer: Vec<String> = (0..64)
        .map(|i| {
            let key = format!("c-0-{i}");
            g.insert(key.as_str(), Task::new("inc", vec![lit(i)]));
            key
        })
        .collect();
    let mut level = 0;
    while layer.len() > 1 {
        level += 1;
        layer = layer
            .chunks(2)
            .enumerate()
            .map(|(j, p)| {
                let key = format!("c-{level}-{j}");
                g.insert(
                    key.as_str(),
                    Task::new("add", vec![k(p[0].clone()), k(p[1].clone())]),
                );
                key
            })
            .collect();
    }
    g.insert("c-root", forkgraph::key(layer[0].as_str()));
    // D: a fan-out of one value to many readers, then a nested task and a fan-in.
    g.insert("d-src", 5i64);
    for i in 0..50 {
        g.insert(
            format!("d-{i}"),
            Task::new(
                "add",
                vec![k("d-src"), Arg::Task(Task::new("inc", vec![lit(i)]))],
            ),
        );
    }
    g.insert(
        "d-sum",
        Task::new(
            "total",
            vec![Arg::List((0..50).map(|i| k(format!("d-{i}"))).collect())],
        ),
    );
    g.insert("alias", forkgraph::key("a-sum"));
    g.insert("literal", "just a string");
    g
}

fn shapes_request() -> Keys {
    Keys::List(vec![
        Keys::One(Key::from("a-sum")),
        Keys::One(Key::from("b-99")),
        Keys::List(vec![
            Keys::One(Key::from("c-root")),
            Keys::List(vec![
                Keys::One(Key::from("d-sum")),
                Keys::One(Key::from("d-3")),
            ]),
        ]),
        Keys::One(Key::from("alias")),
        Keys::One(Key::from("literal")),
        Keys::One(Key::from("b-50")),
    ])
}

/// Every `posttask` a get reports.
#[derive(Default)]
struct Seen(std::sync::Mutex<Vec<(Key, forkgraph::Value)>>);

impl forkgraph::Callbacks for Seen {
    fn posttask(&self, key: &Key, value: &forkgraph::Value) {
        self.0.lock().unwrap().push((key.clone(), value.clone()));
    }
}

fn assert_clean(c: &MpiCluster, when: &str) {
    let s = c.stats().unwrap();
    assert!(
        s.held.iter().all(|&h| h == 0),
        "{when}: results still held: {:?}",
        s.held
    );
    assert!(
        s.segments.iter().all(|&h| h == 0),
        "{when}: segments still mapped: {:?}",
        s.segments
    );
}

fn cluster() -> MpiCluster {
    MpiCluster::builder()
        .workers_per_rank(Some(1))
        .retries(1)
        .init()
        .unwrap()
}

fn case_shapes() {
    let c = cluster();
    assert_eq!(c.ranks(), 3);
    let g = shapes();
    let want = SyncScheduler.get(&g, shapes_request()).unwrap();
    for round in 0..2 {
        let got = c.get(&g, shapes_request()).unwrap();
        assert_eq!(got, want, "round {round}");
        assert_clean(&c, "after shapes");
    }
    // Callbacks see every task's real value (results then come back to rank 0), and the
    // output is unchanged.
    let seen = std::sync::Arc::new(Seen::default());
    let got = c
        .get_with(
            &g,
            &shapes_request(),
            &forkgraph::GetOptions::new().callback(seen.clone()),
        )
        .unwrap();
    assert_eq!(got, want, "with callbacks");
    let seen = seen.0.lock().unwrap();
    let tasks = g
        .iter()
        .filter(|(_, n)| matches!(n, forkgraph::Node::Task(_)))
        .count();
    assert_eq!(seen.len(), tasks, "one posttask per task");
    let a0 = seen.iter().find(|(k, _)| *k == Key::from("a-0")).unwrap();
    assert_eq!(a0.1, forkgraph::Value::from(1i64));
    drop(seen);
    assert_clean(&c, "after a get with callbacks");
    // A task error names key and function; the next get works.
    let mut bad = Graph::new();
    for i in 0..20 {
        bad.insert(
            format!("x-{i}"),
            Task::new("fail_at", vec![lit(i), lit(13)]),
        );
    }
    bad.insert(
        "all",
        Task::new(
            "total",
            vec![Arg::List((0..20).map(|i| k(format!("x-{i}"))).collect())],
        ),
    );
    let e = c.get(&bad, "all").unwrap_err();
    let Error::Task(t) = &e else {
        panic!("not a task error: {e}")
    };
    assert_eq!(t.key, Key::from("x-13"));
    assert_eq!(t.function, "fail_at");
    assert!(e.to_string().contains("13 is the bad input"), "{e}");
    assert_clean(&c, "after a failed get");
    // keep_going: the failed key and its dependents are reported, the rest computed.
    let out = c
        .get_with(
            &bad,
            &Keys::List(vec![
                Keys::One(Key::from("x-13")),
                Keys::One(Key::from("x-3")),
            ]),
            &forkgraph::GetOptions::new().keep_going(true),
        )
        .unwrap();
    let l = out.as_list().unwrap();
    assert!(l[0].error().is_some());
    assert_eq!(l[1], Output::Value(3i64.into()));
    assert_clean(&c, "after keep_going");
    // Retries: a task whose worker dies once succeeds on its retry.
    let marker = std::env::var("FORKGRAPH_MPI_SCRATCH").unwrap() + "/die-once";
    let mut g = Graph::new();
    g.insert(
        "once",
        Task::new("die_once", vec![Arg::Value(marker.into())]),
    );
    let out = c.get(&g, "once").unwrap();
    assert_eq!(out, Output::Value(42i64.into()));
    assert_clean(&c, "after a retry");
    println!("case shapes ok");
}

fn case_locality() {
    let c = cluster();
    let before = c.stats().unwrap();
    // One 64 MiB result read by one dependent: it never moves.
    let mut g = Graph::new();
    g.insert(
        "big",
        Task::new("pattern", vec![Arg::Value(64i64.into()), lit(3)]),
    );
    g.insert("sum", Task::new("sum_bytes", vec![k("big")]));
    let want = SyncScheduler.get(&g, "sum").unwrap();
    let got = c.get(&g, "sum").unwrap();
    assert_eq!(got, want);
    let after = c.stats().unwrap();
    assert_eq!(after.moved_bytes, before.moved_bytes, "{after:?}");
    assert_clean(&c, "after one 64 MiB result");
    // Two 64 MiB inputs made on different ranks: exactly one moves, intact.
    let mut g = Graph::new();
    g.insert("p", Task::new("pattern", vec![lit(64), lit(1)]));
    g.insert("q", Task::new("pattern", vec![lit(64), lit(2)]));
    g.insert("both", Task::new("sum_two", vec![k("p"), k("q")]));
    let want = SyncScheduler.get(&g, "both").unwrap();
    let got = c.get(&g, "both").unwrap();
    assert_eq!(got, want, "checksum of the two inputs");
    let end = c.stats().unwrap();
    assert_eq!(
        end.moved_bytes - after.moved_bytes,
        64 * MIB as u64,
        "{end:?}"
    );
    assert_eq!(end.moves - after.moves, 1, "{end:?}");
    assert_clean(&c, "after two 64 MiB results");
    // Two dependents on one rank read the same result of another rank: it moves once.
    let mut g2 = Graph::new();
    g2.insert("p4", Task::new("pattern", vec![lit(4), lit(1)]));
    g2.insert("q8", Task::new("pattern", vec![lit(8), lit(2)]));
    g2.insert("c1", Task::new("sum_two", vec![k("p4"), k("q8")]));
    g2.insert("c2", Task::new("sum_two", vec![k("q8"), k("p4")]));
    let keys = || Keys::List(vec![Keys::One("c1".into()), Keys::One("c2".into())]);
    let want = SyncScheduler.get(&g2, keys()).unwrap();
    let before = c.stats().unwrap();
    assert_eq!(c.get(&g2, keys()).unwrap(), want);
    let s = c.stats().unwrap();
    assert_eq!(
        (s.moved_bytes - before.moved_bytes, s.moves - before.moves),
        (4 * MIB as u64, 1),
        "the 4 MiB result moves once to the rank holding the 8 MiB one: {s:?}"
    );
    let received = |s: &forkgraph::MpiStats| s.received.iter().sum::<u64>();
    assert_eq!(
        received(&s) - received(&before),
        4 * MIB as u64,
        "the rank running both dependents fetched the result once: {s:?}"
    );
    assert_clean(&c, "after a result read twice on another rank");
    // Results kept on ranks count with their size: producers of 2 MiB results are not run
    // ahead of the consumers that free them (the engine's large-result gating).
    let dir = std::env::var("FORKGRAPH_MPI_SCRATCH").unwrap() + "/gate";
    std::fs::create_dir_all(&dir).unwrap();
    let mut g2 = Graph::new();
    let mut sums = Vec::new();
    for i in 0..8i64 {
        for j in [2 * i, 2 * i + 1] {
            g2.insert(
                format!("m-{j}"),
                Task::new(
                    "produce_marked",
                    vec![lit(j), Arg::Value(dir.clone().into())],
                ),
            );
        }
        g2.insert(
            format!("s-{i}"),
            Task::new(
                "consume_pair",
                vec![
                    k(format!("m-{}", 2 * i)),
                    k(format!("m-{}", 2 * i + 1)),
                    lit(2 * i),
                    lit(2 * i + 1),
                    Arg::Value(dir.clone().into()),
                ],
            ),
        );
        sums.push(Keys::One(Key::from(format!("s-{i}"))));
    }
    assert_eq!(
        c.get(&g2, Keys::List(sums))
            .unwrap()
            .as_list()
            .unwrap()
            .len(),
        8
    );
    let peaks = std::fs::read_to_string(format!("{dir}/peaks")).unwrap();
    let peak = peaks
        .lines()
        .map(|l| l.parse::<usize>().unwrap())
        .max()
        .unwrap();
    println!("gating: at most {peak} of 16 large results alive");
    assert!(
        peak <= 8,
        "{peak} of 16 large results alive at once on 3 workers"
    );
    assert_clean(&c, "after the gated producers");
    // A requested 64 MiB result comes back whole.
    let got = c.get(&g, "p").unwrap();
    assert_eq!(got, SyncScheduler.get(&g, "p").unwrap());
    drop(got);
    assert_clean(&c, "after fetching 64 MiB");
    println!("case locality ok");
}

fn case_crash() {
    let c = cluster();
    for (func, signal) in [
        ("abort_on_rank", libc::SIGABRT),
        ("segfault_on_rank", libc::SIGSEGV),
    ] {
        let mut g = Graph::new();
        for i in 0..6 {
            g.insert(format!("t-{i}"), Task::new(func, vec![lit(i), lit(1)]));
            g.set_options(format!("t-{i}"), TaskOptions::new().retries(0));
        }
        g.insert(
            "all",
            Task::new(
                "total",
                vec![Arg::List((0..6).map(|i| k(format!("t-{i}"))).collect())],
            ),
        );
        let e = c.get(&g, "all").unwrap_err();
        let Error::Task(t) = &e else {
            panic!("not a task error: {e}")
        };
        assert_eq!(t.function, func, "{e}");
        assert!(t.key.to_string().starts_with("t-"), "{e}");
        assert!(
            matches!(t.kind, TaskErrorKind::WorkerDied { signal: Some(s), .. } if s == signal),
            "{e}"
        );
        assert_clean(&c, "after a crash");
        // The next get works and every rank is still there.
        let mut ok = Graph::new();
        for i in 0..6 {
            ok.insert(format!("o-{i}"), Task::new("inc", vec![lit(i)]));
        }
        let keys: Vec<Keys> = (0..6)
            .map(|i| Keys::One(Key::from(format!("o-{i}"))))
            .collect();
        let out = c.get(&ok, Keys::List(keys)).unwrap();
        assert_eq!(out.as_list().unwrap().len(), 6);
        assert_eq!(c.ranks(), 3);
        assert_clean(&c, "after the next get");
    }
    // A per-task timeout travels with the task to its rank.
    let mut g = Graph::new();
    for i in 0..3 {
        g.insert(
            format!("slow-{i}"),
            Task::new("nap", vec![Arg::Value(60_000u64.into())]),
        );
        g.set_options(
            format!("slow-{i}"),
            TaskOptions::new().timeout(Duration::from_millis(300)),
        );
    }
    let keys: Vec<Keys> = (0..3)
        .map(|i| Keys::One(Key::from(format!("slow-{i}"))))
        .collect();
    let e = c.get(&g, Keys::List(keys)).unwrap_err();
    let Error::Task(t) = &e else {
        panic!("not a task error: {e}")
    };
    assert!(
        matches!(t.kind, TaskErrorKind::TimedOut { millis: 300 }),
        "{e}"
    );
    assert_eq!(t.function, "nap");
    assert_clean(&c, "after a timeout");
    println!("case crash ok");
}

fn case_long() {
    let c = cluster();
    let mut g = Graph::new();
    for i in 0..6 {
        g.insert(
            format!("n-{i}"),
            Task::new("nap", vec![Arg::Value(600_000u64.into())]),
        );
    }
    let keys: Vec<Keys> = (0..6)
        .map(|i| Keys::One(Key::from(format!("n-{i}"))))
        .collect();
    println!("long get starting");
    let r = c.get(&g, Keys::List(keys));
    println!("long get returned: {r:?}");
}

fn case_panic() {
    let c = cluster();
    let mut g = Graph::new();
    g.insert("x", Task::new("inc", vec![lit(1)]));
    assert_eq!(c.get(&g, "x").unwrap(), Output::Value(2i64.into()));
    panic!("a deliberate panic on rank 0");
}

/// Rank 1 runs a thread of the user's that panics once the driver says so (a marker file),
/// during a long `get`: the job must end, not hang.
fn case_panic_rank() {
    if my_rank() == Some(1) {
        let marker = std::env::var("FORKGRAPH_MPI_SCRATCH").unwrap() + "/panic-now";
        std::thread::spawn(move || {
            while !std::path::Path::new(&marker).exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("a deliberate panic on rank 1");
        });
    }
    case_long();
}

fn case_local() {
    let c = cluster();
    assert_eq!(c.ranks(), 1);
    let g = shapes();
    let want = SyncScheduler.get(&g, shapes_request()).unwrap();
    assert_eq!(c.get(&g, shapes_request()).unwrap(), want);
    assert_eq!(c.stats().unwrap().held, vec![0]);
    println!("case local ok");
}

fn case_mismatch() {
    match MpiCluster::builder().workers_per_rank(Some(1)).init() {
        Ok(_) => println!("mismatch: init succeeded"),
        Err(e) => {
            println!("init failed: {e}");
            std::process::exit(3);
        }
    }
}

// ---- the driver ----

fn mpirun() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("mpirun"))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with a watchdog of `secs`; on expiry kills its process group and fails.
fn run(mut cmd: Command, secs: u64, on_line: impl Fn(&str, u32) + Send + 'static) -> Run {
    use std::os::unix::process::CommandExt;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    let mut child = cmd.spawn().expect("spawn mpirun");
    let pid = child.id();
    let out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(out).lines() {
            let line = line.unwrap_or_default();
            on_line(&line, pid);
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(s) => s.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the process group we created.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            panic!("watchdog: the MPI job still ran after {secs} s");
        }
    };
    Run {
        code: status.code(),
        stdout: reader.join().unwrap(),
        stderr: errs.join().unwrap(),
    }
}

fn mpi_command(mpirun: &str, case: &str, scratch: &str) -> Command {
    mpi_command_with(mpirun, case, scratch, &[])
}

/// `mpirun -np 3` of this executable in case `case`, with `env` set on every rank.
fn mpi_command_with(mpirun: &str, case: &str, scratch: &str, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(mpirun);
    cmd.args(["--oversubscribe", "--bind-to", "none", "-np", "3"])
        .args(["-x", "FORKGRAPH_MPI_CASE", "-x", "FORKGRAPH_MPI_SCRATCH"]);
    for (k, v) in env {
        cmd.args(["-x", k]).env(k, v);
    }
    cmd.arg(std::env::current_exe().unwrap())
        .env("FORKGRAPH_MPI_CASE", case)
        .env("FORKGRAPH_MPI_SCRATCH", scratch);
    cmd
}

/// The rank (from its environment) of a process of the job, if it is a rank.
fn rank_of(pid: i32) -> Option<usize> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
    let exe = std::env::current_exe().ok()?;
    if !cmd.starts_with(exe.to_str()?) {
        return None;
    }
    env.split(|&b| b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .find_map(|v| v.strip_prefix("OMPI_COMM_WORLD_RANK="))
        .and_then(|r| r.parse().ok())
}

fn check(name: &str, r: &Run, ok: bool) {
    if !ok {
        panic!(
            "case {name}: exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            r.code, r.stdout, r.stderr
        );
    }
    println!("test mpi::{name} ... ok");
}

fn driver() {
    let Some(mpirun) = mpirun() else {
        if std::env::var("FORKGRAPH_REQUIRE_MPI").as_deref() == Ok("1") {
            panic!("FORKGRAPH_REQUIRE_MPI=1 but mpirun is not on PATH");
        }
        println!("skipped: mpirun is not on PATH");
        return;
    };
    let scratch = std::env::temp_dir().join(format!("forkgraph-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let s = scratch.to_str().unwrap().to_owned();
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |n: &str| only.as_deref().is_none_or(|o| n.contains(o));

    for case in ["shapes", "locality", "crash"] {
        if !want(case) {
            continue;
        }
        // In the locality case 64 MiB arrays travel in 64 parts (the 1 GiB part size, scaled
        // down).
        let env = if case == "locality" {
            vec![("FORKGRAPH_MPI_MAX_CHUNK", (1 << 20).to_string())]
        } else {
            vec![]
        };
        let r = run(mpi_command_with(&mpirun, case, &s, &env), 300, |_, _| {});
        let ok = r.code == Some(0) && r.stdout.contains(&format!("case {case} ok"));
        check(case, &r, ok);
    }

    if want("local") {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env("FORKGRAPH_MPI_CASE", "local");
        for v in ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"] {
            cmd.env_remove(v);
        }
        let r = run(cmd, 120, |_, _| {});
        let ok = r.code == Some(0) && r.stdout.contains("case local ok");
        check("local", &r, ok);
    }

    if want("panic") {
        let r = run(mpi_command(&mpirun, "panic", &s), 120, |_, _| {});
        let ok = r.code.is_some_and(|c| c != 0)
            && r.stderr.contains("a deliberate panic on rank 0")
            && r.stderr.contains("MPI_Abort");
        check("panic", &r, ok);
    }

    if want("kill") {
        // SIGKILL rank 1 once the long get runs.
        let (r, pids) = long_get_ended_by(&mpirun, "long", &s, |pids, _| {
            let victim = pids.iter().copied().find(|&p| rank_of(p) == Some(1));
            if let Some(v) = victim {
                // SAFETY: kill(2) on a process of the job this test started.
                unsafe { libc::kill(v, libc::SIGKILL) };
            }
        });
        let ok = r.code.is_some_and(|c| c != 0) && pids.len() >= 9 && all_gone(&pids);
        check("kill", &r, ok);
    }

    if want("panic_rank") {
        // A thread on rank 1 panics once the long get runs.
        let (r, pids) = long_get_ended_by(&mpirun, "panic_rank", &s, |_, scratch| {
            std::fs::write(format!("{scratch}/panic-now"), b"").unwrap();
        });
        let ok = r.code.is_some_and(|c| c != 0)
            && r.stderr.contains("a deliberate panic on rank 1")
            && r.stderr.contains("MPI_Abort")
            && !r.stdout.contains("long get returned")
            && pids.len() >= 9
            && all_gone(&pids);
        check("panic_rank", &r, ok);
    }

    if want("mismatch") {
        if let Some(other) = peer_executable() {
            let mut cmd = Command::new(&mpirun);
            cmd.args(["--oversubscribe", "--bind-to", "none"])
                .args(["-x", "FORKGRAPH_MPI_CASE", "-np", "2"])
                .arg(std::env::current_exe().unwrap())
                .args([":", "-np", "1"])
                .arg(other)
                .env("FORKGRAPH_MPI_CASE", "mismatch");
            let r = run(cmd, 120, |_, _| {});
            let ok = r.code.is_some_and(|c| c != 0)
                && r.stdout.contains("init failed")
                && r.stdout.contains("rank 2 (function table)");
            check("mismatch", &r, ok);
        } else {
            assert!(
                std::env::var("FORKGRAPH_REQUIRE_MPI").as_deref() != Ok("1"),
                "FORKGRAPH_REQUIRE_MPI=1 but the mpi_peer example could not be built"
            );
            println!("test mpi::mismatch ... skipped: the mpi_peer example could not be built");
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Runs `case` (which prints "long get starting" and then waits long on every rank) and calls
/// `end` with every process of the job once they are all up (mpirun, 3 ranks, each with a
/// fork server and a worker) and the scratch dir; the run and those processes.
fn long_get_ended_by(
    mpirun: &str,
    case: &str,
    scratch: &str,
    end: impl Fn(&[i32], &str) + Send + 'static,
) -> (Run, Vec<i32>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i32>::new()));
    let seen2 = seen.clone();
    let dir = scratch.to_owned();
    let r = run(mpi_command(mpirun, case, scratch), 120, move |line, pid| {
        if line.contains("long get starting") {
            // Let the units reach the ranks' workers (a watchdog bounds the test anyway).
            let mut pids = Vec::new();
            for _ in 0..200 {
                pids = descendants(pid as i32);
                if pids.len() >= 9 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            *seen2.lock().unwrap() = pids.clone();
            end(&pids, &dir);
        }
    });
    let pids = seen.lock().unwrap().clone();
    (r, pids)
}

/// Whether every process in `pids` ends (bounded wait: fork servers notice their rank's end).
fn all_gone(pids: &[i32]) -> bool {
    let mut ok = true;
    for p in pids {
        let mut gone = false;
        for _ in 0..200 {
            if !alive(*p) {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !gone {
            eprintln!("process {p} of the job is still running");
            ok = false;
        }
    }
    ok
}

/// The `mpi_peer` example: another executable with another function table (built, or brought
/// up to date, here).
fn peer_executable() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let peer = profile_dir.join("examples").join("mpi_peer");
    {
        // Always: a stale peer would speak an older protocol.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--example", "mpi_peer", "--features", "mpi"]);
        if profile_dir.file_name()? == "release" {
            cmd.arg("--release");
        }
        let st = cmd.status().ok()?;
        if !st.success() {
            return None;
        }
    }
    peer.is_file().then_some(peer)
}

fn main() {
    match std::env::var("FORKGRAPH_MPI_CASE").as_deref() {
        Ok("shapes") => case_shapes(),
        Ok("locality") => case_locality(),
        Ok("crash") => case_crash(),
        Ok("long") => case_long(),
        Ok("panic") => case_panic(),
        Ok("panic_rank") => case_panic_rank(),
        Ok("local") => case_local(),
        Ok("mismatch") => case_mismatch(),
        Ok(other) => panic!("unknown case {other}"),
        Err(_) => driver(),
    }
}
