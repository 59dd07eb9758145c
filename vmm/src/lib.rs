//! agelab's VMM: guest memory, vCPUs running CPL3 (x86_64) / EL0 (aarch64) guest code, ucall,
//! KVM dirty tracking, binary stats, stage sync with the vCPUs (`Vm::sync_all`), the memstress
//! driver and the host's measured fault costs every benchmark prints ([`HostProfile`]).

pub mod arch;
pub mod dirty;
pub mod host_profile;
pub mod kvm_raw;
pub mod large_folio;
pub mod loader;
pub mod memory;
pub mod memstress;
pub mod page_map;
pub mod pageset;
pub mod stats;
pub mod system;
pub mod testing;
pub mod ucall;
pub mod vcpu;
pub mod vm;
pub mod workload;

pub use dirty::{DirtyError, DirtyMode, DirtyOptions, DirtyTracker, HarvestStats, ModeSupport};
pub use host_profile::HostProfile;
pub use memory::{Backing, MemoryError, BACKING_NAMES};
pub use page_map::{BackingKind, GuestPage, GuestPageMap, PageRange, PAGE_SIZE};
pub use pageset::{Confusion, PageSet};
pub use ucall::Ucall;
pub use vcpu::{VcpuError, VcpuEvent};
pub use vm::sync::SyncArgs;
pub use vm::{Vm, VmConfig, VmError};
