//! `/proc/kpageflags`: per-PFN page flags, used to find the head page of a THP.

use super::pfn_runs::{plan_word_runs, WordRun, MERGE_GAP_WORDS};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Compound head page.
pub const KPF_COMPOUND_HEAD: u64 = 1 << 15;
/// Compound tail page.
pub const KPF_COMPOUND_TAIL: u64 = 1 << 16;
/// HugeTLB page.
pub const KPF_HUGE: u64 = 1 << 17;
/// Transparent huge page (head or tail).
pub const KPF_THP: u64 = 1 << 22;

/// Largest folio order searched for a head page (PUD-sized, 1 GiB).
const MAX_ORDER_SEARCHED: u32 = 18;

/// Errors from kpageflags.
#[derive(Debug, thiserror::Error)]
pub enum KpageflagsError {
    /// Opening or reading `/proc/kpageflags` failed.
    #[error("/proc/kpageflags: {what}: {err}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
}

/// Open `/proc/kpageflags` (root only).
#[derive(Debug)]
pub struct Kpageflags {
    file: File,
}

/// Flags of a set of PFNs, read in runs.
#[derive(Debug, Default)]
pub struct FlagsSnapshot {
    runs: Vec<(WordRun, Vec<u64>)>,
    extra: HashMap<u64, u64>,
    /// Bytes read to build it.
    pub bytes_read: u64,
}

impl Kpageflags {
    /// Opens `/proc/kpageflags`.
    pub fn open() -> Result<Self, KpageflagsError> {
        File::open("/proc/kpageflags")
            .map(|file| Kpageflags { file })
            .map_err(|err| KpageflagsError::Io {
                what: "open".into(),
                err,
            })
    }

    fn read_range(&self, first_pfn: u64, n: usize) -> Result<Vec<u64>, KpageflagsError> {
        let mut buf = vec![0u8; n * 8];
        let got = read_full_or_eof(&self.file, &mut buf, first_pfn * 8).map_err(|err| {
            KpageflagsError::Io {
                what: format!("read {n} PFNs from {first_pfn:#x}"),
                err,
            }
        })?;
        // Past max_pfn the file ends: those PFNs have no flags.
        buf[got..].fill(0);
        Ok(buf
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8-byte chunk")))
            .collect())
    }

    /// Reads the flags of sorted, unique `pfns`.
    pub fn snapshot(&self, sorted_pfns: &[u64]) -> Result<FlagsSnapshot, KpageflagsError> {
        // Runs are planned in 64-PFN words to share the planner; 1 MiB of flags per read at most.
        let runs = plan_word_runs(sorted_pfns, MERGE_GAP_WORDS, 2048);
        let mut snap = FlagsSnapshot::default();
        for r in runs {
            let flags = self.read_range(r.first_pfn(), (r.words * 64) as usize)?;
            snap.bytes_read += flags.len() as u64 * 8;
            snap.runs.push((r, flags));
        }
        Ok(snap)
    }

    /// Flags of `pfn` from the snapshot, reading it on a miss.
    pub fn flags(&self, snap: &mut FlagsSnapshot, pfn: u64) -> Result<u64, KpageflagsError> {
        let i = snap.runs.partition_point(|(r, _)| r.end_pfn() <= pfn);
        if let Some((r, f)) = snap.runs.get(i) {
            if pfn >= r.first_pfn() {
                return Ok(f[(pfn - r.first_pfn()) as usize]);
            }
        }
        if let Some(&f) = snap.extra.get(&pfn) {
            return Ok(f);
        }
        let f = self.read_range(pfn, 1)?[0];
        snap.bytes_read += 8;
        snap.extra.insert(pfn, f);
        Ok(f)
    }

    /// The PFN carrying the page_idle flag for `pfn`: its compound head for THP tail pages
    /// (folios are naturally aligned, so the head is `pfn` rounded down to some power of two).
    pub fn head_of(&self, snap: &mut FlagsSnapshot, pfn: u64) -> Result<u64, KpageflagsError> {
        let f = self.flags(snap, pfn)?;
        if f & KPF_COMPOUND_TAIL == 0 {
            return Ok(pfn);
        }
        for order in 1..=MAX_ORDER_SEARCHED {
            let cand = pfn & !((1u64 << order) - 1);
            if self.flags(snap, cand)? & KPF_COMPOUND_HEAD != 0 {
                return Ok(cand);
            }
        }
        Ok(pfn)
    }
}

/// `pread` until `buf` is full or the file ends; returns bytes read.
pub(crate) fn read_full_or_eof(file: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
