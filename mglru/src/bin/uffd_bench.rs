//! Cost and accuracy of userfaultfd access tracking on a real guest.
//!
//! `minor` (default): for each fault budget, alternates untracked and tracked epochs of the same
//! workload in the same VM (memfd backing): guest ns per access both ways and their ratio,
//! faults per second, the fault thread's CPU time, precision/recall of the harvested set against
//! the ground truth on the armed pages, and the sampled estimate of all accessed pages with its
//! 95% interval (and whether the truth is inside).
//!
//! `wp`: the same for uffd-wp (async + PAGEMAP_SCAN, and sync faults) against written pages.
//!
//! `hold`: runs a guest under continuous uffd-minor re-arming until SIGINT (for the teardown test).
//!
//! `cargo run --release -p agelab-mglru --bin uffd_bench -- [minor|wp|hold] [--mem MiB]
//!  [--vcpus N] [--spec SPEC] [--epoch-ms MS] [--reps N] [--budgets 1000,10000,all]
//!  [--backing anon|memfd]`

use agelab_mglru::host_guard::install_signal_cleanup;
use agelab_mglru::sources::uffd_minor::{AccessEstimate, UffdMinorConfig, UffdMinorSource, Z95};
use agelab_mglru::sources::uffd_wp::{UffdWpMode, UffdWpSource};
use agelab_mglru::AccessSource;
use agelab_vmm::workload::{Workload, WorkloadSpec};
use agelab_vmm::{Backing, PageSet, Vm, VmConfig};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    cmd: String,
    mem_mib: u64,
    vcpus: usize,
    spec: String,
    epoch: Duration,
    reps: usize,
    budgets: Vec<Option<u64>>,
    backing: Option<Backing>,
}

fn parse_args() -> Args {
    let mut a = Args {
        cmd: "minor".into(),
        mem_mib: 256,
        vcpus: 1,
        spec: "zipf-read:s=0.9".into(),
        epoch: Duration::from_millis(500),
        reps: 3,
        budgets: vec![Some(1_000), Some(10_000), Some(100_000), None],
        backing: None,
    };
    let mut it = std::env::args().skip(1).peekable();
    if let Some(c) = it.peek().filter(|c| !c.starts_with("--")) {
        a.cmd = c.clone();
        it.next();
    }
    let usage = |what: &str| -> ! {
        eprintln!(
            "usage: uffd_bench [minor|wp|hold] [--mem MiB] [--vcpus N] [--spec SPEC] \
             [--epoch-ms MS] [--reps N] [--budgets 1000,10000,all] [--backing anon|memfd] ({what}?)"
        );
        std::process::exit(2)
    };
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage(&k));
        match k.as_str() {
            "--mem" => a.mem_mib = v.parse().unwrap_or_else(|_| usage(&v)),
            "--vcpus" => a.vcpus = v.parse().unwrap_or_else(|_| usage(&v)),
            "--spec" => a.spec = v,
            "--epoch-ms" => {
                a.epoch = Duration::from_millis(v.parse().unwrap_or_else(|_| usage(&v)))
            }
            "--reps" => a.reps = v.parse().unwrap_or_else(|_| usage(&v)),
            "--budgets" => {
                a.budgets = v
                    .split(',')
                    .map(|b| match b {
                        "all" => None,
                        n => Some(n.replace('_', "").parse().unwrap_or_else(|_| usage(n))),
                    })
                    .collect()
            }
            "--backing" => a.backing = Some(v.parse().unwrap_or_else(|_| usage(&v))),
            _ => usage(&k),
        }
    }
    a
}

fn start(a: &Args, backing: Backing) -> Workload {
    let spec: WorkloadSpec = a.spec.parse().unwrap_or_else(|e| {
        eprintln!("uffd_bench: --spec: {e}");
        std::process::exit(2)
    });
    let mem = a.mem_mib << 20;
    let cfg = VmConfig {
        vcpus: a.vcpus,
        mem_bytes: mem,
        backing,
        heap_bytes: agelab_vmm::workload::heap_bytes(&spec, mem),
        ..Default::default()
    };
    let vm = Vm::new(cfg).unwrap_or_else(|e| {
        println!("1..0 # SKIP cannot create a VM: {e}");
        std::process::exit(4)
    });
    let mut w = Workload::start(vm, spec).expect("workload start");
    w.fill().expect("fill");
    w
}

fn ns_per_access(r: &agelab_vmm::workload::EpochResult) -> f64 {
    r.elapsed.as_nanos() as f64 * r.ops.len() as f64 / r.total_ops().max(1) as f64
}

/// KVM page faults taken so far, all vCPUs (0 where KVM has no binary stats).
fn kvm_faults(w: &Workload) -> u64 {
    w.vm().stats().map_or(0, |s| {
        s.vcpus
            .iter()
            .map(|v| v.get("pf_taken").copied().unwrap_or(0))
            .sum()
    })
}

fn fmt_budget(b: Option<u64>) -> String {
    b.map_or("all".into(), |b| b.to_string())
}

fn minor(a: &Args) {
    let mut w = start(a, a.backing.clone().unwrap_or(Backing::Memfd));
    let pages = w.vm().page_map().len();
    println!(
        "uffd-minor: {} MiB ({pages} pages), {} vCPUs, {}, epochs of {} ms, {} reps per budget; \
         harvest at epoch boundaries",
        a.mem_mib,
        a.vcpus,
        w.spec(),
        a.epoch.as_millis(),
        a.reps
    );
    println!(
        "{:>8} {:>8} {:>10} {:>9} {:>10} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7} {:>7} {:>23} {:>6} {:>7}",
        "budget/s",
        "sample",
        "faults/s",
        "thr CPU%",
        "ns/fault",
        "ns/acc 0",
        "ns/acc T",
        "ratio",
        "us lost/f",
        "kvm pf 0",
        "kvm pf T",
        "recall",
        "prec",
        "est. accessed [95% CI]",
        "truth",
        "covered"
    );
    for &budget in &a.budgets {
        let mut src = UffdMinorSource::new(
            w.vm().page_map(),
            UffdMinorConfig {
                budget_faults_per_sec: budget,
                seed: 7,
                interval: Some(a.epoch),
            },
        )
        .expect("uffd-minor");
        src.disarm();
        src.set_rearm(false);
        let _ = src.harvest();
        let (mut base_ns, mut trk_ns, mut faults, mut cpu, mut wall) = (0.0, 0.0, 0, 0, 0.0);
        let (mut tp, mut fp, mut fneg, mut sample, mut dup) = (0, 0, 0, 0, 0);
        let mut last_est = None;
        let (mut trk_ops, mut covered, mut pf0, mut pft) = (0u64, 0, 0, 0);
        for _ in 0..a.reps {
            let k0 = kvm_faults(&w);
            base_ns += ns_per_access(&w.run_epoch(a.epoch).expect("epoch"));
            pf0 += kvm_faults(&w) - k0;
            src.set_rearm(true);
            let _ = src.harvest();
            sample += src.armed().count();
            let d0 = src.stats().already_mapped;
            let s0 = src.stats().fault;
            let k0 = kvm_faults(&w);
            let r = w.run_epoch(a.epoch).expect("epoch");
            pft += kvm_faults(&w) - k0;
            let s1 = src.stats().fault;
            dup += src.stats().already_mapped - d0;
            trk_ns += ns_per_access(&r);
            trk_ops += r.total_ops();
            faults += s1.faults - s0.faults;
            cpu += s1.cpu_ns - s0.cpu_ns;
            wall += r.elapsed.as_secs_f64();
            src.disarm();
            src.set_rearm(false);
            let h = src.harvest().expect("harvest");
            let truth = w.ground_truth(r.epoch).expect("truth").accessed();
            let mut armed_truth = truth.clone();
            if let Some(obs) = &h.observed {
                armed_truth.intersect_with(obs);
            }
            let c = h.accessed.confusion(&armed_truth);
            (tp, fp, fneg) = (tp + c.true_pos, fp + c.false_pos, fneg + c.false_neg);
            let est = AccessEstimate::of_group(&PageSet::full(pages), &h, Z95);
            covered += usize::from(est.covers(truth.count()));
            last_est = Some((est, truth.count()));
        }
        let reps = a.reps as f64;
        let (est, truth) = last_est.expect("at least one rep");
        let (lo, hi) = est.pages_interval();
        // Guest time lost per fault: vCPU time of the tracked epochs minus what their accesses
        // cost untracked.
        let lost_ns = wall * a.vcpus as f64 * 1e9 - trk_ops as f64 * (base_ns / reps);
        println!(
            "{:>8} {:>8} {:>10.0} {:>9.2} {:>10.0} {:>9.2} {:>9.2} {:>7.2} {:>9.1} {:>9} {:>9} {:>7.3} {:>7.3} {:>23} {:>6} {:>7}",
            fmt_budget(budget),
            sample / a.reps as u64,
            faults as f64 / wall,
            cpu as f64 / 1e9 / wall * 100.0,
            cpu as f64 / faults.max(1) as f64,
            base_ns / reps,
            trk_ns / reps,
            trk_ns / base_ns,
            lost_ns / 1e3 / faults.max(1) as f64,
            pf0 / a.reps as u64,
            pft / a.reps as u64,
            tp as f64 / (tp + fneg).max(1) as f64,
            tp as f64 / (tp + fp).max(1) as f64,
            format!("{:.0} [{:.0}, {:.0}]", est.pages(), lo, hi),
            truth,
            format!("{covered}/{}", a.reps)
        );
        if dup > 0 {
            println!(
                "{:>8} ({dup} of {faults} faults found their page already mapped)",
                ""
            );
        }
        std::io::stdout().flush().ok();
    }
    verify_and_finish(w);
}

fn wp(a: &Args) {
    let backing = a.backing.clone().unwrap_or(Backing::Anon);
    let spec = if a.spec.contains("read") {
        "zipf-write:s=0.9".to_string()
    } else {
        a.spec.clone()
    };
    let a = Args {
        spec,
        backing: Some(backing.clone()),
        ..parse_args()
    };
    let mut w = start(&a, backing.clone());
    let pages = w.vm().page_map().len();
    println!(
        "uffd-wp: {} MiB ({pages} pages, {backing}), {} vCPUs, {}, epochs of {} ms, {} reps",
        a.mem_mib,
        a.vcpus,
        w.spec(),
        a.epoch.as_millis(),
        a.reps
    );
    println!(
        "{:>6} {:>10} {:>9} {:>10} {:>9} {:>9} {:>7} {:>7} {:>7} {:>12}",
        "mode",
        "faults/s",
        "thr CPU%",
        "harvest ms",
        "ns/acc 0",
        "ns/acc T",
        "ratio",
        "recall",
        "prec",
        "written/ep"
    );
    for mode in [UffdWpMode::Async, UffdWpMode::Sync] {
        let (mut base_ns, mut trk_ns, mut hv_ns, mut wall) = (0.0, 0.0, 0, 0.0);
        let (mut tp, mut fp, mut fneg, mut written) = (0, 0, 0, 0);
        let (mut faults, mut cpu) = (0, 0);
        for _ in 0..a.reps {
            base_ns += ns_per_access(&w.run_epoch(a.epoch).expect("epoch"));
            let mut src = match UffdWpSource::new(w.vm().page_map(), mode) {
                Ok(s) => s,
                Err(e) => {
                    println!("{:>6} unavailable: {e}", mode.as_str());
                    break;
                }
            };
            let s0 = src.stats().fault;
            let r = w.run_epoch(a.epoch).expect("epoch");
            let s1 = src.stats().fault;
            trk_ns += ns_per_access(&r);
            wall += r.elapsed.as_secs_f64();
            faults += s1.faults - s0.faults;
            cpu += s1.cpu_ns - s0.cpu_ns;
            let h = src.harvest().expect("harvest");
            hv_ns += h.cost.ns;
            let truth = &w.ground_truth(r.epoch).expect("truth").written;
            let c = h.accessed.confusion(truth);
            (tp, fp, fneg) = (tp + c.true_pos, fp + c.false_pos, fneg + c.false_neg);
            written += truth.count();
        }
        if wall == 0.0 {
            continue;
        }
        let reps = a.reps as f64;
        println!(
            "{:>6} {:>10.0} {:>9.2} {:>10.2} {:>9.2} {:>9.2} {:>7.2} {:>7.3} {:>7.3} {:>12}",
            mode.as_str(),
            faults as f64 / wall,
            cpu as f64 / 1e9 / wall * 100.0,
            hv_ns as f64 / 1e6 / reps,
            base_ns / reps,
            trk_ns / reps,
            trk_ns / base_ns,
            tp as f64 / (tp + fneg).max(1) as f64,
            tp as f64 / (tp + fp).max(1) as f64,
            written / a.reps as u64
        );
    }
    verify_and_finish(w);
}

/// Checks every word the guest wrote, prints the count, and stops the guest.
fn verify_and_finish(mut w: Workload) {
    let v = w.verify().expect("verify");
    println!(
        "verify after all runs: {} words, {} mismatches",
        v.words, v.mismatches
    );
    w.finish().ok();
}

/// Runs a guest under continuous re-arming until a signal ends the process.
fn hold(a: &Args) {
    let mut w = start(a, Backing::Memfd);
    let src =
        UffdMinorSource::new(w.vm().page_map(), UffdMinorConfig::default()).expect("uffd-minor");
    let src = Arc::new(Mutex::new(src));
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, st2) = (src.clone(), stop.clone());
    std::thread::spawn(move || {
        while !st2.load(Ordering::Relaxed) {
            let _ = s2.lock().map(|mut s| s.harvest());
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    println!("armed {}", std::process::id());
    std::io::stdout().flush().ok();
    let t = Instant::now();
    for n in 1.. {
        let r = w.run_epoch(a.epoch).expect("epoch");
        let faults = src.lock().map(|s| s.stats().fault.faults).unwrap_or(0);
        println!("epoch {n} accesses {} faults {faults}", r.total_ops());
        std::io::stdout().flush().ok();
        if t.elapsed() > Duration::from_secs(600) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
}

fn main() {
    // First, before any thread: SIGINT/SIGTERM then unregister the ranges and exit 128+signo.
    install_signal_cleanup().expect("signal cleanup");
    agelab_mglru::host_guard::install_panic_hook();
    let a = parse_args();
    if a.cmd == "minor" || a.cmd == "wp" {
        println!("{}", agelab_vmm::HostProfile::measure());
    }
    match a.cmd.as_str() {
        "minor" => minor(&a),
        "wp" => wp(&a),
        "hold" => hold(&Args {
            mem_mib: a.mem_mib.min(64),
            epoch: Duration::from_millis(100),
            spec: "uniform:op=mix".into(),
            ..a
        }),
        other => {
            eprintln!("uffd_bench: unknown command {other} (minor, wp, hold)");
            std::process::exit(2)
        }
    }
}
