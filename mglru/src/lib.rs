//! A userspace multi-generational LRU for guest memory, fed by pluggable access sources.

pub mod source;

pub use source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};
