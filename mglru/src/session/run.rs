//! `agelab run` as a library: boot a guest, run a workload in epochs and age its memory from
//! every enabled source, judged against the exact ground truth; the kernel's own lru_gen aging of
//! the VM's memcg beside it where lru_gen exists. The CLI parses options into an
//! [`AgingRunConfig`], prints the [`RunEvent`]s it is shown and the [`RunReport`] it gets back.

use super::{AgingSession, AgingSessionError, SessionOptions};
use crate::engine::report::{EngineReport, PassJson};
use crate::engine::{AgeHeatmap, WorkingSetHistogram};
use crate::kernel::lru_gen::LruGenView;
use crate::lru_gen_aging::{engine_generations, KernelAging, KernelLruGenReport, LruGenAgingError};
use crate::selfcheck::{self, AccuracyError, AccuracyGate, SelfcheckError, SelfcheckReport};
use crate::sources::catalog::{self, SourceKind};
use crate::sources::uffd_minor::{ArmPolicy, GuidedStats};
use crate::{AccessKinds, AgingPass, Engine, EngineConfig, Observes, SourceView};
use agelab_util::progress::ProgressLine;
use agelab_vmm::workload::WorkloadSpec;
use agelab_vmm::{Backing, Vm, VmConfig, VmError};
use serde::Serialize;
use std::time::Duration;

/// Everything an aging run needs, as `agelab run`'s options give it.
#[derive(Clone, Debug)]
pub struct AgingRunConfig {
    /// Guest test memory, bytes.
    pub mem_bytes: u64,
    /// vCPUs (one host thread each).
    pub vcpus: usize,
    /// The workload.
    pub workload: WorkloadSpec,
    /// How long the workload runs.
    pub duration: Duration,
    /// One epoch (one aging pass per epoch).
    pub interval: Duration,
    /// Backing of guest memory.
    pub backing: Backing,
    /// Memslots the test memory is split into.
    pub slots: usize,
    /// Fill memory with the integrity pattern first and verify every word at the end.
    pub verify: bool,
    /// Every source feeding the engine (`auto` expanded).
    pub sources: Vec<SourceKind>,
    /// The sources named explicitly (which `require_accurate` insists on).
    pub named_sources: Vec<SourceKind>,
    /// uffd-minor: guest faults per second allowed (overrides `uffd_arm` with a sample).
    pub fault_budget: Option<u64>,
    /// uffd-minor arming.
    pub uffd_arm: ArmPolicy,
    /// Generations the engine keeps.
    pub gens: usize,
    /// Record page age over time (for an SVG or an HTML report).
    pub heatmap: bool,
    /// Run the startup self-check of the sources.
    pub selfcheck: bool,
    /// Fail when a requested source is unavailable, when none observes the workload's kind of
    /// access, or when a self-check recall is below this.
    pub require_accurate: Option<f64>,
    /// The progress line on a terminal.
    pub progress: ProgressLine,
}

impl AgingRunConfig {
    /// The uffd-minor arming in force: `fault_budget`'s uniform sample, else `uffd_arm`.
    pub fn arm_policy(&self) -> ArmPolicy {
        match self.fault_budget {
            Some(b) => ArmPolicy::Sample {
                budget_faults_per_sec: b,
            },
            None => self.uffd_arm,
        }
    }
}

/// Errors of an aging run.
#[derive(Debug, thiserror::Error)]
pub enum AgingRunError {
    /// The VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The aging loop failed: its engine, workload or guided uffd-minor arming (including the
    /// engine's construction and the workload's fill and verification around the loop).
    #[error(transparent)]
    Session(#[from] AgingSessionError),
    /// The self-check could not run.
    #[error(transparent)]
    Selfcheck(#[from] SelfcheckError),
    /// A source is less accurate than `require_accurate` asks.
    #[error(transparent)]
    Inaccurate(#[from] AccuracyError),
    /// Verification found corrupted words.
    #[error("data integrity: {mismatches} of {words} words wrong, first at {first:#x?}")]
    Integrity {
        /// Wrong words.
        mismatches: u64,
        /// Words checked.
        words: u64,
        /// First bad addresses.
        first: Vec<u64>,
    },
}

/// What a run shows while it runs, for the caller to print (or not).
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// The startup self-check's result (before the run's VM exists).
    Selfcheck(&'a SelfcheckReport),
    /// Something that does not stop the run (the kernel lru_gen view off, no signal cleanup).
    Warning(String),
    /// No available source observes a kind of access the workload makes: why.
    Blind(&'a str),
    /// One aging pass ran; `kernel` is the kernel's forced aging of the VM's memcg after it.
    Pass {
        /// The pass.
        pass: &'a AgingPass,
        /// The engine after it.
        engine: &'a Engine,
        /// The kernel's generations after its forced aging step, where lru_gen runs.
        kernel: Option<&'a Result<LruGenView, LruGenAgingError>>,
    },
}

/// Per-vCPU totals.
#[derive(Debug, Clone, Serialize)]
pub struct VcpuReport {
    /// Accesses.
    pub ops: u64,
    /// Mean ns per access.
    pub ns_per_access: f64,
}

/// One epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// Accesses by all vCPUs.
    pub ops: u64,
    /// Distinct pages read (ground truth).
    pub pages_read: u64,
    /// Distinct pages written (ground truth).
    pub pages_written: u64,
    /// Epoch wall time in ms.
    pub ms: f64,
}

/// Everything `agelab run` reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// vCPUs.
    pub vcpus: usize,
    /// Test memory bytes.
    pub mem_bytes: u64,
    /// Backing.
    pub backing: String,
    /// Memslots.
    pub slots: usize,
    /// Workload spec, normalised.
    pub workload: String,
    /// VM creation time in ms.
    pub setup_ms: f64,
    /// Per vCPU.
    pub vcpu: Vec<VcpuReport>,
    /// Per epoch.
    pub epochs: Vec<EpochReport>,
    /// Per aging pass: time, generations after it, each source's precision and recall.
    pub passes: Vec<PassJson>,
    /// Pages by idle time at the end (`edges_ms`, `pages` per bucket, `reclaimed`).
    pub working_set: WorkingSetHistogram,
    /// Page age over time (`--svg`, `--report`): rows of guest pages × passes, mean age in ms
    /// (`null` for a row with no resident page); `null` when not recorded.
    pub heatmap: Option<AgeHeatmap>,
    /// Exit counters summed over vCPUs.
    pub exits: serde_json::Map<String, serde_json::Value>,
    /// Why the run ended.
    pub exit_reason: String,
    /// Integrity check result (words wrong), when `--verify`.
    pub verify_mismatches: Option<u64>,
    /// The engine: generations, sources (precision/recall), aging cost, tiers.
    #[serde(flatten)]
    pub engine: EngineReport,
    /// Set when no available source observes a kind of access the workload makes: why (pages
    /// touched only that way age out although in use); `null` otherwise.
    pub blind: Option<String>,
    /// The startup self-check of the sources.
    pub selfcheck: Option<SelfcheckReport>,
    /// uffd-minor arming (`--uffd-arm`) and, when guided, what it armed and the guest's faults.
    pub uffd_arm: String,
    /// Totals of guided arming (`--uffd-arm oldest...`).
    pub uffd_guided: Option<GuidedStats>,
    /// The kernel's lru_gen generations of the VM's memcg after the run, as data: the memcg
    /// (path, id), per generation seq/age_ms/anon/file summed over nodes, and `memcg_pages` vs
    /// `guest_pages` (the memcg holds every guest page plus the VMM's own).
    pub kernel_lru_gen: Option<KernelLruGenReport>,
    /// The same beside the engine's generations, as a text table (human report only).
    #[serde(skip)]
    pub kernel_lru_gen_table: String,
    /// Final engine table (debugfs style).
    #[serde(skip)]
    pub table: String,
    /// Working-set histogram as text.
    #[serde(skip)]
    pub histogram: String,
}

/// The self-check VM's backing for the run's: a `file:PATH` backing becomes a fresh unlinked
/// file in PATH's directory (same filesystem), so the self-check leaves PATH to the run.
fn selfcheck_backing(backing: &Backing) -> Backing {
    match backing {
        Backing::File(p) if !p.is_dir() => Backing::File(match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => ".".into(),
        }),
        b => b.clone(),
    }
}

/// Runs the self-check of `cfg`'s sources and its accuracy gate.
fn run_selfcheck(
    cfg: &AgingRunConfig,
    on: &mut dyn FnMut(RunEvent),
) -> Result<SelfcheckReport, AgingRunError> {
    let oracle_view = [SourceView {
        name: SourceKind::Oracle.name(),
        observes: SourceKind::Oracle.observes(),
        unavailable: None,
    }];
    let r = selfcheck::run(&selfcheck::SelfcheckOptions {
        mem_bytes: cfg.mem_bytes.min(64 << 20),
        backing: selfcheck_backing(&cfg.backing),
        sources: selfcheck::sources_for_run(&cfg.sources),
        ..Default::default()
    })?;
    on(RunEvent::Selfcheck(&r));
    if let Some(min) = cfg.require_accurate {
        let with_oracle = cfg.sources.contains(&SourceKind::Oracle);
        r.require_accurate(
            min,
            &AccuracyGate {
                requested: &cfg.named_sources,
                workload: AccessKinds::of(cfg.workload.op),
                unmeasured: if with_oracle { &oracle_view } else { &[] },
            },
        )?;
    }
    Ok(r)
}

/// The kernel's own aging of the VM's memory, where lru_gen is here (before the VM exists).
fn start_kernel_aging(on: &mut dyn FnMut(RunEvent)) -> Option<KernelAging> {
    KernelAging::available().ok()?;
    match KernelAging::start(&format!("agelab-run-{}", std::process::id())) {
        Ok(k) => Some(k),
        Err(e) => {
            on(RunEvent::Warning(format!("kernel lru_gen view off: {e}")));
            None
        }
    }
}

/// Runs the aging run; `on` sees the [`RunEvent`]s as they happen.
pub fn run(cfg: &AgingRunConfig, on: &mut dyn FnMut(RunEvent)) -> Result<RunReport, AgingRunError> {
    // Before any thread exists: memcg, lru_gen knobs and kdamonds are restored on SIGINT/SIGTERM.
    if let Err(e) = crate::host_guard::install_signal_cleanup() {
        on(RunEvent::Warning(e.to_string()));
    }
    let selfcheck = if cfg.selfcheck {
        Some(run_selfcheck(cfg, on)?)
    } else {
        None
    };
    let mut kernel_aging = start_kernel_aging(on);
    let mut vm = Vm::new(VmConfig {
        vcpus: cfg.vcpus,
        mem_bytes: cfg.mem_bytes,
        backing: cfg.backing.clone(),
        slots: cfg.slots,
        heap_bytes: agelab_vmm::workload::heap_bytes(&cfg.workload, cfg.mem_bytes),
        dirty_ring_entries: catalog::wants_dirty_ring(&cfg.sources).then_some(4096),
        ..Default::default()
    })?;
    // The memcg holds every guest page whatever the backing, so the kernel's generations cover
    // the guest (untouched memfd pages would otherwise be charged nowhere, or wherever faulted).
    if let Some(k) = &kernel_aging {
        if let Err(e) = k.charge_guest(&vm) {
            on(RunEvent::Warning(format!("kernel lru_gen view: {e}")));
        }
    }
    let setup = vm.setup_time();
    let map = vm.page_map().clone();
    let pages = map.len();
    let mut engine = Engine::new(
        map,
        EngineConfig {
            policy: crate::AgingPolicy {
                max_gens: cfg.gens,
                ..Default::default()
            },
            heatmap_rows: cfg.heatmap.then_some(256),
            ..Default::default()
        },
    )
    .map_err(AgingSessionError::from)?;
    let uffd_arm = cfg.arm_policy();
    let (sources, guide) = catalog::build_guided(
        &cfg.sources,
        &mut vm,
        catalog::BuildOptions {
            fault_budget: cfg.fault_budget,
            interval: Some(cfg.interval),
            uffd_arm: Some(uffd_arm),
            ..Default::default()
        },
    );
    for s in sources {
        engine.add_source(s);
    }
    let mut session = AgingSession::start(
        vm,
        cfg.workload.clone(),
        Some(engine),
        guide,
        SessionOptions {
            duration: cfg.duration,
            interval: cfg.interval,
            trim_last_epoch: true,
            oracle: cfg.sources.contains(&SourceKind::Oracle),
            arm_at_start: true,
            progress: cfg.progress.clone(),
        },
    )?;
    let engine = session.engine().expect("the run ages");
    let blind = crate::source::blindness(
        AccessKinds::of(cfg.workload.op),
        engine.sources().map(|s| SourceView {
            name: &s.name,
            observes: s.observes.unwrap_or(Observes::Presence),
            unavailable: (!s.available).then(|| s.reason.as_deref().unwrap_or("unavailable")),
        }),
    );
    if let Some(why) = &blind {
        on(RunEvent::Blind(why));
    }
    if cfg.verify {
        session
            .workload_mut()
            .fill()
            .map_err(AgingSessionError::from)?;
    }
    let mut epochs = Vec::new();
    let mut passes = Vec::new();
    let mut ops = vec![0u64; cfg.vcpus];
    let mut busy = vec![Duration::ZERO; cfg.vcpus];
    while session.running() {
        let (r, truth, pass) = session.epoch()?;
        let pass = pass.expect("the run ages");
        let engine = session.engine().expect("the run ages");
        passes.push(PassJson::of(&pass, engine));
        let kernel_view = kernel_aging.as_mut().map(|k| k.age());
        session.clear_progress();
        on(RunEvent::Pass {
            pass: &pass,
            engine: session.engine().expect("the run ages"),
            kernel: kernel_view.as_ref(),
        });
        session.show_progress(|| {
            format!(
                "pass {}: {} pages accessed, {} promoted",
                pass.pass, pass.accessed, pass.promotion.promoted
            )
        });
        for v in 0..cfg.vcpus {
            ops[v] += r.ops[v];
            busy[v] += r.elapsed;
        }
        epochs.push(EpochReport {
            ops: r.total_ops(),
            pages_read: truth.read.count(),
            pages_written: truth.written.count(),
            ms: r.elapsed.as_secs_f64() * 1e3,
        });
    }
    let (mut wl, engine, guide) = session.finish();
    let engine = engine.expect("the run ages");
    let verify_mismatches = if cfg.verify {
        let v = wl.verify().map_err(AgingSessionError::from)?;
        if v.mismatches > 0 {
            return Err(AgingRunError::Integrity {
                mismatches: v.mismatches,
                words: v.words,
                first: v.first_bad,
            });
        }
        Some(0)
    } else {
        None
    };
    let vm = wl.finish().map_err(AgingSessionError::from)?;
    let kernel_lru_gen = kernel_aging.as_ref().and_then(|k| match k.report(pages) {
        Ok(r) => Some(r),
        Err(e) => {
            on(RunEvent::Warning(format!("kernel lru_gen view: {e}")));
            None
        }
    });
    let kernel_lru_gen_table = match (&kernel_aging, &kernel_lru_gen) {
        (Some(k), Some(r)) => k.view().ok().map_or_else(String::new, |v| {
            format!(
                "{}forced aging: {:.2} ms per pass (caps {}); memcg {} pages, guest {} pages",
                v.side_by_side(&engine_generations(&engine)),
                r.aging_ms_per_pass,
                r.caps,
                r.memcg_pages,
                r.guest_pages
            )
        }),
        _ => String::new(),
    };
    Ok(RunReport {
        vcpus: cfg.vcpus,
        mem_bytes: cfg.mem_bytes,
        backing: cfg.backing.to_string(),
        slots: cfg.slots,
        workload: cfg.workload.to_string(),
        setup_ms: setup.as_secs_f64() * 1e3,
        vcpu: (0..cfg.vcpus)
            .map(|v| VcpuReport {
                ops: ops[v],
                ns_per_access: if ops[v] == 0 {
                    0.0
                } else {
                    busy[v].as_nanos() as f64 / ops[v] as f64
                },
            })
            .collect(),
        epochs,
        passes,
        working_set: engine.histogram(),
        heatmap: engine.heatmap().cloned(),
        exits: exit_counters(&vm, cfg.vcpus),
        exit_reason: "completed: every vCPU reported DONE".into(),
        verify_mismatches,
        blind,
        uffd_arm: uffd_arm.to_string(),
        uffd_guided: guide.as_ref().map(|g| g.stats()),
        selfcheck,
        kernel_lru_gen,
        kernel_lru_gen_table,
        engine: engine.report(),
        table: engine.table(),
        histogram: engine.histogram().to_text(),
    })
}

/// Exit counters of `vcpus` vCPUs, summed: ucall, intr, dirty_ring_full, fatal.
fn exit_counters(vm: &Vm, vcpus: usize) -> serde_json::Map<String, serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let sum = |f: &dyn Fn(&agelab_vmm::vcpu::ExitCounters) -> u64| {
        (0..vcpus).map(|v| f(vm.exits(v))).sum::<u64>()
    };
    let mut exits = serde_json::Map::new();
    exits.insert("ucall".into(), sum(&|e| e.ucall.load(Relaxed)).into());
    exits.insert("intr".into(), sum(&|e| e.intr.load(Relaxed)).into());
    exits.insert(
        "dirty_ring_full".into(),
        sum(&|e| e.ring_full.load(Relaxed)).into(),
    );
    exits.insert("fatal".into(), sum(&|e| e.fatal.load(Relaxed)).into());
    // Page faults KVM fixed for the guest: the evidence behind a dirty-log source's reads
    // reported as writes (KVM logs a page dirty whenever it maps it writable, also on a read).
    if let Some(f) = vm.kvm_faults_fixed() {
        exits.insert("kvm_pf_fixed".into(), f.into());
    }
    exits
}
