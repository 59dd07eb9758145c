//! Multi-size THP (mTHP) backings: guest memory in large folios smaller than 2 MiB, anonymous
//! (`/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/enabled`) or shmem
//! (`.../hugepages-<size>kB/shmem_enabled`, which governs memfd mappings: a memfd's inode is
//! unlinked, so its mapping is "anonymous shmem" to the kernel).
//!
//! Such memory makes the kernel age a whole batch of PTEs at once (7.2's
//! `test_and_clear_young_ptes_notify(…, nr)`), which 4 KiB and 2 MiB backings never do.
//!
//! The VMM only reads the knobs: a mapping is refused unless the size is enabled for advised
//! (`MADV_HUGEPAGE`) memory. Turning a size on is a journaled host change, made by agelab's
//! commands (`agelab_mglru::large_folios`).

use std::path::PathBuf;

/// Where the per-size THP knobs live.
pub const THP_DIR: &str = "/sys/kernel/mm/transparent_hugepage";

/// Smallest folio size offered (KiB): anonymous mTHP starts at order 2.
pub const MIN_KIB: u32 = 16;
/// Largest folio size offered (KiB): the VMA split that keeps 2 MiB THP out is 1 MiB.
pub const MAX_KIB: u32 = 1024;

/// Granule of the VMA split (see [`LargeFolio::split_granule`]).
pub const SPLIT_GRANULE: u64 = 1 << 20;

/// A large-folio size for anonymous or shmem memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LargeFolio {
    /// Folio size in KiB (a power of two, [`MIN_KIB`]..=[`MAX_KIB`]).
    pub kib: u32,
    /// Shmem (memfd) instead of private anonymous memory.
    pub shmem: bool,
}

/// What the knob of a size says about advised memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnobState {
    /// The kernel has no such knob: no mTHP of this size (kernels before 6.8 for anonymous
    /// memory, before 6.11 for shmem).
    Missing(PathBuf),
    /// Advised memory gets folios of this size.
    On,
    /// Advised memory does not get them: the knob's selected value.
    Off(String),
}

impl LargeFolio {
    /// Parses a size such as `64k`, `64K`, `64kB`, `1m` or `1M`.
    pub fn parse_size(s: &str) -> Option<u32> {
        let lower = s.to_ascii_lowercase();
        let (num, mult) = if let Some(n) = lower.strip_suffix("kb").or(lower.strip_suffix('k')) {
            (n, 1)
        } else if let Some(n) = lower.strip_suffix("mb").or(lower.strip_suffix('m')) {
            (n, 1024)
        } else {
            return None;
        };
        let kib = num.parse::<u32>().ok()?.checked_mul(mult)?;
        (kib.is_power_of_two() && (MIN_KIB..=MAX_KIB).contains(&kib)).then_some(kib)
    }

    /// Folio size in bytes.
    pub fn bytes(self) -> u64 {
        u64::from(self.kib) << 10
    }

    /// `64k`, `1m`: the size as backing names spell it.
    pub fn size_name(self) -> String {
        if self.kib >= 1024 {
            format!("{}m", self.kib / 1024)
        } else {
            format!("{}k", self.kib)
        }
    }

    /// The per-size knob that governs this kind of memory.
    pub fn knob(self) -> PathBuf {
        PathBuf::from(format!(
            "{THP_DIR}/hugepages-{}kB/{}",
            self.kib,
            if self.shmem {
                "shmem_enabled"
            } else {
                "enabled"
            }
        ))
    }

    /// The top-level knob an `inherit` setting defers to.
    pub fn top_knob(self) -> PathBuf {
        PathBuf::from(format!(
            "{THP_DIR}/{}",
            if self.shmem {
                "shmem_enabled"
            } else {
                "enabled"
            }
        ))
    }

    /// The value that enables this size for advised memory only.
    pub fn advised_value(self) -> &'static str {
        if self.shmem {
            "advise"
        } else {
            "madvise"
        }
    }

    /// Whether a knob's selected value gives advised memory folios of this size (`top`: the
    /// top-level knob's selected value, for `inherit`).
    pub fn value_enables(self, value: &str, top: Option<&str>) -> bool {
        let on = |v: &str| {
            if self.shmem {
                matches!(v, "always" | "advise" | "within_size" | "force")
            } else {
                matches!(v, "always" | "madvise")
            }
        };
        match value {
            "inherit" => top.is_some_and(on),
            v => on(v),
        }
    }

    /// Reads the knobs.
    pub fn state(self) -> KnobState {
        let knob = self.knob();
        let Ok(text) = std::fs::read_to_string(&knob) else {
            return KnobState::Missing(knob);
        };
        let value = selected(&text).unwrap_or_default();
        let top = std::fs::read_to_string(self.top_knob())
            .ok()
            .and_then(|t| selected(&t));
        if self.value_enables(&value, top.as_deref()) {
            KnobState::On
        } else if value == "inherit" {
            KnobState::Off(format!("inherit (top level {})", top.unwrap_or_default()))
        } else {
            KnobState::Off(value)
        }
    }

    /// The VMA split that keeps 2 MiB THP out of the mapping: every other [`SPLIT_GRANULE`]
    /// (1 MiB) of it gets `MADV_DONTDUMP`, a flag nothing here depends on, so adjacent pieces
    /// differ in flags and stay separate VMAs. No 2 MiB-aligned range then fits in one VMA, and
    /// the kernel picks the largest enabled size below 2 MiB: this one, without turning 2 MiB
    /// THP off host-wide (which would change every other process's `MADV_HUGEPAGE` memory).
    pub fn split_granule(self) -> u64 {
        SPLIT_GRANULE
    }
}

/// The selected value of a sysfs choice file: `always [madvise] never` → `madvise`.
pub fn selected(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_string())
}

/// Sizes (KiB) this kernel offers for anonymous (`shmem` false) or shmem memory, smallest first.
pub fn sizes_offered(shmem: bool) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir(THP_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kib: u32 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let f = LargeFolio { kib, shmem };
            (f.knob().exists() && (MIN_KIB..=MAX_KIB).contains(&kib)).then_some(kib)
        })
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(LargeFolio::parse_size("64k"), Some(64));
        assert_eq!(LargeFolio::parse_size("64kB"), Some(64));
        assert_eq!(LargeFolio::parse_size("16K"), Some(16));
        assert_eq!(LargeFolio::parse_size("1m"), Some(1024));
        assert_eq!(LargeFolio::parse_size("2m"), None, "2 MiB is thp");
        assert_eq!(LargeFolio::parse_size("8k"), None);
        assert_eq!(LargeFolio::parse_size("48k"), None);
        assert_eq!(LargeFolio::parse_size("64"), None);
        let f = LargeFolio {
            kib: 1024,
            shmem: true,
        };
        assert_eq!(f.size_name(), "1m");
        assert!(f.knob().ends_with("hugepages-1024kB/shmem_enabled"));
    }

    #[test]
    fn knob_values_by_kind() {
        let anon = LargeFolio {
            kib: 64,
            shmem: false,
        };
        let shmem = LargeFolio {
            kib: 64,
            shmem: true,
        };
        assert!(anon.value_enables("madvise", None));
        assert!(anon.value_enables("always", None));
        assert!(!anon.value_enables("never", Some("always")));
        assert!(anon.value_enables("inherit", Some("madvise")));
        assert!(!anon.value_enables("inherit", Some("never")));
        assert!(shmem.value_enables("advise", None));
        assert!(!shmem.value_enables("madvise", None));
        assert!(!shmem.value_enables("inherit", Some("never")));
        assert!(shmem.value_enables("inherit", Some("within_size")));
        assert_eq!(
            selected("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(selected("no brackets"), None);
    }
}
