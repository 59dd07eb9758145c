//! `AgingPolicy`: how many generations the engine keeps and when it opens a new one.
//!
//! The kernel opens a generation (increments `max_seq`) when the aging finishes a walk, and keeps
//! between `MIN_NR_GENS` (2) and `MAX_NR_GENS` (4) of them. Userspace has no reclaim pressure to
//! drive the aging, so the caller chooses the trigger:
//!
//! - [`NewGeneration::EveryPass`]: one generation per aging pass, like writing the debugfs aging
//!   command with `force_scan` every pass. Generation numbers then count passes, which makes ages
//!   easy to read.
//! - [`NewGeneration::AfterInterval`]: one generation per time interval, whatever the pass rate;
//!   ages stay comparable when the pass rate changes.
//! - [`NewGeneration::YoungestShare`]: open one when the youngest generation would hold more than
//!   a share of the resident pages — a generation holding almost everything says nothing — but not
//!   more often than `min_interval`, so a busy guest cannot burn through the window in one burst.
//!
//! When opening a generation would exceed `max_gens`, the two oldest merge (`min_seq` advances),
//! which is what the kernel's `inc_min_seq()` does when aging outruns eviction.

use std::time::Duration;

/// Fewest generations the engine keeps (the kernel's `MIN_NR_GENS`): one to evict from, one to
/// promote into.
pub const MIN_NR_GENS: usize = 2;
/// Most generations the engine can keep; bounded so per-generation counters fit a fixed ring.
pub const MAX_NR_GENS: usize = 16;
/// Default number of generations, the kernel's `MAX_NR_GENS`.
pub const DEFAULT_NR_GENS: usize = 4;

/// When the aging opens a new generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewGeneration {
    /// Every aging pass opens a generation.
    EveryPass,
    /// A pass opens a generation when the youngest one is at least this old.
    AfterInterval(Duration),
    /// A pass opens a generation when the youngest one, with this pass's accesses added, would hold
    /// more than `percent` of the resident pages and is at least `min_interval` old.
    YoungestShare {
        /// Share of resident pages, 1..=100.
        percent: u8,
        /// Minimum age of the youngest generation before another opens.
        min_interval: Duration,
    },
}

/// Where pages start before any source has reported on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialPlacement {
    /// In the youngest generation: a page becomes an eviction candidate only after the engine has
    /// watched it stay unaccessed through the whole window. The safe default for reclaim.
    Youngest,
    /// In the oldest generation: unknown pages count as cold right away.
    Oldest,
}

/// Configuration of the aging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgingPolicy {
    /// Number of generations kept, `MIN_NR_GENS..=MAX_NR_GENS`.
    pub max_gens: usize,
    /// When a pass opens a generation.
    pub new_generation: NewGeneration,
    /// Where pages start.
    pub initial: InitialPlacement,
    /// Working-set protection like the kernel's `min_ttl_ms`: pages idle for less than this are
    /// never eviction candidates. Zero turns it off.
    pub min_ttl: Duration,
}

impl Default for AgingPolicy {
    fn default() -> Self {
        AgingPolicy {
            max_gens: DEFAULT_NR_GENS,
            new_generation: NewGeneration::EveryPass,
            initial: InitialPlacement::Youngest,
            min_ttl: Duration::ZERO,
        }
    }
}

/// An invalid [`AgingPolicy`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgingPolicyError {
    /// `max_gens` outside `MIN_NR_GENS..=MAX_NR_GENS`.
    #[error(
        "{got} generations requested; the engine keeps between {MIN_NR_GENS} and {MAX_NR_GENS}"
    )]
    GenerationCount {
        /// The requested number.
        got: usize,
    },
    /// `YoungestShare` with a percentage of 0 or above 100.
    #[error("youngest-generation share must be 1..=100 percent, got {got}")]
    SharePercent {
        /// The requested percentage.
        got: u8,
    },
}

impl AgingPolicy {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), AgingPolicyError> {
        if !(MIN_NR_GENS..=MAX_NR_GENS).contains(&self.max_gens) {
            return Err(AgingPolicyError::GenerationCount { got: self.max_gens });
        }
        if let NewGeneration::YoungestShare { percent, .. } = self.new_generation {
            if percent == 0 || percent > 100 {
                return Err(AgingPolicyError::SharePercent { got: percent });
            }
        }
        Ok(())
    }

    /// Whether a pass should open a generation.
    ///
    /// `youngest_age` is the age of the current youngest generation, `youngest_pages` its page
    /// count, `accessed` the number of pages accessed this pass and `resident` the resident pages.
    /// The share rule adds `accessed` to the youngest generation without subtracting overlap: an
    /// upper bound that costs one popcount instead of a second walk.
    pub fn opens_generation(
        &self,
        youngest_age: Duration,
        youngest_pages: u64,
        accessed: u64,
        resident: u64,
    ) -> bool {
        match self.new_generation {
            NewGeneration::EveryPass => true,
            NewGeneration::AfterInterval(interval) => youngest_age >= interval,
            NewGeneration::YoungestShare {
                percent,
                min_interval,
            } => {
                let would_hold = youngest_pages.saturating_add(accessed).min(resident);
                youngest_age >= min_interval
                    && resident > 0
                    && would_hold * 100 > u64::from(percent) * resident
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let mut p = AgingPolicy::default();
        assert!(p.validate().is_ok());
        p.max_gens = 1;
        assert_eq!(
            p.validate(),
            Err(AgingPolicyError::GenerationCount { got: 1 })
        );
        p.max_gens = 17;
        assert!(p.validate().is_err());
        p.max_gens = 16;
        p.new_generation = NewGeneration::YoungestShare {
            percent: 0,
            min_interval: Duration::ZERO,
        };
        assert_eq!(p.validate(), Err(AgingPolicyError::SharePercent { got: 0 }));
    }

    #[test]
    fn share_rule() {
        let p = AgingPolicy {
            new_generation: NewGeneration::YoungestShare {
                percent: 50,
                min_interval: Duration::from_millis(10),
            },
            ..AgingPolicy::default()
        };
        let old = Duration::from_millis(20);
        assert!(!p.opens_generation(old, 10, 10, 100));
        assert!(p.opens_generation(old, 40, 11, 100));
        assert!(!p.opens_generation(Duration::from_millis(5), 40, 11, 100));
    }
}
