//! The EL1 vector table: every exception becomes an MMIO report the VMM decodes.
//!
//! No guest kernel runs, so an exception (a fault at EL0, an undefined instruction, a BRK) has
//! nobody to handle it. Each of the 16 vector entries saves x0 in TPIDR_EL1 and stores to its own
//! doorbell address next to the ucall doorbell; the store exits to the VMM as MMIO, which reports
//! a guest exception with ESR_EL1, FAR_EL1 and ELR_EL1 read through ONE_REG (the x86 analogue
//! is the triple fault). The table is assembled here as machine words: the host may not be able
//! to assemble aarch64 code, and these are five instructions.

use agelab_guest::abi::UCALL_MMIO_ADDR;

/// Guest-virtual address of the vector table (VBAR_EL1). It lies in the window between the ucall
/// doorbell and system memory that no host code mapping may occupy (the VMM checks), so it is
/// free in every process.
pub const VECTOR_VA: u64 = UCALL_MMIO_ADDR + (2 << 20);

/// First exception doorbell: vector `i` stores to `EXCEPTION_MMIO_ADDR + 8 * i`. Same page as
/// the ucall doorbell, so it is mapped and backed by no memslot.
pub const EXCEPTION_MMIO_ADDR: u64 = UCALL_MMIO_ADDR + 0x800;

/// Bytes per vector entry.
const ENTRY_BYTES: u64 = 0x80;
/// Number of vector entries.
const ENTRIES: u64 = 16;

/// `msr tpidr_el1, x0`.
const MSR_TPIDR_EL1_X0: u32 = 0xd518_d080;
/// `movz x0, #imm16, lsl #16` without the immediate.
const MOVZ_X0_LSL16: u32 = 0xd2a0_0000;
/// `movk x0, #imm16` without the immediate.
const MOVK_X0: u32 = 0xf280_0000;
/// `str xzr, [x0]`.
const STR_XZR_X0: u32 = 0xf900_001f;
/// `b .`: the VMM never resumes a vCPU after an exception report.
const B_SELF: u32 = 0x1400_0000;

/// The 2 KiB vector table, as bytes to copy into guest memory.
pub fn table() -> Vec<u8> {
    let mut code = vec![0u8; (ENTRIES * ENTRY_BYTES) as usize];
    for i in 0..ENTRIES {
        let doorbell = EXCEPTION_MMIO_ADDR + 8 * i;
        // Both halves fit the two instructions only while the doorbell is below 4 GiB.
        assert!(doorbell >> 32 == 0, "exception doorbell above 4 GiB");
        let words = [
            MSR_TPIDR_EL1_X0,
            MOVZ_X0_LSL16 | (((doorbell >> 16) as u32 & 0xffff) << 5),
            MOVK_X0 | ((doorbell as u32 & 0xffff) << 5),
            STR_XZR_X0,
            B_SELF,
        ];
        let at = (i * ENTRY_BYTES) as usize;
        for (k, w) in words.iter().enumerate() {
            code[at + 4 * k..at + 4 * k + 4].copy_from_slice(&w.to_le_bytes());
        }
    }
    code
}

/// Whether a guest MMIO store to `addr` is an exception report of the vector code.
pub fn is_exception_report(addr: u64) -> bool {
    (EXCEPTION_MMIO_ADDR..EXCEPTION_MMIO_ADDR + 8 * ENTRIES).contains(&addr)
}

/// The vector entry `pc` lies in, if it lies in the vector table.
pub fn vector_of(pc: u64) -> Option<u64> {
    (VECTOR_VA..VECTOR_VA + ENTRIES * ENTRY_BYTES)
        .contains(&pc)
        .then(|| (pc - VECTOR_VA) / ENTRY_BYTES)
}

/// A vector entry's name: exception kind and where it came from.
pub fn vector_name(vector: u64) -> &'static str {
    const NAMES: [&str; 16] = [
        "synchronous, EL1 with SP_EL0",
        "IRQ, EL1 with SP_EL0",
        "FIQ, EL1 with SP_EL0",
        "SError, EL1 with SP_EL0",
        "synchronous, EL1",
        "IRQ, EL1",
        "FIQ, EL1",
        "SError, EL1",
        "synchronous, from EL0",
        "IRQ, from EL0",
        "FIQ, from EL0",
        "SError, from EL0",
        "synchronous, from AArch32",
        "IRQ, from AArch32",
        "FIQ, from AArch32",
        "SError, from AArch32",
    ];
    NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or("unknown vector")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_store_to_their_own_doorbell() {
        let t = table();
        assert_eq!(t.len(), 2048);
        let word = |i: usize, k: usize| {
            u32::from_le_bytes(
                t[i * 0x80 + 4 * k..i * 0x80 + 4 * k + 4]
                    .try_into()
                    .unwrap(),
            )
        };
        // Entry 8 (synchronous from EL0): movz 0x3000 << 16, movk 0x0840.
        assert_eq!(word(8, 1), 0xd2a6_0000);
        assert_eq!(word(8, 2), 0xf281_0800);
        assert!(is_exception_report(EXCEPTION_MMIO_ADDR + 8 * 8));
        assert!(!is_exception_report(UCALL_MMIO_ADDR));
        assert_eq!(vector_of(VECTOR_VA + 0x400 + 12), Some(8));
        assert_eq!(vector_name(8), "synchronous, from EL0");
    }
}
