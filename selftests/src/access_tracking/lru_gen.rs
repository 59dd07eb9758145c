//! lru_gen aging of a test's own memcg, as the kernel's `lib/lru_gen_util.c` does it, and the
//! judgement of what an aging pass found young.
//!
//! The aging itself ([`MemcgAging`]: create, join before the guest first touches its memory,
//! age as a member) is `agelab_mglru::lru_gen_aging`, the one home of forced memcg aging that
//! `agelab run` uses too; it is re-exported here for the scenarios. What belongs to the
//! scenarios stays here: the 90% rule and [`YoungJudgement`].

pub use agelab_mglru::kernel::lru_gen::MemcgGenerations;
pub use agelab_mglru::lru_gen_aging::{lru_gen_usable, MemcgAging};

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
}
