//! The lab matrix: a list of guest commands run on several kernels, reported as a
//! kernel × test table. Exit status 0 is pass, 4 is skip (kselftest convention), others fail.
//!
//! File format, one test per line (`#` comments): `NAME [OPTIONS] -- SHELL COMMAND`, where the
//! command runs under `sh -c` in the guest and OPTIONS are `--zram`, `--mem`, `--smp`,
//! `--timeout` or `--module` as for `agelab lab`.

use super::arch::ArchSpec;
use super::qemu::OutputMode;
use super::{kernel_list, remove_run_dir, Lab, LabArgs, LabError, RunOptions};
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

/// Parses matrix text; errors carry the 1-based line number.
pub fn parse_matrix(text: &str) -> Result<Vec<LabTest>, (usize, String)> {
    let mut tests: Vec<LabTest> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |m: String| (i + 1, m);
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
    Ok(tests)
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
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Pass => "pass".into(),
            Outcome::Skip => "skip".into(),
            Outcome::Fail(c) => format!("FAIL({c})"),
            Outcome::Error => "ERROR".into(),
        }
    }

    fn from_status(status: i32) -> Self {
        match status {
            0 => Outcome::Pass,
            4 => Outcome::Skip,
            c => Outcome::Fail(c),
        }
    }
}

/// Renders the kernel × test table.
pub fn render_table(kernels: &[String], tests: &[LabTest], results: &[Vec<Outcome>]) -> String {
    let first = tests.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let widths: Vec<usize> = kernels.iter().map(|k| k.len().max(9)).collect();
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

/// Runs the matrix in `file` on every kernel of `--kernel`; exit 1 when anything failed.
pub fn run(args: &LabArgs, arch: &'static ArchSpec, file: &Path) -> Result<i32, LabError> {
    let text = fs::read_to_string(file).map_err(|source| MatrixError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let tests = parse_matrix(&text).map_err(|(line, message)| MatrixError::Parse {
        path: file.to_path_buf(),
        line,
        message,
    })?;
    let lab = Lab::new(args, arch)?;
    let bins = lab.bins()?;
    let kernels = kernel_list(&args.kernel);
    let defaults = RunOptions::from_args(args)?;
    let mut results = Vec::new();
    for kname in &kernels {
        let logs = args.results.join(kname);
        let _ = fs::create_dir_all(&logs);
        let prepared = match lab.kernel(kname) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("agelab lab: {kname}: {e}");
                let _ = fs::write(logs.join("kernel-error.log"), e.to_string());
                results.push(vec![Outcome::Error; tests.len()]);
                continue;
            }
        };
        let mut row = Vec::new();
        for t in &tests {
            let mut opts = defaults.clone();
            let o = &t.options;
            let overrides = (|| -> Result<(), LabError> {
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
                Ok(())
            })();
            let argv = ["sh".to_string(), "-c".to_string(), t.command.clone()];
            let started = Instant::now();
            let log_path = logs.join(format!("{}.log", t.name));
            let mut log = format!("# {kname} / {}: sh -c {:?}\n", t.name, t.command);
            let outcome = match overrides
                .and_then(|()| lab.boot(&prepared, &bins, &argv, &opts, OutputMode::Capture))
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
                    Outcome::from_status(report.status)
                }
                Err(e) => {
                    let _ = writeln!(log, "--- lab error ---\n{e}");
                    Outcome::Error
                }
            };
            let _ = fs::write(&log_path, log);
            eprintln!(
                "agelab lab: {kname} / {}: {} ({:.1} s, log {})",
                t.name,
                outcome.label(),
                started.elapsed().as_secs_f64(),
                log_path.display()
            );
            row.push(outcome);
        }
        results.push(row);
    }
    print!("{}", render_table(&kernels, &tests, &results));
    let count = |f: fn(&Outcome) -> bool| results.iter().flatten().filter(|o| f(o)).count();
    let failed = count(|o| matches!(o, Outcome::Fail(_) | Outcome::Error));
    // The plain closing line test runners print, so CI logs read the same as cargo's.
    println!(
        "lab: {} passed, {failed} failed, {} skipped",
        count(|o| *o == Outcome::Pass),
        count(|o| *o == Outcome::Skip)
    );
    Ok(i32::from(failed > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tests_with_options() {
        let text = "# comment\n\nkvm -- test -c /dev/kvm\nzram --zram 256M --module zram -- grep -q zram0 /proc/swaps && echo ok\n";
        let tests = parse_matrix(text).unwrap();
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
    fn table() {
        let tests = parse_matrix("kvm -- true\nlong-test-name -- true").unwrap();
        let kernels = vec!["debian-6.1".to_string(), "custom-7.2".to_string()];
        let results = vec![
            vec![Outcome::Pass, Outcome::Skip],
            vec![Outcome::Fail(1), Outcome::Error],
        ];
        assert_eq!(
            render_table(&kernels, &tests, &results),
            "test            debian-6.1  custom-7.2\n\
             kvm             pass        FAIL(1)   \n\
             long-test-name  skip        ERROR     \n"
        );
    }
}
