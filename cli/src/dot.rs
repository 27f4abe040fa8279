//! `forkgraph dot`: the graph in Graphviz DOT, coloured by what happened in the last run (or,
//! before any run, by whether each task would run).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::command::Freshness;
use crate::plan::Plan;
use crate::run::{Report, Status};

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// DOT text of the selected tasks. Colours: green ran, light green skipped (up to date), red
/// failed, orange interrupted, grey not run, white not selected by the last run; without a
/// report, white would run and light green up to date.
pub fn dot(
    plan: &Plan,
    mask: &[bool],
    report: Option<&Report>,
    preview: Option<&[(usize, Freshness)]>,
) -> String {
    let states: HashMap<&str, &Status> = report
        .map(|r| r.tasks.iter().map(|(k, s)| (k.as_str(), s)).collect())
        .unwrap_or_default();
    let fresh: HashMap<usize, &Freshness> = preview
        .map(|p| p.iter().map(|(i, f)| (*i, f)).collect())
        .unwrap_or_default();
    let display = crate::run::render_all(plan, mask, true).ok();
    let mut out = String::new();
    let _ = writeln!(out, "digraph forkgraph {{");
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fontname=\"monospace\", fontsize=10];"
    );
    for (i, t) in plan.tasks.iter().enumerate() {
        if !mask[i] {
            continue;
        }
        let (color, state) = match (states.get(t.key.as_str()), fresh.get(&i)) {
            (Some(Status::Ran { .. }), _) => ("#7fc97f", "ran"),
            (Some(Status::Skipped), _) => ("#d9f0d3", "skipped"),
            (Some(Status::Failed { .. }), _) => ("#f0027f", "failed"),
            (Some(Status::Interrupted), _) => ("#fdc086", "interrupted"),
            (Some(_), _) => ("#dddddd", "not run"),
            (None, Some(Freshness::UpToDate)) => ("#d9f0d3", "up to date"),
            (None, Some(Freshness::Stale(_))) => ("#ffffff", "would run"),
            (None, None) => ("#ffffff", "not in the last run"),
        };
        let mut cmd = display
            .as_ref()
            .and_then(|d| d[i].as_ref())
            .map(|(p, _)| crate::command::display(p))
            .unwrap_or_default();
        if cmd.chars().count() > 48 {
            cmd = cmd.chars().take(45).collect::<String>() + "...";
        }
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}\\n[{state}]\", fillcolor=\"{color}\"];",
            esc(&t.key),
            esc(&t.key),
            esc(&cmd)
        );
    }
    for (i, t) in plan.tasks.iter().enumerate() {
        if !mask[i] {
            continue;
        }
        for &d in &t.deps {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\";",
                esc(&plan.tasks[d].key),
                esc(&t.key)
            );
        }
    }
    let _ = writeln!(out, "}}");
    out
}
