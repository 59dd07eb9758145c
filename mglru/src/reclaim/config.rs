//! What one reclaim run is asked to do ([`ReclaimRunConfig`]), apart from the run itself so the
//! kernel policies and the child-process runner can read it without depending on the run.

use super::action::ReclaimAction;
use super::controller::ControllerConfig;
use super::policy::PolicyKind;
use crate::sources::uffd_minor::RegionConfig;
use agelab_util::progress::ProgressLine;
use agelab_vmm::workload::WorkloadSpec;
use agelab_vmm::Backing;
use std::time::Duration;

/// `engine-all`'s default guest slowdown budget for uffd-minor faults, % of each interval
/// ([`ReadBudget`](crate::sources::uffd_minor::budget::ReadBudget): faults per interval = this ×
/// interval ÷ the measured cost of one fault).
pub const ENGINE_ALL_TARGET_SLOWDOWN_PCT: f64 = 2.0;

/// Everything about one run.
#[derive(Clone, Debug)]
pub struct ReclaimRunConfig {
    /// Guest test memory, bytes.
    pub mem_bytes: u64,
    /// vCPUs.
    pub vcpus: usize,
    /// Backing of guest memory.
    pub backing: Backing,
    /// The workload.
    pub workload: WorkloadSpec,
    /// How long the workload runs (after fill).
    pub duration: Duration,
    /// One epoch = one control interval.
    pub interval: Duration,
    /// Who picks the victims.
    pub policy: PolicyKind,
    /// How the chosen pages are reclaimed.
    pub action: ReclaimAction,
    /// The controller.
    pub controller: ControllerConfig,
    /// Age gate: engine policies only offer pages idle this long; no policy reclaims before the
    /// run is this old.
    pub min_age: Duration,
    /// Engine generations.
    pub gens: usize,
    /// Pages not accessed during the last `cold_window` of the run count as cold when scoring.
    pub cold_window: Duration,
    /// Seed of the random policy.
    pub seed: u64,
    /// Throughput counts only epochs that start this long after the workload started.
    pub warmup: Duration,
    /// `psi` and `damon`: target memory pressure, PSI some stall time in % of wall time (TMO:
    /// 0.1).
    pub psi_target_pct: f64,
    /// `damon`: DAMOS time quota, ms of scheme work per second (DAMON_RECLAIM: 10).
    pub damon_quota_ms: u64,
    /// The progress line on a terminal (off by default).
    pub progress: ProgressLine,
    /// `engine-all`, `engine-regions`: the guest slowdown uffd-minor faults may cost, % of each
    /// interval (the read budget).
    pub read_budget_pct: f64,
    /// `engine-regions`: how regions are cut and sampled.
    pub regions: RegionConfig,
}

impl Default for ReclaimRunConfig {
    fn default() -> Self {
        ReclaimRunConfig {
            mem_bytes: 256 << 20,
            vcpus: 1,
            backing: Backing::Anon,
            workload: "hotcold:hot=20%,p=100%,op=read"
                .parse()
                .expect("default workload parses"),
            duration: Duration::from_secs(15),
            interval: Duration::from_millis(250),
            policy: PolicyKind::EngineDirty,
            action: ReclaimAction::PageOut,
            controller: ControllerConfig::default(),
            min_age: Duration::from_secs(2),
            gens: 8,
            cold_window: Duration::from_secs(5),
            seed: 1,
            warmup: Duration::from_secs(2),
            psi_target_pct: 0.1,
            damon_quota_ms: 10,
            progress: ProgressLine::off(),
            read_budget_pct: ENGINE_ALL_TARGET_SLOWDOWN_PCT,
            regions: RegionConfig::default(),
        }
    }
}
