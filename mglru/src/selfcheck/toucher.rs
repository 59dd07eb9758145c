//! The self-check's guest: one vCPU that reads one known page range and writes another, as many
//! rounds as the host asks (or until it says stop), so the truth is known by construction.
//!
//! Protocol: the guest reports `SYNC(STAGE_TOUCH_READY)` and the host replies `CMD_TOUCH` or
//! `CMD_EXIT`; for a touch the guest then asks for each argument with `SYNC(STAGE_TOUCH_ARG, [i])`
//! (so nothing is read from guest memory that a source could see), touches one round and reports
//! ready again. Long touches (DAMON samples over time) are many one-round commands in a row.

use agelab_guest::ucall;
use agelab_vmm::{GuestPageMap, VcpuEvent, Vm, VmError, PAGE_SIZE};
use std::time::{Duration, Instant};

/// SYNC stage the self-check guest reports while it waits for a command ("TOUC").
pub const STAGE_TOUCH_READY: u64 = 0x544f_5543;
/// SYNC stage asking for argument `args[0]` of a touch ("TARG").
pub const STAGE_TOUCH_ARG: u64 = 0x5441_5247;
const CMD_TOUCH: u64 = 1;
const CMD_EXIT: u64 = 2;
const ARG_READ_GPA: u64 = 0;
const ARG_READ_PAGES: u64 = 1;
const ARG_WRITE_GPA: u64 = 2;
const ARG_WRITE_PAGES: u64 = 3;
const ARG_ROUND: u64 = 4;

/// Guest entry of the self-check vCPU.
pub extern "C" fn selfcheck_guest(_: u64, _: u64) -> ! {
    let mut sum = 0u64;
    loop {
        if ucall::sync(STAGE_TOUCH_READY, &[sum]) != CMD_TOUCH {
            ucall::done()
        }
        let rg = ucall::sync(STAGE_TOUCH_ARG, &[ARG_READ_GPA]);
        let rp = ucall::sync(STAGE_TOUCH_ARG, &[ARG_READ_PAGES]);
        let wg = ucall::sync(STAGE_TOUCH_ARG, &[ARG_WRITE_GPA]);
        let wp = ucall::sync(STAGE_TOUCH_ARG, &[ARG_WRITE_PAGES]);
        let round = ucall::sync(STAGE_TOUCH_ARG, &[ARG_ROUND]);
        let mut p = 0u64;
        while p < rp {
            // SAFETY: the host passes ranges inside identity-mapped test memory.
            sum = sum.wrapping_add(unsafe {
                (rg.wrapping_add(p.wrapping_mul(PAGE_SIZE)) as *const u64).read_volatile()
            });
            p = p.wrapping_add(1);
        }
        p = 0;
        while p < wp {
            // SAFETY: as above.
            unsafe {
                (wg.wrapping_add(p.wrapping_mul(PAGE_SIZE)) as *mut u64).write_volatile(round ^ p)
            };
            p = p.wrapping_add(1);
        }
    }
}

/// Errors driving the self-check guest.
#[derive(Debug, thiserror::Error)]
pub enum ToucherError {
    /// The VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The guest did something outside the protocol.
    #[error("self-check guest: {0}")]
    Protocol(String),
    /// A page range is not contiguous in guest-physical memory.
    #[error("self-check guest: pages {first}..{end} are not one contiguous guest-physical range")]
    NotContiguous {
        /// First page.
        first: u64,
        /// End page (exclusive).
        end: u64,
    },
}

/// A half-open range of dense guest page indices.
pub type Pages = std::ops::Range<u64>;

/// The running self-check guest.
pub struct Toucher {
    vm: Vm,
    map: GuestPageMap,
    round: u64,
}

impl std::fmt::Debug for Toucher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toucher")
            .field("pages", &self.map.len())
            .field("round", &self.round)
            .finish_non_exhaustive()
    }
}

impl Toucher {
    /// Starts the guest on `vm` (one vCPU, not started yet) and waits until it is ready.
    pub fn start(mut vm: Vm) -> Result<Self, ToucherError> {
        let map = vm.page_map().clone();
        vm.start(selfcheck_guest as *const () as usize, |_| [0, 0])?;
        // Guest pages fault in under TCG in the lab: be generous, the watchdog only catches hangs.
        vm.set_watchdog(Duration::from_secs(300));
        let t = Toucher { vm, map, round: 0 };
        t.wait_for(STAGE_TOUCH_READY)?;
        Ok(t)
    }

    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The VM, to build sources on while the guest waits between rounds.
    pub fn vm_mut(&mut self) -> &mut Vm {
        &mut self.vm
    }

    fn gpa(&self, pages: &Pages) -> Result<u64, ToucherError> {
        if pages.is_empty() {
            return Ok(0);
        }
        let err = || ToucherError::NotContiguous {
            first: pages.start,
            end: pages.end,
        };
        let first = self.map.page(pages.start).ok_or_else(err)?;
        let last = self.map.page(pages.end - 1).ok_or_else(err)?;
        if last.gpa - first.gpa != (pages.end - 1 - pages.start) * PAGE_SIZE {
            return Err(err());
        }
        Ok(first.gpa)
    }

    /// One round: reads every page of `read`, then writes every page of `write` (one word each).
    pub fn round(&mut self, read: &Pages, write: &Pages) -> Result<(), ToucherError> {
        self.round += 1;
        let args = [
            self.gpa(read)?,
            read.end.saturating_sub(read.start),
            self.gpa(write)?,
            write.end.saturating_sub(write.start),
            self.round,
        ];
        self.vm.resume(0, CMD_TOUCH)?;
        for _ in 0..args.len() {
            let i = self.wait_for(STAGE_TOUCH_ARG)?;
            let v = *args.get(i as usize).ok_or_else(|| {
                ToucherError::Protocol(format!("argument {i} asked for, only {} exist", args.len()))
            })?;
            self.vm.resume(0, v)?;
        }
        self.wait_for(STAGE_TOUCH_READY)?;
        Ok(())
    }

    /// Rounds over the same sets until `d` has passed, calling `during` once after `at` (while
    /// the guest is between rounds); returns the rounds done.
    pub fn rounds_for(
        &mut self,
        read: &Pages,
        write: &Pages,
        d: Duration,
        at: Duration,
        mut during: impl FnMut(),
    ) -> Result<u64, ToucherError> {
        let t = Instant::now();
        let (mut n, mut called) = (0, false);
        while n == 0 || t.elapsed() < d {
            self.round(read, write)?;
            n += 1;
            if !called && t.elapsed() >= at {
                during();
                called = true;
            }
        }
        if !called {
            during();
        }
        Ok(n)
    }

    /// Waits for SYNC(`stage`); returns its first argument.
    fn wait_for(&self, stage: u64) -> Result<u64, ToucherError> {
        loop {
            match self.vm.next_event(Duration::from_secs(600))? {
                VcpuEvent::Sync { stage: s, args, .. } if s == stage => return Ok(args[0]),
                VcpuEvent::Printf { .. } => {}
                e => return Err(ToucherError::Protocol(format!("unexpected event {e:?}"))),
            }
        }
    }

    /// Ends the guest and returns the VM.
    pub fn finish(self) -> Vm {
        let _ = self.vm.resume(0, CMD_EXIT);
        let _ = self.vm.next_event(Duration::from_secs(10));
        self.vm
    }
}
