//! Just enough ELF to tell whether a binary can run in the lab's initramfs: its machine and
//! whether it needs a dynamic loader (the initramfs has no libc).

/// What the lab needs to know about an executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfInfo {
    /// `e_machine` (62 x86-64, 183 aarch64).
    pub machine: u16,
    /// True when there is no `PT_INTERP` program header.
    pub is_static: bool,
}

const PT_INTERP: u32 = 3;

/// Inspects a 64-bit little-endian ELF image; `None` when `bytes` is not one (scripts, data).
pub fn inspect(bytes: &[u8]) -> Option<ElfInfo> {
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |off: usize| {
        Some(u16::from_le_bytes(
            bytes.get(off..off + 2)?.try_into().ok()?,
        ))
    };
    let u32_at = |off: usize| {
        Some(u32::from_le_bytes(
            bytes.get(off..off + 4)?.try_into().ok()?,
        ))
    };
    let u64_at = |off: usize| {
        Some(u64::from_le_bytes(
            bytes.get(off..off + 8)?.try_into().ok()?,
        ))
    };
    let machine = u16_at(18)?;
    let phoff = usize::try_from(u64_at(32)?).ok()?;
    let phentsize = usize::from(u16_at(54)?);
    let phnum = usize::from(u16_at(56)?);
    let mut is_static = true;
    for i in 0..phnum {
        if u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == PT_INTERP {
            is_static = false;
        }
    }
    Some(ElfInfo { machine, is_static })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binaries() {
        let sh = std::fs::read("/bin/sh").unwrap();
        let info = inspect(&sh).unwrap();
        assert!(!info.is_static, "/bin/sh is dynamically linked on Debian");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(info.machine, 62);
        }
        assert_eq!(inspect(b"#!/bin/sh\n"), None);
        assert_eq!(inspect(b"\x7fELF\x02\x01"), None);
    }
}
