//! The GDT (64-bit kernel and user segments), the TSS, and the segment registers that select
//! them: CPL3 for workloads, CPL0 for the kernel-selftest baseline.

use crate::system::{SystemMemory, SystemMemoryError};
use kvm_bindings::{kvm_segment, kvm_sregs};

const GDT_CODE64_KERNEL: u64 = 0x00af_9b00_0000_ffff;
const GDT_DATA_KERNEL: u64 = 0x00cf_9300_0000_ffff;
const GDT_DATA_USER: u64 = 0x00cf_f300_0000_ffff;
const GDT_CODE64_USER: u64 = 0x00af_fb00_0000_ffff;
const SEL_USER_DATA: u16 = 0x18 | 3;
const SEL_USER_CODE: u16 = 0x20 | 3;
const SEL_TSS: u16 = 0x28;
const TSS_SIZE: u64 = 0x68;
/// Selector of the 64-bit kernel code segment (the IDT's handlers run there).
pub(super) const SEL_KERNEL_CODE: u16 = 0x08;
const SEL_KERNEL_DATA: u16 = 0x10;
/// GDTR limit: null, kernel code and data, user data and code, and the 16-byte TSS descriptor.
pub(super) const GDT_LIMIT: u16 = 7 * 8 - 1;

/// Writes the GDT and, in the same page, the TSS; returns their addresses `(gdt, tss)`.
pub(super) fn build_gdt(mem: &mut SystemMemory) -> Result<(u64, u64), SystemMemoryError> {
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
    Ok((gdt, tss))
}

/// Loads the CPL3 code and data segments, the TSS at `tss` and an unusable LDT into `sregs`.
pub(super) fn set_user_segments(sregs: &mut kvm_sregs, tss: u64) {
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
        base: tss,
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
}

/// Switches the code and data segments of `sregs` to the kernel's (CPL0).
pub(super) fn set_kernel_segments(sregs: &mut kvm_sregs) {
    sregs.cs.selector = SEL_KERNEL_CODE;
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
}
