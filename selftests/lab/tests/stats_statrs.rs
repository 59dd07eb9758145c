//! Does a maintained statistics crate (`statrs`) give the numbers of `agelab_util::stats` (the
//! hand-written Student-t CDF, quantile and Welch test `agelab ab` reports)? Compared over a
//! grid of t values and integer and fractional degrees of freedom, and on the Welch cases the
//! stats module checks against R and Wikipedia. The largest differences are printed.

use agelab_util::stats;
use statrs::distribution::{ContinuousCDF, StudentsT};

fn students_t(df: f64) -> StudentsT {
    StudentsT::new(0.0, 1.0, df).unwrap()
}

#[test]
fn statrs_student_t_agrees_with_the_stats_module() {
    let dfs = [
        1.0, 1.5, 2.0, 3.0, 4.0, 5.7, 9.0, 17.776, 24.99, 30.0, 100.0, 1000.0,
    ];
    let mut worst_cdf = 0.0f64;
    let mut worst_quantile = 0.0f64;
    for &df in &dfs {
        for i in -80..=80 {
            let t = f64::from(i) / 8.0;
            let d = (stats::t_cdf(t, df) - students_t(df).cdf(t)).abs();
            worst_cdf = worst_cdf.max(d);
        }
        for p in [0.6, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999] {
            let ours = stats::t_quantile(p, df);
            let theirs = students_t(df).inverse_cdf(p);
            worst_quantile = worst_quantile.max((ours - theirs).abs() / ours.abs());
        }
    }
    println!("t CDF: largest absolute difference {worst_cdf:.3e}");
    println!("t quantile: largest relative difference {worst_quantile:.3e}");
    assert!(worst_cdf < 1e-12, "{worst_cdf}");
    assert!(worst_quantile < 1e-9, "{worst_quantile}");
}

/// Welch's test with statrs's CDF in place of ours: the same p-values.
#[test]
fn welch_p_values_agree() {
    let cases: [(&[f64], &[f64]); 2] = [
        (
            &[0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0],
            &[1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4],
        ),
        (
            &[
                27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
                21.4,
            ],
            &[
                27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
                24.4,
            ],
        ),
    ];
    for (a, b) in cases {
        let w = stats::welch(a, b).unwrap();
        let p = 2.0 * (1.0 - students_t(w.df).cdf(w.t.abs()));
        println!(
            "welch: t {:.6} df {:.4} p ours {:.10} statrs {p:.10}",
            w.t, w.df, w.p
        );
        assert!((w.p - p).abs() < 1e-12, "{} vs {p}", w.p);
    }
}
