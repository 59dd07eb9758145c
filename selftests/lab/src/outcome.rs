//! What one test did on one kernel, as the matrix table, the results files and the live view
//! report it.

/// The result of one test on one kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exit status 0.
    Pass,
    /// Exit status 4.
    Skip,
    /// Any other exit status.
    Fail(i32),
    /// The lab could not run the test (kernel fetch, boot, timeout).
    Error,
    /// A designed failure (see the module doc) that happened, with its exit status.
    ExpectedFail(i32),
    /// A designed failure that did not happen: the check could not fail.
    UnexpectedPass,
    /// The cell ran past its time limit; QEMU was killed.
    Timeout,
    /// SIGINT/SIGTERM stopped the cell while it ran.
    Interrupted,
    /// The run was interrupted before the cell started.
    NotRun,
}

impl Outcome {
    /// The table's word for it.
    pub fn label(&self) -> String {
        match self {
            Outcome::Pass => "pass".into(),
            Outcome::Skip => "skip".into(),
            Outcome::Fail(c) => format!("FAIL({c})"),
            Outcome::Error => "ERROR".into(),
            Outcome::ExpectedFail(_) => "fail (expected)".into(),
            Outcome::UnexpectedPass => "PASS (unexpected)".into(),
            Outcome::Timeout => "TIMEOUT".into(),
            Outcome::Interrupted => "interrupted".into(),
            Outcome::NotRun => "not run".into(),
        }
    }

    /// Its name in `results.json` (with [`Outcome::status`], enough to read it back).
    pub fn key(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Skip => "skip",
            Outcome::Fail(_) => "fail",
            Outcome::Error => "error",
            Outcome::ExpectedFail(_) => "expected-fail",
            Outcome::UnexpectedPass => "unexpected-pass",
            Outcome::Timeout => "timeout",
            Outcome::Interrupted => "interrupted",
            Outcome::NotRun => "not-run",
        }
    }

    /// The command's exit status, when it finished.
    pub fn status(&self) -> Option<i32> {
        match self {
            Outcome::Pass | Outcome::UnexpectedPass => Some(0),
            Outcome::Skip => Some(4),
            Outcome::Fail(c) | Outcome::ExpectedFail(c) => Some(*c),
            _ => None,
        }
    }

    /// The outcome named `key` with exit `status` (an unknown key reads as an error).
    pub fn from_key(key: &str, status: Option<i32>) -> Self {
        let code = status.unwrap_or(1);
        match key {
            "pass" => Outcome::Pass,
            "skip" => Outcome::Skip,
            "fail" => Outcome::Fail(code),
            "expected-fail" => Outcome::ExpectedFail(code),
            "unexpected-pass" => Outcome::UnexpectedPass,
            "timeout" => Outcome::Timeout,
            "interrupted" => Outcome::Interrupted,
            "not-run" => Outcome::NotRun,
            _ => Outcome::Error,
        }
    }

    /// Whether it counts as passed (`--hide-passed` hides it).
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Pass | Outcome::ExpectedFail(_))
    }

    /// The outcome of exit `status`, for a test designed to fail (`expect_fail`) or not.
    pub fn from_status(status: i32, expect_fail: bool) -> Self {
        match (status, expect_fail) {
            (0, false) => Outcome::Pass,
            (0, true) => Outcome::UnexpectedPass,
            (4, _) => Outcome::Skip,
            (c, false) => Outcome::Fail(c),
            (c, true) => Outcome::ExpectedFail(c),
        }
    }

    /// Whether this outcome fails the matrix.
    pub fn fails_matrix(&self) -> bool {
        matches!(
            self,
            Outcome::Fail(_)
                | Outcome::Error
                | Outcome::UnexpectedPass
                | Outcome::Timeout
                | Outcome::Interrupted
                | Outcome::NotRun
        )
    }
}
