//! One reclaim run: a guest workload under one policy, with the controller, refault detection
//! and the integrity check.
//!
//! Sequence: (kernel policies: create a memcg and move this process in, so guest memory is
//! charged there) → VM and sources → `Workload::fill()` → epochs of `interval`; after each the
//! loop (guest paused between epochs) scans residency for refaults, runs an aging pass, asks the
//! controller for a step, picks victims and reclaims them → measure RSS and swap →
//! `Workload::verify()` (any mismatch fails the run) → guest exits.

use agelab_vmm::{PageSet, Vm, VmConfig, PAGE_SIZE};
use std::time::{Duration, Instant};

use super::action::{ReclaimAction, Reclaimer};
use super::controller::ReclaimController;
use super::kernel_policies::{start_damon, swap_zram, KernelReclaim};
use super::policy::{FifoVictims, PolicyKind, RandomVictims};
use super::refault::RefaultDetector;
use crate::engine::{AgingPolicy, Engine, EngineConfig, EvictionScope, NewGeneration};
use crate::kernel::damon::DamonAdmin;
use crate::kernel::swap::SwapStatus;
use crate::session::{AgingSession, SessionOptions};
use crate::source::AccessSource;
use crate::sources::uffd_minor::{GuidedArming, RegionConfig, UffdMinorConfig, UffdMinorSource};
use crate::sources::{catalog, SourceKind, UnavailableSource};
use agelab_util::cpu_time::{proc_cpu_ns, thread_cpu_ns};
use agelab_util::stats::median;

pub use super::config::{ReclaimRunConfig, ENGINE_ALL_TARGET_SLOWDOWN_PCT};
pub use super::error::ReclaimRunError;
pub use super::run_report::{DamonRunInfo, IntervalRecord, ReclaimRunReport};
use crate::sources::uffd_minor::budget::ReadBudget;

/// Sources of the `engine-all` policy besides uffd-minor (added first, built here with the
/// engine's guided arming): every source runs take that reports accesses
/// (the KVM dirty log through CLEAR_DIRTY_LOG; the dirty ring excludes the dirty log, pagemap is
/// residency only, the oracle is not a real source). Unavailable ones stay listed with a reason.
pub fn all_source_kinds() -> Vec<SourceKind> {
    SourceKind::ALL
        .into_iter()
        .filter(|k| {
            k.in_runs()
                && !matches!(
                    k,
                    SourceKind::Oracle
                        | SourceKind::Pagemap
                        | SourceKind::KvmDirtyRing
                        | SourceKind::KvmDirtyLog
                        | SourceKind::UffdMinor
                )
        })
        .collect()
}

/// Generations of the engine whose pages `engine-all` arms with uffd-minor after each pass.
/// Pages of younger generations are not watched (a hot page faults once per trip down the
/// window, not once per interval); eviction takes only pages of these generations that were
/// armed and untouched through the last [`ENGINE_ALL_IDLE_INTERVALS`] intervals.
pub const ENGINE_ALL_ARM_GENS: usize = 2;

/// `engine-all` evicts only pages uffd-minor watched untouched through this many consecutive
/// intervals: one interval is not enough when the guest spent it stalled on a fault storm.
pub const ENGINE_ALL_IDLE_INTERVALS: u8 = 4;

/// `engine-all` arms at most guest pages / this many new pages per pass (storms are spread).
pub const ENGINE_ALL_ADMIT_DIV: u64 = 8;

/// The userfaultfd MINOR source (guest reads and writes on shmem), with the arming the engine
/// drives (its [`ENGINE_ALL_ARM_GENS`] oldest generations, page by page or by `regions`; faults
/// held to `read_budget_pct` of guest time), or an unavailable placeholder with the reason.
fn uffd_minor_source(
    map: &agelab_vmm::GuestPageMap,
    interval: Duration,
    regions: Option<RegionConfig>,
    read_budget_pct: f64,
) -> (Box<dyn AccessSource>, Option<GuidedArming>) {
    let made = UffdMinorSource::supported(map)
        .map_err(|u| u.0)
        .and_then(|()| {
            UffdMinorSource::new(
                map,
                UffdMinorConfig {
                    budget_faults_per_sec: None,
                    seed: 1,
                    interval: Some(interval),
                },
            )
            .map_err(|e| e.to_string())
        });
    match made {
        Ok(mut s) => {
            let mut guide = GuidedArming::new(s.guide(), ENGINE_ALL_ARM_GENS, 0, 1)
                .with_faults(s.fault_count());
            guide = match regions {
                Some(r) => guide.with_regions(r),
                None => guide.with_admit_limit(Some(map.len() / ENGINE_ALL_ADMIT_DIV)),
            };
            let guide = guide.with_read_budget(ReadBudget::new(read_budget_pct));
            (Box::new(s), Some(guide))
        }
        Err(reason) => (
            Box::new(UnavailableSource::new(
                SourceKind::UffdMinor.name(),
                SourceKind::UffdMinor.observes(),
                reason,
            )),
            None,
        ),
    }
}

/// Runs one policy; see the module docs.
pub fn run_once(cfg: &ReclaimRunConfig) -> Result<ReclaimRunReport, ReclaimRunError> {
    if cfg.policy == PolicyKind::Damon {
        // Refused before any VM exists when DAMON is missing or someone else's kdamond runs.
        DamonAdmin::new().check()?;
    }
    let mut kernel = if cfg.policy.needs_memcg() {
        Some(KernelReclaim::new(cfg.policy)?)
    } else {
        None
    };
    let source_kinds: Vec<SourceKind> = match cfg.policy {
        PolicyKind::EngineDirty => vec![SourceKind::KvmClearLog],
        PolicyKind::EngineAll | PolicyKind::EngineRegions => all_source_kinds(),
        _ => Vec::new(),
    };
    let mut vm = Vm::new(VmConfig {
        vcpus: cfg.vcpus,
        mem_bytes: cfg.mem_bytes,
        backing: cfg.backing.clone(),
        heap_bytes: agelab_vmm::workload::heap_bytes(&cfg.workload, cfg.mem_bytes),
        ..Default::default()
    })?;
    let map = vm.page_map().clone();
    let pages = map.len();
    // Checks for swap before anything runs: a clear error instead of a run that reclaims nothing.
    let kernel_chooses = kernel.is_some() || cfg.policy == PolicyKind::Damon;
    let mut reclaimer = if cfg.policy.reclaims() && !kernel_chooses {
        let mut r = Reclaimer::new(map.clone(), cfg.action)?;
        let files: Vec<(u32, &std::fs::File)> = vm
            .test_slots()
            .iter()
            .filter_map(|s| s.mapping.file.as_ref().map(|f| (s.slot, f)))
            .collect();
        r.set_alias_files(&files)?;
        Some(r)
    } else {
        None
    };
    if kernel_chooses {
        // Kernel reclaim of swap-backed memory needs swap just the same.
        Reclaimer::new(map.clone(), ReclaimAction::PageOut)?;
    }
    let mut engine = if cfg.policy.uses_engine() {
        let ec = EngineConfig {
            policy: AgingPolicy {
                max_gens: cfg.gens,
                min_ttl: cfg.min_age,
                // The window must hold pages idle for min_age: with one generation per pass the
                // oldest one's idle time is only (gens - 1) intervals and the age gate would never
                // open. One generation per min_age / (gens - 3) leaves a margin of two.
                new_generation: NewGeneration::AfterInterval(
                    (cfg.min_age / (cfg.gens.max(4) as u32 - 3)).max(cfg.interval),
                ),
                ..AgingPolicy::default()
            },
            ..EngineConfig::default()
        };
        Some(Engine::new(map.clone(), ec)?)
    } else {
        None
    };
    let mut guide = None;
    if let Some(e) = engine.as_mut() {
        if cfg.policy.uses_all_sources() {
            // First: a VMA takes one userfaultfd, and reads (MINOR) matter more than uffd-wp's
            // writes, which the dirty log already sees.
            let regions = (cfg.policy == PolicyKind::EngineRegions).then_some(cfg.regions);
            let (src, g) = uffd_minor_source(&map, cfg.interval, regions, cfg.read_budget_pct);
            e.add_source(src);
            guide = g;
        }
        for s in catalog::build(&source_kinds, &mut vm) {
            e.add_source(s);
        }
    }
    let mut session = AgingSession::start(
        vm,
        cfg.workload.clone(),
        engine,
        guide,
        SessionOptions {
            duration: cfg.duration,
            interval: cfg.interval,
            trim_last_epoch: false,
            oracle: cfg.policy == PolicyKind::Oracle,
            arm_at_start: false,
            progress: cfg.progress.clone(),
        },
    )?;
    session.workload_mut().fill()?;
    // DAMON after the fill: its regions then start from resident memory.
    let kdamond = if cfg.policy == PolicyKind::Damon {
        Some(start_damon(cfg, &map)?)
    } else {
        None
    };
    let kdamond_cpu0 = kdamond.as_ref().and_then(|k| k.pid()).and_then(proc_cpu_ns);
    let faults0 = session.guide().map_or(0, |g| g.stats().faults);
    let zram = swap_zram();
    let swap0 = SwapStatus::read()?.used_kib();
    let zram0 = zram
        .as_ref()
        .and_then(|z| z.mm_stat().ok())
        .unwrap_or_default();
    let mut detector = RefaultDetector::new(map.clone())?;
    let rss_start = detector.resident().count() * PAGE_SIZE;
    let mut ctrl = ReclaimController::new(cfg.controller, pages);
    let mut random = RandomVictims::new(cfg.seed);
    let mut fifo = FifoVictims::new(pages);
    let mut rep = ReclaimRunReport {
        policy: cfg.policy.name().into(),
        workload: cfg.workload.to_string(),
        backing: cfg.backing.to_string(),
        pages,
        rss_start,
        ..Default::default()
    };
    let mut epochs: Vec<(u64, Instant)> = Vec::new();
    let mut guest = Duration::ZERO;
    let mut vcpu_cpu = Duration::ZERO;
    let mut measured = Duration::ZERO;
    let mut eff = Duration::ZERO;
    let mut per_cpu: Vec<f64> = Vec::new();
    let mut per_eff: Vec<f64> = Vec::new();
    let mut psi_stall_us = 0u64;
    let pressure_src = kernel.as_mut().and_then(|k| k.pressure.take());
    let pressure = pressure_src.as_ref();
    rep.pressure_scope = pressure.map(|p| p.scope().to_string());
    while session.running() {
        let warm = session.elapsed() >= cfg.warmup;
        let psi0 = pressure.map(|p| p.read()).transpose()?;
        let r = session.run_epoch()?;
        // Stall time during the epoch only: reclaim this loop does between epochs (a v1 limit
        // write reclaims in the writer) is not the guest's pressure.
        let psi_pct = match (pressure, psi0) {
            (Some(p), Some(a)) => {
                let d = p.read()?.some.total_us.saturating_sub(a.some.total_us);
                if warm {
                    psi_stall_us += d;
                }
                Some(d as f64 / (r.elapsed.as_secs_f64() * 1e6).max(1.0) * 100.0)
            }
            _ => None,
        };
        guest += r.elapsed;
        rep.ops += r.total_ops();
        if warm {
            rep.ops_measured += r.total_ops();
            measured += r.elapsed;
            vcpu_cpu += r.vcpu_cpu.iter().sum::<Duration>();
            let e: Duration = r
                .vcpu_runq_wait
                .iter()
                .map(|w| r.elapsed.saturating_sub(*w))
                .sum();
            eff += e;
            let c: Duration = r.vcpu_cpu.iter().sum();
            if !c.is_zero() {
                per_cpu.push(r.total_ops() as f64 / c.as_secs_f64());
            }
            if !e.is_zero() {
                per_eff.push(r.total_ops() as f64 / e.as_secs_f64());
            }
        }
        epochs.push((r.epoch, Instant::now()));

        // Refaults the residency scan sees, then the aging pass (whose sources may see more).
        let c0 = thread_cpu_ns();
        let step = detector.step()?;
        let mut refaults = step.refaulted.count();
        let mut reclaimed = 0;
        if kdamond.is_some() {
            // DAMON reclaims on its own; the scan sees what left.
            reclaimed = step.evicted.count();
        }
        fifo.refaulted(&step.refaulted);
        let c1 = thread_cpu_ns();
        if let Some(e) = session.engine_mut() {
            e.record_refaults(&step.refaulted)?;
            e.mark_reclaimed(step.evicted.iter())?;
        }
        if let Some(pass) = session.age_epoch(r.epoch)? {
            refaults += pass.promotion.refaulted;
        }
        let c2 = thread_cpu_ns();
        rep.aging_cpu_ns += c2 - c1;

        // The controller's working-set estimate: what the engine saw within ws_window, else
        // every resident page.
        let ws_est = match session.engine() {
            Some(e) => {
                let g = e.generations();
                let now = Instant::now();
                g.generations()
                    .filter(|x| g.idle_at_least(x.seq, now) < cfg.controller.ws_window)
                    .map(|x| x.pages)
                    .sum()
            }
            None => detector.resident().count(),
        };
        let control = ctrl.step(r.elapsed, refaults, ws_est);
        // DAMON reclaims on its own (counted above).
        if cfg.policy.reclaims() && kdamond.is_none() && session.elapsed() >= cfg.min_age {
            let n = control.pages as usize;
            if let Some(k) = kernel.as_mut() {
                let cap = (cfg.controller.max_step_pct / 100.0 * pages as f64) as u64;
                match psi_pct {
                    Some(p) => {
                        // Senpai: probe by the cap scaled by the headroom under the target,
                        // back off by the overshoot (at most 4 caps).
                        let step = cap as f64 * r.elapsed.as_secs_f64()
                            / cfg.controller.step_period.as_secs_f64().max(1e-3);
                        let x = p / cfg.psi_target_pct;
                        if x < 1.0 {
                            k.step((step * (1.0 - x)) as u64, false, cap)?;
                        } else {
                            k.step((step * (x - 1.0).min(4.0)) as u64, true, cap)?;
                        }
                    }
                    None => k.step(control.pages, control.error < 0.0, cap)?,
                }
                reclaimed = detector.step()?.evicted.count();
            } else if n > 0 {
                let victims: Vec<u64> = match cfg.policy {
                    PolicyKind::Random => random.select(n, detector.resident()),
                    PolicyKind::Fifo => fifo.select(n, detector.resident()),
                    _ => {
                        // Guided uffd-minor watches only the oldest generations: evict only
                        // pages it watched untouched through the last interval (still armed
                        // after the harvest), whatever merges and emptied generations did to
                        // the window since it armed them.
                        let watched = session
                            .guide()
                            .map(|g| g.watched_idle(ENGINE_ALL_IDLE_INTERVALS));
                        let oldest_gens = match session.guide() {
                            Some(_) => ENGINE_ALL_ARM_GENS,
                            None => cfg.gens - 1,
                        };
                        let scope = EvictionScope {
                            oldest_gens: oldest_gens.max(1),
                        };
                        let e = session.engine_mut().expect("engine policy");
                        e.eviction_candidates(scope)
                            .filter(|c| watched.as_ref().is_none_or(|w| w.contains(c.page.index)))
                            .take(n)
                            .map(|c| c.page.index)
                            .collect()
                    }
                };
                if !victims.is_empty() {
                    let rc = reclaimer.as_mut().expect("reclaiming policy");
                    let a = rc.apply(&victims)?;
                    rep.madvise_calls += a.madvise_calls;
                    let gone = detector.confirm(&victims)?;
                    reclaimed = gone.len() as u64;
                    if let Some(e) = session.engine_mut() {
                        e.mark_reclaimed(gone.iter().copied())?;
                    }
                }
            }
        }
        let c3 = thread_cpu_ns();
        rep.reclaim_cpu_ns += (c1 - c0) + (c3 - c2);
        if session.guide_mut().is_some() {
            // Read budget: admission follows the last epoch's faults and blocked time.
            session.observe_epoch(&r);
            // After reclaim: the armed set is the oldest generations' resident pages.
            session.arm()?;
            rep.aging_cpu_ns += thread_cpu_ns() - c3;
        }
        rep.refaults += refaults;
        rep.reclaimed += reclaimed;
        rep.intervals.push(IntervalRecord {
            t: session.elapsed().as_secs_f64(),
            ops: r.total_ops(),
            wall_us: r.elapsed.as_micros() as u64,
            vcpu_cpu_us: r.vcpu_cpu.iter().sum::<Duration>().as_micros() as u64,
            runq_wait_us: r.vcpu_runq_wait.iter().sum::<Duration>().as_micros() as u64,
            resident: detector.resident().count(),
            refaults,
            reclaimed,
            control,
            psi_pct,
        });
        let resident = detector.resident().count();
        session.show_progress(|| {
            format!(
                "resident {:.1} MiB, reclaimed {} pages, refaults {}",
                (resident * PAGE_SIZE) as f64 / f64::from(1 << 20),
                rep.reclaimed,
                rep.refaults
            )
        });
    }
    // Final accounting before verify reads every page back in.
    let last = detector.step()?;
    rep.refaults += last.refaulted.count();
    rep.rss_end = detector.resident().count() * PAGE_SIZE;
    rep.swap_used = SwapStatus::read()?.used_kib().saturating_sub(swap0) * 1024;
    rep.zram_mem = zram
        .as_ref()
        .and_then(|z| z.mm_stat().ok())
        .map_or(0, |m| m.mem_used_total.saturating_sub(zram0.mem_used_total));
    rep.saved = rep
        .rss_start
        .saturating_sub(rep.rss_end)
        .saturating_sub(rep.zram_mem);
    let end = epochs.last().map_or_else(Instant::now, |e| e.1);
    let mut ws = PageSet::new(pages);
    for &(k, at) in epochs.iter().rev() {
        if end.duration_since(at) > cfg.cold_window {
            break;
        }
        if let Some(t) = session.workload_mut().ground_truth(k) {
            ws.union_with(&t.read);
            ws.union_with(&t.written);
        }
    }
    let out = detector.out();
    rep.ws_pages = ws.count();
    let mut ws_out = ws.clone();
    ws_out.intersect_with(out);
    rep.ws_reclaimed = ws_out.count();
    let mut cold = PageSet::full(pages);
    cold.subtract(&ws);
    rep.cold_pages = cold.count();
    cold.intersect_with(out);
    rep.cold_reclaimed = cold.count();
    rep.guest_secs = guest.as_secs_f64();
    rep.measured_secs = measured.as_secs_f64();
    rep.vcpu_cpu_secs = vcpu_cpu.as_secs_f64();
    rep.ops_per_cpu_sec = median(&mut per_cpu);
    rep.ops_per_wall_sec = rep.ops_measured as f64 / rep.measured_secs.max(1e-9);
    rep.vcpu_eff_secs = eff.as_secs_f64();
    rep.ops_per_eff_sec = median(&mut per_eff);
    if pressure.is_some() {
        rep.psi_some_pct = Some(psi_stall_us as f64 / (rep.measured_secs * 1e6).max(1.0) * 100.0);
    }
    if let Some(k) = kdamond.as_ref() {
        let cpu = k
            .pid()
            .and_then(proc_cpu_ns)
            .zip(kdamond_cpu0)
            .map_or(0, |(b, a)| b.saturating_sub(a));
        rep.reclaim_cpu_ns += cpu;
        rep.damon = Some(DamonRunInfo {
            stats: k.scheme_stats()?,
            auto_tuned: k.goal_applied(),
            effective_quota_bytes: k.effective_quota_bytes(),
            kdamond_cpu_ns: cpu,
        });
    }
    // DAMON off before verify reads every page back (and before the VM goes).
    drop(kdamond);
    // So is a lasting memcg limit: verify reads the whole guest back, and through a limit below
    // its size the vCPU's swap-ins thrash until the memcg's OOM killer may end the VMM (seen).
    if let Some(k) = kernel.as_mut() {
        k.lift_limit()?;
    }
    rep.ops_per_sec = rep.ops as f64 / rep.guest_secs.max(1e-9);
    let minutes = session.elapsed().as_secs_f64() / 60.0;
    rep.refault_pct_ws_min = rep.refaults as f64 / (rep.ws_pages.max(1) as f64) / minutes * 100.0;
    if let Some(e) = session.engine() {
        rep.sources = e
            .sources()
            .map(|s| match &s.reason {
                None => s.name.clone(),
                Some(r) => format!("{} (unavailable: {r})", s.name),
            })
            .collect();
    }
    rep.uffd_faults = session.guide().map(|g| g.stats().faults - faults0);
    let (mut wl, engine, _guide) = session.finish();
    let v = wl.verify()?;
    rep.verify_mismatches = v.mismatches;
    if v.mismatches > 0 {
        return Err(ReclaimRunError::Integrity {
            policy: cfg.policy,
            mismatches: v.mismatches,
            words: v.words,
            first: v.first_bad,
        });
    }
    let vm = wl.finish()?;
    // Drop the engine (its sources hold VM resources) before the VM, then the memcg.
    drop(engine);
    drop(vm);
    drop(kernel.take());
    Ok(rep)
}
