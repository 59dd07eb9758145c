//! Guest page tables, built by the host in the system memslot: one walker for every
//! architecture, over four levels of 512 eight-byte entries (4 KiB granule, 48-bit VA). What an
//! entry looks like — valid, table, page or block, attributes — is the architecture's
//! [`DescriptorFormat`] (`x86_64/paging.rs`, `aarch64/paging.rs`).
//!
//! Levels are numbered from the leaf: level 0 holds 4 KiB pages, level 1 2 MiB blocks, level 3
//! is the root (PML4 / TTBR0_EL1's level-0 table).

use crate::system::{SystemMemory, SystemMemoryError};
use std::marker::PhantomData;

/// Page size of a guest mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapSize {
    /// 4 KiB (a level-0 page).
    Size4K,
    /// 2 MiB (a level-1 block / huge page).
    Size2M,
}

impl MapSize {
    /// Bytes of one page of this size.
    pub fn bytes(self) -> u64 {
        match self {
            MapSize::Size4K => 4096,
            MapSize::Size2M => 2 << 20,
        }
    }
}

/// How an architecture encodes page-table entries.
pub trait DescriptorFormat {
    /// Bits of an entry that hold the output address.
    const ADDR_MASK: u64;
    /// Bits ORed to a table's address to make the entry pointing to it.
    const TABLE: u64;
    /// Attributes of ordinary guest mappings: user-accessible, writable, executable.
    const USER_RWX: u64;

    /// Whether `entry` maps anything.
    fn is_valid(entry: u64) -> bool;
    /// Whether an existing `entry` can be followed to a next-level table while mapping.
    fn is_table(entry: u64) -> bool;
    /// Whether valid `entry` at `level` (1..=3) is a block, ending the walk.
    fn is_block(entry: u64, level: u32) -> bool;
    /// The level-0 entry mapping a 4 KiB page at `gpa` with `attrs`.
    fn page(gpa: u64, attrs: u64) -> u64;
    /// The level-1 entry mapping a 2 MiB block at `gpa` with `attrs`.
    fn block(gpa: u64, attrs: u64) -> u64;
}

/// Index of `gva` in a table at `level`.
fn index(gva: u64, level: u32) -> u64 {
    (gva >> (12 + 9 * level)) & 511
}

/// Guest page tables in format `F`, rooted at a level-3 table.
#[derive(Debug)]
pub struct PageTables<F> {
    root: u64,
    format: PhantomData<F>,
}

impl<F: DescriptorFormat> PageTables<F> {
    /// Allocates an empty root table.
    pub fn new(mem: &mut SystemMemory) -> Result<Self, SystemMemoryError> {
        Ok(PageTables {
            root: mem.alloc(4096, 4096)?,
            format: PhantomData,
        })
    }

    /// Guest-physical address of the root table (CR3 / TTBR0_EL1).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The table entry `index` of `table` points to, allocated (zeroed) when missing.
    fn next_table(
        &self,
        mem: &mut SystemMemory,
        table: u64,
        index: u64,
    ) -> Result<u64, SystemMemoryError> {
        let slot = table + index * 8;
        let e = mem.read_u64(slot);
        if F::is_table(e) {
            return Ok(e & F::ADDR_MASK);
        }
        let t = mem.alloc(4096, 4096)?;
        mem.write_u64(slot, t | F::TABLE);
        Ok(t)
    }

    /// Maps `gva` → `gpa` with attributes `attrs` (in `F`'s encoding).
    pub fn map_with(
        &mut self,
        mem: &mut SystemMemory,
        gva: u64,
        gpa: u64,
        size: MapSize,
        attrs: u64,
    ) -> Result<(), SystemMemoryError> {
        let l2 = self.next_table(mem, self.root, index(gva, 3))?;
        let l1 = self.next_table(mem, l2, index(gva, 2))?;
        match size {
            MapSize::Size2M => mem.write_u64(l1 + index(gva, 1) * 8, F::block(gpa, attrs)),
            MapSize::Size4K => {
                let l0 = self.next_table(mem, l1, index(gva, 1))?;
                mem.write_u64(l0 + index(gva, 0) * 8, F::page(gpa, attrs));
            }
        }
        Ok(())
    }

    /// Maps `gva` → `gpa`, user-accessible, writable and executable.
    pub fn map(
        &mut self,
        mem: &mut SystemMemory,
        gva: u64,
        gpa: u64,
        size: MapSize,
    ) -> Result<(), SystemMemoryError> {
        self.map_with(mem, gva, gpa, size, F::USER_RWX)
    }

    /// Maps `len` bytes from `gva` to `gpa` with pages of `size` (both must be aligned to it).
    pub fn map_range(
        &mut self,
        mem: &mut SystemMemory,
        gva: u64,
        gpa: u64,
        len: u64,
        size: MapSize,
    ) -> Result<(), SystemMemoryError> {
        let step = size.bytes();
        let mut off = 0;
        while off < len {
            self.map(mem, gva + off, gpa + off, size)?;
            off += step;
        }
        Ok(())
    }

    /// Translates `gva` through the tables, as the guest's MMU would.
    pub fn translate(&self, mem: &SystemMemory, gva: u64) -> Option<u64> {
        let mut table = self.root;
        for level in (1..=3).rev() {
            let e = mem.read_u64(table + index(gva, level) * 8);
            if !F::is_valid(e) {
                return None;
            }
            if F::is_block(e, level) {
                let mask = (1u64 << (12 + 9 * level)) - 1;
                return Some((e & F::ADDR_MASK & !mask) | (gva & mask));
            }
            table = e & F::ADDR_MASK;
        }
        let e = mem.read_u64(table + index(gva, 0) * 8);
        F::is_valid(e).then_some((e & F::ADDR_MASK) | (gva & 0xfff))
    }

    /// Removes the 4 KiB mapping of `gva` (used for stack guard pages); a no-op where `gva` is
    /// unmapped or inside a block.
    pub fn unmap_4k(&mut self, mem: &mut SystemMemory, gva: u64) {
        let mut table = self.root;
        for level in (1..=3).rev() {
            let e = mem.read_u64(table + index(gva, level) * 8);
            if !F::is_valid(e) || F::is_block(e, level) {
                return;
            }
            table = e & F::ADDR_MASK;
        }
        mem.write_u64(table + index(gva, 0) * 8, 0);
    }

    /// Bytes of page tables needed to map `bytes` with 4 KiB pages (upper bound, for sizing).
    pub fn estimate(bytes: u64) -> u64 {
        (bytes / 512 + bytes / (512 * 512) + 8 * 4096).next_multiple_of(4096)
    }
}

/// A check every descriptor format runs through the shared walker.
#[cfg(test)]
pub(crate) mod testing {
    use super::{DescriptorFormat, MapSize, PageTables};
    use crate::system::SystemMemory;

    /// Maps a 4 KiB page at `code` (to 0x4000_5000) and a 2 MiB block at `huge` (identity),
    /// checks translation, unmaps the page and checks it is gone while the block stays; returns
    /// the page's level-0 entry and the block's level-1 entry, for the format's own checks.
    pub(crate) fn map_translate_unmap<F: DescriptorFormat>(code: u64, huge: u64) -> (u64, u64) {
        let mut buf = vec![0u64; 64 * 512];
        // SAFETY: `buf` outlives `mem` and is written only through it.
        let mut mem = unsafe { SystemMemory::new(0x4000_0000, buf.as_mut_ptr().cast(), 64 * 4096) };
        let mut pt = PageTables::<F>::new(&mut mem).unwrap();
        pt.map(&mut mem, code, 0x4000_5000, MapSize::Size4K)
            .unwrap();
        pt.map(&mut mem, huge, huge, MapSize::Size2M).unwrap();
        assert_eq!(pt.translate(&mem, code + 0x123), Some(0x4000_5123));
        assert_eq!(pt.translate(&mem, huge + 0x1f_f008), Some(huge + 0x1f_f008));
        assert_eq!(pt.translate(&mem, code + 0x1000), None);
        let entry = |gva: u64, leaf_level: u32| {
            let mut t = pt.root();
            for level in (leaf_level + 1..=3).rev() {
                t = mem.read_u64(t + super::index(gva, level) * 8) & F::ADDR_MASK;
            }
            mem.read_u64(t + super::index(gva, leaf_level) * 8)
        };
        let (page, block) = (entry(code, 0), entry(huge, 1));
        pt.unmap_4k(&mut mem, code);
        assert_eq!(pt.translate(&mem, code), None);
        // Inside a 2 MiB block there is no 4 KiB entry to remove.
        pt.unmap_4k(&mut mem, huge + 0x1000);
        assert_eq!(pt.translate(&mem, huge + 0x1000), Some(huge + 0x1000));
        (page, block)
    }
}
