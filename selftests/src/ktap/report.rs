//! The KTAP writer: what one selftest run printed and counted, written to any `Write` so the rules
//! are unit-tested on a buffer. The process-wide instance behind [`super::Ktap`] writes to stdout.
//!
//! The rules, as `kselftest.h` and `kselftest_harness.h` keep them:
//! - `TAP version 13` is printed once, before anything else;
//! - a planned run prints `1..N` where N is the number of registered tests, before the results;
//!   an unplanned run prints `1..N` after its results (N: the tests it reported);
//! - results are numbered in registration order; a test reported out of order, twice, or
//!   registered after the plan is a harness error, and a planned run that reports fewer tests
//!   than it planned prints `# Planned tests != run tests (P != R)`: both exit 1;
//! - a whole-run skip before any plan or result is `1..0 # SKIP reason` (exit 4); after the plan
//!   every test not yet reported becomes `ok N name # SKIP reason`, and the run ends as any run
//!   does, so a failure reported before the skip still exits 1.

use super::{Verdict, EXIT_SKIP};
use agelab_util::exit::{ExitClass, HasExitClass};
use std::io::Write;

/// A registered test: its index in registration order (KTAP number minus one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestId(pub(super) usize);

/// One run's KTAP output and counts.
#[derive(Debug)]
pub struct Report<W: Write> {
    out: W,
    header_printed: bool,
    /// `Some(n)`: `1..n` was printed before the results.
    planned: Option<usize>,
    /// Registered test names, in KTAP order.
    tests: Vec<String>,
    /// Index of the next test to report (= results printed so far).
    next: usize,
    pass: usize,
    fail: usize,
    skip: usize,
    /// Harness misuse: results out of order or twice, tests registered after the plan.
    errors: usize,
}

impl<W: Write> Report<W> {
    /// A report that has printed nothing yet.
    pub fn new(out: W) -> Self {
        Report {
            out,
            header_printed: false,
            planned: None,
            tests: Vec::new(),
            next: 0,
            pass: 0,
            fail: 0,
            skip: 0,
            errors: 0,
        }
    }

    /// The writer (for tests that inspect what was printed).
    pub fn output(&self) -> &W {
        &self.out
    }

    fn line(&mut self, text: &str) {
        // A closed stdout cannot be reported anywhere; the exit code still tells the runner.
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// Prints `TAP version 13` unless it was printed already.
    pub fn header(&mut self) {
        if !self.header_printed {
            self.header_printed = true;
            self.line("TAP version 13");
        }
    }

    /// Registers `names` and prints the header and the plan `1..names.len()`; returns the first
    /// test's id (the others follow in order).
    pub fn plan(&mut self, names: Vec<String>) -> TestId {
        let first = TestId(self.tests.len());
        if self.planned.is_some() || self.next > 0 || !self.tests.is_empty() {
            self.harness_error("a second plan (or a plan after results) was requested");
        }
        self.header();
        self.tests.extend(names);
        self.planned = Some(self.tests.len());
        let plan = format!("1..{}", self.tests.len());
        self.line(&plan);
        first
    }

    /// Starts an unplanned run: the header now, the plan after the results.
    pub fn unplanned(&mut self) {
        self.header();
    }

    /// Registers a test while the run goes (unplanned runs, whose tests depend on what the host
    /// offers); in a planned run this breaks the plan and is a harness error.
    pub fn add(&mut self, name: &str) -> TestId {
        if let Some(p) = self.planned {
            self.harness_error(&format!(
                "test '{name}' registered after the plan 1..{p} was printed"
            ));
        }
        self.tests.push(name.to_string());
        TestId(self.tests.len() - 1)
    }

    /// The name test `id` was registered with.
    pub fn name(&self, id: TestId) -> &str {
        self.tests.get(id.0).map_or("", String::as_str)
    }

    /// Prints a diagnostic line per line of `text` (`# line`).
    pub fn diag(&mut self, text: &str) {
        for l in text.lines() {
            self.line(&format!("# {l}"));
        }
    }

    fn harness_error(&mut self, what: &str) {
        self.errors += 1;
        self.line(&format!("# harness error: {what}"));
    }

    /// Reports test `id`: `ok N name`, `not ok N name` (after `# name: reason` when the failure
    /// has one) or `ok N name # SKIP reason`.
    pub fn report(&mut self, id: TestId, verdict: &Verdict) {
        if id.0 >= self.tests.len() {
            self.harness_error(&format!("result for unregistered test {}", id.0 + 1));
            return;
        }
        if id.0 != self.next {
            let what = format!(
                "test {} '{}' reported {} (the next result is test {})",
                id.0 + 1,
                self.name(id),
                if id.0 < self.next {
                    "twice"
                } else {
                    "out of order"
                },
                self.next + 1
            );
            self.harness_error(&what);
            return;
        }
        let n = id.0 + 1;
        let name = self.tests[id.0].clone();
        match verdict {
            Verdict::Pass => {
                self.pass += 1;
                self.line(&format!("ok {n} {name}"));
            }
            Verdict::Fail(reason) => {
                self.fail += 1;
                if !reason.is_empty() {
                    self.diag(&format!("{name}: {reason}"));
                }
                self.line(&format!("not ok {n} {name}"));
            }
            Verdict::Skip(reason) => {
                self.skip += 1;
                self.line(&format!("ok {n} {name} # SKIP {reason}"));
            }
        }
        self.next += 1;
    }

    /// Skips what is left of the run for `reason`; returns the exit code. Before any plan or
    /// result: `1..0 # SKIP reason`, exit 4. After the plan: every test not reported yet as
    /// `ok N name # SKIP reason`, then [`Report::finish`]. Unplanned, after results: one
    /// `ok N # SKIP reason` line (kselftest's `ksft_exit_skip`), then [`Report::finish`].
    pub fn skip_all(&mut self, reason: &str) -> i32 {
        match self.planned {
            None if self.next == 0 => {
                self.header();
                self.line(&format!("1..0 # SKIP {reason}"));
                EXIT_SKIP
            }
            None => {
                self.skip += 1;
                self.next += 1;
                self.tests.push(String::new());
                let line = format!("ok {} # SKIP {reason}", self.next);
                self.line(&line);
                self.finish()
            }
            Some(_) => {
                for i in self.next..self.tests.len() {
                    self.report(TestId(i), &Verdict::Skip(reason.to_string()));
                }
                self.finish()
            }
        }
    }

    /// Prints a deferred plan, a plan mismatch and the kselftest totals line; returns the exit
    /// code: 1 if a test failed, the plan was not kept or the harness was misused, 4 if tests
    /// were skipped and none passed, else 0.
    pub fn finish(&mut self) -> i32 {
        let run = self.next;
        match self.planned {
            None => {
                self.header();
                self.line(&format!("1..{run}"));
            }
            Some(p) if p != run => {
                self.line(&format!("# Planned tests != run tests ({p} != {run})"));
            }
            Some(_) => {}
        }
        let missing = self.planned.map_or(0, |p| p.saturating_sub(run));
        let totals = format!(
            "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:{}",
            self.pass,
            self.fail,
            self.skip,
            missing + self.errors
        );
        self.line(&totals);
        i32::from(self.exit_code())
    }
}

impl<W: Write> HasExitClass for Report<W> {
    /// What [`Report::finish`] returns: a failure when a test failed, errored or the plan was
    /// broken, a skip when tests were skipped and none passed.
    fn exit_class(&self) -> ExitClass {
        let plan_broken = self.planned.is_some_and(|p| p != self.next);
        if self.fail > 0 || self.errors > 0 || plan_broken {
            ExitClass::Failure
        } else if self.skip > 0 && self.pass == 0 {
            ExitClass::Skip
        } else {
            ExitClass::Success
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::{EXIT_FAIL, EXIT_PASS};

    fn report() -> Report<Vec<u8>> {
        Report::new(Vec::new())
    }

    fn text(r: &Report<Vec<u8>>) -> String {
        String::from_utf8(r.output().clone()).expect("KTAP is UTF-8")
    }

    fn planned(r: &mut Report<Vec<u8>>, names: &[&str]) -> Vec<TestId> {
        let first = r.plan(names.iter().map(|s| s.to_string()).collect());
        (0..names.len()).map(|i| TestId(first.0 + i)).collect()
    }

    #[test]
    fn the_plan_is_the_number_of_registered_tests() {
        let mut r = report();
        let ids = planned(&mut r, &["a", "b", "c"]);
        r.report(ids[0], &Verdict::Pass);
        r.report(ids[1], &Verdict::Skip("no lru_gen".into()));
        r.report(ids[2], &Verdict::Fail("3 pages missing".into()));
        assert_eq!(r.finish(), EXIT_FAIL);
        assert_eq!(
            text(&r),
            "TAP version 13\n1..3\nok 1 a\nok 2 b # SKIP no lru_gen\n# c: 3 pages missing\nnot ok 3 c\n\
             # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0\n"
        );
    }

    /// Built to fail: three tests registered, two reported. Every result is `ok`, yet the run
    /// must exit 1 and say so, as `ksft_finished()` does.
    #[test]
    fn a_run_that_reports_fewer_tests_than_it_registered_fails() {
        let mut r = report();
        let ids = planned(&mut r, &["a", "b", "c"]);
        r.report(ids[0], &Verdict::Pass);
        r.report(ids[1], &Verdict::Pass);
        assert_eq!(r.finish(), EXIT_FAIL);
        let out = text(&r);
        assert!(
            out.contains("# Planned tests != run tests (3 != 2)\n"),
            "{out}"
        );
        assert!(
            out.ends_with("pass:2 fail:0 xfail:0 xpass:0 skip:0 error:1\n"),
            "{out}"
        );
    }

    #[test]
    fn results_out_of_order_twice_or_unplanned_are_harness_errors() {
        let mut r = report();
        let ids = planned(&mut r, &["a", "b"]);
        r.report(ids[1], &Verdict::Pass);
        r.report(ids[0], &Verdict::Pass);
        r.report(ids[0], &Verdict::Pass);
        let late = r.add("late");
        r.report(ids[1], &Verdict::Pass);
        r.report(late, &Verdict::Pass);
        let out = text(&r);
        assert!(out.contains("test 2 'b' reported out of order"), "{out}");
        assert!(out.contains("test 1 'a' reported twice"), "{out}");
        assert!(
            out.contains("test 'late' registered after the plan 1..2"),
            "{out}"
        );
        assert_eq!(r.finish(), EXIT_FAIL);
    }

    #[test]
    fn a_skip_before_the_plan_is_a_skipped_plan() {
        let mut r = report();
        assert_eq!(r.skip_all("no /dev/kvm"), EXIT_SKIP);
        assert_eq!(text(&r), "TAP version 13\n1..0 # SKIP no /dev/kvm\n");
    }

    /// An unplanned run has printed its header; a skip must not print a second one.
    #[test]
    fn a_skip_after_the_header_prints_no_second_header() {
        let mut r = report();
        r.unplanned();
        r.diag("before: ...");
        assert_eq!(r.skip_all("no /dev/kvm"), EXIT_SKIP);
        assert_eq!(
            text(&r),
            "TAP version 13\n# before: ...\n1..0 # SKIP no /dev/kvm\n"
        );
    }

    /// Built to fail on the old writer, which printed `TAP version 13` and `1..0 # SKIP` after a
    /// plan: after the plan every remaining test is skipped by name, and an earlier failure
    /// still fails the run.
    #[test]
    fn a_skip_after_the_plan_skips_each_remaining_test() {
        let mut r = report();
        let ids = planned(&mut r, &["a", "b", "c"]);
        r.report(ids[0], &Verdict::Pass);
        assert_eq!(r.skip_all("could not create memcg"), EXIT_PASS);
        assert_eq!(
            text(&r),
            "TAP version 13\n1..3\nok 1 a\nok 2 b # SKIP could not create memcg\n\
             ok 3 c # SKIP could not create memcg\n\
             # Totals: pass:1 fail:0 xfail:0 xpass:0 skip:2 error:0\n"
        );
        assert_eq!(text(&r).matches("TAP version").count(), 1);

        let mut r = report();
        let ids = planned(&mut r, &["a", "b"]);
        r.report(ids[0], &Verdict::Fail(String::new()));
        assert_eq!(r.skip_all("gone"), EXIT_FAIL);

        let mut r = report();
        planned(&mut r, &["a", "b"]);
        assert_eq!(r.skip_all("gone"), EXIT_SKIP);
        assert!(text(&r).contains("ok 1 a # SKIP gone\nok 2 b # SKIP gone\n"));
    }

    #[test]
    fn an_unplanned_run_prints_its_plan_last() {
        let mut r = report();
        r.unplanned();
        let a = r.add("a");
        r.report(a, &Verdict::Pass);
        let b = r.add("b");
        r.report(b, &Verdict::Skip("x".into()));
        assert_eq!(r.finish(), EXIT_PASS);
        assert_eq!(
            text(&r),
            "TAP version 13\nok 1 a\nok 2 b # SKIP x\n1..2\n\
             # Totals: pass:1 fail:0 xfail:0 xpass:0 skip:1 error:0\n"
        );

        let mut r = report();
        r.unplanned();
        let a = r.add("a");
        r.report(a, &Verdict::Pass);
        assert_eq!(r.skip_all("lost the guest"), EXIT_PASS);
        assert!(text(&r).contains("ok 1 a\nok 2 # SKIP lost the guest\n1..2\n"));
    }

    #[test]
    fn all_skipped_exits_4_and_nothing_run_exits_0() {
        let mut r = report();
        let ids = planned(&mut r, &["a"]);
        r.report(ids[0], &Verdict::Skip("x".into()));
        assert_eq!(r.finish(), EXIT_SKIP);
        let mut r = report();
        planned(&mut r, &[]);
        assert_eq!(r.finish(), EXIT_PASS);
    }
}
