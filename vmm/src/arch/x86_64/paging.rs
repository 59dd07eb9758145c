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
    use crate::system::SystemMemory;

    #[test]
    fn map_translate_unmap() {
        let mut buf = vec![0u64; 64 * 512];
        // SAFETY: `buf` outlives `mem` and is written only through it.
        let mut mem = unsafe { SystemMemory::new(0x4000_0000, buf.as_mut_ptr().cast(), 64 * 4096) };
        let mut pt = PageTables::new(&mut mem).unwrap();
        let code = 0x0000_5555_0001_2000;
        pt.map(&mut mem, code, 0x4000_5000, MapSize::Size4K)
            .unwrap();
        let huge = 0x1_0020_0000u64;
        pt.map(&mut mem, huge, huge, MapSize::Size2M).unwrap();
        assert_eq!(pt.translate(&mem, code + 0x123), Some(0x4000_5123));
        assert_eq!(pt.translate(&mem, huge + 0x1f_f008), Some(huge + 0x1f_f008));
        assert_eq!(pt.translate(&mem, code + 0x1000), None);
        let pd_entry = {
            let mut t = pt.root();
            for level in [3, 2] {
                t = mem.read_u64(t + ((huge >> (12 + 9 * level)) & 511) * 8) & ADDR_MASK;
            }
            mem.read_u64(t + ((huge >> 21) & 511) * 8)
        };
        assert_eq!(pd_entry, huge | PRESENT | WRITABLE | USER | HUGE);
        pt.unmap_4k(&mut mem, code);
        assert_eq!(pt.translate(&mem, code), None);
        // Inside a 2 MiB page there is no 4 KiB entry to remove.
        pt.unmap_4k(&mut mem, huge + 0x1000);
        assert_eq!(pt.translate(&mem, huge + 0x1000), Some(huge + 0x1000));
    }
}
