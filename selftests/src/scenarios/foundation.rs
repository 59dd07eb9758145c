//! Foundation scenarios on real /dev/kvm: values by ucall, memory seen both ways, parallel
//! vCPUs, ABORT with file:line, a guest fault with its RIP, watchdog, every backing, stats.
//!
//! Each scenario returns `Ok(Outcome)` or an error message saying what was expected and what was
//! seen. The cargo integration tests (`selftests/tests/foundation.rs`) and the kselftest-style
//! `vm_foundation_test` binary (run here by `make selftests` and on every lab kernel by `make lab`)
//! both run them, so the same checks cover kvm_pvm, nested SVM on Debian kernels and arm64.

use agelab_guest::abi::TEST_BASE;
use agelab_guest::{guest_assert_eq, ucall};
use agelab_vmm::{Backing, MemoryError, VcpuError, VcpuEvent, Vm, VmConfig, VmError};
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};

const WAIT: Duration = Duration::from_secs(20);

/// How a scenario ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything checked.
    Pass,
    /// Everything that could run passed; part could not run on this host, with the reason.
    Partial(String),
}

/// Why a scenario failed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// What the scenario expected and what it saw instead.
    #[error("{0}")]
    Check(String),
    /// The VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Guest memory could not be read or written from the host.
    #[error(transparent)]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
    /// A VM with this backing could not be made (for a reason other than a host limit) or
    /// failed its check.
    #[error("{backing}: {err}")]
    Backing {
        /// The backing.
        backing: String,
        /// Cause.
        #[source]
        err: Box<ScenarioError>,
    },
    /// KVM's binary stats could not be read.
    #[error(transparent)]
    Stats(#[from] agelab_vmm::stats::StatsError),
    /// A host file of the scenario could not be made, read or removed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A scenario's result.
pub type ScenarioResult = Result<Outcome, ScenarioError>;

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(ScenarioError::Check(format!($($fmt)+)));
        }
    };
}

fn vm(vcpus: usize) -> Result<Vm, ScenarioError> {
    Ok(Vm::new(VmConfig {
        vcpus,
        mem_bytes: 8 << 20,
        ..Default::default()
    })?)
}

/// Waits for the next event that is not PRINTF.
fn next(vm: &Vm) -> Result<VcpuEvent, ScenarioError> {
    loop {
        match vm.next_event(WAIT)? {
            VcpuEvent::Printf { .. } => {}
            e => return Ok(e),
        }
    }
}

/// Guest: reads the word the host put at TEST_BASE, returns it doubled, writes a marker.
extern "C" fn guest_memory_both_ways(_: u64, _: u64) -> ! {
    let p = TEST_BASE as *mut u64;
    // SAFETY: test memory is identity-mapped in the guest.
    let host_value = unsafe { p.read_volatile() };
    ucall::sync(1, &[host_value.wrapping_mul(2)]);
    // SAFETY: as above, one page further.
    unsafe { p.add(512).write_volatile(0x600d_f00d) };
    ucall::done()
}

fn run_both_ways(vm: &mut Vm) -> ScenarioResult {
    vm.memory().write_obj(21u64, GuestAddress(TEST_BASE))?;
    vm.start(guest_memory_both_ways as *const () as usize, |_| [0, 0])?;
    let (_, args) = vm.next_sync(1, WAIT)?;
    check!(
        args[0] == 42,
        "guest read {} (expected 21, reported doubled as 42)",
        args[0]
    );
    vm.finish_all(0, WAIT)?;
    let v: u64 = vm.memory().read_obj(GuestAddress(TEST_BASE + 4096))?;
    check!(
        v == 0x600d_f00d,
        "host read {v:#x} where the guest wrote 0x600df00d"
    );
    Ok(Outcome::Pass)
}

/// The guest sees a host write and the host sees a guest write.
pub fn guest_and_host_see_each_others_writes() -> ScenarioResult {
    run_both_ways(&mut vm(1)?)
}

/// Guest: sums its id `n` times and reports it.
extern "C" fn guest_id_sum(id: u64, n: u64) -> ! {
    let mut s = 0u64;
    let mut i = 0;
    while i < n {
        s = s.wrapping_add(id);
        i += 1;
    }
    ucall::sync(7, &[id, s]);
    ucall::done()
}

/// Waits for every vCPU's SYNC(7) from [`guest_id_sum`], lets each finish, returns their sums.
fn id_sums(vm: &Vm) -> Result<Vec<u64>, ScenarioError> {
    let got = vm.wait_sync_all(7, WAIT)?;
    vm.finish_all(0, WAIT)?;
    Ok(got.iter().map(|args| args[1]).collect())
}

/// Four vCPUs compute in parallel and each reports its own result.
pub fn vcpus_run_in_parallel() -> ScenarioResult {
    let mut vm = vm(4)?;
    vm.start(guest_id_sum as *const () as usize, |i| {
        [i as u64, 1_000_000]
    })?;
    let got = id_sums(&vm)?;
    let want = vec![0, 1_000_000, 2_000_000, 3_000_000];
    check!(got == want, "per-vCPU sums {got:?}, expected {want:?}");
    Ok(Outcome::Pass)
}

extern "C" fn guest_fails_assert(a: u64, _: u64) -> ! {
    guest_assert_eq!(a, 5u64);
    ucall::done()
}

/// A failed guest assertion reaches the host with file, line and the formatted message.
pub fn abort_carries_file_line_and_message() -> ScenarioResult {
    let mut vm = vm(1)?;
    vm.start(guest_fails_assert as *const () as usize, |_| [4, 0])?;
    match next(&vm)? {
        VcpuEvent::Abort {
            file,
            line,
            message,
            ..
        } => {
            check!(file.ends_with("foundation.rs"), "ABORT file {file}");
            check!(line > 0, "ABORT line 0");
            check!(
                message == "a == 5u64: 0x4 != 0x5",
                "ABORT message {message:?}"
            );
            Ok(Outcome::Pass)
        }
        e => Err(ScenarioError::Check(format!("expected ABORT, got {e:?}"))),
    }
}

extern "C" fn guest_faults(_: u64, _: u64) -> ! {
    // SAFETY: deliberately faults: an undefined instruction with no guest exception handler.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("ud2", options(noreturn))
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("udf #0", options(noreturn))
    }
}

/// A deliberate fault (invalid opcode) stops the vCPU with an error naming the exception and
/// carrying the registers, with RIP at the faulting instruction — also on SVM/VMX KVM, which
/// reset a vCPU after a triple fault.
pub fn guest_fault_is_reported_with_rip() -> ScenarioResult {
    let mut vm = vm(1)?;
    let entry = guest_faults as *const () as usize as u64;
    vm.start(entry as usize, |_| [0, 0])?;
    match next(&vm)? {
        VcpuEvent::Failed(e) => {
            let pc = e
                .regs()
                .map(|r| r.pc())
                .ok_or_else(|| ScenarioError::Check("no registers in the error".into()))?;
            check!(
                pc >= entry && pc < entry + 64,
                "pc {pc:#x} is not at the faulting instruction near {entry:#x}: {e}"
            );
            #[cfg(target_arch = "x86_64")]
            check!(
                matches!(e, VcpuError::Exception { .. }) && e.to_string().contains("#UD"),
                "expected an invalid-opcode exception report, got: {e}"
            );
            Ok(Outcome::Pass)
        }
        e => Err(ScenarioError::Check(format!(
            "expected a failure, got {e:?}"
        ))),
    }
}

extern "C" fn guest_spins(_: u64, _: u64) -> ! {
    loop {
        std::hint::spin_loop();
    }
}

/// The watchdog stops a guest that spins without ucalls, reporting where it was.
pub fn watchdog_stops_a_spinning_guest() -> ScenarioResult {
    let mut vm = vm(1)?;
    vm.set_watchdog(Duration::from_millis(300));
    let entry = guest_spins as *const () as usize as u64;
    vm.start(entry as usize, |_| [0, 0])?;
    match next(&vm)? {
        VcpuEvent::Failed(e @ VcpuError::Timeout { .. }) => {
            let pc = e
                .regs()
                .map(|r| r.pc())
                .ok_or_else(|| ScenarioError::Check("no registers".into()))?;
            check!(
                pc >= entry && pc < entry + 64,
                "pc {pc:#x} not in the spin loop at {entry:#x}"
            );
            check!(e.to_string().contains("watchdog"), "message: {e}");
            Ok(Outcome::Pass)
        }
        e => Err(ScenarioError::Check(format!(
            "expected a watchdog timeout, got {e:?}"
        ))),
    }
}

/// Every backing runs a guest, or fails with its clear error (hugetlb without huge pages).
pub fn every_backing_works_or_says_why() -> ScenarioResult {
    let dir = std::env::temp_dir().join(format!("agelab-backing-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("guest.mem");
    let mut skipped = None;
    for backing in [
        Backing::Anon,
        Backing::Memfd,
        Backing::Thp,
        Backing::File(file.clone()),
        Backing::File(dir.clone()),
        Backing::HugeTlb,
    ] {
        let cfg = VmConfig {
            vcpus: 1,
            mem_bytes: 4 << 20,
            backing: backing.clone(),
            slots: 2,
            ..Default::default()
        };
        match Vm::new(cfg) {
            Ok(mut vm) => {
                check!(
                    vm.page_map().len() == 1024 && vm.memslots().len() == 3,
                    "{backing}: layout {:?}",
                    vm.memslots()
                );
                run_both_ways(&mut vm).map_err(|e| ScenarioError::Backing {
                    backing: backing.to_string(),
                    err: Box::new(e),
                })?;
            }
            Err(VmError::Memory(e @ MemoryError::NoHugePages { .. }))
                if backing == Backing::HugeTlb =>
            {
                skipped = Some(format!("hugetlb: {e}"));
            }
            Err(err) => {
                return Err(ScenarioError::Backing {
                    backing: backing.to_string(),
                    err: Box::new(err.into()),
                })
            }
        }
    }
    // A file that holds data is refused, not overwritten.
    std::fs::write(&file, b"precious")?;
    let e = Vm::new(VmConfig {
        backing: Backing::File(file.clone()),
        ..Default::default()
    })
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    check!(
        e.contains("would overwrite"),
        "non-empty file accepted or unclear error: {e:?}"
    );
    check!(
        std::fs::read(&file)? == b"precious",
        "file contents changed"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(skipped.map_or(Outcome::Pass, Outcome::Partial))
}

/// Bad sizes and counts give clear errors naming the value.
pub fn bad_sizes_are_clear_errors() -> ScenarioResult {
    let msg = |cfg: VmConfig| {
        Vm::new(cfg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = msg(VmConfig {
        mem_bytes: 4097,
        ..Default::default()
    });
    check!(
        e.contains("4097") && e.contains("multiple"),
        "size 4097: {e:?}"
    );
    let e = msg(VmConfig {
        mem_bytes: 1 << 50,
        ..Default::default()
    });
    check!(e.contains("more than this host can give"), "1 PiB: {e:?}");
    let e = msg(VmConfig {
        vcpus: 0,
        ..Default::default()
    });
    check!(e.contains("vcpus"), "0 vCPUs: {e:?}");
    Ok(Outcome::Pass)
}

/// KVM binary stats of the VM and every vCPU are readable by name.
pub fn stats_fd_is_readable() -> ScenarioResult {
    let mut vm = vm(2)?;
    vm.start(guest_id_sum as *const () as usize, |i| [i as u64, 10])?;
    id_sums(&vm)?;
    let s = vm.stats()?;
    check!(!s.vm.is_empty(), "VM stats empty");
    check!(s.vcpus.len() == 2, "{} vCPU stat sets", s.vcpus.len());
    check!(
        s.vcpus[0].get("exits").copied().unwrap_or(0) > 0,
        "vCPU 0 'exits' missing or 0: {:?}",
        s.vcpus[0]
    );
    Ok(Outcome::Pass)
}

/// A named scenario.
pub type Scenario = (&'static str, fn() -> ScenarioResult);

/// Every scenario with its name, in order.
pub const ALL: &[Scenario] = &[
    (
        "guest and host see each other's writes",
        guest_and_host_see_each_others_writes,
    ),
    ("vCPUs run in parallel", vcpus_run_in_parallel),
    (
        "ABORT carries file, line and message",
        abort_carries_file_line_and_message,
    ),
    (
        "a guest fault is reported with its faulting PC",
        guest_fault_is_reported_with_rip,
    ),
    (
        "the watchdog stops a spinning guest",
        watchdog_stops_a_spinning_guest,
    ),
    (
        "every backing works or says why",
        every_backing_works_or_says_why,
    ),
    ("bad sizes are clear errors", bad_sizes_are_clear_errors),
    ("KVM stats fd is readable", stats_fd_is_readable),
];
