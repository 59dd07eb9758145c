//! x86_64: long mode with guest code at CPL3.
//!
//! The host builds everything a CPL3 guest needs — 4-level page tables, a GDT with 64-bit user
//! segments and a TSS — and enters the vCPU directly in user mode with KVM_SET_SREGS. No guest
//! kernel runs: guest code at CPL0 is emulated instruction by instruction on paravirtual KVM
//! (kvm_pvm), while CPL3 runs natively there and on VMX/SVM. A minimal IDT catches the 32 CPU
//! exceptions: each stub (a few CPL0 instructions, emulated on kvm_pvm — only ever run on a
//! crash) stores the address of its exception frame to an unbacked doorbell page, so the VMM
//! reports the vector, error code and faulting RIP. Without it, real SVM/VMX KVM would turn the
//! fault into a triple fault and reset the registers (RIP 0xfff0) before the VMM could read them.

pub mod paging;

use crate::system::{SystemMemory, SystemMemoryError};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_xcrs, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
pub use paging::{MapSize, PageTables};
use std::fmt;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

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

const GDT_CODE64_KERNEL: u64 = 0x00af_9b00_0000_ffff;
const GDT_DATA_KERNEL: u64 = 0x00cf_9300_0000_ffff;
const GDT_DATA_USER: u64 = 0x00cf_f300_0000_ffff;
const GDT_CODE64_USER: u64 = 0x00af_fb00_0000_ffff;
const SEL_USER_DATA: u16 = 0x18 | 3;
const SEL_USER_CODE: u16 = 0x20 | 3;
const SEL_TSS: u16 = 0x28;
const TSS_SIZE: u64 = 0x68;
const SEL_KERNEL_CODE: u64 = 0x08;
const SEL_KERNEL_DATA: u16 = 0x10;

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

/// Name of an exception vector, for reports.
pub fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#MF(9)", "#TS", "#NP",
        "#SS", "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24",
        "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("#??")
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
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ArchError::SupportedCpuid)?;
        let supported_xcr0 = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == 0xd && e.index == 0)
            .map_or(0x3, |e| u64::from(e.eax) | (u64::from(e.edx) << 32));
        Ok(ArchVm {
            cpuid,
            xcr0: host_xcr0() & supported_xcr0 | 0x3,
        })
    }

    /// Builds page tables, GDT and TSS in system memory.
    pub fn build_tables(&self, mem: &mut SystemMemory) -> Result<GuestTables, ArchError> {
        let page_tables = PageTables::new(mem)?;
        let gdt = mem.alloc(4096, 4096)?;
        let tss = gdt + 0x800;
        let entries = [
            0,
            GDT_CODE64_KERNEL,
            GDT_DATA_KERNEL,
            GDT_DATA_USER,
            GDT_CODE64_USER,
        ];
        for (i, e) in entries.iter().enumerate() {
            mem.write_u64(gdt + i as u64 * 8, *e);
        }
        // 64-bit TSS descriptor (busy, type 0xb), 16 bytes.
        let limit = TSS_SIZE - 1;
        let lo = (limit & 0xffff)
            | ((tss & 0xff_ffff) << 16)
            | (0x8b << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (((tss >> 24) & 0xff) << 56);
        mem.write_u64(gdt + 5 * 8, lo);
        mem.write_u64(gdt + 6 * 8, tss >> 32);
        // TSS: no I/O bitmap (its offset points past the limit), so CPL3 port I/O always faults.
        mem.write_u64(tss + 0x60, (TSS_SIZE << 48) & 0xffff_0000_0000_0000);
        // Exception stubs, their CPL0 stack (TSS.rsp0, at the unaligned offset 4) and the IDT.
        let report_stack = mem.alloc(4096, 4096)?;
        let code = mem.alloc(4096, 4096)?;
        let stubs = exception_stubs(code, report_stack + 4096);
        mem.write_bytes(code, &stubs);
        let stack = mem.alloc(EXCEPTION_STACK, 4096)?;
        mem.write_bytes(tss + 4, &(stack + EXCEPTION_STACK).to_le_bytes());
        let idt = mem.alloc(IDT_ENTRIES * 16, 4096)?;
        for v in 0..IDT_ENTRIES {
            let handler = code + v * STUB_BYTES;
            let lo = (handler & 0xffff)
                | (SEL_KERNEL_CODE << 16)
                | (0x8e << 40)
                | (((handler >> 16) & 0xffff) << 48);
            mem.write_u64(idt + v * 16, lo);
            mem.write_u64(idt + v * 16 + 8, handler >> 32);
        }
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
        let mut sregs = vcpu.get_sregs().map_err(ArchError::GetSregs)?;
        let seg = |selector: u16, type_: u8, l: u8, db: u8| kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_,
            present: 1,
            dpl: 3,
            db,
            s: 1,
            l,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.cs = seg(SEL_USER_CODE, 0xb, 1, 0);
        let data = seg(SEL_USER_DATA, 0x3, 0, 1);
        sregs.ss = data;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.tr = kvm_segment {
            base: tables.tss,
            limit: (TSS_SIZE - 1) as u32,
            selector: SEL_TSS,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 0,
            l: 0,
            g: 0,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.ldt = kvm_segment {
            selector: 0,
            type_: 0x2,
            present: 0,
            unusable: 1,
            ..Default::default()
        };
        sregs.gdt.base = tables.gdt;
        sregs.gdt.limit = 7 * 8 - 1;
        sregs.idt.base = tables.idt;
        sregs.idt.limit = (IDT_ENTRIES * 16 - 1) as u16;
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.cr3 = tables.page_tables.root();
        sregs.cr4 =
            CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if self.xcr0 > 0x3 { CR4_OSXSAVE } else { 0 };
        sregs.efer = EFER_LME | EFER_LMA;
        vcpu.set_sregs(&sregs).map_err(ArchError::SetSregs)?;
        if self.xcr0 > 0x3 {
            // Guest code may be libc's memcpy in its AVX/AVX-512 flavour, chosen on the host: give
            // the guest the host's XCR0 so the same instructions work.
            let mut last = None;
            for xcr0 in [self.xcr0, 0x7, 0x3] {
                let mut xcrs = kvm_xcrs {
                    nr_xcrs: 1,
                    ..Default::default()
                };
                xcrs.xcrs[0].xcr = 0;
                xcrs.xcrs[0].value = xcr0;
                match vcpu.set_xcrs(&xcrs) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(err) = last {
                return Err(ArchError::SetXcrs {
                    tried: self.xcr0,
                    err,
                });
            }
        }
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.set_fpu(&fpu).map_err(ArchError::SetFpu)?;
        let regs = kvm_regs {
            rip: entry,
            rsp: stack_top - 8,
            rflags: 0x2,
            rdi: args[0],
            rsi: args[1],
            ..Default::default()
        };
        vcpu.set_regs(&regs).map_err(ArchError::SetRegs)
    }
}

impl ArchVm {
    /// Moves a vCPU set up by [`ArchVm::setup_vcpu`] to CPL0 (kernel code and data segments),
    /// where the kernel's own KVM selftests run their guests. On kvm_pvm every CPL0 instruction
    /// is emulated, so guest stores go through KVM's instruction emulator instead of the shadow
    /// MMU: used to reproduce the kernel selftests' cost figures, not for workloads.
    pub fn set_kernel_mode(&self, vcpu: &VcpuFd) -> Result<(), ArchError> {
        let mut sregs = vcpu.get_sregs().map_err(ArchError::GetSregs)?;
        sregs.cs.selector = SEL_KERNEL_CODE as u16;
        sregs.cs.dpl = 0;
        for s in [
            &mut sregs.ss,
            &mut sregs.ds,
            &mut sregs.es,
            &mut sregs.fs,
            &mut sregs.gs,
        ] {
            s.selector = SEL_KERNEL_DATA;
            s.dpl = 0;
        }
        vcpu.set_sregs(&sregs).map_err(ArchError::SetSregs)
    }
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

fn host_xcr0() -> u64 {
    if !std::arch::is_x86_feature_detected!("xsave") {
        return 0x3;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX=0 reads XCR0; the CPU supports XSAVE (checked above) and the OS
    // enabled it, so the instruction cannot fault.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    u64::from(lo) | (u64::from(hi) << 32)
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
