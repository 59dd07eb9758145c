//! Guest memory for tests that need no VM: page maps over made-up addresses, a memfd and a
//! shared mapping of it.

use agelab_vmm::{BackingKind, GuestPageMap, PageRange, PAGE_SIZE};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::ffi::c_void;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::FromRawFd;
use std::ptr::NonNull;

/// A guest page map of memslots 1, 2, … in the order given, each `(gpa, hva, pages)` with
/// `backing`: for the engine and sources that only number pages, never touch them.
pub fn slots_map(backing: BackingKind, slots: &[(u64, u64, u64)]) -> GuestPageMap {
    GuestPageMap::new(
        slots
            .iter()
            .zip(1..)
            .map(|(&(gpa, hva, pages), slot)| PageRange {
                first_page: 0,
                pages,
                gpa,
                hva,
                slot,
                backing: backing.clone(),
            })
            .collect(),
    )
}

/// [`slots_map`] of one memslot of `pages` pages at guest address 4 GiB and a host address no
/// mapping has.
pub fn single_slot_map(pages: u64, backing: BackingKind) -> GuestPageMap {
    slots_map(backing, &[(0x1_0000_0000, 0x7f00_0000_0000, pages)])
}

/// A new memfd of `len` bytes named `name` (close-on-exec); panics when the kernel refuses.
pub fn memfd(name: &str, len: u64) -> File {
    let cname = std::ffi::CString::new(name).expect("memfd name without NUL");
    // SAFETY: `cname` is NUL-terminated; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nobody else.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).expect("memfd size");
    f
}

/// A shared read-only mapping of the first `len` bytes of a file (a memfd), unmapped on drop:
/// faulting its pages in from this process, or counting how many are in the page cache.
#[derive(Debug)]
pub struct SharedMapping {
    addr: NonNull<c_void>,
    len: usize,
}

impl SharedMapping {
    /// Maps `len` (> 0) bytes of `file` shared and read-only; panics when the kernel refuses.
    pub fn read_only(file: &File, len: usize) -> Self {
        let length = NonZeroUsize::new(len).expect("a mapping of at least one byte");
        // SAFETY: a new mapping at an address the kernel picks, over no existing memory.
        let addr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                file,
                0,
            )
        }
        .expect("mmap");
        SharedMapping { addr, len }
    }

    /// Reads one byte of every page: faults the whole range in from this process.
    pub fn touch_pages(&self) {
        for off in (0..self.len).step_by(PAGE_SIZE as usize) {
            // SAFETY: `off < len`, inside the readable mapping.
            unsafe { std::ptr::read_volatile(self.addr.as_ptr().cast::<u8>().add(off)) };
        }
    }

    /// Bytes of the range in the page cache (`mincore`), whoever faulted them in.
    pub fn resident_bytes(&self) -> usize {
        let page = PAGE_SIZE as usize;
        let mut vec = vec![0u8; self.len.div_ceil(page)];
        // SAFETY: the mapping is ours and `vec` has one byte per page of it.
        let rc = unsafe { libc::mincore(self.addr.as_ptr(), self.len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count() * page
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping `read_only` made, which nothing else refers to.
        let _ = unsafe { munmap(self.addr, self.len) };
    }
}
