//! Forced lru_gen aging of a memcg, the one home for it: the selftests' test memcgs
//! ([`MemcgAging`]) and `agelab run`'s view of the kernel's generations beside the engine's
//! ([`KernelAging`], built on [`MemcgAging`]) age through the same loop,
//! [`MemcgAging::age_nodes`]: `+ memcg node max_seq 1 1` (can_swap, force_scan) on every node
//! of the memcg, as the kernel's `lib/lru_gen_util.c` does.
//!
//! A process must be a member of the memcg whenever it is aged: MGLRU's aging walk visits only
//! the page tables of the mms on that memcg's list (a task's mm moves to its new memcg's list when
//! the task migrates), so aging a memcg from outside finds nothing young.

mod memcg;
mod run;

pub use memcg::{lru_gen_usable, LruGenUnusable, MemcgAging};
pub use run::{
    charge_vm_memory, engine_generations, KernelAging, KernelGeneration, KernelLruGenReport,
    MemcgRef,
};

use crate::kernel::lru_gen::LruGenError;
use crate::kernel::memcg::MemcgError;

/// Errors of forced lru_gen aging of a memcg.
#[derive(Debug, thiserror::Error)]
pub enum LruGenAgingError {
    /// An lru_gen file or command failed.
    #[error("lru_gen: {0}")]
    LruGen(#[from] LruGenError),
    /// The memcg could not be created or joined.
    #[error("memcg: {0}")]
    Memcg(#[from] MemcgError),
    /// Guest memory could not be charged to the memcg.
    #[error("charging guest memory (slot {slot}) to the VM's memcg: {err}")]
    Charge {
        /// The memslot.
        slot: u32,
        /// Cause.
        #[source]
        err: MemcgError,
    },
    /// The memcg is missing from `/sys/kernel/debug/lru_gen`.
    #[error("memcg {0} is not in /sys/kernel/debug/lru_gen (was it created in the memory controller's hierarchy?)")]
    NotListed(String),
    /// Moving this process back to its own cgroup failed.
    #[error("moving this process back to {path}: {source}")]
    Leave {
        /// The cgroup's procs file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
