//! ONE_REG register ids and a vCPU's registers for error reports.

use super::vectors;
use kvm_ioctls::VcpuFd;
use std::fmt;

/// `KVM_REG_ARM64 | KVM_REG_SIZE_U64`.
const ARM64_U64: u64 = 0x6000_0000_0000_0000 | 0x0030_0000_0000_0000;
/// `KVM_REG_ARM_CORE`: an offset, in 32-bit words, into `struct kvm_regs`.
const ARM_CORE: u64 = 0x0010 << 16;
/// `KVM_REG_ARM64_SYSREG`: a system register by its MRS/MSR encoding.
const ARM64_SYSREG: u64 = 0x0013 << 16;

/// Id of a 64-bit field of `struct kvm_regs` at byte offset `offset`.
const fn core(offset: u64) -> u64 {
    ARM64_U64 | ARM_CORE | (offset / 4)
}

/// Id of system register `op0, op1, CRn, CRm, op2`.
const fn sys(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    ARM64_U64 | ARM64_SYSREG | (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2
}

// `struct kvm_regs` begins with `struct user_pt_regs { u64 regs[31]; u64 sp; u64 pc; u64 pstate; }`,
// followed by sp_el1, elr_el1 and spsr[].
/// General register `Xn`.
pub(super) const fn x(n: u64) -> u64 {
    core(8 * n)
}
/// SP_EL0 (`user_pt_regs.sp`).
pub(super) const SP_EL0: u64 = core(31 * 8);
/// PC.
pub(super) const PC: u64 = core(32 * 8);
/// PSTATE.
pub(super) const PSTATE: u64 = core(33 * 8);
/// SP_EL1.
pub(super) const SP_EL1: u64 = core(34 * 8);
/// ELR_EL1.
pub(super) const ELR_EL1: u64 = core(35 * 8);
/// SPSR_EL1 (`spsr[KVM_SPSR_EL1]`).
pub(super) const SPSR_EL1: u64 = core(36 * 8);

/// SCTLR_EL1.
pub(super) const SCTLR_EL1: u64 = sys(3, 0, 1, 0, 0);
/// CPACR_EL1.
pub(super) const CPACR_EL1: u64 = sys(3, 0, 1, 0, 2);
/// ZCR_EL1.
pub(super) const ZCR_EL1: u64 = sys(3, 0, 1, 2, 0);
/// TTBR0_EL1.
pub(super) const TTBR0_EL1: u64 = sys(3, 0, 2, 0, 0);
/// TTBR1_EL1.
pub(super) const TTBR1_EL1: u64 = sys(3, 0, 2, 0, 1);
/// TCR_EL1.
pub(super) const TCR_EL1: u64 = sys(3, 0, 2, 0, 2);
/// ESR_EL1.
pub(super) const ESR_EL1: u64 = sys(3, 0, 5, 2, 0);
/// FAR_EL1.
pub(super) const FAR_EL1: u64 = sys(3, 0, 6, 0, 0);
/// MAIR_EL1.
pub(super) const MAIR_EL1: u64 = sys(3, 0, 10, 2, 0);
/// VBAR_EL1.
pub(super) const VBAR_EL1: u64 = sys(3, 0, 12, 0, 0);
/// TPIDR_EL1 (the vector code parks the guest's x0 there).
pub(super) const TPIDR_EL1: u64 = sys(3, 0, 13, 0, 4);
/// CNTKCTL_EL1.
pub(super) const CNTKCTL_EL1: u64 = sys(3, 0, 14, 1, 0);

/// PSTATE.M for EL0 with SP_EL0.
pub(super) const PSTATE_EL0T: u64 = 0;
/// PSTATE.M for EL1 with SP_EL1 (where the vector code runs).
const PSTATE_EL1H: u64 = 0b0101;
/// PSTATE.{D,A,I,F}: no asynchronous exception is ever taken (there is no interrupt controller).
pub(super) const PSTATE_DAIF: u64 = 0xf << 6;

/// Reads a 64-bit register.
pub(super) fn get(vcpu: &VcpuFd, id: u64) -> Result<u64, kvm_ioctls::Error> {
    let mut b = [0u8; 8];
    vcpu.get_one_reg(id, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Writes a 64-bit register.
pub(super) fn set(vcpu: &VcpuFd, id: u64, value: u64) -> Result<(), kvm_ioctls::Error> {
    vcpu.set_one_reg(id, &value.to_le_bytes()).map(|_| ())
}

/// A vCPU's registers, for error reports.
///
/// When the guest took an exception, the vCPU stopped in the EL1 vector code: then [`pc`] is the
/// guest instruction that faulted (ELR_EL1), `x[0]` the guest's x0 (saved in TPIDR_EL1) and the
/// report carries ESR_EL1, FAR_EL1 and the vector taken.
///
/// [`pc`]: VcpuRegs::pc
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuRegs {
    /// X0–X30.
    pub x: [u64; 31],
    /// SP_EL0.
    pub sp_el0: u64,
    /// PC as the vCPU stopped (inside the vector code after an exception).
    pub raw_pc: u64,
    /// PSTATE.
    pub pstate: u64,
    /// ELR_EL1: where the last exception was taken from.
    pub elr_el1: u64,
    /// SPSR_EL1: PSTATE when the last exception was taken.
    pub spsr_el1: u64,
    /// ESR_EL1: syndrome of the last exception.
    pub esr_el1: u64,
    /// FAR_EL1: faulting address of the last abort.
    pub far_el1: u64,
    /// The vector taken when the vCPU stopped in the vector code.
    pub vector: Option<u64>,
}

impl VcpuRegs {
    /// Reads the registers of a stopped vCPU (best effort: zeros where KVM refuses).
    pub fn read(vcpu: &VcpuFd) -> Self {
        let g = |id| get(vcpu, id).unwrap_or_default();
        let mut r = VcpuRegs {
            x: std::array::from_fn(|n| g(x(n as u64))),
            sp_el0: g(SP_EL0),
            raw_pc: g(PC),
            pstate: g(PSTATE),
            elr_el1: g(ELR_EL1),
            spsr_el1: g(SPSR_EL1),
            esr_el1: g(ESR_EL1),
            far_el1: g(FAR_EL1),
            vector: None,
        };
        if r.pstate & 0xf == PSTATE_EL1H {
            r.vector = vectors::vector_of(r.raw_pc);
            if r.vector.is_some() {
                r.x[0] = g(TPIDR_EL1);
            }
        }
        r
    }

    /// The instruction pointer: the faulting instruction after a guest exception.
    pub fn pc(&self) -> u64 {
        if self.vector.is_some() {
            self.elr_el1
        } else {
            self.raw_pc
        }
    }

    /// The guest's stack pointer (SP_EL0).
    pub fn sp(&self) -> u64 {
        self.sp_el0
    }

    /// Exception class of ESR_EL1, in words.
    fn exception_class(&self) -> &'static str {
        match (self.esr_el1 >> 26) & 0x3f {
            0x00 => "unknown reason (undefined instruction)",
            0x01 => "WFI/WFE trapped",
            0x07 => "FP/SIMD access trapped",
            0x0e => "illegal execution state",
            0x15 => "SVC",
            0x18 => "MSR/MRS trapped",
            0x19 => "SVE access trapped",
            0x20 => "instruction abort from EL0",
            0x21 => "instruction abort at EL1",
            0x22 => "PC alignment fault",
            0x24 => "data abort from EL0",
            0x25 => "data abort at EL1",
            0x26 => "SP alignment fault",
            0x2c => "FP exception",
            0x2f => "SError",
            0x3c => "BRK",
            _ => "other",
        }
    }
}

impl fmt::Display for VcpuRegs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v) = self.vector {
            write!(
                f,
                "guest exception: {} ({}), esr={:#x} (ec={:#x}) far={:#x} elr={:#x} spsr={:#x}; ",
                self.exception_class(),
                vectors::vector_name(v),
                self.esr_el1,
                (self.esr_el1 >> 26) & 0x3f,
                self.far_el1,
                self.elr_el1,
                self.spsr_el1
            )?;
        }
        write!(
            f,
            "pc={:#x} sp={:#x} pstate={:#x}(EL{})",
            self.pc(),
            self.sp_el0,
            self.pstate,
            (self.pstate >> 2) & 3
        )?;
        for (n, v) in self.x.iter().enumerate() {
            write!(f, " x{n}={v:#x}")?;
        }
        Ok(())
    }
}
