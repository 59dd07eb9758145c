//! The A/B report: per-side samples, the comparison table (text and JSON) and the SVG chart.

use super::metrics::Outcome;
use super::stats::{welch, Summary, Welch};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Significance level of the Welch test.
pub const ALPHA: f64 = 0.05;

/// What one side's runs produced, keys in first-seen order.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    outcomes: Vec<(String, Vec<Outcome>)>,
    values: Vec<(String, Vec<f64>)>,
}

fn slot<T>(v: &mut Vec<(String, Vec<T>)>, key: String) -> &mut Vec<T> {
    let i = match v.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            v.push((key, Vec::new()));
            v.len() - 1
        }
    };
    &mut v[i].1
}

impl Samples {
    /// Records one run's outcome of test `key`.
    pub fn outcome(&mut self, key: String, o: Outcome) {
        slot(&mut self.outcomes, key).push(o);
    }

    /// Records one run's value of metric `key`.
    pub fn value(&mut self, key: String, x: f64) {
        slot(&mut self.values, key).push(x);
    }
}

/// One side of the comparison.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Side {
    /// The lab kernel.
    pub kernel: String,
    /// Extra kernel command line.
    pub append: String,
}

impl Side {
    fn describe(&self) -> String {
        if self.append.is_empty() {
            self.kernel.clone()
        } else {
            format!("{} ({})", self.kernel, self.append)
        }
    }
}

/// A test's outcomes on both sides, as counts per outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutcomeRow {
    /// The test (KTAP description, or `exit status`).
    pub test: String,
    /// Outcome label → runs on A.
    pub a: BTreeMap<&'static str, usize>,
    /// Outcome label → runs on B.
    pub b: BTreeMap<&'static str, usize>,
    /// Whether A and B saw different outcomes.
    pub differs: bool,
}

/// A metric on both sides.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricRow {
    /// The metric name (with its unit in parentheses).
    pub metric: String,
    /// A's samples summarised.
    pub a: Summary,
    /// B's samples summarised.
    pub b: Summary,
    /// (mean B − mean A) / |mean A| in percent; `None` when A's mean is 0 or a side is empty.
    pub change_pct: Option<f64>,
    /// Welch's test; `None` unless both sides have two samples.
    pub welch: Option<Welch>,
    /// `welch.p < ALPHA`.
    pub significant: bool,
    /// A's raw samples.
    pub a_samples: Vec<f64>,
    /// B's raw samples.
    pub b_samples: Vec<f64>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AbReport {
    /// A then B.
    pub sides: [Side; 2],
    /// Repetitions per side.
    pub reps: usize,
    /// The command (or `matrix FILE`).
    pub command: String,
    /// The significance level.
    pub alpha: f64,
    /// Test outcomes, those that differ first.
    pub outcomes: Vec<OutcomeRow>,
    /// Metrics, in the order the output printed them.
    pub metrics: Vec<MetricRow>,
}

fn counts(v: &[Outcome]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for o in v {
        *m.entry(o.label()).or_insert(0) += 1;
    }
    m
}

fn union_keys<T>(a: &[(String, Vec<T>)], b: &[(String, Vec<T>)]) -> Vec<String> {
    let mut keys: Vec<String> = a.iter().map(|(k, _)| k.clone()).collect();
    for (k, _) in b {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

fn get<'a, T>(v: &'a [(String, Vec<T>)], key: &str) -> &'a [T] {
    v.iter()
        .find(|(k, _)| k == key)
        .map_or(&[], |(_, x)| x.as_slice())
}

impl AbReport {
    /// Compares A's and B's samples.
    pub fn new(sides: [Side; 2], reps: usize, command: String, a: &Samples, b: &Samples) -> Self {
        let mut outcomes: Vec<OutcomeRow> = union_keys(&a.outcomes, &b.outcomes)
            .into_iter()
            .map(|test| {
                let (ca, cb) = (
                    counts(get(&a.outcomes, &test)),
                    counts(get(&b.outcomes, &test)),
                );
                // Different sets of outcomes: counts alone may differ by a missing run.
                let differs = ca.keys().ne(cb.keys());
                OutcomeRow {
                    test,
                    a: ca,
                    b: cb,
                    differs,
                }
            })
            .collect();
        outcomes.sort_by_key(|r| !r.differs);
        let metrics = union_keys(&a.values, &b.values)
            .into_iter()
            .map(|metric| {
                let (xa, xb) = (get(&a.values, &metric), get(&b.values, &metric));
                let (sa, sb) = (Summary::of(xa), Summary::of(xb));
                let change_pct = (sa.n > 0 && sb.n > 0 && sa.mean != 0.0)
                    .then(|| (sb.mean - sa.mean) / sa.mean.abs() * 100.0);
                let w = welch(xa, xb);
                MetricRow {
                    metric,
                    a: sa,
                    b: sb,
                    change_pct,
                    welch: w,
                    significant: w.is_some_and(|w| w.significant(ALPHA)),
                    a_samples: xa.to_vec(),
                    b_samples: xb.to_vec(),
                }
            })
            .collect();
        AbReport {
            sides,
            reps,
            command,
            alpha: ALPHA,
            outcomes,
            metrics,
        }
    }

    /// Whether any test outcome differs between A and B.
    pub fn outcomes_differ(&self) -> bool {
        self.outcomes.iter().any(|r| r.differs)
    }
}

/// `x` with 4 significant digits (fixed notation for ordinary magnitudes).
pub fn sig4(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    if !(-4..9).contains(&mag) {
        return format!("{x:.3e}");
    }
    let decimals = (3 - mag).max(0) as usize;
    format!("{x:.decimals$}")
}

fn mean_ci(s: &Summary) -> String {
    match (s.n, s.ci95) {
        (0, _) => "—".into(),
        (_, Some(ci)) => format!("{} ± {}", sig4(s.mean), sig4(ci)),
        (_, None) => format!("{} (n=1)", sig4(s.mean)),
    }
}

fn outcome_cell(m: &BTreeMap<&'static str, usize>) -> String {
    if m.is_empty() {
        return "—".into();
    }
    m.iter()
        .map(|(k, n)| format!("{k} {n}×"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(w[i] - c.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(head.iter().map(|s| s.to_string()).collect());
    out += &line(w.iter().map(|n| "-".repeat(*n)).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

/// The report as text: header, outcome table (differences first), metric table.
pub fn render(r: &AbReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "agelab ab: A = {}, B = {}; {} runs each, interleaved A B A B; command: {}",
        r.sides[0].describe(),
        r.sides[1].describe(),
        r.reps,
        r.command
    );
    let _ = writeln!(
        out,
        "mean ± 95% CI (Student t, n−1 df); significant: Welch's two-sided t-test, p < {}\n",
        r.alpha
    );
    let differ = r.outcomes.iter().filter(|o| o.differs).count();
    if differ > 0 {
        let _ = writeln!(out, "TEST OUTCOMES DIFFER ({differ}):");
    } else if !r.outcomes.is_empty() {
        let _ = writeln!(out, "test outcomes: the same on A and B");
    }
    if !r.outcomes.is_empty() {
        let rows: Vec<Vec<String>> = r
            .outcomes
            .iter()
            .map(|o| {
                vec![
                    o.test.clone(),
                    outcome_cell(&o.a),
                    outcome_cell(&o.b),
                    if o.differs { "DIFFERS" } else { "same" }.to_string(),
                ]
            })
            .collect();
        out += &table(&["test", "A", "B", "outcome"], &rows);
        out.push('\n');
    }
    let rows: Vec<Vec<String>> = r
        .metrics
        .iter()
        .map(|m| {
            vec![
                m.metric.clone(),
                mean_ci(&m.a),
                mean_ci(&m.b),
                m.change_pct.map_or("—".into(), |c| format!("{c:+.1}%")),
                match m.welch {
                    None => "n/a".into(),
                    Some(w) if m.significant => format!("yes ({})", p_text(w.p)),
                    Some(w) => format!("no ({})", p_text(w.p)),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        out += "no metrics found in the output\n";
    } else {
        out += &table(
            &[
                "metric",
                "A mean ± 95% CI",
                "B mean ± 95% CI",
                "change %",
                "significant",
            ],
            &rows,
        );
    }
    out
}

fn p_text(p: f64) -> String {
    if p < 0.001 {
        "p<0.001".into()
    } else {
        format!("p={p:.3}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar chart: one panel per metric with its own y axis, bars A and B at their means and 95%
/// CI whiskers; significant differences are marked with `*` in the panel title.
pub fn to_svg(r: &AbReport) -> String {
    const COLS: usize = 4;
    const PW: f64 = 230.0; // panel width
    const PH: f64 = 170.0; // panel height (plot area)
    const LEFT: f64 = 60.0;
    const TOP: f64 = 90.0;
    const GAP_X: f64 = 70.0;
    const GAP_Y: f64 = 80.0;
    let metrics: Vec<&MetricRow> = r.metrics.iter().filter(|m| m.a.n + m.b.n > 0).collect();
    let rows = metrics.len().div_ceil(COLS).max(1);
    let w = LEFT + COLS as f64 * (PW + GAP_X);
    let h = TOP + rows as f64 * (PH + GAP_Y) + 20.0;
    let colors = ["#7f7f7f", "#1f77b4"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"14\">A = {} vs B = {}: {} runs each, bars: mean, whiskers: 95% CI; * = Welch p &lt; {}</text>\n\
         <text x=\"{LEFT}\" y=\"40\" font-size=\"11\">{}</text>\n",
        esc(&r.sides[0].describe()),
        esc(&r.sides[1].describe()),
        r.reps,
        r.alpha,
        esc(&r.command)
    );
    for (side, color) in colors.iter().enumerate() {
        let x = LEFT + side as f64 * 300.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x:.1}\" y=\"50\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"60\">{} = {}</text>",
            x + 16.0,
            ["A", "B"][side],
            esc(&r.sides[side].kernel)
        );
    }
    for (i, m) in metrics.iter().enumerate() {
        let x0 = LEFT + (i % COLS) as f64 * (PW + GAP_X);
        let y0 = TOP + (i / COLS) as f64 * (PH + GAP_Y);
        let top_of = |s: &Summary| {
            if s.n == 0 {
                0.0
            } else {
                s.mean + s.ci95.unwrap_or(0.0)
            }
        };
        let bottom_of = |s: &Summary| {
            if s.n == 0 {
                0.0
            } else {
                s.mean - s.ci95.unwrap_or(0.0)
            }
        };
        let hi = top_of(&m.a).max(top_of(&m.b)).max(0.0);
        let lo = bottom_of(&m.a).min(bottom_of(&m.b)).min(0.0);
        // The axis always shows 0, with 10% room beyond the longest whisker.
        let (lo, hi) = if hi > lo {
            (lo * 1.1, hi * 1.1)
        } else {
            (0.0, 1.0)
        };
        let y = |v: f64| y0 + PH - (v - lo) / (hi - lo) * PH;
        let title = format!("{}{}", m.metric, if m.significant { " *" } else { "" });
        let title: String = if title.chars().count() > 42 {
            title.chars().take(41).collect::<String>() + "…"
        } else {
            title
        };
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>\n\
             <line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x0:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n\
             <line x1=\"{x0:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n",
            x0,
            y0 - 10.0,
            esc(&title),
            y0 + PH,
            y(0.0),
            x0 + PW,
            y(0.0),
        );
        // Y axis: ticks at the bottom, middle and top of the range, and its label.
        let ticks = if lo < 0.0 {
            [lo, 0.0, hi]
        } else {
            [0.0, hi / 2.0, hi]
        };
        for v in ticks {
            let _ = writeln!(
                s,
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{x0:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"9\">{}</text>",
                x0 - 4.0,
                y(v),
                y(v),
                x0 - 6.0,
                y(v) + 3.0,
                sig4(v)
            );
        }
        let unit = m
            .metric
            .rsplit_once(" (")
            .and_then(|(_, u)| u.strip_suffix(')'))
            .unwrap_or("value");
        let _ = writeln!(
            s,
            "<text transform=\"translate({:.1},{:.1}) rotate(-90)\" text-anchor=\"middle\" font-size=\"10\">{}</text>",
            x0 - 42.0,
            y0 + PH / 2.0,
            esc(unit)
        );
        for (side, sm) in [&m.a, &m.b].into_iter().enumerate() {
            let bx = x0 + 30.0 + side as f64 * 100.0;
            let bw = 70.0;
            let cx = bx + bw / 2.0;
            if sm.n > 0 {
                let (ym, y0v) = (y(sm.mean), y(0.0));
                let _ = writeln!(
                    s,
                    "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bw}\" height=\"{:.1}\" fill=\"{}\"/>",
                    ym.min(y0v),
                    (ym - y0v).abs(),
                    colors[side]
                );
                if let Some(ci) = sm.ci95 {
                    let (yt, yb) = (y(sm.mean + ci), y(sm.mean - ci));
                    let _ = writeln!(
                        s,
                        "<line x1=\"{cx:.1}\" y1=\"{yt:.1}\" x2=\"{cx:.1}\" y2=\"{yb:.1}\" stroke=\"black\"/>\
                         <line x1=\"{:.1}\" y1=\"{yt:.1}\" x2=\"{:.1}\" y2=\"{yt:.1}\" stroke=\"black\"/>\
                         <line x1=\"{:.1}\" y1=\"{yb:.1}\" x2=\"{:.1}\" y2=\"{yb:.1}\" stroke=\"black\"/>",
                        cx - 8.0,
                        cx + 8.0,
                        cx - 8.0,
                        cx + 8.0
                    );
                }
            }
            let _ = writeln!(
                s,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} {}</text>",
                y0 + PH + 15.0,
                ["A", "B"][side],
                sig4(sm.mean)
            );
        }
        if let Some(c) = m.change_pct {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">change {c:+.1}%</text>",
                x0 + PW / 2.0,
                y0 + PH + 30.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sides() -> [Side; 2] {
        [
            Side {
                kernel: "debian-6.12".into(),
                append: String::new(),
            },
            Side {
                kernel: "debian-7.2".into(),
                append: "kvm.tdp_mmu=N".into(),
            },
        ]
    }

    fn report() -> AbReport {
        let (mut a, mut b) = (Samples::default(), Samples::default());
        for (x, y) in [(1.0, 2.0), (1.1, 2.1), (0.9, 1.9)] {
            a.value("pass (s)".into(), x);
            b.value("pass (s)".into(), y);
            a.value("same".into(), 5.0);
            b.value("same".into(), 5.0);
            a.outcome("t1".into(), Outcome::Pass);
            b.outcome("t1".into(), Outcome::Pass);
            a.outcome("t2".into(), Outcome::Pass);
            b.outcome("t2".into(), Outcome::Fail);
        }
        a.value("only A".into(), 1.0);
        AbReport::new(sides(), 3, "cmd -x".into(), &a, &b)
    }

    #[test]
    fn differing_outcomes_come_first_and_metrics_are_judged() {
        let r = report();
        assert_eq!(r.outcomes[0].test, "t2");
        assert!(r.outcomes[0].differs && !r.outcomes[1].differs);
        assert!(r.outcomes_differ());
        let pass = &r.metrics[0];
        assert_eq!(pass.metric, "pass (s)");
        assert!(pass.significant);
        assert!((pass.change_pct.unwrap() - 100.0).abs() < 1e-9);
        assert!(!r.metrics[1].significant);
        assert_eq!(r.metrics[2].b.n, 0);
        assert_eq!(r.metrics[2].welch, None);
        let text = render(&r);
        assert!(
            text.contains("Welch's two-sided t-test, p < 0.05"),
            "{text}"
        );
        assert!(text.contains("TEST OUTCOMES DIFFER (1)"), "{text}");
        assert!(text.contains("| t2 "), "{text}");
        assert!(text.find("| t2 ").unwrap() < text.find("| t1 ").unwrap());
        assert!(
            text.contains(
                "| pass (s) | 1.000 ± 0.2484  | 2.000 ± 0.2484  | +100.0%  | yes (p<0.001)"
            ),
            "{text}"
        );
        assert!(text.contains("B = debian-7.2 (kvm.tdp_mmu=N)"), "{text}");
    }

    #[test]
    fn svg_is_well_formed_text_with_labels() {
        let svg = to_svg(&report());
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("pass (s) *"));
        assert!(svg.contains(">s</text>"), "y axis label is the unit");
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        // JSON carries everything the table shows.
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["metrics"][0]["significant"], true);
        assert_eq!(json["outcomes"][0]["b"]["not ok"], 3);
    }

    #[test]
    fn four_significant_digits() {
        assert_eq!(sig4(1.234_567_89), "1.235");
        assert_eq!(sig4(0.012_345), "0.01235");
        assert_eq!(sig4(12_345.6), "12346");
        assert_eq!(sig4(0.0), "0");
        assert_eq!(sig4(-2.5), "-2.500");
    }
}
