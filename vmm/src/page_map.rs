//! `GuestPageMap`: every test-memory guest page with its guest-physical and host-virtual address.
//!
//! Page indices are dense (`0..len()`), in guest-physical order across all test memslots; a
//! [`PageSet`](crate::pageset::PageSet) bit `i` is page `i` here. The aging engine and every access
//! source work in these indices and use this map to reach the kernel (HVA for pagemap, page_idle,
//! madvise; GPA for KVM's dirty log).

/// Size of a base page, the granularity of every [`PageSet`](crate::pageset::PageSet).
pub const PAGE_SIZE: u64 = 4096;

/// How a range of guest memory is backed on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackingKind {
    /// Private anonymous memory.
    Anonymous,
    /// Private anonymous memory with `MADV_HUGEPAGE`.
    TransparentHuge,
    /// `MAP_HUGETLB` anonymous memory (2 MiB pages).
    HugeTlb,
    /// A memfd (shmem), mapped shared.
    Memfd,
    /// A regular file, mapped shared.
    File(std::path::PathBuf),
}

impl BackingKind {
    /// Whether pages live in the page cache / shmem (file-like) rather than anonymous memory.
    pub fn is_shared(&self) -> bool {
        matches!(self, BackingKind::Memfd | BackingKind::File(_))
    }
}

/// One contiguous run of guest pages backed by one host mapping (one memslot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRange {
    /// Index of the range's first page in the dense page numbering.
    pub first_page: u64,
    /// Number of 4 KiB pages.
    pub pages: u64,
    /// Guest-physical address of the first page.
    pub gpa: u64,
    /// Host-virtual address of the first page.
    pub hva: u64,
    /// KVM memslot number.
    pub slot: u32,
    /// Host backing of this range.
    pub backing: BackingKind,
}

impl PageRange {
    /// A range of `pages` pages at `gpa`/`hva` in memslot `slot`, numbered when a
    /// [`GuestPageMap`] is built from it.
    pub fn unnumbered(gpa: u64, hva: u64, pages: u64, slot: u32, backing: BackingKind) -> Self {
        PageRange {
            first_page: 0,
            pages,
            gpa,
            hva,
            slot,
            backing,
        }
    }
}

/// Addresses of one guest page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPage {
    /// Dense page index.
    pub index: u64,
    /// Guest-physical address.
    pub gpa: u64,
    /// Host-virtual address.
    pub hva: u64,
    /// KVM memslot number.
    pub slot: u32,
}

/// The test memory of a VM, page by page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestPageMap {
    ranges: Vec<PageRange>,
    total: u64,
}

impl GuestPageMap {
    /// Builds a map from ranges given in guest-physical order; `first_page` is recomputed.
    pub fn new(mut ranges: Vec<PageRange>) -> Self {
        ranges.sort_by_key(|r| r.gpa);
        let mut total = 0;
        for r in &mut ranges {
            r.first_page = total;
            total += r.pages;
        }
        GuestPageMap { ranges, total }
    }

    /// Number of pages.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether the map holds no page.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.total * PAGE_SIZE
    }

    /// The ranges (one per memslot).
    pub fn ranges(&self) -> &[PageRange] {
        &self.ranges
    }

    fn range_of_index(&self, index: u64) -> Option<&PageRange> {
        let i = self
            .ranges
            .partition_point(|r| r.first_page + r.pages <= index);
        self.ranges.get(i).filter(|r| index >= r.first_page)
    }

    /// Addresses of page `index`, or `None` past the end.
    pub fn page(&self, index: u64) -> Option<GuestPage> {
        let r = self.range_of_index(index)?;
        let off = (index - r.first_page) * PAGE_SIZE;
        Some(GuestPage {
            index,
            gpa: r.gpa + off,
            hva: r.hva + off,
            slot: r.slot,
        })
    }

    /// Dense index of the page holding guest-physical address `gpa`.
    pub fn index_of_gpa(&self, gpa: u64) -> Option<u64> {
        let i = self
            .ranges
            .partition_point(|r| r.gpa + r.pages * PAGE_SIZE <= gpa);
        let r = self.ranges.get(i).filter(|r| gpa >= r.gpa)?;
        Some(r.first_page + (gpa - r.gpa) / PAGE_SIZE)
    }

    /// Dense index of the page holding host-virtual address `hva`.
    pub fn index_of_hva(&self, hva: u64) -> Option<u64> {
        self.ranges
            .iter()
            .find(|r| hva >= r.hva && hva < r.hva + r.pages * PAGE_SIZE)
            .map(|r| r.first_page + (hva - r.hva) / PAGE_SIZE)
    }

    /// Iterates over every page.
    pub fn pages(&self) -> impl Iterator<Item = GuestPage> + '_ {
        self.ranges.iter().flat_map(|r| {
            (0..r.pages).map(move |i| GuestPage {
                index: r.first_page + i,
                gpa: r.gpa + i * PAGE_SIZE,
                hva: r.hva + i * PAGE_SIZE,
                slot: r.slot,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> GuestPageMap {
        let r = |gpa, hva, pages, slot| {
            PageRange::unnumbered(gpa, hva, pages, slot, BackingKind::Anonymous)
        };
        GuestPageMap::new(vec![
            r(0x2_0000_0000, 0x7000_0000_0000, 4, 2),
            r(0x1_0000_0000, 0x7100_0000_0000, 3, 1),
        ])
    }

    #[test]
    fn dense_indices_in_gpa_order() {
        let m = map();
        assert_eq!(m.len(), 7);
        assert_eq!(m.page(0).unwrap().gpa, 0x1_0000_0000);
        assert_eq!(m.page(3).unwrap().gpa, 0x2_0000_0000);
        assert_eq!(m.page(6).unwrap().hva, 0x7000_0000_3000);
        assert!(m.page(7).is_none());
        assert_eq!(m.index_of_gpa(0x2_0000_1fff), Some(4));
        assert_eq!(m.index_of_gpa(0x1_0000_3000), None);
        assert_eq!(m.index_of_hva(0x7100_0000_2000), Some(2));
        assert_eq!(m.pages().count(), 7);
    }
}
