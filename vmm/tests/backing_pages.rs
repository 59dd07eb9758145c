//! Backings mean what the kernel KVM selftests' backings mean, checked in the host's own view of
//! the guest memory mappings (`/proc/self/smaps` VmFlags): `anon` is advised `MADV_NOHUGEPAGE`
//! (`nh`, 4 KiB host pages even where THP runs `always`), `thp` is advised `MADV_HUGEPAGE` (`hg`)
//! and not `nh`, shared backings carry neither advice. Removing the madvise from `Backing::Anon`
//! makes `anon_is_nohugepage_and_thp_is_hugepage` fail on its first assertion.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_vmm::testing::skip;
use agelab_vmm::vm::open_kvm;
use agelab_vmm::{Backing, MemoryError, Vm, VmConfig, VmError};

/// VmFlags of the `/proc/self/smaps` entry whose range holds `addr`.
fn vm_flags_at(addr: u64) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().map(str::to_string).collect();
            }
        }
    }
    panic!("no smaps entry with VmFlags holds {addr:#x}");
}

/// A VM with 4 MiB of test memory backed by `backing`: VmFlags of each test slot's mapping.
fn test_memory_flags(backing: Backing) -> Result<Vec<Vec<String>>, VmError> {
    let vm = Vm::new(VmConfig {
        mem_bytes: 4 << 20,
        backing,
        slots: 2,
        ..Default::default()
    })?;
    Ok(vm
        .test_slots()
        .iter()
        .map(|s| vm_flags_at(s.mapping.addr() as u64))
        .collect())
}

fn has(flags: &[String], f: &str) -> bool {
    flags.iter().any(|x| x == f)
}

#[test]
fn anon_is_nohugepage_and_thp_is_hugepage() {
    const TEST: &str = "anon_is_nohugepage_and_thp_is_hugepage";
    if let Err(e) = open_kvm() {
        return skip(TEST, &e.to_string());
    }
    if !agelab_vmm::memory::thp_configured() {
        return skip(
            TEST,
            "kernel without transparent huge pages: no nh/hg advice exists",
        );
    }
    for flags in test_memory_flags(Backing::Anon).unwrap() {
        assert!(
            has(&flags, "nh"),
            "anon backing must be MADV_NOHUGEPAGE (4 KiB pages, as the kernel selftests' `anonymous`): VmFlags {flags:?}"
        );
        assert!(
            !has(&flags, "hg"),
            "anon backing advised hugepage: {flags:?}"
        );
    }
    // The kernel's name for it means the same.
    for flags in test_memory_flags("anonymous".parse().unwrap()).unwrap() {
        assert!(has(&flags, "nh"), "`anonymous`: {flags:?}");
    }
    for name in ["thp", "anonymous_thp"] {
        for flags in test_memory_flags(name.parse().unwrap()).unwrap() {
            assert!(has(&flags, "hg"), "{name} must be MADV_HUGEPAGE: {flags:?}");
            assert!(
                !has(&flags, "nh"),
                "{name} must not be MADV_NOHUGEPAGE: {flags:?}"
            );
        }
    }
}

#[test]
fn shared_and_hugetlb_backings_carry_no_thp_advice() {
    const TEST: &str = "shared_and_hugetlb_backings_carry_no_thp_advice";
    if let Err(e) = open_kvm() {
        return skip(TEST, &e.to_string());
    }
    for name in ["memfd", "shmem"] {
        for flags in test_memory_flags(name.parse().unwrap()).unwrap() {
            assert!(has(&flags, "sh"), "{name} is a shared mapping: {flags:?}");
            assert!(
                !has(&flags, "nh") && !has(&flags, "hg"),
                "{name}: {flags:?}"
            );
        }
    }
    for name in ["hugetlb", "anonymous_hugetlb", "anonymous_hugetlb_2mb"] {
        match test_memory_flags(name.parse().unwrap()) {
            Ok(all) => {
                for flags in all {
                    assert!(has(&flags, "ht"), "{name} is hugetlb: {flags:?}");
                }
            }
            Err(VmError::Memory(e @ MemoryError::NoHugePages { .. })) => {
                skip(&format!("{TEST} ({name})"), &e.to_string());
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
}
