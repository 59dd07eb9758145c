//! Host state agelab may change, read back for the fault checks that run inside lab guests
//! (`source_matrix --sigint-check`, `sigkill_restore_test`): lru_gen `enabled`/`min_ttl_ms`,
//! DAMON kdamonds (sysfs admin tree and kdamond threads), memcgs named after an agelab pid, and
//! the journal entries of a pid. Also the few helpers those checks share (running the `agelab`
//! beside the test binary, one KTAP line per check).

use crate::ktap::Ktap;
use agelab_mglru::journal::{knobs, Journal};
use agelab_mglru::kernel::memcg::MemoryHierarchy;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// lru_gen's capability switch.
pub const ENABLED: &str = knobs::LRU_GEN_ENABLED;
/// lru_gen's thrashing-prevention knob.
pub const MIN_TTL: &str = knobs::LRU_GEN_MIN_TTL_MS;
/// DAMON's sysfs kdamonds directory.
pub const KDAMONDS: &str = knobs::DAMON_KDAMONDS;
/// damon_stat's switch (Debian 7.x builds it in, on by default).
pub const DAMON_STAT: &str = knobs::DAMON_STAT_ENABLED;
/// The cgroup v2 root's `cgroup.subtree_control` (agelab enables `memory` for its memcgs).
pub const SUBTREE_CONTROL: &str = knobs::CGROUP_V2_ROOT_SUBTREE_CONTROL;

/// A file's content, trimmed (`None`: unreadable or missing).
pub fn read(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// One kdamond of the sysfs admin tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysfsKdamond {
    /// `on` or `off`.
    pub state: String,
    /// Its worker's pid (`-1` when off).
    pub pid: String,
}

/// Host state agelab may change: lru_gen knobs, kdamonds (admin tree and threads), damon_stat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostState {
    /// `lru_gen/enabled`.
    pub enabled: Option<String>,
    /// `lru_gen/min_ttl_ms`.
    pub min_ttl: Option<String>,
    /// `nr_kdamonds` and each kdamond (`None`: no DAMON sysfs).
    pub kdamonds: Option<(String, Vec<SysfsKdamond>)>,
    /// Pids of every `kdamond.N` kernel thread (the admin tree's and the DAMON modules').
    pub threads: Vec<i32>,
    /// damon_stat's `enabled` (`None`: no damon_stat).
    pub damon_stat: Option<String>,
    /// The cgroup v2 root's `cgroup.subtree_control` (agelab enables `memory` for its memcgs).
    pub subtree_control: Option<String>,
}

impl HostState {
    /// Reads it now.
    pub fn read() -> Self {
        let kdamonds = read(Path::new(KDAMONDS).join("nr_kdamonds")).map(|nr| {
            let n: u64 = nr.parse().unwrap_or(0);
            let ks = (0..n)
                .map(|i| {
                    let d = Path::new(KDAMONDS).join(i.to_string());
                    SysfsKdamond {
                        state: read(d.join("state")).unwrap_or_default(),
                        pid: read(d.join("pid")).unwrap_or_default(),
                    }
                })
                .collect();
            (nr, ks)
        });
        HostState {
            enabled: read(ENABLED),
            min_ttl: read(MIN_TTL),
            kdamonds,
            threads: kdamond_threads(),
            damon_stat: read(DAMON_STAT),
            subtree_control: read(SUBTREE_CONTROL),
        }
    }

    /// Whether a sysfs kdamond runs.
    pub fn kdamond_on(&self) -> bool {
        self.kdamonds
            .as_ref()
            .is_some_and(|(_, ks)| ks.iter().any(|k| k.state == "on"))
    }
}

/// Pids of the `kdamond.*` kernel threads, sorted.
pub fn kdamond_threads() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<i32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            read(format!("/proc/{pid}/comm")).is_some_and(|c| c.starts_with("kdamond"))
        })
        .collect();
    v.sort_unstable();
    v
}

/// The `agelab` beside the running binary, else `agelab` from PATH.
pub fn agelab() -> PathBuf {
    let here = std::env::current_exe().ok();
    let sibling = here.as_ref().and_then(|p| Some(p.parent()?.join("agelab")));
    match sibling {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("agelab"),
    }
}

/// The memcg `agelab <command>` (pid `pid`) creates beside our own cgroup: `agelab-<command>-PID`.
pub fn agelab_memcg(command: &str, pid: u32) -> Option<PathBuf> {
    let h = MemoryHierarchy::detect().ok()?;
    let own = h.own_cgroup().ok()?;
    Some(
        h.mount
            .join(own.trim_start_matches('/'))
            .join(format!("agelab-{command}-{pid}")),
    )
}

/// The journal entry files of `pid` in the system journal.
pub fn journal_files(pid: u32) -> Vec<PathBuf> {
    Journal::system()
        .entries()
        .unwrap_or_default()
        .into_iter()
        .map(|(f, _)| f)
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pid}-")))
        })
        .collect()
}

/// One check: the diagnostic is printed only when it failed.
pub fn check_line(t: &mut Ktap, ok: bool, desc: &str, diag: &str) {
    if !ok {
        t.diag(&format!("{desc}: {diag}"));
    }
    let id = t.add(desc);
    t.result(id, ok);
}

/// Polls `f` every 20 ms until it is true (returns true) or `timeout` passed (false).
pub fn poll(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
