//! Write tracking with userfaultfd async write-protect and the PAGEMAP_SCAN ioctl (Linux 6.7+).
//!
//! The guest ranges are registered with a userfaultfd in WP mode with `UFFD_FEATURE_WP_ASYNC`: a
//! write to a protected page is resolved by the kernel itself (no fault message, no handler
//! thread), which just drops the PTE's uffd-wp bit. `PAGEMAP_SCAN` with `PAGE_IS_WRITTEN` and
//! `PM_SCAN_WP_MATCHING` then returns the written ranges and re-protects them in one pass. Writes
//! made by the kernel through GUP (KVM faulting in a guest page for write) take the same fault path,
//! so they are seen too; re-protecting invalidates KVM's SPTEs via the MMU notifier.

use agelab_vmm::PAGE_SIZE;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use super::uffd::{
    uffdio_api, uffdio_register, uffdio_unregister, UffdError, UffdioApi, UffdioRange,
    UffdioRegister, UFFDIO_REGISTER_MODE_WP, UFFD_API, UFFD_FEATURE_WP_ASYNC,
    UFFD_FEATURE_WP_HUGETLBFS_SHMEM, UFFD_FEATURE_WP_UNPOPULATED,
};

/// PAGEMAP_SCAN categories.
const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// Write-protect the pages that matched.
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Fail (EPERM) on pages without async write-protect instead of silently skipping them.
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Debug, Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

nix::ioctl_readwrite!(pagemap_scan, b'f', 16, PmScanArg);

/// Regions returned per PAGEMAP_SCAN call; the scan resumes from `walk_end` when it fills up.
const SCAN_VEC_LEN: usize = 4096;

/// Bytes the kernel copied out for a scan of `calls` PAGEMAP_SCAN calls that reported `pages`
/// written pages: one `page_region` per reported run (at most one per page, at most
/// [`SCAN_VEC_LEN`] per call), plus the argument struct per call.
pub fn scan_bytes(calls: u64, pages: u64) -> u64 {
    pages.min(calls * SCAN_VEC_LEN as u64) * std::mem::size_of::<PageRegion>() as u64
        + calls * std::mem::size_of::<PmScanArg>() as u64
}

/// Errors from uffd-wp async tracking.
#[derive(Debug, thiserror::Error)]
pub enum UffdWpError {
    /// userfaultfd(2) failed.
    #[error("userfaultfd(2): {err}{hint}", hint = userfaultfd_hint(*.err))]
    Open {
        /// Cause.
        #[source]
        err: nix::Error,
    },
    /// The API handshake refused the features.
    #[error("UFFDIO_API: {err}; kernel offers features {offered:#x}, need WP_ASYNC|WP_UNPOPULATED (Linux 6.7+)")]
    Features {
        /// Cause.
        #[source]
        err: nix::Error,
        /// Features the kernel offers.
        offered: u64,
    },
    /// Registration failed.
    #[error("UFFDIO_REGISTER WP {start:#x}+{len:#x}: {err}")]
    Register {
        /// Range start.
        start: u64,
        /// Range length.
        len: u64,
        /// Cause.
        #[source]
        err: nix::Error,
    },
    /// PAGEMAP_SCAN failed.
    #[error("PAGEMAP_SCAN {start:#x}..{end:#x}: {err}{hint}", hint = scan_hint(*.err))]
    Scan {
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
        /// Cause.
        #[source]
        err: nix::Error,
    },
    /// Opening pagemap failed.
    #[error("opening /proc/self/pagemap: {0}")]
    Pagemap(#[source] std::io::Error),
    /// Probe page mapping failed.
    #[error("mapping a probe page: {0}")]
    Probe(#[source] nix::Error),
    /// A write to the probe page was not reported.
    #[error("PAGEMAP_SCAN did not report a write to a uffd-wp async probe page")]
    ProbeMissed,
}

fn userfaultfd_hint(e: nix::Error) -> &'static str {
    match e {
        nix::Error::ENOSYS => " (kernel built without CONFIG_USERFAULTFD)",
        nix::Error::EPERM => " (vm.unprivileged_userfaultfd=0 and no CAP_SYS_PTRACE)",
        _ => "",
    }
}

fn scan_hint(e: nix::Error) -> &'static str {
    match e {
        nix::Error::ENOTTY | nix::Error::EINVAL => " (no PAGEMAP_SCAN: Linux 6.7+ needed)",
        nix::Error::EPERM => " (a page in the range is not registered for async uffd-wp)",
        _ => "",
    }
}

/// An anonymous private mapping owned by this process (probes and tests).
#[derive(Debug)]
pub struct ScratchMapping {
    addr: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this struct; it may be used and unmapped from any
// thread.
unsafe impl Send for ScratchMapping {}

impl ScratchMapping {
    /// Maps `pages` zeroed anonymous pages (not populated).
    pub fn new(pages: usize) -> Result<Self, nix::Error> {
        let len =
            std::num::NonZeroUsize::new(pages * PAGE_SIZE as usize).ok_or(nix::Error::EINVAL)?;
        use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address aliases nothing.
        let addr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )?
        };
        Ok(ScratchMapping {
            addr,
            len: len.get(),
        })
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        self.addr.as_ptr() as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The mapping as guest memory of one anonymous slot at 4 GiB, for sources built on a
    /// scratch mapping instead of a VM (kernel-interface checks).
    pub fn as_guest_memory(&self) -> agelab_vmm::GuestPageMap {
        agelab_vmm::GuestPageMap::new(vec![agelab_vmm::PageRange {
            first_page: 0,
            pages: self.len() as u64 / PAGE_SIZE,
            gpa: 0x1_0000_0000,
            hva: self.addr(),
            slot: 1,
            backing: agelab_vmm::BackingKind::Anonymous,
        }])
    }

    /// Whether the mapping is empty (never: `new` refuses zero pages).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte of page `page`, checked to lie inside the mapping.
    fn page_ptr(&self, page: usize) -> *mut u8 {
        assert!(page * (PAGE_SIZE as usize) < self.len, "page out of range");
        self.addr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(page * PAGE_SIZE as usize)
    }

    /// Volatile byte store at page `page` (so the compiler cannot drop or merge it).
    pub fn write(&self, page: usize, value: u8) {
        // SAFETY: page_ptr checked the address lies inside this live, writable mapping.
        unsafe { self.page_ptr(page).write_volatile(value) }
    }

    /// Volatile byte load from page `page`.
    pub fn read(&self, page: usize) -> u8 {
        // SAFETY: page_ptr checked the address lies inside this live, readable mapping.
        unsafe { self.page_ptr(page).read_volatile() }
    }
}

impl Drop for ScratchMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the range mmap returned; nothing borrows it past this point.
        let _ = unsafe { nix::sys::mman::munmap(self.addr, self.len) };
    }
}

/// A userfaultfd with async WP on some ranges, plus the pagemap file PAGEMAP_SCAN runs on.
#[derive(Debug)]
pub struct UffdWpAsync {
    uffd: OwnedFd,
    pagemap: File,
    ranges: Vec<(u64, u64)>,
    vec: Vec<PageRegion>,
}

impl UffdWpAsync {
    /// Creates the userfaultfd and negotiates async WP (plus shmem/hugetlbfs WP if `shared`).
    pub fn new(shared: bool) -> Result<Self, UffdWpError> {
        let offered = {
            let probe = open_uffd()?;
            let mut api = UffdioApi {
                api: UFFD_API,
                ..Default::default()
            };
            // SAFETY: valid uffd, `api` is a live uffdio_api; features=0 only queries.
            unsafe { uffdio_api(probe.as_raw_fd(), &mut api) }
                .map_err(|err| UffdWpError::Features { err, offered: 0 })?;
            api.features
        };
        let mut want = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
        if shared {
            want |= UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
        }
        let uffd = open_uffd()?;
        let mut api = UffdioApi {
            api: UFFD_API,
            features: want,
            ioctls: 0,
        };
        if offered & want != want {
            return Err(UffdWpError::Features {
                err: nix::Error::EINVAL,
                offered,
            });
        }
        // SAFETY: valid uffd, `api` is a live uffdio_api.
        unsafe { uffdio_api(uffd.as_raw_fd(), &mut api) }
            .map_err(|err| UffdWpError::Features { err, offered })?;
        let pagemap = File::open("/proc/self/pagemap").map_err(UffdWpError::Pagemap)?;
        Ok(UffdWpAsync {
            uffd,
            pagemap,
            ranges: Vec::new(),
            vec: vec![PageRegion::default(); SCAN_VEC_LEN],
        })
    }

    /// Registers `[start, start + len)` (page-aligned, mapped) and write-protects it.
    pub fn register(&mut self, start: u64, len: u64) -> Result<(), UffdWpError> {
        let mut reg = UffdioRegister {
            range: UffdioRange { start, len },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: valid uffd, `reg` is a live uffdio_register; the kernel validates the range.
        unsafe { uffdio_register(self.uffd.as_raw_fd(), &mut reg) }
            .map_err(|err| UffdWpError::Register { start, len, err })?;
        self.ranges.push((start, start + len));
        // Protect everything now: pages written before this point are not "written since".
        self.scan_range(start, start + len, |_, _| {})?;
        Ok(())
    }

    /// A duplicate of the userfaultfd (for undo actions that unregister on a signal).
    pub fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        self.uffd.try_clone()
    }

    /// Registered ranges `(start, end)`.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Calls `f(start, end)` for every range written since the last scan, and re-protects them.
    pub fn scan(&mut self, mut f: impl FnMut(u64, u64)) -> Result<u64, UffdWpError> {
        let mut calls = 0;
        for (s, e) in self.ranges.clone() {
            calls += self.scan_range(s, e, &mut f)?;
        }
        Ok(calls)
    }

    fn scan_range(
        &mut self,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, u64),
    ) -> Result<u64, UffdWpError> {
        let mut cur = start;
        let mut calls = 0;
        while cur < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                start: cur,
                end,
                vec: self.vec.as_mut_ptr() as u64,
                vec_len: self.vec.len() as u64,
                category_mask: PAGE_IS_WRITTEN,
                return_mask: PAGE_IS_WRITTEN,
                ..Default::default()
            };
            // SAFETY: `arg` is a live pm_scan_arg whose vec points at `self.vec` with vec_len
            // elements of struct page_region layout; the kernel writes only within it.
            let n = unsafe { pagemap_scan(self.pagemap.as_raw_fd(), &mut arg) }.map_err(|err| {
                UffdWpError::Scan {
                    start: cur,
                    end,
                    err,
                }
            })?;
            calls += 1;
            for r in &self.vec[..usize::try_from(n).unwrap_or(0).min(self.vec.len())] {
                f(r.start, r.end);
            }
            if arg.walk_end <= cur {
                break;
            }
            cur = arg.walk_end;
        }
        Ok(calls)
    }
}

impl Drop for UffdWpAsync {
    fn drop(&mut self) {
        for &(start, end) in &self.ranges {
            let mut r = UffdioRange {
                start,
                len: end - start,
            };
            // SAFETY: valid uffd and a live uffdio_range; failure only leaves the range registered
            // until the fd closes right after.
            let _ = unsafe { uffdio_unregister(self.uffd.as_raw_fd(), &mut r) };
        }
    }
}

fn open_uffd() -> Result<OwnedFd, UffdWpError> {
    super::uffd::open_raw().map_err(|e| match e {
        UffdError::Open { err } => UffdWpError::Open { err },
        _ => UffdWpError::Open {
            err: nix::Error::EINVAL,
        },
    })
}

/// Checks uffd-wp async + PAGEMAP_SCAN end to end on a scratch page.
pub fn probe_uffd_wp_async() -> Result<(), UffdWpError> {
    let page = ScratchMapping::new(2).map_err(UffdWpError::Probe)?;
    let mut u = UffdWpAsync::new(false)?;
    u.register(page.addr(), page.len() as u64)?;
    page.write(1, 7);
    let mut seen = false;
    u.scan(|s, e| seen |= s <= page.addr() + PAGE_SIZE && page.addr() + PAGE_SIZE < e)?;
    if !seen {
        return Err(UffdWpError::ProbeMissed);
    }
    Ok(())
}
