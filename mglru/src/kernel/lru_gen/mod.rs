//! MGLRU's kernel interface: capability switches, `min_ttl_ms`, the debugfs listing and its
//! aging/eviction commands, and a per-memcg view to print beside the userspace engine's generations.
//! Forced aging of a memcg built on these lives in [`crate::lru_gen_aging`].

pub mod control;
pub mod debugfs;
pub mod generations;
pub mod view;

pub use control::{LruGenCaps, LruGenControl};
pub use debugfs::{GenerationStats, LruGenDebugfs, MemcgLruGen, NodeLruGen, TierStats};
pub use generations::MemcgGenerations;
pub use view::{EngineGeneration, LruGenView, ViewGeneration};

use super::sysfs::KernelFileError;

/// Errors from lru_gen.
#[derive(Debug, thiserror::Error)]
pub enum LruGenError {
    /// `/sys/kernel/mm/lru_gen` is missing.
    #[error("kernel built without CONFIG_LRU_GEN ({0} missing)")]
    NotBuilt(String),
    /// The debugfs file is missing although lru_gen exists.
    #[error(
        "{0} missing: debugfs not mounted (mount -t debugfs none /sys/kernel/debug) or not root"
    )]
    DebugfsMissing(String),
    /// A sysfs/debugfs read or write failed.
    #[error(transparent)]
    File(#[from] KernelFileError),
    /// A knob change could not be journaled (so it was not made) or written.
    #[error(transparent)]
    Guard(#[from] crate::host_guard::HostGuardError),
    /// The listing did not parse.
    #[error("lru_gen listing, line {line}: {msg}")]
    Parse {
        /// 1-based line (0: the listing as a whole).
        line: usize,
        /// What was wrong.
        msg: String,
    },
    /// A caps value did not parse.
    #[error("lru_gen enabled: cannot parse {0:?} (expected 0x%04x)")]
    BadCaps(String),
    /// The memcg id is not in the listing.
    #[error("memcg id {0} not in the lru_gen listing (removed, or an id from another boot)")]
    UnknownMemcg(u64),
    /// The node is not in the memcg's listing.
    #[error("node {node} has no lru_gen data in memcg {memcg}")]
    UnknownNode {
        /// memcg id.
        memcg: u64,
        /// Node id.
        node: u32,
    },
    /// Aging was asked for a generation that is not the current max_seq.
    #[error("aging memcg {memcg} node {node}: max_gen_nr {requested} is newer than max_seq {current} (EINVAL)")]
    AgingGenerationTooNew {
        /// memcg id.
        memcg: u64,
        /// Node id.
        node: u32,
        /// Requested max_gen_nr.
        requested: u64,
        /// max_seq when the error was seen.
        current: u64,
    },
    /// Aging refused: already MAX_NR_GENS generations and no force_scan (ERANGE).
    #[error("aging memcg {memcg} node {node}: already MAX_NR_GENS generations; pass force_scan (ERANGE)")]
    AgingTooManyGenerations {
        /// memcg id.
        memcg: u64,
        /// Node id.
        node: u32,
    },
    /// Aging ran but did not create a generation (newer kernels: EEXIST, e.g. a concurrent aging won).
    #[error(
        "aging memcg {memcg} node {node}: the aging step did not produce a new generation (EEXIST)"
    )]
    AgingNotDone {
        /// memcg id.
        memcg: u64,
        /// Node id.
        node: u32,
    },
    /// Eviction asked for a generation too young to evict (EINVAL).
    #[error("eviction memcg {memcg} node {node}: min_gen_nr {requested} must be at most max_seq - 2 = {limit} (EINVAL)")]
    EvictionGenerationTooNew {
        /// memcg id.
        memcg: u64,
        /// Node id.
        node: u32,
        /// Requested min_gen_nr.
        requested: u64,
        /// Highest evictable seq.
        limit: u64,
    },
    /// The command was interrupted by a signal (EINTR).
    #[error("lru_gen command {cmd:?} interrupted (EINTR)")]
    Interrupted {
        /// The command written.
        cmd: String,
    },
    /// Any other failure of a command.
    #[error("lru_gen command {cmd:?} failed: {err}")]
    Command {
        /// The command written.
        cmd: String,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
}
