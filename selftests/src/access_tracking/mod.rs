//! Machinery of the secondary-MMU aging selftests (`access_tracking_perf_test`,
//! `lru_gen_secondary_mmu_test`, `tlb_flush_accuracy_test`, `reclaim_hot_set_test`,
//! `test_young_preserves_test`): lru_gen aging
//! of the test's memcg, reclaim of it through rmap, page_idle marking, host aging agents and
//! their cost to the guest. Their memstress VM is `agelab_vmm::memstress`.
//!
//! The scenario binaries in `src/bin` stay short; everything they share lives here.

pub mod agents;
pub mod aging_sweep;
pub mod bystanders;
pub mod env;
pub mod folios;
pub mod khugepaged;
pub mod kvm_trace;
pub mod lru_gen;
pub mod page_idle;
pub mod reclaim;

use crate::ktap;

pub use crate::ktap::{fail, skip_all};

/// Prints one phase line exactly as the kernel test does: name left-aligned in 30 columns, `: `,
/// then seconds with nanoseconds.
pub fn phase_line(name: &str, d: std::time::Duration) {
    println!("{name:<30}: {}", ktap::ts(d));
}
