//! The kernel test's page_idle marking of one vCPU's region: look every page's PFN up in
//! pagemap, count pages without a PFN and pages still idle since the previous mark, and mark the
//! region idle again.
//!
//! The kernel test reads and writes the bitmap one PFN at a time; here the library's bitmap
//! ([`agelab_mglru::kernel::page_idle`]) reads and writes sorted PFNs in word runs (same rmap walks
//! and clear_young notifiers, fewer syscalls) and stops at max_pfn as the kernel means it. THP
//! tail pages are mapped to their head, the only page that carries the idle flag.

use agelab_mglru::kernel::page_idle::{GuestIdleFiles, PageIdleError};
use agelab_vmm::{GuestPageMap, PageRange};
use std::ops::Range;

/// What marking one region found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdleMarkReport {
    /// Pages in the region.
    pub pages: u64,
    /// Pages with no PFN (not present: never faulted, or swapped out).
    pub no_pfn: u64,
    /// Pages still idle since the previous mark: the guest's access was not seen.
    pub still_idle: u64,
}

impl IdleMarkReport {
    /// The kernel's error condition: ≥ 1% of pages had no PFN.
    pub fn too_many_without_pfn(&self) -> bool {
        self.no_pfn >= (self.pages / 100).max(1)
    }

    /// The kernel's idle check: ≥ 10% of pages still idle after the guest accessed them.
    pub fn too_many_still_idle(&self) -> bool {
        self.still_idle >= (self.pages / 10).max(1)
    }
}

/// The page_idle files, opened once for the whole test.
#[derive(Debug)]
pub struct IdleMarker(GuestIdleFiles);

impl IdleMarker {
    /// Opens the bitmap (root only), this process's pagemap and kpageflags.
    pub fn open() -> Result<Self, PageIdleError> {
        GuestIdleFiles::open().map(IdleMarker)
    }

    /// Counts and marks the dense guest pages `pages` of `map` (one vCPU's region).
    pub fn mark_region(
        &self,
        map: &GuestPageMap,
        pages: Range<u64>,
    ) -> Result<IdleMarkReport, PageIdleError> {
        let sub = sub_map(map, pages);
        let pfns = self.0.pfns(&sub)?;
        let (idle, _) = self.0.bitmap.read_idle(&pfns.sorted)?;
        let mut report = IdleMarkReport {
            pages: sub.len(),
            ..Default::default()
        };
        for p in pfns.per_page_idle(&idle) {
            match p {
                None => report.no_pfn += 1,
                Some(true) => report.still_idle += 1,
                Some(false) => {}
            }
        }
        self.0.bitmap.mark_idle(&pfns.sorted)?;
        Ok(report)
    }

    /// Per dense guest page of `map`: `Some(true)` when idle (not accessed since marked),
    /// `Some(false)` when accessed, `None` when not present. Does not mark.
    pub fn read_map(&self, map: &GuestPageMap) -> Result<Vec<Option<bool>>, PageIdleError> {
        let pfns = self.0.pfns(map)?;
        let (idle, _) = self.0.bitmap.read_idle(&pfns.sorted)?;
        Ok(pfns.per_page_idle(&idle).collect())
    }

    /// Marks every present page of `map` idle.
    pub fn mark_map(&self, map: &GuestPageMap) -> Result<(), PageIdleError> {
        let pfns = self.0.pfns(map)?;
        self.0.bitmap.mark_idle(&pfns.sorted)?;
        Ok(())
    }
}

/// The dense pages `pages` of `map` as a map of their own (renumbered from 0).
pub fn sub_map(map: &GuestPageMap, pages: Range<u64>) -> GuestPageMap {
    let ranges = map
        .ranges()
        .iter()
        .filter_map(|r| {
            let start = pages.start.max(r.first_page);
            let end = pages.end.min(r.first_page + r.pages);
            (start < end).then(|| PageRange {
                first_page: start - pages.start,
                pages: end - start,
                gpa: r.gpa + (start - r.first_page) * agelab_vmm::PAGE_SIZE,
                hva: r.hva + (start - r.first_page) * agelab_vmm::PAGE_SIZE,
                slot: r.slot,
                backing: r.backing.clone(),
            })
        })
        .collect();
    GuestPageMap::new(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agelab_vmm::BackingKind;

    #[test]
    fn thresholds_follow_the_kernel_test() {
        let r = IdleMarkReport {
            pages: 1000,
            no_pfn: 9,
            still_idle: 99,
        };
        assert!(!r.too_many_without_pfn() && !r.too_many_still_idle());
        let r = IdleMarkReport {
            pages: 1000,
            no_pfn: 10,
            still_idle: 100,
        };
        assert!(r.too_many_without_pfn() && r.too_many_still_idle());
    }

    #[test]
    fn sub_maps_renumber_pages() {
        let map = GuestPageMap::new(vec![PageRange {
            first_page: 0,
            pages: 100,
            gpa: 0x1000_0000,
            hva: 0x7000_0000,
            slot: 0,
            backing: BackingKind::Anonymous,
        }]);
        let s = sub_map(&map, 10..30);
        assert_eq!(s.len(), 20);
        let p = s.page(0).unwrap();
        assert_eq!(
            (p.gpa, p.hva),
            (0x1000_0000 + 10 * 4096, 0x7000_0000 + 10 * 4096)
        );
    }
}
