//! Startup self-check of access sources against a guest whose accesses are known by construction.
//!
//! A one-vCPU memstress guest (`agelab_vmm::memstress`, the selftests' toucher too) first writes
//! every page of its test memory (so every page is resident and
//! mapped by KVM), then, for every source in turn and for every [`Kind`], the source is armed
//! (harvested once), the guest reads and/or writes known page ranges, and the source is harvested
//! again and judged: precision (reported pages that were accessed in a way the source can see) and
//! recall, overall and on the read set and the write set separately.
//!
//! Sources are measured one at a time because several of them clear the same young bits (page_idle
//! marking, DAMON's mkold, the KVM notifiers behind both): run together they would steal each
//! other's accesses and the numbers would say nothing about any one of them.
//!
//! Layout of `P` test pages: read set `[0, P/4)`, write set `[P/4, P/2)`, the rest untouched (the
//! pool false positives come from).

pub mod interference;
pub mod report;

pub use report::Interference;
pub use report::{AccuracyError, AccuracyGate, KindResult, SelfcheckReport, SourceResult};

use crate::kernel::damon::DamonAttrs;
use crate::source::{AccessSource, HarvestError, Observes};
use crate::sources::catalog::{self, BuildOptions, SourceKind};
use agelab_vmm::memstress::{Memstress, MemstressError};
use agelab_vmm::{Backing, PageSet, Vm, VmConfig, VmError};
use std::time::{Duration, Instant};

/// Which accesses the guest makes in one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Reads of the read set only.
    Read,
    /// Writes of the write set only.
    Write,
    /// Reads of the read set and writes of the write set.
    Mixed,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 3] = [Kind::Read, Kind::Write, Kind::Mixed];

    /// Short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Mixed => "mixed",
        }
    }
}

/// Errors of the self-check itself (a source failing is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum SelfcheckError {
    /// The self-check VM could not be created.
    #[error("self-check VM: {0}")]
    Vm(#[from] VmError),
    /// The self-check guest failed.
    #[error(transparent)]
    Guest(#[from] MemstressError),
    /// The negative control's disturbance could not be made.
    #[error("self-check control (invalidating KVM's mappings): {0}")]
    Control(#[source] std::io::Error),
    /// Too little memory for the layout.
    #[error("self-check needs at least 16 pages of test memory, got {0}")]
    TooSmall(u64),
}

/// What to check.
#[derive(Clone, Debug)]
pub struct SelfcheckOptions {
    /// Test memory of the self-check VM.
    pub mem_bytes: u64,
    /// Its backing (the run's, so the sources see the same kind of memory).
    pub backing: Backing,
    /// Sources to measure; `oracle` is ignored.
    pub sources: Vec<SourceKind>,
    /// Kinds to measure.
    pub kinds: Vec<Kind>,
    /// How long the guest keeps touching for sampling sources (DAMON), harvest at 3/4 of it.
    pub sampling_window: Duration,
    /// A disturbance made on purpose in every measurement: the negative control of the checks
    /// that judge the self-check's figures.
    pub control: Option<Control>,
}

/// A disturbance the self-check can make on purpose between arming a source and the guest's
/// accesses, so that the checks built on its figures can be seen failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Invalidates KVM's mappings of the test memory (an `mprotect` read-only and back, an
    /// MMU-notifier invalidation of that range only), as a process-wide `clear_refs` write or a
    /// `fork` of a process with private guest memory does: every page the guest touches next
    /// re-faults in KVM.
    InvalidateMappings,
}

impl Default for SelfcheckOptions {
    fn default() -> Self {
        SelfcheckOptions {
            mem_bytes: 64 << 20,
            backing: Backing::Anon,
            sources: Vec::new(),
            kinds: Kind::ALL.to_vec(),
            sampling_window: Duration::from_secs(2),
            control: None,
        }
    }
}

/// The sources the self-check measures for a run's source list: `oracle` is the truth itself,
/// and `damon-paddr` joins `damon-vaddr` (both DAMON flavours are checked).
pub fn sources_for_run(kinds: &[SourceKind]) -> Vec<SourceKind> {
    let mut out: Vec<SourceKind> = kinds
        .iter()
        .copied()
        .filter(|k| *k != SourceKind::Oracle)
        .collect();
    if out.contains(&SourceKind::DamonVaddr) && !out.contains(&SourceKind::DamonPaddr) {
        out.push(SourceKind::DamonPaddr);
    }
    out
}

/// DAMON attributes for the self-check: fast sampling so a 2 s window holds many aggregations.
pub fn selfcheck_damon_attrs() -> DamonAttrs {
    DamonAttrs {
        sample_us: 1_000,
        aggr_us: 20_000,
        update_us: 100_000,
        min_nr_regions: 100,
        max_nr_regions: 4_000,
    }
}

/// How the self-check builds `kind`: as the run does ([`SourceKind::build`]), with DAMON sampling
/// faster so the window holds many aggregations. The same type, and for uffd-wp the same choice
/// of async or sync, as the run's.
pub fn build_source(kind: SourceKind, vm: &mut Vm) -> Option<Box<dyn AccessSource>> {
    let opts = BuildOptions {
        damon_attrs: selfcheck_damon_attrs(),
        ..Default::default()
    };
    kind.build(vm, &opts).map(|b| b.source)
}

/// The known sets of one kind.
fn sets(kind: Kind, pages: u64) -> (Pages, Pages) {
    let (q, h) = (pages / 4, pages / 2);
    match kind {
        Kind::Read => (0..q, q..q),
        Kind::Write => (q..q, q..h),
        Kind::Mixed => (0..q, q..h),
    }
}

/// A half-open range of dense guest page indices.
pub type Pages = std::ops::Range<u64>;

/// Rounds over the same sets until `d` has passed (at least one), calling `during` once after
/// `at` while the guest is between rounds; returns the rounds done.
fn rounds_for(
    g: &Memstress,
    read: &Pages,
    write: &Pages,
    d: Duration,
    at: Duration,
    mut during: impl FnMut(),
) -> Result<u64, MemstressError> {
    let t = Instant::now();
    let (mut n, mut called) = (0, false);
    while n == 0 || t.elapsed() < d {
        g.touch(read, write)?;
        n += 1;
        if !called && t.elapsed() >= at {
            during();
            called = true;
        }
    }
    if !called {
        during();
    }
    Ok(n)
}

fn set_of(r: &Pages, pages: u64) -> PageSet {
    let mut s = PageSet::new(pages);
    s.insert_range(r.start, r.end - r.start);
    s
}

/// A running self-check guest (every test page faulted in) and the sources built on it before
/// its vCPUs started (the KVM kinds and uffd-minor), in the order asked.
struct CheckGuest {
    g: Memstress,
    pages: u64,
    fault_in: Duration,
    before_start: Vec<(SourceKind, Box<dyn AccessSource>)>,
}

impl CheckGuest {
    fn start(opts: &SelfcheckOptions, names: &[SourceKind]) -> Result<Self, SelfcheckError> {
        let mut vm = Vm::new(VmConfig {
            vcpus: 1,
            mem_bytes: opts.mem_bytes,
            backing: opts.backing.clone(),
            slots: 1,
            dirty_ring_entries: catalog::wants_dirty_ring(names).then_some(4096),
            ..Default::default()
        })?;
        let pages = vm.page_map().len();
        if pages < 16 {
            return Err(SelfcheckError::TooSmall(pages));
        }
        let before_start = names
            .iter()
            .filter(|k| k.built_before_start())
            .filter_map(|&k| build_source(k, &mut vm).map(|s| (k, s)))
            .collect();
        let mut g = Memstress::with_vm(vm, false)?;
        g.start()?;
        // Fault everything in: every page resident, with a PFN and a KVM mapping.
        let t = Instant::now();
        g.touch(&(0..0), &(0..pages))?;
        Ok(CheckGuest {
            g,
            pages,
            fault_in: t.elapsed(),
            before_start,
        })
    }

    /// The source of `kind`: the one built before start, else built now.
    fn source(&mut self, kind: SourceKind) -> Option<Box<dyn AccessSource>> {
        match self.before_start.iter().position(|(k, _)| *k == kind) {
            Some(i) => Some(self.before_start.remove(i).1),
            None if kind.built_before_start() => None,
            None => build_source(kind, self.g.vm_mut()),
        }
    }
}

/// Why a built source is not judged, if it is not: it reports residency, or cannot run here.
fn not_judged(kind: SourceKind, source: Option<&dyn AccessSource>) -> Option<SourceResult> {
    let name = kind.name();
    let residency =
        || SourceResult::not_judged(name, Observes::Presence, "reports residency, not accesses");
    let Some(source) = source else {
        return Some(residency());
    };
    if source.observes() == Observes::Presence {
        return Some(residency());
    }
    source
        .available()
        .err()
        .map(|r| SourceResult::unavailable(name, source.observes(), &r.0))
}

/// Runs the self-check; a source that cannot run here is reported with its reason. Every
/// source is measured alone; where several can run, they are then measured together, as a run
/// arms them, and [`SelfcheckReport::interference`] lists where a source's figures change.
pub fn run(opts: &SelfcheckOptions) -> Result<SelfcheckReport, SelfcheckError> {
    let t0 = Instant::now();
    let names: Vec<SourceKind> = opts
        .sources
        .iter()
        .copied()
        .filter(|k| *k != SourceKind::Oracle)
        .collect();
    let mut guest = CheckGuest::start(opts, &names)?;
    let pages = guest.pages;
    let mut results = Vec::new();
    for &kind in &names {
        let source = guest.source(kind);
        if let Some(r) = not_judged(kind, source.as_deref()) {
            results.push(r);
            continue;
        }
        let mut source = source.expect("judged sources exist");
        let mut r = SourceResult::new(kind.name(), source.observes());
        for &k in &opts.kinds {
            let mut one: [(SourceKind, &mut dyn AccessSource); 1] = [(kind, source.as_mut())];
            r.kinds
                .extend(measure(&mut guest.g, &mut one, k, pages, opts)?);
        }
        results.push(r);
        // Dropping the source stops its kdamond / unregisters its uffd before the next one runs.
        drop(source);
    }
    let fault_in = guest.fault_in;
    drop(guest);
    let judged: Vec<SourceKind> = names
        .iter()
        .copied()
        .filter(|k| k.in_runs())
        .filter(|k| {
            results
                .iter()
                .any(|r| r.source == k.name() && r.available && !r.kinds.is_empty())
        })
        .collect();
    let interference = if judged.len() > 1 {
        Some(interference::find(opts, &judged, &results)?)
    } else {
        None
    };
    Ok(SelfcheckReport {
        mem_bytes: opts.mem_bytes,
        backing: opts.backing.to_string(),
        pages,
        read_set: pages / 4,
        write_set: pages / 2 - pages / 4,
        fault_in_ms: fault_in.as_secs_f64() * 1e3,
        total_ms: t0.elapsed().as_secs_f64() * 1e3,
        sources: results,
        interference,
    })
}

/// Measures `sources` together on one kind of access: each is armed (harvested), the guest
/// makes the kind's accesses, each is harvested and judged, in the order given (a run's order).
fn measure(
    g: &mut Memstress,
    sources: &mut [(SourceKind, &mut dyn AccessSource)],
    kind: Kind,
    pages: u64,
    opts: &SelfcheckOptions,
) -> Result<Vec<KindResult>, SelfcheckError> {
    let (read, write) = sets(kind, pages);
    let truth_read = set_of(&read, pages);
    let truth_write = set_of(&write, pages);
    // Arm: forget everything before this measurement.
    let mut armed: Vec<Result<(), HarvestError>> = sources
        .iter_mut()
        .map(|(_, s)| s.harvest().map(drop))
        .collect();
    if opts.control == Some(Control::InvalidateMappings) {
        invalidate_mappings(g.vm().page_map())?;
    }
    let faults_before = g.vm().kvm_faults_fixed();
    let mut harvests: Vec<Option<Result<crate::source::Harvest, HarvestError>>> =
        sources.iter().map(|_| None).collect();
    let mut harvest_all = |sources: &mut [(SourceKind, &mut dyn AccessSource)]| {
        for (i, (_, s)) in sources.iter_mut().enumerate() {
            if armed[i].is_ok() {
                harvests[i] = Some(s.harvest());
            }
        }
    };
    let rounds = if sources.iter().any(|(k, _)| k.samples_over_time()) {
        let w = opts.sampling_window;
        rounds_for(g, &read, &write, w, w * 3 / 4, || harvest_all(sources))?
    } else {
        g.touch(&read, &write)?;
        harvest_all(sources);
        1
    };
    let kvm_faults = faults_before
        .zip(g.vm().kvm_faults_fixed())
        .map(|(a, b)| b.saturating_sub(a));
    let mut out = Vec::with_capacity(sources.len());
    for (i, (source_kind, source)) in sources.iter().enumerate() {
        let judged = match (std::mem::replace(&mut armed[i], Ok(())), harvests[i].take()) {
            (Err(e), _) | (Ok(()), Some(Err(e))) => KindResult::failed(kind, e.to_string()),
            (Ok(()), None) => KindResult::failed(kind, "not harvested".into()),
            (Ok(()), Some(Ok(h))) => KindResult::judge(
                kind,
                source.observes(),
                &h,
                &truth_read,
                &truth_write,
                opts.mem_bytes,
                rounds,
                source.granularity(),
            )
            .with_kvm_faults(*source_kind, kvm_faults),
        };
        out.push(judged);
    }
    Ok(out)
}

/// [`Control::InvalidateMappings`]: `mprotect` every range read-only and back.
fn invalidate_mappings(map: &agelab_vmm::GuestPageMap) -> Result<(), SelfcheckError> {
    for r in map.ranges() {
        let len = (r.pages * agelab_vmm::PAGE_SIZE) as usize;
        for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
            // SAFETY: the range is the VM's own guest memory mapping, mapped read-write by the
            // VMM; it is made read-only only while the guest is stopped between rounds and made
            // read-write again at once, so no access sees the read-only protection.
            if unsafe { libc::mprotect(r.hva as *mut libc::c_void, len, prot) } != 0 {
                return Err(SelfcheckError::Control(std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}
