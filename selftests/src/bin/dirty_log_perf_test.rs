//! dirty_log_perf_test: the cost of dirty logging, after the kernel selftest of the same name.
//!
//! Every vCPU writes every page of its partition once per iteration; the host times populating,
//! enabling logging, each iteration's dirtying and its get/clear of the dirty log, disabling,
//! and prints the averages plus the guest's dirtying time per page.

use agelab::ktap::{self, ts};
use agelab::units::parse_size;
use agelab_guest::ucall;
use agelab_vmm::dirty::DirtyMode;
use agelab_vmm::{
    Backing, DirtyOptions, DirtyTracker, HarvestStats, MemoryError, VcpuEvent, Vm, VmConfig,
    VmError,
};
use std::time::{Duration, Instant};

const STAGE: u64 = 1;

const USAGE: &str = "usage: dirty_log_perf_test [-b bytes_per_vcpu] [-v vcpus] [-i iterations] \
[-M mode] [-s backing] [-x slots] [-c ring_entries] [-g]
  -b: guest memory per vCPU, e.g. 64M, 1G (default 1G)
  -v: vCPUs (default 1)
  -i: iterations of dirty + harvest (default 2)
  -M, -m: dirty-log | clear-log | dirty-ring (default clear-log where offered)
  -s: backing: anonymous|anon (4 KiB pages) | anonymous_thp|thp | shmem|memfd |
      anonymous_hugetlb|anonymous_hugetlb_2mb|hugetlb | file:PATH (default anonymous)
  -x: memslots the memory is split into (default 1)
  -c: dirty ring entries per vCPU (default: the largest KVM accepts)
  -g: clear-log without KVM_DIRTY_LOG_INITIALLY_SET";

/// Guest: for every iteration number the host replies with, writes it into every page of its
/// partition `[base, base + pages * 4096)`; 0 ends.
extern "C" fn guest_dirty_all(base: u64, pages: u64) -> ! {
    let mut iteration = ucall::sync(STAGE, &[]);
    while iteration != 0 {
        let mut p = 0u64;
        while p < pages {
            let addr = base.wrapping_add(p.wrapping_mul(4096));
            // SAFETY: `p < pages`, inside this vCPU's identity-mapped partition.
            unsafe { core::ptr::write_volatile(addr as *mut u64, iteration) };
            p = p.wrapping_add(1);
        }
        iteration = ucall::sync(STAGE, &[iteration]);
    }
    ucall::done()
}

#[derive(Debug)]
struct Args {
    bytes_per_vcpu: u64,
    vcpus: usize,
    iterations: u64,
    mode: Option<DirtyMode>,
    backing: Backing,
    slots: usize,
    ring_entries: Option<u32>,
    initially_set: bool,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let bad = |m: String| -> ! { ktap::usage_error("dirty_log_perf_test", &m, USAGE) };
    let opts = ktap::getopt(&argv, "b:v:i:M:m:s:x:c:gh").unwrap_or_else(|e| bad(e));
    let mut a = Args {
        bytes_per_vcpu: 1 << 30,
        vcpus: 1,
        iterations: 2,
        mode: None,
        backing: Backing::Anon,
        slots: 1,
        ring_entries: None,
        initially_set: true,
    };
    for (c, v) in opts {
        let v = v.unwrap_or_default();
        let num = |what: &str| -> u64 {
            match v.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => bad(format!(
                    "invalid {what} '{v}' for -{c}: expected a positive number"
                )),
            }
        };
        match c {
            'b' => {
                a.bytes_per_vcpu = match parse_size(&v) {
                    Ok(n) if n >= 4096 => n,
                    Ok(n) => bad(format!("-b: {n} bytes is less than one 4 KiB page")),
                    Err(e) => bad(format!("-b: invalid size '{v}': {e}")),
                }
            }
            'v' => a.vcpus = num("vCPU count") as usize,
            'i' => a.iterations = num("iteration count"),
            'M' | 'm' => {
                a.mode = Some(
                    v.parse()
                        .unwrap_or_else(|e: agelab_vmm::dirty::UnknownDirtyMode| {
                            bad(format!("-{c}: {e}"))
                        }),
                )
            }
            's' => {
                a.backing = v
                    .parse()
                    .unwrap_or_else(|e: MemoryError| bad(format!("-s: {e}")))
            }
            'x' => a.slots = num("slot count") as usize,
            'c' => {
                let n = num("ring size");
                if !n.is_power_of_two() || n > u64::from(u32::MAX) {
                    bad(format!("-c: ring size {n} is not a power of two"));
                }
                a.ring_entries = Some(n as u32);
            }
            'g' => a.initially_set = false,
            _ => {
                println!("{USAGE}");
                std::process::exit(0);
            }
        }
    }
    a
}

use ktap::fail;

/// Resumes every vCPU with `iteration` and waits until all report back; returns the wall time.
fn run_iteration(vm: &Vm, iteration: u64) -> Duration {
    let t0 = Instant::now();
    for v in 0..vm.vcpus() {
        vm.resume(v, iteration)
            .unwrap_or_else(|e| fail(&e.to_string()));
    }
    let mut left = vm.vcpus();
    while left > 0 {
        match vm.next_event(Duration::from_secs(120)) {
            Ok(VcpuEvent::Sync { stage: STAGE, .. }) => left -= 1,
            Ok(VcpuEvent::Printf { vcpu, text }) => println!("# guest {vcpu}: {text}"),
            Ok(other) => fail(&format!("unexpected vCPU event {other:?}")),
            Err(e) => fail(&e.to_string()),
        }
    }
    t0.elapsed()
}

fn main() {
    let a = parse_args();
    let kvm = agelab_vmm::vm::open_kvm().unwrap_or_else(|e| ktap::skip_all(&e.to_string()));
    let mode = a
        .mode
        .unwrap_or(if DirtyMode::ClearLog.support(&kvm).available {
            DirtyMode::ClearLog
        } else {
            DirtyMode::GetLog
        });
    let support = mode.support(&kvm);
    if !support.available {
        ktap::skip_all(&support.detail);
    }
    let ring_entries = match (mode, a.ring_entries) {
        (DirtyMode::Ring, Some(n)) => Some(n),
        (DirtyMode::Ring, None) => Some(DirtyMode::max_ring_entries(&kvm)),
        _ => None,
    };
    let mem_bytes = a.bytes_per_vcpu * a.vcpus as u64;
    let mut vm = match Vm::new(VmConfig {
        vcpus: a.vcpus,
        mem_bytes,
        backing: a.backing.clone(),
        slots: a.slots,
        dirty_ring_entries: ring_entries,
        ..VmConfig::default()
    }) {
        Ok(vm) => vm,
        Err(VmError::Memory(e @ MemoryError::NoHugePages { .. })) => ktap::skip_all(&e.to_string()),
        Err(VmError::NoKvm(e)) => ktap::skip_all(&e),
        Err(e) => fail(&e.to_string()),
    };
    let mut opts = DirtyOptions::new(mode);
    opts.initially_set = a.initially_set;
    let mut tracker = DirtyTracker::new(&mut vm, opts).unwrap_or_else(|e| fail(&e.to_string()));
    let pages = vm.page_map().len();
    let per_vcpu = pages / a.vcpus as u64;
    let base = vm.page_map().page(0).map(|p| p.gpa).unwrap_or_default();
    println!(
        "# Testing guest mode: CPL3 4K, mode {mode} ({}), backing {}, {} vCPU(s) x {} MiB, {} slot(s)",
        support.detail,
        a.backing,
        a.vcpus,
        a.bytes_per_vcpu >> 20,
        a.slots
    );
    if mode == DirtyMode::ClearLog {
        println!(
            "# clear-log: KVM_DIRTY_LOG_INITIALLY_SET {}",
            if tracker.initially_set() { "on" } else { "off" }
        );
    }
    if let Some(n) = ring_entries {
        println!("# dirty ring: {n} entries per vCPU");
    }
    vm.start(guest_dirty_all as *const () as usize, |i| {
        [base + i as u64 * per_vcpu * 4096, per_vcpu]
    })
    .unwrap_or_else(|e| fail(&e.to_string()));
    let mut ready = 0;
    while ready < a.vcpus {
        match vm.next_event(Duration::from_secs(30)) {
            Ok(VcpuEvent::Sync { stage: STAGE, .. }) => ready += 1,
            Ok(other) => fail(&format!("unexpected vCPU event {other:?}")),
            Err(e) => fail(&e.to_string()),
        }
    }

    // Iteration 1 populates memory, as in the kernel test.
    let populate = run_iteration(&vm, 1);
    println!("Populate memory time: {}", ts(populate));

    let t = Instant::now();
    tracker
        .set_logging_all(&vm, true)
        .unwrap_or_else(|e| fail(&e.to_string()));
    println!("Enabling dirty logging time: {}", ts(t.elapsed()));

    let mut dirty_total = Duration::ZERO;
    let mut totals = HarvestStats::default();
    let mut out = agelab_vmm::PageSet::new(pages);
    for i in 1..=a.iterations {
        let d = run_iteration(&vm, i + 1);
        dirty_total += d;
        println!("Iteration {i} dirty memory time: {}", ts(d));
        let st = tracker
            .harvest_into(&mut out)
            .unwrap_or_else(|e| fail(&e.to_string()));
        totals.add(&st);
        println!(
            "Iteration {i} get dirty log time: {}",
            ts(Duration::from_nanos(st.get_ns + st.user_ns))
        );
        println!(
            "Iteration {i} clear dirty log time: {}",
            ts(Duration::from_nanos(st.clear_ns))
        );
        if out.count() != pages {
            fail(&format!(
                "iteration {i}: the guest wrote all {pages} pages but the log holds {}",
                out.count()
            ));
        }
    }

    let t = Instant::now();
    tracker
        .set_logging_all(&vm, false)
        .unwrap_or_else(|e| fail(&e.to_string()));
    println!("Disabling dirty logging time: {}", ts(t.elapsed()));

    let n = a.iterations;
    let avg = |ns: u64| ts(Duration::from_nanos(ns / n));
    let get = totals.get_ns + totals.user_ns;
    println!(
        "Get dirty log over {n} iterations took {}. (Avg {}/iteration)",
        ts(Duration::from_nanos(get)),
        avg(get)
    );
    println!(
        "Clear dirty log over {n} iterations took {}. (Avg {}/iteration)",
        ts(Duration::from_nanos(totals.clear_ns)),
        avg(totals.clear_ns)
    );
    println!(
        "Dirty memory over {n} iterations took {}. (Avg {}/iteration)",
        ts(dirty_total),
        avg(dirty_total.as_nanos() as u64)
    );
    println!(
        "# harvest split: {} ns in ioctls, {} ns userspace ({:.1}%), {} ioctls, {} pages, {} bitmap/ring bytes{}",
        totals.ioctl_ns(),
        totals.user_ns,
        100.0 * totals.user_overhead(),
        totals.ioctls,
        totals.pages,
        totals.bitmap_bytes,
        if mode == DirtyMode::Ring {
            format!(
                ", {} entries drained on ring-full exits ({} ns on vCPU threads)",
                totals.ring_full_entries, totals.ring_full_ns
            )
        } else {
            String::new()
        }
    );
    let per_page = dirty_total.as_nanos() as f64 / (n * per_vcpu) as f64;
    println!(
        "Guest dirtying time per page: {per_page:.1} ns (per vCPU, wall time / pages per vCPU)"
    );
    for v in 0..vm.vcpus() {
        let _ = vm.resume(v, 0);
    }
    std::process::exit(ktap::EXIT_PASS)
}
