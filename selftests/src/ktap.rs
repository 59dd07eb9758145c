//! kselftest conventions for the selftest binaries: KTAP output (plan, `ok`/`not ok`, `# SKIP`
//! directives, `#` diagnostics), the exit codes (0 pass, 1 fail, 4 skip; 2 for usage errors here)
//! and kernel-style timestamps. Options: [`crate::options`].
//!
//! The one KTAP writer of the project: every way out of a selftest binary ([`Ktap::finish`],
//! [`fail`], [`skip_all`]) first restores what the test changed on the host (memcgs, sysfs knobs,
//! kdamonds: `agelab_mglru::host_guard`), because `std::process::exit` runs no destructors.

use std::io::Write;
use std::time::Duration;

/// Exit code: every test passed.
pub const EXIT_PASS: i32 = 0;
/// Exit code: a test failed.
pub const EXIT_FAIL: i32 = 1;
/// Exit code: bad command line (kselftest's XFAIL slot; these binaries never report XFAIL).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the test was skipped (missing host feature).
pub const EXIT_SKIP: i32 = 4;

/// A KTAP report: prints the header and plan, numbers the results and picks the exit code.
#[derive(Debug)]
pub struct Ktap {
    /// `None`: the plan is printed by [`Ktap::finish`] (the number of tests is known only then).
    planned: Option<usize>,
    next: usize,
    pass: usize,
    fail: usize,
    skip: usize,
}

impl Ktap {
    /// Prints `TAP version 13` and the plan `1..planned`.
    pub fn new(planned: usize) -> Self {
        println!("TAP version 13");
        println!("1..{planned}");
        flush();
        Ktap {
            planned: Some(planned),
            next: 1,
            pass: 0,
            fail: 0,
            skip: 0,
        }
    }

    /// Prints `TAP version 13`; the plan follows the results (for tests whose number depends on
    /// what the host offers).
    pub fn unplanned() -> Self {
        println!("TAP version 13");
        flush();
        Ktap {
            planned: None,
            next: 1,
            pass: 0,
            fail: 0,
            skip: 0,
        }
    }

    /// Prints a diagnostic line (`# text`).
    pub fn diag(&self, text: &str) {
        diag(text);
    }

    /// Reports test `desc` as passed or failed.
    pub fn result(&mut self, passed: bool, desc: &str) {
        if passed {
            self.pass += 1;
            println!("ok {} {desc}", self.next);
        } else {
            self.fail += 1;
            println!("not ok {} {desc}", self.next);
        }
        self.next += 1;
        flush();
    }

    /// Reports test `desc` as skipped for `reason`.
    pub fn skip(&mut self, desc: &str, reason: &str) {
        self.skip += 1;
        println!("ok {} {desc} # SKIP {reason}", self.next);
        self.next += 1;
        flush();
    }

    /// Exit code: 1 if any test failed, 4 if all were skipped, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.fail > 0 || self.planned.is_some_and(|p| self.next - 1 != p) {
            EXIT_FAIL
        } else if self.skip > 0 && self.pass == 0 {
            EXIT_SKIP
        } else {
            EXIT_PASS
        }
    }

    /// Restores the host, prints the kselftest totals line (and a deferred plan) and exits with
    /// [`Ktap::exit_code`].
    pub fn finish(self) -> ! {
        agelab_mglru::host_guard::run_pending();
        if self.planned.is_none() {
            println!("1..{}", self.next - 1);
        }
        let missing = self.planned.map_or(0, |p| p.saturating_sub(self.next - 1));
        println!(
            "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:{missing}",
            self.pass, self.fail, self.skip
        );
        flush();
        std::process::exit(self.exit_code())
    }
}

/// Prints a diagnostic line (`# text`).
pub fn diag(text: &str) {
    for line in text.lines() {
        println!("# {line}");
    }
    flush();
}

/// Skips the whole binary after restoring the host: `1..0 # SKIP reason`, exit 4.
pub fn skip_all(reason: &str) -> ! {
    agelab_mglru::host_guard::run_pending();
    println!("TAP version 13");
    println!("1..0 # SKIP {reason}");
    flush();
    std::process::exit(EXIT_SKIP)
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

/// Prints `# FAIL: msg` and exits 1 after restoring the host.
pub fn fail(msg: &str) -> ! {
    println!("# FAIL: {msg}");
    flush();
    agelab_mglru::host_guard::run_pending();
    std::process::exit(EXIT_FAIL)
}

/// Formats a duration like the kernel selftests' `%ld.%.9lds`.
pub fn ts(d: Duration) -> String {
    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

fn flush() {
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
