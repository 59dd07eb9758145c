//! Pressure stall information (PSI) for memory: `memory.pressure` of a cgroup v2 group, or the
//! system-wide `/proc/pressure/memory`.
//!
//! A cgroup v1 memcg has no `memory.pressure`. Where a cgroup2 hierarchy is mounted beside v1 (the
//! "hybrid" layout, `/sys/fs/cgroup/unified`), every v2 group still has `memory.pressure`, whatever
//! controllers are bound there: [`PressureSource::for_process`] then creates a v2 group
//! `agelab-psi-<pid>` (journaled like a memcg, removed on every exit path) and moves this process
//! in, so the pressure is this process's own. Otherwise it falls back to the system-wide file and
//! says so ([`PressureSource::scope`]).

use super::memcg::{CgroupVersion, GuestMemcg};
use super::sysfs::{read_trimmed, write_str, KernelFileError};
use crate::host_guard::{HostGuardError, HostRestore, RestoreGuard};
use crate::journal::HostChange;
use std::path::{Path, PathBuf};

/// The system-wide memory pressure file.
pub const PROC_PRESSURE_MEMORY: &str = "/proc/pressure/memory";

/// Errors of PSI.
#[derive(Debug, thiserror::Error)]
pub enum PsiError {
    /// The pressure file could not be read.
    #[error(transparent)]
    File(#[from] KernelFileError),
    /// A line did not parse.
    #[error("{path}: malformed pressure line '{line}'")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line.
        line: String,
    },
    /// The kernel has no PSI (no `/proc/pressure/memory`; `psi=0` or CONFIG_PSI off).
    #[error("no memory pressure information: {0} missing (kernel without CONFIG_PSI or booted with psi=0)")]
    Unavailable(String),
    /// The v2 group for pressure could not be journaled.
    #[error(transparent)]
    Guard(#[from] HostGuardError),
    /// The v2 group could not be created.
    #[error("creating cgroup {path}: {err}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
}

/// One line of a pressure file (`some` or `full`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct PsiLine {
    /// % of the last 10 s some (full) task stalled.
    pub avg10: f64,
    /// % of the last 60 s.
    pub avg60: f64,
    /// % of the last 300 s.
    pub avg300: f64,
    /// Total stall time, µs.
    pub total_us: u64,
}

/// A parsed pressure file.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Pressure {
    /// At least one task stalled.
    pub some: PsiLine,
    /// Every non-idle task stalled (absent in old kernels' CPU files).
    pub full: Option<PsiLine>,
}

impl Pressure {
    /// Parses the text of a pressure file.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PsiError> {
        let bad = |line: &str| PsiError::Malformed {
            path: path.to_path_buf(),
            line: line.to_string(),
        };
        let mut some = None;
        let mut full = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut it = line.split_whitespace();
            let kind = it.next().ok_or_else(|| bad(line))?;
            let mut l = PsiLine::default();
            let mut seen = 0;
            for kv in it {
                let (k, v) = kv.split_once('=').ok_or_else(|| bad(line))?;
                match k {
                    "avg10" => l.avg10 = v.parse().map_err(|_| bad(line))?,
                    "avg60" => l.avg60 = v.parse().map_err(|_| bad(line))?,
                    "avg300" => l.avg300 = v.parse().map_err(|_| bad(line))?,
                    "total" => l.total_us = v.parse().map_err(|_| bad(line))?,
                    _ => return Err(bad(line)),
                }
                seen += 1;
            }
            if seen != 4 {
                return Err(bad(line));
            }
            match kind {
                "some" => some = Some(l),
                "full" => full = Some(l),
                _ => return Err(bad(line)),
            }
        }
        Ok(Pressure {
            some: some.ok_or_else(|| bad(text))?,
            full,
        })
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, PsiError> {
        Self::parse(path, &read_trimmed(path)?)
    }
}

/// Whose memory pressure a [`PressureSource`] reads.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PressureScope {
    /// The VM's memcg (cgroup v2 `memory.pressure`).
    Memcg(PathBuf),
    /// A cgroup v2 group holding only this process, beside a v1 memcg.
    OwnV2Group(PathBuf),
    /// The whole host (`/proc/pressure/memory`): other workloads' stalls count too.
    System,
}

impl std::fmt::Display for PressureScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PressureScope::Memcg(p) => write!(f, "memcg {}", p.display()),
            PressureScope::OwnV2Group(p) => write!(
                f,
                "{} (v2 group of this process beside the v1 memcg)",
                p.display()
            ),
            PressureScope::System => write!(f, "{PROC_PRESSURE_MEMORY} (system-wide)"),
        }
    }
}

/// A memory pressure file to poll, and the v2 group created for it (removed on drop).
#[derive(Debug)]
pub struct PressureSource {
    path: PathBuf,
    scope: PressureScope,
    _group: Option<RestoreGuard>,
}

impl PressureSource {
    /// Reads `path` directly (tests, or a known file).
    pub fn at(path: impl Into<PathBuf>, scope: PressureScope) -> Self {
        PressureSource {
            path: path.into(),
            scope,
            _group: None,
        }
    }

    /// The pressure of this process's memory: the memcg's own `memory.pressure` on v2; on v1 a
    /// v2 group of its own in a mounted cgroup2 hierarchy; else the system-wide file.
    pub fn for_process(memcg: &GuestMemcg) -> Result<Self, PsiError> {
        if memcg.version() == CgroupVersion::V2 {
            let p = memcg.dir().join("memory.pressure");
            if p.exists() {
                return Ok(Self::at(p, PressureScope::Memcg(memcg.dir().to_path_buf())));
            }
        }
        if let Some(s) = Self::own_v2_group()? {
            return Ok(s);
        }
        if !Path::new(PROC_PRESSURE_MEMORY).exists() {
            return Err(PsiError::Unavailable(PROC_PRESSURE_MEMORY.into()));
        }
        Ok(Self::at(PROC_PRESSURE_MEMORY, PressureScope::System))
    }

    /// A v2 group for this process in a cgroup2 mount whose groups have `memory.pressure`.
    fn own_v2_group() -> Result<Option<Self>, PsiError> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let Some(mount) = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        }) else {
            return Ok(None);
        };
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string));
        let Some(own) = own else { return Ok(None) };
        let parent = mount.join(own.trim_start_matches('/'));
        if !parent.join("memory.pressure").exists() || !parent.join("cgroup.procs").exists() {
            return Ok(None);
        }
        let dir = parent.join(format!("agelab-psi-{}", std::process::id()));
        if dir.exists() {
            return Err(PsiError::Create {
                path: dir,
                err: std::io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
        // Journaled before creation; undo moves the tasks back and removes it.
        let guard = HostRestore::record(
            format!("cgroup {} removed", dir.display()),
            HostChange::Memcg {
                dir: dir.clone(),
                parent_dir: parent.clone(),
            },
        )?;
        if let Err(err) = std::fs::create_dir(&dir) {
            guard.dismiss();
            return Err(PsiError::Create { path: dir, err });
        }
        write_str(dir.join("cgroup.procs"), &std::process::id().to_string())?;
        Ok(Some(PressureSource {
            path: dir.join("memory.pressure"),
            scope: PressureScope::OwnV2Group(dir),
            _group: Some(guard),
        }))
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whose pressure it is.
    pub fn scope(&self) -> &PressureScope {
        &self.scope
    }

    /// Reads it now.
    pub fn read(&self) -> Result<Pressure, PsiError> {
        Pressure::read(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_lines() {
        let p = Pressure::parse(
            Path::new("x"),
            "some avg10=1.50 avg60=0.20 avg300=0.00 total=1104765\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=448142\n",
        )
        .unwrap();
        assert_eq!(p.some.total_us, 1_104_765);
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.full.unwrap().total_us, 448_142);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "some avg10=x avg60=0 avg300=0 total=1",
            "some avg10=0 avg60=0 avg300=0",
            "other avg10=0 avg60=0 avg300=0 total=1",
            "full avg10=0 avg60=0 avg300=0 total=1",
        ] {
            assert!(Pressure::parse(Path::new("x"), bad).is_err(), "{bad:?}");
        }
    }

    /// The host's own file parses (every kernel this runs on has PSI; skipped where it has not).
    #[test]
    fn reads_the_host_file() {
        if !Path::new(PROC_PRESSURE_MEMORY).exists() {
            eprintln!("skip: no {PROC_PRESSURE_MEMORY}");
            return;
        }
        let p = Pressure::read(Path::new(PROC_PRESSURE_MEMORY)).unwrap();
        assert!(p.some.total_us >= p.full.map_or(0, |f| f.total_us));
    }
}
