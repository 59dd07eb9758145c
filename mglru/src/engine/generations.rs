//! `Generations`: the generation number of every guest page, and per-generation page counts.
//!
//! Every page holds an absolute `u32` sequence number: the generation it was last promoted into.
//! A page's *effective* generation is `max(stored, min_seq)`: when the oldest generations merge,
//! their pages belong to the new oldest one without being rewritten, so a merge costs O(1) instead
//! of a walk over every page. The stored number is kept for ages: it says which generation the
//! page last joined even after that generation merged away.
//!
//! Counts live in a fixed ring indexed by `seq % MAX_NR_GENS`; the window never holds more than
//! `MAX_NR_GENS` generations, so slots never collide. Reclaimed pages hold [`NOT_RESIDENT`] and are
//! counted in no generation.
//!
//! Sequence numbers are `u32`: at one generation per 10 ms pass they last over a year.

use std::time::{Duration, Instant};

use agelab_vmm::PageSet;

use super::policy::{InitialPlacement, MAX_NR_GENS, MIN_NR_GENS};

/// Stored sequence number of a page that was reclaimed and has not come back.
pub const NOT_RESIDENT: u32 = u32::MAX;

/// A failure in generation bookkeeping.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenerationsError {
    /// A page index past the end of guest memory.
    #[error("page {page} is outside guest memory ({pages} pages)")]
    PageOutOfRange {
        /// The page index.
        page: u64,
        /// Number of pages tracked.
        pages: u64,
    },
    /// A page set whose capacity differs from the number of tracked pages.
    #[error("page set holds {got} pages, the engine tracks {expected}")]
    CapacityMismatch {
        /// Capacity of the set passed in.
        got: u64,
        /// Pages tracked.
        expected: u64,
    },
}

/// One generation as seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation {
    /// Sequence number.
    pub seq: u32,
    /// When it was opened.
    pub born: Instant,
    /// Pages in it.
    pub pages: u64,
}

/// What a promotion did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Promotion {
    /// Resident pages moved into the youngest generation.
    pub promoted: u64,
    /// Pages accessed that were already in the youngest generation.
    pub already_young: u64,
    /// Reclaimed pages that came back (refaults), now in the youngest generation.
    pub refaulted: u64,
}

/// Per-page generation numbers with per-generation counts.
#[derive(Clone, Debug)]
pub struct Generations {
    seqs: Vec<u32>,
    counts: [u64; MAX_NR_GENS],
    min_seq: u32,
    max_seq: u32,
    /// Birth of every generation ever opened, in ns since `epoch`, indexed by sequence number:
    /// pages keep their stored sequence number after merges, and their ages need its birth.
    births_ns: Vec<u64>,
    epoch: Instant,
    reclaimed: u64,
    max_gens: usize,
}

fn slot(seq: u32) -> usize {
    seq as usize % MAX_NR_GENS
}

impl Generations {
    /// Tracks `pages` pages in `MIN_NR_GENS` fresh generations; `max_gens` must already be valid.
    pub fn new(pages: u64, max_gens: usize, initial: InitialPlacement, now: Instant) -> Self {
        let n = usize::try_from(pages).expect("guest page count exceeds the address space");
        let max_gens = max_gens.clamp(MIN_NR_GENS, MAX_NR_GENS);
        let min_seq = 0;
        let max_seq = (MIN_NR_GENS - 1) as u32;
        let start = match initial {
            InitialPlacement::Youngest => max_seq,
            InitialPlacement::Oldest => min_seq,
        };
        let mut counts = [0; MAX_NR_GENS];
        counts[slot(start)] = pages;
        Generations {
            seqs: vec![start; n],
            counts,
            min_seq,
            max_seq,
            births_ns: vec![0; MIN_NR_GENS],
            epoch: now,
            reclaimed: 0,
            max_gens,
        }
    }

    /// Number of pages tracked (resident or not).
    pub fn len(&self) -> u64 {
        self.seqs.len() as u64
    }

    /// Whether no page is tracked.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Oldest generation.
    pub fn min_seq(&self) -> u32 {
        self.min_seq
    }

    /// Youngest generation.
    pub fn max_seq(&self) -> u32 {
        self.max_seq
    }

    /// Generations currently in the window.
    pub fn nr_gens(&self) -> usize {
        (self.max_seq - self.min_seq) as usize + 1
    }

    /// Limit on generations.
    pub fn max_gens(&self) -> usize {
        self.max_gens
    }

    /// Pages in generation `seq` (0 outside the window).
    pub fn pages_in(&self, seq: u32) -> u64 {
        if (self.min_seq..=self.max_seq).contains(&seq) {
            self.counts[slot(seq)]
        } else {
            0
        }
    }

    /// Resident pages (in some generation).
    pub fn resident(&self) -> u64 {
        self.len() - self.reclaimed
    }

    /// Pages marked reclaimed that have not come back.
    pub fn reclaimed(&self) -> u64 {
        self.reclaimed
    }

    /// When generation `seq` was opened (any generation ever opened, not only the window).
    pub fn born(&self, seq: u32) -> Option<Instant> {
        self.births_ns
            .get(seq as usize)
            .map(|&ns| self.epoch + Duration::from_nanos(ns))
    }

    /// Age of generation `seq` at `now`.
    pub fn age(&self, seq: u32, now: Instant) -> Option<Duration> {
        self.born(seq).map(|b| now.saturating_duration_since(b))
    }

    /// A lower bound on how long the pages of generation `seq` have gone unaccessed: a page
    /// accessed after generation `seq + 1` opened would sit in a younger generation. Zero for the
    /// youngest generation.
    pub fn idle_at_least(&self, seq: u32, now: Instant) -> Duration {
        if seq >= self.max_seq {
            return Duration::ZERO;
        }
        self.age(seq + 1, now).unwrap_or_default()
    }

    /// The generations in the window, oldest first.
    pub fn generations(&self) -> impl Iterator<Item = Generation> + '_ {
        (self.min_seq..=self.max_seq).map(|seq| Generation {
            seq,
            born: self.born(seq).unwrap_or(self.epoch),
            pages: self.counts[slot(seq)],
        })
    }

    /// The raw stored sequence numbers ([`NOT_RESIDENT`] for reclaimed pages), for walkers that
    /// summarise every page (histograms, heatmaps).
    pub fn stored_seqs(&self) -> &[u32] {
        &self.seqs
    }

    /// Birth times in ns since the engine's epoch, indexed by sequence number.
    pub fn births_ns(&self) -> &[u64] {
        &self.births_ns
    }

    /// The instant birth times are measured from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Effective generation of `page`, or `None` when reclaimed or out of range.
    pub fn seq_of(&self, page: u64) -> Option<u32> {
        let s = *self.seqs.get(usize::try_from(page).ok()?)?;
        (s != NOT_RESIDENT).then(|| s.max(self.min_seq))
    }

    /// Stored (last joined) generation of `page`, or `None` when reclaimed or out of range.
    pub fn last_joined(&self, page: u64) -> Option<u32> {
        let s = *self.seqs.get(usize::try_from(page).ok()?)?;
        (s != NOT_RESIDENT).then_some(s)
    }

    /// The resident pages of the `n` oldest generations (never the youngest, where accessed pages
    /// land), without side effects: what a sampling source arms so it watches the pages whose
    /// age is in question (unlike eviction candidates, no tier protection moves pages).
    pub fn pages_in_oldest(&self, n: usize) -> PageSet {
        let mut out = PageSet::new(self.len());
        let Some(last) = self.oldest_last_seq(n) else {
            return out;
        };
        // Stored numbers below min_seq read as min_seq (merged), NOT_RESIDENT is above any seq.
        for (wi, word) in out.words_mut().iter_mut().enumerate() {
            let base = wi * 64;
            let chunk = &self.seqs[base..(base + 64).min(self.seqs.len())];
            for (bit, &s) in chunk.iter().enumerate() {
                if s <= last {
                    *word |= 1 << bit;
                }
            }
        }
        out
    }

    /// The youngest sequence number among the `n` oldest generations, the youngest generation
    /// excluded; `None` when `n` is 0 or only the youngest generation exists.
    pub fn oldest_last_seq(&self, n: usize) -> Option<u32> {
        let n = u32::try_from(n).ok().filter(|&n| n > 0)?;
        let last = self
            .min_seq
            .saturating_add(n - 1)
            .min(self.max_seq.checked_sub(1)?);
        (last >= self.min_seq).then_some(last)
    }

    /// Opens a generation born at `now`, merging the two oldest first when the window is full.
    /// Returns how many times `min_seq` advanced (0 or 1).
    pub fn open_generation(&mut self, now: Instant) -> u32 {
        let mut advanced = 0;
        if self.nr_gens() >= self.max_gens {
            self.merge_oldest();
            advanced = 1;
        }
        self.max_seq = self
            .max_seq
            .checked_add(1)
            .filter(|&s| s != NOT_RESIDENT)
            .expect("generation sequence numbers exhausted");
        self.counts[slot(self.max_seq)] = 0;
        let ns =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        self.births_ns.push(ns);
        advanced
    }

    /// Moves every page of the oldest generation into the next one (`min_seq` advances). Pages are
    /// not touched: their stored numbers now fall below `min_seq` and read as the new oldest.
    fn merge_oldest(&mut self) {
        debug_assert!(self.nr_gens() > 1);
        let moved = std::mem::take(&mut self.counts[slot(self.min_seq)]);
        self.min_seq += 1;
        self.counts[slot(self.min_seq)] += moved;
    }

    /// Drops empty oldest generations while more than `MIN_NR_GENS` remain, as the kernel does
    /// once eviction has emptied them. Returns how many times `min_seq` advanced.
    pub fn drop_empty_oldest(&mut self) -> u32 {
        let mut advanced = 0;
        while self.nr_gens() > MIN_NR_GENS && self.counts[slot(self.min_seq)] == 0 {
            self.min_seq += 1;
            advanced += 1;
        }
        advanced
    }

    /// Moves every page of `accessed` into the youngest generation. Reclaimed pages found accessed
    /// become resident again and are passed to `on_refault`.
    ///
    /// Works word by word and skips zero words, so its cost follows the number of accessed pages.
    pub fn promote(
        &mut self,
        accessed: &PageSet,
        mut on_refault: impl FnMut(u64),
    ) -> Result<Promotion, GenerationsError> {
        if accessed.capacity() != self.len() {
            return Err(GenerationsError::CapacityMismatch {
                got: accessed.capacity(),
                expected: self.len(),
            });
        }
        let min_seq = self.min_seq;
        let max_seq = self.max_seq;
        // Decrements gathered locally: one small array the compiler keeps hot, committed once.
        let mut left = [0u64; MAX_NR_GENS];
        let mut stats = Promotion::default();
        let n = self.seqs.len();
        // One page's move, inlined into both loops below.
        let mut visit = |s: &mut u32, page: usize| {
            let old = *s;
            if old < max_seq {
                left[slot(old.max(min_seq))] += 1;
                stats.promoted += 1;
                *s = max_seq;
            } else if old == max_seq {
                stats.already_young += 1;
            } else {
                stats.refaulted += 1;
                *s = max_seq;
                on_refault(page as u64);
            }
        };
        for (wi, &word) in accessed.words().iter().enumerate() {
            if word == 0 {
                continue;
            }
            let base = wi * 64;
            let chunk = &mut self.seqs[base..(base + 64).min(n)];
            if word == u64::MAX && chunk.len() == 64 {
                // Dense word: a straight loop without bit scanning.
                for (i, s) in chunk.iter_mut().enumerate() {
                    visit(s, base + i);
                }
                continue;
            }
            let mut bits = word;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                visit(&mut chunk[bit], base + bit);
            }
        }
        for (c, l) in self.counts.iter_mut().zip(left) {
            *c -= l;
        }
        self.counts[slot(max_seq)] += stats.promoted + stats.refaulted;
        self.reclaimed -= stats.refaulted;
        Ok(stats)
    }

    /// Marks `page` reclaimed: it leaves its generation. Returns its effective generation, or
    /// `None` when it was already reclaimed.
    pub fn reclaim(&mut self, page: u64) -> Result<Option<u32>, GenerationsError> {
        let pages = self.len();
        let s = usize::try_from(page)
            .ok()
            .and_then(|i| self.seqs.get_mut(i))
            .ok_or(GenerationsError::PageOutOfRange { page, pages })?;
        if *s == NOT_RESIDENT {
            return Ok(None);
        }
        let eff = (*s).max(self.min_seq);
        *s = NOT_RESIDENT;
        self.counts[slot(eff)] -= 1;
        self.reclaimed += 1;
        Ok(Some(eff))
    }

    /// Moves resident `page` into generation `seq` (inside the window), e.g. one generation up
    /// when eviction protects it.
    pub fn move_page(&mut self, page: u64, seq: u32) -> Result<(), GenerationsError> {
        let pages = self.len();
        let min_seq = self.min_seq;
        let s = usize::try_from(page)
            .ok()
            .and_then(|i| self.seqs.get_mut(i))
            .ok_or(GenerationsError::PageOutOfRange { page, pages })?;
        if *s == NOT_RESIDENT {
            return Ok(());
        }
        let seq = seq.clamp(min_seq, self.max_seq);
        self.counts[slot((*s).max(min_seq))] -= 1;
        self.counts[slot(seq)] += 1;
        *s = seq;
        Ok(())
    }
}
