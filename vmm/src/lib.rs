//! agelab's VMM: guest memory, vCPUs running CPL3 (x86_64) / EL0 (aarch64) guest code, ucall,
//! KVM dirty tracking and binary stats.

pub mod page_map;
pub mod pageset;

pub use page_map::{BackingKind, GuestPage, GuestPageMap, PageRange, PAGE_SIZE};
pub use pageset::{Confusion, PageSet};
