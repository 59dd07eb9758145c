//! Kernel plumbing for access sources and host-side aging: pagemap, idle page tracking, lru_gen,
//! memcgs, DAMON, soft-dirty and uffd-wp.
//!
//! Each module wraps one kernel interface, has its own error enum, and (where it yields page
//! accesses) one [`AccessSource`](crate::AccessSource) whose `available()` says precisely why it
//! cannot run on this host.

pub mod damon;
pub mod kpageflags;
pub mod lru_gen;
pub mod memcg;
pub mod page_idle;
pub mod pagemap;
pub mod pfn_runs;
pub mod soft_dirty;
pub mod swap;
pub mod sysfs;
pub mod uffd;
pub mod uffd_wp;

pub use damon::{DamonAdmin, DamonError, DamonSource, DamonTarget, TriedRegion};
pub use lru_gen::{
    LruGenCaps, LruGenControl, LruGenDebugfs, LruGenError, LruGenView, MemcgLruGen, NodeLruGen,
};
pub use memcg::{CgroupVersion, GuestMemcg, MemcgError};
pub use page_idle::{GuestIdleFiles, PageIdleBitmap, PageIdleError};
pub use pagemap::{Pagemap, PagemapEntry, PagemapError, PagemapSource, Residency};
pub use soft_dirty::{SoftDirtyError, SoftDirtySource};
pub use uffd_wp::{UffdWpAsyncSource, UffdWpError};

/// Whether the process has an effective uid of 0 (most knobs here are root-only).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
