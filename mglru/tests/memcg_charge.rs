//! Shared guest memory lands in the VM's memcg whoever maps it, on the host's real memory
//! controller (cgroup v1 or v2): the forked helper of `GuestMemcg::charge_shared` charges a whole
//! memfd to a memcg this test process never joins, while faulting the same kind of memfd in from
//! the test process itself (the helper bypassed) leaves that memcg near empty. A VM's memfd or
//! file-backed guest memory is charged whole the same way (`charge_vm_memory`, what
//! `agelab run` uses for the kernel's lru_gen view).
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_mglru::kernel::memcg::{GuestMemcg, MemcgError};
use agelab_mglru::lru_gen_aging::charge_vm_memory;
use agelab_mglru::testing::{memfd, reconcile_journal_at_start, SharedMapping};
use agelab_vmm::testing::skip;
use agelab_vmm::{Backing, Vm, VmConfig};
use std::fs::File;

const LEN: usize = 64 << 20;

/// Faults every page of `file` in from this process (outside the memcg): the bypass.
fn touch_here(file: &File, len: usize) {
    SharedMapping::read_only(file, len).touch_pages();
}

/// Bytes of `file` resident in the page cache, counted with `mincore` on a fresh mapping.
fn resident_bytes(file: &File, len: usize) -> usize {
    SharedMapping::read_only(file, len).resident_bytes()
}

/// How many bytes `cg`'s charge grew while `f` ran (0 if it shrank).
fn usage_growth(cg: &GuestMemcg, f: impl FnOnce()) -> u64 {
    let before = cg.usage_bytes().unwrap();
    f();
    cg.usage_bytes().unwrap().saturating_sub(before)
}

/// A new memcg `name` under this process's own, or `None` after a skip when not root or the
/// host has no memory controller.
fn memcg_or_skip(test: &str, name: &str) -> Option<GuestMemcg> {
    reconcile_journal_at_start();
    if !agelab_mglru::kernel::is_root() {
        skip(test, "creating memcgs needs root");
        return None;
    }
    match GuestMemcg::create(name) {
        Ok(cg) => Some(cg),
        Err(e @ MemcgError::NoMemoryController) => {
            skip(test, &e.to_string());
            None
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn helper_charges_a_memfd_to_a_memcg_the_caller_stays_outside() {
    const TEST: &str = "helper_charges_a_memfd_to_a_memcg_the_caller_stays_outside";
    let name = format!("agelab-charge-{}", std::process::id());
    // Removed on every exit path: on drop (also when an assertion below unwinds) and by
    // host_guard's signal/panic cleanup, which GuestMemcg registers.
    let Some(cg) = memcg_or_skip(TEST, &name) else {
        return;
    };
    let me = std::process::id() as i32;
    let dir = cg.dir().to_path_buf();

    // Through the helper: the whole memfd is charged to the memcg.
    let charged = memfd("agelab-charge-helper", LEN as u64);
    let grew = usage_growth(&cg, || cg.charge_shared(&charged, 0, LEN).unwrap());
    assert_eq!(resident_bytes(&charged, LEN), LEN, "every page faulted in");
    assert!(
        grew >= LEN as u64,
        "helper: memcg usage grew {grew} bytes, want +{LEN}"
    );
    let procs = cg.processes().unwrap();
    assert!(
        !procs.contains(&me),
        "test process stayed outside: {procs:?}"
    );
    assert!(procs.is_empty(), "the helper exited: {procs:?}");

    // Bypassed: the same memfd faulted in here, outside the memcg, does not reach it.
    let bypassed = memfd("agelab-charge-bypass", LEN as u64);
    let grew = usage_growth(&cg, || touch_here(&bypassed, LEN));
    assert_eq!(resident_bytes(&bypassed, LEN), LEN, "every page faulted in");
    assert!(
        grew < 4 << 20,
        "bypass: memcg usage grew {grew} bytes: pages faulted outside must not be charged there"
    );
    // Pages already in the page cache keep their memcg: charging them later moves nothing.
    let again = usage_growth(&cg, || cg.charge_shared(&bypassed, 0, LEN).unwrap());
    assert!(grew + again < 4 << 20, "re-charge: grew {again} more bytes");

    // A bad range reports the helper's failing step.
    let e = cg
        .charge_shared(&bypassed, 1, 4096)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mmap"), "{e}");

    drop((charged, bypassed));
    cg.remove();
    assert!(!dir.exists(), "memcg removed");
}

/// Set for the child run of [`private_child`].
const CHILD_ENV: &str = "AGELAB_TEST_CHARGE_PRIVATE_CHILD";
const PRIVATE_LEN: usize = 32 << 20;

#[test]
fn private_memory_is_charged_from_inside_only() {
    const TEST: &str = "private_memory_is_charged_from_inside_only";
    let name = format!("agelab-charge-priv-{}", std::process::id());
    let Some(cg) = memcg_or_skip(TEST, &name) else {
        return;
    };
    // From outside: refused with the reason.
    let mut buf = vec![0u8; 4096];
    let e = cg.charge_private(buf.as_mut_ptr(), buf.len()).unwrap_err();
    assert!(matches!(e, MemcgError::NotMember { .. }), "{e}");
    drop(cg);
    // From inside: joining moves every thread of a process, so a separate process (this test
    // binary running only `private_child`) makes its own memcg, joins it and charges its own
    // anonymous memory.
    let (_, out) = agelab_mglru::testing::run_test_in_child("private_child", CHILD_ENV);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grew: u64 = text
        .lines()
        .find_map(|l| l.split("charged ").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("child printed no 'charged' line: {text}"));
    assert!(
        grew >= PRIVATE_LEN as u64,
        "private: memcg grew {grew} bytes, want >= {PRIVATE_LEN}"
    );
}

/// Run only as the child of `private_memory_is_charged_from_inside_only`.
#[test]
#[ignore = "child process of private_memory_is_charged_from_inside_only"]
fn private_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return skip(
            "private_child",
            "runs only as a child of private_memory_is_charged_from_inside_only",
        );
    }
    reconcile_journal_at_start();
    let cg = GuestMemcg::create(&format!("agelab-charge-child-{}", std::process::id())).unwrap();
    cg.add_process(std::process::id() as i32).unwrap();
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PRIVATE_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let grew = usage_growth(&cg, || cg.charge_private(addr.cast(), PRIVATE_LEN).unwrap());
    println!("charged {grew}");
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(addr, PRIVATE_LEN) };
}

#[test]
fn vm_guest_memory_is_charged_whole_for_shared_backings() {
    const TEST: &str = "vm_guest_memory_is_charged_whole_for_shared_backings";
    if !agelab_mglru::kernel::is_root() {
        return skip(TEST, "creating memcgs needs root");
    }
    if let Err(e) = agelab_vmm::vm::open_kvm() {
        return skip(TEST, &e.to_string());
    }
    let dir = std::env::temp_dir().join(format!("agelab-charge-vm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for backing in [Backing::Memfd, Backing::File(dir.clone())] {
        let name = format!("agelab-charge-vm-{}", std::process::id());
        let Some(cg) = memcg_or_skip(TEST, &name) else {
            return;
        };
        let vm = Vm::new(VmConfig {
            mem_bytes: LEN as u64,
            backing: backing.clone(),
            slots: 2,
            ..Default::default()
        })
        .unwrap();
        let grew = usage_growth(&cg, || charge_vm_memory(&cg, &vm).unwrap());
        assert!(
            grew >= LEN as u64,
            "{backing}: memcg usage grew {grew} bytes, want +{LEN} (every guest page)"
        );
        assert!(
            cg.processes().unwrap().is_empty(),
            "{backing}: nobody left inside"
        );
        drop(vm);
        drop(cg);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // Private memory is the process's own: from outside the memcg it is refused with the reason.
    let cg = GuestMemcg::create(&format!("agelab-charge-vm-anon-{}", std::process::id())).unwrap();
    let vm = Vm::new(VmConfig {
        mem_bytes: 4 << 20,
        backing: Backing::Anon,
        ..Default::default()
    })
    .unwrap();
    let e = charge_vm_memory(&cg, &vm).unwrap_err().to_string();
    assert!(e.contains("is not in it"), "{e}");
}
