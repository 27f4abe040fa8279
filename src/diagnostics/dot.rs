//! Graph visualization (Dask's `visualize`): the culled graph of a request as Graphviz DOT,
//! nodes labelled with key and function and coloured by function, by position in the static
//! order, by memory pressure, or by what happened in a profiled run, rendered through the `dot`
//! program where it is installed.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use std::collections::HashMap;

use super::gantt::PALETTE;
use super::profiler::{Outcome, Profile};
use crate::error::Error;
use crate::graph::Graph;
use crate::key::Key;
use crate::key::Keys;
use crate::plan::{Kind, Plan, PlanOptions};

/// What colours the nodes of [`to_dot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DotColor {
    /// One colour per function (literals and aliases grey).
    #[default]
    Function,
    /// Position in the static order, from dark blue (runs first) to yellow (runs last), as
    /// `dask.visualize(color="order")`.
    Order,
    /// Memory pressure: how many results are held when the task's result is made, under the
    /// static order, from dark blue (fewest) to yellow (the peak), as
    /// `dask.visualize(color="memorypressure")`.
    Pressure,
}

/// Results held right after each node's result is made, running the plan in its static order
/// (a result is held from when it is made until its last dependent is done).
fn pressure(plan: &Plan) -> Vec<usize> {
    let n = plan.len();
    let mut by_prio = vec![0u32; n];
    for (i, &p) in plan.priority.iter().enumerate() {
        by_prio[p as usize] = i as u32;
    }
    let mut holders: Vec<usize> = (0..n as u32)
        .map(|i| plan.dependents.get(i).len())
        .collect();
    let mut out = vec![0usize; n];
    let mut alive = 0usize;
    for &i in &by_prio {
        alive += 1;
        out[i as usize] = alive;
        for &d in plan.deps.get(i) {
            holders[d as usize] -= 1;
            if holders[d as usize] == 0 && !plan.requested[d as usize] {
                alive -= 1;
            }
        }
    }
    out
}

/// Quotes a DOT string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Viridis-like ramp: 0 dark blue .. 1 yellow.
fn ramp(f: f64) -> String {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let f = f.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (f.floor() as usize).min(STOPS.len() - 2);
    let t = f - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

/// The graph that computing `keys` runs (culled, validated), as DOT: tasks are boxes labelled
/// `key\nfunction`, literals and aliases ellipses; an edge goes from each dependency to its
/// dependent; requested keys have a bold border.
///
/// # Errors
/// [`Error::Graph`] when the request is invalid (as `get` would report it).
pub fn to_dot(graph: &Graph, keys: &Keys, color: DotColor) -> Result<String, Error> {
    let plan = Plan::build(graph, keys, PlanOptions::default())?;
    Ok(plan_dot(&plan, color, None))
}

/// As [`to_dot`], with the tasks coloured by what happened to them in a profiled run: green
/// done, red failed, grey not run (an earlier link of its chain failed), white not run at all;
/// the label says which.
///
/// # Errors
/// As [`to_dot`].
pub fn to_dot_state(graph: &Graph, keys: &Keys, profile: &Profile) -> Result<String, Error> {
    let plan = Plan::build(graph, keys, PlanOptions::default())?;
    // The last record of each key wins (a retried task's final outcome).
    let states: HashMap<&Key, &Outcome> =
        profile.tasks.iter().map(|t| (&t.key, &t.outcome)).collect();
    Ok(plan_dot(&plan, DotColor::Function, Some(&states)))
}

fn plan_dot(plan: &Plan, color: DotColor, states: Option<&HashMap<&Key, &Outcome>>) -> String {
    let n = plan.len();
    let mut functions: Vec<&str> = (0..n)
        .filter(|&i| matches!(plan.kinds[i], Kind::Task(_)))
        .map(|i| plan.function(i as u32))
        .collect();
    functions.sort_unstable();
    functions.dedup();
    let held = if color == DotColor::Pressure {
        pressure(plan)
    } else {
        Vec::new()
    };
    let peak = held.iter().copied().max().unwrap_or(1).max(1);
    let held_at = |i: usize| held.get(i).copied().unwrap_or(0);
    let mut s = String::from(
        "digraph forkgraph {\n  rankdir=BT;\n  node [style=filled, fontname=\"sans-serif\", fontsize=10];\n",
    );
    for i in 0..n {
        let key = plan.keys[i].to_string();
        let (shape, label, fill) = match &plan.kinds[i] {
            Kind::Task(_) => {
                let f = plan.function(i as u32);
                let idx = functions.binary_search(&f).unwrap_or(0);
                let fill = match color {
                    DotColor::Function => PALETTE[idx % PALETTE.len()].to_owned(),
                    DotColor::Order => {
                        ramp(plan.priority[i] as f64 / (n.saturating_sub(1)).max(1) as f64)
                    }
                    DotColor::Pressure => ramp(held_at(i) as f64 / peak as f64),
                };
                match states {
                    None => ("box", format!("{key}\n{f}"), fill),
                    Some(states) => {
                        let (fill, what) = match states.get(&plan.keys[i]) {
                            Some(Outcome::Ok) => ("#8fd18f", "done"),
                            Some(Outcome::Failed(_)) => ("#f08080", "failed"),
                            Some(Outcome::NotRun) => ("#cccccc", "not run"),
                            None => ("#ffffff", "never started"),
                        };
                        ("box", format!("{key}\n{f}\n{what}"), fill.to_owned())
                    }
                }
            }
            Kind::Value(_) => ("ellipse", key, "#dddddd".to_owned()),
            Kind::Alias => ("ellipse", format!("{key}\n(alias)"), "#eeeeee".to_owned()),
        };
        let dark = match color {
            DotColor::Order => plan.priority[i] < n as u32 / 2,
            DotColor::Pressure => matches!(plan.kinds[i], Kind::Task(_)) && held_at(i) * 2 < peak,
            _ => false,
        };
        let font = if dark { ", fontcolor=white" } else { "" };
        let bold = if plan.requested[i] {
            ", penwidth=3"
        } else {
            ""
        };
        let order = match color {
            DotColor::Order => format!("\n#{}", plan.priority[i]),
            DotColor::Pressure => format!("\n{} held", held_at(i)),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "  n{i} [shape={shape}, label={}, fillcolor=\"{fill}\"{font}{bold}];",
            quote(&format!("{label}{order}"))
        );
    }
    for i in 0..n as u32 {
        for &d in plan.deps.get(i) {
            let _ = writeln!(s, "  n{d} -> n{i};");
        }
    }
    s.push_str("}\n");
    s
}

/// Renders DOT text to `out` with Graphviz `dot`, in the format its extension names (`svg`,
/// `png`, `pdf`, ...; `svg` when it has none).
///
/// # Errors
/// When `dot` is not installed (the message says how to get it), fails, or `out` cannot be
/// written.
pub fn render_dot(dot: &str, out: &Path) -> std::io::Result<()> {
    let format = out.extension().and_then(|e| e.to_str()).unwrap_or("svg");
    let mut child = match Command::new("dot")
        .arg(format!("-T{format}"))
        .arg("-o")
        .arg(out)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(std::io::Error::new(
                e.kind(),
                "Graphviz `dot` is not installed (not found on PATH): install graphviz \
                 (Debian/Ubuntu: apt-get install graphviz) to render graphs, or open the .dot \
                 file with any Graphviz viewer",
            ))
        }
        Err(e) => return Err(e),
    };
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        stdin.write_all(dot.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "dot failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
