//! dirty_log_perf_test: the cost of dirty logging, after the kernel selftest of the same name.
//!
//! Every vCPU writes every page of its partition once per iteration (the memstress guest); the
//! host times populating,
//! enabling logging, each iteration's dirtying and its get/clear of the dirty log, disabling,
//! and prints the averages plus the guest's dirtying time per page.

use agelab::ktap::{self, ts, OrFail};
use agelab::options::Options;
use agelab_vmm::dirty::DirtyMode;
use agelab_vmm::memstress::{Access, GuestCmd, Memstress};
use agelab_vmm::{
    Backing, DirtyOptions, DirtyTracker, HarvestStats, MemoryError, Vm, VmConfig, VmError,
    PAGE_SIZE,
};
use std::time::{Duration, Instant};

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
    let opts = Options::parse("dirty_log_perf_test", "b:v:i:M:m:s:x:c:gh", USAGE);
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
    for o in opts.iter() {
        match o.letter {
            'b' => a.bytes_per_vcpu = o.size(PAGE_SIZE),
            'v' => a.vcpus = o.positive("vCPU count"),
            'i' => a.iterations = o.positive("iteration count"),
            'M' | 'm' => a.mode = Some(o.parsed()),
            's' => a.backing = o.parsed(),
            'x' => a.slots = o.positive("slot count"),
            'c' => a.ring_entries = Some(o.power_of_two("ring size")),
            'g' => a.initially_set = false,
            _ => unreachable!("-{} is in the getopt spec but not handled", o.letter),
        }
    }
    a
}

use ktap::fail;

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
    let mut tracker = DirtyTracker::new(&mut vm, opts).or_fail();
    let pages = vm.page_map().len();
    let mut ms = Memstress::with_vm(vm, false).or_fail();
    let per_vcpu = ms.pages_per_vcpu();
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
    ms.start().or_fail();
    let dirty_all = || ms.run(GuestCmd::sweep(Access::Write)).or_fail();

    // Iteration 1 populates memory, as in the kernel test.
    let populate = dirty_all();
    println!("Populate memory time: {}", ts(populate));

    let t = Instant::now();
    tracker.set_logging_all(ms.vm(), true).or_fail();
    println!("Enabling dirty logging time: {}", ts(t.elapsed()));

    let mut dirty_total = Duration::ZERO;
    let mut totals = HarvestStats::default();
    let mut out = agelab_vmm::PageSet::new(pages);
    for i in 1..=a.iterations {
        let d = dirty_all();
        dirty_total += d;
        println!("Iteration {i} dirty memory time: {}", ts(d));
        let st = tracker.harvest_into(&mut out).or_fail();
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
    tracker.set_logging_all(ms.vm(), false).or_fail();
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
    drop(ms);
    std::process::exit(ktap::EXIT_PASS)
}
