//! Graph visualization (Dask's `visualize`): the culled graph of a request as Graphviz DOT,
//! nodes labelled with key and function and coloured by function or by position in the static
//! order, rendered through the `dot` program where it is installed.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use super::gantt::PALETTE;
use crate::error::Error;
use crate::graph::Graph;
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
    Ok(plan_dot(&plan, color))
}

fn plan_dot(plan: &Plan, color: DotColor) -> String {
    let n = plan.len();
    let mut functions: Vec<&str> = (0..n)
        .filter(|&i| matches!(plan.kinds[i], Kind::Task(_)))
        .map(|i| plan.funcs[i])
        .collect();
    functions.sort_unstable();
    functions.dedup();
    let mut s = String::from(
        "digraph forkgraph {\n  rankdir=BT;\n  node [style=filled, fontname=\"sans-serif\", fontsize=10];\n",
    );
    for i in 0..n {
        let key = plan.keys[i].to_string();
        let (shape, label, fill) = match &plan.kinds[i] {
            Kind::Task(_) => {
                let f = plan.funcs[i];
                let idx = functions.binary_search(&f).unwrap_or(0);
                let fill = match color {
                    DotColor::Function => PALETTE[idx % PALETTE.len()].to_owned(),
                    DotColor::Order => {
                        ramp(plan.priority[i] as f64 / (n.saturating_sub(1)).max(1) as f64)
                    }
                };
                ("box", format!("{key}\n{f}"), fill)
            }
            Kind::Value(_) => ("ellipse", key, "#dddddd".to_owned()),
            Kind::Alias => ("ellipse", format!("{key}\n(alias)"), "#eeeeee".to_owned()),
        };
        let font = if color == DotColor::Order && plan.priority[i] < n as u32 / 2 {
            ", fontcolor=white"
        } else {
            ""
        };
        let bold = if plan.requested[i] {
            ", penwidth=3"
        } else {
            ""
        };
        let order = if color == DotColor::Order {
            format!("\n#{}", plan.priority[i])
        } else {
            String::new()
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
