//! lru_gen switches (`enabled`, `min_ttl_ms`) and debugfs commands, with host restore.

use super::{LruGenDebugfs, LruGenError};
use crate::host_guard::{HostRestore, RestoreGuard};
use crate::journal::knobs::LRU_GEN_DIR;
use crate::kernel::sysfs::{read_trimmed, read_u64, write_str};
use crate::source::Unavailable;
use std::fmt;
use std::path::{Path, PathBuf};

/// The `enabled` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LruGenCaps(pub u32);

impl LruGenCaps {
    /// 0x1: the main switch.
    pub const MAIN: u32 = 0x1;
    /// 0x2: walk page tables (clear young bits in batches).
    pub const MM_WALK: u32 = 0x2;
    /// 0x4: clear the accessed bit in non-leaf PMDs.
    pub const NONLEAF_YOUNG: u32 = 0x4;
    /// 0x8: walk secondary MMUs (KVM) during aging — the v4 patch set; not in mainline.
    pub const SECONDARY_MMU: u32 = 0x8;

    /// Parses `0x%04x` (or plain decimal).
    pub fn parse(s: &str) -> Result<Self, LruGenError> {
        let s = s.trim();
        let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => s.parse(),
        };
        v.map(LruGenCaps)
            .map_err(|_| LruGenError::BadCaps(s.to_string()))
    }

    /// Whether every bit of `bits` is set.
    pub fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// Names of the set bits (unknown bits as hex).
    pub fn names(self) -> Vec<String> {
        let mut v = Vec::new();
        for (bit, name) in [
            (Self::MAIN, "main"),
            (Self::MM_WALK, "mm-walk"),
            (Self::NONLEAF_YOUNG, "nonleaf-pmd-young"),
            (
                Self::SECONDARY_MMU,
                "secondary-mmu-walk (patched kernels only)",
            ),
        ] {
            if self.0 & bit != 0 {
                v.push(name.to_string());
            }
        }
        let unknown = self.0 & !0xf;
        if unknown != 0 {
            v.push(format!("unknown {unknown:#x}"));
        }
        v
    }
}

impl fmt::Display for LruGenCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

/// Paths of the lru_gen interface (overridable for tests).
#[derive(Clone, Debug)]
pub struct LruGenControl {
    sysfs_dir: PathBuf,
    debugfs_dir: PathBuf,
}

impl Default for LruGenControl {
    fn default() -> Self {
        LruGenControl {
            sysfs_dir: LRU_GEN_DIR.into(),
            debugfs_dir: "/sys/kernel/debug".into(),
        }
    }
}

impl LruGenControl {
    /// The real interface.
    pub fn new() -> Self {
        Self::default()
    }

    /// An interface rooted elsewhere (`sysfs_dir` holds `enabled`/`min_ttl_ms`, `debugfs_dir`
    /// holds `lru_gen`/`lru_gen_full`).
    pub fn with_paths(sysfs_dir: impl Into<PathBuf>, debugfs_dir: impl Into<PathBuf>) -> Self {
        LruGenControl {
            sysfs_dir: sysfs_dir.into(),
            debugfs_dir: debugfs_dir.into(),
        }
    }

    fn enabled_path(&self) -> PathBuf {
        self.sysfs_dir.join("enabled")
    }
    fn min_ttl_path(&self) -> PathBuf {
        self.sysfs_dir.join("min_ttl_ms")
    }
    fn listing_path(&self, full: bool) -> PathBuf {
        self.debugfs_dir
            .join(if full { "lru_gen_full" } else { "lru_gen" })
    }

    /// Why lru_gen's switches cannot be used here.
    pub fn check_sysfs(&self) -> Result<(), LruGenError> {
        if !self.enabled_path().exists() {
            return Err(LruGenError::NotBuilt(self.sysfs_dir.display().to_string()));
        }
        Ok(())
    }

    /// Why the debugfs listing and commands cannot be used here.
    pub fn check_debugfs(&self) -> Result<(), LruGenError> {
        self.check_sysfs()?;
        if !self.listing_path(false).exists() {
            return Err(LruGenError::DebugfsMissing(
                self.listing_path(false).display().to_string(),
            ));
        }
        Ok(())
    }

    /// [`check_debugfs`](Self::check_debugfs) as an [`Unavailable`] reason.
    pub fn available(&self) -> Result<(), Unavailable> {
        self.check_debugfs().map_err(|e| Unavailable(e.to_string()))
    }

    /// Reads `enabled`.
    pub fn caps(&self) -> Result<LruGenCaps, LruGenError> {
        self.check_sysfs()?;
        LruGenCaps::parse(&read_trimmed(self.enabled_path())?)
    }

    /// Writes `enabled` (no restore).
    pub fn set_caps(&self, caps: LruGenCaps) -> Result<(), LruGenError> {
        self.check_sysfs()?;
        Ok(write_str(self.enabled_path(), &caps.to_string())?)
    }

    /// Turns on every capability the kernel has (`y`) for the run; the guard restores the previous
    /// value. Returns the capabilities now in force.
    pub fn enable_for_run(&self) -> Result<(LruGenCaps, RestoreGuard), LruGenError> {
        self.caps()?;
        // Journaled before the write; the guard exists before the read-back, so a failing
        // read-back still restores.
        let (guard, _prev) = HostRestore::set_knob("lru_gen enabled", &self.enabled_path(), "y")?;
        let now = self.caps()?;
        Ok((now, guard))
    }

    /// Reads `min_ttl_ms`.
    pub fn min_ttl_ms(&self) -> Result<u64, LruGenError> {
        self.check_sysfs()?;
        Ok(read_u64(self.min_ttl_path())?)
    }

    /// Sets `min_ttl_ms` for the run; the guard restores the previous value.
    pub fn set_min_ttl_ms(&self, ms: u64) -> Result<RestoreGuard, LruGenError> {
        self.min_ttl_ms()?;
        let (guard, _prev) =
            HostRestore::set_knob("lru_gen min_ttl_ms", &self.min_ttl_path(), &ms.to_string())?;
        Ok(guard)
    }

    /// Reads and parses `lru_gen` (or `lru_gen_full`).
    pub fn read(&self, full: bool) -> Result<LruGenDebugfs, LruGenError> {
        self.check_debugfs()?;
        LruGenDebugfs::parse(&read_raw(&self.listing_path(full))?)
    }

    fn command(&self, cmd: &str) -> Result<(), std::io::Error> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.listing_path(false))?;
        // One write per command: the kernel parses the whole buffer of a single write.
        f.write_all(cmd.as_bytes())
    }

    /// Aging: `+ memcg_id node_id max_gen_nr can_swap force_scan`. `max_gen_nr` must be the
    /// current max_seq (an older one is a successful no-op).
    pub fn age(
        &self,
        memcg: u64,
        node: u32,
        max_gen: u64,
        can_swap: bool,
        force_scan: bool,
    ) -> Result<(), LruGenError> {
        self.check_debugfs()?;
        let cmd = format!(
            "+ {memcg} {node} {max_gen} {} {}\n",
            u8::from(can_swap),
            u8::from(force_scan)
        );
        let Err(err) = self.command(&cmd) else {
            return Ok(());
        };
        Err(match err.raw_os_error() {
            Some(libc::EINVAL) => match self.explain_einval(memcg, node) {
                Ok(current) => LruGenError::AgingGenerationTooNew {
                    memcg,
                    node,
                    requested: max_gen,
                    current,
                },
                Err(e) => e,
            },
            Some(libc::ERANGE) => LruGenError::AgingTooManyGenerations { memcg, node },
            Some(libc::EEXIST) => LruGenError::AgingNotDone { memcg, node },
            Some(libc::EINTR) => LruGenError::Interrupted { cmd },
            _ => LruGenError::Command { cmd, err },
        })
    }

    /// Ages `memcg`/`node` once from its current max_seq (reads the listing first).
    pub fn age_now(&self, memcg: u64, node: u32, force_scan: bool) -> Result<u64, LruGenError> {
        let max = self.max_seq(memcg, node)?;
        self.age(memcg, node, max, true, force_scan)?;
        Ok(max)
    }

    /// Eviction: `- memcg_id node_id min_gen_nr swappiness nr_to_reclaim`.
    pub fn evict(
        &self,
        memcg: u64,
        node: u32,
        min_gen: u64,
        swappiness: u32,
        nr_to_reclaim: u64,
    ) -> Result<(), LruGenError> {
        self.check_debugfs()?;
        let cmd = format!("- {memcg} {node} {min_gen} {swappiness} {nr_to_reclaim}\n");
        let Err(err) = self.command(&cmd) else {
            return Ok(());
        };
        Err(match err.raw_os_error() {
            Some(libc::EINVAL) => match self.explain_einval(memcg, node) {
                Ok(current) => LruGenError::EvictionGenerationTooNew {
                    memcg,
                    node,
                    requested: min_gen,
                    limit: current.saturating_sub(2),
                },
                Err(e) => e,
            },
            Some(libc::EINTR) => LruGenError::Interrupted { cmd },
            _ => LruGenError::Command { cmd, err },
        })
    }

    /// Current max_seq of `memcg`/`node`.
    pub fn max_seq(&self, memcg: u64, node: u32) -> Result<u64, LruGenError> {
        let listing = self.read(false)?;
        let m = listing
            .memcg(memcg)
            .ok_or(LruGenError::UnknownMemcg(memcg))?;
        m.node(node)
            .and_then(|n| n.max_seq())
            .ok_or(LruGenError::UnknownNode { memcg, node })
    }

    /// EINVAL means a bad memcg/node or a bad generation: the listing tells which. Ok = max_seq.
    fn explain_einval(&self, memcg: u64, node: u32) -> Result<u64, LruGenError> {
        self.max_seq(memcg, node)
    }
}

fn read_raw(path: &Path) -> Result<String, LruGenError> {
    std::fs::read_to_string(path).map_err(|err| {
        LruGenError::File(crate::kernel::sysfs::KernelFileError {
            op: "read".into(),
            path: path.to_path_buf(),
            err,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_parse_and_names() {
        let c = LruGenCaps::parse("0x0007\n").unwrap();
        assert_eq!(c, LruGenCaps(7));
        assert!(c.has(LruGenCaps::MAIN | LruGenCaps::MM_WALK));
        assert!(!c.has(LruGenCaps::SECONDARY_MMU));
        assert_eq!(c.to_string(), "0x0007");
        assert_eq!(LruGenCaps::parse("0x000f").unwrap().names().len(), 4);
        assert!(LruGenCaps::parse("yes").is_err());
    }

    #[test]
    fn enable_and_min_ttl_restore_previous_values() {
        // The knobs are scratch files, but their changes are journaled in the system journal.
        crate::testing::reconcile_journal_at_start();
        let dir = std::env::temp_dir().join(format!("agelab-lrugen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("enabled"), "0x0000\n").unwrap();
        std::fs::write(dir.join("min_ttl_ms"), "0\n").unwrap();
        let c = LruGenControl::with_paths(&dir, &dir);
        {
            // A plain file cannot interpret "y"; the test only checks the restore path.
            let r = c.enable_for_run();
            assert!(r.is_err(), "plain file holds `y`, which is not caps");
        }
        assert_eq!(
            c.caps().unwrap(),
            LruGenCaps(0),
            "restored after a failed read-back"
        );
        c.set_caps(LruGenCaps(7)).unwrap();
        assert_eq!(c.caps().unwrap(), LruGenCaps(7));
        {
            let _g = c.set_min_ttl_ms(1000).unwrap();
            assert_eq!(c.min_ttl_ms().unwrap(), 1000);
        }
        assert_eq!(c.min_ttl_ms().unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
