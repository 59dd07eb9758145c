//! What one reclaim run reports: the run as a whole, each control interval, and what the `damon`
//! policy's kdamond did.

use super::controller::ControlStep;
use crate::kernel::damon::SchemeStats;

/// One control interval.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct IntervalRecord {
    /// Seconds since the workload started.
    pub t: f64,
    /// Guest ops in the epoch.
    pub ops: u64,
    /// Wall time of the epoch, µs.
    pub wall_us: u64,
    /// CPU time of the vCPU threads in the epoch, µs.
    pub vcpu_cpu_us: u64,
    /// Run-queue wait of the vCPU threads in the epoch, µs.
    pub runq_wait_us: u64,
    /// Resident guest pages after the interval's reclaim.
    pub resident: u64,
    /// Refaults found this interval.
    pub refaults: u64,
    /// Pages actually reclaimed this interval.
    pub reclaimed: u64,
    /// The controller.
    pub control: ControlStep,
    /// `psi`: memory pressure (PSI some) during the epoch, % of its wall time.
    pub psi_pct: Option<f64>,
}

/// The result of one run.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReclaimRunReport {
    /// Policy.
    pub policy: String,
    /// Workload, normalised.
    pub workload: String,
    /// Backing.
    pub backing: String,
    /// Guest pages.
    pub pages: u64,
    /// Guest ops during the run.
    pub ops: u64,
    /// Guest time (sum of epoch wall times), s.
    pub guest_secs: f64,
    /// ops / guest_secs.
    pub ops_per_sec: f64,
    /// Guest ops after the warm-up.
    pub ops_measured: u64,
    /// Wall time of the epochs after the warm-up, s.
    pub measured_secs: f64,
    /// CPU time of the vCPU threads in the epochs after the warm-up, s.
    pub vcpu_cpu_secs: f64,
    /// Guest ops per vCPU-thread CPU second: the median over the measured epochs of each
    /// epoch's ops / vCPU CPU time (a median, so the odd epoch a co-running job slows is not the
    /// run's figure); a shared host's CPU contention does not move it.
    pub ops_per_cpu_sec: f64,
    /// ops_measured / measured_secs.
    pub ops_per_wall_sec: f64,
    /// vCPU-seconds of the measured epochs minus the vCPU threads' run-queue waits, s: the time
    /// the guest ran or was blocked (on faults, swap-in), without the time a loaded host gave
    /// its CPU to others.
    pub vcpu_eff_secs: f64,
    /// Median over the measured epochs of ops / (vCPU wall − run-queue wait) (0 without
    /// schedstat): unlike CPU time it includes the time the guest was blocked on faults.
    pub ops_per_eff_sec: f64,
    /// `psi`: memory pressure (PSI some) during the measured epochs, % of wall time.
    pub psi_some_pct: Option<f64>,
    /// `psi`: whose pressure was read.
    pub pressure_scope: Option<String>,
    /// `damon`: the scheme's counters and quota at the end.
    pub damon: Option<DamonRunInfo>,
    /// Resident guest memory after fill, bytes.
    pub rss_start: u64,
    /// Resident guest memory at the end (before verify), bytes.
    pub rss_end: u64,
    /// Swap in use by this run at the end (from /proc/swaps, delta), bytes.
    pub swap_used: u64,
    /// RAM the zram device holds for it (mm_stat mem_used_total delta), bytes; 0 for non-zram.
    pub zram_mem: u64,
    /// Memory saved: RSS drop minus zram's RAM, bytes.
    pub saved: u64,
    /// Cold pages at the end (not accessed during the last `cold_window`).
    pub cold_pages: u64,
    /// Of them, out of memory at the end.
    pub cold_reclaimed: u64,
    /// Working set at the end (accessed during the last `cold_window`).
    pub ws_pages: u64,
    /// Of them, out of memory at the end.
    pub ws_reclaimed: u64,
    /// Pages reclaimed (seen leaving memory), total.
    pub reclaimed: u64,
    /// Refaults (residency scans plus pages the sources saw while out).
    pub refaults: u64,
    /// Refaults per minute, percent of the working set.
    pub refault_pct_ws_min: f64,
    /// CPU time of aging (harvest + engine), ns.
    pub aging_cpu_ns: u64,
    /// CPU time of reclaim (residency scans, selection, madvise, kernel commands), ns.
    pub reclaim_cpu_ns: u64,
    /// madvise calls.
    pub madvise_calls: u64,
    /// Guest uffd-minor faults during the run (after fill), `engine-all` only.
    pub uffd_faults: Option<u64>,
    /// Words the verify pass found wrong (must be 0).
    pub verify_mismatches: u64,
    /// Sources the engine used, with availability.
    pub sources: Vec<String>,
    /// Per interval.
    pub intervals: Vec<IntervalRecord>,
    /// The kernel's memcg OOM killer ended the run (a kernel policy run in a child process):
    /// then every other figure is zero and the run counts in no mean.
    #[serde(default)]
    pub oom_killed: Option<OomKill>,
}

/// How the memcg's OOM killer ended a run: the measured result of a kernel policy whose limit
/// the kernel could not reclaim down to.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OomKill {
    /// The memcg's hard limit when the run died, bytes (`None`: unlimited or unreadable).
    pub limit_bytes: Option<u64>,
    /// Seconds from the child's start to its death (VM set-up and fill included).
    pub after_s: f64,
    /// The memcg's own `oom_kill` count (v1 `memory.oom_control`, v2 `memory.events`): the
    /// evidence that its OOM killer, not something else, sent the SIGKILL.
    pub oom_kills: u64,
}

impl std::fmt::Display for OomKill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.limit_bytes {
            Some(b) => write!(
                f,
                "OOM-killed at limit {:.1} MiB",
                b as f64 / f64::from(1 << 20)
            )?,
            None => f.write_str("OOM-killed (limit unreadable)")?,
        }
        write!(
            f,
            " after {:.1} s (memcg oom_kill count {})",
            self.after_s, self.oom_kills
        )
    }
}

/// What the `damon` policy's kdamond did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct DamonRunInfo {
    /// Scheme counters at the end.
    pub stats: SchemeStats,
    /// Whether the quota was auto-tuned toward the PSI goal (the kernel has `quotas/goals`).
    pub auto_tuned: bool,
    /// The effective quota at the end, bytes (kernels that report it).
    pub effective_quota_bytes: Option<u64>,
    /// The kdamond thread's CPU time during the run, ns (10 ms ticks).
    pub kdamond_cpu_ns: u64,
}
