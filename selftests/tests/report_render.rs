//! `--report DIR` checked as a person would see it: a short real `agelab run` and a tiny real
//! `agelab reclaim` write their reports, headless Chromium loads each `index.html`, takes a
//! screenshot and dumps the DOM after scripts ran. A page fails on any console message (script
//! errors included, also caught by the page's own `window.onerror` marker), on a missing chart
//! id, or on a chart whose `<g class="data">` groups hold fewer shapes than it must. The check is
//! shown failing on pages built to fail: one chart's data removed, a script error injected.
//!
//! Needs /dev/kvm and the Debian package `chromium`; without either it prints `SKIP` and passes.

use agelab_vmm::testing::skip;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Chart ids of a run report and the fewest data shapes each must hold (a 2 s run at 500 ms
/// has 4 passes: at least one heatmap cell and one generation bar per pass, a line and its
/// points per source, bars of the working set).
const RUN_CHARTS: [(&str, usize); 4] = [
    ("chart-heatmap", 4),
    ("chart-generations", 4),
    ("chart-accuracy", 4),
    ("chart-working-set", 3),
];

/// Chart ids of a reclaim report with three policies.
const RECLAIM_CHARTS: [(&str, usize); 3] = [
    ("chart-reclaim-tradeoff", 3),
    ("chart-reclaim-metrics", 6),
    ("chart-reclaim-resident", 3),
];

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Why this host cannot run a VM, in the VMM's own words (`open_kvm`), if it cannot.
fn kvm_usable() -> Result<(), agelab_vmm::VmError> {
    agelab_vmm::vm::open_kvm().map(drop)
}

/// Why the test cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if chromium().is_none() {
        return Some("chromium not installed (Debian: chromium)".into());
    }
    kvm_usable().err().map(|e| e.to_string())
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("report-render-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs agelab with `args`, which must succeed.
fn agelab(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_agelab"))
        .args(args)
        .output()
        .expect("running agelab");
    assert!(
        out.status.success(),
        "agelab {} failed: {:?}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The directory of one real `agelab run --report`, shared by the tests of this file.
fn run_report() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("run");
        agelab(&[
            "run",
            "--duration",
            "2s",
            "--quiet",
            "--report",
            dir.to_str().expect("utf-8 path"),
        ]);
        dir
    })
}

/// What Chromium made of a page.
struct Rendered {
    /// The DOM after load, serialised.
    dom: String,
    /// Console messages (`INFO:CONSOLE…` lines of Chromium's log).
    console: Vec<String>,
}

/// Loads `html` in headless Chromium: the DOM after load and the console; with `screenshot`,
/// also a 1400 × 3000 screenshot there.
fn render(html: &Path, screenshot: Option<&Path>) -> Rendered {
    let chromium = chromium().expect("chromium checked before");
    let url = format!(
        "file://{}",
        html.canonicalize().expect("page exists").display()
    );
    let profile = html.with_extension("chromium-profile");
    let run = |extra: &[String]| {
        let out = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1400,3000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("running chromium");
        assert!(out.status.success(), "chromium: {:?}", out.status);
        out
    };
    let out = run(&["--dump-dom".to_string()]);
    let mut console: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    if let Some(png) = screenshot {
        let shot = run(&[format!("--screenshot={}", png.display())]);
        console.extend(
            String::from_utf8_lossy(&shot.stderr)
                .lines()
                .filter(|l| l.contains(":CONSOLE"))
                .map(str::to_string),
        );
        assert!(png.is_file(), "screenshot {} written", png.display());
    }
    let _ = std::fs::remove_dir_all(&profile);
    Rendered {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console,
    }
}

/// Shapes inside the `<g class="data">` groups of `fragment` (groups do not nest).
fn data_shapes(fragment: &str) -> usize {
    fragment
        .split("<g class=\"data\"")
        .skip(1)
        .map(|g| {
            let g = &g[..g.find("</g>").unwrap_or(g.len())];
            ["<rect", "<path", "<circle", "<line", "<polyline"]
                .iter()
                .map(|t| g.matches(t).count())
                .sum::<usize>()
        })
        .sum()
}

/// Everything wrong with a rendered page, one line each; empty when it is fine.
fn problems(page: &Rendered, charts: &[(&str, usize)]) -> Vec<String> {
    let mut out: Vec<String> = page
        .console
        .iter()
        .map(|l| format!("console: {l}"))
        .collect();
    if page.dom.contains("class=\"js-error\"") {
        out.push("the page's window.onerror recorded a script error".into());
    }
    if !page.dom.contains("</html>") {
        out.push("no DOM dumped".into());
    }
    for (id, min) in charts {
        let Some(at) = page.dom.find(&format!("id=\"{id}\"")) else {
            out.push(format!("{id}: missing"));
            continue;
        };
        let fig = &page.dom[at..];
        let fig = &fig[..fig.find("</figure>").unwrap_or(fig.len())];
        let n = data_shapes(fig);
        if n < *min {
            out.push(format!(
                "{id}: empty ({n} data shapes, needs ≥ {min}){}",
                if fig.contains("class=\"empty\"") {
                    "; the page says no data"
                } else {
                    ""
                }
            ));
        }
    }
    out
}

#[test]
fn run_report_renders_every_chart() {
    if let Some(why) = unavailable() {
        skip("report_render", &why);
        return;
    }
    let dir = run_report();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("report.json")).expect("report.json"),
    )
    .expect("report.json parses");
    assert_eq!(json["kind"], "run");
    assert!(json["host"]["kernel"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    let passes = json["report"]["passes"]
        .as_array()
        .expect("per-pass series");
    assert!(passes.len() >= 2, "{} passes", passes.len());
    assert!(passes[0]["sources"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));
    assert!(json["report"]["heatmap"]["columns"].is_array());

    let png = dir.join("screenshot.png");
    let page = render(&dir.join("index.html"), Some(&png));
    let bad = problems(&page, &RUN_CHARTS);
    assert!(bad.is_empty(), "run report: {bad:#?}");
    // The facts a reader needs first are on the page.
    for fact in ["uname -r", "KVM", "lru_gen", "--duration"] {
        assert!(page.dom.contains(fact), "page shows {fact}");
    }
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn the_check_fails_on_pages_built_to_fail() {
    if let Some(why) = unavailable() {
        skip("report_render", &why);
        return;
    }
    let dir = run_report();
    let good = std::fs::read_to_string(dir.join("index.html")).expect("index.html");
    let broken = scratch("broken");
    std::fs::create_dir_all(&broken).expect("scratch dir");

    // One chart's data removed: its data group emptied, as a report without passes would be.
    let at = good
        .find("id=\"chart-generations\"")
        .expect("chart present");
    let end = at + good[at..].find("</figure>").expect("figure closes");
    let mut no_data = good[..at].to_string();
    let fig = &good[at..end];
    let svg_at = fig.find("<svg").expect("chart svg");
    no_data.push_str(&fig[..svg_at]);
    no_data.push_str("<p class=\"empty\">no data: removed</p>");
    no_data.push_str(&good[end..]);
    let page = broken.join("no-data.html");
    std::fs::write(&page, &no_data).expect("write page");
    let bad = problems(&render(&page, None), &RUN_CHARTS);
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert!(
        bad[0].starts_with("chart-generations: empty (0 data shapes"),
        "{bad:#?}"
    );

    // A chart missing altogether.
    let page = broken.join("missing.html");
    std::fs::write(&page, good.replace("id=\"chart-heatmap\"", "id=\"gone\"")).expect("write");
    let bad = problems(&render(&page, None), &RUN_CHARTS);
    assert_eq!(bad, vec!["chart-heatmap: missing".to_string()]);

    // A script error: the console and the page's own marker both report it.
    let page = broken.join("script-error.html");
    std::fs::write(
        &page,
        good.replace("</body>", "<script>drawChart();</script></body>"),
    )
    .expect("write page");
    let bad = problems(&render(&page, None), &RUN_CHARTS);
    assert!(
        bad.iter()
            .any(|p| p.starts_with("console:") && p.contains("drawChart is not defined")),
        "{bad:#?}"
    );
    assert!(bad.iter().any(|p| p.contains("window.onerror")), "{bad:#?}");
    std::fs::remove_dir_all(&broken).ok();
}

#[test]
fn reclaim_report_renders_every_chart() {
    if let Some(why) = unavailable() {
        skip("report_render", &why);
        return;
    }
    // File-backed memory pages out without swap, so the host's swap setup is not touched;
    // a large step cap lets a 4 s run reclaim something. Two reps: intervals. ~30 s here.
    let dir = scratch("reclaim");
    let backing = scratch("reclaim-backing");
    std::fs::create_dir_all(&backing).expect("backing dir");
    agelab(&[
        "reclaim",
        "--policy",
        "none,oracle,engine-all",
        "--workload",
        "hotcold:hot=20%,p=100%,op=read",
        "--mem",
        "64M",
        "--duration",
        "4s",
        "--min-age",
        "500ms",
        "--max-step",
        "20",
        "--step-period",
        "1s",
        "--reps",
        "2",
        "--backing",
        &format!("file:{}", backing.display()),
        "--report",
        dir.to_str().expect("utf-8 path"),
    ]);
    std::fs::remove_dir_all(&backing).ok();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("report.json")).expect("report.json"),
    )
    .expect("report.json parses");
    assert_eq!(json["kind"], "reclaim");
    let png = dir.join("screenshot.png");
    let page = render(&dir.join("index.html"), Some(&png));
    let bad = problems(&page, &RECLAIM_CHARTS);
    assert!(bad.is_empty(), "reclaim report: {bad:#?}");
    eprintln!("screenshot: {}", png.display());
}
