//! dirty_log_test: KVM dirty logging correctness, after the kernel selftest of the same name.
//!
//! Per mode (dirty-log, clear-log, dirty-ring): each vCPU writes the iteration number into random
//! pages of its partition for `-I` ms; the host stops it, harvests, and checks every page: a page
//! holding this iteration's number must be in this iteration's log. The guest reports how many
//! writes it did, so the host also replays its generator for the exact written set: recall must be
//! 100%; precision is reported.

use agelab::args::{from_str, positive, power_of_two, size_at_least};
use agelab::ktap::{self, OrSkip, TestPlan, Verdict};
use agelab_guest::rng::{mix_seed, SplitMix64};
use agelab_guest::ucall;
use agelab_vmm::dirty::DirtyMode;
use agelab_vmm::{
    Confusion, DirtyError, DirtyOptions, DirtyTracker, PageSet, Vm, VmConfig, VmError,
};
use clap::Parser;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const STAGE_READY: u64 = 1;
const STAGE_ITER_DONE: u64 = 2;
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

const USAGE: &str = "usage: dirty_log_test [-M dirty-log|clear-log|dirty-ring] [-i iterations] \
[-I interval_ms] [-c ring_entries] [-v vcpus] [-b test_mem_bytes] [-x slots] [-S seed]
  -M: mode to test (repeatable; default: every available mode)
  -i: host iterations (default 32)
  -I: ms the guest writes per iteration (default 10)
  -c: dirty ring entries per vCPU (default 1024, small enough to fill; power of two)
  -v: vCPUs, each writing its own partition (default 1)
  -b: test memory, e.g. 64M (default 64M)
  -x: memslots the test memory is split into (default 1)
  -S: random seed (default 1)";

/// Per-vCPU control block in untracked system memory.
#[repr(C)]
#[derive(Default)]
struct Ctl {
    base: u64,
    pages: u64,
    seed: u64,
    vcpu: u64,
    stop: AtomicU64,
}

/// Guest: per iteration (the SYNC reply), writes the iteration number into random pages of its
/// partition until the host sets `stop`, then reports how many writes it did.
extern "C" fn guest_dirty_random(ctl: u64, _: u64) -> ! {
    let c = ctl as *const Ctl;
    // SAFETY: the host set up a Ctl at `ctl` before starting the vCPU; it outlives the VM.
    let c = unsafe { &*c };
    let mut iteration = ucall::sync(STAGE_READY, &[]);
    loop {
        if iteration == 0 {
            ucall::done();
        }
        let mut rng = SplitMix64::new(mix_seed(c.seed, c.vcpu, iteration));
        let mut ops = 0u64;
        while c.stop.load(Ordering::Relaxed) == 0 {
            let p = rng.below(c.pages);
            let addr = c.base.wrapping_add(p.wrapping_mul(4096));
            // SAFETY: `p < pages`, inside this vCPU's identity-mapped partition.
            unsafe { core::ptr::write_volatile(addr as *mut u64, iteration) };
            ops = ops.wrapping_add(1);
        }
        iteration = ucall::sync(STAGE_ITER_DONE, &[iteration, ops]);
    }
}

#[derive(Clone, Debug, Parser)]
#[command(name = "dirty_log_test", args_override_self = true)]
struct Args {
    /// Modes to test (repeatable; default: every available mode).
    #[arg(short = 'M', value_name = "mode", value_parser = from_str::<DirtyMode>)]
    modes: Vec<DirtyMode>,
    /// Host iterations.
    #[arg(short = 'i', value_name = "iterations", default_value = "32", value_parser = positive::<u64>)]
    iterations: u64,
    /// Milliseconds the guest writes per iteration.
    #[arg(short = 'I', value_name = "interval_ms", default_value_t = 10)]
    interval_ms: u64,
    /// Dirty ring entries per vCPU.
    #[arg(short = 'c', value_name = "ring_entries", default_value = "1024", value_parser = power_of_two)]
    ring_entries: u32,
    /// vCPUs.
    #[arg(short = 'v', value_name = "vcpus", default_value = "1", value_parser = positive::<usize>)]
    vcpus: usize,
    /// Test memory.
    #[arg(short = 'b', value_name = "test_mem_bytes", default_value = "64M", value_parser = size_at_least(1))]
    mem_bytes: u64,
    /// Memslots the test memory is split into.
    #[arg(short = 'x', value_name = "slots", default_value_t = 1)]
    slots: usize,
    /// Random seed.
    #[arg(short = 'S', value_name = "seed", default_value_t = 1)]
    seed: u64,
}

/// What one mode's run found.
#[derive(Debug, Default)]
struct Outcome {
    writes: u64,
    dirty_checked: u64,
    clean_checked: u64,
    confusion: Confusion,
    /// Extra pages of the first harvest that INITIALLY_SET reports by design.
    initial_extra: u64,
    ring_full_exits: u64,
    failures: Vec<String>,
}

fn main() {
    let args: Args = agelab::args::parse("dirty_log_test", USAGE);
    let kvm = agelab_vmm::vm::open_kvm().or_skip();
    let modes = if args.modes.is_empty() {
        DirtyMode::ALL.to_vec()
    } else {
        args.modes.clone()
    };
    let mut plan = TestPlan::new();
    let tests: Vec<_> = modes
        .into_iter()
        .map(|mode| (plan.add(format!("dirty_log_test mode={mode}")), mode))
        .collect();
    let mut tap = plan.start();
    for (desc, mode) in tests {
        let support = mode.support(&kvm);
        if !support.available {
            tap.skip(desc, &support.detail);
            continue;
        }
        tap.diag(&format!("Testing Log Mode '{mode}' ({})", support.detail));
        let vm = match new_vm(mode, &args) {
            Ok(vm) => vm,
            Err(Verdict::Fail(e)) => {
                tap.diag(&format!("FAIL: {e}"));
                tap.result(desc, false);
                continue;
            }
            Err(v) => {
                tap.verdict(desc, &v);
                continue;
            }
        };
        match run_mode(vm, mode, &args) {
            Ok(o) => {
                tap.diag(&format!(
                    "Dirtied {} pages (guest writes over {} iterations)",
                    o.writes, args.iterations
                ));
                tap.diag(&format!(
                    "Total bits checked: dirty ({}), clear ({})",
                    o.dirty_checked, o.clean_checked
                ));
                let mut later = o.confusion;
                later.false_pos -= o.initial_extra;
                tap.diag(&format!(
                    "Ground truth: recall {:.4} (must be 1), precision {:.4} ({} true, {} extra, {} missing){}",
                    o.confusion.recall(),
                    o.confusion.precision(),
                    o.confusion.true_pos,
                    o.confusion.false_pos,
                    o.confusion.false_neg,
                    if o.initial_extra > 0 {
                        format!("; precision {:.4} without the INITIALLY_SET first harvest", later.precision())
                    } else {
                        String::new()
                    }
                ));
                if mode == DirtyMode::Ring {
                    tap.diag(&format!("Dirty ring full exits: {}", o.ring_full_exits));
                }
                for f in o.failures.iter().take(10) {
                    tap.diag(&format!("FAIL: {f}"));
                }
                tap.result(desc, o.failures.is_empty());
            }
            Err(e) => {
                tap.diag(&format!("FAIL: {e}"));
                tap.result(desc, false);
            }
        }
    }
    tap.finish()
}

/// The VM of one mode's run; an error the host causes is a skip ([`Verdict::from_error`]).
fn new_vm(mode: DirtyMode, a: &Args) -> Result<Vm, Verdict> {
    Vm::new(VmConfig {
        vcpus: a.vcpus,
        mem_bytes: a.mem_bytes,
        slots: a.slots,
        dirty_ring_entries: (mode == DirtyMode::Ring).then_some(a.ring_entries),
        ..VmConfig::default()
    })
    .map_err(|e| Verdict::from_error(&e))
}

/// Why a dirty-log mode could not be checked.
#[derive(Debug, thiserror::Error)]
enum RunModeError {
    /// Fewer test pages than vCPUs.
    #[error("{pages} pages cannot be split among {vcpus} vCPUs")]
    TooFewPages {
        /// Test pages.
        pages: u64,
        /// vCPUs.
        vcpus: usize,
    },
    /// The test memslots leave holes in guest memory.
    #[error("test memslots are not contiguous in guest memory")]
    NotContiguous,
    /// The dirty tracker failed.
    #[error(transparent)]
    Dirty(#[from] DirtyError),
    /// The VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
}

fn run_mode(mut vm: Vm, mode: DirtyMode, a: &Args) -> Result<Outcome, RunModeError> {
    // Like the kernel test: use every manual-protect capability the host offers.
    let mut opts = DirtyOptions::new(mode);
    opts.initially_set = true;
    let mut tracker = DirtyTracker::new(&mut vm, opts)?;
    if tracker.initially_set() {
        ktap::diag("clear-log with KVM_DIRTY_LOG_INITIALLY_SET: iteration 1 reports every page");
    }
    let map = vm.page_map().clone();
    let total = map.len();
    let per_vcpu = total / a.vcpus as u64;
    if per_vcpu == 0 {
        return Err(RunModeError::TooFewPages {
            pages: total,
            vcpus: a.vcpus,
        });
    }
    let base = map.page(0).map(|p| p.gpa).unwrap_or_default();
    if map
        .ranges()
        .windows(2)
        .any(|w| w[0].gpa + w[0].pages * 4096 != w[1].gpa)
    {
        return Err(RunModeError::NotContiguous);
    }
    // Control blocks in system memory, reached from the host through slot 0's mapping.
    let sys = vm.memslots()[0];
    let mut ctls = Vec::with_capacity(a.vcpus);
    for v in 0..a.vcpus {
        let gpa = vm.alloc_system(std::mem::size_of::<Ctl>() as u64)?;
        let hva = sys.hva + (gpa - sys.gpa);
        let ptr = hva as *mut Ctl;
        // SAFETY: `alloc_system` returned zeroed, page-aligned memory inside slot 0, which the VM
        // keeps mapped for its lifetime; the guest only starts reading it after `start`.
        unsafe {
            ptr.write(Ctl {
                base: base + v as u64 * per_vcpu * 4096,
                pages: per_vcpu,
                seed: a.seed,
                vcpu: v as u64,
                stop: AtomicU64::new(0),
            })
        };
        ctls.push((gpa, ptr));
    }
    // SAFETY: each pointer stays valid while `vm` lives (this function); Ctl::stop is atomic, so
    // sharing it with the running guest is sound.
    let stops: Vec<&AtomicU64> = ctls.iter().map(|&(_, p)| unsafe { &(*p).stop }).collect();
    let ctl_gpas: Vec<u64> = ctls.iter().map(|&(g, _)| g).collect();
    vm.start(guest_dirty_random as *const () as usize, |i| {
        [ctl_gpas[i], 0]
    })?;
    vm.wait_sync_all(STAGE_READY, SYNC_TIMEOUT)?;
    tracker.set_logging_all(&vm, true)?;

    let read_page = |p: u64| -> u64 {
        let hva = map.page(p).map(|g| g.hva).unwrap_or_default();
        // SAFETY: `hva` is the start of a test page in the VM's live host mapping; the vCPUs are
        // stopped in SYNC while the host reads.
        unsafe { std::ptr::read_volatile(hva as *const u64) }
    };
    let mut out = Outcome::default();
    for it in 1..=a.iterations {
        for s in &stops {
            s.store(0, Ordering::SeqCst);
        }
        vm.resume_all(it)?;
        std::thread::sleep(Duration::from_millis(a.interval_ms));
        for s in &stops {
            s.store(1, Ordering::SeqCst);
        }
        let done = vm.wait_sync_all(STAGE_ITER_DONE, SYNC_TIMEOUT)?;
        let log = tracker.harvest()?;

        // Exact ground truth: replay each vCPU's generator for the writes it reported.
        let mut truth = PageSet::new(total);
        for (v, d) in done.iter().enumerate() {
            let [_, ops, ..] = *d;
            out.writes += ops;
            let mut rng = SplitMix64::new(mix_seed(a.seed, v as u64, it));
            for _ in 0..ops {
                truth.insert(v as u64 * per_vcpu + rng.below(per_vcpu));
            }
        }
        // Every page's value against the log (and the replay against memory).
        for p in 0..total {
            let val = read_page(p);
            let in_log = log.contains(p);
            if in_log {
                out.dirty_checked += 1;
            } else {
                out.clean_checked += 1;
            }
            if val == it && !in_log {
                out.failures.push(format!(
                    "iteration {it}: page {p} holds {val} (written this iteration) but is not in the log"
                ));
            }
            if val > it {
                out.failures.push(format!(
                    "iteration {it}: page {p} holds {val}, from the future"
                ));
            }
            if (val == it) != truth.contains(p) {
                out.failures.push(format!(
                    "iteration {it}: page {p} holds {val} but the replayed writes say {}",
                    if truth.contains(p) {
                        "written"
                    } else {
                        "not written"
                    }
                ));
            }
        }
        let c = log.confusion(&truth);
        out.confusion.true_pos += c.true_pos;
        out.confusion.false_pos += c.false_pos;
        out.confusion.false_neg += c.false_neg;
        if it == 1 && tracker.initially_set() {
            out.initial_extra = c.false_pos;
        }
        if c.false_neg > 0 {
            let mut missing = truth.clone();
            missing.subtract(&log);
            out.failures.push(format!(
                "iteration {it}: {} written pages missing from the log, e.g. {:?}",
                c.false_neg,
                missing.first(8)
            ));
        }
        let st = tracker.last_stats();
        ktap::diag(&format!(
            "Iteration {it} collected {} pages ({} written), harvest {} ns in ioctls + {} ns userspace",
            log.count(),
            truth.count(),
            st.ioctl_ns(),
            st.user_ns
        ));
    }
    out.ring_full_exits = (0..a.vcpus)
        .map(|v| vm.exits(v).ring_full.load(Ordering::Relaxed))
        .sum();
    vm.resume_all(0)?;
    Ok(out)
}
