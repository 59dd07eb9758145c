//! `PageSet`: the compact page bitmap every part of agelab speaks.
//!
//! Bit `i` stands for guest page `i` of a [`GuestPageMap`](crate::memory::GuestPageMap) (test memory
//! only, in guest-physical order). Words are little-endian `u64`s, the layout of KVM's dirty bitmap,
//! so a memslot's dirty log can be merged without conversion.
//!
//! Bit work on raw words lives here too: ORing a bitmap in at any bit offset, clearing ranges,
//! moving one set into another ([`PageSet`] methods), and scanning 64-word blocks for the runs
//! worth re-protecting ([`blocks`]).

pub mod blocks;

pub use blocks::{block_counts, nonempty_runs, NonEmptyRuns, BLOCK_PAGES, BLOCK_WORDS};

use std::fmt;

/// A fixed-size set of guest page indices, stored as a bitmap (1 bit per 4 KiB page).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PageSet {
    words: Vec<u64>,
    len: u64,
}

/// How well a measured set matches the truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Confusion {
    /// Pages in both sets.
    pub true_pos: u64,
    /// Pages measured but not in the truth.
    pub false_pos: u64,
    /// Pages in the truth that were not measured.
    pub false_neg: u64,
}

impl Confusion {
    /// Fraction of measured pages that are true; 1.0 when nothing was measured.
    pub fn precision(&self) -> f64 {
        let measured = self.true_pos + self.false_pos;
        if measured == 0 {
            1.0
        } else {
            self.true_pos as f64 / measured as f64
        }
    }

    /// Fraction of true pages that were measured; 1.0 when the truth is empty.
    pub fn recall(&self) -> f64 {
        let truth = self.true_pos + self.false_neg;
        if truth == 0 {
            1.0
        } else {
            self.true_pos as f64 / truth as f64
        }
    }
}

impl PageSet {
    /// An empty set able to hold pages `0..len`.
    pub fn new(len: u64) -> Self {
        PageSet {
            words: vec![0; words_for(len)],
            len,
        }
    }

    /// A set holding every page `0..len`.
    pub fn full(len: u64) -> Self {
        let mut s = PageSet {
            words: vec![u64::MAX; words_for(len)],
            len,
        };
        s.trim();
        s
    }

    /// Builds a set from bitmap words (KVM dirty-log layout); bits past `len` are dropped.
    pub fn from_words(mut words: Vec<u64>, len: u64) -> Self {
        words.resize(words_for(len), 0);
        let mut s = PageSet { words, len };
        s.trim();
        s
    }

    /// Number of pages the set can hold.
    pub fn capacity(&self) -> u64 {
        self.len
    }

    /// The bitmap words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Mutable bitmap words, for callers that merge kernel bitmaps in place.
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    /// Adds `page`. Pages beyond the capacity are ignored and reported as `false`.
    pub fn insert(&mut self, page: u64) -> bool {
        if page >= self.len {
            return false;
        }
        let w = &mut self.words[(page / 64) as usize];
        let bit = 1u64 << (page % 64);
        let was = *w & bit != 0;
        *w |= bit;
        !was
    }

    /// Adds pages `start..start + count` (clamped to the capacity).
    pub fn insert_range(&mut self, start: u64, count: u64) {
        let end = start.saturating_add(count).min(self.len);
        let mut p = start;
        while p < end {
            if p.is_multiple_of(64) && end - p >= 64 {
                self.words[(p / 64) as usize] = u64::MAX;
                p += 64;
            } else {
                self.words[(p / 64) as usize] |= 1u64 << (p % 64);
                p += 1;
            }
        }
    }

    /// Removes pages `start..start + count` (clamped to the capacity).
    pub fn remove_range(&mut self, start: u64, count: u64) {
        let end = start.saturating_add(count).min(self.len);
        let mut p = start;
        while p < end {
            let w = (p / 64) as usize;
            let bit = p % 64;
            let n = (64 - bit).min(end - p);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            self.words[w] &= !mask;
            p += n;
        }
    }

    /// ORs the first `len` bits of `src` (a bitmap in the same word layout, e.g. a memslot's
    /// dirty log) in at page `at`, whatever its alignment; bits past the capacity are dropped.
    pub fn or_bits_at(&mut self, at: u64, src: &[u64], len: u64) {
        let len = len.min(self.len.saturating_sub(at));
        if len == 0 {
            return;
        }
        let shift = (at % 64) as u32;
        let base = (at / 64) as usize;
        let nwords = len.div_ceil(64) as usize;
        for (i, &w) in src[..nwords].iter().enumerate() {
            let mut w = w;
            if i == nwords - 1 && len & 63 != 0 {
                w &= (1u64 << (len % 64)) - 1;
            }
            if w == 0 {
                continue;
            }
            self.words[base + i] |= w << shift;
            if shift != 0 && base + i + 1 < self.words.len() {
                self.words[base + i + 1] |= w >> (64 - shift);
            }
        }
        self.trim();
    }

    /// Moves every page of `other` (same capacity) into this set, leaving `other` empty;
    /// returns how many of them were new here.
    pub fn take_from(&mut self, other: &mut PageSet) -> u64 {
        assert_eq!(self.len, other.len, "PageSet capacities differ");
        let mut added = 0;
        for (o, p) in self.words.iter_mut().zip(other.words.iter_mut()) {
            if *p != 0 {
                added += u64::from((*p & !*o).count_ones());
                *o |= *p;
                *p = 0;
            }
        }
        added
    }

    /// Removes `page`.
    pub fn remove(&mut self, page: u64) {
        if page < self.len {
            self.words[(page / 64) as usize] &= !(1u64 << (page % 64));
        }
    }

    /// Whether `page` is in the set.
    pub fn contains(&self, page: u64) -> bool {
        page < self.len && self.words[(page / 64) as usize] & (1u64 << (page % 64)) != 0
    }

    /// Number of pages in the set.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether no page is in the set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Removes every page.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Adds every page of `other` (which must have the same capacity).
    pub fn union_with(&mut self, other: &PageSet) {
        assert_eq!(self.len, other.len, "PageSet capacities differ");
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// Keeps only pages also in `other`.
    pub fn intersect_with(&mut self, other: &PageSet) {
        assert_eq!(self.len, other.len, "PageSet capacities differ");
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
    }

    /// Removes every page of `other`.
    pub fn subtract(&mut self, other: &PageSet) {
        assert_eq!(self.len, other.len, "PageSet capacities differ");
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
    }

    /// Compares this (measured) set with `truth`.
    pub fn confusion(&self, truth: &PageSet) -> Confusion {
        assert_eq!(self.len, truth.len, "PageSet capacities differ");
        let mut c = Confusion::default();
        for (m, t) in self.words.iter().zip(&truth.words) {
            c.true_pos += u64::from((m & t).count_ones());
            c.false_pos += u64::from((m & !t).count_ones());
            c.false_neg += u64::from((!m & t).count_ones());
        }
        c
    }

    /// Iterates over the pages in the set, in increasing order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            words: &self.words,
            idx: 0,
            cur: self.words.first().copied().unwrap_or(0),
        }
    }

    /// The first `n` pages of the set, for diagnostics.
    pub fn first(&self, n: usize) -> Vec<u64> {
        self.iter().take(n).collect()
    }

    fn trim(&mut self) {
        let rem = self.len % 64;
        if rem != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << rem) - 1;
            }
        }
    }
}

fn words_for(len: u64) -> usize {
    usize::try_from(len.div_ceil(64)).expect("PageSet too large for this host")
}

impl fmt::Debug for PageSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PageSet({} of {}: {:?}",
            self.count(),
            self.len,
            self.first(8)
        )?;
        if self.count() > 8 {
            write!(f, "…")?;
        }
        write!(f, ")")
    }
}

impl FromIterator<u64> for PageSet {
    /// Collects into a set whose capacity is one past the largest page.
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let pages: Vec<u64> = iter.into_iter().collect();
        let len = pages.iter().max().map_or(0, |m| m + 1);
        let mut s = PageSet::new(len);
        for p in pages {
            s.insert(p);
        }
        s
    }
}

/// Iterator over the pages of a [`PageSet`].
#[derive(Debug)]
pub struct Iter<'a> {
    words: &'a [u64],
    idx: usize,
    cur: u64,
}

impl Iterator for Iter<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            if self.cur != 0 {
                let bit = self.cur.trailing_zeros();
                self.cur &= self.cur - 1;
                return Some(self.idx as u64 * 64 + u64::from(bit));
            }
            self.idx += 1;
            self.cur = *self.words.get(self.idx)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn insert_contains_count() {
        let mut s = PageSet::new(130);
        assert!(s.insert(0));
        assert!(!s.insert(0));
        assert!(s.insert(129));
        assert!(!s.insert(130));
        assert_eq!(s.count(), 2);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 129]);
    }

    #[test]
    fn full_trims_tail_bits() {
        assert_eq!(PageSet::full(70).count(), 70);
        assert_eq!(PageSet::from_words(vec![u64::MAX; 4], 65).count(), 65);
    }

    #[test]
    fn confusion_counts() {
        let truth: PageSet = PageSet::from_words(vec![0b1110], 8);
        let measured = PageSet::from_words(vec![0b0111], 8);
        let c = measured.confusion(&truth);
        assert_eq!((c.true_pos, c.false_pos, c.false_neg), (2, 1, 1));
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn iter_matches_inserted(pages in proptest::collection::btree_set(0u64..5000, 0..300)) {
            let mut s = PageSet::new(5000);
            for &p in &pages { s.insert(p); }
            prop_assert_eq!(s.iter().collect::<Vec<_>>(), pages.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(s.count(), pages.len() as u64);
        }

        #[test]
        fn or_bits_at_matches_bitwise(at in 0u64..300, len in 1u64..400,
                                      bits in proptest::collection::vec(any::<u64>(), 7)) {
            let mut got = PageSet::new(768);
            got.or_bits_at(at, &bits, len);
            let mut want = PageSet::new(768);
            for i in 0..len {
                if bits[(i / 64) as usize] >> (i % 64) & 1 == 1 {
                    want.insert(at + i);
                }
            }
            prop_assert_eq!(&got, &want);
            got.remove_range(at, len);
            prop_assert!(got.is_empty());
        }

        #[test]
        fn remove_range_matches_loop(start in 0u64..300, count in 0u64..300) {
            let mut a = PageSet::full(400);
            let mut b = PageSet::full(400);
            a.remove_range(start, count);
            for p in start..(start + count).min(400) { b.remove(p); }
            prop_assert_eq!(a, b);
        }

        #[test]
        fn take_from_moves_and_counts(x in proptest::collection::btree_set(0u64..500, 0..80),
                                      y in proptest::collection::btree_set(0u64..500, 0..80)) {
            let mut a = PageSet::new(500);
            let mut b = PageSet::new(500);
            for &p in &x { a.insert(p); }
            for &p in &y { b.insert(p); }
            let mut want = a.clone();
            want.union_with(&b);
            let added = a.take_from(&mut b);
            prop_assert_eq!(added, y.difference(&x).count() as u64);
            prop_assert_eq!(a, want);
            prop_assert!(b.is_empty());
        }

        #[test]
        fn insert_range_matches_loop(start in 0u64..300, count in 0u64..300) {
            let mut a = PageSet::new(400);
            let mut b = PageSet::new(400);
            a.insert_range(start, count);
            for p in start..(start + count).min(400) { b.insert(p); }
            prop_assert_eq!(a, b);
        }
    }
}
