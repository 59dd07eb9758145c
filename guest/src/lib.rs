//! Code that runs inside agelab guests, and the ABI it shares with the host.
//!
//! Guest code is ordinary Rust compiled into the host binary: the VMM copies the process's
//! executable and read-only mappings into the guest at their host virtual addresses (as the
//! kernel's KVM selftests do with the test binary) and starts a vCPU at a function of this crate,
//! at CPL3 on x86_64 and EL0 on aarch64. The host replays the same generators to compute exact
//! ground truth, so one source of code defines both what the guest does and what it did.
//!
//! Rules for guest-executed functions: no allocation, no I/O, no statics, no panics (overflow
//! checks are off for this crate; indexing is avoided or provably in bounds). A fault in the guest
//! ends in a triple fault / shutdown that the VMM reports with the vCPU's registers.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod abi;
pub mod integrity;
pub mod memstress;
pub mod pattern;
pub mod rng;
pub mod ucall;
pub mod workload;
