//! aarch64 stage-1 page-table descriptors (4 KiB granule, 48-bit VA, four levels, TTBR0_EL1:
//! the user half) for the shared walker ([`crate::arch::paging`]).

use crate::arch::paging::{self, DescriptorFormat};

pub use crate::arch::paging::MapSize;

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

/// The aarch64 stage-1 descriptor format (VMSAv8-64, 4 KiB granule).
#[derive(Debug)]
pub struct Arm64Descriptors;

impl DescriptorFormat for Arm64Descriptors {
    const ADDR_MASK: u64 = ADDR_MASK;
    const TABLE: u64 = VALID | TABLE_OR_PAGE;
    const USER_RWX: u64 = USER_RWX;

    fn is_valid(entry: u64) -> bool {
        entry & VALID != 0
    }

    fn is_table(entry: u64) -> bool {
        entry & (VALID | TABLE_OR_PAGE) == VALID | TABLE_OR_PAGE
    }

    /// A block: 2 MiB at level 1, 1 GiB at level 2 (bit 1 clear above level 0).
    fn is_block(entry: u64, _level: u32) -> bool {
        entry & TABLE_OR_PAGE == 0
    }

    fn page(gpa: u64, attrs: u64) -> u64 {
        gpa | VALID | TABLE_OR_PAGE | attrs
    }

    fn block(gpa: u64, attrs: u64) -> u64 {
        gpa | VALID | attrs
    }
}

/// Guest page tables rooted at a level-0 table (TTBR0_EL1).
pub type PageTables = paging::PageTables<Arm64Descriptors>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::paging::testing::map_translate_unmap;

    #[test]
    fn map_translate_unmap_through_the_walker() {
        let (page, block) =
            map_translate_unmap::<Arm64Descriptors>(0x0000_aaaa_0001_2000, 0x1_0000_0000);
        // A level-3 page descriptor: valid, page, EL0 RW, AF, inner shareable, PXN.
        assert_eq!(page, 0x4000_5000 | 0b11 | USER_RWX);
        assert_eq!(page & (UXN | AP_RO), 0);
        // A level-2 block descriptor: valid, bit 1 clear.
        assert_eq!(block, 0x1_0000_0000 | VALID | USER_RWX);
    }
}
