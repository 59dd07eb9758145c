//! Machinery of `test_young_preserves_test`: khugepaged as a test_young caller over guest memory
//! it must not collapse. The guest's 4 KiB pages are laid out in 2 MiB chunks per vCPU region
//! whose last page is a lazyfree guard ([`Layout`]); khugepaged's knobs, counters and pid; the
//! guards' census; its `kvm_test_age_hva` events tallied against the layout.

use super::fail;
use crate::ktap::OrFail;
use agelab_mglru::kernel::kpageflags::{Kpageflags, KpageflagsError};
use agelab_mglru::kernel::pagemap::{Pagemap, PagemapError};
use agelab_vmm::{GuestPageMap, PAGE_SIZE};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// 4 KiB pages per PMD (2 MiB) range.
pub const PMD_PAGES: u64 = 512;
/// Bytes per PMD range.
pub const PMD_BYTES: u64 = PMD_PAGES * PAGE_SIZE;

/// The guard census could not read the page flags.
#[derive(Debug, thiserror::Error)]
pub enum GuardCensusError {
    /// `/proc/self/pagemap`.
    #[error(transparent)]
    Pagemap(#[from] PagemapError),
    /// `/proc/kpageflags`.
    #[error(transparent)]
    Kpageflags(#[from] KpageflagsError),
}

/// THP's sysfs directory.
pub const THP_DIR: &str = "/sys/kernel/mm/transparent_hugepage";

/// kpageflags bits (`include/uapi/linux/kernel-page-flags.h`) of a lazyfree folio: anonymous
/// and no longer swap-backed.
/// `KPF_ANON`.
pub const KPF_ANON: u64 = 1 << 12;
/// `KPF_SWAPBACKED`.
pub const KPF_SWAPBACKED: u64 = 1 << 14;

/// The page classes of every vCPU's region, in 2 MiB chunks of its region (chunk-relative
/// numbering is the same in every region: regions are whole chunks and start 2 MiB aligned in
/// host memory, checked at run time).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// 2 MiB chunks per vCPU region.
    pub chunks: u64,
    /// vCPUs.
    pub vcpus: u64,
}

/// A set of guest pages: chunks `[first, first + n)` of every region, guard pages excluded.
#[derive(Clone, Copy, Debug)]
pub struct ChunkSet {
    /// First chunk of the set in each region.
    pub first: u64,
    /// Chunks in the set.
    pub n: u64,
}

impl Layout {
    /// Set A: the first quarter of the chunks.
    pub fn set_a(&self) -> ChunkSet {
        ChunkSet {
            first: 0,
            n: self.chunks / 4,
        }
    }

    /// The control set C: the second quarter.
    pub fn set_c(&self) -> ChunkSet {
        ChunkSet {
            first: self.chunks / 4,
            n: self.chunks / 4,
        }
    }

    /// The rest of the chunks.
    pub fn rest(&self) -> ChunkSet {
        let first = 2 * (self.chunks / 4);
        ChunkSet {
            first,
            n: self.chunks - first,
        }
    }

    /// Pages of `set` over all regions.
    pub fn pages(&self, set: ChunkSet) -> u64 {
        set.n * (PMD_PAGES - 1) * self.vcpus
    }

    /// The set a dense page index belongs to: `Some(true)` for a page of `set`, `Some(false)`
    /// for another non-guard page, `None` for a guard.
    pub fn in_set(&self, index: u64, set: ChunkSet) -> Option<bool> {
        let rel = index % (self.chunks * PMD_PAGES);
        if rel % PMD_PAGES == PMD_PAGES - 1 {
            return None;
        }
        let chunk = rel / PMD_PAGES;
        Some(chunk >= set.first && chunk < set.first + set.n)
    }

    /// Dense indices of every guard page (the last page of each chunk of each region).
    pub fn guards(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.vcpus * self.chunks).map(|c| c * PMD_PAGES + PMD_PAGES - 1)
    }
}

/// Reads one of khugepaged's counters (`full_scans`, `pages_collapsed`).
pub fn khugepaged_counter(name: &str) -> u64 {
    let path = Path::new(THP_DIR).join("khugepaged").join(name);
    std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e}", path.display()))
        .and_then(|s| {
            s.trim()
                .parse()
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .or_fail()
}

/// The selected word of a THP choice knob (`always [madvise] never` → `madvise`).
pub fn selected(path: &Path) -> String {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))
        .or_fail();
    agelab_mglru::journal::knobs::restorable_value(&text)
}

/// khugepaged's pid (`None` while the kernel thread does not run).
pub fn khugepaged_pid() -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "khugepaged").then_some(pid)
    })
}

/// Advises `len` bytes at `hva` of this process's guest memory.
pub fn advise(hva: u64, len: u64, advice: libc::c_int, what: &str) {
    // SAFETY: `hva..hva + len` lies in guest memory this process mapped and keeps mapped for the
    // VM's life; MADV_FREE and MADV_(NO)HUGEPAGE change no mapping, only how the kernel may
    // reclaim or collapse the pages (the guest never touches the MADV_FREE'd guard pages again).
    let rc = unsafe { libc::madvise(hva as *mut libc::c_void, len as usize, advice) };
    if rc != 0 {
        fail(&format!(
            "madvise({what}) at {hva:#x}+{len:#x}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

/// Advises all of guest memory.
pub fn advise_all(map: &GuestPageMap, advice: libc::c_int, what: &str) {
    for r in map.ranges() {
        advise(r.hva, r.pages * PAGE_SIZE, advice, what);
    }
}

/// The guard pages' kpageflags: how many are present and lazyfree (anonymous, not swap-backed).
pub fn lazyfree_guards(
    map: &GuestPageMap,
    layout: &Layout,
) -> Result<(u64, u64), GuardCensusError> {
    let pagemap = Pagemap::open_self()?;
    let pfns = pagemap.guest_pfns(map)?;
    let kpf = Kpageflags::open()?;
    let mut guard_pfns: Vec<u64> = layout
        .guards()
        .filter_map(|i| pfns.get(i as usize).copied().flatten())
        .collect();
    guard_pfns.sort_unstable();
    let mut snap = kpf.snapshot(&guard_pfns)?;
    let mut lazy = 0;
    for &pfn in &guard_pfns {
        let f = kpf.flags(&mut snap, pfn)?;
        if f & KPF_ANON != 0 && f & KPF_SWAPBACKED == 0 {
            lazy += 1;
        }
    }
    Ok((guard_pfns.len() as u64, lazy))
}

/// What khugepaged asked KVM while the test waited for its full scans.
#[derive(Debug, Default)]
pub struct TestYoungCalls {
    /// kvm_test_age_hva events of khugepaged.
    pub events: u64,
    /// Of those, about guest memory.
    pub in_guest: u64,
    /// Distinct guest pages asked about.
    pub guest_pages: u64,
    /// Distinct pages of set A asked about.
    pub set_a_pages: u64,
}

/// Longest pause inside one khugepaged wake-up's burst of questions (the test makes it sleep
/// 100 ms between wake-ups).
pub const BURST_GAP: Duration = Duration::from_millis(50);

/// Sizes of the bursts of `kvm_test_age_hva` events in a trace, split where the trace clock
/// (`... 12.345678: kvm_test_age_hva: ...`) jumps by more than [`BURST_GAP`].
pub fn bursts(trace: &str) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut last: Option<f64> = None;
    for line in trace.lines() {
        let Some((head, _)) = line.split_once(" kvm_test_age_hva: ") else {
            continue;
        };
        let Some(t) = head
            .split_whitespace()
            .last()
            .and_then(|w| w.trim_end_matches(':').parse::<f64>().ok())
        else {
            continue;
        };
        match (last, sizes.last_mut()) {
            (Some(prev), Some(n)) if t - prev <= BURST_GAP.as_secs_f64() => *n += 1,
            _ => sizes.push(1),
        }
        last = Some(t);
    }
    sizes
}

/// Counts khugepaged's `kvm_test_age_hva` addresses: in guest memory, distinct pages, pages of
/// set A.
pub fn tally(hvas: &[u64], map: &GuestPageMap, layout: &Layout) -> TestYoungCalls {
    let mut calls = TestYoungCalls {
        events: hvas.len() as u64,
        ..Default::default()
    };
    let mut pages = HashSet::new();
    for &hva in hvas {
        if let Some(i) = map.index_of_hva(hva) {
            calls.in_guest += 1;
            pages.insert(i);
        }
    }
    calls.guest_pages = pages.len() as u64;
    calls.set_a_pages = pages
        .iter()
        .filter(|&&i| layout.in_set(i, layout.set_a()) == Some(true))
        .count() as u64;
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_skip_the_guard_of_every_chunk_of_every_region() {
        let l = Layout {
            chunks: 8,
            vcpus: 2,
        };
        let a = l.set_a();
        assert_eq!(l.pages(a), 2 * 511 * 2);
        assert_eq!(l.in_set(0, a), Some(true));
        assert_eq!(l.in_set(511, a), None);
        assert_eq!(l.in_set(2 * 512, a), Some(false));
        // Region 1 starts at page 8 * 512: its chunk 0 is in A too.
        assert_eq!(l.in_set(8 * 512 + 3, a), Some(true));
        assert_eq!(l.guards().count(), 16);
        assert!(l.guards().all(|g| l.in_set(g, a).is_none()));
        assert_eq!(
            l.pages(l.set_c()) + l.pages(l.rest()) + l.pages(a),
            16 * 511
        );
    }

    #[test]
    fn bursts_split_where_the_trace_clock_jumps() {
        let line = |t: f64| {
            format!(
                " khugepaged-29 [001] ..... {t:.6}: kvm_test_age_hva: mmu notifier test age hva: 0x7f0000000000\n"
            )
        };
        let trace: String = [0.0, 0.001, 0.002, 0.2, 0.201, 0.5]
            .iter()
            .map(|&t| line(t))
            .collect();
        assert_eq!(bursts(&trace), vec![3, 2, 1]);
        assert!(bursts("").is_empty());
    }
}
