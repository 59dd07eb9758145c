//! SVG plot of a benchmark: per workload, grouped bars per policy for memory saved, cold pages
//! reclaimed, throughput and refault rate, each with its 95% confidence interval as an error bar.

use super::bench::{BenchReport, MeanCi, PolicySummary};

/// Panels: title, value, unit, and a reference line (a goal), if any.
type Metric = (&'static str, fn(&PolicySummary) -> MeanCi, Option<f64>);

const METRICS: [Metric; 4] = [
    ("memory saved (MiB)", |p| p.saved_mib, None),
    (
        "cold pages reclaimed (%) — goal ≥ 90",
        |p| p.cold_reclaimed_pct,
        Some(90.0),
    ),
    (
        "guest ops per vCPU CPU-s vs none (%) — goal ≥ 98",
        |p| p.throughput_pct,
        Some(98.0),
    ),
    (
        "refaults (% of WS per minute) — SLO 0.2",
        |p| p.refault_pct_ws_min,
        Some(0.2),
    ),
];

const COLORS: [&str; 9] = [
    "#888888", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
    "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The plot as an SVG document.
pub fn to_svg(r: &BenchReport) -> String {
    let panel_w = 300.0;
    let panel_h = 200.0;
    let left = 50.0;
    let top = 60.0;
    let row_h = panel_h + 70.0;
    let w = left + METRICS.len() as f64 * (panel_w + 40.0) + 20.0;
    let h = top + r.workloads.len() as f64 * row_h + 60.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"22\" font-size=\"15\">agelab reclaim benchmark — {} MiB {}, {} reps, {:.0} s runs, bars: mean, whiskers: 95% CI</text>\n",
        r.mem_bytes >> 20,
        esc(&r.backing),
        r.reps,
        r.duration_s
    );
    if let Some(first) = r.workloads.first() {
        for (i, p) in first.policies.iter().enumerate() {
            let x = left + i as f64 * 110.0;
            s.push_str(&format!(
                "<rect x=\"{x:.0}\" y=\"32\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.0}\" y=\"41\">{}</text>\n",
                COLORS[i % COLORS.len()],
                x + 14.0,
                esc(&p.policy)
            ));
        }
    }
    for (wi, wl) in r.workloads.iter().enumerate() {
        let y0 = top + wi as f64 * row_h;
        s.push_str(&format!(
            "<text x=\"{left}\" y=\"{:.0}\" font-size=\"13\" font-weight=\"bold\">{}</text>\n",
            y0 + 14.0,
            esc(&wl.workload)
        ));
        for (mi, (title, get, goal)) in METRICS.iter().enumerate() {
            let x0 = left + mi as f64 * (panel_w + 40.0);
            let py = y0 + 30.0;
            let vals: Vec<MeanCi> = wl.policies.iter().map(get).collect();
            let mut max = vals
                .iter()
                .map(|v| v.mean + v.ci95)
                .fold(goal.unwrap_or(0.0), f64::max);
            if max <= 0.0 {
                max = 1.0;
            }
            max *= 1.1;
            s.push_str(&format!(
                "<text x=\"{x0:.0}\" y=\"{:.0}\">{}</text>\n<rect x=\"{x0:.0}\" y=\"{py:.0}\" width=\"{panel_w}\" height=\"{panel_h}\" fill=\"none\" stroke=\"#ccc\"/>\n",
                py - 4.0,
                esc(title)
            ));
            let ymap = |v: f64| py + panel_h - (v.max(0.0) / max) * panel_h;
            for t in 0..=4 {
                let v = max * t as f64 / 4.0;
                s.push_str(&format!(
                    "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\" fill=\"#666\">{}</text>\n",
                    x0 - 3.0,
                    ymap(v) + 4.0,
                    if max < 5.0 {
                        format!("{v:.2}")
                    } else {
                        format!("{v:.0}")
                    }
                ));
            }
            let n = vals.len().max(1) as f64;
            let bw = panel_w / n * 0.7;
            for (i, v) in vals.iter().enumerate() {
                let cx = x0 + (i as f64 + 0.5) * panel_w / n;
                let yv = ymap(v.mean);
                // Bar and whisker are the data (`class="data"`, counted by the report check).
                s.push_str("<g class=\"data\">");
                s.push_str(&format!(
                    "<rect x=\"{:.1}\" y=\"{yv:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}</title></rect>\n",
                    cx - bw / 2.0,
                    py + panel_h - yv,
                    COLORS[i % COLORS.len()],
                    esc(&wl.policies[i].policy),
                    v.fmt(2)
                ));
                let (lo, hi) = (ymap(v.mean - v.ci95), ymap(v.mean + v.ci95));
                s.push_str(&format!(
                    "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{lo:.1}\" y2=\"{hi:.1}\" stroke=\"black\"/></g>\n"
                ));
            }
            if let Some(g) = goal {
                let gy = ymap(*g);
                s.push_str(&format!(
                    "<line x1=\"{x0:.0}\" x2=\"{:.0}\" y1=\"{gy:.1}\" y2=\"{gy:.1}\" stroke=\"#000\" stroke-dasharray=\"4 3\"/>\n",
                    x0 + panel_w
                ));
            }
        }
    }
    s.push_str("</svg>\n");
    s
}
