//! The system memslot: a bump allocator over guest memory that holds page tables, descriptor
//! tables, stacks, control blocks and code copies. It is identity-mapped (GVA = GPA) and never
//! tracked, so the machinery never disturbs what the sources measure.

use crate::page_map::PAGE_SIZE;

/// Errors of the system allocator.
#[derive(Debug, thiserror::Error)]
pub enum SystemMemoryError {
    /// The system slot is full.
    #[error("system memory exhausted: {wanted} bytes wanted, {left} left of {size}")]
    Exhausted {
        /// Bytes requested.
        wanted: u64,
        /// Bytes left.
        left: u64,
        /// Slot size.
        size: u64,
    },
}

/// Bump allocator over the system memslot.
#[derive(Debug)]
pub struct SystemMemory {
    gpa: u64,
    hva: *mut u8,
    size: u64,
    next: u64,
}

// SAFETY: the pointer refers to the VM's system mapping, which outlives this allocator; writes go
// through `&mut self` only.
unsafe impl Send for SystemMemory {}

impl SystemMemory {
    /// An allocator over `size` bytes at guest-physical `gpa`, host address `hva`.
    ///
    /// # Safety
    /// `hva` must point at a live, writable mapping of at least `size` bytes that outlives the
    /// allocator and is not otherwise written while the allocator builds guest state.
    pub unsafe fn new(gpa: u64, hva: *mut u8, size: u64) -> Self {
        SystemMemory {
            gpa,
            hva,
            size,
            next: 0,
        }
    }

    /// Guest-physical base.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes allocated so far.
    pub fn used(&self) -> u64 {
        self.next
    }

    /// Allocates `bytes` (rounded up to pages), zeroed; returns the guest-physical address.
    pub fn alloc(&mut self, bytes: u64, align: u64) -> Result<u64, SystemMemoryError> {
        let align = align.max(PAGE_SIZE);
        let start = self.next.next_multiple_of(align);
        let len = bytes.next_multiple_of(PAGE_SIZE);
        if start + len > self.size {
            return Err(SystemMemoryError::Exhausted {
                wanted: len,
                left: self.size.saturating_sub(start),
                size: self.size,
            });
        }
        self.next = start + len;
        Ok(self.gpa + start)
    }

    /// Host pointer for guest-physical `gpa` inside the slot.
    pub fn host_ptr(&self, gpa: u64) -> *mut u8 {
        assert!(
            gpa >= self.gpa && gpa < self.gpa + self.size,
            "{gpa:#x} outside system memory"
        );
        // SAFETY: bounds checked just above against the live mapping.
        unsafe { self.hva.add((gpa - self.gpa) as usize) }
    }

    /// Writes a `u64` at guest-physical `gpa`.
    pub fn write_u64(&mut self, gpa: u64, val: u64) {
        assert!(gpa + 8 <= self.gpa + self.size);
        // SAFETY: in bounds (checked) and 8-byte aligned by every caller (table entries).
        unsafe { self.host_ptr(gpa).cast::<u64>().write_volatile(val) }
    }

    /// Reads a `u64` at guest-physical `gpa`.
    pub fn read_u64(&self, gpa: u64) -> u64 {
        assert!(gpa + 8 <= self.gpa + self.size);
        // SAFETY: in bounds (checked) and aligned by every caller.
        unsafe { self.host_ptr(gpa).cast::<u64>().read_volatile() }
    }

    /// Copies `bytes` to guest-physical `gpa`.
    pub fn write_bytes(&mut self, gpa: u64, bytes: &[u8]) {
        assert!(gpa + bytes.len() as u64 <= self.gpa + self.size);
        // SAFETY: destination in bounds (checked); source is a valid slice; no overlap since the
        // destination is guest memory.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.host_ptr(gpa), bytes.len()) }
    }
}
