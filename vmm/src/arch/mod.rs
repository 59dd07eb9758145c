//! Architecture support. `x86_64` and `aarch64` export the same public names; shared code uses
//! them through this module and never names an architecture. What both share is written once
//! here: the page-table walker ([`paging`]), which each architecture parameterises with its
//! descriptor format.

pub mod paging;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

/// The aarch64 descriptor format depends on nothing aarch64-only, so x86_64 hosts (which cannot
/// build the aarch64 crate) compile it and run its unit test against the shared walker too.
#[cfg(all(test, not(target_arch = "aarch64")))]
#[allow(dead_code, unused_imports)]
#[path = "aarch64/paging.rs"]
mod aarch64_paging_on_this_host;
