//! A userspace multi-generational LRU for guest memory, fed by pluggable access sources.

pub mod host_guard;
pub mod kernel;
pub mod source;

pub use source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
