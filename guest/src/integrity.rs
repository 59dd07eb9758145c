//! The page-specific data pattern that proves no guest data is lost or misplaced.
//!
//! Every word a workload writes is `tag(page, epoch)`: the high half identifies the page (so a
//! zero-filled, stale-swapped or misplaced page is caught), the low half the epoch that wrote it
//! (so a verify can tell the word is no newer than the current epoch).

const TAG_MAGIC: u32 = 0x5a17_c0de;

/// The word a guest writes into `page` (dense index) during `epoch`.
#[inline(always)]
pub const fn tag(page: u64, epoch: u64) -> u64 {
    (((page as u32) ^ TAG_MAGIC) as u64) << 32 | (epoch & 0xffff_ffff)
}

/// Whether `word` is a valid content of `page` once epochs up to `epoch` have run.
#[inline(always)]
pub const fn is_valid(word: u64, page: u64, epoch: u64) -> bool {
    (word >> 32) == (tag(page, 0) >> 32)
        && (word & 0xffff_ffff) != 0
        && (word & 0xffff_ffff) <= (epoch & 0xffff_ffff)
}

/// The epoch encoded in a tag word.
#[inline(always)]
pub const fn epoch_of(word: u64) -> u64 {
    word & 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_identify_pages_and_epochs() {
        assert!(is_valid(tag(5, 3), 5, 3));
        assert!(is_valid(tag(5, 3), 5, 9));
        assert!(!is_valid(tag(5, 3), 5, 2));
        assert!(!is_valid(tag(5, 3), 6, 3));
        assert!(!is_valid(0, 0, 1));
        assert_eq!(epoch_of(tag(1, 42)), 42);
    }
}
