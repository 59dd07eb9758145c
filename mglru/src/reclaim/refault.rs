//! Residency of guest pages and refault detection: pages that were reclaimed and came back.
//!
//! Residency is read per range: anonymous memory from `/proc/self/pagemap` (present bit; a
//! paged-out page reads "swapped"), shmem and file memory with `mincore(2)`, which asks the page
//! cache rather than the page table — a memfd page whose PTE userfaultfd-MINOR tracking zapped is
//! still in memory and must not count as reclaimed.
//!
//! [`RefaultDetector`] compares scans: a page it saw leave (`present → absent`, whoever reclaimed
//! it: our `madvise`, a memcg limit, lru_gen eviction) is *out*; an out page found present again
//! was touched — by the guest, a KVM fault, or a host thread — and is a refault. The access
//! sources may see a reclaimed page too; the engine counts those itself when it promotes them
//! (`AgingPass::promotion.refaulted`), so the run loop feeds this detector's refaults with
//! [`Engine::record_refaults`](crate::Engine::record_refaults) before each aging pass and adds
//! the two.

use agelab_vmm::{BackingKind, GuestPageMap, PageSet, PAGE_SIZE};

use crate::kernel::pagemap::{Pagemap, PagemapEntry, PagemapError};

/// Errors reading residency.
#[derive(Debug, thiserror::Error)]
pub enum ResidencyError {
    /// pagemap failed.
    #[error(transparent)]
    Pagemap(#[from] PagemapError),
    /// mincore failed.
    #[error("mincore({hva:#x}, {len:#x}): {err}")]
    Mincore {
        /// Start.
        hva: u64,
        /// Length.
        len: u64,
        /// Cause.
        #[source]
        err: nix::Error,
    },
}

/// Residency counts from one scan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResidencyCounts {
    /// Pages in memory.
    pub present: u64,
    /// Anonymous pages in swap (pagemap says swapped).
    pub swapped: u64,
    /// Pages neither present nor (for anon) swapped: never touched, or shmem/file pages out.
    pub absent: u64,
}

/// Reads which guest pages are in memory.
#[derive(Debug)]
pub struct ResidencyScanner {
    map: GuestPageMap,
    pagemap: Pagemap,
    entries: Vec<PagemapEntry>,
    vec: Vec<u8>,
}

impl ResidencyScanner {
    /// A scanner for `map` (this process's mappings).
    pub fn new(map: GuestPageMap) -> Result<Self, ResidencyError> {
        Ok(ResidencyScanner {
            map,
            pagemap: Pagemap::open_self()?,
            entries: Vec::new(),
            vec: Vec::new(),
        })
    }

    /// The page map.
    pub fn map(&self) -> &GuestPageMap {
        &self.map
    }

    /// Sets `resident` (capacity = guest pages) to the pages in memory now.
    pub fn scan(&mut self, resident: &mut PageSet) -> Result<ResidencyCounts, ResidencyError> {
        resident.clear();
        let mut c = ResidencyCounts::default();
        for r in self.map.ranges() {
            let n = r.pages as usize;
            if r.backing.is_shared() {
                self.vec.resize(n, 0);
                mincore(r.hva, r.pages * PAGE_SIZE, &mut self.vec)?;
                for (i, &b) in self.vec.iter().enumerate() {
                    if b & 1 != 0 {
                        resident.insert(r.first_page + i as u64);
                        c.present += 1;
                    } else {
                        c.absent += 1;
                    }
                }
            } else {
                self.entries.resize(n, PagemapEntry::default());
                self.pagemap.read_into(r.hva, &mut self.entries)?;
                for (i, e) in self.entries.iter().enumerate() {
                    if e.present() {
                        resident.insert(r.first_page + i as u64);
                        c.present += 1;
                    } else if e.swapped() {
                        c.swapped += 1;
                    } else {
                        c.absent += 1;
                    }
                }
            }
        }
        Ok(c)
    }

    /// Resident set size of the guest's test memory, bytes (a fresh scan).
    pub fn rss_bytes(&mut self) -> Result<u64, ResidencyError> {
        let mut s = PageSet::new(self.map.len());
        Ok(self.scan(&mut s)?.present * PAGE_SIZE)
    }
}

/// Whether `kind` is read with mincore (page cache) rather than pagemap.
pub fn uses_mincore(kind: &BackingKind) -> bool {
    kind.is_shared()
}

fn mincore(hva: u64, len: u64, out: &mut [u8]) -> Result<(), ResidencyError> {
    // SAFETY: [hva, hva+len) is a live guest mapping from the page map and `out` holds one byte
    // per page of it, as mincore requires.
    let rc = unsafe { libc::mincore(hva as *mut libc::c_void, len as usize, out.as_mut_ptr()) };
    if rc != 0 {
        return Err(ResidencyError::Mincore {
            hva,
            len,
            err: nix::Error::last(),
        });
    }
    Ok(())
}

/// What one detector step found.
#[derive(Clone, Debug)]
pub struct ResidencyStep {
    /// Pages that left memory since the previous step (now counted as out).
    pub evicted: PageSet,
    /// Out pages found present again: refaults.
    pub refaulted: PageSet,
    /// Counts of this scan.
    pub counts: ResidencyCounts,
}

/// Tracks which guest pages are out and reports their refaults; see the module docs.
#[derive(Debug)]
pub struct RefaultDetector {
    scanner: ResidencyScanner,
    resident: PageSet,
    out: PageSet,
    scratch: PageSet,
    refaults: u64,
    evictions: u64,
}

impl RefaultDetector {
    /// Starts from the residency now (call it after the guest touched its memory).
    pub fn new(map: GuestPageMap) -> Result<Self, ResidencyError> {
        let pages = map.len();
        let mut scanner = ResidencyScanner::new(map)?;
        let mut resident = PageSet::new(pages);
        scanner.scan(&mut resident)?;
        Ok(RefaultDetector {
            scanner,
            resident,
            out: PageSet::new(pages),
            scratch: PageSet::new(pages),
            refaults: 0,
            evictions: 0,
        })
    }

    /// Which of `pages` actually left memory (after a reclaim action); they are now out. Pages a
    /// `madvise` could not reclaim (busy, or `MADV_COLD`) stay resident.
    pub fn confirm(&mut self, pages: &[u64]) -> Result<Vec<u64>, ResidencyError> {
        let mut now = PageSet::new(self.resident.capacity());
        self.scanner.scan(&mut now)?;
        let gone: Vec<u64> = pages
            .iter()
            .copied()
            .filter(|&p| !now.contains(p) && !self.out.contains(p))
            .collect();
        for &p in &gone {
            self.out.insert(p);
            self.resident.remove(p);
        }
        self.evictions += gone.len() as u64;
        Ok(gone)
    }

    /// Scans again: pages that left since the last scan become out (`evicted`), out pages now
    /// present are refaults.
    pub fn step(&mut self) -> Result<ResidencyStep, ResidencyError> {
        let counts = self.scanner.scan(&mut self.scratch)?;
        let mut refaulted = self.out.clone();
        refaulted.intersect_with(&self.scratch);
        let mut evicted = self.resident.clone();
        evicted.subtract(&self.scratch);
        evicted.subtract(&self.out);
        self.out.subtract(&refaulted);
        self.out.union_with(&evicted);
        std::mem::swap(&mut self.resident, &mut self.scratch);
        self.refaults += refaulted.count();
        self.evictions += evicted.count();
        Ok(ResidencyStep {
            evicted,
            refaulted,
            counts,
        })
    }

    /// Pages out now.
    pub fn out(&self) -> &PageSet {
        &self.out
    }

    /// Pages resident at the last scan.
    pub fn resident(&self) -> &PageSet {
        &self.resident
    }

    /// Refaults so far.
    pub fn refaults(&self) -> u64 {
        self.refaults
    }

    /// Pages seen leaving so far (confirmed by [`confirm`](Self::confirm) or found by a step).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The scanner.
    pub fn scanner_mut(&mut self) -> &mut ResidencyScanner {
        &mut self.scanner
    }
}
