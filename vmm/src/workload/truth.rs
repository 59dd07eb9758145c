//! Exact ground truth by deterministic replay of the guest's generators on the host.
//!
//! The guest reports how many accesses each vCPU made in an epoch; the host replays the same
//! generator code (`agelab_guest::pattern::Generator`) with the same seed and parameters for that
//! many accesses. Nothing is logged or tracked in the guest, so the method cannot disturb what it
//! measures.

use crate::pageset::PageSet;
use agelab_guest::pattern::{AliasEntry, Generator, PatternKind, PatternParams};
use agelab_guest::rng::mix_seed;
use std::sync::Arc;

/// What one vCPU did in one epoch.
#[derive(Clone, Debug)]
pub struct VcpuEpoch {
    /// vCPU index.
    pub vcpu: u64,
    /// Epoch number.
    pub epoch: u64,
    /// Run seed.
    pub seed: u64,
    /// Pattern parameters.
    pub params: PatternParams,
    /// Dense index of the region's first page.
    pub first_page: u64,
    /// Accesses made.
    pub ops: u64,
    /// Zipf alias table, if any.
    pub table: Option<Arc<Vec<AliasEntry>>>,
}

/// Pages read and written in one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochTruth {
    /// Pages loaded from.
    pub read: PageSet,
    /// Pages stored to.
    pub written: PageSet,
}

impl EpochTruth {
    /// Pages accessed either way.
    pub fn accessed(&self) -> PageSet {
        let mut a = self.read.clone();
        a.union_with(&self.written);
        a
    }
}

/// Replays `e` into `read`/`written` (capacity: all test pages).
pub fn replay_into(e: &VcpuEpoch, read: &mut PageSet, written: &mut PageSet) {
    let p = &e.params;
    let region = p.pages;
    // Closed form for pure sequential sweeps: the first min(ops, units) units, all subpages the
    // replay would reach. Only when every op is the same kind and units are 4 KiB.
    if p.kind == PatternKind::Sequential as u64
        && p.unit_pages <= 1
        && (p.write_p32 == 0 || p.write_p32 >= 1 << 32)
    {
        let n = e.ops.min(region);
        let target = if p.write_p32 == 0 { read } else { written };
        target.insert_range(e.first_page, n);
        return;
    }
    let table: &[AliasEntry] = e.table.as_deref().map_or(&[], |t| t.as_slice());
    let mut g = Generator::new(p, mix_seed(e.seed, e.vcpu, e.epoch), table);
    let (mut r_seen, mut w_seen) = (0u64, 0u64);
    let mut i = 0u64;
    while i < e.ops {
        let a = g.next_access();
        let page = e.first_page + a.page;
        if a.write {
            w_seen += u64::from(written.insert(page));
        } else {
            r_seen += u64::from(read.insert(page));
        }
        i += 1;
        // Once every page of the region is in the set(s) the op kinds can reach, nothing changes.
        if i.is_multiple_of(65_536) {
            let full_w = w_seen >= region || p.write_p32 == 0;
            let full_r = r_seen >= region || p.write_p32 >= 1 << 32;
            if full_w && full_r {
                break;
            }
        }
    }
}

/// Replays a whole epoch (all vCPUs, in parallel) over `pages` test pages.
pub fn replay_epoch(vcpus: &[VcpuEpoch], pages: u64) -> EpochTruth {
    let parts: Vec<(PageSet, PageSet)> = std::thread::scope(|s| {
        let handles: Vec<_> = vcpus
            .iter()
            .map(|e| {
                s.spawn(move || {
                    let (mut r, mut w) = (PageSet::new(pages), PageSet::new(pages));
                    replay_into(e, &mut r, &mut w);
                    (r, w)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("replay thread"))
            .collect()
    });
    let mut t = EpochTruth {
        read: PageSet::new(pages),
        written: PageSet::new(pages),
    };
    for (r, w) in parts {
        t.read.union_with(&r);
        t.written.union_with(&w);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use agelab_guest::pattern::ALWAYS;

    #[test]
    fn sequential_closed_form_matches_replay() {
        let params = PatternParams {
            kind: PatternKind::Sequential as u64,
            pages: 100,
            unit_pages: 1,
            write_p32: ALWAYS,
            fixed_word: u64::MAX,
            ..Default::default()
        };
        let e = VcpuEpoch {
            vcpu: 0,
            epoch: 1,
            seed: 1,
            params,
            first_page: 10,
            ops: 37,
            table: None,
        };
        let t = replay_epoch(&[e], 200);
        assert_eq!(t.written.count(), 37);
        assert!(t.written.contains(10) && t.written.contains(46) && !t.written.contains(47));
        assert!(t.read.is_empty());
    }
}
