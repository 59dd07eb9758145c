//! `damon-paddr`: DAMON `paddr` over the guest memory's physical frames, as an access source.
//!
//! The PFNs come from `/proc/self/pagemap` when the source is armed (guest memory must be resident
//! by then: frames faulted in later are not monitored). Runs of PFNs closer than a gap are merged
//! into one DAMON region so the kernel gets a bounded number of target regions; frames in the gaps
//! belong to someone else and are never mapped back to guest pages.

use super::damon_vaddr::DamonSource;
use super::SourceKind;
use crate::kernel::damon::{DamonAdmin, DamonAttrs, DamonError, DamonTarget};
use crate::kernel::pagemap::Pagemap;
use crate::source::{AccessSource, Harvest, HarvestError, Observes, Unavailable};
use agelab_vmm::{GuestPageMap, PAGE_SIZE};

const NAME: &str = SourceKind::DamonPaddr.name();

/// Most target regions handed to DAMON (each is a sysfs directory written one file at a time).
pub const MAX_TARGET_REGIONS: usize = 256;

/// Merges sorted, unique PFNs into `[start, end)` PFN runs, widening the merge gap until there are
/// at most `max_runs`.
pub fn merge_pfn_runs(sorted_pfns: &[u64], max_runs: usize) -> Vec<(u64, u64)> {
    let mut gap = 1u64;
    loop {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &p in sorted_pfns {
            match runs.last_mut() {
                Some(r) if p < r.1 + gap => r.1 = r.1.max(p + 1),
                _ => runs.push((p, p + 1)),
            }
        }
        if runs.len() <= max_runs.max(1) {
            return runs;
        }
        gap = gap.saturating_mul(4);
    }
}

/// DAMON paddr over the guest's frames; the kdamond starts at the first harvest.
#[derive(Debug)]
pub struct DamonPaddrSource {
    map: GuestPageMap,
    attrs: DamonAttrs,
    inner: Option<DamonSource>,
}

impl DamonPaddrSource {
    /// A source over `map`'s pages (mapped in this process).
    pub fn new(map: GuestPageMap, attrs: DamonAttrs) -> Self {
        DamonPaddrSource {
            map,
            attrs,
            inner: None,
        }
    }

    /// The physical byte ranges to monitor now.
    pub fn ranges(&self) -> Result<Vec<(u64, u64)>, DamonError> {
        let pfns = Pagemap::open_self()?.guest_pfns(&self.map)?;
        let mut sorted: Vec<u64> = pfns.into_iter().flatten().collect();
        sorted.sort_unstable();
        sorted.dedup();
        Ok(merge_pfn_runs(&sorted, MAX_TARGET_REGIONS)
            .into_iter()
            .map(|(s, e)| (s * PAGE_SIZE, e * PAGE_SIZE))
            .collect())
    }

    /// Stops the kdamond now (dropping the source does too).
    pub fn stop(&mut self) {
        if let Some(mut k) = self.inner.take() {
            k.stop();
        }
    }

    fn arm(&mut self) -> Result<&mut DamonSource, HarvestError> {
        if self.inner.is_none() {
            let unavailable = |e: DamonError| HarvestError::Unavailable {
                source_name: NAME.into(),
                reason: e.to_string(),
            };
            let ranges = self.ranges().map_err(unavailable)?;
            if ranges.is_empty() {
                return Err(HarvestError::Other {
                    source_name: NAME.into(),
                    message: "no guest page is resident: nothing to monitor by physical address"
                        .into(),
                });
            }
            let mut s =
                DamonSource::new(self.map.clone(), DamonTarget::Paddr { ranges }, self.attrs);
            s.arm().map_err(unavailable)?;
            self.inner = Some(s);
        }
        Ok(self.inner.as_mut().expect("armed above"))
    }
}

impl AccessSource for DamonPaddrSource {
    fn name(&self) -> &str {
        SourceKind::DamonPaddr.name()
    }
    fn observes(&self) -> Observes {
        SourceKind::DamonPaddr.observes()
    }
    fn granularity(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(self.map.bytes() / self.attrs.min_nr_regions.max(1), |s| {
                s.granularity()
            })
            .max(PAGE_SIZE)
    }
    fn available(&self) -> Result<(), Unavailable> {
        if self.inner.is_some() {
            return Ok(());
        }
        // PFNs in pagemap are zero without CAP_SYS_ADMIN; DamonAdmin::check requires root too.
        DamonAdmin::new()
            .check()
            .map_err(|e| Unavailable(e.to_string()))
    }
    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        let s = self.arm()?;
        s.harvest().map_err(|e| match e {
            HarvestError::Unavailable { reason, .. } => HarvestError::Unavailable {
                source_name: NAME.into(),
                reason,
            },
            HarvestError::Other { message, .. } => HarvestError::Other {
                source_name: NAME.into(),
                message,
            },
            e => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_adjacent_and_widen_until_bounded() {
        assert_eq!(merge_pfn_runs(&[], 4), vec![]);
        assert_eq!(
            merge_pfn_runs(&[1, 2, 3, 10, 11, 20], 8),
            vec![(1, 4), (10, 12), (20, 21)]
        );
        // Three runs do not fit in two: the gap widens to 4, merging 1..4 with nothing, then 16.
        let r = merge_pfn_runs(&[1, 2, 3, 10, 11, 20], 2);
        assert!(r.len() <= 2, "{r:?}");
        assert_eq!(r.first().unwrap().0, 1);
        assert_eq!(r.last().unwrap().1, 21);
        let pfns: Vec<u64> = (0..10_000).map(|i| i * 3).collect();
        let r = merge_pfn_runs(&pfns, MAX_TARGET_REGIONS);
        assert!(r.len() <= MAX_TARGET_REGIONS);
        assert!(pfns
            .iter()
            .all(|p| r.iter().any(|&(s, e)| s <= *p && *p < e)));
    }
}
