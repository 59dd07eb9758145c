//! Process exit codes by class, one convention for every agelab binary: 0 success, 1 failure,
//! 2 input the user can fix (a bad command line; kselftest's XFAIL slot, which these binaries
//! never report), 4 skipped (kselftest's KSFT_SKIP: a host feature is missing).
//!
//! Each top-level error says which class it is ([`HasExitClass`]); a `main` turns it into its
//! one-line message and exit code with [`exit_with`]. This module depends on nothing else in the
//! crate so that it can move to a lower crate as is.

use std::fmt::Display;
use std::process::ExitCode;

/// How a process ended, as its exit code reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitClass {
    /// Everything asked for was done (exit 0).
    Success,
    /// Something failed (exit 1).
    Failure,
    /// Input the user can fix, found before anything ran (exit 2).
    BadInput,
    /// Nothing could run on this host (exit 4, kselftest's KSFT_SKIP).
    Skip,
}

impl ExitClass {
    /// The exit code of this class.
    pub const fn code(self) -> u8 {
        match self {
            ExitClass::Success => 0,
            ExitClass::Failure => 1,
            ExitClass::BadInput => 2,
            ExitClass::Skip => 4,
        }
    }
}

impl From<ExitClass> for ExitCode {
    fn from(class: ExitClass) -> Self {
        ExitCode::from(class.code())
    }
}

/// Something that decides a process's exit code: a top-level error or a test report.
pub trait HasExitClass {
    /// The class of this ending.
    fn exit_class(&self) -> ExitClass;

    /// Its exit code ([`ExitClass::code`]).
    fn exit_code(&self) -> u8 {
        self.exit_class().code()
    }
}

/// A child's or a run's exit status as this process's: statuses outside 0..=255 are failures.
pub fn exit_code_of_status(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(ExitClass::Failure.code()))
}

/// Prints `error` as `{prefix}: {error}` on stderr and returns its exit code.
pub fn exit_with<E: Display + HasExitClass>(prefix: &str, error: &E) -> ExitCode {
    eprintln!("{prefix}: {error}");
    error.exit_class().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_kselftest_convention() {
        assert_eq!(ExitClass::Success.code(), 0);
        assert_eq!(ExitClass::Failure.code(), 1);
        assert_eq!(ExitClass::BadInput.code(), 2);
        assert_eq!(ExitClass::Skip.code(), 4);
    }
}
