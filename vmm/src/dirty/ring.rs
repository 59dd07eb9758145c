//! The per-vCPU dirty rings: collected by harvests, drained on ring-full exits on the vCPU's own
//! thread, re-armed with KVM_RESET_DIRTY_RINGS.

use super::stats::{HarvestStats, Split};
use super::{DirtyError, DirtyMode, DirtyTracker, TrackedSlot};
use crate::kvm_raw::{self, DirtyRingMap};
use crate::pageset::PageSet;
use crate::vm::Vm;
use kvm_ioctls::VmFd;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

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
pub(super) struct RingShared {
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
    /// Maps every vCPU's ring of `vm` (built with `VmConfig::dirty_ring_entries`, vCPUs not yet
    /// started) and installs the ring-full handler; returns the state and the ring capability
    /// in use (KVM_CAP_DIRTY_LOG_RING_ACQ_REL or _RING).
    pub(super) fn attach(
        vm: &mut Vm,
        slots: &[TrackedSlot],
        total: u64,
    ) -> Result<(Arc<Self>, u32), DirtyError> {
        let mode = DirtyMode::Ring;
        let Some(entries) = vm.config().dirty_ring_entries else {
            return Err(DirtyError::VmMismatch {
                mode,
                why: "the VM was built without VmConfig::dirty_ring_entries".into(),
            });
        };
        if vm.pending_vcpu_fds().len() != vm.vcpus() {
            return Err(DirtyError::VmMismatch {
                mode,
                why: "the vCPUs were already started; set up ring tracking before Vm::start".into(),
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
        for s in slots {
            by_slot[s.slot as usize] = (s.first_page, s.pages);
        }
        let vm_fd = vm.vm_fd().clone();
        let cap = if kvm_raw::check_cap(&vm_fd, kvm_raw::KVM_CAP_DIRTY_LOG_RING_ACQ_REL) > 0 {
            kvm_raw::KVM_CAP_DIRTY_LOG_RING_ACQ_REL
        } else {
            kvm_raw::KVM_CAP_DIRTY_LOG_RING
        };
        let shared = Arc::new(RingShared {
            rings,
            pending: Mutex::new(PageSet::new(total)),
            pending_entries: AtomicU64::new(0),
            pending_ns: AtomicU64::new(0),
            bad_entries: AtomicU64::new(0),
            bases: SlotBases { by_slot },
            vm_fd,
        });
        let handler = shared.clone();
        vm.set_ring_full_handler(Arc::new(move |vcpu| handler.drain_full(vcpu)));
        Ok((shared, cap))
    }

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

impl DirtyTracker {
    /// One harvest in Ring mode: collect every ring, merge what ring-full exits drained, reset.
    pub(super) fn harvest_ring(
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
                st.pages += out.take_from(&mut pending);
                st.ring_full_entries += ring.pending_entries.swap(0, Ordering::Relaxed);
                st.ring_full_ns += ring.pending_ns.swap(0, Ordering::Relaxed);
            }
        }
        st.bitmap_bytes +=
            (st.ring_entries + st.ring_full_entries) * kvm_raw::DIRTY_GFN_BYTES as u64;
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
