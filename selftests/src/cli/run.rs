//! `agelab run`: its options, and the printing of what the run shows and reports. The run itself
//! is `agelab_mglru::session::run`.

use super::check::{self, InputError, ValueError};
use agelab_mglru::engine::report::pass_summary;
use agelab_mglru::lru_gen_aging::engine_generations;
use agelab_mglru::selfcheck::SelfcheckError;
use agelab_mglru::session::{
    self, run::AgingRunConfig, run::AgingRunError, run::RunEvent, AgingSessionError,
};
use agelab_mglru::sources::catalog::{self, CatalogError, SourceKind};
use agelab_mglru::sources::uffd_minor::{ArmPolicy, ArmPolicyError};
use agelab_mglru::EngineError;
use agelab_util::exit::{ExitClass, HasExitClass};
use agelab_util::progress::ProgressLine;
use agelab_util::units::{parse_duration, parse_size};
use agelab_vmm::workload::{WorkloadError, WorkloadSpec, WorkloadSpecError};
use agelab_vmm::{Backing, MemoryError, VmError};
use clap::Args;
use std::time::Duration;

pub use agelab_mglru::session::run::RunReport;

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
    /// `thp` (2 MiB transparent huge pages), `hugetlb`, `mthp-SIZE` (anonymous multi-size THP,
    /// e.g. `mthp-64k`; the size is turned on for the run, journaled), `memfd-mthp-SIZE` (shmem
    /// large folios). The kernel KVM selftests' names work too:
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
    /// Print only the final engine table, not one per aging pass, and no progress line (the
    /// line on stderr, rewritten in place, appears only when stderr is a terminal).
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
    /// RECALL (a fraction in [0, 1] like 0.99, or a percentage like 99%).
    #[arg(long, value_name = "RECALL", num_args = 0..=1, require_equals = true,
          default_missing_value = "0.99", value_parser = parse_recall)]
    pub require_accurate: Option<f64>,
}

/// `--require-accurate`'s RECALL: a fraction in [0, 1] (`0.99`) or a percentage in [0 %, 100 %]
/// with its sign (`99%`). A bare number above 1 is refused rather than read as a percentage:
/// `1.5` would otherwise silently mean 1.5 %.
fn parse_recall(s: &str) -> Result<f64, ValueError> {
    let refuse = || ValueError::NotExpected {
        value: s.to_string(),
        expected: "recall is a fraction in [0, 1] like 0.99 or a percentage like 99%",
    };
    let (number, scale) = match s.strip_suffix('%') {
        Some(pct) => (pct, 100.0),
        None => (s, 1.0),
    };
    let v: f64 = number.parse().map_err(|_| refuse())?;
    let v = v / scale;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(refuse())
    }
}

fn parse_uffd_arm(s: &str) -> Result<ArmPolicy, ArmPolicyError> {
    s.parse()
}

fn parse_workload(s: &str) -> Result<WorkloadSpec, WorkloadSpecError> {
    s.parse()
}

/// A checked list of access source names: every source (`auto` expanded), and those named
/// explicitly (which `--require-accurate` insists on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceList(pub Vec<SourceKind>, pub Vec<SourceKind>);

fn parse_sources(s: &str) -> Result<SourceList, CatalogError> {
    let all = catalog::parse_list(s)?;
    let named = catalog::named_in(s)?;
    Ok(SourceList(all, named))
}

fn parse_backing(s: &str) -> Result<Backing, MemoryError> {
    s.parse()
}

/// Errors of `agelab run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Input the user can fix, found before anything ran.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The run failed.
    #[error(transparent)]
    Run(#[from] AgingRunError),
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
    /// The backing's large-folio size is missing here or could not be turned on.
    #[error(transparent)]
    LargeFolios(#[from] agelab_mglru::large_folios::LargeFolioError),
}

impl HasExitClass for RunError {
    /// Bad input for what the user can fix (options, guest memory the host cannot give, a
    /// workload too big for the memory, a policy out of range), a failure otherwise.
    fn exit_class(&self) -> ExitClass {
        match self {
            RunError::Input(_)
            | RunError::LargeFolios(agelab_mglru::large_folios::LargeFolioError::Missing {
                ..
            })
            | RunError::Run(AgingRunError::Vm(VmError::Config(_)))
            | RunError::Run(AgingRunError::Session(AgingSessionError::Workload(
                WorkloadError::TooSmall { .. },
            )))
            | RunError::Run(AgingRunError::Session(AgingSessionError::Engine(
                EngineError::Policy(_),
            ))) => ExitClass::BadInput,
            RunError::Run(AgingRunError::Vm(VmError::Memory(e)))
            | RunError::Run(AgingRunError::Selfcheck(SelfcheckError::Vm(VmError::Memory(e))))
                if e.is_user_fixable() =>
            {
                ExitClass::BadInput
            }
            _ => ExitClass::Failure,
        }
    }
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

/// The run as the library takes it.
fn config(args: &RunArgs) -> AgingRunConfig {
    AgingRunConfig {
        mem_bytes: args.mem,
        vcpus: args.vcpus,
        workload: args.workload.clone(),
        duration: args.duration,
        interval: args.interval,
        backing: args.backing.clone(),
        slots: args.slots,
        verify: args.verify,
        sources: args.sources.0.clone(),
        named_sources: args.sources.1.clone(),
        fault_budget: args.fault_budget,
        uffd_arm: args.uffd_arm,
        gens: args.gens,
        heatmap: args.svg.is_some() || args.report.is_some(),
        selfcheck: !args.no_selfcheck,
        require_accurate: args.require_accurate,
        progress: ProgressLine::on_terminal(args.quiet || args.json, "agelab run"),
    }
}

/// Prints what the run shows as it runs: the self-check table, warnings, blindness and (unless
/// `--quiet`) one summary and generation table per pass; nothing but warnings with `--json`.
fn print_event(args: &RunArgs, e: RunEvent) {
    match e {
        RunEvent::Selfcheck(r) if !args.json => println!("{}", r.table()),
        RunEvent::Warning(w) => eprintln!("agelab run: {w}"),
        RunEvent::Blind(why) if !args.json => eprintln!("agelab run: BLIND: {why}"),
        RunEvent::Pass {
            pass,
            engine,
            kernel,
        } if !args.json && !args.quiet => {
            println!("{}", pass_summary(pass));
            println!("{}", engine.table());
            match kernel {
                Some(Ok(v)) => println!("{}", v.side_by_side(&engine_generations(engine))),
                Some(Err(e)) => println!("kernel lru_gen: {e}"),
                None => {}
            }
        }
        _ => {}
    }
}

/// Runs the command.
pub fn run(args: &RunArgs) -> Result<RunReport, RunError> {
    check_input(args)?;
    let (_folio_size_on, note) = agelab_mglru::large_folios::prepare(&args.backing)?;
    if !note.is_empty() && !args.json {
        eprintln!("agelab run: {note}");
    }
    let cfg = config(args);
    let report = session::run::run(&cfg, &mut |e| print_event(args, e))?;
    if let (Some(path), Some(h)) = (&args.svg, &report.heatmap) {
        let title = format!("agelab: page age over time — {}", args.workload);
        std::fs::write(path, h.to_svg(&title)).map_err(|err| RunError::Svg {
            path: path.clone(),
            err,
        })?;
    }
    if let Some(dir) = &args.report {
        let path = crate::report::write_run(dir, &report_params(args, cfg.arm_policy()), &report)?;
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
    let kvm_faults = r.exits.get("kvm_pf_fixed").and_then(|v| v.as_u64());
    for s in &r.engine.sources {
        let mut reason = s.reason.clone();
        if let (Some(f), true) = (kvm_faults, s.false_positives > 0) {
            if s.name
                .parse::<SourceKind>()
                .is_ok_and(SourceKind::logs_kvm_writes)
            {
                reason = format!(
                    "{} pages logged written that the guest did not write: KVM fixed {f} faults \
                     in the run and logs a page dirty whenever it maps it writable, also on a read \
                     fault (a first touch, or after the host unmapped the page)",
                    s.false_positives
                );
            }
        }
        // What the self-check measured other sources doing to this one, armed beside it.
        let disturbed = r
            .selfcheck
            .as_ref()
            .map(|c| c.disturbance_of(&s.name))
            .filter(|d| !d.is_empty())
            .map_or(String::new(), |d| format!("disturbed by {d} (self-check)"));
        println!(
            "{:<16} {:>9} {:>10} {:>8} {:>12.1}  {}{}{}",
            s.name,
            if s.available { "yes" } else { "no" },
            pct(s.precision),
            pct(s.recall),
            s.harvest_ns as f64 / 1e3,
            reason,
            if reason.is_empty() || disturbed.is_empty() {
                ""
            } else {
                "; "
            },
            disturbed
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

#[cfg(test)]
mod tests {
    use super::parse_recall;

    #[test]
    fn recall_is_a_fraction_or_a_percentage_with_its_sign() {
        assert_eq!(parse_recall("0.99"), Ok(0.99));
        assert_eq!(parse_recall("99%"), Ok(0.99));
        assert_eq!(parse_recall("1"), Ok(1.0));
        assert_eq!(parse_recall("0"), Ok(0.0));
        assert_eq!(parse_recall("100%"), Ok(1.0));
        assert_eq!(parse_recall("0%"), Ok(0.0));
        for bad in [
            "1.5", "99", "150%", "-1", "-1%", "abc", "NaN", "inf", "%", "", "0.5%%",
        ] {
            let err = parse_recall(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
    }
}
