//! Soft-dirty tracking: `echo 4 > /proc/self/clear_refs` write-protects every PTE of the process
//! and clears bit 55 of pagemap; the next write to a page (including KVM's, which faults in through
//! GUP after its SPTEs were zapped by the MMU notifier) sets it again.
//!
//! Caveats: the clear is process-wide (every mapping pays a write fault afterwards, and the kernel
//! invalidates every secondary-MMU mapping of the process, `0..-1`, even where soft-dirty is not
//! built: every VM of the process then re-faults its memory, and on a kernel that leaves the host
//! PTEs writable a re-faulted *read* is mapped writable and logged dirty by KVM), writes between
//! the pagemap read and the clear are lost, and fresh VMAs report every page soft-dirty until the
//! first clear, hence [`SoftDirtySource::arm`](crate::sources::soft_dirty::SoftDirtySource::arm).

use super::pagemap::{Pagemap, PagemapEntry, PagemapError};
use agelab_vmm::PageSet;

/// The file that clears soft-dirty bits.
pub const CLEAR_REFS: &str = "/proc/self/clear_refs";

/// Errors from soft-dirty tracking.
#[derive(Debug, thiserror::Error)]
pub enum SoftDirtyError {
    /// Bit 55 never gets set: no CONFIG_MEM_SOFT_DIRTY.
    #[error("kernel built without CONFIG_MEM_SOFT_DIRTY: pagemap bit 55 stays clear after writing a probe page")]
    NotBuilt,
    /// Clearing did not clear.
    #[error("writing 4 to {CLEAR_REFS} did not clear soft-dirty on a probe page")]
    ClearIneffective,
    /// clear_refs write failed.
    #[error("writing 4 to {CLEAR_REFS}: {0}")]
    ClearRefs(#[source] std::io::Error),
    /// Probe page mapping failed.
    #[error("mapping a probe page: {0}")]
    Probe(#[source] nix::Error),
    /// pagemap failed.
    #[error(transparent)]
    Pagemap(#[from] PagemapError),
}

/// Clears soft-dirty bits of the whole process (and write-protects its PTEs).
pub fn clear_soft_dirty() -> Result<(), SoftDirtyError> {
    std::fs::write(CLEAR_REFS, b"4").map_err(SoftDirtyError::ClearRefs)
}

/// A scratch page that shows whether soft-dirty tracking is built and whether a clear clears.
///
/// Building it never writes `clear_refs`: that write is process-wide and the kernel invalidates
/// every secondary-MMU mapping of the whole process for it (an MMU-notifier range of `0..-1`, also
/// on kernels without `CONFIG_MEM_SOFT_DIRTY`), so every KVM VM in the process would re-fault its
/// memory. Whether a clear clears is checked after the clears the source makes anyway
/// ([`SoftDirtyProbe::check_cleared`]).
#[derive(Debug)]
pub struct SoftDirtyProbe {
    pagemap: Pagemap,
    page: super::uffd_wp::ScratchMapping,
}

impl SoftDirtyProbe {
    /// Maps and writes the probe page; `NotBuilt` where pagemap bit 55 stays clear on it (a
    /// written page of a fresh mapping is soft-dirty wherever the kernel tracks soft-dirty).
    pub fn new() -> Result<Self, SoftDirtyError> {
        let pagemap = Pagemap::open_self()?;
        let page = super::uffd_wp::ScratchMapping::new(1).map_err(SoftDirtyError::Probe)?;
        page.write(0, 1);
        if !pagemap.read(page.addr(), 1)?[0].soft_dirty() {
            return Err(SoftDirtyError::NotBuilt);
        }
        Ok(SoftDirtyProbe { pagemap, page })
    }

    /// After a clear: the probe page must read clean, and written again, soft-dirty.
    pub fn check_cleared(&self) -> Result<(), SoftDirtyError> {
        if self.pagemap.read(self.page.addr(), 1)?[0].soft_dirty() {
            return Err(SoftDirtyError::ClearIneffective);
        }
        self.page.write(0, 2);
        if !self.pagemap.read(self.page.addr(), 1)?[0].soft_dirty() {
            return Err(SoftDirtyError::NotBuilt);
        }
        Ok(())
    }
}

/// Pages whose entry says written since the last clear (a swapped page keeps its soft-dirty bit).
pub fn written_pages(entries: &[PagemapEntry]) -> PageSet {
    let mut s = PageSet::new(entries.len() as u64);
    for (i, e) in entries.iter().enumerate() {
        if e.soft_dirty() && (e.present() || e.swapped()) {
            s.insert(i as u64);
        }
    }
    s
}
