//! Read tracking's estimate error against its cost: uffd-minor page mode vs region sampling.
//!
//! For each workload, arms run one after another in every round (interleaved, so a co-running
//! job loads them alike): `none` (no read tracking: the baseline), page mode (every page of the
//! 2 oldest generations, with or without a read budget) and region sampling at several samples
//! per region and read budgets. Each arm is a fresh 1-vCPU guest on memfd memory aged by the
//! engine for `--passes` epochs; after `--warmup` passes it records
//!
//! - the estimate against the ground truth on the pages each harvest observed (precision,
//!   recall: a region's members count as observed, its samples' faults stand for all of them);
//! - the eviction view: pages watched idle through 4 intervals (what `engine-all`/
//!   `engine-regions` may evict) — of them, the share the guest touched in those 4 epochs (wrongly
//!   idle: each is a refault if evicted), and the share of the cold pages (untouched for 8
//!   epochs) found idle;
//! - cost: guest faults per second, the vCPU's blocked time in % of wall time (schedstat: wall −
//!   CPU − run-queue wait, the guest's stall), and guest operations per vCPU CPU second relative
//!   to the same round's `none` (mean ± 95% CI over rounds).
//!
//! Every guest runs in this process, one after another. A failed run is printed with its first
//! error (and the host ranges of its own and the two previous guests' memory, for a fault
//! address), counted, left out of its arm and never run again; the bench then exits 1.
//!
//! `agelab bench region [--mem MiB] [--spec SPEC]... [--arms none,pages,regions:2:2%,...]
//!  [--rounds N] [--passes N] [--warmup N] [--epoch-ms MS]`

use crate::args::{positive, ArgValueError};
use crate::cli::check::ValueError;
use agelab_mglru::host_guard::install_signal_cleanup;
use agelab_mglru::sources::uffd_minor::budget::stalled;
use agelab_mglru::sources::uffd_minor::guest::{GuidedGuest, GuidedGuestError};
use agelab_mglru::sources::uffd_minor::guided::percent_to_centi;
use agelab_mglru::sources::uffd_minor::{ArmPolicy, GuidedArming, ReadBudget, RegionConfig};
use agelab_util::stats::{median, Summary};
use agelab_vmm::workload::WorkloadSpec;
use agelab_vmm::{Confusion, PageSet};
use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Duration;

/// Pages watched idle this many intervals are eviction candidates (as in `engine-all`).
const IDLE_INTERVALS: u8 = 4;
/// Pages untouched this many epochs are cold.
const COLD_EPOCHS: usize = 8;
const GENS: usize = 8;

/// One arm of the sweep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arm {
    /// No read tracking.
    None,
    /// Every page of the 2 oldest generations; read budget in %.
    Pages(Option<f64>),
    /// Region sampling: samples per region, read budget in %.
    Regions(u64, Option<f64>),
}

impl std::fmt::Display for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = |b: &Option<f64>| b.map(|b| format!(", budget {b}%")).unwrap_or_default();
        match self {
            Arm::None => f.write_str("none"),
            Arm::Pages(x) => write!(f, "pages{}", b(x)),
            Arm::Regions(s, x) => write!(f, "regions {s}/region{}", b(x)),
        }
    }
}

fn parse_arm(s: &str) -> Option<Arm> {
    let pct = |b: &str| -> Option<f64> {
        let v: f64 = b.trim_end_matches('%').parse().ok()?;
        percent_to_centi(v).map(|_| v)
    };
    match s {
        "none" => Some(Arm::None),
        "pages" => Some(Arm::Pages(None)),
        _ if s.starts_with("pages:") => Some(Arm::Pages(Some(pct(&s[6..])?))),
        _ => match s.parse::<ArmPolicy>().ok()? {
            ArmPolicy::Regions {
                samples,
                budget_centi_pct,
            } => Some(Arm::Regions(
                samples,
                budget_centi_pct.map(|c| f64::from(c) / 100.0),
            )),
            _ => None,
        },
    }
}

/// The arms `agelab bench region` runs unless `--arms` says otherwise.
const DEFAULT_ARMS: &str = "none,pages,pages:2%,regions:1:2%,regions:2:2%,regions:4:2%,\
regions:8:2%,regions:2:0.5%,regions:2:1%,regions:2:5%";

/// The workloads it runs unless `--spec` says otherwise.
const DEFAULT_SPECS: [&str; 2] = [
    "hotcold:hot=20%,p=100%,op=read",
    "strided:stride=512,op=read",
];

/// An arm as `--arms` names it.
fn arm_arg(s: &str) -> Result<Arm, ValueError> {
    parse_arm(s).ok_or_else(|| ValueError::NotExpected {
        value: s.to_string(),
        expected: "not an arm (none, pages, pages:P%, regions:S, regions:S:P%)",
    })
}

/// Options of `agelab bench region`.
#[derive(Debug, clap::Args)]
pub struct RegionArgs {
    /// Guest memory, MiB.
    #[arg(long = "mem", value_name = "MiB", default_value_t = 64, value_parser = positive::<u64>)]
    mem_mib: u64,
    /// Workloads, one run each (repeatable; default: a hot/cold and a strided read).
    #[arg(long = "spec", value_name = "SPEC")]
    specs: Vec<String>,
    /// Arms, comma-separated: none, pages[:P%], regions:S[:P%].
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_ARMS, value_parser = arm_arg)]
    arms: Vec<Arm>,
    /// Rounds of every arm.
    #[arg(long, default_value_t = 3, value_parser = positive::<usize>)]
    rounds: usize,
    /// Passes per run.
    #[arg(long, default_value_t = 28)]
    passes: usize,
    /// Passes before recording (at least 8, fewer than --passes).
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// One epoch, ms.
    #[arg(long = "epoch-ms", value_name = "MS", default_value = "250", value_parser = epoch_ms)]
    epoch: Duration,
}

/// An epoch length given in milliseconds.
fn epoch_ms(s: &str) -> Result<Duration, ArgValueError> {
    positive::<u64>(s).map(Duration::from_millis)
}

type Args = RegionArgs;

/// What one arm measured in one round (after the warm-up).
#[derive(Clone, Debug, Default)]
struct Measured {
    ops_per_cpu_s: f64,
    faults_per_s: f64,
    stall_pct: f64,
    estimate: Confusion,
    idle: u64,
    idle_touched: u64,
    cold: u64,
    cold_idle: u64,
    regions: u64,
}

/// Why an arm's run failed.
#[derive(Debug, thiserror::Error)]
enum ArmError {
    /// The guest or its tracking failed.
    #[error(transparent)]
    Guest(#[from] GuidedGuestError),
    /// Verification found guest data changed.
    #[error("guest data changed under {arm}: {mismatches} words wrong")]
    Corrupted {
        /// The arm.
        arm: Arm,
        /// Wrong words.
        mismatches: u64,
    },
}

/// Host ranges of guest memory (start, end) of the guests this process ran, newest last, for a
/// failure's report (is a fault address one of an earlier guest's?).
type GuestRanges = Vec<(String, Vec<(u64, u64)>)>;

/// One arm in this process; a failure is printed with the host ranges of this and the earlier
/// guests' memory and counted in `failures`, never run again.
fn run_arm(
    a: &Args,
    spec: &str,
    arm: Arm,
    seen: &mut GuestRanges,
    failures: &mut u64,
) -> Option<Measured> {
    match try_arm(a, spec, arm, seen) {
        Ok(m) => Some(m),
        Err(e) => {
            *failures += 1;
            eprintln!("agelab bench region: {spec} {arm}: FAILED: {e}");
            for (name, ranges) in seen.iter().rev().take(3) {
                let r: Vec<String> = ranges
                    .iter()
                    .map(|(s, e)| format!("{s:#x}-{e:#x}"))
                    .collect();
                eprintln!(
                    "agelab bench region:   guest memory of {name}: {}",
                    r.join(" ")
                );
            }
            None
        }
    }
}

/// One arm in a fresh guest; see the module docs. The guest's memory ranges join `seen`.
fn try_arm(a: &Args, spec: &str, arm: Arm, seen: &mut GuestRanges) -> Result<Measured, ArmError> {
    let name = format!("guest {} ({spec}, {arm})", seen.len() + 1);
    let spec: WorkloadSpec = spec.parse().expect("workload parses");
    let setup = |g: GuidedArming| {
        let (g, budget) = match arm {
            Arm::Regions(samples, b) => (
                g.with_regions(RegionConfig {
                    samples,
                    ..RegionConfig::default()
                }),
                b,
            ),
            Arm::Pages(b) => (g, b),
            Arm::None => (g, None),
        };
        match budget {
            Some(b) => g.with_read_budget(ReadBudget::new(b)),
            None => g,
        }
    };
    let tracked = arm != Arm::None;
    let mut guest = match GuidedGuest::start(
        &spec,
        a.mem_mib << 20,
        GENS,
        a.epoch,
        tracked.then_some(&setup as &dyn Fn(GuidedArming) -> GuidedArming),
    ) {
        Err(GuidedGuestError::Unsupported(why)) => {
            eprintln!("agelab bench region: SKIP: {why}");
            std::process::exit(4);
        }
        other => other?,
    };
    seen.push((
        name,
        guest
            .engine()
            .map()
            .ranges()
            .iter()
            .map(|r| (r.hva, r.hva + r.pages * agelab_vmm::PAGE_SIZE))
            .collect(),
    ));
    let pages = guest.engine().generations().len();
    let mut recent: VecDeque<PageSet> = VecDeque::new();
    let mut m = Measured::default();
    let (mut per_cpu, mut wall, mut blocked, mut nfaults) = (Vec::new(), 0.0, 0.0, 0u64);
    for pass in 0..a.passes {
        let f0 = guest.fault_total();
        let e = guest.epoch()?;
        let r = &e.result;
        recent.push_front(e.touched.clone());
        recent.truncate(COLD_EPOCHS);
        if pass >= a.warmup {
            let cpu: Duration = r.vcpu_cpu.iter().sum();
            per_cpu.push(r.total_ops() as f64 / cpu.as_secs_f64().max(1e-9));
            wall += r.elapsed.as_secs_f64();
            blocked += stalled(r.elapsed, &r.vcpu_cpu, &r.vcpu_runq_wait).as_secs_f64();
            nfaults += guest.fault_total() - f0;
            if let Some(g) = guest.guide() {
                if let Some(c) = e.pass.sources.first().and_then(|s| s.confusion) {
                    m.estimate.true_pos += c.true_pos;
                    m.estimate.false_pos += c.false_pos;
                    m.estimate.false_neg += c.false_neg;
                }
                let idle = g.watched_idle(IDLE_INTERVALS);
                let mut touched4 = PageSet::new(pages);
                for s in recent.iter().take(usize::from(IDLE_INTERVALS)) {
                    touched4.union_with(s);
                }
                let mut cold = PageSet::full(pages);
                for s in &recent {
                    cold.subtract(s);
                }
                let mut x = idle.clone();
                x.intersect_with(&touched4);
                m.idle += idle.count();
                m.idle_touched += x.count();
                let mut y = idle;
                y.intersect_with(&cold);
                m.cold += cold.count();
                m.cold_idle += y.count();
            }
        }
        guest.rearm(&e)?;
    }
    m.ops_per_cpu_s = median(&mut per_cpu);
    m.faults_per_s = nfaults as f64 / wall.max(1e-9);
    m.stall_pct = blocked / wall.max(1e-9) * 100.0;
    m.regions = guest.guide().map_or(0, |g| g.stats().regions.regions);
    let v = guest.finish()?;
    if v.mismatches > 0 {
        return Err(ArmError::Corrupted {
            arm,
            mismatches: v.mismatches,
        });
    }
    Ok(m)
}

fn pct(num: u64, den: u64) -> String {
    if den == 0 {
        "n/a".into()
    } else {
        format!("{:.1}", num as f64 / den as f64 * 100.0)
    }
}

/// Runs the sweep and prints its table; exits 1 when a run failed, 2 for inconsistent options.
pub fn run(args: &RegionArgs) -> ExitCode {
    if args.warmup < COLD_EPOCHS || args.warmup >= args.passes {
        eprintln!(
            "agelab bench region: --warmup must be ≥ {COLD_EPOCHS} and < --passes (got --warmup {}, --passes {})",
            args.warmup, args.passes
        );
        return ExitCode::from(2);
    }
    let mut specs = args.specs.clone();
    if specs.is_empty() {
        specs = DEFAULT_SPECS.map(String::from).to_vec();
    }
    let a = RegionArgs {
        specs,
        arms: args.arms.clone(),
        ..*args
    };
    install_signal_cleanup().expect("signal cleanup");
    agelab_mglru::host_guard::install_panic_hook();
    println!("{}", agelab_vmm::HostProfile::measure());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "agelab bench region: {} MiB memfd, 1 vCPU, {} rounds × {} arms, {} passes of {} ms ({} warm-up), load {}",
        a.mem_mib,
        a.rounds,
        a.arms.len(),
        a.passes,
        a.epoch.as_millis(),
        a.warmup,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let mut failures = 0;
    let mut seen = GuestRanges::new();
    for spec in &a.specs {
        let mut runs: Vec<Vec<Option<Measured>>> = vec![Vec::new(); a.arms.len()];
        for round in 0..a.rounds {
            for (i, &arm) in a.arms.iter().enumerate() {
                let m = run_arm(&a, spec, arm, &mut seen, &mut failures);
                if let Some(m) = &m {
                    eprintln!(
                        "agelab bench region: {spec} round {round} {arm}: {:.0} ops/CPU-s, {:.0} faults/s, stall {:.2}%",
                        m.ops_per_cpu_s, m.faults_per_s, m.stall_pct
                    );
                }
                runs[i].push(m);
            }
        }
        let base = a.arms.iter().position(|&x| x == Arm::None);
        println!();
        println!("workload `{spec}`:");
        println!();
        println!(
            "| arm | estimate precision % | estimate recall % | idle pages touched % | cold pages found idle % | faults/s | guest stall % of wall | ops/vCPU-CPU-s vs none % | regions |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (i, arm) in a.arms.iter().enumerate() {
            let rs: Vec<&Measured> = runs[i].iter().flatten().collect();
            let sum = |f: fn(&Measured) -> u64| rs.iter().copied().map(f).sum::<u64>();
            let mean = |f: fn(&Measured) -> f64| {
                rs.iter().copied().map(f).sum::<f64>() / rs.len().max(1) as f64
            };
            let e = Confusion {
                true_pos: sum(|m| m.estimate.true_pos),
                false_pos: sum(|m| m.estimate.false_pos),
                false_neg: sum(|m| m.estimate.false_neg),
            };
            let rel = base.map(|b| {
                let ratios: Vec<f64> = runs[i]
                    .iter()
                    .zip(&runs[b])
                    .filter_map(|(m, n)| {
                        Some(m.as_ref()?.ops_per_cpu_s / n.as_ref()?.ops_per_cpu_s * 100.0)
                    })
                    .collect();
                let s = Summary::of(&ratios);
                format!("{:.1} ± {:.1}", s.mean, s.ci95.unwrap_or(f64::NAN))
            });
            let tracked = *arm != Arm::None;
            let or_na = |s: String| if tracked { s } else { "–".into() };
            println!(
                "| {arm} | {} | {} | {} | {} | {:.0} | {:.2} | {} | {} |",
                or_na(pct(e.true_pos, e.true_pos + e.false_pos)),
                or_na(pct(e.true_pos, e.true_pos + e.false_neg)),
                or_na(pct(sum(|m| m.idle_touched), sum(|m| m.idle))),
                or_na(pct(sum(|m| m.cold_idle), sum(|m| m.cold))),
                mean(|m| m.faults_per_s),
                mean(|m| m.stall_pct),
                rel.unwrap_or_else(|| "n/a".into()),
                or_na(format!("{:.0}", mean(|m| m.regions as f64))),
            );
        }
    }
    if failures > 0 {
        println!();
        println!("{failures} run(s) FAILED (each printed on stderr with its first error; left out of its arm, never run again)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
