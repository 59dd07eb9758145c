//! uffd-wp on real /dev/kvm with real guests: KVM's writes through its secondary mappings are
//! caught exactly (recall and precision 100% against the written ground truth), in async
//! (PAGEMAP_SCAN) and sync (fault thread) mode, on anonymous and shmem memory; data intact.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_mglru::sources::uffd_wp::{UffdWpMode, UffdWpSource};
use agelab_mglru::AccessSource;
use agelab_vmm::workload::{Workload, WorkloadSpec};
use agelab_vmm::{Backing, Vm, VmConfig};
use std::time::Duration;

fn workload(spec: &str, backing: Backing) -> Workload {
    let spec: WorkloadSpec = spec.parse().unwrap();
    let mem = 16 << 20;
    let cfg = VmConfig {
        vcpus: 2,
        mem_bytes: mem,
        backing,
        heap_bytes: agelab_vmm::workload::heap_bytes(&spec, mem),
        ..Default::default()
    };
    Workload::start(Vm::new(cfg).unwrap(), spec).unwrap()
}

fn exact_writes(spec: &str, backing: Backing, mode: UffdWpMode) {
    let label = format!("{spec} on {backing} ({})", mode.as_str());
    let mut w = workload(spec, backing);
    w.fill().unwrap();
    let mut src = UffdWpSource::new(w.vm().page_map(), mode).unwrap();
    assert_eq!(src.mode(), mode, "{label}");
    for _ in 0..3 {
        let r = w.run_epoch(Duration::from_secs(5)).unwrap();
        let h = src.harvest().unwrap();
        let t = w.ground_truth(r.epoch).unwrap();
        let c = h.accessed.confusion(&t.written);
        assert!(
            c.false_pos == 0 && c.false_neg == 0,
            "{label}: epoch {}: {} written, {} read-only, {} reported: {c:?}",
            r.epoch,
            t.written.count(),
            t.read.count(),
            h.accessed.count()
        );
    }
    // A verify epoch reads everything and writes nothing.
    let v = w.verify().unwrap();
    assert_eq!(v.mismatches, 0, "{label}: {v:?}");
    assert!(
        src.harvest().unwrap().accessed.is_empty(),
        "{label}: reads reported as writes"
    );
    let s = src.stats();
    if mode == UffdWpMode::Sync {
        assert!(s.fault.faults > 0 && s.fault.errors == 0, "{label}: {s:?}");
    }
    drop(src);
    w.finish().unwrap();
}

#[test]
fn async_anon_mixed() {
    exact_writes(
        "zipf:op=mix,write=30%,ops=3000",
        Backing::Anon,
        UffdWpMode::Async,
    );
}

#[test]
fn async_memfd_write_only() {
    exact_writes(
        "hotcold-write:hot=20%,p=50%,ops=1500",
        Backing::Memfd,
        UffdWpMode::Async,
    );
}

#[test]
fn sync_anon_mixed() {
    exact_writes(
        "uniform:op=mix,write=40%,ops=1500",
        Backing::Anon,
        UffdWpMode::Sync,
    );
}

#[test]
fn sync_memfd_mixed() {
    exact_writes(
        "zipf:op=mix,write=30%,ops=3000",
        Backing::Memfd,
        UffdWpMode::Sync,
    );
}

#[test]
fn read_only_guest_reports_nothing() {
    let mut w = workload("uniform-read:ops=2000", Backing::Anon);
    w.fill().unwrap();
    let mut src = UffdWpSource::new(w.vm().page_map(), UffdWpMode::Auto).unwrap();
    w.run_epoch(Duration::from_secs(5)).unwrap();
    assert!(src.harvest().unwrap().accessed.is_empty());
    drop(src);
    w.finish().unwrap();
}
