//! What the journal holds: the changes agelab makes to the host ([`HostChange`]), who made them
//! ([`Owner`]) and the entries, handles and reconcile lines built from them.

use super::error::JournalError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The process that made a change: pid plus start time, so a recycled pid is not the owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot).
    pub start_time: u64,
    /// The owner's command line (first words), for messages.
    pub command: String,
}

impl Owner {
    /// The calling process.
    pub fn current() -> Result<Self, JournalError> {
        let pid = std::process::id() as i32;
        let (start_time, _) = proc_stat(pid)?.ok_or_else(|| JournalError::ProcStat {
            pid,
            msg: "own /proc entry missing".into(),
        })?;
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
        let command = cmdline
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .take(3)
            .map(|w| {
                let w = String::from_utf8_lossy(w);
                // Only the program's name, not its path.
                w.rsplit('/').next().unwrap_or(&w).to_string()
            })
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Owner {
            pid,
            start_time,
            command,
        })
    }

    /// Whether the owner still runs: same pid, same start time, not a zombie.
    pub fn is_alive(&self) -> bool {
        match proc_stat(self.pid) {
            Ok(Some((start, state))) => start == self.start_time && !matches!(state, 'Z' | 'X'),
            // Unreadable for another reason than absence: assume alive (never undo wrongly).
            Err(_) => true,
            Ok(None) => false,
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// `(start_time, state)` of `pid` from `/proc/<pid>/stat`; `None` if there is no such process.
pub fn proc_stat(pid: i32) -> Result<Option<(u64, char)>, JournalError> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(JournalError::ProcStat {
                pid,
                msg: e.to_string(),
            })
        }
    };
    parse_stat(&text)
        .map(Some)
        .ok_or_else(|| JournalError::ProcStat {
            pid,
            msg: format!("unexpected format: {text:?}"),
        })
}

/// Field 3 (state) and field 22 (starttime): the comm field (2) may hold spaces and parentheses,
/// so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<(u64, char)> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let start = f.get(22 - 3)?.parse().ok()?;
    Some((start, state))
}

/// One change agelab made to the host, with what undoing it takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostChange {
    /// `/dev/zram<index>` set up as swap (`hot_added`: the device itself was created by agelab
    /// through `/sys/class/zram-control/hot_add`). Undo: swapoff, reset, hot_remove if hot-added.
    ZramSwap {
        /// Device index.
        index: u32,
        /// Whether agelab created the device.
        hot_added: bool,
    },
    /// A memcg directory created by agelab. Undo: move its tasks to `parent_dir`, rmdir.
    Memcg {
        /// The cgroup directory.
        dir: PathBuf,
        /// Its parent (where tasks go back).
        parent_dir: PathBuf,
    },
    /// A knob file whose previous value was `restore`. Undo: write `restore` back (unless another
    /// live agelab process still holds a change of the same file).
    Knob {
        /// The file.
        path: PathBuf,
        /// What to write back.
        restore: String,
    },
    /// A DAMON kdamond created by agelab. Undo: `state` off, `nr_kdamonds` 0 — only while the
    /// kdamond in `dir` still monitors `target` (a kdamond someone set up in the slot after the
    /// owner died is not agelab's and is left alone).
    Kdamond {
        /// The kdamond directory (`.../kdamonds/0`).
        dir: PathBuf,
        /// The `nr_kdamonds` file.
        nr_path: PathBuf,
        /// What agelab's kdamond monitors, as [`configured_target`] reads it back
        /// (`None` in entries written before it was recorded: the kdamond is stopped whatever it
        /// monitors).
        ///
        /// [`configured_target`]: crate::kernel::undo::configured_target
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
}

impl HostChange {
    /// A short name for file names and messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            HostChange::ZramSwap { .. } => "zram",
            HostChange::Memcg { .. } => "memcg",
            HostChange::Knob { .. } => "knob",
            HostChange::Kdamond { .. } => "kdamond",
        }
    }
}

impl std::fmt::Display for HostChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostChange::ZramSwap { index, hot_added } => write!(
                f,
                "/dev/zram{index} as swap{}",
                if *hot_added { " (hot-added)" } else { "" }
            ),
            HostChange::Memcg { dir, .. } => write!(f, "memcg {}", dir.display()),
            HostChange::Knob { path, restore } => {
                write!(f, "{} (was {restore})", path.display())
            }
            HostChange::Kdamond { dir, .. } => write!(f, "DAMON {}", dir.display()),
        }
    }
}

/// An entry's file and its parsed content (`Err`: it does not parse).
pub type EntryFile = (PathBuf, Result<JournalEntry, JournalError>);

/// One file of the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Who made the change.
    pub owner: Owner,
    /// What it was, in words.
    pub description: String,
    /// What it was, for undoing it.
    pub change: HostChange,
}

/// A recorded change: the entry's file and the change (what a guard needs to undo it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The journal directory.
    pub journal: PathBuf,
    /// The entry file.
    pub file: PathBuf,
    /// The change.
    pub change: HostChange,
}

/// What reconciling did with one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The owner was gone and the change was undone (what was done).
    Restored(String),
    /// The owner was gone; another live agelab process holds the same knob, so it was left to it.
    HandedOver(Owner),
    /// The owner still runs: untouched.
    Live,
    /// The owner was gone but undoing failed: the entry stays.
    Failed(String),
}

/// One line of a reconcile.
#[derive(Clone, Debug)]
pub struct Reconciled {
    /// The entry file.
    pub file: PathBuf,
    /// The entry (`None`: it did not parse).
    pub entry: Option<JournalEntry>,
    /// What was done.
    pub outcome: Outcome,
}

impl std::fmt::Display for Reconciled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(e) = &self.entry else {
            return write!(f, "{}: unreadable, left in place", self.file.display());
        };
        match &self.outcome {
            Outcome::Restored(done) => write!(
                f,
                "restored {done} (left by {}, which is gone: {})",
                e.owner, e.description
            ),
            Outcome::HandedOver(o) => write!(
                f,
                "left {} to live {o} (left by gone {})",
                e.change, e.owner
            ),
            Outcome::Live => write!(
                f,
                "{} owned by live {}: untouched ({})",
                e.change, e.owner, e.description
            ),
            Outcome::Failed(why) => write!(
                f,
                "FAILED to restore {} (left by gone {}): {why}; entry kept",
                e.change, e.owner
            ),
        }
    }
}
