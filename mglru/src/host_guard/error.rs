//! The host guard's error, apart from the guard so that the kernel interfaces' errors can wrap it
//! without importing the guard that imports them.

use crate::journal::JournalError;

/// Errors from setting up signal cleanup, journaling a change or undoing it.
#[derive(Debug, thiserror::Error)]
pub enum HostGuardError {
    /// `pthread_sigmask` refused to block the cleanup signals.
    #[error("blocking SIGINT/SIGTERM/SIGHUP in the main thread: {0}")]
    SigMask(#[source] nix::Error),
    /// The cleanup thread could not be started.
    #[error("spawning the signal cleanup thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The change could not be journaled (so it was not made), or undoing it failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}
