//! Guest writes seen from the host with userfaultfd write-protect: a KVM dirty log that needs no
//! memslot flag, on anonymous and shmem memory.
//!
//! Two mechanisms, same result:
//! - async (Linux 6.7+): `UFFD_FEATURE_WP_ASYNC` lets the kernel resolve write faults itself and
//!   `PAGEMAP_SCAN` returns and re-protects the written pages ([`crate::kernel::uffd_wp`]);
//! - sync (older kernels): every first write to a protected page blocks in a uffd WP fault that
//!   a dedicated thread records and resolves with `UFFDIO_WRITEPROTECT` (unprotect + wake); a
//!   harvest re-protects the pages written.
//!
//! KVM writes go through GUP with FOLL_WRITE, which takes the same fault path, and protecting a
//! page invalidates KVM's writable secondary mapping via the MMU notifier, so guest writes are
//! caught either way.

use super::SourceKind;
use crate::host_guard::{HostRestore, RestoreGuard};
use crate::kernel::uffd::{
    for_each_hva_run, unregister_fd, AtomicPageBits, FaultStats, FaultThread, HvaIndex, UffdError,
    UffdMsg, Userfaultfd, UFFDIO_REGISTER_MODE_WP, UFFD_FEATURE_THREAD_ID,
    UFFD_FEATURE_WP_HUGETLBFS_SHMEM, UFFD_FEATURE_WP_UNPOPULATED, UFFD_PAGEFAULT_FLAG_WP,
};
use crate::kernel::uffd_wp::{scan_bytes, UffdWpAsync, UffdWpError};
use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
use agelab_vmm::{BackingKind, GuestPageMap, PageSet, PAGE_SIZE};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

const NAME: &str = SourceKind::UffdWp.name();

/// Which write-protect mechanism to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UffdWpMode {
    /// Async with PAGEMAP_SCAN when the kernel has it, sync faults otherwise.
    #[default]
    Auto,
    /// Async write-protect + PAGEMAP_SCAN only.
    Async,
    /// Synchronous WP faults resolved by a thread.
    Sync,
}

impl UffdWpMode {
    /// Short name.
    pub fn as_str(self) -> &'static str {
        match self {
            UffdWpMode::Auto => "auto",
            UffdWpMode::Async => "async",
            UffdWpMode::Sync => "sync",
        }
    }
}

/// Errors setting up or running write-protect tracking.
#[derive(Debug, thiserror::Error)]
pub enum UffdWpSourceError {
    /// Async mode failed (kernel too old, or registration refused).
    #[error("uffd-wp async: {0}")]
    Async(#[from] UffdWpError),
    /// Sync mode failed.
    #[error("uffd-wp sync: {0}")]
    Sync(#[from] UffdError),
    /// Both mechanisms failed.
    #[error("uffd-wp: async: {async_err}; sync: {sync_err}")]
    Neither {
        /// Why async failed.
        async_err: UffdWpError,
        /// Why sync failed.
        sync_err: UffdError,
    },
    /// The memory kind cannot be write-protected page by page.
    #[error("uffd-wp: slot {slot} is MAP_HUGETLB memory: write-protect works on 2 MiB pages there, not tracked per 4 KiB page")]
    HugeTlb {
        /// Memslot.
        slot: u32,
    },
    /// No guest memory at all.
    #[error("uffd-wp: the page map is empty")]
    Empty,
}

/// Counters of a WP source.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UffdWpStats {
    /// The mechanism in use (`Async` or `Sync`).
    pub mode: UffdWpMode,
    /// Sync mode: fault-thread totals. Async mode: zero faults (the kernel resolves them).
    pub fault: FaultStats,
    /// Harvests done.
    pub harvests: u64,
    /// Written pages reported, summed over harvests.
    pub pages_written: u64,
    /// Wall time in harvests (scan or re-protect), ns.
    pub harvest_ns: u64,
}

enum Inner {
    Async(UffdWpAsync),
    Sync {
        uffd: Arc<Userfaultfd>,
        thread: FaultThread,
        record: Arc<AtomicPageBits>,
    },
}

/// Written guest pages from userfaultfd write-protect (async + PAGEMAP_SCAN, or sync faults).
pub struct UffdWpSource {
    map: GuestPageMap,
    // Dropped before `inner`: unregisters, so no writer stays blocked on a stopped thread.
    guard: Option<RestoreGuard>,
    inner: Inner,
    stats: UffdWpStats,
}

impl std::fmt::Debug for UffdWpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UffdWpSource")
            .field("pages", &self.map.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl UffdWpSource {
    /// Registers and write-protects every range of `map` (mapped in this process).
    pub fn new(map: &GuestPageMap, mode: UffdWpMode) -> Result<Self, UffdWpSourceError> {
        if map.is_empty() {
            return Err(UffdWpSourceError::Empty);
        }
        if let Some(r) = map
            .ranges()
            .iter()
            .find(|r| r.backing == BackingKind::HugeTlb)
        {
            return Err(UffdWpSourceError::HugeTlb { slot: r.slot });
        }
        let shared = map.ranges().iter().any(|r| r.backing.is_shared());
        let ranges: Vec<(u64, u64)> = map
            .ranges()
            .iter()
            .map(|r| (r.hva, r.pages * PAGE_SIZE))
            .collect();
        let (inner, fd) = match mode {
            UffdWpMode::Async => Self::new_async(shared, &ranges)?,
            UffdWpMode::Sync => Self::new_sync(map, shared, &ranges)?,
            UffdWpMode::Auto => match Self::new_async(shared, &ranges) {
                Ok(x) => x,
                Err(UffdWpSourceError::Async(async_err)) => {
                    match Self::new_sync(map, shared, &ranges) {
                        Ok(x) => x,
                        Err(UffdWpSourceError::Sync(sync_err)) => {
                            return Err(UffdWpSourceError::Neither {
                                async_err,
                                sync_err,
                            })
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            },
        };
        let used = match inner {
            Inner::Async(_) => UffdWpMode::Async,
            Inner::Sync { .. } => UffdWpMode::Sync,
        };
        let guard = fd.map(|fd| {
            let desc = format!(
                "{NAME} ({}): unregister {} guest range(s), {} MiB",
                used.as_str(),
                ranges.len(),
                map.bytes() >> 20
            );
            HostRestore::register(desc, move || {
                for (hva, len) in ranges {
                    let _ = unregister_fd(fd.as_fd(), hva, len);
                }
            })
        });
        Ok(UffdWpSource {
            map: map.clone(),
            guard,
            inner,
            stats: UffdWpStats {
                mode: used,
                ..Default::default()
            },
        })
    }

    fn new_async(
        shared: bool,
        ranges: &[(u64, u64)],
    ) -> Result<(Inner, Option<OwnedFd>), UffdWpSourceError> {
        crate::kernel::uffd_wp::probe_uffd_wp_async()?;
        let mut u = UffdWpAsync::new(shared)?;
        for &(hva, len) in ranges {
            u.register(hva, len)?;
        }
        let fd = u.try_clone_fd().ok();
        Ok((Inner::Async(u), fd))
    }

    fn new_sync(
        map: &GuestPageMap,
        shared: bool,
        ranges: &[(u64, u64)],
    ) -> Result<(Inner, Option<OwnedFd>), UffdWpSourceError> {
        let required = if shared {
            UFFD_FEATURE_WP_HUGETLBFS_SHMEM
        } else {
            0
        };
        // Without WP_UNPOPULATED (Linux 6.4) the first write to a never-touched anonymous page
        // is not caught; shmem always gets PTE markers.
        let uffd = Arc::new(Userfaultfd::new(
            required,
            UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_THREAD_ID,
        )?);
        let record = Arc::new(AtomicPageBits::new(map.len()));
        let (index, rec) = (HvaIndex::new(map), record.clone());
        let thread = FaultThread::spawn(
            NAME,
            uffd.clone(),
            Box::new(move |u: &Userfaultfd, m: &UffdMsg| {
                let page = m.address & !(PAGE_SIZE - 1);
                if m.flags & UFFD_PAGEFAULT_FLAG_WP == 0 {
                    return u.wake(page, PAGE_SIZE);
                }
                if let Some(i) = index.page_of(page) {
                    rec.insert(i);
                }
                u.write_protect(page, PAGE_SIZE, false)
            }),
        )?;
        let mut done: Vec<(u64, u64)> = Vec::new();
        let undo = |done: &[(u64, u64)]| {
            for &(h, l) in done {
                let _ = uffd.unregister(h, l);
            }
        };
        for &(hva, len) in ranges {
            let r = uffd
                .register(hva, len, UFFDIO_REGISTER_MODE_WP)
                .and_then(|()| {
                    done.push((hva, len));
                    uffd.write_protect(hva, len, true)
                });
            if let Err(e) = r {
                undo(&done);
                return Err(e.into());
            }
        }
        let fd = uffd.try_clone_fd().ok();
        Ok((
            Inner::Sync {
                uffd,
                thread,
                record,
            },
            fd,
        ))
    }

    /// The mechanism in use.
    pub fn mode(&self) -> UffdWpMode {
        self.stats.mode
    }

    /// Counters so far.
    pub fn stats(&self) -> UffdWpStats {
        let mut s = self.stats;
        if let Inner::Sync { thread, .. } = &self.inner {
            s.fault = thread.stats();
        }
        s
    }

    fn harvest_pages(&mut self) -> Result<(PageSet, u64), WpHarvestError> {
        let map = &self.map;
        match &mut self.inner {
            Inner::Async(u) => {
                let mut written = PageSet::new(map.len());
                let idx = HvaIndex::new(map);
                let calls = u.scan(|s, e| {
                    // PAGEMAP_SCAN ranges never cross a VMA, so never a memslot.
                    if let Some(first) = idx.page_of(s) {
                        written.insert_range(first, (e - s).div_ceil(PAGE_SIZE));
                    }
                })?;
                Ok((written, calls))
            }
            Inner::Sync { uffd, record, .. } => {
                let written = record.take();
                let mut res: Result<(), WpHarvestError> = Ok(());
                for_each_hva_run(map, &written, |hva, len| {
                    if let Err(e) = uffd.write_protect(hva, len, true) {
                        res = Err(e.into());
                    }
                });
                res.map(|()| (written, 0))
            }
        }
    }
}

/// Why a harvest's scan or re-protection failed.
#[derive(Debug, thiserror::Error)]
enum WpHarvestError {
    /// PAGEMAP_SCAN (async mode) failed.
    #[error(transparent)]
    Scan(#[from] UffdWpError),
    /// Write-protecting the written pages again (sync mode) failed.
    #[error(transparent)]
    WriteProtect(#[from] UffdError),
}

impl Drop for UffdWpSource {
    fn drop(&mut self) {
        self.guard.take();
        if let Inner::Sync { thread, .. } = &mut self.inner {
            thread.stop();
        }
    }
}

impl AccessSource for UffdWpSource {
    fn name(&self) -> &str {
        SourceKind::UffdWp.name()
    }

    fn observes(&self) -> Observes {
        SourceKind::UffdWp.observes()
    }

    fn granularity(&self) -> u64 {
        PAGE_SIZE
    }

    fn available(&self) -> Result<(), Unavailable> {
        match &self.inner {
            Inner::Sync { thread, .. } if !thread.is_running() => {
                Err(Unavailable(format!("{NAME}: the fault thread stopped")))
            }
            _ => Ok(()),
        }
    }

    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        let t = Instant::now();
        let (accessed, calls) = self.harvest_pages().map_err(|e| HarvestError::Other {
            source_name: NAME.into(),
            message: e.to_string(),
        })?;
        let ns = t.elapsed().as_nanos() as u64;
        self.stats.harvests += 1;
        let pages = accessed.count();
        self.stats.pages_written += pages;
        self.stats.harvest_ns += ns;
        Ok(Harvest {
            accessed,
            observed: None,
            cost: HarvestCost {
                ns,
                // Async: what PAGEMAP_SCAN copied out; sync: the fault thread read the messages.
                bytes_read: if calls > 0 {
                    scan_bytes(calls, pages)
                } else {
                    0
                },
                bytes_written: 0,
            },
        })
    }
}
