//! `/proc/<pid>/pagemap`: one u64 per virtual page, read in large batched `pread`s.
//!
//! Pagemap has no accessed bit; it gives residency (present/swapped), the PFN that page_idle and
//! kpageflags are indexed by, and the soft-dirty / uffd-wp bits.

use agelab_vmm::{GuestPageMap, PageSet, PAGE_SIZE};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Entries per `pread`: 512 KiB of pagemap covers 256 MiB of address space per call, large enough
/// that syscall overhead vanishes and small enough to keep the buffer in cache.
const BATCH_ENTRIES: usize = 64 * 1024;

/// Errors from pagemap.
#[derive(Debug, thiserror::Error)]
pub enum PagemapError {
    /// The pagemap file could not be opened.
    #[error("opening {path}: {err}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// A read failed.
    #[error("reading {path} at virtual address {hva:#x} ({pages} pages): {err}")]
    Read {
        /// The file.
        path: PathBuf,
        /// First virtual address of the failed batch.
        hva: u64,
        /// Pages in the failed batch.
        pages: usize,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// Present pages read with PFN 0: the kernel hides PFNs from processes without CAP_SYS_ADMIN.
    #[error("pagemap hides PFNs (present page at {hva:#x} reads PFN 0): needs CAP_SYS_ADMIN")]
    PfnHidden {
        /// The first such page.
        hva: u64,
    },
}

/// One decoded pagemap entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagemapEntry(pub u64);

impl PagemapEntry {
    const PFN_MASK: u64 = (1 << 55) - 1;

    /// Bits 0–54: the page frame number when present (0 if hidden from unprivileged readers).
    pub fn pfn(self) -> Option<u64> {
        self.present().then_some(self.0 & Self::PFN_MASK)
    }
    /// Bit 55: soft-dirty (written since the last `clear_refs` 4).
    pub fn soft_dirty(self) -> bool {
        self.0 & (1 << 55) != 0
    }
    /// Bit 56: page mapped exclusively by this process.
    pub fn exclusive(self) -> bool {
        self.0 & (1 << 56) != 0
    }
    /// Bit 57: the PTE is uffd write-protected.
    pub fn uffd_wp(self) -> bool {
        self.0 & (1 << 57) != 0
    }
    /// Bit 58: guard region (6.15+).
    pub fn guard(self) -> bool {
        self.0 & (1 << 58) != 0
    }
    /// Bit 61: file page or shared anonymous (shmem) page.
    pub fn file_or_shared(self) -> bool {
        self.0 & (1 << 61) != 0
    }
    /// Bit 62: swapped out.
    pub fn swapped(self) -> bool {
        self.0 & (1 << 62) != 0
    }
    /// Bit 63: present in RAM.
    pub fn present(self) -> bool {
        self.0 & (1 << 63) != 0
    }
}

/// An open pagemap file.
#[derive(Debug)]
pub struct Pagemap {
    file: File,
    path: PathBuf,
}

impl Pagemap {
    /// Opens this process's pagemap.
    pub fn open_self() -> Result<Self, PagemapError> {
        Self::open_path("/proc/self/pagemap".into())
    }

    /// Opens another process's pagemap (needs ptrace access to it).
    pub fn open_pid(pid: i32) -> Result<Self, PagemapError> {
        Self::open_path(format!("/proc/{pid}/pagemap").into())
    }

    fn open_path(path: PathBuf) -> Result<Self, PagemapError> {
        let file = File::open(&path).map_err(|err| PagemapError::Open {
            path: path.clone(),
            err,
        })?;
        Ok(Pagemap { file, path })
    }

    /// The underlying file (PAGEMAP_SCAN is an ioctl on it).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads the entries of `out.len()` pages starting at page-aligned `hva`; returns bytes read.
    pub fn read_into(&self, hva: u64, out: &mut [PagemapEntry]) -> Result<u64, PagemapError> {
        let mut buf = vec![0u8; BATCH_ENTRIES.min(out.len()) * 8];
        let mut done = 0usize;
        while done < out.len() {
            let n = (out.len() - done).min(BATCH_ENTRIES);
            let va = hva + done as u64 * PAGE_SIZE;
            let bytes = &mut buf[..n * 8];
            self.file
                .read_exact_at(bytes, va / PAGE_SIZE * 8)
                .map_err(|err| PagemapError::Read {
                    path: self.path.clone(),
                    hva: va,
                    pages: n,
                    err,
                })?;
            for (o, c) in out[done..done + n].iter_mut().zip(bytes.chunks_exact(8)) {
                *o = PagemapEntry(u64::from_ne_bytes(c.try_into().expect("8-byte chunk")));
            }
            done += n;
        }
        Ok(out.len() as u64 * 8)
    }

    /// Entries of `pages` pages starting at `hva`.
    pub fn read(&self, hva: u64, pages: usize) -> Result<Vec<PagemapEntry>, PagemapError> {
        let mut out = vec![PagemapEntry::default(); pages];
        self.read_into(hva, &mut out)?;
        Ok(out)
    }

    /// The entry of every guest page, in dense page order.
    pub fn guest_entries(&self, map: &GuestPageMap) -> Result<Vec<PagemapEntry>, PagemapError> {
        let mut out = vec![PagemapEntry::default(); usize::try_from(map.len()).unwrap_or(0)];
        for r in map.ranges() {
            let first = r.first_page as usize;
            self.read_into(r.hva, &mut out[first..first + r.pages as usize])?;
        }
        Ok(out)
    }

    /// PFN of every guest page (`None` when not present), failing if PFNs are hidden.
    pub fn guest_pfns(&self, map: &GuestPageMap) -> Result<Vec<Option<u64>>, PagemapError> {
        let entries = self.guest_entries(map)?;
        pfns_of(map, &entries)
    }
}

/// PFNs of decoded entries (dense guest order), failing if a present page reads PFN 0.
pub fn pfns_of(
    map: &GuestPageMap,
    entries: &[PagemapEntry],
) -> Result<Vec<Option<u64>>, PagemapError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| match e.pfn() {
            Some(0) => Err(PagemapError::PfnHidden {
                hva: map.page(i as u64).map_or(0, |p| p.hva),
            }),
            other => Ok(other),
        })
        .collect()
}

/// Residency of the guest pages at one instant.
#[derive(Clone, Debug)]
pub struct Residency {
    /// Pages present in RAM.
    pub present: PageSet,
    /// Pages swapped out.
    pub swapped: PageSet,
}

impl Residency {
    /// Splits decoded entries into present and swapped sets.
    pub fn from_entries(entries: &[PagemapEntry]) -> Self {
        let n = entries.len() as u64;
        let mut present = PageSet::new(n);
        let mut swapped = PageSet::new(n);
        for (i, e) in entries.iter().enumerate() {
            if e.present() {
                present.insert(i as u64);
            } else if e.swapped() {
                swapped.insert(i as u64);
            }
        }
        Residency { present, swapped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bits() {
        let e = PagemapEntry((1 << 63) | (1 << 61) | (1 << 57) | (1 << 56) | (1 << 55) | 0x1234);
        assert_eq!(e.pfn(), Some(0x1234));
        assert!(
            e.present() && e.file_or_shared() && e.uffd_wp() && e.exclusive() && e.soft_dirty()
        );
        assert!(!e.swapped() && !e.guard());
        let s = PagemapEntry(1 << 62 | 0x55);
        assert_eq!(s.pfn(), None);
        assert!(s.swapped());
    }
}
