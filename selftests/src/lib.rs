//! agelab: the command-line front end and the kernel-style selftests.
//!
//! The machinery lives in `agelab-vmm` (KVM), `agelab-guest` (guest code), `agelab-mglru`
//! (the aging engine) and `agelab-lab` (the QEMU lab, `agelab lab` and `agelab ab`); this crate
//! ties them into commands and scenarios.

pub mod access_tracking;
pub mod args;
pub mod benchmarks;
pub mod cli;
pub mod ktap;
pub mod report;
pub mod scenarios;
