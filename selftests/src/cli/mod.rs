//! Subcommands of the `agelab` binary.

pub mod bench;
pub mod reclaim;
pub mod run;
pub mod workloads;
