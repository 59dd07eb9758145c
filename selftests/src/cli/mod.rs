//! Subcommands of the `agelab` binary.

pub mod bench;
pub mod cleanup;
pub mod reclaim;
pub mod run;
pub mod workloads;
