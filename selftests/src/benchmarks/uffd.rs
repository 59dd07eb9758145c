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
//! `agelab bench uffd [minor|wp|hold] [--mem MiB] [--vcpus N] [--spec SPEC] [--epoch-ms MS]
//!  [--reps N] [--budgets 1000,10000,all] [--backing anon|memfd]`

use crate::args::{from_str, positive};
use crate::cli::check::ValueError;
use agelab_mglru::host_guard::install_signal_cleanup;
use agelab_mglru::sources::uffd_minor::{AccessEstimate, UffdMinorConfig, UffdMinorSource, Z95};
use agelab_mglru::sources::uffd_wp::{UffdWpMode, UffdWpSource};
use agelab_mglru::AccessSource;
use agelab_vmm::workload::{Workload, WorkloadSpec, WorkloadSpecError};
use agelab_vmm::{Backing, PageSet, Vm, VmConfig};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `agelab bench uffd` measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UffdBenchMode {
    /// uffd-minor per fault budget.
    #[default]
    Minor,
    /// uffd-wp (async + PAGEMAP_SCAN, and sync faults).
    Wp,
    /// A guest under continuous uffd-minor re-arming until SIGINT (the teardown test's child).
    Hold,
}

/// Options of `agelab bench uffd`.
#[derive(Debug, clap::Args)]
pub struct UffdArgs {
    /// What to measure.
    #[arg(value_enum, default_value_t = UffdBenchMode::Minor)]
    mode: UffdBenchMode,
    /// Guest memory, MiB.
    #[arg(long = "mem", value_name = "MiB", default_value_t = 256, value_parser = positive::<u64>)]
    mem_mib: u64,
    /// vCPUs.
    #[arg(long, default_value_t = 1, value_parser = positive::<usize>)]
    vcpus: usize,
    /// The workload.
    #[arg(long, default_value = "zipf-read:s=0.9", value_parser = workload_spec)]
    spec: String,
    /// One epoch, ms.
    #[arg(long = "epoch-ms", value_name = "MS", default_value_t = 500, value_parser = positive::<u64>)]
    epoch_ms: u64,
    /// Epochs per budget and way.
    #[arg(long, default_value_t = 3, value_parser = positive::<usize>)]
    reps: usize,
    /// Fault budgets per second, comma-separated (`all`: no budget).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000,all", value_parser = budget)]
    budgets: Vec<Option<u64>>,
    /// Guest memory backing (default: memfd for minor, anon for wp).
    #[arg(long, value_parser = from_str::<Backing>)]
    backing: Option<Backing>,
}

/// A workload spec that parses, kept as written (`wp` rewrites it).
fn workload_spec(s: &str) -> Result<String, WorkloadSpecError> {
    from_str::<WorkloadSpec>(s).map(|_| s.to_string())
}

/// A fault budget: faults per second (`10_000` allowed) or `all`.
fn budget(s: &str) -> Result<Option<u64>, ValueError> {
    match s {
        "all" => Ok(None),
        n => n
            .replace('_', "")
            .parse()
            .map(Some)
            .map_err(|_| ValueError::NotExpected {
                value: n.to_string(),
                expected: "not a number of faults per second or 'all'",
            }),
    }
}

/// The settings every mode reads.
struct Args {
    mem_mib: u64,
    vcpus: usize,
    spec: String,
    epoch: Duration,
    reps: usize,
    budgets: Vec<Option<u64>>,
    backing: Option<Backing>,
}

fn start(a: &Args, backing: Backing) -> Workload {
    let spec: WorkloadSpec = a.spec.parse().expect("--spec was checked when parsed");
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

/// The run's conditions as the tables' headings say them: memory (`pages` pages, then `detail`),
/// vCPUs, workload, epoch length and repeats.
fn conditions(a: &Args, w: &Workload, pages: u64, detail: &str) -> String {
    format!(
        "{} MiB ({pages} pages{detail}), {} vCPUs, {}, epochs of {} ms, {} reps",
        a.mem_mib,
        a.vcpus,
        w.spec(),
        a.epoch.as_millis(),
        a.reps
    )
}

fn fmt_budget(b: Option<u64>) -> String {
    b.map_or("all".into(), |b| b.to_string())
}

fn minor(a: &Args) {
    let mut w = start(a, a.backing.clone().unwrap_or(Backing::Memfd));
    let pages = w.vm().page_map().len();
    println!(
        "uffd-minor: {} per budget; harvest at epoch boundaries",
        conditions(a, &w, pages, "")
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
        budgets: a.budgets.clone(),
        ..*a
    };
    let mut w = start(&a, backing.clone());
    let pages = w.vm().page_map().len();
    println!(
        "uffd-wp: {}",
        conditions(&a, &w, pages, &format!(", {backing}"))
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

/// Runs the chosen measurement and prints its table.
pub fn run(args: &UffdArgs) -> ExitCode {
    // First, before any thread: SIGINT/SIGTERM then unregister the ranges and exit 128+signo.
    install_signal_cleanup().expect("signal cleanup");
    agelab_mglru::host_guard::install_panic_hook();
    let a = Args {
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        spec: args.spec.clone(),
        epoch: Duration::from_millis(args.epoch_ms),
        reps: args.reps,
        budgets: args.budgets.clone(),
        backing: args.backing.clone(),
    };
    if args.mode != UffdBenchMode::Hold {
        println!("{}", agelab_vmm::HostProfile::measure());
    }
    match args.mode {
        UffdBenchMode::Minor => minor(&a),
        UffdBenchMode::Wp => wp(&a),
        UffdBenchMode::Hold => hold(&Args {
            mem_mib: a.mem_mib.min(64),
            epoch: Duration::from_millis(100),
            spec: "uniform:op=mix".into(),
            ..a
        }),
    }
    ExitCode::SUCCESS
}
