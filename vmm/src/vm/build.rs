//! The steps of [`Vm::new`](super::Vm::new), in the order it takes them: check the
//! configuration, create the KVM VM, map test memory, find the guest code, size and register
//! system memory, build the guest page tables, copy the code in, give each vCPU a stack, create
//! the vCPUs.

use super::{MemslotInfo, VmConfig, VmError, STACK_BYTES};
use crate::arch::{ArchVm, GuestTables, MapSize, PageTables};
use crate::loader::{self, CodeRegion};
use crate::memory::{self, Backing, HostMapping, MemoryError, SlotMapping, HUGE_2M};
use crate::page_map::{GuestPageMap, PageRange, PAGE_SIZE};
use crate::system::SystemMemory;
use agelab_guest::abi::{SYSTEM_BASE, TEST_BASE, UCALL_MMIO_ADDR};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

/// Refuses configurations no VM can be built from; returns the bytes of each test memslot.
pub(super) fn check_config(config: &VmConfig) -> Result<u64, VmError> {
    if config.vcpus == 0 || config.vcpus > 256 {
        return Err(VmError::Config(format!(
            "vcpus must be 1..=256, got {}",
            config.vcpus
        )));
    }
    if config.guest_cpl0 && !cfg!(target_arch = "x86_64") {
        return Err(VmError::Config(
            "guest_cpl0 is an x86_64 option (CPL0 = kernel mode)".into(),
        ));
    }
    if config.slots == 0 || config.slots > 64 {
        return Err(VmError::Config(format!(
            "slots must be 1..=64, got {}",
            config.slots
        )));
    }
    memory::check_layout(&config.backing, config.mem_bytes, config.slots)?;
    Ok(config.mem_bytes / config.slots as u64)
}

/// Opens /dev/kvm and creates the VM, with its dirty ring when asked for (KVM accepts the ring
/// only before any vCPU exists).
pub(super) fn create_vm(config: &VmConfig) -> Result<(Kvm, VmFd), VmError> {
    let kvm = super::open_kvm()?;
    let vm_fd = kvm.create_vm().map_err(|err| VmError::Kvm {
        what: "KVM_CREATE_VM",
        err,
    })?;
    if let Some(entries) = config.dirty_ring_entries {
        crate::kvm_raw::enable_dirty_ring(&vm_fd, entries).map_err(|err| VmError::Kvm {
            what: "KVM_ENABLE_CAP(DIRTY_LOG_RING)",
            err,
        })?;
    }
    Ok((kvm, vm_fd))
}

/// Maps the test memory, one host mapping per memslot (slots 1..), in the configured backing.
pub(super) fn map_test_memory(
    config: &VmConfig,
    slot_bytes: u64,
) -> Result<Vec<SlotMapping>, VmError> {
    let mut slots = Vec::with_capacity(config.slots);
    // A file backing is one file for all slots, each slot mapping its own offset.
    let backing_file = match &config.backing {
        Backing::File(p) => Some(memory::open_backing_file(p, config.mem_bytes, 0)?),
        _ => None,
    };
    for i in 0..config.slots {
        let mapping = match &backing_file {
            Some(f) => HostMapping::shared_at(
                f.try_clone().map_err(|err| MemoryError::Os {
                    what: "dup(backing file)",
                    err,
                })?,
                i as u64 * slot_bytes,
                slot_bytes as usize,
            )?,
            None => HostMapping::new(&config.backing, slot_bytes, i)?,
        };
        slots.push(SlotMapping {
            slot: i as u32 + 1,
            gpa: TEST_BASE + i as u64 * slot_bytes,
            mapping,
            backing: config.backing.kind(),
        });
    }
    Ok(slots)
}

/// The host code regions to mirror into the guest at their host addresses, checked not to
/// overlap the doorbell page or test memory (`mem_bytes` from TEST_BASE), which are
/// identity-mapped.
pub(super) fn locate_guest_code(mem_bytes: u64) -> Result<Vec<CodeRegion>, VmError> {
    let code = loader::code_regions()?;
    let test_end = TEST_BASE + mem_bytes;
    for c in &code {
        if c.start < test_end && c.start + c.len > UCALL_MMIO_ADDR {
            return Err(VmError::LayoutConflict {
                name: c.name.clone(),
                start: c.start,
                end: c.start + c.len,
                gpa_start: UCALL_MMIO_ADDR,
                gpa_end: test_end,
            });
        }
    }
    Ok(code)
}

/// Bytes of system memory for tables, stacks, code copies, control blocks and the heap, in whole
/// 2 MiB pages; refused when it would reach test memory.
pub(super) fn system_memory_bytes(config: &VmConfig, code_bytes: u64) -> Result<u64, VmError> {
    let per_vcpu = STACK_BYTES + 3 * PAGE_SIZE;
    let mut system_bytes = (4 << 20)
        + config.vcpus as u64 * per_vcpu
        + code_bytes
        + PageTables::estimate(config.mem_bytes)
        + PageTables::estimate(code_bytes)
        + config.heap_bytes;
    system_bytes += PageTables::estimate(system_bytes);
    let system_bytes = system_bytes.next_multiple_of(HUGE_2M);
    if SYSTEM_BASE + system_bytes > TEST_BASE {
        return Err(VmError::Config(format!(
            "system memory of {} MiB does not fit below test memory",
            system_bytes >> 20
        )));
    }
    Ok(system_bytes)
}

/// Registers system memory (slot 0) and every test slot with KVM, logging off; returns the
/// memslots as registered and the host's view of all guest memory.
pub(super) fn register_memory(
    vm_fd: &VmFd,
    system: &HostMapping,
    slots: &[SlotMapping],
) -> Result<(Vec<MemslotInfo>, GuestMemoryMmap), VmError> {
    let memslots: Vec<MemslotInfo> = std::iter::once(MemslotInfo {
        slot: 0,
        gpa: SYSTEM_BASE,
        size: system.len() as u64,
        hva: system.addr() as u64,
    })
    .chain(slots.iter().map(|s| MemslotInfo {
        slot: s.slot,
        gpa: s.gpa,
        size: s.mapping.len() as u64,
        hva: s.mapping.addr() as u64,
    }))
    .collect();
    for m in &memslots {
        set_memslot(vm_fd, m, 0)?;
    }
    let memory = memory::guest_memory(
        &std::iter::once((SYSTEM_BASE, system))
            .chain(slots.iter().map(|s| (s.gpa, &s.mapping)))
            .collect::<Vec<_>>(),
    )?;
    Ok((memslots, memory))
}

/// Builds the architecture's tables and identity-maps system memory, the doorbell page and the
/// test slots (with 2 MiB guest pages where configured and the slots allow).
pub(super) fn build_guest_tables(
    arch: &ArchVm,
    system: &mut SystemMemory,
    config: &VmConfig,
    slots: &[SlotMapping],
    slot_bytes: u64,
) -> Result<GuestTables, VmError> {
    let mut tables = arch.build_tables(system)?;
    let pt = &mut tables.page_tables;
    let system_bytes = system.size();
    pt.map_range(
        system,
        SYSTEM_BASE,
        SYSTEM_BASE,
        system_bytes,
        MapSize::Size4K,
    )?;
    pt.map(system, UCALL_MMIO_ADDR, UCALL_MMIO_ADDR, MapSize::Size4K)?;
    let huge = config
        .guest_huge_pages
        .unwrap_or(matches!(config.backing, Backing::Thp | Backing::HugeTlb));
    let size = if huge && slot_bytes.is_multiple_of(HUGE_2M) {
        MapSize::Size2M
    } else {
        MapSize::Size4K
    };
    for s in slots {
        pt.map_range(system, s.gpa, s.gpa, s.mapping.len() as u64, size)?;
    }
    Ok(tables)
}

/// Copies each code region into system memory and maps the copy at the region's host address,
/// so guest code runs at the addresses it was linked for.
pub(super) fn load_guest_code(
    system: &mut SystemMemory,
    pt: &mut PageTables,
    code: &[CodeRegion],
) -> Result<(), VmError> {
    for c in code {
        let gpa = system.alloc(c.len, PAGE_SIZE)?;
        // SAFETY: `c` is a readable, non-writable mapping of this process listed in
        // /proc/self/maps, so reading `len` bytes from `start` is valid.
        let bytes = unsafe { std::slice::from_raw_parts(c.start as *const u8, c.len as usize) };
        system.write_bytes(gpa, bytes);
        pt.map_range(system, c.start, gpa, c.len, MapSize::Size4K)?;
    }
    Ok(())
}

/// Allocates one stack per vCPU below an unmapped guard page; returns the stack tops.
pub(super) fn alloc_stacks(
    system: &mut SystemMemory,
    pt: &mut PageTables,
    vcpus: usize,
) -> Result<Vec<u64>, VmError> {
    let mut tops = Vec::with_capacity(vcpus);
    for _ in 0..vcpus {
        let base = system.alloc(STACK_BYTES + PAGE_SIZE, PAGE_SIZE)?;
        pt.unmap_4k(system, base);
        tops.push(base + PAGE_SIZE + STACK_BYTES);
    }
    Ok(tops)
}

/// Creates the vCPU file descriptors (ids `0..vcpus`); they are set up at [`Vm::start`].
///
/// [`Vm::start`]: super::Vm::start
pub(super) fn create_vcpus(vm_fd: &VmFd, vcpus: usize) -> Result<Vec<VcpuFd>, VmError> {
    (0..vcpus)
        .map(|i| {
            vm_fd.create_vcpu(i as u64).map_err(|err| VmError::Kvm {
                what: "KVM_CREATE_VCPU",
                err,
            })
        })
        .collect()
}

/// Every test page with its dense index, GPA, HVA, memslot and backing.
pub(super) fn test_page_map(slots: &[SlotMapping]) -> GuestPageMap {
    GuestPageMap::new(
        slots
            .iter()
            .map(|s| PageRange {
                first_page: 0,
                pages: s.mapping.len() as u64 / PAGE_SIZE,
                gpa: s.gpa,
                hva: s.mapping.addr() as u64,
                slot: s.slot,
                backing: s.backing.clone(),
            })
            .collect(),
    )
}

/// Registers (or re-registers, to change `flags`) memslot `m` with KVM.
pub(super) fn set_memslot(vm: &VmFd, m: &MemslotInfo, flags: u32) -> Result<(), VmError> {
    let region = kvm_userspace_memory_region {
        slot: m.slot,
        flags,
        guest_phys_addr: m.gpa,
        memory_size: m.size,
        userspace_addr: m.hva,
    };
    // SAFETY: the host range is a live mapping owned by the VM for at least as long as the VM fd.
    unsafe { vm.set_user_memory_region(region) }.map_err(|err| VmError::Kvm {
        what: "KVM_SET_USER_MEMORY_REGION",
        err,
    })
}
