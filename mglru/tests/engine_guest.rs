//! The engine end to end with a real guest: on a hot/cold write workload aged through KVM's dirty
//! log, hot pages sit in the youngest generation and cold pages in the oldest, agreeing with the
//! ground truth for ≥ 99% of pages; and the dirty-log engine agrees page for page with an engine
//! fed the ground truth itself.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_mglru::sources::{catalog, SourceKind};
use agelab_mglru::{Engine, EngineConfig, OracleSource, PassTruth};
use agelab_vmm::workload::{Workload, WorkloadSpec};
use agelab_vmm::{Vm, VmConfig};
use std::time::Duration;

#[test]
fn hot_pages_young_cold_pages_old_through_the_dirty_log() {
    let spec: WorkloadSpec = "hotcold:hot=10%,p=100%,op=write".parse().unwrap();
    let mut vm = Vm::new(VmConfig {
        vcpus: 2,
        mem_bytes: 32 << 20,
        ..Default::default()
    })
    .unwrap();
    let map = vm.page_map().clone();
    let pages = map.len();
    let mut dirty = Engine::new(map.clone(), EngineConfig::default()).unwrap();
    for s in catalog::build(&[SourceKind::KvmClearLog], &mut vm) {
        dirty.add_source(s);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let mut oracle = Engine::new(map, EngineConfig::default()).unwrap();
    oracle.add_source(Box::new(OracleSource::from_channel(pages, rx)));

    let mut wl = Workload::start(vm, spec).unwrap();
    wl.fill().unwrap(); // every page written once: the cold ones must then age out
    let fill_truth = wl.ground_truth(wl.epoch()).unwrap();
    let mut pending = PassTruth {
        read: fill_truth.read.clone(),
        written: fill_truth.written.clone(),
    };
    for _ in 0..6 {
        let r = wl.run_epoch(Duration::from_millis(100)).unwrap();
        let t = wl.ground_truth(r.epoch).unwrap();
        pending.read.union_with(&t.read);
        pending.written.union_with(&t.written);
        tx.send(pending.accessed()).unwrap();
        let pass = dirty.run_pass_split(&pending).unwrap();
        oracle.run_pass_split(&pending).unwrap();
        let c = pass.sources[0].confusion.unwrap();
        assert_eq!(
            (c.false_pos, c.false_neg),
            (0, 0),
            "dirty log vs written truth: {c:?}"
        );
        pending = PassTruth {
            read: agelab_vmm::PageSet::new(pages),
            written: agelab_vmm::PageSet::new(pages),
        };
    }
    let gens = dirty.generations();
    let (min, max) = (gens.min_seq(), gens.max_seq());
    // Hot units: the first 10% of each vCPU's partition (2 partitions of 4096 pages).
    let (mut agree, mut total) = (0u64, 0u64);
    for p in 0..pages {
        let hot = p % 4096 < 410;
        let seq = gens.seq_of(p).expect("resident page");
        agree += u64::from(if hot { seq == max } else { seq == min });
        total += 1;
        assert_eq!(
            Some(seq),
            oracle.generations().seq_of(p),
            "page {p}: dirty-log engine vs oracle engine"
        );
    }
    assert!(
        agree * 100 >= total * 99,
        "only {agree} of {total} pages where the ground truth puts them"
    );
    wl.finish().unwrap();
}

/// Issue 3's check: for write epochs the ground-truth written set equals KVM's dirty log for
/// that epoch, page for page, for every pattern (and for mixed epochs, the written part).
#[test]
fn written_truth_equals_dirty_log_for_every_pattern() {
    for spec in [
        "seq-write:ops=3000",
        "uniform:op=write",
        "zipf:s=0.99,op=write",
        "hotcold:hot=10%,p=90%,op=write",
        "phase:ws=10%,every=5000,op=write",
        "strided:stride=7,op=write",
        "uniform:op=mix,write=30%",
        "uniform:op=write,gran=2m,share=shared",
    ] {
        let spec: WorkloadSpec = spec.parse().unwrap();
        let mem = 16 << 20;
        let cfg = VmConfig {
            vcpus: 2,
            mem_bytes: mem,
            slots: 2,
            heap_bytes: agelab_vmm::workload::heap_bytes(&spec, mem),
            ..Default::default()
        };
        let mut vm = Vm::new(cfg).unwrap();
        let mut src = catalog::build(&[SourceKind::KvmClearLog], &mut vm)
            .pop()
            .unwrap();
        let mut wl = Workload::start(vm, spec.clone()).unwrap();
        for _ in 0..3 {
            let r = wl.run_epoch(Duration::from_millis(30)).unwrap();
            let t = wl.ground_truth(r.epoch).unwrap();
            let h = src.harvest().unwrap();
            let c = h.accessed.confusion(&t.written);
            assert_eq!(
                (c.false_pos, c.false_neg),
                (0, 0),
                "{spec}: epoch {}: {c:?}",
                r.epoch
            );
        }
        wl.finish().unwrap();
    }
}
