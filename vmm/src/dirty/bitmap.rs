//! KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG: the bitmap modes of [`DirtyTracker`].

use super::stats::{HarvestStats, Split};
use super::{DirtyError, DirtyMode, DirtyTracker};
use crate::kvm_raw;
use crate::pageset::{block_counts, nonempty_runs, PageSet, BLOCK_PAGES};
use kvm_ioctls::VmFd;

/// Enables KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, with INITIALLY_SET when `initially_set` is asked
/// for and offered; returns whether INITIALLY_SET is in effect.
pub(super) fn enable_manual_protect(vm_fd: &VmFd, initially_set: bool) -> Result<bool, DirtyError> {
    let caps = kvm_raw::check_cap(vm_fd, kvm_raw::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    let initially_set = initially_set && caps as u64 & kvm_raw::INITIALLY_SET != 0;
    let flags = kvm_raw::MANUAL_PROTECT_ENABLE
        | if initially_set {
            kvm_raw::INITIALLY_SET
        } else {
            0
        };
    kvm_raw::enable_manual_protect(vm_fd, flags).map_err(|err| DirtyError::Kvm {
        what: "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)",
        slot: 0,
        err,
    })?;
    Ok(initially_set)
}

/// Re-protects pages `first_page..end_page` (`first_page` a multiple of 64) of `slot` whose bits
/// are set in the slot's fetched `bitmap`, with one KVM_CLEAR_DIRTY_LOG, and accounts for it.
fn clear_range(
    vm_fd: &VmFd,
    slot: u32,
    first_page: u64,
    end_page: u64,
    bitmap: &[u64],
    split: &mut Split,
    st: &mut HarvestStats,
) -> Result<(), DirtyError> {
    let w0 = (first_page / 64) as usize;
    let w1 = kvm_raw::bitmap_words(end_page);
    let (r, ns) = split.ioctl(|| {
        kvm_raw::clear_dirty_log(
            vm_fd,
            slot,
            first_page,
            (end_page - first_page) as u32,
            &bitmap[w0..w1],
        )
    });
    r.map_err(|err| DirtyError::Kvm {
        what: "KVM_CLEAR_DIRTY_LOG",
        slot,
        err,
    })?;
    st.clear_ns += ns;
    st.ioctls += 1;
    Ok(())
}

impl DirtyTracker {
    /// One harvest in GetLog or ClearLog mode: fetch each logging slot's bitmap (into `out`
    /// itself where the slot is word-aligned in it), re-protect in ClearLog mode.
    pub(super) fn harvest_bitmaps(
        &mut self,
        out: &mut PageSet,
        st: &mut HarvestStats,
        split: &mut Split,
    ) -> Result<(), DirtyError> {
        let clear = self.opts.mode == DirtyMode::ClearLog;
        let max_clear_blocks = self.opts.max_clear_pages.div_ceil(BLOCK_PAGES).max(1) as usize;
        for i in 0..self.slots.len() {
            let s = self.slots[i];
            let words = kvm_raw::bitmap_words(s.pages);
            let first_word = (s.first_page / 64) as usize;
            if !s.logging {
                split.user();
                out.remove_range(s.first_page, s.pages);
                continue;
            }
            // Where KVM writes: the result itself when the slot is word-aligned in it.
            let bitmap: &mut [u64] = if s.aligned {
                &mut out.words_mut()[first_word..first_word + words]
            } else {
                &mut self.scratch[..words]
            };
            let (r, ns) =
                split.ioctl(|| kvm_raw::get_dirty_log(&self.vm_fd, s.slot, s.pages, bitmap));
            r.map_err(|err| DirtyError::Kvm {
                what: "KVM_GET_DIRTY_LOG",
                slot: s.slot,
                err,
            })?;
            st.get_ns += ns;
            st.ioctls += 1;
            st.bitmap_bytes += words as u64 * 8;

            if clear && !self.opts.clear_dirty_runs_only {
                // Whole bitmap, in ranges of at most max_clear_pages.
                let step = (max_clear_blocks as u64 * BLOCK_PAGES).max(64);
                let mut first_page = 0;
                while first_page < s.pages {
                    let end_page = (first_page + step).min(s.pages);
                    clear_range(&self.vm_fd, s.slot, first_page, end_page, bitmap, split, st)?;
                    first_page = end_page;
                }
            } else if clear {
                block_counts(bitmap, &mut self.blocks);
                // Re-protect each run of non-empty blocks with one CLEAR (capped in length).
                for run in nonempty_runs(&self.blocks, max_clear_blocks) {
                    let first_page = run.start as u64 * BLOCK_PAGES;
                    let end_page = (run.end as u64 * BLOCK_PAGES).min(s.pages);
                    clear_range(&self.vm_fd, s.slot, first_page, end_page, bitmap, split, st)?;
                }
            }
            if !s.aligned {
                out.remove_range(s.first_page, s.pages);
                out.or_bits_at(s.first_page, &self.scratch[..words], s.pages);
            }
        }
        Ok(())
    }
}
