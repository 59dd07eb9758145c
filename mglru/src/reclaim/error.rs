//! Errors of a reclaim run ([`ReclaimRunError`]), apart from the run itself so the kernel
//! policies can return them without depending on the run.

use super::action::ReclaimActionError;
use super::child::ChildRunError;
use super::policy::PolicyKind;
use super::refault::ResidencyError;
use crate::engine::EngineError;
use crate::kernel::damon::DamonError;
use crate::kernel::lru_gen::LruGenError;
use crate::kernel::memcg::MemcgError;
use crate::kernel::psi::PsiError;
use crate::kernel::swap::SwapError;
use crate::session::AgingSessionError;
use crate::sources::uffd_minor::UffdMinorError;
use agelab_vmm::workload::WorkloadError;
use agelab_vmm::VmError;

/// Errors of a reclaim run.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimRunError {
    /// The VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The workload failed.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A reclaim action failed (including "no swap").
    #[error(transparent)]
    Action(#[from] ReclaimActionError),
    /// Arming uffd-minor from the engine's generations failed.
    #[error(transparent)]
    UffdArm(#[from] UffdMinorError),
    /// Reading residency failed.
    #[error(transparent)]
    Residency(#[from] ResidencyError),
    /// Swap state could not be read.
    #[error(transparent)]
    Swap(#[from] SwapError),
    /// The memcg for a kernel policy failed.
    #[error("{policy}: {err}")]
    Memcg {
        /// Policy.
        policy: PolicyKind,
        /// Cause.
        #[source]
        err: MemcgError,
    },
    /// lru_gen is missing or refused a command.
    #[error("lru-gen: {0}")]
    LruGen(#[from] LruGenError),
    /// DAMON is unavailable, held by someone else, or refused the scheme.
    #[error("damon: {0}")]
    Damon(#[from] DamonError),
    /// Memory pressure could not be read.
    #[error("psi: {0}")]
    Psi(#[from] PsiError),
    /// The memcg is not visible in the lru_gen listing.
    #[error("lru-gen: memcg {0} not found in /sys/kernel/debug/lru_gen")]
    LruGenMemcg(String),
    /// A run in a child process died without an OOM kill to explain it, or failed.
    #[error(transparent)]
    Child(#[from] ChildRunError),
    /// Verification found wrong guest data: reclaim lost or corrupted pages.
    #[error("DATA INTEGRITY FAILURE under {policy}: {mismatches} of {words} words wrong, first at {first:#x?}")]
    Integrity {
        /// Policy.
        policy: PolicyKind,
        /// Wrong words.
        mismatches: u64,
        /// Words checked.
        words: u64,
        /// First bad guest addresses.
        first: Vec<u64>,
    },
}

impl From<AgingSessionError> for ReclaimRunError {
    fn from(e: AgingSessionError) -> Self {
        match e {
            AgingSessionError::Workload(e) => ReclaimRunError::Workload(e),
            AgingSessionError::Engine(e) => ReclaimRunError::Engine(e),
            AgingSessionError::UffdArm(e) => ReclaimRunError::UffdArm(e),
        }
    }
}
