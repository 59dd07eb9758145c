//! Reclaim actions on guest pages chosen by the caller: `MADV_PAGEOUT` and `MADV_COLD` on the
//! guest's host mappings.
//!
//! Pages are sorted and contiguous runs inside one host mapping become one `madvise` call (a
//! hot/cold guest's cold pages are mostly long runs, so a 1000-page batch is a handful of calls).
//! Only advice that keeps the data is ever issued: `MADV_PAGEOUT` writes anonymous and shmem pages
//! to swap and drops clean file pages (the file keeps the data); `MADV_COLD` only moves pages to
//! the inactive list for the kernel's own reclaim. `MADV_DONTNEED`/`MADV_FREE` would lose guest
//! data and are never used here.
//!
//! File-backed `MAP_SHARED` memory on a real filesystem: `MADV_PAGEOUT` skips dirty file pages
//! (only kswapd writes those back), so each run is `msync(MS_SYNC)`ed first. Memfd and files on
//! tmpfs are shmem: they go to swap like anonymous memory.
//!
//! `MADV_PAGEOUT` only reaches pages mapped in the range it is given. Shmem pages whose guest
//! PTE is gone (userfaultfd-MINOR tracking zaps the PTEs of the pages it watches; the data stays
//! in the page cache) are therefore paged out through a second, private-to-the-reclaimer shared
//! mapping of the same memfd/file ([`Reclaimer::set_alias_files`]): `MADV_POPULATE_READ` maps the
//! still-resident victims there (no userfaultfd on this mapping, so no access is reported) and
//! `MADV_PAGEOUT` reclaims them. Pages also mapped by the guest are shared twice and skipped by
//! the kernel — those are in use anyway.

use agelab_vmm::{BackingKind, GuestPageMap, PAGE_SIZE};
use std::time::Instant;

use crate::kernel::swap::{SwapError, SwapStatus};

/// How pages are reclaimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ReclaimAction {
    /// `MADV_PAGEOUT`: reclaim now (swap-backed memory needs swap).
    PageOut,
    /// `MADV_COLD`: deactivate; the kernel reclaims them first under pressure (memcg limit).
    Cold,
}

impl ReclaimAction {
    /// The madvise advice.
    fn advice(self) -> libc::c_int {
        match self {
            ReclaimAction::PageOut => libc::MADV_PAGEOUT,
            ReclaimAction::Cold => libc::MADV_COLD,
        }
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            ReclaimAction::PageOut => "pageout",
            ReclaimAction::Cold => "cold",
        }
    }
}

/// Errors of reclaim actions.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimActionError {
    /// Swap-backed guest memory but no swap: paging out would silently do nothing.
    #[error(
        "{what} guest memory (slot {slot}) can only be reclaimed to swap, and /proc/swaps lists \
         no swap: run `agelab reclaim --zram SIZE` (agelab sets up a free zram device for the run) or \
         enable swap"
    )]
    NoSwap {
        /// What kind of memory.
        what: String,
        /// Memslot.
        slot: u32,
    },
    /// Swap has no free space left.
    #[error("swap is full ({used_kib} KiB used): reclaiming more would fail")]
    SwapFull {
        /// Used KiB.
        used_kib: u64,
    },
    /// hugetlb pages cannot be paged out.
    #[error("slot {slot} is MAP_HUGETLB memory: hugetlb pages are never reclaimed")]
    HugeTlb {
        /// Memslot.
        slot: u32,
    },
    /// Reading the swap state failed.
    #[error(transparent)]
    Swap(#[from] SwapError),
    /// A page index outside guest memory.
    #[error("page {page} is outside guest memory ({pages} pages)")]
    OutOfRange {
        /// Page.
        page: u64,
        /// Pages in guest memory.
        pages: u64,
    },
    /// The second mapping of a shared slot could not be created.
    #[error("mapping slot {slot}'s file a second time for reclaim: {err}")]
    Alias {
        /// Memslot.
        slot: u32,
        /// Cause.
        #[source]
        err: nix::Error,
    },
    /// `msync` failed.
    #[error("msync({hva:#x}, {len:#x}, MS_SYNC): {err}")]
    Msync {
        /// Start.
        hva: u64,
        /// Length.
        len: u64,
        /// Cause.
        #[source]
        err: nix::Error,
    },
    /// `madvise` failed.
    #[error("madvise({hva:#x}, {len:#x}, {advice}): {err}")]
    Madvise {
        /// Start.
        hva: u64,
        /// Length.
        len: u64,
        /// Advice name.
        advice: &'static str,
        /// Cause.
        #[source]
        err: nix::Error,
    },
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ActionReport {
    /// Pages advised.
    pub pages: u64,
    /// `madvise` calls (contiguous runs).
    pub madvise_calls: u64,
    /// `msync` calls (file-backed runs).
    pub msync_calls: u64,
    /// Wall time, ns.
    pub ns: u64,
}

/// Whether a backing needs swap to be paged out.
pub fn needs_swap(kind: &BackingKind) -> bool {
    match kind {
        BackingKind::Anonymous | BackingKind::TransparentHuge | BackingKind::Memfd => true,
        BackingKind::HugeTlb => false,
        BackingKind::File(p) => is_shmem_file(p),
    }
}

fn is_shmem_file(p: &std::path::Path) -> bool {
    let probe = if p.is_dir() {
        p.to_path_buf()
    } else {
        p.parent()
            .map_or_else(|| p.to_path_buf(), |d| d.to_path_buf())
    };
    nix::sys::statfs::statfs(probe.as_path())
        .map(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false)
}

/// Applies one [`ReclaimAction`] to guest pages; see the module docs.
#[derive(Debug)]
pub struct Reclaimer {
    map: GuestPageMap,
    action: ReclaimAction,
    /// Per range: msync before paging out (file on a real filesystem).
    sync_first: Vec<bool>,
    /// Per range: a second shared mapping of the same memfd, `(addr, len, fd)`.
    alias: Vec<Option<(u64, u64, libc::c_int)>>,
    /// The memfds behind the aliases (kept open for re-mapping).
    alias_files: Vec<std::fs::File>,
    total: ActionReport,
}

// SAFETY: the alias addresses are plain mappings owned by the reclaimer (unmapped on drop) and
// only passed to madvise/mincore.
unsafe impl Send for Reclaimer {}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        for &(addr, len, _) in self.alias.iter().flatten() {
            // SAFETY: (addr, len) is a mapping this reclaimer created with mmap and nobody else
            // references.
            unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) };
        }
    }
}

impl Reclaimer {
    /// A reclaimer for `map`. Fails with [`ReclaimActionError::NoSwap`] when some of the memory
    /// needs swap and none is active — instead of silently reclaiming nothing later.
    pub fn new(map: GuestPageMap, action: ReclaimAction) -> Result<Self, ReclaimActionError> {
        let swap = SwapStatus::read()?;
        let mut sync_first = Vec::new();
        for r in map.ranges() {
            if r.backing == BackingKind::HugeTlb {
                return Err(ReclaimActionError::HugeTlb { slot: r.slot });
            }
            if needs_swap(&r.backing) && !swap.any() {
                return Err(ReclaimActionError::NoSwap {
                    what: match &r.backing {
                        BackingKind::Memfd => "memfd (shmem)".into(),
                        BackingKind::File(p) => format!("tmpfs file {}", p.display()),
                        _ => "anonymous".into(),
                    },
                    slot: r.slot,
                });
            }
            sync_first.push(matches!(r.backing, BackingKind::File(_)) && !needs_swap(&r.backing));
        }
        let alias = vec![None; map.ranges().len()];
        Ok(Reclaimer {
            map,
            action,
            sync_first,
            alias,
            alias_files: Vec::new(),
            total: ActionReport::default(),
        })
    }

    /// Gives the files behind shared slots (`(slot, file)`, e.g. from `Vm::test_slots`), so pages
    /// whose guest PTE is not mapped can still be paged out; see the module docs.
    pub fn set_alias_files(
        &mut self,
        files: &[(u32, &std::fs::File)],
    ) -> Result<(), ReclaimActionError> {
        use std::os::fd::AsRawFd;
        for (ri, r) in self.map.ranges().iter().enumerate() {
            // Memfd only: one memfd per slot, guest memory at offset 0 (a file backing shares one
            // file between slots at different offsets, and nothing zaps its PTEs).
            if r.backing != BackingKind::Memfd || self.alias[ri].is_some() {
                continue;
            }
            let Some((_, f)) = files.iter().find(|(slot, _)| *slot == r.slot) else {
                continue;
            };
            let len = r.pages * PAGE_SIZE;
            // SAFETY: a fresh shared read-only mapping of the slot's memfd at an address the
            // kernel chooses; the slot's guest memory starts at offset 0 of its memfd.
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len as usize,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                )
            };
            if addr == libc::MAP_FAILED {
                return Err(ReclaimActionError::Alias {
                    slot: r.slot,
                    err: nix::Error::last(),
                });
            }
            let f = f.try_clone().map_err(|e| ReclaimActionError::Alias {
                slot: r.slot,
                err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
            })?;
            self.alias[ri] = Some((addr as u64, len, f.as_raw_fd()));
            self.alias_files.push(f);
        }
        Ok(())
    }

    /// The action.
    pub fn action(&self) -> ReclaimAction {
        self.action
    }

    /// Totals over every batch.
    pub fn total(&self) -> ActionReport {
        self.total
    }

    /// Advises `pages` (dense guest page indices, any order, duplicates allowed).
    pub fn apply(&mut self, pages: &[u64]) -> Result<ActionReport, ReclaimActionError> {
        let t = Instant::now();
        let mut sorted = pages.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let n = self.map.len();
        if let Some(&last) = sorted.last() {
            if last >= n {
                return Err(ReclaimActionError::OutOfRange {
                    page: last,
                    pages: n,
                });
            }
        }
        let mut rep = ActionReport {
            pages: sorted.len() as u64,
            ..ActionReport::default()
        };
        let ranges = self.map.ranges();
        let mut ri = 0;
        let mut i = 0;
        while i < sorted.len() {
            let first = sorted[i];
            while first >= ranges[ri].first_page + ranges[ri].pages {
                ri += 1;
            }
            let r = &ranges[ri];
            let end_of_range = r.first_page + r.pages;
            let mut j = i + 1;
            while j < sorted.len() && sorted[j] == sorted[j - 1] + 1 && sorted[j] < end_of_range {
                j += 1;
            }
            let hva = r.hva + (first - r.first_page) * PAGE_SIZE;
            let len = (j - i) as u64 * PAGE_SIZE;
            if self.sync_first[ri] && self.action == ReclaimAction::PageOut {
                msync(hva, len)?;
                rep.msync_calls += 1;
            }
            madvise(hva, len, self.action)?;
            rep.madvise_calls += 1;
            if let (Some((base, _, fd)), ReclaimAction::PageOut) = (self.alias[ri], self.action) {
                let off = (first - r.first_page) * PAGE_SIZE;
                rep.madvise_calls += pageout_resident_via(base + off, fd, off, hva, len)?;
            }
            i = j;
        }
        rep.ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.total.pages += rep.pages;
        self.total.madvise_calls += rep.madvise_calls;
        self.total.msync_calls += rep.msync_calls;
        self.total.ns += rep.ns;
        Ok(rep)
    }
}

/// Pages out the still-resident pages of guest run `[hva, hva+len)` through the alias at
/// `alias`; returns madvise calls made.
fn pageout_resident_via(
    alias: u64,
    fd: libc::c_int,
    off: u64,
    hva: u64,
    len: u64,
) -> Result<u64, ReclaimActionError> {
    let n = (len / PAGE_SIZE) as usize;
    let mut vec = vec![0u8; n];
    // SAFETY: [hva, hva+len) is a live guest mapping and `vec` holds one byte per page.
    let rc = unsafe { libc::mincore(hva as *mut libc::c_void, len as usize, vec.as_mut_ptr()) };
    if rc != 0 {
        return Ok(0);
    }
    let mut calls = 0;
    let mut i = 0;
    while i < n {
        if vec[i] & 1 == 0 {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < n && vec[j] & 1 != 0 {
            j += 1;
        }
        let a = alias + i as u64 * PAGE_SIZE;
        let l = (j - i) as u64 * PAGE_SIZE;
        // SAFETY: [a, a+l) lies inside the reclaimer's own read-only alias mapping; populating
        // only maps page-cache pages, it never writes them.
        let rc =
            unsafe { libc::madvise(a as *mut libc::c_void, l as usize, libc::MADV_POPULATE_READ) };
        if rc == 0 {
            madvise(a, l, ReclaimAction::PageOut)?;
            calls += 2;
        }
        unmap_alias_ptes(a, l, fd, off + i as u64 * PAGE_SIZE);
        i = j;
    }
    Ok(calls)
}

/// Drops the alias's page-table entries for `[a, a+l)` (file offset `off` of memfd `fd`) by
/// mapping the same range over it again: `MAP_FIXED` replaces the old PTEs while the page cache
/// and swap keep the data. A page left mapped here would count as shared with the guest
/// mapping, and `MADV_PAGEOUT` skips shared pages: the next pageout through the guest mapping
/// would silently fail.
fn unmap_alias_ptes(a: u64, l: u64, fd: libc::c_int, off: u64) {
    // SAFETY: [a, a+l) lies inside the reclaimer's own alias mapping, which nothing else
    // references; the replacement maps the same memfd range read-only, so the view is unchanged.
    unsafe {
        libc::mmap(
            a as *mut libc::c_void,
            l as usize,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            off as libc::off_t,
        );
    }
}

fn msync(hva: u64, len: u64) -> Result<(), ReclaimActionError> {
    // SAFETY: [hva, hva+len) lies inside a live MAP_SHARED guest mapping (from the page map);
    // msync only writes dirty pages back, it never changes the mapping's contents.
    let rc = unsafe { libc::msync(hva as *mut libc::c_void, len as usize, libc::MS_SYNC) };
    if rc != 0 {
        return Err(ReclaimActionError::Msync {
            hva,
            len,
            err: nix::Error::last(),
        });
    }
    Ok(())
}

fn madvise(hva: u64, len: u64, action: ReclaimAction) -> Result<(), ReclaimActionError> {
    // SAFETY: [hva, hva+len) lies inside a live guest mapping (from the page map). PAGEOUT and
    // COLD are hints that keep the data: a later access faults the page back in unchanged.
    let rc = unsafe { libc::madvise(hva as *mut libc::c_void, len as usize, action.advice()) };
    if rc != 0 {
        return Err(ReclaimActionError::Madvise {
            hva,
            len,
            advice: action.name(),
            err: nix::Error::last(),
        });
    }
    Ok(())
}
