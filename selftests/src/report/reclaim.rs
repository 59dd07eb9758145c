//! The page of an `agelab reclaim`: parameters and host, the saved-memory/throughput trade-off
//! per workload, the metrics table and resident memory over time.

use std::fmt::Write as _;

use agelab_mglru::reclaim::bench::BenchReport;
use agelab_mglru::reclaim::plot;

use super::page::{figure, host_rows, kv_table, page, DATA};
use super::svg::{self, esc, num, Plot, PALETTE};
use super::HostFacts;

/// The page of an `agelab reclaim`.
pub fn reclaim_html(params: &[(String, String)], host: &HostFacts, r: &BenchReport) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>agelab reclaim</h1><p>{} MiB {}, {} rep(s) of {:.0} s per policy and workload; intervals are 95% confidence intervals over the repetitions (none with one rep).</p>",
        r.mem_bytes >> 20,
        esc(&r.backing),
        r.reps,
        r.duration_s
    );
    let mut host_rows = host_rows(host);
    let mut seen = Vec::new();
    for w in &r.workloads {
        for p in &w.policies {
            for src in &p.sources {
                if !seen.contains(src) {
                    seen.push(src.clone());
                }
            }
        }
    }
    if !seen.is_empty() {
        host_rows.push(("engine sources".into(), seen.join("; ")));
    }
    b.push_str("<div class=\"facts\">");
    kv_table(&mut b, "parameters", params);
    kv_table(&mut b, "host", &host_rows);
    b.push_str("</div>\n<h2>Saved memory vs throughput loss vs refaults</h2>\n");
    b.push_str(&figure(
        "chart-reclaim-tradeoff",
        "Per policy: memory saved (x) against guest throughput lost relative to `none` (y), \
         whiskers = 95% intervals; the circle's area grows with the refaults per run.",
        tradeoff_chart(r),
        "no policy ran",
    ));
    b.push_str(&figure(
        "chart-reclaim-metrics",
        "Per policy, mean with 95% interval: memory saved, cold pages reclaimed, throughput, \
         refault rate (dashed lines: goals).",
        (!r.workloads.is_empty()).then(|| plot::to_svg(r)),
        "no workload ran",
    ));
    b.push_str(&figure(
        "chart-reclaim-resident",
        "Resident guest memory over time, first repetition of each policy on the first workload.",
        resident_chart(r),
        "no run recorded intervals",
    ));
    b.push_str("<h2>Table</h2>\n");
    for w in &r.workloads {
        let _ = writeln!(
            b,
            "<table><tr><th colspan=\"7\">{}</th></tr><tr><th>policy</th><th>saved MiB</th><th>cold reclaimed %</th><th>throughput %</th><th>refaults</th><th>refaults % WS/min</th><th>verify</th></tr>",
            esc(&w.workload)
        );
        for p in &w.policies {
            for k in &p.oom_killed {
                let _ = writeln!(
                    b,
                    "<tr><td>{}</td><td colspan=\"6\">{}</td></tr>",
                    esc(&p.policy),
                    esc(&k.to_string())
                );
            }
            if p.saved_mib.n == 0 && !p.oom_killed.is_empty() {
                continue;
            }
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} wrong</td></tr>",
                esc(&p.policy),
                p.saved_mib.fmt(1),
                p.cold_reclaimed_pct.fmt(1),
                p.throughput_pct.fmt(1),
                p.refaults.fmt(0),
                p.refault_pct_ws_min.fmt(3),
                p.verify_mismatches
            );
        }
        b.push_str("</table>\n");
    }
    b.push_str("<p>The same data is in <a href=\"report.json\">report.json</a>.</p>\n");
    page("agelab reclaim", &b)
}

/// One panel per workload: saved MiB against throughput loss, with intervals both ways.
pub(super) fn tradeoff_chart(r: &BenchReport) -> Option<String> {
    let wls: Vec<_> = r
        .workloads
        .iter()
        .filter(|w| !w.policies.is_empty())
        .collect();
    if wls.is_empty() {
        return None;
    }
    let panel_w = 480.0;
    let per_row = 2;
    let rows = wls.len().div_ceil(per_row);
    let mut s = svg::open(1160.0, 40.0 + rows as f64 * 360.0);
    let mut names: Vec<&str> = Vec::new();
    for (wi, w) in wls.iter().enumerate() {
        let (col, row) = (wi % per_row, wi / per_row);
        let xmax = w
            .policies
            .iter()
            .map(|p| p.saved_mib.mean + p.saved_mib.ci95)
            .fold(1.0, f64::max);
        let losses: Vec<(f64, f64)> = w
            .policies
            .iter()
            .map(|p| (100.0 - p.throughput_pct.mean, p.throughput_pct.ci95))
            .collect();
        // The axis follows the means (with room): intervals from two or three noisy reps can be
        // ten times wider than the spread of the means; whiskers are clipped at the frame.
        let ymin = losses.iter().map(|(l, _)| l - 5.0).fold(0.0, f64::min);
        let ymax = losses.iter().map(|(l, _)| l + 10.0).fold(10.0, f64::max);
        let xt = svg::nice_ticks(0.0, xmax, 5);
        let yt = svg::nice_ticks(ymin, ymax, 5);
        let plot = Plot {
            x0: 90.0 + col as f64 * (panel_w + 90.0),
            y0: 40.0 + row as f64 * 360.0,
            w: panel_w,
            h: 260.0,
            xr: (0.0, xt.last().copied().unwrap_or(xmax)),
            yr: (
                yt.first().copied().unwrap_or(ymin),
                yt.last().copied().unwrap_or(ymax),
            ),
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-weight="bold">{}</text>"#,
            plot.x0,
            plot.y0 - 10.0,
            esc(&w.workload)
        );
        plot.axes(
            &mut s,
            &xt.iter().map(|v| (*v, num(*v))).collect::<Vec<_>>(),
            &yt.iter()
                .map(|v| (*v, format!("{}%", num(*v))))
                .collect::<Vec<_>>(),
            "memory saved (MiB)",
            "throughput loss vs none",
        );
        s.push_str(DATA);
        let mut placed: Vec<(f64, f64)> = Vec::new();
        let max_ref = w
            .policies
            .iter()
            .map(|p| p.refaults.mean)
            .fold(0.0, f64::max);
        for p in &w.policies {
            if !names.contains(&p.policy.as_str()) {
                names.push(&p.policy);
            }
            let ci = names.iter().position(|n| *n == p.policy).unwrap_or(0);
            let colour = PALETTE[ci % PALETTE.len()];
            let (x, y) = (
                plot.x(p.saved_mib.mean),
                plot.y(100.0 - p.throughput_pct.mean),
            );
            let (xl, xh) = (
                plot.x(p.saved_mib.mean - p.saved_mib.ci95),
                plot.x(p.saved_mib.mean + p.saved_mib.ci95),
            );
            let clip_y = |v: f64| v.clamp(plot.y0, plot.y0 + plot.h);
            let (yl, yh) = (
                clip_y(plot.y(100.0 - p.throughput_pct.mean - p.throughput_pct.ci95)),
                clip_y(plot.y(100.0 - p.throughput_pct.mean + p.throughput_pct.ci95)),
            );
            let radius = 4.0
                + if max_ref > 0.0 {
                    12.0 * (p.refaults.mean / max_ref).sqrt()
                } else {
                    0.0
                };
            // Labels of points that coincide are stacked instead of overprinted.
            let mut ly = y - 3.0;
            while placed
                .iter()
                .any(|(px, py)| (px - x).abs() < 150.0 && (py - ly).abs() < 14.0)
            {
                ly += 14.0;
            }
            placed.push((x, ly));
            let _ = writeln!(
                s,
                r#"<line x1="{xl:.1}" x2="{xh:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{colour}"/><line x1="{x:.1}" x2="{x:.1}" y1="{yl:.1}" y2="{yh:.1}" stroke="{colour}"/><circle cx="{x:.1}" cy="{y:.1}" r="{radius:.1}" fill="{colour}" fill-opacity="0.45" stroke="{colour}"><title>{}: saved {} MiB, throughput {}%, refaults {}</title></circle><text x="{:.1}" y="{:.1}" font-size="11">{} ({} refaults)</text>"#,
                esc(&p.policy),
                p.saved_mib.fmt(1),
                p.throughput_pct.fmt(1),
                p.refaults.fmt(0),
                x + radius + 3.0,
                ly,
                esc(&p.policy),
                num(p.refaults.mean)
            );
        }
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    Some(s)
}

/// Resident MiB over time, one line per policy (first workload, first repetition).
pub(super) fn resident_chart(r: &BenchReport) -> Option<String> {
    let wl = r.workloads.first()?;
    let runs: Vec<_> = wl
        .policies
        .iter()
        .filter_map(|p| {
            r.runs
                .iter()
                .find(|run| run.policy == p.policy && run.workload == wl.workload)
        })
        .filter(|run| !run.intervals.is_empty())
        .collect();
    if runs.is_empty() {
        return None;
    }
    let mib = super::pages_to_mib;
    let tmax = runs
        .iter()
        .flat_map(|r| r.intervals.iter().map(|i| i.t))
        .fold(0.1, f64::max);
    let ymax = runs.iter().map(|r| mib(r.pages)).fold(1.0, f64::max);
    let xt = svg::nice_ticks(0.0, tmax, 8);
    let yt = svg::nice_ticks(0.0, ymax, 5);
    let plot = Plot {
        x0: 90.0,
        y0: 20.0,
        w: 900.0,
        h: 260.0,
        xr: (0.0, xt.last().copied().unwrap_or(tmax)),
        yr: (0.0, yt.last().copied().unwrap_or(ymax)),
    };
    let mut s = svg::open(1160.0, 350.0);
    plot.axes(
        &mut s,
        &xt.iter()
            .map(|v| (*v, format!("{} s", num(*v))))
            .collect::<Vec<_>>(),
        &yt.iter()
            .map(|v| (*v, format!("{} MiB", num(*v))))
            .collect::<Vec<_>>(),
        "time since the workload started",
        "resident guest memory",
    );
    s.push_str(DATA);
    let mut items = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let d: Vec<String> = run
            .intervals
            .iter()
            .enumerate()
            .map(|(k, iv)| {
                format!(
                    "{}{:.1} {:.1}",
                    if k == 0 { "M" } else { "L" },
                    plot.x(iv.t),
                    plot.y(mib(iv.resident))
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="2"><title>{}</title></path>"#,
            d.join(" "),
            esc(&run.policy)
        );
        items.push((run.policy.clone(), colour));
    }
    s.push_str("</g>\n");
    svg::legend(&mut s, 90.0, 340.0, 1100.0, &items);
    s.push_str("</svg>\n");
    Some(s)
}
