//! Guest workloads on real /dev/kvm: epochs, ground truth, data integrity.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_vmm::workload::{Workload, WorkloadSpec};
use agelab_vmm::{Vm, VmConfig};
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};

fn workload(spec: &str, mem: u64, vcpus: usize) -> Workload {
    let spec: WorkloadSpec = spec.parse().unwrap();
    let cfg = VmConfig {
        vcpus,
        mem_bytes: mem,
        heap_bytes: agelab_vmm::workload::heap_bytes(&spec, mem),
        ..Default::default()
    };
    Workload::start(Vm::new(cfg).unwrap(), spec).unwrap()
}

#[test]
fn counted_epoch_truth_matches_pattern() {
    let mut w = workload("hotcold:hot=10%,p=100%,op=write,ops=20000", 16 << 20, 2);
    let r = w.run_epoch(Duration::from_secs(1)).unwrap();
    assert_eq!(r.ops, vec![20000, 20000]);
    let t = w.ground_truth(r.epoch).unwrap();
    // p=100%: only the hot 10% of each vCPU's partition (2048 pages each → 205 hot) is written.
    assert!(t.read.is_empty());
    let per = 2048;
    for p in t.written.iter() {
        assert!(p % per < 205, "cold page {p} written");
    }
    assert_eq!(t.written.count(), 410);
    w.finish().unwrap();
}

/// The epoch runs over memory the guest has already faulted in (`fill`): on a host where a guest
/// first touch costs ~33 µs (kvm_pvm, 6.18.44-fc-v1300; `agelab host-profile`), the 2048 first
/// touches alone took ~68 ms of the vCPU's CPU, and under a load of 4 the 200 ms epoch ran only
/// 7168 reads. What this test checks is the epoch's throughput report and its ground truth,
/// not the host's fault cost, which the host profile measures.
#[test]
fn timed_epoch_reports_throughput() {
    let mut w = workload("uniform-read", 8 << 20, 1);
    w.fill().unwrap();
    let r = w.run_epoch(Duration::from_millis(200)).unwrap();
    assert!(r.ops[0] > 10_000, "ops {}", r.ops[0]);
    assert!(r.ns_per_access(0) > 0.0);
    let t = w.ground_truth(r.epoch).unwrap();
    assert_eq!(
        t.read.count(),
        2048,
        "uniform reads cover 8 MiB after so many ops"
    );
    assert!(t.written.is_empty());
}

#[test]
fn verify_detects_host_corruption() {
    let mut w = workload("uniform:ops=5000", 8 << 20, 2);
    w.fill().unwrap();
    w.run_epoch(Duration::from_secs(1)).unwrap();
    let ok = w.verify().unwrap();
    assert_eq!(ok.mismatches, 0, "{ok:?}");
    assert_eq!(ok.words, 2048 * 512);
    // Corrupt one word of page 100 from the host.
    let gpa = agelab_guest::abi::TEST_BASE + 100 * 4096 + 8 * 7;
    w.vm()
        .memory()
        .write_obj(0xdead_beef_u64, GuestAddress(gpa))
        .unwrap();
    let bad = w.verify().unwrap();
    assert_eq!(bad.mismatches, 1);
    assert_eq!(bad.first_bad, vec![gpa]);
}
