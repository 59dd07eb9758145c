//! x86_64: long mode with guest code at CPL3.
//!
//! The host builds everything a CPL3 guest needs — 4-level page tables, a GDT with 64-bit user
//! segments and a TSS — and enters the vCPU directly in user mode with KVM_SET_SREGS. No guest
//! kernel runs: guest code at CPL0 is emulated instruction by instruction on paravirtual KVM
//! (kvm_pvm), while CPL3 runs natively there and on VMX/SVM. A minimal IDT catches the 32 CPU
//! exceptions: each stub (a few CPL0 instructions, emulated on kvm_pvm — only ever run on a
//! crash) stores the address of its exception frame to an unbacked doorbell page, so the VMM
//! reports the vector, error code and faulting RIP.
//!
//! By topic, like `aarch64`: [`paging`] (page-table entries), [`gdt`] (GDT, TSS, segments),
//! [`exceptions`] (IDT, stubs, reports), [`regs`] (control and entry registers, register
//! dumps), [`cpuid`] (CPUID and XCR0). This file ties them into [`ArchVm`].

pub mod cpuid;
pub mod exceptions;
pub mod gdt;
pub mod paging;
pub mod regs;

use crate::system::{SystemMemory, SystemMemoryError};
use kvm_bindings::{kvm_fpu, CpuId};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

pub use exceptions::{
    decode_exception, exception_name, is_exception_report, stuck_exception_report, ExceptionFrame,
    EXCEPTION_MMIO_ADDR,
};
pub use paging::{MapSize, PageTables};
pub use regs::VcpuRegs;

/// Errors of x86_64 vCPU and VM setup.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("KVM_GET_SUPPORTED_CPUID: {0}")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    /// KVM_SET_CPUID2 failed.
    #[error("KVM_SET_CPUID2: {0}")]
    SetCpuid(#[source] kvm_ioctls::Error),
    /// KVM_SET_SREGS failed (KVM rejects long mode at CPL3 without CPUID set first).
    #[error("KVM_SET_SREGS (long mode, CPL3): {0}")]
    SetSregs(#[source] kvm_ioctls::Error),
    /// KVM_GET_SREGS failed.
    #[error("KVM_GET_SREGS: {0}")]
    GetSregs(#[source] kvm_ioctls::Error),
    /// KVM_SET_REGS failed.
    #[error("KVM_SET_REGS: {0}")]
    SetRegs(#[source] kvm_ioctls::Error),
    /// KVM_SET_FPU failed.
    #[error("KVM_SET_FPU: {0}")]
    SetFpu(#[source] kvm_ioctls::Error),
    /// KVM_SET_XCRS rejected every XCR0 tried.
    #[error("KVM_SET_XCRS: no XCR0 accepted (tried {tried:#x}): {err}")]
    SetXcrs {
        /// XCR0 values tried.
        tried: u64,
        /// Last error.
        #[source]
        err: kvm_ioctls::Error,
    },
    /// KVM_SET_TSS_ADDR failed.
    #[error("KVM_SET_TSS_ADDR: {0}")]
    TssAddr(#[source] kvm_ioctls::Error),
    /// System memory ran out while building tables.
    #[error(transparent)]
    System(#[from] SystemMemoryError),
}

/// Guest state shared by every vCPU: page tables and descriptor tables.
#[derive(Debug)]
pub struct GuestTables {
    /// The page tables.
    pub page_tables: PageTables,
    gdt: u64,
    tss: u64,
    idt: u64,
}

/// Per-VM architecture state.
#[derive(Debug)]
pub struct ArchVm {
    cpuid: CpuId,
    xcr0: u64,
}

impl ArchVm {
    /// Prepares the VM: TSS area for VMX and the CPUID every vCPU gets.
    pub fn new(kvm: &Kvm, vm: &VmFd) -> Result<Self, ArchError> {
        // VMX needs three pages for its real-mode TSS; kvm_pvm and SVM ignore it. Put it just
        // below 4 GiB where nothing else lives.
        vm.set_tss_address(0xfffb_d000)
            .map_err(ArchError::TssAddr)?;
        let (cpuid, xcr0) = cpuid::supported(kvm)?;
        Ok(ArchVm { cpuid, xcr0 })
    }

    /// Builds page tables, GDT, TSS and IDT in system memory.
    pub fn build_tables(&self, mem: &mut SystemMemory) -> Result<GuestTables, ArchError> {
        let page_tables = PageTables::new(mem)?;
        let (gdt, tss) = gdt::build_gdt(mem)?;
        let idt = exceptions::build_idt(mem, tss)?;
        Ok(GuestTables {
            page_tables,
            gdt,
            tss,
            idt,
        })
    }

    /// Configures a vCPU to start at `entry` at CPL3 with stack `stack_top` and up to two
    /// integer arguments (SysV: rdi, rsi).
    pub fn setup_vcpu(
        &self,
        vcpu: &VcpuFd,
        tables: &GuestTables,
        entry: u64,
        stack_top: u64,
        args: [u64; 2],
    ) -> Result<(), ArchError> {
        // CPUID before SREGS: KVM 7.2 rejects long mode with EINVAL otherwise.
        vcpu.set_cpuid2(&self.cpuid).map_err(ArchError::SetCpuid)?;
        let xsave = self.xcr0 > cpuid::XCR0_X87_SSE;
        let mut sregs = vcpu.get_sregs().map_err(ArchError::GetSregs)?;
        gdt::set_user_segments(&mut sregs, tables.tss);
        sregs.gdt.base = tables.gdt;
        sregs.gdt.limit = gdt::GDT_LIMIT;
        sregs.idt.base = tables.idt;
        sregs.idt.limit = exceptions::IDT_LIMIT;
        regs::set_long_mode(&mut sregs, tables.page_tables.root(), xsave);
        vcpu.set_sregs(&sregs).map_err(ArchError::SetSregs)?;
        if xsave {
            // Guest code may be libc's memcpy in its AVX/AVX-512 flavour, chosen on the host: give
            // the guest the host's XCR0 so the same instructions work.
            cpuid::set_xcr0(vcpu, self.xcr0)?;
        }
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.set_fpu(&fpu).map_err(ArchError::SetFpu)?;
        vcpu.set_regs(&regs::entry_regs(entry, stack_top, args))
            .map_err(ArchError::SetRegs)
    }

    /// Moves a vCPU set up by [`ArchVm::setup_vcpu`] to CPL0 (kernel code and data segments),
    /// where the kernel's own KVM selftests run their guests. On kvm_pvm every CPL0 instruction
    /// is emulated, so guest stores go through KVM's instruction emulator instead of the shadow
    /// MMU: used to reproduce the kernel selftests' cost figures, not for workloads.
    pub fn set_kernel_mode(&self, vcpu: &VcpuFd) -> Result<(), ArchError> {
        let mut sregs = vcpu.get_sregs().map_err(ArchError::GetSregs)?;
        gdt::set_kernel_segments(&mut sregs);
        vcpu.set_sregs(&sregs).map_err(ArchError::SetSregs)
    }
}
