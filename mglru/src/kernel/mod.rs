//! Kernel interfaces for access sources and host-side aging: pagemap, idle page tracking, lru_gen,
//! memcgs, DAMON, soft-dirty, userfaultfd and swap.
//!
//! Each module wraps one kernel interface (its files, ioctls and the parsing of its text) and has
//! its own error enum. The access sources built on them live in [`crate::sources`].

pub mod damon;
pub mod kpageflags;
pub mod lru_gen;
pub mod memcg;
pub mod page_idle;
pub mod pagemap;
pub mod pfn_runs;
pub mod psi;
pub mod soft_dirty;
pub mod swap;
pub mod sysfs;
pub mod uffd;
pub mod uffd_wp;
pub mod undo;
pub mod zram_swap;

pub use damon::{DamonAdmin, DamonError, DamonTarget, TriedRegion};
pub use lru_gen::{
    LruGenCaps, LruGenControl, LruGenDebugfs, LruGenError, LruGenView, MemcgLruGen, NodeLruGen,
};
pub use memcg::{CgroupVersion, GuestMemcg, MemcgError};
pub use page_idle::{GuestIdleFiles, PageIdleBitmap, PageIdleError};
pub use pagemap::{Pagemap, PagemapEntry, PagemapError, Residency};
pub use soft_dirty::SoftDirtyError;
pub use uffd_wp::{UffdWpAsync, UffdWpError};

/// Whether the process has an effective uid of 0 (most knobs here are root-only).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
