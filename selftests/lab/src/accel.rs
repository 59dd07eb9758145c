//! How QEMU runs the lab guest: TCG (emulated; what this project's kvm_pvm hosts can do) or KVM
//! (real TLBs and real mmu_lock contention, on VMX/SVM hosts).
//!
//! `auto` takes KVM when the host's `/dev/kvm` can boot an ordinary Linux guest: an x86 host
//! whose CPU flags show VMX or SVM. On this project's machines `/dev/kvm` is kvm_pvm (paravirtual,
//! no VMX/SVM flags): QEMU's KVM accelerator reaches SeaBIOS there but the guest kernel never
//! boots (guest CPL0 code is emulated), so `auto` falls back to TCG and says why.

use super::arch::ArchSpec;

/// The accelerator choice of `--accel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM when the host can boot an ordinary guest with it, else TCG.
    Auto,
    /// TCG with the architecture's default threading (x86: one host thread for all vCPUs).
    Tcg,
    /// Multi-threaded TCG: one host thread per vCPU (for contention experiments).
    TcgMultiThread,
    /// QEMU's KVM accelerator with the host CPU model.
    Kvm,
}

/// Why `--accel` cannot be used as given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccelError {
    /// Not an accelerator name.
    #[error("--accel {0}: expected auto, tcg, tcg-mt (one host thread per vCPU) or kvm")]
    Unknown(String),
    /// `--accel kvm` where QEMU's KVM accelerator cannot run the lab guest.
    #[error("--accel kvm: {0}")]
    KvmUnusable(String),
}

impl std::str::FromStr for Accel {
    type Err = AccelError;
    fn from_str(s: &str) -> Result<Self, AccelError> {
        match s {
            "auto" => Ok(Accel::Auto),
            "tcg" => Ok(Accel::Tcg),
            "tcg-mt" => Ok(Accel::TcgMultiThread),
            "kvm" => Ok(Accel::Kvm),
            _ => Err(AccelError::Unknown(s.to_string())),
        }
    }
}

/// Why QEMU's KVM accelerator cannot run the lab guest of `arch` here, if it cannot.
pub fn kvm_unusable(arch: &ArchSpec, cpuinfo: &str, dev_kvm: bool) -> Option<String> {
    if arch.name != "x86_64" {
        return Some(format!(
            "the {} lab needs EL2 inside the guest for its KVM (nested virtualization), which only TCG provides here",
            arch.name
        ));
    }
    if !dev_kvm {
        return Some("this host has no /dev/kvm".into());
    }
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    if has("vmx") || has("svm") {
        return None;
    }
    Some(
        "this host's /dev/kvm has no VMX/SVM underneath (paravirtual KVM such as kvm_pvm): QEMU's KVM accelerator does not boot an ordinary Linux guest on it"
            .into(),
    )
}

/// The accelerator actually used for `choice` on this host, and a note when `auto` fell back.
pub fn resolve(arch: &ArchSpec, choice: Accel) -> Result<(Accel, Option<String>), AccelError> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let why = kvm_unusable(arch, &cpuinfo, std::path::Path::new("/dev/kvm").exists());
    match (choice, why) {
        (Accel::Auto, None) => Ok((Accel::Kvm, None)),
        (Accel::Auto, Some(why)) => Ok((Accel::Tcg, Some(format!("--accel auto: TCG, {why}")))),
        (Accel::Kvm, Some(why)) => Err(AccelError::KvmUnusable(why)),
        (c, _) => Ok((c, None)),
    }
}

/// QEMU's machine, CPU and accelerator arguments for `accel` (resolved, not `Auto`).
pub fn qemu_args(arch: &ArchSpec, accel: Accel) -> Vec<String> {
    let mut args: Vec<String> = arch.qemu_machine.iter().map(|s| s.to_string()).collect();
    match accel {
        Accel::Kvm => args.extend(["-cpu", "host", "-accel", "kvm"].map(String::from)),
        Accel::TcgMultiThread => {
            args.extend(["-cpu", arch.tcg_cpu, "-accel", "tcg,thread=multi"].map(String::from))
        }
        Accel::Tcg | Accel::Auto => {
            args.extend(["-cpu", arch.tcg_cpu, "-accel", arch.tcg_accel].map(String::from))
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::super::arch::find_arch;
    use super::*;

    #[test]
    fn kvm_needs_vmx_or_svm_on_x86() {
        let x86 = find_arch("x86_64").unwrap();
        let svm = "processor : 0\nflags : fpu vme svm npt\n";
        let pvm = "processor : 0\nflags : fpu vme hypervisor\n";
        assert_eq!(kvm_unusable(x86, svm, true), None);
        assert!(kvm_unusable(x86, pvm, true).unwrap().contains("no VMX/SVM"));
        assert!(kvm_unusable(x86, svm, false)
            .unwrap()
            .contains("no /dev/kvm"));
        let arm = find_arch("aarch64").unwrap();
        assert!(kvm_unusable(arm, svm, true).unwrap().contains("EL2"));
    }

    #[test]
    fn arguments_per_accelerator() {
        let x86 = find_arch("x86_64").unwrap();
        let join = |a: Accel| qemu_args(x86, a).join(" ");
        assert_eq!(join(Accel::Tcg), "-M q35 -cpu max -accel tcg,thread=single");
        assert_eq!(
            join(Accel::TcgMultiThread),
            "-M q35 -cpu max -accel tcg,thread=multi"
        );
        assert_eq!(join(Accel::Kvm), "-M q35 -cpu host -accel kvm");
        assert!("bogus"
            .parse::<Accel>()
            .unwrap_err()
            .to_string()
            .contains("--accel bogus"));
        assert_eq!("tcg-mt".parse::<Accel>(), Ok(Accel::TcgMultiThread));
    }
}
