//! memstress, host side: the kernel selftests' "every vCPU touches every page of its region" VM,
//! and the one driver of the guest routine in [`agelab_guest::memstress`].
//!
//! Each vCPU owns a region of guest memory (disjoint partitions, or one shared region with
//! overlap) and waits in SYNC for a [`GuestCmd`]: write or read `sweeps` times over a window of
//! its region, then SYNC again. The host times a command from the resume to the last vCPU's SYNC,
//! as the kernel's `run_iteration` does. Guest addresses are identity-mapped, so a region's
//! guest-virtual address is its guest-physical one. The selftests build the VM here
//! ([`Memstress::new`]); the start-up self-check brings its own one-vCPU VM
//! ([`Memstress::with_vm`]) and reads one known range and writes another.

use crate::page_map::PAGE_SIZE;
use crate::{Backing, Vm, VmConfig, VmError};
use agelab_guest::memstress::{memstress_guest, CMD_EXIT, STAGE};
pub use agelab_guest::memstress::{Access, GuestCmd, MAX_FIELD};
use std::ops::Range;
use std::time::{Duration, Instant};

/// How long a command may take before the watchdog calls the guest stuck: aging agents may make
/// every access fault (write-protect, zap) for a while, and guest pages fault in under TCG in the
/// lab.
const WATCHDOG: Duration = Duration::from_secs(300);
/// Longest wait for one vCPU event (beyond the watchdog, so a hang is reported with registers).
const EVENT_TIMEOUT: Duration = Duration::from_secs(600);

/// Errors building or driving a memstress VM.
#[derive(Debug, thiserror::Error)]
pub enum MemstressError {
    /// The VM failed (memory, KVM, or a vCPU that did not report SYNC).
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Bad layout (too many pages per vCPU for a command to address, zero-sized regions, test
    /// memory not contiguous in guest-physical space).
    #[error("memstress layout: {0}")]
    Layout(String),
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

/// A memstress VM: build with [`Memstress::new`] (or wrap a VM with [`Memstress::with_vm`]),
/// attach host-side trackers through [`Memstress::vm_mut`] if needed, then [`Memstress::start`]
/// and drive with [`Memstress::run`].
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
        check_region_pages(cfg.bytes_per_vcpu / PAGE_SIZE)?;
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
        Self::with_vm(vm, cfg.overlap)
    }

    /// Wraps a VM that is built but not started: its test memory (contiguous in guest-physical
    /// space) is split evenly among its vCPUs, or shared by all with `overlap`.
    pub fn with_vm(vm: Vm, overlap: bool) -> Result<Self, MemstressError> {
        let map = vm.page_map();
        if map
            .ranges()
            .windows(2)
            .any(|w| w[0].gpa + w[0].pages * PAGE_SIZE != w[1].gpa)
        {
            return Err(MemstressError::Layout(
                "test memory is not contiguous in guest-physical space".into(),
            ));
        }
        let vcpus = vm.vcpus() as u64;
        let per_vcpu = if overlap {
            map.len()
        } else {
            map.len() / vcpus.max(1)
        };
        if vcpus == 0 || per_vcpu == 0 {
            return Err(MemstressError::Layout(format!(
                "{} pages cannot be split among {vcpus} vCPU(s)",
                map.len()
            )));
        }
        check_region_pages(per_vcpu)?;
        vm.set_watchdog(WATCHDOG);
        let base = map.page(0).map(|p| p.gpa).unwrap_or_default();
        let regions = (0..vcpus)
            .map(|i| {
                let first = if overlap { 0 } else { i * per_vcpu };
                VcpuRegion {
                    gpa: base + first * PAGE_SIZE,
                    pages: first..first + per_vcpu,
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
        self.vm.wait_sync_all(STAGE, EVENT_TIMEOUT)?;
        Ok(())
    }

    /// Resumes every vCPU with `cmd` and returns the time until the last one reported back.
    pub fn run(&self, cmd: GuestCmd) -> Result<Duration, MemstressError> {
        let t0 = Instant::now();
        self.vm.sync_all(STAGE, cmd.encode(), EVENT_TIMEOUT)?;
        Ok(t0.elapsed())
    }

    /// One self-check round on a one-region VM: reads every page of `read`, then writes every
    /// page of `write` (dense page indices; empty ranges are skipped).
    pub fn touch(&self, read: &Range<u64>, write: &Range<u64>) -> Result<(), MemstressError> {
        for (access, pages) in [(Access::Read, read), (Access::Write, write)] {
            if !pages.is_empty() {
                self.run(GuestCmd::window(
                    access,
                    1,
                    pages.start,
                    pages.end - pages.start,
                ))?;
            }
        }
        Ok(())
    }

    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The VM, mutably (attach dirty trackers or sources, before [`Memstress::start`] or while
    /// the vCPUs wait between commands).
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

/// A command addresses at most [`MAX_FIELD`] pages of a region.
fn check_region_pages(pages: u64) -> Result<(), MemstressError> {
    if pages > MAX_FIELD {
        return Err(MemstressError::Layout(format!(
            "{pages} pages per vCPU: at most {MAX_FIELD} (4 GiB) are supported"
        )));
    }
    Ok(())
}

impl Drop for Memstress {
    fn drop(&mut self) {
        if self.started {
            let _ = self.vm.resume_all(CMD_EXIT);
        }
        self.vm.stop();
    }
}
