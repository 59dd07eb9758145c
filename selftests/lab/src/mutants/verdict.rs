//! What one test said about one kernel of the mutation run (killed, survived, skip, error), the
//! evidence read from its output, and the kill table.

use std::fmt::Write as _;

/// The outcome of one test on one mutant (or on the base).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kill {
    /// The test failed on the mutant (any exit status but 0 and 4).
    Killed,
    /// The test passed on the mutant.
    Survived,
    /// The test skipped (exit 4), on the mutant or on the base.
    Skip,
    /// The lab could not run it (build, boot, timeout); fails the run.
    Error,
    /// The base kernel passed (the base's own row).
    Pass,
    /// The base kernel failed: the test cannot judge mutants; fails the run.
    BaseFail,
}

impl Kill {
    /// The outcome of a completed run with exit `status` on the base or on a mutant.
    pub fn from_status(status: i32, base: bool) -> Self {
        match (status, base) {
            (4, _) => Kill::Skip,
            (0, true) => Kill::Pass,
            (_, true) => Kill::BaseFail,
            (0, false) => Kill::Survived,
            (_, false) => Kill::Killed,
        }
    }

    /// The table's word for it.
    pub fn label(self) -> &'static str {
        match self {
            Kill::Killed => "killed",
            Kill::Survived => "SURVIVED",
            Kill::Skip => "skip",
            Kill::Error => "ERROR",
            Kill::Pass => "pass",
            Kill::BaseFail => "BASE FAIL",
        }
    }

    /// Whether this outcome fails the run.
    pub fn fails_run(self) -> bool {
        matches!(self, Kill::Error | Kill::BaseFail)
    }
}

/// The evidence of one run, read from what the tests print.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Evidence {
    /// `(pass, recall %, precision %)` of each judged aging pass.
    pub passes: Vec<(u32, f64, f64)>,
    /// KVM aging calls counted from trace events in the last traced aging pass.
    pub kvm_calls: Option<u64>,
    /// Pages still idle after access, and the total (`Too many pages still idle (X out of Y)`).
    pub idle: Option<(u64, u64)>,
    /// The first failing check's description (`not ok N desc`).
    pub first_failure: Option<String>,
    /// The kernel selftest printed a warning instead of failing (its warn-only mode).
    pub warned: bool,
}

/// The number before `%` at the start of `s`.
fn percent(s: &str) -> Option<f64> {
    s.split('%').next()?.trim().parse().ok()
}

impl Evidence {
    /// Reads the evidence from a test's stdout.
    pub fn from_output(out: &str) -> Self {
        let mut e = Evidence::default();
        for line in out.lines() {
            let l = line.trim_start_matches('#').trim();
            if let Some(rest) = l.strip_prefix("aging pass ") {
                let pass: Option<u32> = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok());
                if let (Some(pass), Some(r)) = (pass, rest.split("recall ").nth(1)) {
                    let p = rest.split("precision ").nth(1).and_then(percent);
                    if let (Some(r), Some(p)) = (percent(r), p) {
                        e.passes.push((pass, r, p));
                    }
                }
                if let Some(calls) = rest.split("KVM asked ").nth(1) {
                    e.kvm_calls = calls.split_whitespace().next().and_then(|n| n.parse().ok());
                }
            }
            if let Some(rest) = l.strip_prefix("Too many pages still idle (") {
                if e.idle.is_none() {
                    let nums: Vec<u64> = rest
                        .split(|c: char| !c.is_ascii_digit())
                        .filter_map(|n| n.parse().ok())
                        .collect();
                    if let [idle, total, ..] = nums[..] {
                        e.idle = Some((idle, total));
                    }
                }
            }
            if l.starts_with("WARNING: ") {
                e.warned = true;
            }
            if let Some(rest) = line.strip_prefix("not ok ") {
                if e.first_failure.is_none() {
                    let desc = rest.split_once(' ').map_or("", |(_, d)| d);
                    e.first_failure = Some(desc.split(" # ").next().unwrap_or(desc).to_string());
                }
            }
        }
        e
    }

    /// One short line: `p1 r100/p100, p2 r0/p100; KVM 8176; idle 32741/32768; first fail: ...`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.passes.is_empty() {
            parts.push(
                self.passes
                    .iter()
                    .map(|(n, r, p)| format!("p{n} r{r:.0}/p{p:.0}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        if let Some(k) = self.kvm_calls {
            parts.push(format!("KVM calls {k}"));
        }
        if let Some((i, t)) = self.idle {
            parts.push(format!("idle {i}/{t}"));
        }
        if self.warned {
            parts.push("warned only".into());
        }
        if let Some(f) = &self.first_failure {
            parts.push(format!("first fail: {f}"));
        }
        parts.join("; ")
    }
}

/// One kernel's row: its name, build time and mode, and one outcome per test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// `base` or the mutant's name.
    pub name: String,
    /// Seconds its build took (this run's, or the cached build's), if known.
    pub build_secs: Option<f64>,
    /// `full` or `kept tree of <base> <key>`.
    pub build_mode: Option<String>,
    /// Per test: outcome and evidence.
    pub cells: Vec<(Kill, Evidence)>,
}

/// The kill table: rows × tests, with the build time per row.
pub fn render_table(tests: &[String], rows: &[Row]) -> String {
    let first = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(6);
    let widths: Vec<usize> = tests.iter().map(|t| t.len().max(9)).collect();
    let mut out = format!("{:first$}  {:>7}", "kernel", "build s");
    for (t, w) in tests.iter().zip(&widths) {
        let _ = write!(out, "  {t:w$}");
    }
    out.push('\n');
    for r in rows {
        let secs = r.build_secs.map_or("-".to_string(), |s| format!("{s:.0}"));
        let _ = write!(out, "{:first$}  {secs:>7}", r.name);
        for ((k, _), w) in r.cells.iter().zip(&widths) {
            let _ = write!(out, "  {:w$}", k.label());
        }
        out.push('\n');
    }
    out
}

/// The evidence lines under the table: one per (row, test) with anything to say.
pub fn render_evidence(tests: &[String], rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        for (t, (k, e)) in tests.iter().zip(&r.cells) {
            let s = e.summary();
            if !s.is_empty() {
                let _ = writeln!(out, "{} / {t}: {}: {s}", r.name, k.label());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LRU_GEN: &str = "TAP version 13\n1..3\n# aging pass 0: KVM asked 8167 times for 8167 pages (8167 clear_young, 0 test_young)\n# aging pass 1: KVM asked 8176 times for 8176 pages (8176 clear_young, 0 test_young)\n# aging pass 1 after the guest read A only: recall 100.0% precision 99.5% (young 2049 of 2048 touched, 0 untouched)\n# aging pass 2: KVM asked 0 times for 0 pages (0 clear_young, 0 test_young)\n# aging pass 2 after the guest read B only: recall 0.0% precision 100.0% (young 0 of 2048 touched, 1 untouched)\nok 1 pages only the guest touched are found young by lru_gen aging\nnot ok 2 pages the guest stops touching age out, the ones it touches now are young\n";

    #[test]
    fn evidence_is_read_from_what_the_tests_print() {
        let e = Evidence::from_output(LRU_GEN);
        assert_eq!(e.passes, [(1, 100.0, 99.5), (2, 0.0, 100.0)]);
        assert_eq!(e.kvm_calls, Some(0));
        assert_eq!(
            e.first_failure.as_deref(),
            Some("pages the guest stops touching age out, the ones it touches now are young")
        );
        assert_eq!(
            e.summary(),
            "p1 r100/p100, p2 r0/p100; KVM calls 0; first fail: pages the guest stops touching age out, the ones it touches now are young"
        );
        let at = Evidence::from_output(
            "# Too many pages still idle (32741 out of 32768)\nnot ok 2 lru_gen: accesses to populated memory seen\n# Too many pages still idle (5 out of 32768)\n",
        );
        assert_eq!(at.idle, Some((32741, 32768)));
        let warned = Evidence::from_output(
            "WARNING: Couldn't find a generation with 90% of guest memory.\n",
        );
        assert!(warned.warned);
        assert_eq!(Evidence::from_output("ok 1 x\n").summary(), "");
    }

    #[test]
    fn outcomes_of_base_and_mutants() {
        assert_eq!(Kill::from_status(0, true), Kill::Pass);
        assert_eq!(Kill::from_status(1, true), Kill::BaseFail);
        assert_eq!(Kill::from_status(4, true), Kill::Skip);
        assert_eq!(Kill::from_status(0, false), Kill::Survived);
        assert_eq!(Kill::from_status(1, false), Kill::Killed);
        assert_eq!(Kill::from_status(134, false), Kill::Killed);
        assert!(Kill::BaseFail.fails_run() && Kill::Error.fails_run());
        assert!(!Kill::Survived.fails_run() && !Kill::Killed.fails_run());
    }

    #[test]
    fn the_table_has_a_row_per_kernel_and_a_column_per_test() {
        let tests = vec!["lru-gen".to_string(), "kernel-att".to_string()];
        let rows = vec![
            Row {
                name: "base".into(),
                build_secs: Some(701.2),
                build_mode: Some("full".into()),
                cells: vec![
                    (Kill::Pass, Evidence::default()),
                    (Kill::Pass, Evidence::default()),
                ],
            },
            Row {
                name: "kvm-x".into(),
                build_secs: None,
                build_mode: None,
                cells: vec![
                    (Kill::Killed, Evidence::from_output(LRU_GEN)),
                    (Kill::Survived, Evidence::default()),
                ],
            },
        ];
        assert_eq!(
            render_table(&tests, &rows),
            "kernel  build s  lru-gen    kernel-att\n\
             base        701  pass       pass      \n\
             kvm-x         -  killed     SURVIVED  \n"
        );
        let ev = render_evidence(&tests, &rows);
        assert!(
            ev.starts_with("kvm-x / lru-gen: killed: p1 r100/p100"),
            "{ev}"
        );
        assert_eq!(ev.lines().count(), 1);
    }
}
