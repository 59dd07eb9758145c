//! Uniform page samples and what they say about the whole population.
//!
//! A sampling source arms `n` of `N` pages drawn uniformly without replacement, so the number of
//! accessed pages among them is hypergeometric: `k/n` is an unbiased estimate of the accessed
//! fraction of the population, and of any subset of it (a generation), whose sampled part is a
//! uniform sample of that subset too. The interval is Wilson's score interval with the finite
//! population correction (exact, zero width, when every page was armed).

use crate::source::Harvest;
use agelab_guest::rng::SplitMix64;
use agelab_vmm::PageSet;

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;
/// z for a two-sided 99% interval.
pub const Z99: f64 = 2.575_829_303_548_901;

/// Exactly `n` of the pages `0..len`, every subset of that size equally likely (Floyd's
/// algorithm: `n` draws, no rejection loop).
pub fn uniform_sample(len: u64, n: u64, rng: &mut SplitMix64) -> PageSet {
    let n = n.min(len);
    if n == len {
        return PageSet::full(len);
    }
    let mut s = PageSet::new(len);
    for j in len - n..len {
        let t = rng.below(j + 1);
        if !s.insert(t) {
            s.insert(j);
        }
    }
    s
}

/// The accessed share of a population estimated from a uniform sample, with its interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AccessEstimate {
    /// Pages in the population (a generation, or all guest pages).
    pub population: u64,
    /// Of which were armed (sampled).
    pub sampled: u64,
    /// Of which the guest accessed.
    pub hits: u64,
    /// Estimated accessed fraction (`hits / sampled`).
    pub fraction: f64,
    /// Lower bound of the fraction's interval.
    pub fraction_lo: f64,
    /// Upper bound of the fraction's interval.
    pub fraction_hi: f64,
    /// z of the interval (1.96 for 95%).
    pub z: f64,
}

impl AccessEstimate {
    /// From counts: `hits` accessed among `sampled` pages drawn uniformly from `population`.
    pub fn new(population: u64, sampled: u64, hits: u64, z: f64) -> Self {
        let (lo, p, hi) = wilson_fpc(population, sampled, hits, z);
        AccessEstimate {
            population,
            sampled,
            hits,
            fraction: p,
            fraction_lo: lo,
            fraction_hi: hi,
            z,
        }
    }

    /// The estimate for `group` from a harvest (pages of `group` armed in it, and accessed).
    pub fn of_group(group: &PageSet, harvest: &Harvest, z: f64) -> Self {
        let population = group.count();
        let (sampled, hits) = match &harvest.observed {
            None => (population, count_and(group, &harvest.accessed)),
            Some(obs) => {
                let mut in_sample = group.clone();
                in_sample.intersect_with(obs);
                (in_sample.count(), count_and(&in_sample, &harvest.accessed))
            }
        };
        Self::new(population, sampled, hits, z)
    }

    /// Estimated accessed pages in the population.
    pub fn pages(&self) -> f64 {
        self.fraction * self.population as f64
    }

    /// Interval of accessed pages, narrowed by what the sample proves: at least `hits` pages
    /// were accessed and at least `sampled - hits` were not.
    pub fn pages_interval(&self) -> (f64, f64) {
        let n = self.population as f64;
        let lo = (self.fraction_lo * n).max(self.hits as f64);
        let hi = (self.fraction_hi * n).min((self.population - (self.sampled - self.hits)) as f64);
        (lo, hi)
    }

    /// Whether `true_pages` accessed pages lie inside the interval.
    pub fn covers(&self, true_pages: u64) -> bool {
        let (lo, hi) = self.pages_interval();
        // Round outward: the bounds are real numbers, the truth an integer.
        (lo.floor()..=hi.ceil()).contains(&(true_pages as f64))
    }
}

impl std::fmt::Display for AccessEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (lo, hi) = self.pages_interval();
        write!(
            f,
            "{:.0} of {} pages accessed [{:.0}, {:.0}] ({}/{} sampled, z={:.2})",
            self.pages(),
            self.population,
            lo,
            hi,
            self.hits,
            self.sampled,
            self.z
        )
    }
}

fn count_and(a: &PageSet, b: &PageSet) -> u64 {
    a.words()
        .iter()
        .zip(b.words())
        .map(|(x, y)| u64::from((x & y).count_ones()))
        .sum()
}

/// Wilson score interval `(lo, p, hi)` for `k` of `n` sampled without replacement from `big_n`.
fn wilson_fpc(big_n: u64, n: u64, k: u64, z: f64) -> (f64, f64, f64) {
    if n == 0 {
        return (0.0, 0.0, 1.0);
    }
    let p = k as f64 / n as f64;
    if n >= big_n {
        return (p, p, p);
    }
    // Sampling without replacement shrinks the variance by (N - n) / (N - 1): an effective
    // sample size of n (N - 1) / (N - n) in the with-replacement formula.
    let n_eff = n as f64 * (big_n - 1) as f64 / (big_n - n) as f64;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_eff;
    let center = (p + z2 / (2.0 * n_eff)) / denom;
    let half = z / denom * (p * (1.0 - p) / n_eff + z2 / (4.0 * n_eff * n_eff)).sqrt();
    ((center - half).max(0.0), p, (center + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_has_exact_size_and_is_uniform() {
        let mut rng = SplitMix64::new(42);
        let (len, n, rounds) = (64u64, 16u64, 20_000u64);
        let mut hits = vec![0u64; len as usize];
        for _ in 0..rounds {
            let s = uniform_sample(len, n, &mut rng);
            assert_eq!(s.count(), n);
            for p in s.iter() {
                hits[p as usize] += 1;
            }
        }
        // Each page is in the sample with probability n/len = 1/4: 5000 expected, sd ~61.
        for (p, &h) in hits.iter().enumerate() {
            assert!((4700..=5300).contains(&h), "page {p} sampled {h} times");
        }
        assert_eq!(uniform_sample(10, 99, &mut rng).count(), 10);
    }

    #[test]
    fn interval_covers_truth_at_nominal_rate() {
        // Population of 10000 with 3000 accessed; sample 400 many times.
        let mut rng = SplitMix64::new(7);
        let (big_n, acc, n) = (10_000u64, 3_000u64, 400u64);
        let mut covered = 0;
        let trials = 2000;
        for _ in 0..trials {
            let s = uniform_sample(big_n, n, &mut rng);
            let k = s.iter().filter(|&p| p < acc).count() as u64;
            if AccessEstimate::new(big_n, n, k, Z95).covers(acc) {
                covered += 1;
            }
        }
        let rate = covered as f64 / trials as f64;
        assert!((0.93..=0.975).contains(&rate), "coverage {rate}");
    }

    #[test]
    fn full_sample_is_exact() {
        let e = AccessEstimate::new(100, 100, 37, Z95);
        assert_eq!(e.pages_interval(), (37.0, 37.0));
        assert!(e.covers(37) && !e.covers(38));
        let none = AccessEstimate::new(100, 0, 0, Z95);
        assert_eq!(none.pages_interval(), (0.0, 100.0));
    }
}
