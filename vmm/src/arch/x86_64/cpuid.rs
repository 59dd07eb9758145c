//! CPUID and XCR0: the vCPU gets KVM's supported CPUID and the host's XCR0 (as far as KVM
//! allows), because guest code is this process's code, with libc routines in the AVX/AVX-512
//! flavour chosen on the host.

use super::ArchError;
use kvm_bindings::{kvm_xcrs, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};

/// XCR0 with only x87 and SSE state: what every x86_64 CPU has.
pub(super) const XCR0_X87_SSE: u64 = 0x3;

/// KVM's supported CPUID and the XCR0 to give the guest: the host's, limited to what KVM
/// supports (CPUID leaf 0xd), with x87 and SSE always on.
pub(super) fn supported(kvm: &Kvm) -> Result<(CpuId, u64), ArchError> {
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ArchError::SupportedCpuid)?;
    let supported_xcr0 = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0xd && e.index == 0)
        .map_or(XCR0_X87_SSE, |e| {
            u64::from(e.eax) | (u64::from(e.edx) << 32)
        });
    Ok((cpuid, host_xcr0() & supported_xcr0 | XCR0_X87_SSE))
}

/// Sets XCR0 to `xcr0`, falling back to x87+SSE+AVX and then x87+SSE where KVM refuses.
pub(super) fn set_xcr0(vcpu: &VcpuFd, xcr0: u64) -> Result<(), ArchError> {
    let mut last = None;
    for value in [xcr0, 0x7, XCR0_X87_SSE] {
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = value;
        match vcpu.set_xcrs(&xcrs) {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(err) => Err(ArchError::SetXcrs { tried: xcr0, err }),
        None => Ok(()),
    }
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
