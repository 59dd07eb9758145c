//! Reclaim of guest memory through rmap (`reclaim_hot_set_test`): which LRU reclaims, the host
//! features the scenario needs, a memcg this process joins and leaves, anon-only proactive
//! reclaim of it, clearing the host's referenced state, and what stayed resident afterwards.
//!
//! Reclaim decides per folio with `folio_referenced()`, which skips every mapping whose mm's
//! owner is outside the memcg being reclaimed (`invalid_folio_referenced_vma`): the VMM must be a
//! member of the memcg while it is reclaimed, or every guest page looks unreferenced.

use agelab_mglru::host_guard::{HostGuardError, HostRestore, RestoreGuard};
use agelab_mglru::journal::knobs::LRU_GEN_ENABLED;
use agelab_mglru::kernel::lru_gen::{LruGenCaps, LruGenControl, LruGenError};
use agelab_mglru::kernel::memcg::{CgroupVersion, GuestMemcg, MemcgError, MemoryHierarchy};
use agelab_mglru::kernel::page_idle::page_idle_unavailable;
use agelab_mglru::kernel::pagemap::PagemapEntry;
use agelab_mglru::kernel::swap::SwapStatus;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// `/proc/self/clear_refs`: `1` clears the accessed bits of this process's PTEs and the
/// referenced and young flags of the folios they map, without asking secondary MMUs.
pub const CLEAR_REFS: &str = "/proc/self/clear_refs";

/// memory.stat keys printed before and after reclaim.
pub const STAT_KEYS: &[&str] = &[
    "anon",
    "anon_thp",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pgrefill",
    "workingset_refault_anon",
    "workingset_activate_anon",
    "pswpout",
    "thp_swpout",
    "thp_swpout_fallback",
];

/// Errors of the reclaim scenario's host setup and reclaim.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimSetupError {
    /// An lru_gen file failed.
    #[error("lru_gen: {0}")]
    LruGen(#[from] LruGenError),
    /// Journaling or writing a host knob failed.
    #[error(transparent)]
    HostGuard(#[from] HostGuardError),
    /// The memcg could not be created, joined or read.
    #[error("memcg: {0}")]
    Memcg(#[from] MemcgError),
    /// lru_gen did not take the capabilities asked for.
    #[error("lru_gen enabled reads {got} after writing {wrote}")]
    CapsNotTaken {
        /// What was written.
        wrote: String,
        /// What reads back.
        got: LruGenCaps,
    },
    /// madvise failed.
    #[error("madvise(MADV_COLD) of {pages} pages at {hva:#x}: {source}")]
    Madvise {
        /// Start.
        hva: u64,
        /// Pages.
        pages: u64,
        /// Cause.
        source: std::io::Error,
    },
    /// A proc or cgroup file could not be written.
    #[error("writing {text:?} to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        text: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The LRU that reclaims (`-l`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lru {
    /// The multi-gen LRU, its page-table walk off: only rmap and look-around see young bits.
    Mglru,
    /// The active/inactive lists (lru_gen off where the kernel has it).
    Classic,
}

/// An `-l` value other than `mglru` or `classic`.
#[derive(Debug, thiserror::Error)]
#[error("expected mglru or classic")]
pub struct BadLru;

impl FromStr for Lru {
    type Err = BadLru;
    fn from_str(s: &str) -> Result<Self, BadLru> {
        match s {
            "mglru" => Ok(Lru::Mglru),
            "classic" => Ok(Lru::Classic),
            _ => Err(BadLru),
        }
    }
}

impl fmt::Display for Lru {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lru::Mglru => "mglru",
            Lru::Classic => "classic",
        })
    }
}

/// The lru_gen `enabled` value for `lru`: the main switch alone for MGLRU (no mm walk, so aging
/// that reclaim triggers only adds a generation and cannot find young pages by walking), `n`
/// for the classic LRU.
pub fn lru_gen_setting(lru: Lru) -> &'static str {
    match lru {
        Lru::Mglru => "0x0001",
        Lru::Classic => "n",
    }
}

/// Whether `caps` (read back) is what [`lru_gen_setting`] asked for.
pub fn caps_match(lru: Lru, caps: LruGenCaps) -> bool {
    match lru {
        Lru::Mglru => caps.has(LruGenCaps::MAIN) && !caps.has(LruGenCaps::MM_WALK),
        Lru::Classic => !caps.has(LruGenCaps::MAIN),
    }
}

/// The LRU in force for the test; the guard restores lru_gen's switch.
#[derive(Debug)]
pub struct LruSelection {
    /// lru_gen's capabilities in force (`None`: the kernel has no lru_gen).
    pub caps: Option<LruGenCaps>,
    _restore: Option<RestoreGuard>,
}

/// Puts `lru` in force (journaled); call before guest memory exists, so it is on the chosen
/// lists from its first fault.
pub fn select_lru(lru: Lru) -> Result<LruSelection, ReclaimSetupError> {
    let ctl = LruGenControl::new();
    if ctl.check_sysfs().is_err() {
        // No lru_gen: the classic LRU is the only one (missing_features refuses -l mglru).
        return Ok(LruSelection {
            caps: None,
            _restore: None,
        });
    }
    let wrote = lru_gen_setting(lru);
    let (guard, _prev) =
        HostRestore::set_knob("lru_gen enabled", Path::new(LRU_GEN_ENABLED), wrote)?;
    let caps = ctl.caps()?;
    if !caps_match(lru, caps) {
        return Err(ReclaimSetupError::CapsNotTaken {
            wrote: wrote.to_string(),
            got: caps,
        });
    }
    Ok(LruSelection {
        caps: Some(caps),
        _restore: Some(guard),
    })
}

/// The host features the scenario needs and this host lacks, each named.
pub fn missing_features(lru: Lru) -> Vec<String> {
    let mut missing = Vec::new();
    match MemoryHierarchy::detect() {
        Ok(h) if h.version == CgroupVersion::V2 => {}
        Ok(_) => {
            missing.push("cgroup v2 memory controller (memory.reclaim): only cgroup v1".into())
        }
        Err(e) => missing.push(format!("cgroup v2 memory controller (memory.reclaim): {e}")),
    }
    match SwapStatus::read() {
        Ok(s) if s.any() => {}
        Ok(_) => missing.push("swap (no area in /proc/swaps)".into()),
        Err(e) => missing.push(format!("swap: {e}")),
    }
    if let Some(e) = page_idle_unavailable() {
        missing.push(format!("page_idle (clears KVM's young bits): {e}"));
    }
    if !Path::new(CLEAR_REFS).exists() {
        missing.push(format!("{CLEAR_REFS} (CONFIG_PROC_PAGE_MONITOR)"));
    }
    if lru == Lru::Mglru {
        if let Err(e) = LruGenControl::new().check_sysfs() {
            missing.push(format!("lru_gen for -l mglru: {e}"));
        }
    }
    missing
}

fn write_file(path: &Path, text: &str) -> Result<(), ReclaimSetupError> {
    std::fs::write(path, text).map_err(|source| ReclaimSetupError::Write {
        path: path.to_path_buf(),
        text: text.to_string(),
        source,
    })
}

/// Clears this process's host accessed bits and its folios' referenced and young flags
/// (`clear_refs` 1). page_idle marking sets a folio's young flag when it clears a young bit, so
/// that reclaim still counts the access; after marking, this drops that leftover, leaving
/// only what happens afterwards (KVM's young bits included, which clear_refs never touches).
pub fn clear_own_references() -> Result<(), ReclaimSetupError> {
    write_file(Path::new(CLEAR_REFS), "1")
}

/// How a reclaim request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReclaimOutcome {
    /// The kernel reclaimed at least the request.
    Done,
    /// EAGAIN: it gave up with less.
    Short,
}

impl ReclaimOutcome {
    /// `done` or `short (EAGAIN)`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReclaimOutcome::Done => "done",
            ReclaimOutcome::Short => "short (EAGAIN: less than asked)",
        }
    }
}

/// A memcg the test creates under the hierarchy's root, joins and leaves.
#[derive(Debug)]
pub struct ReclaimMemcg {
    memcg: GuestMemcg,
    home: PathBuf,
}

impl ReclaimMemcg {
    /// Creates memcg `name` (made unique with the pid) under the memory controller's root.
    pub fn create(name: &str) -> Result<Self, ReclaimSetupError> {
        let h = MemoryHierarchy::detect()?;
        let home = h.mount.join(h.own_cgroup()?.trim_start_matches('/'));
        let memcg = GuestMemcg::create_under(h, "/", name)?;
        Ok(ReclaimMemcg { memcg, home })
    }

    /// The memcg.
    pub fn memcg(&self) -> &GuestMemcg {
        &self.memcg
    }

    /// Whether the memcg has `memory.reclaim`.
    pub fn has_reclaim(&self) -> bool {
        self.memcg.dir().join("memory.reclaim").exists()
    }

    /// Moves this process in.
    pub fn join(&self) -> Result<(), ReclaimSetupError> {
        Ok(self.memcg.add_process(std::process::id() as i32)?)
    }

    /// Moves this process back where it was (charged pages stay charged here).
    pub fn leave(&self) -> Result<(), ReclaimSetupError> {
        write_file(
            &self.home.join("cgroup.procs"),
            &std::process::id().to_string(),
        )
    }

    /// Reclaims `bytes` of anonymous memory (`memory.reclaim` with `swappiness=max`; kernels
    /// without the argument reclaim by their own balance): file pages of the VMM charged here
    /// cannot stand in for guest pages.
    pub fn reclaim_anon(&self, bytes: u64) -> Result<ReclaimOutcome, ReclaimSetupError> {
        let path = self.memcg.dir().join("memory.reclaim");
        let outcome = |r: Result<(), ReclaimSetupError>| match r {
            Ok(()) => Ok(ReclaimOutcome::Done),
            Err(ReclaimSetupError::Write { ref source, .. })
                if source.raw_os_error() == Some(libc::EAGAIN) =>
            {
                Ok(ReclaimOutcome::Short)
            }
            Err(e) => Err(e),
        };
        match write_file(&path, &format!("{bytes} swappiness=max")) {
            Err(ReclaimSetupError::Write { ref source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) =>
            {
                outcome(write_file(&path, &bytes.to_string()))
            }
            r => outcome(r),
        }
    }

    /// The [`STAT_KEYS`] of memory.stat, in that order (keys the kernel lacks left out).
    pub fn stat(&self) -> Result<Vec<(String, u64)>, ReclaimSetupError> {
        Ok(pick_stat(&self.memcg.stat()?))
    }
}

/// The [`STAT_KEYS`] of a parsed memory.stat, in that order.
pub fn pick_stat(stat: &[(String, u64)]) -> Vec<(String, u64)> {
    STAT_KEYS
        .iter()
        .filter_map(|k| stat.iter().find(|(s, _)| s == k).cloned())
        .collect()
}

/// `anon 123 pgscan 4 ...`.
pub fn describe_stat(stat: &[(String, u64)]) -> String {
    stat.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the pages of one set are after reclaim.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResidencyCount {
    /// Pages in the set.
    pub pages: u64,
    /// Present in RAM.
    pub present: u64,
    /// Swapped out.
    pub swapped: u64,
}

impl ResidencyCount {
    /// Counts one pagemap entry.
    pub fn add(&mut self, e: PagemapEntry) {
        self.pages += 1;
        if e.present() {
            self.present += 1;
        } else if e.swapped() {
            self.swapped += 1;
        }
    }

    /// Pages no longer present (swapped out or dropped).
    pub fn evicted(&self) -> u64 {
        self.pages - self.present
    }

    /// Evicted ÷ pages (0 for an empty set).
    pub fn evicted_share(&self) -> f64 {
        if self.pages == 0 {
            return 0.0;
        }
        self.evicted() as f64 / self.pages as f64
    }

    /// `evicted 12 of 2048 (0.6%), 12 swapped`.
    pub fn describe(&self) -> String {
        format!(
            "evicted {} of {} ({:.1}%), {} swapped",
            self.evicted(),
            self.pages,
            self.evicted_share() * 100.0,
            self.swapped
        )
    }
}

/// Where the hot set lies in every vCPU's region: runs of `run_pages` (one folio of the
/// backing) every `stride_pages`. The stride is at least [`LOOK_AROUND_PAGES`]: MGLRU's
/// look-around clears the young bits of up to 64 neighbours of every folio it evicts (without
/// promoting a folio on its first young sighting), so a hot page next to another is seen young
/// by its neighbour's eviction and is then found old by its own; apart, each hot folio is judged
/// on its own young bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotSetLayout {
    /// Pages of one run (a folio of the backing).
    pub run_pages: u64,
    /// Pages from one run's start to the next's.
    pub stride_pages: u64,
    /// Runs per vCPU region.
    pub runs_per_vcpu: u64,
}

/// The look-around window of `lru_gen_look_around()` (`MIN_LRU_BATCH` pages).
pub const LOOK_AROUND_PAGES: u64 = 64;

impl HotSetLayout {
    /// One run of `folio_pages` every `max(4 × folio_pages, 64)` pages of a region of
    /// `region_pages`; `None` when not even one run fits.
    pub fn new(region_pages: u64, folio_pages: u64) -> Option<Self> {
        let run_pages = folio_pages.max(1);
        let stride_pages = (4 * run_pages).max(LOOK_AROUND_PAGES);
        let runs_per_vcpu = region_pages / stride_pages;
        (runs_per_vcpu > 0).then_some(HotSetLayout {
            run_pages,
            stride_pages,
            runs_per_vcpu,
        })
    }

    /// First page (in the region) of every run.
    pub fn run_starts(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.runs_per_vcpu).map(move |r| r * self.stride_pages)
    }

    /// Whether page `page` of a region is hot.
    pub fn is_hot(&self, page: u64) -> bool {
        page / self.stride_pages < self.runs_per_vcpu && page % self.stride_pages < self.run_pages
    }

    /// Hot pages per region.
    pub fn hot_pages(&self) -> u64 {
        self.runs_per_vcpu * self.run_pages
    }

    /// `64 runs of 1 page every 64 pages`.
    pub fn describe(&self) -> String {
        format!(
            "{} runs of {} page(s) every {} pages",
            self.runs_per_vcpu, self.run_pages, self.stride_pages
        )
    }
}

/// Residency of the hot set and of the cold rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HotColdResidency {
    /// The hot set.
    pub hot: ResidencyCount,
    /// Everything else.
    pub cold: ResidencyCount,
}

impl HotColdResidency {
    /// Counts `entries` (every guest page in dense order, regions of `pages_per_vcpu` each).
    pub fn count(entries: &[PagemapEntry], pages_per_vcpu: u64, hot: &HotSetLayout) -> Self {
        let mut r = HotColdResidency::default();
        for (i, &e) in entries.iter().enumerate() {
            if hot.is_hot(i as u64 % pages_per_vcpu.max(1)) {
                r.hot.add(e);
            } else {
                r.cold.add(e);
            }
        }
        r
    }

    /// Pages evicted from both sets.
    pub fn evicted(&self) -> u64 {
        self.hot.evicted() + self.cold.evicted()
    }
}

/// `madvise(MADV_COLD)` on `pages` pages at `hva`: the classic LRU moves the active ones to
/// the inactive list's head, in address order.
pub fn madvise_cold(hva: u64, pages: u64) -> Result<(), ReclaimSetupError> {
    let len = (pages * agelab_vmm::PAGE_SIZE) as usize;
    // SAFETY: MADV_COLD only changes the LRU placement of the pages mapped in the range (guest
    // memory this process mapped); no mapping or data changes.
    let rc = unsafe { libc::madvise(hva as *mut libc::c_void, len, libc::MADV_COLD) };
    if rc != 0 {
        return Err(ReclaimSetupError::Madvise {
            hva,
            pages,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESENT: PagemapEntry = PagemapEntry(1 << 63 | 0x42);
    const SWAPPED: PagemapEntry = PagemapEntry(1 << 62 | 0x7);
    const ABSENT: PagemapEntry = PagemapEntry(0);

    #[test]
    fn hot_pages_are_the_first_of_every_region() {
        // Two regions of 4 pages, hot = first 1 of each.
        let entries = [
            SWAPPED, PRESENT, SWAPPED, ABSENT, PRESENT, PRESENT, SWAPPED, PRESENT,
        ];
        let layout = HotSetLayout {
            run_pages: 1,
            stride_pages: 4,
            runs_per_vcpu: 1,
        };
        let r = HotColdResidency::count(&entries, 4, &layout);
        assert_eq!(
            r.hot,
            ResidencyCount {
                pages: 2,
                present: 1,
                swapped: 1
            }
        );
        assert_eq!(
            r.cold,
            ResidencyCount {
                pages: 6,
                present: 3,
                swapped: 2
            }
        );
        assert_eq!(r.cold.evicted(), 3);
        assert_eq!(r.evicted(), 4);
        assert_eq!(r.hot.evicted_share(), 0.5);
        assert_eq!(r.cold.describe(), "evicted 3 of 6 (50.0%), 2 swapped");
        assert_eq!(ResidencyCount::default().evicted_share(), 0.0);
    }

    #[test]
    fn hot_runs_stay_out_of_each_others_look_around() {
        let small = HotSetLayout::new(4096, 1).unwrap();
        assert_eq!(
            (small.run_pages, small.stride_pages, small.runs_per_vcpu),
            (1, 64, 64)
        );
        assert_eq!(small.hot_pages(), 64);
        assert!(small.is_hot(0) && small.is_hot(64) && small.is_hot(4032));
        assert!(!small.is_hot(1) && !small.is_hot(63) && !small.is_hot(4095));
        assert_eq!(
            small.run_starts().take(3).collect::<Vec<_>>(),
            vec![0, 64, 128]
        );
        let thp = HotSetLayout::new(4096, 512).unwrap();
        assert_eq!(
            (thp.stride_pages, thp.runs_per_vcpu, thp.hot_pages()),
            (2048, 2, 1024)
        );
        assert!(thp.is_hot(511) && !thp.is_hot(512) && thp.is_hot(2048));
        // A region with a partial stride at its end: no run there.
        let odd = HotSetLayout::new(100, 1).unwrap();
        assert_eq!(odd.runs_per_vcpu, 1);
        assert!(odd.is_hot(0) && !odd.is_hot(64));
        assert_eq!(HotSetLayout::new(1000, 512), None);
        assert_eq!(small.describe(), "64 runs of 1 page(s) every 64 pages");
    }

    #[test]
    fn lru_values_and_their_lru_gen_settings() {
        assert_eq!("mglru".parse::<Lru>().unwrap(), Lru::Mglru);
        assert_eq!("classic".parse::<Lru>().unwrap(), Lru::Classic);
        assert!("lru".parse::<Lru>().is_err());
        assert_eq!(Lru::Classic.to_string(), "classic");
        assert_eq!(lru_gen_setting(Lru::Mglru), "0x0001");
        assert!(caps_match(Lru::Mglru, LruGenCaps(0x1)));
        assert!(caps_match(Lru::Mglru, LruGenCaps(0x5)));
        assert!(!caps_match(Lru::Mglru, LruGenCaps(0x7)));
        assert!(!caps_match(Lru::Mglru, LruGenCaps(0)));
        assert!(caps_match(Lru::Classic, LruGenCaps(0)));
        assert!(!caps_match(Lru::Classic, LruGenCaps(0x1)));
    }

    #[test]
    fn stat_picks_keys_in_order() {
        let stat = vec![
            ("pgsteal".to_string(), 5),
            ("file".to_string(), 9),
            ("anon".to_string(), 4096),
        ];
        let picked = pick_stat(&stat);
        assert_eq!(describe_stat(&picked), "anon 4096 pgsteal 5");
    }
}
