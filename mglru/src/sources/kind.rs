//! [`SourceKind`] names every access source and says what it observes; parsing the names users
//! give. Building a source of a kind is the [`catalog`](super::catalog)'s, so the sources can
//! name their own kind without importing the catalog that builds them.

use crate::source::Observes;
use std::fmt;
use std::str::FromStr;

/// Errors naming sources.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    /// The name is not a known source.
    #[error("unknown access source '{name}' (known: {known})")]
    Unknown {
        /// The name given.
        name: String,
        /// Known names.
        known: String,
    },
}

/// Every access source agelab knows, by the name users give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// `kvm-dirty-log`: KVM_GET_DIRTY_LOG.
    KvmDirtyLog,
    /// `kvm-clear-log`: KVM_GET_DIRTY_LOG with manual protect (KVM_CLEAR_DIRTY_LOG).
    KvmClearLog,
    /// `kvm-dirty-ring`: KVM's per-vCPU dirty ring.
    KvmDirtyRing,
    /// `uffd-minor`: userfaultfd minor faults on shmem memory.
    UffdMinor,
    /// `pagemap`: residency from `/proc/self/pagemap`.
    Pagemap,
    /// `page_idle`: idle page tracking.
    PageIdle,
    /// `soft-dirty`: pagemap's soft-dirty bit.
    SoftDirty,
    /// `uffd-wp`: userfaultfd write-protect (async + PAGEMAP_SCAN, else sync faults).
    UffdWp,
    /// `damon-vaddr`: DAMON over this process's address space.
    DamonVaddr,
    /// `damon-paddr`: DAMON over the guest's physical frames (self-check only).
    DamonPaddr,
    /// `oracle`: the ground truth itself (validation runs).
    Oracle,
}

impl SourceKind {
    /// Every kind, in table order.
    pub const ALL: [SourceKind; 11] = [
        SourceKind::KvmDirtyLog,
        SourceKind::KvmClearLog,
        SourceKind::KvmDirtyRing,
        SourceKind::UffdMinor,
        SourceKind::Pagemap,
        SourceKind::PageIdle,
        SourceKind::SoftDirty,
        SourceKind::UffdWp,
        SourceKind::DamonVaddr,
        SourceKind::DamonPaddr,
        SourceKind::Oracle,
    ];

    /// What `auto` expands to.
    pub const AUTO: [SourceKind; 5] = [
        SourceKind::KvmClearLog,
        SourceKind::UffdMinor,
        SourceKind::PageIdle,
        SourceKind::SoftDirty,
        SourceKind::DamonVaddr,
    ];

    /// The name users give (`--sources`, reports).
    pub const fn name(self) -> &'static str {
        match self {
            SourceKind::KvmDirtyLog => "kvm-dirty-log",
            SourceKind::KvmClearLog => "kvm-clear-log",
            SourceKind::KvmDirtyRing => "kvm-dirty-ring",
            SourceKind::UffdMinor => "uffd-minor",
            SourceKind::Pagemap => "pagemap",
            SourceKind::PageIdle => "page_idle",
            SourceKind::SoftDirty => "soft-dirty",
            SourceKind::UffdWp => "uffd-wp",
            SourceKind::DamonVaddr => "damon-vaddr",
            SourceKind::DamonPaddr => "damon-paddr",
            SourceKind::Oracle => "oracle",
        }
    }

    /// Which accesses the source can see.
    pub const fn observes(self) -> Observes {
        match self {
            SourceKind::KvmDirtyLog
            | SourceKind::KvmClearLog
            | SourceKind::KvmDirtyRing
            | SourceKind::SoftDirty
            | SourceKind::UffdWp => Observes::Writes,
            SourceKind::Pagemap => Observes::Presence,
            SourceKind::UffdMinor
            | SourceKind::PageIdle
            | SourceKind::DamonVaddr
            | SourceKind::DamonPaddr
            | SourceKind::Oracle => Observes::Both,
        }
    }

    /// Whether `agelab run --sources` and reclaim take it (`damon-paddr` is self-check only).
    pub const fn in_runs(self) -> bool {
        !matches!(self, SourceKind::DamonPaddr)
    }

    /// Whether it must be built on the VM before its vCPUs start: KVM dirty tracking, and
    /// uffd-minor (registered on the guest's mapping before the guest faults it in).
    pub const fn built_before_start(self) -> bool {
        matches!(
            self,
            SourceKind::KvmDirtyLog
                | SourceKind::KvmClearLog
                | SourceKind::KvmDirtyRing
                | SourceKind::UffdMinor
        )
    }

    /// Whether it reads KVM's own dirty tracking, which marks a page dirty whenever KVM installs
    /// a writable mapping of it: also on a *read* fault, where the host and guest page tables
    /// allow writes (a page re-faulted after an invalidation of KVM's mappings).
    pub const fn logs_kvm_writes(self) -> bool {
        matches!(
            self,
            SourceKind::KvmDirtyLog | SourceKind::KvmClearLog | SourceKind::KvmDirtyRing
        )
    }

    /// Whether it samples over time (DAMON), so measuring it needs the guest to keep touching.
    pub const fn samples_over_time(self) -> bool {
        matches!(self, SourceKind::DamonVaddr | SourceKind::DamonPaddr)
    }

    /// The valid names, for messages: `auto` and every kind runs take.
    fn known() -> String {
        let names: Vec<&str> = SourceKind::ALL
            .iter()
            .filter(|k| k.in_runs())
            .map(|k| k.name())
            .collect();
        format!("auto, {}", names.join(", "))
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SourceKind {
    type Err = CatalogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| CatalogError::Unknown {
                name: s.into(),
                known: SourceKind::known(),
            })
    }
}

/// Parses a comma-separated list for a run (`auto` expands); checks every name.
pub fn parse_list(list: &str) -> Result<Vec<SourceKind>, CatalogError> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name == "auto" {
            out.extend(SourceKind::AUTO);
            continue;
        }
        match name.parse::<SourceKind>() {
            Ok(k) if k.in_runs() => out.push(k),
            _ => {
                return Err(CatalogError::Unknown {
                    name: name.into(),
                    known: SourceKind::known(),
                })
            }
        }
    }
    out.dedup();
    Ok(out)
}

/// The kinds `list` gives explicitly, without what `auto` expands to: the sources the user asked
/// for by name (checked as [`parse_list`] checks them).
pub fn named_in(list: &str) -> Result<Vec<SourceKind>, CatalogError> {
    let named: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|n| *n != "auto")
        .collect();
    parse_list(&named.join(","))
}
