//! Access sources: one file per source name holding its one [`AccessSource`](crate::AccessSource)
//! (`kvm_dirty` holds the three KVM dirty-tracking kinds, which differ only in the ioctl), and the
//! [`catalog`] whose [`SourceKind`] names and builds them. The kernel interfaces they read live in
//! [`crate::kernel`].

pub mod catalog;
pub mod damon_paddr;
pub mod damon_vaddr;
pub mod kind;
pub mod kvm_dirty;
pub mod oracle;
pub mod page_idle;
pub mod pagemap;
pub mod scripted;
pub mod soft_dirty;
pub mod uffd_minor;
pub mod uffd_wp;

pub use catalog::{BuildOptions, Built};
pub use damon_paddr::DamonPaddrSource;
pub use damon_vaddr::DamonSource;
pub use kind::{CatalogError, SourceKind};
pub use kvm_dirty::{KvmDirtySource, UnavailableSource};
pub use oracle::OracleSource;
pub use page_idle::PageIdleSource;
pub use pagemap::PagemapSource;
pub use scripted::{ScriptStep, ScriptedSource};
pub use soft_dirty::SoftDirtySource;
pub use uffd_wp::UffdWpSource;
