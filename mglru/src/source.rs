//! The `AccessSource` trait: anything that can tell which guest pages were accessed since it was
//! last asked.

use agelab_vmm::PageSet;
use std::fmt;

/// What kind of access a source can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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

    /// Whether loads show up in this source's harvests.
    pub fn sees_reads(self) -> bool {
        matches!(self, Observes::Reads | Observes::Both)
    }

    /// Whether stores show up in this source's harvests.
    pub fn sees_writes(self) -> bool {
        matches!(self, Observes::Writes | Observes::Both)
    }

    /// What a source observing `self` sees, for messages ("writes only").
    fn describe(self) -> &'static str {
        match self {
            Observes::Reads => "reads only",
            Observes::Writes => "writes only",
            Observes::Both => "reads and writes",
            Observes::Presence => "residency only, not accesses",
        }
    }
}

/// The kinds of access a workload makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessKinds {
    /// It loads.
    pub reads: bool,
    /// It stores.
    pub writes: bool,
}

impl AccessKinds {
    /// The kinds of access a workload doing `op` makes.
    pub fn of(op: agelab_vmm::workload::Op) -> Self {
        use agelab_vmm::workload::Op;
        AccessKinds {
            reads: matches!(op, Op::Read | Op::Mix(_)),
            writes: matches!(op, Op::Write | Op::Mix(_)),
        }
    }
}

/// A source as [`blindness`] needs to know it: its name, what it observes, and why it is
/// unavailable (`None` when it works here).
#[derive(Clone, Copy, Debug)]
pub struct SourceView<'a> {
    /// Source name.
    pub name: &'a str,
    /// What it can see.
    pub observes: Observes,
    /// Why it cannot be used here, if it cannot.
    pub unavailable: Option<&'a str>,
}

/// Why a run cannot see its workload: `Some("no available source observes reads: ...")` when, for
/// a kind of access the workload makes, no available source observes it (pages the workload only
/// touches that way then age out although they are in use), with what each source sees or why it
/// is unavailable; `None` when every kind of access the workload makes is observed.
pub fn blindness<'a>(
    workload: AccessKinds,
    sources: impl IntoIterator<Item = SourceView<'a>>,
) -> Option<String> {
    let sources: Vec<SourceView<'a>> = sources.into_iter().collect();
    let seen = |f: fn(Observes) -> bool| {
        sources
            .iter()
            .any(|s| s.unavailable.is_none() && f(s.observes))
    };
    let mut unseen = Vec::new();
    if workload.reads && !seen(Observes::sees_reads) {
        unseen.push("reads");
    }
    if workload.writes && !seen(Observes::sees_writes) {
        unseen.push("writes");
    }
    if unseen.is_empty() {
        return None;
    }
    let why: Vec<String> = sources
        .iter()
        .map(|s| match s.unavailable {
            Some(reason) => format!("{} is unavailable ({reason})", s.name),
            None => format!("{} observes {}", s.name, s.observes.describe()),
        })
        .collect();
    Some(format!(
        "no available source observes {}: {}",
        unseen.join(" or "),
        if why.is_empty() {
            "no sources".to_string()
        } else {
            why.join("; ")
        }
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(name: &'a str, observes: Observes, unavailable: Option<&'a str>) -> SourceView<'a> {
        SourceView {
            name,
            observes,
            unavailable,
        }
    }

    #[test]
    fn blindness_names_the_unseen_kind_and_every_source() {
        let reads = AccessKinds {
            reads: true,
            writes: false,
        };
        let dirty = view("kvm-dirty-log", Observes::Writes, None);
        let idle = view(
            "page_idle",
            Observes::Both,
            Some("no CONFIG_IDLE_PAGE_TRACKING"),
        );
        assert_eq!(
            blindness(reads, [dirty, idle]).as_deref(),
            Some(
                "no available source observes reads: kvm-dirty-log observes writes only; \
                 page_idle is unavailable (no CONFIG_IDLE_PAGE_TRACKING)"
            )
        );
        let writes = AccessKinds {
            reads: false,
            writes: true,
        };
        assert_eq!(blindness(writes, [dirty, idle]), None);
        let mixed = AccessKinds {
            reads: true,
            writes: true,
        };
        let pagemap = view("pagemap", Observes::Presence, None);
        let e = blindness(mixed, [pagemap]).unwrap();
        assert!(
            e.starts_with(
                "no available source observes reads or writes: pagemap observes residency"
            ),
            "{e}"
        );
        assert!(blindness(mixed, [view("uffd-minor", Observes::Both, None)]).is_none());
        assert_eq!(
            blindness(reads, []).as_deref(),
            Some("no available source observes reads: no sources")
        );
    }
}
