//! Findings of a review of the runner's promises (bad input, output path tricks, resume after
//! a SIGKILL with `--checksum`, `clean` during a run), each a case that failed before its fix.

mod common;

use common::*;

/// Runs `forkgraph run` on `text` (as `name`), expects exit code 2 and that nothing ran;
/// returns stderr with the folder's path removed.
fn refused(name: &str, text: &str) -> String {
    let d = TempDir::new("review-bad");
    let f = d.write(name, text);
    let m = marker("review-bad");
    let o = run_watched(forkgraph(&["run", f.to_str().unwrap()], &m), 60);
    assert_code(&o, forkgraph_cli::EXIT_BAD_INPUT);
    assert!(!d.exists("ran"), "a command ran: {}", stderr(&o));
    stderr(&o).replace(&format!("{}/", d.path().display()), "")
}

const OK: &str = "[[task]]\nkey = \"ok\"\ncmd = \"touch ran\"\n";

#[test]
fn a_nul_byte_in_a_command_environment_or_path_is_bad_input() {
    for (field, line) in [
        ("argv", "argv = [\"echo\", \"a\\u0000b\"]"),
        ("cmd", "cmd = \"echo a\\u0000b\""),
        ("env", "cmd = \"true\"\nenv = { X = \"a\\u0000b\" }"),
        ("cwd", "cmd = \"true\"\ncwd = \"a\\u0000b\""),
        ("outputs", "cmd = \"true\"\noutputs = [\"a\\u0000b\"]"),
        ("inputs", "cmd = \"true\"\ninputs = [\"a\\u0000b\"]"),
    ] {
        let e = refused("g.toml", &format!("{OK}\n[[task]]\nkey = \"x\"\n{line}\n"));
        assert!(
            e.contains("g.toml:") && e.contains(field) && e.contains("NUL"),
            "{field}: {e}"
        );
    }
    let e = refused("g.toml", &format!("[pool]\nshell = \"\"\n{OK}"));
    assert!(e.contains("shell"), "{e}");
    // A shell given by path that does not exist failed each `cmd` task at run time, after
    // the `argv` tasks had run.
    let e = refused(
        "g.toml",
        "[pool]\nshell = \"/nonexistent/sh\"\n[[task]]\nkey = \"ok\"\nargv = [\"touch\", \"ran\"]\n\
         [[task]]\nkey = \"x\"\ncmd = \"true\"\n",
    );
    assert!(e.contains("shell") && e.contains("/nonexistent/sh"), "{e}");
}

#[test]
fn a_json_file_must_be_an_object() {
    let e = refused(
        "g.json",
        "[{}, {}, [{\"key\": \"ok\", \"cmd\": \"touch ran\"}]]",
    );
    assert!(e.starts_with("forkgraph: error: g.json:1:1:"), "{e}");
    // serde_json says column 0 at the start of a line; columns are 1-based here.
    let e = refused("g.json", "\n");
    assert!(e.starts_with("forkgraph: error: g.json:2:1:"), "{e}");
}

#[test]
fn the_same_output_through_a_symlinked_folder_is_a_duplicate() {
    let d = TempDir::new("review-symlink");
    std::fs::create_dir_all(d.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", d.path().join("link")).unwrap();
    let f = d.write(
        "g.toml",
        &format!(
            "{OK}\n[[task]]\nkey = \"a\"\noutputs = [\"real/o.txt\"]\ncmd = \"echo a > {{out}}\"\n\
             [[task]]\nkey = \"b\"\noutputs = [\"link/o.txt\"]\ncmd = \"echo b > {{out}}\"\n"
        ),
    );
    let m = marker("review-symlink");
    let o = run_watched(forkgraph(&["run", f.to_str().unwrap()], &m), 60);
    assert_code(&o, forkgraph_cli::EXIT_BAD_INPUT);
    assert!(!d.exists("ran"));
    let e = stderr(&o);
    assert!(
        e.contains("g.toml:11:1:") && e.contains("`a` and `b`") && e.contains("o.txt"),
        "{e}"
    );
}

#[test]
fn an_output_holding_another_or_the_runners_own_files_is_refused() {
    // A folder output that holds another task's output: publishing it would remove that one.
    let e = refused(
        "g.toml",
        &format!(
            "{OK}\n[[task]]\nkey = \"inner\"\noutputs = [\"build/x.txt\"]\ncmd = \"true\"\n\
             [[task]]\nkey = \"outer\"\noutputs = [\"build\"]\ncmd = \"true\"\n"
        ),
    );
    assert!(
        e.contains("g.toml:") && e.contains("`outer`") && e.contains("`inner`"),
        "{e}"
    );
    // The state folder (its lock, journal and records), an ancestor of it, a log file, or
    // the graph file itself.
    for out in [
        ".forkgraph",
        ".forkgraph/g/state.json",
        ".forkgraph/g/logs/ok.log",
        "g.toml",
    ] {
        let e = refused(
            "g.toml",
            &format!("{OK}\n[[task]]\nkey = \"x\"\noutputs = [\"{out}\"]\ncmd = \"true\"\n"),
        );
        assert!(
            e.contains("g.toml:7:1:") && e.contains("outputs"),
            "{out}: {e}"
        );
    }
}

#[test]
fn clean_waits_for_no_run_it_refuses_while_one_holds_the_state_folder() {
    let d = TempDir::new("review-clean");
    let m = marker("review-clean");
    let f = d.write(
        "g.toml",
        "[[task]]\nkey = \"slow\"\noutputs = [\"o.txt\"]\n\
         cmd = \"echo part > {out}; touch started; while [ ! -e go ] && [ -e started ]; do sleep 0.05; done; echo end >> {out}\"\n",
    );
    let child = forkgraph(&["run", f.to_str().unwrap()], &m)
        .spawn()
        .unwrap();
    wait_for("the command running", 60, || d.exists("started"));
    let o = run_watched(forkgraph(&["clean", f.to_str().unwrap()], &m), 60);
    assert_code(&o, forkgraph_cli::EXIT_RUNNER_ERROR);
    assert!(
        stderr(&o).contains("another forkgraph run"),
        "{}",
        stderr(&o)
    );
    d.write("go", "");
    let o = wait_watched(child, 60);
    assert_code(&o, 0);
    assert_eq!(d.read("o.txt"), "part\nend\n");
    let o = run_watched(forkgraph(&["clean", f.to_str().unwrap()], &m), 60);
    assert_code(&o, 0);
    assert!(!d.exists("o.txt"));
}

#[test]
fn a_sigkill_after_a_task_published_its_outputs_does_not_make_checksum_resume_redo_it() {
    // The worker renames the outputs, then returns the record that the runner appends to
    // the journal: a SIGKILL of the runner in between lost the record, and `--checksum` then
    // redid a task whose outputs were complete (seen in 8 of 25 random SIGKILLs of a
    // 41-task pipeline). The test hook kills the runner and the worker right after the renames.
    let d = TempDir::new("review-record");
    let m = marker("review-record");
    d.write("in.txt", "x\n");
    let f = d.write(
        "g.toml",
        "[[task]]\nkey = \"one\"\ninputs = [\"in.txt\"]\noutputs = [\"one.txt\"]\n\
         cmd = \"cat {in} > {out}; echo one >> runs.log\"\n\
         [[task]]\nkey = \"two\"\ninputs = [\"one.txt\"]\noutputs = [\"a.txt\", \"b.txt\"]\n\
         cmd = \"cat {in} > {out0}; cat {in} > {out1}; echo two >> runs.log\"\n",
    );
    let g = f.to_str().unwrap();
    for key in ["one", "two"] {
        let mut cmd = forkgraph(&["run", "--checksum", g], &m);
        cmd.env("FORKGRAPH_TEST_CRASH_AFTER_COMMIT", key);
        let o = run_watched(cmd, 60);
        assert_eq!(o.status.code(), None, "killed: {}", stderr(&o));
        assert_no_process_left(&m, 10);
    }
    assert_eq!(d.read("runs.log"), "one\ntwo\n");
    let o = run_watched(forkgraph(&["run", "--checksum", g], &m), 60);
    assert_code(&o, 0);
    assert!(stderr(&o).contains("0 ran, 2 skipped"), "{}", stderr(&o));
    assert_eq!(d.read("runs.log"), "one\ntwo\n", "nothing redone");
    // The records are real: a changed input makes both run again.
    d.write("in.txt", "y\n");
    let o = run_watched(forkgraph(&["run", "--checksum", g], &m), 60);
    assert_code(&o, 0);
    assert!(stderr(&o).contains("2 ran, 0 skipped"), "{}", stderr(&o));
    assert!(!d
        .path()
        .join(".forkgraph/g/commits")
        .read_dir()
        .is_ok_and(|mut r| r.next().is_some()));
}

#[test]
fn a_failing_commands_log_tail_cannot_send_escape_sequences_to_the_terminal() {
    // The tail of the log is printed on stderr and kept in last-run.json: a command's bytes
    // (a terminal title, a screen clear, binary junk) went to the user's terminal as they were.
    let d = TempDir::new("review-tail");
    let m = marker("review-tail");
    let f = d.write(
        "g.toml",
        "[[task]]\nkey = \"junk\"\n\
         cmd = \"printf 'title\\\\033]0;pwned\\\\007 clear\\\\033[2J bell\\\\007\\\\n'; \
         head -c 5000 /dev/zero | tr '\\\\0' x; echo; exit 1\"\n",
    );
    let o = run_watched(forkgraph(&["run", f.to_str().unwrap()], &m), 60);
    assert_code(&o, 1);
    let e = stderr(&o);
    assert!(e.contains("exit code 1") && e.contains("title"), "{e}");
    assert!(
        !e.contains('\u{1b}') && !e.contains('\u{7}'),
        "control bytes reached stderr: {e:?}"
    );
    assert!(e.lines().all(|l| l.chars().count() < 1200), "{e}");
    let report = d.read(".forkgraph/g/last-run.json");
    assert!(!report.contains("\\u001b"), "{report}");
}

#[test]
fn twenty_thousand_tasks_over_one_list_plan_in_linear_time() {
    // Each binding of a template copied every [vars] list into its own scope, and each task's
    // inputs were deduplicated with a linear search: 20,000 tasks over a list of 20,000 and one
    // task over all of them took 91 s to plan in a release build (100,000: over 10 minutes);
    // now 1.2 s (100,000: 6.3 s). The watchdog catches the quadratic version (no timing is
    // asserted otherwise).
    let d = TempDir::new("review-plan-scale");
    let m = marker("review-plan-scale");
    let n = 20_000;
    let list: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let f = d.write(
        "g.toml",
        &format!(
            "[vars]\nn = [{}]\n[[task]]\nkey = \"t{{i}}\"\nfor_each = {{ i = \"n\" }}\n\
             outputs = [\"out/{{i}}.txt\"]\ncmd = \"touch {{out}}\"\n\
             [[task]]\nkey = \"all\"\ninputs = [\"out/{{*n}}.txt\"]\noutputs = [\"all.txt\"]\n\
             cmd = \"cat {{in}} > {{out}}\"\n",
            list.join(",")
        ),
    );
    let o = run_watched(forkgraph(&["check", f.to_str().unwrap()], &m), 120);
    assert_code(&o, 0);
    assert!(
        stdout(&o).starts_with(&format!("{} tasks in run order", n + 1)),
        "{}",
        stdout(&o).lines().next().unwrap_or_default()
    );
}

/// A commit journal is a claim read from disk: one the runner could not have written (a
/// shipped `.forkgraph/<stem>/commits/*.json` renaming files it names, or one whose temporary
/// is not the output's runner temporary) is left alone with a warning, and nothing it names is
/// renamed or deleted; before, the next run carried out any journal's renames (deleting a
/// folder in the way).
#[test]
fn a_forged_commit_journal_renames_and_deletes_nothing() {
    let d = TempDir::new("review-forged");
    let f = d.write(
        "g.toml",
        "[[task]]\nkey = \"k\"\ncmd = \"echo a > {out0}; echo b > {out1}\"\n\
         outputs = [\"a.txt\", \"b.txt\"]\n",
    );
    let victim = d.write("victim.txt", "keep me");
    std::fs::create_dir_all(d.path().join("precious")).unwrap();
    d.write("precious/file", "keep me too");
    let a = d.path().join("a.txt");
    let commits = d.path().join(".forkgraph/g/commits");
    std::fs::create_dir_all(&commits).unwrap();
    let journal = |name: &str, key: &str, tmp: &std::path::Path, out: &std::path::Path| {
        let text = serde_json::json!({ "key": key, "renames": [[tmp, out]] });
        std::fs::write(commits.join(name), text.to_string()).unwrap();
    };
    let named = |key: &str| format!("{}.json", &forkgraph_cli::state::hash_strings([key])[..16]);
    // Any name: renames a file of the user's over a folder of the user's.
    journal("x.json", "k", &victim, &d.path().join("precious"));
    // The task's own journal name, but the output is not one of its outputs.
    journal(&named("k"), "k", &victim, &d.path().join("elsewhere"));
    // A key that is not in the graph.
    journal(&named("nope"), "nope", &victim, &a);
    let m = marker("review-forged");
    let o = run_watched(forkgraph(&["run", f.to_str().unwrap()], &m), 60);
    assert_code(&o, 0);
    assert_eq!(d.read("victim.txt"), "keep me", "{}", stderr(&o));
    assert_eq!(d.read("precious/file"), "keep me too");
    assert!(!d.exists("elsewhere"));
    assert!(
        stderr(&o).contains("left the commit journal"),
        "{}",
        stderr(&o)
    );
    // The task itself ran and published both outputs.
    assert_eq!(d.read("a.txt"), "a\n");
    assert_eq!(d.read("b.txt"), "b\n");
}
