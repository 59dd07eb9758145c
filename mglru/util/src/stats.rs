//! Small-sample statistics for `agelab ab` and `agelab reclaim`: medians, mean with a 95% confidence interval from Student's t
//! distribution, and Welch's unequal-variance t-test. The t distribution's CDF comes from the
//! regularized incomplete beta function (Lentz's continued fraction), its quantile from bisection
//! on the CDF; no statistics crate.

/// Mean, sample standard deviation and the half-width of the 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Arithmetic mean (NaN without samples).
    pub mean: f64,
    /// Sample standard deviation (n − 1 denominator); 0 with fewer than 2 samples.
    pub sd: f64,
    /// Half-width of the two-sided 95% CI of the mean, `t(0.975, n−1)·sd/√n`; `None` below 2
    /// samples.
    pub ci95: Option<f64>,
}

impl Summary {
    /// Summarises `xs`.
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        if n < 2 {
            return Summary {
                n,
                mean,
                sd: 0.0,
                ci95: None,
            };
        }
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = var.sqrt();
        Summary {
            n,
            mean,
            sd,
            ci95: Some(t_quantile(0.975, (n - 1) as f64) * sd / (n as f64).sqrt()),
        }
    }
}

/// The result of Welch's two-sample t-test (two-sided).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Welch {
    /// The t statistic of mean(a) − mean(b) (±infinity when both samples are constant and differ).
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom (NaN when both samples are constant).
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

impl Welch {
    /// Whether the difference is significant at level `alpha` (e.g. 0.05).
    pub fn significant(&self, alpha: f64) -> bool {
        self.p < alpha
    }
}

/// Welch's t-test of `a` against `b`; `None` unless both have at least 2 samples.
pub fn welch(a: &[f64], b: &[f64]) -> Option<Welch> {
    let (sa, sb) = (Summary::of(a), Summary::of(b));
    if sa.n < 2 || sb.n < 2 {
        return None;
    }
    let (va, vb) = (sa.sd.powi(2) / sa.n as f64, sb.sd.powi(2) / sb.n as f64);
    let se2 = va + vb;
    let diff = sa.mean - sb.mean;
    if se2 == 0.0 {
        // Both constant: identical means are no difference, different ones are certain.
        return Some(if diff == 0.0 {
            Welch {
                t: 0.0,
                df: f64::NAN,
                p: 1.0,
            }
        } else {
            Welch {
                t: diff.signum() * f64::INFINITY,
                df: f64::NAN,
                p: 0.0,
            }
        });
    }
    let t = diff / se2.sqrt();
    let df = se2.powi(2) / (va.powi(2) / (sa.n - 1) as f64 + vb.powi(2) / (sb.n - 1) as f64);
    let p = (2.0 * (1.0 - t_cdf(t.abs(), df))).clamp(0.0, 1.0);
    Some(Welch { t, df, p })
}

/// CDF of Student's t distribution with `df` degrees of freedom (`df` > 0, may be fractional).
pub fn t_cdf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return if t > 0.0 { 1.0 } else { 0.0 };
    }
    // P(|T| > |t|) = I_x(df/2, 1/2) with x = df / (df + t²).
    let tail = 0.5 * inc_beta(df / 2.0, 0.5, df / (df + t * t));
    if t > 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The `p` quantile of Student's t distribution (`0 < p < 1`).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if !(p > 0.0 && p < 1.0) || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    // The CDF is monotonic: widen an upper bound, then bisect to machine precision.
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while t_cdf(hi, df) < p {
        hi *= 2.0;
        if hi > 1e300 {
            return f64::INFINITY;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-15 * hi.max(1.0) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, 9 terms; ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b).
fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        // One Lentz step of the continued fraction: returns the factor for `h`.
        let mut step = |aa: f64| {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            d * c
        };
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)));
        let del = step(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)));
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// Median of `xs` (0 when empty); sorts it.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_quantiles_match_the_printed_tables() {
        // Two-sided 95% critical values from any t table.
        for (df, want) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (4.0, 2.776_445_105),
            (9.0, 2.262_157_163),
            (30.0, 2.042_272_456),
            (1000.0, 1.962_339_336),
        ] {
            let got = t_quantile(0.975, df);
            assert!(close(got, want, 1e-6), "df {df}: {got} vs {want}");
        }
        // One-sided 99%, df 10: 2.763769.
        assert!(close(t_quantile(0.99, 10.0), 2.763_769, 1e-5));
        assert!(close(t_quantile(0.025, 4.0), -2.776_445_105, 1e-6));
        assert_eq!(t_quantile(0.5, 3.0), 0.0);
    }

    #[test]
    fn t_cdf_known_values() {
        // df 1 is the Cauchy distribution: F(1) = 3/4.
        assert!(close(t_cdf(1.0, 1.0), 0.75, 1e-12));
        // df 2 has a closed form: F(t) = 1/2 + t / (2 sqrt(2 + t²)).
        for t in [-3.0, -0.5, 0.0, 0.7, 2.0, 10.0] {
            let want = 0.5 + t / (2.0 * (2.0f64 + t * t).sqrt());
            assert!(close(t_cdf(t, 2.0), want, 1e-12), "t {t}");
        }
        assert!(close(t_cdf(0.0, 7.3), 0.5, 1e-15));
        assert!(close(t_cdf(2.228_138_852, 10.0), 0.975, 1e-8));
        assert_eq!(t_cdf(f64::INFINITY, 3.0), 1.0);
    }

    #[test]
    fn ln_gamma_known_values() {
        assert!(close(ln_gamma(1.0), 0.0, 1e-13));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-13
        ));
        assert!(close(ln_gamma(10.0), 362_880f64.ln(), 1e-11));
    }

    #[test]
    fn mean_and_ci() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(s.mean, 3.0);
        assert!(close(s.sd, 2.5f64.sqrt(), 1e-12));
        // t(0.975, 4) = 2.776445, ci = 2.776445 * sqrt(2.5 / 5).
        assert!(close(s.ci95.unwrap(), 2.776_445_105 * 0.5f64.sqrt(), 1e-8));
        assert_eq!(Summary::of(&[7.0]).ci95, None);
        assert!(Summary::of(&[]).mean.is_nan());
    }

    #[test]
    fn welch_matches_r_on_the_sleep_data() {
        // R: t.test(extra ~ group, data = sleep) → t = -1.8608, df = 17.776, p-value = 0.07939.
        let g1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0];
        let g2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4];
        let w = welch(&g1, &g2).unwrap();
        assert!(close(w.t, -1.860_813, 1e-5), "{w:?}");
        assert!(close(w.df, 17.776_43, 1e-4), "{w:?}");
        assert!(close(w.p, 0.079_39, 1e-5), "{w:?}");
        assert!(!w.significant(0.05));
    }

    #[test]
    fn welch_matches_wikipedia_example_1() {
        // Welch's t-test article, example 1: t = -2.46, ν ≈ 24.99, p = 0.021.
        let a1 = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let a2 = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let w = welch(&a1, &a2).unwrap();
        assert!(close(w.t, -2.46, 0.005), "{w:?}");
        assert!(close(w.df, 24.99, 0.005), "{w:?}");
        assert!(close(w.p, 0.021, 0.0005), "{w:?}");
        assert!(w.significant(0.05));
    }

    #[test]
    fn welch_degenerate_samples() {
        assert_eq!(welch(&[1.0], &[1.0, 2.0]), None);
        assert_eq!(welch(&[3.0, 3.0], &[3.0, 3.0]).unwrap().p, 1.0);
        let w = welch(&[0.0, 0.0], &[5.0, 5.0]).unwrap();
        assert_eq!(w.p, 0.0);
        assert!(w.significant(0.05));
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
