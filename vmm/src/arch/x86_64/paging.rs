//! x86_64 4-level page-table entries (PML4 → PDPT → PD → PT) for the shared walker
//! ([`crate::arch::paging`]).

use crate::arch::paging::{self, DescriptorFormat};

pub use crate::arch::paging::MapSize;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
/// PS: a 2 MiB page in a page-directory entry.
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The x86_64 entry format: every entry present, writable and user-accessible, so the leaf
/// alone decides access.
#[derive(Debug)]
pub struct X86Descriptors;

impl DescriptorFormat for X86Descriptors {
    const ADDR_MASK: u64 = ADDR_MASK;
    const TABLE: u64 = PRESENT | WRITABLE | USER;
    const USER_RWX: u64 = PRESENT | WRITABLE | USER;

    fn is_valid(entry: u64) -> bool {
        entry & PRESENT != 0
    }

    fn is_table(entry: u64) -> bool {
        entry & PRESENT != 0
    }

    fn is_block(entry: u64, level: u32) -> bool {
        level == 1 && entry & HUGE != 0
    }

    fn page(gpa: u64, attrs: u64) -> u64 {
        gpa | attrs
    }

    fn block(gpa: u64, attrs: u64) -> u64 {
        gpa | attrs | HUGE
    }
}

/// Guest page tables rooted at a PML4 (CR3).
pub type PageTables = paging::PageTables<X86Descriptors>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::paging::testing::map_translate_unmap;

    #[test]
    fn map_translate_unmap_through_the_walker() {
        let (page, block) =
            map_translate_unmap::<X86Descriptors>(0x0000_5555_0001_2000, 0x1_0020_0000);
        assert_eq!(page, 0x4000_5000 | PRESENT | WRITABLE | USER);
        assert_eq!(block, 0x1_0020_0000 | PRESENT | WRITABLE | USER | HUGE);
    }
}
