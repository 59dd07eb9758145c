//! KVM's dirty log or dirty ring as an access source (writes only, exact per 4 KiB page).

use super::SourceKind;
use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
use agelab_vmm::dirty::{DirtyMode, DirtyTracker};
use agelab_vmm::PageSet;

/// Pages the guest wrote, from KVM's dirty tracking.
#[derive(Debug)]
pub struct KvmDirtySource {
    tracker: DirtyTracker,
    name: String,
}

impl KvmDirtySource {
    /// Wraps a tracker whose logging is already on.
    pub fn new(tracker: DirtyTracker) -> Self {
        let name = match tracker.mode() {
            DirtyMode::GetLog => SourceKind::KvmDirtyLog,
            DirtyMode::ClearLog => SourceKind::KvmClearLog,
            DirtyMode::Ring => SourceKind::KvmDirtyRing,
        }
        .name()
        .to_string();
        KvmDirtySource { tracker, name }
    }
}

impl AccessSource for KvmDirtySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn observes(&self) -> Observes {
        Observes::Writes
    }

    fn granularity(&self) -> u64 {
        4096
    }

    fn available(&self) -> Result<(), Unavailable> {
        Ok(())
    }

    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        let mut set = PageSet::new(self.tracker.page_map().len());
        let stats = self
            .tracker
            .harvest_into(&mut set)
            .map_err(|e| HarvestError::Other {
                source_name: self.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Harvest {
            accessed: set,
            observed: None,
            cost: HarvestCost {
                ns: stats.total_ns(),
                bytes_read: stats.dirty_bytes(),
                bytes_written: 0,
            },
        })
    }
}

/// A source that could not be set up on this host: listed with its reason, never harvested.
#[derive(Debug, Clone)]
pub struct UnavailableSource {
    name: String,
    observes: Observes,
    reason: String,
}

impl UnavailableSource {
    /// A placeholder for `name`, unavailable because of `reason`.
    pub fn new(name: &str, observes: Observes, reason: impl Into<String>) -> Self {
        UnavailableSource {
            name: name.into(),
            observes,
            reason: reason.into(),
        }
    }
}

impl AccessSource for UnavailableSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn observes(&self) -> Observes {
        self.observes
    }

    fn granularity(&self) -> u64 {
        4096
    }

    fn available(&self) -> Result<(), Unavailable> {
        Err(Unavailable(self.reason.clone()))
    }

    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        Err(HarvestError::Unavailable {
            source_name: self.name.clone(),
            reason: self.reason.clone(),
        })
    }
}
