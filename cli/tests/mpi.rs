//! `forkgraph run` across the ranks of an MPI job, on one machine: the built binary (feature
//! `mpi`) under `mpirun --oversubscribe -np 3`. Without `mpirun` it prints "skipped" and
//! passes, unless `FORKGRAPH_REQUIRE_MPI=1`. Every run has a watchdog.
//!
//! Run: `cargo test -p forkgraph-cli --features mpi --test mpi`.

mod common;

#[path = "../../tests/support/proc_tree.rs"]
mod proc_tree;

use proc_tree::{alive, children, descendants};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{assert_no_process_left, marker, temporaries, wait_for, TempDir};

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

impl Run {
    fn show(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `mpirun -np 3 forkgraph ARGS`, with the test marker in every rank's environment.
fn job(mpirun: &str, args: &[&str], marker: &str) -> Command {
    let mut cmd = Command::new(mpirun);
    cmd.args(["--oversubscribe", "--bind-to", "none", "-np", "3"])
        .args(["-x", "FG_TEST_MARKER"])
        .arg(common::bin())
        .args(args)
        .env("FG_TEST_MARKER", marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    cmd
}

/// Runs a job to its end with a watchdog of `secs` (kills its process group and fails);
/// `during(pid)` runs while it does.
fn run(mut cmd: Command, secs: u64, during: impl FnOnce(u32)) -> Run {
    let mut child = cmd.spawn().expect("spawn mpirun");
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| during(pid))) {
        // SAFETY: kill(2) on the process group we created.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        std::panic::resume_unwind(p);
    }
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
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

/// The rank of a process of the job (from its environment), if it is a rank's runner.
fn rank_of(pid: i32) -> Option<usize> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    if !exe.to_string_lossy().ends_with("forkgraph") {
        return None;
    }
    let vars: Vec<&str> = env
        .split(|&b| b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .collect();
    if vars.iter().any(|v| v.starts_with("FORKGRAPH_FORK_SERVER=")) {
        return None;
    }
    vars.iter()
        .find_map(|v| v.strip_prefix("OMPI_COMM_WORLD_RANK="))
        .and_then(|r| r.parse().ok())
}

fn check(name: &str, ok: bool, r: &Run) {
    assert!(ok, "case {name}: {}", r.show());
    println!("test mpi::{name} ... ok");
}

/// Three commands that can only finish together (each waits for the other two's markers)
/// record the rank they ran on; a report gathers them. Then the same job resumes: nothing
/// runs again (state and last-run.json on rank 0, records from every rank's workers).
fn case_spread(mpirun: &str) {
    let d = TempDir::new("mpi-spread");
    let m = marker("mpi-spread");
    d.write(
        "g.toml",
        r#"
[[task]]
key = "meet{i}"
for_each = { i = [1, 2, 3] }
outputs = ["rank/{i}.txt"]
cmd = """
mkdir -p meet; touch meet/{i}; n=0
while [ "$(ls meet | wc -l)" -lt 3 ]; do n=$((n+1)); [ $n -gt 1200 ] && exit 9; sleep 0.05; done
echo "$OMPI_COMM_WORLD_RANK" > {out}
"""

[[task]]
key = "report"
inputs = ["rank/1.txt", "rank/2.txt", "rank/3.txt"]
outputs = ["ranks.txt"]
cmd = "cat {in} | sort > {out}"
"#,
    );
    let g = d.path().join("g.toml");
    let g = g.to_str().unwrap();
    let r = run(
        job(mpirun, &["run", "-j", "1", "--checksum", g], &m),
        300,
        |_| {},
    );
    let ok = r.code == Some(0)
        && d.read("ranks.txt") == "0\n1\n2\n"
        && r.stderr.contains("4 ran, 0 skipped");
    check("spread", ok, &r);
    let r = run(
        job(mpirun, &["run", "-j", "1", "--checksum", g], &m),
        300,
        |_| {},
    );
    let ok = r.code == Some(0)
        && r.stderr.contains("0 ran, 4 skipped")
        && r.stderr.matches("forkgraph: done").count() == 1;
    check("spread-resume", ok, &r);
    assert_no_process_left(&m, 30);
}

/// A command past its timeout on each rank: its whole group (a background child included)
/// is killed by that rank's worker, and the failures reach rank 0's summary.
fn case_timeout(mpirun: &str) {
    let d = TempDir::new("mpi-timeout");
    let m = marker("mpi-timeout");
    d.write(
        "g.toml",
        r#"
[pool]
kill_grace = 0.2

[[task]]
key = "slow{i}"
for_each = { i = [1, 2, 3] }
timeout = 1
cmd = "echo rank $OMPI_COMM_WORLD_RANK; sleep 1000 & sleep 1000"
"#,
    );
    let g = d.path().join("g.toml");
    let r = run(
        job(mpirun, &["run", "-k", "-j", "1", g.to_str().unwrap()], &m),
        300,
        |_| {},
    );
    let ok = r.code == Some(1)
        && r.stderr.matches("timed out after").count() >= 3
        && r.stderr.contains("3 FAILED");
    check("timeout", ok, &r);
    assert_no_process_left(&m, 30);
}

/// Rank 1 is SIGKILLed while the slow commands run (two workers per rank: the six
/// independent tasks spread two per rank) and the quick ones are done: the job ends with a
/// non-zero status, no process of it is left (commands and their background children
/// included), no output is partial; the rerun redoes only what had not finished.
fn case_lost_node(mpirun: &str) {
    let d = TempDir::new("mpi-lost");
    let m = marker("mpi-lost");
    d.write(
        "g.toml",
        r#"
[[task]]
key = "quick{i}"
for_each = { i = [1, 2, 3] }
outputs = ["out/quick{i}.txt"]
cmd = "echo quick{i} > {out}; echo quick{i} >> runs.log"

[[task]]
key = "slow{i}"
for_each = { i = [1, 2, 3] }
outputs = ["out/slow{i}.txt"]
cmd = "printf partial > {out}; if [ -e go ]; then echo complete >> {out}; else mkdir -p started; echo $OMPI_COMM_WORLD_RANK > started/{i}; sleep 1000 & sleep 1000; fi"
"#,
    );
    let g = d.path().join("g.toml");
    let g = g.to_str().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i32>::new()));
    let seen2 = seen.clone();
    let dir = d.path().to_path_buf();
    let r = run(job(mpirun, &["run", "-j", "2", g], &m), 300, move |pid| {
        wait_for(
            "the quick commands done and the slow ones running",
            120,
            || {
                std::fs::read_dir(dir.join("started")).map_or(0, |r| r.count()) == 3
                    && std::fs::read_to_string(dir.join("runs.log"))
                        .is_ok_and(|s| s.lines().count() == 3)
            },
        );
        let ranks: Vec<String> = (1..=3)
            .filter_map(|i| std::fs::read_to_string(dir.join(format!("started/{i}"))).ok())
            .collect();
        println!("slow commands on ranks {ranks:?}");
        let pids = descendants(pid as i32);
        let victim = children(pid as i32)
            .into_iter()
            .find(|&p| rank_of(p) == Some(1))
            .expect("rank 1 among mpirun's children");
        *seen2.lock().unwrap() = pids;
        // SAFETY: kill(2) on a process of the job this test started.
        unsafe { libc::kill(victim, libc::SIGKILL) };
    });
    let pids = seen.lock().unwrap().clone();
    let mut ok = r.code.is_some_and(|c| c != 0) && pids.len() >= 15;
    for p in &pids {
        let mut gone = false;
        for _ in 0..600 {
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
    for i in 1..=3 {
        ok &= !d.exists(&format!("out/slow{i}.txt"));
    }
    ok &= d.read("runs.log").lines().count() == 3;
    check("lost-node", ok, &r);
    assert_no_process_left(&m, 30);

    d.write("go", "");
    let r = run(job(mpirun, &["run", "-j", "2", g], &m), 300, |_| {});
    let mut ok = r.code == Some(0) && r.stderr.contains("3 ran, 3 skipped");
    ok &= d.read("runs.log").lines().count() == 3;
    for i in 1..=3 {
        ok &= d.read(&format!("out/slow{i}.txt")) == "partialcomplete\n";
    }
    ok &= temporaries(d.path()).is_empty();
    check("lost-node-resume", ok, &r);
    assert_no_process_left(&m, 30);
}

/// SIGINT to mpirun while a command runs on every rank: rank 0's runner makes the stop
/// marker (shared folder), and every rank's worker sends SIGTERM to its command's group (the
/// commands trap it and say so) before the launcher ends the job; nothing is left.
fn case_interrupt(mpirun: &str) {
    let d = TempDir::new("mpi-int");
    let m = marker("mpi-int");
    d.write(
        "g.toml",
        r#"
[pool]
kill_grace = 30

[[task]]
key = "t{i}"
for_each = { i = [1, 2, 3] }
cmd = "trap 'echo $OMPI_COMM_WORLD_RANK > term{i}; exit 3' TERM; mkdir -p started; touch started/{i}; sleep 1000 & wait"
"#,
    );
    let g = d.path().join("g.toml");
    let dir = d.path().to_path_buf();
    let r = run(
        job(mpirun, &["run", "-j", "1", g.to_str().unwrap()], &m),
        300,
        move |pid| {
            wait_for("a command running on every rank", 120, || {
                std::fs::read_dir(dir.join("started")).map_or(0, |r| r.count()) == 3
            });
            // SAFETY: kill(2) on the mpirun this test started.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
        },
    );
    let mut ranks: Vec<String> = (1..=3)
        .filter_map(|i| std::fs::read_to_string(d.path().join(format!("term{i}"))).ok())
        .collect();
    ranks.sort();
    let ok = r.code.is_some_and(|c| c != 0) && ranks == ["0\n", "1\n", "2\n"];
    check("interrupt", ok, &r);
    assert_no_process_left(&m, 30);
}

fn main() {
    let Some(mpirun) = mpirun() else {
        if std::env::var("FORKGRAPH_REQUIRE_MPI").as_deref() == Ok("1") {
            panic!("FORKGRAPH_REQUIRE_MPI=1 but mpirun is not on PATH");
        }
        println!("skipped: mpirun is not on PATH");
        return;
    };
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |n: &str| only.as_deref().is_none_or(|o| n.contains(o));
    if want("spread") {
        case_spread(&mpirun);
    }
    if want("timeout") {
        case_timeout(&mpirun);
    }
    if want("interrupt") {
        case_interrupt(&mpirun);
    }
    if want("lost") {
        case_lost_node(&mpirun);
    }
}
