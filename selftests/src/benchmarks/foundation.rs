//! `agelab bench foundation`: the foundation and workload benchmarks, measured side by side in
//! one run and reported as ratios (never asserted as timed tests), below the host's fault costs
//! ([`agelab_vmm::HostProfile`]).

use agelab_guest::workload::{first_touch_main, touch_loop, touch_loop_warm_main};
use agelab_vmm::workload::{Workload, WorkloadSpec};
use agelab_vmm::{Backing, Vm, VmConfig};
use std::time::{Duration, Instant};

/// Errors of the benchmarks.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// VM failure.
    #[error(transparent)]
    Vm(#[from] agelab_vmm::VmError),
    /// Workload failure.
    #[error(transparent)]
    Workload(#[from] agelab_vmm::workload::WorkloadError),
    /// The guest did not behave.
    #[error("bench guest: {0}")]
    Guest(String),
}

impl agelab_util::exit::HasExitClass for BenchError {
    /// Every benchmark error is a failure.
    fn exit_class(&self) -> agelab_util::exit::ExitClass {
        agelab_util::exit::ExitClass::Failure
    }
}

/// Waits for vCPU 0's SYNC(`stage`), resumes it and returns the SYNC's first argument.
fn wait_sync(vm: &Vm, stage: u64) -> Result<u64, BenchError> {
    let (vcpu, args) = vm.next_sync(stage, Duration::from_secs(120))?;
    vm.resume(vcpu, 0)?;
    Ok(args[0])
}

/// Guest loop vs the same loop natively: (guest ns/access, native ns/access, 2 MiB sptes KVM
/// installed). `huge`: THP backing and 2 MiB guest page-table entries, so KVM can map the guest
/// with 2 MiB pages (its shadow MMU does here: `pages_2m`); both sides read the same memory.
/// The guest's first-touch faults happen in an untimed warm-up pass.
pub fn guest_vs_native(pages: u64, iters: u64, huge: bool) -> Result<(f64, f64, u64), BenchError> {
    let mem_bytes = if huge {
        (pages * 4096).next_multiple_of(2 << 20)
    } else {
        pages.max(16) * 4096
    };
    let mut vm = Vm::new(VmConfig {
        vcpus: 1,
        mem_bytes,
        backing: if huge { Backing::Thp } else { Backing::Anon },
        guest_huge_pages: Some(huge),
        ..Default::default()
    })?;
    vm.set_watchdog(Duration::from_secs(120));
    let host = vm.page_map().page(0).expect("page 0").hva;
    // SAFETY: writing over the VM's own test memory mapping before the guest runs.
    unsafe { std::ptr::write_bytes(host as *mut u8, 1, (pages * 4096) as usize) };
    let warm = touch_loop(host, pages, 2);
    vm.start(touch_loop_warm_main as *const () as usize, |_| {
        [pages, iters]
    })?;
    wait_sync(&vm, 1)?;
    let t = Instant::now();
    let guest_sum = wait_sync(&vm, 2)?;
    let guest_ns = t.elapsed().as_nanos() as f64 / (pages * iters) as f64;
    let t = Instant::now();
    let native_sum = touch_loop(host, pages, iters);
    let native_ns = t.elapsed().as_nanos() as f64 / (pages * iters) as f64;
    if guest_sum != native_sum || warm == u64::MAX {
        return Err(BenchError::Guest(format!(
            "checksums differ: guest {guest_sum:#x}, host {native_sum:#x}"
        )));
    }
    let pages_2m = vm
        .stats()
        .ok()
        .and_then(|s| s.vm.get("pages_2m").copied())
        .unwrap_or(0);
    Ok((guest_ns, native_ns, pages_2m))
}

/// Whether transparent huge pages can back `MADV_HUGEPAGE` memory on this host.
pub fn thp_available() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"))
}

/// Guest first-touch cost per page (EPT/shadow fault + host page allocation).
pub fn first_touch_ns(pages: u64) -> Result<f64, BenchError> {
    let mut vm = Vm::new(VmConfig {
        vcpus: 1,
        mem_bytes: pages * 4096,
        ..Default::default()
    })?;
    vm.set_watchdog(Duration::from_secs(120));
    vm.start(first_touch_main as *const () as usize, |_| [pages, 0])?;
    wait_sync(&vm, 1)?;
    let t = Instant::now();
    wait_sync(&vm, 2)?;
    Ok(t.elapsed().as_nanos() as f64 / pages as f64)
}

/// Per-pattern throughput and the host cost of exact ground truth relative to guest time.
pub fn patterns(mem: u64, epoch: Duration) -> Result<Vec<(String, f64, f64)>, BenchError> {
    let mut out = Vec::new();
    for spec in [
        "seq-write",
        "uniform-read",
        "zipf:s=0.99,op=read",
        "hotcold:hot=10%,p=90%,op=mix",
        "phase:ws=10%,every=100000,op=read",
        "strided:stride=7,op=write",
    ] {
        let spec: WorkloadSpec = spec.parse().expect("built-in spec");
        let cfg = VmConfig {
            vcpus: 1,
            mem_bytes: mem,
            heap_bytes: agelab_vmm::workload::heap_bytes(&spec, mem),
            ..Default::default()
        };
        let mut wl = Workload::start(Vm::new(cfg)?, spec.clone())?;
        wl.run_epoch(epoch)?; // warm-up: first touches
        let r = wl.run_epoch(epoch)?;
        let t = Instant::now();
        let _ = wl.ground_truth(r.epoch);
        let replay = t.elapsed();
        let mops = r.total_ops() as f64 / r.elapsed.as_secs_f64() / 1e6;
        out.push((
            spec.to_string(),
            mops,
            replay.as_secs_f64() / r.elapsed.as_secs_f64(),
        ));
        wl.finish()?;
    }
    Ok(out)
}

/// Runs everything and prints a report.
pub fn run() -> Result<(), BenchError> {
    println!("{}", agelab_vmm::HostProfile::measure());
    println!("# agelab bench (foundation and workloads)");
    // Large working sets default to THP + 2 MiB guest pages where the host has THP; the 4 KiB
    // row beside each shows what the huge mappings buy. Medians of three runs each.
    let thp = thp_available();
    for (pages, iters, huge) in [
        (16u64, 2_000_000u64, false),
        (4096, 2_000, thp),
        (4096, 2_000, false),
        (262_144, 20, thp),
        (262_144, 20, false),
    ] {
        if huge && !thp {
            continue;
        }
        // The median of three runs by speed ratio: one run is at the mercy of a loaded host.
        let mut runs = (0..3)
            .map(|_| guest_vs_native(pages, iters, huge))
            .collect::<Result<Vec<_>, _>>()?;
        runs.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
        let (g, n, p2m) = runs[1];
        let size = pages * 4096;
        let (amount, unit) = if size >= 1 << 20 {
            (size >> 20, "MiB")
        } else {
            (size >> 10, "KiB")
        };
        println!(
            "memory loop over {amount:>4} {unit} ({}): guest {g:.2} ns/access, native {n:.2} ns/access, guest/native speed ratio {:.2}x (goal >= 0.9x){}",
            if huge { "THP + 2 MiB guest pages" } else { "4 KiB guest pages" },
            n / g,
            if huge { format!(", {p2m} 2 MiB mappings in KVM") } else { String::new() }
        );
    }
    if !thp {
        println!("(no THP on this host: large working sets ran with 4 KiB pages only)");
    }
    println!(
        "guest first touch: {:.0} ns/page (8192 fresh pages)",
        first_touch_ns(8192)?
    );
    println!(
        "\n{:<44} {:>12} {:>28}",
        "pattern (1 vCPU, 64 MiB)", "Mops/s", "ground-truth replay / guest"
    );
    for (name, mops, ratio) in patterns(64 << 20, Duration::from_millis(500))? {
        println!("{name:<44} {mops:>12.1} {:>27.1}%", ratio * 100.0);
    }
    println!("(ground truth costs the guest nothing: it is replayed on the host after the epoch)");
    Ok(())
}
