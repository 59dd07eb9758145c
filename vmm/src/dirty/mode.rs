//! Which KVM interface reports dirty pages, whether this host offers it, and how to use it.

use crate::kvm_raw;
use kvm_ioctls::Kvm;
use std::fmt;
use std::str::FromStr;

/// Default longest KVM_CLEAR_DIRTY_LOG range: 1 GiB of 4 KiB pages.
pub const DEFAULT_MAX_CLEAR_PAGES: u64 = 1 << 18;

/// Which KVM interface reports dirty pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirtyMode {
    /// KVM_GET_DIRTY_LOG (report and re-protect in one call).
    GetLog,
    /// KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG in ranges (MANUAL_DIRTY_LOG_PROTECT2).
    ClearLog,
    /// Per-vCPU dirty rings + KVM_RESET_DIRTY_RINGS.
    Ring,
}

impl DirtyMode {
    /// Every mode, in the kernel selftest's order.
    pub const ALL: [DirtyMode; 3] = [DirtyMode::GetLog, DirtyMode::ClearLog, DirtyMode::Ring];

    /// The kernel selftest's name for the mode (`dirty-log`, `clear-log`, `dirty-ring`).
    pub fn name(self) -> &'static str {
        match self {
            DirtyMode::GetLog => "dirty-log",
            DirtyMode::ClearLog => "clear-log",
            DirtyMode::Ring => "dirty-ring",
        }
    }

    /// Whether this host's KVM offers the mode, and with what.
    pub fn support(self, kvm: &Kvm) -> ModeSupport {
        let cap = |c: u32| kvm.check_extension_raw(u64::from(c));
        let (available, detail) = match self {
            DirtyMode::GetLog => (true, "KVM_GET_DIRTY_LOG".to_string()),
            DirtyMode::ClearLog => {
                let caps = cap(kvm_raw::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
                if caps <= 0 {
                    (
                        false,
                        "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is not offered by this kernel"
                            .to_string(),
                    )
                } else {
                    let init = caps as u64 & kvm_raw::INITIALLY_SET != 0;
                    (
                        true,
                        format!(
                            "MANUAL_DIRTY_LOG_PROTECT2 = {caps}{}",
                            if init { " (INITIALLY_SET offered)" } else { "" }
                        ),
                    )
                }
            }
            DirtyMode::Ring => {
                let acq = cap(kvm_raw::KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
                let plain = cap(kvm_raw::KVM_CAP_DIRTY_LOG_RING);
                let gfn = kvm_raw::DIRTY_GFN_BYTES as i32;
                if acq > 0 {
                    (
                        true,
                        format!(
                            "KVM_CAP_DIRTY_LOG_RING_ACQ_REL, up to {} entries per vCPU",
                            acq / gfn
                        ),
                    )
                } else if plain > 0 {
                    (
                        true,
                        format!(
                            "KVM_CAP_DIRTY_LOG_RING (no ACQ_REL), up to {} entries per vCPU",
                            plain / gfn
                        ),
                    )
                } else {
                    (
                        false,
                        "KVM_CAP_DIRTY_LOG_RING(_ACQ_REL) is not offered by this kernel"
                            .to_string(),
                    )
                }
            }
        };
        ModeSupport {
            mode: self,
            available,
            detail,
        }
    }

    /// Largest dirty ring (entries per vCPU) KVM accepts, 0 without ring support.
    pub fn max_ring_entries(kvm: &Kvm) -> u32 {
        let bytes = kvm
            .check_extension_raw(u64::from(kvm_raw::KVM_CAP_DIRTY_LOG_RING_ACQ_REL))
            .max(kvm.check_extension_raw(u64::from(kvm_raw::KVM_CAP_DIRTY_LOG_RING)))
            .max(0);
        bytes as u32 / kvm_raw::DIRTY_GFN_BYTES as u32
    }
}

impl fmt::Display for DirtyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode name that is not one of `dirty-log`, `clear-log`, `dirty-ring`.
#[derive(Debug, thiserror::Error)]
#[error("unknown dirty tracking mode '{0}' (expected dirty-log, clear-log or dirty-ring)")]
pub struct UnknownDirtyMode(pub String);

impl FromStr for DirtyMode {
    type Err = UnknownDirtyMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dirty-log" | "get-log" => Ok(DirtyMode::GetLog),
            "clear-log" => Ok(DirtyMode::ClearLog),
            "dirty-ring" | "ring" => Ok(DirtyMode::Ring),
            _ => Err(UnknownDirtyMode(s.to_string())),
        }
    }
}

/// Whether a mode is available, with the capability found or the reason it is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeSupport {
    /// The mode.
    pub mode: DirtyMode,
    /// Whether it can be used.
    pub available: bool,
    /// The capability used when available, the reason otherwise.
    pub detail: String,
}

/// How to track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyOptions {
    /// The KVM interface.
    pub mode: DirtyMode,
    /// ClearLog only: enable with KVM_DIRTY_LOG_INITIALLY_SET (when offered), so enabling logging
    /// write-protects nothing and the first harvest reports every page.
    pub initially_set: bool,
    /// ClearLog only: longest single KVM_CLEAR_DIRTY_LOG range in pages (bounds mmu_lock hold
    /// time); rounded up to 4096 pages.
    pub max_clear_pages: u64,
    /// ClearLog only: scan the fetched bitmap and re-protect only runs of dirty 16 MiB blocks, so
    /// a clean slot never takes mmu_lock in KVM_CLEAR_DIRTY_LOG (costs one userspace pass over
    /// the bitmap). Off (default): hand KVM the whole fetched bitmap, as the kernel selftests do;
    /// KVM skips clean words itself.
    pub clear_dirty_runs_only: bool,
}

impl DirtyOptions {
    /// Defaults for `mode`: no INITIALLY_SET, 1 GiB clear ranges.
    pub fn new(mode: DirtyMode) -> Self {
        DirtyOptions {
            mode,
            initially_set: false,
            max_clear_pages: DEFAULT_MAX_CLEAR_PAGES,
            clear_dirty_runs_only: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for m in DirtyMode::ALL {
            assert_eq!(m.name().parse::<DirtyMode>().unwrap(), m);
        }
        assert!("bogus".parse::<DirtyMode>().is_err());
    }
}
