//! The guest's read-tracking budget: faults per interval from a target slowdown.
//!
//! Each uffd-minor fault stalls a vCPU while the fault thread resolves it (50–90 µs on the
//! nested kvm_pvm host, far less on bare metal), so a fixed fault count is the wrong budget: it
//! is a different slowdown on every host. [`ReadBudget`] takes the slowdown the guest may pay
//! (e.g. 2 % of each interval) and divides by the cost of one fault, measured from the vCPU
//! threads' blocked time (wall − CPU − run-queue wait, from schedstat) over the intervals that had
//! faults, less the blocked time intervals without faults show (pausing and resuming vCPUs).
//! Guided arming turns the budget into an admission limit ([`next_admit_limit`]).

use std::time::Duration;

/// Cost of one guest fault assumed before any is measured (the middle of the 50–90 µs
/// `agelab bench uffd` measured on this host).
pub const DEFAULT_FAULT_COST: Duration = Duration::from_micros(70);

/// Faults an interval needs before its blocked time is taken as a measurement of their cost.
pub const MIN_FAULTS_TO_MEASURE: u64 = 32;

/// Weight of a new measurement in the running cost estimate.
const EWMA_WEIGHT: f64 = 0.25;

/// Bounds of a believable per-fault cost (a measurement outside is clamped).
const COST_RANGE_NS: (f64, f64) = (2_000.0, 5_000_000.0);

/// A target guest slowdown turned into a fault count per interval; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadBudget {
    target_pct: f64,
    cost_ns: f64,
    /// Blocked time per second of vCPU time with no faults (pausing, timer ticks), ns/s.
    baseline_ns_per_s: f64,
    measured: u64,
}

impl ReadBudget {
    /// A budget of `target_pct` % of each interval (e.g. 2.0), assuming [`DEFAULT_FAULT_COST`]
    /// until a measurement.
    pub fn new(target_pct: f64) -> Self {
        ReadBudget {
            target_pct: target_pct.max(0.0),
            cost_ns: DEFAULT_FAULT_COST.as_nanos() as f64,
            baseline_ns_per_s: 0.0,
            measured: 0,
        }
    }

    /// The target slowdown, %.
    pub fn target_pct(&self) -> f64 {
        self.target_pct
    }

    /// The per-fault cost now assumed.
    pub fn fault_cost(&self) -> Duration {
        Duration::from_nanos(self.cost_ns as u64)
    }

    /// Intervals whose blocked time measured the cost so far.
    pub fn measurements(&self) -> u64 {
        self.measured
    }

    /// Faults the guest may take in `interval` of `vcpus` vCPUs (each stalls one vCPU).
    pub fn faults_in(&self, interval: Duration, vcpus: usize) -> u64 {
        (self.target_pct / 100.0 * interval.as_nanos() as f64 * vcpus.max(1) as f64 / self.cost_ns)
            as u64
    }

    /// Learns from one interval: `faults` taken while the vCPUs were blocked for `stalled` in
    /// total over `vcpu_time` (interval × vCPUs).
    pub fn observe(&mut self, faults: u64, stalled: Duration, vcpu_time: Duration) {
        let secs = vcpu_time.as_secs_f64().max(1e-6);
        let stalled_ns = stalled.as_nanos() as f64;
        if faults == 0 {
            self.baseline_ns_per_s = if self.baseline_ns_per_s == 0.0 {
                stalled_ns / secs
            } else {
                (1.0 - EWMA_WEIGHT) * self.baseline_ns_per_s + EWMA_WEIGHT * stalled_ns / secs
            };
            return;
        }
        if faults < MIN_FAULTS_TO_MEASURE {
            return;
        }
        let net = (stalled_ns - self.baseline_ns_per_s * secs).max(0.0);
        let c = (net / faults as f64).clamp(COST_RANGE_NS.0, COST_RANGE_NS.1);
        self.cost_ns = if self.measured == 0 {
            c
        } else {
            (1.0 - EWMA_WEIGHT) * self.cost_ns + EWMA_WEIGHT * c
        };
        self.measured += 1;
    }
}

/// Time the vCPU threads were blocked in an epoch of `elapsed`: per vCPU, wall time minus CPU
/// time minus run-queue wait (uffd faults, swap-ins, pausing), summed.
pub fn stalled(elapsed: Duration, vcpu_cpu: &[Duration], runq_wait: &[Duration]) -> Duration {
    vcpu_cpu
        .iter()
        .zip(runq_wait.iter().chain(std::iter::repeat(&Duration::ZERO)))
        .map(|(c, w)| elapsed.saturating_sub(*c).saturating_sub(*w))
        .sum()
}

/// The next admission limit of guided arming: halved, and at most the budget, while the last
/// interval's faults exceed the budget; doubled (up to `max`) while they stay under half of it.
/// Cold pages armed never fault, so discovery runs at `max`; once the oldest generations hold hot
/// pages (every cold page gone), their faults cut admission to the budget at once (halving alone
/// from `max` took ~14 intervals on 64 MiB) and then until the fault rate fits it.
pub fn next_admit_limit(admit: u64, faults: u64, budget: u64, max: u64) -> u64 {
    if faults > budget {
        (admit / 2).min(budget).max(1)
    } else if faults * 2 <= budget {
        admit.saturating_mul(2).clamp(1, max.max(1))
    } else {
        admit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_target_times_interval_over_cost() {
        let b = ReadBudget::new(2.0);
        assert_eq!(
            b.faults_in(Duration::from_millis(250), 1),
            71,
            "2% of 250 ms / 70 µs"
        );
        assert_eq!(b.faults_in(Duration::from_millis(250), 2), 142);
        assert_eq!(
            ReadBudget::new(0.5).faults_in(Duration::from_secs(1), 1),
            71
        );
    }

    #[test]
    fn cost_is_measured_net_of_the_fault_free_baseline() {
        let mut b = ReadBudget::new(2.0);
        let s = Duration::from_secs(1);
        // 1 ms/s blocked with no faults; then 1000 faults and 21 ms blocked: 20 µs each.
        b.observe(0, Duration::from_millis(1), s);
        b.observe(10, Duration::from_millis(50), s);
        assert_eq!(b.measurements(), 0, "too few faults to measure");
        b.observe(1000, Duration::from_millis(21), s);
        assert_eq!(b.fault_cost(), Duration::from_micros(20));
        assert_eq!(b.faults_in(s, 1), 1000, "2% of 1 s / 20 µs");
        // Costlier faults move the estimate a quarter of the way.
        b.observe(1000, Duration::from_millis(101), s);
        assert_eq!(b.fault_cost(), Duration::from_micros(40));
    }

    #[test]
    fn stalled_is_wall_minus_cpu_minus_wait() {
        let ms = Duration::from_millis;
        assert_eq!(
            stalled(ms(100), &[ms(80), ms(100)], &[ms(5), ms(10)]),
            ms(15)
        );
        assert_eq!(stalled(ms(100), &[ms(90)], &[]), ms(10));
    }

    #[test]
    fn admission_halves_over_and_doubles_under() {
        let b = 71;
        assert_eq!(next_admit_limit(64, b + 1, b, 8192), 32);
        assert_eq!(
            next_admit_limit(8192, b + 1, b, 8192),
            b,
            "over: at most the budget"
        );
        assert_eq!(next_admit_limit(1, 10_000, b, 8192), 1);
        assert_eq!(next_admit_limit(64, 0, b, 8192), 128);
        assert_eq!(next_admit_limit(8000, 0, b, 8192), 8192);
        assert_eq!(
            next_admit_limit(64, b, b, 8192),
            64,
            "between half and all: hold"
        );
    }
}
