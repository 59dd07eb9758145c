//! aarch64: guest code at EL0 under a host-built EL1 context.
//!
//! The host does what a kernel would have done before its first `eret` to user space: stage-1
//! page tables (4 KiB granule, 48-bit VA, TTBR0_EL1), MAIR/TCR/SCTLR with the MMU and caches on,
//! CPACR_EL1 with FP/SIMD (and SVE, when the host has it) enabled for EL0, and an EL1 vector
//! table that turns any exception into an MMIO report ([`vectors`]). The vCPU then starts at EL0
//! (PSTATE = EL0t) at the workload function, all through KVM_SET_ONE_REG. No guest kernel runs;
//! the ucall is the same MMIO store as on x86_64.

pub mod paging;
pub mod regs;
pub mod vectors;

use crate::system::{SystemMemory, SystemMemoryError};
use kvm_bindings::{kvm_vcpu_init, KVM_ARM_VCPU_PSCI_0_2, KVM_ARM_VCPU_SVE};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
pub use paging::{MapSize, PageTables};
pub use regs::VcpuRegs;
pub use vectors::is_exception_report;

/// Errors of aarch64 vCPU and VM setup.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// KVM_ARM_PREFERRED_TARGET failed.
    #[error("KVM_ARM_PREFERRED_TARGET: {0}")]
    PreferredTarget(#[source] kvm_ioctls::Error),
    /// KVM_ARM_VCPU_INIT failed.
    #[error("KVM_ARM_VCPU_INIT (target {target}, features {features:#x}): {err}")]
    VcpuInit {
        /// The target.
        target: u32,
        /// Feature bits requested.
        features: u32,
        /// The error.
        #[source]
        err: kvm_ioctls::Error,
    },
    /// KVM_ARM_VCPU_FINALIZE(SVE) failed.
    #[error("KVM_ARM_VCPU_FINALIZE(SVE): {0}")]
    FinalizeSve(#[source] kvm_ioctls::Error),
    /// KVM_SET_ONE_REG failed.
    #[error("KVM_SET_ONE_REG {name} = {value:#x}: {err}")]
    SetReg {
        /// The register.
        name: &'static str,
        /// The value.
        value: u64,
        /// The error.
        #[source]
        err: kvm_ioctls::Error,
    },
    /// System memory ran out while building tables.
    #[error(transparent)]
    System(#[from] SystemMemoryError),
}

/// MAIR_EL1: attribute 0 normal memory, write-back read/write-allocate (inner and outer);
/// attribute 1 device nGnRnE (unused, for completeness).
const MAIR: u64 = 0xff;

/// TCR_EL1: T0SZ=16 (48-bit VA), inner/outer write-back write-allocate walks, inner shareable,
/// 4 KiB granule for TTBR0; TTBR1 walks disabled (EPD1, 4 KiB TG1); IPS 40 bits, which covers
/// every guest-physical address the VMM uses and KVM's default IPA size.
const TCR: u64 =
    16 | (1 << 8) | (1 << 10) | (3 << 12) | (16 << 16) | (1 << 23) | (2 << 30) | (2 << 32);

/// SCTLR_EL1: MMU, data and instruction caches on; stack alignment checks; EL0 may use DC ZVA,
/// read CTR_EL0, do cache maintenance and WFI/WFE without trapping; SPAN keeps PAN clear when
/// the vector code runs, so it can store to the (EL0-accessible) doorbell page. Plus the bits
/// that are RES1 on ARMv8.0 (EOS, TSCXT, EIS, nTLSMD, LSMAOE).
const SCTLR: u64 = 1            // M
    | (1 << 2)                  // C
    | (1 << 3)                  // SA
    | (1 << 4)                  // SA0
    | (1 << 11)                 // EOS
    | (1 << 12)                 // I
    | (1 << 14)                 // DZE
    | (1 << 15)                 // UCT
    | (1 << 16)                 // nTWI
    | (1 << 18)                 // nTWE
    | (1 << 20)                 // TSCXT
    | (1 << 22)                 // EIS
    | (1 << 23)                 // SPAN
    | (1 << 26)                 // UCI
    | (1 << 28)                 // nTLSMD
    | (1 << 29); // LSMAOE

/// SCTLR_EL1.MSCEn: EL0 may execute the FEAT_MOPS memcpy/memset instructions.
const SCTLR_MSCEN: u64 = 1 << 33;
/// AT_HWCAP2 bit of FEAT_MOPS.
const HWCAP2_MOPS: u64 = 1 << 43;

/// CPACR_EL1.FPEN = 0b11: FP/SIMD at EL0 and EL1 without trapping (KVM resets it to trap).
const CPACR_FPEN: u64 = 3 << 20;
/// CPACR_EL1.ZEN = 0b11: SVE without trapping.
const CPACR_ZEN: u64 = 3 << 16;

/// CNTKCTL_EL1: EL0 may read the virtual and physical counters.
const CNTKCTL: u64 = 0x3;

/// Guest state shared by every vCPU: page tables and the vector table.
#[derive(Debug)]
pub struct GuestTables {
    /// The page tables.
    pub page_tables: PageTables,
    /// Top of the stack the vector code would run on (SP_EL1); the code uses none.
    el1_stack_top: u64,
}

/// Per-VM architecture state.
#[derive(Debug)]
pub struct ArchVm {
    init: kvm_vcpu_init,
    sve: bool,
    mops: bool,
}

impl ArchVm {
    /// Prepares the VM: the preferred vCPU target with PSCI 0.2, plus SVE when KVM offers it.
    ///
    /// Guest code is this process's code, so libc's routines run in the guest in the flavour
    /// the host chose for itself (SVE or MOPS memcpy on CPUs that have them): the vCPU must have
    /// what the host has.
    pub fn new(_kvm: &Kvm, vm: &VmFd) -> Result<Self, ArchError> {
        let mut init = kvm_vcpu_init::default();
        vm.get_preferred_target(&mut init)
            .map_err(ArchError::PreferredTarget)?;
        init.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
        // SAFETY: getauxval only reads the process's auxiliary vector.
        let hwcap = unsafe { libc::getauxval(libc::AT_HWCAP) };
        // SAFETY: as above.
        let hwcap2 = unsafe { libc::getauxval(libc::AT_HWCAP2) };
        let sve = hwcap & libc::HWCAP_SVE != 0 && vm.check_extension(Cap::ArmSve);
        if sve {
            init.features[0] |= 1 << KVM_ARM_VCPU_SVE;
        }
        Ok(ArchVm {
            init,
            sve,
            mops: hwcap2 & HWCAP2_MOPS != 0,
        })
    }

    /// Builds the page tables and the vector table in system memory.
    pub fn build_tables(&self, mem: &mut SystemMemory) -> Result<GuestTables, ArchError> {
        let mut page_tables = PageTables::new(mem)?;
        let table = vectors::table();
        let code = mem.alloc(table.len() as u64, 4096)?;
        mem.write_bytes(code, &table);
        page_tables.map_with(
            mem,
            vectors::VECTOR_VA,
            code,
            MapSize::Size4K,
            paging::KERNEL_RX,
        )?;
        let el1_stack = mem.alloc(4096, 4096)?;
        Ok(GuestTables {
            page_tables,
            el1_stack_top: el1_stack + 4096,
        })
    }

    /// Configures a vCPU to start at `entry` at EL0 with stack `stack_top` and up to two integer
    /// arguments (AAPCS64: x0, x1).
    pub fn setup_vcpu(
        &self,
        vcpu: &VcpuFd,
        tables: &GuestTables,
        entry: u64,
        stack_top: u64,
        args: [u64; 2],
    ) -> Result<(), ArchError> {
        vcpu.vcpu_init(&self.init)
            .map_err(|err| ArchError::VcpuInit {
                target: self.init.target,
                features: self.init.features[0],
                err,
            })?;
        if self.sve {
            let feature = KVM_ARM_VCPU_SVE as std::os::raw::c_int;
            vcpu.vcpu_finalize(&feature)
                .map_err(ArchError::FinalizeSve)?;
        }
        let set = |name: &'static str, id: u64, value: u64| {
            regs::set(vcpu, id, value).map_err(|err| ArchError::SetReg { name, value, err })
        };
        set("MAIR_EL1", regs::MAIR_EL1, MAIR)?;
        set("TCR_EL1", regs::TCR_EL1, TCR)?;
        set("TTBR0_EL1", regs::TTBR0_EL1, tables.page_tables.root())?;
        set("TTBR1_EL1", regs::TTBR1_EL1, 0)?;
        set("VBAR_EL1", regs::VBAR_EL1, vectors::VECTOR_VA)?;
        let cpacr = CPACR_FPEN | if self.sve { CPACR_ZEN } else { 0 };
        set("CPACR_EL1", regs::CPACR_EL1, cpacr)?;
        if self.sve {
            // The longest vector length the vCPU allows (KVM caps LEN at its maximum).
            set("ZCR_EL1", regs::ZCR_EL1, 0xf)?;
        }
        set("CNTKCTL_EL1", regs::CNTKCTL_EL1, CNTKCTL)?;
        let sctlr = SCTLR | if self.mops { SCTLR_MSCEN } else { 0 };
        set("SCTLR_EL1", regs::SCTLR_EL1, sctlr)?;
        set("SP_EL1", regs::SP_EL1, tables.el1_stack_top)?;
        set("SP_EL0", regs::SP_EL0, stack_top)?;
        set("X0", regs::x(0), args[0])?;
        set("X1", regs::x(1), args[1])?;
        // A return from the entry function (they never return) branches to 0 and faults.
        set("X29", regs::x(29), 0)?;
        set("X30", regs::x(30), 0)?;
        set("PC", regs::PC, entry)?;
        set(
            "PSTATE",
            regs::PSTATE,
            regs::PSTATE_EL0T | regs::PSTATE_DAIF,
        )
    }
}

/// Completes `regs` after an exception report. On aarch64 the EL1 vector code leaves everything
/// in system registers, which [`VcpuRegs::read`] already decodes, so there is nothing to add.
pub fn decode_exception(_regs: &mut VcpuRegs, _mem: &vm_memory::GuestMemoryMmap, _report: u64) {}

/// The frame address when a vCPU stopped on an exception report's doorbell store without the
/// MMIO exit completing (an x86 nested-virtualisation quirk; never on aarch64).
pub fn stuck_exception_report(_regs: &VcpuRegs, _mem: &vm_memory::GuestMemoryMmap) -> Option<u64> {
    None
}
