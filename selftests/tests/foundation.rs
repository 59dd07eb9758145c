//! The VMM's foundation scenarios on real /dev/kvm (see `agelab::scenarios::foundation`).

use agelab::scenarios::foundation::{self, Outcome, ScenarioResult};

fn run(name: &str, r: ScenarioResult) {
    match r {
        Ok(Outcome::Pass) => {}
        Ok(Outcome::Partial(reason)) => agelab_vmm::testing::skip(name, &reason),
        Err(e) => panic!("{name}: {e}"),
    }
}

#[test]
fn guest_and_host_see_each_others_writes() {
    run(
        "writes both ways",
        foundation::guest_and_host_see_each_others_writes(),
    );
}

#[test]
fn vcpus_run_in_parallel() {
    run("parallel vCPUs", foundation::vcpus_run_in_parallel());
}

#[test]
fn abort_carries_file_line_and_message() {
    run("ABORT", foundation::abort_carries_file_line_and_message());
}

#[test]
fn guest_fault_is_reported_with_rip() {
    run(
        "guest fault",
        foundation::guest_fault_is_reported_with_rip(),
    );
}

#[test]
fn watchdog_stops_a_spinning_guest() {
    run("watchdog", foundation::watchdog_stops_a_spinning_guest());
}

#[test]
fn every_backing_works_or_says_why() {
    run("backings", foundation::every_backing_works_or_says_why());
}

#[test]
fn bad_sizes_are_clear_errors() {
    run("bad sizes", foundation::bad_sizes_are_clear_errors());
}

#[test]
fn stats_fd_is_readable() {
    run("stats fd", foundation::stats_fd_is_readable());
}
