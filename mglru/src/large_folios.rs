//! Large-folio (multi-size THP) backings on the host side: turning a folio size on for the run
//! (a journaled knob change, restored on every exit path) and counting the folios guest memory
//! really sits in (pagemap PFNs + `/proc/kpageflags` compound head/tail bits; `/proc/PID/smaps`
//! only counts PMD-mapped THP, `AnonHugePages`/`ShmemPmdMapped`, not smaller folios).

use crate::host_guard::{HostGuardError, HostRestore, RestoreGuard};
use crate::kernel::kpageflags::{
    Kpageflags, KpageflagsError, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL,
};
use crate::kernel::pagemap::{Pagemap, PagemapError};
use agelab_vmm::large_folio::{KnobState, LargeFolio};
use agelab_vmm::{Backing, GuestPageMap, PAGE_SIZE};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Errors preparing or checking a large-folio backing.
#[derive(Debug, thiserror::Error)]
pub enum LargeFolioError {
    /// The kernel has no mTHP of this size (the reason a test skips).
    #[error("{backing} backing: this kernel has no {kib} KiB multi-size THP for {kind} memory ({} missing; anonymous mTHP needs 6.8+, shmem 6.11+)", .knob.display())]
    Missing {
        /// Backing name.
        backing: String,
        /// Folio size in KiB.
        kib: u32,
        /// `anonymous` or `shmem`.
        kind: &'static str,
        /// The missing knob.
        knob: PathBuf,
    },
    /// The knob could not be journaled or written.
    #[error("turning {kib} KiB multi-size THP on: {source}")]
    Knob {
        /// Folio size in KiB.
        kib: u32,
        /// Cause.
        #[source]
        source: HostGuardError,
    },
    /// Reading pagemap failed.
    #[error(transparent)]
    Pagemap(#[from] PagemapError),
    /// Reading kpageflags failed.
    #[error(transparent)]
    Kpageflags(#[from] KpageflagsError),
}

impl LargeFolioError {
    /// Whether this is the kernel lacking the feature (skip), not a failure.
    pub fn is_missing_feature(&self) -> bool {
        matches!(self, LargeFolioError::Missing { .. })
    }
}

fn kind_name(lf: LargeFolio) -> &'static str {
    if lf.shmem {
        "shmem"
    } else {
        "anonymous"
    }
}

/// Makes `backing`'s folio size available to advised memory for as long as the returned guard
/// lives: nothing for backings without a large-folio size or sizes already on; else the size's
/// knob is set to `madvise` (anonymous) / `advise` (shmem), journaled, so a killed run is undone
/// by the next agelab command. The second value says what was done, for the log.
pub fn prepare(backing: &Backing) -> Result<(Option<RestoreGuard>, String), LargeFolioError> {
    let Some(lf) = backing.large_folio() else {
        return Ok((None, String::new()));
    };
    match lf.state() {
        KnobState::On => Ok((
            None,
            format!(
                "{} KiB {} mTHP already on for advised memory",
                lf.kib,
                kind_name(lf)
            ),
        )),
        KnobState::Missing(knob) => Err(LargeFolioError::Missing {
            backing: backing.to_string(),
            kib: lf.kib,
            kind: kind_name(lf),
            knob,
        }),
        KnobState::Off(was) => {
            let knob = lf.knob();
            let (guard, _) = HostRestore::set_knob(
                &format!("{} KiB {} mTHP", lf.kib, kind_name(lf)),
                &knob,
                lf.advised_value(),
            )
            .map_err(|source| LargeFolioError::Knob {
                kib: lf.kib,
                source,
            })?;
            Ok((
                Some(guard),
                format!(
                    "{} = {} for the run (was {was}; journaled, restored at exit)",
                    knob.display(),
                    lf.advised_value()
                ),
            ))
        }
    }
}

/// The folios a guest's memory sits in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FolioCensus {
    /// Folios by size in bytes (a folio only partly in guest memory counts at the size seen).
    pub folios: BTreeMap<u64, u64>,
    /// Guest pages not present.
    pub absent: u64,
    /// Guest pages in all.
    pub pages: u64,
}

impl FolioCensus {
    /// Present guest pages.
    pub fn present(&self) -> u64 {
        self.pages - self.absent
    }

    /// Present pages inside folios of `bytes`.
    pub fn pages_in(&self, bytes: u64) -> u64 {
        self.folios.get(&bytes).copied().unwrap_or(0) * (bytes / PAGE_SIZE)
    }

    /// Share of present pages inside folios of `bytes` (0 when nothing is present).
    pub fn share_in(&self, bytes: u64) -> f64 {
        match self.present() {
            0 => 0.0,
            n => self.pages_in(bytes) as f64 / n as f64,
        }
    }

    /// `64 KiB x 2048 (100.0%), 4 KiB x 3 (0.0%); 0 of 32768 pages absent`.
    pub fn describe(&self) -> String {
        let sizes: Vec<String> = self
            .folios
            .iter()
            .rev()
            .map(|(&b, &n)| format!("{} KiB x {n} ({:.1}%)", b >> 10, self.share_in(b) * 100.0))
            .collect();
        format!(
            "{}; {} of {} pages absent",
            if sizes.is_empty() {
                "no folio".to_string()
            } else {
                sizes.join(", ")
            },
            self.absent,
            self.pages
        )
    }

    /// Counts folios from per-page PFNs (guest order, one host mapping after another: `runs`
    /// gives each mapping's page count) and the flags of each PFN.
    pub fn from_pages(
        runs: &[u64],
        pfns: &[Option<u64>],
        flags_of: &mut dyn FnMut(u64) -> Result<u64, KpageflagsError>,
    ) -> Result<Self, KpageflagsError> {
        let mut c = FolioCensus {
            pages: pfns.len() as u64,
            ..Default::default()
        };
        let mut start = 0usize;
        for &n in runs {
            let run = &pfns[start..start + n as usize];
            start += n as usize;
            let mut i = 0;
            while i < run.len() {
                let Some(pfn) = run[i] else {
                    c.absent += 1;
                    i += 1;
                    continue;
                };
                let mut len = 1u64;
                // A head starts a folio; it goes on while the next pages are its tails. A tail
                // met first (a folio cut by the start of the mapping) counts as a run of its own.
                if flags_of(pfn)? & (KPF_COMPOUND_HEAD | KPF_COMPOUND_TAIL) != 0 {
                    while let Some(&Some(next)) = run.get(i + len as usize) {
                        if next != pfn + len || flags_of(next)? & KPF_COMPOUND_TAIL == 0 {
                            break;
                        }
                        len += 1;
                    }
                }
                *c.folios.entry(len * PAGE_SIZE).or_default() += 1;
                i += len as usize;
            }
        }
        Ok(c)
    }
}

/// The folios the guest pages of `map` sit in now (this process's mappings; root only).
pub fn census(map: &GuestPageMap) -> Result<FolioCensus, LargeFolioError> {
    let pagemap = Pagemap::open_self()?;
    let pfns = pagemap.guest_pfns(map)?;
    let mut sorted: Vec<u64> = pfns.iter().flatten().copied().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let kpf = Kpageflags::open()?;
    let mut snap = kpf.snapshot(&sorted)?;
    let runs: Vec<u64> = map.ranges().iter().map(|r| r.pages).collect();
    Ok(FolioCensus::from_pages(&runs, &pfns, &mut |pfn| {
        kpf.flags(&mut snap, pfn)
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folios_are_counted_by_head_and_tails() {
        // Mapping 1: a 4-page folio at PFN 100, a plain page, an absent page, then a head at 200
        // whose next page is not its tail. Mapping 2: a tail first (cut folio), then 2 plain pages.
        let pfns = [
            Some(100),
            Some(101),
            Some(102),
            Some(103),
            Some(7),
            None,
            Some(200),
            Some(9),
            Some(301),
            Some(11),
            Some(12),
        ];
        let flags = |pfn: u64| match pfn {
            100 | 200 => KPF_COMPOUND_HEAD,
            101..=103 | 201 | 301 => KPF_COMPOUND_TAIL,
            _ => 0,
        };
        let c = FolioCensus::from_pages(&[8, 3], &pfns, &mut |p| Ok(flags(p))).unwrap();
        assert_eq!(c.pages, 11);
        assert_eq!(c.absent, 1);
        assert_eq!(c.folios.get(&(4 * PAGE_SIZE)), Some(&1));
        assert_eq!(c.folios.get(&PAGE_SIZE), Some(&6));
        assert_eq!(c.pages_in(4 * PAGE_SIZE), 4);
        assert!((c.share_in(4 * PAGE_SIZE) - 0.4).abs() < 1e-9);
        assert!(
            c.describe()
                .starts_with("16 KiB x 1 (40.0%), 4 KiB x 6 (60.0%)"),
            "{}",
            c.describe()
        );
    }
}
