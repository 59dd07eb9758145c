//! A userspace multi-generational LRU for guest memory, fed by pluggable access sources.

pub mod engine;
pub mod host_guard;
pub mod journal;
pub mod kernel;
pub mod large_folios;
pub mod lru_gen_aging;
pub mod reclaim;
pub mod selfcheck;
pub mod session;
pub mod source;
pub mod sources;
pub mod testing;

pub use engine::{
    AgingPass, AgingPolicy, Engine, EngineConfig, EngineError, EvictionScope, PassTruth,
};
pub use source::{
    AccessKinds, AccessSource, Harvest, HarvestCost, HarvestError, Observes, SourceView,
    Unavailable,
};
pub use sources::{OracleSource, ScriptedSource};
