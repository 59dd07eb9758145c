//! memstress: the kernel selftests' "every vCPU touches every page of its region" VM.
//!
//! Each vCPU owns a region of guest memory (disjoint partitions, or one shared region with
//! overlap) and waits in SYNC for a [`GuestCmd`]: write or read `sweeps` times over a window of
//! its region, then SYNC again. The host times a command from the resume to the last vCPU's
//! SYNC, as the kernel's `run_iteration` does. Guest addresses are identity-mapped, so a region's
//! guest-virtual address is its guest-physical one.

use agelab_guest::ucall;
use agelab_vmm::{Backing, MemoryError, VcpuEvent, Vm, VmConfig, VmError, PAGE_SIZE};
use std::ops::Range;
use std::time::{Duration, Instant};

/// SYNC stage every memstress vCPU reports after each command.
const STAGE: u64 = 1;

// Reply layout (one u64, so a command needs no shared memory): op in bits 0..4, sweeps in 4..24,
// first page of the window in 24..44, window pages in 44..64 (0 = to the region's end).
const OP_BITS: u32 = 4;
const SWEEP_SHIFT: u32 = 4;
const FIRST_SHIFT: u32 = 24;
const COUNT_SHIFT: u32 = 44;
const FIELD_MASK: u64 = (1 << 20) - 1;
const OP_EXIT: u64 = 0;
const OP_WRITE: u64 = 1;
const OP_READ: u64 = 2;

/// Largest sweep count, window start or window length a command can carry (20 bits each).
pub const MAX_FIELD: u64 = FIELD_MASK;

/// Errors building or driving a memstress VM.
#[derive(Debug, thiserror::Error)]
pub enum MemstressError {
    /// The VM could not be created (memory, KVM).
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A vCPU reported something other than SYNC.
    #[error("vCPU {}: unexpected event while waiting for SYNC: {event}", vcpu.map_or("?".to_string(), |v| v.to_string()))]
    UnexpectedEvent {
        /// vCPU index, when the event names one.
        vcpu: Option<usize>,
        /// The event, described.
        event: String,
    },
    /// Bad layout (too many pages per vCPU for a command to address, zero-sized regions).
    #[error("memstress layout: {0}")]
    Layout(String),
}

impl MemstressError {
    /// Whether this error means "the host cannot give what was asked" (skip, not fail):
    /// no KVM, or no huge pages for `hugetlb`.
    pub fn is_host_limit(&self) -> bool {
        matches!(
            self,
            MemstressError::Vm(VmError::NoKvm(_))
                | MemstressError::Vm(VmError::Memory(MemoryError::NoHugePages { .. }))
        )
    }
}

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

    fn encode(self) -> u64 {
        let op = match self.access {
            Access::Read => OP_READ,
            Access::Write => OP_WRITE,
        };
        op | (self.sweeps.clamp(1, FIELD_MASK) << SWEEP_SHIFT)
            | ((self.first & FIELD_MASK) << FIRST_SHIFT)
            | ((self.pages & FIELD_MASK) << COUNT_SHIFT)
    }
}

/// Guest: waits for commands; for each, touches one word per page of the window `sweeps` times
/// (the word moves with the sweep so repeated passes are not folded by the CPU), then SYNCs.
/// Runs at CPL3: wrapping arithmetic, no panics.
pub extern "C" fn memstress_guest(base: u64, region_pages: u64) -> ! {
    let mut cmd = ucall::sync(STAGE, &[]);
    loop {
        let op = cmd & ((1 << OP_BITS) - 1);
        if op == OP_EXIT {
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

/// How to build a memstress VM.
#[derive(Clone, Debug)]
pub struct MemstressConfig {
    /// vCPUs.
    pub vcpus: usize,
    /// Bytes each vCPU touches.
    pub bytes_per_vcpu: u64,
    /// All vCPUs share one region of `bytes_per_vcpu` instead of owning a partition each.
    pub overlap: bool,
    /// Host backing of guest memory.
    pub backing: Backing,
}

/// One vCPU's region in the dense guest page numbering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuRegion {
    /// Guest address of the first page.
    pub gpa: u64,
    /// Dense page indices of the region.
    pub pages: Range<u64>,
}

/// A memstress VM: build with [`Memstress::new`], attach host-side trackers through
/// [`Memstress::vm_mut`] if needed, then [`Memstress::start`] and drive with [`Memstress::run`].
#[derive(Debug)]
pub struct Memstress {
    vm: Vm,
    regions: Vec<VcpuRegion>,
    started: bool,
}

impl Memstress {
    /// Creates the VM (guest memory is not touched yet: nothing is faulted in).
    pub fn new(cfg: &MemstressConfig) -> Result<Self, MemstressError> {
        if cfg.vcpus == 0 || cfg.bytes_per_vcpu < PAGE_SIZE {
            return Err(MemstressError::Layout(format!(
                "{} vCPU(s) x {} bytes: need at least one vCPU and one page each",
                cfg.vcpus, cfg.bytes_per_vcpu
            )));
        }
        let pages_per_vcpu = cfg.bytes_per_vcpu / PAGE_SIZE;
        if pages_per_vcpu > FIELD_MASK {
            return Err(MemstressError::Layout(format!(
                "{pages_per_vcpu} pages per vCPU: at most {FIELD_MASK} (4 GiB) are supported"
            )));
        }
        let mem_bytes = if cfg.overlap {
            cfg.bytes_per_vcpu
        } else {
            cfg.bytes_per_vcpu * cfg.vcpus as u64
        };
        let vm = Vm::new(VmConfig {
            vcpus: cfg.vcpus,
            mem_bytes,
            backing: cfg.backing.clone(),
            slots: 1,
            // 4 KiB guest pages on every backing: the checks count 4 KiB host pages.
            guest_huge_pages: Some(false),
            ..VmConfig::default()
        })?;
        // Aging agents may make every access fault (write-protect, zap) for a while: allow a
        // command far longer than the default watchdog before calling the guest stuck.
        vm.set_watchdog(Duration::from_secs(120));
        let base = vm.page_map().page(0).map(|p| p.gpa).unwrap_or_default();
        let regions = (0..cfg.vcpus as u64)
            .map(|i| {
                let first = if cfg.overlap { 0 } else { i * pages_per_vcpu };
                VcpuRegion {
                    gpa: base + first * PAGE_SIZE,
                    pages: first..first + pages_per_vcpu,
                }
            })
            .collect();
        Ok(Memstress {
            vm,
            regions,
            started: false,
        })
    }

    /// Starts every vCPU and waits until all wait for their first command.
    pub fn start(&mut self) -> Result<(), MemstressError> {
        let args: Vec<[u64; 2]> = self
            .regions
            .iter()
            .map(|r| [r.gpa, r.pages.end - r.pages.start])
            .collect();
        self.vm
            .start(memstress_guest as *const () as usize, |i| args[i])?;
        self.started = true;
        self.wait_all(self.vm.vcpus())
    }

    /// Resumes every vCPU with `cmd` and returns the time until the last one reported back.
    pub fn run(&self, cmd: GuestCmd) -> Result<Duration, MemstressError> {
        let t0 = Instant::now();
        for v in 0..self.vm.vcpus() {
            self.vm.resume(v, cmd.encode())?;
        }
        self.wait_all(self.vm.vcpus())?;
        Ok(t0.elapsed())
    }

    fn wait_all(&self, mut left: usize) -> Result<(), MemstressError> {
        while left > 0 {
            match self.vm.next_event(Duration::from_secs(300))? {
                VcpuEvent::Sync { stage: STAGE, .. } => left -= 1,
                VcpuEvent::Printf { vcpu, text } => println!("# guest {vcpu}: {text}"),
                other => {
                    let vcpu = match &other {
                        VcpuEvent::Sync { vcpu, .. }
                        | VcpuEvent::Done { vcpu }
                        | VcpuEvent::Abort { vcpu, .. } => Some(*vcpu),
                        _ => None,
                    };
                    return Err(MemstressError::UnexpectedEvent {
                        vcpu,
                        event: format!("{other:?}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The VM, mutably (attach dirty trackers or sources before [`Memstress::start`]).
    pub fn vm_mut(&mut self) -> &mut Vm {
        &mut self.vm
    }

    /// Every vCPU's region.
    pub fn regions(&self) -> &[VcpuRegion] {
        &self.regions
    }

    /// Pages per vCPU region.
    pub fn pages_per_vcpu(&self) -> u64 {
        self.regions
            .first()
            .map_or(0, |r| r.pages.end - r.pages.start)
    }

    /// Distinct guest pages the vCPUs touch (all of guest test memory).
    pub fn test_pages(&self) -> u64 {
        self.vm.page_map().len()
    }
}

impl Drop for Memstress {
    fn drop(&mut self) {
        if self.started {
            for v in 0..self.vm.vcpus() {
                let _ = self.vm.resume(v, OP_EXIT);
            }
        }
        self.vm.stop();
    }
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
