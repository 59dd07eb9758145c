//! `sigkill_restore_test`: SIGKILL agelab in the middle of a run inside a lab guest, then a fresh
//! agelab command (or `agelab cleanup`) must restore the host: lru_gen `enabled` and `min_ttl_ms`
//! back to their prior values, the kdamond agelab created stopped and removed (`nr_kdamonds` as
//! before, no extra `kdamond.*` thread), no memcg and no journal entry of the killed pid left, and
//! a foreign kdamond (one this test starts through sysfs before agelab, or damon_stat) untouched:
//! same state, same thread. The host-side tests (`selftests/tests/host_faults.rs`) cover zram and
//! memcgs on the host; this covers what the host lacks (lru_gen, DAMON) in the lab.
//!
//! Stages killed (each followed once by a fresh `agelab run` and once by `agelab cleanup`):
//! - `knobs`: `agelab run` after its second aging pass (lru_gen knobs changed, memcg made);
//! - `damon-vaddr`: `agelab run --sources damon-vaddr` while its vaddr kdamond runs;
//! - `damon-paddr`: `agelab run` during its startup self-check, while the paddr kdamond runs
//!   (it keeps running after the kill: nothing else stops it);
//! - `reclaim-damon`: `agelab reclaim --policy damon` while its DAMOS pageout kdamond runs (only
//!   with swap on: the matrix line gives `--zram`);
//! - `foreign-sysfs`, `foreign-damon-stat`: a foreign kdamond runs, agelab's DAMON is refused, the
//!   run is killed; the foreign kdamond must be untouched by the restore;
//! - `foreign-after-kill`: `agelab run --sources damon-vaddr` is killed, its kdamond stops by
//!   itself (its target process is gone) and a DAMON user then sets up a kdamond of its own in the
//!   same sysfs slot before any agelab command ran (as `damo start` would): the restore must stop
//!   agelab's kdamond only, never that one;
//! - `live-and-killed`: one `agelab run --verify` continues while another is killed and `agelab
//!   cleanup` runs: the live run's knobs and memcg stay, it completes with 0 words wrong.
//!
//! Every case also runs its checks right after the kill, before anything restores, and they must
//! find the leftovers there (else the case proved nothing). `--control delete-journal` is the case
//! built to fail: the killed run's journal entries are deleted before the restore, so the checks
//! must fail (the lab matrix expects that line to fail). `--control restart-foreign` restarts the
//! foreign kdamond after the restore (what a careless reconcile would do): the foreign check must
//! fail.
//!
//! KTAP output; exit 0 pass, 1 fail, 4 skip (not root, no /dev/kvm, no lru_gen).

use agelab::ktap::{self, Ktap, OrSkip};
use agelab::scenarios::host_state::{
    agelab, agelab_memcg, check_line, journal_files, poll, read, HostState, DAMON_STAT, ENABLED,
    KDAMONDS, MIN_TTL, SUBTREE_CONTROL,
};
use agelab_mglru::kernel::swap::SwapStatus;
use clap::Parser;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Stage {
    Knobs,
    DamonVaddr,
    DamonPaddr,
    ReclaimDamon,
    ForeignSysfs,
    ForeignDamonStat,
    ForeignAfterKill,
    LiveAndKilled,
}

/// How the host is restored after the kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restore {
    FreshRun,
    Cleanup,
}

/// A case built to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Control {
    /// Delete the killed run's journal entries before the restore.
    DeleteJournal,
    /// Restart the foreign kdamond after the restore.
    RestartForeign,
}

#[derive(Debug, Parser)]
#[command(
    name = "sigkill_restore_test",
    about = "SIGKILL agelab mid-run in a lab guest; a fresh command or cleanup must restore the host"
)]
struct Args {
    /// Stages to run (comma-separated; default: every one).
    #[arg(long, value_delimiter = ',', value_enum)]
    stages: Vec<Stage>,
    /// Run a case built to fail instead (its checks must fail).
    #[arg(long, value_enum)]
    control: Option<Control>,
    /// Seconds to wait for a stage to be reached.
    #[arg(long, default_value_t = 300)]
    stage_timeout: u64,
}

/// An agelab child whose stdout and stderr are collected.
struct Agelab {
    child: Option<Child>,
    pid: u32,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

fn collect(r: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            let mut s = into.lock().unwrap_or_else(|e| e.into_inner());
            s.push_str(&l);
            s.push('\n');
        }
    });
}

/// Why a stage of a case could not be set up or reached.
#[derive(Debug, thiserror::Error)]
enum StageError {
    /// `agelab` could not be started.
    #[error("spawning agelab: {0}")]
    Spawn(#[source] std::io::Error),
    /// A sysfs file of the foreign kdamond could not be written.
    #[error("writing {value} to {file}: {err}")]
    KdamondWrite {
        /// The value.
        value: String,
        /// The file, under the kdamonds directory.
        file: String,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// The killed run ended on its own first.
    #[error("agelab exited before the stage was reached; stderr:\n{stderr}")]
    ExitedEarly {
        /// Its stderr.
        stderr: String,
    },
    /// The stage was not reached in time.
    #[error("stage not reached within {timeout:?}")]
    NotReached {
        /// How long the test waited.
        timeout: Duration,
    },
}

impl Agelab {
    fn spawn(args: &[&str]) -> Result<Self, StageError> {
        let mut child = Command::new(agelab())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(StageError::Spawn)?;
        let (out, err) = (Arc::default(), Arc::default());
        collect(child.stdout.take().expect("piped"), Arc::clone(&out));
        collect(child.stderr.take().expect("piped"), Arc::clone(&err));
        Ok(Agelab {
            pid: child.id(),
            child: Some(child),
            out,
            err,
        })
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether it still runs.
    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, then reap (a zombie still looks like a live owner).
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the exit; returns the exit code (-1: killed by a signal or timed out).
    fn wait(&mut self, timeout: Duration) -> i32 {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    std::thread::sleep(Duration::from_millis(200));
                    return st.code().unwrap_or(-1);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
        -1
    }
}

impl Drop for Agelab {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Aging passes printed so far.
fn passes(a: &Agelab) -> usize {
    a.stdout()
        .lines()
        .filter(|l| l.starts_with("pass "))
        .count()
}

/// The operations of sysfs kdamond 0's first context.
fn kdamond0_ops() -> Option<String> {
    read(Path::new(KDAMONDS).join("0/contexts/0/operations"))
}

/// A kdamond this test starts itself through sysfs (vaddr of this process): the foreign one.
struct ForeignKdamond;

impl ForeignKdamond {
    fn start() -> Result<Self, StageError> {
        let k = Path::new(KDAMONDS);
        let w = |p: &str, v: &str| {
            std::fs::write(k.join(p), v).map_err(|err| StageError::KdamondWrite {
                value: v.to_string(),
                file: p.to_string(),
                err,
            })
        };
        w("nr_kdamonds", "1")?;
        w("0/contexts/nr_contexts", "1")?;
        w("0/contexts/0/operations", "vaddr")?;
        w("0/contexts/0/targets/nr_targets", "1")?;
        w(
            "0/contexts/0/targets/0/pid_target",
            &std::process::id().to_string(),
        )?;
        w("0/state", "on")?;
        Ok(ForeignKdamond)
    }

    fn stop() {
        let k = Path::new(KDAMONDS);
        let _ = std::fs::write(k.join("0/state"), "off");
        let _ = std::fs::write(k.join("nr_kdamonds"), "0");
    }
}

impl Drop for ForeignKdamond {
    fn drop(&mut self) {
        Self::stop();
    }
}

/// The host state each as-before check compares, with its description.
type Projection = (&'static str, fn(&HostState) -> String);

const AS_BEFORE: [Projection; 4] = [
    (
        "lru_gen enabled and min_ttl_ms back to their prior values",
        |h| format!("{:?}", (&h.enabled, &h.min_ttl)),
    ),
    (
        "sysfs kdamonds as before (agelab's stopped and removed, foreign untouched)",
        |h| format!("{:?}", h.kdamonds),
    ),
    ("kdamond threads and damon_stat as before", |h| {
        format!("{:?}", (&h.threads, &h.damon_stat))
    }),
    ("cgroup.subtree_control as before", |h| {
        format!("{:?}", h.subtree_control)
    }),
];

/// Each restore check on the host now, against `prior`, after `agelab <command>` (pid `pid`):
/// (description, passed, diagnostic).
fn leftovers(prior: &HostState, pid: u32, command: &str) -> Vec<(String, bool, String)> {
    let now = HostState::read();
    let memcg = agelab_memcg(command, pid);
    let memcg_left = memcg.as_ref().is_some_and(|m| m.exists());
    let journal = journal_files(pid);
    let mut checks: Vec<_> = AS_BEFORE
        .iter()
        .map(|(desc, f)| {
            let (p, n) = (f(prior), f(&now));
            (desc.to_string(), p == n, format!("prior {p}, now {n}"))
        })
        .collect();
    checks.extend([
        (
            format!("no memcg agelab-{command}-{pid} left"),
            !memcg_left,
            format!("{memcg:?} exists"),
        ),
        (
            format!("no journal entry of pid {pid} left"),
            journal.is_empty(),
            format!("{journal:?}"),
        ),
    ]);
    checks
}

/// Puts the host back by hand (after a case built to fail, or a failed one), so the next case
/// starts from `prior`.
fn force_restore(prior: &HostState, pid: u32, command: &str) {
    let no_kdamond_before = prior.kdamonds.as_ref().is_some_and(|k| k.0 == "0");
    if no_kdamond_before && HostState::read().kdamonds != prior.kdamonds {
        ForeignKdamond::stop();
    }
    if let Some(m) = agelab_memcg(command, pid) {
        if let Some(parent) = m.parent() {
            for p in read(m.join("cgroup.procs")).unwrap_or_default().lines() {
                let _ = std::fs::write(parent.join("cgroup.procs"), p);
            }
        }
        let _ = std::fs::remove_dir(&m);
    }
    for f in journal_files(pid) {
        let _ = std::fs::remove_file(f);
    }
    let memory = |s: &Option<String>| {
        s.as_deref()
            .is_some_and(|s| s.split_whitespace().any(|c| c == "memory"))
    };
    if !memory(&prior.subtree_control) && memory(&HostState::read().subtree_control) {
        let _ = std::fs::write(SUBTREE_CONTROL, "-memory");
    }
    for (path, v) in [(ENABLED, &prior.enabled), (MIN_TTL, &prior.min_ttl)] {
        if let Some(v) = v {
            let _ = std::fs::write(path, v);
        }
    }
}

/// What every killed run shares: a small guest, a long run, frequent passes.
const LONG_RUN: &str = "--mem 64M --duration 900s --interval 300ms";

/// The arguments of the run killed at `stage`.
fn killed_args(stage: Stage) -> Vec<&'static str> {
    let with_long_run = |head: &'static str, tail: &'static str| -> Vec<&'static str> {
        [head, LONG_RUN, tail]
            .iter()
            .flat_map(|s| s.split_whitespace())
            .collect()
    };
    match stage {
        Stage::Knobs => with_long_run("run", "--sources kvm-clear-log --no-selfcheck"),
        Stage::DamonVaddr | Stage::ForeignAfterKill => {
            with_long_run("run", "--sources damon-vaddr --no-selfcheck")
        }
        // With the self-check: it runs the paddr kdamond.
        Stage::DamonPaddr => with_long_run("run", "--sources damon-vaddr"),
        Stage::ForeignSysfs | Stage::ForeignDamonStat | Stage::LiveAndKilled => {
            with_long_run("run", "--sources kvm-clear-log,damon-vaddr --no-selfcheck")
        }
        Stage::ReclaimDamon => with_long_run(
            "reclaim --policy damon",
            "--min-age 300ms --cold-window 1s --workload hotcold:hot=20%,p=100%,op=read",
        ),
    }
}

/// Waits until the killed run reached `stage`.
fn reach(stage: Stage, a: &mut Agelab, timeout: Duration) -> Result<(), StageError> {
    let ok = poll(timeout, || {
        if !a.running() {
            return true;
        }
        match stage {
            Stage::Knobs | Stage::ForeignSysfs | Stage::ForeignDamonStat | Stage::LiveAndKilled => {
                passes(a) >= 2
            }
            Stage::DamonVaddr | Stage::ForeignAfterKill => {
                passes(a) >= 2 && HostState::read().kdamond_on()
            }
            Stage::DamonPaddr => {
                HostState::read().kdamond_on() && kdamond0_ops().as_deref() == Some("paddr")
            }
            Stage::ReclaimDamon => HostState::read().kdamond_on(),
        }
    });
    if !a.running() {
        return Err(StageError::ExitedEarly { stderr: a.stderr() });
    }
    if !ok {
        return Err(StageError::NotReached { timeout });
    }
    if stage == Stage::ReclaimDamon {
        // Let the scheme page out for a while.
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(())
}

/// Runs the restoring command; returns its exit code and output.
fn restore(how: Restore) -> (i32, String) {
    let args: &[&str] = match how {
        Restore::Cleanup => &["cleanup"],
        Restore::FreshRun => &[
            "run",
            "--mem",
            "16M",
            "--duration",
            "1s",
            "--interval",
            "250ms",
            "--sources",
            "kvm-clear-log",
            "--no-selfcheck",
            "--quiet",
        ],
    };
    match Command::new(agelab()).args(args).output() {
        Ok(o) => (
            o.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (-1, format!("running agelab: {e}")),
    }
}

struct Ctx {
    t: Ktap,
    control: Option<Control>,
    stage_timeout: Duration,
}

impl Ctx {
    fn fail(&mut self, desc: &str, why: &str) {
        check_line(&mut self.t, false, desc, why);
    }

    /// One stage killed, restored by `how`.
    fn case(&mut self, stage: Stage, how: Restore) {
        let name = format!(
            "{stage:?} killed, then {}",
            match how {
                Restore::FreshRun => "a fresh agelab run",
                Restore::Cleanup => "agelab cleanup",
            }
        );
        if let Some(why) = stage_missing(stage) {
            let id = self.t.add(&name);
            self.t.skip(id, &why);
            return;
        }
        let stat_before = read(DAMON_STAT);
        if stage == Stage::ForeignDamonStat {
            // damon_stat's kdamond is the foreign one.
            if std::fs::write(DAMON_STAT, "Y").is_err()
                || !poll(Duration::from_secs(10), || {
                    !agelab::scenarios::host_state::kdamond_threads().is_empty()
                })
            {
                let id = self.t.add(&name);
                self.t.skip(id, "damon_stat did not start a kdamond");
                let _ = stat_before.map(|v| std::fs::write(DAMON_STAT, v));
                return;
            }
        }
        let foreign = match stage {
            Stage::ForeignSysfs => match ForeignKdamond::start() {
                Ok(f) => Some(f),
                Err(e) => {
                    self.fail(&name, &format!("starting the foreign kdamond: {e}"));
                    return;
                }
            },
            _ => None,
        };
        self.case_with(stage, how, &name);
        drop(foreign);
        if stage == Stage::ForeignDamonStat {
            if let Some(v) = stat_before {
                let _ = std::fs::write(DAMON_STAT, v);
            }
        }
    }

    fn case_with(&mut self, stage: Stage, how: Restore, name: &str) {
        let mut prior = HostState::read();
        ktap::diag(&format!("{name}: prior {prior:?}"));
        let args = killed_args(stage);
        let command = args[0];
        let mut live = None;
        if stage == Stage::LiveAndKilled {
            match Agelab::spawn(&[
                "run",
                "--mem",
                "32M",
                "--duration",
                "60s",
                "--interval",
                "300ms",
                "--sources",
                "kvm-clear-log",
                "--no-selfcheck",
                "--verify",
            ]) {
                Ok(a) => live = Some(a),
                Err(e) => return self.fail(name, &e.to_string()),
            }
        }
        let mut a = match Agelab::spawn(&args) {
            Ok(a) => a,
            Err(e) => return self.fail(name, &e.to_string()),
        };
        let pid = a.pid;
        if let Err(e) = reach(stage, &mut a, self.stage_timeout) {
            a.kill9();
            force_restore(&prior, pid, command);
            return self.fail(&format!("{name}: stage reached"), &e.to_string());
        }
        let during = HostState::read();
        let swap_used_kib = SwapStatus::read().map_or(0, |s| s.used_kib());
        a.kill9();
        ktap::diag(&format!(
            "{name}: swap in use at the kill: {swap_used_kib} KiB"
        ));
        ktap::diag(&format!("{name}: SIGKILLed pid {pid}; during {during:?}"));
        if let Some(l) = a.stderr().lines().find(|l| l.contains("damon")) {
            ktap::diag(&format!("{name}: killed run said: {l}"));
        }
        for f in journal_files(pid) {
            let text = read(&f).unwrap_or_default();
            let one_line: String = text.lines().map(str::trim).collect();
            ktap::diag(&format!("journal entry {}: {one_line}", f.display()));
        }
        let _foreign = if stage == Stage::ForeignAfterKill {
            // agelab's vaddr kdamond stops once its target is gone; then a DAMON user takes the
            // slot. The restore must leave that kdamond as it is now.
            let off = poll(Duration::from_secs(30), || !HostState::read().kdamond_on());
            match ForeignKdamond::start() {
                Ok(f) if off => {
                    let now = HostState::read();
                    ktap::diag(&format!(
                        "{name}: foreign kdamond started after the kill: {now:?}"
                    ));
                    prior.kdamonds = now.kdamonds;
                    prior.threads = now.threads;
                    Some(f)
                }
                r => {
                    force_restore(&prior, pid, command);
                    let why = format!(
                        "agelab's kdamond off after the kill: {off}; foreign start: {:?}",
                        r.err().map(|e| e.to_string())
                    );
                    return self.fail(&format!("{name}: foreign kdamond set up"), &why);
                }
            }
        } else {
            None
        };
        // The checks must find the leftovers before anything restores.
        let dirty: Vec<String> = leftovers(&prior, pid, command)
            .into_iter()
            .filter(|(_, ok, _)| !ok)
            .map(|(d, _, diag)| format!("{d} ({diag})"))
            .collect();
        check_line(
            &mut self.t,
            !dirty.is_empty(),
            &format!("{name}: the checks see the leftovers before the restore"),
            "the kill left nothing behind: the case proves nothing",
        );
        ktap::diag(&format!("{name}: before the restore: {}", dirty.join("; ")));
        if self.control == Some(Control::DeleteJournal) {
            for f in journal_files(pid) {
                let _ = std::fs::remove_file(f);
            }
            ktap::diag(&format!(
                "{name}: control: journal entries of pid {pid} deleted"
            ));
        }
        let (code, text) = restore(how);
        for l in text
            .lines()
            .filter(|l| l.contains("journal") || l.contains("restored"))
        {
            ktap::diag(&format!("{name}: {l}"));
        }
        check_line(
            &mut self.t,
            code == 0,
            &format!("{name}: the restoring command exits 0"),
            &format!("exit {code}: {text}"),
        );
        if let Some(mut l) = live {
            self.live_checks(name, &prior, &mut l);
        }
        if self.control == Some(Control::RestartForeign) && stage == Stage::ForeignSysfs {
            ForeignKdamond::stop();
            let _ = ForeignKdamond::start().map(std::mem::forget);
            ktap::diag(&format!("{name}: control: foreign kdamond restarted"));
        }
        for (desc, ok, diag) in leftovers(&prior, pid, command) {
            check_line(&mut self.t, ok, &format!("{name}: {desc}"), &diag);
        }
        force_restore(&prior, pid, command);
    }

    /// The run that continued: its knobs and memcg survived the cleanup; it completes with 0
    /// words wrong.
    fn live_checks(&mut self, name: &str, prior: &HostState, l: &mut Agelab) {
        let now = HostState::read();
        let memcg = agelab_memcg("run", l.pid);
        check_line(
            &mut self.t,
            l.running()
                && memcg.as_ref().is_some_and(|m| m.exists())
                && now.min_ttl.as_deref() == Some("0"),
            &format!("{name}: the live run's memcg and knobs survive the restore"),
            &format!(
                "running {}, memcg {memcg:?}, min_ttl_ms {:?} (prior {:?})",
                l.running(),
                now.min_ttl,
                prior.min_ttl
            ),
        );
        let code = l.wait(Duration::from_secs(600));
        let out = l.stdout();
        check_line(
            &mut self.t,
            code == 0 && out.contains("verify: 0 words wrong"),
            &format!("{name}: the live run completes with 0 guest words wrong"),
            &format!("exit {code}; stderr {}", l.stderr()),
        );
        for (desc, ok, diag) in leftovers(prior, l.pid, "run") {
            check_line(
                &mut self.t,
                ok,
                &format!("{name}: after the live run: {desc}"),
                &diag,
            );
        }
    }
}

/// Why `stage` cannot run in this guest, if it cannot.
fn stage_missing(stage: Stage) -> Option<String> {
    let damon = Path::new(KDAMONDS).join("nr_kdamonds").exists();
    match stage {
        Stage::DamonVaddr
        | Stage::DamonPaddr
        | Stage::ForeignSysfs
        | Stage::ForeignAfterKill
        | Stage::ReclaimDamon
            if !damon =>
        {
            Some("no DAMON sysfs in this kernel".into())
        }
        Stage::ForeignDamonStat if read(DAMON_STAT).is_none() => {
            Some("no damon_stat in this kernel".into())
        }
        Stage::ReclaimDamon if read("/proc/swaps").is_none_or(|s| s.lines().count() < 2) => {
            Some("no swap (the matrix line gives --zram)".into())
        }
        _ => None,
    }
}

fn main() -> ExitCode {
    let args: Args = agelab::args::parse_described("sigkill_restore_test");
    if !nix::unistd::geteuid().is_root() {
        ktap::skip_all("needs root (lru_gen knobs, memcgs, DAMON)");
    }
    agelab_vmm::vm::open_kvm().or_skip();
    if read(ENABLED).is_none() {
        ktap::skip_all("no lru_gen in this kernel (the test is for the lab's kernels)");
    }
    // damon_stat holds DAMON exclusively: off for every case but its own.
    let stat_orig = read(DAMON_STAT);
    let _ = std::fs::write(DAMON_STAT, "N");
    // Values agelab changes (it sets every capability and min_ttl_ms 0): set to others first, so
    // that their restoration is visible.
    let knobs_orig = (read(ENABLED), read(MIN_TTL));
    let _ = std::fs::write(ENABLED, "1");
    let _ = std::fs::write(MIN_TTL, "1000");
    let stages = if !args.stages.is_empty() {
        args.stages.clone()
    } else if args.control.is_some() {
        match args.control {
            Some(Control::RestartForeign) => vec![Stage::ForeignSysfs],
            _ => vec![Stage::Knobs, Stage::DamonPaddr],
        }
    } else {
        vec![
            Stage::Knobs,
            Stage::DamonVaddr,
            Stage::DamonPaddr,
            Stage::ReclaimDamon,
            Stage::ForeignSysfs,
            Stage::ForeignDamonStat,
            Stage::ForeignAfterKill,
            Stage::LiveAndKilled,
        ]
    };
    let mut cx = Ctx {
        t: Ktap::unplanned(),
        control: args.control,
        stage_timeout: Duration::from_secs(args.stage_timeout),
    };
    if let Some(c) = args.control {
        ktap::diag(&format!(
            "control {c:?}: a case built to fail; the restore checks must fail"
        ));
    }
    for stage in stages {
        let hows: &[Restore] = match stage {
            Stage::LiveAndKilled => &[Restore::Cleanup],
            _ => &[Restore::FreshRun, Restore::Cleanup],
        };
        for &how in hows {
            cx.case(stage, how);
        }
    }
    if let Some(v) = knobs_orig.0 {
        let _ = std::fs::write(ENABLED, v);
    }
    if let Some(v) = knobs_orig.1 {
        let _ = std::fs::write(MIN_TTL, v);
    }
    if let Some(v) = stat_orig {
        let _ = std::fs::write(DAMON_STAT, v);
    }
    cx.t.finish()
}
