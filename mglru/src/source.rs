//! The `AccessSource` trait: anything that can tell which guest pages were accessed since it was
//! last asked.

use agelab_vmm::PageSet;
use std::fmt;

/// What kind of access a source can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observes {
    /// Loads only.
    Reads,
    /// Stores only.
    Writes,
    /// Loads and stores alike.
    Both,
    /// Residency only (present/swapped), not accesses.
    Presence,
}

impl Observes {
    /// Short name for tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Observes::Reads => "reads",
            Observes::Writes => "writes",
            Observes::Both => "both",
            Observes::Presence => "presence",
        }
    }
}

/// What one harvest cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HarvestCost {
    /// Wall time spent harvesting, in nanoseconds (kernel and userspace together).
    pub ns: u64,
    /// Bytes read from kernel interfaces (bitmaps, pagemap, sysfs...).
    pub bytes_read: u64,
    /// Bytes written to kernel interfaces.
    pub bytes_written: u64,
}

/// The pages a source saw accessed since its previous harvest.
#[derive(Clone, Debug)]
pub struct Harvest {
    /// Accessed pages (dense guest page indices).
    pub accessed: PageSet,
    /// Pages this harvest actually looked at (for sampling sources); `None` means all of them.
    pub observed: Option<PageSet>,
    /// What it cost.
    pub cost: HarvestCost,
}

/// Why a source cannot be used on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A failure while harvesting.
#[derive(Debug, thiserror::Error)]
pub enum HarvestError {
    /// A kernel interface failed.
    #[error("{source_name}: {what}: {err}")]
    Io {
        /// Name of the source.
        source_name: String,
        /// What was being done.
        what: String,
        /// Underlying error.
        #[source]
        err: std::io::Error,
    },
    /// The source is not usable (it became unavailable, or was never set up).
    #[error("{source_name}: unavailable: {reason}")]
    Unavailable {
        /// Name of the source.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// Anything else, described.
    #[error("{source_name}: {message}")]
    Other {
        /// Name of the source.
        source_name: String,
        /// What went wrong.
        message: String,
    },
}

/// A provider of page-access information for the aging engine.
pub trait AccessSource: Send {
    /// Stable short name (`kvm-dirty-log`, `page_idle`, `lru_gen`, ...).
    fn name(&self) -> &str;
    /// Which accesses it can see.
    fn observes(&self) -> Observes;
    /// Bytes per unit of information (4096 for per-page sources, larger for region sources).
    fn granularity(&self) -> u64;
    /// Whether the source works on this host, with the reason when not.
    fn available(&self) -> Result<(), Unavailable>;
    /// Pages accessed since the previous harvest (or since the source was armed).
    fn harvest(&mut self) -> Result<Harvest, HarvestError>;
}
