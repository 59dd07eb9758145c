//! memstress, guest side: the one "touch these known pages" routine of the project, after the
//! kernel selftests' memstress guest. The host driver is `agelab_vmm::memstress`.
//!
//! Each vCPU owns a region of identity-mapped guest memory and waits in `SYNC(STAGE)` for a
//! command packed into the reply word (so a command needs no shared memory a source could see):
//! read or write one word per page of a window of its region, `sweeps` times, then SYNC again
//! with the sum of what it read. Both the selftests (every vCPU sweeps its partition) and the
//! start-up self-check (one vCPU reads one known range and writes another) drive it.

use crate::ucall;

/// SYNC stage every memstress vCPU reports after each command (and before the first).
pub const STAGE: u64 = 1;
/// Guest page size the windows are counted in.
pub const PAGE_SIZE: u64 = 4096;

// Reply layout: op in bits 0..4, sweeps in 4..24, first page of the window in 24..44, window
// pages in 44..64 (0 = to the region's end).
const OP_BITS: u32 = 4;
const SWEEP_SHIFT: u32 = 4;
const FIRST_SHIFT: u32 = 24;
const COUNT_SHIFT: u32 = 44;
const FIELD_MASK: u64 = (1 << 20) - 1;
/// The command that ends the guest (ucall DONE).
pub const CMD_EXIT: u64 = 0;
const OP_WRITE: u64 = 1;
const OP_READ: u64 = 2;

/// Largest sweep count, window start or window length a command can carry (20 bits each).
pub const MAX_FIELD: u64 = FIELD_MASK;

/// Loads or stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// One u64 load per page.
    Read,
    /// One u64 store per page.
    Write,
}

/// What every vCPU does on one resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCmd {
    /// Loads or stores.
    pub access: Access,
    /// How many passes over the window (≥ 1).
    pub sweeps: u64,
    /// First page of the window, relative to the vCPU's region.
    pub first: u64,
    /// Pages in the window (0 = to the end of the region).
    pub pages: u64,
}

impl GuestCmd {
    /// One pass over the whole region, as the kernel test's iterations do.
    pub fn sweep(access: Access) -> Self {
        GuestCmd {
            access,
            sweeps: 1,
            first: 0,
            pages: 0,
        }
    }

    /// `sweeps` passes over `pages` pages starting at region page `first`.
    pub fn window(access: Access, sweeps: u64, first: u64, pages: u64) -> Self {
        GuestCmd {
            access,
            sweeps,
            first,
            pages,
        }
    }

    /// The reply word carrying this command (fields beyond [`MAX_FIELD`] are truncated: the
    /// host driver checks them first).
    pub fn encode(self) -> u64 {
        let op = match self.access {
            Access::Read => OP_READ,
            Access::Write => OP_WRITE,
        };
        op | (self.sweeps.clamp(1, FIELD_MASK) << SWEEP_SHIFT)
            | ((self.first & FIELD_MASK) << FIRST_SHIFT)
            | ((self.pages & FIELD_MASK) << COUNT_SHIFT)
    }
}

/// Guest entry: waits for commands; for each, touches one word per page of the window `sweeps`
/// times (the word moves with the sweep so repeated passes are not folded by the CPU), then
/// SYNCs with the sum of the words read. [`CMD_EXIT`] ends it. Runs at CPL3: wrapping
/// arithmetic, no panics.
pub extern "C" fn memstress_guest(base: u64, region_pages: u64) -> ! {
    let mut cmd = ucall::sync(STAGE, &[]);
    loop {
        let op = cmd & ((1 << OP_BITS) - 1);
        if op == CMD_EXIT {
            break;
        }
        let sweeps = (cmd >> SWEEP_SHIFT) & FIELD_MASK;
        let first = (cmd >> FIRST_SHIFT) & FIELD_MASK;
        let mut count = (cmd >> COUNT_SHIFT) & FIELD_MASK;
        if count == 0 || first.wrapping_add(count) > region_pages {
            count = region_pages.saturating_sub(first);
        }
        let start = base.wrapping_add(first.wrapping_mul(PAGE_SIZE));
        let mut sum = 0u64;
        let mut s = 0u64;
        while s < sweeps {
            let word = (s & 511).wrapping_mul(8);
            let mut p = 0u64;
            while p < count {
                let addr = start
                    .wrapping_add(p.wrapping_mul(PAGE_SIZE))
                    .wrapping_add(word);
                if op == OP_WRITE {
                    // SAFETY: `first + p < region_pages`: inside this vCPU's identity-mapped region.
                    unsafe { core::ptr::write_volatile(addr as *mut u64, s) };
                } else {
                    // SAFETY: as above.
                    sum = sum.wrapping_add(unsafe { core::ptr::read_volatile(addr as *const u64) });
                }
                p = p.wrapping_add(1);
            }
            s = s.wrapping_add(1);
        }
        cmd = ucall::sync(STAGE, &[sum]);
    }
    ucall::done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_the_reply_word() {
        let c = GuestCmd::window(Access::Read, 7, 123, 456).encode();
        assert_eq!(c & 0xf, OP_READ);
        assert_eq!((c >> SWEEP_SHIFT) & FIELD_MASK, 7);
        assert_eq!((c >> FIRST_SHIFT) & FIELD_MASK, 123);
        assert_eq!((c >> COUNT_SHIFT) & FIELD_MASK, 456);
        assert_eq!(GuestCmd::sweep(Access::Write).encode() & 0xf, OP_WRITE);
        // Zero sweeps would be a no-op command: it is raised to one.
        assert_eq!(
            (GuestCmd::window(Access::Write, 0, 0, 0).encode() >> SWEEP_SHIFT) & FIELD_MASK,
            1
        );
    }
}
