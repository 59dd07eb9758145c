//! `--report DIR`: one self-contained `index.html` (inline SVG and CSS, a few lines of inline
//! JS that only record script errors into the page) and a `report.json` carrying the same data,
//! for `agelab run` and `agelab reclaim`.
//!
//! Every chart is a `<figure id="chart-…" class="chart">` whose data shapes sit in
//! `<g class="data">` groups; a chart without data still appears, with a `<p class="empty">`
//! saying so and no data group, which `selftests/tests/report_render.rs`
//! (headless Chromium) reports as an empty chart.

pub mod lab;
mod page;
mod reclaim;
mod run;
pub mod svg;

use std::path::{Path, PathBuf};

use agelab_mglru::kernel::lru_gen::LruGenControl;
use agelab_mglru::reclaim::bench::BenchReport;
use serde::Serialize;

use agelab_mglru::session::run::RunReport;

pub use reclaim::reclaim_html;

/// Guest pages as MiB, the unit of every memory axis of the charts.
fn pages_to_mib(pages: u64) -> f64 {
    pages as f64 * agelab_vmm::PAGE_SIZE as f64 / (1u64 << 20) as f64
}
pub use run::run_html;

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

#[cfg(test)]
mod tests {
    use super::page::figure;
    use super::run::{accuracy_chart, generations_chart};
    use super::svg::{self, num};
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
