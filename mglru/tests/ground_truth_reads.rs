//! Read sets of the ground truth, checked by an independent method: on fresh memfd (shmem)
//! memory, the guest's first read of a page makes KVM fault it in, so after one read-only epoch
//! the pages present in /proc/self/pagemap are exactly the pages the guest read.

use agelab_mglru::kernel::pagemap::Pagemap;
use agelab_vmm::workload::{Workload, WorkloadSpec};
use agelab_vmm::{Backing, PageSet, Vm, VmConfig};
use std::time::Duration;

fn check(spec: &str) {
    let spec: WorkloadSpec = spec.parse().unwrap();
    let mem = 16 << 20;
    let cfg = VmConfig {
        vcpus: 2,
        mem_bytes: mem,
        backing: Backing::Memfd,
        heap_bytes: agelab_vmm::workload::heap_bytes(&spec, mem),
        ..Default::default()
    };
    let mut wl = Workload::start(Vm::new(cfg).unwrap(), spec.clone()).unwrap();
    let r = wl.run_epoch(Duration::from_secs(5)).unwrap();
    let truth = wl.ground_truth(r.epoch).unwrap();
    let map = wl.vm().page_map().clone();
    let entries = Pagemap::open_self().unwrap().guest_entries(&map).unwrap();
    let mut present = PageSet::new(map.len());
    for (i, e) in entries.iter().enumerate() {
        if e.present() {
            present.insert(i as u64);
        }
    }
    assert!(truth.written.is_empty(), "{spec}: read-only workload wrote");
    assert!(!truth.read.is_empty());
    let c = present.confusion(&truth.read);
    assert_eq!(
        (c.false_pos, c.false_neg),
        (0, 0),
        "{spec}: pagemap-present vs replayed read set: {c:?}; present {present:?} truth {:?}",
        truth.read
    );
}

#[test]
fn replayed_read_sets_equal_pages_faulted_in() {
    for spec in [
        "hotcold:hot=10%,p=100%,op=read,ops=3000",
        "uniform:op=read,ops=1000",
        "zipf:s=1.2,op=read,ops=2000",
        "strided:stride=5,op=read,ops=300",
        "seq:op=read,ops=700",
        "phase:ws=5%,every=200,op=read,ops=1000",
        "uniform:op=read,gran=2m,ops=500",
    ] {
        check(spec);
    }
}
