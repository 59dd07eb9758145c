//! The lab matrix: a list of guest commands run on several kernels, reported as a
//! kernel × test table. Exit status 0 is pass, 4 is skip (kselftest convention), others fail.
//!
//! File format, one test per line (`#` comments): `NAME [OPTIONS] -- SHELL COMMAND`, where the
//! command runs under `sh -c` in the guest and OPTIONS are `--zram`, `--mem`, `--smp`,
//! `--timeout`, `--module` or `--append` (kernel command-line words) as for `agelab lab`, plus
//! the expectations:
//!
//! - `@kernel NAME VAR=yes|no ...` states what a kernel is expected to do (e.g.
//!   `SECONDARY_MMU_AGING=no`: its MGLRU aging does not ask KVM). Every test on that kernel sees
//!   the facts as environment variables, so a test can take them as its expectation.
//! - `--needs VAR` (repeatable): on kernels whose `VAR` is `no` the test is designed to fail.
//! - `--expect-fail KERNEL[,KERNEL]`: the test is designed to fail on these kernels.
//!
//! A designed failure that happens reads `fail (expected)` and counts as the matrix passing; a
//! designed failure that does not happen reads `PASS (unexpected)` and fails the matrix: a check
//! that cannot fail on the kernel built to make it fail is itself broken.

use super::arch::ArchSpec;
use super::qemu::{GuestRunError, OutputMode};
use super::{default_jobs, kernel_list, remove_run_dir, Lab, LabArgs, LabError, RunOptions};
use crate::shard::{self, CellDurations, Shard};
use crate::view::{self, CellsView};
use crate::{interrupt, results};
use clap::Parser;
use std::fmt::Write as _;
use std::fs;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Errors of reading the matrix file.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// The file cannot be read.
    #[error("reading test matrix {path}: {source}")]
    Read {
        /// The matrix file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The matrix file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Per-test overrides of the lab options.
#[derive(Debug, Clone, Default, Parser, PartialEq)]
#[command(no_binary_name = true)]
pub struct TestOptions {
    /// zram swap size.
    #[arg(long)]
    pub zram: Option<String>,
    /// Guest memory.
    #[arg(long)]
    pub mem: Option<String>,
    /// vCPUs.
    #[arg(long)]
    pub smp: Option<u32>,
    /// Time limit.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Extra modules.
    #[arg(long = "module")]
    pub modules: Vec<String>,
    /// Kernels on which the test is designed to fail.
    #[arg(long = "expect-fail", value_delimiter = ',')]
    pub expect_fail: Vec<String>,
    /// Kernel facts the test needs: it is designed to fail where the fact is `no`.
    #[arg(long = "needs")]
    pub needs: Vec<String>,
    /// Extra kernel command-line words for this test (e.g. `kvm.tdp_mmu=N`), after `--append`.
    #[arg(long)]
    pub append: Option<String>,
}

/// One matrix entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LabTest {
    /// Test name (table row).
    pub name: String,
    /// Option overrides.
    pub options: TestOptions,
    /// Shell command run in the guest.
    pub command: String,
}

/// A parsed matrix file: the tests and what each kernel is expected to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matrix {
    /// The tests, in file order.
    pub tests: Vec<LabTest>,
    /// Kernel name → `(VAR, value)` facts from `@kernel` lines.
    pub facts: std::collections::BTreeMap<String, Vec<(String, String)>>,
}

/// A `--tests` name that is not in the matrix.
#[derive(Debug, thiserror::Error)]
#[error("--tests: no test named '{name}' in the matrix (known: {known})")]
pub struct UnknownTest {
    /// The name given.
    pub name: String,
    /// The matrix's test names, comma-separated.
    pub known: String,
}

/// What is wrong with an `@kernel` line.
#[derive(Debug, thiserror::Error)]
enum FactsError {
    /// No kernel name.
    #[error("expected `@kernel NAME VAR=yes|no ...`")]
    NoKernel,
    /// A word that is not `VAR=value`.
    #[error("@kernel {kernel}: '{word}' is not VAR=value")]
    NotVarValue { kernel: String, word: String },
    /// A fact name that is not upper case letters, digits and `_`.
    #[error("@kernel {kernel}: fact name '{var}' must be upper case letters, digits and _")]
    BadName { kernel: String, var: String },
    /// A fact value other than yes or no.
    #[error("@kernel {kernel}: {var}={value}: a fact is yes or no")]
    NotYesNo {
        kernel: String,
        var: String,
        value: String,
    },
    /// A kernel line without facts.
    #[error("@kernel {kernel}: no facts")]
    NoFacts { kernel: String },
}

impl Matrix {
    /// The value of fact `var` on `kernel`, if stated.
    pub fn fact(&self, kernel: &str, var: &str) -> Option<&str> {
        self.facts
            .get(kernel)?
            .iter()
            .find(|(v, _)| v == var)
            .map(|(_, value)| value.as_str())
    }

    /// The tests named in `only` (all when empty), in file order; an unknown name is an error.
    pub fn select(&self, only: &[String]) -> Result<Vec<LabTest>, UnknownTest> {
        if let Some(unknown) = only
            .iter()
            .find(|n| !self.tests.iter().any(|t| &t.name == *n))
        {
            return Err(UnknownTest {
                name: unknown.clone(),
                known: self
                    .tests
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(self
            .tests
            .iter()
            .filter(|t| only.is_empty() || only.contains(&t.name))
            .cloned()
            .collect())
    }

    /// Whether `test` is designed to fail on `kernel`.
    pub fn expects_failure(&self, test: &LabTest, kernel: &str) -> bool {
        test.options.expect_fail.iter().any(|k| k == kernel)
            || test
                .options
                .needs
                .iter()
                .any(|var| self.fact(kernel, var) == Some("no"))
    }

    /// The shell command run on `kernel`: the kernel's facts exported, then the test's command.
    pub fn command_for(&self, test: &LabTest, kernel: &str) -> String {
        let mut cmd = String::new();
        for (var, value) in self.facts.get(kernel).into_iter().flatten() {
            let _ = write!(cmd, "export {var}={value}; ");
        }
        cmd + &test.command
    }
}

/// `@kernel NAME VAR=value ...` → (name, facts).
fn parse_facts(rest: &str) -> Result<(String, Vec<(String, String)>), FactsError> {
    let mut words = rest.split_whitespace();
    let kernel = words.next().ok_or(FactsError::NoKernel)?;
    let mut facts = Vec::new();
    for w in words {
        let (var, value) = w.split_once('=').ok_or_else(|| FactsError::NotVarValue {
            kernel: kernel.to_string(),
            word: w.to_string(),
        })?;
        let valid_var = !var.is_empty()
            && var
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !valid_var {
            return Err(FactsError::BadName {
                kernel: kernel.to_string(),
                var: var.to_string(),
            });
        }
        if value != "yes" && value != "no" {
            return Err(FactsError::NotYesNo {
                kernel: kernel.to_string(),
                var: var.to_string(),
                value: value.to_string(),
            });
        }
        facts.push((var.to_string(), value.to_string()));
    }
    if facts.is_empty() {
        return Err(FactsError::NoFacts {
            kernel: kernel.to_string(),
        });
    }
    Ok((kernel.to_string(), facts))
}

/// Parses matrix text; errors carry the 1-based line number.
pub fn parse_matrix(text: &str) -> Result<Matrix, (usize, String)> {
    let mut tests: Vec<LabTest> = Vec::new();
    let mut facts = std::collections::BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |m: String| (i + 1, m);
        if let Some(rest) = line.strip_prefix("@kernel") {
            let (kernel, kf) = parse_facts(rest).map_err(|e| err(e.to_string()))?;
            if facts.insert(kernel.clone(), kf).is_some() {
                return Err(err(format!("second @kernel line for {kernel}")));
            }
            continue;
        }
        let (head, command) = line
            .split_once(" -- ")
            .ok_or_else(|| err("expected `NAME [OPTIONS] -- COMMAND`".into()))?;
        let mut words = head.split_whitespace();
        let name = words
            .next()
            .ok_or_else(|| err("missing test name".into()))?;
        let options = TestOptions::try_parse_from(words)
            .map_err(|e| err(e.to_string().trim().to_string()))?;
        if tests.iter().any(|t| t.name == name) {
            return Err(err(format!("duplicate test name {name}")));
        }
        tests.push(LabTest {
            name: name.to_string(),
            options,
            command: command.trim().to_string(),
        });
    }
    Ok(Matrix { tests, facts })
}

pub use crate::outcome::Outcome;

/// How the table is drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableStyle {
    /// Outcomes in colour ([`crate::colour`]).
    pub colour: bool,
    /// Leave out the rows whose every cell passed.
    pub hide_passed: bool,
}

/// Renders the kernel × test table; `results[kernel][test]` is `None` for a cell the run did
/// not have (another shard's), shown as `-`.
pub fn render_table(
    kernels: &[String],
    tests: &[String],
    results: &[Vec<Option<Outcome>>],
    style: TableStyle,
) -> String {
    let at = |ki: usize, ti: usize| results.get(ki).and_then(|r| r.get(ti)).cloned().flatten();
    let shown: Vec<usize> = (0..tests.len())
        .filter(|&ti| {
            !style.hide_passed
                || (0..kernels.len()).any(|ki| at(ki, ti).is_some_and(|o| !o.passed()))
        })
        .collect();
    let first = tests.iter().map(String::len).max().unwrap_or(4).max(4);
    let widths: Vec<usize> = kernels
        .iter()
        .enumerate()
        .map(|(ki, k)| {
            (0..tests.len())
                .filter_map(|ti| at(ki, ti))
                .map(|o| o.label().len())
                .fold(k.len().max(9), usize::max)
        })
        .collect();
    let mut out = format!("{:first$}", "test");
    for (k, w) in kernels.iter().zip(&widths) {
        let _ = write!(out, "  {k:w$}");
    }
    out.push('\n');
    for &ti in &shown {
        let _ = write!(out, "{:first$}", tests[ti]);
        for (ki, w) in widths.iter().enumerate() {
            let cell = match at(ki, ti) {
                Some(o) => crate::colour::paint(&o, &format!("{:w$}", o.label()), style.colour),
                None => format!("{:w$}", "-"),
            };
            let _ = write!(out, "  {cell}");
        }
        out.push('\n');
    }
    if shown.len() < tests.len() {
        let _ = writeln!(
            out,
            "({} test(s) whose every cell passed not shown: --hide-passed)",
            tests.len() - shown.len()
        );
    }
    out
}

/// The run options of `test`: the command line's `defaults` with the test's overrides.
pub(crate) fn options_for(defaults: &RunOptions, test: &LabTest) -> Result<RunOptions, LabError> {
    let mut opts = defaults.clone();
    let o = &test.options;
    if let Some(m) = &o.mem {
        super::check_size("--mem", m)?;
        opts.mem = m.clone();
    }
    if let Some(z) = &o.zram {
        super::check_size("--zram", z)?;
        opts.zram = Some(z.clone());
    }
    if let Some(s) = o.smp {
        opts.smp = s;
    }
    if let Some(t) = &o.timeout {
        opts.timeout = super::parse_duration(t)?;
    }
    opts.modules.extend(o.modules.iter().cloned());
    if let Some(words) = o.append.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
        opts.append = if opts.append.trim().is_empty() {
            words.to_string()
        } else {
            format!("{} {words}", opts.append.trim())
        };
    }
    Ok(opts)
}

/// Reads and parses the matrix file.
pub(crate) fn read_matrix(file: &Path) -> Result<Matrix, MatrixError> {
    let text = fs::read_to_string(file).map_err(|source| MatrixError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    parse_matrix(&text).map_err(|(line, message)| MatrixError::Parse {
        path: file.to_path_buf(),
        line,
        message,
    })
}

/// One (kernel, test) cell of the matrix: boots the kernel, runs the test, writes its log and
/// KTAP document into the results directory.
struct Cell<'a> {
    kname: &'a str,
    prepared: &'a super::PreparedKernel,
    test: &'a LabTest,
    /// The results directory.
    dir: &'a Path,
}

/// What one cell produced.
struct CellResult {
    outcome: Outcome,
    detail: Option<String>,
    seconds: f64,
    log: String,
    ktap: String,
}

impl Cell<'_> {
    fn run(
        &self,
        lab: &Lab,
        matrix: &Matrix,
        bins: &[PathBuf],
        defaults: &RunOptions,
    ) -> CellResult {
        let started = Instant::now();
        let (kname, t) = (self.kname, self.test);
        let expect_fail = matrix.expects_failure(t, kname);
        let overrides = options_for(defaults, t);
        let command = matrix.command_for(t, kname);
        let argv = ["sh".to_string(), "-c".to_string(), command.clone()];
        let (log_rel, ktap_rel) = (
            format!("{kname}/{}.log", t.name),
            format!("{kname}/{}.ktap", t.name),
        );
        let mut log = format!(
            "# {kname} / {}: sh -c {command:?}{}\n",
            t.name,
            if expect_fail {
                " (designed to fail on this kernel)"
            } else {
                ""
            }
        );
        let mut stdout = String::new();
        let mut detail = None;
        let outcome = match overrides
            .and_then(|opts| lab.boot(self.prepared, bins, &argv, &opts, OutputMode::Capture))
        {
            Ok((report, dir)) => {
                stdout = fs::read_to_string(dir.join("stdout")).unwrap_or_default();
                let stderr = fs::read_to_string(dir.join("stderr")).unwrap_or_default();
                let _ = write!(log, "--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
                for w in &report.warnings {
                    let _ = writeln!(log, "--- guest warning: {w}");
                }
                let _ = writeln!(log, "--- exit status {}", report.status);
                remove_run_dir(&dir);
                Outcome::from_status(report.status, expect_fail)
            }
            Err(e) => {
                let _ = writeln!(log, "--- lab error ---\n{e}");
                detail = e.to_string().lines().next().map(str::to_string);
                match e {
                    LabError::GuestRun {
                        source: GuestRunError::Timeout { .. },
                        ..
                    } => Outcome::Timeout,
                    LabError::GuestRun {
                        source: GuestRunError::Interrupted { .. },
                        ..
                    } => Outcome::Interrupted,
                    _ => Outcome::Error,
                }
            }
        };
        let _ = fs::write(self.dir.join(&log_rel), log);
        let ktap = results::cell_ktap(&t.name, &outcome, &stdout, detail.as_deref());
        let _ = fs::write(self.dir.join(&ktap_rel), ktap);
        CellResult {
            outcome,
            detail,
            seconds: started.elapsed().as_secs_f64(),
            log: log_rel,
            ktap: ktap_rel,
        }
    }
}

/// `uname -r` of this host.
fn host_kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Which cells of `cells` this run has: all of them, or `--shard K/N`'s part.
pub fn cells_of_shard(
    cells: &[(String, String)],
    shard: Option<Shard>,
    durations: &CellDurations,
) -> Vec<bool> {
    match shard {
        None => vec![true; cells.len()],
        Some(s) => shard::assign(cells, durations, s.count)
            .into_iter()
            .map(|k| k == s.index)
            .collect(),
    }
}

/// Runs the matrix in `file` on every kernel of `--kernel` (the `--shard` part of it); exit 1
/// when anything failed, 130 when interrupted.
///
/// Kernels are prepared (fetched or built) first, one after the other; then the (kernel, test)
/// cells run `--jobs` at a time (each TCG guest is one host thread), each with its own log; the
/// table and the order of results are the same whatever the number of jobs. Everything goes
/// into a new results directory under `--results` ([`crate::results`]), also when interrupted.
pub fn run(args: &LabArgs, arch: &'static ArchSpec, file: &Path) -> Result<i32, LabError> {
    let matrix_bytes = fs::read(file).map_err(|source| MatrixError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let matrix = read_matrix(file)?;
    let tests = &matrix.select(&args.only_tests)?;
    let test_names: Vec<String> = tests.iter().map(|t| t.name.clone()).collect();
    let shard = args.shard_spec()?;
    let kernels = kernel_list(&args.kernel);
    let keys: Vec<(String, String)> = kernels
        .iter()
        .flat_map(|k| test_names.iter().map(move |t| (k.clone(), t.clone())))
        .collect();
    let durations = CellDurations::read(&args.durations_file())?;
    let mine = cells_of_shard(&keys, shard, &durations);
    let lab = Lab::new(args, arch)?;
    let bins = lab.bins()?;
    let defaults = RunOptions::from_args(args)?;
    let started_at = std::time::SystemTime::now();
    let (started_utc, stamp) = results::utc_stamps(started_at);
    let dir = results::create_unique_dir(&args.results, &stamp, &results::shard_suffix(shard))?;
    eprintln!("agelab lab: results in {}", dir.display());
    let started = Instant::now();
    let mut prepared = Vec::new();
    let mut kernel_errors = Vec::new();
    for (ki, kname) in kernels.iter().enumerate() {
        let _ = fs::create_dir_all(dir.join(kname));
        let needed = (0..tests.len()).any(|ti| mine[ki * tests.len() + ti]);
        if !needed || interrupt::requested() {
            prepared.push(None);
            kernel_errors.push(None);
            continue;
        }
        match lab.kernel(kname) {
            Ok(k) => {
                prepared.push(Some(k));
                kernel_errors.push(None);
            }
            Err(e) => {
                eprintln!("agelab lab: {kname}: {e}");
                let _ = fs::write(dir.join(kname).join("kernel-error.log"), e.to_string());
                prepared.push(None);
                kernel_errors.push(e.to_string().lines().next().map(str::to_string));
            }
        }
    }
    let dir_ref: &Path = &dir;
    let cells: Vec<(usize, Cell)> = kernels
        .iter()
        .zip(&prepared)
        .enumerate()
        .filter_map(|(ki, (kname, p))| p.as_ref().map(|p| (ki, kname, p)))
        .flat_map(|(ki, kname, p)| {
            tests.iter().enumerate().map(move |(ti, test)| {
                (
                    ki * tests.len() + ti,
                    Cell {
                        kname,
                        prepared: p,
                        test,
                        dir: dir_ref,
                    },
                )
            })
        })
        .filter(|(i, _)| mine[*i])
        .collect();
    let results = std::sync::Mutex::new(
        (0..keys.len())
            .map(|_| None::<CellResult>)
            .collect::<Vec<_>>(),
    );
    let next = std::sync::atomic::AtomicUsize::new(0);
    let jobs = args
        .jobs
        .unwrap_or_else(default_jobs)
        .clamp(1, cells.len().max(1));
    eprintln!(
        "agelab lab: {} cells ({} kernels x {} tests{}), {jobs} at a time",
        cells.len(),
        prepared.iter().flatten().count(),
        tests.len(),
        shard.map_or(String::new(), |s| format!(
            ", shard {s} of {} cells",
            keys.len()
        ))
    );
    let view = CellsView::new(cells.len(), view::live_view_wanted(), args.hide_passed);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                if interrupt::requested() {
                    break;
                }
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some((index, cell)) = cells.get(i) else {
                    break;
                };
                let what = format!("{} / {}", cell.kname, cell.test.name);
                let running = view.start(cell.kname, &cell.test.name);
                let r = cell.run(&lab, &matrix, &bins, &defaults);
                view.finish(
                    running,
                    &what,
                    &r.outcome,
                    &format!("({:.1} s, log {})", r.seconds, dir.join(&r.log).display()),
                );
                if let Ok(mut all) = results.lock() {
                    all[*index] = Some(r);
                }
            });
        }
    });
    view.close();
    let interrupted = interrupt::requested();
    let results = results.into_inner().unwrap_or_default();
    let wall = started.elapsed().as_secs_f64();
    eprintln!("agelab lab: matrix wall time {wall:.1} s with {jobs} job(s)");
    let mut cell_records = Vec::new();
    for (i, ((kname, tname), r)) in keys.iter().zip(results).enumerate() {
        if !mine[i] {
            continue;
        }
        let kernel_error = kernel_errors[i / tests.len()].clone();
        let record = match (r, kernel_error) {
            (Some(r), _) => results::CellRecord {
                kernel: kname.clone(),
                test: tname.clone(),
                outcome: r.outcome.key().into(),
                status: r.outcome.status(),
                seconds: r.seconds,
                log: Some(r.log),
                ktap: Some(r.ktap),
                detail: r.detail,
            },
            (None, Some(e)) => results::CellRecord {
                kernel: kname.clone(),
                test: tname.clone(),
                outcome: Outcome::Error.key().into(),
                status: None,
                seconds: 0.0,
                log: Some(format!("{kname}/kernel-error.log")),
                ktap: None,
                detail: Some(format!("kernel: {e}")),
            },
            (None, None) => results::CellRecord {
                kernel: kname.clone(),
                test: tname.clone(),
                outcome: Outcome::NotRun.key().into(),
                status: None,
                seconds: 0.0,
                log: None,
                ktap: None,
                detail: None,
            },
        };
        cell_records.push(record);
    }
    let accel = RunOptions::accel_name(args).map_or_else(|e| e.to_string(), str::to_string);
    let record = results::RunRecord {
        format: results::RESULTS_FORMAT.into(),
        matrix: file.display().to_string(),
        matrix_hash: {
            let mut h = crate::hash::CacheHasher::default();
            h.update(&matrix_bytes);
            h.hex()
        },
        arch: arch.name.to_string(),
        kernels: kernels.clone(),
        tests: test_names.clone(),
        shard,
        started_utc,
        wall_seconds: wall,
        jobs,
        accel,
        host_kernel: host_kernel(),
        complete: !interrupted,
        cells: cell_records,
        merged_from: Vec::new(),
    };
    let grid = record.grid();
    let plain = render_table(&kernels, &test_names, &grid, TableStyle::default());
    results::write_run_files(&dir, &|_| dir.clone(), &record, &plain)?;
    let style = TableStyle {
        colour: crate::colour::wanted_here(std::io::stdout().is_terminal()),
        hide_passed: args.hide_passed,
    };
    print!("{}", render_table(&kernels, &test_names, &grid, style));
    let outcomes: Vec<Outcome> = record.cells.iter().map(|c| c.outcome()).collect();
    print_closing_lines(&outcomes);
    eprintln!("agelab lab: results in {}", dir.display());
    if interrupted {
        eprintln!(
            "agelab lab: interrupted: {} of {} cells finished; partial results in {}",
            outcomes
                .iter()
                .filter(|o| !matches!(o, Outcome::Interrupted | Outcome::NotRun))
                .count(),
            outcomes.len(),
            dir.display()
        );
        return Ok(interrupt::EXIT_INTERRUPTED);
    }
    Ok(i32::from(outcomes.iter().any(Outcome::fails_matrix)))
}

/// The closing lines of a run or merge: designed failures, then the plain `N passed, N
/// failed, N skipped` line test runners print, so CI logs read the same as cargo's.
pub fn print_closing_lines(outcomes: &[Outcome]) {
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let designed = count(|o| matches!(o, Outcome::ExpectedFail(_)));
    if designed > 0 {
        println!("lab: {designed} designed failures happened as expected (counted as passed)");
    }
    println!(
        "lab: {} passed, {} failed, {} skipped",
        count(Outcome::passed),
        count(Outcome::fails_matrix),
        count(|o| *o == Outcome::Skip)
    );
}

#[cfg(test)]
mod tests;
