//! Bad graph files are refused before anything runs, with the file, line and column.

mod common;

use common::*;

/// Runs `forkgraph run` on `text` (as `name`), expects exit code 2, that nothing ran, and
/// returns stderr.
fn refused(name: &str, text: &str) -> String {
    let d = TempDir::new("bad");
    let f = d.write(name, text);
    let m = marker("bad");
    let o = run_watched(forkgraph(&["run", f.to_str().unwrap()], &m), 60);
    assert_code(&o, forkgraph_cli::EXIT_BAD_INPUT);
    assert!(!d.exists("ran"), "a command ran");
    assert!(!d.exists(".forkgraph"), "the runner wrote state");
    let o2 = run_watched(forkgraph(&["check", f.to_str().unwrap()], &m), 60);
    assert_code(&o2, forkgraph_cli::EXIT_BAD_INPUT);
    let e = stderr(&o);
    assert_eq!(e, stderr(&o2), "check and run report the same");
    e.replace(&format!("{}/", d.path().display()), "")
}

const OK: &str = "[[task]]\nkey = \"ok\"\ncmd = \"touch ran\"\n";

#[test]
fn malformed_toml_names_line_and_column() {
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"x\ncmd = \"y\"\n"),
    );
    assert!(e.starts_with("forkgraph: error: g.toml:6:"), "{e}");
}

#[test]
fn malformed_json_names_line_and_column() {
    let e = refused(
        "g.json",
        "{\"task\": [\n  {\"key\": \"ok\", \"cmd\": \"touch ran\"},\n  {\"key\": }\n]}",
    );
    assert!(e.starts_with("forkgraph: error: g.json:3:11:"), "{e}");
}

#[test]
fn unknown_fields_are_named_with_their_position() {
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"x\"\ncmd = \"y\"\ntimout = 3\n"),
    );
    assert!(
        e.contains("g.toml:8:1:") && e.contains("unknown field `timout`"),
        "{e}"
    );
    let e = refused("g.toml", &format!("[pool]\nmpi = true\n{OK}"));
    assert!(
        e.contains("g.toml:2:1:") && e.contains("unknown field `mpi`"),
        "{e}"
    );
    let e = refused(
        "g.json",
        "{\"task\": [{\"key\": \"ok\", \"cmd\": \"touch ran\", \"inptus\": []}]}",
    );
    assert!(
        e.contains("g.json:1:") && e.contains("unknown field `inptus`"),
        "{e}"
    );
}

#[test]
fn wrong_types_are_named_with_their_position() {
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"x\"\ncmd = [1]\n"),
    );
    assert!(e.contains("g.toml:7:"), "{e}");
}

#[test]
fn missing_dependency_is_reported() {
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"x\"\ndeps = [\"nope\"]\ncmd = \"y\"\n"),
    );
    assert!(
        e.contains("g.toml:7:1: task `x` depends on `nope`, which no task declares"),
        "{e}"
    );
    assert!(!e.contains("did you mean"), "{e}");
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"x\"\ndeps = [\"Ok\"]\ncmd = \"y\"\n"),
    );
    assert!(
        e.contains("depends on `Ok`, which no task declares; did you mean `ok`?"),
        "{e}"
    );
}

#[test]
fn duplicate_outputs_are_reported() {
    let e = refused(
        "g.toml",
        &format!(
            "{OK}\n[[task]]\nkey = \"x\"\noutputs = [\"o.txt\"]\ncmd = \"y\"\n\n[[task]]\nkey = \"z\"\noutputs = [\"./o.txt\"]\ncmd = \"y\"\n"
        ),
    );
    assert!(
        e.contains("g.toml:12:1: tasks `x` and `z` both declare the output"),
        "{e}"
    );
}

#[test]
fn duplicate_keys_from_templates_are_reported() {
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"ok\"\nfor_each = {{ s = [1] }}\ncmd = \"y\"\n"),
    );
    assert!(
        e.contains("g.toml:6:1: task `ok` is declared twice (first at"),
        "{e}"
    );
}

#[test]
fn cycles_are_reported_with_their_path() {
    let e = refused(
        "g.toml",
        &format!(
            "{OK}\n[[task]]\nkey = \"a\"\ninputs = [\"b.out\"]\noutputs = [\"a.out\"]\ncmd = \"y\"\n\n[[task]]\nkey = \"b\"\ndeps = [\"a\"]\noutputs = [\"b.out\"]\ncmd = \"y\"\n"
        ),
    );
    assert!(
        e.contains("g.toml:5:1: dependency cycle: a -> b -> a")
            || e.contains("g.toml:11:1: dependency cycle: b -> a -> b"),
        "{e}"
    );
}

#[test]
fn template_errors_are_reported() {
    let e = refused(
        "g.toml",
        &format!(
            "{OK}\n[[task]]\nkey = \"x-{{smaple}}\"\nfor_each = {{ sample = [1] }}\ncmd = \"y\"\n"
        ),
    );
    assert!(
        e.contains("unknown placeholder `{smaple}` (variables here: sample"),
        "{e}"
    );
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"x\"\noutputs = [\"a\"]\ncmd = \"y > {{out1}}\"\n"),
    );
    assert!(e.contains("`{out1}`: the task declares 1 output"), "{e}");
    let e = refused("g.toml", &format!("{OK}\n[[task]]\nkey = \"x\"\n"));
    assert!(e.contains("no command"), "{e}");
}

#[test]
fn a_missing_input_nobody_makes_is_reported() {
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"x\"\ninputs = [\"absent.txt\"]\ncmd = \"y\"\n"),
    );
    assert!(
        e.contains("input") && e.contains("absent.txt does not exist"),
        "{e}"
    );
}

#[test]
fn unknown_keys_and_bad_jobs_are_refused() {
    let d = TempDir::new("badkeys");
    let f = d.write("g.toml", OK);
    let m = marker("badkeys");
    let o = run_watched(
        forkgraph(&["run", f.to_str().unwrap(), "--keys", "zz"], &m),
        60,
    );
    assert_code(&o, 2);
    assert!(stderr(&o).contains("no task has the key `zz`"));
    assert!(!stderr(&o).contains("did you mean"), "{}", stderr(&o));
    let o = run_watched(
        forkgraph(&["check", f.to_str().unwrap(), "--keys", "okk"], &m),
        60,
    );
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("no task has the key `okk` (given with --keys); did you mean `ok`?"),
        "{}",
        stderr(&o)
    );
    let o = run_watched(forkgraph(&["run", "-j", "0", f.to_str().unwrap()], &m), 60);
    assert_code(&o, 2);
    let o = run_watched(
        forkgraph(&["run", d.path().join("nope.toml").to_str().unwrap()], &m),
        60,
    );
    assert_code(&o, 2);
    assert!(stderr(&o).contains("cannot read"));
    assert!(!d.exists("ran"));
}

#[test]
fn values_of_the_wrong_shape_say_what_is_expected_not_a_rust_type_name() {
    let e = refused("g.toml", &format!("[vars]\nx = {{ a = 1 }}\n{OK}"));
    assert!(
        e.contains("g.toml:2:5:")
            && e.contains("a [vars] value is a string, integer or boolean, or a list of those"),
        "{e}"
    );
    assert!(!e.contains("untagged enum"), "{e}");
    let e = refused("g.toml", &format!("[vars]\nx = [[1]]\n{OK}"));
    assert!(
        e.contains("g.toml:2:5:") && !e.contains("untagged enum"),
        "{e}"
    );
    let e = refused("g.toml", &format!("{OK}memory_limit = true\n"));
    assert!(
        e.contains("g.toml:4:16:") && e.contains("a size in bytes or a string with a unit"),
        "{e}"
    );
    let e = refused(
        "g.toml",
        "[[task]]\nkey = \"a-{s}\"\nfor_each = { s = { x = 1 } }\ncmd = \"touch ran\"\n",
    );
    assert!(
        e.contains("g.toml:3:") && e.contains("the name of a [vars] list or a list of values"),
        "{e}"
    );
    // `[task]` (one table) instead of `[[task]]` (an array of tables).
    let e = refused("g.toml", "[task]\nkey = \"a\"\ncmd = \"touch ran\"\n");
    assert!(
        e.contains("g.toml:1:1:") && e.contains("write [[task]]"),
        "{e}"
    );
}

#[test]
fn errors_in_a_field_point_at_that_field_not_at_the_task() {
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"x\"\ncmd = \"y\"\n  timeout = -1\n"),
    );
    assert!(
        e.contains("g.toml:8:3: task `x`: timeout must be a positive number"),
        "{e}"
    );
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"x\"\nmemory_limit = \"12Q\"\ncmd = \"y\"\n"),
    );
    assert!(e.contains("g.toml:7:1: task `x`: memory_limit:"), "{e}");
    let e = refused(
        "g.toml",
        &format!("{OK}\n[[task]]\nkey = \"x\"\n\ninputs = [\"a\"]\ncmd = \"cat {{in3}}\"\n"),
    );
    assert!(e.contains("g.toml:9:1: task `x`: cmd:"), "{e}");
    let e = refused(
        "g.toml",
        &format!(
            "{OK}\n[[task]]\nkey = \"x-{{s}}\"\ncmd = \"y\"\nfor_each = {{ s = \"nolist\" }}\n"
        ),
    );
    assert!(e.contains("g.toml:8:1: task `x-{s}`: for_each:"), "{e}");
}

/// `--keys` takes every word after it: a graph file given after the keys is read as a key and
/// clap reports the file missing; the runner adds what happened and how to write it.
#[test]
fn a_file_after_keys_gets_a_hint() {
    let d = TempDir::new("keys-then-file");
    let f = d.write("g.toml", OK);
    let f = f.to_str().unwrap();
    let m = marker("keys-then-file");
    for command in ["run", "check", "dot", "clean"] {
        let o = run_watched(forkgraph(&[command, "--keys", "ok", f], &m), 60);
        assert_code(&o, forkgraph_cli::EXIT_BAD_INPUT);
        let e = stderr(&o);
        assert!(e.contains("<FILE>"), "{e}");
        assert!(
            e.contains(&format!("hint: `--keys` takes every word after it, so {f:?} was read as a key; put the file first (`forkgraph {command} {f} --keys ...`)")),
            "{e}"
        );
        assert!(!d.exists("ran"), "a command ran");
    }
    // Without an existing file among the keys, clap's message alone.
    let o = run_watched(forkgraph(&["run", "--keys", "ok", "nothing.toml"], &m), 60);
    assert_code(&o, forkgraph_cli::EXIT_BAD_INPUT);
    assert!(!stderr(&o).contains("hint:"), "{}", stderr(&o));
}
