//! dirty_log_perf_test: the cost of dirty logging, after the kernel selftest of the same name.
//!
//! Every vCPU writes every page of its partition once per iteration (the memstress guest); the
//! host times populating,
//! enabling logging, each iteration's dirtying and its get/clear of the dirty log, disabling,
//! and prints the averages plus the guest's dirtying time per page.

use agelab::args::{from_str, positive, power_of_two, size_at_least};
use agelab::ktap::{self, ts, OrFail, OrSkip};
use agelab_vmm::dirty::DirtyMode;
use agelab_vmm::memstress::{Access, GuestCmd, Memstress};
use agelab_vmm::{Backing, DirtyOptions, DirtyTracker, HarvestStats, Vm, VmConfig, PAGE_SIZE};
use clap::Parser;
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

#[derive(Debug, Parser)]
#[command(name = "dirty_log_perf_test", args_override_self = true)]
struct Args {
    /// Guest memory per vCPU.
    #[arg(short = 'b', value_name = "bytes_per_vcpu", default_value = "1G", value_parser = size_at_least(PAGE_SIZE))]
    bytes_per_vcpu: u64,
    /// vCPUs.
    #[arg(short = 'v', value_name = "vcpus", default_value = "1", value_parser = positive::<usize>)]
    vcpus: usize,
    /// Iterations of dirty + harvest.
    #[arg(short = 'i', value_name = "iterations", default_value = "2", value_parser = positive::<u64>)]
    iterations: u64,
    /// Dirty tracking mode (default: clear-log where offered).
    #[arg(short = 'M', short_alias = 'm', value_name = "mode", value_parser = from_str::<DirtyMode>)]
    mode: Option<DirtyMode>,
    /// Backing of guest memory.
    #[arg(short = 's', value_name = "backing", default_value = "anonymous", value_parser = from_str::<Backing>)]
    backing: Backing,
    /// Memslots the memory is split into.
    #[arg(short = 'x', value_name = "slots", default_value = "1", value_parser = positive::<usize>)]
    slots: usize,
    /// Dirty ring entries per vCPU (default: the largest KVM accepts).
    #[arg(short = 'c', value_name = "ring_entries", value_parser = power_of_two)]
    ring_entries: Option<u32>,
    /// Clear-log without KVM_DIRTY_LOG_INITIALLY_SET.
    #[arg(short = 'g')]
    no_initially_set: bool,
}

use ktap::fail;

fn main() {
    let a: Args = agelab::args::parse("dirty_log_perf_test", USAGE);
    let kvm = agelab_vmm::vm::open_kvm().or_skip();
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
    let mut vm = Vm::new(VmConfig {
        vcpus: a.vcpus,
        mem_bytes,
        backing: a.backing.clone(),
        slots: a.slots,
        dirty_ring_entries: ring_entries,
        ..VmConfig::default()
    })
    .or_skip();
    let mut opts = DirtyOptions::new(mode);
    opts.initially_set = !a.no_initially_set;
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
