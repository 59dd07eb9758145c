//! The aging loop of a running guest, once for `agelab run` and `agelab reclaim`.
//!
//! An [`AgingSession`] owns the workload, the engine (with its sources), guided uffd-minor arming
//! and the oracle feed, and runs the per-epoch steps in the one order both commands use:
//!
//! 1. [`AgingSession::run_epoch`]: the guest runs one epoch (`interval`; `agelab run` trims the
//!    last one to the time left);
//! 2. [`AgingSession::age_epoch`]: the epoch's exact ground truth (pages read, pages written)
//!    goes to the oracle source, if any, and the engine harvests every source in one aging pass
//!    judged against it;
//! 3. [`AgingSession::observe_epoch`], [`AgingSession::arm`]: guided uffd-minor arming learns
//!    what the epoch's faults cost the guest (its read budget) and follows the engine's new
//!    generations.
//!
//! [`AgingSession::epoch`] is the three in a row (`agelab run`); `agelab reclaim` calls them one
//! by one with its residency scan before the pass and its policy between the pass and the arming.
//! [`AgingSession::epoch_timed`] is the same epoch telling a hook what each [`SessionStep`] cost
//! (`agelab bench scaling`).
//! What a command does with the results — reports, reclaim — stays with the command:
//! [`run`] is `agelab run`'s, [`crate::reclaim::run`] `agelab reclaim`'s.

pub mod run;

use crate::engine::{AgingPass, Engine, EngineError, PassTruth};
use crate::sources::uffd_minor::{GuidedArming, UffdMinorError};
use crate::sources::OracleSource;
use agelab_util::cpu_time::thread_cpu_ns;
use agelab_util::progress::{epoch_position, ProgressLine};
use agelab_vmm::workload::{EpochResult, Workload, WorkloadError, WorkloadSpec};
use agelab_vmm::{PageSet, Vm};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// Errors of the aging loop.
#[derive(Debug, thiserror::Error)]
pub enum AgingSessionError {
    /// The workload failed.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The aging engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Guided uffd-minor arming failed.
    #[error(transparent)]
    UffdArm(#[from] UffdMinorError),
}

/// One step of an epoch, in the order [`AgingSession::epoch_timed`] runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStep {
    /// The guest ran the epoch.
    Guest,
    /// The epoch's exact ground truth was replayed on the host (one thread per vCPU).
    Truth,
    /// The aging pass: the oracle fed, every source harvested, the engine's bookkeeping.
    Age,
    /// Guided uffd-minor arming learned the epoch's cost and re-armed.
    Arm,
}

/// What one step cost.
#[derive(Clone, Copy, Debug)]
pub struct StepTiming {
    /// The step.
    pub step: SessionStep,
    /// Its wall time.
    pub wall: Duration,
    /// CPU time of the thread running the session during the step (the vCPU threads and the
    /// ground-truth replay threads are not in it).
    pub thread_cpu: Duration,
}

/// Times `f` as `step` and tells `hook`.
fn timed<T>(step: SessionStep, hook: &mut dyn FnMut(StepTiming), f: impl FnOnce() -> T) -> T {
    let (t, cpu) = (Instant::now(), thread_cpu_ns());
    let out = f();
    hook(StepTiming {
        step,
        wall: t.elapsed(),
        thread_cpu: Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu)),
    });
    out
}

/// How a session runs.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// How long the epochs run, from the first [`AgingSession::running`].
    pub duration: Duration,
    /// One epoch.
    pub interval: Duration,
    /// Shorten the last epoch to the time left (`agelab run`), or run whole epochs (reclaim).
    pub trim_last_epoch: bool,
    /// Add the ground truth itself as a source (`oracle`), fed every epoch.
    pub oracle: bool,
    /// Arm guided uffd-minor from the engine's generations once before the guest starts, and
    /// harvest every source once right before the first epoch so that its first pass reports
    /// that epoch's accesses only ([`Engine::forget_before_start`]).
    pub arm_at_start: bool,
    /// The progress line, drawn by [`AgingSession::show_progress`].
    pub progress: ProgressLine,
}

/// The aging loop of one running guest; see the module docs.
pub struct AgingSession {
    wl: Workload,
    engine: Option<Engine>,
    guide: Option<GuidedArming>,
    oracle: Option<Sender<PageSet>>,
    opts: SessionOptions,
    t0: Option<Instant>,
    epochs: u64,
}

impl std::fmt::Debug for AgingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgingSession")
            .field("engine", &self.engine.is_some())
            .field("guided", &self.guide.is_some())
            .field("oracle", &self.oracle.is_some())
            .field("opts", &self.opts)
            .field("epochs", &self.epochs)
            .finish()
    }
}

impl AgingSession {
    /// Adds the oracle to `engine` if asked, arms uffd-minor if asked, then starts `spec` on
    /// `vm`. `engine` (with its sources already added) is `None` for runs that only need epochs
    /// (reclaim policies that do not age).
    pub fn start(
        vm: Vm,
        spec: WorkloadSpec,
        mut engine: Option<Engine>,
        mut guide: Option<GuidedArming>,
        opts: SessionOptions,
    ) -> Result<Self, AgingSessionError> {
        let oracle = match (opts.oracle, engine.as_mut()) {
            (true, Some(e)) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let pages = e.map().len();
                e.add_source(Box::new(OracleSource::from_channel(pages, rx)));
                Some(tx)
            }
            _ => None,
        };
        if opts.arm_at_start {
            arm(guide.as_mut(), engine.as_ref())?;
        }
        Ok(AgingSession {
            wl: Workload::start(vm, spec)?,
            engine,
            guide,
            oracle,
            opts,
            t0: None,
            epochs: 0,
        })
    }

    /// Whether another epoch is due; the first call starts the clock.
    pub fn running(&mut self) -> bool {
        let t0 = *self.t0.get_or_insert_with(Instant::now);
        t0.elapsed() < self.opts.duration
    }

    /// Time since the first [`running`](Self::running).
    pub fn elapsed(&self) -> Duration {
        self.t0.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Epochs run so far.
    pub fn epochs(&self) -> u64 {
        self.epochs
    }

    /// Runs the guest for one epoch.
    pub fn run_epoch(&mut self) -> Result<EpochResult, WorkloadError> {
        if self.epochs == 0 && self.opts.arm_at_start {
            if let Some(e) = self.engine.as_mut() {
                e.forget_before_start();
            }
        }
        let len = if self.opts.trim_last_epoch {
            let left = self.opts.duration.saturating_sub(self.elapsed());
            self.opts.interval.min(left).max(Duration::from_millis(1))
        } else {
            self.opts.interval
        };
        let r = self.wl.run_epoch(len)?;
        self.epochs += 1;
        Ok(r)
    }

    /// The exact pages read and written in `epoch` (one that ran).
    pub fn truth(&mut self, epoch: u64) -> PassTruth {
        self.truth_timed(epoch, &mut |_| {})
    }

    /// [`truth`](Self::truth), its replay timed as [`SessionStep::Truth`] (not the copy out).
    fn truth_timed(&mut self, epoch: u64, hook: &mut dyn FnMut(StepTiming)) -> PassTruth {
        let truth = timed(SessionStep::Truth, hook, || {
            self.wl.ground_truth(epoch).expect("epoch just ran")
        });
        PassTruth {
            read: truth.read.clone(),
            written: truth.written.clone(),
        }
    }

    /// One aging pass judged against `truth` (fed to the oracle first); `None` without engine.
    pub fn age(&mut self, truth: &PassTruth) -> Result<Option<AgingPass>, EngineError> {
        let Some(engine) = self.engine.as_mut() else {
            return Ok(None);
        };
        if let Some(tx) = &self.oracle {
            let _ = tx.send(truth.accessed());
        }
        engine.run_pass_split(truth).map(Some)
    }

    /// [`age`](Self::age) against `epoch`'s ground truth; `None` (and no truth read) without
    /// engine.
    pub fn age_epoch(&mut self, epoch: u64) -> Result<Option<AgingPass>, EngineError> {
        if self.engine.is_none() {
            return Ok(None);
        }
        let truth = self.truth(epoch);
        self.age(&truth)
    }

    /// Tells guided arming what the epoch cost the guest, so its read budget (faults per
    /// interval from a target slowdown and the measured cost of one fault) holds admission to
    /// it (nothing without guided arming).
    pub fn observe_epoch(&mut self, r: &EpochResult) {
        if let Some(g) = self.guide.as_mut() {
            g.observe_epoch(r);
        }
    }

    /// Arms guided uffd-minor from the engine's generations (nothing without guided arming).
    pub fn arm(&mut self) -> Result<(), UffdMinorError> {
        arm(self.guide.as_mut(), self.engine.as_ref())
    }

    /// One whole epoch: run, age against the ground truth, arm.
    pub fn epoch(
        &mut self,
    ) -> Result<(EpochResult, PassTruth, Option<AgingPass>), AgingSessionError> {
        self.epoch_timed(&mut |_| {})
    }

    /// [`epoch`](Self::epoch), telling `hook` what each step cost as it ends.
    pub fn epoch_timed(
        &mut self,
        hook: &mut dyn FnMut(StepTiming),
    ) -> Result<(EpochResult, PassTruth, Option<AgingPass>), AgingSessionError> {
        let r = timed(SessionStep::Guest, hook, || self.run_epoch())?;
        let truth = self.truth_timed(r.epoch, hook);
        let pass = timed(SessionStep::Age, hook, || self.age(&truth))?;
        timed(SessionStep::Arm, hook, || {
            self.observe_epoch(&r);
            self.arm()
        })?;
        Ok((r, truth, pass))
    }

    /// Redraws the progress line: the epoch and time against the run's, then `figure`.
    pub fn show_progress(&mut self, figure: impl FnOnce() -> String) {
        let (epoch, elapsed) = (self.epochs, self.elapsed());
        let (duration, interval) = (self.opts.duration, self.opts.interval);
        self.opts.progress.draw(|| {
            format!(
                "{}, {}",
                epoch_position(epoch, elapsed, duration, interval),
                figure()
            )
        });
    }

    /// Erases the progress line (before printing anything else).
    pub fn clear_progress(&mut self) {
        self.opts.progress.clear();
    }

    /// The engine, if the session ages.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// The engine, mutable.
    pub fn engine_mut(&mut self) -> Option<&mut Engine> {
        self.engine.as_mut()
    }

    /// Guided uffd-minor arming, if any.
    pub fn guide(&self) -> Option<&GuidedArming> {
        self.guide.as_ref()
    }

    /// Guided arming, mutable (admission limits).
    pub fn guide_mut(&mut self) -> Option<&mut GuidedArming> {
        self.guide.as_mut()
    }

    /// The running workload (fill, verify, ground truth of past epochs).
    pub fn workload_mut(&mut self) -> &mut Workload {
        &mut self.wl
    }

    /// Ends the loop: the progress line goes; the workload, engine and arming come back.
    pub fn finish(mut self) -> (Workload, Option<Engine>, Option<GuidedArming>) {
        self.opts.progress.clear();
        (self.wl, self.engine, self.guide)
    }
}

/// Arms `guide` from `engine`'s generations, when there are both.
fn arm(guide: Option<&mut GuidedArming>, engine: Option<&Engine>) -> Result<(), UffdMinorError> {
    if let (Some(g), Some(e)) = (guide, engine) {
        g.arm_from(e.generations())?;
    }
    Ok(())
}
