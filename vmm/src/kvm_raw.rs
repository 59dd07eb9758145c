//! Raw KVM ioctls that kvm-ioctls 0.25 does not wrap (KVM_CLEAR_DIRTY_LOG, the dirty ring: enable,
//! mmap, reset; KVM_GET_STATS_FD) or wraps with an allocation per call (KVM_GET_DIRTY_LOG, here
//! into a caller's buffer). Structs, capabilities and flags come from kvm-bindings; the request
//! numbers are declared with vmm-sys-util's `ioctl_*_nr!` over those structs, as kvm-ioctls does.

use crate::page_map::PAGE_SIZE;
pub use kvm_bindings::{
    kvm_clear_dirty_log, kvm_dirty_gfn, kvm_dirty_log, KVM_CAP_DIRTY_LOG_RING,
    KVM_CAP_DIRTY_LOG_RING_ACQ_REL, KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP,
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_PAGE_OFFSET,
};
use kvm_ioctls::{VcpuFd, VmFd};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::{ioctl, ioctl_with_ref};

/// Request numbers of the ioctls kvm-ioctls 0.25 does not expose, declared as kvm-ioctls
/// declares its own (`ioctl_*_nr!` over kvm-bindings' structs).
#[allow(missing_docs)]
mod nr {
    use kvm_bindings::{kvm_clear_dirty_log, kvm_dirty_log, KVMIO};
    use vmm_sys_util::{ioctl_io_nr, ioctl_iow_nr, ioctl_iowr_nr};

    ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);
    ioctl_iowr_nr!(KVM_CLEAR_DIRTY_LOG, KVMIO, 0xc0, kvm_clear_dirty_log);
    ioctl_io_nr!(KVM_RESET_DIRTY_RINGS, KVMIO, 0xc7);
    ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);
}

/// KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, as the `args[0]` flag of KVM_ENABLE_CAP.
pub const MANUAL_PROTECT_ENABLE: u64 = kvm_bindings::KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE as u64;
/// KVM_DIRTY_LOG_INITIALLY_SET, as the `args[0]` flag of KVM_ENABLE_CAP.
pub const INITIALLY_SET: u64 = kvm_bindings::KVM_DIRTY_LOG_INITIALLY_SET as u64;

/// Dirty ring entry flag: dirty, published by KVM (KVM_DIRTY_GFN_F_DIRTY; kvm-bindings 0.14 has
/// only the mask).
pub const DIRTY_GFN_F_DIRTY: u32 = 1 << 0;
/// Dirty ring entry flag: collected by userspace, to be reset (KVM_DIRTY_GFN_F_RESET).
pub const DIRTY_GFN_F_RESET: u32 = 1 << 1;
const _: () = assert!(DIRTY_GFN_F_DIRTY | DIRTY_GFN_F_RESET == kvm_bindings::KVM_DIRTY_GFN_F_MASK);

/// Bytes of one dirty ring entry.
pub const DIRTY_GFN_BYTES: usize = std::mem::size_of::<kvm_dirty_gfn>();

fn check(rc: libc::c_int) -> Result<libc::c_int, kvm_ioctls::Error> {
    if rc < 0 {
        Err(errno::Error::last())
    } else {
        Ok(rc)
    }
}

/// Value of `KVM_CHECK_EXTENSION(cap)` on the VM.
pub fn check_cap(vm: &VmFd, cap: u32) -> i32 {
    vm.check_extension_raw(u64::from(cap))
}

/// Enables a VM capability with `args[0] = arg0`.
pub fn enable_cap(vm: &VmFd, cap: u32, arg0: u64) -> Result<(), kvm_ioctls::Error> {
    let mut c = kvm_bindings::kvm_enable_cap {
        cap,
        ..Default::default()
    };
    c.args[0] = arg0;
    vm.enable_cap(&c)
}

/// Enables the dirty ring (ACQ_REL when offered) with `entries` entries per vCPU; must precede
/// vCPU creation. Returns which capability was used.
pub fn enable_dirty_ring(vm: &VmFd, entries: u32) -> Result<u32, kvm_ioctls::Error> {
    let bytes = u64::from(entries) * DIRTY_GFN_BYTES as u64;
    let cap = if check_cap(vm, KVM_CAP_DIRTY_LOG_RING_ACQ_REL) > 0 {
        KVM_CAP_DIRTY_LOG_RING_ACQ_REL
    } else {
        KVM_CAP_DIRTY_LOG_RING
    };
    let max = check_cap(vm, cap);
    if max <= 0 {
        return Err(errno::Error::new(libc::EOPNOTSUPP));
    }
    enable_cap(vm, cap, bytes)?;
    // arm64 (the only architecture offering it) forces 4 KiB stage-2 mappings only for slots
    // with a dirty bitmap; without one, a write to a 2 MiB block (THP-backed memory) makes the
    // whole block writable and logs only its first page. The bitmap must exist before memslots.
    if check_cap(vm, KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP) > 0 {
        enable_cap(vm, KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP, 0)?;
    }
    Ok(cap)
}

/// Words of dirty bitmap KVM reads or writes for a slot of `pages` pages.
pub fn bitmap_words(pages: u64) -> usize {
    usize::try_from(pages.div_ceil(64)).expect("memslot too large for this host")
}

/// KVM_GET_DIRTY_LOG of `slot` (of `pages` pages) into `bitmap`, without allocating.
///
/// Without manual protection KVM also re-protects the pages it reports; with
/// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 it does not (see [`clear_dirty_log`]).
pub fn get_dirty_log(
    vm: &VmFd,
    slot: u32,
    pages: u64,
    bitmap: &mut [u64],
) -> Result<(), kvm_ioctls::Error> {
    assert!(bitmap.len() >= bitmap_words(pages), "bitmap too short");
    let mut arg = kvm_dirty_log {
        slot,
        ..Default::default()
    };
    arg.__bindgen_anon_1.dirty_bitmap = bitmap.as_mut_ptr().cast();
    // SAFETY: KVM_GET_DIRTY_LOG writes `bitmap_words(npages)` words to the bitmap pointer; the
    // caller states the slot's size and the buffer is at least that long (asserted). The VM fd is
    // valid and KVM fails with ENOENT for an unknown slot rather than writing anything.
    check(unsafe { ioctl_with_ref(vm, nr::KVM_GET_DIRTY_LOG(), &arg) }).map(|_| ())
}

/// Enables KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with `flags` ([`MANUAL_PROTECT_ENABLE`], optionally
/// with [`INITIALLY_SET`]); must precede enabling dirty logging on the slots it should affect.
pub fn enable_manual_protect(vm: &VmFd, flags: u64) -> Result<(), kvm_ioctls::Error> {
    enable_cap(vm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, flags)
}

/// KVM_CLEAR_DIRTY_LOG over `num_pages` pages from `first_page` of `slot`, clearing the pages
/// whose bits are set in `bitmap`.
pub fn clear_dirty_log(
    vm: &VmFd,
    slot: u32,
    first_page: u64,
    num_pages: u32,
    bitmap: &[u64],
) -> Result<(), kvm_ioctls::Error> {
    assert!(bitmap.len() * 64 >= num_pages as usize, "bitmap too short");
    let mut arg = kvm_clear_dirty_log {
        slot,
        num_pages,
        first_page,
        ..Default::default()
    };
    // KVM only reads the bitmap; the binding's field is `*mut` for both directions.
    arg.__bindgen_anon_1.dirty_bitmap = bitmap.as_ptr().cast_mut().cast();
    // SAFETY: KVM_CLEAR_DIRTY_LOG reads `arg` and `num_pages` bits of the bitmap, which is at
    // least that long (asserted); the VM fd is valid.
    check(unsafe { ioctl_with_ref(vm, nr::KVM_CLEAR_DIRTY_LOG(), &arg) }).map(|_| ())
}

/// KVM_RESET_DIRTY_RINGS: re-protects collected entries; returns how many were reset.
pub fn reset_dirty_rings(vm: &VmFd) -> Result<u32, kvm_ioctls::Error> {
    // SAFETY: an argument-less VM ioctl on a valid VM fd.
    check(unsafe { ioctl(vm, nr::KVM_RESET_DIRTY_RINGS()) }).map(|n| n as u32)
}

/// KVM_GET_STATS_FD on a VM or vCPU fd.
pub fn stats_fd(fd: &impl AsRawFd) -> Result<OwnedFd, kvm_ioctls::Error> {
    // SAFETY: an argument-less ioctl on a valid KVM fd; it returns a new fd that we own.
    let raw = check(unsafe { ioctl(fd, nr::KVM_GET_STATS_FD()) })?;
    // SAFETY: `raw` is a fresh fd returned by the kernel to us.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A vCPU's dirty ring, mapped from its fd.
#[derive(Debug)]
pub struct DirtyRingMap {
    ptr: *mut kvm_dirty_gfn,
    entries: u32,
    next: u32,
}

// SAFETY: the mapping is shared memory with KVM; all accesses are through atomics / volatile on
// `&mut self`, so moving it between threads is fine.
unsafe impl Send for DirtyRingMap {}

impl DirtyRingMap {
    /// Maps the dirty ring of `vcpu` (`entries` entries).
    pub fn new(vcpu: &VcpuFd, entries: u32) -> Result<Self, kvm_ioctls::Error> {
        let len = entries as usize * DIRTY_GFN_BYTES;
        // SAFETY: mapping the vCPU fd's dirty ring area at KVM's documented page offset; the
        // result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                libc::off_t::from(KVM_DIRTY_LOG_PAGE_OFFSET) * PAGE_SIZE as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno::Error::last());
        }
        Ok(DirtyRingMap {
            ptr: p.cast(),
            entries,
            next: 0,
        })
    }

    /// Collects every published entry, marking it for reset; calls `f(slot, offset)` for each.
    /// Returns the number collected. Call [`reset_dirty_rings`] afterwards.
    pub fn collect(&mut self, mut f: impl FnMut(u32, u64)) -> u32 {
        let mut n = 0;
        loop {
            let idx = (self.next % self.entries) as usize;
            // SAFETY: `idx < entries`, inside the live mapping.
            let e = unsafe { self.ptr.add(idx) };
            // SAFETY: `flags` is the first u32 of the entry; KVM publishes it with release
            // semantics, so an acquire load orders the reads of slot/offset after it.
            let flags = unsafe {
                &*(std::ptr::addr_of!((*e).flags) as *const std::sync::atomic::AtomicU32)
            };
            if flags.load(std::sync::atomic::Ordering::Acquire) & DIRTY_GFN_F_DIRTY == 0 {
                break;
            }
            // SAFETY: the entry is published (DIRTY set), so its fields are stable until reset.
            let (slot, offset) = unsafe { ((*e).slot, (*e).offset) };
            f(slot, offset);
            flags.store(DIRTY_GFN_F_RESET, std::sync::atomic::Ordering::Release);
            self.next = self.next.wrapping_add(1);
            n += 1;
        }
        n
    }
}

impl Drop for DirtyRingMap {
    fn drop(&mut self) {
        // SAFETY: unmapping the ring this struct mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.entries as usize * DIRTY_GFN_BYTES) };
    }
}

#[cfg(test)]
mod tests {
    use super::nr;

    #[test]
    fn request_numbers_are_the_kernels() {
        // The values of <linux/kvm.h> on every architecture this crate builds for.
        assert_eq!(nr::KVM_GET_DIRTY_LOG(), 0x4010_ae42);
        assert_eq!(nr::KVM_CLEAR_DIRTY_LOG(), 0xc018_aec0);
        assert_eq!(nr::KVM_RESET_DIRTY_RINGS(), 0xaec7);
        assert_eq!(nr::KVM_GET_STATS_FD(), 0xaece);
    }
}
