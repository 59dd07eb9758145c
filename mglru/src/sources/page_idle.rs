//! `page_idle`: idle page tracking as an access source: accessed = present and not idle since the
//! last mark. The bitmap itself is [`crate::kernel::page_idle`].

use super::SourceKind;
use crate::kernel::page_idle::{GuestIdleFiles, PageIdleError};
use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
use agelab_vmm::{GuestPageMap, PageSet, PAGE_SIZE};
use std::time::Instant;

const NAME: &str = SourceKind::PageIdle.name();

/// Idle page tracking as an access source: accessed = present and not idle since the last mark.
#[derive(Debug)]
pub struct PageIdleSource {
    map: GuestPageMap,
    state: Result<GuestIdleFiles, String>,
    armed: bool,
    last_thp_tails: u64,
}

impl PageIdleSource {
    /// A source over `map`'s pages (mapped in this process).
    pub fn new(map: GuestPageMap) -> Self {
        PageIdleSource {
            map,
            state: GuestIdleFiles::open().map_err(|e| e.to_string()),
            armed: false,
            last_thp_tails: 0,
        }
    }

    /// Marks every present guest page idle, so the first harvest reports only new accesses.
    pub fn arm(&mut self) -> Result<HarvestCost, HarvestError> {
        let files = self.files()?;
        let t = Instant::now();
        let pfns = files.pfns(&self.map).map_err(err)?;
        let io = files.bitmap.mark_idle(&pfns.sorted).map_err(err)?;
        self.armed = true;
        Ok(HarvestCost {
            ns: t.elapsed().as_nanos() as u64,
            bytes_read: pfns.bytes_read,
            bytes_written: io.written,
        })
    }

    /// Guest pages that were THP tail pages in the last harvest (their state is the head's).
    pub fn last_thp_tails(&self) -> u64 {
        self.last_thp_tails
    }

    fn files(&self) -> Result<&GuestIdleFiles, HarvestError> {
        self.state
            .as_ref()
            .map_err(|reason| HarvestError::Unavailable {
                source_name: NAME.into(),
                reason: reason.clone(),
            })
    }
}

fn err(e: PageIdleError) -> HarvestError {
    HarvestError::Other {
        source_name: NAME.into(),
        message: e.to_string(),
    }
}

impl AccessSource for PageIdleSource {
    fn name(&self) -> &str {
        SourceKind::PageIdle.name()
    }
    fn observes(&self) -> Observes {
        SourceKind::PageIdle.observes()
    }
    fn granularity(&self) -> u64 {
        PAGE_SIZE
    }
    fn available(&self) -> Result<(), Unavailable> {
        match &self.state {
            Ok(_) => Ok(()),
            Err(reason) => Err(Unavailable(reason.clone())),
        }
    }

    /// Reads the idle bits of the guest pages' PFNs (accessed = not idle), then marks them all
    /// idle again. Without a prior [`arm`](PageIdleSource::arm) every present page reads accessed.
    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        let files = self.files()?;
        let t = Instant::now();
        let pfns = files.pfns(&self.map).map_err(err)?;
        let (idle, rio) = files.bitmap.read_idle(&pfns.sorted).map_err(err)?;
        let mut accessed = PageSet::new(self.map.len());
        for (i, idle) in pfns.per_page_idle(&idle).enumerate() {
            if idle == Some(false) {
                accessed.insert(i as u64);
            }
        }
        let wio = files.bitmap.mark_idle(&pfns.sorted).map_err(err)?;
        self.armed = true;
        self.last_thp_tails = pfns.thp_tails;
        Ok(Harvest {
            accessed,
            observed: None,
            cost: HarvestCost {
                ns: t.elapsed().as_nanos() as u64,
                bytes_read: pfns.bytes_read + rio.read,
                bytes_written: wio.written,
            },
        })
    }
}
