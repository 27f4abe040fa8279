//! The parser and planner never panic: arbitrary bytes, and valid files mutated at random.

use std::path::Path;

use proptest::prelude::*;

const VALID: &str = include_str!("../../examples/cli/samples.toml");

fn parse_and_plan(name: &str, text: &str) {
    if let Ok(parsed) = forkgraph_cli::parse_str(Path::new(name), text) {
        if let Ok(plan) = forkgraph_cli::build(&parsed) {
            let mask = vec![true; plan.tasks.len()];
            let _ = plan.order(&mask);
            let _ = forkgraph_cli::run::render_all(&plan, &mask, true);
            let _ = forkgraph_cli::dot::dot(&plan, &mask, None, None);
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    Duplicate(usize, usize),
}

fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut b = text.as_bytes().to_vec();
    for e in edits {
        let n = b.len().max(1);
        match *e {
            Edit::Insert(i, c) => b.insert(i % (b.len() + 1), c),
            Edit::Delete(i) => {
                if !b.is_empty() {
                    b.remove(i % n);
                }
            }
            Edit::Replace(i, c) => {
                if !b.is_empty() {
                    b[i % n] = c;
                }
            }
            Edit::Duplicate(i, len) => {
                let s = i % n;
                let e = (s + len % 64).min(b.len());
                let piece = b[s..e].to_vec();
                b.splice(s..s, piece);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        Just(b'{'),
        Just(b'}'),
        Just(b'['),
        Just(b']'),
        Just(b'"'),
        Just(b'='),
        Just(b','),
        Just(b'\n'),
        Just(b'*'),
        Just(b'.'),
        Just(b'/'),
        any::<u8>()
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), byte).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, l)| Edit::Duplicate(i, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        parse_and_plan("f.toml", &text);
        parse_and_plan("f.json", &text);
    }

    #[test]
    fn mutated_valid_toml_never_panics(edits in proptest::collection::vec(edit(), 1..8)) {
        parse_and_plan("f.toml", &mutate(VALID, &edits));
    }

    #[test]
    fn mutated_valid_json_never_panics(edits in proptest::collection::vec(edit(), 1..8)) {
        let parsed = forkgraph_cli::parse_str(Path::new("f.toml"), VALID).unwrap();
        let _ = parsed;
        parse_and_plan("f.json", &mutate(JSON, &edits));
    }
}

const JSON: &str = r#"{
  "pool": {"jobs": 2},
  "vars": {"samples": ["a", "b", 3]},
  "task": [
    {"key": "count-{s}", "for_each": {"s": "samples"}, "inputs": ["reads/{s}.fq"],
     "outputs": ["counts/{s}.txt"], "cmd": "wc -l < {in} > {out}", "timeout": 60},
    {"key": "total", "inputs": ["counts/{*samples}.txt"], "outputs": ["total.txt"],
     "argv": ["sh", "-c", "cat \"$@\" > $FORKGRAPH_OUT", "sh", "{in}"], "deps": ["count-a"]}
  ]
}"#;

#[test]
fn the_valid_files_are_valid() {
    let p = forkgraph_cli::parse_str(Path::new("f.toml"), VALID).unwrap();
    assert!(forkgraph_cli::build(&p).is_ok());
    let p = forkgraph_cli::parse_str(Path::new("f.json"), JSON).unwrap();
    let plan = forkgraph_cli::build(&p).unwrap();
    assert_eq!(plan.tasks.len(), 4);
}

#[test]
fn the_readme_schema_example_parses_and_plans() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("### The graph file")
        .expect("README has the schema section");
    let block = &readme[start..];
    let open = block.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let close = open + block[open..].find("```").expect("its end");
    let text = &block[open..close];
    let parsed = forkgraph_cli::parse_str(Path::new("README.toml"), text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    // `deps = ["index"]` names a task the excerpt leaves out: add it.
    let mut full = text.to_string();
    full.push_str("\n[[task]]\nkey = \"index\"\ncmd = \"true\"\n");
    let _ = parsed;
    let parsed = forkgraph_cli::parse_str(Path::new("README.toml"), &full).unwrap();
    let plan = forkgraph_cli::build(&parsed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.tasks.len(), 5);
    let merge = &plan.tasks[plan.index["merge"]];
    assert_eq!(
        merge.deps.len(),
        3,
        "merge depends on the three aligns by file"
    );
}
