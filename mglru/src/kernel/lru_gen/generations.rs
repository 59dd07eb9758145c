//! Pages per generation of one memcg, summed over its nodes: what an aging pass left where.

use super::LruGenDebugfs;
use std::collections::BTreeMap;

/// Pages per generation of one memcg, summed over nodes (seq → pages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemcgGenerations {
    /// seq → anon + file pages.
    pub pages: BTreeMap<u64, u64>,
}

impl MemcgGenerations {
    /// Generations of memcg `id` in `listing`, summed over nodes (`None`: not listed).
    pub fn from_listing(listing: &LruGenDebugfs, id: u64) -> Option<Self> {
        let m = listing.memcg(id)?;
        let mut out = MemcgGenerations::default();
        for n in &m.nodes {
            for g in &n.generations {
                *out.pages.entry(g.seq).or_default() += g.pages();
            }
        }
        Some(out)
    }

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

    #[test]
    fn sums_a_memcg_over_its_nodes() {
        let listing = LruGenDebugfs::parse(
            "memcg     7 /t\n node     0\n          4        100         10          2\n          5          0          3          0\n node     1\n          4        120          5          0\n          5          0          0          0\n",
        )
        .unwrap();
        let g = MemcgGenerations::from_listing(&listing, 7).unwrap();
        assert_eq!(g.describe(), "4:17 5:3");
        assert_eq!(MemcgGenerations::from_listing(&listing, 8), None);
    }
}
