//! lru_gen aging of a test's own memcg, as the kernel's `lib/lru_gen_util.c` does it.
//!
//! The test process moves itself into a fresh child memcg (named after the test, under the
//! memory controller's root) before any guest memory is faulted, so the memcg's generations hold
//! the guest's pages (plus a few pages of the test process). Aging writes
//! `+ memcg node max_seq 1 1` (can_swap, force_scan) for every node, then re-reads the listing.

use agelab_mglru::kernel::lru_gen::{LruGenCaps, LruGenControl, LruGenDebugfs, LruGenError};
use agelab_mglru::kernel::memcg::{GuestMemcg, MemcgError, MemoryHierarchy};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Errors of memcg aging.
#[derive(Debug, thiserror::Error)]
pub enum MemcgAgingError {
    /// lru_gen's files failed.
    #[error(transparent)]
    LruGen(#[from] LruGenError),
    /// The memcg could not be created or joined.
    #[error(transparent)]
    Memcg(#[from] MemcgError),
    /// The memcg is missing from `/sys/kernel/debug/lru_gen`.
    #[error("memcg {0} is not in /sys/kernel/debug/lru_gen (was it created in the memory controller's hierarchy?)")]
    NotListed(String),
}

/// Why lru_gen cannot drive aging here (the kernel's `lru_gen_usable()`), or its caps.
pub fn lru_gen_usable(ctl: &LruGenControl) -> Result<LruGenCaps, String> {
    let caps = ctl.caps().map_err(|e| e.to_string())?;
    let need = LruGenCaps::MAIN | LruGenCaps::MM_WALK;
    if !caps.has(need) {
        return Err(format!(
            "lru_gen: missing features, got {caps}, need 0x{need:x} (try 'echo 0x{need:x} > /sys/kernel/mm/lru_gen/enabled')"
        ));
    }
    ctl.check_debugfs().map_err(|e| e.to_string())?;
    Ok(caps)
}

/// Pages per generation of one memcg, summed over nodes (seq → pages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemcgGenerations {
    /// seq → anon + file pages.
    pub pages: BTreeMap<u64, u64>,
}

impl MemcgGenerations {
    /// Every page of every generation.
    pub fn total(&self) -> u64 {
        self.pages.values().sum()
    }

    /// Pages in generation `seq`.
    pub fn in_gen(&self, seq: u64) -> u64 {
        self.pages.get(&seq).copied().unwrap_or(0)
    }

    /// The youngest generation (max_seq).
    pub fn max_seq(&self) -> Option<u64> {
        self.pages.keys().next_back().copied()
    }

    /// Pages the last aging pass found young: a forced pass moves young pages into the then
    /// youngest generation and then opens a new, empty one, so they sit in `max_seq - 1`.
    pub fn found_young(&self) -> u64 {
        self.max_seq()
            .and_then(|m| m.checked_sub(1))
            .map_or(0, |s| self.in_gen(s))
    }

    /// The oldest generation holding more than `pages` pages (`lru_gen_find_generation`).
    pub fn find_generation(&self, pages: u64) -> Option<u64> {
        self.pages
            .iter()
            .find(|(_, &n)| n > pages)
            .map(|(&seq, _)| seq)
    }

    /// Pages in generations older than `seq`.
    pub fn older_than(&self, seq: u64) -> u64 {
        self.pages.range(..seq).map(|(_, n)| n).sum()
    }

    /// `seq:pages` pairs, oldest first, for diagnostics.
    pub fn describe(&self) -> String {
        self.pages
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A test's own memcg with lru_gen aging.
#[derive(Debug)]
pub struct MemcgAging {
    ctl: LruGenControl,
    memcg: GuestMemcg,
    id: u64,
}

impl MemcgAging {
    /// Creates memcg `name` under the memory controller root and moves this process into it.
    /// Call before guest memory is faulted: charges stay with the memcg that first faulted a page.
    pub fn create_and_join(name: &str) -> Result<Self, MemcgAgingError> {
        let ctl = LruGenControl::new();
        let h = MemoryHierarchy::detect()?;
        let memcg = GuestMemcg::create_under(h, "/", name)?;
        memcg.add_process(std::process::id() as i32)?;
        let listing = ctl.read(false)?;
        let id = memcg
            .lru_gen_id(&listing)
            .ok_or_else(|| MemcgAgingError::NotListed(memcg.path().to_string()))?;
        Ok(MemcgAging { ctl, memcg, id })
    }

    /// The memcg's path as lru_gen lists it.
    pub fn path(&self) -> &str {
        self.memcg.path()
    }

    /// The memcg's lru_gen id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The control files.
    pub fn control(&self) -> &LruGenControl {
        &self.ctl
    }

    /// Current generations of the memcg.
    pub fn read(&self) -> Result<MemcgGenerations, MemcgAgingError> {
        generations_of(&self.ctl.read(false)?, self.id)
            .ok_or_else(|| MemcgAgingError::NotListed(self.path().to_string()))
    }

    /// One forced aging pass on every node (`+ id node max_seq 1 1`); returns the generations
    /// afterwards and the time the aging commands took.
    pub fn age(&self) -> Result<(MemcgGenerations, Duration), MemcgAgingError> {
        let listing = self.ctl.read(false)?;
        let m = listing
            .memcg(self.id)
            .ok_or_else(|| MemcgAgingError::NotListed(self.path().to_string()))?;
        let t = Instant::now();
        for node in &m.nodes {
            if let Some(max) = node.max_seq() {
                match self.ctl.age(self.id, node.node, max, true, true) {
                    // A concurrent aging (kswapd, another pass) already made the generation.
                    Ok(()) | Err(LruGenError::AgingNotDone { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let took = t.elapsed();
        Ok((self.read()?, took))
    }
}

/// Generations of memcg `id` in `listing`, summed over nodes.
pub fn generations_of(listing: &LruGenDebugfs, id: u64) -> Option<MemcgGenerations> {
    let m = listing.memcg(id)?;
    let mut out = MemcgGenerations::default();
    for n in &m.nodes {
        for g in &n.generations {
            *out.pages.entry(g.seq).or_default() += g.pages();
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_oldest_generation_over_a_threshold() {
        let g = MemcgGenerations {
            pages: [(4, 10), (5, 950), (6, 40)].into_iter().collect(),
        };
        assert_eq!(g.total(), 1000);
        assert_eq!(g.find_generation(900), Some(5));
        assert_eq!(g.find_generation(5), Some(4));
        assert_eq!(g.find_generation(950), None);
        assert_eq!(g.max_seq(), Some(6));
        assert_eq!(g.found_young(), 950);
        assert_eq!(g.older_than(6), 960);
        assert_eq!(g.describe(), "4:10 5:950 6:40");
    }
}
