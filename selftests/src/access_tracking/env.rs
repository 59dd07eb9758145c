//! What this host offers for access tracking, and whether idle checks can be trusted here.

use super::lru_gen::lru_gen_usable;
use agelab_mglru::kernel::lru_gen::{LruGenCaps, LruGenControl};
use agelab_mglru::kernel::page_idle::{page_idle_unavailable, PageIdleError};
use agelab_mglru::lru_gen_aging::LruGenUnusable;

/// How aging reaches KVM in a test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackingMode {
    /// lru_gen aging commands on the test's memcg (caps as found).
    LruGen(LruGenCaps),
    /// Idle page tracking bitmap.
    PageIdle,
}

impl TrackingMode {
    /// Name as the kernel test prints it in phase names.
    pub fn name(self) -> &'static str {
        match self {
            TrackingMode::LruGen(_) => "lru_gen",
            TrackingMode::PageIdle => "page_idle",
        }
    }
}

/// Why neither lru_gen nor page_idle can track accesses here.
#[derive(Debug, thiserror::Error)]
#[error("no lru_gen ({lru_gen}) and no page_idle ({page_idle})")]
pub struct NoTracking {
    /// Why not lru_gen.
    pub lru_gen: LruGenUnusable,
    /// Why not page_idle.
    pub page_idle: PageIdleError,
}

/// The kernel test's choice: lru_gen when `enabled` has 0x3 and debugfs works, else page_idle;
/// `Err` carries why neither can be used.
pub fn detect_tracking() -> Result<TrackingMode, NoTracking> {
    let lru = lru_gen_usable(&LruGenControl::new());
    match lru {
        Ok(caps) => Ok(TrackingMode::LruGen(caps)),
        Err(lru_gen) => match page_idle_unavailable() {
            None => Ok(TrackingMode::PageIdle),
            Some(page_idle) => Err(NoTracking { lru_gen, page_idle }),
        },
    }
}

/// Whether the CPU reports the hypervisor bit (CPUID.1:ECX[31]): running nested, where TLBs are
/// effectively unbounded and aging without a flush misses many accesses.
pub fn running_nested() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID leaf 1 exists on every x86_64 CPU and has no side effects (safe in this Rust).
        let r = core::arch::x86_64::__cpuid(1);
        r.ecx & (1 << 31) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether automatic NUMA balancing is on (it unmaps memory for hinting faults, dropping
/// Accessed bits).
pub fn numa_balancing_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/numa_balancing")
        .map(|s| s.trim() != "0")
        .unwrap_or(false)
}

/// Why idle-page checks only warn here (the kernel's `access_tracking_unreliable()`), if so.
pub fn idle_check_unreliable() -> Option<&'static str> {
    // Nesting alone does not make the check warn-only (the kernel's test does): in the lab,
    // nested under QEMU TCG, agelab measured the signal exact (recall 100%: TCG flushes its TLB
    // often), and a warn-only check cannot fail on a kernel whose aging ignores KVM. On nested
    // hardware with large TLBs pass `-w 1` to get the kernel's behaviour.
    if numa_balancing_enabled() {
        Some("NUMA balancing is enabled")
    } else {
        None
    }
}

/// The lru_gen caps line for reports: the secondary-MMU walk bit (0x8) never reached mainline.
pub fn describe_secondary_mmu_cap(caps: LruGenCaps) -> String {
    if caps.has(LruGenCaps::SECONDARY_MMU) {
        format!("{caps}: secondary-MMU walk (0x8) present (patched kernel)")
    } else {
        format!("{caps}: secondary-MMU walk (0x8) absent (expected on mainline)")
    }
}
