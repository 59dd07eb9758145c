//! The page of an `agelab run`: parameters and host, the age heatmap, generations per pass,
//! accuracy per source and the working-set histogram.

use std::fmt::Write as _;

use agelab_mglru::engine::heatmap::scale_colour;
use agelab_mglru::engine::{PassJson, WorkingSetHistogram};
use agelab_mglru::session::run::RunReport;

use super::page::{figure, host_rows, kv_table, page, DATA};
use super::svg::{self, esc, num, Plot, PALETTE};
use super::HostFacts;

/// The page of an `agelab run`.
pub fn run_html(params: &[(String, String)], host: &HostFacts, r: &RunReport) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>agelab run — {}</h1><p>{} vCPUs, {} MiB {} in {} memslot(s); {} aging passes; {}</p>",
        esc(&r.workload),
        r.vcpus,
        r.mem_bytes >> 20,
        esc(&r.backing),
        r.slots,
        r.engine.aging.passes,
        esc(&r.exit_reason)
    );
    if let Some(why) = &r.blind {
        let _ = writeln!(
            b,
            "<p class=\"blind\">BLIND: {}; pages the workload touches only that way age out although in use.</p>",
            esc(why)
        );
    }
    let mut host_rows = host_rows(host);
    for s in r.engine.sources.iter().filter(|s| !s.available) {
        host_rows.push((format!("source {} unavailable", s.name), s.reason.clone()));
    }
    b.push_str("<div class=\"facts\">");
    kv_table(&mut b, "parameters", params);
    kv_table(&mut b, "host", &host_rows);
    b.push_str("</div>\n");

    b.push_str("<h2>Page age over time</h2>\n");
    b.push_str(&figure(
        "chart-heatmap",
        "Mean age of the pages in each row (consecutive guest pages) after each aging pass: \
         red = just seen accessed, blue = oldest, grey = reclaimed. Log colour scale.",
        r.heatmap
            .as_ref()
            .filter(|h| !h.columns().is_empty())
            .map(|h| h.to_svg(&format!("page age over time — {}", r.workload))),
        "no heatmap was recorded",
    ));
    b.push_str("<h2>Generations over time</h2>\n");
    b.push_str(&figure(
        "chart-generations",
        "Pages in each of the engine's generations after each pass, youngest (max_seq) on top; \
         the gap up to the guest's size is reclaimed memory.",
        generations_chart(&r.passes, r.mem_bytes / agelab_vmm::PAGE_SIZE),
        "no aging pass ran",
    ));
    b.push_str("<h2>Each source against ground truth, per pass</h2>\n");
    b.push_str(&figure(
        "chart-accuracy",
        "Precision (reported pages that were accessed) and recall (accessed pages that were \
         reported) of every available source in each pass, judged against what it can observe \
         (the exact ground truth the host replays).",
        accuracy_chart(&r.passes),
        "no source was judged in any pass",
    ));
    b.push_str("<h2>Working set by idle time</h2>\n");
    b.push_str(&figure(
        "chart-working-set",
        "Guest memory by time since a source last saw each page accessed, at the end of the run.",
        histogram_chart(&r.working_set),
        "no pages",
    ));
    b.push_str("<h2>Sources</h2>\n<table><tr><th>source</th><th>available</th><th>precision</th><th>recall</th><th>harvest µs</th><th>errors</th><th>reason</th></tr>\n");
    let pct = |v: Option<f64>| v.map_or("-".into(), |x| format!("{:.1}%", x * 100.0));
    for s in &r.engine.sources {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&s.name),
            if s.available { "yes" } else { "no" },
            pct(s.precision),
            pct(s.recall),
            s.harvest_ns as f64 / 1e3,
            s.errors,
            esc(&s.reason)
        );
    }
    b.push_str("</table>\n");
    let _ = writeln!(
        b,
        "<p>aging: {} passes, bookkeeping {} ns per GiB per pass; setup {:.1} ms; the same data is in <a href=\"report.json\">report.json</a>.</p>",
        r.engine.aging.passes, r.engine.aging.ns_per_gib, r.setup_ms
    );
    page(&format!("agelab run — {}", r.workload), &b)
}

/// Stacked bars: one per pass, one segment per generation coloured by its rank from the
/// youngest.
pub(super) fn generations_chart(passes: &[PassJson], pages: u64) -> Option<String> {
    if passes.is_empty() || pages == 0 {
        return None;
    }
    let max_gens = passes
        .iter()
        .map(|p| p.generations.len())
        .max()
        .unwrap_or(1);
    let mib = super::pages_to_mib;
    let total = mib(pages);
    let plot = Plot {
        x0: 90.0,
        y0: 20.0,
        w: 900.0,
        h: 300.0,
        xr: (0.0, passes.len() as f64),
        yr: (0.0, total),
    };
    let mut s = svg::open(1160.0, 380.0);
    let step = passes.len().div_ceil(15).max(1);
    let xticks: Vec<(f64, String)> = passes
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0)
        .map(|(i, p)| (i as f64 + 0.5, p.pass.to_string()))
        .collect();
    let yticks: Vec<(f64, String)> = svg::nice_ticks(0.0, total, 5)
        .into_iter()
        .filter(|v| *v <= total * 1.001)
        .map(|v| (v, format!("{} MiB", num(v))))
        .collect();
    plot.axes(&mut s, &xticks, &yticks, "aging pass", "guest memory");
    s.push_str(DATA);
    let colour = |rank: usize| {
        scale_colour(if max_gens <= 1 {
            0.0
        } else {
            rank as f32 / (max_gens - 1) as f32
        })
    };
    let bw = plot.w / passes.len() as f64;
    for (i, p) in passes.iter().enumerate() {
        let mut base = 0.0;
        let n = p.generations.len();
        // Oldest first in the data: stack the oldest at the bottom.
        for (k, g) in p.generations.iter().enumerate() {
            let v = mib(g.pages);
            let rank = n - 1 - k;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>pass {} seq {}: {} pages, age {} ms</title></rect>"#,
                plot.x(i as f64) + bw * 0.1,
                plot.y(base + v),
                bw * 0.8,
                plot.y(base) - plot.y(base + v),
                colour(rank),
                p.pass,
                g.seq,
                g.pages,
                g.age_ms
            );
            base += v;
        }
    }
    s.push_str("</g>\n");
    let items: Vec<(String, String)> = (0..max_gens)
        .map(|rank| {
            let name = match rank {
                0 => "youngest (max_seq)".to_string(),
                r if r + 1 == max_gens => format!("oldest (max_seq−{r})"),
                r => format!("max_seq−{r}"),
            };
            (name, colour(rank))
        })
        .collect();
    let items: Vec<(String, &str)> = items.iter().map(|(n, c)| (n.clone(), c.as_str())).collect();
    for (k, (name, c)) in items.iter().enumerate() {
        let y = 32.0 + k as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<rect x="1004" y="{:.1}" width="12" height="12" fill="{c}"/><text x="1020" y="{:.1}">{}</text>"#,
            y - 10.0,
            y,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    Some(s)
}

/// Precision and recall per pass, one line per judged source, two panels.
pub(super) fn accuracy_chart(passes: &[PassJson]) -> Option<String> {
    let mut names: Vec<&str> = Vec::new();
    for p in passes {
        for src in &p.sources {
            if src.precision.is_some() && !names.contains(&src.name.as_str()) {
                names.push(&src.name);
            }
        }
    }
    if names.is_empty() {
        return None;
    }
    let mut s = svg::open(1160.0, 330.0);
    let n = passes.len() as f64;
    let step = passes.len().div_ceil(10).max(1);
    for (panel, (title, pick)) in [
        (
            "precision (%)",
            (|p: &agelab_mglru::engine::PassSourceJson| p.precision) as fn(_) -> _,
        ),
        ("recall (%)", |p| p.recall),
    ]
    .into_iter()
    .enumerate()
    {
        let plot = Plot {
            x0: 90.0 + panel as f64 * 540.0,
            y0: 24.0,
            w: 440.0,
            h: 220.0,
            xr: (0.5, n + 0.5),
            yr: (0.0, 105.0),
        };
        let xticks: Vec<(f64, String)> = passes
            .iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0)
            .map(|(_, p)| (p.pass as f64, p.pass.to_string()))
            .collect();
        let yticks: Vec<(f64, String)> = (0..=5)
            .map(|k| (k as f64 * 20.0, format!("{}%", k * 20)))
            .collect();
        plot.axes(&mut s, &xticks, &yticks, "aging pass", title);
        s.push_str(DATA);
        for (si, name) in names.iter().enumerate() {
            let colour = PALETTE[si % PALETTE.len()];
            let mut d = String::new();
            let mut pen_down = false;
            for p in passes {
                let v = p.sources.iter().find(|x| x.name == *name).and_then(pick);
                match v {
                    Some(v) => {
                        let (x, y) = (plot.x(p.pass as f64), plot.y(v * 100.0));
                        let _ = write!(d, "{}{x:.1} {y:.1} ", if pen_down { "L" } else { "M" });
                        let _ = writeln!(
                            s,
                            r#"<circle cx="{x:.1}" cy="{y:.1}" r="{:.1}" fill="{colour}"><title>{} pass {}: {:.1}%</title></circle>"#,
                            (7.0 - 2.0 * si as f64).max(2.5),
                            esc(name),
                            p.pass,
                            v * 100.0
                        );
                        pen_down = true;
                    }
                    None => pen_down = false,
                }
            }
            // Sources that agree draw on top of each other: later ones are dashed and thinner,
            // so every line stays visible.
            let _ = writeln!(
                s,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="{}"{}/>"#,
                d.trim_end(),
                (5.0 - 1.5 * si as f64).max(1.5),
                if si == 0 {
                    ""
                } else {
                    r#" stroke-dasharray="6 4""#
                }
            );
        }
        s.push_str("</g>\n");
    }
    let items: Vec<(String, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), PALETTE[i % PALETTE.len()]))
        .collect();
    svg::legend(&mut s, 90.0, 318.0, 1100.0, &items);
    s.push_str("</svg>\n");
    Some(s)
}

/// One bar per idle-time bucket plus reclaimed memory, in MiB.
pub(super) fn histogram_chart(h: &WorkingSetHistogram) -> Option<String> {
    let mut bars: Vec<(String, u64)> = h
        .pages
        .iter()
        .enumerate()
        .map(|(i, &n)| (h.label(i).replace(" – ", " –\n"), n))
        .collect();
    bars.push(("reclaimed".into(), h.reclaimed));
    let total: u64 = bars.iter().map(|b| b.1).sum();
    if total == 0 {
        return None;
    }
    let mib = super::pages_to_mib;
    let max = bars.iter().map(|b| mib(b.1)).fold(0.0, f64::max);
    let ticks = svg::nice_ticks(0.0, max, 5);
    let top = ticks.last().copied().unwrap_or(max).max(max);
    let plot = Plot {
        x0: 90.0,
        y0: 20.0,
        w: 1000.0,
        h: 260.0,
        xr: (0.0, bars.len() as f64),
        yr: (0.0, top),
    };
    let mut s = svg::open(1160.0, 355.0);
    let xticks: Vec<(f64, String)> = bars
        .iter()
        .enumerate()
        .map(|(i, b)| (i as f64 + 0.5, b.0.clone()))
        .collect();
    let yticks: Vec<(f64, String)> = ticks
        .iter()
        .map(|v| (*v, format!("{} MiB", num(*v))))
        .collect();
    plot.axes(&mut s, &xticks, &yticks, "idle for", "guest memory");
    s.push_str(DATA);
    let bw = plot.w / bars.len() as f64;
    for (i, (label, n)) in bars.iter().enumerate() {
        let v = mib(*n);
        let fill = if label == "reclaimed" {
            "#bbbbbb".to_string()
        } else {
            scale_colour(i as f32 / (bars.len() - 2).max(1) as f32)
        };
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}" stroke="#555"><title>{}: {} pages</title></rect>"##,
            plot.x(i as f64) + bw * 0.15,
            plot.y(v),
            bw * 0.7,
            plot.y(0.0) - plot.y(v),
            esc(label),
            n
        );
        if *n > 0 {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.1}%</text>"#,
                plot.x(i as f64 + 0.5),
                plot.y(v) - 4.0,
                *n as f64 * 100.0 / total as f64
            );
        }
    }
    s.push_str("</g>\n");
    s.push_str("</svg>\n");
    Some(s)
}
