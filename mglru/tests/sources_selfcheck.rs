//! The startup self-check on this host's real /dev/kvm: every source that can run here is measured
//! against a guest that reads and writes known sets; exact sources must be exact.

use agelab_mglru::selfcheck::{self, Kind, SelfcheckOptions};
use agelab_vmm::testing::skip;

fn kvm() -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        return true;
    }
    skip("sources_selfcheck", "no /dev/kvm");
    false
}

#[test]
fn exact_write_sources_are_exact_on_a_real_guest() {
    if !kvm() {
        return;
    }
    let names: Vec<String> = [
        "kvm-clear-log",
        "soft-dirty",
        "uffd-wp",
        "page_idle",
        "damon-vaddr",
        "damon-paddr",
        "pagemap",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = selfcheck::run(&SelfcheckOptions {
        mem_bytes: 16 << 20,
        sources: names,
        ..Default::default()
    })
    .unwrap();
    println!("{}", r.table());
    for s in &r.sources {
        if !s.available || s.kinds.is_empty() {
            skip(&format!("sources_selfcheck {}", s.source), &s.reason);
            continue;
        }
        assert_eq!(s.kinds.len(), 3);
        for k in &s.kinds {
            assert!(
                k.error.is_none(),
                "{} {:?}: {:?}",
                s.source,
                k.kind,
                k.error
            );
        }
        // Write trackers through page tables or KVM's dirty log are exact: every written page and
        // nothing else, and nothing at all for a read-only guest.
        if ["kvm-clear-log", "soft-dirty", "uffd-wp"].contains(&s.source.as_str()) {
            for k in &s.kinds {
                assert_eq!(k.precision, Some(1.0), "{} {:?}", s.source, k.kind);
                if k.kind != Kind::Read {
                    assert_eq!(k.write_recall, Some(1.0), "{} {:?}", s.source, k.kind);
                } else {
                    assert_eq!(k.reported, 0, "{} read-only guest", s.source);
                }
            }
        }
    }
}

/// uffd-minor (built on the VM before its vCPUs start, like the KVM sources) is measured, not
/// listed as a residency source: on memfd memory it sees reads and writes exactly.
#[test]
fn uffd_minor_is_measured_on_memfd_memory() {
    if !kvm() {
        return;
    }
    let r = selfcheck::run(&SelfcheckOptions {
        mem_bytes: 16 << 20,
        backing: agelab_vmm::Backing::Memfd,
        sources: vec!["uffd-minor".into()],
        ..Default::default()
    })
    .unwrap();
    println!("{}", r.table());
    let s = &r.sources[0];
    if !s.available {
        skip("sources_selfcheck uffd-minor", &s.reason);
        return;
    }
    assert_eq!(s.observes, agelab_mglru::Observes::Both);
    assert_eq!(s.kinds.len(), 3, "{}", r.table());
    for k in &s.kinds {
        assert_eq!(k.error, None, "{:?}", k.kind);
        assert_eq!(k.recall, Some(1.0), "{:?}", k.kind);
        assert_eq!(k.precision, Some(1.0), "{:?}", k.kind);
    }
}
