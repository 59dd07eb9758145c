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

use crate::kvm_raw::{self, DirtyRingMap};
use crate::page_map::{GuestPageMap, PAGE_SIZE};
use crate::pageset::PageSet;
use crate::vm::{Vm, VmError};
use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use kvm_ioctls::{Kvm, VmFd};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Words per scan block: 64 words = 4096 pages = 16 MiB of guest memory.
const BLOCK_WORDS: usize = 64;
/// Pages per scan block.
const BLOCK_PAGES: u64 = BLOCK_WORDS as u64 * 64;

/// Default longest KVM_CLEAR_DIRTY_LOG range: 1 GiB of 4 KiB pages.
pub const DEFAULT_MAX_CLEAR_PAGES: u64 = 1 << 18;

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

/// Which KVM interface reports dirty pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirtyMode {
    /// KVM_GET_DIRTY_LOG (report and re-protect in one call).
    GetLog,
    /// KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG in ranges (MANUAL_DIRTY_LOG_PROTECT2).
    ClearLog,
    /// Per-vCPU dirty rings + KVM_RESET_DIRTY_RINGS.
    Ring,
}

impl DirtyMode {
    /// Every mode, in the kernel selftest's order.
    pub const ALL: [DirtyMode; 3] = [DirtyMode::GetLog, DirtyMode::ClearLog, DirtyMode::Ring];

    /// The kernel selftest's name for the mode (`dirty-log`, `clear-log`, `dirty-ring`).
    pub fn name(self) -> &'static str {
        match self {
            DirtyMode::GetLog => "dirty-log",
            DirtyMode::ClearLog => "clear-log",
            DirtyMode::Ring => "dirty-ring",
        }
    }

    /// Whether this host's KVM offers the mode, and with what.
    pub fn support(self, kvm: &Kvm) -> ModeSupport {
        let cap = |c: u32| kvm.check_extension_raw(u64::from(c));
        let (available, detail) = match self {
            DirtyMode::GetLog => (true, "KVM_GET_DIRTY_LOG".to_string()),
            DirtyMode::ClearLog => {
                let caps = cap(kvm_raw::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
                if caps <= 0 {
                    (
                        false,
                        "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is not offered by this kernel"
                            .to_string(),
                    )
                } else {
                    let init = caps as u64 & kvm_raw::INITIALLY_SET != 0;
                    (
                        true,
                        format!(
                            "MANUAL_DIRTY_LOG_PROTECT2 = {caps}{}",
                            if init { " (INITIALLY_SET offered)" } else { "" }
                        ),
                    )
                }
            }
            DirtyMode::Ring => {
                let acq = cap(kvm_raw::KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
                let plain = cap(kvm_raw::KVM_CAP_DIRTY_LOG_RING);
                let gfn = std::mem::size_of::<kvm_raw::KvmDirtyGfn>() as i32;
                if acq > 0 {
                    (
                        true,
                        format!(
                            "KVM_CAP_DIRTY_LOG_RING_ACQ_REL, up to {} entries per vCPU",
                            acq / gfn
                        ),
                    )
                } else if plain > 0 {
                    (
                        true,
                        format!(
                            "KVM_CAP_DIRTY_LOG_RING (no ACQ_REL), up to {} entries per vCPU",
                            plain / gfn
                        ),
                    )
                } else {
                    (
                        false,
                        "KVM_CAP_DIRTY_LOG_RING(_ACQ_REL) is not offered by this kernel"
                            .to_string(),
                    )
                }
            }
        };
        ModeSupport {
            mode: self,
            available,
            detail,
        }
    }

    /// Largest dirty ring (entries per vCPU) KVM accepts, 0 without ring support.
    pub fn max_ring_entries(kvm: &Kvm) -> u32 {
        let bytes = kvm
            .check_extension_raw(u64::from(kvm_raw::KVM_CAP_DIRTY_LOG_RING_ACQ_REL))
            .max(kvm.check_extension_raw(u64::from(kvm_raw::KVM_CAP_DIRTY_LOG_RING)))
            .max(0);
        bytes as u32 / std::mem::size_of::<kvm_raw::KvmDirtyGfn>() as u32
    }
}

impl fmt::Display for DirtyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode name that is not one of `dirty-log`, `clear-log`, `dirty-ring`.
#[derive(Debug, thiserror::Error)]
#[error("unknown dirty tracking mode '{0}' (expected dirty-log, clear-log or dirty-ring)")]
pub struct UnknownDirtyMode(pub String);

impl FromStr for DirtyMode {
    type Err = UnknownDirtyMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dirty-log" | "get-log" => Ok(DirtyMode::GetLog),
            "clear-log" => Ok(DirtyMode::ClearLog),
            "dirty-ring" | "ring" => Ok(DirtyMode::Ring),
            _ => Err(UnknownDirtyMode(s.to_string())),
        }
    }
}

/// Whether a mode is available, with the capability found or the reason it is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeSupport {
    /// The mode.
    pub mode: DirtyMode,
    /// Whether it can be used.
    pub available: bool,
    /// The capability used when available, the reason otherwise.
    pub detail: String,
}

/// How to track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyOptions {
    /// The KVM interface.
    pub mode: DirtyMode,
    /// ClearLog only: enable with KVM_DIRTY_LOG_INITIALLY_SET (when offered), so enabling logging
    /// write-protects nothing and the first harvest reports every page.
    pub initially_set: bool,
    /// ClearLog only: longest single KVM_CLEAR_DIRTY_LOG range in pages (bounds mmu_lock hold
    /// time); rounded up to 4096 pages.
    pub max_clear_pages: u64,
    /// ClearLog only: scan the fetched bitmap and re-protect only runs of dirty 16 MiB blocks, so
    /// a clean slot never takes mmu_lock in KVM_CLEAR_DIRTY_LOG (costs one userspace pass over
    /// the bitmap). Off (default): hand KVM the whole fetched bitmap, as the kernel selftests do;
    /// KVM skips clean words itself.
    pub clear_dirty_runs_only: bool,
}

impl DirtyOptions {
    /// Defaults for `mode`: no INITIALLY_SET, 1 GiB clear ranges.
    pub fn new(mode: DirtyMode) -> Self {
        DirtyOptions {
            mode,
            initially_set: false,
            max_clear_pages: DEFAULT_MAX_CLEAR_PAGES,
            clear_dirty_runs_only: false,
        }
    }
}

/// Cost and yield of harvests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HarvestStats {
    /// Harvests counted.
    pub harvests: u64,
    /// ns in KVM_GET_DIRTY_LOG.
    pub get_ns: u64,
    /// ns in KVM_CLEAR_DIRTY_LOG (ClearLog) or KVM_RESET_DIRTY_RINGS (Ring).
    pub clear_ns: u64,
    /// ns in userspace: scanning bitmaps, building clear ranges, collecting ring entries.
    pub user_ns: u64,
    /// ioctls issued.
    pub ioctls: u64,
    /// Dirty pages reported.
    pub pages: u64,
    /// Bytes of bitmap KVM copied out, or of ring entries read.
    pub bitmap_bytes: u64,
    /// Ring entries collected by harvests.
    pub ring_entries: u64,
    /// Ring entries drained on ring-full exits and merged by harvests.
    pub ring_full_entries: u64,
    /// ns the vCPU threads spent draining full rings (collect + reset), merged by harvests.
    pub ring_full_ns: u64,
}

impl HarvestStats {
    /// ns in ioctls.
    pub fn ioctl_ns(&self) -> u64 {
        self.get_ns + self.clear_ns
    }

    /// ns in total.
    pub fn total_ns(&self) -> u64 {
        self.ioctl_ns() + self.user_ns
    }

    /// Bytes of guest memory reported dirty.
    pub fn dirty_bytes(&self) -> u64 {
        self.pages * PAGE_SIZE
    }

    /// Userspace time as a fraction of ioctl time (0 when no ioctl time was spent).
    pub fn user_overhead(&self) -> f64 {
        if self.ioctl_ns() == 0 {
            0.0
        } else {
            self.user_ns as f64 / self.ioctl_ns() as f64
        }
    }

    /// Adds `o` to these totals.
    pub fn add(&mut self, o: &HarvestStats) {
        self.harvests += o.harvests;
        self.get_ns += o.get_ns;
        self.clear_ns += o.clear_ns;
        self.user_ns += o.user_ns;
        self.ioctls += o.ioctls;
        self.pages += o.pages;
        self.bitmap_bytes += o.bitmap_bytes;
        self.ring_entries += o.ring_entries;
        self.ring_full_entries += o.ring_full_entries;
        self.ring_full_ns += o.ring_full_ns;
    }
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

/// Dense page index base per memslot number, for translating ring entries.
#[derive(Debug, Clone)]
struct SlotBases {
    /// `(first_page, pages)` indexed by slot number; `pages == 0` for untracked slots.
    by_slot: Vec<(u64, u64)>,
}

impl SlotBases {
    fn index(&self, slot: u32, offset: u64) -> Option<u64> {
        let &(first, pages) = self.by_slot.get((slot & 0xffff) as usize)?;
        (offset < pages).then_some(first + offset)
    }
}

/// Ring state shared with the vCPU threads' ring-full handler.
struct RingShared {
    rings: Vec<Mutex<DirtyRingMap>>,
    /// Entries drained on ring-full exits, not yet harvested.
    pending: Mutex<PageSet>,
    pending_entries: AtomicU64,
    pending_ns: AtomicU64,
    bad_entries: AtomicU64,
    bases: SlotBases,
    vm_fd: Arc<VmFd>,
}

impl fmt::Debug for RingShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingShared")
            .field("rings", &self.rings.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RingShared {
    /// Runs on vCPU `vcpu`'s thread when its ring is full: drain it and re-arm KVM.
    fn drain_full(&self, vcpu: usize) {
        let t0 = Instant::now();
        if let Some(ring) = self.rings.get(vcpu) {
            let mut ring = lock(ring);
            let mut pending = lock(&self.pending);
            let n = ring.collect(|slot, offset| match self.bases.index(slot, offset) {
                Some(p) => {
                    pending.insert(p);
                }
                None => {
                    self.bad_entries.fetch_add(1, Ordering::Relaxed);
                }
            });
            // Counted under the lock, so a harvest that sees the pages also sees the count.
            self.pending_entries
                .fetch_add(u64::from(n), Ordering::Relaxed);
        }
        // A failed reset leaves the ring full: KVM exits again at once and the next harvest's
        // reset reports the error, so there is nothing more useful to do on this thread.
        let _ = kvm_raw::reset_dirty_rings(&self.vm_fd);
        self.pending_ns
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Re-protects pages `first_page..end_page` (`first_page` a multiple of 64) of `slot` whose bits
/// are set in the slot's fetched `bitmap`, with one KVM_CLEAR_DIRTY_LOG, and accounts for it.
fn clear_range(
    vm_fd: &VmFd,
    slot: u32,
    first_page: u64,
    end_page: u64,
    bitmap: &[u64],
    split: &mut Split,
    st: &mut HarvestStats,
) -> Result<(), DirtyError> {
    let w0 = (first_page / 64) as usize;
    let w1 = kvm_raw::bitmap_words(end_page);
    let (r, ns) = split.ioctl(|| {
        kvm_raw::clear_dirty_log(
            vm_fd,
            slot,
            first_page,
            (end_page - first_page) as u32,
            &bitmap[w0..w1],
        )
    });
    r.map_err(|err| DirtyError::Kvm {
        what: "KVM_CLEAR_DIRTY_LOG",
        slot,
        err,
    })?;
    st.clear_ns += ns;
    st.ioctls += 1;
    Ok(())
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
                    let caps =
                        kvm_raw::check_cap(&vm_fd, kvm_raw::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
                    initially_set = opts.initially_set && caps as u64 & kvm_raw::INITIALLY_SET != 0;
                    let flags = kvm_raw::MANUAL_PROTECT_ENABLE
                        | if initially_set {
                            kvm_raw::INITIALLY_SET
                        } else {
                            0
                        };
                    kvm_raw::enable_manual_protect(&vm_fd, flags).map_err(|err| {
                        DirtyError::Kvm {
                            what: "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)",
                            slot: 0,
                            err,
                        }
                    })?;
                }
            }
            DirtyMode::Ring => {
                let Some(entries) = ring_entries else {
                    return Err(DirtyError::VmMismatch {
                        mode,
                        why: "the VM was built without VmConfig::dirty_ring_entries".into(),
                    });
                };
                if vm.pending_vcpu_fds().len() != vm.vcpus() {
                    return Err(DirtyError::VmMismatch {
                        mode,
                        why:
                            "the vCPUs were already started; set up ring tracking before Vm::start"
                                .into(),
                    });
                }
                let rings = vm
                    .pending_vcpu_fds()
                    .iter()
                    .map(|fd| DirtyRingMap::new(fd, entries).map(Mutex::new))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| DirtyError::Kvm {
                        what: "mmap of the vCPU dirty ring",
                        slot: 0,
                        err,
                    })?;
                let max_slot = slots.iter().map(|s| s.slot).max().unwrap_or(0) as usize;
                let mut by_slot = vec![(0, 0); max_slot + 1];
                for s in &slots {
                    by_slot[s.slot as usize] = (s.first_page, s.pages);
                }
                let shared = Arc::new(RingShared {
                    rings,
                    pending: Mutex::new(PageSet::new(total)),
                    pending_entries: AtomicU64::new(0),
                    pending_ns: AtomicU64::new(0),
                    bad_entries: AtomicU64::new(0),
                    bases: SlotBases { by_slot },
                    vm_fd: vm_fd.clone(),
                });
                let handler = shared.clone();
                vm.set_ring_full_handler(Arc::new(move |vcpu| handler.drain_full(vcpu)));
                ring_cap = Some(
                    if kvm_raw::check_cap(&vm_fd, kvm_raw::KVM_CAP_DIRTY_LOG_RING_ACQ_REL) > 0 {
                        kvm_raw::KVM_CAP_DIRTY_LOG_RING_ACQ_REL
                    } else {
                        kvm_raw::KVM_CAP_DIRTY_LOG_RING
                    },
                );
                ring = Some(shared);
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

    fn harvest_bitmaps(
        &mut self,
        out: &mut PageSet,
        st: &mut HarvestStats,
        split: &mut Split,
    ) -> Result<(), DirtyError> {
        let clear = self.opts.mode == DirtyMode::ClearLog;
        let max_clear_blocks = self.opts.max_clear_pages.div_ceil(BLOCK_PAGES).max(1) as usize;
        for i in 0..self.slots.len() {
            let s = self.slots[i];
            let words = kvm_raw::bitmap_words(s.pages);
            let first_word = (s.first_page / 64) as usize;
            if !s.logging {
                split.user();
                if s.aligned {
                    out.words_mut()[first_word..first_word + words].fill(0);
                } else {
                    clear_bits(out.words_mut(), s.first_page, s.pages);
                }
                continue;
            }
            // Where KVM writes: the result itself when the slot is word-aligned in it.
            let bitmap: &mut [u64] = if s.aligned {
                &mut out.words_mut()[first_word..first_word + words]
            } else {
                &mut self.scratch[..words]
            };
            let (r, ns) =
                split.ioctl(|| kvm_raw::get_dirty_log(&self.vm_fd, s.slot, s.pages, bitmap));
            r.map_err(|err| DirtyError::Kvm {
                what: "KVM_GET_DIRTY_LOG",
                slot: s.slot,
                err,
            })?;
            st.get_ns += ns;
            st.ioctls += 1;
            st.bitmap_bytes += words as u64 * 8;

            if clear && !self.opts.clear_dirty_runs_only {
                // Whole bitmap, in ranges of at most max_clear_pages.
                let step = (max_clear_blocks as u64 * BLOCK_PAGES).max(64);
                let mut first_page = 0;
                while first_page < s.pages {
                    let end_page = (first_page + step).min(s.pages);
                    clear_range(&self.vm_fd, s.slot, first_page, end_page, bitmap, split, st)?;
                    first_page = end_page;
                }
            } else if clear {
                block_counts(bitmap, &mut self.blocks);
                // Re-protect each run of non-empty blocks with one CLEAR (capped in length).
                let mut b = 0;
                let nblocks = self.blocks.len();
                while b < nblocks {
                    if self.blocks[b] == 0 {
                        b += 1;
                        continue;
                    }
                    let start = b;
                    while b < nblocks && self.blocks[b] != 0 && b - start < max_clear_blocks {
                        b += 1;
                    }
                    let first_page = start as u64 * BLOCK_PAGES;
                    let end_page = (b as u64 * BLOCK_PAGES).min(s.pages);
                    clear_range(&self.vm_fd, s.slot, first_page, end_page, bitmap, split, st)?;
                }
            }
            if !s.aligned {
                clear_bits(out.words_mut(), s.first_page, s.pages);
                or_shifted(
                    out.words_mut(),
                    s.first_page,
                    &self.scratch[..words],
                    s.pages,
                );
            }
        }
        Ok(())
    }

    fn harvest_ring(
        &mut self,
        out: &mut PageSet,
        st: &mut HarvestStats,
        split: &mut Split,
    ) -> Result<(), DirtyError> {
        split.user();
        let Some(ring) = self.ring.clone() else {
            return Ok(());
        };
        out.clear();
        let mut bad = None;
        for r in &ring.rings {
            let mut r = lock(r);
            let n = r.collect(|slot, offset| match ring.bases.index(slot, offset) {
                Some(p) => {
                    if out.insert(p) {
                        st.pages += 1;
                    }
                }
                None => bad = Some((slot, offset)),
            });
            st.ring_entries += u64::from(n);
        }
        {
            let mut pending = lock(&ring.pending);
            if ring.pending_entries.load(Ordering::Relaxed) > 0 {
                for (o, p) in out.words_mut().iter_mut().zip(pending.words_mut()) {
                    if *p != 0 {
                        st.pages += u64::from((*p & !*o).count_ones());
                        *o |= *p;
                        *p = 0;
                    }
                }
                st.ring_full_entries += ring.pending_entries.swap(0, Ordering::Relaxed);
                st.ring_full_ns += ring.pending_ns.swap(0, Ordering::Relaxed);
            }
        }
        st.bitmap_bytes += (st.ring_entries + st.ring_full_entries)
            * std::mem::size_of::<kvm_raw::KvmDirtyGfn>() as u64;
        let (r, ns) = split.ioctl(|| kvm_raw::reset_dirty_rings(&self.vm_fd));
        r.map_err(|err| DirtyError::Kvm {
            what: "KVM_RESET_DIRTY_RINGS",
            slot: 0,
            err,
        })?;
        st.clear_ns += ns;
        st.ioctls += 1;
        if let Some((slot, offset)) = bad {
            return Err(DirtyError::BadRingEntry { slot, offset });
        }
        let bad_full = ring.bad_entries.swap(0, Ordering::Relaxed);
        if bad_full > 0 {
            return Err(DirtyError::BadRingEntries(bad_full));
        }
        Ok(())
    }
}

/// Splits a harvest's time into ioctl and userspace time with two clock reads per ioctl and one
/// at the end (clock reads cost ~40 ns here, a fifth of a clean 1 GiB harvest's userspace work).
#[derive(Debug, Default)]
struct Split {
    mark: Option<Instant>,
    user_ns: u64,
}

impl Split {
    /// Userspace work starts now (no-op once the clock runs).
    fn user(&mut self) {
        if self.mark.is_none() {
            self.mark = Some(Instant::now());
        }
    }

    /// Runs and times one ioctl; the time since the last mark counts as userspace.
    fn ioctl<T>(&mut self, f: impl FnOnce() -> T) -> (T, u64) {
        let start = Instant::now();
        if let Some(m) = self.mark {
            self.user_ns += start.duration_since(m).as_nanos() as u64;
        }
        let r = f();
        let end = Instant::now();
        self.mark = Some(end);
        (r, end.duration_since(start).as_nanos() as u64)
    }

    /// Userspace ns, counting up to now.
    fn finish(&mut self) -> u64 {
        if let Some(m) = self.mark.take() {
            self.user_ns += m.elapsed().as_nanos() as u64;
        }
        self.user_ns
    }
}

/// Fills `counts` with the number of set bits of each 64-word block of `words`.
///
/// Clean blocks cost one OR-reduction; the AVX2 build of the loop is chosen at run time.
pub fn block_counts(words: &[u64], counts: &mut Vec<u32>) {
    counts.clear();
    counts.resize(words.len().div_ceil(BLOCK_WORDS), 0);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
        {
            // SAFETY: the CPU supports AVX-512F and VPOPCNTDQ (checked just above).
            unsafe { block_counts_avx512(words, counts) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("popcnt")
        {
            // SAFETY: the CPU supports AVX2 and POPCNT (checked just above).
            unsafe { block_counts_avx2(words, counts) };
            return;
        }
    }
    block_counts_generic(words, counts);
}

#[inline(always)]
fn block_counts_generic(words: &[u64], counts: &mut [u32]) {
    // A whole clean bitmap (the common case between writes) is one unrolled vector OR pass.
    if words.iter().fold(0u64, |a, &w| a | w) == 0 {
        counts.fill(0);
        return;
    }
    for (block, c) in words.chunks(BLOCK_WORDS).zip(counts.iter_mut()) {
        let any = block.iter().fold(0u64, |a, &w| a | w);
        *c = if any == 0 {
            0
        } else {
            block.iter().map(|w| w.count_ones()).sum()
        };
    }
}

/// # Safety
/// The CPU must support AVX2 and POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn block_counts_avx2(words: &[u64], counts: &mut [u32]) {
    block_counts_generic(words, counts);
}

/// # Safety
/// The CPU must support AVX-512F and VPOPCNTDQ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
unsafe fn block_counts_avx512(words: &[u64], counts: &mut [u32]) {
    block_counts_generic(words, counts);
}

/// Clears bits `start..start + len` of `words`.
fn clear_bits(words: &mut [u64], start: u64, len: u64) {
    let end = start + len;
    let mut p = start;
    while p < end {
        let w = (p / 64) as usize;
        let bit = p % 64;
        let n = (64 - bit).min(end - p);
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << bit
        };
        words[w] &= !mask;
        p += n;
    }
}

/// ORs the first `len` bits of `src` into `dst` at bit offset `at` (word by word, any shift).
fn or_shifted(dst: &mut [u64], at: u64, src: &[u64], len: u64) {
    let shift = (at % 64) as u32;
    let base = (at / 64) as usize;
    let nwords = len.div_ceil(64) as usize;
    for (i, &w) in src[..nwords].iter().enumerate() {
        let mut w = w;
        if i == nwords - 1 && len & 63 != 0 {
            w &= (1u64 << (len % 64)) - 1;
        }
        if w == 0 {
            continue;
        }
        dst[base + i] |= w << shift;
        if shift != 0 && base + i + 1 < dst.len() {
            dst[base + i + 1] |= w >> (64 - shift);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mode_names_round_trip() {
        for m in DirtyMode::ALL {
            assert_eq!(m.name().parse::<DirtyMode>().unwrap(), m);
        }
        assert!("bogus".parse::<DirtyMode>().is_err());
    }

    #[test]
    fn block_counts_skip_clean_blocks() {
        let mut words = vec![0u64; 200];
        words[3] = 0b1011;
        words[130] = u64::MAX;
        let mut c = Vec::new();
        block_counts(&words, &mut c);
        assert_eq!(c, vec![3, 0, 64, 0]);
    }

    proptest! {
        #[test]
        fn or_shifted_matches_bitwise(at in 0u64..300, len in 1u64..400,
                                      bits in proptest::collection::vec(any::<u64>(), 7)) {
            let mut dst = vec![0u64; 12];
            or_shifted(&mut dst, at, &bits, len);
            let mut want = PageSet::new(768);
            for i in 0..len {
                if bits[(i / 64) as usize] >> (i % 64) & 1 == 1 {
                    want.insert(at + i);
                }
            }
            prop_assert_eq!(&dst[..], want.words());
            clear_bits(&mut dst, at, len);
            prop_assert!(dst.iter().all(|&w| w == 0));
        }
    }
}
