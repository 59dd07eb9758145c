//! Machinery of the secondary-MMU aging selftests (`access_tracking_perf_test`,
//! `lru_gen_secondary_mmu_test`, `tlb_flush_accuracy_test`): the memstress VM, lru_gen aging of
//! the test's memcg, page_idle marking, host aging agents and their cost to the guest.
//!
//! The scenario binaries in `src/bin` stay short; everything they share lives here.

pub mod agents;
pub mod env;
pub mod kvm_trace;
pub mod lru_gen;
pub mod memstress;
pub mod page_idle;

use crate::ktap;

/// Runs every pending host restore (memcg removal, sysfs values) and exits with `code`:
/// `std::process::exit` skips destructors, so guards would otherwise never run.
pub fn exit_restoring(code: i32) -> ! {
    agelab_mglru::host_guard::run_pending();
    std::process::exit(code)
}

/// Prints `# FAIL: msg` and exits 1 after restoring the host.
pub fn fail(msg: &str) -> ! {
    println!("# FAIL: {msg}");
    exit_restoring(ktap::EXIT_FAIL)
}

/// Whole-test skip (`1..0 # SKIP reason`, exit 4) after restoring the host.
pub fn skip_all(reason: &str) -> ! {
    agelab_mglru::host_guard::run_pending();
    ktap::skip_all(reason)
}

/// Prints one phase line exactly as the kernel test does: name left-aligned in 30 columns, `: `,
/// then seconds with nanoseconds.
pub fn phase_line(name: &str, d: std::time::Duration) {
    println!("{name:<30}: {}", ktap::ts(d));
}
