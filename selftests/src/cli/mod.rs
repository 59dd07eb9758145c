//! Subcommands of the `agelab` binary.

pub mod bench;
pub mod check;
pub mod cleanup;
pub mod lab;
pub mod reclaim;
pub mod run;
pub mod workloads;
