//! Engine-guided uffd-minor arming with real guests: arming only the oldest generations, a
//! read-only hot/cold guest ends with hot pages young and cold pages in the oldest generation
//! (≥ 99% agreement with the ground truth), the source is exact on what it armed, the guest
//! takes far fewer faults than with every page armed, and its data survives.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_mglru::sources::uffd_minor::{
    GuidedArming, GuidedStats, UffdMinorConfig, UffdMinorSource,
};
use agelab_mglru::{AccessSource, AgingPolicy, Engine, EngineConfig, PassTruth};
use agelab_vmm::workload::{Workload, WorkloadSpec};
use agelab_vmm::{Backing, PageSet, Vm, VmConfig};
use std::time::Duration;

const PASSES: usize = 16;
const GENS: usize = 8;

struct Outcome {
    /// Guest faults during the measured epochs (fill excluded).
    faults: u64,
    /// Pages where the ground truth puts them, of all pages.
    agree: u64,
    total: u64,
    hot: u64,
    cold: u64,
    guided: Option<GuidedStats>,
}

/// A memfd-backed VM of `mem` bytes and `vcpus` vCPUs for `spec`, or `None` (with the skip
/// printed for `what`) where uffd-minor cannot watch it.
fn memfd_vm(what: &str, spec: &WorkloadSpec, mem: u64, vcpus: usize) -> Option<Vm> {
    let vm = Vm::new(VmConfig {
        vcpus,
        mem_bytes: mem,
        backing: Backing::Memfd,
        heap_bytes: agelab_vmm::workload::heap_bytes(spec, mem),
        ..Default::default()
    })
    .unwrap();
    if let Err(why) = UffdMinorSource::supported(vm.page_map()) {
        agelab_vmm::testing::skip(what, &why.0);
        return None;
    }
    Some(vm)
}

fn run(guided: bool) -> Option<Outcome> {
    let spec: WorkloadSpec = "hotcold:hot=10%,p=100%,op=read".parse().unwrap();
    let vm = memfd_vm("uffd-minor guided arming", &spec, 32 << 20, 2)?;
    let map = vm.page_map().clone();
    let pages = map.len();
    let mut engine = Engine::new(
        map.clone(),
        EngineConfig {
            policy: AgingPolicy {
                max_gens: GENS,
                ..AgingPolicy::default()
            },
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let mut src = UffdMinorSource::new(&map, UffdMinorConfig::default()).unwrap();
    let faults = src.fault_count();
    let mut guide =
        guided.then(|| GuidedArming::new(src.guide(), 2, 0, 1).with_faults(faults.clone()));
    engine.add_source(Box::new(src));
    if let Some(g) = guide.as_mut() {
        // Every page starts in the youngest generation: nothing is old yet, nothing armed.
        let out = g.arm_from(engine.generations()).unwrap();
        assert_eq!(out.armed, 0);
    }
    let mut wl = Workload::start(vm, spec).unwrap();
    wl.fill().unwrap();
    let fill = wl.ground_truth(wl.epoch()).unwrap();
    let mut pending = PassTruth {
        read: fill.read.clone(),
        written: fill.written.clone(),
    };
    let f0 = faults.total();
    let mut ever = PageSet::new(pages);
    let mut recent = Vec::new();
    for pass in 0..PASSES {
        let r = wl.run_epoch(Duration::from_millis(100)).unwrap();
        let t = wl.ground_truth(r.epoch).unwrap();
        pending.read.union_with(&t.read);
        pending.written.union_with(&t.written);
        ever.union_with(&t.accessed());
        recent.push(t.accessed());
        let armed_before = guide.as_ref().map(|g| g.armer().armed());
        let p = engine.run_pass_split(&pending).unwrap();
        let c = p.sources[0].confusion.expect("judged");
        assert_eq!(
            (c.false_pos, c.false_neg),
            (0, 0),
            "pass {pass}: uffd-minor vs truth on the armed pages: {c:?}"
        );
        if let (Some(g), Some(before)) = (guide.as_mut(), armed_before) {
            // What was armed is exactly what was observed: reported pages lie inside it.
            assert!(p.sources[0].accessed <= before.count());
            g.arm_from(engine.generations()).unwrap();
        }
        pending = PassTruth {
            read: PageSet::new(pages),
            written: PageSet::new(pages),
        };
    }
    let faults_run = faults.total() - f0;
    let gens = engine.generations();
    let min = gens.min_seq();
    let mut hot = recent[recent.len() - 1].clone();
    hot.union_with(&recent[recent.len() - 2]);
    let (mut agree, mut nhot, mut ncold) = (0, 0, 0);
    for p in 0..pages {
        let seq = gens.seq_of(p).expect("resident");
        if hot.contains(p) {
            nhot += 1;
            // Young: never in the generation eviction takes first.
            agree += u64::from(seq > min);
        } else if !ever.contains(p) {
            ncold += 1;
            agree += u64::from(seq == min);
        } else {
            // Touched early, not lately (none with p=100%): old or young are both right.
            agree += 1;
        }
    }
    let v = wl.verify().unwrap();
    assert_eq!(v.mismatches, 0, "guided={guided}: {v:?}");
    let stats = guide.as_ref().map(GuidedArming::stats);
    drop(engine);
    drop(guide);
    wl.finish().unwrap();
    Some(Outcome {
        faults: faults_run,
        agree,
        total: pages,
        hot: nhot,
        cold: ncold,
        guided: stats,
    })
}

#[test]
fn oldest_generations_armed_age_hot_and_cold_right_with_far_fewer_faults() {
    let Some(all) = run(false) else { return };
    let oldest = run(true).expect("supported a moment ago");
    eprintln!(
        "arm all: {} faults in {PASSES} passes; arm oldest:2 of {GENS}: {} faults ({:?}); \
         agreement {}/{} (hot {}, cold {})",
        all.faults,
        oldest.faults,
        oldest.guided,
        oldest.agree,
        oldest.total,
        oldest.hot,
        oldest.cold
    );
    assert!(oldest.hot > 0 && oldest.cold > oldest.total / 2);
    for (name, o) in [("all", &all), ("oldest:2", &oldest)] {
        assert!(
            o.agree * 100 >= o.total * 99,
            "{name}: only {} of {} pages where the ground truth puts them",
            o.agree,
            o.total
        );
    }
    // Every hot page faults every pass when all are armed; guided, once per trip from the
    // youngest generation down to the armed ones (6 passes with 8 generations).
    assert!(
        oldest.faults * 3 <= all.faults,
        "guided arming took {} faults, arming all {}",
        oldest.faults,
        all.faults
    );
}

/// `arm_only` arms exactly the set asked for: the harvest's observed set is that set, its
/// accessed pages the truth inside it, and pages released from the set are mapped back in.
#[test]
fn arm_only_observes_exactly_the_set() {
    let spec: WorkloadSpec = "uniform-read:ops=4000".parse().unwrap();
    let Some(vm) = memfd_vm("uffd-minor arm_only", &spec, 8 << 20, 1) else {
        return;
    };
    let map = vm.page_map().clone();
    let pages = map.len();
    let mut src = UffdMinorSource::new(&map, UffdMinorConfig::default()).unwrap();
    let armer = src.guide();
    let mut wl = Workload::start(vm, spec).unwrap();
    wl.fill().unwrap();
    src.harvest().unwrap(); // the fill touched everything armed at creation
    let mut set = PageSet::new(pages);
    set.insert_range(0, pages / 2);
    let out = armer.arm_only(&set, |_| true).unwrap();
    assert_eq!(out.armed, pages / 2);
    for _ in 0..3 {
        let r = wl.run_epoch(Duration::from_millis(50)).unwrap();
        let truth = wl.ground_truth(r.epoch).unwrap().accessed();
        let h = src.harvest().unwrap();
        assert_eq!(h.observed.as_ref(), Some(&set), "observed = armed");
        let mut want = truth.clone();
        want.intersect_with(&set);
        assert_eq!(h.accessed, want, "exact on the armed pages");
        assert!(want.count() > 0 && truth.count() > want.count());
        // Swap halves: the untouched half leaves the set and is mapped back in.
        let mut next = PageSet::full(pages);
        next.subtract(&set);
        let out = armer.arm_only(&next, |_| true).unwrap();
        let mut untouched = set.clone();
        untouched.subtract(&h.accessed);
        assert_eq!(
            out.released,
            untouched.count(),
            "released the untouched half"
        );
        set = next;
    }
    let v = wl.verify().unwrap();
    assert_eq!(v.mismatches, 0, "{v:?}");
    drop(armer);
    drop(src);
    wl.finish().unwrap();
}
