//! Dirty page tracking: KVM's three interfaces behind one harvest that returns a [`PageSet`].
//!
//! - [`DirtyMode::GetLog`]: KVM_GET_DIRTY_LOG, which reports and re-protects in one call.
//! - [`DirtyMode::ClearLog`]: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2; GET only reports, and the tracker
//!   re-protects with KVM_CLEAR_DIRTY_LOG over the ranges that were dirty (optionally with
//!   INITIALLY_SET, so enabling logging write-protects nothing and the first harvest is "all").
//! - [`DirtyMode::Ring`]: per-vCPU dirty rings (ACQ_REL where offered), collected from userspace
//!   and re-armed with KVM_RESET_DIRTY_RINGS; ring-full exits are drained on the vCPU's thread
//!   into a pending set the next harvest merges, so no entry is lost.
//!
//! KVM's bitmap layout is the [`PageSet`] layout, so in the bitmap modes KVM writes straight into
//! the result's words for every memslot that starts on a 64-page boundary; the userspace work is a
//! vectorised scan of 64-word blocks (clean blocks cost one OR-reduction, never a per-bit loop).

//!
//! Homes: [`mode`] (which interface, whether the host offers it, options), [`bitmap`] (GET and
//! CLEAR dirty log), [`ring`] (dirty rings and ring-full drains), [`stats`] (harvest cost). The
//! bit work itself (block scans, shifted ORs, range clears) lives on [`PageSet`].

mod bitmap;
pub mod mode;
mod ring;
pub mod stats;

pub use mode::{DirtyMode, DirtyOptions, ModeSupport, UnknownDirtyMode, DEFAULT_MAX_CLEAR_PAGES};
pub use stats::HarvestStats;

use crate::kvm_raw;
use crate::page_map::GuestPageMap;
use crate::pageset::PageSet;
use crate::vm::{Vm, VmError};
use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use kvm_ioctls::VmFd;
use ring::RingShared;
use stats::Split;
use std::sync::Arc;

/// Errors from dirty tracking.
#[derive(Debug, thiserror::Error)]
pub enum DirtyError {
    /// The mode cannot be used on this host.
    #[error("dirty tracking mode {mode} is not available: {reason}")]
    Unavailable {
        /// The mode.
        mode: DirtyMode,
        /// Why.
        reason: String,
    },
    /// The VM was built for another mode (a dirty ring, or none when one is needed).
    #[error("dirty tracking mode {mode} does not fit this VM: {why}")]
    VmMismatch {
        /// The mode.
        mode: DirtyMode,
        /// What does not fit.
        why: String,
    },
    /// A KVM ioctl failed.
    #[error("{what} on memslot {slot}: {err}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The memslot (0 for VM-wide ioctls).
        slot: u32,
        /// The error.
        #[source]
        err: kvm_ioctls::Error,
    },
    /// Re-registering a memslot to switch logging failed.
    #[error("switching dirty logging on memslot {slot}: {err}")]
    SetFlags {
        /// The memslot.
        slot: u32,
        /// The error.
        #[source]
        err: VmError,
    },
    /// The slot is not a test memslot of this VM.
    #[error("memslot {0} is not test memory of this VM")]
    NoSuchSlot(u32),
    /// The output set does not cover the VM's test pages.
    #[error("harvest target holds {got} pages, the VM has {want}")]
    WrongCapacity {
        /// Capacity of the given set.
        got: u64,
        /// Pages of test memory.
        want: u64,
    },
    /// Ring-full drains met entries naming pages outside test memory.
    #[error("{0} dirty ring entries drained on ring-full exits were outside test memory")]
    BadRingEntries(u64),
    /// A dirty ring entry named a page outside test memory.
    #[error("dirty ring entry for memslot {slot} page {offset} is outside test memory")]
    BadRingEntry {
        /// The memslot in the entry.
        slot: u32,
        /// The page offset in the entry.
        offset: u64,
    },
}

/// One tracked test memslot.
#[derive(Clone, Copy, Debug)]
struct TrackedSlot {
    slot: u32,
    first_page: u64,
    pages: u64,
    logging: bool,
    /// KVM can write this slot's bitmap straight into the result's words.
    aligned: bool,
}

/// Tracks writes to a VM's test memory; every harvest returns the pages written since the last.
#[derive(Debug)]
pub struct DirtyTracker {
    opts: DirtyOptions,
    vm_fd: Arc<VmFd>,
    page_map: GuestPageMap,
    slots: Vec<TrackedSlot>,
    scratch: Vec<u64>,
    blocks: Vec<u32>,
    ring: Option<Arc<RingShared>>,
    ring_cap: Option<u32>,
    initially_set: bool,
    last: HarvestStats,
    totals: HarvestStats,
}

impl DirtyTracker {
    /// Sets up tracking of `vm`'s test memslots in `opts.mode`; logging starts off.
    ///
    /// Ring mode needs a VM built with [`crate::VmConfig::dirty_ring_entries`] and must be set up
    /// before [`Vm::start`] (it maps each vCPU's ring and installs the ring-full handler); the
    /// bitmap modes need a VM without a ring (KVM_GET_DIRTY_LOG fails with ENXIO otherwise).
    pub fn new(vm: &mut Vm, opts: DirtyOptions) -> Result<Self, DirtyError> {
        let mode = opts.mode;
        let support = mode.support(vm.kvm());
        if !support.available {
            return Err(DirtyError::Unavailable {
                mode,
                reason: support.detail,
            });
        }
        let ring_entries = vm.config().dirty_ring_entries;
        let page_map = vm.page_map().clone();
        let total = page_map.len();
        let slots: Vec<TrackedSlot> = page_map
            .ranges()
            .iter()
            .map(|r| TrackedSlot {
                slot: r.slot,
                first_page: r.first_page,
                pages: r.pages,
                logging: false,
                aligned: r.first_page % 64 == 0
                    && (r.pages % 64 == 0 || r.first_page + r.pages == total),
            })
            .collect();
        let vm_fd = vm.vm_fd().clone();
        let mut ring = None;
        let mut ring_cap = None;
        let mut initially_set = false;
        match mode {
            DirtyMode::GetLog | DirtyMode::ClearLog => {
                if let Some(n) = ring_entries {
                    return Err(DirtyError::VmMismatch {
                        mode,
                        why: format!(
                            "the VM has a {n}-entry dirty ring, which disables KVM_GET_DIRTY_LOG"
                        ),
                    });
                }
                if mode == DirtyMode::ClearLog {
                    initially_set = bitmap::enable_manual_protect(&vm_fd, opts.initially_set)?;
                }
            }
            DirtyMode::Ring => {
                let (shared, cap) = RingShared::attach(vm, &slots, total)?;
                ring = Some(shared);
                ring_cap = Some(cap);
            }
        }
        let max_words = slots
            .iter()
            .map(|s| kvm_raw::bitmap_words(s.pages))
            .max()
            .unwrap_or(0);
        Ok(DirtyTracker {
            opts,
            vm_fd,
            page_map,
            slots,
            scratch: vec![0; max_words + 1],
            blocks: Vec::new(),
            ring,
            ring_cap,
            initially_set,
            last: HarvestStats::default(),
            totals: HarvestStats::default(),
        })
    }

    /// The mode.
    pub fn mode(&self) -> DirtyMode {
        self.opts.mode
    }

    /// Whether INITIALLY_SET is in effect (ClearLog).
    pub fn initially_set(&self) -> bool {
        self.initially_set
    }

    /// The ring capability in use (Ring mode): KVM_CAP_DIRTY_LOG_RING_ACQ_REL or _RING.
    pub fn ring_cap(&self) -> Option<u32> {
        self.ring_cap
    }

    /// The pages a harvest covers.
    pub fn page_map(&self) -> &GuestPageMap {
        &self.page_map
    }

    /// Test memslots and whether each is logging.
    pub fn logging(&self) -> Vec<(u32, bool)> {
        self.slots.iter().map(|s| (s.slot, s.logging)).collect()
    }

    /// Stats of the last harvest.
    pub fn last_stats(&self) -> HarvestStats {
        self.last
    }

    /// Stats of every harvest so far.
    pub fn totals(&self) -> HarvestStats {
        self.totals
    }

    /// Switches dirty logging of test memslot `slot` (KVM_MEM_LOG_DIRTY_PAGES), at any time.
    ///
    /// Turning it on write-protects the slot (except with INITIALLY_SET, where the slot starts all
    /// dirty); turning it off drops KVM's bitmap, so pages written since the last harvest are
    /// reported only in Ring mode (entries already pushed stay in the ring).
    pub fn set_logging(&mut self, vm: &Vm, slot: u32, on: bool) -> Result<(), DirtyError> {
        let s = self
            .slots
            .iter_mut()
            .find(|s| s.slot == slot)
            .ok_or(DirtyError::NoSuchSlot(slot))?;
        let flags = if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 };
        vm.set_memslot_flags(slot, flags)
            .map_err(|err| DirtyError::SetFlags { slot, err })?;
        s.logging = on;
        Ok(())
    }

    /// Switches dirty logging of every test memslot.
    pub fn set_logging_all(&mut self, vm: &Vm, on: bool) -> Result<(), DirtyError> {
        let slots: Vec<u32> = self.slots.iter().map(|s| s.slot).collect();
        for slot in slots {
            self.set_logging(vm, slot, on)?;
        }
        Ok(())
    }

    /// Pages written since the previous harvest (or since logging was enabled), re-armed.
    pub fn harvest(&mut self) -> Result<PageSet, DirtyError> {
        let mut out = PageSet::new(self.page_map.len());
        self.harvest_into(&mut out)?;
        Ok(out)
    }

    /// Like [`DirtyTracker::harvest`], overwriting `out` (which must span the VM's test pages)
    /// so a caller can reuse one set; returns this harvest's stats.
    pub fn harvest_into(&mut self, out: &mut PageSet) -> Result<HarvestStats, DirtyError> {
        if out.capacity() != self.page_map.len() {
            return Err(DirtyError::WrongCapacity {
                got: out.capacity(),
                want: self.page_map.len(),
            });
        }
        let mut st = HarvestStats {
            harvests: 1,
            ..Default::default()
        };
        let mut split = Split::default();
        match self.opts.mode {
            DirtyMode::GetLog | DirtyMode::ClearLog => {
                self.harvest_bitmaps(out, &mut st, &mut split)?
            }
            DirtyMode::Ring => self.harvest_ring(out, &mut st, &mut split)?,
        }
        st.user_ns = split.finish();
        if self.opts.mode != DirtyMode::Ring {
            // Counted after the timed region: a statistic for reports, not part of harvesting.
            st.pages = out.count();
        }
        self.last = st;
        self.totals.add(&st);
        Ok(st)
    }
}
