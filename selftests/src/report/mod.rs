//! `--report DIR`: one self-contained `index.html` (inline SVG and CSS, a few lines of inline
//! JS that only record script errors into the page) and a `report.json` carrying the same data,
//! for `agelab run` and `agelab reclaim`.
//!
//! Every chart is a `<figure id="chart-…" class="chart">` whose data shapes sit in
//! `<g class="data">` groups; a chart without data still appears, with a `<p class="empty">`
//! saying so and no data group, which `selftests/tests/report_render.rs`
//! (headless Chromium) reports as an empty chart.

pub mod svg;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agelab_mglru::engine::heatmap::scale_colour;
use agelab_mglru::engine::{PassJson, WorkingSetHistogram};
use agelab_mglru::kernel::lru_gen::LruGenControl;
use agelab_mglru::reclaim::bench::BenchReport;
use agelab_mglru::reclaim::plot;
use serde::Serialize;

use agelab_mglru::session::run::RunReport;
use svg::{esc, num, Plot, PALETTE};

/// The chart ids of a run report, in page order.
pub const RUN_CHARTS: [&str; 4] = [
    "chart-heatmap",
    "chart-generations",
    "chart-accuracy",
    "chart-working-set",
];

/// The chart ids of a reclaim report, in page order.
pub const RECLAIM_CHARTS: [&str; 3] = [
    "chart-reclaim-tradeoff",
    "chart-reclaim-metrics",
    "chart-reclaim-resident",
];

/// A failure writing the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file of the report could not be written.
    #[error("--report: writing {path}: {err}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
}

/// The host and kernel facts that decide what a run can see.
#[derive(Clone, Debug, Serialize)]
pub struct HostFacts {
    /// `uname -r`.
    pub kernel: String,
    /// KVM modules loaded (`/sys/module/kvm*`).
    pub kvm_modules: Vec<String>,
    /// KVM flavour in words.
    pub kvm: String,
    /// lru_gen caps (`/sys/kernel/mm/lru_gen/enabled`) or why lru_gen is absent.
    pub lru_gen: String,
}

impl HostFacts {
    /// Reads the facts of this host.
    pub fn gather() -> Self {
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("unknown (uname: {e})"));
        let mut kvm_modules: Vec<String> = std::fs::read_dir("/sys/module")
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n == "kvm" || n.starts_with("kvm_"))
                    .collect()
            })
            .unwrap_or_default();
        kvm_modules.sort();
        let has = |m: &str| kvm_modules.iter().any(|k| k == m);
        let dev = Path::new("/dev/kvm").exists();
        let kvm = if has("kvm_pvm") {
            "kvm_pvm (paravirtual KVM: guest CPL0 code is emulated, CPL3 runs natively; shadow paging)".to_string()
        } else if has("kvm_intel") {
            "kvm_intel (VMX)".to_string()
        } else if has("kvm_amd") {
            "kvm_amd (SVM)".to_string()
        } else if dev {
            "/dev/kvm present, no vendor module listed (built in?)".to_string()
        } else {
            "no KVM: /dev/kvm does not exist".to_string()
        };
        let ctl = LruGenControl::new();
        let lru_gen = match ctl.caps() {
            Ok(caps) => {
                let names = caps.names().join(", ");
                match ctl.available() {
                    Ok(()) => format!("enabled {caps} ({names})"),
                    Err(why) => format!("enabled {caps} ({names}); commands unavailable: {why}"),
                }
            }
            Err(e) => format!("absent: {e}"),
        };
        HostFacts {
            kernel,
            kvm_modules,
            kvm,
            lru_gen,
        }
    }
}

/// What `report.json` holds: which command, its parameters, the host, and the command's own
/// `--json` report.
#[derive(Debug, Serialize)]
struct ReportJson<'a, R: Serialize> {
    kind: &'static str,
    params: &'a [(String, String)],
    host: &'a HostFacts,
    report: &'a R,
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|err| ReportError::Write {
        path: path.clone(),
        err,
    })?;
    Ok(path)
}

fn write_both<R: Serialize>(
    dir: &Path,
    kind: &'static str,
    params: &[(String, String)],
    host: &HostFacts,
    report: &R,
    html: &str,
) -> Result<PathBuf, ReportError> {
    let json = serde_json::to_string_pretty(&ReportJson {
        kind,
        params,
        host,
        report,
    })
    .expect("report serialises");
    write(dir, "report.json", &json)?;
    write(dir, "index.html", html)
}

/// Writes `index.html` and `report.json` of an `agelab run` into `dir` (which exists); returns
/// the page's path.
pub fn write_run(
    dir: &Path,
    params: &[(String, String)],
    r: &RunReport,
) -> Result<PathBuf, ReportError> {
    let host = HostFacts::gather();
    let html = run_html(params, &host, r);
    write_both(dir, "run", params, &host, r, &html)
}

/// Writes `index.html` and `report.json` of an `agelab reclaim` into `dir`.
pub fn write_reclaim(
    dir: &Path,
    params: &[(String, String)],
    r: &BenchReport,
) -> Result<PathBuf, ReportError> {
    let host = HostFacts::gather();
    let html = reclaim_html(params, &host, r);
    write_both(dir, "reclaim", params, &host, r, &html)
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1320px}\
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 6px}\
table{border-collapse:collapse;font-size:13px;margin:6px 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.facts{display:flex;gap:28px;flex-wrap:wrap}.facts table{max-width:640px}\
figure.chart{margin:10px 0 18px;padding:0}figcaption{font-size:13px;color:#444;margin:0 0 4px;max-width:1100px}\
figure.chart svg{max-width:100%;height:auto;display:block}\
p.empty{color:#a00;font-weight:bold}.blind{background:#fee;border:1px solid #c00;padding:6px 10px}\
.js-error{color:#fff;background:#c00;padding:4px 8px}";

/// Installed first: any script error is written into the page, where a reader (or the render
/// test) sees it.
const ONERROR: &str = "window.onerror=function(m,src,line){var d=document.getElementById('js-errors')||document.documentElement;\
var p=document.createElement('p');p.className='js-error';p.textContent='script error: '+m+' (line '+line+')';d.appendChild(p);};";

/// Opens the group holding a chart's data shapes (what the render check counts; axes, ticks
/// and legends are outside it).
const DATA: &str = "<g class=\"data\">\n";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<script>{ONERROR}</script>\n<style>{STYLE}</style></head>\n<body><div id=\"js-errors\"></div>\n{body}</body></html>\n",
        esc(title)
    )
}

fn figure(id: &str, caption: &str, content: Option<String>, why_empty: &str) -> String {
    format!(
        "<figure id=\"{id}\" class=\"chart\"><figcaption>{}</figcaption>\n{}</figure>\n",
        esc(caption),
        content.unwrap_or_else(|| format!("<p class=\"empty\">no data: {}</p>", esc(why_empty)))
    )
}

fn kv_table(s: &mut String, title: &str, rows: &[(String, String)]) {
    let _ = write!(s, "<table><tr><th colspan=\"2\">{}</th></tr>", esc(title));
    for (k, v) in rows {
        let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
    }
    s.push_str("</table>\n");
}

fn host_rows(host: &HostFacts) -> Vec<(String, String)> {
    vec![
        ("kernel (uname -r)".into(), host.kernel.clone()),
        ("KVM".into(), host.kvm.clone()),
        ("KVM modules".into(), host.kvm_modules.join(", ")),
        ("lru_gen".into(), host.lru_gen.clone()),
    ]
}

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
fn generations_chart(passes: &[PassJson], pages: u64) -> Option<String> {
    if passes.is_empty() || pages == 0 {
        return None;
    }
    let max_gens = passes
        .iter()
        .map(|p| p.generations.len())
        .max()
        .unwrap_or(1);
    let mib = |p: u64| p as f64 * agelab_vmm::PAGE_SIZE as f64 / (1u64 << 20) as f64;
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
fn accuracy_chart(passes: &[PassJson]) -> Option<String> {
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
fn histogram_chart(h: &WorkingSetHistogram) -> Option<String> {
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
    let mib = |p: u64| p as f64 * agelab_vmm::PAGE_SIZE as f64 / (1u64 << 20) as f64;
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
fn tradeoff_chart(r: &BenchReport) -> Option<String> {
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
fn resident_chart(r: &BenchReport) -> Option<String> {
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
    let mib = |p: u64| p as f64 * agelab_vmm::PAGE_SIZE as f64 / (1u64 << 20) as f64;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            svg::nice_ticks(0.0, 256.0, 5),
            vec![0.0, 100.0, 200.0, 300.0]
        );
        let t = svg::nice_ticks(0.0, 1.0, 5);
        assert!(
            t.len() >= 5 && t[0] == 0.0 && *t.last().unwrap() >= 1.0,
            "{t:?}"
        );
        assert_eq!(num(2.50), "2.5");
        assert_eq!(num(-0.001), "0");
    }

    #[test]
    fn an_empty_chart_says_so_and_has_no_shapes() {
        let f = figure("chart-x", "cap", None, "nothing ran");
        assert!(f.contains("id=\"chart-x\"") && f.contains("no data: nothing ran"));
        assert!(!f.contains("<rect") && !f.contains("<path"));
        assert!(generations_chart(&[], 100).is_none());
        assert!(accuracy_chart(&[]).is_none());
    }

    #[test]
    fn host_facts_name_the_kernel() {
        let h = HostFacts::gather();
        assert!(!h.kernel.is_empty());
        assert!(h.lru_gen.starts_with("enabled") || h.lru_gen.starts_with("absent"));
    }
}
