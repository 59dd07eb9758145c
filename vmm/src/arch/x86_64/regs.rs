//! Control registers for long mode with paging, the vCPU's entry registers, and a vCPU's
//! registers for error reports (with the exception the IDT stubs caught, if any).

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use std::fmt;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Sets CR0, CR3 (`page_table_root`), CR4 and EFER for 64-bit mode with paging, SSE, and
/// XSAVE when `xsave`.
pub(super) fn set_long_mode(sregs: &mut kvm_sregs, page_table_root: u64, xsave: bool) {
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = page_table_root;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if xsave { CR4_OSXSAVE } else { 0 };
    sregs.efer = EFER_LME | EFER_LMA;
}

/// General registers to enter `entry` with stack `stack_top` and up to two integer arguments
/// (SysV: rdi, rsi), as after a `call`.
pub(super) fn entry_regs(entry: u64, stack_top: u64, args: [u64; 2]) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: stack_top - 8,
        rflags: 0x2,
        rdi: args[0],
        rsi: args[1],
        ..Default::default()
    }
}

/// A vCPU's registers, for error reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VcpuRegs {
    /// General registers.
    pub regs: kvm_regs,
    /// CR0, CR2, CR3, CR4, EFER.
    pub control: [u64; 5],
    /// CS selector (its low bits are the CPL).
    pub cs: u16,
    /// The exception that stopped the guest, when the IDT stubs caught one.
    pub exception: Option<ExceptionFrame>,
}

impl VcpuRegs {
    /// Reads the registers of a stopped vCPU (best effort: zeros where KVM refuses).
    pub fn read(vcpu: &VcpuFd) -> Self {
        let regs = vcpu.get_regs().unwrap_or_default();
        let s = vcpu.get_sregs().unwrap_or_default();
        VcpuRegs {
            regs,
            control: [s.cr0, s.cr2, s.cr3, s.cr4, s.efer],
            cs: s.cs.selector,
            exception: None,
        }
    }

    /// The instruction pointer: the faulting instruction after a guest exception.
    pub fn pc(&self) -> u64 {
        self.exception.map_or(self.regs.rip, |e| e.rip)
    }

    /// The stack pointer (at the fault, after a guest exception).
    pub fn sp(&self) -> u64 {
        self.exception.map_or(self.regs.rsp, |e| e.rsp)
    }
}

/// An exception caught by the IDT stubs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExceptionFrame {
    /// Vector (6 = #UD, 13 = #GP, 14 = #PF...).
    pub vector: u64,
    /// Error code (0 where the CPU pushes none).
    pub error_code: u64,
    /// RIP of the faulting instruction.
    pub rip: u64,
    /// RSP at the fault.
    pub rsp: u64,
}

/// Name of an exception vector, for reports.
pub fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#MF(9)", "#TS", "#NP",
        "#SS", "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24",
        "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("#??")
}

impl fmt::Display for VcpuRegs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = self.exception {
            write!(
                f,
                "exception {} (vector {}, error code {:#x}) at rip={:#x} rsp={:#x} cr2={:#x}; in the handler: ",
                exception_name(e.vector),
                e.vector,
                e.error_code,
                e.rip,
                e.rsp,
                self.control[1]
            )?;
        }
        let r = &self.regs;
        write!(
            f,
            "rip={:#x} rsp={:#x} rflags={:#x} cs={:#x}(cpl{}) rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
            r.rip, r.rsp, r.rflags, self.cs, self.cs & 3, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp,
            self.control[0], self.control[1], self.control[2], self.control[3], self.control[4]
        )
    }
}
