//! `[pool.sandbox]`: commands run in sandboxed workers. A write outside the allowed folders
//! and a TCP connection fail (while the same files without the sandbox succeed), a pipeline
//! with inputs and outputs completes and resumes, and bad settings are refused before anything
//! runs.

mod common;

use common::*;
use std::net::TcpListener;

/// Whether this kernel can give the CLI's sandbox (every layer); when it cannot, the runner
/// must refuse to start with exit code 3 instead, which the tests then check.
fn sandbox_available() -> bool {
    forkgraph::Sandbox::strict()
        .allow_exec(true)
        .max_processes(64)
        .check()
        .is_ok()
}

/// Runs `forkgraph run FILE` under a watchdog.
fn run_file(d: &TempDir, file: &str, extra: &[&str], name: &str) -> std::process::Output {
    let m = marker(name);
    let g = d.path().join(file);
    let mut args = vec!["run", g.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_watched(forkgraph(&args, &m), 120)
}

/// When the sandbox is unavailable, a sandboxed run is refused with exit code 3 naming the
/// layer; returns whether the test should go on.
fn expect_sandbox_or_refusal(o: &std::process::Output) -> bool {
    if sandbox_available() {
        return true;
    }
    assert_code(o, 3);
    assert!(stderr(o).contains("[pool.sandbox]"), "{}", stderr(o));
    false
}

fn writer_graph(target: &std::path::Path, sandbox: bool) -> String {
    format!(
        "{}[[task]]\nkey = \"escape\"\nargv = [\"/bin/sh\", \"-c\", \"echo x > {}\"]\n",
        if sandbox { "[pool.sandbox]\n" } else { "" },
        target.display()
    )
}

#[test]
fn a_write_outside_the_allowed_folders_fails_in_the_sandbox_only() {
    let d = TempDir::new("sbx-write");
    let outside = TempDir::new("sbx-write-outside");
    let target = outside.path().join("escaped.txt");

    d.write("open.toml", &writer_graph(&target, false));
    let o = run_file(&d, "open.toml", &[], "sbx-write-open");
    assert_code(&o, 0);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "x\n");
    std::fs::remove_file(&target).unwrap();

    d.write("boxed.toml", &writer_graph(&target, true));
    let o = run_file(&d, "boxed.toml", &[], "sbx-write-boxed");
    if !expect_sandbox_or_refusal(&o) {
        return;
    }
    assert_code(&o, 1);
    assert!(
        !target.exists(),
        "the sandboxed command wrote {}",
        target.display()
    );
    let err = stderr(&o);
    assert!(err.contains("task `escape` failed: exit code 2"), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("FAILED      escape"), "{err}");
    let log = d.read(".forkgraph/boxed/logs/escape.log");
    assert!(log.contains("Permission denied"), "{log}");
    let last = d.read(".forkgraph/boxed/last-run.json");
    assert!(last.contains("\"failed\""), "{last}");
}

fn connect_graph(port: u16, sandbox: bool) -> String {
    format!(
        "{}[[task]]\nkey = \"connect\"\n\
         argv = [\"/bin/bash\", \"-c\", \"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected\"]\n",
        if sandbox { "[pool.sandbox]\n" } else { "" },
    )
}

#[test]
fn a_tcp_connection_fails_in_the_sandbox_only() {
    if !std::path::Path::new("/bin/bash").exists() {
        panic!("this test needs /bin/bash (its /dev/tcp) to open a TCP connection");
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = TempDir::new("sbx-net");

    d.write("open.toml", &connect_graph(port, false));
    let o = run_file(&d, "open.toml", &[], "sbx-net-open");
    assert_code(&o, 0);
    assert!(d
        .read(".forkgraph/open/logs/connect.log")
        .contains("connected"));
    // The connection reached the listener (it waits in the backlog).
    listener
        .accept()
        .expect("the unsandboxed command connected");

    d.write("boxed.toml", &connect_graph(port, true));
    let o = run_file(&d, "boxed.toml", &[], "sbx-net-boxed");
    if !expect_sandbox_or_refusal(&o) {
        return;
    }
    assert_code(&o, 1);
    let log = d.read(".forkgraph/boxed/logs/connect.log");
    assert!(!log.contains("connected"), "{log}");
    assert!(
        stderr(&o).contains("task `connect` failed"),
        "{}",
        stderr(&o)
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the sandboxed command reached the listener: {other:?}"),
    }
}

const PIPELINE: &str = r#"
[pool]
jobs = 2

[pool.sandbox]
read_write = ["journal"]     # besides the outputs' folders, where commands note their runs
memory_limit = "1G"

[vars]
samples = ["a", "b", "c"]

[[task]]
key = "count-{s}"
for_each = { s = "samples" }
inputs = ["reads/{s}.txt"]
outputs = ["counts/{s}.txt"]
cmd = "wc -c < {in} > {out}; echo ran >> journal/runs.log"

[[task]]
key = "total"
inputs = ["counts/{*samples}.txt"]
outputs = ["out/total.txt"]
cmd = "cat {in} | awk '{s += $1} END {print s}' > {out}; echo ran >> journal/runs.log"
"#;

fn runs(d: &TempDir) -> usize {
    if d.exists("journal/runs.log") {
        d.read("journal/runs.log").lines().count()
    } else {
        0
    }
}

#[test]
fn a_sandboxed_pipeline_completes_and_resumes() {
    for checksum in [false, true] {
        let d = TempDir::new("sbx-pipeline");
        for s in ["a", "b", "c"] {
            d.write(&format!("reads/{s}.txt"), &format!("reads of {s}\n"));
        }
        std::fs::create_dir_all(d.path().join("journal")).unwrap();
        d.write("graph.toml", PIPELINE);
        let extra: &[&str] = if checksum { &["--checksum"] } else { &[] };
        let o = run_file(&d, "graph.toml", extra, "sbx-pipeline");
        if !expect_sandbox_or_refusal(&o) {
            return;
        }
        assert_code(&o, 0);
        assert_eq!(d.read("out/total.txt").trim(), "33");
        assert_eq!(runs(&d), 4);
        assert!(
            temporaries(d.path()).is_empty(),
            "{:?}",
            temporaries(d.path())
        );

        let o = run_file(&d, "graph.toml", extra, "sbx-pipeline");
        assert_code(&o, 0);
        assert!(stderr(&o).contains("0 ran, 4 skipped"), "{}", stderr(&o));
        assert_eq!(runs(&d), 4);

        // A changed input re-runs its count and the total, still in the sandbox.
        d.write("reads/b.txt", "more reads of b\n");
        if !checksum {
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
            std::fs::File::options()
                .write(true)
                .open(d.path().join("reads/b.txt"))
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        let o = run_file(&d, "graph.toml", extra, "sbx-pipeline");
        assert_code(&o, 0);
        assert_eq!(runs(&d), 6, "{}", stderr(&o));
        assert_eq!(d.read("out/total.txt").trim(), "38");
    }
}

#[test]
fn bad_sandbox_settings_are_refused_before_anything_runs() {
    let d = TempDir::new("sbx-bad");
    let task = "[[task]]\nkey = \"t\"\ncmd = \"echo ran > ran.txt\"\n";
    for (settings, expected) in [
        ("netwrk = true", "unknown field `netwrk`"),
        ("max_processes = 1", "max_processes must be at least 2"),
        ("memory_limit = \"12Q\"", "sandbox.memory_limit"),
        ("keep_env = [\"A=B\"]", "sandbox.keep_env"),
        ("read_only = [\"no-such-folder\"]", "no-such-folder"),
    ] {
        d.write("g.toml", &format!("[pool.sandbox]\n{settings}\n{task}"));
        let o = run_file(&d, "g.toml", &[], "sbx-bad");
        assert_code(&o, 2);
        assert!(stderr(&o).contains(expected), "{settings}: {}", stderr(&o));
        assert!(!d.exists("ran.txt"), "{settings}: the task ran");
    }
    // The same in JSON.
    d.write(
        "g.json",
        r#"{"pool": {"sandbox": {"network": "yes"}}, "task": [{"key": "t", "cmd": "true"}]}"#,
    );
    let o = run_file(&d, "g.json", &[], "sbx-bad-json");
    assert_code(&o, 2);
    assert!(stderr(&o).contains("g.json:1:"), "{}", stderr(&o));
}

/// Per-task `sandbox`: each distinct setting runs in its own pool; a task's values replace
/// `[pool.sandbox]`'s and its lists add to them; `enabled = false` runs it unsandboxed; `-j`
/// bounds the commands of all the pools together.
#[test]
fn per_task_sandboxes_run_in_their_own_pools_and_j_bounds_them_all() {
    let d = TempDir::new("sbx-task");
    let outside = TempDir::new("sbx-task-outside");
    let extra = TempDir::new("sbx-task-extra");
    // (`mkdir -p` and `rmdir` make system calls outside the sandbox's allow-list; `mkdir` and
    // `rm -r` do not.)
    let slot = "if mkdir {slots}/0 2>/dev/null; then :; else echo {i} >> {over}; fi; sleep 0.05; rm -r {slots}/0; ";
    let slots = d.path().join("slots");
    let over = d.path().join("overflow");
    let slot = slot
        .replace("{slots}", slots.to_str().unwrap())
        .replace("{over}", over.to_str().unwrap());
    d.write(
        "g.toml",
        &format!(
            r#"
[pool.sandbox]
read_write = ["{slots}", "{dir}"]

[[task]]
key = "boxed{{i}}"
for_each = {{ i = [1, 2, 3] }}
cmd = "{slot}echo x > {outside}/boxed{{i}} || echo > boxed-refused{{i}}"

[[task]]
key = "open{{i}}"
for_each = {{ i = [1, 2, 3] }}
sandbox = {{ enabled = false }}
cmd = "{slot}echo x > {outside}/open{{i}}"

[[task]]
key = "extra{{i}}"
for_each = {{ i = [1, 2, 3] }}
sandbox = {{ read_write = ["{extra}"] }}
cmd = "{slot}echo x > {extra}/extra{{i}} && (echo x > {outside}/extra{{i}} || echo > extra-refused{{i}})"
"#,
            slots = slots.display(),
            dir = d.path().display(),
            outside = outside.path().display(),
            extra = extra.path().display(),
            slot = slot,
        ),
    );
    std::fs::create_dir_all(&slots).unwrap();
    let o = run_file(&d, "g.toml", &["-j", "1"], "sbx-task");
    if !sandbox_available() {
        assert_code(&o, 3);
        return;
    }
    assert_code(&o, 0);
    assert!(stderr(&o).contains("9 ran"), "{}", stderr(&o));
    for i in 1..=3 {
        assert!(outside.exists(&format!("open{i}")), "unsandboxed task {i}");
        assert!(
            !outside.exists(&format!("boxed{i}")),
            "[pool.sandbox] task {i}"
        );
        assert!(d.exists(&format!("boxed-refused{i}")));
        assert!(extra.exists(&format!("extra{i}")), "its own read_write");
        assert!(!outside.exists(&format!("extra{i}")));
        assert!(
            d.exists(&format!("extra-refused{i}")),
            "the pool's rules still hold"
        );
    }
    assert!(
        !d.exists("overflow"),
        "-j 1 exceeded: {}",
        d.read("overflow")
    );
}

#[test]
fn a_bad_task_sandbox_points_at_its_sandbox_field() {
    let d = TempDir::new("sbx-task-bad");
    d.write(
        "g.toml",
        "[[task]]\nkey = \"a\"\ncmd = \"true\"\nsandbox = { max_processes = 1 }\n",
    );
    let o = run_file(&d, "g.toml", &[], "sbx-task-bad");
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("g.toml:4:1: task `a`: sandbox.max_processes must be at least 2"),
        "{}",
        stderr(&o)
    );
}
