//! The startup self-check on this host's real /dev/kvm: every source that can run here is measured
//! against a guest that reads and writes known sets; exact sources must be exact.

use agelab_mglru::selfcheck::{self, Kind, SelfcheckOptions};
use agelab_mglru::sources::{BuildOptions, SourceKind};
use agelab_vmm::testing::skip;

/// Whether the host has /dev/kvm; first reconciles the journal (a self-check may start
/// kdamonds, journaled host changes).
fn kvm() -> bool {
    agelab_mglru::testing::reconcile_journal_at_start();
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
    let names = vec![
        SourceKind::KvmClearLog,
        SourceKind::SoftDirty,
        SourceKind::UffdWp,
        SourceKind::PageIdle,
        SourceKind::DamonVaddr,
        SourceKind::DamonPaddr,
        SourceKind::Pagemap,
    ];
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
        if [
            SourceKind::KvmClearLog,
            SourceKind::SoftDirty,
            SourceKind::UffdWp,
        ]
        .iter()
        .any(|k| k.name() == s.source)
        {
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
        sources: vec![SourceKind::UffdMinor],
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

/// The self-check vouches for the implementation the run uses: for every kind, what
/// [`selfcheck::build_source`] makes has the name (and so the type; for uffd-wp the same async or
/// sync choice) of what `agelab run` makes with [`SourceKind::build`].
#[test]
fn selfcheck_builds_what_the_run_builds() {
    if !kvm() {
        return;
    }
    let vm_for = |kind: SourceKind| {
        agelab_vmm::Vm::new(agelab_vmm::VmConfig {
            vcpus: 1,
            mem_bytes: 4 << 20,
            backing: agelab_vmm::Backing::Memfd,
            dirty_ring_entries: (kind == SourceKind::KvmDirtyRing).then_some(4096),
            ..Default::default()
        })
        .unwrap()
    };
    for kind in SourceKind::ALL {
        // One VM each (a VMA takes one userfaultfd), alive until the sources on them are dropped.
        let (mut vm_checked, mut vm_run) = (vm_for(kind), vm_for(kind));
        let checked = selfcheck::build_source(kind, &mut vm_checked);
        let run = kind.build(&mut vm_run, &BuildOptions::default());
        match (checked, run) {
            (None, None) => assert_eq!(kind, SourceKind::Oracle),
            (Some(c), Some(r)) => {
                assert_eq!(c.name(), r.source.name(), "{kind}");
                assert_eq!(c.observes(), kind.observes(), "{kind}");
                assert_eq!(r.source.observes(), kind.observes(), "{kind}");
                match (c.available(), r.source.available()) {
                    (Ok(()), Ok(())) => {}
                    (Err(a), Err(b)) => assert_eq!(a, b, "{kind}"),
                    (a, b) => skip(
                        &format!("sources_selfcheck {kind}"),
                        &format!("availability differs between two builds: {a:?} / {b:?}"),
                    ),
                }
            }
            (c, r) => panic!(
                "{kind}: self-check built {:?}, run built {:?}",
                c.map(|c| c.name().to_string()),
                r.map(|r| r.source.name().to_string())
            ),
        }
    }
}
