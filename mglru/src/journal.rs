//! A journal of host changes that survives the process that made them.
//!
//! [`host_guard`](crate::host_guard) restores host state on a normal exit, an error, a panic and
//! SIGINT/SIGTERM/SIGHUP — but not after SIGKILL, an OOM kill or a crash. So before agelab changes
//! anything on the host it records the change and how to undo it here: one JSON file per change in
//! [`JOURNAL_DIR`] (`/run/agelab`, a tmpfs: gone at reboot, like the changes themselves), written
//! atomically (temp file + rename) and carrying the owner's pid and start time (field 22 of
//! `/proc/<pid>/stat`, so a recycled pid is not mistaken for the owner). The entry is removed when
//! the change is undone. Every agelab command first [reconciles](Journal::reconcile): entries
//! whose owner is gone are undone; `agelab cleanup` does the same on demand and also lists the
//! entries still owned by live processes (untouched).
//!
//! Shared knobs (`lru_gen/enabled`, `min_ttl_ms`, `cgroup.subtree_control`): a second agelab
//! process changing a knob another live agelab process already changed records the *original*
//! value (taken from the first entry), and whoever undoes while another live entry for the same
//! file exists leaves the file alone — so the last one out restores the value found before any
//! agelab ran, whatever the order of exits and kills.
//!
//! All journal operations hold an `flock` on `JOURNAL_DIR/.lock` (briefly), so concurrent agelab
//! processes never act on the same entry twice.

use crate::kernel::sysfs::{read_trimmed, write_str, KernelFileError};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the journal of the running system lives.
pub const JOURNAL_DIR: &str = "/run/agelab";
const LOCK_FILE: &str = ".lock";

static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);

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
        /// What agelab's kdamond monitors, as [`damon::configured_target`] reads it back
        /// (`None` in entries written before it was recorded: the kdamond is stopped whatever it
        /// monitors).
        ///
        /// [`damon::configured_target`]: crate::kernel::damon::configured_target
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
}

impl HostChange {
    /// A short name for file names and messages.
    fn kind(&self) -> &'static str {
        match self {
            HostChange::ZramSwap { .. } => "zram",
            HostChange::Memcg { .. } => "memcg",
            HostChange::Knob { .. } => "knob",
            HostChange::Kdamond { .. } => "kdamond",
        }
    }

    /// Undoes the change; returns what was done.
    fn undo(&self) -> Result<String, JournalError> {
        let fail = |why: String| JournalError::Undo {
            what: self.to_string(),
            why,
        };
        match self {
            HostChange::ZramSwap { index, hot_added } => {
                crate::kernel::swap::undo_zram(*index, *hot_added).map_err(|e| fail(e.to_string()))
            }
            HostChange::Memcg { dir, parent_dir } => {
                if !dir.exists() {
                    return Ok(format!("memcg {} already gone", dir.display()));
                }
                crate::kernel::memcg::remove_cgroup(dir, parent_dir)
                    .map(|()| format!("memcg {} removed", dir.display()))
                    .map_err(|e| fail(e.to_string()))
            }
            HostChange::Knob { path, restore } => write_str(path, restore)
                .map(|()| format!("{} = {restore}", path.display()))
                .map_err(|e| fail(e.to_string())),
            HostChange::Kdamond {
                dir,
                nr_path,
                target,
            } => crate::kernel::damon::undo_kdamond(dir, nr_path, target.as_deref())
                .map_err(|e| fail(e.to_string())),
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

/// The journal in one directory.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

/// Holds the journal's `flock` until dropped.
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

impl Journal {
    /// The running system's journal, [`JOURNAL_DIR`].
    pub fn system() -> Self {
        Self::at(JOURNAL_DIR)
    }

    /// A journal in `dir` (tests).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Journal { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ensure_dir(&self) -> Result<(), JournalError> {
        std::fs::create_dir_all(&self.dir).map_err(|err| JournalError::Dir {
            path: self.dir.clone(),
            err,
        })
    }

    /// Takes the journal lock (blocking), creating the directory if needed.
    pub fn lock(&self) -> Result<JournalLock, JournalError> {
        self.ensure_dir()?;
        let path = self.dir.join(LOCK_FILE);
        let lock_err = |err| JournalError::Lock {
            path: path.clone(),
            err,
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        loop {
            // SAFETY: flock on an fd owned by `f`, which outlives the call; no memory is passed.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(JournalLock { _file: f });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(lock_err(err));
            }
        }
    }

    /// Every entry, by file name order (`Err` for files that do not parse). Missing directory:
    /// no entries.
    pub fn entries(&self) -> Result<Vec<EntryFile>, JournalError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                return Err(JournalError::Dir {
                    path: self.dir.clone(),
                    err,
                })
            }
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files
            .into_iter()
            .map(|p| {
                let e = read_entry(&p);
                (p, e)
            })
            .collect())
    }

    /// Records `change` (made by this process) before it is made; returns the entry's handle.
    pub fn record(&self, description: &str, change: HostChange) -> Result<Recorded, JournalError> {
        let _lock = self.lock()?;
        self.record_locked(description, change)
    }

    fn record_locked(
        &self,
        description: &str,
        change: HostChange,
    ) -> Result<Recorded, JournalError> {
        let owner = Owner::current()?;
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}-{}-{seq:04}-{}.json",
            owner.pid,
            owner.start_time,
            change.kind()
        );
        let file = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let entry = JournalEntry {
            owner,
            description: description.to_string(),
            change: change.clone(),
        };
        let text = serde_json::to_string_pretty(&entry).expect("journal entry serialises");
        let io = |path: &Path, what, err| JournalError::Entry {
            path: path.to_path_buf(),
            what,
            err,
        };
        std::fs::write(&tmp, text).map_err(|e| io(&tmp, "writing", e))?;
        std::fs::rename(&tmp, &file).map_err(|e| io(&file, "renaming into place", e))?;
        Ok(Recorded {
            journal: self.dir.clone(),
            file,
            change,
        })
    }

    /// Records a knob change and makes it: the entry keeps the value to restore — the file's
    /// current value, or, when another live agelab process already changed it, the original value
    /// from that process's entry. Returns the handle and the value that will be restored.
    pub fn set_knob(
        &self,
        description: &str,
        path: &Path,
        value: &str,
    ) -> Result<(Recorded, String), JournalError> {
        let _lock = self.lock()?;
        let restore = match self.live_knob_entry(path, None)? {
            Some((_, e)) => match e.change {
                HostChange::Knob { restore, .. } => restore,
                _ => unreachable!("live_knob_entry returns knob entries"),
            },
            None => read_trimmed(path)?,
        };
        let rec = self.record_locked(
            description,
            HostChange::Knob {
                path: path.to_path_buf(),
                restore: restore.clone(),
            },
        )?;
        if let Err(e) = write_str(path, value) {
            // Nothing changed: forget the entry.
            let _ = std::fs::remove_file(&rec.file);
            return Err(e.into());
        }
        Ok((rec, restore))
    }

    /// A journaled knob change of `path` by a live process, other than the entry `except`.
    fn live_knob_entry(
        &self,
        path: &Path,
        except: Option<&Path>,
    ) -> Result<Option<(PathBuf, JournalEntry)>, JournalError> {
        for (file, e) in self.entries()? {
            let Ok(e) = e else { continue };
            if Some(file.as_path()) == except {
                continue;
            }
            if matches!(&e.change, HostChange::Knob { path: p, .. } if p == path)
                && e.owner.is_alive()
            {
                return Ok(Some((file, e)));
            }
        }
        Ok(None)
    }

    /// Undoes a recorded change now (the owner's own undo) and removes its entry. A knob another
    /// live agelab process also changed is left to that process.
    pub fn undo(&self, rec: &Recorded) -> Result<String, JournalError> {
        let _lock = self.lock()?;
        let done = self.undo_locked(&rec.file, &rec.change)?;
        Ok(match done {
            Outcome::Restored(s) => s,
            Outcome::HandedOver(o) => format!("{} left to live {o}", rec.change),
            Outcome::Live | Outcome::Failed(_) => unreachable!("undo_locked returns these as Err"),
        })
    }

    fn undo_locked(&self, file: &Path, change: &HostChange) -> Result<Outcome, JournalError> {
        if let HostChange::Knob { path, .. } = change {
            if let Some((_, other)) = self.live_knob_entry(path, Some(file))? {
                self.remove_entry(file)?;
                return Ok(Outcome::HandedOver(other.owner));
            }
        }
        let done = change.undo()?;
        self.remove_entry(file)?;
        Ok(Outcome::Restored(done))
    }

    /// Removes an entry without undoing (the change was undone some other way).
    pub fn forget(&self, rec: &Recorded) -> Result<(), JournalError> {
        let _lock = self.lock()?;
        self.remove_entry(&rec.file)
    }

    fn remove_entry(&self, file: &Path) -> Result<(), JournalError> {
        match std::fs::remove_file(file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(JournalError::Entry {
                path: file.to_path_buf(),
                what: "removing",
                err,
            }),
        }
    }

    /// Live entries of one kind of change (for choosing devices nobody else holds).
    pub fn live_changes(&self) -> Result<Vec<(Owner, HostChange)>, JournalError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|(_, e)| e.ok())
            .filter(|e| e.owner.is_alive())
            .map(|e| (e.owner, e.change))
            .collect())
    }

    /// Every change recorded in the journal, whatever its owner's state.
    pub fn all_changes(&self) -> Result<Vec<(Owner, HostChange)>, JournalError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|(_, e)| e.ok())
            .map(|e| (e.owner, e.change))
            .collect())
    }

    /// Undoes every entry whose owner is gone (newest first, as an exiting owner would), removes
    /// temp files left by owners killed mid-write, and lists every entry with what was done.
    /// Entries of live owners (including this process) are untouched.
    pub fn reconcile(&self) -> Result<Vec<Reconciled>, JournalError> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        self.remove_stale_temps();
        let mut out = Vec::new();
        let mut entries = self.entries()?;
        // Newest first within an owner: file names sort by pid, start time, then sequence.
        entries.reverse();
        for (file, e) in entries {
            let entry = match e {
                Ok(e) => e,
                Err(err) => {
                    out.push(Reconciled {
                        file,
                        entry: None,
                        outcome: Outcome::Failed(err.to_string()),
                    });
                    continue;
                }
            };
            let outcome = if entry.owner.is_alive() {
                Outcome::Live
            } else {
                match self.undo_locked(&file, &entry.change) {
                    Ok(o) => o,
                    Err(err) => Outcome::Failed(err.to_string()),
                }
            };
            out.push(Reconciled {
                file,
                entry: Some(entry),
                outcome,
            });
        }
        out.reverse();
        Ok(out)
    }

    fn remove_stale_temps(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix('.').filter(|_| name.ends_with(".tmp")) else {
                continue;
            };
            let mut f = rest.split('-');
            let (Some(pid), Some(start)) = (f.next(), f.next()) else {
                continue;
            };
            let (Ok(pid), Ok(start)) = (pid.parse::<i32>(), start.parse::<u64>()) else {
                continue;
            };
            let owner = Owner {
                pid,
                start_time: start,
                command: String::new(),
            };
            if !owner.is_alive() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn read_entry(path: &Path) -> Result<JournalEntry, JournalError> {
    let text = std::fs::read_to_string(path).map_err(|err| JournalError::Entry {
        path: path.to_path_buf(),
        what: "reading",
        err,
    })?;
    serde_json::from_str(&text).map_err(|e| JournalError::Corrupt {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Reconciles the system journal at the start of a command and reports, on stderr, one line per
/// entry whose owner was gone (live owners' entries are not reported here; `agelab cleanup` lists
/// them). Errors are reported, not returned: a command still runs when the journal is unreadable.
/// Runs once per process.
pub fn reconcile_at_start(program: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| reconcile_and_report(program));
}

fn reconcile_and_report(program: &str) {
    match Journal::system().reconcile() {
        Ok(lines) => {
            for r in lines.iter().filter(|r| r.outcome != Outcome::Live) {
                eprintln!("{program}: journal: {r}");
            }
        }
        Err(e) => eprintln!("{program}: journal: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agelab-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn stat_field_22_after_odd_comm() {
        let text = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(text), Some((987654, 'S')));
        let own = proc_stat(std::process::id() as i32).unwrap().unwrap();
        assert!(own.0 > 0);
    }

    #[test]
    fn recycled_pid_is_not_the_owner() {
        let mut me = Owner::current().unwrap();
        assert!(me.is_alive());
        me.start_time += 1;
        assert!(
            !me.is_alive(),
            "same pid, other start time must count as gone"
        );
        let gone = Owner {
            pid: i32::MAX - 1,
            start_time: 1,
            command: String::new(),
        };
        assert!(!gone.is_alive());
    }

    /// A dead owner's knob entry is restored by reconcile; a live one is untouched; the entry file
    /// is written atomically and removed when undone.
    #[test]
    fn reconcile_restores_dead_owner_and_keeps_live() {
        let d = tmpdir("reconcile");
        let j = Journal::at(d.join("j"));
        let knob = d.join("knob");
        std::fs::write(&knob, "5\n").unwrap();
        let (rec, prev) = j.set_knob("test knob", &knob, "9").unwrap();
        assert_eq!(prev, "5");
        assert_eq!(std::fs::read_to_string(&knob).unwrap(), "9");
        // Live owner: untouched.
        let r = j.reconcile().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].outcome, Outcome::Live);
        assert_eq!(std::fs::read_to_string(&knob).unwrap(), "9");
        // Make the owner "gone" by rewriting the entry with another start time.
        let mut e = read_entry(&rec.file).unwrap();
        e.owner.start_time += 1;
        std::fs::write(&rec.file, serde_json::to_string(&e).unwrap()).unwrap();
        let r = j.reconcile().unwrap();
        assert!(matches!(r[0].outcome, Outcome::Restored(_)), "{r:?}");
        assert_eq!(std::fs::read_to_string(&knob).unwrap(), "5");
        assert!(j.entries().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Two holders of one knob: the second records the original value; whoever leaves first
    /// leaves the file to the other; the last one restores the original.
    #[test]
    fn shared_knob_last_one_out_restores_original() {
        let d = tmpdir("shared");
        let j = Journal::at(d.join("j"));
        let knob = d.join("knob");
        std::fs::write(&knob, "orig").unwrap();
        let (a, _) = j.set_knob("a", &knob, "A").unwrap();
        let (b, prev_b) = j.set_knob("b", &knob, "B").unwrap();
        assert_eq!(prev_b, "orig");
        let done = j.undo(&a).unwrap();
        assert!(done.contains("left to live"), "{done}");
        assert_eq!(std::fs::read_to_string(&knob).unwrap(), "B");
        j.undo(&b).unwrap();
        assert_eq!(std::fs::read_to_string(&knob).unwrap(), "orig");
        assert!(j.entries().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn corrupt_entry_is_reported_and_kept() {
        let d = tmpdir("corrupt");
        let j = Journal::at(&d);
        std::fs::write(d.join("1-1-0001-knob.json"), "{nonsense").unwrap();
        std::fs::write(d.join(".2147483646-1-0002-knob.json.tmp"), "{half").unwrap();
        let r = j.reconcile().unwrap();
        assert_eq!(r.len(), 1);
        assert!(r[0].entry.is_none());
        assert!(d.join("1-1-0001-knob.json").exists());
        assert!(
            !d.join(".2147483646-1-0002-knob.json.tmp").exists(),
            "a dead owner's temp file is removed"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
