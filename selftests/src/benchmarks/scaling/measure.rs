//! Measuring one guest size with the project's own pieces: `Vm::new`, `Workload` (fill, epochs,
//! ground truth, verify), the source catalog (`SourceKind::build`), the `Engine` and, where the
//! kernel has it, `KernelAging`.
//!
//! A size runs as several VMs, one after the other, each dropped (its memory freed) before the
//! next: a *base* VM for setup (creation, first touch by the guest's integrity fill), the guest's
//! untracked speed, the engine's bookkeeping, ground-truth replay, the sources that only read
//! kernel state (pagemap, page_idle, soft-dirty, DAMON, the oracle; lru_gen) and the final
//! verify; then one VM per *tracking* source, because each changes the whole VM or mapping:
//! KVM's manual-protect dirty log and dirty ring are VM-wide, and a mapping takes one
//! userfaultfd (uffd-minor or uffd-wp). Tracked VMs are not filled (as `agelab run` without
//! `--verify`): the guest first-touches its hot set in the warm-up pass.

use super::table::Status;
use agelab_mglru::lru_gen_aging::KernelAging;
use agelab_mglru::session::{
    AgingSession, AgingSessionError, SessionOptions, SessionStep, StepTiming,
};
use agelab_mglru::sources::catalog::BuildOptions;
use agelab_mglru::sources::uffd_minor::ArmPolicy;
use agelab_mglru::sources::{SourceKind, UnavailableSource};
use agelab_mglru::{AccessSource, Engine, EngineConfig, EngineError, PassTruth};
use agelab_util::progress::ProgressLine;
use agelab_util::stats::median as median_of;
use agelab_vmm::workload::{Workload, WorkloadError, WorkloadSpec};
use agelab_vmm::{Backing, PageSet, Vm, VmConfig, VmError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Name of the kernel's own aging row (not an `AccessSource`: forced lru_gen aging of the VM's
/// memcg, as `agelab run` shows it).
pub const LRU_GEN: &str = "lru_gen";

/// Why a source was left out on purpose (`--unavailable`, the table's negative control).
pub const DISABLED: &str = "made unavailable with --unavailable (negative control)";

/// Longest a counted epoch may take before the workload's watchdog fires (plus its margin).
const EPOCH_LIMIT: Duration = Duration::from_secs(300);

/// Errors while measuring.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The aging loop failed: the guest's workload (also its fill and verify) or the engine.
    #[error(transparent)]
    Session(#[from] AgingSessionError),
    /// The workload spec built from the settings did not parse.
    #[error("workload spec {spec}: {err}")]
    Spec {
        /// The spec.
        spec: String,
        /// Why.
        err: String,
    },
    /// Verify found words the guest did not write.
    #[error("data integrity: {mismatches} of {words} words wrong after the passes")]
    Integrity {
        /// Wrong words.
        mismatches: u64,
        /// Words checked.
        words: u64,
    },
}

impl From<WorkloadError> for MeasureError {
    fn from(e: WorkloadError) -> Self {
        MeasureError::Session(e.into())
    }
}

impl From<EngineError> for MeasureError {
    fn from(e: EngineError) -> Self {
        MeasureError::Session(e.into())
    }
}

/// How every size is measured.
#[derive(Clone, Debug)]
pub struct Settings {
    /// vCPUs per VM.
    pub vcpus: usize,
    /// Guest memory backing.
    pub backing: Backing,
    /// Measured passes (after one warm-up pass).
    pub passes: usize,
    /// Accesses per hot page per pass.
    pub touches: u64,
    /// uffd-minor arming.
    pub uffd_arm: ArmPolicy,
    /// Time between passes as the sources are told (sizes uffd-minor's sample).
    pub interval: Duration,
    /// Sources left out on purpose (reported unavailable).
    pub disabled: Vec<SourceKind>,
    /// Time per page the fill and verify may take before the watchdog calls the guest stuck
    /// (from the host's measured first touch).
    pub page_limit: Duration,
}

impl Settings {
    /// The workload of every pass for `bytes` of guest memory: `agelab run`'s default hot/cold
    /// shape (10% hot, every access there) with writes mixed in so write-only sources see pages,
    /// counted so that each pass touches the same share of memory at every size.
    pub fn workload(&self, bytes: u64) -> String {
        let hot_pages = bytes / 4096 / self.vcpus as u64 / 10;
        format!(
            "hotcold:hot=10%,p=100%,op=mix,ops={}",
            (hot_pages * self.touches).max(1)
        )
    }

    fn spec(&self, bytes: u64) -> Result<WorkloadSpec, MeasureError> {
        let spec = self.workload(bytes);
        spec.parse().map_err(
            |e: agelab_vmm::workload::WorkloadSpecError| MeasureError::Spec {
                spec: spec.clone(),
                err: e.to_string(),
            },
        )
    }

    fn build_options(&self) -> BuildOptions {
        BuildOptions {
            uffd_arm: Some(self.uffd_arm),
            interval: Some(self.interval),
            ..Default::default()
        }
    }

    fn vm_config(&self, bytes: u64, ring: bool) -> VmConfig {
        VmConfig {
            vcpus: self.vcpus,
            mem_bytes: bytes,
            backing: self.backing.clone(),
            dirty_ring_entries: ring.then_some(4096),
            ..Default::default()
        }
    }

    /// Builds `kind` for `vm` through the catalog, or its placeholder when disabled.
    fn build(&self, kind: SourceKind, vm: &mut Vm) -> Option<Box<dyn AccessSource>> {
        if self.disabled.contains(&kind) {
            return Some(Box::new(UnavailableSource::new(
                kind.name(),
                kind.observes(),
                DISABLED,
            )));
        }
        kind.build(vm, &self.build_options()).map(|b| b.source)
    }
}

/// Sources that need a VM of their own (see the module docs).
pub fn needs_own_vm(kind: SourceKind) -> bool {
    kind.built_before_start() || kind == SourceKind::UffdWp
}

/// One source's (or lru_gen's) costs at one size.
#[derive(Clone, Debug, Default)]
pub struct SourceCost {
    /// Measured, or why not.
    pub status: Status,
    /// Median harvest wall time after a pass of the workload, µs.
    pub harvest_us: Option<f64>,
    /// Harvest wall time when nothing was touched since the previous harvest, µs.
    pub idle_us: Option<f64>,
    /// Median pages reported per pass.
    pub pages: Option<f64>,
    /// Median guest ns per access while this source tracked (own-VM sources): vCPU thread CPU
    /// time per access.
    pub guest_ns: Option<f64>,
    /// Median CPU time of this thread over the whole aging pass (harvest and bookkeeping), µs:
    /// the harvest's cost without the host's other load (own-VM sources, alone in their pass).
    pub pass_cpu_us: Option<f64>,
    /// Building the source (enabling logging, registering userfaultfd...), ms.
    pub build_ms: Option<f64>,
}

impl SourceCost {
    fn status(status: Status) -> Self {
        SourceCost {
            status,
            ..Default::default()
        }
    }
}

/// Everything measured at one size.
#[derive(Clone, Debug, Default)]
pub struct SizeResult {
    /// Guest memory, bytes.
    pub bytes: u64,
    /// Why the size was not measured (too little free memory).
    pub skipped: Option<String>,
    /// `Vm::new` (memory mapping, KVM VM, page tables, code copy), ms.
    pub vm_create_ms: Option<f64>,
    /// Starting the workload on every vCPU, ms.
    pub start_ms: Option<f64>,
    /// The guest writing the integrity pattern over all memory (its first touch), ms.
    pub fill_ms: Option<f64>,
    /// The same as CPU time of a vCPU thread (mean over vCPUs), ms.
    pub fill_cpu_ms: Option<f64>,
    /// Median guest ns per access, untracked (base VM): vCPU thread CPU time per access.
    pub guest_ns: Option<f64>,
    /// The same in wall time (epoch time per access; includes waiting for a CPU).
    pub guest_wall_ns: Option<f64>,
    /// Median engine bookkeeping per pass, µs.
    pub bookkeeping_us: Option<f64>,
    /// Median host replay of one pass's ground truth, µs.
    pub replay_us: Option<f64>,
    /// Median CPU time of the base VM's aging pass (its shared sources — pagemap dominates —
    /// and bookkeeping), µs.
    pub base_pass_cpu_us: Option<f64>,
    /// Median pages the guest touched per pass (ground truth).
    pub touched: Option<f64>,
    /// Verifying every word of guest memory, ms.
    pub verify_ms: Option<f64>,
    /// The same as CPU time of a vCPU thread (mean over vCPUs), ms.
    pub verify_cpu_ms: Option<f64>,
    /// Per source name (and [`LRU_GEN`]).
    pub sources: BTreeMap<String, SourceCost>,
}

/// The median of `v`, `None` without samples.
fn median(mut v: Vec<f64>) -> Option<f64> {
    (!v.is_empty()).then(|| median_of(&mut v))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Free memory the host reports (`MemAvailable`), bytes.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Why `bytes` of guest memory cannot be created now, if it cannot: the guest's memory plus
/// 1 GiB for the VMM, the engine and the rest of the host must be available.
fn memory_refusal(bytes: u64) -> Option<String> {
    let need = bytes + (1 << 30);
    match mem_available() {
        Some(avail) if avail < need => Some(format!(
            "MemAvailable {:.1} GiB < {:.1} GiB needed",
            avail as f64 / (1u64 << 30) as f64,
            need as f64 / (1u64 << 30) as f64
        )),
        _ => None,
    }
}

/// Each vCPU thread's CPU time now.
fn vcpu_cpu(wl: &Workload) -> Vec<Option<Duration>> {
    (0..wl.vm().vcpus())
        .map(|v| wl.vm().vcpu_cpu_time(v))
        .collect()
}

/// Mean CPU time the vCPU threads used since `before`, ms (`None` where it cannot be read).
fn cpu_since(wl: &Workload, before: &[Option<Duration>]) -> Option<f64> {
    let used: Option<Vec<Duration>> = vcpu_cpu(wl)
        .iter()
        .zip(before)
        .map(|(now, then)| Some(now.as_ref()?.saturating_sub((*then)?)))
        .collect();
    let used = used?;
    Some(used.iter().map(|d| ms(*d)).sum::<f64>() / used.len().max(1) as f64)
}

/// What the passes of one VM measured.
#[derive(Debug, Default)]
struct PassStats {
    guest_ns: Vec<f64>,
    guest_wall_ns: Vec<f64>,
    pass_cpu_ns: Vec<f64>,
    bookkeeping_ns: Vec<f64>,
    replay_ns: Vec<f64>,
    touched: Vec<f64>,
    kernel_ns: Vec<f64>,
    kernel_error: Option<String>,
    /// Per source: (wall ns, pages) per measured pass.
    harvest: BTreeMap<String, Vec<(f64, f64)>>,
    idle_ns: BTreeMap<String, f64>,
    errors: BTreeMap<String, String>,
}

impl PassStats {
    fn cost(&self, name: &str) -> SourceCost {
        if let Some(e) = self.errors.get(name) {
            return SourceCost::status(Status::Failed(e.clone()));
        }
        let h = self.harvest.get(name);
        SourceCost {
            status: Status::Measured,
            harvest_us: h.and_then(|h| median(h.iter().map(|x| x.0 / 1e3).collect())),
            pages: h.and_then(|h| median(h.iter().map(|x| x.1).collect())),
            idle_us: self.idle_ns.get(name).map(|ns| ns / 1e3),
            guest_ns: median(self.guest_ns.clone()),
            pass_cpu_us: median(self.pass_cpu_ns.iter().map(|ns| ns / 1e3).collect()),
            build_ms: None,
        }
    }
}

/// The aging loop of one measured VM: epochs of at most [`EPOCH_LIMIT`], counted by
/// [`run_passes`] rather than by time; the oracle fed when `oracle`.
fn session(
    vm: Vm,
    spec: WorkloadSpec,
    engine: Engine,
    oracle: bool,
) -> Result<AgingSession, AgingSessionError> {
    AgingSession::start(
        vm,
        spec,
        Some(engine),
        None,
        SessionOptions {
            duration: Duration::MAX,
            interval: EPOCH_LIMIT,
            trim_last_epoch: false,
            oracle,
            arm_at_start: false,
            progress: ProgressLine::off(),
        },
    )
}

/// One warm-up pass, `settings.passes` measured passes, then one idle pass (no guest epoch).
fn run_passes(
    session: &mut AgingSession,
    mut kernel: Option<&mut KernelAging>,
    settings: &Settings,
) -> Result<PassStats, MeasureError> {
    let mut st = PassStats::default();
    let pages = session.engine().expect("the bench ages").map().len();
    for i in 0..=settings.passes {
        // Replay: wall time (one thread per vCPU); the pass: this thread's CPU time.
        let (mut replay, mut pass_cpu) = (Duration::ZERO, Duration::ZERO);
        let (r, split, pass) = session.epoch_timed(&mut |t: StepTiming| match t.step {
            SessionStep::Truth => replay = t.wall,
            SessionStep::Age => pass_cpu = t.thread_cpu,
            SessionStep::Guest | SessionStep::Arm => {}
        })?;
        let pass = pass.expect("the bench ages");
        let kernel_ns = kernel.as_deref_mut().map(|k| {
            let t = Instant::now();
            k.age().map(|_| t.elapsed().as_nanos() as f64)
        });
        for s in &pass.sources {
            if let Some(e) = &s.error {
                st.errors.entry(s.name.clone()).or_insert_with(|| e.clone());
            }
        }
        if let Some(Err(e)) = &kernel_ns {
            st.kernel_error.get_or_insert_with(|| e.to_string());
        }
        if i == 0 {
            continue; // warm-up: first touches, sources settle
        }
        let vcpus = r.ops.len();
        let per_access = |v: usize| {
            let cpu = r.vcpu_cpu[v].as_nanos() as f64;
            if cpu > 0.0 && r.ops[v] > 0 {
                cpu / r.ops[v] as f64
            } else {
                r.ns_per_access(v)
            }
        };
        st.guest_ns
            .push((0..vcpus).map(per_access).sum::<f64>() / vcpus as f64);
        st.guest_wall_ns
            .push((0..vcpus).map(|v| r.ns_per_access(v)).sum::<f64>() / vcpus as f64);
        st.pass_cpu_ns.push(pass_cpu.as_nanos() as f64);
        st.bookkeeping_ns.push(pass.bookkeeping_ns as f64);
        st.replay_ns.push(replay.as_nanos() as f64);
        st.touched.push(split.accessed().count() as f64);
        if let Some(Ok(ns)) = kernel_ns {
            st.kernel_ns.push(ns);
        }
        for s in pass.sources.iter().filter(|s| s.harvested) {
            st.harvest
                .entry(s.name.clone())
                .or_default()
                .push((s.wall_ns as f64, s.accessed as f64));
        }
    }
    // Idle: nothing ran since the last harvest; what a source costs to find nothing.
    let nothing = PassTruth {
        read: PageSet::new(pages),
        written: PageSet::new(pages),
    };
    let pass = session.age(&nothing)?.expect("the bench ages");
    for s in pass.sources.iter().filter(|s| s.harvested) {
        st.idle_ns.insert(s.name.clone(), s.wall_ns as f64);
    }
    Ok(st)
}

/// Measures `bytes` of guest memory: the base VM, then each own-VM source.
pub fn size(bytes: u64, settings: &Settings) -> Result<SizeResult, MeasureError> {
    let mut out = SizeResult {
        bytes,
        ..Default::default()
    };
    if let Some(why) = memory_refusal(bytes) {
        out.skipped = Some(why);
        return Ok(out);
    }
    base(bytes, settings, &mut out)?;
    for kind in SourceKind::ALL.into_iter().filter(|k| needs_own_vm(*k)) {
        progress(&format!(
            "{} {}",
            super::table::size_label(bytes),
            kind.name()
        ));
        let cost = own_vm(kind, bytes, settings)?;
        out.sources.insert(kind.name().to_string(), cost);
    }
    Ok(out)
}

fn progress(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "agelab bench scaling: {what}");
}

/// The base VM: setup, fill, untracked passes with the sources that share it, verify.
fn base(bytes: u64, settings: &Settings, out: &mut SizeResult) -> Result<(), MeasureError> {
    progress(&format!("{} base VM", super::table::size_label(bytes)));
    // lru_gen: the VMM joins a memcg of its own before the VM exists, as `agelab run` does.
    let mut kernel = match KernelAging::available() {
        Ok(()) => match KernelAging::start(&format!("agelab-scaling-{}", std::process::id())) {
            Ok(k) => Ok(k),
            Err(e) => Err(Status::Failed(e.to_string())),
        },
        Err(why) => Err(Status::Unavailable(why.0)),
    };
    let mut vm = Vm::new(settings.vm_config(bytes, false))?;
    out.vm_create_ms = Some(ms(vm.setup_time()));
    if let Ok(k) = &kernel {
        if let Err(e) = k.charge_guest(&vm) {
            kernel = Err(Status::Failed(e.to_string()));
        }
    }
    let mut engine = Engine::new(vm.page_map().clone(), EngineConfig::default())?;
    let shared: Vec<SourceKind> = SourceKind::ALL
        .into_iter()
        .filter(|k| !needs_own_vm(*k) && *k != SourceKind::Oracle)
        .collect();
    // The engine lists sources in the order added, under their own names (`damon` for
    // damon-vaddr): `added` maps them back to catalog names.
    let mut added = Vec::new();
    for kind in &shared {
        if let Some(s) = settings.build(*kind, &mut vm) {
            engine.add_source(s);
            added.push(*kind);
        }
    }
    // The session adds the oracle last, as the catalog lists it; disabled, its placeholder.
    let oracle_on = !settings.disabled.contains(&SourceKind::Oracle);
    if let Some(placeholder) = settings.build(SourceKind::Oracle, &mut vm) {
        engine.add_source(placeholder);
    }
    added.push(SourceKind::Oracle);
    let t = Instant::now();
    let mut session = session(vm, settings.spec(bytes)?, engine, oracle_on)?;
    out.start_ms = Some(ms(t.elapsed()));
    let wl = session.workload_mut();
    wl.set_page_limit(settings.page_limit);
    let cpu = vcpu_cpu(wl);
    out.fill_ms = Some(ms(wl.fill()?));
    out.fill_cpu_ms = cpu_since(wl, &cpu);
    let st = run_passes(&mut session, kernel.as_mut().ok(), settings)?;
    let (mut wl, engine, _) = session.finish();
    let engine = engine.expect("the bench ages");
    let (t, cpu) = (Instant::now(), vcpu_cpu(&wl));
    let v = wl.verify()?;
    out.verify_ms = Some(ms(t.elapsed()));
    out.verify_cpu_ms = cpu_since(&wl, &cpu);
    if v.mismatches > 0 {
        return Err(MeasureError::Integrity {
            mismatches: v.mismatches,
            words: v.words,
        });
    }
    wl.finish()?;
    out.guest_ns = median(st.guest_ns.clone());
    out.guest_wall_ns = median(st.guest_wall_ns.clone());
    out.bookkeeping_us = median(st.bookkeeping_ns.iter().map(|ns| ns / 1e3).collect());
    out.replay_us = median(st.replay_ns.iter().map(|ns| ns / 1e3).collect());
    out.base_pass_cpu_us = median(st.pass_cpu_ns.iter().map(|ns| ns / 1e3).collect());
    out.touched = median(st.touched.clone());
    for (kind, s) in added.iter().zip(engine.sources()) {
        let cost = if s.available {
            let mut c = st.cost(&s.name);
            // The base VM's speed is the untracked row; its pass CPU is every shared source's.
            c.guest_ns = None;
            c.pass_cpu_us = None;
            c
        } else {
            SourceCost::status(Status::Unavailable(
                s.reason.clone().unwrap_or_else(|| "unavailable".into()),
            ))
        };
        out.sources.insert(kind.name().to_string(), cost);
    }
    let lru_gen = match kernel {
        Err(status) => SourceCost::status(status),
        Ok(_) => match &st.kernel_error {
            Some(e) => SourceCost::status(Status::Failed(e.clone())),
            None => SourceCost {
                harvest_us: median(st.kernel_ns.iter().map(|ns| ns / 1e3).collect()),
                ..SourceCost::status(Status::Measured)
            },
        },
    };
    out.sources.insert(LRU_GEN.to_string(), lru_gen);
    Ok(())
}

/// A VM for `kind` alone: build it through the catalog, run the passes, report its costs.
fn own_vm(kind: SourceKind, bytes: u64, settings: &Settings) -> Result<SourceCost, MeasureError> {
    if settings.disabled.contains(&kind) {
        return Ok(SourceCost::status(Status::Unavailable(DISABLED.into())));
    }
    if let Some(why) = memory_refusal(bytes) {
        return Ok(SourceCost::status(Status::Failed(format!(
            "not measured at {}: {why}",
            super::table::size_label(bytes)
        ))));
    }
    let mut vm = Vm::new(settings.vm_config(bytes, kind == SourceKind::KvmDirtyRing))?;
    let t = Instant::now();
    let source = settings
        .build(kind, &mut vm)
        .expect("only the oracle has no catalog build");
    let build_ms = ms(t.elapsed());
    if let Err(why) = source.available() {
        return Ok(SourceCost::status(Status::Unavailable(why.0)));
    }
    let mut engine = Engine::new(vm.page_map().clone(), EngineConfig::default())?;
    engine.add_source(source);
    let mut session = session(vm, settings.spec(bytes)?, engine, false)?;
    let st = run_passes(&mut session, None, settings)?;
    let (wl, _, _) = session.finish();
    wl.finish()?;
    let mut cost = st.cost(kind.name());
    cost.build_ms = Some(build_ms);
    Ok(cost)
}
