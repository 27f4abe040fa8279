//! The `forkgraph` binary on real commands: exit codes, failures, timeouts, process groups,
//! resume, atomic outputs, `-j`, keep-going, and the other subcommands.

mod common;

use common::*;
use std::time::{Duration, SystemTime};

const PIPELINE: &str = r#"
[pool]
jobs = 2

[vars]
samples = ["a", "b", "c"]

[[task]]
key = "count-{s}"
for_each = { s = "samples" }
inputs = ["reads/{s}.txt"]
outputs = ["counts/{s}.txt"]
cmd = "wc -c < {in} > {out}; echo ran >> runs.log"

[[task]]
key = "total"
inputs = ["counts/{*samples}.txt"]
outputs = ["total.txt"]
cmd = "cat {in} | awk '{s += $1} END {print s}' > {out}; echo ran >> runs.log"
"#;

fn pipeline_dir(name: &str) -> TempDir {
    let d = TempDir::new(name);
    for s in ["a", "b", "c"] {
        d.write(&format!("reads/{s}.txt"), &format!("reads of {s}\n"));
    }
    d.write("graph.toml", PIPELINE);
    d
}

fn runs(d: &TempDir) -> usize {
    if d.exists("runs.log") {
        d.read("runs.log").lines().count()
    } else {
        0
    }
}

fn set_mtime(p: &std::path::Path, t: SystemTime) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(t).unwrap();
}

#[test]
fn pipeline_runs_then_resumes_by_modification_time() {
    let d = pipeline_dir("mtime");
    let m = marker("mtime");
    let g = d.path().join("graph.toml");
    let o = run_watched(forkgraph(&["run", g.to_str().unwrap()], &m), 120);
    assert_code(&o, 0);
    assert_eq!(d.read("total.txt").trim(), "33");
    assert_eq!(runs(&d), 4);
    assert!(stderr(&o).contains("4 ran, 0 skipped"), "{}", stderr(&o));

    let o = run_watched(forkgraph(&["run", g.to_str().unwrap()], &m), 120);
    assert_code(&o, 0);
    assert_eq!(runs(&d), 4, "nothing reran: {}", stderr(&o));
    assert!(stderr(&o).contains("0 ran, 4 skipped"), "{}", stderr(&o));

    // One input newer than its output: that count and the total run again.
    set_mtime(
        &d.path().join("reads/b.txt"),
        SystemTime::now() + Duration::from_secs(60),
    );
    let o = run_watched(forkgraph(&["run", g.to_str().unwrap()], &m), 120);
    assert_code(&o, 0);
    assert_eq!(runs(&d), 6, "{}", stderr(&o));
    assert!(stderr(&o).contains("2 ran, 2 skipped"), "{}", stderr(&o));
    assert!(temporaries(d.path()).is_empty());
    assert_no_process_left(&m, 10);
}

#[test]
fn checksum_resume_ignores_times_and_sees_contents_and_command_lines() {
    let d = pipeline_dir("checksum");
    let m = marker("checksum");
    let g = d.path().join("graph.toml");
    let g = g.to_str().unwrap();
    assert_code(
        &run_watched(forkgraph(&["run", "--checksum", g], &m), 120),
        0,
    );
    assert_eq!(runs(&d), 4);
    // Newer time, same contents: skipped with --checksum.
    set_mtime(
        &d.path().join("reads/a.txt"),
        SystemTime::now() + Duration::from_secs(60),
    );
    let o = run_watched(forkgraph(&["run", "--checksum", g], &m), 120);
    assert_code(&o, 0);
    assert_eq!(runs(&d), 4, "{}", stderr(&o));
    // New contents: that count and the total.
    d.write("reads/c.txt", "other reads of c, longer\n");
    let o = run_watched(forkgraph(&["run", "--checksum", g], &m), 120);
    assert_code(&o, 0);
    assert_eq!(runs(&d), 6, "{}", stderr(&o));
    assert_eq!(d.read("total.txt").trim(), "47");
    // A changed command line: the total again.
    d.write(
        "graph.toml",
        &PIPELINE.replace("{print s}", "{print s + 0}"),
    );
    let o = run_watched(forkgraph(&["run", "--checksum", g], &m), 120);
    assert_code(&o, 0);
    assert_eq!(runs(&d), 7, "{}", stderr(&o));
    assert!(stderr(&o).contains("1 ran, 3 skipped"), "{}", stderr(&o));
}

#[test]
fn failures_show_exit_code_signal_and_log_tail() {
    let d = TempDir::new("fail");
    let m = marker("fail");
    d.write(
        "g.toml",
        r#"
[[task]]
key = "exit3"
cmd = "echo first line; echo the-last-words >&2; exit 3"

[[task]]
key = "segv"
cmd = "echo before the crash; kill -SEGV $$"

[[task]]
key = "false"
argv = ["false"]

[[task]]
key = "true"
argv = ["true"]

[[task]]
key = "no-cwd"
cwd = "missing-dir"
cmd = "true"

[[task]]
key = "no-program"
argv = ["forkgraph-no-such-program"]
"#,
    );
    let o = run_watched(
        forkgraph(
            &["run", "-k", d.path().join("g.toml").to_str().unwrap()],
            &m,
        ),
        120,
    );
    assert_code(&o, forkgraph_cli::EXIT_TASK_FAILED);
    let e = stderr(&o);
    assert!(e.contains("task `exit3` failed: exit code 3"), "{e}");
    assert!(e.contains("the-last-words"), "{e}");
    assert!(
        e.contains("task `segv` failed: killed by signal 11 (SIGSEGV)"),
        "{e}"
    );
    assert!(e.contains("before the crash"), "{e}");
    assert!(e.contains("task `false` failed: exit code 1"), "{e}");
    // A missing working directory is named as such, not as a missing /bin/sh.
    assert!(
        e.contains("task `no-cwd` failed: could not start: its working directory ")
            && e.contains("missing-dir does not exist"),
        "{e}"
    );
    assert!(
        e.contains(
            "task `no-program` failed: could not start: forkgraph-no-such-program: No such file"
        ),
        "{e}"
    );
    assert!(e.contains("1 ran, 0 skipped, 5 FAILED"), "{e}");
    let log = d.read(".forkgraph/g/logs/exit3.log");
    assert_eq!(log, "first line\nthe-last-words\n");
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let d = TempDir::new("timeout");
    let m = marker("timeout");
    d.write(
        "g.toml",
        r#"
[pool]
kill_grace = 0.2

[[task]]
key = "slow"
cmd = "sleep 1000 & echo $! > bg.pid; trap '' TERM; sleep 1000"
timeout = 0.5
"#,
    );
    let o = run_watched(
        forkgraph(&["run", d.path().join("g.toml").to_str().unwrap()], &m),
        120,
    );
    assert_code(&o, 1);
    assert!(stderr(&o).contains("timed out after"), "{}", stderr(&o));
    assert_no_process_left(&m, 10);
}

#[test]
fn background_children_die_with_their_command_before_the_next_starts() {
    let d = TempDir::new("bg");
    let m = marker("bg");
    // `first` leaves a child in its group and one that left the group with setsid; `second`
    // runs after it and fails if either is still alive.
    d.write(
        "g.toml",
        r#"
[[task]]
key = "first"
cmd = "sleep 1000 & echo $! > in-group.pid; setsid sleep 1000 & echo $! > setsid.pid; true"

[[task]]
key = "second"
deps = ["first"]
cmd = "for p in $(cat in-group.pid setsid.pid); do if kill -0 $p 2>/dev/null; then echo alive $p; exit 1; fi; done"
"#,
    );
    let o = run_watched(
        forkgraph(
            &["run", "-j", "2", d.path().join("g.toml").to_str().unwrap()],
            &m,
        ),
        120,
    );
    assert_code(&o, 0);
    assert_no_process_left(&m, 10);
}

#[test]
fn keep_going_runs_what_does_not_depend_on_a_failure() {
    let d = TempDir::new("keepgoing");
    let m = marker("keepgoing");
    d.write(
        "g.toml",
        r#"
[[task]]
key = "bad"
argv = ["false"]

[[task]]
key = "after-bad"
deps = ["bad"]
cmd = "touch after-bad.done"

[[task]]
key = "independent"
deps = []
cmd = "touch independent.done"

[[task]]
key = "after-independent"
deps = ["independent"]
cmd = "touch after-independent.done"
"#,
    );
    let o = run_watched(
        forkgraph(
            &[
                "run",
                "-k",
                "-j",
                "1",
                d.path().join("g.toml").to_str().unwrap(),
            ],
            &m,
        ),
        120,
    );
    assert_code(&o, 1);
    assert!(d.exists("independent.done") && d.exists("after-independent.done"));
    assert!(!d.exists("after-bad.done"));
    let e = stderr(&o);
    assert!(
        e.contains("after-bad") && e.contains("depends on failed bad"),
        "{e}"
    );
    // Without -k, what never started says why: the run stopped at the failure. (`-j 1`;
    // of two equal roots the smaller key runs first, so `a-bad` fails before `z-later`.)
    d.write(
        "stop.toml",
        "[[task]]\nkey = \"a-bad\"\nargv = [\"false\"]\n\n\
         [[task]]\nkey = \"z-later\"\nargv = [\"true\"]\n",
    );
    let o = run_watched(
        forkgraph(
            &[
                "run",
                "-j",
                "1",
                d.path().join("stop.toml").to_str().unwrap(),
            ],
            &m,
        ),
        120,
    );
    assert_code(&o, 1);
    let e = stderr(&o);
    let line = e
        .lines()
        .find(|l| l.contains("not run") && l.contains("z-later"))
        .unwrap_or_else(|| panic!("no `not run` line for z-later: {e}"));
    assert!(
        line.contains("stopped at the first failure") && line.contains("-k"),
        "{e}"
    );
}

#[test]
fn outputs_are_atomic_and_in_place_writes_are_refused() {
    let d = TempDir::new("atomic");
    let m = marker("atomic");
    d.write(
        "g.toml",
        r#"
[[task]]
key = "good"
outputs = ["out/good.txt"]
cmd = "echo good > {out}"

[[task]]
key = "env"
outputs = ["out/env.txt"]
cmd = "echo env > \"$FORKGRAPH_OUT_0\""

[[task]]
key = "in-place"
outputs = ["out/in-place.txt"]
cmd = "echo oops > out/in-place.txt"

[[task]]
key = "fails-midway"
outputs = ["out/partial.txt"]
cmd = "echo half > {out}; exit 1"

[[task]]
key = "not-atomic"
outputs = ["out/direct.txt"]
atomic = false
cmd = "echo direct > out/direct.txt"

[[task]]
key = "in-place-then-fails"
outputs = ["out/in-place-failed.txt"]
cmd = "echo half > out/in-place-failed.txt; exit 1"
"#,
    );
    let g = d.path().join("g.toml");
    let o = run_watched(forkgraph(&["run", "-k", g.to_str().unwrap()], &m), 120);
    assert_code(&o, 1);
    assert_eq!(d.read("out/good.txt"), "good\n");
    assert_eq!(d.read("out/env.txt"), "env\n");
    assert_eq!(d.read("out/direct.txt"), "direct\n");
    assert!(
        !d.exists("out/partial.txt"),
        "a failed command's output must not appear"
    );
    assert!(!d.exists("out/.forkgraph-partial.direct.txt"));
    assert!(stderr(&o).contains("in place"), "{}", stderr(&o));
    assert!(
        temporaries(d.path()).is_empty(),
        "{:?}",
        temporaries(d.path())
    );
    // What a command wrote in place is not kept (it may be partial): kept, it would be newer
    // than the (absent) inputs and the next run would skip the task as up to date.
    for f in ["out/in-place.txt", "out/in-place-failed.txt"] {
        assert!(!d.exists(f), "{f} was written in place and must be removed");
    }
    let e = stderr(&o);
    assert!(
        e.contains("exit code 1 (it had written") && e.contains("in-place-failed.txt in place"),
        "{e}"
    );
    let o = run_watched(
        forkgraph(&["check", g.to_str().unwrap(), "--keys", "in-place"], &m),
        60,
    );
    assert!(stdout(&o).contains("1 would run"), "{}", stdout(&o));
}

#[test]
fn jobs_limit_is_never_exceeded() {
    let d = TempDir::new("jobs");
    let m = marker("jobs");
    // Each command takes one of two slot directories (mkdir is atomic) or records an overflow.
    d.write(
        "g.toml",
        r#"
[[task]]
key = "t{i}"
for_each = { i = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] }
cmd = """
mkdir -p slots
if mkdir slots/0 2>/dev/null; then s=0; elif mkdir slots/1 2>/dev/null; then s=1; else echo {i} >> overflow; exit 1; fi
echo {i} >> ran
sleep 0.05
rmdir slots/$s
"""
"#,
    );
    let o = run_watched(
        forkgraph(
            &["run", "-j", "2", d.path().join("g.toml").to_str().unwrap()],
            &m,
        ),
        120,
    );
    assert_code(&o, 0);
    assert!(!d.exists("overflow"));
    assert_eq!(d.read("ran").lines().count(), 12);
}

fn interrupt(sig: &str, code: i32) {
    let d = TempDir::new(&format!("int{sig}"));
    let m = marker(&format!("int{sig}"));
    d.write(
        "g.toml",
        r#"
[[task]]
key = "long{i}"
for_each = { i = [1, 2, 3, 4] }
outputs = ["out/{i}.txt"]
cmd = "echo partial > {out}; mkdir -p started; touch started/{i}; sleep 1000 & sleep 1000"
"#,
    );
    let child = forkgraph(
        &["run", "-j", "2", d.path().join("g.toml").to_str().unwrap()],
        &m,
    )
    .spawn()
    .unwrap();
    let pid = child.id();
    wait_for("two commands running", 60, || {
        std::fs::read_dir(d.path().join("started")).map_or(0, |r| r.count()) == 2
    });
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
    let o = wait_watched(child, 60);
    assert_code(&o, code);
    let e = stderr(&o);
    assert!(e.contains("interrupted by"), "{e}");
    assert!(
        e.contains("2 interrupted") || e.contains("interrupted "),
        "{e}"
    );
    assert_no_process_left(&m, 10);
    for i in 1..=4 {
        assert!(!d.exists(&format!("out/{i}.txt")));
    }
    assert!(
        temporaries(d.path()).is_empty(),
        "{:?}",
        temporaries(d.path())
    );
}

#[test]
fn sigint_stops_the_run_and_kills_every_command() {
    interrupt("-INT", 130);
}

#[test]
fn sigterm_stops_the_run_and_kills_every_command() {
    interrupt("-TERM", 143);
}

#[test]
fn sigkill_of_the_runner_leaves_no_process_and_no_partial_output_and_resume_redoes_the_rest() {
    let d = TempDir::new("sigkill");
    let m = marker("sigkill");
    d.write(
        "g.toml",
        r#"
[[task]]
key = "quick{i}"
for_each = { i = [1, 2, 3] }
outputs = ["out/quick{i}.txt"]
cmd = "echo quick{i} > {out}; echo quick{i} >> runs.log"

[[task]]
key = "slow"
deps = ["quick1", "quick2", "quick3"]
outputs = ["out/slow.txt"]
cmd = "printf partial > {out}; if [ -e go ]; then echo complete >> {out}; else touch started; sleep 1000; fi"
"#,
    );
    let g = d.path().join("g.toml");
    let child = forkgraph(&["run", "-j", "2", g.to_str().unwrap()], &m)
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("the slow command running", 60, || d.exists("started"));
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let o = wait_watched(child, 60);
    assert_eq!(o.status.code(), None, "killed by a signal");
    assert_no_process_left(&m, 10);
    assert!(
        !d.exists("out/slow.txt"),
        "no partial output under the real name"
    );
    assert_eq!(d.read("runs.log").lines().count(), 3);

    d.write("go", "");
    let o = run_watched(forkgraph(&["run", g.to_str().unwrap()], &m), 120);
    assert_code(&o, 0);
    assert!(stderr(&o).contains("1 ran, 3 skipped"), "{}", stderr(&o));
    assert_eq!(
        d.read("runs.log").lines().count(),
        3,
        "the quick ones were not redone"
    );
    assert_eq!(d.read("out/slow.txt"), "partialcomplete\n");
    assert!(
        temporaries(d.path()).is_empty(),
        "{:?}",
        temporaries(d.path())
    );
    assert_no_process_left(&m, 10);
}

#[test]
fn a_thousand_templated_tasks_run_and_are_skipped_on_resume() {
    let d = TempDir::new("thousand");
    let m = marker("thousand");
    let list: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    d.write(
        "g.toml",
        &format!(
            r#"
[vars]
n = [{}]

[[task]]
key = "t{{i}}"
for_each = {{ i = "n" }}
outputs = ["out/{{i}}.txt"]
argv = ["sh", "-c", "echo $1 > $2", "sh", "{{i}}", "{{out}}"]

[[task]]
key = "all"
inputs = ["out/{{*n}}.txt"]
outputs = ["all.txt"]
cmd = "cat {{in}} | wc -l > {{out}}"
"#,
            list.join(", ")
        ),
    );
    let g = d.path().join("g.toml");
    let o = run_watched(forkgraph(&["run", "-j", "2", g.to_str().unwrap()], &m), 300);
    assert_code(&o, 0);
    assert_eq!(d.read("all.txt").trim(), "1000");
    let o = run_watched(forkgraph(&["run", "-j", "2", g.to_str().unwrap()], &m), 120);
    assert_code(&o, 0);
    assert!(stderr(&o).contains("0 ran, 1001 skipped"), "{}", stderr(&o));
    let o = run_watched(forkgraph(&["check", g.to_str().unwrap()], &m), 120);
    assert_code(&o, 0);
    assert!(stdout(&o).starts_with("1001 tasks in run order: 0 would run, 1001 would be skipped"));
}

#[test]
fn check_dot_and_clean() {
    let d = pipeline_dir("subcommands");
    let m = marker("subcommands");
    let g = d.path().join("graph.toml");
    let g = g.to_str().unwrap();
    let o = run_watched(forkgraph(&["check", g], &m), 60);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("4 tasks in run order: 4 would run, 0 would be skipped"),
        "{out}"
    );
    assert!(out.find("count-a").unwrap() < out.find("total").unwrap());
    assert!(!d.exists("runs.log"), "check runs nothing");
    let o = run_watched(forkgraph(&["run", "--dry-run", g], &m), 60);
    assert_code(&o, 0);
    assert!(!d.exists("runs.log"), "--dry-run runs nothing");
    assert_code(
        &run_watched(forkgraph(&["run", g, "--keys", "count-a"], &m), 60),
        0,
    );
    assert_eq!(runs(&d), 1, "--keys runs only what the key needs");
    let o = run_watched(forkgraph(&["dot", g], &m), 60);
    assert_code(&o, 0);
    let dot = stdout(&o);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("\"count-a\" -> \"total\""), "{dot}");
    assert!(dot.contains("[ran]") && !dot.contains("[not run]"), "{dot}");
    // Tasks the last run (`--keys count-a`) did not select say so, not an empty `[]`.
    assert!(!dot.contains("[]"), "{dot}");
    assert!(
        dot.contains("\"total\" [label=\"total\\n") && dot.contains("[not in the last run]"),
        "{dot}"
    );
    let o = run_watched(forkgraph(&["clean", g], &m), 60);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("counts/a.txt"));
    assert!(!d.exists("counts/a.txt"));
}

#[test]
fn profile_writes_a_trace_a_gantt_chart_and_a_coloured_graph() {
    let d = pipeline_dir("profile");
    let m = marker("profile");
    let g = d.path().join("graph.toml");
    let p = d.path().join("prof");
    let o = run_watched(
        forkgraph(
            &[
                "run",
                "--progress",
                "--profile",
                p.to_str().unwrap(),
                g.to_str().unwrap(),
            ],
            &m,
        ),
        120,
    );
    assert_code(&o, 0);
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("trace.json")).unwrap()).unwrap();
    assert!(trace.to_string().contains("count-b"));
    assert!(std::fs::read_to_string(p.join("profile.svg"))
        .unwrap()
        .starts_with("<svg"));
    assert!(std::fs::read_to_string(p.join("graph.dot"))
        .unwrap()
        .contains("[ran]"));
}

#[test]
fn no_command_waits_behind_a_long_one_while_a_worker_is_idle() {
    let d = TempDir::new("balance");
    let m = marker("balance");
    // `long` runs until the eight short ones have all run. If any short one were queued on
    // long's worker, it could never run: the watchdog would fail the test.
    d.write(
        "g.toml",
        r#"
[[task]]
key = "a-long"
cmd = "until [ -e release ]; do sleep 0.01; done"

[[task]]
key = "short{i}"
for_each = { i = [1, 2, 3, 4, 5, 6, 7, 8] }
cmd = "mkdir -p done; touch done/{i}; if [ $(ls done | wc -l) -eq 8 ]; then touch release; fi"
"#,
    );
    let o = run_watched(
        forkgraph(
            &["run", "-j", "2", d.path().join("g.toml").to_str().unwrap()],
            &m,
        ),
        60,
    );
    assert_code(&o, 0);
}

#[test]
fn retries_rerun_a_failed_command() {
    let d = TempDir::new("retries");
    let m = marker("retries");
    d.write(
        "g.toml",
        r#"
[[task]]
key = "flaky"
outputs = ["out.txt"]
retries = 2
cmd = "if [ -e tried ]; then echo ok > {out}; else touch tried; echo first try fails; exit 1; fi"

[[task]]
key = "hopeless"
retries = 1
cmd = "echo try >> tries; exit 7"
"#,
    );
    let o = run_watched(
        forkgraph(
            &["run", "-k", d.path().join("g.toml").to_str().unwrap()],
            &m,
        ),
        60,
    );
    assert_code(&o, 1);
    assert_eq!(d.read("out.txt"), "ok\n");
    assert!(d
        .read(".forkgraph/g/logs/flaky.log")
        .contains("attempt 2 of 3 after: exit code 1"));
    assert_eq!(d.read("tries"), "try\ntry\n");
    assert!(
        stderr(&o).contains("exit code 7 (after 2 attempts)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn memory_limit_bounds_the_command() {
    let d = TempDir::new("memory");
    let m = marker("memory");
    // A 200 MB shell string under a 64 MiB address-space limit fails; without the limit it
    // works.
    d.write(
        "g.toml",
        r#"
[[task]]
key = "limited"
memory_limit = "64M"
cmd = "v=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#v}"

[[task]]
key = "free"
cmd = "v=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#v}"
"#,
    );
    let o = run_watched(
        forkgraph(
            &[
                "run",
                "-k",
                "-j",
                "1",
                d.path().join("g.toml").to_str().unwrap(),
            ],
            &m,
        ),
        120,
    );
    assert_code(&o, 1);
    let e = stderr(&o);
    assert!(e.contains("task `limited` failed"), "{e}");
    assert!(!e.contains("task `free` failed"), "{e}");
    assert_eq!(d.read(".forkgraph/g/logs/free.log"), "200000000\n");
}

#[test]
fn the_shipped_examples_run_and_resume() {
    let d = TempDir::new("examples");
    let m = marker("examples");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cli");
    for f in ["samples.toml", "samples.json"] {
        std::fs::copy(root.join(f), d.path().join(f)).unwrap();
        let g = d.path().join(f);
        let o = run_watched(forkgraph(&["run", "-j", "2", g.to_str().unwrap()], &m), 120);
        assert_code(&o, 0);
        let o = run_watched(forkgraph(&["run", "-j", "2", g.to_str().unwrap()], &m), 120);
        assert_code(&o, 0);
        assert!(stderr(&o).contains("0 FAILED"), "{}", stderr(&o));
    }
    assert_eq!(d.read("build/report.txt").lines().count(), 4);
    assert!(d.read("build-json/report.txt").contains("200 total"));
    // The TOML example's last task has no outputs: it is the only one that runs again.
    let o = run_watched(
        forkgraph(
            &["run", d.path().join("samples.toml").to_str().unwrap()],
            &m,
        ),
        120,
    );
    assert!(stderr(&o).contains("1 ran, 13 skipped"), "{}", stderr(&o));
}

#[test]
fn interrupt_sends_sigterm_first_and_the_commands_see_it() {
    let d = TempDir::new("intterm");
    let m = marker("intterm");
    d.write(
        "g.toml",
        r#"
[pool]
kill_grace = 60

[[task]]
key = "trap{i}"
for_each = { i = [1, 2] }
outputs = ["out/{i}.txt"]
cmd = "trap 'echo got-term > term{i}; exit 3' TERM; echo partial > {out}; mkdir -p started; touch started/{i}; sleep 1000 & wait"
"#,
    );
    let child = forkgraph(
        &["run", "-j", "2", d.path().join("g.toml").to_str().unwrap()],
        &m,
    )
    .spawn()
    .unwrap();
    let pid = child.id();
    wait_for("two commands running", 60, || {
        std::fs::read_dir(d.path().join("started")).map_or(0, |r| r.count()) == 2
    });
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let o = wait_watched(child, 60);
    assert_code(&o, 143);
    for i in 1..=2 {
        assert_eq!(d.read(&format!("term{i}")), "got-term\n", "{}", stderr(&o));
        assert!(!d.exists(&format!("out/{i}.txt")));
    }
    let e = stderr(&o);
    assert!(e.contains("interrupted by SIGTERM"), "{e}");
    assert!(e.contains("2 interrupted"), "{e}");
    assert_no_process_left(&m, 10);
    assert!(temporaries(d.path()).is_empty());
    assert!(!d.exists(".forkgraph/g/stop"), "the stop marker is removed");
}

#[test]
fn interrupt_kills_a_command_that_ignores_sigterm_after_the_grace() {
    let d = TempDir::new("intkill");
    let m = marker("intkill");
    d.write(
        "g.toml",
        r#"
[[task]]
key = "deaf"
cmd = "trap '' TERM; touch started; sleep 1000 & sleep 1000"

[[task]]
key = "later"
deps = ["deaf"]
cmd = "touch later-ran"
"#,
    );
    let child = forkgraph(
        &[
            "run",
            "--kill-grace",
            "0.3",
            d.path().join("g.toml").to_str().unwrap(),
        ],
        &m,
    )
    .spawn()
    .unwrap();
    let pid = child.id();
    wait_for("the command running", 60, || d.exists("started"));
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let o = wait_watched(child, 60);
    assert_code(&o, 130);
    let e = stderr(&o);
    assert!(e.contains("1 interrupted"), "{e}");
    assert!(!d.exists("later-ran"));
    let report = d.read(".forkgraph/g/last-run.json");
    assert!(report.contains("\"status\": \"interrupted\""), "{report}");
    assert!(report.contains("\"status\": \"not_run\""), "{report}");
    assert_no_process_left(&m, 10);
}

#[test]
fn a_second_runner_on_the_same_state_folder_is_refused_with_the_holders_pid() {
    let d = TempDir::new("lock");
    let m = marker("lock");
    d.write(
        "g.toml",
        r#"
[[task]]
key = "long"
cmd = "touch started; sleep 1000"
"#,
    );
    let g = d.path().join("g.toml");
    let first = forkgraph(&["run", g.to_str().unwrap()], &m)
        .spawn()
        .unwrap();
    let pid = first.id();
    wait_for("the first run's command", 60, || d.exists("started"));
    let o = run_watched(forkgraph(&["run", g.to_str().unwrap()], &m), 60);
    assert_code(&o, 3);
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "another forkgraph run (pid {pid}) is using this state folder"
        )),
        "{e}"
    );
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let o = wait_watched(first, 60);
    assert_code(&o, 130);
    assert_no_process_left(&m, 10);
    // The lock went with the first runner.
    std::fs::remove_file(d.path().join("started")).unwrap();
    d.write(
        "g.toml",
        r#"
[[task]]
key = "short"
cmd = "true"
"#,
    );
    assert_code(
        &run_watched(forkgraph(&["run", g.to_str().unwrap()], &m), 60),
        0,
    );
}

#[test]
fn a_crash_between_the_renames_of_two_outputs_is_finished_by_the_next_run() {
    let d = TempDir::new("midcommit");
    let m = marker("midcommit");
    d.write("in.txt", "x\n");
    d.write(
        "g.toml",
        r#"
[[task]]
key = "pair"
inputs = ["in.txt"]
outputs = ["a.txt", "b.txt"]
cmd = "n=$(cat counter 2>/dev/null || echo 0); n=$((n+1)); echo $n > counter; echo $n > {out0}; echo $n > {out1}"
"#,
    );
    let g = d.path().join("g.toml");
    let g = g.to_str().unwrap();
    assert_code(&run_watched(forkgraph(&["run", g], &m), 60), 0);
    assert_eq!(
        (d.read("a.txt"), d.read("b.txt")),
        ("1\n".into(), "1\n".into())
    );
    // Forced rerun; the runner and the worker are SIGKILLed after the first rename.
    let mut cmd = forkgraph(&["run", "--force", g], &m);
    cmd.env("FORKGRAPH_TEST_CRASH_MID_COMMIT", "pair");
    let o = run_watched(cmd, 60);
    assert_eq!(o.status.code(), None, "killed: {}", stderr(&o));
    assert_no_process_left(&m, 10);
    assert_eq!(
        (d.read("a.txt"), d.read("b.txt")),
        ("2\n".into(), "1\n".into()),
        "the crash came between the two renames"
    );
    // The next run finishes the commit before it judges what is up to date: both outputs are
    // the second run's, and the task is not run again.
    let o = run_watched(forkgraph(&["run", g], &m), 60);
    assert_code(&o, 0);
    assert!(stderr(&o).contains("0 ran, 1 skipped"), "{}", stderr(&o));
    assert_eq!(
        (d.read("a.txt"), d.read("b.txt")),
        ("2\n".into(), "2\n".into())
    );
    assert_eq!(d.read("counter"), "2\n");
    assert!(temporaries(d.path()).is_empty());
    assert_no_process_left(&m, 10);
}
