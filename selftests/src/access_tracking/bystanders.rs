//! Bystander VMs: idle VMs in the test's own process, so that its mm carries several secondary
//! MMUs, as in a VMM process that runs several VMs.
//!
//! Every VM registers one KVM mmu notifier on the creating process's mm (`kvm_create_vm` ->
//! `kvm_init_mmu_notifier`), and `mmu_notifier_register` adds it at the head of the mm's
//! subscription list, which `__mmu_notifier_clear_young` walks from the head: the VM created last
//! is asked first, the one created first is asked last. A bystander's memslots never cover the
//! test VM's memory, so it answers "old" for every range aging asks about; a kernel that combines
//! the answers correctly (`young |= ...`) still reports the test VM's young pages, while one that
//! keeps only the last answer loses them to a bystander created before the test VM, and one that
//! keeps only the first loses them to a bystander created after it.
//!
//! KVM traces `kvm_age_hva` before it looks at its memslots, so every VM on the mm traces every
//! range aging asks about: trace counts cover all of them ([`BystanderPlan::vms_on_mm`]).

use agelab_vmm::{Backing, Vm, VmConfig, VmError};

/// Guest memory of one bystander (anonymous, never touched: it only has to exist).
const BYSTANDER_BYTES: u64 = 4 << 20;

/// Most bystanders the tests create.
pub const MAX_BYSTANDERS: usize = 8;

/// How many bystanders are created before the test VM and how many after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BystanderPlan {
    /// Created before the test VM: asked after it.
    pub before: usize,
    /// Created after the test VM: asked before it.
    pub after: usize,
}

impl BystanderPlan {
    /// `n` bystanders alternating around the test VM: the first before it, the second after it,
    /// and so on, so that one bystander already sits on each side from `n = 2`.
    pub fn around_test_vm(n: usize) -> Self {
        BystanderPlan {
            before: n.div_ceil(2),
            after: n / 2,
        }
    }

    /// Bystanders in all.
    pub fn total(&self) -> usize {
        self.before + self.after
    }

    /// VMs, so KVM mmu notifiers, on the process's mm: the test VM and the bystanders.
    pub fn vms_on_mm(&self) -> u64 {
        1 + self.total() as u64
    }

    /// The VMs in the order `clear_young` asks them, first to last: bystanders created after the
    /// test VM (`after N` .. `after 1`), the test VM, then those created before it
    /// (`before N` .. `before 1`).
    pub fn asked_order(&self) -> Vec<String> {
        let mut order: Vec<String> = (1..=self.after)
            .rev()
            .map(|i| format!("after {i}"))
            .collect();
        order.push("test VM".into());
        order.extend((1..=self.before).rev().map(|i| format!("before {i}")));
        order
    }

    /// One line for the test's diagnostics.
    pub fn describe(&self) -> String {
        if self.total() == 0 {
            return "bystander VMs: none (the test VM is the only secondary MMU of this process)"
                .into();
        }
        format!(
            "bystander VMs: {} idle, {} created before the test VM and {} after it, {} KiB each; \
             clear_young asks the {} VMs of this process in the order {}",
            self.total(),
            self.before,
            self.after,
            BYSTANDER_BYTES >> 10,
            self.vms_on_mm(),
            self.asked_order().join(", ")
        )
    }
}

/// Idle VMs kept alive (their mmu notifiers registered) until dropped.
#[derive(Debug)]
pub struct BystanderVms {
    _vms: Vec<Vm>,
}

impl BystanderVms {
    /// Creates `n` bystanders: one vCPU each that never runs, and a little anonymous guest
    /// memory nobody touches. The pages written while building (the guest's page tables and
    /// code copies) are charged to the memcg this process sits in now.
    pub fn create(n: usize) -> Result<Self, VmError> {
        let vms = (0..n)
            .map(|_| {
                Vm::new(VmConfig {
                    vcpus: 1,
                    mem_bytes: BYSTANDER_BYTES,
                    backing: Backing::Anon,
                    guest_huge_pages: Some(false),
                    ..VmConfig::default()
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(BystanderVms { _vms: vms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bystanders_alternate_before_and_after_the_test_vm() {
        let plans: Vec<(usize, usize)> = (0..=4)
            .map(|n| {
                let p = BystanderPlan::around_test_vm(n);
                assert_eq!(p.total(), n);
                assert_eq!(p.vms_on_mm(), 1 + n as u64);
                (p.before, p.after)
            })
            .collect();
        assert_eq!(plans, vec![(0, 0), (1, 0), (1, 1), (2, 1), (2, 2)]);
    }

    #[test]
    fn the_vm_created_last_is_asked_first() {
        assert_eq!(
            BystanderPlan::around_test_vm(1).asked_order(),
            ["test VM", "before 1"]
        );
        assert_eq!(
            BystanderPlan::around_test_vm(3).asked_order(),
            ["after 1", "test VM", "before 2", "before 1"]
        );
        let none = BystanderPlan::around_test_vm(0);
        assert_eq!(none.asked_order(), ["test VM"]);
        assert!(none.describe().contains("none"));
        assert!(BystanderPlan::around_test_vm(2)
            .describe()
            .contains("in the order after 1, test VM, before 1"));
    }
}
