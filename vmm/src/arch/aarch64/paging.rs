//! aarch64 stage-1 guest page tables: 4 KiB granule, 48-bit VA, four levels (TTBR0_EL1, the
//! user half), built by the host in the system memslot.

use crate::system::{SystemMemory, SystemMemoryError};

const VALID: u64 = 1;
/// Bit 1: "table" at levels 0–2, "page" at level 3; clear for a level-1/2 block.
const TABLE_OR_PAGE: u64 = 1 << 1;
/// AP[1]: EL0 may access the page.
const AP_EL0: u64 = 1 << 6;
/// AP[2]: read-only (at every EL that may access the page).
const AP_RO: u64 = 1 << 7;
const SH_INNER: u64 = 3 << 8;
/// Access flag: set up front, so the guest never takes access-flag faults.
const AF: u64 = 1 << 10;
/// Privileged execute-never.
const PXN: u64 = 1 << 53;
/// Unprivileged (EL0) execute-never.
const UXN: u64 = 1 << 54;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Attributes of workload, code and system pages: normal write-back memory (MAIR index 0),
/// readable, writable and executable at EL0, never executable at EL1 (as the architecture
/// implies anyway for EL0-writable pages).
const USER_RWX: u64 = AF | SH_INNER | AP_EL0 | PXN;

/// Attributes of the EL1 vector page: read-only, EL1-executable, inaccessible to EL0.
pub(super) const KERNEL_RX: u64 = AF | SH_INNER | AP_RO | UXN;

/// Page size of a guest mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapSize {
    /// 4 KiB (a level-3 page).
    Size4K,
    /// 2 MiB (a level-2 block).
    Size2M,
}

/// Guest page tables rooted at a level-0 table (TTBR0_EL1).
#[derive(Debug)]
pub struct PageTables {
    root: u64,
}

impl PageTables {
    /// Allocates an empty level-0 table.
    pub fn new(mem: &mut SystemMemory) -> Result<Self, SystemMemoryError> {
        Ok(PageTables {
            root: mem.alloc(4096, 4096)?,
        })
    }

    /// Guest-physical address of the level-0 table (TTBR0_EL1).
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
        if e & (VALID | TABLE_OR_PAGE) == VALID | TABLE_OR_PAGE {
            return Ok(e & ADDR_MASK);
        }
        let t = mem.alloc(4096, 4096)?;
        mem.write_u64(slot, t | VALID | TABLE_OR_PAGE);
        Ok(t)
    }

    /// Maps `gva` → `gpa` with descriptor attributes `attrs`.
    pub(super) fn map_with(
        &mut self,
        mem: &mut SystemMemory,
        gva: u64,
        gpa: u64,
        size: MapSize,
        attrs: u64,
    ) -> Result<(), SystemMemoryError> {
        let idx = |level: u32| (gva >> (12 + 9 * level)) & 511;
        let l1 = self.next_table(mem, self.root, idx(3))?;
        let l2 = self.next_table(mem, l1, idx(2))?;
        match size {
            MapSize::Size2M => mem.write_u64(l2 + idx(1) * 8, gpa | VALID | attrs),
            MapSize::Size4K => {
                let l3 = self.next_table(mem, l2, idx(1))?;
                mem.write_u64(l3 + idx(0) * 8, gpa | VALID | TABLE_OR_PAGE | attrs);
            }
        }
        Ok(())
    }

    /// Maps `gva` → `gpa`, EL0-accessible, writable and executable.
    pub fn map(
        &mut self,
        mem: &mut SystemMemory,
        gva: u64,
        gpa: u64,
        size: MapSize,
    ) -> Result<(), SystemMemoryError> {
        self.map_with(mem, gva, gpa, size, USER_RWX)
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
            if e & VALID == 0 {
                return None;
            }
            if e & TABLE_OR_PAGE == 0 {
                // A block (2 MiB at level 2, 1 GiB at level 1).
                let mask = (1u64 << (12 + 9 * level)) - 1;
                return Some((e & ADDR_MASK & !mask) | (gva & mask));
            }
            table = e & ADDR_MASK;
        }
        let e = mem.read_u64(table + ((gva >> 12) & 511) * 8);
        (e & VALID != 0).then_some((e & ADDR_MASK) | (gva & 0xfff))
    }

    /// Bytes of page tables needed to map `bytes` with 4 KiB pages (upper bound, for sizing).
    pub fn estimate(bytes: u64) -> u64 {
        (bytes / 512 + bytes / (512 * 512) + 8 * 4096).next_multiple_of(4096)
    }

    /// Removes the 4 KiB mapping of `gva` (used for stack guard pages).
    pub fn unmap_4k(&mut self, mem: &mut SystemMemory, gva: u64) {
        let mut table = self.root;
        for level in (1..=3).rev() {
            let e = mem.read_u64(table + ((gva >> (12 + 9 * level)) & 511) * 8);
            if e & (VALID | TABLE_OR_PAGE) != VALID | TABLE_OR_PAGE {
                return;
            }
            table = e & ADDR_MASK;
        }
        mem.write_u64(table + ((gva >> 12) & 511) * 8, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_translate_unmap() {
        let mut buf = vec![0u64; 64 * 512];
        // SAFETY: `buf` outlives `mem` and is written only through it.
        let mut mem = unsafe { SystemMemory::new(0x4000_0000, buf.as_mut_ptr().cast(), 64 * 4096) };
        let mut pt = PageTables::new(&mut mem).unwrap();
        let code = 0x0000_aaaa_0001_2000;
        pt.map(&mut mem, code, 0x4000_5000, MapSize::Size4K)
            .unwrap();
        pt.map(&mut mem, 0x1_0000_0000, 0x1_0000_0000, MapSize::Size2M)
            .unwrap();
        assert_eq!(pt.translate(&mem, code + 0x123), Some(0x4000_5123));
        assert_eq!(
            pt.translate(&mem, 0x1_0000_0000 + 0x1f_f008),
            Some(0x1_001f_f008)
        );
        assert_eq!(pt.translate(&mem, code + 0x1000), None);
        // A level-3 page descriptor: valid, page, EL0 RW, AF, inner shareable, PXN.
        let l3_entry = {
            let mut t = pt.root();
            for level in (1..=3).rev() {
                t = mem.read_u64(t + ((code >> (12 + 9 * level)) & 511) * 8) & ADDR_MASK;
            }
            mem.read_u64(t + ((code >> 12) & 511) * 8)
        };
        assert_eq!(l3_entry, 0x4000_5000 | 0b11 | USER_RWX);
        assert_eq!(l3_entry & (UXN | AP_RO), 0);
        pt.unmap_4k(&mut mem, code);
        assert_eq!(pt.translate(&mem, code), None);
    }
}
