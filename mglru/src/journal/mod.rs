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

mod entry;
mod error;
pub mod knobs;
mod undo;

pub use entry::{
    parse_stat, proc_stat, EntryFile, HostChange, JournalEntry, Outcome, Owner, Reconciled,
    Recorded,
};
pub use error::JournalError;

use crate::kernel::sysfs::{read_trimmed, write_str};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the journal of the running system lives.
pub const JOURNAL_DIR: &str = "/run/agelab";
const LOCK_FILE: &str = ".lock";

static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);

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
    /// current value (for a choice knob such as `always [madvise] never`, the selected word, the
    /// only thing it accepts back), or, when another live agelab process already changed it, the original value
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
            None => knobs::restorable_value(&read_trimmed(path)?),
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
