//! agelab: the command-line front end, the QEMU lab runner and the kernel-style selftests.
//!
//! The machinery lives in `agelab-vmm` (KVM), `agelab-guest` (guest code) and `agelab-mglru`
//! (the aging engine); this crate ties them into commands and scenarios.

pub mod access_tracking;
pub mod cli;
pub mod ktap;
pub mod lab;
pub mod options;
pub mod report;
pub mod scenarios;
pub mod units;
