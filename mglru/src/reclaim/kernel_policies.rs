//! The kernel's own reclaim policies, for comparison with the engine's: lru_gen eviction, memcg
//! limits, `memory.reclaim`, the PSI loop (on the VM's memcg, [`KernelReclaim`]) and DAMON's
//! `pageout` scheme ([`start_damon`]); and the zram device whose RAM counts against savings.

use super::config::ReclaimRunConfig;
use super::error::ReclaimRunError;
use super::policy::PolicyKind;
use crate::kernel::damon::{
    DamonAdmin, DamonAttrs, DamonError, DamonScheme, DamonTarget, Kdamond, PageoutScheme, QuotaGoal,
};
use crate::kernel::lru_gen::LruGenControl;
use crate::kernel::memcg::{CgroupVersion, GuestMemcg, MemcgError};
use crate::kernel::psi::PressureSource;
use crate::kernel::swap::{SwapStatus, ZramDevice};
use agelab_vmm::PAGE_SIZE;

/// The kernel-side reclaimer of the kernel policies.
pub(super) struct KernelReclaim {
    policy: PolicyKind,
    memcg: GuestMemcg,
    lru_gen: Option<(LruGenControl, u64)>,
    _caps_guard: Option<crate::host_guard::RestoreGuard>,
    limit: Option<u64>,
    /// `psi`: where the memory pressure is read (taken by the run).
    pub(super) pressure: Option<PressureSource>,
}

impl KernelReclaim {
    /// Creates the VM's memcg for `policy`, moves this process in and readies lru_gen or PSI.
    pub(super) fn new(policy: PolicyKind) -> Result<Self, ReclaimRunError> {
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
    pub(super) fn step(
        &mut self,
        pages: u64,
        backoff: bool,
        cap: u64,
    ) -> Result<(), ReclaimRunError> {
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

impl KernelReclaim {
    /// Lifts a lasting limit (`memcg-limit`), keeping the memcg: before verify, which reads every
    /// guest page back and would otherwise swap the whole guest through a limit below its size.
    pub(super) fn lift_limit(&mut self) -> Result<(), ReclaimRunError> {
        if self.limit.take().is_some() {
            let policy = self.policy;
            self.memcg
                .set_limit(None)
                .map_err(|err| ReclaimRunError::Memcg { policy, err })?;
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
pub(super) fn swap_zram() -> Option<ZramDevice> {
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
pub(super) fn start_damon(
    cfg: &ReclaimRunConfig,
    map: &agelab_vmm::GuestPageMap,
) -> Result<Kdamond, DamonError> {
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
