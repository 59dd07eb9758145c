//! `EvictionCandidates`: pages of the oldest generations, in guest-page order, with addresses.
//!
//! The engine only chooses; reclaiming (madvise) is the caller's job, which then reports the pages
//! with [`Engine::mark_reclaimed`](super::Engine::mark_reclaimed) so a later access counts as a
//! refault. Like the kernel's eviction, a page from a protected tier is not offered: it moves one
//! generation up and counts as protected for its tier, feeding the controller in
//! [`tiers`](super::tiers). Consume a batch (`take(n).collect()`), reclaim it, then mark it.

use std::time::{Duration, Instant};

use agelab_vmm::{GuestPage, GuestPageMap};

use super::generations::{Generations, NOT_RESIDENT};
use super::tiers::{Tiers, MAX_NR_TIERS};

/// One page the engine proposes to evict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Index and addresses (GPA, HVA, memslot).
    pub page: GuestPage,
    /// Its effective generation.
    pub seq: u32,
    /// Its tier.
    pub tier: usize,
}

/// Which generations eviction may take from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvictionScope {
    /// How many of the oldest generations to walk (at least 1). The youngest generation is never
    /// walked, whatever this says.
    pub oldest_gens: usize,
}

impl Default for EvictionScope {
    fn default() -> Self {
        EvictionScope { oldest_gens: 1 }
    }
}

/// Iterator over eviction candidates; see the module docs.
#[derive(Debug)]
pub struct EvictionCandidates<'a> {
    gens: &'a mut Generations,
    tiers: &'a mut Tiers,
    map: &'a GuestPageMap,
    /// Highest effective generation offered (inclusive); `None` when nothing is eligible.
    last_seq: Option<u32>,
    first_protected: usize,
    next: u64,
    protected: [u64; MAX_NR_TIERS],
}

impl<'a> EvictionCandidates<'a> {
    pub(super) fn new(
        gens: &'a mut Generations,
        tiers: &'a mut Tiers,
        map: &'a GuestPageMap,
        scope: EvictionScope,
        min_ttl: Duration,
        now: Instant,
    ) -> Self {
        let min = gens.min_seq();
        let wanted = min.saturating_add(scope.oldest_gens.max(1) as u32 - 1);
        // Never the youngest generation: that is where accessed pages land.
        let mut last = wanted.min(gens.max_seq().saturating_sub(1));
        // Working-set protection: drop generations whose pages may have been used within min_ttl.
        while last >= min && gens.idle_at_least(last, now) < min_ttl {
            if last == 0 {
                break;
            }
            last -= 1;
        }
        let last_seq = (last >= min && gens.idle_at_least(last, now) >= min_ttl).then_some(last);
        let first_protected = tiers.first_protected();
        EvictionCandidates {
            gens,
            tiers,
            map,
            last_seq,
            first_protected,
            next: 0,
            protected: [0; MAX_NR_TIERS],
        }
    }

    /// Lowest protected tier for this walk (`MAX_NR_TIERS` when none is).
    pub fn first_protected_tier(&self) -> usize {
        self.first_protected
    }

    /// Pages skipped so far because their tier is protected, per tier.
    pub fn protected(&self) -> [u64; MAX_NR_TIERS] {
        self.protected
    }

    /// Highest generation offered, `None` when no generation is eligible.
    pub fn last_seq(&self) -> Option<u32> {
        self.last_seq
    }
}

impl Iterator for EvictionCandidates<'_> {
    type Item = Candidate;

    fn next(&mut self) -> Option<Candidate> {
        let last = self.last_seq?;
        let min = self.gens.min_seq();
        let total = self.gens.len();
        while self.next < total {
            let p = self.next;
            self.next += 1;
            let stored = self.gens.stored_seqs()[p as usize];
            if stored == NOT_RESIDENT {
                continue;
            }
            let seq = stored.max(min);
            if seq > last {
                continue;
            }
            let tier = self.tiers.tier(p);
            if tier >= self.first_protected {
                // Same page, same window: cannot fail.
                let _ = self.gens.move_page(p, seq + 1);
                self.tiers.on_protected(p);
                self.protected[tier] += 1;
                continue;
            }
            let page = self.map.page(p)?;
            return Some(Candidate { page, seq, tier });
        }
        None
    }
}
