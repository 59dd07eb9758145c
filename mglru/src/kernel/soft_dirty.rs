//! Soft-dirty tracking: `echo 4 > /proc/self/clear_refs` write-protects every PTE of the process
//! and clears bit 55 of pagemap; the next write to a page (including KVM's, which faults in through
//! GUP after its SPTEs were zapped by the MMU notifier) sets it again.
//!
//! Caveats: the clear is process-wide (every mapping pays a write fault afterwards), writes between
//! the pagemap read and the clear are lost, and fresh VMAs report every page soft-dirty until the
//! first clear, hence [`SoftDirtySource::arm`].

use super::pagemap::{Pagemap, PagemapEntry, PagemapError};
use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
use agelab_vmm::{GuestPageMap, PageSet, PAGE_SIZE};
use std::time::Instant;

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

/// Checks that soft-dirty works by writing, clearing and re-writing a scratch page.
pub fn probe_soft_dirty() -> Result<(), SoftDirtyError> {
    let pm = Pagemap::open_self()?;
    let page = super::uffd_wp::ScratchMapping::new(1).map_err(SoftDirtyError::Probe)?;
    page.write(0, 1);
    clear_soft_dirty()?;
    if pm.read(page.addr(), 1)?[0].soft_dirty() {
        return Err(SoftDirtyError::ClearIneffective);
    }
    page.write(0, 2);
    if !pm.read(page.addr(), 1)?[0].soft_dirty() {
        return Err(SoftDirtyError::NotBuilt);
    }
    Ok(())
}

/// Written pages from soft-dirty bits.
#[derive(Debug)]
pub struct SoftDirtySource {
    map: GuestPageMap,
    pagemap: Result<Pagemap, String>,
    probe: Result<(), String>,
}

impl SoftDirtySource {
    /// A source over `map`'s pages; probes soft-dirty support once.
    pub fn new(map: GuestPageMap) -> Self {
        let pagemap = Pagemap::open_self().map_err(|e| e.to_string());
        let probe = probe_soft_dirty().map_err(|e| e.to_string());
        SoftDirtySource {
            map,
            pagemap,
            probe,
        }
    }

    /// Clears soft-dirty so the first harvest reports only new writes.
    pub fn arm(&mut self) -> Result<(), HarvestError> {
        clear_soft_dirty().map_err(err)
    }
}

fn err(e: SoftDirtyError) -> HarvestError {
    HarvestError::Other {
        source_name: "soft-dirty".into(),
        message: e.to_string(),
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

impl AccessSource for SoftDirtySource {
    fn name(&self) -> &str {
        "soft-dirty"
    }
    fn observes(&self) -> Observes {
        Observes::Writes
    }
    fn granularity(&self) -> u64 {
        PAGE_SIZE
    }
    fn available(&self) -> Result<(), Unavailable> {
        self.pagemap.as_ref().map_err(|e| Unavailable(e.clone()))?;
        self.probe.clone().map_err(Unavailable)
    }
    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        if let Err(reason) = self.available() {
            return Err(HarvestError::Unavailable {
                source_name: "soft-dirty".into(),
                reason: reason.0,
            });
        }
        let pm = self.pagemap.as_ref().expect("checked by available()");
        let t = Instant::now();
        let entries = pm.guest_entries(&self.map).map_err(|e| err(e.into()))?;
        clear_soft_dirty().map_err(err)?;
        Ok(Harvest {
            accessed: written_pages(&entries),
            observed: None,
            cost: HarvestCost {
                ns: t.elapsed().as_nanos() as u64,
                bytes_read: entries.len() as u64 * 8,
                bytes_written: 1,
            },
        })
    }
}
