//! `agelab reclaim`: proactive reclaim of a guest's memory under one or more policies, with the
//! refault SLO controller, zram swap for the run, and a benchmark table / JSON / SVG.

use super::check::{self, InputError, ValueError};
use agelab_mglru::host_guard;
use agelab_mglru::kernel::swap::{SwapError, SwapStatus, ZRAM_MIN_BYTES};
use agelab_mglru::kernel::zram_swap::{agelab_swap_devices, ZramSwap};
use agelab_mglru::reclaim::bench::{run_bench, table, BenchReport};
use agelab_mglru::reclaim::child::report_line;
use agelab_mglru::reclaim::policy::UnknownPolicy;
use agelab_mglru::reclaim::{
    parse_policies, plot, run_in_child, run_once, ControllerConfig, PolicyKind, ReclaimAction,
    ReclaimRunConfig, ReclaimRunError, ReclaimRunReport,
};
use agelab_util::exit::{ExitClass, HasExitClass};
use agelab_util::progress::ProgressLine;
use agelab_util::units::{parse_duration, parse_size};
use agelab_vmm::workload::{WorkloadSpec, WorkloadSpecError};
use agelab_vmm::{Backing, MemoryError, VmError};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `agelab reclaim`.
#[derive(Debug, Clone, Args)]
pub struct ReclaimArgs {
    /// Policies, comma-separated: none, random, fifo, engine-dirty, engine-all, engine-regions,
    /// oracle, lru-gen, memcg-limit, memcg-reclaim, damon, psi; `bench` = the first six, `all` = every one. A
    /// policy listed twice is a second arm (`none,none,...`: the A/A pair that shows the
    /// benchmark's resolution).
    #[arg(long, default_value = "bench", value_parser = parse_policy_list)]
    pub policy: PolicyList,
    /// Workload (repeatable); default: a read-heavy hot/cold and a phase-shift workload.
    #[arg(long, value_parser = parse_workload)]
    pub workload: Vec<WorkloadSpec>,
    /// Repetitions per policy and workload (≥ 5 for confidence intervals worth reading).
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    /// Guest test memory.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub mem: u64,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: usize,
    /// Backing of guest memory: `anon` (4 KiB pages, MADV_NOHUGEPAGE), `memfd`, `file:PATH`,
    /// `thp` (2 MiB transparent huge pages); also the kernel KVM selftests' names `anonymous`,
    /// `anonymous_thp`, `shmem`.
    #[arg(long, default_value = "memfd", value_parser = parse_backing)]
    pub backing: Backing,
    /// Length of each run.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Throughput counts only epochs after this much of each run (less than --duration;
    /// default: 2s, or a fifth of a run shorter than 10s).
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// `psi` and `damon`: target memory pressure, PSI some stall in % of wall time (TMO: 0.1);
    /// `psi` probes below it and backs off above, `damon` auto-tunes its quota toward it.
    #[arg(long, default_value_t = 0.1)]
    pub psi_target: f64,
    /// `damon`: DAMOS time quota, ms of scheme work per 1 s (DAMON_RECLAIM's default: 10; 0 =
    /// no time quota).
    #[arg(long, default_value_t = 10)]
    pub damon_quota_ms: u64,
    /// `engine-all`, `engine-regions`: guest slowdown uffd-minor faults may cost, % of guest
    /// time (faults per interval = this × interval ÷ the measured cost of one fault).
    #[arg(long, default_value = "2%", value_parser = parse_read_budget)]
    pub read_budget: f64,
    /// `engine-regions`: pages sampled per region (2 MiB regions at first) per interval.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub region_samples: u64,
    /// Control interval (one workload epoch).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Age gate: engine policies only reclaim pages idle this long; nothing is reclaimed earlier.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub min_age: Duration,
    /// Engine generations.
    #[arg(long, default_value_t = 8)]
    pub gens: usize,
    /// Scoring: pages untouched during the last WINDOW of a run are cold.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub cold_window: Duration,
    /// pageout (MADV_PAGEOUT) or cold (MADV_COLD).
    #[arg(long, default_value = "pageout", value_parser = parse_action)]
    pub action: ReclaimAction,
    /// SLO: refaults per minute, percent of the working set.
    #[arg(long, default_value_t = 0.2)]
    pub slo: f64,
    /// Cap: percent of guest memory per step period (TMO: 1 per 6 s).
    #[arg(long, default_value_t = 1.0)]
    pub max_step: f64,
    /// Period of the cap.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    pub step_period: Duration,
    /// Proportional gain.
    #[arg(long, default_value_t = 0.5)]
    pub kp: f64,
    /// Integral gain, per second.
    #[arg(long, default_value_t = 0.25)]
    pub ki: f64,
    /// Working-set window of the controller's refault rate.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub ws_window: Duration,
    /// Set up a free zram device (zram0, else a hot-added one) as swap of this size for the run
    /// when no swap other than agelab's is active (removed afterwards on every exit path; after a
    /// SIGKILL by the next agelab command or `agelab cleanup`). Swap agelab did not set up is used
    /// as is and never removed.
    #[arg(long, value_parser = parse_zram_size)]
    pub zram: Option<u64>,
    /// Write the plot to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress on stderr: neither the line rewritten in place (shown only when stderr is a
    /// terminal) nor one line per finished run.
    #[arg(long)]
    pub quiet: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Write an HTML report (`index.html`: saved memory vs throughput loss vs refaults per
    /// policy with intervals, resident memory over time; host facts) and `report.json` into
    /// this directory (created).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Internal: run the one policy × workload given in this process and print its report line
    /// for the parent (`memcg-limit` runs as such a child: the kernel's OOM killer may end it).
    #[arg(long, hide = true)]
    pub child_run: bool,
}

impl ReclaimArgs {
    /// `--warmup`, or by default 2 s, or a fifth of a run shorter than 10 s (a short run still
    /// measures something).
    pub fn warmup_or_default(&self) -> Duration {
        self.warmup
            .unwrap_or_else(|| Duration::from_secs(2).min(self.duration / 5))
    }
}

/// A checked list of policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyList(pub Vec<PolicyKind>);

fn parse_policy_list(s: &str) -> Result<PolicyList, UnknownPolicy> {
    parse_policies(s).map(PolicyList)
}

fn parse_read_budget(s: &str) -> Result<f64, ValueError> {
    s.trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|p| *p > 0.0 && *p <= 100.0)
        .ok_or_else(|| ValueError::NotExpected {
            value: s.to_string(),
            expected: "a percentage of guest time in (0, 100], e.g. 2%",
        })
}

/// A zram swap size: refused at parse time, before anything on the host changes, when it is
/// below what [`ZramSwap`] accepts.
fn parse_zram_size(s: &str) -> Result<u64, ValueError> {
    let bytes = parse_size(s).map_err(ValueError::Size)?;
    if bytes < ZRAM_MIN_BYTES {
        return Err(ValueError::ZramTooSmall {
            value: s.to_string(),
            bytes,
            min_mib: ZRAM_MIN_BYTES >> 20,
        });
    }
    Ok(bytes)
}

fn parse_workload(s: &str) -> Result<WorkloadSpec, WorkloadSpecError> {
    s.parse()
}

fn parse_backing(s: &str) -> Result<Backing, MemoryError> {
    s.parse()
}

fn parse_action(s: &str) -> Result<ReclaimAction, ValueError> {
    match s {
        "pageout" => Ok(ReclaimAction::PageOut),
        "cold" => Ok(ReclaimAction::Cold),
        _ => Err(ValueError::NotExpected {
            value: s.to_string(),
            expected: "expected pageout or cold",
        }),
    }
}

/// The default workloads: read-heavy hot/cold (the dirty log cannot see it) and a phase shift.
pub const DEFAULT_WORKLOADS: &[&str] = &[
    "hotcold:hot=20%,p=100%,op=read",
    "phase:ws=20%,shift=10%,every=3s,op=mix",
];

/// Errors of `agelab reclaim`.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimCliError {
    /// Input the user can fix, found before anything ran.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Swap setup failed.
    #[error(transparent)]
    Swap(#[from] SwapError),
    /// A run failed.
    #[error(transparent)]
    Run(#[from] ReclaimRunError),
    /// The HTML report could not be written.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    /// Signal cleanup could not be installed.
    #[error(transparent)]
    Guard(#[from] host_guard::HostGuardError),
    /// The SVG or JSON file could not be written.
    #[error("writing {path}: {err}")]
    Svg {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
}

impl HasExitClass for ReclaimCliError {
    /// Bad input for what the user can fix (options, swap or guest memory the host cannot
    /// give), a failure otherwise.
    fn exit_class(&self) -> ExitClass {
        match self {
            ReclaimCliError::Input(_)
            | ReclaimCliError::Swap(SwapError::TooSmall { .. })
            | ReclaimCliError::Run(ReclaimRunError::Vm(VmError::Config(_))) => ExitClass::BadInput,
            ReclaimCliError::Run(ReclaimRunError::Vm(VmError::Memory(e)))
                if e.is_user_fixable() =>
            {
                ExitClass::BadInput
            }
            _ => ExitClass::Failure,
        }
    }
}

/// Checks everything the user can fix before any VM exists.
pub fn check_input(args: &ReclaimArgs) -> Result<(), InputError> {
    check::in_range("--vcpus", args.vcpus, 1..=256)?;
    if args.reps == 0 {
        return Err(InputError::OutOfRange {
            option: "--reps",
            value: "0".into(),
            why: "at least one repetition is needed".into(),
        });
    }
    check::generations(args.gens)?;
    if let Some(warmup) = args.warmup.filter(|w| *w >= args.duration) {
        return Err(InputError::OutOfRange {
            option: "--warmup",
            value: format!("{warmup:?}"),
            why: format!(
                "must be shorter than --duration ({:?}): nothing would be measured",
                args.duration
            ),
        });
    }
    if !(args.psi_target > 0.0 && args.psi_target < 100.0) {
        return Err(InputError::OutOfRange {
            option: "--psi-target",
            value: args.psi_target.to_string(),
            why: "must be a percentage of wall time in (0, 100)".into(),
        });
    }
    check::memory(&args.backing, args.mem, 1)?;
    if let Some(path) = &args.svg {
        check::output_path("--svg", path)?;
    }
    if let Some(path) = &args.json_out {
        check::output_path("--json-out", path)?;
    }
    if let Some(dir) = &args.report {
        check::output_dir("--report", dir)?;
    }
    Ok(())
}

/// Runs the command; returns the report (printed by the caller).
pub fn run(args: &ReclaimArgs) -> Result<BenchReport, ReclaimCliError> {
    check_input(args)?;
    // Before any thread exists (the VM's vCPU threads come later): SIGINT then restores zram,
    // memcgs and lru_gen knobs.
    host_guard::install_signal_cleanup()?;
    host_guard::install_panic_hook();
    let _swap = match args.zram {
        Some(bytes) => {
            let ours = agelab_swap_devices()?;
            let swaps = SwapStatus::read()?;
            let foreign = swaps.foreign(&ours);
            if foreign.is_empty() {
                let z = ZramSwap::setup_free(bytes)?;
                if !args.json {
                    eprintln!(
                        "agelab reclaim: {} set up as {} MiB swap for this run{}",
                        z.device().dev(),
                        bytes >> 20,
                        if z.hot_added() { " (hot-added)" } else { "" }
                    );
                }
                Some(z)
            } else {
                if !args.json {
                    let names: Vec<&str> = foreign.iter().map(|a| a.filename.as_str()).collect();
                    eprintln!(
                        "agelab reclaim: swap not set up by agelab is active ({}), --zram not needed: using it (never removed)",
                        names.join(", ")
                    );
                }
                None
            }
        }
        None => None,
    };
    let workloads: Vec<WorkloadSpec> = if args.workload.is_empty() {
        DEFAULT_WORKLOADS
            .iter()
            .map(|w| w.parse().expect("default workloads parse"))
            .collect()
    } else {
        args.workload.clone()
    };
    let base = ReclaimRunConfig {
        mem_bytes: args.mem,
        vcpus: args.vcpus,
        backing: args.backing.clone(),
        workload: workloads[0].clone(),
        duration: args.duration,
        interval: args.interval,
        policy: PolicyKind::None,
        action: args.action,
        controller: ControllerConfig {
            slo_pct_per_min: args.slo,
            max_step_pct: args.max_step,
            step_period: args.step_period,
            kp: args.kp,
            ki: args.ki,
            ws_window: args.ws_window,
            ..ControllerConfig::default()
        },
        min_age: args.min_age,
        gens: args.gens,
        cold_window: args.cold_window,
        seed: 1,
        warmup: args.warmup_or_default(),
        psi_target_pct: args.psi_target,
        damon_quota_ms: args.damon_quota_ms,
        progress: ProgressLine::on_terminal(args.quiet || args.json, "agelab reclaim"),
        read_budget_pct: args.read_budget,
        regions: agelab_mglru::sources::uffd_minor::RegionConfig {
            samples: args.region_samples,
            ..Default::default()
        },
    };
    if args.child_run {
        // The parent holds the swap and prints the results; one run here, its report on stdout.
        let r = run_once(&ReclaimRunConfig {
            policy: args.policy.0[0],
            ..base
        })?;
        println!("{}", report_line(&r));
        std::process::exit(0);
    }
    let quiet = args.quiet || args.json;
    let run = |cfg: &ReclaimRunConfig| -> Result<ReclaimRunReport, ReclaimRunError> {
        if cfg.policy == PolicyKind::MemcgLimit {
            Ok(run_in_child(cfg, child_command(cfg)?)?)
        } else {
            run_once(cfg)
        }
    };
    let report = run_bench(&base, &workloads, &args.policy.0, args.reps, run, |r| {
        if let Some(k) = &r.oom_killed {
            if !quiet {
                eprintln!("  {:<13} {:<40} {k}", r.policy, r.workload);
            }
            return;
        }
        if !quiet {
            eprintln!(
                "  {:<13} {:<40} saved {:>6.1} MiB, cold out {:>5.1}%, refaults {:>6}, {:.4e} ops/vCPU-CPU-s, {:.4e} ops/s, verify ok",
                r.policy,
                r.workload,
                r.saved as f64 / (1u64 << 20) as f64,
                if r.cold_pages == 0 { 0.0 } else { r.cold_reclaimed as f64 * 100.0 / r.cold_pages as f64 },
                r.refaults,
                r.ops_per_cpu_sec,
                r.ops_per_wall_sec
            );
        }
    })?;
    if let Some(path) = &args.svg {
        std::fs::write(path, plot::to_svg(&report)).map_err(|err| ReclaimCliError::Svg {
            path: path.clone(),
            err,
        })?;
    }
    if let Some(path) = &args.json_out {
        let text = serde_json::to_string_pretty(&report).expect("report serialises");
        std::fs::write(path, text).map_err(|err| ReclaimCliError::Svg {
            path: path.clone(),
            err,
        })?;
    }
    if let Some(dir) = &args.report {
        let path = crate::report::write_reclaim(dir, &report_params(args, &workloads), &report)?;
        if !args.json {
            eprintln!("agelab reclaim: report written to {}", path.display());
        }
    }
    Ok(report)
}

/// `agelab reclaim` as the child process of one run of `cfg`: this executable with every option of
/// the run spelled out, `--child-run`, and no swap set-up (the parent's swap serves it).
fn child_command(cfg: &ReclaimRunConfig) -> Result<std::process::Command, ReclaimRunError> {
    let exe = std::env::current_exe().map_err(|err| {
        ReclaimRunError::Child(agelab_mglru::reclaim::ChildRunError::Spawn {
            program: "/proc/self/exe".into(),
            err,
        })
    })?;
    let secs = |d: Duration| format!("{:.9}s", d.as_secs_f64());
    let c = &cfg.controller;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("reclaim")
        .args(["--policy", cfg.policy.name()])
        .args(["--workload", &cfg.workload.to_string()])
        .args(["--reps", "1"])
        .args(["--mem", &cfg.mem_bytes.to_string()])
        .args(["--vcpus", &cfg.vcpus.to_string()])
        .args(["--backing", &cfg.backing.to_string()])
        .args(["--duration", &secs(cfg.duration)])
        .args(["--warmup", &secs(cfg.warmup)])
        .args(["--psi-target", &cfg.psi_target_pct.to_string()])
        .args(["--damon-quota-ms", &cfg.damon_quota_ms.to_string()])
        .args(["--read-budget", &cfg.read_budget_pct.to_string()])
        .args(["--region-samples", &cfg.regions.samples.to_string()])
        .args(["--interval", &secs(cfg.interval)])
        .args(["--min-age", &secs(cfg.min_age)])
        .args(["--gens", &cfg.gens.to_string()])
        .args(["--cold-window", &secs(cfg.cold_window)])
        .args(["--action", cfg.action.name()])
        .args(["--slo", &c.slo_pct_per_min.to_string()])
        .args(["--max-step", &c.max_step_pct.to_string()])
        .args(["--step-period", &secs(c.step_period)])
        .args(["--kp", &c.kp.to_string()])
        .args(["--ki", &c.ki.to_string()])
        .args(["--ws-window", &secs(c.ws_window)])
        .args(["--quiet", "--child-run"]);
    Ok(cmd)
}

/// The benchmark's parameters as the report shows them.
fn report_params(args: &ReclaimArgs, workloads: &[WorkloadSpec]) -> Vec<(String, String)> {
    let policies: Vec<String> = args.policy.0.iter().map(|p| p.to_string()).collect();
    let wls: Vec<String> = workloads.iter().map(|w| w.to_string()).collect();
    [
        ("--policy", policies.join(",")),
        ("--workload", wls.join(" ; ")),
        ("--reps", args.reps.to_string()),
        ("--mem", format!("{} MiB", args.mem >> 20)),
        ("--vcpus", args.vcpus.to_string()),
        ("--backing", args.backing.to_string()),
        ("--duration", format!("{:?}", args.duration)),
        ("--interval", format!("{:?}", args.interval)),
        ("--min-age", format!("{:?}", args.min_age)),
        ("--gens", args.gens.to_string()),
        ("--action", format!("{:?}", args.action)),
        (
            "controller",
            format!(
                "SLO {}% of WS/min, cap {}% per {:?}, kp {}, ki {}/s, WS window {:?}",
                args.slo, args.max_step, args.step_period, args.kp, args.ki, args.ws_window
            ),
        ),
        (
            "--zram",
            args.zram
                .map_or("no".to_string(), |z| format!("{} MiB", z >> 20)),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Prints the report as text.
pub fn print_text(r: &BenchReport) {
    let c = &r.controller;
    println!(
        "agelab reclaim: controller PI kp {} ki {}/s, SLO {}% of WS/min, cap {}% per {:?}, age gate {:.1} s, interval {:.0} ms",
        c.kp, c.ki, c.slo_pct_per_min, c.max_step_pct, c.step_period, r.min_age_s, r.interval_ms
    );
    print!("{}", table(r));
    if let Some(w) = r.workloads.first() {
        for p in &w.policies {
            if !p.sources.is_empty() {
                println!("{} sources: {}", p.policy, p.sources.join("; "));
            }
        }
    }
    if let Some(scope) = r.runs.iter().find_map(|x| x.pressure_scope.as_ref()) {
        println!("psi: memory pressure read from {scope}");
    }
    if let Some(d) = r.runs.iter().find_map(|x| x.damon.as_ref()) {
        println!(
            "damon: DAMOS pageout on the guest's ranges of the VMM's vaddr; quota auto-tuning toward some_mem_psi_us: {}; effective quota at the end: {}",
            if d.auto_tuned { "on" } else { "not in this kernel (fixed quota)" },
            d.effective_quota_bytes.map_or("not reported".into(), |b| format!("{} KiB/s", b >> 10))
        );
    }
}
