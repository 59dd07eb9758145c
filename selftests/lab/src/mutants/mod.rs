//! `agelab mutants`: which bugs in the secondary-MMU aging path the tests catch.
//!
//! Boots the base custom kernel and every selected mutant of the catalog
//! (`selftests/lab/mutants/<name>/*.patch`, [`catalog`]), each built from the base's kept tree
//! (patch, `make`, revert: only the changed objects and a link), and runs the mutation tests
//! (`selftests/lab/mutants/tests.txt`, matrix format: agelab's strict aging tests per backing and
//! MMU, and the kernel's own `access_tracking_perf_test` built static from the same tree,
//! [`kselftest`]) on each. Prints a kill table (mutant × test: killed / survived / skip /
//! error, and the evidence: recall, precision, KVM calls, idle pages) and writes JSON.
//!
//! The base must pass every test (a skip there makes the column skip for every mutant); a base
//! failure or any lab error (build, boot, timeout) fails the run. Survivors do not fail it: each
//! is resolved in its patch header (`Verdict:` test gap or equivalent).

pub mod catalog;
mod kselftest;
pub mod verdict;

use super::matrix::{options_for, read_matrix, LabTest};
use super::qemu::OutputMode;
use super::{default_jobs, remove_run_dir, Lab, LabArgs, LabError, PreparedKernel, RunOptions};
use agelab_util::exit::{ExitClass, HasExitClass};
use catalog::{default_tests_file, read_catalog, select, Mutant};
use clap::Args;
use kselftest::{kernel_access_tracking_test, KselftestError, KSELFTEST_NAME};
use std::fs;
use std::path::PathBuf;
use std::time::Instant;
use verdict::{render_evidence, render_table, Evidence, Kill, Row};

/// The table kernel the mutants are built on.
const BASE_KERNEL: &str = "custom-7.2";

/// Errors of `agelab mutants` (the lab's own pass through).
#[derive(Debug, thiserror::Error)]
pub enum MutantsError {
    /// A bad command line (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The lab failed (base kernel, binaries, tests file).
    #[error(transparent)]
    Lab(Box<LabError>),
    /// The kernel's own selftest could not be built.
    #[error(transparent)]
    Kselftest(#[from] KselftestError),
    /// The catalog or the JSON file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl From<LabError> for MutantsError {
    fn from(e: LabError) -> Self {
        MutantsError::Lab(Box::new(e))
    }
}

impl HasExitClass for MutantsError {
    /// A bad command line is bad input; the lab's errors keep their own class.
    fn exit_class(&self) -> ExitClass {
        match self {
            MutantsError::Usage(_) => ExitClass::BadInput,
            MutantsError::Lab(e) => e.exit_class(),
            _ => ExitClass::Failure,
        }
    }
}

/// `agelab mutants` options.
#[derive(Debug, Clone, Args)]
pub struct MutantsArgs {
    /// Run this mutant of selftests/lab/mutants/ (repeatable; default: all).
    #[arg(long = "mutant")]
    pub mutants: Vec<String>,
    /// The tests to run on the base and every mutant (matrix format).
    #[arg(long = "mutant-tests")]
    pub tests_file: Option<PathBuf>,
    /// Write the kill table as JSON here (default: <results>/mutants/mutants.json).
    #[arg(long = "json-out")]
    pub json_out: Option<PathBuf>,
    /// List the catalog (name, reach, subject) and exit.
    #[arg(long)]
    pub list: bool,
    /// The lab options (--results, --jobs, --tests, --accel, --timeout, ...).
    #[command(flatten)]
    pub lab: LabArgs,
}

/// The whole run, as written to JSON.
#[derive(Debug, serde::Serialize)]
pub struct MutantsReport {
    /// The base kernel's name.
    pub base: String,
    /// The tests, in column order.
    pub tests: Vec<String>,
    /// The base's row first, then one per mutant.
    pub rows: Vec<Row>,
    /// Wall time of the run, seconds.
    pub wall_secs: f64,
}

/// Runs `agelab mutants`; returns the exit status (1 when the base failed or anything errored).
pub fn run(args: &MutantsArgs) -> Result<i32, MutantsError> {
    let catalog_dir = catalog::catalog_dir();
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| MutantsError::Io { path, source }
    };
    let catalog = read_catalog(&catalog_dir).map_err(io(&catalog_dir))?;
    if args.list {
        for m in &catalog {
            let reach = if m.unreachable_here() {
                "unreachable here"
            } else {
                "reachable"
            };
            println!("{:40} {reach:16} {}", m.name, m.subject);
        }
        return Ok(0);
    }
    let mutants = select(&catalog, &args.mutants).map_err(MutantsError::Usage)?;
    if args.lab.arch != "x86_64" {
        return Err(MutantsError::Usage(format!(
            "--arch {}: the catalog is written against x86_64 (arch/x86/kvm)",
            args.lab.arch
        )));
    }
    if args.lab.builds_custom() || args.lab.kernel_image.is_some() || args.lab.matrix.is_some() {
        return Err(MutantsError::Usage(
            "agelab mutants builds its own kernels: no --patch, --config, --kernel-source, \
             --name, --kernel-image or --matrix"
                .into(),
        ));
    }
    let tests_file = args.tests_file.clone().unwrap_or_else(default_tests_file);
    let matrix = read_matrix(&tests_file).map_err(LabError::from)?;
    let tests = matrix
        .select(&args.lab.only_tests)
        .map_err(LabError::from)?;
    let arch = super::find_arch_or_usage(&args.lab.arch)?;
    super::prereq::check(arch, &[BASE_KERNEL.to_string()]).map_err(LabError::from)?;
    let started = Instant::now();

    // The base, with its tree kept (built once more if it was not), then the kernel selftest
    // from that tree.
    let mut base_args = args.lab.clone();
    base_args.keep_tree = true;
    base_args.kernel = BASE_KERNEL.into();
    let lab = Lab::new(&base_args, arch)?;
    let base = lab.kernel(BASE_KERNEL)?;
    let tree = crate::custom::current_tree(&lab.cache, arch, BASE_KERNEL).ok_or_else(|| {
        MutantsError::Usage(format!("{BASE_KERNEL}: its built tree was not kept"))
    })?;
    let kselftest = {
        let _lock = tree.lock().map_err(LabError::from)?;
        kernel_access_tracking_test(&tree)?
    };
    let mut bins = lab.bins()?;
    bins.retain(|b| b.file_name().is_none_or(|n| n != KSELFTEST_NAME));
    bins.push(kselftest);

    // Every mutant built before any test runs (one at a time in the tree).
    let mut kernels: Vec<(String, Result<PreparedKernel, String>)> =
        vec![("base".into(), Ok(base))];
    for m in &mutants {
        kernels.push((m.name.clone(), build_mutant(&base_args, arch, m)));
    }
    let defaults = RunOptions::from_args(&base_args)?;
    let logs = args.lab.results.join("mutants");
    let cells = run_cells(
        &lab,
        &kernels,
        &tests,
        &bins,
        &defaults,
        &logs,
        args.lab.jobs,
    );

    let names: Vec<String> = tests.iter().map(|t| t.name.clone()).collect();
    let mut rows: Vec<Row> = kernels
        .iter()
        .zip(cells)
        .map(|((name, k), cells)| {
            let (build_secs, build_mode) = match k {
                Ok(k) => (k.build_secs.0.or(k.build_secs.1), k.build_mode.clone()),
                Err(_) => (None, None),
            };
            Row {
                name: name.clone(),
                build_secs,
                build_mode,
                cells,
            }
        })
        .collect();
    // A column the base skipped cannot judge mutants.
    let base_skips: Vec<bool> = rows[0]
        .cells
        .iter()
        .map(|(k, _)| *k == Kill::Skip)
        .collect();
    for row in rows.iter_mut().skip(1) {
        for ((k, _), skipped) in row.cells.iter_mut().zip(&base_skips) {
            if *skipped && *k != Kill::Error {
                *k = Kill::Skip;
            }
        }
    }
    let report = MutantsReport {
        base: BASE_KERNEL.into(),
        tests: names.clone(),
        rows,
        wall_secs: started.elapsed().as_secs_f64(),
    };
    print!("{}", render_table(&names, &report.rows));
    print!("{}", render_evidence(&names, &report.rows));
    for (name, k) in &kernels {
        if let Err(e) = k {
            println!("{name}: build failed: {e}");
        }
    }
    let count = |k: Kill| {
        report
            .rows
            .iter()
            .flat_map(|r| &r.cells)
            .filter(|(c, _)| *c == k)
            .count()
    };
    let failed = report
        .rows
        .iter()
        .flat_map(|r| &r.cells)
        .filter(|(k, _)| k.fails_run())
        .count();
    let killed_mutants = report.rows[1..]
        .iter()
        .filter(|r| r.cells.iter().any(|(k, _)| *k == Kill::Killed))
        .count();
    println!(
        "mutants: {killed_mutants} of {} killed by at least one test; cells: {} killed, {} survived, {} skipped, {failed} base failures or errors ({:.0} s)",
        mutants.len(),
        count(Kill::Killed),
        count(Kill::Survived),
        count(Kill::Skip),
        report.wall_secs
    );
    let json_path = args
        .json_out
        .clone()
        .unwrap_or_else(|| logs.join("mutants.json"));
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    fs::create_dir_all(&logs)
        .and_then(|()| fs::write(&json_path, json))
        .map_err(io(&json_path))?;
    eprintln!("agelab mutants: JSON in {}", json_path.display());
    Ok(i32::from(failed > 0))
}

/// Builds mutant `m` (`custom-7.2+mutant-<name>`, from the kept tree when there is one); a
/// failure is kept as the row's error.
fn build_mutant(
    base_args: &LabArgs,
    arch: &'static super::ArchSpec,
    m: &Mutant,
) -> Result<PreparedKernel, String> {
    let mut margs = base_args.clone();
    margs.patches = vec![m.dir.clone()];
    margs.name = Some(format!("{BASE_KERNEL}+mutant-{}", m.name));
    margs.rebuild = false;
    let started = Instant::now();
    let k = Lab::new(&margs, arch).and_then(|lab| lab.kernel(BASE_KERNEL));
    match &k {
        Ok(k) => eprintln!(
            "agelab mutants: {}: {} ({:.0} s{})",
            m.name,
            k.build_mode.as_deref().unwrap_or("built"),
            started.elapsed().as_secs_f64(),
            if k.build_secs.0.is_some() {
                ""
            } else {
                ", cached"
            }
        ),
        Err(e) => eprintln!("agelab mutants: {}: build failed: {e}", m.name),
    }
    k.map_err(|e| e.to_string())
}

/// Runs every test on every kernel that built, `jobs` at a time; returns per kernel the outcome
/// and evidence per test (a kernel that did not build errors in every column).
fn run_cells(
    lab: &Lab,
    kernels: &[(String, Result<PreparedKernel, String>)],
    tests: &[LabTest],
    bins: &[PathBuf],
    defaults: &RunOptions,
    logs: &std::path::Path,
    jobs: Option<usize>,
) -> Vec<Vec<(Kill, Evidence)>> {
    let results = std::sync::Mutex::new(vec![
        vec![(Kill::Error, Evidence::default()); tests.len()];
        kernels.len()
    ]);
    let cells: Vec<(usize, usize)> = kernels
        .iter()
        .enumerate()
        .filter(|(_, (_, k))| k.is_ok())
        .flat_map(|(ki, _)| (0..tests.len()).map(move |ti| (ki, ti)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let jobs = jobs
        .unwrap_or_else(default_jobs)
        .clamp(1, cells.len().max(1));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&(ki, ti)) = cells.get(i) else {
                    break;
                };
                let (name, Ok(kernel)) = &kernels[ki] else {
                    continue;
                };
                let t0 = Instant::now();
                let outcome = run_cell(lab, kernel, ki == 0, &tests[ti], bins, defaults, logs);
                let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                eprintln!(
                    "agelab mutants: {} {name} / {}: {} ({:.1} s) {}",
                    super::view::progress(n, cells.len(), started.elapsed()),
                    tests[ti].name,
                    outcome.0.label(),
                    t0.elapsed().as_secs_f64(),
                    outcome.1.summary()
                );
                if let Ok(mut r) = results.lock() {
                    r[ki][ti] = outcome;
                }
            });
        }
    });
    results.into_inner().unwrap_or_default()
}

/// Boots `kernel`, runs `test`, writes its log; the outcome and evidence.
fn run_cell(
    lab: &Lab,
    kernel: &PreparedKernel,
    is_base: bool,
    test: &LabTest,
    bins: &[PathBuf],
    defaults: &RunOptions,
    logs: &std::path::Path,
) -> (Kill, Evidence) {
    let dir = logs.join(&kernel.kernel.name);
    let _ = fs::create_dir_all(&dir);
    let log_path = dir.join(format!("{}.log", test.name));
    let argv = ["sh".to_string(), "-c".to_string(), test.command.clone()];
    let mut log = format!(
        "# {} / {}: sh -c {:?}\n",
        kernel.kernel.name, test.name, test.command
    );
    let result = options_for(defaults, test).and_then(|opts| {
        log.push_str(&format!("# kernel command line extra: {:?}\n", opts.append));
        lab.boot(kernel, bins, &argv, &opts, OutputMode::Capture)
    });
    let outcome = match result {
        Ok((report, run_dir)) => {
            let out = fs::read_to_string(run_dir.join("stdout")).unwrap_or_default();
            let err = fs::read_to_string(run_dir.join("stderr")).unwrap_or_default();
            remove_run_dir(&run_dir);
            log.push_str(&format!(
                "--- stdout ---\n{out}--- stderr ---\n{err}--- exit status {}\n",
                report.status
            ));
            (
                Kill::from_status(report.status, is_base),
                Evidence::from_output(&out),
            )
        }
        Err(e) => {
            log.push_str(&format!("--- lab error ---\n{e}\n"));
            (Kill::Error, Evidence::default())
        }
    };
    let _ = fs::write(&log_path, log);
    outcome
}
