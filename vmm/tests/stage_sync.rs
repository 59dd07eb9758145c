//! Stage synchronisation on real /dev/kvm (`Vm::sync_all` and friends): every vCPU's SYNC
//! arguments come back indexed by vCPU, and anything but the awaited SYNC — another stage, a
//! guest assertion — ends the wait with an error that says what happened.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_guest::{guest_assert_eq, ucall};
use agelab_vmm::testing::skip;
use agelab_vmm::{Vm, VmConfig, VmError};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A VM with `vcpus` vCPUs, or `None` (with a visible skip) on a host without KVM.
fn new_vm(test: &str, vcpus: usize) -> Option<Vm> {
    if let Err(e) = agelab_vmm::vm::open_kvm() {
        skip(test, &e.to_string());
        return None;
    }
    Some(
        Vm::new(VmConfig {
            vcpus,
            mem_bytes: 4 << 20,
            ..Default::default()
        })
        .unwrap(),
    )
}

/// SYNC(1, id), then SYNC(2, id + reply), then DONE.
extern "C" fn guest_two_stages(id: u64, _: u64) -> ! {
    let r = ucall::sync(1, &[id]);
    ucall::sync(2, &[id.wrapping_add(r)]);
    ucall::done()
}

#[test]
fn sync_all_returns_every_vcpus_arguments_by_index() {
    let Some(mut vm) = new_vm("sync_all_returns_every_vcpus_arguments_by_index", 3) else {
        return;
    };
    vm.start(guest_two_stages as *const () as usize, |i| [i as u64, 0])
        .unwrap();
    let first: Vec<u64> = vm
        .wait_sync_all(1, WAIT)
        .unwrap()
        .iter()
        .map(|a| a[0])
        .collect();
    assert_eq!(first, [0, 1, 2]);
    let second: Vec<u64> = vm
        .sync_all(2, 10, WAIT)
        .unwrap()
        .iter()
        .map(|a| a[0])
        .collect();
    assert_eq!(second, [10, 11, 12]);
    vm.finish_all(0, WAIT).unwrap();
}

/// SYNC(2) where the host waits for SYNC(1).
extern "C" fn guest_wrong_stage(_: u64, _: u64) -> ! {
    ucall::sync(2, &[]);
    ucall::done()
}

extern "C" fn guest_asserts(a: u64, _: u64) -> ! {
    guest_assert_eq!(a, 5u64);
    ucall::done()
}

/// Starts a one-vCPU guest at `entry` with first argument `arg`, waits for SYNC(1) and returns
/// the VM with the error the wait ended in.
fn wait_error(entry: usize, arg: u64) -> Option<(Vm, VmError)> {
    let mut vm = new_vm("another_stage_or_an_assertion_ends_the_wait", 1)?;
    vm.start(entry, |_| [arg, 0]).unwrap();
    let e = vm.wait_sync_all(1, WAIT).unwrap_err();
    Some((vm, e))
}

#[test]
fn another_stage_or_an_assertion_ends_the_wait_with_what_happened() {
    let Some((vm, e)) = wait_error(guest_wrong_stage as *const () as usize, 0) else {
        return;
    };
    assert!(
        matches!(e, VmError::UnexpectedEvent { stage: 1, .. })
            && e.to_string().contains("SYNC(0x2)"),
        "{e}"
    );
    vm.finish_all(0, WAIT).unwrap();

    let Some((_, e)) = wait_error(guest_asserts as *const () as usize, 4) else {
        return;
    };
    assert!(
        e.to_string().contains("guest assertion failed") && e.to_string().contains("0x4 != 0x5"),
        "{e}"
    );
}
