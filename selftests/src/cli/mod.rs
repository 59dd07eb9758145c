//! Subcommands of the `agelab` binary.

pub mod run;
pub mod workloads;
