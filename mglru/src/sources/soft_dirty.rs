//! `soft-dirty`: written pages from pagemap's soft-dirty bit, cleared through `clear_refs`
//! ([`crate::kernel::soft_dirty`]) after every harvest.

use super::SourceKind;
use crate::kernel::pagemap::Pagemap;
use crate::kernel::soft_dirty::{
    clear_soft_dirty, probe_soft_dirty, written_pages, SoftDirtyError,
};
use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
use agelab_vmm::{GuestPageMap, PAGE_SIZE};
use std::time::Instant;

const NAME: &str = SourceKind::SoftDirty.name();

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
        self.pagemap.as_ref().map_err(|e| Unavailable(e.clone()))?;
        self.probe.clone().map_err(Unavailable)
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
