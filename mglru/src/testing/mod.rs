//! Shared test fixtures: guest memory without a VM ([`single_slot_map`], [`memfd`]), the test
//! binary re-run as a child process ([`test_child`], [`run_test_in_child`],
//! [`spawn_ready_child`]), and the journal's reconcile for tests that change host state (zram
//! swap, memcgs, lru_gen knobs, kdamonds).
//!
//! A test process the kernel kills (an OOM kill under a memcg limit, a SIGKILL) runs none of its
//! undos: its [journal](crate::journal) entries stay until someone reconciles. The `agelab`
//! command reconciles at its start; [`reconcile_journal_at_start`] does the same for a test
//! process, so what a killed test binary left is undone by the next test binary that changes host
//! state, not only by the next `agelab` command.

mod child;
mod memory;

pub use child::{run_test_in_child, spawn_ready_child, test_child};
pub use memory::{memfd, single_slot_map, slots_map, SharedMapping};

/// Reconciles the system journal once per process, as the `agelab` command does at its start:
/// changes left by processes that are gone are undone, one stderr line each. Entries of live
/// processes are never touched — an entry's owner is judged by pid *and* start time (a recycled
/// pid is not the owner; a zombie is gone) — so test binaries running side by side, the threads of
/// this binary and this process's own parent or children keep theirs. Later calls do nothing,
/// and the first call blocks other threads until the reconcile is done.
///
/// Call it first in every test (or in the shared helper every test of a file goes through) that
/// changes host state.
pub fn reconcile_journal_at_start() {
    crate::journal::reconcile_at_start(&program_name());
}

/// The running test binary's file name (`kernel_host-0123abcd`), for the reconcile's lines.
fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into())
}
