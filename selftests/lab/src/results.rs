//! Results of a matrix run as artefacts: one directory per run under `--results`, named by the
//! UTC time it started (`2026-12-06T17-05-03Z`, `-shard-2-of-4` for a shard, `-2` when the name
//! is taken: an existing directory is never written into), holding
//!
//! - `KERNEL/TEST.log`: the cell's command, stdout, stderr, guest warnings and exit status;
//! - `KERNEL/TEST.ktap`: the cell as a one-test KTAP document, the test's own KTAP (when it
//!   prints some) nested as its subtest, the way kselftest's runner wraps a test's output;
//! - `results.ktap`: every cell of the run as a subtest of one KTAP document (KernelCI reads it);
//! - `results.json`: the run ([`RunRecord`]): matrix, kernels, tests, shard, host, every cell;
//! - `junit.xml`: one `<testsuite>` per kernel, one `<testcase>` per test (CI dashboards);
//! - `table.txt`: the kernel × test table as printed.
//!
//! `agelab lab merge DIR...` reads the `results.json` of shards and checks that together they ran
//! every cell of the matrix exactly once ([`merge`]).

use crate::outcome::Outcome;
use crate::shard::{CellDurations, Shard};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The `format` field of every `results.json` this version writes and reads.
pub const RESULTS_FORMAT: &str = "agelab-lab-results v1";

/// The longest stretch of a cell's log copied into `junit.xml` (its end, where failures show).
const JUNIT_LOG_TAIL: usize = 16 * 1024;

/// Errors of writing or reading results directories.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// A file or directory could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `results.json` is not a results record of this version.
    #[error("{path}: not an agelab lab results record ({why})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The JUnit XML could not be produced.
    #[error("writing JUnit XML: {0}")]
    Junit(#[from] quick_junit::SerializeError),
}

/// Errors of `agelab lab merge`: each names the cell or the directories involved.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A results directory could not be read.
    #[error(transparent)]
    Results(#[from] ResultsError),
    /// Two directories ran different matrix files (or test selections, or architectures).
    #[error("{first} and {second} ran different matrices: {why}")]
    DifferentMatrix {
        /// The first directory.
        first: PathBuf,
        /// The other directory.
        second: PathBuf,
        /// What differs.
        why: String,
    },
    /// A cell ran in two directories.
    #[error("cell {kernel} / {test} ran twice: in {first} and in {second}")]
    RunTwice {
        /// The kernel.
        kernel: String,
        /// The test.
        test: String,
        /// Where it ran first.
        first: PathBuf,
        /// Where it ran again.
        second: PathBuf,
    },
    /// Cells of the matrix that no directory ran to the end.
    #[error("{} cell(s) missing: {}", cells.len(), cells.iter().map(|(k, t, why)| format!("{k} / {t} ({why})")).collect::<Vec<_>>().join(", "))]
    Missing {
        /// (kernel, test, why) of each missing cell.
        cells: Vec<(String, String, String)>,
    },
}

/// One cell of a run in `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// The kernel.
    pub kernel: String,
    /// The test (matrix line name).
    pub test: String,
    /// `pass`, `skip`, `fail`, `error`, `timeout`, `expected-fail`, `unexpected-pass`,
    /// `interrupted` or `not-run` ([`Outcome::key`]).
    pub outcome: String,
    /// The command's exit status, when it finished.
    pub status: Option<i32>,
    /// Wall seconds of the cell (boot to power-off).
    pub seconds: f64,
    /// The cell's log, relative to the results directory.
    pub log: Option<String>,
    /// The cell's KTAP document, relative to the results directory.
    pub ktap: Option<String>,
    /// The lab's error (first line) for `error` and `timeout`.
    pub detail: Option<String>,
}

impl CellRecord {
    /// The outcome this record holds.
    pub fn outcome(&self) -> Outcome {
        Outcome::from_key(&self.outcome, self.status)
    }
}

/// A results directory's `results.json`: one run (or a merge of shards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Always [`RESULTS_FORMAT`].
    pub format: String,
    /// The matrix file as given.
    pub matrix: String,
    /// Content hash of the matrix file (shards of one matrix agree on it).
    pub matrix_hash: String,
    /// Guest architecture.
    pub arch: String,
    /// The kernels of the run, in `--kernel` order (all of them, not only this shard's).
    pub kernels: Vec<String>,
    /// The tests of the run, in matrix order (after `--tests`).
    pub tests: Vec<String>,
    /// The shard this run was, if any.
    pub shard: Option<Shard>,
    /// When the run started (UTC, RFC 3339).
    pub started_utc: String,
    /// Wall seconds of the run.
    pub wall_seconds: f64,
    /// Cells run at a time.
    pub jobs: usize,
    /// The accelerator QEMU used.
    pub accel: String,
    /// `uname -r` of the host that ran it.
    pub host_kernel: String,
    /// False when the run was interrupted before every cell of it finished.
    pub complete: bool,
    /// The cells this run was responsible for, in (kernel, test) order.
    pub cells: Vec<CellRecord>,
    /// For a merge: the directories merged, in the order given.
    #[serde(default)]
    pub merged_from: Vec<String>,
}

impl RunRecord {
    /// The cell of `kernel` × `test`, if this run has it.
    pub fn cell(&self, kernel: &str, test: &str) -> Option<&CellRecord> {
        self.cells
            .iter()
            .find(|c| c.kernel == kernel && c.test == test)
    }

    /// The kernel × test grid of outcomes (`None`: not a cell of this run).
    pub fn grid(&self) -> Vec<Vec<Option<Outcome>>> {
        self.kernels
            .iter()
            .map(|k| {
                self.tests
                    .iter()
                    .map(|t| self.cell(k, t).map(CellRecord::outcome))
                    .collect()
            })
            .collect()
    }

    /// The cells' wall seconds, for `--shard`'s balancing.
    pub fn durations(&self) -> CellDurations {
        CellDurations(
            self.cells
                .iter()
                .filter(|c| !matches!(c.outcome(), Outcome::Interrupted | Outcome::NotRun))
                .map(|c| ((c.kernel.clone(), c.test.clone()), c.seconds))
                .collect(),
        )
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days_from_civil inverse: eras of 400 years, March-based years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `time` in UTC as (`2026-12-06T17:05:03Z`, `2026-12-06T17-05-03Z`): RFC 3339, and the same
/// without colons for a file name.
pub fn utc_stamps(time: SystemTime) -> (String, String) {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let (h, mi, se) = (s / 3600, s % 3600 / 60, s % 60);
    (
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}-{mi:02}-{se:02}Z"),
    )
}

/// Creates a new directory `PARENT/STAMP[SUFFIX]` (then `-2`, `-3`, ... when taken) and returns
/// it; never an existing one.
pub fn create_unique_dir(
    parent: &Path,
    stamp: &str,
    suffix: &str,
) -> Result<PathBuf, ResultsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ResultsError::Io { path, source }
    };
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    for n in 1.. {
        let name = if n == 1 {
            format!("{stamp}{suffix}")
        } else {
            format!("{stamp}{suffix}-{n}")
        };
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    unreachable!("the loop returns or fails")
}

/// The results directory name's suffix for `shard`.
pub fn shard_suffix(shard: Option<Shard>) -> String {
    shard.map_or(String::new(), |s| {
        format!("-shard-{}-of-{}", s.index, s.count)
    })
}

/// Whether a guest's stdout line starts a (K)TAP document.
fn is_tap_header(line: &str) -> bool {
    line.starts_with("KTAP version ") || line.starts_with("TAP version ")
}

/// The cell as a one-test KTAP document. The test's own output is nested as its subtest from
/// its `KTAP version`/`TAP version` line on (indented four spaces); output before that, or all
/// of it when there is no header, becomes `#` diagnostic lines.
pub fn cell_ktap(test: &str, outcome: &Outcome, stdout: &str, detail: Option<&str>) -> String {
    let mut out = String::from("KTAP version 1\n1..1\n");
    let mut nested = false;
    for line in stdout.lines() {
        nested |= is_tap_header(line);
        if nested {
            let _ = writeln!(out, "    {line}");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
    let name = test.replace('#', "_");
    let diag = |out: &mut String, text: &str| {
        for l in text.lines() {
            let _ = writeln!(out, "# {l}");
        }
    };
    match outcome {
        Outcome::Pass => {
            let _ = writeln!(out, "ok 1 {name}");
        }
        Outcome::Skip => {
            let _ = writeln!(out, "ok 1 {name} # SKIP");
        }
        Outcome::ExpectedFail(c) => {
            let _ = writeln!(out, "ok 1 {name} # XFAIL exit status {c}");
        }
        other => {
            let why = match other {
                Outcome::Fail(c) => format!("exit status {c}"),
                Outcome::UnexpectedPass => {
                    "designed to fail on this kernel, but passed: the check cannot fail".into()
                }
                Outcome::Timeout => "timed out".into(),
                Outcome::Interrupted => "interrupted (SIGINT/SIGTERM)".into(),
                Outcome::NotRun => "not run (the run was interrupted first)".into(),
                _ => "the lab could not run the test".into(),
            };
            diag(&mut out, &why);
            if let Some(d) = detail {
                diag(&mut out, d);
            }
            let _ = writeln!(out, "not ok 1 {name}");
        }
    }
    out
}

/// Every cell's KTAP document as a subtest of one document (`ok N KERNEL/TEST`).
pub fn run_ktap(cells: &[(&CellRecord, String)]) -> String {
    let mut out = format!("KTAP version 1\n1..{}\n", cells.len());
    for (i, (cell, doc)) in cells.iter().enumerate() {
        for line in doc.lines() {
            let _ = writeln!(out, "    {line}");
        }
        let o = cell.outcome();
        let directive = match o {
            Outcome::Skip => " # SKIP",
            Outcome::ExpectedFail(_) => " # XFAIL",
            _ => "",
        };
        let ok = if o.fails_matrix() { "not ok" } else { "ok" };
        let _ = writeln!(
            out,
            "{ok} {} {}/{}{directive}",
            i + 1,
            cell.kernel,
            cell.test.replace('#', "_")
        );
    }
    out
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The run as JUnit XML: a `<testsuite>` per kernel, a `<testcase>` per test, the cell's log
/// (its last 16 KiB) as the case's `system-out`; `logs` maps a cell to its log text.
pub fn junit(
    record: &RunRecord,
    logs: &dyn Fn(&CellRecord) -> String,
) -> Result<String, ResultsError> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new(format!("agelab lab {}", record.matrix));
    report.set_time(Duration::from_secs_f64(record.wall_seconds.max(0.0)));
    for kernel in &record.kernels {
        let mut suite = TestSuite::new(kernel.as_str());
        for cell in record.cells.iter().filter(|c| &c.kernel == kernel) {
            let o = cell.outcome();
            let message = match (&o, &cell.detail) {
                (_, Some(d)) => d.clone(),
                (Outcome::Fail(c), None) => format!("exit status {c}"),
                (Outcome::UnexpectedPass, None) => {
                    "designed to fail on this kernel, but passed".into()
                }
                (o, None) => o.label(),
            };
            let status = match o {
                Outcome::Pass | Outcome::ExpectedFail(_) => TestCaseStatus::success(),
                Outcome::Skip | Outcome::NotRun | Outcome::Interrupted => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(message.as_str());
                    s
                }
                Outcome::Fail(_) | Outcome::UnexpectedPass => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(message.as_str());
                    s
                }
                Outcome::Error | Outcome::Timeout => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                    s.set_message(message.as_str())
                        .set_type(cell.outcome.as_str());
                    s
                }
            };
            let mut case = TestCase::new(cell.test.as_str(), status);
            case.set_classname(format!("lab.{kernel}"))
                .set_time(Duration::from_secs_f64(cell.seconds.max(0.0)));
            if let Outcome::ExpectedFail(c) = o {
                case.add_property(("designed-failure", format!("exit status {c}").as_str()));
            }
            let log = logs(cell);
            if !log.is_empty() {
                case.set_system_out(tail(&log, JUNIT_LOG_TAIL));
            }
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    Ok(report.to_string()?)
}

/// Writes `text` to `dir/name`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, ResultsError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| ResultsError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Writes `results.json`, `results.ktap`, `junit.xml` and `table.txt` of `record` into `dir`;
/// cell logs and KTAP documents are read from `base` (the directory their paths are relative to).
pub fn write_run_files(
    dir: &Path,
    base: &dyn Fn(&CellRecord) -> PathBuf,
    record: &RunRecord,
    table: &str,
) -> Result<(), ResultsError> {
    let json = serde_json::to_string_pretty(record).expect("results serialise");
    write_file(dir, "results.json", &(json + "\n"))?;
    let read = |cell: &CellRecord, rel: &Option<String>| {
        rel.as_ref()
            .and_then(|r| std::fs::read_to_string(base(cell).join(r)).ok())
            .unwrap_or_default()
    };
    let docs: Vec<(&CellRecord, String)> = record
        .cells
        .iter()
        .map(|c| {
            let doc = read(c, &c.ktap);
            let doc = if doc.is_empty() {
                cell_ktap(&c.test, &c.outcome(), "", c.detail.as_deref())
            } else {
                doc
            };
            (c, doc)
        })
        .collect();
    write_file(dir, "results.ktap", &run_ktap(&docs))?;
    write_file(dir, "junit.xml", &junit(record, &|c| read(c, &c.log))?)?;
    write_file(dir, "table.txt", table)?;
    Ok(())
}

/// Reads `DIR/results.json`.
pub fn read_record(dir: &Path) -> Result<RunRecord, ResultsError> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ResultsError::Io {
        path: path.clone(),
        source,
    })?;
    let record: RunRecord = serde_json::from_str(&text).map_err(|e| ResultsError::Format {
        path: path.clone(),
        why: e.to_string(),
    })?;
    if record.format != RESULTS_FORMAT {
        return Err(ResultsError::Format {
            path,
            why: format!("format {:?}, expected {RESULTS_FORMAT:?}", record.format),
        });
    }
    Ok(record)
}

/// A merge of shards: the merged record (cells with log paths relative to the merged
/// directory's parent's view — see [`MergedCell::dir`]) and where each cell came from.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The merged run: every cell of the matrix once, in (kernel, test) order.
    pub record: RunRecord,
    /// The directory each cell of `record.cells` came from (same order).
    pub sources: Vec<PathBuf>,
    /// The records merged, with their directories, in the order given.
    pub shards: Vec<(PathBuf, RunRecord)>,
}

/// Merges the runs in `dirs`: they must have run the same matrix (file contents and tests), and
/// together every (kernel, test) cell of it exactly once and to the end (an interrupted cell is
/// missing). Kernels are those of all runs, in order of first appearance.
pub fn merge(dirs: &[PathBuf]) -> Result<Merged, MergeError> {
    let mut shards = Vec::new();
    for dir in dirs {
        shards.push((dir.clone(), read_record(dir)?));
    }
    let Some((first_dir, first)) = shards.first() else {
        return Err(MergeError::Missing { cells: Vec::new() });
    };
    let mut kernels: Vec<String> = Vec::new();
    for (dir, r) in &shards {
        if r.matrix_hash != first.matrix_hash || r.tests != first.tests || r.arch != first.arch {
            return Err(MergeError::DifferentMatrix {
                first: first_dir.clone(),
                second: dir.clone(),
                why: format!(
                    "{} ({}, {}, tests {}) vs {} ({}, {}, tests {})",
                    first.matrix,
                    first.matrix_hash,
                    first.arch,
                    first.tests.join(","),
                    r.matrix,
                    r.matrix_hash,
                    r.arch,
                    r.tests.join(",")
                ),
            });
        }
        for k in &r.kernels {
            if !kernels.contains(k) {
                kernels.push(k.clone());
            }
        }
    }
    let mut found: std::collections::BTreeMap<(String, String), (PathBuf, CellRecord)> =
        std::collections::BTreeMap::new();
    for (dir, r) in &shards {
        for c in &r.cells {
            if matches!(c.outcome(), Outcome::Interrupted | Outcome::NotRun) {
                continue;
            }
            let key = (c.kernel.clone(), c.test.clone());
            if let Some((first, _)) = found.get(&key) {
                return Err(MergeError::RunTwice {
                    kernel: c.kernel.clone(),
                    test: c.test.clone(),
                    first: first.clone(),
                    second: dir.clone(),
                });
            }
            found.insert(key, (dir.clone(), c.clone()));
        }
    }
    let mut missing = Vec::new();
    let mut cells = Vec::new();
    let mut sources = Vec::new();
    for k in &kernels {
        for t in &first.tests {
            match found.remove(&(k.clone(), t.clone())) {
                Some((dir, c)) => {
                    sources.push(dir);
                    cells.push(c);
                }
                None => {
                    let why = shards
                        .iter()
                        .find_map(|(d, r)| {
                            r.cell(k, t)
                                .map(|c| format!("{} in {}", c.outcome, d.display()))
                        })
                        .unwrap_or_else(|| "in no results directory".into());
                    missing.push((k.clone(), t.clone(), why));
                }
            }
        }
    }
    if !missing.is_empty() {
        return Err(MergeError::Missing { cells: missing });
    }
    let wall = shards.iter().map(|(_, r)| r.wall_seconds).sum();
    let record = RunRecord {
        format: RESULTS_FORMAT.into(),
        matrix: first.matrix.clone(),
        matrix_hash: first.matrix_hash.clone(),
        arch: first.arch.clone(),
        kernels,
        tests: first.tests.clone(),
        shard: None,
        started_utc: shards
            .iter()
            .map(|(_, r)| r.started_utc.clone())
            .min()
            .unwrap_or_default(),
        wall_seconds: wall,
        jobs: first.jobs,
        accel: first.accel.clone(),
        host_kernel: first.host_kernel.clone(),
        complete: true,
        cells,
        merged_from: dirs.iter().map(|d| d.display().to_string()).collect(),
    };
    Ok(Merged {
        record,
        sources,
        shards,
    })
}

#[cfg(test)]
mod tests;
