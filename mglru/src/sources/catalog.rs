//! The catalog of access sources by name, and the default set for a VM.
//!
//! Names: `kvm-dirty-log`, `kvm-clear-log`, `kvm-dirty-ring`, `uffd-minor`, `uffd-wp`, `pagemap`,
//! `page_idle`, `soft-dirty`, `damon-vaddr`, `oracle` (validation only). `auto` means every source
//! that can see accesses: the KVM dirty log, userfaultfd minor faults (reads and writes, on
//! shmem-backed memory) and every kernel source, each listed with its reason when unavailable.
//! `pagemap` reports residency, not accesses: it is listed but never promotes pages.

use super::kvm_dirty::{KvmDirtySource, UnavailableSource};
use super::uffd_minor::{ArmPolicy, GuidedArming, UffdMinorConfig, UffdMinorSource};
use super::uffd_wp::{UffdWpMode, UffdWpSource};
use crate::kernel::damon::{DamonAttrs, DamonSource};
use crate::kernel::pagemap::PagemapSource;
use crate::kernel::soft_dirty::SoftDirtySource;
use crate::source::{AccessSource, Observes};
use crate::sources::page_idle::PageIdleSource;
use agelab_vmm::dirty::{DirtyMode, DirtyOptions, DirtyTracker};
use agelab_vmm::Vm;

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

/// Every source name `build` understands.
pub const SOURCE_NAMES: &[&str] = &[
    "kvm-dirty-log",
    "kvm-clear-log",
    "kvm-dirty-ring",
    "uffd-minor",
    "pagemap",
    "page_idle",
    "soft-dirty",
    "uffd-wp",
    "damon-vaddr",
    "oracle",
];

/// Sources `auto` expands to.
pub const AUTO_SOURCES: &[&str] = &[
    "kvm-clear-log",
    "uffd-minor",
    "page_idle",
    "soft-dirty",
    "damon-vaddr",
];

/// Settings of the sources that take any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// uffd-minor: guest faults per second allowed (`None`: arm every page each pass).
    pub fault_budget: Option<u64>,
    /// Time between harvests (sizes uffd-minor samples).
    pub interval: Option<std::time::Duration>,
    /// uffd-minor arming; `None`: every page, or `fault_budget`'s sample. A guided policy
    /// (`oldest`) needs [`build_guided`], which returns the [`GuidedArming`] to drive.
    pub uffd_arm: Option<ArmPolicy>,
}

/// Parses a comma-separated list (`auto` expands); checks every name.
pub fn parse_list(list: &str) -> Result<Vec<String>, CatalogError> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name == "auto" {
            out.extend(AUTO_SOURCES.iter().map(|s| s.to_string()));
        } else if SOURCE_NAMES.contains(&name) {
            out.push(name.to_string());
        } else {
            return Err(CatalogError::Unknown {
                name: name.into(),
                known: format!("auto, {}", SOURCE_NAMES.join(", ")),
            });
        }
    }
    out.dedup();
    Ok(out)
}

/// The names `list` gives explicitly, without what `auto` expands to: the sources the user asked
/// for by name (checked as [`parse_list`] checks them).
pub fn named_in(list: &str) -> Result<Vec<String>, CatalogError> {
    let named: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|n| *n != "auto")
        .collect();
    parse_list(&named.join(","))
}

/// Whether `names` needs the VM built with a dirty ring.
pub fn wants_dirty_ring(names: &[String]) -> bool {
    names.iter().any(|n| n == "kvm-dirty-ring")
}

/// Builds the named sources for `vm` (before its vCPUs start). `oracle` is skipped: the caller
/// wires it to its ground truth. A source that cannot be set up becomes an
/// [`UnavailableSource`] carrying the reason.
pub fn build(names: &[String], vm: &mut Vm) -> Vec<Box<dyn AccessSource>> {
    build_with(names, vm, BuildOptions::default())
}

/// [`build`] with source settings. A guided uffd-minor arming is dropped here, so the source
/// arms by itself (every page, or `fault_budget`'s sample): use [`build_guided`] for it.
pub fn build_with(names: &[String], vm: &mut Vm, opts: BuildOptions) -> Vec<Box<dyn AccessSource>> {
    build_guided(names, vm, opts).0
}

/// [`build_with`], also returning the uffd-minor arming to drive after each aging pass
/// ([`GuidedArming::arm_from`]) when `opts.uffd_arm` is guided and the source was built.
pub fn build_guided(
    names: &[String],
    vm: &mut Vm,
    opts: BuildOptions,
) -> (Vec<Box<dyn AccessSource>>, Option<GuidedArming>) {
    let map = vm.page_map().clone();
    let mut guide = None;
    let mut out: Vec<Box<dyn AccessSource>> = Vec::new();
    for name in names {
        let source: Box<dyn AccessSource> = match name.as_str() {
            "kvm-dirty-log" | "kvm-clear-log" | "kvm-dirty-ring" => {
                let mode = match name.as_str() {
                    "kvm-dirty-log" => DirtyMode::GetLog,
                    "kvm-clear-log" => DirtyMode::ClearLog,
                    _ => DirtyMode::Ring,
                };
                let tracker = DirtyTracker::new(vm, DirtyOptions::new(mode)).and_then(|mut t| {
                    t.set_logging_all(vm, true)?;
                    Ok(t)
                });
                match tracker {
                    Ok(t) => Box::new(KvmDirtySource::new(t)),
                    Err(e) => Box::new(UnavailableSource::new(
                        name,
                        Observes::Writes,
                        e.to_string(),
                    )),
                }
            }
            "pagemap" => Box::new(PagemapSource::new(map.clone())),
            "page_idle" => Box::new(PageIdleSource::new(map.clone())),
            "soft-dirty" => Box::new(SoftDirtySource::new(map.clone())),
            "uffd-minor" => {
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
                    Err(e) => Box::new(UnavailableSource::new(name, Observes::Both, e.to_string())),
                }
            }
            "uffd-wp" => match UffdWpSource::new(&map, UffdWpMode::Auto) {
                Ok(s) => Box::new(s),
                Err(e) => Box::new(UnavailableSource::new(
                    name,
                    Observes::Writes,
                    e.to_string(),
                )),
            },
            "damon-vaddr" => Box::new(DamonSource::vaddr(map.clone(), DamonAttrs::default())),
            _ => continue,
        };
        out.push(source);
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
            vec!["pagemap", "oracle"]
        );
        assert_eq!(parse_list("auto").unwrap().len(), AUTO_SOURCES.len());
        let e = parse_list("pagemap,bogus").unwrap_err().to_string();
        assert!(e.contains("unknown access source 'bogus'"), "{e}");
        assert_eq!(named_in("auto, page_idle").unwrap(), vec!["page_idle"]);
        assert!(named_in("auto").unwrap().is_empty());
    }
}
