//! Engine-guided arming: watch only the pages whose age is in question.
//!
//! Arming every page each interval makes every hot page fault every interval (tens of µs each
//! on a nested host), which costs a read-heavy guest most of its throughput. The kernel does not
//! look at young pages either: its aging and eviction check the accessed bits of old pages.
//! [`GuidedArming`] does the same with userfaultfd: after each aging pass it arms the resident
//! pages of the engine's `gens` oldest generations (the eviction candidates), plus optionally a
//! uniform sample of the younger ones for estimates. A page not armed keeps its generation, so
//! it drifts older as generations open; once it reaches the armed generations its next touch
//! faults and promotes it again. A hot page then faults once per trip through the window rather
//! than once per interval, and cold pages — armed, never touched — cost nothing.
//!
//! What the harvests report is exact for the armed pages (observed set = armed set), so the
//! engine judges the source only there, and [`AccessEstimate`](super::AccessEstimate) on a
//! younger generation extrapolates from its sampled part.
//!
//! With [`GuidedArming::with_regions`] the oldest generations are sampled by region instead
//! ([`super::region`]): a few pages per region, whose faults stand for the region; with
//! [`GuidedArming::with_read_budget`] admission follows a target guest slowdown
//! ([`super::budget`]).

use super::budget::{next_admit_limit, stalled, ReadBudget};
use super::region::{RegionConfig, RegionSampler, RegionStats};
use super::{uniform_sample, ArmOutcome, UffdArmer, UffdFaultCount, UffdMinorError};
use crate::engine::Generations;
use agelab_guest::rng::SplitMix64;
use agelab_vmm::workload::EpochResult;
use agelab_vmm::PageSet;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Which pages uffd-minor arms each interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArmPolicy {
    /// Every page, every interval: exact, but every hot page faults every interval.
    All,
    /// A uniform sample sized to this many guest faults per second.
    Sample {
        /// Faults per second.
        budget_faults_per_sec: u64,
    },
    /// The resident pages of the engine's `gens` oldest generations (never the youngest), plus
    /// `younger_sample` pages drawn uniformly from the younger resident ones.
    Oldest {
        /// Oldest generations armed (≥ 1).
        gens: usize,
        /// Younger pages sampled each interval (0: none).
        younger_sample: u64,
    },
    /// The 2 oldest generations sampled by region ([`RegionSampler`]): `samples` pages per
    /// region (2 MiB at first), a faulting sample promotes its region; with a read budget, the
    /// faults of each interval are held to that guest slowdown.
    Regions {
        /// Pages armed per region per interval.
        samples: u64,
        /// Target guest slowdown from faults, hundredths of a percent (200 = 2 %); `None`: no
        /// budget.
        budget_centi_pct: Option<u32>,
    },
}

impl Default for ArmPolicy {
    /// `oldest:2`.
    fn default() -> Self {
        ArmPolicy::Oldest {
            gens: 2,
            younger_sample: 0,
        }
    }
}

impl ArmPolicy {
    /// Whether the engine's generations choose the armed pages (a [`GuidedArming`] is needed).
    pub fn is_guided(&self) -> bool {
        matches!(self, ArmPolicy::Oldest { .. } | ArmPolicy::Regions { .. })
    }

    /// The fault budget of self-arming policies (`None`: every page, or guided).
    pub fn budget(&self) -> Option<u64> {
        match self {
            ArmPolicy::Sample {
                budget_faults_per_sec,
            } => Some(*budget_faults_per_sec),
            _ => None,
        }
    }
}

/// An `--uffd-arm` value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("uffd arming '{0}': expected all, sample:BUDGET (faults/s), oldest[:N], oldest:N+S (N oldest generations, S younger pages sampled) or regions[:S[:P%]] (S samples per region, read budget P % of guest time)")]
pub struct ArmPolicyError(pub String);

impl FromStr for ArmPolicy {
    type Err = ArmPolicyError;

    fn from_str(s: &str) -> Result<Self, ArmPolicyError> {
        let bad = || ArmPolicyError(s.to_string());
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        match (kind, arg) {
            ("all", None) => Ok(ArmPolicy::All),
            ("sample", Some(b)) => {
                let budget_faults_per_sec = b.parse().ok().filter(|&b| b > 0).ok_or_else(bad)?;
                Ok(ArmPolicy::Sample {
                    budget_faults_per_sec,
                })
            }
            ("regions", None) => Ok(ArmPolicy::Regions {
                samples: RegionConfig::default().samples,
                budget_centi_pct: None,
            }),
            ("regions", Some(a)) => {
                let (n, b) = match a.split_once(':') {
                    Some((n, b)) => (n, Some(b)),
                    None => (a, None),
                };
                let samples = n.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
                let budget_centi_pct = match b {
                    None => None,
                    Some(b) => {
                        let pct: f64 = b.trim_end_matches('%').parse().map_err(|_| bad())?;
                        Some(percent_to_centi(pct).ok_or_else(bad)?)
                    }
                };
                Ok(ArmPolicy::Regions {
                    samples,
                    budget_centi_pct,
                })
            }
            ("oldest", None) => Ok(ArmPolicy::default()),
            ("oldest", Some(a)) => {
                let (g, y) = a.split_once('+').unwrap_or((a, "0"));
                let gens = g.parse().ok().filter(|&g| g > 0).ok_or_else(bad)?;
                let younger_sample = y.parse().map_err(|_| bad())?;
                Ok(ArmPolicy::Oldest {
                    gens,
                    younger_sample,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for ArmPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArmPolicy::All => f.write_str("all"),
            ArmPolicy::Sample {
                budget_faults_per_sec,
            } => write!(f, "sample:{budget_faults_per_sec}"),
            ArmPolicy::Oldest {
                gens,
                younger_sample: 0,
            } => write!(f, "oldest:{gens}"),
            ArmPolicy::Oldest {
                gens,
                younger_sample,
            } => write!(f, "oldest:{gens}+{younger_sample}"),
            ArmPolicy::Regions {
                samples,
                budget_centi_pct: None,
            } => write!(f, "regions:{samples}"),
            ArmPolicy::Regions {
                samples,
                budget_centi_pct: Some(b),
            } => write!(f, "regions:{samples}:{}%", f64::from(*b) / 100.0),
        }
    }
}

/// A slowdown in percent as hundredths of a percent (`None` unless 0 < pct ≤ 100).
pub fn percent_to_centi(pct: f64) -> Option<u32> {
    (pct > 0.0 && pct <= 100.0).then(|| (pct * 100.0).round() as u32)
}

/// Totals of a [`GuidedArming`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GuidedStats {
    /// Armings.
    pub arms: u64,
    /// Pages armed, summed over armings.
    pub pages_armed: u64,
    /// Of them, younger pages sampled.
    pub younger_sampled: u64,
    /// Pages whose entries were dropped, summed (the rest stayed armed from before).
    pub pages_zapped: u64,
    /// Pages mapped back in when they left the armed set untouched.
    pub pages_released: u64,
    /// Wall time of the armings, ns.
    pub ns: u64,
    /// Guest faults on the source so far (0 when not attached).
    pub faults: u64,
    /// Region sampling's totals (zero in page mode).
    pub regions: RegionStats,
    /// The read budget's per-fault cost estimate, ns (0 without a budget).
    pub fault_cost_ns: u64,
    /// The read budget of the last interval, faults (0 without a budget).
    pub budget_faults: u64,
    /// The admission limit of the last arming (pages, or samples in region mode; 0: none).
    pub admit_limit: u64,
}

/// Arms a uffd-minor source from an engine's generations after each pass; see the module docs.
#[derive(Debug)]
pub struct GuidedArming {
    armer: UffdArmer,
    faults: Option<UffdFaultCount>,
    /// Per page: consecutive intervals it was armed and not touched (saturating).
    idle_intervals: Vec<u8>,
    /// At most this many pages newly armed per pass (`None`: no limit).
    admit_limit: Option<u64>,
    /// With a read budget: the admission limit's ceiling.
    admit_max: u64,
    /// Region sampling instead of every page of the oldest generations.
    regions: Option<RegionSampler>,
    /// The members observed by the last region arming.
    members: PageSet,
    /// Faults held to a target guest slowdown.
    budget: Option<ReadBudget>,
    /// The last epoch (wall, vCPUs, blocked time), from [`observe_epoch`](Self::observe_epoch).
    epoch: Option<(Duration, usize, Duration)>,
    faults_at_arm: u64,
    last_arm: Instant,
    gens: usize,
    younger_sample: u64,
    rng: SplitMix64,
    stats: GuidedStats,
}

impl GuidedArming {
    /// Arms through `armer` the pages of the `gens` oldest generations plus `younger_sample`
    /// younger ones drawn with `seed`.
    pub fn new(armer: UffdArmer, gens: usize, younger_sample: u64, seed: u64) -> Self {
        let pages = armer.armed().capacity();
        GuidedArming {
            armer,
            faults: None,
            idle_intervals: vec![0; usize::try_from(pages).unwrap_or(0)],
            admit_limit: None,
            admit_max: pages,
            regions: None,
            members: PageSet::new(pages),
            budget: None,
            epoch: None,
            faults_at_arm: 0,
            last_arm: Instant::now(),
            gens: gens.max(1),
            younger_sample,
            rng: SplitMix64::new(seed),
            stats: GuidedStats::default(),
        }
    }

    /// From a policy; `None` unless it is guided ([`ArmPolicy::is_guided`]).
    pub fn from_policy(armer: UffdArmer, policy: ArmPolicy, seed: u64) -> Option<Self> {
        match policy {
            ArmPolicy::Oldest {
                gens,
                younger_sample,
            } => Some(Self::new(armer, gens, younger_sample, seed)),
            ArmPolicy::Regions {
                samples,
                budget_centi_pct,
            } => {
                let g = Self::new(armer, 2, 0, seed).with_regions(RegionConfig {
                    samples,
                    ..RegionConfig::default()
                });
                Some(match budget_centi_pct {
                    Some(b) => g.with_read_budget(ReadBudget::new(f64::from(b) / 100.0)),
                    None => g,
                })
            }
            _ => None,
        }
    }

    /// Samples regions instead of arming every page of the oldest generations; see
    /// [`RegionSampler`].
    pub fn with_regions(mut self, cfg: RegionConfig) -> Self {
        let pages = self.idle_intervals.len() as u64;
        self.regions = Some(RegionSampler::new(pages, cfg, self.rng.next_u64()));
        self
    }

    /// Holds the guest's faults to `budget`: before each arming the admission limit (pages newly
    /// armed, or samples of regions not watched idle) halves while the last interval's faults
    /// exceed the budget and doubles, up to the limit set by
    /// [`with_admit_limit`](Self::with_admit_limit) (all pages without one), while under half.
    pub fn with_read_budget(mut self, budget: ReadBudget) -> Self {
        self.admit_max = self.admit_limit.unwrap_or(self.admit_max);
        self.admit_limit = Some(self.admit_max);
        self.budget = Some(budget);
        self
    }

    /// The epoch the guest just ran: its wall time, vCPUs and the vCPU threads' blocked time
    /// ([`stalled`]; measures the per-fault cost for the read budget; without it the budget
    /// assumes the time since the last arming and its current cost estimate).
    pub fn observe_epoch(&mut self, r: &EpochResult) {
        let blocked = stalled(r.elapsed, &r.vcpu_cpu, &r.vcpu_runq_wait);
        self.epoch = Some((r.elapsed, r.vcpu_cpu.len(), blocked));
    }

    /// Region sampling's state, when on.
    pub fn regions(&self) -> Option<&RegionSampler> {
        self.regions.as_ref()
    }

    /// The pages the next interval should watch: the oldest generations' resident pages and a
    /// uniform sample of the younger resident ones.
    pub fn select(&mut self, generations: &Generations) -> (PageSet, u64) {
        let mut next = generations.pages_in_oldest(self.gens);
        let mut sampled = 0;
        if self.younger_sample > 0 {
            let younger: Vec<u64> = (0..generations.len())
                .filter(|&p| !next.contains(p) && generations.seq_of(p).is_some())
                .collect();
            let pick = uniform_sample(younger.len() as u64, self.younger_sample, &mut self.rng);
            for i in pick.iter() {
                next.insert(younger[i as usize]);
                sampled += 1;
            }
        }
        (next, sampled)
    }

    /// Limits the pages newly armed per pass to `limit`, drawn uniformly among those due. Hot
    /// pages promoted together drift down the window together and would all fault in the same
    /// interval; a guest stalled on a fault storm cannot touch what it uses, so those pages would
    /// look idle. The limit spreads both the storm and the pages (later trips are staggered).
    pub fn with_admit_limit(mut self, limit: Option<u64>) -> Self {
        self.admit_limit = limit;
        self
    }

    /// Changes the limit of [`with_admit_limit`](Self::with_admit_limit) between passes (a
    /// fault-budget controller sets it from the faults of the last interval).
    pub fn set_admit_limit(&mut self, limit: Option<u64>) {
        self.admit_limit = limit;
    }

    /// The read budget's admission step for the interval that just ended.
    fn apply_budget(&mut self) {
        let Some(b) = self.budget.as_mut() else {
            return;
        };
        let total = self.faults.as_ref().map_or(0, UffdFaultCount::total);
        let faults = total.saturating_sub(self.faults_at_arm);
        self.faults_at_arm = total;
        let (interval, vcpus) = match self.epoch.take() {
            Some((wall, vcpus, stalled)) => {
                b.observe(faults, stalled, wall * u32::try_from(vcpus).unwrap_or(1));
                (wall, vcpus)
            }
            None => (self.last_arm.elapsed(), 1),
        };
        let allowed = b.faults_in(interval, vcpus);
        let admit = self.admit_limit.unwrap_or(self.admit_max);
        self.admit_limit = Some(next_admit_limit(admit, faults, allowed, self.admit_max));
        self.stats.budget_faults = allowed;
        self.stats.fault_cost_ns = b.fault_cost().as_nanos() as u64;
    }

    /// Pages armed now that stayed untouched through at least `intervals` consecutive intervals
    /// up to the last harvest (call between the harvest and [`arm_from`](Self::arm_from)): the
    /// pages whose idleness was watched, not inferred.
    pub fn watched_idle(&self, intervals: u8) -> PageSet {
        if let Some(r) = &self.regions {
            return r.watched_idle(&self.armer.armed(), &self.members, intervals);
        }
        let mut out = self.armer.armed();
        let drop: Vec<u64> = out
            .iter()
            .filter(|&p| self.idle_intervals[p as usize].saturating_add(1) < intervals)
            .collect();
        for p in drop {
            out.remove(p);
        }
        out
    }

    /// Arms the next interval's pages (call after each aging pass). Pages leaving the armed set
    /// untouched are mapped back in unless reclaimed (not resident in `generations`).
    pub fn arm_from(&mut self, generations: &Generations) -> Result<ArmOutcome, UffdMinorError> {
        self.apply_budget();
        self.last_arm = Instant::now();
        // Still armed after the harvest = armed through the last interval and not touched.
        let still = self.armer.armed();
        if let Some(r) = self.regions.as_mut() {
            let candidates = generations.pages_in_oldest(self.gens);
            let (samples, expansion) = r.next(&still, &candidates, self.admit_limit);
            self.members = expansion.observed().clone();
            let out = self
                .armer
                .arm_regions(&samples, expansion, |p| generations.seq_of(p).is_some())?;
            self.record(out, 0);
            self.stats.admit_limit = self.admit_limit.unwrap_or(0);
            return Ok(out);
        }
        for (p, n) in self.idle_intervals.iter_mut().enumerate() {
            *n = if still.contains(p as u64) {
                n.saturating_add(1)
            } else {
                0
            };
        }
        let (mut next, sampled) = self.select(generations);
        if let Some(limit) = self.admit_limit {
            let mut new = next.clone();
            new.subtract(&still);
            if new.count() > limit {
                let due: Vec<u64> = new.iter().collect();
                let keep = uniform_sample(due.len() as u64, limit, &mut self.rng);
                for (i, &p) in due.iter().enumerate() {
                    if !keep.contains(i as u64) {
                        next.remove(p);
                    }
                }
            }
        }
        let out = self
            .armer
            .arm_only(&next, |p| generations.seq_of(p).is_some())?;
        self.record(out, sampled);
        self.stats.admit_limit = self.admit_limit.unwrap_or(0);
        Ok(out)
    }

    fn record(&mut self, out: ArmOutcome, sampled: u64) {
        self.stats.arms += 1;
        self.stats.pages_armed += out.armed;
        self.stats.younger_sampled += sampled;
        self.stats.pages_zapped += out.zapped;
        self.stats.pages_released += out.released;
        self.stats.ns += out.ns;
    }

    /// Totals so far (with the guest's faults when [`with_faults`](Self::with_faults) was given
    /// the source's counters).
    pub fn stats(&self) -> GuidedStats {
        GuidedStats {
            faults: self.faults.as_ref().map_or(0, UffdFaultCount::total),
            regions: self
                .regions
                .as_ref()
                .map(RegionSampler::stats)
                .unwrap_or_default(),
            ..self.stats
        }
    }

    /// Attaches the source's fault counters, reported in [`stats`](Self::stats).
    pub fn with_faults(mut self, faults: UffdFaultCount) -> Self {
        self.faults_at_arm = faults.total();
        self.faults = Some(faults);
        self
    }

    /// Oldest generations armed.
    pub fn gens(&self) -> usize {
        self.gens
    }

    /// The armer (for its current set).
    pub fn armer(&self) -> &UffdArmer {
        &self.armer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::InitialPlacement;
    use std::time::Instant;

    #[test]
    fn policies_parse_and_print() {
        for s in [
            "all",
            "sample:5000",
            "oldest:2",
            "oldest:3+200",
            "regions:4",
            "regions:2:2%",
            "regions:1:0.5%",
        ] {
            assert_eq!(s.parse::<ArmPolicy>().unwrap().to_string(), s);
        }
        assert_eq!("oldest".parse::<ArmPolicy>().unwrap(), ArmPolicy::default());
        for bad in [
            "",
            "some",
            "sample",
            "sample:0",
            "oldest:0",
            "oldest:x",
            "all:3",
            "regions:0",
            "regions:2:0%",
            "regions:2:101%",
            "regions:2:x",
        ] {
            assert!(bad.parse::<ArmPolicy>().is_err(), "{bad}");
        }
        assert!(ArmPolicy::default().is_guided() && !ArmPolicy::All.is_guided());
    }

    #[test]
    fn oldest_generations_exclude_youngest_and_reclaimed() {
        let now = Instant::now();
        let mut g = Generations::new(10, 4, InitialPlacement::Youngest, now);
        // Everything starts in the youngest generation: nothing old to arm.
        assert!(g.pages_in_oldest(2).is_empty());
        g.open_generation(now);
        g.open_generation(now);
        let mut hot = PageSet::new(10);
        hot.insert_range(0, 3);
        g.promote(&hot, |_| {}).unwrap();
        g.reclaim(9).unwrap();
        // Pages 3..9 sit in min_seq + 1 (seq 1, min 0); 0..3 in max_seq.
        let old = g.pages_in_oldest(2);
        assert_eq!(old.iter().collect::<Vec<_>>(), (3..9).collect::<Vec<_>>());
        assert!(g.pages_in_oldest(1).is_empty(), "min_seq itself is empty");
        assert_eq!(g.pages_in_oldest(16), old, "never the youngest");
        assert!(g.oldest_last_seq(0).is_none());
    }
}
