//! Planning batched I/O over PFN-indexed kernel files (page_idle bitmap, kpageflags).
//!
//! Guest memory is mostly physically clustered, so sorting its PFNs and covering them with a few
//! long runs turns 262144 per-page syscalls per GiB into a handful of large ones.

/// A run of consecutive 64-bit bitmap words: PFNs `first_word * 64 .. (first_word + words) * 64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordRun {
    /// Index of the first u64 word (PFN / 64).
    pub first_word: u64,
    /// Number of words.
    pub words: u64,
}

impl WordRun {
    /// First PFN covered.
    pub fn first_pfn(&self) -> u64 {
        self.first_word * 64
    }
    /// One past the last PFN covered.
    pub fn end_pfn(&self) -> u64 {
        (self.first_word + self.words) * 64
    }
}

/// Words of gap merged into one run: reading a few unneeded words costs the kernel a cheap
/// per-PFN check each, far less than the ~1 µs of an extra syscall.
pub const MERGE_GAP_WORDS: u64 = 16;
/// Longest run: 128 Ki words = 1 MiB per pread/pwrite, 8 Mi PFNs (32 GiB of RAM).
pub const MAX_RUN_WORDS: u64 = 128 * 1024;

/// Covers sorted, deduplicated `pfns` with word runs (merging gaps up to `gap` words).
pub fn plan_word_runs(sorted_pfns: &[u64], gap: u64, max_words: u64) -> Vec<WordRun> {
    let mut runs: Vec<WordRun> = Vec::new();
    for &pfn in sorted_pfns {
        let w = pfn / 64;
        if let Some(last) = runs.last_mut() {
            let last_end = last.first_word + last.words; // exclusive
            if w < last_end {
                continue;
            }
            if w - last_end <= gap && w + 1 - last.first_word <= max_words {
                last.words = w + 1 - last.first_word;
                continue;
            }
        }
        runs.push(WordRun {
            first_word: w,
            words: 1,
        });
    }
    runs
}

/// Sorts and deduplicates PFNs.
pub fn sorted_unique(pfns: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = pfns.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_close_words() {
        let runs = plan_word_runs(&[0, 1, 63, 64, 64 * 10, 64 * 100], 16, 1024);
        assert_eq!(
            runs,
            vec![
                WordRun {
                    first_word: 0,
                    words: 11
                },
                WordRun {
                    first_word: 100,
                    words: 1
                }
            ]
        );
    }

    proptest! {
        #[test]
        fn runs_cover_every_pfn_and_respect_limits(
            pfns in proptest::collection::btree_set(0u64..1_000_000, 0..500),
            gap in 0u64..40,
            max in 1u64..200,
        ) {
            let v: Vec<u64> = pfns.iter().copied().collect();
            let runs = plan_word_runs(&v, gap, max);
            for &p in &v {
                prop_assert!(runs.iter().any(|r| p >= r.first_pfn() && p < r.end_pfn()));
            }
            for w in runs.windows(2) {
                prop_assert!(w[0].first_word + w[0].words <= w[1].first_word);
            }
            for r in &runs {
                prop_assert!(r.words >= 1 && r.words <= max);
            }
        }
    }
}
