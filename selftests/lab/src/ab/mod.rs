//! `agelab ab`: the same command (or lab matrix) on kernel A and kernel B — two lab kernels, or
//! one kernel with two command lines — interleaved A B A B for `--reps` repetitions, then one
//! table of every metric the output carried: mean ± 95% CI per side, the change, and whether
//! Welch's t-test calls it significant at 5%. Test outcomes that differ come first.

pub mod metrics;
pub mod report;
/// The statistics live in `agelab_util::stats` (shared with `agelab reclaim`).
pub use agelab_util::stats;

use super::matrix::{options_for, read_matrix, Matrix};
use super::qemu::OutputMode;
use super::{prereq, remove_run_dir, Lab, LabArgs, LabError, RunOptions};
use agelab_util::exit::{ExitClass, HasExitClass};
use clap::Args;
use metrics::{extract, Outcome};
use report::{AbReport, Samples, Side};
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

/// Errors of `agelab ab` itself (the lab's own errors pass through as [`LabError`]).
#[derive(Debug, thiserror::Error)]
pub enum AbError {
    /// A bad command line (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The lab failed before any comparison could run (kernel fetch or build, binaries).
    #[error(transparent)]
    Lab(Box<LabError>),
    /// Writing the `--svg` file failed.
    #[error("--svg {path}: {source}")]
    Svg {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl From<LabError> for AbError {
    fn from(e: LabError) -> Self {
        AbError::Lab(Box::new(e))
    }
}

impl HasExitClass for AbError {
    /// Bad input for usage errors, the lab's own class for its errors, else a failure.
    fn exit_class(&self) -> ExitClass {
        match self {
            AbError::Usage(_) => ExitClass::BadInput,
            AbError::Lab(e) => e.exit_class(),
            AbError::Svg { .. } => ExitClass::Failure,
        }
    }
}

/// `agelab ab` options.
#[derive(Debug, Clone, Args)]
pub struct AbArgs {
    /// Kernel A (any lab kernel name); needs --test.
    #[arg(long)]
    pub base: Option<String>,
    /// Kernel B; --patch, --config, --kernel-source, --name and --rebuild apply to this one.
    #[arg(long)]
    pub test: Option<String>,
    /// Extra kernel command-line words for A (e.g. kvm.tdp_mmu=Y).
    #[arg(long, default_value = "")]
    pub append_a: String,
    /// Extra kernel command-line words for B (e.g. kvm.tdp_mmu=N).
    #[arg(long, default_value = "")]
    pub append_b: String,
    /// Repetitions per side (at least 2: a confidence interval needs two samples).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write a bar chart (means with 95% CI whiskers) to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// The lab options (--kernel names the single kernel of --append-a/--append-b runs).
    #[command(flatten)]
    pub lab: LabArgs,
}

/// What A and B are, before anything runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Kernel and extra command line of A.
    pub a: (String, String),
    /// Kernel and extra command line of B.
    pub b: (String, String),
}

/// Checks the command line and works out A and B.
pub fn plan(args: &AbArgs) -> Result<Plan, AbError> {
    let usage = |m: &str| Err(AbError::Usage(m.to_string()));
    if args.lab.bench {
        return usage("--bench is not an A/B comparison; use agelab lab --bench");
    }
    if args.lab.kernel_image.is_some() {
        return usage("--kernel-image: name lab kernels with --base and --test");
    }
    if args.reps < 2 {
        return usage("--reps must be at least 2 (a confidence interval needs two samples)");
    }
    if args.lab.cmd.is_empty() == args.lab.matrix.is_none() {
        return usage("give a command after -- or --matrix FILE (one of them)");
    }
    let join = |base: &str, extra: &str| {
        [base.trim(), extra.trim()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (ka, kb) = match (&args.base, &args.test) {
        (Some(a), Some(b)) => (a.clone(), b.clone()),
        (None, None) => {
            if args.append_a == args.append_b {
                return usage(
                    "nothing differs: give --base K --test K, or --append-a/--append-b that differ",
                );
            }
            (args.lab.kernel.clone(), args.lab.kernel.clone())
        }
        (Some(_), None) => return usage("--base needs --test"),
        (None, Some(_)) => return usage("--test needs --base"),
    };
    if ka.contains(',') || kb.contains(',') || ka == "all" || kb == "all" {
        return usage("--base/--test/--kernel: one kernel each, not a list");
    }
    let a = (ka, join(&args.lab.append, &args.append_a));
    let b = (kb, join(&args.lab.append, &args.append_b));
    if a == b && !args.lab.builds_custom() {
        return usage("A and B are the same kernel with the same command line");
    }
    Ok(Plan { a, b })
}

/// One run to make: which side, which repetition, which matrix test (if any).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// 0 = A, 1 = B.
    pub side: usize,
    /// Repetition, from 0.
    pub rep: usize,
    /// Index into the matrix's tests (0 for a plain command).
    pub test: usize,
}

/// The run order: per repetition, per test, A then B — so slow drift of the host hits both.
pub fn schedule(reps: usize, tests: usize) -> Vec<Slot> {
    let mut v = Vec::new();
    for rep in 0..reps {
        for test in 0..tests.max(1) {
            for side in 0..2 {
                v.push(Slot { side, rep, test });
            }
        }
    }
    v
}

/// Runs the comparison; returns the report (printing is the caller's).
pub fn run(args: &AbArgs) -> Result<AbReport, AbError> {
    let plan = plan(args)?;
    let arch = super::find_arch_or_usage(&args.lab.arch)?;
    let defaults = RunOptions::from_args(&args.lab)?;
    prereq::check(arch, &[plan.a.0.clone(), plan.b.0.clone()]).map_err(LabError::from)?;
    let matrix: Option<Matrix> = match &args.lab.matrix {
        Some(f) => Some(read_matrix(f).map_err(LabError::from)?),
        None => None,
    };
    // Build options (--patch, --config, --kernel-source, --name, --rebuild) describe B only.
    let mut a_args = args.lab.clone();
    a_args.clear_build_options();
    a_args.rebuild = false;
    let lab_a = Lab::new(&a_args, arch)?;
    let lab_b = Lab::new(&args.lab, arch)?;
    let ka = lab_a.kernel(&plan.a.0)?;
    let kb = lab_b.kernel(&plan.b.0)?;
    let bins = lab_b.bins()?;
    let names = [ka.kernel.name.clone(), kb.kernel.name.clone()];
    let appends = [plan.a.1.clone(), plan.b.1.clone()];
    let logs = args.lab.results.join("ab");
    let _ = fs::create_dir_all(&logs);
    let tests = matrix.as_ref().map_or(1, |m| m.tests.len());
    let mut samples = [Samples::default(), Samples::default()];
    let slots = schedule(args.reps, tests);
    for (i, slot) in slots.iter().enumerate() {
        let side = slot.side;
        let kernel = if side == 0 { &ka } else { &kb };
        let (argv, mut opts, prefix, test_name) = match &matrix {
            Some(m) => {
                let t = &m.tests[slot.test];
                let cmd = m.command_for(t, &names[side]);
                let opts = options_for(&defaults, t)?;
                (
                    vec!["sh".to_string(), "-c".to_string(), cmd],
                    opts,
                    format!("{}: ", t.name),
                    t.name.clone(),
                )
            }
            None => (
                args.lab.cmd.clone(),
                defaults.clone(),
                String::new(),
                "cmd".to_string(),
            ),
        };
        appends[side].clone_into(&mut opts.append);
        let label = ["A", "B"][side];
        let started = Instant::now();
        let result = lab_b.boot(kernel, &bins, &argv, &opts, OutputMode::Capture);
        let secs = started.elapsed().as_secs_f64();
        let log = logs.join(format!("{label}-{}-{test_name}.log", slot.rep + 1));
        let s = &mut samples[side];
        match result {
            Ok((r, dir)) => {
                let out = fs::read_to_string(dir.join("stdout")).unwrap_or_default();
                let err = fs::read_to_string(dir.join("stderr")).unwrap_or_default();
                remove_run_dir(&dir);
                let _ = fs::write(&log, format!("{out}--- stderr ---\n{err}"));
                let x = extract(&format!("{out}\n{err}"));
                for (k, o) in x.outcomes {
                    s.outcome(format!("{prefix}{k}"), o);
                }
                for (k, v) in x.values {
                    s.value(format!("{prefix}{k}"), v);
                }
                s.outcome(format!("{prefix}exit status"), Outcome::from_exit(r.status));
                eprintln!(
                    "agelab ab: [{}/{}] {label} rep {} {}: exit {} ({secs:.1} s, log {})",
                    i + 1,
                    slots.len(),
                    slot.rep + 1,
                    names[side],
                    r.status,
                    log.display()
                );
            }
            Err(e) => {
                let _ = fs::write(&log, format!("--- lab error ---\n{e}\n"));
                s.outcome(format!("{prefix}exit status"), Outcome::Error);
                eprintln!(
                    "agelab ab: [{}/{}] {label} rep {} {}: lab error: {e}",
                    i + 1,
                    slots.len(),
                    slot.rep + 1,
                    names[side]
                );
            }
        }
    }
    let command = match &args.lab.matrix {
        Some(f) => format!("matrix {}", f.display()),
        None => args.lab.cmd.join(" "),
    };
    let [sa, sb] = samples;
    let report = AbReport::new(
        [
            Side {
                kernel: names[0].clone(),
                append: appends[0].clone(),
            },
            Side {
                kernel: names[1].clone(),
                append: appends[1].clone(),
            },
        ],
        args.reps,
        command,
        &sa,
        &sb,
    );
    if let Some(path) = &args.svg {
        fs::write(path, report::to_svg(&report)).map_err(|source| AbError::Svg {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ab: AbArgs,
    }

    fn parse(s: &str) -> AbArgs {
        Cli::try_parse_from(std::iter::once("ab").chain(s.split_whitespace()))
            .unwrap()
            .ab
    }

    #[test]
    fn plans_two_kernels_or_two_command_lines() {
        let p = plan(&parse("--base debian-6.12 --test debian-7.2 -- true")).unwrap();
        assert_eq!(p.a, ("debian-6.12".into(), String::new()));
        assert_eq!(p.b, ("debian-7.2".into(), String::new()));
        let p = plan(&parse(
            "--kernel custom-7.2 --append quiet --append-b kvm.tdp_mmu=N -- true",
        ))
        .unwrap();
        assert_eq!(p.a, ("custom-7.2".into(), "quiet".into()));
        assert_eq!(p.b, ("custom-7.2".into(), "quiet kvm.tdp_mmu=N".into()));
    }

    #[test]
    fn bad_command_lines_name_the_option() {
        for (args, needle) in [
            ("--base debian-7.2 -- true", "--base needs --test"),
            ("--test debian-7.2 -- true", "--test needs --base"),
            ("-- true", "nothing differs"),
            ("--base a --test b --reps 1 -- true", "--reps"),
            ("--base a --test b", "command after --"),
            ("--base a,b --test c -- true", "one kernel each"),
            ("--base a --test a -- true", "same kernel"),
            ("--base a --test b --bench -- true", "--bench"),
        ] {
            let e = plan(&parse(args)).unwrap_err();
            assert!(e.to_string().contains(needle), "{args}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn schedule_interleaves_a_and_b() {
        let s = schedule(2, 1);
        let sides: Vec<usize> = s.iter().map(|x| x.side).collect();
        assert_eq!(sides, [0, 1, 0, 1]);
        assert_eq!(s[2].rep, 1);
        let s = schedule(1, 2);
        assert_eq!(
            s.iter().map(|x| (x.test, x.side)).collect::<Vec<_>>(),
            [(0, 0), (0, 1), (1, 0), (1, 1)]
        );
    }
}
