//! `soft-dirty`: written pages from pagemap's soft-dirty bit, cleared through `clear_refs`
//! ([`crate::kernel::soft_dirty`]) after every harvest.

use super::SourceKind;
use crate::kernel::pagemap::{Pagemap, PagemapError};
use crate::kernel::soft_dirty::{clear_soft_dirty, written_pages, SoftDirtyError, SoftDirtyProbe};
use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
use agelab_vmm::{GuestPageMap, PAGE_SIZE};
use std::time::Instant;

const NAME: &str = SourceKind::SoftDirty.name();

/// Written pages from soft-dirty bits.
#[derive(Debug)]
pub struct SoftDirtySource {
    map: GuestPageMap,
    pagemap: Result<Pagemap, PagemapError>,
    probe: Result<SoftDirtyProbe, SoftDirtyError>,
}

impl SoftDirtySource {
    /// A source over `map`'s pages; probes soft-dirty support once, without clearing anything
    /// (see [`SoftDirtyProbe`]: building a source disturbs no VM of the process).
    pub fn new(map: GuestPageMap) -> Self {
        let pagemap = Pagemap::open_self();
        let probe = SoftDirtyProbe::new();
        SoftDirtySource {
            map,
            pagemap,
            probe,
        }
    }

    /// Clears soft-dirty so the first harvest reports only new writes.
    pub fn arm(&mut self) -> Result<(), HarvestError> {
        self.clear()
    }

    /// Clears soft-dirty (process-wide: every KVM mapping of the process is invalidated, see
    /// [`crate::kernel::soft_dirty`]) and checks on the probe page that the clear cleared.
    fn clear(&self) -> Result<(), HarvestError> {
        clear_soft_dirty().map_err(err)?;
        match &self.probe {
            Ok(p) => p.check_cleared().map_err(err),
            Err(reason) => Err(HarvestError::Unavailable {
                source_name: NAME.into(),
                reason: reason.to_string(),
            }),
        }
    }
}

fn err(e: SoftDirtyError) -> HarvestError {
    HarvestError::Other {
        source_name: NAME.into(),
        message: e.to_string(),
    }
}

impl AccessSource for SoftDirtySource {
    fn name(&self) -> &str {
        SourceKind::SoftDirty.name()
    }
    fn observes(&self) -> Observes {
        SourceKind::SoftDirty.observes()
    }
    fn granularity(&self) -> u64 {
        PAGE_SIZE
    }
    fn available(&self) -> Result<(), Unavailable> {
        self.pagemap
            .as_ref()
            .map_err(|e| Unavailable(e.to_string()))?;
        self.probe
            .as_ref()
            .map(|_| ())
            .map_err(|e| Unavailable(e.to_string()))
    }
    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        if let Err(reason) = self.available() {
            return Err(HarvestError::Unavailable {
                source_name: NAME.into(),
                reason: reason.0,
            });
        }
        let pm = self.pagemap.as_ref().expect("checked by available()");
        let t = Instant::now();
        let entries = pm.guest_entries(&self.map).map_err(|e| err(e.into()))?;
        self.clear()?;
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
