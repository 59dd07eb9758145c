//! Idle page tracking: `/sys/kernel/mm/page_idle/bitmap`.
//!
//! PFN `i` is bit `i % 64` of u64 word `i / 64`. Writing 1s marks pages idle (clearing their young
//! bits through the rmap, which reaches KVM via the clear_young notifier); reading returns 1 for pages
//! still idle. I/O must be whole, 8-byte aligned words, so everything here is planned as sorted word
//! runs over the guest's PFNs (see [`pfn_runs`](super::pfn_runs)). Only a THP's head page carries
//! the flag, so tail pages are mapped to their head through kpageflags.
//!
//! The bitmap ends at max_pfn: the kernel transfers whole words below it, processes (but does not
//! count) the partial word holding max_pfn, returns 0 from there on (reads; writes fail with
//! ENXIO past it) and caps each transfer at a page. So reads and writes alike loop over short
//! transfers and stop where the kernel stops; the end found that way is remembered, and transfers
//! are shortened to it beforehand. A bitmap-shaped plain file (its length = where the bitmap
//! ends) gets the same treatment, which is how the arithmetic is tested on hosts without
//! page_idle.

use super::kpageflags::{Kpageflags, KpageflagsError};
use super::pagemap::{pfns_of, Pagemap, PagemapError};
use super::pfn_runs::{plan_word_runs, sorted_unique, WordRun, MAX_RUN_WORDS, MERGE_GAP_WORDS};
use agelab_vmm::GuestPageMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Byte offset where the bitmap ends (whole words below max_pfn), as far as known:
    /// `u64::MAX` until the kernel has shown it.
    end: AtomicU64,
}

/// Bytes moved by bitmap operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoBytes {
    /// Bytes read.
    pub read: u64,
    /// Bytes written.
    pub written: u64,
}

/// The part of a transfer of `len` bytes at byte `offset` that lies before `end`, the bitmap's
/// end: nothing when the transfer starts at or past it.
pub fn clamp_to_end(offset: u64, len: u64, end: u64) -> u64 {
    len.min(end.saturating_sub(offset))
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
            .map(|file| PageIdleBitmap {
                file,
                end: AtomicU64::new(u64::MAX),
            })
            .map_err(PageIdleError::Open)
    }

    /// Wraps an already open bitmap-shaped plain file: it ends where the file does, as the
    /// kernel's bitmap ends at max_pfn (tests; the kernel's file reports length 0 = unknown).
    pub fn from_file(file: File) -> Self {
        let end = match file.metadata().map(|m| m.len()) {
            Ok(len) if len > 0 => len,
            _ => u64::MAX,
        };
        PageIdleBitmap {
            file,
            end: AtomicU64::new(end),
        }
    }

    /// Where the bitmap ends, in bytes, when known.
    pub fn end(&self) -> Option<u64> {
        Some(self.end.load(Ordering::Relaxed)).filter(|&e| e != u64::MAX)
    }

    /// Moves up to `len` bytes at byte `offset` with `io(offset, done..len)` until done, the
    /// bitmap's end is reached (a transfer of 0 bytes, or ENXIO), or an error; returns the bytes
    /// moved. Past the end nothing is transferred: those frames do not exist.
    fn transfer(
        &self,
        op: &'static str,
        run: WordRun,
        len: u64,
        mut io: impl FnMut(u64, std::ops::Range<usize>) -> std::io::Result<usize>,
    ) -> Result<u64, PageIdleError> {
        let offset = run.first_word * 8;
        let len = clamp_to_end(offset, len, self.end.load(Ordering::Relaxed));
        let mut done = 0u64;
        while done < len {
            match io(offset + done, done as usize..len as usize) {
                Ok(0) => {
                    self.end.fetch_min(offset + done, Ordering::Relaxed);
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    self.end.fetch_min(offset + done, Ordering::Relaxed);
                    break;
                }
                Ok(n) => done += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(PageIdleError::Bitmap {
                        op,
                        first_pfn: run.first_pfn(),
                        words: run.words,
                        err,
                    })
                }
            }
        }
        Ok(done)
    }

    /// Reads `run` of words. Words at or past the bitmap's end (max_pfn rounded down to a whole
    /// word) read 0, "not idle", i.e. reported accessed, which errs towards keeping pages young.
    pub fn read_run(&self, run: WordRun) -> Result<Vec<u64>, PageIdleError> {
        let mut buf = vec![0u8; run.words as usize * 8];
        let len = buf.len() as u64;
        self.transfer("read", run, len, |off, r| {
            self.file.read_at(&mut buf[r], off)
        })?;
        Ok(buf
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8-byte chunk")))
            .collect())
    }

    /// Writes `words` starting at word `first_word` (1 bits mark pages idle, 0 bits do nothing).
    /// The part past the bitmap's end is not written: those frames do not exist.
    pub fn write_run(&self, first_word: u64, words: &[u64]) -> Result<(), PageIdleError> {
        let buf: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let run = WordRun {
            first_word,
            words: words.len() as u64,
        };
        self.transfer("write", run, buf.len() as u64, |off, r| {
            self.file.write_at(&buf[r], off)
        })?;
        Ok(())
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

impl IdlePfns {
    /// Per guest page: `Some(true)` when its flag-carrying PFN is idle in `idle` (one entry per
    /// [`sorted`](IdlePfns::sorted) PFN, as [`PageIdleBitmap::read_idle`] returns),
    /// `Some(false)` when accessed, `None` when not present.
    pub fn per_page_idle<'a>(
        &'a self,
        idle: &'a [bool],
    ) -> impl Iterator<Item = Option<bool>> + 'a {
        self.per_page.iter().map(move |p| {
            p.map(|pfn| {
                let k = self.sorted.partition_point(|&x| x < pfn);
                idle.get(k).copied().unwrap_or(false)
            })
        })
    }
}

/// The files idle page tracking of guest memory needs: the bitmap, this process's pagemap (guest
/// page to PFN) and kpageflags (THP tail to head).
#[derive(Debug)]
pub struct GuestIdleFiles {
    /// The idle bitmap.
    pub bitmap: PageIdleBitmap,
    /// `/proc/self/pagemap`.
    pub pagemap: Pagemap,
    /// `/proc/kpageflags`.
    pub kpageflags: Kpageflags,
}

impl GuestIdleFiles {
    /// Opens the bitmap (root only), this process's pagemap and kpageflags.
    pub fn open() -> Result<Self, PageIdleError> {
        Ok(GuestIdleFiles {
            bitmap: PageIdleBitmap::open()?,
            pagemap: Pagemap::open_self()?,
            kpageflags: Kpageflags::open()?,
        })
    }

    /// The flag-carrying PFN of every page of `map` (mapped in this process).
    pub fn pfns(&self, map: &GuestPageMap) -> Result<IdlePfns, PageIdleError> {
        idle_pfns(&self.pagemap, &self.kpageflags, map)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// On a plain file writes overwrite instead of OR-ing, which is enough to check word/bit
    /// placement and the batching: the kernel treats the 0 bits in merged gaps as no-ops.
    #[test]
    fn mark_then_read_places_bits_by_pfn() {
        let (path, file) = bitmap_file("placement", 64 * 1024);
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

    fn bitmap_file(tag: &str, bytes: u64) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!("agelab-idle-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.set_len(bytes).unwrap();
        (path, file)
    }

    #[test]
    fn clamping_stops_at_the_end() {
        assert_eq!(clamp_to_end(0, 64, 800), 64);
        assert_eq!(clamp_to_end(744, 64, 800), 56);
        assert_eq!(clamp_to_end(800, 64, 800), 0);
        assert_eq!(clamp_to_end(872, 64, 800), 0);
        assert_eq!(clamp_to_end(0, 64, u64::MAX), 64);
    }

    /// A bitmap ending at max_pfn = 6417 holds 100 whole words (800 bytes): PFNs 6400..6417 lie
    /// in the partial word the kernel never reports. A run of words 93..101 reaches past it and a
    /// run at word 140 (PFN 9000) starts past it: writes are shortened to the end (the file does not grow,
    /// where `write_all_at` would have written past max_pfn), and reads report the frames there
    /// as not idle.
    #[test]
    fn writes_and_reads_stop_at_max_pfn() {
        const MAX_PFN: u64 = 6417;
        let end = MAX_PFN / 64 * 8;
        let (path, file) = bitmap_file("maxpfn", end);
        let b = PageIdleBitmap::from_file(file);
        assert_eq!(b.end(), Some(end));
        let marked = [6000u64, 6399, 6400, 6410, 9000];
        let io = b.mark_idle(&marked).unwrap();
        assert_eq!(io.written, (8 + 1) * 8, "words 93..101 and 140 planned");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            end,
            "nothing written past max_pfn"
        );
        let (idle, _) = b.read_idle(&[5999, 6000, 6399, 6400, 6410, 9000]).unwrap();
        assert_eq!(idle, vec![false, true, true, false, false, false]);
        // Words written up to the end: word 99 holds PFN 6399 (bit 63).
        assert_eq!(
            b.read_run(WordRun {
                first_word: 99,
                words: 2
            })
            .unwrap(),
            vec![1 << 63, 0]
        );
        std::fs::remove_file(path).unwrap();
    }

    /// On a kernel with page_idle: find where the bitmap ends (reads past it return 0 bytes),
    /// then mark a run that straddles it and one past it, and read them back.
    #[test]
    fn real_bitmap_marks_across_max_pfn() {
        let b = match PageIdleBitmap::open() {
            Ok(b) => b,
            Err(e) => return eprintln!("SKIP real_bitmap_marks_across_max_pfn: {e}"),
        };
        // Binary search for the first word that reads 0 bytes: max_pfn / 64.
        let (mut lo, mut hi) = (0u64, 1u64 << 40);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let mut w = [0u8; 8];
            match b.file.read_at(&mut w, mid * 8) {
                Ok(8) => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let end_word = lo;
        assert!(end_word > 2, "a bitmap of {end_word} words");
        let pfns = [
            (end_word - 2) * 64,
            end_word * 64,
            end_word * 64 + 63,
            (end_word + 40) * 64,
        ];
        b.mark_idle(&pfns).unwrap();
        assert_eq!(b.end(), Some(end_word * 8));
        let (idle, _) = b.read_idle(&pfns).unwrap();
        assert!(
            !idle[1] && !idle[2] && !idle[3],
            "past the end reads not idle: {idle:?}"
        );
    }
}
