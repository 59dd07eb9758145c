//! Guest memory: host mappings of every backing kind, registered with vm-memory and KVM.

use crate::large_folio::{KnobState, LargeFolio};
use crate::page_map::{BackingKind, PAGE_SIZE};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

mod location;

use location::refuse_existing;
pub use location::{check_new_file_location, FileLocationError};

/// 2 MiB: huge page and THP alignment.
pub const HUGE_2M: u64 = 2 << 20;

/// Errors while creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The backing string is not one of the known forms.
    #[error("unknown backing '{0}' (expected {BACKING_NAMES})")]
    UnknownBacking(String),
    /// The size is zero or not a multiple of the page size the backing needs.
    #[error("memory size {size} bytes is invalid for {backing} backing: {why}")]
    BadSize {
        /// Requested size.
        size: u64,
        /// Backing name.
        backing: String,
        /// The rule broken.
        why: String,
    },
    /// More memory than the host can give.
    #[error("{requested} MiB of guest memory is more than this host can give ({available} MiB available incl. swap)")]
    TooLarge {
        /// Requested MiB.
        requested: u64,
        /// Available MiB.
        available: u64,
    },
    /// The host has too few free huge pages.
    #[error("hugetlb backing needs {needed} free 2 MiB huge pages but the host has {free} (of {total}); reserve them with: echo {needed} > /proc/sys/vm/nr_hugepages")]
    NoHugePages {
        /// Pages needed.
        needed: u64,
        /// Free huge pages.
        free: u64,
        /// Configured huge pages.
        total: u64,
    },
    /// The file backing path cannot be used.
    #[error("file backing {path}: {why}")]
    FileBacking {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A host system call failed.
    #[error("{what}: {err}")]
    Os {
        /// What was attempted.
        what: &'static str,
        /// The error.
        #[source]
        err: std::io::Error,
    },
    /// vm-memory rejected the layout.
    #[error("guest memory layout rejected: {0}")]
    Layout(String),
    /// The kernel lacks the backing's multi-size THP size, or has it off for advised memory
    /// (boxed: the error type stays small).
    #[error("{0}")]
    LargeFolios(Box<LargeFolioRefusal>),
}

/// Why an mTHP backing cannot be mapped.
#[derive(Debug)]
pub struct LargeFolioRefusal {
    /// Backing name.
    pub backing: String,
    /// Folio size in KiB.
    pub kib: u32,
    /// The size's knob.
    pub knob: PathBuf,
    /// `None`: the knob is missing (no such size in this kernel); else its value and the value
    /// that turns the size on for advised memory.
    pub off: Option<(String, &'static str)>,
}

impl std::fmt::Display for LargeFolioRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (b, kib, knob) = (&self.backing, self.kib, self.knob.display());
        match &self.off {
            None => write!(
                f,
                "{b} backing: this kernel has no {kib} KiB multi-size THP ({knob} missing; anonymous mTHP needs 6.8+, shmem 6.11+)"
            ),
            Some((value, want)) => write!(
                f,
                "{b} backing: {kib} KiB folios are off for advised memory ({knob} is {value}); agelab's commands turn them on for the run (journaled), or: echo {want} > {knob}"
            ),
        }
    }
}

/// Every accepted backing name, for help texts and errors. The kernel KVM selftests' names are
/// accepted with the same meaning: `anonymous` (4 KiB pages: `MADV_NOHUGEPAGE`), `anonymous_thp`,
/// `anonymous_hugetlb`/`anonymous_hugetlb_2mb`, `shmem`.
pub const BACKING_NAMES: &str = "anon|anonymous (4 KiB pages), thp|anonymous_thp (2 MiB THP), \
memfd|shmem, hugetlb|anonymous_hugetlb|anonymous_hugetlb_2mb, mthp-SIZE (anonymous multi-size THP, \
e.g. mthp-16k, mthp-64k; 16k..1m), memfd-mthp-SIZE|shmem-mthp-SIZE (shmem large folios), or file:PATH";

/// How test memory is backed (parsed from the names in [`BACKING_NAMES`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory in 4 KiB pages (default): `MADV_NOHUGEPAGE`, as the kernel KVM
    /// selftests' `anonymous` backing, so THP `always` hosts do not turn it into 2 MiB pages.
    Anon,
    /// A memfd (shmem), mapped shared.
    Memfd,
    /// A file at PATH (or a new unlinked file inside PATH when it is a directory), mapped shared.
    File(PathBuf),
    /// Anonymous memory with `MADV_HUGEPAGE`, 2 MiB aligned.
    Thp,
    /// `MAP_HUGETLB` with 2 MiB pages.
    HugeTlb,
    /// Anonymous memory in multi-size THP folios of one size below 2 MiB (`mthp-64k`).
    Mthp(u32),
    /// A memfd (shmem) in large folios of one size below 2 MiB (`memfd-mthp-64k`).
    MemfdMthp(u32),
}

impl FromStr for Backing {
    type Err = MemoryError;

    fn from_str(s: &str) -> Result<Self, MemoryError> {
        match s {
            "anon" | "anonymous" => Ok(Backing::Anon),
            "memfd" | "shmem" => Ok(Backing::Memfd),
            "thp" | "anonymous_thp" => Ok(Backing::Thp),
            "hugetlb" | "anonymous_hugetlb" | "anonymous_hugetlb_2mb" => Ok(Backing::HugeTlb),
            _ => {
                if let Some(p) = s.strip_prefix("file:") {
                    if !p.is_empty() {
                        return Ok(Backing::File(PathBuf::from(p)));
                    }
                }
                let size = |rest: &str| {
                    LargeFolio::parse_size(rest)
                        .ok_or_else(|| MemoryError::UnknownBacking(s.to_string()))
                };
                if let Some(rest) = s
                    .strip_prefix("memfd-mthp-")
                    .or(s.strip_prefix("shmem-mthp-"))
                {
                    return size(rest).map(Backing::MemfdMthp);
                }
                if let Some(rest) = s.strip_prefix("mthp-") {
                    return size(rest).map(Backing::Mthp);
                }
                Err(MemoryError::UnknownBacking(s.to_string()))
            }
        }
    }
}

impl std::fmt::Display for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::Anon => f.write_str("anon"),
            Backing::Memfd => f.write_str("memfd"),
            Backing::File(p) => write!(f, "file:{}", p.display()),
            Backing::Thp => f.write_str("thp"),
            Backing::HugeTlb => f.write_str("hugetlb"),
            Backing::Mthp(_) | Backing::MemfdMthp(_) => {
                let lf = self.large_folio().expect("mTHP backings have a folio size");
                let kind = if lf.shmem { "memfd-mthp" } else { "mthp" };
                write!(f, "{kind}-{}", lf.size_name())
            }
        }
    }
}

impl MemoryError {
    /// Whether the user can fix this by choosing other options (size, backing, path, huge page
    /// reservation), as opposed to a host failure.
    pub fn is_user_fixable(&self) -> bool {
        match self {
            MemoryError::UnknownBacking(_)
            | MemoryError::BadSize { .. }
            | MemoryError::TooLarge { .. }
            | MemoryError::NoHugePages { .. }
            | MemoryError::FileBacking { .. }
            | MemoryError::LargeFolios(_) => true,
            MemoryError::Os { .. } | MemoryError::Layout(_) => false,
        }
    }
}

/// Checks, creating nothing, that `mem_bytes` of `backing` split into `slots` memslots can be
/// created here: the size splits into slots of the alignment the backing (and several slots:
/// 2 MiB) needs, the host has the memory, enough free huge pages for `hugetlb`, and a
/// `file:PATH` backing would neither overwrite data nor fail to be created.
pub fn check_layout(backing: &Backing, mem_bytes: u64, slots: usize) -> Result<(), MemoryError> {
    let align = backing
        .alignment()
        .max(if slots > 1 { HUGE_2M } else { PAGE_SIZE });
    let n = slots.max(1) as u64;
    let slot_bytes = mem_bytes / n;
    if slots == 0
        || mem_bytes == 0
        || !slot_bytes.is_multiple_of(align)
        || slot_bytes * n != mem_bytes
    {
        return Err(MemoryError::BadSize {
            size: mem_bytes,
            backing: backing.to_string(),
            why: format!(
                "must split into {slots} slot(s) of a non-zero multiple of {} KiB",
                align / 1024
            ),
        });
    }
    let available = host_available_bytes();
    if available > 0 && mem_bytes > available {
        return Err(MemoryError::TooLarge {
            requested: mem_bytes >> 20,
            available: available >> 20,
        });
    }
    match backing {
        Backing::HugeTlb => {
            let (total, free) = hugepage_counts();
            let needed = mem_bytes / HUGE_2M;
            if free < needed {
                return Err(MemoryError::NoHugePages {
                    needed,
                    free,
                    total,
                });
            }
        }
        Backing::File(path) => {
            let bad = |why: String| MemoryError::FileBacking {
                path: path.clone(),
                why,
            };
            if path.is_dir() {
                nix::unistd::access(
                    path,
                    nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
                )
                .map_err(|e| bad(format!("cannot create a file in this directory: {e}")))?;
            } else if let Ok(m) = std::fs::metadata(path) {
                refuse_existing(&m).map_err(|e| bad(e.to_string()))?;
            } else {
                check_new_file_location(path).map_err(|e| bad(e.to_string()))?;
            }
        }
        Backing::Mthp(_) | Backing::MemfdMthp(_) => {
            // Only that the size exists: turning it on is the caller's journaled change.
            if let Some(KnobState::Missing(knob)) = backing.large_folio().map(LargeFolio::state) {
                return Err(backing.no_large_folios(knob));
            }
        }
        Backing::Anon | Backing::Memfd | Backing::Thp => {}
    }
    Ok(())
}

impl Backing {
    /// The page-map kind of this backing.
    pub fn kind(&self) -> BackingKind {
        match self {
            Backing::Anon => BackingKind::Anonymous,
            Backing::Memfd => BackingKind::Memfd,
            Backing::File(p) => BackingKind::File(p.clone()),
            Backing::Thp => BackingKind::TransparentHuge,
            Backing::HugeTlb => BackingKind::HugeTlb,
            // Private anonymous memory advised MADV_HUGEPAGE, whatever the folio size.
            Backing::Mthp(_) => BackingKind::TransparentHuge,
            Backing::MemfdMthp(_) => BackingKind::Memfd,
        }
    }

    /// Alignment every slot of this backing needs.
    pub fn alignment(&self) -> u64 {
        match self {
            // mTHP: the VMA split works in 1 MiB pieces of a 2 MiB-aligned mapping.
            Backing::Thp | Backing::HugeTlb | Backing::Mthp(_) | Backing::MemfdMthp(_) => HUGE_2M,
            _ => PAGE_SIZE,
        }
    }

    /// The large-folio size of an mTHP backing.
    pub fn large_folio(&self) -> Option<LargeFolio> {
        match *self {
            Backing::Mthp(kib) => Some(LargeFolio { kib, shmem: false }),
            Backing::MemfdMthp(kib) => Some(LargeFolio { kib, shmem: true }),
            _ => None,
        }
    }

    /// The size of the folios this backing is meant to put guest memory in, where it decides it
    /// (`None`: memfd and files follow the host's shmem/page-cache policy, `thp` falls back to
    /// 4 KiB where a 2 MiB page cannot be had).
    pub fn folio_bytes(&self) -> Option<u64> {
        match self {
            Backing::Anon => Some(PAGE_SIZE),
            Backing::HugeTlb => Some(HUGE_2M),
            Backing::Mthp(_) | Backing::MemfdMthp(_) => self.large_folio().map(LargeFolio::bytes),
            Backing::Memfd | Backing::File(_) | Backing::Thp => None,
        }
    }

    fn no_large_folios(&self, knob: PathBuf) -> MemoryError {
        MemoryError::LargeFolios(Box::new(LargeFolioRefusal {
            backing: self.to_string(),
            kib: self.large_folio().map_or(0, |f| f.kib),
            knob,
            off: None,
        }))
    }

    /// Refuses an mTHP backing whose size this kernel lacks or has off for advised memory.
    fn check_large_folios_on(&self) -> Result<(), MemoryError> {
        let Some(lf) = self.large_folio() else {
            return Ok(());
        };
        match lf.state() {
            KnobState::On => Ok(()),
            KnobState::Missing(knob) => Err(self.no_large_folios(knob)),
            KnobState::Off(value) => Err(MemoryError::LargeFolios(Box::new(LargeFolioRefusal {
                backing: self.to_string(),
                kib: lf.kib,
                knob: lf.knob(),
                off: Some((value, lf.advised_value())),
            }))),
        }
    }
}

/// One host mapping that backs a memslot; unmapped on drop.
#[derive(Debug)]
pub struct HostMapping {
    addr: *mut u8,
    len: usize,
    /// The file or memfd behind a shared mapping (kept open for fallocate/userfaultfd users).
    pub file: Option<File>,
}

// SAFETY: the mapping is plain memory owned by this struct; the raw pointer is only an address.
unsafe impl Send for HostMapping {}
// SAFETY: as above; concurrent access to guest memory is the guest's and KVM's business.
unsafe impl Sync for HostMapping {}

impl HostMapping {
    /// Host address of the mapping.
    pub fn addr(&self) -> *mut u8 {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maps `len` bytes with `backing`; `index` names the slot for memfd and file names.
    pub fn new(backing: &Backing, len: u64, index: usize) -> Result<Self, MemoryError> {
        let align = backing.alignment();
        if len == 0 || !len.is_multiple_of(align) {
            return Err(MemoryError::BadSize {
                size: len,
                backing: backing.to_string(),
                why: format!("must be a non-zero multiple of {} KiB", align / 1024),
            });
        }
        let ulen = usize::try_from(len).map_err(|_| MemoryError::TooLarge {
            requested: len >> 20,
            available: 0,
        })?;
        match backing {
            Backing::Anon => {
                let m = Self::anon(ulen, 0)?;
                // SAFETY: advising our own fresh mapping; MADV_NOHUGEPAGE changes no data.
                let rc = unsafe { libc::madvise(m.addr.cast(), ulen, libc::MADV_NOHUGEPAGE) };
                // Kernels built without THP reject the advice (EINVAL): their pages are 4 KiB
                // anyway, which is what was asked (the kernel selftests skip it there too).
                if rc != 0 && thp_configured() {
                    return Err(os("madvise(MADV_NOHUGEPAGE)"));
                }
                Ok(m)
            }
            Backing::Thp => {
                let m = Self::anon(ulen, 0)?;
                // SAFETY: advising our own fresh mapping; MADV_HUGEPAGE changes no data.
                let rc = unsafe { libc::madvise(m.addr.cast(), ulen, libc::MADV_HUGEPAGE) };
                if rc != 0 {
                    return Err(os("madvise(MADV_HUGEPAGE)"));
                }
                Ok(m)
            }
            Backing::HugeTlb => {
                let (total, free) = hugepage_counts();
                let needed = len / HUGE_2M;
                if free < needed {
                    return Err(MemoryError::NoHugePages {
                        needed,
                        free,
                        total,
                    });
                }
                Self::anon(ulen, libc::MAP_HUGETLB | (21 << libc::MAP_HUGE_SHIFT)).map_err(|_| {
                    MemoryError::NoHugePages {
                        needed,
                        free,
                        total,
                    }
                })
            }
            Backing::Mthp(_) => {
                backing.check_large_folios_on()?;
                let m = Self::anon(ulen, 0)?;
                m.advise_large_folios()?;
                Ok(m)
            }
            Backing::MemfdMthp(_) => {
                backing.check_large_folios_on()?;
                let file = new_memfd(index, len)?;
                let m = Self::shared_aligned(file, ulen)?;
                m.advise_large_folios()?;
                Ok(m)
            }
            Backing::Memfd => {
                let file = new_memfd(index, len)?;
                Self::shared(file, ulen)
            }
            Backing::File(path) => {
                let file = open_backing_file(path, len, index)?;
                Self::shared(file, ulen)
            }
        }
    }

    /// `MADV_DONTFORK`, as QEMU does for guest RAM: a `fork` anywhere in the process (a helper
    /// child, a library) neither copies guest memory nor write-protects the parent's private pages
    /// for copy-on-write, which would invalidate KVM's mappings of them through the MMU notifier
    /// (every page re-faulted, reads of pages the guest wrote before logged dirty again).
    fn exclude_from_fork(&self) -> Result<(), MemoryError> {
        // SAFETY: advising our own mapping; MADV_DONTFORK changes no data and no mapping of this
        // process.
        let rc = unsafe { libc::madvise(self.addr.cast(), self.len, libc::MADV_DONTFORK) };
        if rc != 0 {
            return Err(os("madvise(MADV_DONTFORK)"));
        }
        Ok(())
    }

    fn anon(len: usize, extra_flags: i32) -> Result<Self, MemoryError> {
        let align = HUGE_2M as usize;
        // Over-reserve so the mapping can start on a 2 MiB boundary (THP and huge SPTEs need it).
        let reserve = if extra_flags & libc::MAP_HUGETLB != 0 {
            len
        } else {
            len + align
        };
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choice.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | extra_flags,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(os("mmap(guest memory)"));
        }
        if reserve == len {
            let m = HostMapping {
                addr: raw.cast(),
                len,
                file: None,
            };
            m.exclude_from_fork()?;
            return Ok(m);
        }
        let start = (raw as usize).next_multiple_of(align);
        let head = start - raw as usize;
        let tail = reserve - head - len;
        // SAFETY: trimming the unused head and tail of the reservation we just made.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
        }
        let m = HostMapping {
            addr: start as *mut u8,
            len,
            file: None,
        };
        m.exclude_from_fork()?;
        Ok(m)
    }

    fn shared(file: File, len: usize) -> Result<Self, MemoryError> {
        Self::shared_at(file, 0, len)
    }

    /// `MADV_HUGEPAGE` on the whole mapping, then the VMA split of
    /// [`LargeFolio::split_granule`] that keeps 2 MiB folios out.
    fn advise_large_folios(&self) -> Result<(), MemoryError> {
        // SAFETY: advising our own fresh mapping; MADV_HUGEPAGE changes no data.
        let rc = unsafe { libc::madvise(self.addr.cast(), self.len, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            return Err(os("madvise(MADV_HUGEPAGE)"));
        }
        let granule = crate::large_folio::SPLIT_GRANULE as usize;
        for off in (granule..self.len).step_by(2 * granule) {
            let len = granule.min(self.len - off);
            // SAFETY: a sub-range of our own mapping; MADV_DONTDUMP only leaves it out of core
            // dumps.
            let rc = unsafe { libc::madvise(self.addr.add(off).cast(), len, libc::MADV_DONTDUMP) };
            if rc != 0 {
                return Err(os("madvise(MADV_DONTDUMP)"));
            }
        }
        Ok(())
    }

    /// Maps all of `file` shared at a 2 MiB-aligned address (large shmem folios need the
    /// address and the file offset aligned alike).
    fn shared_aligned(file: File, len: usize) -> Result<Self, MemoryError> {
        let align = HUGE_2M as usize;
        let reserve = len + align;
        // SAFETY: reserving address space at an address of the kernel's choice.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(os("mmap(address reservation)"));
        }
        let start = (raw as usize).next_multiple_of(align);
        // SAFETY: MAP_FIXED over the reservation we own; then trimming its unused head and tail.
        let mapped = unsafe {
            let m = libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.as_raw_fd(),
                0,
            );
            let head = start - raw as usize;
            if head > 0 {
                libc::munmap(raw, head);
            }
            let tail = reserve - head - len;
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
            m
        };
        if mapped == libc::MAP_FAILED {
            return Err(os("mmap(shared guest memory)"));
        }
        let m = HostMapping {
            addr: start as *mut u8,
            len,
            file: Some(file),
        };
        m.exclude_from_fork()?;
        Ok(m)
    }

    /// Maps `len` bytes of `file` from `offset`, shared (one slot of a multi-slot file backing).
    pub fn shared_at(file: File, offset: u64, len: usize) -> Result<Self, MemoryError> {
        // SAFETY: mapping `len` bytes at `offset` of a file we hold open and sized to cover them.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(os("mmap(shared guest memory)"));
        }
        let m = HostMapping {
            addr: raw.cast(),
            len,
            file: Some(file),
        };
        m.exclude_from_fork()?;
        Ok(m)
    }
}

impl Drop for HostMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this struct created; nothing refers to it after
        // the VM (which is dropped first) is gone.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

/// A new memfd of `len` bytes, named after slot `index`.
fn new_memfd(index: usize, len: u64) -> Result<File, MemoryError> {
    let name = format!("agelab-guest-{index}\0");
    // SAFETY: `name` is NUL-terminated; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr().cast(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(os("memfd_create"));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len).map_err(|err| MemoryError::Os {
        what: "ftruncate(memfd)",
        err,
    })?;
    Ok(file)
}

fn os(what: &'static str) -> MemoryError {
    MemoryError::Os {
        what,
        err: std::io::Error::last_os_error(),
    }
}

/// Opens (or creates inside a directory) the file behind a `file:PATH` backing, sized to `len`.
pub fn open_backing_file(path: &Path, len: u64, index: usize) -> Result<File, MemoryError> {
    let bad = |why: String| MemoryError::FileBacking {
        path: path.to_path_buf(),
        why,
    };
    if path.is_dir() {
        // Like QEMU's mem-path: a fresh file inside the directory, unlinked once mapped.
        let name = path.join(format!(".agelab-guest-{}-{index}", std::process::id()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&name)
            .map_err(|e| bad(format!("cannot create a file in this directory: {e}")))?;
        let _ = std::fs::remove_file(&name);
        f.set_len(len)
            .map_err(|e| bad(format!("cannot size it to {len} bytes: {e}")))?;
        return Ok(f);
    }
    if let Ok(m) = std::fs::metadata(path) {
        refuse_existing(&m).map_err(|e| bad(e.to_string()))?;
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| bad(format!("cannot open for read/write: {e}")))?;
    f.set_len(len)
        .map_err(|e| bad(format!("cannot size it to {len} bytes: {e}")))?;
    Ok(f)
}

/// Whether the kernel has transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE), as the kernel
/// selftests' `thp_configured()` decides it.
pub fn thp_configured() -> bool {
    Path::new("/sys/kernel/mm/transparent_hugepage").exists()
}

/// (total, free) 2 MiB huge pages on the host.
pub fn hugepage_counts() -> (u64, u64) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{f}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    (read("nr_hugepages"), read("free_hugepages"))
}

/// Bytes the host can still give (MemAvailable + SwapFree).
pub fn host_available_bytes() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    field("MemAvailable:") + field("SwapFree:")
}

/// One guest-physical region and its host mapping.
#[derive(Debug)]
pub struct SlotMapping {
    /// KVM slot number.
    pub slot: u32,
    /// Guest-physical base.
    pub gpa: u64,
    /// The host mapping.
    pub mapping: HostMapping,
    /// Backing kind.
    pub backing: BackingKind,
}

/// Registers host mappings, each at a guest-physical address, with vm-memory (the host's view of
/// guest memory). The mappings must outlive the returned collection.
pub fn guest_memory(regions: &[(u64, &HostMapping)]) -> Result<GuestMemoryMmap, MemoryError> {
    let mut out = Vec::with_capacity(regions.len());
    for &(gpa, m) in regions {
        let flags = if m.file.is_some() {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
        };
        // SAFETY: the mapping stays alive (owned by the VM, which drops the guest memory first)
        // and its protection and flags are the ones it was created with.
        let region = unsafe {
            MmapRegion::build_raw(m.addr(), m.len(), libc::PROT_READ | libc::PROT_WRITE, flags)
        }
        .map_err(|e| MemoryError::Layout(e.to_string()))?;
        let r = GuestRegionMmap::new(region, GuestAddress(gpa))
            .ok_or_else(|| MemoryError::Layout(format!("region at {gpa:#x} overflows")))?;
        out.push(r);
    }
    GuestMemoryMmap::from_regions(out).map_err(|e| MemoryError::Layout(e.to_string()))
}

#[cfg(test)]
mod tests;
