//! Access sources that are not a single kernel interface: KVM dirty tracking, the ground-truth
//! oracle for validation runs, a scripted source for tests, and the catalog that builds sources
//! by name. Kernel-backed sources live in [`crate::kernel`].

pub mod catalog;
pub mod kvm_dirty;
pub mod oracle;
pub mod page_idle;
pub mod scripted;
pub mod uffd_minor;
pub mod uffd_wp;

pub use kvm_dirty::{KvmDirtySource, UnavailableSource};
pub use oracle::OracleSource;
pub use page_idle::PageIdleSource;
pub use scripted::{ScriptStep, ScriptedSource};
