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
use super::qemu::OutputMode;
use super::{default_jobs, kernel_list, remove_run_dir, Lab, LabArgs, LabError, RunOptions};
use clap::Parser;
use std::fmt::Write as _;
use std::fs;
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
    pub fn select(&self, only: &[String]) -> Result<Vec<LabTest>, String> {
        if let Some(unknown) = only
            .iter()
            .find(|n| !self.tests.iter().any(|t| &t.name == *n))
        {
            return Err(format!(
                "--tests: no test named '{unknown}' in the matrix (known: {})",
                self.tests
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
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
fn parse_facts(rest: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut words = rest.split_whitespace();
    let kernel = words
        .next()
        .ok_or("expected `@kernel NAME VAR=yes|no ...`")?;
    let mut facts = Vec::new();
    for w in words {
        let (var, value) = w
            .split_once('=')
            .ok_or_else(|| format!("@kernel {kernel}: '{w}' is not VAR=value"))?;
        let valid_var = !var.is_empty()
            && var
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !valid_var {
            return Err(format!(
                "@kernel {kernel}: fact name '{var}' must be upper case letters, digits and _"
            ));
        }
        if value != "yes" && value != "no" {
            return Err(format!(
                "@kernel {kernel}: {var}={value}: a fact is yes or no"
            ));
        }
        facts.push((var.to_string(), value.to_string()));
    }
    if facts.is_empty() {
        return Err(format!("@kernel {kernel}: no facts"));
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
            let (kernel, kf) = parse_facts(rest).map_err(err)?;
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

/// The result of one test on one kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exit status 0.
    Pass,
    /// Exit status 4.
    Skip,
    /// Any other exit status.
    Fail(i32),
    /// The lab could not run the test (kernel fetch, boot, timeout).
    Error,
    /// A designed failure (see the module doc) that happened, with its exit status.
    ExpectedFail(i32),
    /// A designed failure that did not happen: the check could not fail.
    UnexpectedPass,
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Pass => "pass".into(),
            Outcome::Skip => "skip".into(),
            Outcome::Fail(c) => format!("FAIL({c})"),
            Outcome::Error => "ERROR".into(),
            Outcome::ExpectedFail(_) => "fail (expected)".into(),
            Outcome::UnexpectedPass => "PASS (unexpected)".into(),
        }
    }

    /// The outcome of exit `status`, for a test designed to fail (`expect_fail`) or not.
    pub fn from_status(status: i32, expect_fail: bool) -> Self {
        match (status, expect_fail) {
            (0, false) => Outcome::Pass,
            (0, true) => Outcome::UnexpectedPass,
            (4, _) => Outcome::Skip,
            (c, false) => Outcome::Fail(c),
            (c, true) => Outcome::ExpectedFail(c),
        }
    }

    /// Whether this outcome fails the matrix.
    pub fn fails_matrix(&self) -> bool {
        matches!(
            self,
            Outcome::Fail(_) | Outcome::Error | Outcome::UnexpectedPass
        )
    }
}

/// Renders the kernel × test table.
pub fn render_table(kernels: &[String], tests: &[LabTest], results: &[Vec<Outcome>]) -> String {
    let first = tests.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let widths: Vec<usize> = kernels
        .iter()
        .enumerate()
        .map(|(ki, k)| {
            results
                .get(ki)
                .into_iter()
                .flatten()
                .map(|o| o.label().len())
                .fold(k.len().max(9), usize::max)
        })
        .collect();
    let mut out = format!("{:first$}", "test");
    for (k, w) in kernels.iter().zip(&widths) {
        let _ = write!(out, "  {k:w$}");
    }
    out.push('\n');
    for (ti, t) in tests.iter().enumerate() {
        let _ = write!(out, "{:first$}", t.name);
        for (ki, w) in widths.iter().enumerate() {
            let _ = write!(out, "  {:w$}", results[ki][ti].label());
        }
        out.push('\n');
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

/// One (kernel, test) cell of the matrix: boots the kernel, runs the test, writes its log.
struct Cell<'a> {
    kname: &'a str,
    prepared: &'a super::PreparedKernel,
    test: &'a LabTest,
    logs: PathBuf,
}

impl Cell<'_> {
    fn run(
        &self,
        lab: &Lab,
        matrix: &Matrix,
        bins: &[PathBuf],
        defaults: &RunOptions,
    ) -> (Outcome, PathBuf) {
        let (kname, t) = (self.kname, self.test);
        let expect_fail = matrix.expects_failure(t, kname);
        let overrides = options_for(defaults, t);
        let command = matrix.command_for(t, kname);
        let argv = ["sh".to_string(), "-c".to_string(), command.clone()];
        let log_path = self.logs.join(format!("{}.log", t.name));
        let mut log = format!(
            "# {kname} / {}: sh -c {command:?}{}\n",
            t.name,
            if expect_fail {
                " (designed to fail on this kernel)"
            } else {
                ""
            }
        );
        let outcome = match overrides
            .and_then(|opts| lab.boot(self.prepared, bins, &argv, &opts, OutputMode::Capture))
        {
            Ok((report, dir)) => {
                for (name, label) in [("stdout", "stdout"), ("stderr", "stderr")] {
                    let text = fs::read_to_string(dir.join(name)).unwrap_or_default();
                    let _ = write!(log, "--- {label} ---\n{text}");
                }
                for w in &report.warnings {
                    let _ = writeln!(log, "--- guest warning: {w}");
                }
                let _ = writeln!(log, "--- exit status {}", report.status);
                remove_run_dir(&dir);
                Outcome::from_status(report.status, expect_fail)
            }
            Err(e) => {
                let _ = writeln!(log, "--- lab error ---\n{e}");
                Outcome::Error
            }
        };
        let _ = fs::write(&log_path, log);
        (outcome, log_path)
    }
}

/// `[3/51, 2m05s elapsed, ~4m12s left]`: the estimate assumes the cells left take as long as
/// the ones done (they run `jobs` at a time, as the ones done did).
pub fn progress(done: usize, total: usize, elapsed: std::time::Duration) -> String {
    let fmt = |secs: u64| {
        if secs >= 60 {
            format!("{}m{:02}s", secs / 60, secs % 60)
        } else {
            format!("{secs}s")
        }
    };
    let left = if done == 0 {
        String::new()
    } else {
        let per = elapsed.as_secs_f64() / done as f64;
        format!(
            ", ~{} left",
            fmt((per * (total - done) as f64).round() as u64)
        )
    };
    format!("[{done}/{total}, {} elapsed{left}]", fmt(elapsed.as_secs()))
}

/// Runs the matrix in `file` on every kernel of `--kernel`; exit 1 when anything failed.
///
/// Kernels are prepared (fetched or built) first, one after the other; then the (kernel, test)
/// cells run `--jobs` at a time (each TCG guest is one host thread), each with its own log; the
/// table and the order of results are the same whatever the number of jobs.
pub fn run(args: &LabArgs, arch: &'static ArchSpec, file: &Path) -> Result<i32, LabError> {
    let matrix = read_matrix(file)?;
    let tests = &matrix.select(&args.only_tests).map_err(LabError::Usage)?;
    let lab = Lab::new(args, arch)?;
    let bins = lab.bins()?;
    let kernels = kernel_list(&args.kernel);
    let defaults = RunOptions::from_args(args)?;
    let mut prepared = Vec::new();
    for kname in &kernels {
        let logs = args.results.join(kname);
        let _ = fs::create_dir_all(&logs);
        match lab.kernel(kname) {
            Ok(k) => prepared.push(Some(k)),
            Err(e) => {
                eprintln!("agelab lab: {kname}: {e}");
                let _ = fs::write(logs.join("kernel-error.log"), e.to_string());
                prepared.push(None);
            }
        }
    }
    let cells: Vec<(usize, usize, Cell)> = kernels
        .iter()
        .zip(&prepared)
        .enumerate()
        .filter_map(|(ki, (kname, p))| p.as_ref().map(|p| (ki, kname, p)))
        .flat_map(|(ki, kname, p)| {
            tests.iter().enumerate().map(move |(ti, test)| {
                (
                    ki,
                    ti,
                    Cell {
                        kname,
                        prepared: p,
                        test,
                        logs: args.results.join(kname),
                    },
                )
            })
        })
        .collect();
    let results = std::sync::Mutex::new(vec![vec![Outcome::Error; tests.len()]; kernels.len()]);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let jobs = args
        .jobs
        .unwrap_or_else(default_jobs)
        .clamp(1, cells.len().max(1));
    let started = Instant::now();
    eprintln!(
        "agelab lab: {} cells ({} kernels x {} tests), {jobs} at a time",
        cells.len(),
        prepared.iter().flatten().count(),
        tests.len()
    );
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some((ki, ti, cell)) = cells.get(i) else {
                    break;
                };
                let t0 = Instant::now();
                let (outcome, log_path) = cell.run(&lab, &matrix, &bins, &defaults);
                let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                eprintln!(
                    "agelab lab: {} {} / {}: {} ({:.1} s, log {})",
                    progress(n, cells.len(), started.elapsed()),
                    cell.kname,
                    cell.test.name,
                    outcome.label(),
                    t0.elapsed().as_secs_f64(),
                    log_path.display()
                );
                if let Ok(mut r) = results.lock() {
                    r[*ki][*ti] = outcome;
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    eprintln!(
        "agelab lab: matrix wall time {:.1} s with {jobs} job(s)",
        started.elapsed().as_secs_f64()
    );
    print!("{}", render_table(&kernels, tests, &results));
    let count = |f: fn(&Outcome) -> bool| results.iter().flatten().filter(|o| f(o)).count();
    let failed = count(Outcome::fails_matrix);
    let designed = count(|o| matches!(o, Outcome::ExpectedFail(_)));
    if designed > 0 {
        println!("lab: {designed} designed failures happened as expected (counted as passed)");
    }
    // The plain closing line test runners print, so CI logs read the same as cargo's.
    println!(
        "lab: {} passed, {failed} failed, {} skipped",
        count(|o| matches!(o, Outcome::Pass | Outcome::ExpectedFail(_))),
        count(|o| *o == Outcome::Skip)
    );
    Ok(i32::from(failed > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tests_with_options() {
        let text = "# comment\n\nkvm -- test -c /dev/kvm\nzram --zram 256M --module zram -- grep -q zram0 /proc/swaps && echo ok\nshadow --append kvm.tdp_mmu=N -- true\n";
        let tests = parse_matrix(text).unwrap().tests;
        assert_eq!(tests[2].options.append.as_deref(), Some("kvm.tdp_mmu=N"));
        let tests = &tests[..2];
        assert_eq!(tests.len(), 2);
        assert_eq!(tests[0].name, "kvm");
        assert_eq!(tests[0].options, TestOptions::default());
        assert_eq!(tests[1].options.zram.as_deref(), Some("256M"));
        assert_eq!(tests[1].options.modules, ["zram"]);
        assert_eq!(tests[1].command, "grep -q zram0 /proc/swaps && echo ok");
    }

    #[test]
    fn rejects_bad_lines() {
        assert_eq!(parse_matrix("a\nno-separator").unwrap_err().0, 1);
        assert_eq!(parse_matrix("a -- true\na -- false").unwrap_err().0, 2);
        assert_eq!(parse_matrix("a --bogus -- true").unwrap_err().0, 1);
    }

    #[test]
    fn kernel_facts_and_designed_failures() {
        let text = "@kernel debian-6.1 SECONDARY_MMU_AGING=no\n\
                    @kernel custom-7.2 SECONDARY_MMU_AGING=yes\n\
                    smmu --needs SECONDARY_MMU_AGING -- t -e \"$SECONDARY_MMU_AGING\"\n\
                    other --expect-fail custom-7.2,debian-7.2 -- true\n";
        let m = parse_matrix(text).unwrap();
        let (smmu, other) = (&m.tests[0], &m.tests[1]);
        assert!(m.expects_failure(smmu, "debian-6.1"));
        assert!(!m.expects_failure(smmu, "custom-7.2"));
        // A kernel with no stated fact is expected to work.
        assert!(!m.expects_failure(smmu, "debian-6.12"));
        assert!(m.expects_failure(other, "debian-7.2"));
        assert!(!m.expects_failure(other, "debian-6.1"));
        assert_eq!(
            m.command_for(smmu, "debian-6.1"),
            "export SECONDARY_MMU_AGING=no; t -e \"$SECONDARY_MMU_AGING\""
        );
        assert_eq!(m.command_for(other, "debian-6.12"), "true");
        assert_eq!(m.select(&["other".into()]).unwrap(), vec![other.clone()]);
        assert_eq!(m.select(&[]).unwrap().len(), 2);
        assert!(m
            .select(&["nope".into()])
            .unwrap_err()
            .contains("known: smmu, other"));

        assert_eq!(Outcome::from_status(1, true), Outcome::ExpectedFail(1));
        assert_eq!(Outcome::from_status(0, true), Outcome::UnexpectedPass);
        assert_eq!(Outcome::from_status(4, true), Outcome::Skip);
        assert!(!Outcome::ExpectedFail(1).fails_matrix());
        assert!(Outcome::UnexpectedPass.fails_matrix());
        assert!(Outcome::Fail(1).fails_matrix());
    }

    #[test]
    fn bad_fact_lines_are_refused_with_their_line() {
        for bad in [
            "@kernel",
            "@kernel debian-6.1",
            "@kernel debian-6.1 SMMU",
            "@kernel debian-6.1 smmu=no",
            "@kernel debian-6.1 SMMU=maybe",
            "@kernel k A=no\n@kernel k B=yes",
        ] {
            assert!(parse_matrix(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        // 256 cases (proptest's default): arbitrary matrix text is parsed or refused, no panic.
        #[test]
        fn arbitrary_matrix_text_never_panics(s in "(@kernel |[a-z-]{1,8} |-- |--needs |--expect-fail |[A-Z_=a-z0-9,]{0,12}|\n){0,30}") {
            let _ = parse_matrix(&s);
        }
    }

    #[test]
    fn progress_line_estimates_what_is_left() {
        use std::time::Duration;
        assert_eq!(
            progress(0, 10, Duration::from_secs(5)),
            "[0/10, 5s elapsed]"
        );
        assert_eq!(
            progress(3, 12, Duration::from_secs(90)),
            "[3/12, 1m30s elapsed, ~4m30s left]"
        );
        assert_eq!(
            progress(12, 12, Duration::from_secs(61)),
            "[12/12, 1m01s elapsed, ~0s left]"
        );
    }

    #[test]
    fn table() {
        let tests = parse_matrix("kvm -- true\nlong-test-name -- true")
            .unwrap()
            .tests;
        let kernels = vec!["debian-6.1".to_string(), "custom-7.2".to_string()];
        let results = vec![
            vec![Outcome::Pass, Outcome::Skip],
            vec![Outcome::Fail(1), Outcome::ExpectedFail(1)],
        ];
        assert_eq!(
            render_table(&kernels, &tests, &results),
            "test            debian-6.1  custom-7.2     \n\
             kvm             pass        FAIL(1)        \n\
             long-test-name  skip        fail (expected)\n"
        );
    }
}
