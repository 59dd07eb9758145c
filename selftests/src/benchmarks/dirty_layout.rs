//! `agelab bench dirty-layout`: what one KVM dirty-log iteration costs for our VM compared with the
//! kernel's `dirty_log_perf_test` VM, measured side by side and interleaved in one run.
//!
//! Every layout is a VM of `-b` bytes (1 vCPU, clear-log with INITIALLY_SET, one GET and one
//! CLEAR per slot per iteration, as the kernel test). Its guest writes every page each
//! iteration. Layouts:
//! - `kernel-equiv`: the kernel selftest's layout *and privilege*: guest code at CPL0, 4 KiB
//!   guest pages, one logged slot, page tables in the unlogged system slot;
//! - `ours`: our default (CPL3, otherwise the same);
//! - `ours,4-slots`, `ours,2M-guest`, `ours,thp+2M`: one setting changed at a time.
//!
//! Per iteration and layout it times dirtying, GET and CLEAR and reads KVM's binary stats, then
//! prints medians, ours ÷ kernel-equiv per phase, and per-iteration stats deltas. Last, the CLEAR
//! of `ours` over sptes that are already read-only (logging re-enabled with INITIALLY_SET and no
//! guest write in between) isolates what write-protecting writable sptes costs.

use super::DirtyBenchError;
use crate::args::{positive, size_at_least, ArgValueError};
use crate::ktap;
#[cfg(target_arch = "x86_64")]
use agelab_guest::abi::UCALL_MMIO_ADDR;
use agelab_guest::ucall;
use agelab_util::stats::median;
use agelab_vmm::dirty::DirtyMode;
use agelab_vmm::{Backing, DirtyOptions, DirtyTracker, PageSet, Vm, VmConfig};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Options of `agelab bench dirty-layout`.
#[derive(Debug, clap::Args)]
pub struct DirtyLayoutArgs {
    /// Guest memory, a multiple of 8 MiB (64M).
    #[arg(short = 'b', value_name = "BYTES", default_value = "64M", value_parser = eight_mib_multiple)]
    bytes: u64,
    /// Interleaved iterations per layout (medians).
    #[arg(short = 'i', value_name = "COUNT", default_value_t = 9, value_parser = positive::<u64>)]
    iterations: u64,
}

/// A size of at least 8 MiB, in whole 8 MiB (the layouts split memory in up to 4 slots of 2 MiB
/// multiples).
fn eight_mib_multiple(s: &str) -> Result<u64, ArgValueError> {
    let bytes = size_at_least(8 << 20)(s)?;
    if bytes.is_multiple_of(8 << 20) {
        Ok(bytes)
    } else {
        Err(ArgValueError::NotMultiple {
            given: s.to_string(),
            unit: "8 MiB",
        })
    }
}

/// Guest (CPL3): writes the host's reply into every page of `[base, base + pages * 4096)` per
/// iteration; 0 ends.
extern "C" fn guest_dirty_all(base: u64, pages: u64) -> ! {
    let mut iteration = ucall::sync(1, &[]);
    while iteration != 0 {
        let mut p = 0u64;
        while p < pages {
            // SAFETY: `p < pages`, inside the identity-mapped test memory.
            unsafe {
                core::ptr::write_volatile(
                    base.wrapping_add(p.wrapping_mul(4096)) as *mut u64,
                    iteration,
                )
            };
            p = p.wrapping_add(1);
        }
        iteration = ucall::sync(1, &[iteration]);
    }
    ucall::done()
}

// The same guest for CPL0, in plain integer instructions: on kvm_pvm every CPL0 instruction
// goes through KVM's emulator, which lacks the SSE stores compiled Rust uses to build a
// `UcallMsg`. The message (cmd @0, args @8.., reply @56, len @64; 584 bytes) is built on the
// stack; SYNC(stage 1, last iteration), then the page loop with the reply; reply 0 → DONE.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl agelab_cpl0_dirty_all",
    "agelab_cpl0_dirty_all:",
    "mov r8, rdi",
    "mov r9, rsi",
    "sub rsp, 600",
    "xor eax, eax",
    "mov qword ptr [rsp + 24], 0",
    "mov qword ptr [rsp + 32], 0",
    "mov qword ptr [rsp + 40], 0",
    "mov qword ptr [rsp + 48], 0",
    "2:",
    "mov qword ptr [rsp], 1",
    "mov qword ptr [rsp + 8], 1",
    "mov qword ptr [rsp + 16], rax",
    "mov qword ptr [rsp + 56], 0",
    "mov qword ptr [rsp + 64], 0",
    "mov ecx, {ucall}",
    "mov qword ptr [rcx], rsp",
    "mov rax, qword ptr [rsp + 56]",
    "test rax, rax",
    "jz 4f",
    "mov rdx, r8",
    "mov rcx, r9",
    "3:",
    "mov qword ptr [rdx], rax",
    "add rdx, 4096",
    "dec rcx",
    "jnz 3b",
    "jmp 2b",
    "4:",
    "mov qword ptr [rsp], 2",
    "mov ecx, {ucall}",
    "mov qword ptr [rcx], rsp",
    "5:",
    "pause",
    "jmp 5b",
    ucall = const UCALL_MMIO_ADDR,
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn agelab_cpl0_dirty_all(base: u64, pages: u64) -> !;
}

/// Entry of the CPL0 guest (x86_64 only: `main` skips before any VM elsewhere).
fn cpl0_entry() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        agelab_cpl0_dirty_all as *const () as usize
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        unreachable!("main skips the kernel-equivalent layout off x86_64")
    }
}

/// One VM layout under test.
struct Layout {
    name: &'static str,
    cfg: VmConfig,
}

struct Running {
    name: &'static str,
    vm: Vm,
    tracker: DirtyTracker,
    out: PageSet,
    dirty_ns: Vec<u64>,
    get_ns: Vec<u64>,
    clear_ns: Vec<u64>,
    stats: BTreeMap<String, u64>,
}

use ktap::fail;

fn round(vm: &Vm, value: u64) -> Result<Duration, DirtyBenchError> {
    let t = Instant::now();
    vm.sync_all(1, value, Duration::from_secs(300))?;
    Ok(t.elapsed())
}

/// VM and vCPU stats summed into one map (`vm.NAME`, `vcpu.NAME`).
fn snapshot(vm: &Vm) -> BTreeMap<String, u64> {
    let Ok(s) = vm.stats() else {
        return BTreeMap::new();
    };
    let mut m: BTreeMap<String, u64> =
        s.vm.into_iter()
            .map(|(k, v)| (format!("vm.{k}"), v))
            .collect();
    for c in s.vcpus {
        for (k, v) in c {
            *m.entry(format!("vcpu.{k}")).or_default() += v;
        }
    }
    m
}

fn add_delta(
    acc: &mut BTreeMap<String, u64>,
    a: &BTreeMap<String, u64>,
    b: &BTreeMap<String, u64>,
) {
    for (k, v) in b {
        *acc.entry(k.clone()).or_default() += v.wrapping_sub(*a.get(k).unwrap_or(&0));
    }
}

fn setup(l: &Layout) -> Result<Running, DirtyBenchError> {
    let mut vm = Vm::new(l.cfg.clone())?;
    let mut opts = DirtyOptions::new(DirtyMode::ClearLog);
    opts.initially_set = true;
    let mut tracker = DirtyTracker::new(&mut vm, opts)?;
    let pages = vm.page_map().len();
    let base = vm.page_map().page(0).map(|p| p.gpa).unwrap_or_default();
    let entry = if l.cfg.guest_cpl0 {
        cpl0_entry()
    } else {
        guest_dirty_all as *const () as usize
    };
    vm.start(entry, |_| [base, pages])?;
    vm.wait_sync_all(1, Duration::from_secs(300))?;
    round(&vm, 1)?; // populate
    tracker.set_logging_all(&vm, true)?;
    let mut out = PageSet::new(pages);
    // The first CLEAR after enabling with INITIALLY_SET re-protects the populated pages: not
    // part of the steady state the kernel test averages.
    round(&vm, 2)?;
    tracker.harvest_into(&mut out)?;
    Ok(Running {
        name: l.name,
        vm,
        tracker,
        out,
        dirty_ns: Vec::new(),
        get_ns: Vec::new(),
        clear_ns: Vec::new(),
        stats: BTreeMap::new(),
    })
}

fn iterate(r: &mut Running, value: u64) -> Result<(), DirtyBenchError> {
    let a = snapshot(&r.vm);
    let d = round(&r.vm, value)?;
    let st = r.tracker.harvest_into(&mut r.out)?;
    let b = snapshot(&r.vm);
    add_delta(&mut r.stats, &a, &b);
    if r.out.count() != r.vm.page_map().len() {
        return Err(DirtyBenchError::Harvest {
            what: r.name.to_string(),
            written: r.vm.page_map().len(),
            harvested: r.out.count(),
        });
    }
    r.dirty_ns.push(d.as_nanos() as u64);
    r.get_ns.push(st.get_ns);
    r.clear_ns.push(st.clear_ns);
    Ok(())
}

/// The median of nanosecond samples.
fn median_ns(v: &[u64]) -> f64 {
    median(&mut v.iter().map(|&ns| ns as f64).collect::<Vec<_>>())
}

/// CLEAR of every page over sptes that are already read-only: logging re-enabled with
/// INITIALLY_SET (all bits set, nothing write-protected) after a CLEAR with no guest write since.
fn clear_read_only(r: &mut Running, n: usize) -> Result<f64, DirtyBenchError> {
    let mut v = Vec::new();
    for _ in 0..n {
        r.tracker.set_logging_all(&r.vm, false)?;
        r.tracker.set_logging_all(&r.vm, true)?;
        let st = r.tracker.harvest_into(&mut r.out)?;
        v.push(st.clear_ns);
    }
    Ok(median_ns(&v))
}

const STATS: [&str; 8] = [
    "vcpu.pf_fixed",
    "vcpu.insn_emulation",
    "vcpu.exits",
    "vm.pages_4k",
    "vm.mmu_cache_miss",
    "vm.mmu_shadow_zapped",
    "vm.mmu_unsync",
    "vm.remote_tlb_flush_requests",
];

/// Runs the comparison and prints its tables.
pub fn run(args: &DirtyLayoutArgs) -> ExitCode {
    let (bytes, iterations) = (args.bytes, args.iterations);
    println!("{}", agelab_vmm::HostProfile::measure());
    let kvm = agelab_vmm::vm::open_kvm().unwrap_or_else(|e| ktap::skip_all(&e.to_string()));
    let s = DirtyMode::ClearLog.support(&kvm);
    if !s.available {
        ktap::skip_all(&s.detail);
    }
    if !cfg!(target_arch = "x86_64") {
        ktap::skip_all("the kernel-equivalent layout runs its guest at x86 CPL0");
    }
    let base = VmConfig {
        mem_bytes: bytes,
        ..VmConfig::default()
    };
    let layouts = [
        Layout {
            name: "kernel-equiv",
            cfg: VmConfig {
                guest_cpl0: true,
                ..base.clone()
            },
        },
        Layout {
            name: "ours",
            cfg: base.clone(),
        },
        Layout {
            name: "ours,4-slots",
            cfg: VmConfig {
                slots: 4,
                ..base.clone()
            },
        },
        Layout {
            name: "ours,2M-guest",
            cfg: VmConfig {
                guest_huge_pages: Some(true),
                ..base.clone()
            },
        },
        Layout {
            name: "ours,thp+2M",
            cfg: VmConfig {
                backing: Backing::Thp,
                guest_huge_pages: Some(true),
                ..base.clone()
            },
        },
    ];
    let mut vms: Vec<Running> = layouts
        .iter()
        .map(|l| setup(l).unwrap_or_else(|e| fail(&format!("{}: {e}", l.name))))
        .collect();
    // Interleaved: iteration i of every layout before iteration i + 1 of any.
    for i in 0..iterations {
        for r in vms.iter_mut() {
            iterate(r, i + 3).unwrap_or_else(|e| fail(&e.to_string()));
        }
    }
    let ro = clear_read_only(&mut vms[1], 5).unwrap_or_else(|e| fail(&e.to_string()));
    let pages = bytes / 4096;
    println!(
        "dirty log cost per iteration, {} MiB ({} pages all written), 1 vCPU, clear-log + INITIALLY_SET, medians of {} interleaved iterations",
        bytes >> 20,
        pages,
        iterations
    );
    println!(
        "{:<14} {:>10} {:>9} {:>9} | {:>7} {:>7} {:>7}  (ratio = layout ÷ kernel-equiv)",
        "layout", "dirty ms", "get us", "clear us", "dirty", "get", "clear"
    );
    let k = (
        median_ns(&vms[0].dirty_ns),
        median_ns(&vms[0].get_ns),
        median_ns(&vms[0].clear_ns),
    );
    for r in &vms {
        let (d, g, c) = (
            median_ns(&r.dirty_ns),
            median_ns(&r.get_ns),
            median_ns(&r.clear_ns),
        );
        println!(
            "{:<14} {:>10.2} {:>9.1} {:>9.1} | {:>6.2}x {:>6.2}x {:>6.2}x",
            r.name,
            d / 1e6,
            g / 1e3,
            c / 1e3,
            d / k.0,
            g / k.1,
            c / k.2
        );
    }
    println!(
        "ours, CLEAR over sptes already read-only: {:.1} us ({:.2}x kernel-equiv)",
        ro / 1e3,
        ro / k.2
    );
    println!("KVM stats per iteration (dirty + get + clear):");
    print!("{:<14}", "layout");
    for s in STATS {
        print!(" {:>12}", s.split('.').nth(1).unwrap_or(s));
    }
    println!();
    for r in &vms {
        print!("{:<14}", r.name);
        for s in STATS {
            let v = r.stats.get(s).copied().unwrap_or(0) as f64 / iterations as f64;
            print!(" {v:>12.0}");
        }
        println!();
    }
    for r in &vms {
        let _ = r.vm.resume(0, 0);
    }
    agelab_util::exit::exit_code_of_status(ktap::EXIT_PASS)
}
