//! Idle page tracking: `/sys/kernel/mm/page_idle/bitmap`.
//!
//! PFN `i` is bit `i % 64` of u64 word `i / 64`. Writing 1s marks pages idle (clearing their young
//! bits through the rmap, which reaches KVM via the clear_young notifier); reading returns 1 for pages
//! still idle. I/O must be whole, 8-byte aligned words, so everything here is planned as sorted word
//! runs over the guest's PFNs (see [`pfn_runs`](super::pfn_runs)). Only a THP's head page carries
//! the flag, so tail pages are mapped to their head through kpageflags.

use super::kpageflags::{Kpageflags, KpageflagsError};
use super::pagemap::{pfns_of, Pagemap, PagemapError};
use super::pfn_runs::{plan_word_runs, sorted_unique, WordRun, MAX_RUN_WORDS, MERGE_GAP_WORDS};
use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
use agelab_vmm::{GuestPageMap, PageSet, PAGE_SIZE};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// The bitmap file.
pub const PAGE_IDLE_BITMAP: &str = "/sys/kernel/mm/page_idle/bitmap";

/// Errors from idle page tracking.
#[derive(Debug, thiserror::Error)]
pub enum PageIdleError {
    /// The kernel has no idle page tracking.
    #[error("kernel built without CONFIG_IDLE_PAGE_TRACKING ({PAGE_IDLE_BITMAP} missing)")]
    NotBuilt,
    /// Not permitted (root only).
    #[error("{PAGE_IDLE_BITMAP} and PFNs in pagemap need root (CAP_SYS_ADMIN)")]
    NotRoot,
    /// A bitmap read or write failed.
    #[error("{op} {words} bitmap words at PFN {first_pfn:#x}: {err}")]
    Bitmap {
        /// `read` or `write`.
        op: &'static str,
        /// First PFN of the run.
        first_pfn: u64,
        /// Words in the run.
        words: u64,
        /// Cause (EINVAL: misaligned; ENXIO: past max PFN).
        #[source]
        err: std::io::Error,
    },
    /// Opening the bitmap failed.
    #[error("opening {PAGE_IDLE_BITMAP}: {0}")]
    Open(#[source] std::io::Error),
    /// PFN lookup failed.
    #[error(transparent)]
    Pagemap(#[from] PagemapError),
    /// THP head lookup failed.
    #[error(transparent)]
    Kpageflags(#[from] KpageflagsError),
}

/// Why page_idle cannot be used here, if it cannot.
pub fn page_idle_unavailable() -> Option<PageIdleError> {
    if !Path::new(PAGE_IDLE_BITMAP).exists() {
        Some(PageIdleError::NotBuilt)
    } else if !super::is_root() {
        Some(PageIdleError::NotRoot)
    } else {
        None
    }
}

/// The open idle bitmap.
#[derive(Debug)]
pub struct PageIdleBitmap {
    file: File,
}

/// Bytes moved by bitmap operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoBytes {
    /// Bytes read.
    pub read: u64,
    /// Bytes written.
    pub written: u64,
}

impl PageIdleBitmap {
    /// Opens the bitmap for reading and writing.
    pub fn open() -> Result<Self, PageIdleError> {
        if let Some(e) = page_idle_unavailable() {
            return Err(e);
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(PAGE_IDLE_BITMAP)
            .map(|file| PageIdleBitmap { file })
            .map_err(PageIdleError::Open)
    }

    /// Wraps an already open bitmap-like file (tests use a plain file).
    pub fn from_file(file: File) -> Self {
        PageIdleBitmap { file }
    }

    /// Reads `run` of words.
    pub fn read_run(&self, run: WordRun) -> Result<Vec<u64>, PageIdleError> {
        let mut buf = vec![0u8; run.words as usize * 8];
        // The kernel stops at max_pfn rounded down to a whole word, so a run ending in the last,
        // partial word reads short; the frames it could not report stay 0 ("not idle", i.e.
        // reported accessed), which errs towards keeping pages young.
        let mut done = 0;
        while done < buf.len() {
            match self
                .file
                .read_at(&mut buf[done..], run.first_word * 8 + done as u64)
            {
                // Also a run starting in that partial word: nothing to read at all.
                Ok(0) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(PageIdleError::Bitmap {
                        op: "read",
                        first_pfn: run.first_pfn(),
                        words: run.words,
                        err,
                    })
                }
            }
        }
        Ok(buf
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8-byte chunk")))
            .collect())
    }

    /// Writes `words` starting at word `first_word` (1 bits mark pages idle, 0 bits do nothing).
    pub fn write_run(&self, first_word: u64, words: &[u64]) -> Result<(), PageIdleError> {
        let buf: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        self.file
            .write_all_at(&buf, first_word * 8)
            .map_err(|err| PageIdleError::Bitmap {
                op: "write",
                first_pfn: first_word * 64,
                words: words.len() as u64,
                err,
            })
    }

    /// Marks sorted, unique `pfns` idle.
    pub fn mark_idle(&self, sorted_pfns: &[u64]) -> Result<IoBytes, PageIdleError> {
        let mut io = IoBytes::default();
        let mut i = 0;
        for run in plan_word_runs(sorted_pfns, MERGE_GAP_WORDS, MAX_RUN_WORDS) {
            let mut words = vec![0u64; run.words as usize];
            while i < sorted_pfns.len() && sorted_pfns[i] < run.end_pfn() {
                let off = sorted_pfns[i] - run.first_pfn();
                words[(off / 64) as usize] |= 1 << (off % 64);
                i += 1;
            }
            self.write_run(run.first_word, &words)?;
            io.written += run.words * 8;
        }
        Ok(io)
    }

    /// Whether each of sorted, unique `pfns` is still idle.
    pub fn read_idle(&self, sorted_pfns: &[u64]) -> Result<(Vec<bool>, IoBytes), PageIdleError> {
        let mut io = IoBytes::default();
        let mut out = Vec::with_capacity(sorted_pfns.len());
        let mut i = 0;
        for run in plan_word_runs(sorted_pfns, MERGE_GAP_WORDS, MAX_RUN_WORDS) {
            let words = self.read_run(run)?;
            io.read += run.words * 8;
            while i < sorted_pfns.len() && sorted_pfns[i] < run.end_pfn() {
                let off = sorted_pfns[i] - run.first_pfn();
                out.push(words[(off / 64) as usize] & (1 << (off % 64)) != 0);
                i += 1;
            }
        }
        Ok((out, io))
    }
}

/// For each guest page, the PFN carrying its idle flag (THP head), or `None` when not present.
#[derive(Clone, Debug, Default)]
pub struct IdlePfns {
    /// Per guest page: flag-carrying PFN.
    pub per_page: Vec<Option<u64>>,
    /// Sorted, unique flag-carrying PFNs.
    pub sorted: Vec<u64>,
    /// Guest pages that are THP tails (mapped to their head).
    pub thp_tails: u64,
    /// Bytes read from pagemap and kpageflags.
    pub bytes_read: u64,
}

/// Resolves the flag-carrying PFN of every guest page.
pub fn idle_pfns(
    pagemap: &Pagemap,
    kpf: &Kpageflags,
    map: &GuestPageMap,
) -> Result<IdlePfns, PageIdleError> {
    let entries = pagemap.guest_entries(map)?;
    let pfns = pfns_of(map, &entries)?;
    let sorted = sorted_unique(pfns.iter().flatten().copied());
    let mut snap = kpf.snapshot(&sorted)?;
    let mut out = IdlePfns {
        per_page: Vec::with_capacity(pfns.len()),
        bytes_read: entries.len() as u64 * 8,
        ..Default::default()
    };
    for p in pfns {
        out.per_page.push(match p {
            Some(pfn) => {
                let head = kpf.head_of(&mut snap, pfn)?;
                if head != pfn {
                    out.thp_tails += 1;
                }
                Some(head)
            }
            None => None,
        });
    }
    out.sorted = sorted_unique(out.per_page.iter().flatten().copied());
    out.bytes_read += snap.bytes_read;
    Ok(out)
}

/// Idle page tracking as an access source: accessed = present and not idle since the last mark.
#[derive(Debug)]
pub struct PageIdleSource {
    map: GuestPageMap,
    state: Result<(PageIdleBitmap, Pagemap, Kpageflags), String>,
    armed: bool,
    last_thp_tails: u64,
}

impl PageIdleSource {
    /// A source over `map`'s pages (mapped in this process).
    pub fn new(map: GuestPageMap) -> Self {
        let state = (|| -> Result<_, PageIdleError> {
            Ok((
                PageIdleBitmap::open()?,
                Pagemap::open_self()?,
                Kpageflags::open()?,
            ))
        })()
        .map_err(|e| e.to_string());
        PageIdleSource {
            map,
            state,
            armed: false,
            last_thp_tails: 0,
        }
    }

    /// Marks every present guest page idle, so the first harvest reports only new accesses.
    pub fn arm(&mut self) -> Result<HarvestCost, HarvestError> {
        let (bitmap, pm, kpf) = self.parts()?;
        let t = Instant::now();
        let pfns = idle_pfns(pm, kpf, &self.map).map_err(err)?;
        let io = bitmap.mark_idle(&pfns.sorted).map_err(err)?;
        self.armed = true;
        Ok(HarvestCost {
            ns: t.elapsed().as_nanos() as u64,
            bytes_read: pfns.bytes_read,
            bytes_written: io.written,
        })
    }

    /// Guest pages that were THP tail pages in the last harvest (their state is the head's).
    pub fn last_thp_tails(&self) -> u64 {
        self.last_thp_tails
    }

    fn parts(&self) -> Result<(&PageIdleBitmap, &Pagemap, &Kpageflags), HarvestError> {
        match &self.state {
            Ok((b, p, k)) => Ok((b, p, k)),
            Err(reason) => Err(HarvestError::Unavailable {
                source_name: "page_idle".into(),
                reason: reason.clone(),
            }),
        }
    }
}

fn err(e: PageIdleError) -> HarvestError {
    HarvestError::Other {
        source_name: "page_idle".into(),
        message: e.to_string(),
    }
}

impl AccessSource for PageIdleSource {
    fn name(&self) -> &str {
        "page_idle"
    }
    fn observes(&self) -> Observes {
        Observes::Both
    }
    fn granularity(&self) -> u64 {
        PAGE_SIZE
    }
    fn available(&self) -> Result<(), Unavailable> {
        match &self.state {
            Ok(_) => Ok(()),
            Err(reason) => Err(Unavailable(reason.clone())),
        }
    }

    /// Reads the idle bits of the guest pages' PFNs (accessed = not idle), then marks them all
    /// idle again. Without a prior [`arm`](PageIdleSource::arm) every present page reads accessed.
    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        let (bitmap, pm, kpf) = self.parts()?;
        let t = Instant::now();
        let pfns = idle_pfns(pm, kpf, &self.map).map_err(err)?;
        let (idle, rio) = bitmap.read_idle(&pfns.sorted).map_err(err)?;
        let mut accessed = PageSet::new(self.map.len());
        for (i, p) in pfns.per_page.iter().enumerate() {
            if let Some(pfn) = p {
                // `sorted` holds every head exactly once, so the lookup always succeeds.
                let k = pfns.sorted.binary_search(pfn).expect("head PFN planned");
                if !idle[k] {
                    accessed.insert(i as u64);
                }
            }
        }
        let wio = bitmap.mark_idle(&pfns.sorted).map_err(err)?;
        self.armed = true;
        self.last_thp_tails = pfns.thp_tails;
        Ok(Harvest {
            accessed,
            observed: None,
            cost: HarvestCost {
                ns: t.elapsed().as_nanos() as u64,
                bytes_read: pfns.bytes_read + rio.read,
                bytes_written: wio.written,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a plain file writes overwrite instead of OR-ing, which is enough to check word/bit
    /// placement and the batching: the kernel treats the 0 bits in merged gaps as no-ops.
    #[test]
    fn mark_then_read_places_bits_by_pfn() {
        let path = std::env::temp_dir().join(format!("agelab-idle-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(64 * 1024).unwrap();
        let b = PageIdleBitmap::from_file(file);
        let marked = [3u64, 64, 65, 127, 4000, 40_000];
        let io = b.mark_idle(&marked).unwrap();
        let query = [2u64, 3, 64, 65, 66, 127, 4000, 40_000, 40_001];
        let (idle, rio) = b.read_idle(&query).unwrap();
        assert_eq!(
            idle,
            vec![false, true, true, true, false, true, true, true, false]
        );
        // Words 0-1 form one run; word 62 (PFN 4000) and word 625 (PFN 40000) are too far away
        // (more than 16 words) to merge: 2 + 1 + 1 words written.
        assert_eq!(io.written, 4 * 8);
        assert!(rio.read >= io.written);
        std::fs::remove_file(path).unwrap();
    }
}
