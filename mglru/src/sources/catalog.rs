//! The catalog of access sources: builds the source of each [`SourceKind`] (which names every
//! source and says what it observes, in [`kind`](super::kind)), once for `agelab run`, the
//! self-check, reclaim and the selftests alike.
//!
//! `auto` means every source that can see accesses: the KVM dirty log, userfaultfd minor faults
//! (reads and writes, on shmem-backed memory) and every kernel source, each listed with its
//! reason when unavailable. `pagemap` reports residency, not accesses: it is listed but never
//! promotes pages. `damon-paddr` is measured by the self-check only; `oracle` is the ground truth
//! itself, wired by the caller.

use super::damon_paddr::DamonPaddrSource;
use super::damon_vaddr::DamonSource;
use super::kvm_dirty::{KvmDirtySource, UnavailableSource};
use super::page_idle::PageIdleSource;
use super::pagemap::PagemapSource;
use super::soft_dirty::SoftDirtySource;
use super::uffd_minor::{ArmPolicy, GuidedArming, UffdMinorConfig, UffdMinorSource};
use super::uffd_wp::{UffdWpMode, UffdWpSource};
use crate::kernel::damon::DamonAttrs;
use crate::source::AccessSource;
use agelab_vmm::dirty::{DirtyMode, DirtyOptions, DirtyTracker};
use agelab_vmm::Vm;
use std::fmt;

pub use super::kind::{named_in, parse_list, CatalogError, SourceKind};

impl SourceKind {
    /// Builds the source for `vm` (the KVM and uffd-minor kinds before its vCPUs start, see
    /// [`built_before_start`](Self::built_before_start)). A source that cannot be set up is an
    /// [`UnavailableSource`] carrying the reason. `None` for `oracle`: the caller wires it to its
    /// ground truth.
    pub fn build(self, vm: &mut Vm, opts: &BuildOptions) -> Option<Built> {
        let map = vm.page_map().clone();
        let unavailable = |reason: String| -> Box<dyn AccessSource> {
            Box::new(UnavailableSource::new(self.name(), self.observes(), reason))
        };
        let mut guide = None;
        let source: Box<dyn AccessSource> = match self {
            SourceKind::KvmDirtyLog | SourceKind::KvmClearLog | SourceKind::KvmDirtyRing => {
                let mode = match self {
                    SourceKind::KvmDirtyLog => DirtyMode::GetLog,
                    SourceKind::KvmClearLog => DirtyMode::ClearLog,
                    _ => DirtyMode::Ring,
                };
                let tracker = DirtyTracker::new(vm, DirtyOptions::new(mode)).and_then(|mut t| {
                    t.set_logging_all(vm, true)?;
                    Ok(t)
                });
                match tracker {
                    Ok(t) => Box::new(KvmDirtySource::new(t)),
                    Err(e) => unavailable(e.to_string()),
                }
            }
            SourceKind::Pagemap => Box::new(PagemapSource::new(map)),
            SourceKind::PageIdle => Box::new(PageIdleSource::new(map)),
            SourceKind::SoftDirty => Box::new(SoftDirtySource::new(map)),
            SourceKind::UffdMinor => {
                let config = UffdMinorConfig {
                    budget_faults_per_sec: opts.uffd_arm.map_or(opts.fault_budget, |a| a.budget()),
                    interval: opts.interval,
                    ..Default::default()
                };
                match UffdMinorSource::new(&map, config) {
                    Ok(mut s) => {
                        if let Some(p) = opts.uffd_arm.filter(ArmPolicy::is_guided) {
                            guide = GuidedArming::from_policy(s.guide(), p, config.seed)
                                .map(|g| g.with_faults(s.fault_count()));
                        }
                        Box::new(s)
                    }
                    Err(e) => unavailable(e.to_string()),
                }
            }
            SourceKind::UffdWp => match UffdWpSource::new(&map, UffdWpMode::Auto) {
                Ok(s) => Box::new(s),
                Err(e) => unavailable(e.to_string()),
            },
            SourceKind::DamonVaddr => Box::new(DamonSource::vaddr(map, opts.damon_attrs)),
            SourceKind::DamonPaddr => Box::new(DamonPaddrSource::new(map, opts.damon_attrs)),
            SourceKind::Oracle => return None,
        };
        Some(Built { source, guide })
    }
}

/// A source [`SourceKind::build`] made, with the uffd-minor arming to drive after each aging pass
/// ([`GuidedArming::arm_from`]) when the options ask for a guided one.
pub struct Built {
    /// The source (possibly an [`UnavailableSource`] with the reason).
    pub source: Box<dyn AccessSource>,
    /// uffd-minor's guided arming, if any.
    pub guide: Option<GuidedArming>,
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Built")
            .field("source", &self.source.name())
            .field("guided", &self.guide.is_some())
            .finish()
    }
}

/// Settings of the sources that take any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// uffd-minor: guest faults per second allowed (`None`: arm every page each pass).
    pub fault_budget: Option<u64>,
    /// Time between harvests (sizes uffd-minor samples).
    pub interval: Option<std::time::Duration>,
    /// uffd-minor arming; `None`: every page, or `fault_budget`'s sample. A guided policy
    /// (`oldest`) comes back as [`Built::guide`] to drive.
    pub uffd_arm: Option<ArmPolicy>,
    /// DAMON's sampling and aggregation (the self-check samples faster).
    pub damon_attrs: DamonAttrs,
}

/// Whether `kinds` needs the VM built with a dirty ring.
pub fn wants_dirty_ring(kinds: &[SourceKind]) -> bool {
    kinds.contains(&SourceKind::KvmDirtyRing)
}

/// Builds `kinds` for `vm` (before its vCPUs start) with default settings; `oracle` is skipped.
pub fn build(kinds: &[SourceKind], vm: &mut Vm) -> Vec<Box<dyn AccessSource>> {
    build_guided(kinds, vm, BuildOptions::default()).0
}

/// [`build`] with settings, also returning the uffd-minor arming to drive after each aging pass
/// when `opts.uffd_arm` is guided and the source was built.
pub fn build_guided(
    kinds: &[SourceKind],
    vm: &mut Vm,
    opts: BuildOptions,
) -> (Vec<Box<dyn AccessSource>>, Option<GuidedArming>) {
    let mut guide = None;
    let mut out = Vec::new();
    for k in kinds {
        if let Some(b) = k.build(vm, &opts) {
            out.push(b.source);
            guide = guide.or(b.guide);
        }
    }
    (out, guide)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_reject_unknown_names() {
        assert_eq!(
            parse_list("pagemap, oracle").unwrap(),
            vec![SourceKind::Pagemap, SourceKind::Oracle]
        );
        assert_eq!(parse_list("auto").unwrap().len(), SourceKind::AUTO.len());
        let e = parse_list("pagemap,bogus").unwrap_err().to_string();
        assert!(e.contains("unknown access source 'bogus'"), "{e}");
        assert_eq!(
            named_in("auto, page_idle").unwrap(),
            vec![SourceKind::PageIdle]
        );
        assert!(named_in("auto").unwrap().is_empty());
    }

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for k in SourceKind::ALL {
            assert_eq!(k.to_string().parse::<SourceKind>(), Ok(k), "{k}");
        }
        let e = "bogus".parse::<SourceKind>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown access source 'bogus' (known: auto, kvm-dirty-log, kvm-clear-log, \
             kvm-dirty-ring, uffd-minor, pagemap, page_idle, soft-dirty, uffd-wp, damon-vaddr, \
             oracle)"
        );
        // damon-paddr names a kind, but runs do not take it.
        assert!(parse_list("damon-paddr").is_err());
    }
}
