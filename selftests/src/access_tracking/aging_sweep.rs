//! Aging while every vCPU faults, by vCPU count: `access_tracking_perf_test -p`.
//!
//! The mode the kernel selftest once had and dropped: one host thread runs aging passes back to
//! back while every vCPU keeps sweeping its region. Per pass it times the pass and counts the
//! pages found young; the vCPUs' ns per access is compared with a window of the same length
//! without aging. A sweep repeats this for each vCPU count and each source (lru_gen forced aging
//! of the test's memcg, page_idle, agelab's kvm-clear-log and uffd-minor) and prints the result in
//! the layout of the lockless-aging series' cover letter: one row per vCPU count.

use super::agents::agelab_source;
use super::lru_gen::MemcgAging;
use super::page_idle::IdleMarker;
use agelab_mglru::kernel::page_idle::page_idle_unavailable;
use agelab_mglru::AccessSource;
use agelab_util::stats::median;
use agelab_vmm::memstress::{Access, GuestCmd, Memstress, MemstressConfig, MemstressError};
use agelab_vmm::GuestPageMap;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Sources a sweep measures, in report order.
pub const SWEEP_SOURCES: &[&str] = &["lru_gen", "page_idle", "kvm-clear-log", "uffd-minor"];

/// vCPU counts of a sweep unless told otherwise.
pub const DEFAULT_VCPU_COUNTS: &[usize] = &[1, 2, 4, 8, 16];

/// How each cell of the sweep is measured.
#[derive(Clone, Debug)]
pub struct SweepPlan {
    /// vCPU counts, one row each.
    pub vcpu_counts: Vec<usize>,
    /// Sources, one table each.
    pub sources: Vec<String>,
    /// The VM of every cell but its vCPU count.
    pub memstress: MemstressConfig,
    /// What the vCPUs do while measured.
    pub access: Access,
    /// Shortest aging window (and the length of the window without aging).
    pub window: Duration,
    /// Fewest aging passes per cell: the aging window goes on until this many completed.
    pub min_passes: usize,
}

/// One cell: one source at one vCPU count.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SweepCell {
    /// Source name.
    pub source: String,
    /// vCPUs.
    pub vcpus: usize,
    /// Why the cell could not be measured (the source is missing on this kernel or backing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Aging passes completed while the vCPUs ran.
    pub passes: usize,
    /// Median time of one pass (s).
    pub pass_median_s: f64,
    /// 99th percentile (nearest rank) of the pass times (s).
    pub pass_p99_s: f64,
    /// Median pages a pass found young (accessed since the previous pass).
    pub young_median: f64,
    /// Pages in the guest's test memory.
    pub guest_pages: u64,
    /// vCPU ns per access without aging.
    pub guest_ns_idle: f64,
    /// vCPU ns per access while aging.
    pub guest_ns_aging: f64,
}

impl SweepCell {
    /// With aging ÷ without.
    pub fn slowdown(&self) -> f64 {
        if self.guest_ns_idle > 0.0 {
            self.guest_ns_aging / self.guest_ns_idle
        } else {
            f64::NAN
        }
    }
}

/// Errors of one cell (a failure, not a skip).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The memstress VM failed.
    #[error(transparent)]
    Guest(#[from] MemstressError),
    /// An aging pass failed.
    #[error("{source_name} aging pass: {msg}")]
    Pass {
        /// Source name.
        source_name: String,
        /// What failed.
        msg: String,
    },
    /// The aging thread panicked.
    #[error("{0}: aging thread panicked")]
    Panicked(String),
}

/// The nearest-rank percentile `p` (0..=100) of `xs` (0 when empty); sorts it.
pub fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

/// One aging pass of a source; returns the pages it found young.
type Pass<'a> = Box<dyn FnMut() -> Result<u64, String> + Send + 'a>;

/// A source ready to age one VM.
enum Ager<'a> {
    LruGen(&'a MemcgAging),
    PageIdle(IdleMarker, GuestPageMap),
    Source(Box<dyn AccessSource>),
}

impl<'a> Ager<'a> {
    fn into_pass(self) -> Pass<'a> {
        match self {
            Ager::LruGen(m) => Box::new(move || {
                m.age()
                    .map(|(g, _)| g.found_young())
                    .map_err(|e| e.to_string())
            }),
            Ager::PageIdle(marker, map) => Box::new(move || {
                let idle = marker.read_map(&map).map_err(|e| e.to_string())?;
                marker.mark_map(&map).map_err(|e| e.to_string())?;
                Ok(idle.iter().filter(|s| **s == Some(false)).count() as u64)
            }),
            Ager::Source(mut s) => Box::new(move || {
                s.harvest()
                    .map(|h| h.accessed.count())
                    .map_err(|e| e.to_string())
            }),
        }
    }
}

/// Measures one cell. `memcg`: the test's lru_gen memcg (the process is a member), `Err` with
/// why lru_gen cannot age here.
pub fn measure_cell(
    plan: &SweepPlan,
    source: &str,
    vcpus: usize,
    memcg: Result<&MemcgAging, &str>,
) -> Result<SweepCell, SweepError> {
    let mut cell = SweepCell {
        source: source.to_string(),
        vcpus,
        ..Default::default()
    };
    let cfg = MemstressConfig {
        vcpus,
        ..plan.memstress.clone()
    };
    let mut ms = Memstress::new(&cfg)?;
    cell.guest_pages = ms.test_pages();
    let ager = match source {
        "lru_gen" => memcg.map(Ager::LruGen).map_err(str::to_string),
        "page_idle" => match page_idle_unavailable() {
            Some(e) => Err(e.to_string()),
            None => IdleMarker::open()
                .map(|m| Ager::PageIdle(m, ms.vm().page_map().clone()))
                .map_err(|e| e.to_string()),
        },
        name => agelab_source(name, ms.vm_mut())
            .map(Ager::Source)
            .map_err(|e| e.to_string()),
    };
    let ager = match ager {
        Ok(a) => a,
        Err(why) => {
            cell.skipped = Some(why);
            return Ok(cell);
        }
    };
    ms.start()?;
    ms.run(GuestCmd::sweep(Access::Write))?;
    let mut pass = ager.into_pass();
    // The pass that clears what population left young is not measured.
    pass().map_err(|msg| SweepError::Pass {
        source_name: source.to_string(),
        msg,
    })?;
    let cmd = GuestCmd::sweep(plan.access);
    let per_cmd = ms.pages_per_vcpu().max(1) as f64;
    // Unmeasured: re-fault what the first pass left protected or zapped.
    ms.run(cmd)?;
    let (mut idle_ns, mut idle_n) = (0.0, 0.0);
    let end = Instant::now() + plan.window;
    while Instant::now() < end {
        idle_ns += ms.run(cmd)?.as_nanos() as f64;
        idle_n += per_cmd;
    }
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let (mut aging_ns, mut aging_n) = (0.0, 0.0);
    let (times, young) = std::thread::scope(|s| -> Result<(Vec<f64>, Vec<f64>), SweepError> {
        let h = s.spawn(|| -> Result<(Vec<f64>, Vec<f64>), String> {
            let (mut times, mut young) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let y = pass()?;
                // A pass that ends after the vCPUs stopped did not age under their faults.
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                times.push(t.elapsed().as_secs_f64());
                young.push(y as f64);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok((times, young))
        });
        let started = Instant::now();
        let mut guest = Ok(());
        // The vCPUs sweep until the window is over and enough passes completed.
        loop {
            match ms.run(cmd) {
                Ok(d) => {
                    aging_ns += d.as_nanos() as f64;
                    aging_n += per_cmd;
                }
                Err(e) => {
                    guest = Err(e);
                    break;
                }
            }
            if started.elapsed() >= plan.window
                && done.load(Ordering::Relaxed) >= plan.min_passes.max(1)
            {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let r = h
            .join()
            .map_err(|_| SweepError::Panicked(source.to_string()))?
            .map_err(|msg| SweepError::Pass {
                source_name: source.to_string(),
                msg,
            })?;
        guest?;
        Ok(r)
    })?;
    cell.passes = times.len();
    cell.pass_median_s = median(&mut times.clone());
    cell.pass_p99_s = percentile(&mut times.clone(), 99.0);
    cell.young_median = median(&mut young.clone());
    cell.guest_ns_idle = idle_ns / idle_n.max(1.0);
    cell.guest_ns_aging = aging_ns / aging_n.max(1.0);
    Ok(cell)
}

/// Every cell of a sweep, as `--json` prints it: `results.<source>.vcpus_<n>` (keys, not list
/// positions, so `agelab ab` names its metrics after the source and the vCPU count).
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    /// Bytes of guest memory per vCPU.
    pub bytes_per_vcpu: u64,
    /// Backing name.
    pub backing: String,
    /// `write` or `read`.
    pub access: String,
    /// Host kernel release.
    pub kernel: String,
    /// Cells by source, then by `vcpus_<n>`.
    pub results: std::collections::BTreeMap<String, std::collections::BTreeMap<String, SweepCell>>,
}

impl SweepReport {
    /// Collects `cells` (any order).
    pub fn new(plan: &SweepPlan, cells: &[SweepCell]) -> Self {
        let mut results: std::collections::BTreeMap<_, std::collections::BTreeMap<_, _>> =
            Default::default();
        for c in cells {
            results
                .entry(c.source.clone())
                .or_default()
                .insert(format!("vcpus_{}", c.vcpus), c.clone());
        }
        SweepReport {
            bytes_per_vcpu: plan.memstress.bytes_per_vcpu,
            backing: plan.memstress.backing.to_string(),
            access: access_name(plan.access).into(),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            results,
        }
    }
}

fn access_name(a: Access) -> &'static str {
    match a {
        Access::Read => "read",
        _ => "write",
    }
}

/// The sweep as text: per source, one row per vCPU count (the cover letter's layout: vCPUs, then
/// the time of one aging pass, then what the vCPUs paid).
pub fn tables(plan: &SweepPlan, cells: &[SweepCell]) -> String {
    let mut out = String::new();
    for source in &plan.sources {
        let rows: Vec<&SweepCell> = plan
            .vcpu_counts
            .iter()
            .filter_map(|n| cells.iter().find(|c| &c.source == source && c.vcpus == *n))
            .collect();
        out += &format!(
            "\n{source}: aging passes back to back while every vCPU {}s its {} MiB ({} backing)\n",
            access_name(plan.access),
            plan.memstress.bytes_per_vcpu >> 20,
            plan.memstress.backing
        );
        out += "| vCPUs | aging pass (median) | p99 | passes | young pages (median) | vCPU ns/access, no aging | while aging | slowdown |\n";
        out += "|------:|--------------------:|----:|-------:|---------------------:|-------------------------:|------------:|---------:|\n";
        for c in rows {
            match &c.skipped {
                Some(why) => out += &format!("| {} | skipped: {why} | | | | | | |\n", c.vcpus),
                None => {
                    out += &format!(
                    "| {} | {:.3} ms | {:.3} ms | {} | {:.0} of {} | {:.1} | {:.1} | {:.2}x |\n",
                    c.vcpus,
                    c.pass_median_s * 1e3,
                    c.pass_p99_s * 1e3,
                    c.passes,
                    c.young_median,
                    c.guest_pages,
                    c.guest_ns_idle,
                    c.guest_ns_aging,
                    c.slowdown()
                )
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut xs, 99.0), 99.0);
        assert_eq!(percentile(&mut xs, 100.0), 100.0);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 99.0), 3.0);
        assert_eq!(percentile(&mut [5.0], 50.0), 5.0);
        assert_eq!(percentile(&mut [], 99.0), 0.0);
    }
}
