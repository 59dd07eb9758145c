//! Subcommands of the `agelab` binary.

pub mod check;
pub mod cleanup;
pub mod reclaim;
pub mod run;
pub mod workloads;
