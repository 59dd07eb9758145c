//! The userspace multi-generational LRU engine.
//!
//! An [`Engine`] tracks every guest page of a [`GuestPageMap`] in generations, as the kernel's
//! MGLRU does per lruvec (see `Documentation/mm/multigen_lru.rst`): each pass harvests its
//! [`AccessSource`]s, moves every page seen accessed into the youngest generation (`max_seq`),
//! and opens generations as the [`AgingPolicy`] says; pages not seen stay where they are and so
//! grow older relative to the window. Eviction walks the oldest generations; pages the caller
//! then reclaims and that come back are refaults, which sort pages into [`tiers`] whose refault
//! rates decide what eviction protects.
//!
//! ```no_run
//! # use agelab_mglru::engine::{Engine, EngineConfig, EvictionScope};
//! # fn demo(map: agelab_vmm::GuestPageMap, src: Box<dyn agelab_mglru::AccessSource>) {
//! let mut engine = Engine::new(map, EngineConfig::default()).unwrap();
//! engine.add_source(src);
//! let pass = engine.run_pass(None).unwrap();
//! println!("{}", engine.table());
//! let victims: Vec<_> = engine.eviction_candidates(EvictionScope::default()).take(512).collect();
//! // ... madvise(MADV_PAGEOUT) the victims' HVAs ...
//! engine.mark_reclaimed(victims.iter().map(|c| c.page.index)).unwrap();
//! # let _ = pass; }
//! ```

pub mod eviction;
pub mod generations;
pub mod heatmap;
pub mod histogram;
pub mod pass;
pub mod policy;
pub mod report;
pub mod sources;
pub mod tiers;

use std::time::{Duration, Instant};

use agelab_vmm::{GuestPageMap, PageSet, PAGE_SIZE};

use crate::source::{AccessSource, Observes};

pub use eviction::{Candidate, EvictionCandidates, EvictionScope};
pub use generations::{Generation, Generations, GenerationsError, Promotion, NOT_RESIDENT};
pub use heatmap::AgeHeatmap;
pub use histogram::WorkingSetHistogram;
pub use pass::AgingPass;
pub use policy::{
    AgingPolicy, AgingPolicyError, InitialPlacement, NewGeneration, DEFAULT_NR_GENS, MAX_NR_GENS,
    MIN_NR_GENS,
};
pub use report::{
    pass_summary, AgingJson, EngineReport, GenerationJson, PassJson, PassSourceJson, SourceJson,
    TierJson,
};
pub use sources::{SourcePass, SourceStats};
pub use tiers::{tier_of, TierConfig, TierCounts, Tiers, MAX_NR_TIERS};

use sources::{elapsed_ns, SourceSlot};

/// Pages in one GiB of 4 KiB pages.
pub const PAGES_PER_GIB: u64 = (1 << 30) / PAGE_SIZE;

/// Everything configurable about an engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// Generations and when they open.
    pub policy: AgingPolicy,
    /// The tier protection rule.
    pub tiers: TierConfig,
    /// Record an age heatmap with at most this many rows (`None`: no heatmap). Costs one walk
    /// over every page per pass, reported apart from bookkeeping.
    pub heatmap_rows: Option<usize>,
}

/// A failure of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The policy is invalid.
    #[error("invalid aging policy: {0}")]
    Policy(#[from] AgingPolicyError),
    /// Generation bookkeeping refused an argument.
    #[error(transparent)]
    Generations(#[from] GenerationsError),
    /// The truth set does not match guest memory.
    #[error("truth covers {got} pages, guest memory has {expected}")]
    TruthCapacity {
        /// Capacity of the truth set.
        got: u64,
        /// Pages in guest memory.
        expected: u64,
    },
}

/// The userspace MGLRU; see the module docs.
#[derive(Debug)]
pub struct Engine {
    map: GuestPageMap,
    config: EngineConfig,
    gens: Generations,
    tiers: Tiers,
    sources: Vec<SourceSlot>,
    /// Union of this pass's harvests; kept to avoid reallocating every pass.
    accessed: PageSet,
    passes: u64,
    bookkeeping_ns: u64,
    heatmap: Option<AgeHeatmap>,
}

impl Engine {
    /// An engine for the pages of `map`, starting now.
    pub fn new(map: GuestPageMap, config: EngineConfig) -> Result<Self, EngineError> {
        Self::new_at(map, config, Instant::now())
    }

    /// An engine whose first generations are born at `now` (deterministic tests pass their own
    /// clock to every `*_at` call).
    pub fn new_at(
        map: GuestPageMap,
        config: EngineConfig,
        now: Instant,
    ) -> Result<Self, EngineError> {
        config.policy.validate()?;
        let pages = map.len();
        Ok(Engine {
            gens: Generations::new(pages, config.policy.max_gens, config.policy.initial, now),
            tiers: Tiers::new(pages, config.tiers),
            sources: Vec::new(),
            accessed: PageSet::new(pages),
            passes: 0,
            bookkeeping_ns: 0,
            heatmap: config.heatmap_rows.map(|rows| AgeHeatmap::new(pages, rows)),
            map,
            config,
        })
    }

    /// Adds an access source; it is asked once whether it is available, and if not it stays
    /// listed (with the reason) but is never harvested.
    pub fn add_source(&mut self, source: Box<dyn AccessSource>) -> &SourceStats {
        self.sources.push(SourceSlot::new(source));
        &self.sources[self.sources.len() - 1].stats
    }

    /// Runs one pass now: harvest every available source, age, and judge against `truth` (pages
    /// accessed since the previous pass) when given.
    pub fn run_pass(&mut self, truth: Option<&PageSet>) -> Result<AgingPass, EngineError> {
        self.run_pass_at(truth, None)
    }

    /// Runs one pass judged against split ground truth: each source is compared with what it can
    /// observe (a write-only source with the pages written, a read-only one with the pages read,
    /// the others with every page accessed); aging uses the union.
    pub fn run_pass_split(&mut self, truth: &PassTruth) -> Result<AgingPass, EngineError> {
        let accessed = truth.accessed();
        self.run_pass_inner(Some(&accessed), Some(truth), None)
    }

    /// [`run_pass`](Self::run_pass) with an explicit clock for the aging step (`None`: now).
    pub fn run_pass_at(
        &mut self,
        truth: Option<&PageSet>,
        now: Option<Instant>,
    ) -> Result<AgingPass, EngineError> {
        self.run_pass_inner(truth, None, now)
    }

    fn run_pass_inner(
        &mut self,
        truth: Option<&PageSet>,
        split: Option<&PassTruth>,
        now: Option<Instant>,
    ) -> Result<AgingPass, EngineError> {
        let pages = self.gens.len();
        if let Some(t) = truth {
            if t.capacity() != pages {
                return Err(EngineError::TruthCapacity {
                    got: t.capacity(),
                    expected: pages,
                });
            }
        }
        let mut source_passes: Vec<SourcePass> =
            self.sources.iter_mut().map(|s| s.harvest(pages)).collect();

        let t = Instant::now();
        self.accessed.clear();
        // Residency (present/swapped) is not an access signal: it never promotes a page.
        for slot in &self.sources {
            if slot.stats.observes == Some(Observes::Presence) {
                continue;
            }
            if let Some((set, _)) = &slot.harvest {
                self.accessed.union_with(set);
            }
        }
        let union_ns = elapsed_ns(t);
        let accessed = std::mem::replace(&mut self.accessed, PageSet::new(0));
        let result = self.age_at(&accessed, truth, now.unwrap_or_else(Instant::now));
        self.accessed = accessed;
        let mut pass = result?;
        pass.bookkeeping_ns += union_ns;
        self.bookkeeping_ns += union_ns;

        if let Some(truth) = truth {
            let t = Instant::now();
            for (slot, sp) in self.sources.iter_mut().zip(source_passes.iter_mut()) {
                if slot.stats.observes == Some(Observes::Presence) {
                    slot.harvest = None;
                    continue;
                }
                let t = match (split, slot.stats.observes) {
                    (Some(s), Some(Observes::Writes)) => &s.written,
                    (Some(s), Some(Observes::Reads)) => &s.read,
                    _ => truth,
                };
                slot.judge(sp, t);
                slot.harvest = None;
            }
            pass.validation_ns += elapsed_ns(t);
        } else {
            for slot in &mut self.sources {
                slot.harvest = None;
            }
        }
        pass.sources = source_passes;
        Ok(pass)
    }

    /// One aging pass over a set the caller harvested itself (no sources involved): promote
    /// `accessed`, opening and merging generations per the policy.
    pub fn age_at(
        &mut self,
        accessed: &PageSet,
        truth: Option<&PageSet>,
        now: Instant,
    ) -> Result<AgingPass, EngineError> {
        let pages = self.gens.len();
        if accessed.capacity() != pages {
            return Err(GenerationsError::CapacityMismatch {
                got: accessed.capacity(),
                expected: pages,
            }
            .into());
        }
        let t = Instant::now();
        let accessed_count = accessed.count();
        let youngest = self.gens.max_seq();
        let youngest_age = self.gens.age(youngest, now).unwrap_or_default();
        let mut advanced = 0;
        let mut opened = None;
        if self.config.policy.opens_generation(
            youngest_age,
            self.gens.pages_in(youngest),
            accessed_count,
            self.gens.resident(),
        ) {
            advanced += self.gens.open_generation(now);
            opened = Some(self.gens.max_seq());
        }
        let tiers = &mut self.tiers;
        let promotion = self.gens.promote(accessed, |p| tiers.on_refault(p))?;
        advanced += self.gens.drop_empty_oldest();
        for _ in 0..advanced {
            self.tiers.carryover();
        }
        let bookkeeping_ns = elapsed_ns(t);
        self.bookkeeping_ns += bookkeeping_ns;
        self.passes += 1;

        let mut validation_ns = 0;
        let union_confusion = truth.map(|truth| {
            let t = Instant::now();
            let c = accessed.confusion(truth);
            validation_ns = elapsed_ns(t);
            c
        });
        let mut heatmap_ns = 0;
        if let Some(h) = &mut self.heatmap {
            let t = Instant::now();
            h.record(&self.gens, now);
            heatmap_ns = elapsed_ns(t);
        }
        Ok(AgingPass {
            pass: self.passes,
            at: now,
            opened,
            min_seq_advanced: advanced,
            min_seq: self.gens.min_seq(),
            max_seq: self.gens.max_seq(),
            accessed: accessed_count,
            promotion,
            bookkeeping_ns,
            validation_ns,
            heatmap_ns,
            sources: Vec::new(),
            union_confusion,
        })
    }

    /// Marks pages as reclaimed by the caller: they leave their generations, their tiers count
    /// an eviction, and a later access is a refault. Returns how many were resident.
    pub fn mark_reclaimed(
        &mut self,
        pages: impl IntoIterator<Item = u64>,
    ) -> Result<u64, EngineError> {
        let mut n = 0;
        for p in pages {
            if self.gens.reclaim(p)?.is_some() {
                self.tiers.on_evicted(p);
                n += 1;
            }
        }
        for _ in 0..self.gens.drop_empty_oldest() {
            self.tiers.carryover();
        }
        Ok(n)
    }

    /// Records refaults learned outside the aging (e.g. from userfaultfd): reclaimed pages of
    /// `pages` become resident in the youngest generation. Resident pages are promoted as if
    /// accessed. Returns the number of refaults.
    pub fn record_refaults(&mut self, pages: &PageSet) -> Result<u64, EngineError> {
        let tiers = &mut self.tiers;
        let promotion = self.gens.promote(pages, |p| tiers.on_refault(p))?;
        for _ in 0..self.gens.drop_empty_oldest() {
            self.tiers.carryover();
        }
        Ok(promotion.refaulted)
    }

    /// Eviction candidates from the oldest generations, now; see [`eviction`].
    pub fn eviction_candidates(&mut self, scope: EvictionScope) -> EvictionCandidates<'_> {
        self.eviction_candidates_at(scope, Instant::now())
    }

    /// [`eviction_candidates`](Self::eviction_candidates) with an explicit clock (for `min_ttl`).
    pub fn eviction_candidates_at(
        &mut self,
        scope: EvictionScope,
        now: Instant,
    ) -> EvictionCandidates<'_> {
        EvictionCandidates::new(
            &mut self.gens,
            &mut self.tiers,
            &self.map,
            scope,
            self.config.policy.min_ttl,
            now,
        )
    }

    /// Resident pages of the `n` oldest generations (never the youngest), with no side effects:
    /// the set a sampling source arms to watch the eviction candidates' ages (see
    /// [`Generations::pages_in_oldest`]; [`eviction_candidates`](Self::eviction_candidates) would
    /// move protected-tier pages).
    pub fn pages_in_oldest(&self, n: usize) -> PageSet {
        self.gens.pages_in_oldest(n)
    }

    /// The generations.
    pub fn generations(&self) -> &Generations {
        &self.gens
    }

    /// Refault counts and tier state.
    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    /// The guest pages.
    pub fn map(&self) -> &GuestPageMap {
        &self.map
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Per-source records, in the order added.
    pub fn sources(&self) -> impl Iterator<Item = &SourceStats> {
        self.sources.iter().map(|s| &s.stats)
    }

    /// Passes run.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// Mean bookkeeping time per pass per GiB of guest memory, ns (0 before the first pass).
    pub fn ns_per_gib(&self) -> u64 {
        let pages = self.gens.len();
        if self.passes == 0 || pages == 0 {
            return 0;
        }
        let per_pass = self.bookkeeping_ns as f64 / self.passes as f64;
        (per_pass * PAGES_PER_GIB as f64 / pages as f64) as u64
    }

    /// Total bookkeeping time, ns.
    pub fn bookkeeping_ns(&self) -> u64 {
        self.bookkeeping_ns
    }

    /// The age heatmap, when configured.
    pub fn heatmap(&self) -> Option<&AgeHeatmap> {
        self.heatmap.as_ref()
    }

    /// Per-pass table in the spirit of `/sys/kernel/debug/lru_gen`, now.
    pub fn table(&self) -> String {
        report::generations_table(self, Instant::now())
    }

    /// Harvests every available source once and forgets what it reported: what happened before
    /// the first epoch (the guest's set-up, a fill of its memory, a fresh mapping that pagemap
    /// reports all soft-dirty) belongs to no epoch's truth, so it must not count as the first
    /// pass's accesses.
    pub fn forget_before_start(&mut self) {
        for slot in self.sources.iter_mut().filter(|s| s.stats.available) {
            // A source that cannot harvest now fails its first pass the same way, and says so.
            let _ = slot.source.harvest();
        }
    }

    /// The JSON-ready summary, now.
    pub fn report(&self) -> EngineReport {
        EngineReport::from_engine(self, Instant::now())
    }

    /// Working-set histogram now, with the default age buckets.
    pub fn histogram(&self) -> WorkingSetHistogram {
        WorkingSetHistogram::from_generations(
            &self.gens,
            Instant::now(),
            &histogram::DEFAULT_EDGES_MS,
        )
    }

    /// The age below which pages are never offered for eviction.
    pub fn min_ttl(&self) -> Duration {
        self.config.policy.min_ttl
    }
}

/// Ground truth of one pass, split by kind of access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassTruth {
    /// Pages read since the previous pass.
    pub read: PageSet,
    /// Pages written since the previous pass.
    pub written: PageSet,
}

impl PassTruth {
    /// Pages accessed either way.
    pub fn accessed(&self) -> PageSet {
        let mut a = self.read.clone();
        a.union_with(&self.written);
        a
    }
}
