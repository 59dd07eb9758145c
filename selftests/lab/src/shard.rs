//! `--shard K/N`: which (kernel, test) cells of a matrix one of N machines runs.
//!
//! Every shard computes the whole assignment on its own and keeps its part, so the N shards are
//! disjoint and cover the matrix only if they all compute the same thing from the same input:
//! the cells (kernel list × matrix tests, in that order) and the recorded cell durations
//! (`selftests/lab/cell-durations.txt`, written by `agelab lab merge --write-durations`). The
//! assignment is the greedy longest-first rule (LPT): cells sorted by duration, longest first,
//! ties by (kernel, test) name; each goes to the shard with the least total so far, ties to the
//! lowest shard number. A cell without a recorded duration counts as the median of the recorded
//! ones (or [`UNKNOWN_CELL_SECS`] when none is recorded), so a new test does not pile onto one
//! shard.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Seconds assumed for a cell when no duration at all is recorded.
pub const UNKNOWN_CELL_SECS: f64 = 60.0;

/// Errors of `--shard` and the durations file.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// `--shard` is not `K/N` with 1 ≤ K ≤ N.
    #[error("--shard {text}: {why} (expected K/N with 1 <= K <= N, e.g. 2/4)")]
    Spec {
        /// What was given.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// The durations file cannot be read.
    #[error("reading cell durations {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of the durations file is malformed.
    #[error("{path}:{line}: expected `KERNEL TEST SECONDS`")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// One of N shards, numbered from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// This shard's number, 1..=count.
    pub index: usize,
    /// How many shards the matrix is split into.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, ShardError> {
        let bad = |why: &str| ShardError::Spec {
            text: text.to_string(),
            why: why.to_string(),
        };
        let (k, n) = text.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let number = |s: &str, what: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| bad(&format!("{what} '{s}' is not a whole number")))
        };
        let (index, count) = (number(k, "K")?, number(n, "N")?);
        if count == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index == 0 || index > count {
            return Err(bad(&format!("K must be between 1 and {count}")));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Recorded wall seconds per (kernel, test) cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellDurations(pub BTreeMap<(String, String), f64>);

impl CellDurations {
    /// Parses `KERNEL TEST SECONDS` lines (`#` comments, blank lines ignored).
    pub fn parse(text: &str) -> Result<Self, usize> {
        let mut map = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let [kernel, test, secs] = words[..] else {
                return Err(i + 1);
            };
            let secs: f64 = secs.parse().map_err(|_| i + 1)?;
            if !secs.is_finite() || secs < 0.0 {
                return Err(i + 1);
            }
            map.insert((kernel.to_string(), test.to_string()), secs);
        }
        Ok(CellDurations(map))
    }

    /// Reads the durations file; a missing file is an empty record (every cell unknown).
    pub fn read(path: &Path) -> Result<Self, ShardError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|line| ShardError::Parse {
                path: path.to_path_buf(),
                line,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ShardError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The file text: a header, then one `KERNEL TEST SECONDS` line per cell in name order.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Wall seconds of each lab matrix cell in a recorded run; `--shard K/N` balances\n\
             # shards with them. Written by `agelab lab merge --write-durations FILE`.\n",
        );
        for ((kernel, test), secs) in &self.0 {
            out.push_str(&format!("{kernel} {test} {secs:.1}\n"));
        }
        out
    }

    /// The duration used for `cell`: recorded, else the median of the recorded ones.
    fn estimate(&self, cell: &(String, String), median: f64) -> f64 {
        self.0.get(cell).copied().unwrap_or(median)
    }

    fn median(&self) -> f64 {
        let mut v: Vec<f64> = self.0.values().copied().collect();
        if v.is_empty() {
            return UNKNOWN_CELL_SECS;
        }
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
}

/// The shard (1..=count) of every cell, in the order of `cells`.
///
/// The result depends only on the set of cells and `durations`, not on their order.
pub fn assign(cells: &[(String, String)], durations: &CellDurations, count: usize) -> Vec<usize> {
    let count = count.max(1);
    let median = durations.median();
    let mut order: Vec<usize> = (0..cells.len()).collect();
    let secs: Vec<f64> = cells
        .iter()
        .map(|c| durations.estimate(c, median))
        .collect();
    order.sort_by(|&a, &b| {
        secs[b]
            .total_cmp(&secs[a])
            .then_with(|| cells[a].cmp(&cells[b]))
    });
    let mut load = vec![0.0f64; count];
    let mut shard_of = vec![0usize; cells.len()];
    for i in order {
        let lightest = (0..count)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .unwrap_or(0);
        load[lightest] += secs[i];
        shard_of[i] = lightest + 1;
    }
    shard_of
}

/// The estimated seconds of each shard (index 0 is shard 1).
pub fn loads(
    cells: &[(String, String)],
    durations: &CellDurations,
    shard_of: &[usize],
    count: usize,
) -> Vec<f64> {
    let median = durations.median();
    let mut load = vec![0.0; count];
    for (cell, &s) in cells.iter().zip(shard_of) {
        load[s - 1] += durations.estimate(cell, median);
    }
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(kernels: &[&str], tests: &[&str]) -> Vec<(String, String)> {
        kernels
            .iter()
            .flat_map(|k| tests.iter().map(move |t| (k.to_string(), t.to_string())))
            .collect()
    }

    #[test]
    fn bad_shard_specs_name_what_is_wrong() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        assert_eq!(" 1 / 1 ".trim().parse::<Shard>().unwrap().count, 1);
        for (bad, why) in [
            ("0/4", "K must be between 1 and 4"),
            ("5/4", "K must be between 1 and 4"),
            ("x", "no '/'"),
            ("1/0", "N must be at least 1"),
            ("a/4", "K 'a' is not a whole number"),
            ("1/-4", "N '-4' is not a whole number"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("--shard {bad}: {why}")), "{e}");
        }
    }

    #[test]
    fn longest_first_balances_known_durations() {
        let c = cells(&["k"], &["a", "b", "c", "d", "e"]);
        let mut d = CellDurations::default();
        for (t, s) in [
            ("a", 100.0),
            ("b", 60.0),
            ("c", 50.0),
            ("d", 40.0),
            ("e", 10.0),
        ] {
            d.0.insert(("k".into(), t.into()), s);
        }
        let s = assign(&c, &d, 2);
        // a (100) → 1; b (60) → 2; c (50) → 2 (110); d (40) → 1 (140); e (10) → 2 (120).
        assert_eq!(s, [1, 2, 2, 1, 2]);
        assert_eq!(loads(&c, &d, &s, 2), [140.0, 120.0]);
    }

    #[test]
    fn order_of_the_cells_does_not_change_the_assignment() {
        let c = cells(&["k1", "k2"], &["a", "b", "c"]);
        let d = CellDurations::parse("k1 a 5\nk2 c 7\n").unwrap();
        let s = assign(&c, &d, 3);
        let mut rev = c.clone();
        rev.reverse();
        let mut s_rev = assign(&rev, &d, 3);
        s_rev.reverse();
        assert_eq!(s, s_rev);
    }

    #[test]
    fn durations_round_trip_and_bad_lines_are_refused() {
        let d = CellDurations::parse("# c\n\ndebian-6.1 lab-kvm 12.5\n").unwrap();
        assert_eq!(CellDurations::parse(&d.render()).unwrap(), d);
        assert_eq!(CellDurations::parse("a b\n"), Err(1));
        assert_eq!(CellDurations::parse("\na b c\n"), Err(2));
        assert_eq!(CellDurations::parse("a b -1\n"), Err(1));
    }
}
