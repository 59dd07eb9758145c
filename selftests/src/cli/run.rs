//! `agelab run`: boot a guest, run a workload in epochs, report throughput and exits.

use super::check::{self, InputError, EXIT_INPUT};
use crate::units::{parse_duration, parse_size};
use agelab_mglru::engine::report::{pass_summary, EngineReport, PassJson};
use agelab_mglru::engine::{AgeHeatmap, WorkingSetHistogram};
use agelab_mglru::lru_gen_run::{engine_generations, KernelAging, KernelLruGenReport};
use agelab_mglru::selfcheck::{self, AccuracyError, AccuracyGate, SelfcheckError, SelfcheckReport};
use agelab_mglru::sources::catalog::{self, SourceKind};
use agelab_mglru::sources::uffd_minor::{self, ArmPolicy, GuidedStats, UffdMinorError};
use agelab_mglru::{
    AccessKinds, Engine, EngineConfig, EngineError, Observes, OracleSource, PassTruth, SourceView,
};
use agelab_vmm::workload::{Workload, WorkloadError, WorkloadSpec};
use agelab_vmm::{Backing, MemoryError, Vm, VmConfig, VmError};
use clap::Args;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Options of `agelab run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Guest test memory (e.g. 512M, 2G).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub mem: u64,
    /// Number of vCPUs (one host thread each).
    #[arg(long, default_value_t = 2)]
    pub vcpus: usize,
    /// Workload, `PATTERN[:key=value,...]`; see `agelab workloads`.
    #[arg(long, default_value = "hotcold:hot=10%,p=100%,op=read", value_parser = parse_workload)]
    pub workload: WorkloadSpec,
    /// How long the workload runs.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Length of one epoch (one aging pass per epoch).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Backing of guest memory: `anon` (4 KiB pages, MADV_NOHUGEPAGE), `memfd`, `file:PATH`,
    /// `thp` (2 MiB transparent huge pages), `hugetlb`. The kernel KVM selftests' names work too:
    /// `anonymous` = anon, `anonymous_thp` = thp, `shmem` = memfd, `anonymous_hugetlb` and
    /// `anonymous_hugetlb_2mb` = hugetlb.
    #[arg(long, default_value = "memfd", value_parser = parse_backing)]
    pub backing: Backing,
    /// Memslots the test memory is split into.
    #[arg(long, default_value_t = 1)]
    pub slots: usize,
    /// Fill memory with the integrity pattern first and verify every page at the end.
    #[arg(long)]
    pub verify: bool,
    /// Access sources feeding the aging engine (comma-separated; `auto` = every source that can
    /// see accesses here; `oracle` adds the ground truth itself, for validation runs).
    #[arg(long, default_value = "auto", value_parser = parse_sources)]
    pub sources: SourceList,
    /// uffd-minor: guest faults per second allowed; pages are then sampled uniformly each pass
    /// (default: arm every page, exact).
    #[arg(long)]
    pub fault_budget: Option<u64>,
    /// uffd-minor arming: `all` (every page each pass), `sample:BUDGET` (faults/s),
    /// `oldest[:N]` (the engine's N oldest generations, so hot young pages do not fault every
    /// pass), `oldest:N+S` (plus S younger pages sampled) or `regions[:S[:P%]]` (the 2 oldest
    /// generations sampled by region, S pages per region, a faulting sample promoting its
    /// region; faults held to P % of guest time). `--fault-budget` means `sample:`.
    #[arg(long, default_value = "oldest:2", value_parser = parse_uffd_arm)]
    pub uffd_arm: ArmPolicy,
    /// Number of generations the engine keeps (2..=16).
    #[arg(long, default_value_t = 4)]
    pub gens: usize,
    /// Write a heatmap of page age over time (guest address × time) to this SVG file.
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
    /// Write an HTML report (`index.html`: heatmap, generations, per-pass precision/recall,
    /// working set; host facts) and `report.json` into this directory (created).
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
    /// Print only the final engine table, not one per aging pass.
    #[arg(long)]
    pub quiet: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Skip the startup self-check of the sources against a guest's known read and write sets.
    #[arg(long, conflicts_with = "require_accurate")]
    pub no_selfcheck: bool,
    /// Fail (exit 1) when a source named in --sources is unavailable, when no available source
    /// observes the workload's kind of access, or when a source's self-check recall is below
    /// RECALL (0..1, or a percentage).
    #[arg(long, value_name = "RECALL", num_args = 0..=1, require_equals = true,
          default_missing_value = "0.99", value_parser = parse_recall)]
    pub require_accurate: Option<f64>,
}

fn parse_recall(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|e| format!("{s}: {e}"))?;
    let v = if s.ends_with('%') || v > 1.0 {
        v / 100.0
    } else {
        v
    };
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s}: recall must be within 0..1 (or 0%..100%)"))
    }
}

fn parse_uffd_arm(s: &str) -> Result<ArmPolicy, String> {
    s.parse()
        .map_err(|e: agelab_mglru::sources::uffd_minor::ArmPolicyError| e.to_string())
}

fn parse_workload(s: &str) -> Result<WorkloadSpec, String> {
    s.parse()
        .map_err(|e: agelab_vmm::workload::WorkloadSpecError| e.to_string())
}

/// A checked list of access source names: every source (`auto` expanded), and those named
/// explicitly (which `--require-accurate` insists on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceList(pub Vec<SourceKind>, pub Vec<SourceKind>);

fn parse_sources(s: &str) -> Result<SourceList, String> {
    let all = catalog::parse_list(s).map_err(|e| e.to_string())?;
    let named = catalog::named_in(s).map_err(|e| e.to_string())?;
    Ok(SourceList(all, named))
}

fn parse_backing(s: &str) -> Result<Backing, String> {
    s.parse().map_err(|e: MemoryError| e.to_string())
}

/// Errors of `agelab run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Input the user can fix, found before anything ran.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The workload failed.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The aging engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The SVG could not be written.
    #[error("writing {path}: {err}")]
    Svg {
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        err: std::io::Error,
    },
    /// The HTML report could not be written.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    /// The self-check could not run.
    #[error(transparent)]
    Selfcheck(#[from] SelfcheckError),
    /// Guided uffd-minor arming failed.
    #[error(transparent)]
    UffdArm(#[from] UffdMinorError),
    /// A source is less accurate than `--require-accurate` asks.
    #[error(transparent)]
    Inaccurate(#[from] AccuracyError),
    /// Verification found corrupted words.
    #[error("data integrity: {mismatches} of {words} words wrong, first at {first:#x?}")]
    Integrity {
        /// Wrong words.
        mismatches: u64,
        /// Words checked.
        words: u64,
        /// First bad addresses.
        first: Vec<u64>,
    },
}

impl RunError {
    /// Exit code: 2 for input the user can fix, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Input(_)
            | RunError::Vm(VmError::Config(_))
            | RunError::Workload(WorkloadError::TooSmall { .. })
            | RunError::Engine(EngineError::Policy(_)) => EXIT_INPUT,
            RunError::Vm(VmError::Memory(e))
            | RunError::Selfcheck(SelfcheckError::Vm(VmError::Memory(e)))
                if e.is_user_fixable() =>
            {
                EXIT_INPUT
            }
            _ => 1,
        }
    }
}

/// Per-vCPU totals.
#[derive(Debug, Clone, Serialize)]
pub struct VcpuReport {
    /// Accesses.
    pub ops: u64,
    /// Mean ns per access.
    pub ns_per_access: f64,
}

/// One epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// Accesses by all vCPUs.
    pub ops: u64,
    /// Distinct pages read (ground truth).
    pub pages_read: u64,
    /// Distinct pages written (ground truth).
    pub pages_written: u64,
    /// Epoch wall time in ms.
    pub ms: f64,
}

/// Everything `agelab run` reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// vCPUs.
    pub vcpus: usize,
    /// Test memory bytes.
    pub mem_bytes: u64,
    /// Backing.
    pub backing: String,
    /// Memslots.
    pub slots: usize,
    /// Workload spec, normalised.
    pub workload: String,
    /// VM creation time in ms.
    pub setup_ms: f64,
    /// Per vCPU.
    pub vcpu: Vec<VcpuReport>,
    /// Per epoch.
    pub epochs: Vec<EpochReport>,
    /// Per aging pass: time, generations after it, each source's precision and recall.
    pub passes: Vec<PassJson>,
    /// Pages by idle time at the end (`edges_ms`, `pages` per bucket, `reclaimed`).
    pub working_set: WorkingSetHistogram,
    /// Page age over time (`--svg`, `--report`): rows of guest pages × passes, mean age in ms
    /// (`null` for a row with no resident page); `null` when not recorded.
    pub heatmap: Option<AgeHeatmap>,
    /// Exit counters summed over vCPUs.
    pub exits: serde_json::Map<String, serde_json::Value>,
    /// Why the run ended.
    pub exit_reason: String,
    /// Integrity check result (words wrong), when `--verify`.
    pub verify_mismatches: Option<u64>,
    /// The engine: generations, sources (precision/recall), aging cost, tiers.
    #[serde(flatten)]
    pub engine: EngineReport,
    /// Set when no available source observes a kind of access the workload makes: why (pages
    /// touched only that way age out although in use); `null` otherwise.
    pub blind: Option<String>,
    /// The startup self-check of the sources.
    pub selfcheck: Option<SelfcheckReport>,
    /// uffd-minor arming (`--uffd-arm`) and, when guided, what it armed and the guest's faults.
    pub uffd_arm: String,
    /// Totals of guided arming (`--uffd-arm oldest...`).
    pub uffd_guided: Option<GuidedStats>,
    /// The kernel's lru_gen generations of the VM's memcg after the run, as data: the memcg
    /// (path, id), per generation seq/age_ms/anon/file summed over nodes, and `memcg_pages` vs
    /// `guest_pages` (the memcg holds every guest page plus the VMM's own).
    pub kernel_lru_gen: Option<KernelLruGenReport>,
    /// The same beside the engine's generations, as a text table (human report only).
    #[serde(skip)]
    pub kernel_lru_gen_table: String,
    /// Final engine table (debugfs style).
    #[serde(skip)]
    pub table: String,
    /// Working-set histogram as text.
    #[serde(skip)]
    pub histogram: String,
}

/// Checks everything the user can fix before any VM exists.
pub fn check_input(args: &RunArgs) -> Result<(), InputError> {
    check::in_range("--vcpus", args.vcpus, 1..=256)?;
    check::in_range("--slots", args.slots, 1..=64)?;
    check::generations(args.gens)?;
    check::memory(&args.backing, args.mem, args.slots)?;
    if let Some(path) = &args.svg {
        check::output_path("--svg", path)?;
    }
    if let Some(dir) = &args.report {
        check::output_dir("--report", dir)?;
    }
    Ok(())
}

/// The self-check VM's backing for the run's: a `file:PATH` backing becomes a fresh unlinked
/// file in PATH's directory (same filesystem), so the self-check leaves PATH to the run.
fn selfcheck_backing(backing: &Backing) -> Backing {
    match backing {
        Backing::File(p) if !p.is_dir() => Backing::File(match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => ".".into(),
        }),
        b => b.clone(),
    }
}

/// Runs the command.
pub fn run(args: &RunArgs) -> Result<RunReport, RunError> {
    check_input(args)?;
    let workload_kinds = AccessKinds::of(args.workload.op);
    let oracle_view = [SourceView {
        name: SourceKind::Oracle.name(),
        observes: SourceKind::Oracle.observes(),
        unavailable: None,
    }];
    let with_oracle = args.sources.0.contains(&SourceKind::Oracle);
    // Before any thread exists: memcg, lru_gen knobs and kdamonds are restored on SIGINT/SIGTERM.
    if let Err(e) = agelab_mglru::host_guard::install_signal_cleanup() {
        eprintln!("agelab run: {e}");
    }
    let selfcheck = if args.no_selfcheck {
        None
    } else {
        let r = selfcheck::run(&selfcheck::SelfcheckOptions {
            mem_bytes: args.mem.min(64 << 20),
            backing: selfcheck_backing(&args.backing),
            sources: selfcheck::sources_for_run(&args.sources.0),
            ..Default::default()
        })?;
        if !args.json {
            println!("{}", r.table());
        }
        if let Some(min) = args.require_accurate {
            r.require_accurate(
                min,
                &AccuracyGate {
                    requested: &args.sources.1,
                    workload: workload_kinds,
                    unmeasured: if with_oracle { &oracle_view } else { &[] },
                },
            )?;
        }
        Some(r)
    };
    // The kernel's own aging of the VM's memory, shown beside the engine's when lru_gen is here.
    let mut kernel_aging = match KernelAging::available() {
        Ok(()) => match KernelAging::start(&format!("agelab-run-{}", std::process::id())) {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("agelab run: kernel lru_gen view off: {e}");
                None
            }
        },
        Err(_) => None,
    };
    let cfg = VmConfig {
        vcpus: args.vcpus,
        mem_bytes: args.mem,
        backing: args.backing.clone(),
        slots: args.slots,
        heap_bytes: agelab_vmm::workload::heap_bytes(&args.workload, args.mem),
        dirty_ring_entries: catalog::wants_dirty_ring(&args.sources.0).then_some(4096),
        ..Default::default()
    };
    let mut vm = Vm::new(cfg)?;
    // The memcg holds every guest page whatever the backing, so the kernel's generations cover
    // the guest (untouched memfd pages would otherwise be charged nowhere, or wherever faulted).
    if let Some(k) = &kernel_aging {
        if let Err(e) = k.charge_guest(&vm) {
            eprintln!("agelab run: kernel lru_gen view: {e}");
        }
    }
    let setup = vm.setup_time();
    let map = vm.page_map().clone();
    let pages = map.len();
    let config = EngineConfig {
        policy: agelab_mglru::AgingPolicy {
            max_gens: args.gens,
            ..Default::default()
        },
        heatmap_rows: (args.svg.is_some() || args.report.is_some()).then_some(256),
        ..Default::default()
    };
    let mut engine = Engine::new(map, config)?;
    let uffd_arm = match args.fault_budget {
        Some(b) => ArmPolicy::Sample {
            budget_faults_per_sec: b,
        },
        None => args.uffd_arm,
    };
    let (sources, mut guide) = catalog::build_guided(
        &args.sources.0,
        &mut vm,
        catalog::BuildOptions {
            fault_budget: args.fault_budget,
            interval: Some(args.interval),
            uffd_arm: Some(uffd_arm),
            ..Default::default()
        },
    );
    for s in sources {
        engine.add_source(s);
    }
    if let Some(g) = guide.as_mut() {
        g.arm_from(engine.generations())?;
    }
    let oracle = if with_oracle {
        let (tx, rx) = std::sync::mpsc::channel();
        engine.add_source(Box::new(OracleSource::from_channel(pages, rx)));
        Some(tx)
    } else {
        None
    };
    let blind = agelab_mglru::source::blindness(
        workload_kinds,
        engine.sources().map(|s| SourceView {
            name: &s.name,
            observes: s.observes.unwrap_or(Observes::Presence),
            unavailable: (!s.available).then(|| s.reason.as_deref().unwrap_or("unavailable")),
        }),
    );
    if let (Some(why), false) = (&blind, args.json) {
        eprintln!("agelab run: BLIND: {why}");
    }
    let mut wl = Workload::start(vm, args.workload.clone())?;
    if args.verify {
        wl.fill()?;
    }
    let mut epochs = Vec::new();
    let mut passes = Vec::new();
    let mut ops = vec![0u64; args.vcpus];
    let mut busy = vec![Duration::ZERO; args.vcpus];
    let t0 = Instant::now();
    let mut last_progress = Instant::now();
    while t0.elapsed() < args.duration {
        let left = args.duration.saturating_sub(t0.elapsed());
        let r = wl.run_epoch(args.interval.min(left).max(Duration::from_millis(1)))?;
        let truth = wl.ground_truth(r.epoch).expect("epoch just ran");
        let split = PassTruth {
            read: truth.read.clone(),
            written: truth.written.clone(),
        };
        if let Some(tx) = &oracle {
            let _ = tx.send(split.accessed());
        }
        let pass = engine.run_pass_split(&split)?;
        passes.push(PassJson::of(&pass, &engine));
        if let Some(g) = guide.as_mut() {
            let blocked = uffd_minor::budget::stalled(r.elapsed, &r.vcpu_cpu, &r.vcpu_runq_wait);
            g.observe_epoch(r.elapsed, r.vcpu_cpu.len(), blocked);
            g.arm_from(engine.generations())?;
        }
        let kernel_view = kernel_aging.as_mut().map(|k| k.age());
        if !args.json && !args.quiet {
            println!("{}", pass_summary(&pass));
            println!("{}", engine.table());
            match &kernel_view {
                Some(Ok(v)) => println!("{}", v.side_by_side(&engine_generations(&engine))),
                Some(Err(e)) => println!("kernel lru_gen: {e}"),
                None => {}
            }
        }
        for v in 0..args.vcpus {
            ops[v] += r.ops[v];
            busy[v] += r.elapsed;
        }
        epochs.push(EpochReport {
            ops: r.total_ops(),
            pages_read: truth.read.count(),
            pages_written: truth.written.count(),
            ms: r.elapsed.as_secs_f64() * 1e3,
        });
        if !args.json && last_progress.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  ... {:.0}/{:.0} s",
                t0.elapsed().as_secs_f64(),
                args.duration.as_secs_f64()
            );
            last_progress = Instant::now();
        }
    }
    let verify_mismatches = if args.verify {
        let v = wl.verify()?;
        if v.mismatches > 0 {
            return Err(RunError::Integrity {
                mismatches: v.mismatches,
                words: v.words,
                first: v.first_bad,
            });
        }
        Some(0)
    } else {
        None
    };
    let vm = wl.finish()?;
    let kernel_lru_gen = kernel_aging.as_ref().and_then(|k| match k.report(pages) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("agelab run: kernel lru_gen view: {e}");
            None
        }
    });
    let kernel_lru_gen_table = match (&kernel_aging, &kernel_lru_gen) {
        (Some(k), Some(r)) => k.view().ok().map_or_else(String::new, |v| {
            format!(
                "{}forced aging: {:.2} ms per pass (caps {}); memcg {} pages, guest {} pages",
                v.side_by_side(&engine_generations(&engine)),
                r.aging_ms_per_pass,
                r.caps,
                r.memcg_pages,
                r.guest_pages
            )
        }),
        _ => String::new(),
    };
    if let (Some(path), Some(h)) = (&args.svg, engine.heatmap()) {
        let title = format!("agelab: page age over time — {}", args.workload);
        std::fs::write(path, h.to_svg(&title)).map_err(|err| RunError::Svg {
            path: path.clone(),
            err,
        })?;
    }
    let mut exits = serde_json::Map::new();
    let sum = |f: &dyn Fn(&agelab_vmm::vcpu::ExitCounters) -> u64| {
        (0..args.vcpus).map(|v| f(vm.exits(v))).sum::<u64>()
    };
    use std::sync::atomic::Ordering::Relaxed;
    exits.insert("ucall".into(), sum(&|e| e.ucall.load(Relaxed)).into());
    exits.insert("intr".into(), sum(&|e| e.intr.load(Relaxed)).into());
    exits.insert(
        "dirty_ring_full".into(),
        sum(&|e| e.ring_full.load(Relaxed)).into(),
    );
    exits.insert("fatal".into(), sum(&|e| e.fatal.load(Relaxed)).into());
    let report = RunReport {
        vcpus: args.vcpus,
        mem_bytes: args.mem,
        backing: args.backing.to_string(),
        slots: args.slots,
        workload: args.workload.to_string(),
        setup_ms: setup.as_secs_f64() * 1e3,
        vcpu: (0..args.vcpus)
            .map(|v| VcpuReport {
                ops: ops[v],
                ns_per_access: if ops[v] == 0 {
                    0.0
                } else {
                    busy[v].as_nanos() as f64 / ops[v] as f64
                },
            })
            .collect(),
        epochs,
        passes,
        working_set: engine.histogram(),
        heatmap: engine.heatmap().cloned(),
        exits,
        exit_reason: "completed: every vCPU reported DONE".into(),
        verify_mismatches,
        blind,
        uffd_arm: uffd_arm.to_string(),
        uffd_guided: guide.as_ref().map(|g| g.stats()),
        selfcheck,
        kernel_lru_gen,
        kernel_lru_gen_table,
        engine: engine.report(),
        table: engine.table(),
        histogram: engine.histogram().to_text(),
    };
    if let Some(dir) = &args.report {
        let path = crate::report::write_run(dir, &report_params(args, uffd_arm), &report)?;
        if !args.json {
            eprintln!("agelab run: report written to {}", path.display());
        }
    }
    Ok(report)
}

/// The run's parameters as the report shows them.
fn report_params(args: &RunArgs, uffd_arm: ArmPolicy) -> Vec<(String, String)> {
    let mut p = vec![
        ("--workload", args.workload.to_string()),
        ("--mem", format!("{} MiB", args.mem >> 20)),
        ("--vcpus", args.vcpus.to_string()),
        ("--backing", args.backing.to_string()),
        ("--slots", args.slots.to_string()),
        ("--duration", format!("{:?}", args.duration)),
        ("--interval", format!("{:?}", args.interval)),
        (
            "--sources",
            args.sources
                .0
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("--uffd-arm", uffd_arm.to_string()),
        ("--gens", args.gens.to_string()),
        ("--verify", args.verify.to_string()),
    ];
    if let Some(r) = args.require_accurate {
        p.push(("--require-accurate", r.to_string()));
    }
    p.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Prints the report as text; a run blind to its workload says so first.
pub fn print_text(r: &RunReport) {
    if let Some(why) = &r.blind {
        println!("BLIND: {why}; pages the workload touches only that way age out although in use, they are not cold");
    }
    println!(
        "agelab run: {} vCPUs, {} MiB {} in {} memslot(s), workload {}",
        r.vcpus,
        r.mem_bytes >> 20,
        r.backing,
        r.slots,
        r.workload
    );
    println!("setup: {:.1} ms", r.setup_ms);
    println!(
        "{:>6} {:>14} {:>12} {:>14} {:>9}",
        "epoch", "ops", "pages_read", "pages_written", "ms"
    );
    for (i, e) in r.epochs.iter().enumerate() {
        println!(
            "{:>6} {:>14} {:>12} {:>14} {:>9.1}",
            i + 1,
            e.ops,
            e.pages_read,
            e.pages_written,
            e.ms
        );
    }
    for (v, c) in r.vcpu.iter().enumerate() {
        println!("vcpu {v}: {} ops, {:.2} ns/access", c.ops, c.ns_per_access);
    }
    let unseen = if r.blind.is_some() {
        " (BLIND: old generations hold unobserved pages, not cold ones)"
    } else {
        ""
    };
    println!("\nfinal generations{unseen}:\n{}", r.table);
    println!("working set by age:\n{}", r.histogram);
    if !r.kernel_lru_gen_table.is_empty() {
        println!("kernel lru_gen vs engine:\n{}", r.kernel_lru_gen_table);
    }
    println!(
        "{:<16} {:>9} {:>10} {:>8} {:>12}  reason",
        "source", "available", "precision", "recall", "harvest_us"
    );
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.1}%", x * 100.0));
    for s in &r.engine.sources {
        println!(
            "{:<16} {:>9} {:>10} {:>8} {:>12.1}  {}",
            s.name,
            if s.available { "yes" } else { "no" },
            pct(s.precision),
            pct(s.recall),
            s.harvest_ns as f64 / 1e3,
            s.reason
        );
    }
    println!(
        "aging: {} passes, bookkeeping {} ns per GiB per pass",
        r.engine.aging.passes, r.engine.aging.ns_per_gib
    );
    if let Some(g) = &r.uffd_guided {
        println!(
            "uffd-minor arming {}: {} armings, {:.0} pages armed per pass, {} guest faults",
            r.uffd_arm,
            g.arms,
            g.pages_armed as f64 / g.arms.max(1) as f64,
            g.faults
        );
        if g.regions.regions > 0 {
            println!(
                "uffd-minor regions: {} now, {} splits, {} merges, {:.1} samples armed per pass, \
                 read budget {} faults/interval at {:.1} µs per fault",
                g.regions.regions,
                g.regions.splits,
                g.regions.merges,
                g.regions.samples_armed as f64 / g.arms.max(1) as f64,
                g.budget_faults,
                g.fault_cost_ns as f64 / 1e3
            );
        }
    }
    if let Some(m) = r.verify_mismatches {
        println!("verify: {m} words wrong");
    }
    let exits: Vec<String> = r.exits.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("exit: {}; exits: {}", r.exit_reason, exits.join(", "));
}
