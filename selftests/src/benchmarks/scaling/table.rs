//! The scaling table: one row per cost, one column per guest size, each cost's figure per GiB,
//! its growth between consecutive sizes and whether that growth is linear in memory.

use serde::Serialize;

/// Whether a row holds measurements, or why not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Status {
    /// Measured at every size that ran.
    #[default]
    Measured,
    /// The source cannot work on this host (the reason it gives).
    Unavailable(String),
    /// It was set up but failed while measured.
    Failed(String),
}

/// How a cost is expected to relate to memory size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// A total for the whole guest (ms, µs per pass): its figure per GiB is meaningful.
    Total,
    /// A cost per access: no per-GiB figure; linear growth would mean each access got slower.
    PerAccess,
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What the row measures (`harvest kvm-dirty-log`, `verify`...).
    pub name: String,
    /// The access source's catalog name, for source rows.
    pub source: Option<String>,
    /// Unit of `values`.
    pub unit: &'static str,
    /// How it relates to size.
    pub scale: Scale,
    /// Measured, unavailable or failed.
    #[serde(flatten)]
    pub status: Status,
    /// One value per size (`null`: not measured at that size).
    pub values: Vec<Option<f64>>,
    /// `values` per GiB of guest memory (`Total` rows only).
    pub per_gib: Vec<Option<f64>>,
    /// `values[i+1] / values[i]`, one per pair of consecutive sizes.
    pub growth: Vec<Option<f64>>,
    /// The exponent `e` of `cost ∝ size^e` between the smallest and largest size measured.
    pub exponent: Option<f64>,
    /// `linear`, `sublinear`, `flat` or `superlinear`, from `exponent`.
    pub verdict: Option<&'static str>,
    /// Per size, what else the row needs to be read (pages seen per pass...).
    pub detail: Vec<Option<String>>,
}

impl Row {
    /// A row of measurements `values` (one per size of `sizes`, bytes).
    pub fn measured(
        name: impl Into<String>,
        unit: &'static str,
        scale: Scale,
        sizes: &[u64],
        values: Vec<Option<f64>>,
    ) -> Self {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let per_gib = match scale {
            Scale::Total => values
                .iter()
                .zip(sizes)
                .map(|(v, &s)| v.map(|v| v / gib(s)))
                .collect(),
            Scale::PerAccess => vec![None; values.len()],
        };
        let growth = values
            .windows(2)
            .map(|w| match (w[0], w[1]) {
                (Some(a), Some(b)) if a > 0.0 => Some(b / a),
                _ => None,
            })
            .collect();
        let exponent = growth_exponent(sizes, &values);
        Row {
            name: name.into(),
            source: None,
            unit,
            scale,
            status: Status::Measured,
            detail: vec![None; values.len()],
            values,
            per_gib,
            growth,
            exponent,
            verdict: exponent.map(verdict),
        }
    }

    /// A row with no measurements, and why.
    pub fn without(name: impl Into<String>, unit: &'static str, status: Status, n: usize) -> Self {
        Row {
            name: name.into(),
            source: None,
            unit,
            scale: Scale::Total,
            status,
            values: vec![None; n],
            per_gib: vec![None; n],
            growth: vec![None; n.saturating_sub(1)],
            exponent: None,
            verdict: None,
            detail: vec![None; n],
        }
    }

    /// The same row, for access source `name`.
    pub fn for_source(mut self, name: &str) -> Self {
        self.source = Some(name.to_string());
        self
    }

    /// The same row with per-size details.
    pub fn with_detail(mut self, detail: Vec<Option<String>>) -> Self {
        self.detail = detail;
        self
    }
}

/// `e` in `cost ∝ size^e`, fitted between the smallest and the largest size with a value.
fn growth_exponent(sizes: &[u64], values: &[Option<f64>]) -> Option<f64> {
    let measured: Vec<(f64, f64)> = sizes
        .iter()
        .zip(values)
        .filter_map(|(&s, v)| v.filter(|v| *v > 0.0).map(|v| (s as f64, v)))
        .collect();
    let (first, last) = (measured.first()?, measured.last()?);
    (last.0 > first.0).then(|| (last.1 / first.1).ln() / (last.0 / first.0).ln())
}

/// Names the growth: `e` within ±0.25 of 1 is linear.
fn verdict(e: f64) -> &'static str {
    match e {
        e if e < 0.25 => "flat",
        e if e < 0.75 => "sublinear",
        e if e <= 1.25 => "linear",
        _ => "superlinear",
    }
}

/// `bytes` as a short size (`64M`, `16G`).
pub fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes >> 20)
    }
}

/// The source rows a complete table must have: every name in `expected`, each either measured
/// at every size that ran (`ran[i]`), or unavailable or failed with a reason. Returns what is
/// missing or incomplete, one message each.
pub fn incomplete(rows: &[Row], expected: &[&str], ran: &[bool]) -> Vec<String> {
    let mut out = Vec::new();
    for name in expected {
        let Some(row) = rows.iter().find(|r| r.source.as_deref() == Some(name)) else {
            out.push(format!("no row for {name}"));
            continue;
        };
        match &row.status {
            Status::Measured => {
                let holes: Vec<usize> = (0..ran.len())
                    .filter(|&i| ran[i] && row.values.get(i).copied().flatten().is_none())
                    .collect();
                if !holes.is_empty() {
                    out.push(format!("{name}: no value at size index {holes:?}"));
                }
            }
            Status::Unavailable(why) | Status::Failed(why) if why.trim().is_empty() => {
                out.push(format!("{name}: no reason given"));
            }
            _ => {}
        }
    }
    out
}

fn num(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// The table as text: `name (unit)`, a column per size, per GiB, growth ratios, verdict, notes.
pub fn render(rows: &[Row], sizes: &[u64]) -> String {
    let labels: Vec<String> = sizes.iter().map(|&s| size_label(s)).collect();
    let ratio_heads: Vec<String> = labels
        .windows(2)
        .map(|w| format!("{}/{}", w[1], w[0]))
        .collect();
    let mut out = format!("{:<52}", "cost");
    for l in &labels {
        out += &format!(" {l:>10}");
    }
    out += &format!("  {:<24}", format!("per GiB ({})", labels.join("/")));
    for h in &ratio_heads {
        out += &format!(" {h:>8}");
    }
    out += "  growth\n";
    for r in rows {
        let head = format!("{} ({})", r.name, r.unit);
        out += &format!("{head:<52}");
        match &r.status {
            Status::Unavailable(why) => {
                out += &format!(" unavailable: {why}\n");
                continue;
            }
            Status::Failed(why) => {
                out += &format!(" failed: {why}\n");
                continue;
            }
            Status::Measured => {}
        }
        for v in &r.values {
            out += &format!(" {:>10}", v.map_or("-".into(), num));
        }
        let per_gib = match r.scale {
            Scale::PerAccess => "(per access)".to_string(),
            Scale::Total => r
                .per_gib
                .iter()
                .map(|v| v.map_or("-".into(), num))
                .collect::<Vec<_>>()
                .join("/"),
        };
        out += &format!("  {per_gib:<24}");
        for g in &r.growth {
            out += &format!(" {:>8}", g.map_or("-".into(), |g| format!("{g:.2}x")));
        }
        out += &format!(
            "  {}",
            match (r.verdict, r.exponent) {
                (Some(v), Some(e)) => format!("{v} (e={e:.2})"),
                _ => "-".into(),
            }
        );
        let notes: Vec<&str> = r.detail.iter().flatten().map(String::as_str).collect();
        if !notes.is_empty() {
            out += &format!("  [{}]", notes.join(" / "));
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    #[test]
    fn growth_names_linear_flat_and_superlinear() {
        let sizes = [G, 4 * G, 16 * G];
        let total =
            |v: [f64; 3]| Row::measured("x", "ms", Scale::Total, &sizes, v.map(Some).to_vec());
        let lin = total([1.0, 4.1, 15.8]);
        assert_eq!(lin.verdict, Some("linear"));
        assert_eq!(lin.per_gib[2].map(|v| (v * 100.0).round()), Some(99.0));
        assert_eq!(lin.growth[0].map(|g| (g * 10.0).round()), Some(41.0));
        assert_eq!(total([3.0, 3.1, 3.3]).verdict, Some("flat"));
        assert_eq!(total([1.0, 16.0, 256.0]).verdict, Some("superlinear"));
        let values = vec![Some(10.0), Some(12.0), None];
        let per = Row::measured("n", "ns", Scale::PerAccess, &sizes, values);
        assert_eq!(per.per_gib, vec![None, None, None]);
        assert_eq!(per.growth[1], None);
        assert_eq!(per.verdict, Some("flat"));
    }

    #[test]
    fn a_missing_or_reasonless_source_row_makes_the_table_incomplete() {
        let sizes = [64 << 20, 128 << 20];
        let rows = vec![
            Row::measured(
                "harvest a",
                "µs",
                Scale::Total,
                &sizes,
                vec![Some(1.0), Some(2.0)],
            )
            .for_source("a"),
            Row::without(
                "harvest b",
                "µs",
                Status::Unavailable("no b here".into()),
                2,
            )
            .for_source("b"),
            Row::measured(
                "harvest c",
                "µs",
                Scale::Total,
                &sizes,
                vec![Some(1.0), None],
            )
            .for_source("c"),
            Row::without("harvest d", "µs", Status::Unavailable(" ".into()), 2).for_source("d"),
        ];
        assert!(incomplete(&rows[..2], &["a", "b"], &[true, true]).is_empty());
        // Negative controls: a row gone, a hole at a size that ran, an empty reason.
        assert_eq!(
            incomplete(&rows[..1], &["a", "b"], &[true, true]),
            vec!["no row for b"]
        );
        assert_eq!(
            incomplete(&rows, &["c"], &[true, true]),
            vec!["c: no value at size index [1]"]
        );
        assert!(incomplete(&rows, &["c"], &[true, false]).is_empty());
        assert_eq!(
            incomplete(&rows, &["d"], &[true, true]),
            vec!["d: no reason given"]
        );
        let text = render(&rows[..2], &sizes);
        assert!(text.contains("harvest b (µs)"), "{text}");
        assert!(text.contains("unavailable: no b here"), "{text}");
    }
}
