//! mTHP backings put guest memory in folios of their size, checked in the host's own view: the
//! mapping is advised `MADV_HUGEPAGE` (`hg` in `/proc/self/smaps` VmFlags), smaps shows no 2 MiB
//! THP in it (`AnonHugePages`/`ShmemPmdMapped` 0 kB), and pagemap + kpageflags find ≥ 90% of its
//! present pages inside folios of exactly the backing's size. The size's knob is turned on for the
//! test through the journal and restored by the guard.
//!
//! Built to fail: without the 1 MiB VMA split in `HostMapping::advise_large_folios`, anonymous
//! `mthp-64k` memory on a host whose 2 MiB THP follows `madvise` lands in 2 MiB folios and both
//! the smaps and the census assertions fail.

use agelab_mglru::large_folios::{census, prepare};
use agelab_mglru::testing::reconcile_journal_at_start;
use agelab_vmm::testing::skip;
use agelab_vmm::vm::open_kvm;
use agelab_vmm::{Backing, Vm, VmConfig};

/// Fields of the `/proc/self/smaps` entry holding `addr`: `(name, value)` pairs.
fn smaps_fields_at(addr: u64) -> Vec<(String, String)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut out = Vec::new();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                if inside {
                    break;
                }
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if inside {
            if let Some((k, v)) = line.split_once(':') {
                out.push((k.to_string(), v.trim().to_string()));
            }
        }
    }
    assert!(!out.is_empty(), "no smaps entry holds {addr:#x}");
    out
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// One mTHP test at a time: with two sizes on at once, the kernel gives the larger to both.
static ONE_SIZE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Builds a VM with 8 MiB of `name` memory, writes every page from the host (the same fault path
/// a vCPU's access takes through KVM) and checks its folios.
fn check_backing(test: &str, name: &str) {
    let _one = ONE_SIZE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    reconcile_journal_at_start();
    if let Err(e) = open_kvm() {
        return skip(test, &e.to_string());
    }
    let backing: Backing = name.parse().unwrap();
    let lf = backing.large_folio().expect("an mTHP backing");
    let before = std::fs::read_to_string(lf.knob()).ok();
    let (guard, note) = match prepare(&backing) {
        Ok(p) => p,
        Err(e) if e.is_missing_feature() => return skip(test, &e.to_string()),
        Err(e) => panic!("{name}: {e}"),
    };
    eprintln!("{name}: {note}");
    let vm = Vm::new(VmConfig {
        mem_bytes: 8 << 20,
        backing: backing.clone(),
        slots: 2,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    for s in vm.test_slots() {
        let base = s.mapping.addr();
        for off in (0..s.mapping.len()).step_by(4096) {
            // SAFETY: `off` is inside the slot's live mapping, which the VM owns until dropped.
            unsafe { base.add(off).write_volatile(1) };
        }
        for off in [0, 1 << 20] {
            let f = smaps_fields_at(base as u64 + off);
            assert!(
                field(&f, "VmFlags").split_whitespace().any(|x| x == "hg"),
                "{name} must be MADV_HUGEPAGE: {f:?}"
            );
            for pmd in ["AnonHugePages", "ShmemPmdMapped"] {
                assert_eq!(
                    field(&f, pmd),
                    "0 kB",
                    "{name}: 2 MiB THP in an mTHP backing ({pmd})"
                );
            }
        }
    }
    let want = backing.folio_bytes().expect("mTHP backings have a size");
    let c = census(vm.page_map()).unwrap();
    eprintln!("{name}: {}", c.describe());
    assert_eq!(c.absent, 0, "{name}: every written page is present");
    assert!(
        c.share_in(want) >= 0.9,
        "{name}: only {:.1}% of pages in {} KiB folios: {}",
        c.share_in(want) * 100.0,
        want >> 10,
        c.describe()
    );
    drop(vm);
    drop(guard);
    assert_eq!(
        std::fs::read_to_string(lf.knob()).ok(),
        before,
        "{name}: the knob is restored when the guard goes"
    );
}

#[test]
fn anonymous_mthp_64k_is_in_64k_folios() {
    check_backing("anonymous_mthp_64k_is_in_64k_folios", "mthp-64k");
}

#[test]
fn anonymous_mthp_16k_is_in_16k_folios() {
    check_backing("anonymous_mthp_16k_is_in_16k_folios", "mthp-16k");
}

#[test]
fn shmem_mthp_64k_is_in_64k_folios() {
    check_backing("shmem_mthp_64k_is_in_64k_folios", "memfd-mthp-64k");
}

#[test]
fn the_default_anon_backing_is_in_4k_folios() {
    // The census itself against the backing whose answer is known: 4 KiB pages everywhere.
    const TEST: &str = "the_default_anon_backing_is_in_4k_folios";
    if let Err(e) = open_kvm() {
        return skip(TEST, &e.to_string());
    }
    let vm = Vm::new(VmConfig {
        mem_bytes: 4 << 20,
        backing: Backing::Anon,
        ..Default::default()
    })
    .unwrap();
    for s in vm.test_slots() {
        for off in (0..s.mapping.len()).step_by(4096) {
            // SAFETY: inside the slot's live mapping.
            unsafe { s.mapping.addr().add(off).write_volatile(1) };
        }
    }
    let c = census(vm.page_map()).unwrap();
    assert_eq!(c.share_in(4096), 1.0, "{}", c.describe());
}
