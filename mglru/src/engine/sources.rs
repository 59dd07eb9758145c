//! The engine's access sources and what each one reported, pass by pass and in total.

use std::time::Instant;

use agelab_vmm::{Confusion, PageSet};

use crate::source::{AccessSource, HarvestCost, Observes};

/// What one source did in one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct SourcePass {
    /// Source name.
    pub name: String,
    /// Whether it was asked (false when unavailable on this host).
    pub harvested: bool,
    /// The harvest error, when it failed; its pages are then missing from the pass.
    pub error: Option<String>,
    /// Pages it reported accessed.
    pub accessed: u64,
    /// Cost it reported.
    pub cost: HarvestCost,
    /// Wall time of the `harvest()` call as the engine measured it.
    pub wall_ns: u64,
    /// Its report against the ground truth, when the caller gave one. Sampling sources are judged
    /// only on the pages they observed.
    pub confusion: Option<Confusion>,
}

/// A source's record over the whole run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceStats {
    /// Source name.
    pub name: String,
    /// What accesses it sees.
    pub observes: Option<Observes>,
    /// Whether it is usable on this host.
    pub available: bool,
    /// Why not, when unavailable.
    pub reason: Option<String>,
    /// Successful harvests.
    pub harvests: u64,
    /// Failed harvests.
    pub errors: u64,
    /// The most recent failure.
    pub last_error: Option<String>,
    /// Total wall time of harvests.
    pub harvest_ns: u64,
    /// Total pages reported accessed.
    pub accessed: u64,
    /// Sum of per-pass confusions over the passes that had a truth.
    pub confusion: Confusion,
    /// Passes that had a truth.
    pub judged_passes: u64,
}

impl SourceStats {
    /// Precision over all judged passes, `None` when never judged.
    pub fn precision(&self) -> Option<f64> {
        (self.judged_passes > 0).then(|| self.confusion.precision())
    }

    /// Recall over all judged passes, `None` when never judged.
    pub fn recall(&self) -> Option<f64> {
        (self.judged_passes > 0).then(|| self.confusion.recall())
    }

    /// Mean harvest wall time, ns.
    pub fn mean_harvest_ns(&self) -> u64 {
        let n = self.harvests + self.errors;
        self.harvest_ns.checked_div(n).unwrap_or(0)
    }
}

/// A source owned by the engine, with its stats and the pages it gave this pass.
pub(super) struct SourceSlot {
    pub source: Box<dyn AccessSource>,
    pub stats: SourceStats,
    /// This pass's harvest: accessed pages and the observed mask (sampling sources).
    pub harvest: Option<(PageSet, Option<PageSet>)>,
}

impl std::fmt::Debug for SourceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSlot")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SourceSlot {
    /// Wraps `source`, asking once whether it is available.
    pub fn new(source: Box<dyn AccessSource>) -> Self {
        let availability = source.available();
        let stats = SourceStats {
            name: source.name().to_string(),
            observes: Some(source.observes()),
            available: availability.is_ok(),
            reason: availability.err().map(|u| u.0),
            ..SourceStats::default()
        };
        SourceSlot {
            source,
            stats,
            harvest: None,
        }
    }

    /// Harvests if available; the pages stay in `self.harvest` for the union.
    pub fn harvest(&mut self, pages: u64) -> SourcePass {
        self.harvest = None;
        let mut pass = SourcePass {
            name: self.stats.name.clone(),
            harvested: self.stats.available,
            error: None,
            accessed: 0,
            cost: HarvestCost::default(),
            wall_ns: 0,
            confusion: None,
        };
        if !self.stats.available {
            return pass;
        }
        let t = Instant::now();
        let result = self.source.harvest();
        pass.wall_ns = elapsed_ns(t);
        self.stats.harvest_ns += pass.wall_ns;
        match result {
            Ok(h) if h.accessed.capacity() != pages => {
                let msg = format!(
                    "harvest covers {} pages, guest memory has {pages}",
                    h.accessed.capacity()
                );
                self.fail(&mut pass, msg);
            }
            Ok(h) => {
                pass.accessed = h.accessed.count();
                pass.cost = h.cost;
                self.stats.harvests += 1;
                self.stats.accessed += pass.accessed;
                let observed = h.observed.filter(|o| o.capacity() == pages);
                self.harvest = Some((h.accessed, observed));
            }
            Err(e) => self.fail(&mut pass, e.to_string()),
        }
        pass
    }

    fn fail(&mut self, pass: &mut SourcePass, msg: String) {
        self.stats.errors += 1;
        self.stats.last_error = Some(msg.clone());
        pass.error = Some(msg);
    }

    /// Judges this pass's harvest against `truth`.
    pub fn judge(&mut self, pass: &mut SourcePass, truth: &PageSet) {
        let Some((accessed, observed)) = &self.harvest else {
            return;
        };
        let c = match observed {
            None => accessed.confusion(truth),
            Some(mask) => {
                let mut a = accessed.clone();
                a.intersect_with(mask);
                let mut t = truth.clone();
                t.intersect_with(mask);
                a.confusion(&t)
            }
        };
        pass.confusion = Some(c);
        self.stats.judged_passes += 1;
        self.stats.confusion.true_pos += c.true_pos;
        self.stats.confusion.false_pos += c.false_pos;
        self.stats.confusion.false_neg += c.false_neg;
    }
}

/// Nanoseconds since `t`, saturating.
pub(super) fn elapsed_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
