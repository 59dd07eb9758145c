//! Host-side aging agents (anything that clears or harvests guest access information) and what
//! running one costs the guest: vCPU ns per access while the agent loops versus while it rests.

use super::lru_gen::MemcgAging;
use super::page_idle::IdleMarker;
use agelab_mglru::kernel::page_idle::PageIdleError;
use agelab_mglru::lru_gen_aging::LruGenAgingError;
use agelab_mglru::sources::{BuildOptions, CatalogError, SourceKind};
use agelab_mglru::{AccessSource, HarvestError, Unavailable};
use agelab_vmm::memstress::{Access, GuestCmd, Memstress, MemstressError};
use agelab_vmm::GuestPageMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why an agent's pass or an observer's arming or observation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// lru_gen aging of the memcg failed.
    #[error(transparent)]
    LruGen(#[from] LruGenAgingError),
    /// Marking or reading the page_idle bitmap failed.
    #[error(transparent)]
    PageIdle(#[from] PageIdleError),
    /// A source's harvest failed.
    #[error(transparent)]
    Harvest(#[from] HarvestError),
}

/// Why [`agelab_source`] cannot give a source.
#[derive(Debug, thiserror::Error)]
pub enum AgelabSourceError {
    /// The name is not a source.
    #[error(transparent)]
    Unknown(#[from] CatalogError),
    /// The name is the oracle, which is fed, not built.
    #[error("{name} is the ground truth, not a source to build")]
    GroundTruth {
        /// The name given.
        name: String,
    },
    /// The source cannot run on this host.
    #[error("{0}")]
    Unavailable(Unavailable),
}

/// One aging pass of some mechanism over the guest's memory.
pub trait AgingAgent: Send {
    /// Name for reports (`lru_gen`, `page_idle`, `kvm-clear-log`, ...).
    fn name(&self) -> &str;
    /// Runs one pass (an aging command, an idle marking, a harvest).
    fn pass(&mut self) -> Result<(), AgentError>;
}

/// Forced lru_gen aging of the test memcg.
#[derive(Debug)]
pub struct LruGenAgent<'a>(pub &'a MemcgAging);

impl AgingAgent for LruGenAgent<'_> {
    fn name(&self) -> &str {
        "lru_gen"
    }
    fn pass(&mut self) -> Result<(), AgentError> {
        self.0.age()?;
        Ok(())
    }
}

/// Marks every present guest page idle through the page_idle bitmap.
#[derive(Debug)]
pub struct PageIdleAgent {
    /// Open files.
    pub marker: IdleMarker,
    /// The guest pages.
    pub map: GuestPageMap,
}

impl AgingAgent for PageIdleAgent {
    fn name(&self) -> &str {
        SourceKind::PageIdle.name()
    }
    fn pass(&mut self) -> Result<(), AgentError> {
        Ok(self.marker.mark_map(&self.map)?)
    }
}

/// Harvests an access source (each harvest re-arms it: write-protects, zaps, clears).
pub struct SourceAgent(pub Box<dyn AccessSource>);

impl std::fmt::Debug for SourceAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SourceAgent").field(&self.0.name()).finish()
    }
}

impl AgingAgent for SourceAgent {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn pass(&mut self) -> Result<(), AgentError> {
        self.0.harvest()?;
        Ok(())
    }
}

/// Guest cost of an agent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Slowdown {
    /// vCPU ns per access with the agent resting.
    pub idle_ns: f64,
    /// vCPU ns per access with the agent looping.
    pub aging_ns: f64,
    /// Passes the agent completed while measured.
    pub passes: u64,
    /// Mean time per pass (ms).
    pub pass_ms: f64,
}

impl Slowdown {
    /// aging / idle.
    pub fn ratio(&self) -> f64 {
        if self.idle_ns > 0.0 {
            self.aging_ns / self.idle_ns
        } else {
            f64::NAN
        }
    }
}

/// Errors measuring a slowdown.
#[derive(Debug, thiserror::Error)]
pub enum SlowdownError {
    /// The guest failed.
    #[error(transparent)]
    Guest(#[from] MemstressError),
    /// The agent failed.
    #[error("{agent}: {err}")]
    Agent {
        /// Agent name.
        agent: String,
        /// What failed.
        #[source]
        err: AgentError,
    },
    /// The agent's thread panicked.
    #[error("{agent}: agent thread panicked")]
    AgentPanicked {
        /// Agent name.
        agent: String,
    },
}

/// How the guest cost of an agent is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowdownPlan {
    /// Length of each resting and each aging window.
    pub window: Duration,
    /// Windows of each kind, alternated (alternation spreads a shared host's noise over both).
    pub rounds: u32,
    /// One aging pass starts every `period` (a pass that takes longer is followed at once by
    /// the next): every source is compared at the same aging rate, not at its own top speed.
    pub period: Duration,
}

/// Measures ns per guest write with `agent` resting and with it aging every `plan.period`.
pub fn measure_slowdown(
    ms: &Memstress,
    agent: &mut dyn AgingAgent,
    plan: SlowdownPlan,
) -> Result<Slowdown, SlowdownError> {
    // One pass over the region per command: the SYNC exit is amortised over every page, and a
    // command whose pages all fault (write-protect, zap) stays short.
    let cmd = GuestCmd::sweep(Access::Write);
    let accesses_per_cmd = ms.pages_per_vcpu().max(1) as f64;
    let mut out = Slowdown::default();
    let (mut idle_t, mut idle_n, mut aging_t, mut aging_n) = (0.0, 0.0, 0.0, 0.0);
    let mut pass_time = Duration::ZERO;
    for _ in 0..plan.rounds.max(1) {
        // Unmeasured: re-fault whatever the previous aging window left protected or zapped.
        ms.run(cmd)?;
        let end = Instant::now() + plan.window;
        while Instant::now() < end {
            idle_t += ms.run(cmd)?.as_nanos() as f64;
            idle_n += accesses_per_cmd;
        }
        let stop = AtomicBool::new(false);
        let name = agent.name().to_string();
        std::thread::scope(|s| -> Result<(), SlowdownError> {
            let h = s.spawn(|| -> Result<(u64, Duration), AgentError> {
                let (mut n, mut busy) = (0u64, Duration::ZERO);
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(1)));
                        continue;
                    }
                    let t = Instant::now();
                    agent.pass()?;
                    busy += t.elapsed();
                    n += 1;
                    next += plan.period;
                    if next < Instant::now() {
                        next = Instant::now();
                    }
                }
                Ok((n, busy))
            });
            let end = Instant::now() + plan.window;
            let mut guest = Ok(());
            while Instant::now() < end {
                match ms.run(cmd) {
                    Ok(d) => {
                        aging_t += d.as_nanos() as f64;
                        aging_n += accesses_per_cmd;
                    }
                    Err(e) => {
                        guest = Err(e);
                        break;
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
            let (n, busy) = h
                .join()
                .map_err(|_| SlowdownError::AgentPanicked {
                    agent: name.clone(),
                })?
                .map_err(|err| SlowdownError::Agent {
                    agent: name.clone(),
                    err,
                })?;
            out.passes += n;
            pass_time += busy;
            Ok(guest?)
        })?;
    }
    out.idle_ns = idle_t / idle_n.max(1.0);
    out.aging_ns = aging_t / aging_n.max(1.0);
    out.pass_ms = if out.passes > 0 {
        pass_time.as_secs_f64() * 1e3 / out.passes as f64
    } else {
        f64::NAN
    };
    Ok(out)
}

/// agelab's own sources (and DAMON) by name, built on `vm` before its vCPUs start as
/// [`SourceKind::build`] builds them: `kvm-clear-log`, `kvm-dirty-log`, `uffd-minor` (needs memfd
/// backing), `damon-vaddr`, ... `Err` says why the source cannot run here (or that the name is not
/// a source).
pub fn agelab_source(
    name: &str,
    vm: &mut agelab_vmm::Vm,
) -> Result<Box<dyn AccessSource>, AgelabSourceError> {
    let kind: SourceKind = name.parse()?;
    let source = kind
        .build(vm, &BuildOptions::default())
        .ok_or_else(|| AgelabSourceError::GroundTruth {
            name: name.to_string(),
        })?
        .source;
    source.available().map_err(AgelabSourceError::Unavailable)?;
    Ok(source)
}

/// What an observer reports after a round.
#[derive(Clone, Debug)]
pub enum Observed {
    /// The guest pages reported accessed.
    Pages(agelab_vmm::PageSet),
    /// Only a count of pages reported accessed (lru_gen: pages in the youngest generation).
    Count(u64),
}

/// A source of per-round access information: arm, let the guest run, observe.
pub trait AccessObserver {
    /// Name for reports.
    fn name(&self) -> &str;
    /// Clears access information (marks idle, ages, harvests and discards).
    fn arm(&mut self) -> Result<(), AgentError>;
    /// What was accessed since [`AccessObserver::arm`].
    fn observe(&mut self) -> Result<Observed, AgentError>;
}

/// page_idle: arm marks every present page idle; observe reads the bitmap.
#[derive(Debug)]
pub struct PageIdleObserver {
    /// Open files.
    pub marker: IdleMarker,
    /// The guest pages.
    pub map: GuestPageMap,
}

impl AccessObserver for PageIdleObserver {
    fn name(&self) -> &str {
        SourceKind::PageIdle.name()
    }
    fn arm(&mut self) -> Result<(), AgentError> {
        Ok(self.marker.mark_map(&self.map)?)
    }
    fn observe(&mut self) -> Result<Observed, AgentError> {
        let idle = self.marker.read_map(&self.map)?;
        let mut set = agelab_vmm::PageSet::new(self.map.len());
        for (i, s) in idle.iter().enumerate() {
            if *s == Some(false) {
                set.insert(i as u64);
            }
        }
        Ok(Observed::Pages(set))
    }
}

/// lru_gen: arm ages; observe ages again and counts the pages that pass found young.
#[derive(Debug)]
pub struct LruGenObserver<'a>(pub &'a MemcgAging);

impl AccessObserver for LruGenObserver<'_> {
    fn name(&self) -> &str {
        "lru_gen"
    }
    fn arm(&mut self) -> Result<(), AgentError> {
        self.0.age()?;
        Ok(())
    }
    fn observe(&mut self) -> Result<Observed, AgentError> {
        let (g, _) = self.0.age()?;
        Ok(Observed::Count(g.found_young()))
    }
}

/// Any access source: arm harvests and discards; observe harvests.
pub struct SourceObserver(pub Box<dyn AccessSource>);

impl std::fmt::Debug for SourceObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SourceObserver")
            .field(&self.0.name())
            .finish()
    }
}

impl AccessObserver for SourceObserver {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn arm(&mut self) -> Result<(), AgentError> {
        self.0.harvest()?;
        Ok(())
    }
    fn observe(&mut self) -> Result<Observed, AgentError> {
        Ok(Observed::Pages(self.0.harvest()?.accessed))
    }
}
