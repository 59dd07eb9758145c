//! A memfd guest aged by an engine fed by uffd-minor under guided arming: the scaffolding the
//! arming tests and `agelab bench region` share (VM, engine, source, arming, fill, then epoch by
//! epoch on the [`AgingSession`]: run, age against the ground truth, re-arm).

use super::{GuidedArming, UffdFaultCount, UffdMinorError, UffdMinorSource};
use crate::engine::{AgingPass, AgingPolicy, Engine, EngineConfig, EngineError, PassTruth};
use crate::session::{AgingSession, AgingSessionError, SessionOptions};
use agelab_util::progress::ProgressLine;
use agelab_vmm::workload::{EpochResult, VerifyReport, WorkloadError, WorkloadSpec};
use agelab_vmm::{Backing, PageSet, Vm, VmConfig, VmError};
use std::time::Duration;

/// Why a [`GuidedGuest`] could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum GuidedGuestError {
    /// The host cannot track this memory with uffd-minor (callers skip with the reason).
    #[error("uffd-minor unavailable: {0}")]
    Unsupported(String),
    /// The VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The source or its arming failed.
    #[error(transparent)]
    Uffd(#[from] UffdMinorError),
    /// The workload failed.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The workload kept no ground truth for an epoch it just ran.
    #[error("no ground truth for epoch {0}")]
    MissingTruth(u64),
    /// The aging loop failed to start.
    #[error(transparent)]
    Session(#[from] AgingSessionError),
}

/// One epoch of a [`GuidedGuest`], aged but not yet re-armed.
#[derive(Debug)]
pub struct GuidedEpoch {
    /// What the guest did (ops, times).
    pub result: EpochResult,
    /// The pages it touched (ground truth).
    pub touched: PageSet,
    /// The engine's pass against that truth.
    pub pass: AgingPass,
}

/// See the module docs.
#[derive(Debug)]
pub struct GuidedGuest {
    /// The aging loop (the engine's only source is uffd-minor, when armed).
    session: AgingSession,
    /// The source's fault counters.
    faults: Option<UffdFaultCount>,
    /// Accesses not yet aged (the fill's, counted in the first epoch).
    pending: PassTruth,
}

impl GuidedGuest {
    /// A 1-vCPU memfd guest of `mem` bytes running `spec` in epochs of `interval`, an engine of
    /// `gens` generations and — unless `arming` is `None` — uffd-minor guided through its 2
    /// oldest generations, set up by `arming` (e.g. [`GuidedArming::with_regions`]); filled and
    /// ready for epochs.
    pub fn start(
        spec: &WorkloadSpec,
        mem: u64,
        gens: usize,
        interval: Duration,
        arming: Option<&dyn Fn(GuidedArming) -> GuidedArming>,
    ) -> Result<Self, GuidedGuestError> {
        let vm = Vm::new(VmConfig {
            vcpus: 1,
            mem_bytes: mem,
            backing: Backing::Memfd,
            heap_bytes: agelab_vmm::workload::heap_bytes(spec, mem),
            ..Default::default()
        })?;
        let map = vm.page_map().clone();
        let mut engine = Engine::new(
            map.clone(),
            EngineConfig {
                policy: AgingPolicy {
                    max_gens: gens,
                    ..AgingPolicy::default()
                },
                ..EngineConfig::default()
            },
        )?;
        let (mut guide, mut faults) = (None, None);
        if let Some(setup) = arming {
            UffdMinorSource::supported(&map).map_err(|u| GuidedGuestError::Unsupported(u.0))?;
            let mut src = UffdMinorSource::new(&map, Default::default())?;
            let f = src.fault_count();
            guide = Some(setup(
                GuidedArming::new(src.guide(), 2, 0, 1).with_faults(f.clone()),
            ));
            engine.add_source(Box::new(src));
            faults = Some(f);
        }
        // Every page starts in the youngest generation: nothing is old yet, nothing armed.
        let mut session = AgingSession::start(
            vm,
            spec.clone(),
            Some(engine),
            guide,
            SessionOptions {
                duration: Duration::MAX,
                interval,
                trim_last_epoch: false,
                oracle: false,
                arm_at_start: true,
                progress: ProgressLine::off(),
            },
        )?;
        let workload = session.workload_mut();
        workload.fill()?;
        let k = workload.epoch();
        let fill = workload
            .ground_truth(k)
            .ok_or(GuidedGuestError::MissingTruth(k))?;
        let pending = PassTruth {
            read: fill.read.clone(),
            written: fill.written.clone(),
        };
        Ok(GuidedGuest {
            session,
            faults,
            pending,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        self.session.engine().expect("a guided guest always ages")
    }

    /// The arming (`None`: no read tracking, the baseline).
    pub fn guide(&self) -> Option<&GuidedArming> {
        self.session.guide()
    }

    /// Guest faults so far (0 without read tracking).
    pub fn fault_total(&self) -> u64 {
        self.faults.as_ref().map_or(0, UffdFaultCount::total)
    }

    /// Runs one epoch and ages it (the fill's accesses count in the first); call
    /// [`rearm`](Self::rearm) after looking at the pass.
    pub fn epoch(&mut self) -> Result<GuidedEpoch, GuidedGuestError> {
        let result = self.session.run_epoch()?;
        let t = self.session.truth(result.epoch);
        self.pending.read.union_with(&t.read);
        self.pending.written.union_with(&t.written);
        let pass = self
            .session
            .age(&self.pending)?
            .expect("a guided guest always ages");
        let pages = self.engine().generations().len();
        self.pending = PassTruth {
            read: PageSet::new(pages),
            written: PageSet::new(pages),
        };
        Ok(GuidedEpoch {
            result,
            touched: t.accessed(),
            pass,
        })
    }

    /// Gives the arming the epoch's blocked time (the read budget's cost measure) and arms the
    /// next interval from the engine's generations.
    pub fn rearm(&mut self, e: &GuidedEpoch) -> Result<(), GuidedGuestError> {
        self.session.observe_epoch(&e.result);
        Ok(self.session.arm()?)
    }

    /// Verifies every guest word and tears the guest down (engine and arming first).
    pub fn finish(self) -> Result<VerifyReport, GuidedGuestError> {
        let (mut workload, engine, guide) = self.session.finish();
        let v = workload.verify()?;
        drop(engine);
        drop(guide);
        workload.finish()?;
        Ok(v)
    }
}
