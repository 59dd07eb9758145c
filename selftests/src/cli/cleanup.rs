//! `agelab cleanup`: undo what agelab processes that are gone (SIGKILL, OOM kill, crash) left on
//! the host, from the journal under `/run/agelab`, and list every entry found.

use agelab_mglru::journal::{Journal, JournalError, Outcome, Reconciled};

/// Errors of `agelab cleanup`.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// The journal could not be read or locked.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Some entries could not be undone (they stay in the journal).
    #[error("{failed} of {total} journal entries could not be restored (kept for the next try)")]
    Failed {
        /// Entries that failed.
        failed: usize,
        /// Entries found.
        total: usize,
    },
}

impl agelab_util::exit::HasExitClass for CleanupError {
    /// Every cleanup error is a failure.
    fn exit_class(&self) -> agelab_util::exit::ExitClass {
        agelab_util::exit::ExitClass::Failure
    }
}

/// Reconciles the system journal, prints one line per entry (stdout) and a summary; fails when an
/// entry of a gone owner could not be undone.
pub fn run() -> Result<(), CleanupError> {
    let j = Journal::system();
    let lines: Vec<Reconciled> = j.reconcile()?;
    for r in &lines {
        println!("{r}");
    }
    let count = |f: fn(&Outcome) -> bool| lines.iter().filter(|r| f(&r.outcome)).count();
    let restored = count(|o| matches!(o, Outcome::Restored(_) | Outcome::HandedOver(_)));
    let live = count(|o| matches!(o, Outcome::Live));
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    println!(
        "agelab cleanup: {} journal entries in {}: {restored} restored, {live} owned by live processes (untouched), {failed} failed",
        lines.len(),
        j.dir().display()
    );
    if failed > 0 {
        return Err(CleanupError::Failed {
            failed,
            total: lines.len(),
        });
    }
    Ok(())
}
