//! Tiers: pages that were reclaimed and came back, and the feedback rule that protects them.
//!
//! # The rule
//!
//! A page that refaulted `N` times is in tier `order_base_2(N + 1)`, capped at
//! `MAX_NR_TIERS - 1`: never refaulted → 0, once → 1, 2–3 times → 2, 4 or more → 3. The kernel
//! sorts pages by accesses through file descriptors the same way (log2 buckets); here the signal
//! is the one the engine owns — coming back after the engine chose to evict.
//!
//! For every tier the engine counts pages evicted from it, pages the eviction skipped because the
//! tier was protected, and refaults of pages evicted from it. These counts are averaged over time
//! (each time `min_seq` advances the running average becomes `(average + current) / 2` and the
//! current counts restart), which is the integral term of the kernel's PID-like controller; the
//! refault rate `refaulted / (evicted + protected)` of a tier is the proportional term.
//!
//! Tier 0 is the set point: pages with no history of being a bad victim. Starting at tier 1, a
//! tier stays evictable while its refault rate is at most 1.5× tier 0's, or while it has fewer
//! than `min_refaults` refaults (too few to judge). The first tier that fails the test is
//! protected together with every tier above it, because a page with more refaults is a worse bet
//! still. The kernel compares with gains 2:3 for the same reason — to leave a margin for
//! fluctuation — and adds `MIN_LRU_BATCH` to the set point's total so an idle tier 0 does not
//! protect everything; both are kept, as [`TierConfig`] fields.
//!
//! Protected pages found by the eviction move one generation up instead of being offered, and
//! count as "protected" for their tier: if protecting them was right, the tier's refault rate
//! falls and it becomes evictable again, closing the loop.

use agelab_vmm::PageSet;

/// Number of tiers (the kernel's `MAX_NR_TIERS`).
pub const MAX_NR_TIERS: usize = 4;

/// Tier of a page that refaulted `refaults` times: `order_base_2(refaults + 1)`, capped.
pub fn tier_of(refaults: u8) -> usize {
    let n = u32::from(refaults) + 1;
    // order_base_2(n) = ceil(log2(n)); n - 1 has the bit length of ceil(log2(n)) for n ≥ 1.
    let order = (u32::BITS - (n - 1).leading_zeros()) as usize;
    order.min(MAX_NR_TIERS - 1)
}

/// Parameters of the protection rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierConfig {
    /// A tier with fewer refaults than this is never protected (the kernel's `MIN_LRU_BATCH`, 64).
    pub min_refaults: u64,
    /// Gain on tier 0's refault rate (kernel: 2).
    pub baseline_gain: u64,
    /// Gain on the other tiers' refault rates (kernel: 3).
    pub tier_gain: u64,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            min_refaults: 64,
            baseline_gain: 2,
            tier_gain: 3,
        }
    }
}

/// Counts of one tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierCounts {
    /// Pages evicted (marked reclaimed) from this tier.
    pub evicted: u64,
    /// Pages the eviction skipped because this tier was protected.
    pub protected: u64,
    /// Pages evicted from this tier that came back.
    pub refaulted: u64,
}

/// The controller's reading of one tier: running average plus current counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlPos {
    /// Refaults.
    pub refaulted: u64,
    /// Evicted + protected.
    pub total: u64,
}

/// Per-page refault counts and the per-tier feedback state.
#[derive(Clone, Debug)]
pub struct Tiers {
    refaults: Vec<u8>,
    current: [TierCounts; MAX_NR_TIERS],
    avg_refaulted: [u64; MAX_NR_TIERS],
    avg_total: [u64; MAX_NR_TIERS],
    lifetime: [TierCounts; MAX_NR_TIERS],
    config: TierConfig,
}

impl Tiers {
    /// No page has refaulted yet.
    pub fn new(pages: u64, config: TierConfig) -> Self {
        let n = usize::try_from(pages).expect("guest page count exceeds the address space");
        Tiers {
            refaults: vec![0; n],
            current: [TierCounts::default(); MAX_NR_TIERS],
            avg_refaulted: [0; MAX_NR_TIERS],
            avg_total: [0; MAX_NR_TIERS],
            lifetime: [TierCounts::default(); MAX_NR_TIERS],
            config,
        }
    }

    /// The rule's parameters.
    pub fn config(&self) -> TierConfig {
        self.config
    }

    /// Times `page` refaulted (saturating at 255); 0 out of range.
    pub fn refaults(&self, page: u64) -> u8 {
        usize::try_from(page)
            .ok()
            .and_then(|i| self.refaults.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Tier of `page`.
    pub fn tier(&self, page: u64) -> usize {
        tier_of(self.refaults(page))
    }

    /// The per-page refault counts, for walkers.
    pub fn refault_counts(&self) -> &[u8] {
        &self.refaults
    }

    /// Records that `page` was evicted.
    pub fn on_evicted(&mut self, page: u64) {
        let t = self.tier(page);
        self.current[t].evicted += 1;
        self.lifetime[t].evicted += 1;
    }

    /// Records that the eviction skipped `page` because its tier is protected.
    pub fn on_protected(&mut self, page: u64) {
        let t = self.tier(page);
        self.current[t].protected += 1;
        self.lifetime[t].protected += 1;
    }

    /// Records that evicted `page` came back; it moves up a refault (and maybe a tier).
    pub fn on_refault(&mut self, page: u64) {
        let t = self.tier(page);
        self.current[t].refaulted += 1;
        self.lifetime[t].refaulted += 1;
        if let Some(r) = usize::try_from(page)
            .ok()
            .and_then(|i| self.refaults.get_mut(i))
        {
            *r = r.saturating_add(1);
        }
    }

    /// Pages of `set` in each tier (for reports).
    pub fn tier_histogram(&self, set: &PageSet) -> [u64; MAX_NR_TIERS] {
        let mut h = [0; MAX_NR_TIERS];
        for p in set.iter() {
            h[self.tier(p)] += 1;
        }
        h
    }

    /// Folds the current counts into the running averages (the kernel does this whenever
    /// `min_seq` advances), so old history fades by half per step.
    pub fn carryover(&mut self) {
        for t in 0..MAX_NR_TIERS {
            let c = std::mem::take(&mut self.current[t]);
            self.avg_refaulted[t] = (self.avg_refaulted[t] + c.refaulted) / 2;
            self.avg_total[t] = (self.avg_total[t] + c.evicted + c.protected) / 2;
        }
    }

    /// The controller's reading of tier `t`.
    pub fn ctrl_pos(&self, t: usize) -> CtrlPos {
        let c = self.current[t];
        CtrlPos {
            refaulted: self.avg_refaulted[t] + c.refaulted,
            total: self.avg_total[t] + c.evicted + c.protected,
        }
    }

    /// Counts since the engine started, per tier.
    pub fn lifetime(&self) -> [TierCounts; MAX_NR_TIERS] {
        self.lifetime
    }

    /// Whether tier `t` may be evicted, judged against tier 0 (see the module docs).
    fn evictable(&self, baseline: CtrlPos, t: usize) -> bool {
        let pv = self.ctrl_pos(t);
        let c = self.config;
        // Widened: products of counts and gains can exceed u64 on long runs.
        pv.refaulted < c.min_refaults
            || u128::from(pv.refaulted)
                * u128::from(baseline.total + c.min_refaults)
                * u128::from(c.baseline_gain)
                <= u128::from(baseline.refaulted + 1)
                    * u128::from(pv.total)
                    * u128::from(c.tier_gain)
    }

    /// The lowest protected tier: tiers `>=` it are protected. `MAX_NR_TIERS` when none is.
    pub fn first_protected(&self) -> usize {
        let baseline = self.ctrl_pos(0);
        (1..MAX_NR_TIERS)
            .find(|&t| !self.evictable(baseline, t))
            .unwrap_or(MAX_NR_TIERS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_buckets() {
        let tiers: Vec<usize> = (0..=8).map(tier_of).collect();
        assert_eq!(tiers, vec![0, 1, 2, 2, 3, 3, 3, 3, 3]);
        assert_eq!(tier_of(255), 3);
    }

    #[test]
    fn protects_tier_refaulting_more_than_baseline() {
        let cfg = TierConfig {
            min_refaults: 4,
            ..TierConfig::default()
        };
        let mut t = Tiers::new(1000, cfg);
        // Tier 0: 100 evicted, 10 refault (10%).
        for p in 0..100 {
            t.on_evicted(p);
        }
        for p in 0..10 {
            t.on_refault(p);
        }
        assert_eq!(t.first_protected(), MAX_NR_TIERS);
        // Pages 0..10 are now tier 1: evict them, 8 of 10 come back (80%).
        for p in 0..10 {
            t.on_evicted(p);
        }
        for p in 0..8 {
            t.on_refault(p);
        }
        assert_eq!(t.first_protected(), 1);
        // History fades: after enough carryovers without refaults, tier 1 is evictable again.
        for _ in 0..8 {
            t.carryover();
        }
        assert_eq!(t.first_protected(), MAX_NR_TIERS);
    }
}
