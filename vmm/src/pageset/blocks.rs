//! Word-block scanning of page bitmaps: set bits per 64-word block (16 MiB of 4 KiB pages) and
//! the runs of non-empty blocks, for re-protecting only what was dirtied.

/// Words per scan block: 64 words = 4096 pages = 16 MiB of guest memory.
pub const BLOCK_WORDS: usize = 64;
/// Pages per scan block.
pub const BLOCK_PAGES: u64 = BLOCK_WORDS as u64 * 64;

/// Fills `counts` with the number of set bits of each 64-word block of `words`.
///
/// Clean blocks cost one OR-reduction; the AVX2 build of the loop is chosen at run time.
pub fn block_counts(words: &[u64], counts: &mut Vec<u32>) {
    counts.clear();
    counts.resize(words.len().div_ceil(BLOCK_WORDS), 0);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
        {
            // SAFETY: the CPU supports AVX-512F and VPOPCNTDQ (checked just above).
            unsafe { block_counts_avx512(words, counts) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("popcnt")
        {
            // SAFETY: the CPU supports AVX2 and POPCNT (checked just above).
            unsafe { block_counts_avx2(words, counts) };
            return;
        }
    }
    block_counts_generic(words, counts);
}

#[inline(always)]
fn block_counts_generic(words: &[u64], counts: &mut [u32]) {
    // A whole clean bitmap (the common case between writes) is one unrolled vector OR pass.
    if words.iter().fold(0u64, |a, &w| a | w) == 0 {
        counts.fill(0);
        return;
    }
    for (block, c) in words.chunks(BLOCK_WORDS).zip(counts.iter_mut()) {
        let any = block.iter().fold(0u64, |a, &w| a | w);
        *c = if any == 0 {
            0
        } else {
            block.iter().map(|w| w.count_ones()).sum()
        };
    }
}

/// # Safety
/// The CPU must support AVX2 and POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn block_counts_avx2(words: &[u64], counts: &mut [u32]) {
    block_counts_generic(words, counts);
}

/// # Safety
/// The CPU must support AVX-512F and VPOPCNTDQ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
unsafe fn block_counts_avx512(words: &[u64], counts: &mut [u32]) {
    block_counts_generic(words, counts);
}

/// The runs of non-empty blocks in `counts` (as from [`block_counts`]), each at most `max_len`
/// blocks long (a longer run is cut into several), in increasing order.
pub fn nonempty_runs(counts: &[u32], max_len: usize) -> NonEmptyRuns<'_> {
    NonEmptyRuns {
        counts,
        next: 0,
        max_len: max_len.max(1),
    }
}

/// Iterator over runs of non-empty blocks, as block index ranges; see [`nonempty_runs`].
#[derive(Debug)]
pub struct NonEmptyRuns<'a> {
    counts: &'a [u32],
    next: usize,
    max_len: usize,
}

impl Iterator for NonEmptyRuns<'_> {
    type Item = std::ops::Range<usize>;

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.counts.len();
        let mut b = self.next;
        while b < n && self.counts[b] == 0 {
            b += 1;
        }
        if b == n {
            self.next = n;
            return None;
        }
        let start = b;
        while b < n && self.counts[b] != 0 && b - start < self.max_len {
            b += 1;
        }
        self.next = b;
        Some(start..b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn block_counts_skip_clean_blocks() {
        let mut words = vec![0u64; 200];
        words[3] = 0b1011;
        words[130] = u64::MAX;
        let mut c = Vec::new();
        block_counts(&words, &mut c);
        assert_eq!(c, vec![3, 0, 64, 0]);
    }

    #[test]
    fn runs_are_cut_at_max_len() {
        let counts = [0, 1, 2, 3, 0, 0, 5, 0, 1, 1];
        let runs: Vec<_> = nonempty_runs(&counts, 2).collect();
        assert_eq!(runs, vec![1..3, 3..4, 6..7, 8..10]);
        assert_eq!(nonempty_runs(&[0, 0], 4).count(), 0);
    }

    proptest! {
        #[test]
        fn runs_cover_exactly_the_nonempty_blocks(
            counts in proptest::collection::vec(0u32..3, 0..80), max_len in 1usize..6) {
            let mut covered = vec![false; counts.len()];
            let mut last_end = 0;
            for r in nonempty_runs(&counts, max_len) {
                prop_assert!(r.start >= last_end && !r.is_empty() && r.len() <= max_len);
                for b in r.clone() {
                    covered[b] = true;
                }
                last_end = r.end;
            }
            for (b, &c) in counts.iter().enumerate() {
                prop_assert_eq!(covered[b], c != 0);
            }
        }
    }
}
