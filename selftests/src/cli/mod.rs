//! Subcommands of the `agelab` binary.

pub mod bench;
pub mod run;
pub mod workloads;
