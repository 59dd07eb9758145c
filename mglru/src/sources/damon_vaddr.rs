//! `damon-vaddr`: DAMON monitoring this process's address space, as an access source. Each harvest
//! asks the kdamond ([`crate::kernel::damon`]) to `update_schemes_tried_regions` and reads the
//! regions back; regions whose `nr_accesses > 0` map to accessed guest pages, so the granularity
//! is DAMON's region size, not a page. [`DamonSource::new`] also takes a physical-address target,
//! which [`damon_paddr`](super::damon_paddr) builds.

use crate::kernel::damon::{DamonAdmin, DamonAttrs, DamonError, DamonTarget, Kdamond, TriedRegion};
use crate::kernel::pagemap::Pagemap;
use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
use agelab_vmm::{GuestPageMap, PageSet, PAGE_SIZE};
use std::time::Instant;

/// Maps regions with `nr_accesses > 0` onto guest pages. `pfn_index` (for paddr) holds sorted
/// `(pfn, guest page)` pairs; `None` means the regions are host virtual addresses.
pub fn accessed_pages(
    map: &GuestPageMap,
    regions: &[TriedRegion],
    pfn_index: Option<&[(u64, u64)]>,
) -> PageSet {
    let mut set = PageSet::new(map.len());
    for r in regions.iter().filter(|r| r.nr_accesses > 0) {
        match pfn_index {
            None => {
                for g in map.ranges() {
                    let gend = g.hva + g.pages * PAGE_SIZE;
                    let (s, e) = (r.start.max(g.hva), r.end.min(gend));
                    if s < e {
                        let first = (s - g.hva) / PAGE_SIZE;
                        let last = (e - g.hva).div_ceil(PAGE_SIZE);
                        set.insert_range(g.first_page + first, last - first);
                    }
                }
            }
            Some(idx) => {
                let (ps, pe) = (r.start / PAGE_SIZE, r.end.div_ceil(PAGE_SIZE));
                let from = idx.partition_point(|&(pfn, _)| pfn < ps);
                for &(_, page) in idx[from..].iter().take_while(|&&(pfn, _)| pfn < pe) {
                    set.insert(page);
                }
            }
        }
    }
    set
}

/// DAMON as an access source over the guest pages.
#[derive(Debug)]
pub struct DamonSource {
    map: GuestPageMap,
    admin: DamonAdmin,
    target: DamonTarget,
    attrs: DamonAttrs,
    kdamond: Option<Kdamond>,
    last_granularity: u64,
}

impl DamonSource {
    /// Vaddr monitoring of this process, reporting for `map`'s pages.
    pub fn vaddr(map: GuestPageMap, attrs: DamonAttrs) -> Self {
        Self::new(
            map,
            DamonTarget::Vaddr {
                pid: std::process::id() as i32,
                ranges: Vec::new(),
            },
            attrs,
        )
    }

    /// Monitoring of `target` (paddr ranges should cover the guest's PFNs).
    pub fn new(map: GuestPageMap, target: DamonTarget, attrs: DamonAttrs) -> Self {
        let last_granularity = map.bytes() / attrs.min_nr_regions.max(1);
        DamonSource {
            map,
            admin: DamonAdmin::new(),
            target,
            attrs,
            kdamond: None,
            last_granularity: last_granularity.max(PAGE_SIZE),
        }
    }

    /// Uses another admin root (tests).
    pub fn with_admin(mut self, admin: DamonAdmin) -> Self {
        self.admin = admin;
        self
    }

    /// Starts the kdamond (the first harvest does it otherwise).
    pub fn arm(&mut self) -> Result<(), DamonError> {
        if self.kdamond.is_none() {
            self.kdamond = Some(self.admin.start(&self.target, self.attrs)?);
        }
        Ok(())
    }

    /// Changes sampling/aggregation intervals and region counts (applied to a running kdamond).
    pub fn set_attrs(&mut self, attrs: DamonAttrs) -> Result<(), DamonError> {
        self.attrs = attrs;
        match &self.kdamond {
            Some(k) => k.set_attrs(attrs),
            None => Ok(()),
        }
    }

    /// Stops the kdamond now.
    pub fn stop(&mut self) {
        if let Some(k) = self.kdamond.take() {
            k.stop();
        }
    }

    fn harvest_inner(&mut self) -> Result<Harvest, DamonError> {
        self.arm()?;
        let t = Instant::now();
        let k = self.kdamond.as_ref().expect("armed above");
        let (regions, mut bytes_read) = k.tried_regions()?;
        let pfn_index = match self.target {
            DamonTarget::Vaddr { .. } => None,
            DamonTarget::Paddr { .. } => {
                let pfns = Pagemap::open_self()?.guest_pfns(&self.map)?;
                bytes_read += self.map.len() * 8;
                let mut idx: Vec<(u64, u64)> = pfns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| Some(((*p)?, i as u64)))
                    .collect();
                idx.sort_unstable();
                Some(idx)
            }
        };
        let accessed = accessed_pages(&self.map, &regions, pfn_index.as_deref());
        if !regions.is_empty() {
            let total: u64 = regions.iter().map(|r| r.end - r.start).sum();
            self.last_granularity = (total / regions.len() as u64).max(PAGE_SIZE);
        }
        Ok(Harvest {
            accessed,
            observed: None,
            cost: HarvestCost {
                ns: t.elapsed().as_nanos() as u64,
                bytes_read,
                bytes_written: "update_schemes_tried_regions".len() as u64,
            },
        })
    }
}

impl AccessSource for DamonSource {
    fn name(&self) -> &str {
        "damon"
    }
    fn observes(&self) -> Observes {
        Observes::Both
    }
    /// Average region size of the last harvest (before that: guest bytes / min_nr_regions).
    fn granularity(&self) -> u64 {
        self.last_granularity
    }
    fn available(&self) -> Result<(), Unavailable> {
        if self.kdamond.is_some() {
            return Ok(());
        }
        self.admin.check().map_err(|e| Unavailable(e.to_string()))
    }
    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        self.harvest_inner().map_err(|e| match e {
            e @ (DamonError::ForeignRunning { .. }
            | DamonError::ForeignConfigured { .. }
            | DamonError::NotBuilt(_)
            | DamonError::NotRoot
            | DamonError::ModuleRunning { .. }
            | DamonError::StartBusy
            | DamonError::OpsUnavailable { .. }) => HarvestError::Unavailable {
                source_name: "damon".into(),
                reason: e.to_string(),
            },
            e => HarvestError::Other {
                source_name: "damon".into(),
                message: e.to_string(),
            },
        })
    }
}
