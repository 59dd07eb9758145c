//! Reclaim policies: who picks the victims.
//!
//! - `none`: never reclaims (the baseline for throughput and memory).
//! - `random`: uniformly random resident pages.
//! - `fifo`: pages in the order they entered memory (fill order, refaulted pages rejoin at the
//!   tail) — what a reclaimer without any access information does best.
//! - `engine-dirty`: the userspace MGLRU fed by the KVM dirty log only (sees writes, not reads).
//! - `engine-all`: the engine fed by every access source available on the host; uffd-minor arms
//!   only the engine's oldest generations after each pass (guided arming) and eviction takes
//!   only pages it watched through the last interval.
//! - `engine-regions`: `engine-all` with uffd-minor sampling regions of the oldest generations
//!   (a few pages per region, a faulting sample promotes its region; DAMON-style split/merge)
//!   and its faults held to the read budget (`--read-budget`, % of guest time).
//! - `oracle`: the engine fed by the workload's exact ground truth (upper bound for the engine).
//! - `lru-gen`: the kernel's own MGLRU: the VM runs in a memcg, each interval ages it with the
//!   debugfs `+` command and evicts the controller's step with `-` (lab kernels).
//! - `memcg-limit`: lowers the memcg's v1 `memory.limit_in_bytes` / v2 `memory.max` by the step;
//!   raises it again while the SLO is violated. A lasting hard limit: where the kernel cannot
//!   reclaim fast enough at it, it OOM-kills the VMM (this process); see
//!   `docs/results/2026-11-29-memcg-limit.md`.
//! - `memcg-reclaim`: writes the step to v2 `memory.reclaim` (lab kernels).
//! - `damon`: a DAMOS `pageout` scheme on the VMM process's virtual address space (its own
//!   kdamond; refused where DAMON is unavailable or another kdamond runs): regions idle for the
//!   age gate, a size quota equal to the controller's cap and a 10 ms/s time quota, auto-tuned
//!   toward a memory PSI target where the kernel has quota goals (DAMON_RECLAIM's shape).
//! - `psi`: a Senpai-like loop on the VM's memcg: while memory pressure (PSI some) during the
//!   interval stays under the target it probes (v2 `memory.reclaim`; v1 lowers
//!   `memory.limit_in_bytes` to usage − step while the guest is paused and lifts it again) by the
//!   cap scaled by `1 − pressure/target`; above the target it backs off (reclaims nothing).
//!
//! The first six choose pages themselves and apply a [`ReclaimAction`](super::ReclaimAction);
//! the kernel ones let the kernel choose, and the refault detector finds out which pages went.

use agelab_guest::rng::SplitMix64;
use agelab_vmm::PageSet;
use std::collections::VecDeque;
use std::str::FromStr;

/// A reclaim policy by name; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PolicyKind {
    /// No reclaim.
    None,
    /// Random resident pages.
    Random,
    /// First in, first out.
    Fifo,
    /// Engine with the KVM dirty log.
    EngineDirty,
    /// Engine with every available source.
    EngineAll,
    /// Engine with every available source, uffd-minor sampling regions.
    EngineRegions,
    /// Engine with the ground truth.
    Oracle,
    /// The kernel's lru_gen eviction on the VM's memcg.
    LruGen,
    /// A memcg hard limit.
    MemcgLimit,
    /// cgroup v2 `memory.reclaim`.
    MemcgReclaim,
    /// A DAMOS `pageout` scheme with quotas.
    Damon,
    /// A Senpai-like pressure-driven loop on the memcg.
    Psi,
}

/// Every policy, in table order.
pub const ALL_POLICIES: &[PolicyKind] = &[
    PolicyKind::None,
    PolicyKind::Random,
    PolicyKind::Fifo,
    PolicyKind::EngineDirty,
    PolicyKind::EngineAll,
    PolicyKind::EngineRegions,
    PolicyKind::Oracle,
    PolicyKind::LruGen,
    PolicyKind::MemcgLimit,
    PolicyKind::MemcgReclaim,
    PolicyKind::Damon,
    PolicyKind::Psi,
];

/// The benchmark's default set (runs on any KVM host with zram).
pub const BENCH_POLICIES: &[PolicyKind] = &[
    PolicyKind::None,
    PolicyKind::Random,
    PolicyKind::Fifo,
    PolicyKind::EngineDirty,
    PolicyKind::EngineAll,
    PolicyKind::Oracle,
];

impl PolicyKind {
    /// Name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::None => "none",
            PolicyKind::Random => "random",
            PolicyKind::Fifo => "fifo",
            PolicyKind::EngineDirty => "engine-dirty",
            PolicyKind::EngineAll => "engine-all",
            PolicyKind::EngineRegions => "engine-regions",
            PolicyKind::Oracle => "oracle",
            PolicyKind::LruGen => "lru-gen",
            PolicyKind::MemcgLimit => "memcg-limit",
            PolicyKind::MemcgReclaim => "memcg-reclaim",
            PolicyKind::Damon => "damon",
            PolicyKind::Psi => "psi",
        }
    }

    /// Whether the VM must run in its own memcg.
    pub fn needs_memcg(self) -> bool {
        matches!(
            self,
            PolicyKind::LruGen
                | PolicyKind::MemcgLimit
                | PolicyKind::MemcgReclaim
                | PolicyKind::Psi
        )
    }

    /// Whether the userspace engine chooses the victims.
    pub fn uses_engine(self) -> bool {
        matches!(
            self,
            PolicyKind::EngineDirty
                | PolicyKind::EngineAll
                | PolicyKind::EngineRegions
                | PolicyKind::Oracle
        )
    }

    /// Whether the engine is fed by every available source (uffd-minor arming guided).
    pub fn uses_all_sources(self) -> bool {
        matches!(self, PolicyKind::EngineAll | PolicyKind::EngineRegions)
    }

    /// Whether it reclaims at all.
    pub fn reclaims(self) -> bool {
        self != PolicyKind::None
    }
}

/// An unknown policy name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown reclaim policy '{0}' (known: none, random, fifo, engine-dirty, engine-all, engine-regions, oracle, lru-gen, memcg-limit, memcg-reclaim, damon, psi)")]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, UnknownPolicy> {
        ALL_POLICIES
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .or(match s {
                "engine" | "engine-dirty-log" => Some(PolicyKind::EngineDirty),
                "engine-every" => Some(PolicyKind::EngineAll),
                "engine-region" => Some(PolicyKind::EngineRegions),
                "kernel" => Some(PolicyKind::LruGen),
                "senpai" => Some(PolicyKind::Psi),
                "damos" | "damon-reclaim" => Some(PolicyKind::Damon),
                _ => None,
            })
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses `none,random,...` or `all` / `bench`; a policy listed twice is a second arm (`none,none`
/// = an A/A pair).
pub fn parse_policies(s: &str) -> Result<Vec<PolicyKind>, UnknownPolicy> {
    match s {
        "all" => Ok(ALL_POLICIES.to_vec()),
        "bench" => Ok(BENCH_POLICIES.to_vec()),
        _ => s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::parse)
            .collect(),
    }
}

/// Random victims: a partial Fisher–Yates shuffle of the resident pages.
#[derive(Debug)]
pub struct RandomVictims {
    rng: SplitMix64,
}

impl RandomVictims {
    /// Seeded, so a run is reproducible.
    pub fn new(seed: u64) -> Self {
        RandomVictims {
            rng: SplitMix64::new(seed),
        }
    }

    /// Up to `n` distinct pages of `resident`.
    pub fn select(&mut self, n: usize, resident: &PageSet) -> Vec<u64> {
        let mut pool: Vec<u64> = resident.iter().collect();
        let n = n.min(pool.len());
        for i in 0..n {
            let j = i + (self.rng.next_u64() % (pool.len() - i) as u64) as usize;
            pool.swap(i, j);
        }
        pool.truncate(n);
        pool
    }
}

/// First-in-first-out victims.
#[derive(Debug)]
pub struct FifoVictims {
    queue: VecDeque<u64>,
}

impl FifoVictims {
    /// Pages entered memory in index order (the integrity fill writes them in that order).
    pub fn new(pages: u64) -> Self {
        FifoVictims {
            queue: (0..pages).collect(),
        }
    }

    /// Pages that came back rejoin at the tail.
    pub fn refaulted(&mut self, pages: &PageSet) {
        self.queue.extend(pages.iter());
    }

    /// Up to `n` pages from the head that are resident now (stale entries are dropped).
    pub fn select(&mut self, n: usize, resident: &PageSet) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        let mut seen = PageSet::new(resident.capacity());
        while out.len() < n {
            let Some(p) = self.queue.pop_front() else {
                break;
            };
            if resident.contains(p) && seen.insert(p) {
                out.push(p);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &p in ALL_POLICIES {
            assert_eq!(p.name().parse::<PolicyKind>().unwrap(), p);
        }
        assert!("bogus".parse::<PolicyKind>().is_err());
        assert_eq!(parse_policies("bench").unwrap().len(), 6);
    }

    #[test]
    fn fifo_takes_oldest_resident_and_requeues_refaults() {
        let mut f = FifoVictims::new(8);
        let mut res = PageSet::full(8);
        res.remove(1);
        assert_eq!(f.select(2, &res), vec![0, 2]);
        let mut back = PageSet::new(8);
        back.insert(0);
        f.refaulted(&back);
        assert_eq!(f.select(10, &PageSet::full(8)), vec![3, 4, 5, 6, 7, 0]);
    }

    #[test]
    fn random_is_distinct_and_resident() {
        let mut r = RandomVictims::new(7);
        let mut res = PageSet::new(100);
        res.insert_range(10, 20);
        let v = r.select(15, &res);
        assert_eq!(v.len(), 15);
        let mut s = v.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 15);
        assert!(v.iter().all(|&p| (10..30).contains(&p)));
    }
}
