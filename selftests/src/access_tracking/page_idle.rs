//! The kernel test's page_idle marking of one vCPU's region: look every page's PFN up in
//! pagemap, count pages without a PFN and pages still idle since the previous mark, and mark the
//! region idle again.
//!
//! The kernel test reads and writes the bitmap one PFN at a time; here PFNs are sorted and
//! read/written in word runs (same rmap walks and clear_young notifiers, fewer syscalls), with
//! short transfers at max_pfn accepted as the kernel means them. THP
//! tail pages are mapped to their head, the only page that carries the idle flag.

use agelab_mglru::kernel::kpageflags::Kpageflags;
use agelab_mglru::kernel::page_idle::{idle_pfns, PageIdleError, PAGE_IDLE_BITMAP};
use agelab_mglru::kernel::pagemap::Pagemap;
use agelab_mglru::kernel::pfn_runs::{plan_word_runs, MAX_RUN_WORDS, MERGE_GAP_WORDS};
use agelab_vmm::{GuestPageMap, PageRange};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

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

/// The bitmap with I/O that tolerates the kernel's short transfers at max_pfn: a word run that
/// reaches past max_pfn is processed up to max_pfn and reported short by one word (8 bytes), so
/// `read_exact`/`write_all` would retry the partial word forever or fail.
#[derive(Debug)]
struct Bitmap(File);

impl Bitmap {
    fn io_err(op: &'static str, first_word: u64, words: u64, err: std::io::Error) -> PageIdleError {
        PageIdleError::Bitmap {
            op,
            first_pfn: first_word * 64,
            words,
            err,
        }
    }

    /// Whether each of sorted, unique `pfns` is idle (PFNs past max_pfn read as not idle).
    fn read_idle(&self, sorted: &[u64]) -> Result<Vec<bool>, PageIdleError> {
        let mut out = Vec::with_capacity(sorted.len());
        let mut i = 0;
        for run in plan_word_runs(sorted, MERGE_GAP_WORDS, MAX_RUN_WORDS) {
            let mut buf = vec![0u8; run.words as usize * 8];
            self.0
                .read_at(&mut buf, run.first_word * 8)
                .map_err(|e| Self::io_err("read", run.first_word, run.words, e))?;
            while i < sorted.len() && sorted[i] < run.end_pfn() {
                let off = sorted[i] - run.first_pfn();
                let w = (off / 64) as usize;
                let word = u64::from_ne_bytes(buf[w * 8..w * 8 + 8].try_into().expect("8 bytes"));
                out.push(word & (1 << (off % 64)) != 0);
                i += 1;
            }
        }
        Ok(out)
    }

    /// Marks sorted, unique `pfns` idle.
    fn mark_idle(&self, sorted: &[u64]) -> Result<(), PageIdleError> {
        let mut i = 0;
        for run in plan_word_runs(sorted, MERGE_GAP_WORDS, MAX_RUN_WORDS) {
            let mut words = vec![0u64; run.words as usize];
            while i < sorted.len() && sorted[i] < run.end_pfn() {
                let off = sorted[i] - run.first_pfn();
                words[(off / 64) as usize] |= 1 << (off % 64);
                i += 1;
            }
            let buf: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            // One write: the kernel marks every PFN below max_pfn even when it reports less.
            self.0
                .write_at(&buf, run.first_word * 8)
                .map_err(|e| Self::io_err("write", run.first_word, run.words, e))?;
        }
        Ok(())
    }
}

/// Open page_idle, pagemap and kpageflags files.
#[derive(Debug)]
pub struct IdleMarker {
    bitmap: Bitmap,
    pagemap: Pagemap,
    kpf: Kpageflags,
}

impl IdleMarker {
    /// Opens the bitmap (root only), this process's pagemap and kpageflags.
    pub fn open() -> Result<Self, PageIdleError> {
        if let Some(e) = agelab_mglru::kernel::page_idle::page_idle_unavailable() {
            return Err(e);
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(PAGE_IDLE_BITMAP)
            .map_err(PageIdleError::Open)?;
        Ok(IdleMarker {
            bitmap: Bitmap(file),
            pagemap: Pagemap::open_self()?,
            kpf: Kpageflags::open()?,
        })
    }

    /// Counts and marks the dense guest pages `pages` of `map` (one vCPU's region).
    pub fn mark_region(
        &self,
        map: &GuestPageMap,
        pages: Range<u64>,
    ) -> Result<IdleMarkReport, PageIdleError> {
        let sub = sub_map(map, pages);
        let pfns = idle_pfns(&self.pagemap, &self.kpf, &sub)?;
        let idle = self.bitmap.read_idle(&pfns.sorted)?;
        let mut report = IdleMarkReport {
            pages: sub.len(),
            ..Default::default()
        };
        for p in &pfns.per_page {
            match p {
                None => report.no_pfn += 1,
                Some(pfn) => {
                    let i = pfns.sorted.partition_point(|&x| x < *pfn);
                    if idle.get(i).copied().unwrap_or(false) {
                        report.still_idle += 1;
                    }
                }
            }
        }
        self.bitmap.mark_idle(&pfns.sorted)?;
        Ok(report)
    }

    /// Per dense guest page of `map`: `Some(true)` when idle (not accessed since marked),
    /// `Some(false)` when accessed, `None` when not present. Does not mark.
    pub fn read_map(&self, map: &GuestPageMap) -> Result<Vec<Option<bool>>, PageIdleError> {
        let pfns = idle_pfns(&self.pagemap, &self.kpf, map)?;
        let idle = self.bitmap.read_idle(&pfns.sorted)?;
        Ok(pfns
            .per_page
            .iter()
            .map(|p| p.map(|pfn| idle[pfns.sorted.partition_point(|&x| x < pfn)]))
            .collect())
    }

    /// Marks every present page of `map` idle.
    pub fn mark_map(&self, map: &GuestPageMap) -> Result<(), PageIdleError> {
        let pfns = idle_pfns(&self.pagemap, &self.kpf, map)?;
        self.bitmap.mark_idle(&pfns.sorted)?;
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
