//! Region sampling: watch a few pages per region of the oldest generations, not every page.
//!
//! Guided arming ([`super::GuidedArming`] in page mode) arms every page of the engine's oldest
//! generations, so every hot page costs one uffd fault per trip down the generation window. A
//! region sampler does what DAMON does with accessed bits: guest memory is cut into regions
//! (initially 2 MiB: [`RegionConfig::region_pages`]); each interval it arms `samples` pages drawn
//! at random from each region's pages in the oldest generations (its *members*); when a sample
//! faults, the harvest reports all the region's members accessed (they are promoted together),
//! and when none faults, all are taken as idle. A hot region then costs `samples` faults per trip,
//! whatever its size.
//!
//! Regions adapt as DAMON's do: a region whose samples disagree in one interval (some faulted,
//! some not) is split between a faulting and an idle sample; neighbours whose samples agree
//! (both idle, or both faulted) are merged up to [`RegionConfig::max_region_pages`]; the count
//! stays within [`RegionConfig::max_regions`]. The estimate is wrong where a region is not
//! uniform and its samples miss the difference (one hot page in an idle 2 MiB region is missed
//! with probability 1 − samples/512 per interval); the page mode stays available for exactness.

use agelab_guest::rng::SplitMix64;
use agelab_vmm::PageSet;

/// Pages in 2 MiB (the initial region size).
pub const PAGES_PER_2M: u64 = 512;

/// Idle regions merge only when neither had a faulting sample for this many intervals (longer
/// than a hot page's trip down the generation window in `agelab reclaim`, ~10 intervals).
pub const MERGE_QUIET_INTERVALS: u16 = 32;

/// How a [`RegionSampler`] cuts and samples guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionConfig {
    /// Initial region size, pages (512 = 2 MiB).
    pub region_pages: u64,
    /// Pages armed per region per interval (≥ 1).
    pub samples: u64,
    /// Regions are never split below this size, pages.
    pub min_region_pages: u64,
    /// Regions are never merged above this size, pages.
    pub max_region_pages: u64,
    /// At most this many regions (splits stop there).
    pub max_regions: usize,
    /// Whether a faulting sample promotes its region's members (off: only the sample is
    /// reported accessed, the rest idle — a negative control, not a mode to use).
    pub promote_region: bool,
}

impl Default for RegionConfig {
    /// 2 MiB regions, 2 samples each, split down to 64 KiB, merged up to 16 MiB, ≤ 1000 regions
    /// (DAMON's default maximum).
    fn default() -> Self {
        RegionConfig {
            region_pages: PAGES_PER_2M,
            samples: 2,
            min_region_pages: 16,
            max_region_pages: 8 * PAGES_PER_2M,
            max_regions: 1000,
            promote_region: true,
        }
    }
}

/// A contiguous range of guest page indices, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    start: u64,
    end: u64,
    /// Consecutive intervals in which the region was sampled and no sample faulted.
    idle: u8,
    /// Intervals since a sample of it last faulted (saturating; `u16::MAX`: never).
    since_hit: u16,
}

/// One region armed for an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ArmedRegion {
    start: u64,
    end: u64,
    samples: Vec<u64>,
}

/// What the harvest needs to turn sample faults into region accesses: the armed regions (sorted,
/// disjoint) and their members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionExpansion {
    ranges: Vec<(u64, u64)>,
    members: PageSet,
    promote: bool,
}

impl RegionExpansion {
    /// The pages the harvest observes: every member of an armed region.
    pub fn observed(&self) -> &PageSet {
        &self.members
    }

    /// The pages reported accessed when `faulted` samples faulted: every member of a region
    /// with a faulting sample (only the samples themselves without region promotion).
    pub fn expand(&self, faulted: &PageSet) -> PageSet {
        if !self.promote {
            return faulted.clone();
        }
        let mut out = PageSet::new(self.members.capacity());
        let mut last = None;
        for p in faulted.iter() {
            let i = self.ranges.partition_point(|&(_, end)| end <= p);
            if last == Some(i) {
                continue;
            }
            let Some(&(start, end)) = self.ranges.get(i).filter(|r| r.0 <= p) else {
                continue;
            };
            last = Some(i);
            for q in start..end {
                if self.members.contains(q) {
                    out.insert(q);
                }
            }
        }
        out
    }
}

/// Totals of a [`RegionSampler`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RegionStats {
    /// Regions now.
    pub regions: u64,
    /// Regions armed in the last interval.
    pub armed_regions: u64,
    /// Samples armed, summed over intervals.
    pub samples_armed: u64,
    /// Regions whose samples faulted, summed over intervals.
    pub regions_hit: u64,
    /// Splits so far.
    pub splits: u64,
    /// Merges so far.
    pub merges: u64,
    /// Regions left out by the admission limit, summed over intervals.
    pub regions_deferred: u64,
}

/// Regions over guest memory and the samples armed in them; see the module docs.
#[derive(Debug)]
pub struct RegionSampler {
    cfg: RegionConfig,
    regions: Vec<Region>,
    armed: Vec<ArmedRegion>,
    rng: SplitMix64,
    stats: RegionStats,
}

impl RegionSampler {
    /// `pages` guest pages cut into regions of `cfg.region_pages`.
    pub fn new(pages: u64, cfg: RegionConfig, seed: u64) -> Self {
        let size = cfg.region_pages.max(1);
        let regions = (0..pages.div_ceil(size))
            .map(|i| Region {
                start: i * size,
                end: ((i + 1) * size).min(pages),
                idle: 0,
                since_hit: u16::MAX,
            })
            .collect::<Vec<_>>();
        RegionSampler {
            cfg: RegionConfig {
                samples: cfg.samples.max(1),
                min_region_pages: cfg.min_region_pages.max(1),
                ..cfg
            },
            stats: RegionStats {
                regions: regions.len() as u64,
                ..RegionStats::default()
            },
            regions,
            armed: Vec::new(),
            rng: SplitMix64::new(seed),
        }
    }

    /// The configuration.
    pub fn config(&self) -> RegionConfig {
        self.cfg
    }

    /// Region boundaries now, `(start, end)` page indices in order.
    pub fn bounds(&self) -> Vec<(u64, u64)> {
        self.regions.iter().map(|r| (r.start, r.end)).collect()
    }

    /// Totals so far.
    pub fn stats(&self) -> RegionStats {
        self.stats
    }

    /// Learns from the last interval (`still`: the samples armed then and not touched), adapts
    /// the regions, and draws the next samples among `candidates` (the oldest generations'
    /// resident pages). Regions not armed and idle last interval may fault: at most
    /// `admit_samples` samples go to them (`None`: no limit). Returns the samples to arm and the
    /// expansion the next harvest applies.
    pub fn next(
        &mut self,
        still: &PageSet,
        candidates: &PageSet,
        admit_samples: Option<u64>,
    ) -> (PageSet, RegionExpansion) {
        let kept_idle = self.learn(still);
        self.adapt();
        let pages = candidates.capacity();
        let mut samples = PageSet::new(pages);
        let mut members = PageSet::new(pages);
        let mut armed = Vec::new();
        // Regions with members, those that were watched idle last interval first (they cost
        // nothing unless they changed), the others in random order until the limit.
        let mut due: Vec<(usize, Vec<u64>)> = Vec::new();
        for (i, r) in self.regions.iter().enumerate() {
            let m: Vec<u64> = (r.start..r.end)
                .filter(|&p| candidates.contains(p))
                .collect();
            if !m.is_empty() {
                due.push((i, m));
            }
        }
        let (mut quiet, mut fresh): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|(i, _)| kept_idle.contains(&self.regions[*i].start));
        for k in (1..fresh.len()).rev() {
            let j = self.rng.below(k as u64 + 1) as usize;
            fresh.swap(k, j);
        }
        let mut budget = admit_samples.unwrap_or(u64::MAX);
        let mut chosen = std::mem::take(&mut quiet);
        for (i, m) in fresh {
            let n = self.cfg.samples.min(m.len() as u64);
            if n > budget {
                self.stats.regions_deferred += 1;
                continue;
            }
            budget -= n;
            chosen.push((i, m));
        }
        chosen.sort_by_key(|(i, _)| *i);
        for (i, m) in chosen {
            let r = self.regions[i];
            let pick = super::uniform_sample(m.len() as u64, self.cfg.samples, &mut self.rng);
            let s: Vec<u64> = pick.iter().map(|k| m[k as usize]).collect();
            for &p in &s {
                samples.insert(p);
            }
            for &p in &m {
                members.insert(p);
            }
            self.stats.samples_armed += s.len() as u64;
            armed.push(ArmedRegion {
                start: r.start,
                end: r.end,
                samples: s,
            });
        }
        self.stats.armed_regions = armed.len() as u64;
        let ranges = armed.iter().map(|a| (a.start, a.end)).collect();
        self.armed = armed;
        (
            samples,
            RegionExpansion {
                ranges,
                members,
                promote: self.cfg.promote_region,
            },
        )
    }

    /// Members of the regions armed last interval whose samples stayed untouched (`still`) and
    /// that have now been idle through at least `intervals` consecutive sampled intervals.
    pub fn watched_idle(&self, still: &PageSet, members: &PageSet, intervals: u8) -> PageSet {
        let mut out = PageSet::new(members.capacity());
        for a in &self.armed {
            if !a.samples.iter().all(|&p| still.contains(p)) {
                continue;
            }
            let idle = self
                .regions
                .iter()
                .find(|r| r.start <= a.start && a.start < r.end)
                .map_or(0, |r| r.idle);
            if idle.saturating_add(1) < intervals {
                continue;
            }
            for p in a.start..a.end {
                if members.contains(p) {
                    out.insert(p);
                }
            }
        }
        out
    }

    /// Updates idle counts from the last interval's samples and splits regions whose samples
    /// disagreed. Returns the starts of regions armed last interval whose samples all stayed
    /// untouched.
    fn learn(&mut self, still: &PageSet) -> Vec<u64> {
        let mut kept_idle = Vec::new();
        for r in &mut self.regions {
            r.since_hit = r.since_hit.saturating_add(1);
        }
        let armed = std::mem::take(&mut self.armed);
        for a in &armed {
            let Some(i) = self.regions.iter().position(|r| r.start == a.start) else {
                continue;
            };
            let mut hit: Vec<(u64, bool)> =
                a.samples.iter().map(|&p| (p, !still.contains(p))).collect();
            let hits = hit.iter().filter(|h| h.1).count();
            if hits == 0 {
                self.regions[i].idle = self.regions[i].idle.saturating_add(1);
                kept_idle.push(a.start);
                continue;
            }
            self.stats.regions_hit += 1;
            self.regions[i].idle = 0;
            self.regions[i].since_hit = 0;
            if hits == hit.len() || self.regions.len() >= self.cfg.max_regions {
                continue;
            }
            // Disagreement: split between the first adjacent faulting/idle pair of samples.
            hit.sort_unstable();
            let Some(w) = hit.windows(2).find(|w| w[0].1 != w[1].1) else {
                continue;
            };
            let r = self.regions[i];
            let at = w[0].0 + (w[1].0 - w[0].0).div_ceil(2);
            if at - r.start < self.cfg.min_region_pages || r.end - at < self.cfg.min_region_pages {
                continue;
            }
            let prev_idle = |faulted: bool| if faulted { 0 } else { 1 };
            self.regions[i] = Region {
                start: r.start,
                end: at,
                idle: prev_idle(w[0].1),
                since_hit: 0,
            };
            self.regions.insert(
                i + 1,
                Region {
                    start: at,
                    end: r.end,
                    idle: prev_idle(w[1].1),
                    since_hit: 0,
                },
            );
            self.stats.splits += 1;
        }
        self.armed = armed;
        self.stats.regions = self.regions.len() as u64;
        kept_idle
    }

    /// Merges neighbours that were both sampled last interval with the same outcome (both
    /// faulted, or both idle and neither hit within [`MERGE_QUIET_INTERVALS`]), within the size
    /// limit. The quiet period keeps a region whose hot pages are away (promoted, drifting back
    /// down the generations) from merging with cold neighbours: back in the oldest generations
    /// they would be a few pages among thousands, which two samples miss — and evictions of hot
    /// pages follow.
    fn adapt(&mut self) {
        let sampled: Vec<u64> = self.armed.iter().map(|a| a.start).collect();
        let was_sampled = |r: &Region| sampled.binary_search(&r.start).is_ok();
        let mut out: Vec<Region> = Vec::with_capacity(self.regions.len());
        for r in std::mem::take(&mut self.regions) {
            if let Some(last) = out.last_mut() {
                let quiet = |x: &Region| x.since_hit >= MERGE_QUIET_INTERVALS;
                let agree = match (last.idle == 0, r.idle == 0) {
                    (true, true) => true,
                    (false, false) => quiet(last) && quiet(&r),
                    _ => false,
                };
                if agree
                    && was_sampled(last)
                    && was_sampled(&r)
                    && r.end - last.start <= self.cfg.max_region_pages
                {
                    last.end = r.end;
                    last.idle = last.idle.min(r.idle);
                    last.since_hit = last.since_hit.min(r.since_hit);
                    self.stats.merges += 1;
                    continue;
                }
            }
            out.push(r);
        }
        self.regions = out;
        self.stats.regions = self.regions.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(pages: u64) -> PageSet {
        PageSet::full(pages)
    }

    /// The samples of the regions starting in `hot` fault (are missing from `still`).
    fn still_after(samples: &PageSet, hot: impl Fn(u64) -> bool) -> PageSet {
        let mut s = samples.clone();
        for p in samples.iter().filter(|&p| hot(p)) {
            s.remove(p);
        }
        s
    }

    #[test]
    fn starts_with_2m_regions_and_arms_samples_per_region() {
        let mut r = RegionSampler::new(4096, RegionConfig::default(), 1);
        assert_eq!(r.bounds().len(), 8);
        let (s, e) = r.next(&PageSet::new(4096), &cands(4096), None);
        assert_eq!(s.count(), 16, "2 samples in each of 8 regions");
        assert_eq!(e.observed().count(), 4096);
        // One sample of region 3 faulted: region 3's members are reported, nothing else.
        let mut f = PageSet::new(4096);
        f.insert(s.iter().find(|&p| (1536..2048).contains(&p)).unwrap());
        let acc = e.expand(&f);
        assert_eq!(acc.iter().min(), Some(1536));
        assert_eq!(acc.count(), 512);
    }

    #[test]
    fn members_only_from_candidates_and_promotion_can_be_off() {
        let mut c = PageSet::new(1024);
        c.insert_range(100, 50);
        let cfg = RegionConfig {
            promote_region: false,
            ..RegionConfig::default()
        };
        let mut r = RegionSampler::new(1024, cfg, 3);
        let (s, e) = r.next(&PageSet::new(1024), &c, None);
        assert!(s.iter().all(|p| (100..150).contains(&p)));
        assert_eq!(e.observed(), &c);
        assert_eq!(e.expand(&s), s, "no promotion: only the samples");
    }

    #[test]
    fn disagreeing_samples_split_and_agreeing_neighbours_merge() {
        let pages = 2048;
        let cfg = RegionConfig {
            samples: 8,
            ..RegionConfig::default()
        };
        let mut r = RegionSampler::new(pages, cfg, 5);
        // Pages 0..256 hot, the rest idle: region 0 disagrees and splits near 256; regions 1..3
        // agree (idle) and merge.
        let hot = |p: u64| p < 256;
        let mut s = r.next(&PageSet::new(pages), &cands(pages), None).0;
        for _ in 0..8 {
            s = r.next(&still_after(&s, hot), &cands(pages), None).0;
        }
        let b = r.bounds();
        assert!(
            r.stats().splits >= 1 && r.stats().merges >= 1,
            "{:?}",
            r.stats()
        );
        // A boundary lands within 64 pages of 256, and nothing idle is cut finer than needed.
        assert!(
            b.iter().any(|&(_, e)| e.abs_diff(256) <= 64),
            "no boundary near 256: {b:?}"
        );
        assert!(b.len() <= 8, "{b:?}");
        assert!(b.windows(2).all(|w| w[0].1 == w[1].0) && b[0].0 == 0);
        assert_eq!(b.last().unwrap().1, pages);
    }

    #[test]
    fn recently_hit_regions_do_not_merge_with_idle_neighbours() {
        let pages = 1024;
        let mut r = RegionSampler::new(pages, RegionConfig::default(), 6);
        let mut s = r.next(&PageSet::new(pages), &cands(pages), None).0;
        // Region 0 faults once, then both stay idle: no merge within the quiet period.
        s = r.next(&still_after(&s, |p| p < 512), &cands(pages), None).0;
        for _ in 0..MERGE_QUIET_INTERVALS - 2 {
            s = r.next(&s, &cands(pages), None).0;
            assert_eq!(
                r.bounds().len(),
                2,
                "merged while region 0 was recently hit"
            );
        }
        for _ in 0..3 {
            s = r.next(&s, &cands(pages), None).0;
        }
        assert_eq!(r.bounds(), vec![(0, pages)], "quiet long enough: merged");
    }

    #[test]
    fn admission_limits_fresh_regions_not_idle_ones() {
        let pages = 8 * 512;
        let mut r = RegionSampler::new(pages, RegionConfig::default(), 9);
        let (s, _) = r.next(&PageSet::new(pages), &cands(pages), Some(4));
        assert_eq!(s.count(), 4, "2 fresh regions of 2 samples");
        assert_eq!(r.stats().regions_deferred, 6);
        // The two stay idle: re-armed without counting against the limit, plus two fresh ones.
        let (s2, _) = r.next(&s, &cands(pages), Some(4));
        assert!(s2.count() >= 8, "{}", s2.count());
    }

    #[test]
    fn watched_idle_needs_consecutive_idle_intervals() {
        let pages = 1024;
        let cfg = RegionConfig {
            max_region_pages: 512,
            ..RegionConfig::default()
        };
        let mut r = RegionSampler::new(pages, cfg, 2);
        let (mut s, mut e) = r.next(&PageSet::new(pages), &cands(pages), None);
        assert!(r.watched_idle(&s, e.observed(), 2).is_empty());
        for _ in 0..2 {
            (s, e) = r.next(&s, &cands(pages), None);
        }
        assert_eq!(r.watched_idle(&s, e.observed(), 2).count(), pages);
        // A fault in region 0: only region 1 stays watched idle.
        let still = still_after(&s, |p| p < 512);
        assert_eq!(r.watched_idle(&still, e.observed(), 2).count(), 512);
    }

    #[test]
    fn region_count_stays_bounded() {
        let pages = 64 * 512;
        let cfg = RegionConfig {
            samples: 4,
            max_regions: 80,
            max_region_pages: 512,
            ..RegionConfig::default()
        };
        let mut r = RegionSampler::new(pages, cfg, 11);
        let mut rng = SplitMix64::new(4);
        let mut s = r.next(&PageSet::new(pages), &cands(pages), None).0;
        for _ in 0..50 {
            // Random hits everywhere: every region disagrees now and then.
            let mut still = s.clone();
            for p in s.iter() {
                if rng.below(2) == 0 {
                    still.remove(p);
                }
            }
            s = r.next(&still, &cands(pages), None).0;
            assert!(r.bounds().len() <= 80);
        }
    }
}
