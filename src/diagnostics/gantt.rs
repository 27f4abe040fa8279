//! The SVG Gantt chart of a [`Profile`]: one lane per worker, a bar per task coloured by its
//! function, failures in red with a cross, worker deaths as red markers, idle time as the gaps,
//! and each lane's busy share at its label. Written by hand: it is plain text, and needs
//! nothing to view but a browser.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::profiler::{Outcome, Profile};
use crate::callbacks::{WorkerEvent, WorkerId};

const WIDTH: f64 = 1200.0;
const LABEL_W: f64 = 230.0;
const RIGHT_PAD: f64 = 20.0;
const TOP: f64 = 56.0;
const LANE_H: f64 = 28.0;
const BAR_H: f64 = 20.0;

/// Colours of functions, by their names' sorted order (so a graph drawn with `to_dot` and a
/// profile of its run agree; a qualitative palette).
pub(crate) const PALETTE: [&str; 12] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac",
    "#86bcb6", "#d37295", "#a0cbe8", "#8cd17d",
];
const FAILED: &str = "#d62728";

/// Escapes text for XML content and attribute values.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A round step for `n` ticks over `span` ns (1, 2 or 5 times a power of ten).
fn tick_step(span: f64) -> f64 {
    let raw = (span / 8.0).max(1.0);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * pow)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * pow)
}

fn fmt_ns(t: f64, step: f64) -> String {
    if step >= 1e9 {
        format!("{:.0} s", t / 1e9)
    } else if step >= 1e6 {
        format!("{:.0} ms", t / 1e6)
    } else if step >= 1e3 {
        format!("{:.0} us", t / 1e3)
    } else {
        format!("{t:.0} ns")
    }
}

pub(crate) fn render(p: &Profile) -> String {
    let (t0, t1) = p.span();
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    let plot_w = WIDTH - LABEL_W - RIGHT_PAD;
    let x = |t: u64| LABEL_W + plot_w * (t.saturating_sub(t0) as f64 / span);
    let lanes = p.workers.len().max(1);
    let mut functions: Vec<&str> = p.tasks.iter().map(|t| &*t.function).collect();
    functions.sort_unstable();
    functions.dedup();
    let colour: HashMap<&str, &str> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| (*f, PALETTE[i % PALETTE.len()]))
        .collect();
    let legend_rows = functions.len().div_ceil(6).max(1) + 1;
    let axis_y = TOP + lanes as f64 * LANE_H;
    let panel_y = axis_y + 30.0;
    let panel_h = resources_height(p);
    let height = panel_y + panel_h + 6.0 + legend_rows as f64 * 20.0 + 10.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    let failed = p
        .tasks
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Failed(_)))
        .count();
    let deaths = p
        .worker_events
        .iter()
        .filter(|e| matches!(e, WorkerEvent::Died { .. }))
        .count();
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">forkgraph profile: {} tasks, {failed} failed, {deaths} worker deaths, {:.3} ms</text>"#,
        p.tasks.len(),
        span / 1e6
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="40" fill="#555">one lane per worker; bars are tasks coloured by function; gaps are idle time; red = failed task or worker death</text>"##
    );

    // Lanes with labels and busy share.
    let busy = p.busy();
    for (lane, w) in p.workers.iter().enumerate() {
        let y = TOP + lane as f64 * LANE_H;
        let fill = if lane % 2 == 0 { "#f4f4f4" } else { "#fafafa" };
        let share = 100.0 * busy[lane] as f64 / span;
        let _ = writeln!(
            s,
            r#"<g class="lane" data-worker="{}"><rect x="{LABEL_W}" y="{y}" width="{plot_w}" height="{LANE_H}" fill="{fill}"/><text x="{}" y="{}" text-anchor="end">{} — busy {share:.0}%</text></g>"#,
            xml_escape(&w.to_string()),
            LABEL_W - 8.0,
            y + LANE_H / 2.0 + 4.0,
            xml_escape(&lane_name(*w)),
        );
    }

    // Tasks.
    for t in &p.tasks {
        let Some(lane) = p.lane(t.worker) else {
            continue;
        };
        if t.outcome == Outcome::NotRun {
            continue;
        }
        let y = TOP + lane as f64 * LANE_H + (LANE_H - BAR_H) / 2.0;
        let (x0, x1) = (x(t.start), x(t.end));
        let w = (x1 - x0).max(0.5);
        let (fill, stroke, title) = match &t.outcome {
            Outcome::Failed(e) => (FAILED, "#7f0000", format!("FAILED: {e}")),
            _ => (
                colour.get(&*t.function).copied().unwrap_or("#888"),
                "none",
                format!("{} bytes", t.result_bytes),
            ),
        };
        let _ = writeln!(
            s,
            r#"<rect class="task" x="{x0:.2}" y="{y:.2}" width="{w:.2}" height="{BAR_H}" fill="{fill}" stroke="{stroke}"><title>{} ({}) on {}: {:.3} ms, {}</title></rect>"#,
            xml_escape(&t.key.to_string()),
            xml_escape(&t.function),
            xml_escape(&t.worker.to_string()),
            t.end.saturating_sub(t.start) as f64 / 1e6,
            xml_escape(&title)
        );
        if matches!(t.outcome, Outcome::Failed(_)) {
            let cx = x0 + w / 2.0;
            let cy = y + BAR_H / 2.0;
            let _ = writeln!(
                s,
                r#"<path class="failure" d="M{:.1},{:.1} l10,10 m0,-10 l-10,10" stroke="{FAILED}" stroke-width="2.5"/>"#,
                cx - 5.0,
                cy - 5.0 - BAR_H / 2.0 - 6.0
            );
        }
    }

    // Worker deaths: a red line across the lane and a triangle above it.
    for e in &p.worker_events {
        if let WorkerEvent::Died {
            worker, at, cause, ..
        } = e
        {
            let Some(lane) = p.lane(*worker) else {
                continue;
            };
            let y = TOP + lane as f64 * LANE_H;
            let xd = x(*at);
            let _ = writeln!(
                s,
                r#"<g class="death"><line x1="{xd:.2}" y1="{y:.1}" x2="{xd:.2}" y2="{:.1}" stroke="{FAILED}" stroke-width="2"/><path d="M{:.2},{:.1} l5,8 l-10,0 z" fill="{FAILED}"/><title>{} died: {}</title></g>"#,
                y + LANE_H,
                xd,
                y + 1.0,
                xml_escape(&worker.to_string()),
                xml_escape(cause)
            );
        }
    }

    resources_panel(&mut s, p, panel_y, &x);

    // Time axis (its grid runs down through the resource panel).
    let grid_bottom = if p.resources.is_empty() {
        axis_y + 4.0
    } else {
        panel_y + 2.0 * CHART_H + CHART_GAP
    };
    let step = tick_step(span);
    let _ = writeln!(
        s,
        r##"<line x1="{LABEL_W}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#333"/>"##,
        LABEL_W + plot_w
    );
    let mut tick = 0.0;
    while tick <= span {
        let tx = LABEL_W + plot_w * tick / span;
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{:.1}" stroke="#ccc" stroke-dasharray="2,3"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            grid_bottom,
            axis_y + 17.0,
            fmt_ns(tick, step)
        );
        tick += step;
    }

    // Legend.
    let ly = panel_y + panel_h + 12.0;
    for (i, f) in functions.iter().enumerate() {
        let lx = 10.0 + (i % 6) as f64 * 195.0;
        let y = ly + (i / 6) as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            y - 10.0,
            colour[f],
            lx + 17.0,
            y,
            xml_escape(f)
        );
    }
    let y = ly + functions.len().div_ceil(6).max(1) as f64 * 20.0;
    let _ = writeln!(
        s,
        r#"<rect x="10" y="{}" width="12" height="12" fill="{FAILED}"/><text x="27" y="{y}">failed task</text><path d="M130,{} l5,8 l-10,0 z" fill="{FAILED}"/><text x="142" y="{y}">worker died</text>"#,
        y - 10.0,
        y - 10.0
    );
    s.push_str("</svg>\n");
    s
}

/// Height of one chart of the resource panel, and the gap above each.
const CHART_H: f64 = 90.0;
const CHART_GAP: f64 = 22.0;
/// Line colours of the processes in the resource panel (the parent first), apart from the
/// functions' palette.
const LINES: [&str; 8] = [
    "#7f7f7f", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
];

fn resources_height(p: &Profile) -> f64 {
    if p.resources.is_empty() {
        0.0
    } else {
        2.0 * (CHART_H + CHART_GAP) + 20.0
    }
}

/// The resource panel under the Gantt chart, on its time axis: CPU % per process and in total,
/// and RSS per process, in total, and of shared segments, with a legend of the processes.
fn resources_panel(s: &mut String, p: &Profile, top: f64, x: &dyn Fn(u64) -> f64) {
    if p.resources.is_empty() {
        return;
    }
    let plot_w = WIDTH - LABEL_W - RIGHT_PAD;
    // Processes by pid, in the order first seen (the parent first).
    let mut procs: Vec<(i32, String)> = Vec::new();
    for r in &p.resources {
        for ps in &r.processes {
            if !procs.iter().any(|(pid, _)| *pid == ps.pid) {
                procs.push((ps.pid, ps.label()));
            }
        }
    }
    let colour = |i: usize| LINES[i % LINES.len()];
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    type Series = (String, &'static str, f64, Vec<(u64, f64)>);
    let per_process = |value: &dyn Fn(&super::resources::ProcessSample) -> Option<f64>| {
        procs
            .iter()
            .enumerate()
            .map(|(i, (pid, label))| {
                let points = p
                    .resources
                    .iter()
                    .filter_map(|r| {
                        let ps = r.processes.iter().find(|ps| ps.pid == *pid)?;
                        Some((r.at, value(ps)?))
                    })
                    .collect();
                (label.clone(), colour(i), 1.5, points)
            })
            .collect::<Vec<Series>>()
    };
    let mut cpu = per_process(&|ps| ps.cpu_percent);
    cpu.push((
        "total".into(),
        "#000000",
        2.5,
        p.resources
            .iter()
            .skip(1)
            .map(|r| (r.at, r.cpu_percent))
            .collect(),
    ));
    let mut mem = per_process(&|ps| Some(mib(ps.rss_bytes)));
    mem.push((
        "total".into(),
        "#000000",
        2.5,
        p.resources
            .iter()
            .map(|r| (r.at, mib(r.rss_bytes)))
            .collect(),
    ));
    mem.push((
        "shared segments".into(),
        "#17becf",
        2.5,
        p.resources
            .iter()
            .map(|r| (r.at, mib(r.segment_bytes)))
            .collect(),
    ));
    let _ = writeln!(s, r#"<g class="resources">"#);
    let charts: [(&str, &str, &[Series], f64, &str); 2] = [
        ("cpu", "CPU % (100 = a core)", &cpu, 100.0, "%"),
        ("memory", "memory (MiB)", &mem, 1.0, " MiB"),
    ];
    for (i, (class, title, series, floor, unit)) in charts.into_iter().enumerate() {
        let y0 = top + i as f64 * (CHART_H + CHART_GAP);
        let max = series
            .iter()
            .flat_map(|(_, _, _, pts)| pts.iter().map(|&(_, v)| v))
            .fold(floor, f64::max);
        let y = |v: f64| y0 + CHART_H - CHART_H * (v / max).clamp(0.0, 1.0);
        let _ = writeln!(
            s,
            r##"<g class="{class}"><rect x="{LABEL_W}" y="{y0}" width="{plot_w}" height="{CHART_H}" fill="#fbfbfb" stroke="#ccc"/><text x="{}" y="{}" text-anchor="end" font-weight="bold">{title}</text><text x="{}" y="{}" text-anchor="end" fill="#555">{max:.0}{unit}</text><text x="{}" y="{}" text-anchor="end" fill="#555">0</text><line x1="{LABEL_W}" y1="{}" x2="{}" y2="{}" stroke="#ddd" stroke-dasharray="2,3"/>"##,
            LABEL_W - 8.0,
            y0 + CHART_H / 2.0 + 4.0,
            LABEL_W - 4.0,
            y0 + 10.0,
            LABEL_W - 4.0,
            y0 + CHART_H,
            y0 + CHART_H / 2.0,
            LABEL_W + plot_w,
            y0 + CHART_H / 2.0,
        );
        for (label, stroke, width, pts) in series {
            if pts.is_empty() {
                continue;
            }
            let mut d = String::new();
            for &(t, v) in pts {
                let _ = write!(d, "{:.1},{:.1} ", x(t), y(v));
            }
            let _ = writeln!(
                s,
                r#"<polyline class="series" points="{}" fill="none" stroke="{stroke}" stroke-width="{width}"><title>{}</title></polyline>"#,
                d.trim_end(),
                xml_escape(label)
            );
        }
        let _ = writeln!(s, "</g>");
    }
    // Legend of the lines.
    let ly = top + 2.0 * (CHART_H + CHART_GAP) + 4.0;
    let mut lx = 10.0;
    let mut entries: Vec<(String, &str, bool)> = procs
        .iter()
        .enumerate()
        .map(|(i, (_, l))| (l.clone(), colour(i), false))
        .collect();
    entries.push(("total".into(), "#000000", true));
    entries.push(("shared segments".into(), "#17becf", true));
    for (label, stroke, bold) in entries {
        let width = if bold { 2.5 } else { 1.5 };
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{stroke}" stroke-width="{width}"/><text x="{}" y="{ly}">{}</text>"#,
            ly - 4.0,
            lx + 18.0,
            ly - 4.0,
            lx + 22.0,
            xml_escape(&label)
        );
        lx += 30.0 + 7.0 * label.len() as f64;
    }
    let _ = writeln!(s, "</g>");
}

fn lane_name(w: WorkerId) -> String {
    match w {
        WorkerId::Caller => "calling thread".into(),
        other => other.to_string(),
    }
}
