//! Guest exceptions: a 32-entry IDT whose stubs hand the exception frame to a CPL3 reporter,
//! which stores its address to a doorbell the VMM decodes (vector, error code, RIP, RSP).
//!
//! Without it, real SVM/VMX KVM would turn a guest fault into a triple fault and reset the
//! registers (RIP 0xfff0) before the VMM could read them.

use super::gdt::SEL_KERNEL_CODE;
use super::regs::VcpuRegs;
// The frame and the vectors' names are part of a vCPU's register report (`regs`); re-exported
// here, beside the stubs that catch the exceptions.
pub use super::regs::{exception_name, ExceptionFrame};
use crate::system::{SystemMemory, SystemMemoryError};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest-physical doorbell the exception stubs store their frame address to: in the ucall
/// doorbell page (mapped, backed by no memslot), as on aarch64.
pub const EXCEPTION_MMIO_ADDR: u64 = agelab_guest::abi::UCALL_MMIO_ADDR + 0x800;
/// Number of IDT entries: the architectural exceptions.
const IDT_ENTRIES: u64 = 32;
/// Bytes per exception stub.
const STUB_BYTES: u64 = 16;
/// Bytes of the CPL0 stack the exception stubs run on.
const EXCEPTION_STACK: u64 = 16 << 10;

/// Whether the CPU pushes an error code for `vector`.
fn has_error_code(vector: u64) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Machine code of the exception stubs (one 16-byte slot per vector), the common CPL0 tail, and
/// the CPL3 reporter, laid out from guest address `base`; `report_stack_top` is a user stack.
///
/// Each stub pushes a zero error code where the CPU pushes none, then the vector. The CPL0 tail
/// pops both, swaps the faulting RIP in the `iretq` frame for the reporter's address and returns
/// to CPL3: the report itself is a CPL3 MMIO store, like every ucall, because an MMIO exit taken
/// by CPL0 code right after an injected exception is refused by newer SVM KVM (internal error,
/// "event delivery"). The reporter moves to its own stack (the faulting one may be the fault),
/// pushes faulting RSP, RIP, error code and vector, and stores the frame's address to the
/// doorbell.
fn exception_stubs(base: u64, report_stack_top: u64) -> Vec<u8> {
    let tail = IDT_ENTRIES * STUB_BYTES;
    let mut code = Vec::with_capacity((tail + 64) as usize);
    for v in 0..IDT_ENTRIES {
        let start = code.len();
        if !has_error_code(v) {
            code.extend_from_slice(&[0x6a, 0x00]); // push 0
        }
        code.extend_from_slice(&[0x6a, v as u8]); // push vector
        let rel = tail as i64 - (code.len() as i64 + 5);
        code.push(0xe9); // jmp rel32 tail
        code.extend_from_slice(&(rel as i32).to_le_bytes());
        code.resize(start + STUB_BYTES as usize, 0xcc);
    }
    // CPL0 tail: 1 + 1 + 4 + 10 + 4 + 2 bytes, padded with nops to 27.
    let reporter = base + tail + 27;
    code.push(0x5f); // pop rdi (vector)
    code.push(0x5e); // pop rsi (error code)
    code.extend_from_slice(&[0x48, 0x8b, 0x14, 0x24]); // mov rdx, [rsp] (faulting rip)
    code.extend_from_slice(&[0x48, 0xb8]); // mov rax, imm64
    code.extend_from_slice(&reporter.to_le_bytes());
    code.extend_from_slice(&[0x48, 0x89, 0x04, 0x24]); // mov [rsp], rax
    code.extend_from_slice(&[0x48, 0xcf]); // iretq
    code.resize((tail + 27) as usize, 0x90); // pad to the reporter
    debug_assert_eq!(code.len() as u64, tail + 27);
    // CPL3 reporter.
    code.extend_from_slice(&[0x48, 0x89, 0xe1]); // mov rcx, rsp (faulting rsp)
    code.extend_from_slice(&[0x48, 0xbc]); // mov rsp, imm64
    code.extend_from_slice(&report_stack_top.to_le_bytes());
    code.extend_from_slice(&[0x51, 0x52, 0x56, 0x57]); // push rcx, rdx, rsi, rdi
    code.extend_from_slice(&[0x48, 0x89, 0x24, 0x25]); // mov qword [disp32], rsp
    code.extend_from_slice(&(EXCEPTION_MMIO_ADDR as u32).to_le_bytes());
    code.extend_from_slice(&[0xeb, 0xfe]); // jmp $
    code
}

/// IDTR limit of the table [`build_idt`] writes.
pub(super) const IDT_LIMIT: u16 = (IDT_ENTRIES * 16 - 1) as u16;

/// Writes the exception stubs, the reporter's stack, the CPL0 stack the stubs run on (stored as
/// TSS.rsp0 of the TSS at `tss`) and the IDT into system memory; returns the IDT's address.
pub(super) fn build_idt(mem: &mut SystemMemory, tss: u64) -> Result<u64, SystemMemoryError> {
    let report_stack = mem.alloc(4096, 4096)?;
    let code = mem.alloc(4096, 4096)?;
    let stubs = exception_stubs(code, report_stack + 4096);
    mem.write_bytes(code, &stubs);
    // TSS.rsp0 sits at the unaligned offset 4.
    let stack = mem.alloc(EXCEPTION_STACK, 4096)?;
    mem.write_bytes(tss + 4, &(stack + EXCEPTION_STACK).to_le_bytes());
    let idt = mem.alloc(IDT_ENTRIES * 16, 4096)?;
    for v in 0..IDT_ENTRIES {
        let handler = code + v * STUB_BYTES;
        let lo = (handler & 0xffff)
            | (u64::from(SEL_KERNEL_CODE) << 16)
            | (0x8e << 40)
            | (((handler >> 16) & 0xffff) << 48);
        mem.write_u64(idt + v * 16, lo);
        mem.write_u64(idt + v * 16 + 8, handler >> 32);
    }
    Ok(idt)
}

/// Whether a guest MMIO store to `addr` reports a guest exception (from the IDT stubs).
pub fn is_exception_report(addr: u64) -> bool {
    addr == EXCEPTION_MMIO_ADDR
}

/// The frame address when a vCPU stopped on the reporter's doorbell store itself: some nested
/// setups (SVM KVM 7.2 under QEMU TCG) refuse that MMIO exit with an "event delivery" internal
/// error instead of completing it, but the vCPU then sits exactly on the store, with RSP at the
/// frame, so the report is still complete.
pub fn stuck_exception_report(regs: &VcpuRegs, mem: &GuestMemoryMmap) -> Option<u64> {
    let mut insn = [0u8; 8];
    mem.read_slice(&mut insn, GuestAddress(regs.regs.rip))
        .ok()?;
    let mut want = [0x48, 0x89, 0x24, 0x25, 0, 0, 0, 0];
    want[4..].copy_from_slice(&(EXCEPTION_MMIO_ADDR as u32).to_le_bytes());
    (insn == want).then_some(regs.regs.rsp)
}

/// Completes `regs` of a vCPU stopped in the exception reporter with the frame it stored
/// (`frame_gva`, identity-mapped system memory): vector, error code, RIP, RSP.
pub fn decode_exception(regs: &mut VcpuRegs, mem: &GuestMemoryMmap, frame_gva: u64) {
    let word = |i: u64| {
        mem.read_obj::<u64>(GuestAddress(frame_gva + 8 * i))
            .unwrap_or(0)
    };
    regs.exception = Some(ExceptionFrame {
        vector: word(0),
        error_code: word(1),
        rip: word(2),
        rsp: word(3),
    });
}
