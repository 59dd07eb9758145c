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
//! (see [`sample`] for the estimates and their intervals). Or the caller decides: with a
//! [`UffdArmer`] from [`UffdMinorSource::guide`], harvests stop re-arming and the caller arms an
//! explicit page set after each aging pass — [`guided::GuidedArming`] arms the engine's oldest
//! generations, as the kernel only checks the accessed bits of old pages, page by page or (with
//! [`region::RegionSampler`]) a few sampled pages per region whose faults promote the region.
//!
//! Private anonymous memory is refused: `MADV_DONTNEED` would free its pages, and MINOR mode
//! exists only for shmem and hugetlbfs.

pub mod budget;
pub mod guest;
pub mod guided;
pub mod region;
pub mod sample;

use super::SourceKind;
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
pub use budget::ReadBudget;
pub use guided::{ArmPolicy, ArmPolicyError, GuidedArming, GuidedStats};
pub use region::{RegionConfig, RegionExpansion, RegionSampler, RegionStats};
pub use sample::{uniform_sample, AccessEstimate, Z95, Z99};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const NAME: &str = SourceKind::UffdMinor.name();

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
    /// An armer outlived its source.
    #[error("uffd-minor: the source was dropped; nothing left to arm")]
    Closed,
    /// An armed set sized for other memory.
    #[error("uffd-minor: armed set covers {got} pages, guest memory has {expected}")]
    SetCapacity {
        /// Capacity of the set passed in.
        got: u64,
        /// Guest pages.
        expected: u64,
    },
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
    /// Arming passes made by a [`UffdArmer`] (explicit page sets).
    pub guided_arms: u64,
    /// Pages a guided arming mapped back in without a fault (left the armed set untouched).
    pub pages_released: u64,
}

/// A live view of a source's fault counts, usable after the source moved into an engine.
#[derive(Clone, Debug)]
pub struct UffdFaultCount {
    kinds: Arc<KindCounters>,
}

impl UffdFaultCount {
    /// MINOR faults so far (armed pages touched, and stray touches of pages left unmapped).
    pub fn minor(&self) -> u64 {
        self.kinds.minor.load(Ordering::Relaxed)
    }

    /// MISSING faults so far (first touches of holes).
    pub fn missing(&self) -> u64 {
        self.kinds.missing.load(Ordering::Relaxed)
    }

    /// Every fault the guest took.
    pub fn total(&self) -> u64 {
        self.minor() + self.missing()
    }
}

/// What the source arms and how, shared with its [`UffdArmer`]s.
#[derive(Debug)]
struct Arming {
    map: GuestPageMap,
    uffd: Arc<Userfaultfd>,
    /// Pages whose page-table entries are dropped and whose first touch the next harvest
    /// reports.
    armed: PageSet,
    armed_at: Instant,
    /// Region sampling: armed pages are samples whose faults stand for their regions.
    expansion: Option<RegionExpansion>,
    /// Live armers: while any exists, harvests do not re-arm by themselves.
    armers: usize,
    /// The source is gone (ranges unregistered): arming would only cost the guest faults.
    closed: bool,
    stats: UffdMinorStats,
}

impl Arming {
    /// Drops the page-table entries of `set` (the data stays in the page cache).
    fn zap(&mut self, set: &PageSet) -> Result<(), UffdMinorError> {
        let t = Instant::now();
        let mut calls = 0;
        let mut res = Ok(());
        for_each_hva_run(&self.map, set, |hva, len| {
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
        self.stats.pages_armed += set.count();
        self.stats.madvise_calls += calls;
        self.stats.arm_ns += t.elapsed().as_nanos() as u64;
        res
    }

    /// Maps `set` back in without faults (UFFDIO_CONTINUE); pages already mapped or never
    /// allocated are skipped. Returns the pages mapped.
    fn release(&mut self, set: &PageSet) -> u64 {
        let u = &self.uffd;
        let mut mapped = 0;
        for_each_hva_run(&self.map, set, |hva, len| {
            match u.continue_page(hva, len) {
                Ok(false) => mapped += len / PAGE_SIZE,
                // The run stopped at a page already mapped (or a hole): page by page.
                _ => {
                    for p in (hva..hva + len).step_by(PAGE_SIZE as usize) {
                        if let Ok(false) = u.continue_page(p, PAGE_SIZE) {
                            mapped += 1;
                        }
                    }
                }
            }
        });
        self.stats.pages_released += mapped;
        mapped
    }
}

/// What one explicit arming did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArmOutcome {
    /// Pages armed for the next interval (the next harvest's observed set).
    pub armed: u64,
    /// Of them, pages whose entries had to be dropped (the rest were still armed and untouched).
    pub zapped: u64,
    /// Pages that left the armed set untouched and were mapped back in (no stray fault later).
    pub released: u64,
    /// Wall time, ns.
    pub ns: u64,
}

/// Arms explicit page sets of a [`UffdMinorSource`] that an engine owns; see
/// [`UffdMinorSource::guide`]. Dropping the last armer hands arming back to the source.
#[derive(Debug)]
pub struct UffdArmer {
    shared: Arc<Mutex<Arming>>,
}

impl UffdArmer {
    /// Arms exactly `next` for the next interval: the next harvest reports which of its pages
    /// the guest touched, and observes only them.
    ///
    /// Pages armed before, not in `next` and not touched are still unmapped; those for which
    /// `may_release` says yes are mapped back in so their next touch costs no fault. Reclaimed
    /// (swapped-out) pages must be refused there: mapping them back would swap them in.
    pub fn arm_only(
        &self,
        next: &PageSet,
        may_release: impl FnMut(u64) -> bool,
    ) -> Result<ArmOutcome, UffdMinorError> {
        self.arm_with(next, None, may_release)
    }

    /// [`arm_only`](Self::arm_only) for region sampling: `next` holds the samples, and the next
    /// harvest reports `expansion`'s members (not the samples) as observed and a faulting
    /// sample's region members as accessed.
    pub fn arm_regions(
        &self,
        next: &PageSet,
        expansion: RegionExpansion,
        may_release: impl FnMut(u64) -> bool,
    ) -> Result<ArmOutcome, UffdMinorError> {
        self.arm_with(next, Some(expansion), may_release)
    }

    fn arm_with(
        &self,
        next: &PageSet,
        expansion: Option<RegionExpansion>,
        mut may_release: impl FnMut(u64) -> bool,
    ) -> Result<ArmOutcome, UffdMinorError> {
        let t = Instant::now();
        let mut a = lock(&self.shared);
        if a.closed {
            return Err(UffdMinorError::Closed);
        }
        if next.capacity() != a.map.len() {
            return Err(UffdMinorError::SetCapacity {
                got: next.capacity(),
                expected: a.map.len(),
            });
        }
        // `armed` holds exactly the pages still unmapped since their arming (the harvest took
        // out those that faulted): only the difference needs a syscall either way.
        let mut leaving = a.armed.clone();
        leaving.subtract(next);
        let mut release = PageSet::new(leaving.capacity());
        for p in leaving.iter().filter(|&p| may_release(p)) {
            release.insert(p);
        }
        let mut zap = next.clone();
        zap.subtract(&a.armed);
        let res = a.zap(&zap);
        let released = a.release(&release);
        a.stats.guided_arms += 1;
        a.expansion = expansion;
        a.armed = next.clone();
        a.armed_at = Instant::now();
        res?;
        Ok(ArmOutcome {
            armed: next.count(),
            zapped: zap.count(),
            released,
            ns: t.elapsed().as_nanos() as u64,
        })
    }

    /// Pages armed now.
    pub fn armed(&self) -> PageSet {
        lock(&self.shared).armed.clone()
    }
}

impl Drop for UffdArmer {
    fn drop(&mut self) {
        let mut a = lock(&self.shared);
        a.armers = a.armers.saturating_sub(1);
    }
}

/// Locks the arming state; a panic elsewhere cannot leave it inconsistent (each update is a
/// plain assignment), so a poisoned lock is used as is.
fn lock(m: &Mutex<Arming>) -> MutexGuard<'_, Arming> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    arming: Arc<Mutex<Arming>>,
    rng: SplitMix64,
    next_interval: Duration,
    rearm: bool,
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
            NAME,
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
            arming: Arc::new(Mutex::new(Arming {
                map: map.clone(),
                uffd: uffd.clone(),
                armed: PageSet::new(map.len()),
                armed_at: Instant::now(),
                expansion: None,
                armers: 0,
                closed: false,
                stats: UffdMinorStats::default(),
            })),
            uffd,
            rng: SplitMix64::new(config.seed),
            next_interval: config.interval.unwrap_or(Duration::from_secs(1)),
            rearm: true,
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

    /// A live view of the fault counters (stays valid once the source is in an engine).
    pub fn fault_count(&self) -> UffdFaultCount {
        UffdFaultCount {
            kinds: self.kinds.clone(),
        }
    }

    /// Pages armed now (the sample the next harvest reports on).
    pub fn armed(&self) -> PageSet {
        lock(&self.arming).armed.clone()
    }

    /// Hands arming to the caller: while the returned armer (or a clone made by calling this
    /// again) lives, harvests report on what was armed without re-arming, and the caller arms
    /// the next interval's pages with [`UffdArmer::arm_only`] (typically after each aging pass,
    /// from the engine's generations: [`GuidedArming`]). The current arming stays until then.
    pub fn guide(&mut self) -> UffdArmer {
        lock(&self.arming).armers += 1;
        UffdArmer {
            shared: self.arming.clone(),
        }
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
        let a = lock(&self.arming);
        let mut left = 0;
        for_each_hva_run(&self.map, &a.armed, |hva, len| {
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
        let a = lock(&self.arming);
        UffdMinorStats {
            fault: self.thread.stats(),
            minor_faults: self.kinds.minor.load(Ordering::Relaxed),
            missing_faults: self.kinds.missing.load(Ordering::Relaxed),
            already_mapped: self.kinds.already_mapped.load(Ordering::Relaxed),
            sample_size: a.armed.count(),
            ..a.stats
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
        let sample = uniform_sample(self.map.len(), self.sample_size(), &mut self.rng);
        let mut a = lock(&self.arming);
        let res = a.zap(&sample);
        a.armed = sample;
        a.armed_at = Instant::now();
        res
    }
}

impl Drop for UffdMinorSource {
    fn drop(&mut self) {
        // Unregister first (wakes any blocked vCPU, which then maps the page itself), then the
        // thread stops (its own field drop). Armers still alive then refuse to arm.
        self.guard.take();
        lock(&self.arming).closed = true;
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
        SourceKind::UffdMinor.name()
    }

    fn observes(&self) -> Observes {
        SourceKind::UffdMinor.observes()
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
        let mut a = lock(&self.arming);
        let interval = a.armed_at.elapsed();
        // Faults of pages not in the sample (armed in an earlier interval, or holes) are
        // resolved too but not reported: only the sample was observed.
        let mut accessed = self.record.take();
        accessed.intersect_with(&a.armed);
        let guided = a.armers > 0;
        let mut observed = if guided {
            // The pages not touched are still unmapped, so still armed: until the armer arms
            // the next set, a touch of one is a fault the next harvest reports.
            let mut still = a.armed.clone();
            still.subtract(&accessed);
            std::mem::replace(&mut a.armed, still)
        } else {
            std::mem::replace(&mut a.armed, PageSet::new(self.map.len()))
        };
        if let Some(x) = a.expansion.as_ref().filter(|_| guided) {
            // Region sampling: the samples stand for their regions' members.
            accessed = x.expand(&accessed);
            observed = x.observed().clone();
        }
        drop(a);
        let observed = (observed.count() < self.map.len()).then_some(observed);
        if self.rearm && !guided {
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
