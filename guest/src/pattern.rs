//! Access patterns: the generator that the guest runs and the host replays, op for op.

use crate::rng::SplitMix64;

/// Pages per 2 MiB unit.
pub const PAGES_PER_2M: u64 = 512;

/// Which pages a workload picks.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternKind {
    /// Unit `i mod n`, in order.
    Sequential = 0,
    /// Uniformly random units.
    Uniform = 1,
    /// Zipf-distributed units (alias table prepared by the host).
    Zipfian = 2,
    /// The first `hot_units` units receive a share `hot_p32 / 2^32` of the accesses.
    HotCold = 3,
    /// A window of `window` units, moved by `shift` units every `phase_ops` accesses.
    PhaseShift = 4,
    /// Unit `(i * stride) mod n`.
    Strided = 5,
}

impl PatternKind {
    /// Decodes a raw value.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            0 => Some(PatternKind::Sequential),
            1 => Some(PatternKind::Uniform),
            2 => Some(PatternKind::Zipfian),
            3 => Some(PatternKind::HotCold),
            4 => Some(PatternKind::PhaseShift),
            5 => Some(PatternKind::Strided),
            _ => None,
        }
    }
}

/// One entry of a Walker alias table (probability scaled to 2^32, alias index).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AliasEntry {
    /// Probability of keeping this index, times 2^32.
    pub keep_p32: u32,
    /// Index taken otherwise.
    pub alias: u32,
}

/// Pattern parameters, shared verbatim between host and guest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatternParams {
    /// A [`PatternKind`] value.
    pub kind: u64,
    /// 4 KiB pages in the region.
    pub pages: u64,
    /// Pages per unit: 1 (4 KiB granularity) or 512 (2 MiB).
    pub unit_pages: u64,
    /// HotCold: number of hot units.
    pub hot_units: u64,
    /// HotCold: probability of a hot access, times 2^32.
    pub hot_p32: u64,
    /// Strided: stride in units.
    pub stride: u64,
    /// PhaseShift: working-set size in units.
    pub window: u64,
    /// PhaseShift: accesses per phase.
    pub phase_ops: u64,
    /// PhaseShift: units the window moves each phase.
    pub shift: u64,
    /// Probability that an access is a write, times 2^32 (0 = read only, 2^32 = write only).
    pub write_p32: u64,
    /// Word offset (0..512) every access uses, or `u64::MAX` to rotate through the page.
    pub fixed_word: u64,
    /// PhaseShift: phases already elapsed before this epoch (host-driven, time-based shifting).
    pub phase_base: u64,
}

/// One access: page within the region, word within the page, read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Page index within the region.
    pub page: u64,
    /// Word (8-byte) index within the page, `0..512`.
    pub word: u64,
    /// Whether the access stores.
    pub write: bool,
}

/// The per-op generator.
#[derive(Debug)]
pub struct Generator<'a> {
    p: PatternParams,
    units: u64,
    rng: SplitMix64,
    i: u64,
    table: &'a [AliasEntry],
}

/// Probability of a write for an always-write workload.
pub const ALWAYS: u64 = 1 << 32;

impl<'a> Generator<'a> {
    /// A generator over `p` seeded with `seed`; `table` is the zipf alias table (one entry per
    /// unit) and may be empty for other patterns.
    #[inline(always)]
    pub fn new(p: &PatternParams, seed: u64, table: &'a [AliasEntry]) -> Self {
        let unit_pages = if p.unit_pages == 0 { 1 } else { p.unit_pages };
        let mut p = *p;
        p.unit_pages = unit_pages;
        Generator {
            units: p.pages / unit_pages,
            p,
            rng: SplitMix64::new(seed),
            i: 0,
            table,
        }
    }

    /// Units in the region.
    pub fn units(&self) -> u64 {
        self.units
    }

    #[inline(always)]
    fn unit(&mut self) -> u64 {
        let n = self.units;
        let i = self.i;
        match self.p.kind {
            0 => {
                if n == 0 {
                    0
                } else {
                    i % n
                }
            }
            2 => {
                let k = self.rng.below(self.table.len() as u64) as usize;
                if k >= self.table.len() {
                    return 0;
                }
                // SAFETY: `k < table.len()` was checked just above.
                let e = unsafe { *self.table.get_unchecked(k) };
                if self.rng.chance(u64::from(e.keep_p32)) {
                    k as u64
                } else {
                    u64::from(e.alias)
                }
            }
            3 => {
                let hot = self.p.hot_units;
                if self.rng.chance(self.p.hot_p32) || hot >= n {
                    self.rng.below(hot.min(n))
                } else {
                    hot + self.rng.below(n - hot)
                }
            }
            4 => {
                let phase = self
                    .p
                    .phase_base
                    .wrapping_add(i.checked_div(self.p.phase_ops).unwrap_or(0));
                let start = phase.wrapping_mul(self.p.shift);
                let off = self.rng.below(self.p.window.min(n));
                if n == 0 {
                    0
                } else {
                    (start.wrapping_add(off)) % n
                }
            }
            5 => {
                if n == 0 {
                    0
                } else {
                    (i.wrapping_mul(self.p.stride)) % n
                }
            }
            _ => self.rng.below(n),
        }
    }

    /// The next access.
    #[inline(always)]
    pub fn next_access(&mut self) -> Access {
        let unit = self.unit();
        let i = self.i;
        self.i = i.wrapping_add(1);
        let sub = if self.p.unit_pages > 1 {
            (i.wrapping_mul(0x9e37_79b9)) % self.p.unit_pages
        } else {
            0
        };
        let write = match self.p.write_p32 {
            0 => false,
            w if w >= ALWAYS => true,
            w => self.rng.chance(w),
        };
        let word = if self.p.fixed_word < 512 {
            self.p.fixed_word
        } else {
            (i.wrapping_mul(9)) & 511
        };
        Access {
            page: unit * self.p.unit_pages + sub,
            word,
            write,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn params(kind: PatternKind, pages: u64) -> PatternParams {
        PatternParams {
            kind: kind as u64,
            pages,
            unit_pages: 1,
            fixed_word: u64::MAX,
            ..Default::default()
        }
    }

    #[test]
    fn sequential_and_strided_are_closed_form() {
        let mut g = Generator::new(&params(PatternKind::Sequential, 10), 1, &[]);
        let v: Vec<u64> = (0..12).map(|_| g.next_access().page).collect();
        assert_eq!(v, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
        let mut p = params(PatternKind::Strided, 10);
        p.stride = 3;
        let mut g = Generator::new(&p, 1, &[]);
        let v: Vec<u64> = (0..4).map(|_| g.next_access().page).collect();
        assert_eq!(v, [0, 3, 6, 9]);
    }

    #[test]
    fn hotcold_stays_in_region_and_prefers_hot() {
        let mut p = params(PatternKind::HotCold, 1000);
        p.hot_units = 100;
        p.hot_p32 = (ALWAYS * 9) / 10;
        let mut g = Generator::new(&p, 3, &[]);
        let mut hot = 0;
        for _ in 0..100_000 {
            let a = g.next_access();
            assert!(a.page < 1000);
            hot += u64::from(a.page < 100);
        }
        assert!((89_000..91_000).contains(&hot), "hot={hot}");
    }

    #[test]
    fn two_mib_units_touch_subpages() {
        let mut p = params(PatternKind::Uniform, 2048);
        p.unit_pages = PAGES_PER_2M;
        let mut g = Generator::new(&p, 3, &[]);
        for _ in 0..1000 {
            assert!(g.next_access().page < 2048);
        }
    }
}
