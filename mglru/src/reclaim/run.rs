//! One reclaim run: a guest workload under one policy, with the controller, refault detection
//! and the integrity check.
//!
//! Sequence: (kernel policies: create a memcg and move this process in, so guest memory is
//! charged there) → VM and sources → `Workload::fill()` → epochs of `interval`; after each the
//! loop (guest paused between epochs) scans residency for refaults, runs an aging pass, asks the
//! controller for a step, picks victims and reclaims them → measure RSS and swap →
//! `Workload::verify()` (any mismatch fails the run) → guest exits.

use agelab_vmm::workload::{Workload, WorkloadError, WorkloadSpec};
use agelab_vmm::{Backing, PageSet, Vm, VmConfig, VmError, PAGE_SIZE};
use std::time::{Duration, Instant};

use super::action::{ReclaimAction, ReclaimActionError, Reclaimer};
use super::controller::{ControlStep, ControllerConfig, ReclaimController};
use super::policy::{FifoVictims, PolicyKind, RandomVictims};
use super::refault::{RefaultDetector, ResidencyError};
use crate::engine::{
    AgingPolicy, Engine, EngineConfig, EngineError, EvictionScope, NewGeneration, PassTruth,
};
use crate::kernel::damon::{
    DamonAdmin, DamonAttrs, DamonError, DamonScheme, DamonTarget, PageoutScheme, QuotaGoal,
    SchemeStats,
};
use crate::kernel::lru_gen::{LruGenControl, LruGenError};
use crate::kernel::memcg::{CgroupVersion, GuestMemcg, MemcgError};
use crate::kernel::psi::{PressureSource, PsiError};
use crate::kernel::swap::{SwapError, SwapStatus, ZramDevice};
use crate::source::AccessSource;
use crate::sources::uffd_minor::budget::stalled;
pub use crate::sources::uffd_minor::budget::{next_admit_limit, ReadBudget};
use crate::sources::uffd_minor::{
    GuidedArming, RegionConfig, UffdMinorConfig, UffdMinorError, UffdMinorSource,
};
use crate::sources::{catalog, OracleSource, SourceKind, UnavailableSource};

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
            read_budget_pct: ENGINE_ALL_TARGET_SLOWDOWN_PCT,
            regions: RegionConfig::default(),
        }
    }
}

/// Errors of a reclaim run.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimRunError {
    /// The VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The workload failed.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A reclaim action failed (including "no swap").
    #[error(transparent)]
    Action(#[from] ReclaimActionError),
    /// Arming uffd-minor from the engine's generations failed.
    #[error(transparent)]
    UffdArm(#[from] UffdMinorError),
    /// Reading residency failed.
    #[error(transparent)]
    Residency(#[from] ResidencyError),
    /// Swap state could not be read.
    #[error(transparent)]
    Swap(#[from] SwapError),
    /// The memcg for a kernel policy failed.
    #[error("{policy}: {err}")]
    Memcg {
        /// Policy.
        policy: PolicyKind,
        /// Cause.
        #[source]
        err: MemcgError,
    },
    /// lru_gen is missing or refused a command.
    #[error("lru-gen: {0}")]
    LruGen(#[from] LruGenError),
    /// DAMON is unavailable, held by someone else, or refused the scheme.
    #[error("damon: {0}")]
    Damon(#[from] DamonError),
    /// Memory pressure could not be read.
    #[error("psi: {0}")]
    Psi(#[from] PsiError),
    /// The memcg is not visible in the lru_gen listing.
    #[error("lru-gen: memcg {0} not found in /sys/kernel/debug/lru_gen")]
    LruGenMemcg(String),
    /// Verification found wrong guest data: reclaim lost or corrupted pages.
    #[error("DATA INTEGRITY FAILURE under {policy}: {mismatches} of {words} words wrong, first at {first:#x?}")]
    Integrity {
        /// Policy.
        policy: PolicyKind,
        /// Wrong words.
        mismatches: u64,
        /// Words checked.
        words: u64,
        /// First bad guest addresses.
        first: Vec<u64>,
    },
}

/// One control interval.
#[derive(Clone, Debug, Default, serde::Serialize)]
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
#[derive(Clone, Debug, Default, serde::Serialize)]
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
}

/// What the `damon` policy's kdamond did.
#[derive(Clone, Debug, Default, serde::Serialize)]
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

/// CPU time (utime + stime) of thread or process `pid` from `/proc/<pid>/stat`, ns.
pub fn proc_cpu_ns(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// Median of `xs` (0 when empty); sorts it.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Thread CPU time now, ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call fills in; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sources of the `engine-all` policy besides uffd-minor (added first, built here with the
/// engine's guided arming): every source runs take that reports accesses
/// (the KVM dirty log through CLEAR_DIRTY_LOG; the dirty ring excludes the dirty log, pagemap is
/// residency only, the oracle is not a real source). Unavailable ones stay listed with a reason.
pub fn all_source_kinds() -> Vec<SourceKind> {
    SourceKind::ALL
        .into_iter()
        .filter(|k| {
            k.in_runs()
                && !matches!(
                    k,
                    SourceKind::Oracle
                        | SourceKind::Pagemap
                        | SourceKind::KvmDirtyRing
                        | SourceKind::KvmDirtyLog
                        | SourceKind::UffdMinor
                )
        })
        .collect()
}

/// Generations of the engine whose pages `engine-all` arms with uffd-minor after each pass.
/// Pages of younger generations are not watched (a hot page faults once per trip down the
/// window, not once per interval); eviction takes only pages of these generations that were
/// armed and untouched through the last [`ENGINE_ALL_IDLE_INTERVALS`] intervals.
pub const ENGINE_ALL_ARM_GENS: usize = 2;

/// `engine-all` evicts only pages uffd-minor watched untouched through this many consecutive
/// intervals: one interval is not enough when the guest spent it stalled on a fault storm.
pub const ENGINE_ALL_IDLE_INTERVALS: u8 = 4;

/// `engine-all` arms at most guest pages / this many new pages per pass (storms are spread).
pub const ENGINE_ALL_ADMIT_DIV: u64 = 8;

/// `engine-all`'s default guest slowdown budget for uffd-minor faults, % of each interval
/// ([`ReadBudget`]: faults per interval = this × interval ÷ the measured cost of one fault).
pub const ENGINE_ALL_TARGET_SLOWDOWN_PCT: f64 = 2.0;

/// The userfaultfd MINOR source (guest reads and writes on shmem), with the arming the engine
/// drives (its [`ENGINE_ALL_ARM_GENS`] oldest generations, page by page or by `regions`; faults
/// held to `read_budget_pct` of guest time), or an unavailable placeholder with the reason.
fn uffd_minor_source(
    map: &agelab_vmm::GuestPageMap,
    interval: Duration,
    regions: Option<RegionConfig>,
    read_budget_pct: f64,
) -> (Box<dyn AccessSource>, Option<GuidedArming>) {
    let made = UffdMinorSource::supported(map)
        .map_err(|u| u.0)
        .and_then(|()| {
            UffdMinorSource::new(
                map,
                UffdMinorConfig {
                    budget_faults_per_sec: None,
                    seed: 1,
                    interval: Some(interval),
                },
            )
            .map_err(|e| e.to_string())
        });
    match made {
        Ok(mut s) => {
            let mut guide = GuidedArming::new(s.guide(), ENGINE_ALL_ARM_GENS, 0, 1)
                .with_faults(s.fault_count());
            guide = match regions {
                Some(r) => guide.with_regions(r),
                None => guide.with_admit_limit(Some(map.len() / ENGINE_ALL_ADMIT_DIV)),
            };
            let guide = guide.with_read_budget(ReadBudget::new(read_budget_pct));
            (Box::new(s), Some(guide))
        }
        Err(reason) => (
            Box::new(UnavailableSource::new(
                SourceKind::UffdMinor.name(),
                SourceKind::UffdMinor.observes(),
                reason,
            )),
            None,
        ),
    }
}

/// The kernel-side reclaimer of the kernel policies.
struct KernelReclaim {
    policy: PolicyKind,
    memcg: GuestMemcg,
    lru_gen: Option<(LruGenControl, u64)>,
    _caps_guard: Option<crate::host_guard::RestoreGuard>,
    limit: Option<u64>,
    pressure: Option<PressureSource>,
}

impl KernelReclaim {
    fn new(policy: PolicyKind) -> Result<Self, ReclaimRunError> {
        let memcg_err = |err| ReclaimRunError::Memcg { policy, err };
        let name = format!("agelab-reclaim-{}", std::process::id());
        let memcg = GuestMemcg::create(&name).map_err(memcg_err)?;
        if policy == PolicyKind::MemcgReclaim && memcg.version() != CgroupVersion::V2 {
            return Err(memcg_err(MemcgError::Unsupported {
                what: "memory.reclaim",
                version: memcg.version(),
                hint: "use --policy memcg-limit on cgroup v1 hosts",
            }));
        }
        memcg
            .add_process(std::process::id() as i32)
            .map_err(memcg_err)?;
        let mut caps_guard = None;
        let lru_gen = if policy == PolicyKind::LruGen {
            let ctl = LruGenControl::new();
            let (_, g) = ctl.enable_for_run()?;
            caps_guard = Some(g);
            let id = memcg
                .lru_gen_id(&ctl.read(false)?)
                .ok_or_else(|| ReclaimRunError::LruGenMemcg(memcg.path().to_string()))?;
            Some((ctl, id))
        } else {
            None
        };
        let pressure = if policy == PolicyKind::Psi {
            Some(PressureSource::for_process(&memcg)?)
        } else {
            None
        };
        Ok(KernelReclaim {
            policy,
            memcg,
            lru_gen,
            _caps_guard: caps_guard,
            limit: None,
            pressure,
        })
    }

    /// Reclaims about `pages` pages the kernel's way; `backoff` raises a limit instead.
    fn step(&mut self, pages: u64, backoff: bool, cap: u64) -> Result<(), ReclaimRunError> {
        let policy = self.policy;
        let memcg_err = |err| ReclaimRunError::Memcg { policy, err };
        match self.policy {
            PolicyKind::LruGen => {
                if pages == 0 {
                    return Ok(());
                }
                let (ctl, id) = self.lru_gen.as_ref().expect("lru-gen set up");
                let old = ctl.age_now(*id, 0, true)?;
                // Evict every generation but the two youngest, up to `pages` pages; 200 = anon
                // (and shmem) only, which is what guest memory is.
                ctl.evict(*id, 0, (old + 1).saturating_sub(2), 200, pages)?;
            }
            PolicyKind::MemcgLimit => {
                let usage = self.memcg.usage_bytes().map_err(memcg_err)?;
                let cur = self.limit.unwrap_or(usage);
                let next = if backoff {
                    cur.saturating_add(cap * PAGE_SIZE)
                } else {
                    cur.min(usage).saturating_sub(pages * PAGE_SIZE)
                };
                // EBUSY: the kernel could not reclaim down to it; keep the previous limit.
                if self.memcg.set_limit(Some(next)).is_ok() {
                    self.limit = Some(next);
                }
            }
            PolicyKind::Psi if !backoff && pages > 0 => match self.memcg.version() {
                CgroupVersion::V2 => {
                    // EAGAIN: less was reclaimed than asked.
                    let _ = self.memcg.reclaim(pages * PAGE_SIZE);
                }
                CgroupVersion::V1 => {
                    // v1 has no memory.reclaim and no memory.high, and a lasting hard limit near
                    // the hot set fails the guest mid-epoch (a task at the limit is OOM-killed;
                    // with the OOM killer disabled KVM's own faults get ENOMEM, KVM_RUN EFAULT).
                    // So the limit steps down only while the guest is paused: set to usage −
                    // step (the write reclaims synchronously, the kernel choosing the pages;
                    // EBUSY when it cannot), then lifted again — v1's memory.reclaim.
                    let usage = self.memcg.usage_bytes().map_err(memcg_err)?;
                    let _ = self
                        .memcg
                        .set_limit(Some(usage.saturating_sub(pages * PAGE_SIZE)));
                    self.memcg.set_limit(None).map_err(memcg_err)?;
                }
            },
            // Back-off: memory.reclaim keeps no state, so backing off is not probing.
            PolicyKind::Psi => {}
            PolicyKind::MemcgReclaim if pages > 0 => {
                // EAGAIN: less was reclaimed than asked; the residency scan sees what went.
                let _ = self.memcg.reclaim(pages * PAGE_SIZE);
            }
            _ => {}
        }
        Ok(())
    }
}

impl Drop for KernelReclaim {
    fn drop(&mut self) {
        if self.limit.is_some() {
            let _ = self.memcg.set_limit(None);
        }
    }
}

/// Active zram device backing swap, if the swap is zram (its RAM cost counts against savings).
fn swap_zram() -> Option<ZramDevice> {
    let s = SwapStatus::read().ok()?;
    s.areas.iter().find_map(|a| {
        a.filename
            .strip_prefix("/dev/zram")
            .and_then(|n| n.parse().ok())
            .map(ZramDevice::new)
    })
}

/// The `damon` policy's kdamond: a DAMOS `pageout` scheme on the guest memory ranges of this (the
/// VMM) process's virtual address space (`map`: DAMON's initial regions, kept by an ops-update
/// interval longer than any run, since each update would widen them to every mapping of the
/// process), DAMON_RECLAIM's monitoring attributes (5 ms samples, 100 ms aggregation), the age
/// gate as minimum idle time, a size quota equal to the controller's cap per second and
/// `damon_quota_ms` of work per second, auto-tuned toward `psi_target_pct` of memory PSI some where the kernel has
/// quota goals.
fn start_damon(
    cfg: &ReclaimRunConfig,
    map: &agelab_vmm::GuestPageMap,
) -> Result<crate::kernel::damon::Kdamond, DamonError> {
    let pages = map.len();
    let per_sec = cfg.controller.max_step_pct / 100.0 * (pages * PAGE_SIZE) as f64
        / cfg.controller.step_period.as_secs_f64().max(1e-3);
    let attrs = DamonAttrs {
        sample_us: 5_000,
        aggr_us: 100_000,
        update_us: DAMON_KEEP_RANGES_US,
        min_nr_regions: 10,
        max_nr_regions: 1_000,
    };
    let scheme = DamonScheme::Pageout(PageoutScheme {
        min_age_us: cfg.min_age.as_micros() as u64,
        quota_bytes: (per_sec as u64).max(PAGE_SIZE),
        quota_ms: cfg.damon_quota_ms,
        reset_interval_ms: 1_000,
        goal: Some(QuotaGoal {
            metric: "some_mem_psi_us".into(),
            // µs of stall per 1 s reset interval.
            target_value: (cfg.psi_target_pct / 100.0 * 1e6) as u64,
        }),
    });
    DamonAdmin::new().start_scheme(
        &DamonTarget::Vaddr {
            pid: std::process::id() as i32,
            ranges: map
                .ranges()
                .iter()
                .map(|r| (r.hva, r.hva + r.pages * PAGE_SIZE))
                .collect(),
        },
        attrs,
        &scheme,
    )
}

/// The `damon` policy's ops-update interval, µs (24 h): longer than any run, so DAMON keeps the
/// guest ranges it was given instead of re-picking regions over the whole process.
pub const DAMON_KEEP_RANGES_US: u64 = 86_400_000_000;

/// Runs one policy; see the module docs.
pub fn run_once(cfg: &ReclaimRunConfig) -> Result<ReclaimRunReport, ReclaimRunError> {
    if cfg.policy == PolicyKind::Damon {
        // Refused before any VM exists when DAMON is missing or someone else's kdamond runs.
        DamonAdmin::new().check()?;
    }
    let mut kernel = if cfg.policy.needs_memcg() {
        Some(KernelReclaim::new(cfg.policy)?)
    } else {
        None
    };
    let source_kinds: Vec<SourceKind> = match cfg.policy {
        PolicyKind::EngineDirty => vec![SourceKind::KvmClearLog],
        PolicyKind::EngineAll | PolicyKind::EngineRegions => all_source_kinds(),
        _ => Vec::new(),
    };
    let mut vm = Vm::new(VmConfig {
        vcpus: cfg.vcpus,
        mem_bytes: cfg.mem_bytes,
        backing: cfg.backing.clone(),
        heap_bytes: agelab_vmm::workload::heap_bytes(&cfg.workload, cfg.mem_bytes),
        ..Default::default()
    })?;
    let map = vm.page_map().clone();
    let pages = map.len();
    // Checks for swap before anything runs: a clear error instead of a run that reclaims nothing.
    let kernel_chooses = kernel.is_some() || cfg.policy == PolicyKind::Damon;
    let mut reclaimer = if cfg.policy.reclaims() && !kernel_chooses {
        let mut r = Reclaimer::new(map.clone(), cfg.action)?;
        let files: Vec<(u32, &std::fs::File)> = vm
            .test_slots()
            .iter()
            .filter_map(|s| s.mapping.file.as_ref().map(|f| (s.slot, f)))
            .collect();
        r.set_alias_files(&files)?;
        Some(r)
    } else {
        None
    };
    if kernel_chooses {
        // Kernel reclaim of swap-backed memory needs swap just the same.
        Reclaimer::new(map.clone(), ReclaimAction::PageOut)?;
    }
    let mut engine = if cfg.policy.uses_engine() {
        let ec = EngineConfig {
            policy: AgingPolicy {
                max_gens: cfg.gens,
                min_ttl: cfg.min_age,
                // The window must hold pages idle for min_age: with one generation per pass the
                // oldest one's idle time is only (gens - 1) intervals and the age gate would never
                // open. One generation per min_age / (gens - 3) leaves a margin of two.
                new_generation: NewGeneration::AfterInterval(
                    (cfg.min_age / (cfg.gens.max(4) as u32 - 3)).max(cfg.interval),
                ),
                ..AgingPolicy::default()
            },
            ..EngineConfig::default()
        };
        Some(Engine::new(map.clone(), ec)?)
    } else {
        None
    };
    let mut oracle_tx = None;
    let mut guide = None;
    if let Some(e) = engine.as_mut() {
        if cfg.policy.uses_all_sources() {
            // First: a VMA takes one userfaultfd, and reads (MINOR) matter more than uffd-wp's
            // writes, which the dirty log already sees.
            let regions = (cfg.policy == PolicyKind::EngineRegions).then_some(cfg.regions);
            let (src, g) = uffd_minor_source(&map, cfg.interval, regions, cfg.read_budget_pct);
            e.add_source(src);
            guide = g;
        }
        for s in catalog::build(&source_kinds, &mut vm) {
            e.add_source(s);
        }
        if cfg.policy == PolicyKind::Oracle {
            let (tx, rx) = std::sync::mpsc::channel();
            e.add_source(Box::new(OracleSource::from_channel(pages, rx)));
            oracle_tx = Some(tx);
        }
    }
    let mut wl = Workload::start(vm, cfg.workload.clone())?;
    wl.fill()?;
    // DAMON after the fill: its regions then start from resident memory.
    let kdamond = if cfg.policy == PolicyKind::Damon {
        Some(start_damon(cfg, &map)?)
    } else {
        None
    };
    let kdamond_cpu0 = kdamond.as_ref().and_then(|k| k.pid()).and_then(proc_cpu_ns);
    let fill_epoch = wl.epoch();
    let faults0 = guide.as_ref().map_or(0, |g| g.stats().faults);
    let zram = swap_zram();
    let swap0 = SwapStatus::read()?.used_kib();
    let zram0 = zram
        .as_ref()
        .and_then(|z| z.mm_stat().ok())
        .unwrap_or_default();
    let mut detector = RefaultDetector::new(map.clone())?;
    let rss_start = detector.resident().count() * PAGE_SIZE;
    let mut ctrl = ReclaimController::new(cfg.controller, pages);
    let mut random = RandomVictims::new(cfg.seed);
    let mut fifo = FifoVictims::new(pages);
    let mut rep = ReclaimRunReport {
        policy: cfg.policy.name().into(),
        workload: cfg.workload.to_string(),
        backing: cfg.backing.to_string(),
        pages,
        rss_start,
        ..Default::default()
    };
    let mut epochs: Vec<(u64, Instant)> = Vec::new();
    let t0 = Instant::now();
    let mut guest = Duration::ZERO;
    let mut vcpu_cpu = Duration::ZERO;
    let mut measured = Duration::ZERO;
    let mut eff = Duration::ZERO;
    let mut per_cpu: Vec<f64> = Vec::new();
    let mut per_eff: Vec<f64> = Vec::new();
    let mut psi_stall_us = 0u64;
    let pressure_src = kernel.as_mut().and_then(|k| k.pressure.take());
    let pressure = pressure_src.as_ref();
    rep.pressure_scope = pressure.map(|p| p.scope().to_string());
    while t0.elapsed() < cfg.duration {
        let warm = t0.elapsed() >= cfg.warmup;
        let psi0 = pressure.map(|p| p.read()).transpose()?;
        let r = wl.run_epoch(cfg.interval)?;
        // Stall time during the epoch only: reclaim this loop does between epochs (a v1 limit
        // write reclaims in the writer) is not the guest's pressure.
        let psi_pct = match (pressure, psi0) {
            (Some(p), Some(a)) => {
                let d = p.read()?.some.total_us.saturating_sub(a.some.total_us);
                if warm {
                    psi_stall_us += d;
                }
                Some(d as f64 / (r.elapsed.as_secs_f64() * 1e6).max(1.0) * 100.0)
            }
            _ => None,
        };
        guest += r.elapsed;
        rep.ops += r.total_ops();
        if warm {
            rep.ops_measured += r.total_ops();
            measured += r.elapsed;
            vcpu_cpu += r.vcpu_cpu.iter().sum::<Duration>();
            let e: Duration = r
                .vcpu_runq_wait
                .iter()
                .map(|w| r.elapsed.saturating_sub(*w))
                .sum();
            eff += e;
            let c: Duration = r.vcpu_cpu.iter().sum();
            if !c.is_zero() {
                per_cpu.push(r.total_ops() as f64 / c.as_secs_f64());
            }
            if !e.is_zero() {
                per_eff.push(r.total_ops() as f64 / e.as_secs_f64());
            }
        }
        epochs.push((r.epoch, Instant::now()));

        // Refaults the residency scan sees, then the aging pass (whose sources may see more).
        let c0 = thread_cpu_ns();
        let step = detector.step()?;
        let mut refaults = step.refaulted.count();
        let mut reclaimed = 0;
        if kdamond.is_some() {
            // DAMON reclaims on its own; the scan sees what left.
            reclaimed = step.evicted.count();
        }
        fifo.refaulted(&step.refaulted);
        let c1 = thread_cpu_ns();
        if let Some(e) = engine.as_mut() {
            e.record_refaults(&step.refaulted)?;
            e.mark_reclaimed(step.evicted.iter())?;
            let truth = wl.ground_truth(r.epoch).expect("epoch just ran");
            let split = PassTruth {
                read: truth.read.clone(),
                written: truth.written.clone(),
            };
            if let Some(tx) = &oracle_tx {
                let _ = tx.send(split.accessed());
            }
            let pass = e.run_pass_split(&split)?;
            refaults += pass.promotion.refaulted;
        }
        let c2 = thread_cpu_ns();
        rep.aging_cpu_ns += c2 - c1;

        // The controller's working-set estimate: what the engine saw within ws_window, else
        // every resident page.
        let ws_est = match engine.as_ref() {
            Some(e) => {
                let g = e.generations();
                let now = Instant::now();
                g.generations()
                    .filter(|x| g.idle_at_least(x.seq, now) < cfg.controller.ws_window)
                    .map(|x| x.pages)
                    .sum()
            }
            None => detector.resident().count(),
        };
        let control = ctrl.step(r.elapsed, refaults, ws_est);
        // DAMON reclaims on its own (counted above).
        if cfg.policy.reclaims() && kdamond.is_none() && t0.elapsed() >= cfg.min_age {
            let n = control.pages as usize;
            if let Some(k) = kernel.as_mut() {
                let cap = (cfg.controller.max_step_pct / 100.0 * pages as f64) as u64;
                match psi_pct {
                    Some(p) => {
                        // Senpai: probe by the cap scaled by the headroom under the target,
                        // back off by the overshoot (at most 4 caps).
                        let step = cap as f64 * r.elapsed.as_secs_f64()
                            / cfg.controller.step_period.as_secs_f64().max(1e-3);
                        let x = p / cfg.psi_target_pct;
                        if x < 1.0 {
                            k.step((step * (1.0 - x)) as u64, false, cap)?;
                        } else {
                            k.step((step * (x - 1.0).min(4.0)) as u64, true, cap)?;
                        }
                    }
                    None => k.step(control.pages, control.error < 0.0, cap)?,
                }
                reclaimed = detector.step()?.evicted.count();
            } else if n > 0 {
                let victims: Vec<u64> = match cfg.policy {
                    PolicyKind::Random => random.select(n, detector.resident()),
                    PolicyKind::Fifo => fifo.select(n, detector.resident()),
                    _ => {
                        let e = engine.as_mut().expect("engine policy");
                        // Guided uffd-minor watches only the oldest generations: evict only
                        // pages it watched untouched through the last interval (still armed
                        // after the harvest), whatever merges and emptied generations did to
                        // the window since it armed them.
                        let watched = guide
                            .as_ref()
                            .map(|g| g.watched_idle(ENGINE_ALL_IDLE_INTERVALS));
                        let oldest_gens = match guide {
                            Some(_) => ENGINE_ALL_ARM_GENS,
                            None => cfg.gens - 1,
                        };
                        let scope = EvictionScope {
                            oldest_gens: oldest_gens.max(1),
                        };
                        e.eviction_candidates(scope)
                            .filter(|c| watched.as_ref().is_none_or(|w| w.contains(c.page.index)))
                            .take(n)
                            .map(|c| c.page.index)
                            .collect()
                    }
                };
                if !victims.is_empty() {
                    let rc = reclaimer.as_mut().expect("reclaiming policy");
                    let a = rc.apply(&victims)?;
                    rep.madvise_calls += a.madvise_calls;
                    let gone = detector.confirm(&victims)?;
                    reclaimed = gone.len() as u64;
                    if let Some(e) = engine.as_mut() {
                        e.mark_reclaimed(gone.iter().copied())?;
                    }
                }
            }
        }
        let c3 = thread_cpu_ns();
        rep.reclaim_cpu_ns += (c1 - c0) + (c3 - c2);
        if let (Some(g), Some(e)) = (guide.as_mut(), engine.as_ref()) {
            // Read budget: admission follows the last epoch's faults and blocked time.
            let blocked = stalled(r.elapsed, &r.vcpu_cpu, &r.vcpu_runq_wait);
            g.observe_epoch(r.elapsed, r.vcpu_cpu.len(), blocked);
            // After reclaim: the armed set is the oldest generations' resident pages.
            g.arm_from(e.generations())?;
            rep.aging_cpu_ns += thread_cpu_ns() - c3;
        }
        rep.refaults += refaults;
        rep.reclaimed += reclaimed;
        rep.intervals.push(IntervalRecord {
            t: t0.elapsed().as_secs_f64(),
            ops: r.total_ops(),
            wall_us: r.elapsed.as_micros() as u64,
            vcpu_cpu_us: r.vcpu_cpu.iter().sum::<Duration>().as_micros() as u64,
            runq_wait_us: r.vcpu_runq_wait.iter().sum::<Duration>().as_micros() as u64,
            resident: detector.resident().count(),
            refaults,
            reclaimed,
            control,
            psi_pct,
        });
    }
    // Final accounting before verify reads every page back in.
    let last = detector.step()?;
    rep.refaults += last.refaulted.count();
    rep.rss_end = detector.resident().count() * PAGE_SIZE;
    rep.swap_used = SwapStatus::read()?.used_kib().saturating_sub(swap0) * 1024;
    rep.zram_mem = zram
        .as_ref()
        .and_then(|z| z.mm_stat().ok())
        .map_or(0, |m| m.mem_used_total.saturating_sub(zram0.mem_used_total));
    rep.saved = rep
        .rss_start
        .saturating_sub(rep.rss_end)
        .saturating_sub(rep.zram_mem);
    let end = epochs.last().map_or_else(Instant::now, |e| e.1);
    let mut ws = PageSet::new(pages);
    for &(k, at) in epochs.iter().rev() {
        if end.duration_since(at) > cfg.cold_window {
            break;
        }
        if let Some(t) = wl.ground_truth(k) {
            ws.union_with(&t.read);
            ws.union_with(&t.written);
        }
    }
    let out = detector.out();
    rep.ws_pages = ws.count();
    let mut ws_out = ws.clone();
    ws_out.intersect_with(out);
    rep.ws_reclaimed = ws_out.count();
    let mut cold = PageSet::full(pages);
    cold.subtract(&ws);
    rep.cold_pages = cold.count();
    cold.intersect_with(out);
    rep.cold_reclaimed = cold.count();
    rep.guest_secs = guest.as_secs_f64();
    rep.measured_secs = measured.as_secs_f64();
    rep.vcpu_cpu_secs = vcpu_cpu.as_secs_f64();
    rep.ops_per_cpu_sec = median(&mut per_cpu);
    rep.ops_per_wall_sec = rep.ops_measured as f64 / rep.measured_secs.max(1e-9);
    rep.vcpu_eff_secs = eff.as_secs_f64();
    rep.ops_per_eff_sec = median(&mut per_eff);
    if pressure.is_some() {
        rep.psi_some_pct = Some(psi_stall_us as f64 / (rep.measured_secs * 1e6).max(1.0) * 100.0);
    }
    if let Some(k) = kdamond.as_ref() {
        let cpu = k
            .pid()
            .and_then(proc_cpu_ns)
            .zip(kdamond_cpu0)
            .map_or(0, |(b, a)| b.saturating_sub(a));
        rep.reclaim_cpu_ns += cpu;
        rep.damon = Some(DamonRunInfo {
            stats: k.scheme_stats()?,
            auto_tuned: k.goal_applied(),
            effective_quota_bytes: k.effective_quota_bytes(),
            kdamond_cpu_ns: cpu,
        });
    }
    // DAMON off before verify reads every page back (and before the VM goes).
    drop(kdamond);
    rep.ops_per_sec = rep.ops as f64 / rep.guest_secs.max(1e-9);
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    rep.refault_pct_ws_min = rep.refaults as f64 / (rep.ws_pages.max(1) as f64) / minutes * 100.0;
    if let Some(e) = engine.as_ref() {
        rep.sources = e
            .sources()
            .map(|s| match &s.reason {
                None => s.name.clone(),
                Some(r) => format!("{} (unavailable: {r})", s.name),
            })
            .collect();
    }
    rep.uffd_faults = guide.as_ref().map(|g| g.stats().faults - faults0);
    let _ = fill_epoch;
    let v = wl.verify()?;
    rep.verify_mismatches = v.mismatches;
    if v.mismatches > 0 {
        return Err(ReclaimRunError::Integrity {
            policy: cfg.policy,
            mismatches: v.mismatches,
            words: v.words,
            first: v.first_bad,
        });
    }
    let vm = wl.finish()?;
    // Drop the engine (its sources hold VM resources) before the VM, then the memcg.
    drop(engine);
    drop(vm);
    drop(kernel.take());
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
