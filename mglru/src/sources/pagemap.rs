//! `pagemap`: residency as an access source ("accessed" = present in RAM right now). It reports
//! residency, not accesses, so it is listed but never promotes a page.

use super::SourceKind;
use crate::kernel::pagemap::{Pagemap, Residency};
use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
use agelab_vmm::{GuestPageMap, PAGE_SIZE};
use std::time::Instant;

const NAME: &str = SourceKind::Pagemap.name();

/// Residency as an access source: "accessed" = present in RAM right now.
#[derive(Debug)]
pub struct PagemapSource {
    map: GuestPageMap,
    pagemap: Option<Pagemap>,
    open_error: Option<String>,
    last: Option<Residency>,
}

impl PagemapSource {
    /// A source over the guest pages of `map`, mapped in this process.
    pub fn new(map: GuestPageMap) -> Self {
        match Pagemap::open_self() {
            Ok(p) => PagemapSource {
                map,
                pagemap: Some(p),
                open_error: None,
                last: None,
            },
            Err(e) => PagemapSource {
                map,
                pagemap: None,
                open_error: Some(e.to_string()),
                last: None,
            },
        }
    }

    /// Residency seen by the last harvest (present and swapped pages).
    pub fn last_residency(&self) -> Option<&Residency> {
        self.last.as_ref()
    }

    /// Number of swapped pages seen by the last harvest.
    pub fn last_swapped(&self) -> u64 {
        self.last.as_ref().map_or(0, |r| r.swapped.count())
    }
}

impl AccessSource for PagemapSource {
    fn name(&self) -> &str {
        SourceKind::Pagemap.name()
    }
    fn observes(&self) -> Observes {
        SourceKind::Pagemap.observes()
    }
    fn granularity(&self) -> u64 {
        PAGE_SIZE
    }
    fn available(&self) -> Result<(), Unavailable> {
        match &self.open_error {
            Some(e) => Err(Unavailable(e.clone())),
            None => Ok(()),
        }
    }
    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        let pm = self
            .pagemap
            .as_ref()
            .ok_or_else(|| HarvestError::Unavailable {
                source_name: NAME.into(),
                reason: self.open_error.clone().unwrap_or_default(),
            })?;
        let t = Instant::now();
        let entries = pm
            .guest_entries(&self.map)
            .map_err(|e| HarvestError::Other {
                source_name: NAME.into(),
                message: e.to_string(),
            })?;
        let res = Residency::from_entries(&entries);
        let cost = HarvestCost {
            ns: t.elapsed().as_nanos() as u64,
            bytes_read: entries.len() as u64 * 8,
            bytes_written: 0,
        };
        let accessed = res.present.clone();
        self.last = Some(res);
        Ok(Harvest {
            accessed,
            observed: None,
            cost,
        })
    }
}
