//! Guest reads and writes seen from the host on any kernel: userfaultfd MINOR faults.
//!
//! Guest memory backed by shmem (a memfd) is registered with userfaultfd in MINOR mode (and
//! MISSING mode, for pages never allocated). Arming a page drops its page-table entry with
//! `MADV_DONTNEED`; the data stays in the page cache. The next access to it — a vCPU through
//! KVM's GUP fault, or any host thread — blocks in a uffd fault that the dedicated fault thread
//! records and resolves at once with `UFFDIO_CONTINUE` (`UFFDIO_ZEROPAGE` for holes). KVM's
//! secondary mappings are torn down by the same zap (MMU notifier), so the guest cannot bypass it.
//!
//! Each harvest returns the armed pages that faulted since they were armed and arms a new
//! sample: all pages, or a uniform random sample sized to a fault budget per second
//! (see [`sample`] for the estimates and their intervals).
//!
//! Private anonymous memory is refused: `MADV_DONTNEED` would free its pages, and MINOR mode
//! exists only for shmem and hugetlbfs.

pub mod sample;

use crate::host_guard::{HostRestore, RestoreGuard};
use crate::kernel::uffd::{
    for_each_hva_run, AtomicPageBits, FaultStats, FaultThread, HvaIndex, UffdError, UffdMsg,
    Userfaultfd, UFFDIO_REGISTER_MODE_MINOR, UFFDIO_REGISTER_MODE_MISSING,
    UFFD_FEATURE_MINOR_SHMEM, UFFD_FEATURE_MISSING_SHMEM, UFFD_FEATURE_THREAD_ID,
    UFFD_PAGEFAULT_FLAG_MINOR,
};
use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
use agelab_guest::rng::SplitMix64;
use agelab_vmm::{BackingKind, GuestPageMap, PageSet, PAGE_SIZE};
pub use sample::{uniform_sample, AccessEstimate, Z95, Z99};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAME: &str = "uffd-minor";

/// How the MINOR source samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UffdMinorConfig {
    /// Faults per second the guest may take; `None` arms every page each interval.
    pub budget_faults_per_sec: Option<u64>,
    /// Seed of the sampling generator (a run is reproducible from it).
    pub seed: u64,
    /// Time between harvests, to size samples: `None` measures it (the first sample assumes
    /// 1 s); `Some` when the caller harvests on a fixed period.
    pub interval: Option<Duration>,
}

impl Default for UffdMinorConfig {
    fn default() -> Self {
        UffdMinorConfig {
            budget_faults_per_sec: None,
            seed: 1,
            interval: None,
        }
    }
}

/// Why the MINOR source cannot track this memory, or failed doing so.
#[derive(Debug, thiserror::Error)]
pub enum UffdMinorError {
    /// The memory is private (anonymous, THP, MAP_HUGETLB or a private file mapping).
    #[error("uffd-minor: slot {slot} at {hva:#x} is {what}: MINOR mode needs shmem or hugetlbfs backing; use --backing memfd")]
    NotShared {
        /// Memslot.
        slot: u32,
        /// Host address.
        hva: u64,
        /// What the memory is.
        what: String,
    },
    /// A hugetlbfs file: MINOR works there, but at 2 MiB granularity, not implemented here.
    #[error("uffd-minor: slot {slot} is on hugetlbfs: 2 MiB MINOR tracking is not implemented; use --backing memfd")]
    Hugetlbfs {
        /// Memslot.
        slot: u32,
    },
    /// No guest memory at all.
    #[error("uffd-minor: the page map is empty")]
    Empty,
    /// A userfaultfd call failed.
    #[error("uffd-minor: {0}")]
    Uffd(#[from] UffdError),
    /// Dropping page-table entries failed.
    #[error("uffd-minor: madvise(MADV_DONTNEED) {hva:#x}+{len:#x}: {err}")]
    Arm {
        /// Start.
        hva: u64,
        /// Length.
        len: u64,
        /// Cause.
        #[source]
        err: nix::Error,
    },
}

/// Counters of a MINOR source.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UffdMinorStats {
    /// Fault-thread totals (faults, CPU time, wall time since start).
    pub fault: FaultStats,
    /// Of the faults, MINOR ones (page in the page cache).
    pub minor_faults: u64,
    /// Of the faults, MISSING ones (a hole: first touch of a never-allocated page).
    pub missing_faults: u64,
    /// Of the MINOR faults, those whose page another fault had already mapped (two vCPUs, or a
    /// fault retried).
    pub already_mapped: u64,
    /// Arming passes.
    pub arms: u64,
    /// Pages armed, summed over passes.
    pub pages_armed: u64,
    /// `madvise` calls made arming.
    pub madvise_calls: u64,
    /// Wall time spent arming, ns.
    pub arm_ns: u64,
    /// Size of the current sample.
    pub sample_size: u64,
}

/// Fault-path counters shared with the fault thread's handler.
#[derive(Debug, Default)]
struct KindCounters {
    minor: AtomicU64,
    missing: AtomicU64,
    already_mapped: AtomicU64,
}

/// Guest page accesses (reads and writes) from userfaultfd MINOR faults on shmem memory.
#[derive(Debug)]
pub struct UffdMinorSource {
    map: GuestPageMap,
    config: UffdMinorConfig,
    record: Arc<AtomicPageBits>,
    kinds: Arc<KindCounters>,
    // Field order is drop order: unregister (guard) before stopping the thread, so no vCPU is
    // ever left blocked on a fault nobody will resolve.
    guard: Option<RestoreGuard>,
    thread: FaultThread,
    uffd: Arc<Userfaultfd>,
    armed: PageSet,
    rng: SplitMix64,
    armed_at: Instant,
    next_interval: Duration,
    rearm: bool,
    stats: UffdMinorStats,
}

impl UffdMinorSource {
    /// Registers every range of `map` (mapped shared in this process) and arms the first sample.
    pub fn new(map: &GuestPageMap, config: UffdMinorConfig) -> Result<Self, UffdMinorError> {
        check_backing(map)?;
        let uffd = Arc::new(Userfaultfd::new(
            UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM,
            UFFD_FEATURE_THREAD_ID,
        )?);
        let record = Arc::new(AtomicPageBits::new(map.len()));
        let kinds = Arc::new(KindCounters::default());
        let (index, rec, k) = (HvaIndex::new(map), record.clone(), kinds.clone());
        // The thread runs before any range is registered: no fault can wait for it.
        let thread = FaultThread::spawn(
            "uffd-minor",
            uffd.clone(),
            Box::new(move |u: &Userfaultfd, m: &UffdMsg| {
                let page = m.address & !(PAGE_SIZE - 1);
                if let Some(i) = index.page_of(page) {
                    rec.insert(i);
                }
                if m.flags & UFFD_PAGEFAULT_FLAG_MINOR != 0 {
                    k.minor.fetch_add(1, Ordering::Relaxed);
                    if u.continue_page(page, PAGE_SIZE)? {
                        k.already_mapped.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                } else {
                    k.missing.fetch_add(1, Ordering::Relaxed);
                    u.zero_page(page, PAGE_SIZE)
                }
            }),
        )?;
        let ranges: Vec<(u64, u64)> = map
            .ranges()
            .iter()
            .map(|r| (r.hva, r.pages * PAGE_SIZE))
            .collect();
        let mut done = Vec::new();
        for &(hva, len) in &ranges {
            if let Err(e) = uffd.register(
                hva,
                len,
                UFFDIO_REGISTER_MODE_MINOR | UFFDIO_REGISTER_MODE_MISSING,
            ) {
                for &(h, l) in &done {
                    let _ = uffd.unregister(h, l);
                }
                return Err(e.into());
            }
            done.push((hva, len));
        }
        let guard = unregister_guard(&uffd, ranges, map.bytes());
        let mut s = UffdMinorSource {
            map: map.clone(),
            config,
            record,
            kinds,
            guard,
            thread,
            uffd,
            armed: PageSet::new(map.len()),
            rng: SplitMix64::new(config.seed),
            armed_at: Instant::now(),
            next_interval: config.interval.unwrap_or(Duration::from_secs(1)),
            rearm: true,
            stats: UffdMinorStats::default(),
        };
        s.arm()?;
        Ok(s)
    }

    /// Whether `map` could be tracked, with the reason when not (no side effects).
    pub fn supported(map: &GuestPageMap) -> Result<(), Unavailable> {
        check_backing(map).map_err(|e| Unavailable(e.to_string()))?;
        let offered =
            crate::kernel::uffd::offered_features().map_err(|e| Unavailable(e.to_string()))?;
        let need = UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM;
        if offered & need != need {
            return Err(Unavailable(format!(
                "{NAME}: kernel offers userfaultfd features {offered:#x}, MINOR on shmem needs Linux 5.14+"
            )));
        }
        Ok(())
    }

    /// Pages armed now (the sample the next harvest reports on).
    pub fn armed(&self) -> &PageSet {
        &self.armed
    }

    /// Changes the fault budget from the next arming on.
    pub fn set_budget(&mut self, budget_faults_per_sec: Option<u64>) {
        self.config.budget_faults_per_sec = budget_faults_per_sec;
    }

    /// Whether harvests re-arm (off: harvests report what was armed, then nothing more is).
    pub fn set_rearm(&mut self, on: bool) {
        self.rearm = on;
    }

    /// Maps every armed page that was not touched back in (no faults, data unchanged), so the
    /// guest runs untracked; the next harvest reports what was touched until now. Returns the
    /// pages left unmapped (holes never allocated: their first touch is a MISSING fault).
    pub fn disarm(&mut self) -> u64 {
        let u = &self.uffd;
        let mut left = 0;
        for_each_hva_run(&self.map, &self.armed, |hva, len| {
            // Page by page: a run stops at its first page already mapped.
            for p in (hva..hva + len).step_by(PAGE_SIZE as usize) {
                if u.continue_page(p, PAGE_SIZE).is_err() {
                    left += 1;
                }
            }
        });
        left
    }

    /// Counters so far.
    pub fn stats(&self) -> UffdMinorStats {
        UffdMinorStats {
            fault: self.thread.stats(),
            minor_faults: self.kinds.minor.load(Ordering::Relaxed),
            missing_faults: self.kinds.missing.load(Ordering::Relaxed),
            already_mapped: self.kinds.already_mapped.load(Ordering::Relaxed),
            sample_size: self.armed.count(),
            ..self.stats
        }
    }

    /// The sample size for the next interval: the budget times the interval (the last one
    /// measured), at least one page.
    fn sample_size(&self) -> u64 {
        let n = self.map.len();
        match self.config.budget_faults_per_sec {
            None => n,
            Some(b) => ((b as f64 * self.next_interval.as_secs_f64()).ceil() as u64).clamp(1, n),
        }
    }

    /// Draws a fresh sample and drops its pages' mappings.
    fn arm(&mut self) -> Result<(), UffdMinorError> {
        let t = Instant::now();
        let sample = uniform_sample(self.map.len(), self.sample_size(), &mut self.rng);
        let mut calls = 0;
        let mut res = Ok(());
        for_each_hva_run(&self.map, &sample, |hva, len| {
            calls += 1;
            // SAFETY: `hva..hva+len` lies inside a registered shared (shmem) guest mapping that
            // this process keeps mapped; MADV_DONTNEED there only drops page-table entries, the
            // data stays in the page cache (check_backing refused private memory).
            let rc = unsafe {
                libc::madvise(hva as *mut libc::c_void, len as usize, libc::MADV_DONTNEED)
            };
            if rc != 0 && res.is_ok() {
                res = Err(UffdMinorError::Arm {
                    hva,
                    len,
                    err: nix::Error::last(),
                });
            }
        });
        self.stats.arms += 1;
        self.stats.pages_armed += sample.count();
        self.stats.madvise_calls += calls;
        self.stats.arm_ns += t.elapsed().as_nanos() as u64;
        self.armed = sample;
        self.armed_at = Instant::now();
        res
    }
}

impl Drop for UffdMinorSource {
    fn drop(&mut self) {
        // Unregister first (wakes any blocked vCPU, which then maps the page itself), then the
        // thread stops (its own field drop).
        self.guard.take();
        self.thread.stop();
    }
}

/// Registers the undo that unregisters every range (run at drop, or by the signal thread).
fn unregister_guard(
    uffd: &Userfaultfd,
    ranges: Vec<(u64, u64)>,
    bytes: u64,
) -> Option<RestoreGuard> {
    let fd = uffd.try_clone_fd().ok()?;
    Some(HostRestore::register(
        format!(
            "{NAME}: unregister {} guest range(s), {} MiB",
            ranges.len(),
            bytes >> 20
        ),
        move || {
            use std::os::fd::AsFd;
            for (hva, len) in ranges {
                // ENOMEM/EINVAL if the VM already unmapped it: nothing left to undo there.
                let _ = crate::kernel::uffd::unregister_fd(fd.as_fd(), hva, len);
            }
        },
    ))
}

/// Refuses memory that MINOR mode cannot track, or that MADV_DONTNEED would free.
fn check_backing(map: &GuestPageMap) -> Result<(), UffdMinorError> {
    if map.is_empty() {
        return Err(UffdMinorError::Empty);
    }
    for r in map.ranges() {
        let not_shared = |what: &str| UffdMinorError::NotShared {
            slot: r.slot,
            hva: r.hva,
            what: what.into(),
        };
        match &r.backing {
            BackingKind::Anonymous => return Err(not_shared("private anonymous memory")),
            BackingKind::TransparentHuge => {
                return Err(not_shared("private anonymous memory (THP)"))
            }
            BackingKind::HugeTlb => return Err(not_shared("private anonymous MAP_HUGETLB memory")),
            BackingKind::Memfd => {}
            BackingKind::File(p) => match nix::sys::statfs::statfs(p.as_path()) {
                Ok(fs) if fs.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC => {
                    return Err(UffdMinorError::Hugetlbfs { slot: r.slot })
                }
                Ok(fs) if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC => {
                    return Err(not_shared(&format!(
                        "a file on a non-shmem filesystem ({})",
                        p.display()
                    )))
                }
                _ => {}
            },
        }
        // The map says shared; make sure the mapping really is (MAP_PRIVATE + DONTNEED would
        // throw away the guest's copy-on-write pages).
        if mapping_is_private(r.hva) == Some(true) {
            return Err(not_shared("a private (MAP_PRIVATE) mapping"));
        }
    }
    Ok(())
}

/// Whether the mapping holding `hva` is private, from /proc/self/maps.
fn mapping_is_private(hva: u64) -> Option<bool> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (range, perms) = (f.next()?, f.next()?);
        let (a, b) = range.split_once('-')?;
        let (a, b) = (
            u64::from_str_radix(a, 16).ok()?,
            u64::from_str_radix(b, 16).ok()?,
        );
        (a <= hva && hva < b).then(|| perms.ends_with('p'))
    })
}

impl AccessSource for UffdMinorSource {
    fn name(&self) -> &str {
        NAME
    }

    fn observes(&self) -> Observes {
        Observes::Both
    }

    fn granularity(&self) -> u64 {
        PAGE_SIZE
    }

    fn available(&self) -> Result<(), Unavailable> {
        if self.thread.is_running() {
            Ok(())
        } else {
            Err(Unavailable(format!("{NAME}: the fault thread stopped")))
        }
    }

    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        let t = Instant::now();
        let interval = self.armed_at.elapsed();
        // Faults of pages not in the sample (armed in an earlier interval, or holes) are
        // resolved too but not reported: only the sample was observed.
        let mut accessed = self.record.take();
        accessed.intersect_with(&self.armed);
        let observed = std::mem::replace(&mut self.armed, PageSet::new(self.map.len()));
        let observed = (observed.count() < self.map.len()).then_some(observed);
        if self.rearm {
            self.next_interval = self
                .config
                .interval
                .unwrap_or(interval)
                .max(Duration::from_millis(1));
            self.arm().map_err(|e| HarvestError::Other {
                source_name: NAME.into(),
                message: e.to_string(),
            })?;
        }
        Ok(Harvest {
            accessed,
            observed,
            cost: HarvestCost {
                ns: t.elapsed().as_nanos() as u64,
                bytes_read: 0,
                bytes_written: 0,
            },
        })
    }
}
