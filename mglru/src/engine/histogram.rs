//! `WorkingSetHistogram`: how many pages have gone how long without an observed access.
//!
//! A page's age is the age of the generation it last joined (its stored sequence number, which
//! survives merges), so the histogram resolves ages far older than the generation window. With
//! [`NewGeneration::EveryPass`](super::NewGeneration::EveryPass) that is the time since the pass
//! that last saw the page accessed; with slower policies it can overstate idleness by up to one
//! generation's lifetime.

use std::fmt::Write as _;
use std::time::Instant;

use super::generations::{Generations, NOT_RESIDENT};

/// Default bucket upper edges in ms: sub-second to the 2-minute mark of the far-memory literature
/// and beyond.
pub const DEFAULT_EDGES_MS: [u64; 10] = [
    100, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000,
];

/// Pages by age bucket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkingSetHistogram {
    /// Upper edges of the buckets in ms; the last bucket is open-ended.
    pub edges_ms: Vec<u64>,
    /// Pages per bucket, `edges_ms.len() + 1` entries.
    pub pages: Vec<u64>,
    /// Reclaimed pages (in no bucket).
    pub reclaimed: u64,
}

impl WorkingSetHistogram {
    /// Counts every page of `gens` at `now`; `edges_ms` must be increasing.
    pub fn from_generations(gens: &Generations, now: Instant, edges_ms: &[u64]) -> Self {
        // Count per stored sequence number first: one increment per page, then one age lookup per
        // generation ever opened instead of per page.
        let births = gens.births_ns();
        let mut per_seq = vec![0u64; births.len()];
        let mut reclaimed = 0;
        for &s in gens.stored_seqs() {
            if s == NOT_RESIDENT {
                reclaimed += 1;
            } else if let Some(c) = per_seq.get_mut(s as usize) {
                *c += 1;
            }
        }
        let mut pages = vec![0u64; edges_ms.len() + 1];
        for (seq, &n) in per_seq.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let age_ms = gens
                .age(seq as u32, now)
                .map_or(0, |a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX));
            let bucket = edges_ms.partition_point(|&e| e <= age_ms);
            pages[bucket] += n;
        }
        WorkingSetHistogram {
            edges_ms: edges_ms.to_vec(),
            pages,
            reclaimed,
        }
    }

    /// Label of bucket `i` ("< 100 ms", "1–2 s", "≥ 300 s").
    pub fn label(&self, i: usize) -> String {
        let fmt = |ms: u64| {
            if ms >= 1000 && ms.is_multiple_of(1000) {
                format!("{} s", ms / 1000)
            } else {
                format!("{ms} ms")
            }
        };
        match (
            i.checked_sub(1).map(|j| self.edges_ms[j]),
            self.edges_ms.get(i),
        ) {
            (None, Some(&hi)) => format!("< {}", fmt(hi)),
            (Some(lo), Some(&hi)) => format!("{} – {}", fmt(lo), fmt(hi)),
            (Some(lo), None) => format!(">= {}", fmt(lo)),
            (None, None) => "all".to_string(),
        }
    }

    /// Resident pages idle at least `ms` (bucket resolution: counts whole buckets at or above
    /// the edge equal to `ms`, or the next edge above it).
    pub fn pages_idle_at_least(&self, ms: u64) -> u64 {
        let first = self.edges_ms.partition_point(|&e| e < ms);
        self.pages[first + usize::from(self.edges_ms.get(first) == Some(&ms))..]
            .iter()
            .sum()
    }

    /// A text table with a bar per bucket.
    pub fn to_text(&self) -> String {
        let total: u64 = self.pages.iter().sum::<u64>() + self.reclaimed;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>18} {:>10} {:>10} {:>6}",
            "idle", "pages", "MiB", "%"
        );
        let mut row = |label: String, n: u64| {
            let pct = if total == 0 {
                0.0
            } else {
                n as f64 * 100.0 / total as f64
            };
            let bar = "#".repeat((pct / 2.0).round() as usize);
            let _ = writeln!(
                out,
                "{label:>18} {n:>10} {:>10.1} {pct:>6.1} {bar}",
                n as f64 * 4096.0 / (1 << 20) as f64
            );
        };
        for (i, &n) in self.pages.iter().enumerate() {
            row(self.label(i), n);
        }
        row("reclaimed".to_string(), self.reclaimed);
        out
    }
}
