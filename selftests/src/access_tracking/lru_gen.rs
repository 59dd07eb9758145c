//! lru_gen aging of a test's own memcg, as the kernel's `lib/lru_gen_util.c` does it.
//!
//! A test creates a child memcg (named after the test, under the memory controller's root) and
//! joins it after its VM exists but before the guest first touches its memory
//! ([`MemcgAging::join`]), so the memcg holds guest memory and nothing of the VMM's own pages
//! (page tables, copied code, stacks): pages are charged to the memcg of the process that first
//! faults them. The process must be a member whenever the memcg is aged: MGLRU's aging walk
//! visits only the page tables of the mms on that memcg's list (a task's mm moves to its new
//! memcg's list when the task migrates), so aging a memcg from outside finds nothing young.
//! Aging writes `+ memcg node max_seq 1 1` (can_swap, force_scan) for every node, then re-reads
//! the listing.

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
    /// Moving this process back to its own cgroup failed.
    #[error("moving this process back to {path}: {source}")]
    Leave {
        /// The cgroup's procs file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
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
    /// This process's cgroup directory when the memcg was created ([`MemcgAging::leave`]).
    home: std::path::PathBuf,
}

impl MemcgAging {
    /// Creates memcg `name` under the memory controller root; this process stays where it is.
    pub fn create(name: &str) -> Result<Self, MemcgAgingError> {
        let ctl = LruGenControl::new();
        let h = MemoryHierarchy::detect()?;
        let home = h.mount.join(h.own_cgroup()?.trim_start_matches('/'));
        let memcg = GuestMemcg::create_under(h, "/", name)?;
        let listing = ctl.read(false)?;
        let id = memcg
            .lru_gen_id(&listing)
            .ok_or_else(|| MemcgAgingError::NotListed(memcg.path().to_string()))?;
        Ok(MemcgAging {
            ctl,
            memcg,
            id,
            home,
        })
    }

    /// Creates memcg `name` and moves this process into it for good (every page it faults from
    /// now on, the VMM's included, is charged there: the kernel selftest's layout).
    pub fn create_and_join(name: &str) -> Result<Self, MemcgAgingError> {
        let m = Self::create(name)?;
        m.join()?;
        Ok(m)
    }

    /// Moves this process in: memory first faulted from now on is charged to this memcg.
    pub fn join(&self) -> Result<(), MemcgAgingError> {
        Ok(self.memcg.add_process(std::process::id() as i32)?)
    }

    /// Moves this process back to the cgroup it was in when the memcg was created (pages already
    /// charged stay charged here).
    pub fn leave(&self) -> Result<(), MemcgAgingError> {
        let path = self.home.join("cgroup.procs");
        std::fs::write(&path, std::process::id().to_string())
            .map_err(|source| MemcgAgingError::Leave { path, source })
    }

    /// Runs `fault_in` with this process in the memcg, then moves it back: exactly the memory
    /// `fault_in` first touches (e.g. a guest populating a window) is charged here.
    pub fn charge<T>(&self, fault_in: impl FnOnce() -> T) -> Result<T, MemcgAgingError> {
        self.join()?;
        let out = fault_in();
        self.leave()?;
        Ok(out)
    }

    /// One forced aging pass with this process a member (joined first, left a member), so the
    /// walk visits the VMM's page tables; see the module doc.
    pub fn age_as_member(&self) -> Result<(MemcgGenerations, Duration), MemcgAgingError> {
        self.join()?;
        self.age()
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

/// Smallest recall and precision at which an aging pass counts as having seen the guest's
/// accesses (the kernel selftests' 90% rule).
pub const SEEN_MIN: f64 = 0.9;
/// Largest recall at which an aging pass counts as having seen none of them.
pub const UNSEEN_MAX: f64 = 0.1;

/// What an aging pass found young, against what the guest touched since the last pass.
///
/// Exact when each class of guest pages lives in a memcg of its own: the young pages of the
/// touched class's memcg are true positives, those of the other classes false positives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct YoungJudgement {
    /// Pages the guest touched.
    pub touched: u64,
    /// Touched pages found young.
    pub true_young: u64,
    /// Untouched pages found young.
    pub false_young: u64,
}

/// Whether an aging pass saw the guest-only accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Recall and precision ≥ [`SEEN_MIN`].
    Yes,
    /// Recall ≤ [`UNSEEN_MAX`]: the accesses stayed invisible.
    No,
    /// Anything in between: neither verdict holds.
    Partly,
}

impl Observed {
    /// `yes`, `no` or `partly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Observed::Yes => "yes",
            Observed::No => "no",
            Observed::Partly => "partly",
        }
    }
}

impl YoungJudgement {
    /// Touched pages found young ÷ touched pages.
    pub fn recall(&self) -> f64 {
        if self.touched == 0 {
            return 0.0;
        }
        self.true_young.min(self.touched) as f64 / self.touched as f64
    }

    /// Touched pages found young ÷ pages found young (1 when none was found young).
    pub fn precision(&self) -> f64 {
        let found = self.true_young + self.false_young;
        if found == 0 {
            return 1.0;
        }
        self.true_young as f64 / found as f64
    }

    /// The verdict by [`SEEN_MIN`] and [`UNSEEN_MAX`].
    pub fn observed(&self) -> Observed {
        if self.recall() >= SEEN_MIN && self.precision() >= SEEN_MIN {
            Observed::Yes
        } else if self.recall() <= UNSEEN_MAX {
            Observed::No
        } else {
            Observed::Partly
        }
    }

    /// `recall 98.2% precision 100.0% (young 8046 of 8192 touched, 0 untouched)`.
    pub fn describe(&self) -> String {
        format!(
            "recall {:.1}% precision {:.1}% (young {} of {} touched, {} untouched)",
            self.recall() * 100.0,
            self.precision() * 100.0,
            self.true_young,
            self.touched,
            self.false_young
        )
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
    fn judgements_by_the_ninety_percent_rule() {
        let j = |t, y, f| YoungJudgement {
            touched: t,
            true_young: y,
            false_young: f,
        };
        assert_eq!(j(1000, 1000, 0).observed(), Observed::Yes);
        assert_eq!(j(1000, 900, 100).observed(), Observed::Yes);
        // Everything young is not "seen": precision fails.
        assert_eq!(j(1000, 1000, 3000).observed(), Observed::Partly);
        assert_eq!(j(1000, 0, 0).observed(), Observed::No);
        assert_eq!(j(1000, 100, 0).observed(), Observed::No);
        assert_eq!(j(1000, 500, 0).observed(), Observed::Partly);
        assert_eq!(j(0, 0, 0).recall(), 0.0);
        assert_eq!(j(1000, 0, 0).precision(), 1.0);
        assert!(j(8192, 8046, 0)
            .describe()
            .starts_with("recall 98.2% precision 100.0%"));
    }

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
