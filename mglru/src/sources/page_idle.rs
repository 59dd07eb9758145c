//! `page_idle`: idle page tracking as an access source: accessed = present and not idle since the
//! last mark. The bitmap itself is [`crate::kernel::page_idle`].
//!
//! Only a page mapped at the last mark could be marked idle. A page mapped since then reads "not
//! idle" whether the guest touched it or not: a shmem read fault maps up to 15 neighbours of the
//! faulting page as well (fault-around, `fault_around_bytes` 64 KiB by default), and in the lab
//! those neighbours were most of what page_idle reported (precision 0.28–0.88 on a read-only
//! guest; 1.0 with `fault_around_bytes` 4096). So such pages are reported as not observed this
//! pass, and judged from the next mark on.

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
    state: Result<GuestIdleFiles, PageIdleError>,
    last_thp_tails: u64,
    /// Pages that had a PFN at the last mark, so were marked idle then.
    marked: Option<PageSet>,
}

impl PageIdleSource {
    /// A source over `map`'s pages (mapped in this process).
    pub fn new(map: GuestPageMap) -> Self {
        PageIdleSource {
            map,
            state: GuestIdleFiles::open(),
            last_thp_tails: 0,
            marked: None,
        }
    }

    /// Marks every present guest page idle, so the first harvest reports only new accesses.
    pub fn arm(&mut self) -> Result<HarvestCost, HarvestError> {
        let files = self.files()?;
        let t = Instant::now();
        let pfns = files.pfns(&self.map).map_err(err)?;
        let io = files.bitmap.mark_idle(&pfns.sorted).map_err(err)?;
        self.marked = Some(mapped(&pfns.per_page, self.map.len()));
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
                reason: reason.to_string(),
            })
    }
}

/// Pages that have a PFN in `per_page`.
fn mapped(per_page: &[Option<u64>], pages: u64) -> PageSet {
    let mut s = PageSet::new(pages);
    for (i, p) in per_page.iter().enumerate() {
        if p.is_some() {
            s.insert(i as u64);
        }
    }
    s
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
            Err(reason) => Err(Unavailable(reason.to_string())),
        }
    }

    /// Reads the idle bits of the guest pages' PFNs (accessed = not idle), then marks them all
    /// idle again. Without a prior [`arm`](PageIdleSource::arm) every present page reads accessed;
    /// after one, a page mapped since the last mark is not observed (see the module docs).
    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        let files = self.files()?;
        let t = Instant::now();
        let pfns = files.pfns(&self.map).map_err(err)?;
        let (idle, rio) = files.bitmap.read_idle(&pfns.sorted).map_err(err)?;
        let now = mapped(&pfns.per_page, self.map.len());
        // Mapped now but not at the last mark: never marked, so their idle bits say nothing.
        let fresh = self.marked.as_ref().map(|m| {
            let mut f = now.clone();
            f.subtract(m);
            f
        });
        let mut accessed = PageSet::new(self.map.len());
        for (i, idle) in pfns.per_page_idle(&idle).enumerate() {
            let unmarked = fresh.as_ref().is_some_and(|f| f.contains(i as u64));
            if idle == Some(false) && !unmarked {
                accessed.insert(i as u64);
            }
        }
        let wio = files.bitmap.mark_idle(&pfns.sorted).map_err(err)?;
        self.marked = Some(now);
        self.last_thp_tails = pfns.thp_tails;
        let observed = fresh.filter(|f| !f.is_empty()).map(|f| {
            let mut o = PageSet::full(self.map.len());
            o.subtract(&f);
            o
        });
        Ok(Harvest {
            accessed,
            observed,
            cost: HarvestCost {
                ns: t.elapsed().as_nanos() as u64,
                bytes_read: pfns.bytes_read + rio.read,
                bytes_written: wio.written,
            },
        })
    }
}
