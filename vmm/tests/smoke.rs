//! Smallest end-to-end check: a CPL3 guest computes a value and reports it by ucall.

use agelab_guest::ucall;
use agelab_vmm::{VcpuEvent, Vm, VmConfig};
use std::time::Duration;

extern "C" fn guest_sum(n: u64, k: u64) -> ! {
    let mut s = 0u64;
    let mut i = 0u64;
    while i < n {
        s = s.wrapping_add(i.wrapping_mul(k));
        i = i.wrapping_add(1);
    }
    ucall::sync(1, &[s]);
    agelab_guest::guest_printf!("sum {} done", s);
    ucall::done()
}

#[test]
fn guest_computes_and_reports() {
    let mut vm = Vm::new(VmConfig::default()).unwrap();
    vm.start(guest_sum as *const () as usize, |_| [1000, 3])
        .unwrap();
    let mut seen = Vec::new();
    loop {
        match vm.next_event(Duration::from_secs(10)).unwrap() {
            VcpuEvent::Sync { vcpu, stage, args } => {
                seen.push(format!("sync {stage} {}", args[0]));
                vm.resume(vcpu, 0).unwrap();
            }
            VcpuEvent::Printf { text, .. } => seen.push(text),
            VcpuEvent::Done { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["sync 1 1498500", "sum 1498500 done"]);
}
