//! The first aging pass reports the first epoch's accesses only: what happened before it (here a
//! `--verify` fill that writes every page) belongs to no epoch's truth.

use agelab_mglru::session::run::{run, AgingRunConfig};
use agelab_mglru::sources::uffd_minor::ArmPolicy;
use agelab_mglru::sources::SourceKind;
use agelab_util::progress::ProgressLine;
use agelab_vmm::testing::skip;
use agelab_vmm::Backing;
use std::time::Duration;

#[test]
fn a_fill_before_the_first_epoch_is_not_the_first_pass() {
    const TEST: &str = "a_fill_before_the_first_epoch_is_not_the_first_pass";
    if !std::path::Path::new("/dev/kvm").exists() {
        return skip(TEST, "no /dev/kvm");
    }
    let cfg = AgingRunConfig {
        mem_bytes: 16 << 20,
        vcpus: 1,
        workload: "hotcold:hot=10%,p=100%,op=read".parse().unwrap(),
        duration: Duration::from_millis(600),
        interval: Duration::from_millis(200),
        backing: Backing::Anon,
        slots: 1,
        verify: true,
        sources: vec![SourceKind::KvmClearLog],
        named_sources: vec![SourceKind::KvmClearLog],
        fault_budget: None,
        uffd_arm: ArmPolicy::default(),
        gens: 4,
        heatmap: false,
        selfcheck: false,
        require_accurate: None,
        progress: ProgressLine::on_terminal(true, TEST),
    };
    let r = run(&cfg, &mut |_| {}).unwrap();
    let log = r
        .engine
        .sources
        .iter()
        .find(|s| s.name == "kvm-clear-log")
        .unwrap();
    assert!(log.available, "{}", log.reason);
    // A read-only guest: every page kvm-clear-log reports is a false positive; the fill's 4096
    // writes land in the first pass unless the sources were harvested right before it.
    assert_eq!(log.false_positives, 0, "{}", r.table);
}
