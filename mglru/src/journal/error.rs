//! The journal's errors.

use crate::kernel::sysfs::KernelFileError;
use std::path::PathBuf;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal directory could not be created or listed.
    #[error("journal directory {path}: {err}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// The journal lock could not be taken.
    #[error("locking the journal {path}: {err}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// An entry could not be written, renamed or removed.
    #[error("journal entry {path}: {what}: {err}")]
    Entry {
        /// The entry (or its temp file).
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// An entry does not parse: it is left in place and reported.
    #[error("journal entry {path} does not parse: {msg}")]
    Corrupt {
        /// The entry.
        path: PathBuf,
        /// The parser's message.
        msg: String,
    },
    /// This process's own `/proc/self/stat` could not be read or parsed.
    #[error("reading the start time of pid {pid} from /proc/{pid}/stat: {msg}")]
    ProcStat {
        /// The process.
        pid: i32,
        /// What went wrong.
        msg: String,
    },
    /// A knob could not be read before, or written for, a change.
    #[error(transparent)]
    Knob(#[from] KernelFileError),
    /// Undoing a recorded change failed (the entry stays for the next reconcile).
    #[error("undoing {what}: {why}")]
    Undo {
        /// The change.
        what: String,
        /// Cause.
        why: String,
    },
}
