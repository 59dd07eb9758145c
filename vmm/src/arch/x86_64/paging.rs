//! x86_64 4-level guest page tables, built by the host in the system memslot.

use crate::system::{SystemMemory, SystemMemoryError};

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Page size of a guest mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapSize {
    /// 4 KiB.
    Size4K,
    /// 2 MiB.
    Size2M,
}

/// Guest page tables rooted at a PML4.
#[derive(Debug)]
pub struct PageTables {
    root: u64,
}

impl PageTables {
    /// Allocates an empty PML4.
    pub fn new(mem: &mut SystemMemory) -> Result<Self, SystemMemoryError> {
        Ok(PageTables {
            root: mem.alloc(4096, 4096)?,
        })
    }

    /// Guest-physical address of the PML4 (CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    fn next_table(
        &self,
        mem: &mut SystemMemory,
        table: u64,
        index: u64,
    ) -> Result<u64, SystemMemoryError> {
        let slot = table + index * 8;
        let e = mem.read_u64(slot);
        if e & PRESENT != 0 {
            return Ok(e & ADDR_MASK);
        }
        let t = mem.alloc(4096, 4096)?;
        mem.write_u64(slot, t | PRESENT | WRITABLE | USER);
        Ok(t)
    }

    /// Maps `gva` → `gpa`, user-accessible and writable.
    pub fn map(
        &mut self,
        mem: &mut SystemMemory,
        gva: u64,
        gpa: u64,
        size: MapSize,
    ) -> Result<(), SystemMemoryError> {
        let idx = |level: u32| (gva >> (12 + 9 * level)) & 511;
        let pdpt = self.next_table(mem, self.root, idx(3))?;
        let pd = self.next_table(mem, pdpt, idx(2))?;
        match size {
            MapSize::Size2M => {
                mem.write_u64(pd + idx(1) * 8, gpa | PRESENT | WRITABLE | USER | HUGE)
            }
            MapSize::Size4K => {
                let pt = self.next_table(mem, pd, idx(1))?;
                mem.write_u64(pt + idx(0) * 8, gpa | PRESENT | WRITABLE | USER);
            }
        }
        Ok(())
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
        let step = match size {
            MapSize::Size4K => 4096,
            MapSize::Size2M => 2 << 20,
        };
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
            let e = mem.read_u64(table + ((gva >> (12 + 9 * level)) & 511) * 8);
            if e & PRESENT == 0 {
                return None;
            }
            if level == 1 && e & HUGE != 0 {
                return Some((e & ADDR_MASK & !((2 << 20) - 1)) | (gva & ((2 << 20) - 1)));
            }
            table = e & ADDR_MASK;
        }
        let e = mem.read_u64(table + ((gva >> 12) & 511) * 8);
        (e & PRESENT != 0).then_some((e & ADDR_MASK) | (gva & 0xfff))
    }

    /// Bytes of page tables needed to map `bytes` with 4 KiB pages (upper bound, for sizing).
    pub fn estimate(bytes: u64) -> u64 {
        (bytes / 512 + bytes / (512 * 512) + 8 * 4096).next_multiple_of(4096)
    }
}

impl PageTables {
    /// Removes the 4 KiB mapping of `gva` (used for stack guard pages).
    pub fn unmap_4k(&mut self, mem: &mut SystemMemory, gva: u64) {
        let mut table = self.root;
        for level in (1..=3).rev() {
            let e = mem.read_u64(table + ((gva >> (12 + 9 * level)) & 511) * 8);
            if e & PRESENT == 0 || (level == 1 && e & HUGE != 0) {
                return;
            }
            table = e & ADDR_MASK;
        }
        mem.write_u64(table + ((gva >> 12) & 511) * 8, 0);
    }
}
