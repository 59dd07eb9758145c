//! The one skip policy of the selftests: which errors mean "this host lacks something the test
//! needs" (a skip, exit 4) rather than "the code under test is wrong" (a failure, exit 1).
//!
//! Host limits: no usable /dev/kvm, KVM refusing to create a VM, too few huge pages or too little
//! memory for the guest, a dirty-tracking mode the kernel does not offer, no
//! idle page tracking, no memory cgroup controller or no permission to create a memcg. Anything
//! else — a KVM ioctl failing on a VM that exists, a guest that misbehaves — is a failure.

use agelab_mglru::kernel::memcg::MemcgError;
use agelab_mglru::kernel::page_idle::PageIdleError;
use agelab_mglru::lru_gen_aging::LruGenAgingError;
use agelab_vmm::memstress::MemstressError;
use agelab_vmm::{DirtyError, MemoryError, VmError};
use std::error::Error;
use std::io::ErrorKind;

/// What the host lacks, if `error` (or any error it was caused by) says the host lacks
/// something: the reason to print with the skip. `None`: a failure.
pub fn host_limit(error: &(dyn Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(why) = lacks(e) {
            return Some(why);
        }
        cause = e.source();
    }
    None
}

/// One error of the chain. Variants that are `#[error(transparent)]` hide their inner error from
/// `source()`, so the wrappers are opened here.
fn lacks(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(e) = e.downcast_ref::<VmError>() {
        return vm_lacks(e);
    }
    if let Some(MemstressError::Vm(e)) = e.downcast_ref::<MemstressError>() {
        return vm_lacks(e);
    }
    if let Some(e) = e.downcast_ref::<MemoryError>() {
        return memory_lacks(e);
    }
    if let Some(e @ DirtyError::Unavailable { .. }) = e.downcast_ref::<DirtyError>() {
        return Some(e.to_string());
    }
    if let Some(e @ (PageIdleError::NotBuilt | PageIdleError::NotRoot)) =
        e.downcast_ref::<PageIdleError>()
    {
        return Some(e.to_string());
    }
    if let Some(e) = e.downcast_ref::<MemcgError>() {
        return memcg_lacks(e);
    }
    if let Some(LruGenAgingError::Memcg(m)) = e.downcast_ref::<LruGenAgingError>() {
        return memcg_lacks(m).map(|why| format!("memcg: {why}"));
    }
    None
}

fn vm_lacks(e: &VmError) -> Option<String> {
    match e {
        VmError::NoKvm(why) => Some(why.clone()),
        VmError::Kvm {
            what: "KVM_CREATE_VM",
            ..
        } => Some(format!("KVM refused to create a VM ({e})")),
        VmError::Memory(m) => memory_lacks(m),
        _ => None,
    }
}

fn memory_lacks(e: &MemoryError) -> Option<String> {
    match e {
        MemoryError::NoHugePages { .. } | MemoryError::TooLarge { .. } => Some(e.to_string()),
        _ => None,
    }
}

fn memcg_lacks(e: &MemcgError) -> Option<String> {
    match e {
        MemcgError::NoMemoryController => Some(e.to_string()),
        MemcgError::Create { err, .. }
            if matches!(
                err.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            Some(e.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_host_lacks_is_a_skip() {
        let no_kvm = VmError::NoKvm("/dev/kvm does not exist".into());
        assert_eq!(
            host_limit(&no_kvm).as_deref(),
            Some("/dev/kvm does not exist")
        );
        let wrapped = MemstressError::Vm(VmError::Memory(MemoryError::NoHugePages {
            needed: 128,
            free: 0,
            total: 0,
        }));
        assert!(host_limit(&wrapped).is_some_and(|w| w.contains("128 free 2 MiB huge pages")));
        let memcg = LruGenAgingError::Memcg(MemcgError::NoMemoryController);
        assert!(host_limit(&memcg).is_some_and(|w| w.starts_with("memcg: no memory cgroup")));
        let denied = MemcgError::Create {
            path: "/sys/fs/cgroup/x".into(),
            err: std::io::Error::from(ErrorKind::PermissionDenied),
        };
        assert!(host_limit(&denied).is_some());
        let ring = DirtyError::Unavailable {
            mode: agelab_vmm::DirtyMode::Ring,
            reason: "no KVM_CAP_DIRTY_LOG_RING".into(),
        };
        assert!(host_limit(&ring).is_some());
    }

    /// Built to fail if the policy were "every error during set-up is a skip": these are bugs or
    /// broken VMs, and must fail.
    #[test]
    fn what_the_code_gets_wrong_is_a_failure() {
        let bad = [
            Box::new(VmError::Config("0 vCPUs".into())) as Box<dyn Error>,
            Box::new(MemstressError::Layout("no pages".into())),
            Box::new(VmError::NotRunning(0)),
            Box::new(MemcgError::Create {
                path: "/sys/fs/cgroup/x".into(),
                err: std::io::Error::from(ErrorKind::AlreadyExists),
            }),
            Box::new(PageIdleError::Open(std::io::Error::from(ErrorKind::Other))),
        ];
        for e in &bad {
            assert_eq!(host_limit(e.as_ref()), None, "{e}");
        }
    }
}
