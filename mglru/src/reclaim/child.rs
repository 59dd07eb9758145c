//! One reclaim run in a child process, for kernel policies whose lasting memcg limit can end in
//! the kernel's OOM killer (`memcg-limit`): the parent survives the SIGKILL, reads the memcg's own
//! `oom_kill` count and its limit before the journal restores the host, and reports the kill as
//! the run's measured result ([`OomKill`]). A child that dies any other way — another signal, a
//! SIGKILL its memcg's OOM killer did not send, a non-zero exit, no report — is an error: it is
//! never retried and never counted as a result.
//!
//! The child prints its report as one line, [`REPORT_PREFIX`] followed by the JSON of a
//! [`ReclaimRunReport`] ([`report_line`]); `agelab reclaim` and the host test each start their
//! own binary as the child.

use super::config::ReclaimRunConfig;
use super::run_report::{OomKill, ReclaimRunReport};
use crate::journal::{HostChange, Journal, JournalError};
use crate::kernel::memcg::parse_memory_stat;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Start of the child's report line on its stdout.
pub const REPORT_PREFIX: &str = "AGELAB-RECLAIM-REPORT ";

/// Errors of a run in a child process.
#[derive(Debug, thiserror::Error)]
pub enum ChildRunError {
    /// The child could not be started.
    #[error("starting the run's child process {program}: {err}")]
    Spawn {
        /// The program.
        program: String,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// The child died of a signal that no OOM kill in its memcg explains.
    #[error("the run's child process died of signal {signal}, and its memcg counted no OOM kill (memcgs journaled: {memcgs}); its output:\n{output}")]
    Killed {
        /// The signal.
        signal: i32,
        /// How many memcgs the child had journaled (0: it died before creating one).
        memcgs: usize,
        /// The child's stdout and stderr.
        output: String,
    },
    /// The child exited unsuccessfully.
    #[error("the run's child process failed ({status}); its output:\n{output}")]
    Failed {
        /// Its exit status.
        status: String,
        /// The child's stdout and stderr.
        output: String,
    },
    /// The child exited successfully without a report line.
    #[error("the run's child process printed no report line; its output:\n{output}")]
    NoReport {
        /// The child's stdout and stderr.
        output: String,
    },
    /// The report line was not a run report.
    #[error("the run's child report is not a run report: {0}")]
    BadReport(#[source] serde_json::Error),
    /// The journal could not be read or reconciled after the child died.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The line a child prints for its parent ([`run_in_child`] reads it).
pub fn report_line(r: &ReclaimRunReport) -> String {
    format!(
        "{REPORT_PREFIX}{}",
        serde_json::to_string(r).expect("a run report serialises")
    )
}

/// Runs `child` (a process that performs `cfg`'s run and prints [`report_line`]) and returns its
/// report; an OOM kill by the child's memcg is returned as a report carrying [`OomKill`] (the
/// journal has then restored what the child changed); see the module docs.
pub fn run_in_child(
    cfg: &ReclaimRunConfig,
    child: Command,
) -> Result<ReclaimRunReport, ChildRunError> {
    run_in_child_journaled(cfg, child, &Journal::system())
}

/// [`run_in_child`] with the child's host changes journaled in `journal`.
fn run_in_child_journaled(
    cfg: &ReclaimRunConfig,
    mut child: Command,
    journal: &Journal,
) -> Result<ReclaimRunReport, ChildRunError> {
    use std::os::unix::process::CommandExt;
    use std::os::unix::process::ExitStatusExt;
    let program = child.get_program().to_string_lossy().into_owned();
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent: the child then
    // dies with this thread (a SIGKILLed `agelab reclaim` leaves no run behind).
    unsafe {
        child.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t0 = Instant::now();
    let proc = child
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| ChildRunError::Spawn { program, err })?;
    let pid = proc.id() as i32;
    let out = proc
        .wait_with_output()
        .map_err(|err| ChildRunError::Spawn {
            program: "waiting for the child".into(),
            err,
        })?;
    let after_s = t0.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let output = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        let line = stdout
            .lines()
            .find_map(|l| l.split_once(REPORT_PREFIX).map(|(_, json)| json))
            .ok_or_else(|| ChildRunError::NoReport {
                output: output.clone(),
            })?;
        return serde_json::from_str(line).map_err(ChildRunError::BadReport);
    }
    let Some(signal) = out.status.signal() else {
        return Err(ChildRunError::Failed {
            status: out.status.to_string(),
            output,
        });
    };
    // The child's memcg is still there (journaled, not yet removed): its own counters say who
    // killed it. Then the journal restores everything the dead child changed.
    let memcgs: Vec<_> = journal
        .all_changes()?
        .into_iter()
        .filter(|(o, _)| o.pid == pid)
        .filter_map(|(_, c)| match c {
            HostChange::Memcg { dir, .. } => Some(dir),
            _ => None,
        })
        .collect();
    let oom_kills: u64 = memcgs.iter().map(|d| memcg_oom_kills(d)).sum();
    let limit_bytes = memcgs.iter().find_map(|d| memcg_limit(d));
    journal.reconcile()?;
    if signal != libc::SIGKILL || oom_kills == 0 {
        return Err(ChildRunError::Killed {
            signal,
            memcgs: memcgs.len(),
            output,
        });
    }
    Ok(ReclaimRunReport {
        policy: cfg.policy.name().into(),
        workload: cfg.workload.to_string(),
        backing: cfg.backing.to_string(),
        pages: cfg.mem_bytes / agelab_vmm::PAGE_SIZE,
        oom_killed: Some(OomKill {
            limit_bytes,
            after_s,
            oom_kills,
        }),
        ..Default::default()
    })
}

/// `oom_kill` of the memcg at `dir`: v1 `memory.oom_control`, v2 `memory.events` (both `key
/// value` lines, as `memory.stat`); 0 when unreadable.
pub fn memcg_oom_kills(dir: &Path) -> u64 {
    ["memory.oom_control", "memory.events"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .flat_map(|t| parse_memory_stat(&t))
        .filter(|(k, _)| k == "oom_kill")
        .map(|(_, v)| v)
        .sum()
}

/// The hard limit of the memcg at `dir` in bytes: v1 `memory.limit_in_bytes` (the kernel's
/// "unlimited" is a value near 2^63), v2 `memory.max` (`max`); `None` when unlimited or
/// unreadable.
fn memcg_limit(dir: &Path) -> Option<u64> {
    ["memory.limit_in_bytes", "memory.max"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .find_map(|t| t.trim().parse::<u64>().ok())
        .filter(|&b| b < 1 << 62)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ReclaimRunConfig {
        ReclaimRunConfig::default()
    }

    /// `run_in_child` with a journal of the test's own.
    fn run(script: &str) -> Result<ReclaimRunReport, ChildRunError> {
        let dir = std::env::temp_dir().join(format!("agelab-child-test-{}", std::process::id()));
        let r = run_in_child_journaled(&cfg(), sh(script), &Journal::at(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_report_line_round_trips() {
        let r = ReclaimRunReport {
            policy: "memcg-limit".into(),
            reclaimed: 42,
            ..Default::default()
        };
        let back = run(&format!(
            "echo noise; echo 'test child ... {}'",
            report_line(&r)
        ))
        .expect("report");
        assert_eq!((back.policy.as_str(), back.reclaimed), ("memcg-limit", 42));
        assert!(back.oom_killed.is_none());
    }

    #[test]
    fn a_sigkill_without_an_oom_kill_is_an_error() {
        // No memcg journaled for this child, so nothing explains the kill.
        match run("echo started; kill -9 $$") {
            Err(ChildRunError::Killed {
                signal, memcgs: 0, ..
            }) => assert_eq!(signal, libc::SIGKILL),
            other => panic!("expected an unexplained kill, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_or_silent_child_is_an_error() {
        assert!(matches!(
            run("echo boom >&2; exit 3"),
            Err(ChildRunError::Failed { .. })
        ));
        assert!(matches!(
            run("echo no report"),
            Err(ChildRunError::NoReport { .. })
        ));
        assert!(matches!(
            run(&format!("echo '{REPORT_PREFIX}{{bad'")),
            Err(ChildRunError::BadReport(_))
        ));
    }

    #[test]
    fn an_oom_kill_reads_as_the_run_result() {
        let k = OomKill {
            limit_bytes: Some(61 << 20),
            after_s: 9.3,
            oom_kills: 1,
        };
        assert_eq!(
            k.to_string(),
            "OOM-killed at limit 61.0 MiB after 9.3 s (memcg oom_kill count 1)"
        );
    }
}
