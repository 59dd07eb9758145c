//! What a guest page fault costs on this host, measured with a real guest on /dev/kvm in about
//! a quarter second of vCPU time, so that every benchmark can print it beside its results: a change of
//! host kernel or machine image moves every fault-bound figure, and this line shows it at once.
//!
//! [`HostProfile::measure`] runs the memstress guest ([`crate::memstress`]) over
//! [`PROBE_PAGES`] pages and reads the vCPU thread's CPU clock and KVM's `pf_fixed` stat around
//! each sweep:
//! - **first touch**: one write per page of fresh anonymous memory (host page allocation plus
//!   KVM's fault), per page;
//! - **write-protect fault**: KVM's manual-protect dirty log re-protects every page
//!   (KVM_CLEAR_DIRTY_LOG) and the guest writes each once more, per fault KVM fixed;
//! - **read fault after a zap**: `MADV_DONTNEED` over memfd memory (the MMU notifier zaps KVM's
//!   mappings, the pages stay in the page cache) and the guest reads each page, per fault. Here
//!   one read fault maps several pages (0.12–0.19 `pf_fixed` per page on kvm_pvm; presumably
//!   KVM's spte prefetch over pages the host fault mapped around, not traced), so this figure is
//!   per fault and its `pf_fixed` per page says how many pages one fault covers.
//!
//! Each figure is the sweep's vCPU CPU time minus that of the same sweep right after it, when
//! nothing faults (the guest's own loop and the SYNC exit), divided by the faults taken. CPU time
//! rather than wall time: a loaded host makes the vCPU wait for a CPU, not fault more slowly.

use crate::dirty::{DirtyError, DirtyMode, DirtyOptions, DirtyTracker};
use crate::memstress::{Access, GuestCmd, Memstress, MemstressConfig, MemstressError};
use crate::page_map::PAGE_SIZE;
use crate::pageset::PageSet;
use crate::Backing;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Pages each probe sweep touches (4 MiB): at ~33 µs per fault the probe's vCPU needs ~0.25 s
/// of CPU (0.7 s of wall time in all at load 8 on 2 cores, seconds in a burst of other work);
/// 5 runs in a row spread by ±3 %.
pub const PROBE_PAGES: u64 = 1024;
/// Measured rounds of the write-protect and zap probes (the median is reported).
const ROUNDS: usize = 3;

/// Errors of the probe (kept in [`HostProfile::error`]: a benchmark still prints the host line).
#[derive(Debug, thiserror::Error)]
pub enum HostProfileError {
    /// The memstress VM could not be built or driven.
    #[error(transparent)]
    Memstress(#[from] MemstressError),
    /// Dirty logging could not be set up or harvested.
    #[error(transparent)]
    Dirty(#[from] DirtyError),
    /// The vCPU thread's CPU clock could not be read.
    #[error("the vCPU thread's CPU clock cannot be read")]
    NoCpuClock,
    /// `MADV_DONTNEED` over the memfd mapping failed.
    #[error("madvise(MADV_DONTNEED) over the probe's memfd memory: {0}")]
    Zap(#[source] std::io::Error),
    /// The sweep meant as the no-fault baseline took faults itself.
    #[error("the repeat sweep over {pages} pages, the no-fault baseline, took {faults} faults (at most 1% allowed)")]
    Unsettled {
        /// Faults (`pf_fixed`) the repeat sweep took.
        faults: u64,
        /// Pages it touched.
        pages: u64,
    },
    /// A harvest after the guest wrote every page did not report every page.
    #[error("the guest wrote all {pages} pages, the dirty log reported {reported}")]
    Harvest {
        /// Pages written.
        pages: u64,
        /// Pages the harvest reported.
        reported: u64,
    },
}

/// One fault figure: CPU time per fault and the faults KVM fixed per page touched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct FaultCost {
    /// vCPU CPU µs per fault taken (per page where KVM has no `pf_fixed` stat); `None` when the
    /// sweep took no fault at all (e.g. dirty logging by PML, which does not write-protect).
    pub us: Option<f64>,
    /// KVM `pf_fixed` per page touched (`None` without KVM binary stats).
    pub pf_fixed_per_page: Option<f64>,
}

/// Who the host is and what a guest page fault costs on it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HostProfile {
    /// `uname -r`.
    pub kernel: String,
    /// KVM flavour: the vendor module loaded (`kvm_pvm`, `kvm_intel`, `kvm_amd`), `kvm` when
    /// only the core module is listed, `none` without /dev/kvm.
    pub kvm: String,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// 1-minute load average when the probe ran.
    pub load_average: Option<f64>,
    /// Pages per probe sweep.
    pub probe_pages: u64,
    /// Guest first touch of fresh anonymous memory, vCPU CPU µs per page.
    pub first_touch_us_per_page: Option<f64>,
    /// KVM `pf_fixed` per page of the first touch.
    pub first_touch_pf_fixed_per_page: Option<f64>,
    /// Guest write to a page KVM_CLEAR_DIRTY_LOG re-protected (CPL3 at x86, EL0 at arm64).
    pub wp_fault: FaultCost,
    /// Guest read of a memfd page after `MADV_DONTNEED` zapped KVM's mapping.
    pub zap_read_fault: FaultCost,
    /// Wall time of the whole probe, ms.
    pub probe_ms: f64,
    /// Why the fault figures are missing, if they are.
    pub error: Option<String>,
}

impl HostProfile {
    /// Identifies the host and measures its fault costs. Never fails: a probe that cannot run
    /// (no KVM, ...) leaves the figures `None` and says why in [`HostProfile::error`].
    pub fn measure() -> Self {
        let t = Instant::now();
        let mut p = HostProfile {
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            kvm: kvm_flavour(),
            cpu_model: cpu_model(),
            load_average: read_trim("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok()),
            probe_pages: PROBE_PAGES,
            ..Default::default()
        };
        if let Err(e) = p.probe_anon().and_then(|()| p.probe_zap()) {
            p.error = Some(e.to_string());
        }
        p.probe_ms = t.elapsed().as_secs_f64() * 1e3;
        p
    }

    /// First touch and write-protect faults on one anonymous-memory VM.
    fn probe_anon(&mut self) -> Result<(), HostProfileError> {
        let mut ms = probe_vm(Backing::Anon)?;
        let mut opts = DirtyOptions::new(DirtyMode::ClearLog);
        opts.initially_set = true;
        let mut tracker = DirtyTracker::new(ms.vm_mut(), opts)?;
        ms.start()?;
        let pages = ms.test_pages();
        let write = GuestCmd::sweep(Access::Write);
        let first = sweep(&ms, write)?;
        let settled = sweep(&ms, write)?;
        // Per page, whatever the fault count: what a guest pays to fill its memory.
        self.first_touch_us_per_page = Some(first.extra_us(&settled) / pages as f64);
        self.first_touch_pf_fixed_per_page = first.cost_over(&settled, pages)?.pf_fixed_per_page;

        // With INITIALLY_SET, logging starts with every page dirty and nothing write-protected:
        // the first harvest's CLEAR re-protects them all. Without it, enabling logging
        // write-protects the slot, and the pages must be written before a harvest reports them.
        tracker.set_logging_all(ms.vm(), true)?;
        if !tracker.initially_set() {
            sweep(&ms, write)?;
        }
        let mut out = PageSet::new(pages);
        harvest_all(&mut tracker, &mut out, pages)?;
        let mut rounds = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let faulting = sweep(&ms, write)?;
            let settled = sweep(&ms, write)?;
            rounds.push(faulting.cost_over(&settled, pages)?);
            harvest_all(&mut tracker, &mut out, pages)?;
        }
        self.wp_fault = median_cost(rounds);
        Ok(())
    }

    /// Read faults after `MADV_DONTNEED` on a memfd-memory VM.
    fn probe_zap(&mut self) -> Result<(), HostProfileError> {
        let mut ms = probe_vm(Backing::Memfd)?;
        ms.start()?;
        let pages = ms.test_pages();
        sweep(&ms, GuestCmd::sweep(Access::Write))?;
        let read = GuestCmd::sweep(Access::Read);
        let range = &ms.vm().page_map().ranges()[0];
        let (hva, len) = (range.hva, range.pages * PAGE_SIZE);
        let mut rounds = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            // SAFETY: the VM's own shared memfd mapping, `len` bytes from `hva`; MADV_DONTNEED
            // only drops the process's page-table entries (the data stays in the memfd).
            let rc = unsafe {
                libc::madvise(hva as *mut libc::c_void, len as usize, libc::MADV_DONTNEED)
            };
            if rc != 0 {
                return Err(HostProfileError::Zap(std::io::Error::last_os_error()));
            }
            let faulting = sweep(&ms, read)?;
            let settled = sweep(&ms, read)?;
            rounds.push(faulting.cost_over(&settled, pages)?);
        }
        self.zap_read_fault = median_cost(rounds);
        Ok(())
    }
}

impl HostProfile {
    /// Time per page a whole-memory guest pass may take before a watchdog calls it stuck on
    /// this host ([`crate::workload::Workload::set_page_limit`]): 16 times the measured first
    /// touch, so a vCPU that gets a sixteenth of a CPU (32 runnable threads on 2 cores) is still
    /// not called stuck, and never less than [`crate::workload::DEFAULT_PAGE_LIMIT`].
    pub fn whole_memory_page_limit(&self) -> Duration {
        let measured = self.first_touch_us_per_page.map_or(Duration::ZERO, |us| {
            Duration::from_secs_f64(us * 16.0 / 1e6)
        });
        measured.max(crate::workload::DEFAULT_PAGE_LIMIT)
    }
}

impl std::fmt::Display for HostProfile {
    /// One line: `host: KERNEL KVM | first touch X µs/page | CPL3 WP fault Y µs (pf_fixed
    /// F/page) | zap+read fault Z µs (pf_fixed F/page) | load L | CPU`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host: {} {}", self.kernel, self.kvm)?;
        match &self.error {
            Some(e) => write!(f, " | fault probe failed: {e}")?,
            None => {
                write!(
                    f,
                    " | first touch {} µs/page | {} WP fault {} | zap+read fault {}",
                    us(self.first_touch_us_per_page),
                    if cfg!(target_arch = "aarch64") {
                        "EL0"
                    } else {
                        "CPL3"
                    },
                    fault(&self.wp_fault),
                    fault(&self.zap_read_fault)
                )?;
            }
        }
        if let Some(l) = self.load_average {
            write!(f, " | load {l:.2}")?;
        }
        write!(f, " | {}", self.cpu_model)
    }
}

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

fn fault(c: &FaultCost) -> String {
    let per_page = c.pf_fixed_per_page.map_or_else(
        || "no KVM stats".into(),
        |f| format!("pf_fixed {f:.2}/page"),
    );
    match c.us {
        Some(v) => format!("{v:.1} µs ({per_page})"),
        None => format!("none taken ({per_page})"),
    }
}

/// A one-vCPU memstress VM of [`PROBE_PAGES`] pages (4 KiB guest page-table entries).
fn probe_vm(backing: Backing) -> Result<Memstress, MemstressError> {
    Memstress::new(&MemstressConfig {
        vcpus: 1,
        bytes_per_vcpu: PROBE_PAGES * PAGE_SIZE,
        overlap: false,
        backing,
    })
}

/// vCPU CPU time and `pf_fixed` spent by one guest sweep.
#[derive(Clone, Copy, Debug)]
struct Spent {
    cpu: Duration,
    pf_fixed: Option<u64>,
}

impl Spent {
    /// vCPU CPU µs this sweep spent beyond `settled`.
    fn extra_us(&self, settled: &Spent) -> f64 {
        self.cpu.saturating_sub(settled.cpu).as_secs_f64() * 1e6
    }

    /// Cost per fault of this (faulting) sweep over `settled`, the same sweep repeated, which
    /// must take (next to) no fault: a few may come from host events (an MMU notifier zapping
    /// a page), more mean the baseline is not one.
    fn cost_over(&self, settled: &Spent, pages: u64) -> Result<FaultCost, HostProfileError> {
        if let Some(faults) = settled.pf_fixed.filter(|&f| f * 100 > pages) {
            return Err(HostProfileError::Unsettled { faults, pages });
        }
        let extra = self.extra_us(settled);
        Ok(FaultCost {
            us: match self.pf_fixed {
                Some(0) => None,
                Some(n) => Some(extra / n as f64),
                None => Some(extra / pages as f64),
            },
            pf_fixed_per_page: self.pf_fixed.map(|n| n as f64 / pages as f64),
        })
    }
}

/// Runs `cmd` on the (only) vCPU and returns what it spent.
fn sweep(ms: &Memstress, cmd: GuestCmd) -> Result<Spent, HostProfileError> {
    let vm = ms.vm();
    let pf = || vm.kvm_faults_fixed();
    let (cpu0, pf0) = (vm.vcpu_cpu_time(0), pf());
    ms.run(cmd)?;
    let (cpu1, pf1) = (vm.vcpu_cpu_time(0), pf());
    let (Some(a), Some(b)) = (cpu0, cpu1) else {
        return Err(HostProfileError::NoCpuClock);
    };
    Ok(Spent {
        cpu: b.saturating_sub(a),
        pf_fixed: pf0.zip(pf1).map(|(a, b)| b.saturating_sub(a)),
    })
}

/// Harvests (GET + CLEAR: every page re-protected) and checks every page was reported.
fn harvest_all(
    tracker: &mut DirtyTracker,
    out: &mut PageSet,
    pages: u64,
) -> Result<(), HostProfileError> {
    tracker.harvest_into(out)?;
    let reported = out.count();
    if reported != pages {
        return Err(HostProfileError::Harvest { pages, reported });
    }
    Ok(())
}

/// The round with the median CPU per fault.
fn median_cost(mut rounds: Vec<FaultCost>) -> FaultCost {
    rounds.sort_by(|a, b| a.us.unwrap_or(0.0).total_cmp(&b.us.unwrap_or(0.0)));
    rounds.get(rounds.len() / 2).copied().unwrap_or_default()
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The KVM flavour of this host: the vendor module loaded (`kvm_pvm`, `kvm_intel`, `kvm_amd`),
/// else `kvm` with /dev/kvm present (built-in, or arm64), else `none`.
pub fn kvm_flavour() -> String {
    let module = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
    ["kvm_pvm", "kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| module(m))
        .map(str::to_string)
        .unwrap_or_else(|| {
            if std::path::Path::new("/dev/kvm").exists() {
                "kvm".into()
            } else {
                "none".into()
            }
        })
}

/// The CPU model from `/proc/cpuinfo` (`model name` on x86, the implementer and part on arm64).
fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    field("model name")
        .or_else(|| {
            let part = field("CPU part")?;
            Some(format!(
                "CPU implementer {} part {part}",
                field("CPU implementer").unwrap_or_else(|| "?".into())
            ))
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> HostProfile {
        HostProfile {
            kernel: "6.18.44-fc-v1300".into(),
            kvm: "kvm_pvm".into(),
            cpu_model: "Intel(R) Xeon(R) Processor".into(),
            load_average: Some(0.5),
            probe_pages: PROBE_PAGES,
            first_touch_us_per_page: Some(18.64),
            first_touch_pf_fixed_per_page: Some(1.0),
            wp_fault: FaultCost {
                us: Some(15.21),
                pf_fixed_per_page: Some(1.0),
            },
            zap_read_fault: FaultCost {
                us: None,
                pf_fixed_per_page: Some(0.0),
            },
            probe_ms: 400.0,
            error: None,
        }
    }

    #[test]
    fn the_line_names_host_and_fault_costs() {
        let line = profile().to_string();
        assert!(
            line.starts_with(
                "host: 6.18.44-fc-v1300 kvm_pvm | first touch 18.6 µs/page | CPL3 WP fault \
                 15.2 µs (pf_fixed 1.00/page) | zap+read fault none taken (pf_fixed 0.00/page)"
            ),
            "{line}"
        );
        assert!(
            line.ends_with("| load 0.50 | Intel(R) Xeon(R) Processor"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn whole_memory_passes_get_sixteen_first_touches_per_page() {
        assert_eq!(
            profile().whole_memory_page_limit(),
            Duration::from_secs_f64(18.64 * 16.0 / 1e6)
        );
        let fast = HostProfile {
            first_touch_us_per_page: Some(2.6),
            ..profile()
        };
        assert_eq!(
            fast.whole_memory_page_limit(),
            crate::workload::DEFAULT_PAGE_LIMIT
        );
        let unmeasured = HostProfile {
            first_touch_us_per_page: None,
            ..profile()
        };
        assert_eq!(
            unmeasured.whole_memory_page_limit(),
            crate::workload::DEFAULT_PAGE_LIMIT
        );
    }

    #[test]
    fn a_failed_probe_still_names_the_host() {
        let p = HostProfile {
            error: Some("no /dev/kvm".into()),
            ..profile()
        };
        assert!(p
            .to_string()
            .starts_with("host: 6.18.44-fc-v1300 kvm_pvm | fault probe failed: no /dev/kvm |"));
    }

    #[test]
    fn cost_is_per_fault_taken_beyond_the_settled_sweep() {
        let spent = |ms: u64, pf: Option<u64>| Spent {
            cpu: Duration::from_millis(ms),
            pf_fixed: pf,
        };
        let cost = |a: Spent, b: Spent| a.cost_over(&b, 4096).expect("settled baseline");
        // 4096 faults cost 61 ms more than the sweep without faults: 14.9 µs each.
        let c = cost(spent(62, Some(4096)), spent(1, Some(0)));
        assert!((c.us.unwrap() - 61_000.0 / 4096.0).abs() < 1e-9);
        assert_eq!(c.pf_fixed_per_page, Some(1.0));
        // Half the pages faulted: the cost is per fault, not per page.
        let c = cost(spent(62, Some(2048)), spent(1, Some(0)));
        assert!((c.us.unwrap() - 61_000.0 / 2048.0).abs() < 1e-9);
        // A stray fault in the baseline is tolerated, 1% of the pages is not.
        assert!(spent(62, Some(4096))
            .cost_over(&spent(1, Some(40)), 4096)
            .is_ok());
        assert!(matches!(
            spent(62, Some(2048)).cost_over(&spent(1, Some(2048)), 4096),
            Err(HostProfileError::Unsettled {
                faults: 2048,
                pages: 4096
            })
        ));
        // No fault taken: no figure.
        assert_eq!(cost(spent(2, Some(0)), spent(1, Some(0))).us, None);
        // No KVM stats: per page.
        let c = cost(spent(62, None), spent(1, None));
        assert!((c.us.unwrap() - 61_000.0 / 4096.0).abs() < 1e-9);
        assert_eq!(c.pf_fixed_per_page, None);
    }
}
