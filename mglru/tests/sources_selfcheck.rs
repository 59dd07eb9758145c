//! The startup self-check on this host's real /dev/kvm: every source that can run here is measured
//! against a guest that reads and writes known sets; exact sources must be exact.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_mglru::selfcheck::{self, Control, Kind, SelfcheckOptions, SelfcheckReport};
use agelab_mglru::sources::{BuildOptions, SourceKind};
use agelab_vmm::memstress::Memstress;
use agelab_vmm::testing::skip;

/// Whether the host has /dev/kvm; first reconciles the journal (a self-check may start
/// kdamonds, journaled host changes).
/// The self-check of `sources` on 16 MiB of `backing`, with `control`; its table printed.
fn selfcheck_of(
    sources: Vec<SourceKind>,
    backing: agelab_vmm::Backing,
    control: Option<Control>,
) -> SelfcheckReport {
    let r = selfcheck::run(&SelfcheckOptions {
        mem_bytes: 16 << 20,
        backing,
        sources,
        control,
        ..Default::default()
    })
    .unwrap();
    println!("{}", r.table());
    r
}

/// `None` (the skip printed) unless every source of `r` can run here.
fn all_available<'a>(r: &'a SelfcheckReport, what: &str) -> Option<&'a SelfcheckReport> {
    match r.sources.iter().find(|s| !s.available) {
        Some(s) => {
            skip(
                &format!("sources_selfcheck {what}"),
                &format!("{}: {}", s.source, s.reason),
            );
            None
        }
        None => Some(r),
    }
}

fn kvm() -> bool {
    agelab_mglru::testing::reconcile_journal_at_start();
    if std::path::Path::new("/dev/kvm").exists() {
        return true;
    }
    skip("sources_selfcheck", "no /dev/kvm");
    false
}

/// Write trackers through page tables or KVM's dirty log are exact: every written page and
/// nothing else, and nothing at all for a read-only guest. `Err` names the first row that is not,
/// with the cause the self-check found for its false positives.
fn write_trackers_exact(r: &SelfcheckReport) -> Result<(), String> {
    let exact = [
        SourceKind::KvmClearLog,
        SourceKind::SoftDirty,
        SourceKind::UffdWp,
    ];
    for s in r
        .sources
        .iter()
        .filter(|s| s.available && !s.kinds.is_empty())
    {
        if !exact.iter().any(|k| k.name() == s.source) {
            continue;
        }
        for k in &s.kinds {
            let why = k.cause.as_deref().unwrap_or("no cause found");
            let exact_row = k.precision == Some(1.0)
                && if k.kind == Kind::Read {
                    k.reported == 0
                } else {
                    k.write_recall == Some(1.0)
                };
            if !exact_row {
                return Err(format!(
                    "{} {:?}: reported {} (false positives {}), precision {:?}, write recall {:?}, \
                     KVM faults {:?}: {why}",
                    s.source,
                    k.kind,
                    k.reported,
                    k.false_positives,
                    k.precision,
                    k.write_recall,
                    k.kvm_faults
                ));
            }
        }
    }
    Ok(())
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
    let r = selfcheck_of(names, agelab_vmm::Backing::Anon, None);
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
    }
    if let Err(e) = write_trackers_exact(&r) {
        panic!("{e}\n{}", r.table());
    }
}

/// The control of the check above: with KVM's mappings of the test memory invalidated after
/// every arm (what a process-wide `clear_refs` write or a `fork` does to every VM of a process),
/// the guest's reads re-fault, KVM logs them written, the check fails, and the self-check counts
/// the false positives and names their cause.
#[test]
fn an_invalidation_of_kvm_mappings_is_counted_and_named() {
    if !kvm() {
        return;
    }
    let r = selfcheck_of(
        vec![SourceKind::KvmClearLog],
        agelab_vmm::Backing::Anon,
        Some(Control::InvalidateMappings),
    );
    let Some(r) = all_available(&r, "kvm-clear-log") else {
        return;
    };
    let s = &r.sources[0];
    let read = s.kinds.iter().find(|k| k.kind == Kind::Read).unwrap();
    let faults = read.kvm_faults.expect("KVM exposes pf_fixed");
    assert!(faults >= r.read_set, "{}", r.table());
    assert_eq!(read.false_positives, read.reported, "{}", r.table());
    assert!(read.cause.is_some(), "{}", r.table());
    assert!(write_trackers_exact(r).is_err(), "{}", r.table());
}

/// Building a source (what `agelab run`, the self-check and the tests do) disturbs no other VM
/// of the process, nor does a `fork` (a helper child, e.g. the memcg charge helper): after every
/// kind was built and dropped beside a running guest, and a child forked, that guest's reads take
/// no KVM fault and its dirty log stays empty. (Two VMs in one process on purpose.)
#[test]
fn building_a_source_or_forking_disturbs_no_other_vm() {
    if !kvm() {
        return;
    }
    let mut vm = agelab_vmm::Vm::new(agelab_vmm::VmConfig {
        vcpus: 1,
        mem_bytes: 16 << 20,
        slots: 1,
        ..Default::default()
    })
    .unwrap();
    let mut log = selfcheck::build_source(SourceKind::KvmClearLog, &mut vm).unwrap();
    let mut g = Memstress::with_vm(vm, false).unwrap();
    g.start().unwrap();
    let pages = g.test_pages();
    g.touch(&(0..0), &(0..pages)).unwrap();
    log.harvest().unwrap();
    for kind in SourceKind::ALL {
        let mut other = agelab_vmm::Vm::new(agelab_vmm::VmConfig {
            vcpus: 1,
            mem_bytes: 4 << 20,
            backing: agelab_vmm::Backing::Memfd,
            dirty_ring_entries: (kind == SourceKind::KvmDirtyRing).then_some(4096),
            ..Default::default()
        })
        .unwrap();
        drop(kind.build(&mut other, &BuildOptions::default()));
    }
    // SAFETY: the child only calls `_exit`, which is async-signal-safe in a forked child of a
    // multi-threaded process; the parent waits for it.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
    }
    let faults = |g: &Memstress| -> u64 { g.vm().kvm_faults_fixed().expect("KVM's pf_fixed stat") };
    let before = faults(&g);
    g.touch(&(0..pages), &(0..0)).unwrap();
    let refaults = faults(&g) - before;
    let logged = log.harvest().unwrap().accessed.count();
    assert_eq!(
        (refaults, logged),
        (0, 0),
        "reads after building every source beside the guest and a fork: KVM faults, pages logged \
         written"
    );
}

/// uffd-minor (built on the VM before its vCPUs start, like the KVM sources) is measured, not
/// listed as a residency source: on memfd memory it sees reads and writes exactly.
#[test]
fn uffd_minor_is_measured_on_memfd_memory() {
    if !kvm() {
        return;
    }
    let r = selfcheck_of(
        vec![SourceKind::UffdMinor],
        agelab_vmm::Backing::Memfd,
        None,
    );
    let Some(r) = all_available(&r, "uffd-minor") else {
        return;
    };
    let s = &r.sources[0];
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

/// Sources armed together as a run arms them: uffd-minor's zap and `UFFDIO_CONTINUE` (a writable,
/// dirty PTE even for a read) make KVM map the guest's re-faulted reads writable and log them
/// dirty, so kvm-clear-log beside uffd-minor reports the read set as written. The self-check
/// finds that, names uffd-minor, and shows KVM's re-faults; uffd-minor's own figures do not move.
#[test]
fn sources_armed_together_name_who_disturbs_whom() {
    if !kvm() {
        return;
    }
    let r = selfcheck_of(
        vec![SourceKind::KvmClearLog, SourceKind::UffdMinor],
        agelab_vmm::Backing::Memfd,
        None,
    );
    let Some(r) = all_available(&r, "together") else {
        return;
    };
    let rows = r.interference.as_ref().expect("two judged sources");
    let read = rows
        .iter()
        .find(|i| i.source == "kvm-clear-log" && i.kind == Kind::Read)
        .unwrap_or_else(|| panic!("kvm-clear-log read undisturbed:\n{}", r.table()));
    assert_eq!(read.alone.false_positives, 0, "{}", r.table());
    assert_eq!(read.together.false_positives, r.read_set, "{}", r.table());
    assert_eq!(read.disturbed_by, vec!["uffd-minor".to_string()]);
    assert!(read.cause.is_some(), "{}", r.table());
    assert!(
        rows.iter().all(|i| i.source != "uffd-minor"),
        "{}",
        r.table()
    );
}

/// The other side: two write trackers that each write-protect (KVM's sptes, the host PTEs through
/// uffd-wp) do not disturb each other, and the self-check says so rather than inventing a cause.
#[test]
fn write_trackers_armed_together_see_what_they_see_alone() {
    if !kvm() {
        return;
    }
    let r = selfcheck_of(
        vec![SourceKind::KvmClearLog, SourceKind::UffdWp],
        agelab_vmm::Backing::Anon,
        None,
    );
    let Some(r) = all_available(&r, "together") else {
        return;
    };
    assert_eq!(
        r.interference.as_ref().map(Vec::len),
        Some(0),
        "{}",
        r.table()
    );
}
