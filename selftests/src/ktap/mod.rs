//! The selftest harness, kselftest conventions: KTAP output (plan, `ok`/`not ok`, `# SKIP`
//! directives, `#` diagnostics), the exit codes (0 pass, 1 fail, 4 skip; 2 for usage errors here,
//! [`crate::args`]) and kernel-style timestamps.
//!
//! Tests are registered first ([`TestPlan::add`]) and the plan is their number, printed by
//! [`TestPlan::start`] (kselftest_harness's test table and `ksft_set_plan`); the rules of the
//! writer are in [`report`]. Runs whose tests depend on what they find ([`Ktap::unplanned`])
//! register each test as they report it and print the plan last.
//!
//! One writer per process: [`Ktap`] and the free functions ([`diag`], [`skip_all`], [`fail`]) all
//! write through it, so a whole-run skip knows whether a plan was printed. Every way out
//! ([`Ktap::finish`], [`fail`], [`skip_all`]) first restores what the test changed on the host
//! (memcgs, sysfs knobs, kdamonds: `agelab_mglru::host_guard`), because `std::process::exit`
//! runs no destructors. Which errors are skips rather than failures: [`host_limit()`].

pub mod host_limit;
pub mod report;

pub use host_limit::host_limit;
pub use report::TestId;

use agelab_util::exit::ExitClass;
use report::Report;
use std::io::Write;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

/// Exit code: every test passed.
pub const EXIT_PASS: i32 = ExitClass::Success.code() as i32;
/// Exit code: a test failed.
pub const EXIT_FAIL: i32 = ExitClass::Failure.code() as i32;
/// Exit code: bad command line (kselftest's XFAIL slot; these binaries never report XFAIL).
pub const EXIT_USAGE: i32 = ExitClass::BadInput.code() as i32;
/// Exit code: the test was skipped (missing host feature).
pub const EXIT_SKIP: i32 = ExitClass::Skip.code() as i32;

/// How one test ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It passed.
    Pass,
    /// It failed; the reason (may be empty) is printed as `# name: reason` before `not ok`.
    Fail(String),
    /// It could not run here, for the reason given.
    Skip(String),
}

impl Verdict {
    /// The verdict on a test that stopped with `error`: a skip when the error is a host limit
    /// ([`host_limit()`]), else a failure.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        match host_limit(error) {
            Some(why) => Verdict::Skip(why),
            None => Verdict::Fail(error.to_string()),
        }
    }
}

/// The process's one KTAP writer.
static REPORT: LazyLock<Mutex<Report<std::io::Stdout>>> =
    LazyLock::new(|| Mutex::new(Report::new(std::io::stdout())));

fn report() -> MutexGuard<'static, Report<std::io::Stdout>> {
    // A thread that panicked while printing leaves the counts usable.
    REPORT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The tests of a binary, registered before any runs.
#[derive(Debug, Default)]
pub struct TestPlan {
    names: Vec<String>,
}

impl TestPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers test `name`; results are reported in registration order.
    pub fn add(&mut self, name: impl Into<String>) -> TestId {
        self.names.push(name.into());
        TestId(self.names.len() - 1)
    }

    /// Prints `TAP version 13` and the plan `1..N`, N the number of registered tests.
    pub fn start(self) -> Ktap {
        report().plan(self.names);
        Ktap(())
    }
}

/// The running KTAP report of this process (see the module documentation).
#[derive(Debug)]
pub struct Ktap(());

impl Ktap {
    /// Prints `TAP version 13`; each test is registered when it is reported ([`Ktap::add`]) and
    /// the plan follows the results (for tests whose number depends on what the host offers).
    pub fn unplanned() -> Self {
        report().unplanned();
        Ktap(())
    }

    /// Registers a test of an unplanned run (a harness error in a planned run).
    pub fn add(&mut self, name: &str) -> TestId {
        report().add(name)
    }

    /// The name test `id` was registered with.
    pub fn name(&self, id: TestId) -> String {
        report().name(id).to_string()
    }

    /// Prints a diagnostic line (`# text`).
    pub fn diag(&self, text: &str) {
        diag(text);
    }

    /// Reports test `id` as passed or failed.
    pub fn result(&mut self, id: TestId, passed: bool) {
        let verdict = if passed {
            Verdict::Pass
        } else {
            Verdict::Fail(String::new())
        };
        report().report(id, &verdict);
    }

    /// Reports test `id` as skipped for `reason`.
    pub fn skip(&mut self, id: TestId, reason: &str) {
        report().report(id, &Verdict::Skip(reason.to_string()));
    }

    /// Reports test `id` with `verdict`.
    pub fn verdict(&mut self, id: TestId, verdict: &Verdict) {
        report().report(id, verdict);
    }

    /// Restores the host, prints a deferred plan and the kselftest totals line and exits: 1 if a
    /// test failed or the plan was not kept, 4 if every test was skipped, else 0.
    pub fn finish(self) -> ! {
        agelab_mglru::host_guard::run_pending();
        let code = report().finish();
        std::process::exit(code)
    }
}

/// Prints a diagnostic line (`# text`) per line of `text`.
pub fn diag(text: &str) {
    report().diag(text);
}

/// Skips the rest of the run for `reason` after restoring the host: before the plan
/// `1..0 # SKIP reason` and exit 4; after it, each test not reported yet as skipped and the
/// run's exit code (see [`report`]).
pub fn skip_all(reason: &str) -> ! {
    agelab_mglru::host_guard::run_pending();
    let code = report().skip_all(reason);
    std::process::exit(code)
}

/// `result.or_fail()`: the value, or `# FAIL: <error>` and exit 1 after restoring the host (the
/// kernel selftests' `TEST_ASSERT` on a call that must succeed).
pub trait OrFail<T> {
    /// The value, or [`fail`] with the error.
    fn or_fail(self) -> T;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self) -> T {
        self.unwrap_or_else(|e| fail(&e.to_string()))
    }
}

/// `result.or_skip()`: the value; or, when the error says the host lacks something
/// ([`host_limit()`]), a whole-run [`skip_all`] with that reason; else [`fail`].
pub trait OrSkip<T> {
    /// The value, a skip or a failure.
    fn or_skip(self) -> T;
}

impl<T, E: std::error::Error + 'static> OrSkip<T> for Result<T, E> {
    fn or_skip(self) -> T {
        self.unwrap_or_else(|e| match host_limit(&e) {
            Some(why) => skip_all(&why),
            None => fail(&e.to_string()),
        })
    }
}

/// Prints `# FAIL: msg` and exits 1 after restoring the host.
pub fn fail(msg: &str) -> ! {
    report().diag(&format!("FAIL: {msg}"));
    agelab_mglru::host_guard::run_pending();
    std::process::exit(EXIT_FAIL)
}

/// Formats a duration like the kernel selftests' `%ld.%.9lds`.
pub fn ts(d: Duration) -> String {
    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

/// Flushes stdout (for binaries that also print with `println!`).
pub fn flush() {
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_timestamps() {
        assert_eq!(ts(Duration::from_nanos(1_000_000_123)), "1.000000123s");
    }
}
