//! How much to reclaim each interval: a PI controller on the refault rate, capped like TMO.
//!
//! # Signal
//!
//! The SLO is Google's far-memory one: refaults per minute at most `slo_pct_per_min` percent of
//! the working set (default 0.2%). Each interval the loop reports refaults seen and the working
//! set (pages accessed within `ws_window`, 60 s by default); the controller turns them into a
//! rate `r` in percent of the working set per minute and smooths it with an exponential moving
//! average of time constant `tau` (a single refault burst should slow reclaim, not stop it).
//!
//! # Control law
//!
//! ```text
//! e  = clamp((target - r̄) / target, -e_min, 1)       error, 1 = no refaults at all
//! I  = clamp(I + e·dt, -1/ki, (1 - kp)/ki)             integral with anti-windup
//! u  = clamp(kp·e + ki·I, 0, 1)                        share of the cap to use
//! n  = u · cap(dt),   cap(dt) = max_step · pages · dt / step_period
//! ```
//!
//! With no refaults `e = 1`: reclaim starts at `kp` of the cap and reaches the full cap after
//! `(1 - kp) / ki` seconds of integration. A refault rate above the target makes `e` negative,
//! the proportional term cuts the step at once and the integral keeps it low until the rate has
//! been below target for a while: reclaim backs off exactly when the victims were wrong. *Which*
//! pages go is the policy's business; the engine policies only offer pages idle for at least the
//! engine's `min_ttl`, the age gate (Google uses 120 s; short benchmarks use a few seconds).
//!
//! # Parameters and defaults
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `slo_pct_per_min` | 0.2 | target refaults, % of working set per minute |
//! | `max_step_pct` | 1.0 | cap, % of guest memory per `step_period` (TMO: 1% every 6 s) |
//! | `step_period` | 6 s | period of the cap |
//! | `kp` | 0.5 | proportional gain |
//! | `ki` | 0.25 /s | integral gain |
//! | `tau` | 5 s | smoothing of the refault rate |
//! | `e_min` | 4 | most negative error (bounds the back-off kick) |
//! | `ws_window` | 60 s | working set = pages accessed within this window |
//! | `min_ws_pct` | 1 | floor of the working set, % of memory (no divide-by-zero on idle guests) |

use std::time::Duration;

/// Parameters of the controller; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ControllerConfig {
    /// Target refaults, percent of the working set per minute.
    pub slo_pct_per_min: f64,
    /// Cap: percent of guest memory per `step_period`.
    pub max_step_pct: f64,
    /// Period of the cap.
    pub step_period: Duration,
    /// Proportional gain.
    pub kp: f64,
    /// Integral gain, per second.
    pub ki: f64,
    /// Time constant of the refault-rate average.
    pub tau: Duration,
    /// Most negative error.
    pub e_min: f64,
    /// Working-set window.
    pub ws_window: Duration,
    /// Working-set floor, percent of guest memory.
    pub min_ws_pct: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            slo_pct_per_min: 0.2,
            max_step_pct: 1.0,
            step_period: Duration::from_secs(6),
            kp: 0.5,
            ki: 0.25,
            tau: Duration::from_secs(5),
            e_min: 4.0,
            ws_window: Duration::from_secs(60),
            min_ws_pct: 1.0,
        }
    }
}

/// What the controller decided for one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ControlStep {
    /// Measured refault rate this interval, % of working set per minute.
    pub rate: f64,
    /// Smoothed rate.
    pub rate_avg: f64,
    /// Error.
    pub error: f64,
    /// Integral state.
    pub integral: f64,
    /// Share of the cap used.
    pub u: f64,
    /// Pages to reclaim.
    pub pages: u64,
}

/// The PI controller; see the module docs.
#[derive(Clone, Debug)]
pub struct ReclaimController {
    cfg: ControllerConfig,
    total_pages: u64,
    rate_avg: Option<f64>,
    integral: f64,
    /// Fractional pages carried to the next interval (short intervals round down to 0 otherwise).
    carry: f64,
}

impl ReclaimController {
    /// A controller for a guest of `total_pages` pages.
    pub fn new(cfg: ControllerConfig, total_pages: u64) -> Self {
        ReclaimController {
            cfg,
            total_pages,
            rate_avg: None,
            integral: 0.0,
            carry: 0.0,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    /// Refault rate in percent of the working set per minute.
    pub fn rate_pct_per_min(&self, refaults: u64, ws_pages: u64, dt: Duration) -> f64 {
        let floor = self.cfg.min_ws_pct / 100.0 * self.total_pages as f64;
        let ws = (ws_pages as f64).max(floor).max(1.0);
        let minutes = dt.as_secs_f64().max(1e-6) / 60.0;
        refaults as f64 / ws / minutes * 100.0
    }

    /// One interval of length `dt` with `refaults` refaults and a working set of `ws_pages`.
    pub fn step(&mut self, dt: Duration, refaults: u64, ws_pages: u64) -> ControlStep {
        let c = self.cfg;
        let dts = dt.as_secs_f64();
        let rate = self.rate_pct_per_min(refaults, ws_pages, dt);
        let alpha = 1.0 - (-dts / c.tau.as_secs_f64().max(1e-6)).exp();
        let avg = match self.rate_avg {
            None => rate,
            Some(a) => a + alpha * (rate - a),
        };
        self.rate_avg = Some(avg);
        let target = c.slo_pct_per_min.max(1e-9);
        let e = ((target - avg) / target).clamp(-c.e_min, 1.0);
        if c.ki > 0.0 {
            self.integral = (self.integral + e * dts).clamp(-1.0 / c.ki, (1.0 - c.kp) / c.ki);
        }
        let u = (c.kp * e + c.ki * self.integral).clamp(0.0, 1.0);
        let cap = c.max_step_pct / 100.0
            * self.total_pages as f64
            * (dts / c.step_period.as_secs_f64().max(1e-6));
        let want = u * cap + self.carry;
        let pages = want.floor().max(0.0);
        self.carry = if u > 0.0 { want - pages } else { 0.0 };
        ControlStep {
            rate,
            rate_avg: avg,
            error: e,
            integral: self.integral,
            u,
            pages: pages as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_up_without_refaults_and_backs_off_on_refaults() {
        let cfg = ControllerConfig {
            max_step_pct: 10.0,
            step_period: Duration::from_secs(1),
            ..ControllerConfig::default()
        };
        let mut c = ReclaimController::new(cfg, 100_000);
        let dt = Duration::from_millis(500);
        let first = c.step(dt, 0, 10_000);
        // kp·1 of the cap plus a little integral: about half of 5000 pages.
        assert!(first.pages > 2000 && first.pages < 3500, "{first:?}");
        let mut last = first;
        for _ in 0..20 {
            last = c.step(dt, 0, 10_000);
        }
        assert_eq!(last.u, 1.0);
        assert_eq!(last.pages, 5000);
        // 100 refaults in 0.5 s over 10k pages = 120%/min, far above 0.2%: stop.
        let hit = c.step(dt, 100, 10_000);
        assert_eq!(hit.pages, 0, "{hit:?}");
    }

    #[test]
    fn rate_is_percent_of_ws_per_minute() {
        let c = ReclaimController::new(ControllerConfig::default(), 1000);
        let r = c.rate_pct_per_min(2, 1000, Duration::from_secs(60));
        assert!((r - 0.2).abs() < 1e-9);
    }
}
