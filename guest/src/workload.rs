//! The guest's epoch loop: the host sets a command in the vCPU's [`VcpuWork`] block, the guest
//! runs it and reports back with SYNC.

use crate::integrity;
use crate::pattern::{AliasEntry, Generator, PatternParams};
use crate::rng::mix_seed;
use crate::ucall;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

/// SYNC stage a workload vCPU reports when it waits for its next command.
pub const STAGE_READY: u64 = 0x5245_4144;

/// Accesses between two looks at the host's stop flag.
pub const CHECK_EVERY: u64 = 1024;

/// Words verified in detail per mismatch report.
pub const MAX_BAD: usize = 8;

/// A command from the host.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkCmd {
    /// Run one epoch of the pattern.
    Run = 1,
    /// Write `tag(page, epoch)` to every word of the region.
    Fill = 2,
    /// Check every word of the region.
    Verify = 3,
    /// Finish (ucall DONE).
    Exit = 4,
}

/// The per-vCPU control block, in the system memslot (never tracked).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuWork {
    /// A [`WorkCmd`] value.
    pub cmd: u64,
    /// vCPU index (stream id for the generator).
    pub vcpu: u64,
    /// Epoch number (1-based; 0 is "never written").
    pub epoch: u64,
    /// Run seed.
    pub seed: u64,
    /// Guest address of the region's first page.
    pub region_gva: u64,
    /// Dense page index of the region's first page.
    pub region_first_page: u64,
    /// The pattern.
    pub pattern: PatternParams,
    /// Guest address of the zipf alias table (0 if none).
    pub table_gva: u64,
    /// Entries in the alias table.
    pub table_len: u64,
    /// Stop after this many accesses (0: only when `stop` is set).
    pub max_ops: u64,
    /// The host sets this non-zero to end a running epoch.
    pub stop: u64,
    /// Result: accesses done in the last epoch.
    pub ops: u64,
    /// Result: a checksum of values read (keeps reads from being optimised away).
    pub checksum: u64,
    /// Result of Verify: words that did not hold a valid tag.
    pub mismatches: u64,
    /// Result of Verify: guest addresses of the first mismatching words.
    pub first_bad: [u64; MAX_BAD],
}

/// Entry point of a workload vCPU: `work` is its control block's guest address.
///
/// # Safety
/// Only for guest execution, with `work` pointing at a valid, mapped [`VcpuWork`] and its region
/// and table mapped.
pub unsafe extern "C" fn workload_main(work: *mut VcpuWork) -> ! {
    loop {
        let cmd = ucall::sync(STAGE_READY, &[]);
        // SAFETY: the caller guarantees `work` is a valid control block for this vCPU.
        let w = unsafe { &mut *work };
        match cmd {
            1 => run_epoch(w),
            2 => fill(w),
            3 => verify(w),
            _ => ucall::done(),
        }
    }
}

#[inline(never)]
fn run_epoch(w: &mut VcpuWork) {
    let table: &[AliasEntry] = if w.table_gva == 0 || w.table_len == 0 {
        &[]
    } else {
        // SAFETY: the host maps `table_len` entries at `table_gva` for zipfian workloads.
        unsafe {
            core::slice::from_raw_parts(w.table_gva as *const AliasEntry, w.table_len as usize)
        }
    };
    let mut g = Generator::new(&w.pattern, mix_seed(w.seed, w.vcpu, w.epoch), table);
    let base = w.region_gva;
    let first = w.region_first_page;
    let epoch = w.epoch;
    let max = w.max_ops;
    let stop = addr_of!(w.stop);
    let mut ops = 0u64;
    let mut sum = 0u64;
    loop {
        let batch = if max == 0 {
            CHECK_EVERY
        } else {
            let left = max - ops;
            if left < CHECK_EVERY {
                left
            } else {
                CHECK_EVERY
            }
        };
        let mut k = 0;
        while k < batch {
            let a = g.next_access();
            let ptr = (base + a.page * 4096 + a.word * 8) as *mut u64;
            if a.write {
                // SAFETY: the generator stays inside the region the host mapped for this vCPU.
                unsafe { write_volatile(ptr, integrity::tag(first + a.page, epoch)) };
            } else {
                // SAFETY: as above.
                sum = sum.wrapping_add(unsafe { read_volatile(ptr) });
            }
            k += 1;
        }
        ops += batch;
        // SAFETY: `stop` points into the live control block; the host writes it concurrently.
        if (max != 0 && ops >= max) || unsafe { read_volatile(stop) } != 0 {
            break;
        }
    }
    // SAFETY: plain stores into the live control block; volatile so the host sees them in order.
    unsafe {
        write_volatile(addr_of_mut!(w.ops), ops);
        write_volatile(addr_of_mut!(w.checksum), sum);
    }
}

#[inline(never)]
fn fill(w: &mut VcpuWork) {
    let pages = w.pattern.pages;
    let mut p = 0;
    while p < pages {
        let t = integrity::tag(w.region_first_page + p, w.epoch);
        let page = (w.region_gva + p * 4096) as *mut u64;
        let mut i = 0;
        while i < 512 {
            // SAFETY: the region's pages are mapped; `i < 512` stays in the page.
            unsafe { write_volatile(page.add(i), t) };
            i += 1;
        }
        p += 1;
    }
    w.ops = pages;
}

#[inline(never)]
fn verify(w: &mut VcpuWork) {
    let pages = w.pattern.pages;
    let mut bad = 0u64;
    let mut p = 0;
    while p < pages {
        let page_no = w.region_first_page + p;
        let page = (w.region_gva + p * 4096) as *const u64;
        let mut i = 0;
        while i < 512 {
            // SAFETY: as in `fill`.
            let word = unsafe { read_volatile(page.add(i)) };
            if !integrity::is_valid(word, page_no, w.epoch) {
                if (bad as usize) < MAX_BAD {
                    w.first_bad[bad as usize] = page as u64 + i as u64 * 8;
                }
                bad += 1;
            }
            i += 1;
        }
        p += 1;
    }
    w.mismatches = bad;
    w.ops = pages;
}

/// The benchmark loop: `iters` sweeps reading one word of each of `pages` pages from `base`.
/// Runs unchanged in the guest (at CPL3) and natively on the host, so the two can be compared.
#[inline(never)]
pub fn touch_loop(base: u64, pages: u64, iters: u64) -> u64 {
    let mut sum = 0u64;
    let mut it = 0;
    while it < iters {
        let mut p = 0;
        while p < pages {
            let ptr = (base + p * 4096 + (it & 511) * 8) as *const u64;
            // SAFETY: callers pass a mapped region of at least `pages` pages.
            sum = sum.wrapping_add(unsafe { read_volatile(ptr) });
            p += 1;
        }
        it += 1;
    }
    sum
}

/// Guest entry for timing [`touch_loop`] without first-touch faults: one warm-up pass, SYNC(1),
/// then `iters` timed passes whose checksum goes out with SYNC(2).
pub extern "C" fn touch_loop_warm_main(pages: u64, iters: u64) -> ! {
    let warm = touch_loop(crate::abi::TEST_BASE, pages, 1);
    ucall::sync(1, &[warm]);
    let sum = touch_loop(crate::abi::TEST_BASE, pages, iters);
    ucall::sync(2, &[sum]);
    ucall::done()
}

/// Guest entry that writes one word to each of `pages` pages (first touch), then finishes.
pub extern "C" fn first_touch_main(pages: u64, _: u64) -> ! {
    ucall::sync(1, &[]);
    let mut p = 0;
    while p < pages {
        // SAFETY: test memory of at least `pages` pages is mapped at TEST_BASE.
        unsafe { write_volatile((crate::abi::TEST_BASE + p * 4096) as *mut u64, p) };
        p += 1;
    }
    ucall::sync(2, &[]);
    ucall::done()
}
